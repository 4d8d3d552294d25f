"""nanoGPT's CPU configuration trained by tinylm and by the same model in PyTorch, side by side.

    python bench/train_shakespeare.py                    # 2000 iterations each (a few minutes per side)
    python bench/train_shakespeare.py --iters 200        # a quick run
    python bench/train_shakespeare.py --backend numba    # tinylm's Numba backend
    python bench/train_shakespeare.py --data path/to/tinyshakespeare.txt

Trains ``tinylm train --preset cpu`` (block 64, batch 12, 4 layers, 4 heads, 128
embedding, dropout 0, lr 1e-3 -> 1e-4 cosine over the run, warmup 100, AdamW
(0.9, 0.99), weight decay 0.1, clip 1.0; train/val loss every 250 iterations on
20 batches) with the product's training loop, then the PyTorch model of
bench/torch_gpt.py from the same weights on the same batches, each in a fresh
process. Prints ms/iter (training steps only, evaluation excluded), tokens/s,
the final train/val loss, peak memory, and the ratio of the two ms/iter.
PyTorch is optional (pip install torch); without it only tinylm runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform

from shakespeare_cpu import DEFAULT_DATA, check_data, measure


def summarize(r: dict) -> dict:
    steps = len(r["step_ms"])
    ms = sum(r["step_ms"]) / steps
    _, train_loss, val_loss = r["evals"][-1]
    return {"ms": ms, "tokens_s": r["tokens_per_step"] * 1e3 / ms, "train": train_loss,
            "val": val_loss, "peak_mb": r["peak_mb"], "wall_s": r["wall_s"], "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DEFAULT_DATA, help=f"tinyshakespeare (default {DEFAULT_DATA})")
    parser.add_argument("--iters", type=int, default=2000, help="training iterations per side")
    parser.add_argument("--backend", default="numpy", help="tinylm backend: numpy or numba")
    parser.add_argument("--threads", type=int, default=0, help="tinylm backend threads (0: default)")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch side")
    args = parser.parse_args()
    data = check_data(args.data)
    options = dict(data=data, iters=args.iters, eval_interval=min(250, args.iters), eval_iters=20)

    rows = []
    tinylm = measure("tinylm", backend=args.backend, threads=args.threads, **options)
    rows.append((f"tinylm --backend {args.backend}", tinylm))
    torch_result = None
    if not args.no_torch and importlib.util.find_spec("torch") is not None:
        torch_result = measure("torch", **options)
        rows.append(("PyTorch eager", torch_result))

    print(f"nanoGPT CPU configuration, {args.iters} iterations, {data.name}; "
          f"{platform.machine()}, {os.cpu_count()} cores, BLAS: {tinylm['blas']}; "
          f"load average {os.getloadavg()[1]:.1f} over the last 5 minutes")
    for name, r in rows:
        print(f"  {name}: {r['describe']}")
    print(f"{'':24} {'ms/iter':>8} {'tokens/s':>9} {'train loss':>10} {'val loss':>9} "
          f"{'peak MB':>8} {'wall s':>7}")
    for name, r in rows:
        s = summarize(r)
        print(f"{name:24} {s['ms']:8.1f} {s['tokens_s']:9.0f} {s['train']:10.4f} {s['val']:9.4f} "
              f"{s['peak_mb']:8.0f} {s['wall_s']:7.1f}")
    if torch_result is None:
        print("PyTorch not installed (pip install torch): no side-by-side ratio")
        return
    a, b = summarize(tinylm), summarize(torch_result)
    print(f"tinylm / PyTorch: ms/iter {a['ms'] / b['ms']:.2f}x, peak memory {a['peak_mb'] / b['peak_mb']:.2f}x; "
          f"first loss {tinylm['losses'][0]:.5f} vs {torch_result['losses'][0]:.5f} (same weights, same batches)")


if __name__ == "__main__":
    main()
