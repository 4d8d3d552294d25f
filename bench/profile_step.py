"""Where one training step's time goes, op by op: a tinylm backend beside PyTorch eager.

    python bench/profile_step.py                          # numpy, numba and torch; shape cpu
    python bench/profile_step.py --shape mid --steps 5    # 6 layers x 384, block 256, batch 8
    python bench/profile_step.py --backends numba --top 25

tinylm side: every op goes through ``Tensor.from_op``, so wrapping it gives each
op's forward time (the wall time since the previous op finished: the op's own
array work plus the Python between two ops) and, by wrapping the VJP it
records, its backward time. Each fused kernel of the backend (``KERNELS``) is
timed around its call as well, so an op's time splits into its kernels and the
rest (BLAS products, NumPy array work, Python). Gradient clipping and the AdamW update are timed as
two phases; the engine's own bookkeeping (topological sort, gradient sums) is
what is left of backward. PyTorch side: ``torch.profiler``'s self CPU time per
operator. Each side runs in its own process after ``--warmup`` untimed steps,
with the same shapes, on random token ids (speed does not depend on the text).
The profiler's own overhead inflates small ops on both sides: read the table
for shares, and bench/backends_cpu.py for unprofiled step times.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict

from backends_cpu import cpu_name
from shakespeare_cpu import CLEARED_ENV, SHAPES, blas_kernel

VOCAB = 65


def _batches(shape: dict, steps: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    B, T = shape["batch_size"], shape["block_size"]
    return [(rng.integers(0, VOCAB, (B, T)), rng.integers(0, VOCAB, (B, T))) for _ in range(steps)]


def profile_tinylm(backend_name: str, shape: dict, warmup: int, steps: int) -> dict:
    from tinylm import backends
    from tinylm.models import GPT, GPTConfig
    from tinylm.optim import AdamW, clip_grad_norm
    from tinylm.tensor import Tensor

    backend = backends.set_backend(backend_name)
    model_fields = {k: shape[k] for k in ("n_layer", "n_head", "n_embd", "block_size")}
    model = GPT(GPTConfig(vocab_size=VOCAB, **model_fields))
    opt = AdamW(model, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    times = defaultdict(float)   # (phase, op) -> seconds over the timed steps
    calls = defaultdict(int)
    state = {"on": False, "last": 0.0, "timed": False}
    original = Tensor.from_op

    def timed_vjp(op, vjp):
        def run(g):
            t0 = time.perf_counter()
            out = vjp(g)
            times["backward", op] += time.perf_counter() - t0
            calls["backward", op] += 1
            return out
        return run

    def result(data, parents, vjp, op):
        if state["on"]:
            now = time.perf_counter()
            times["forward", op] += now - state["last"]
            calls["forward", op] += 1
            state["last"] = now
            vjp = timed_vjp(op, vjp) if vjp is not None else None
        return original(data, parents, vjp, op)

    Tensor.from_op = staticmethod(result)
    kernel_ms, kernel_calls = _time_kernels(backend.kernels, state)
    total = 0.0
    for i, (x, y) in enumerate(_batches(shape, warmup + steps)):
        timed = state["timed"] = i >= warmup
        backend.synchronize()
        t_start = time.perf_counter()
        opt.zero_grad()
        state["on"], state["last"] = timed, time.perf_counter()
        _, loss = model(x, y)
        t_forward = time.perf_counter()
        state["on"] = False
        loss.backward()
        t_backward = time.perf_counter()
        clip_grad_norm(opt.params, 1.0)
        t_clip = time.perf_counter()
        opt.step(1e-3)
        backend.synchronize()
        t_end = time.perf_counter()
        if timed:
            times["phase", "forward"] += t_forward - t_start
            times["phase", "backward"] += t_backward - t_forward
            times["phase", "clip"] += t_clip - t_backward
            times["phase", "adamw"] += t_end - t_clip
            total += t_end - t_start
    Tensor.from_op = original
    ops = defaultdict(lambda: [0.0, 0.0, 0])
    for (phase, op), seconds in times.items():
        if phase in ("forward", "backward"):
            ops[op][0 if phase == "forward" else 1] += 1e3 * seconds / steps
            ops[op][2] += calls[phase, op] // steps if phase == "forward" else 0
    engine = times["phase", "backward"] - sum(s for (p, _), s in times.items() if p == "backward")
    return {"side": backend_name, "describe": backend.describe(), "step_ms": 1e3 * total / steps,
            "phases": {k: 1e3 * v / steps for (p, k), v in times.items() if p == "phase"},
            "engine_ms": 1e3 * engine / steps,
            "kernels": {k: {"ms": 1e3 * v / steps, "calls": kernel_calls[k] // steps}
                        for k, v in kernel_ms.items()},
            "ops": {op: {"forward_ms": f, "backward_ms": b, "calls": n} for op, (f, b, n) in ops.items()}}


def _time_kernels(kernels, state: dict):
    """Wrap every fused kernel of ``kernels`` with a timer that counts while state["timed"];
    a kernel called by another (the reference adamw_update_many's adamw_update) counts in
    its caller only."""
    from tinylm.backends.numpy_backend import KERNELS

    seconds, calls = defaultdict(float), defaultdict(int)
    depth = [0]

    def timed(name, kernel):
        def run(*args, **kwargs):
            depth[0] += 1
            t0 = time.perf_counter()
            try:
                return kernel(*args, **kwargs)
            finally:
                depth[0] -= 1
                if state["timed"] and depth[0] == 0:
                    seconds[name] += time.perf_counter() - t0
                    calls[name] += 1
        return run

    for name in KERNELS:
        setattr(kernels, name, timed(name, getattr(kernels, name)))
    return seconds, calls


def profile_torch(shape: dict, warmup: int, steps: int) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile
    from torch_gpt import GPT, make_optimizer, train_step

    from tinylm.models import GPTConfig

    cfg = GPTConfig(vocab_size=VOCAB, **{k: shape[k] for k in ("n_layer", "n_head", "n_embd", "block_size")})
    torch.manual_seed(0)
    model = GPT(cfg)
    opt = make_optimizer(model, 1e-3, (0.9, 0.99), 0.1)
    batches = _batches(shape, warmup + steps)
    for x, y in batches[:warmup]:
        train_step(model, opt, x, y, 1e-3, 1.0)
    t0 = time.perf_counter()
    for x, y in batches[warmup:]:
        train_step(model, opt, x, y, 1e-3, 1.0)
    unprofiled = time.perf_counter() - t0
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for x, y in batches[warmup:]:
            train_step(model, opt, x, y, 1e-3, 1.0)
    ops = {e.key: {"self_ms": e.self_cpu_time_total / 1e3 / steps, "calls": e.count // steps}
           for e in prof.key_averages()}
    return {"side": "torch", "describe": f"PyTorch {torch.__version__} CPU eager, "
            f"{torch.get_num_threads()} threads", "step_ms": 1e3 * unprofiled / steps, "ops": ops}


def run_side(side: str, shape_name: str, warmup: int, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED_ENV}
    command = [sys.executable, __file__, "--side", side, "--shape", shape_name,
               "--warmup", str(warmup), "--steps", str(steps)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"error: the {side} side failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_tinylm(result: dict, top: int) -> None:
    phases = result["phases"]
    print(f"\n{result['side']}: {result['describe']}")
    print(f"  step {result['step_ms']:.1f} ms (profiled) = forward {phases['forward']:.1f} + backward "
          f"{phases['backward']:.1f} (engine bookkeeping {result['engine_ms']:.1f}) + clip "
          f"{phases['clip']:.2f} + AdamW {phases['adamw']:.2f}")
    rows = sorted(result["ops"].items(), key=lambda kv: -(kv[1]["forward_ms"] + kv[1]["backward_ms"]))
    print(f"  {'op':24} {'calls':>5} {'fwd ms':>8} {'bwd ms':>8} {'share':>6}")
    for op, r in rows[:top]:
        both = r["forward_ms"] + r["backward_ms"]
        print(f"  {op:24} {r['calls']:5d} {r['forward_ms']:8.2f} {r['backward_ms']:8.2f} "
              f"{100 * both / result['step_ms']:5.1f}%")
    kernels = sorted(result["kernels"].items(), key=lambda kv: -kv[1]["ms"])
    print(f"  of which the backend's fused kernels ({sum(k['ms'] for _, k in kernels):.1f} ms, attention's "
          f"with its BLAS products; the rest of the ops is BLAS, NumPy and Python):")
    for name, k in kernels[:top]:
        print(f"    {name:26} {k['calls']:5d} {k['ms']:8.2f}")


def print_torch(result: dict, top: int) -> None:
    print(f"\ntorch: {result['describe']}")
    print(f"  step {result['step_ms']:.1f} ms (unprofiled); self CPU time per operator, profiled:")
    rows = sorted(result["ops"].items(), key=lambda kv: -kv[1]["self_ms"])
    profiled = sum(r["self_ms"] for r in result["ops"].values())
    print(f"  {'operator':40} {'calls':>5} {'self ms':>8} {'share':>6}")
    for op, r in rows[:top]:
        print(f"  {op[:40]:40} {r['calls']:5d} {r['self_ms']:8.2f} {100 * r['self_ms'] / profiled:5.1f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="numpy,numba,torch",
                        help="comma-separated: tinylm backends, and torch for PyTorch eager")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="cpu")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--top", type=int, default=15, help="rows per table")
    parser.add_argument("--side", help=argparse.SUPPRESS)  # internal: one side in this process
    args = parser.parse_args()
    shape = SHAPES[args.shape]
    if args.side:
        result = (profile_torch(shape, args.warmup, args.steps) if args.side == "torch"
                  else profile_tinylm(args.side, shape, args.warmup, args.steps))
        print(json.dumps(result))
        return
    import numpy  # noqa: F401  (loads the BLAS that blas_kernel reports)

    print(f"{cpu_name()}, {os.cpu_count()} cores; BLAS {blas_kernel()}; load average "
          f"{os.getloadavg()[0]:.1f}; shape {args.shape}: {json.dumps(shape)}")
    for side in [s for s in args.backends.split(",") if s]:
        result = run_side(side, args.shape, args.warmup, args.steps)
        (print_torch if side == "torch" else print_tinylm)(result, args.top)


if __name__ == "__main__":
    main()
