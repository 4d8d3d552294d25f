"""Sampling speed with and without the KV cache, on nanoGPT's CPU configuration.

    python bench/generate_kvcache.py                       # 500 tokens, block 64, 256, 512
    python bench/generate_kvcache.py --blocks 64 --tokens 500 --repeat 5 --backend numba
    OPENBLAS_NUM_THREADS=1 python bench/generate_kvcache.py   # on a busy machine (see bench/README.md)

For each block_size, the same randomly initialised GPT (4 layers, 4 heads, 128
embedding, vocabulary 65; speed does not depend on the weights) samples
``--tokens`` tokens three ways, seed 0, temperature 1:

- sliding:  no cache, nanoGPT's window: every token reruns the last block_size tokens;
- recompute: no cache, tinylm's window (grows to block_size, restarts on the last half);
- cache:    tinylm.generate's KV cache, tinylm's window.

recompute and cache must produce identical tokens (checked, column "same"); the
sliding window sees other contexts once the text outgrows block_size. Times are
medians over --repeat runs taken in turn, in ms per generated token.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


class SlidingContext:
    """nanoGPT's sampling loop: the model reruns the last block_size tokens for every new token."""

    def __init__(self, model):
        from tinylm import backends
        self.model, self.to_host = model.eval(), backends.current().to_host

    def next_logits(self, ids):
        from tinylm.tensor import no_grad
        context = np.asarray(ids[-self.model.config.block_size:], dtype=np.int64)[None, :]
        with no_grad():
            logits, _ = self.model(context)
        return self.to_host(logits.data[0, -1])


def measure(model, tokens: int, repeat: int) -> dict:
    from tinylm.generate import KVCacheContext, RecomputeContext, generate

    contexts = {"sliding": SlidingContext, "recompute": RecomputeContext, "cache": KVCacheContext}
    times = {name: [] for name in contexts}
    outputs = {}
    prompt = [0, 1, 2, 3]
    for _ in range(repeat):
        for name, context in contexts.items():  # in turn, so noise falls on all three
            start = time.perf_counter()
            outputs[name] = generate(model, prompt, tokens, temperature=1.0, seed=0, context=context)
            times[name].append((time.perf_counter() - start) / tokens * 1e3)
    row = {name: statistics.median(t) for name, t in times.items()}
    row["same"] = bool(np.array_equal(outputs["recompute"], outputs["cache"]))
    row["same_sliding"] = bool(np.array_equal(outputs["sliding"], outputs["cache"]))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=500)
    parser.add_argument("--blocks", default="64,256,512", help="comma-separated block sizes")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backend", default="numpy")
    args = parser.parse_args()

    from tinylm import backends
    from tinylm.models import GPT, GPTConfig

    backend = backends.set_backend(args.backend)
    print(f"backend {backend.name}: {args.tokens} tokens, median of {args.repeat}, ms per token")
    print("| block_size | no cache, sliding (nanoGPT) | no cache, tinylm window | KV cache "
          "| speed-up vs sliding | vs same window | same tokens |")
    print("|---|---|---|---|---|---|---|")
    for block in (int(b) for b in args.blocks.split(",")):
        model = GPT(GPTConfig(vocab_size=65, block_size=block, n_layer=4, n_head=4, n_embd=128))
        if args.backend == "numba":
            measure(model, 8, 1)  # compile the kernels outside the timing
        r = measure(model, args.tokens, args.repeat)
        print(f"| {block} | {r['sliding']:.2f} | {r['recompute']:.2f} | {r['cache']:.2f} "
              f"| {r['sliding'] / r['cache']:.1f}× | {r['recompute'] / r['cache']:.1f}× "
              f"| {'yes' if r['same'] else 'NO'}{' (= sliding too)' if r['same_sliding'] else ''} |",
              flush=True)


if __name__ == "__main__":
    main()
