"""Each CPU backend against PyTorch eager on nanoGPT's CPU configuration: tokens/s, MFU, peak memory.

    python bench/backends_cpu.py                          # numpy, numba and torch, 3 rounds
    python bench/backends_cpu.py --steps 30 --warmup 10 --repeats 5
    python bench/backends_cpu.py --backends numpy,numba   # without PyTorch

Every measurement is a fresh process (bench/shakespeare_cpu.py) that trains
``--warmup + --steps`` steps with the product's loop and reports the median of
the last ``--steps`` step times and its peak resident memory (ru_maxrss). The
backends take turns, in a rotated order each round, so that the machine's
noise falls on all of them; the table gives the median over rounds (and the
range); "best" compares the fastest rounds, the ones least slowed by other
jobs on a shared machine, and "paired" is the median over rounds of the
ratio within a round (two runs back to back share the machine's state). MFU divides the model's matmul FLOPs per step (see
``shakespeare_cpu.flops_per_step``) by the step time and by the float32 matmul
throughput NumPy reaches on this machine, measured in the same run. Numba's
compile time (on a warm cache) is reported apart and is not in any step time.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics

from shakespeare_cpu import DEFAULT_DATA, SHAPES, check_data, measure


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DEFAULT_DATA, help=f"tinyshakespeare (default {DEFAULT_DATA})")
    parser.add_argument("--backends", default="numpy,numba,torch",
                        help="comma-separated: tinylm backends, and torch for PyTorch eager")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (one run per backend each)")
    parser.add_argument("--threads", type=int, default=0, help="tinylm backend threads (0: default)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="cpu",
                        help="cpu: nanoGPT's CPU configuration [default]; mid: 6 layers x 384, "
                             "block 256, batch 8")
    args = parser.parse_args()
    data = check_data(args.data)
    names = [n for n in args.backends.split(",") if n]
    if "torch" in names and importlib.util.find_spec("torch") is None:
        print("PyTorch not installed (pip install torch): measuring without it")
        names.remove("torch")

    matmul = measure("matmul", data, 1)
    runs, loads = {name: [] for name in names}, []
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate the order each round
            side = "torch" if name == "torch" else "tinylm"
            result = measure(side, data, args.warmup + args.steps, backend=name, threads=args.threads,
                             shape=args.shape)
            result["median_ms"] = statistics.median(result["step_ms"][args.warmup:])
            runs[name].append(result)
            load = os.getloadavg()[0]
            loads.append(load)
            print(f"  round {r + 1}: {name:6} {result['median_ms']:6.1f} ms/step "
                  f"(load average {load:.1f})", flush=True)

    first = runs[names[0]][0]
    flops, gflops = first["flops"], matmul["gflops"]
    print(f"\n{cpu_name()}, {os.cpu_count()} cores; BLAS {matmul['blas']}; float32 matmul "
          f"{gflops:.0f} GFLOP/s (NumPy, best of 5); model {first['params']:,} parameters, "
          f"{flops / 1e9:.2f} GFLOP/step, {first['tokens_per_step']} tokens/step (shape {args.shape}); "
          f"load average {min(loads):.1f}-{max(loads):.1f} during the runs (other jobs slow every side)")
    summary = {}
    for name in names:
        ms = [r["median_ms"] for r in runs[name]]
        summary[name] = dict(ms=statistics.median(ms), lo=min(ms), hi=max(ms),
                             peak=max(r["peak_mb"] for r in runs[name]),
                             compile=runs[name][-1]["compile_seconds"], describe=runs[name][0]["describe"])
    anchor = summary.get("torch")
    # "best": the fastest round, i.e. the one least slowed by other jobs on a shared machine;
    # "paired": the median over rounds of torch's time / this backend's in the same round
    # (the two ran back to back, so a slow spell of the machine falls on both)
    for name in names:
        summary[name]["paired"] = (statistics.median(
            t["median_ms"] / r["median_ms"] for t, r in zip(runs["torch"], runs[name]))
            if anchor else None)
    print(f"{'backend':8} {'ms/step':>8} {'(range)':>13} {'tokens/s':>9} {'vs torch':>8} "
          f"{'best':>6} {'paired':>6} {'MFU':>6} {'peak MB':>8} {'vs torch':>8} {'compile s':>9}")
    for name, s in summary.items():
        tokens = first["tokens_per_step"] * 1e3 / s["ms"]
        mfu = flops / (s["ms"] / 1e3) / (gflops * 1e9)
        speed = f"{anchor['ms'] / s['ms']:.2f}x" if anchor else "-"
        best = f"{anchor['lo'] / s['lo']:.2f}x" if anchor else "-"
        paired = f"{s['paired']:.2f}x" if anchor else "-"
        memory = f"{s['peak'] / anchor['peak']:.2f}x" if anchor else "-"
        compile_s = f"{s['compile']:.2f}" if s["compile"] is not None else "-"
        print(f"{name:8} {s['ms']:8.1f} {s['lo']:6.1f}-{s['hi']:<6.1f} {tokens:9.0f} {speed:>8} "
              f"{best:>6} {paired:>6} {100 * mfu:5.1f}% {s['peak']:8.0f} {memory:>8} {compile_s:>9}")
    for name, s in summary.items():
        print(f"  {name}: {s['describe']}")


if __name__ == "__main__":
    main()
