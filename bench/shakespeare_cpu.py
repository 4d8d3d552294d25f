"""The workload both CPU benchmarks time: nanoGPT's CPU configuration on tinyshakespeare.

block 64, batch 12, 4 layers, 4 heads, 128 embedding, dropout 0, lr 1e-3 -> 1e-4
(cosine, warmup 100), AdamW (0.9, 0.99), weight decay 0.1, grad clip 1.0 — tinylm's
``--preset cpu``. Each measurement runs in a fresh process (``measure``), so that
its peak memory is its own and one side's thread pools cannot slow the other:

    python bench/shakespeare_cpu.py --side tinylm --backend numba --iters 40   # one JSON line
    python bench/shakespeare_cpu.py --side torch --iters 40
    python bench/shakespeare_cpu.py --side matmul                              # float32 GFLOP/s

The tinylm side is the product's own path (tinylm.run.new_run + tinylm.train.train);
the PyTorch side (bench/torch_gpt.py) starts from the same weights and sees the same batches.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
# Left unset in the measured processes: a CORETYPE forced for another machine
# would pick a slower matmul kernel than OpenBLAS detects for this CPU.
CLEARED_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
# The shapes the CPU benchmarks measure: nanoGPT's CPU configuration (tinylm's --preset cpu),
# and a mid-size model so that nothing is tuned to one shape alone.
SHAPES = {
    "cpu": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12),
    "mid": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=8),
}


def check_data(path) -> Path:
    path = Path(path)
    if not path.is_file():
        sys.exit(f"error: the benchmark corpus {path} does not exist; it is nanoGPT's "
                 "tinyshakespeare (input.txt, 1,115,394 bytes): pass its location with --data FILE")
    return path


def configs(iters: int, eval_interval: int, eval_iters: int, shape: str = "cpu"):
    """(model fields, TrainConfig) of ``tinylm train --preset cpu`` for ``iters`` steps, at ``shape``."""
    from tinylm.config import resolve_config

    return resolve_config("cpu", {}, {**SHAPES[shape], "max_iters": iters, "eval_interval": eval_interval,
                                      "eval_iters": eval_iters, "log_interval": 1})


def flops_per_step(n_layer: int, n_embd: int, block_size: int, vocab_size: int, batch_size: int) -> int:
    """Matmul FLOPs of one training step (forward + backward), as in the PaLM paper's appendix.

    Per token, forward: 24 C^2 per layer (qkv 6C^2, projection 2C^2, MLP 16C^2),
    4 T C per layer (q k^T and P v over all T keys), 2 C V (logits); backward
    costs twice the forward, so a step is 3x that for each of batch x T tokens.
    Elementwise work (layer norm, GELU, softmax, AdamW) is not counted.
    """
    C, T = n_embd, block_size
    forward_per_token = n_layer * (24 * C * C + 4 * T * C) + 2 * C * vocab_size
    return 3 * forward_per_token * batch_size * T


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def blas_kernel() -> str:
    """The BLAS NumPy runs here, e.g. 'openblas 0.3.31 SkylakeX, 2 threads' (needs threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (pip install threadpoolctl to see it)"
    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    return "; ".join(f"{i['internal_api']} {i.get('version')} {i.get('architecture')}, "
                     f"{i['num_threads']} threads" for i in blas) or "none found"


# ---- the sides, each run in its own process --------------------------------------------------

def run_tinylm(args) -> dict:
    from tinylm import backends
    from tinylm.run import new_run
    from tinylm.train import train

    backend = backends.set_backend(args.backend)
    if args.threads:
        backend.set_threads(args.threads)
    model_fields, cfg = configs(args.iters, args.eval_interval, args.eval_iters, args.shape)
    run = new_run(model_fields, cfg, str(args.data), 0.1, out=os.devnull)
    events = []
    start = time.perf_counter()
    train(run.state, run.val_ids, cfg, on_event=events.append)
    steps = [e for e in events if e["event"] == "step"]
    return _result(args, describe=backend.describe(), wall=time.perf_counter() - start,
                   step_ms=[e["ms_per_iter"] for e in steps], losses=[e["loss"] for e in steps],
                   evals=[(e["step"], e["train_loss"], e["val_loss"]) for e in events
                          if e["event"] == "eval"],
                   compile_seconds=getattr(backend, "compile_seconds", None),
                   tokens_per_step=cfg.batch_size * model_fields["block_size"], params=run.state.model.num_parameters(),
                   flops=flops_per_step(run.model_config.n_layer, run.model_config.n_embd,
                                        run.model_config.block_size, run.model_config.vocab_size,
                                        cfg.batch_size))


def run_torch(args) -> dict:
    import torch
    from torch_gpt import estimate_loss, from_tinylm, make_optimizer, train_step

    from tinylm.data import BatchSampler
    from tinylm.run import new_run

    model_fields, cfg = configs(args.iters, args.eval_interval, args.eval_iters, args.shape)
    run = new_run(model_fields, cfg, str(args.data), 0.1, out=os.devnull)   # same data, weights, batches
    model = from_tinylm(run.model_config, run.state.model.state_dict())
    opt = make_optimizer(model, cfg.learning_rate, (cfg.beta1, cfg.beta2), cfg.weight_decay)
    block, batch, sampler = run.model_config.block_size, cfg.batch_size, run.state.sampler
    step_ms, losses, evals = [], [], []
    start = time.perf_counter()
    for step in range(cfg.max_iters):
        x, y = sampler.next()
        t0 = time.perf_counter()
        losses.append(train_step(model, opt, x, y, cfg.lr_at(step), cfg.grad_clip))
        step_ms.append(1e3 * (time.perf_counter() - t0))
        if (step + 1) % cfg.eval_interval == 0 or step + 1 == cfg.max_iters:
            evals.append((step + 1,
                          estimate_loss(model, BatchSampler(sampler.ids, block, batch, cfg.seed + 1), cfg.eval_iters),
                          estimate_loss(model, BatchSampler(run.val_ids, block, batch, cfg.seed + 2), cfg.eval_iters)))
    return _result(args, describe=f"PyTorch {torch.__version__} CPU eager, {torch.get_num_threads()} threads",
                   wall=time.perf_counter() - start, step_ms=step_ms, losses=losses, evals=evals,
                   compile_seconds=None, tokens_per_step=batch * block, params=run.state.model.num_parameters(),
                   flops=flops_per_step(run.model_config.n_layer, run.model_config.n_embd, block,
                                        run.model_config.vocab_size, batch))


def run_matmul(args) -> dict:
    """Best float32 GFLOP/s of NumPy's square matmul over n = 1024 and 2048, best of 5 each."""
    import numpy as np

    best = 0.0
    for n in (1024, 2048):
        a, b = (np.random.default_rng(i).standard_normal((n, n)).astype(np.float32) for i in (0, 1))
        a @ b
        for _ in range(5):
            t0 = time.perf_counter()
            a @ b
            best = max(best, 2 * n ** 3 / (time.perf_counter() - t0) / 1e9)
    return {"side": "matmul", "gflops": best, "blas": blas_kernel()}


def _result(args, *, describe, wall, step_ms, **extra) -> dict:
    return {"side": args.side, "backend": args.backend if args.side == "tinylm" else "torch",
            "describe": describe, "wall_s": wall, "step_ms": step_ms, "peak_mb": peak_rss_mb(),
            "blas": blas_kernel(), **extra}


def measure(side: str, data: Path, iters: int, backend: str = "numpy", threads: int = 0,
            eval_interval: int | None = None, eval_iters: int = 1, shape: str = "cpu") -> dict:
    """Run one side in a fresh Python process and return its JSON result."""
    env = {k: v for k, v in os.environ.items() if k not in CLEARED_ENV}
    command = [sys.executable, __file__, "--side", side, "--backend", backend, "--data", str(data),
               "--iters", str(iters), "--threads", str(threads),
               "--eval-interval", str(eval_interval or iters), "--eval-iters", str(eval_iters),
               "--shape", shape]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{side} ({backend}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=("tinylm", "torch", "matmul"), required=True)
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--threads", type=int, default=0, help="backend threads (0: its default)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--eval-interval", type=int, default=None)
    parser.add_argument("--eval-iters", type=int, default=1)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="cpu",
                        help="cpu: nanoGPT's CPU configuration; mid: 6 x 384, block 256, batch 8")
    args = parser.parse_args()
    args.eval_interval = args.eval_interval or args.iters
    if args.side != "matmul":
        args.data = check_data(args.data)
    run = {"tinylm": run_tinylm, "torch": run_torch, "matmul": run_matmul}[args.side]
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
