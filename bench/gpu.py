"""tinylm on one NVIDIA GPU against the same model in PyTorch: ms/iter, tokens/s, MFU, peak memory.

    python bench/gpu.py --out bench-gpu                      # every side on the issue's three configs
    python bench/gpu.py --configs shakespeare --sides tinylm-fp32,torch-tf32 --out bench-gpu
    python bench/gpu.py --device cpu --tiny --out runs/gpu-smoke # the script itself, on the CPU

Sides: ``tinylm-fp32`` (the cupy backend, fused CUDA kernels), ``tinylm-tf32``
(the same with CuPy's matmuls in TF32, ``CUPY_TF32=1``), ``tinylm-reference``
(the reference kernels on CuPy arrays: what the fused kernels replaced), and
PyTorch eager ``torch-fp32``, ``torch-tf32``, ``torch-bf16`` (autocast) and
``torch-compile`` (TF32, when torch.compile works here) with fused AdamW. Both
models start from the same weights (bench/torch_gpt.py copies tinylm's) and
train on the same random token batches, already on the device: a step is
forward, backward, clipping at 1.0 and AdamW, as ``tinylm.train`` does it.

Each (config, side) runs in a fresh process (precision settings and memory
pools cannot leak), ``--warmup`` untimed steps and then ``--steps`` timed ones
between two device synchronisations. MFU divides the model's matmul FLOPs per
step (bench/shakespeare_cpu.flops_per_step) by the step time and by the chip's
dense peak for that precision (the vendor's figures, ``PEAKS``). Peak memory is
what each library holds from the driver: CuPy's memory pool, torch's reserved
bytes (its allocated peak is given too). tinylm's step is also timed phase by
phase (forward, backward, clipping, AdamW, synchronised between them). Writes
``results.json`` and ``results.md`` (device, date, table) to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
# nanoGPT's CPU config, shakespeare_char and GPT-2 small's shape (the three), and a smoke size
CONFIGS = {
    "cpu": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, vocab_size=65, dropout=0.0),
    "shakespeare": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=64, vocab_size=65,
                        dropout=0.2),
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, batch_size=8, vocab_size=50257,
                 dropout=0.0),
    "tiny": dict(n_layer=2, n_head=2, n_embd=32, block_size=16, batch_size=4, vocab_size=65, dropout=0.0),
}
GPU_SIDES = ("tinylm-fp32", "tinylm-tf32", "tinylm-reference", "torch-fp32", "torch-tf32", "torch-bf16",
             "torch-compile")
CPU_SIDES = ("tinylm-fp32", "torch-fp32", "torch-bf16")
# dense peak TFLOP/s by precision (vendor datasheets, SXM parts); the first name found in the device's wins
PEAKS = {
    "H200": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4},
    "H100": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4},
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0},
}
PRECISION = {"tinylm-fp32": "fp32", "tinylm-tf32": "tf32", "tinylm-reference": "fp32", "torch-fp32": "fp32",
             "torch-tf32": "tf32", "torch-bf16": "bf16", "torch-compile": "tf32"}
LR, BETAS, WEIGHT_DECAY, GRAD_CLIP = 1e-3, (0.9, 0.99), 0.1, 1.0


def flops_per_step(cfg: dict) -> int:
    sys.path.insert(0, str(HERE))
    from shakespeare_cpu import flops_per_step as count
    return count(cfg["n_layer"], cfg["n_embd"], cfg["block_size"], cfg["vocab_size"], cfg["batch_size"])


def batches(cfg: dict, n: int = 4) -> list[tuple[np.ndarray, np.ndarray]]:
    """n (x, y) batches of random token ids, the same for every side."""
    rng = np.random.default_rng(0)
    shape = (cfg["batch_size"], cfg["block_size"])
    return [(rng.integers(0, cfg["vocab_size"], shape), rng.integers(0, cfg["vocab_size"], shape))
            for _ in range(n)]


def tinylm_model(cfg: dict):
    from tinylm.models import GPT, GPTConfig
    return GPT(GPTConfig(**{k: v for k, v in cfg.items() if k != "batch_size"}), seed=0)


# ---- one measurement (a worker process) ---------------------------------------------------------
def time_steps(step, warmup: int, steps: int, synchronize) -> float:
    """Seconds per step: ``warmup`` untimed steps, then ``steps`` between two synchronisations."""
    for i in range(warmup):
        step(i)
    synchronize()
    t0 = time.perf_counter()
    for i in range(steps):
        step(warmup + i)
    synchronize()
    return (time.perf_counter() - t0) / steps


def run_tinylm(side: str, cfg: dict, device: str, warmup: int, steps: int) -> dict:
    from tinylm import backends
    from tinylm.optim import AdamW, clip_grad_norm
    if device == "cpu":
        backend = backends.get_backend("numpy")
    elif side == "tinylm-reference":
        from tinylm.backends.cupy_backend import create_reference
        backend = create_reference()
    else:
        backend = backends.get_backend("cupy")
    with backends.use(backend):
        model = tinylm_model(cfg)
        opt = AdamW(model, lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY)
        data = [(backend.from_host(x), backend.from_host(y)) for x, y in batches(cfg)]
        model.train()

        def step(i, mark=lambda phase: None):
            x, y = data[i % len(data)]
            opt.zero_grad()
            _, loss = model(x, y)
            mark("forward")
            loss.backward()
            mark("backward")
            clip_grad_norm(opt.params, GRAD_CLIP)
            mark("clip")
            opt.step(LR)
            mark("adamw")

        seconds = time_steps(step, warmup, steps, backend.synchronize)
        memory = None
        if device == "cuda":
            memory = backend.xp.get_default_memory_pool().total_bytes()
        return {"seconds": seconds, "peak_bytes": memory, "describe": backend.describe(),
                "phases_ms": phase_times(step, backend.synchronize)}


def phase_times(step, synchronize, repeats: int = 3) -> dict[str, float]:
    """Median ms of each phase of a step, synchronising between phases (slower than a free step)."""
    times: dict[str, list[float]] = {}
    for i in range(repeats):
        synchronize()
        last = time.perf_counter()

        def mark(phase):
            nonlocal last
            synchronize()
            now = time.perf_counter()
            times.setdefault(phase, []).append(1e3 * (now - last))
            last = now
        step(i, mark)
    return {phase: float(np.median(ms)) for phase, ms in times.items()}


def run_torch(side: str, cfg: dict, device: str, warmup: int, steps: int) -> dict:
    import torch
    sys.path.insert(0, str(HERE))
    from torch_gpt import from_tinylm, make_optimizer

    tf32 = side in ("torch-tf32", "torch-compile")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    model_cfg = tinylm_model(cfg)
    model = from_tinylm(model_cfg.config, model_cfg.state_dict()).to(device)
    model.train()
    opt = make_optimizer(model, LR, BETAS, WEIGHT_DECAY, fused=device == "cuda")
    data = [(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)) for x, y in batches(cfg)]
    forward = torch.compile(model) if side == "torch-compile" else model
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=side == "torch-bf16")

    def step(i):
        x, y = data[i % len(data)]
        with autocast:
            _, loss = forward(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()

    synchronize = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = time_steps(step, warmup, steps, synchronize)
    result = {"seconds": seconds, "peak_bytes": None, "describe": f"PyTorch {torch.__version__}"}
    if device == "cuda":
        result.update(peak_bytes=torch.cuda.max_memory_reserved(),
                      peak_allocated_bytes=torch.cuda.max_memory_allocated())
    return result


def worker(args) -> None:
    """Measure one (config, side) and print it as one JSON line."""
    cfg = CONFIGS[args.worker_config]
    run = run_tinylm if args.worker_side.startswith("tinylm") else run_torch
    result = run(args.worker_side, cfg, args.device, args.warmup, args.steps)
    print(json.dumps(result))


# ---- the driver: one process per measurement, then the table ------------------------------------
def measure(config: str, side: str, args) -> dict:
    env = {**os.environ, "CUPY_TF32": "1" if side == "tinylm-tf32" else "0", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, __file__, "--worker-config", config, "--worker-side", side,
               "--device", args.device, "--warmup", str(args.warmup), "--steps", str(args.steps)]
    row = {"config": config, "side": side, "precision": PRECISION[side]}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired:
        return {**row, "error": f"took longer than {args.timeout} s"}
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit code {done.returncode}"]
        return {**row, "error": lines[-1]}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    cfg = CONFIGS[config]
    tokens = cfg["batch_size"] * cfg["block_size"]
    peak = peak_tflops(args.device_name, row["precision"])
    flops = flops_per_step(cfg)
    return {**row, **result, "ms_per_iter": 1e3 * result["seconds"], "tokens_per_s": tokens / result["seconds"],
            "mfu": flops / result["seconds"] / (peak * 1e12) if peak else None}


def peak_tflops(device_name: str, precision: str) -> float | None:
    return next((p[precision] for name, p in PEAKS.items() if name in device_name), None)


def device_name(device: str) -> str:
    """The GPU's name, or a one-line reason why there is none (SystemExit)."""
    if device == "cpu":
        import platform
        return f"CPU ({platform.machine()})"
    from tinylm import backends
    ok, reason = backends.availability("cupy")
    if not ok:
        raise SystemExit(f"error: bench/gpu.py needs an NVIDIA GPU: {reason}")
    import cupy
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else name


def table(rows: list[dict], header: str) -> str:
    lines = [header, "", "| config | side | ms/iter | tokens/s | MFU | peak memory (GB) | note |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['config']} | {r['side']} | – | – | – | – | {r['error']} |")
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "–"
        memory = f"{r['peak_bytes'] / 1e9:.2f}" if r["peak_bytes"] else "–"
        if r.get("peak_allocated_bytes"):
            memory += f" ({r['peak_allocated_bytes'] / 1e9:.2f} allocated)"
        lines.append(f"| {r['config']} | {r['side']} | {r['ms_per_iter']:.2f} | {r['tokens_per_s']:,.0f} | "
                     f"{mfu} | {memory} | {r['describe']} |")
    phases = [f"- {r['config']} {r['side']}: " + ", ".join(f"{k} {v:.2f}" for k, v in r["phases_ms"].items())
              for r in rows if r.get("phases_ms")]
    if phases:
        lines += ["", "tinylm's step phase by phase (ms, synchronised between phases):", *phases]
    return "\n".join(lines) + "\n"


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="folder for results.json and results.md (required, except in a worker)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cuda (default) or cpu: the script itself checked on a CPU")
    parser.add_argument("--tiny", action="store_true", help="only the tiny config (a smoke test)")
    parser.add_argument("--configs", default="cpu,shakespeare,gpt2", help=f"comma-separated of {list(CONFIGS)}")
    parser.add_argument("--sides", default=None,
                        help=f"comma-separated [cuda: {','.join(GPU_SIDES)}; cpu: {','.join(CPU_SIDES)}]")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation, pools)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds allowed to one measurement")
    parser.add_argument("--worker-config", help=argparse.SUPPRESS)
    parser.add_argument("--worker-side", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker_side is None and not args.out:
        parser.error("--out is required")
    configs = ["tiny"] if args.tiny else [c for c in args.configs.split(",") if c]
    sides = args.sides.split(",") if args.sides else list(GPU_SIDES if args.device == "cuda" else CPU_SIDES)
    unknown = [c for c in configs if c not in CONFIGS] + [s for s in sides if s not in PRECISION]
    if unknown:
        parser.error(f"unknown config or side: {', '.join(unknown)}")
    args.config_list, args.side_list = configs, sides
    return args


def main(argv=None) -> int:
    args = parse(argv)
    sys.path.insert(0, str(HERE.parent))                 # a checkout without an install still imports tinylm
    if args.worker_side:
        worker(args)
        return 0
    args.device_name = device_name(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = (f"# bench/gpu.py on {args.device_name}, {started}\n\n{args.steps} timed steps after "
              f"{args.warmup} warm-up steps per measurement; each in a fresh process.")
    rows = []
    for config in args.config_list:
        for side in args.side_list:
            rows.append(measure(config, side, args))
            r = rows[-1]
            print(f"{config:<12} {side:<17} " + (f"error: {r['error']}" if "error" in r else
                                                 f"{r['ms_per_iter']:9.2f} ms/iter"), flush=True)
            write(out, rows, header, args, started)   # after each: a run cut short keeps what it measured
    print(table(rows, header))
    return 0


def write(out: Path, rows: list[dict], header: str, args, started: str) -> None:
    """results.json and results.md in ``out``, each replaced whole (never half-written)."""
    report = {"device": args.device_name, "date": started, "steps": args.steps, "warmup": args.warmup,
              "configs": {c: CONFIGS[c] for c in args.config_list}, "rows": rows}
    for name, text in (("results.json", json.dumps(report, indent=1)), ("results.md", table(rows, header))):
        partial = out / f".{name}.partial"
        partial.write_text(text)
        partial.replace(out / name)


if __name__ == "__main__":
    sys.exit(main())
