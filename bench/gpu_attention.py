"""Causal attention on one GPU, the cupy backend's three paths: flash, cuBLAS + fused softmax, reference.

    python bench/gpu_attention.py --out bench-gpu

``flash`` (backends/cuda/attention.cu) never forms a (T, T) matrix; ``cublas``
(backends/cupy_attention.py) forms it inside the op only, with cuBLAS products
and one softmax pass per row; ``reference`` (NumpyKernels on CuPy arrays) keeps P
from forward to backward. Each is timed forward and forward + backward at
T = 64, 256 and 1024 with D = 64 and 2^18 query rows in all (B x H x T), float32,
matmuls with and without TF32 (CUPY_TF32 is read once per process, so each
setting is its own process). Writes attention.json and attention.md to --out;
the table says which path wins at each T (CudaKernels.attention_path's choice).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

LENGTHS = (64, 256, 1024)
D, ROWS = 64, 2**18


def time_call(fn, synchronize, repeats: int = 10) -> float:
    """Median seconds of ``fn`` over ``repeats`` calls, after two untimed ones."""
    fn(), fn()
    times = []
    for _ in range(repeats):
        synchronize()
        t0 = time.perf_counter()
        fn()
        synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def worker() -> list[dict]:
    from tinylm import backends
    backend = backends.get_backend("cupy")
    k, xp = backend.kernels, backend.xp
    rows = []
    for T in LENGTHS:
        BH = ROWS // T
        rng = np.random.default_rng(T)
        q, kk, v, dy = (backend.from_host(rng.standard_normal((1, BH, T, D)).astype(np.float32))
                        for _ in range(4))
        for path in ("flash", "cublas", "reference"):
            k.attention = path

            def forward():
                return k.attention_forward(q, kk, v, D ** -0.5)

            def both():
                y, saved = forward()
                return k.attention_backward(dy, q, kk, v, saved, D ** -0.5)

            pool = xp.get_default_memory_pool()
            pool.free_all_blocks()
            rows.append({"T": T, "B*H": BH, "path": path,
                         "forward_ms": 1e3 * time_call(forward, backend.synchronize),
                         "forward_backward_ms": 1e3 * time_call(both, backend.synchronize),
                         "pool_bytes": pool.total_bytes()})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for attention.json and attention.md")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    if args.worker:
        print(json.dumps(worker()))
        return 0
    from tinylm import backends
    ok, reason = backends.availability("cupy")
    if not ok:
        raise SystemExit(f"error: bench/gpu_attention.py needs an NVIDIA GPU: {reason}")
    rows = []
    for tf32 in ("0", "1"):
        done = subprocess.run([sys.executable, __file__, "--out", args.out, "--worker"], capture_output=True,
                              text=True, env={**os.environ, "CUPY_TF32": tf32}, timeout=300)
        if done.returncode != 0:
            raise SystemExit(f"error: the worker failed: {done.stderr.strip().splitlines()[-1]}")
        rows += [{**r, "tf32": tf32 == "1"} for r in json.loads(done.stdout.strip().splitlines()[-1])]
    lines = [f"# causal attention, D = {D}, B x H x T = {ROWS}, float32", "",
             "| T | B*H | path | TF32 matmuls | forward ms | forward + backward ms | pool GB |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['T']} | {r['B*H']} | {r['path']} | {'yes' if r['tf32'] else 'no'} | "
              f"{r['forward_ms']:.3f} | {r['forward_backward_ms']:.3f} | {r['pool_bytes'] / 1e9:.2f} |"
              for r in rows]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "attention.json").write_text(json.dumps(rows, indent=1))
    (out / "attention.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
