"""Data-parallel throughput: 1 process against 2 MPI processes, and what the allreduce costs.

    python bench/distributed.py                      # nanoGPT's CPU config on tinyshakespeare
    python bench/distributed.py --iters 50 --backend numba

Runs the real training loop (tinylm.train.train) under ``mpiexec -n P`` for
(P processes x T BLAS threads) = (1 x 2), (1 x 1), (2 x 1), each rank drawing its
own batch of batch_size sequences, and prints per configuration: ms per step,
tokens/s over all ranks, the time per step spent in the gradient allreduce while
training (which includes waiting for the slower rank), and the allreduce alone
with the ranks in step (medians over --repeat runs, taken in turn so that the
machine's noise falls on every configuration). Then a paper estimate for GPT-2
small on 8 GPUs.
Needs ``pip install 'tinylm[mpi]'``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
LAYOUTS = [(1, 2), (1, 1), (2, 1)]  # (processes, threads per process) on this 2-core machine


def worker(args) -> None:
    """One rank: warm up, time ``iters`` training steps, then time the allreduce alone."""
    import numpy as np

    from tinylm import backends
    from tinylm.config import resolve_config
    from tinylm.distributed import connect, replicate
    from tinylm.run import new_run
    from tinylm.train import train

    comm = connect(args.backend, timeout=300)
    backends.set_backend(args.backend).set_threads(args.threads)
    total = args.warmup + args.iters
    model_fields, cfg = resolve_config("cpu", {}, {
        "max_iters": args.warmup, "eval_interval": total, "eval_iters": 1, "log_interval": total})
    run = new_run(model_fields, cfg, str(args.data), 0.1, out=os.devnull)
    replicate(run.state, cfg, comm)
    train(run.state, run.val_ids, cfg, communicator=comm)  # warm-up: caches, JIT, first touches

    comm.comm_seconds, comm.allreduces, events = 0.0, 0, []
    train(run.state, run.val_ids, replace(cfg, max_iters=total), on_event=events.append,
          communicator=comm)
    step = next(e for e in events if e["event"] == "step")
    in_training = comm.comm_seconds / comm.allreduces

    params = run.state.optimizer.params
    alone = []
    for _ in range(20):
        for p in params:
            p.grad = np.zeros_like(p.data)
        comm.barrier()
        start = time.perf_counter()
        comm.allreduce_mean_gradients(params)
        alone.append(time.perf_counter() - start)
    if comm.rank == 0:
        n_params = sum(p.size for p in params)
        print(json.dumps({"ms_per_step": step["ms_per_iter"], "tokens_per_s": step["tokens_per_s"],
                          "allreduce_ms_in_training": 1e3 * in_training,
                          "allreduce_ms_alone": 1e3 * statistics.median(alone),
                          "grad_mb": n_params * params[0].data.itemsize / 1e6,
                          "batch": comm.world_size * cfg.batch_size}))


def measure(processes: int, threads: int, args) -> dict:
    mpiexec = Path(sys.executable).parent / "mpiexec"
    command = [str(mpiexec if mpiexec.exists() else "mpiexec"), "-n", str(processes), sys.executable,
               __file__, "--worker", "--threads", str(threads), "--iters", str(args.iters),
               "--warmup", str(args.warmup), "--backend", args.backend, "--data", str(args.data)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1200)
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def paper_estimate() -> None:
    """Ring allreduce of GPT-2 small's gradients on 8 GPUs, against its compute time per step."""
    n, params = 8, 124e6
    ring = 2 * (n - 1) / n  # each GPU sends (and receives) 2(n-1)/n of the buffer
    links = {"NVLink 4, H100 SXM (450 GB/s per direction)": 450e9,
             "InfiniBand NDR, 1 NIC per GPU (400 Gb/s = 50 GB/s)": 50e9}
    # one step of GPT-2 small, B8 x T1024, in PyTorch on one H100 (measured outside this repository)
    compute = {"fp32 (158 ms)": 158e-3, "bf16 + torch.compile (20 ms)": 20e-3}
    print(f"\nPaper estimate: GPT-2 small ({params / 1e6:.0f}M parameters) on {n} GPUs, one "
          f"allreduce per step after backward (no overlap, as tinylm does)")
    print(f"  ring allreduce moves {ring:.3f} x the gradient buffer through each GPU's link")
    for grad_bytes, dtype in ((4, "fp32"), (2, "bf16")):
        size = params * grad_bytes
        for link, bandwidth in links.items():
            seconds = ring * size / bandwidth
            efficiency = ", ".join(f"{name}: {t / (t + seconds):.0%}" for name, t in compute.items())
            print(f"  {dtype} grads {size / 1e6:.0f} MB x {ring:.3f} / {link} = "
                  f"{1e3 * seconds:.1f} ms  ->  scaling efficiency {efficiency}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=30, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3, help="runs per configuration (medians)")
    parser.add_argument("--backend", default="numpy", help="numpy or numba (MPI on the CPU)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if not args.data.exists():
        sys.exit(f"error: {args.data} not found; pass --data (nanoGPT's tinyshakespeare input.txt)")

    print(f"nanoGPT CPU config (4 layers, 128 wide, block 64, batch 12 per rank) on {args.data.name}, "
          f"backend {args.backend}, {args.iters} timed steps after {args.warmup}, median of "
          f"{args.repeat} runs")
    header = (f"{'processes x threads':>20} {'seqs/step':>9} {'ms/step':>8} {'tokens/s':>9} "
              f"{'vs 1x2':>7} {'allreduce ms/step':>18} {'allreduce alone':>16}")
    print(header)
    runs = {layout: [] for layout in LAYOUTS}
    for _ in range(args.repeat):
        for layout in LAYOUTS:
            runs[layout].append(measure(*layout, args))
    rows = [(p, t, {k: statistics.median(r[k] for r in runs[p, t]) for k in runs[p, t][0]})
            for p, t in LAYOUTS]
    base = rows[0][2]["tokens_per_s"]
    for p, t, r in rows:
        print(f"{f'{p} x {t}':>20} {r['batch']:>9} {r['ms_per_step']:>8.1f} {r['tokens_per_s']:>9.0f} "
              f"{r['tokens_per_s'] / base:>6.2f}x {r['allreduce_ms_in_training']:>18.2f} "
              f"{r['allreduce_ms_alone']:>13.2f} ms")
    print(f"gradient buffer per step: {rows[0][2]['grad_mb']:.2f} MB (one allreduce)")
    paper_estimate()


if __name__ == "__main__":
    main()
