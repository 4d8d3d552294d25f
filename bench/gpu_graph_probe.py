"""Can a tinylm training step be captured as a CUDA graph, and what would replaying it gain?

    python bench/gpu_graph_probe.py --config cpu

A probe for the CUDA-graph design, not a training loop: it runs a few eager steps
of bench/gpu.py's model on the cupy backend (which also settles CuPy's pool and
the kernels' cached pointer arrays), captures one whole step (forward, backward,
clipping, AdamW) on a stream, and times replaying it against eager steps. A
replay repeats the captured step's scalars (learning rate, AdamW's step count,
the dropout draw), so the parameters it produces are not a correct run: the
figure is the most graphs could gain on this config. If capture fails (a host
synchronisation or a host-to-device copy inside the step), the error says where
the step still talks to the host. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def probe(config: str, steps: int) -> dict:
    import cupy

    from gpu import CONFIGS, GRAD_CLIP, LR, batches, tinylm_model
    from tinylm import backends
    from tinylm.optim import AdamW, clip_grad_norm

    cfg = {**CONFIGS[config], "dropout": 0.0}
    backend = backends.get_backend("cupy")
    with backends.use(backend):
        model = tinylm_model(cfg)
        opt = AdamW(model, lr=LR, weight_decay=0.1)
        x, y = (backend.from_host(a) for a in batches(cfg, 1)[0])

        def step():
            opt.zero_grad()
            _, loss = model(x, y)
            loss.backward()
            clip_grad_norm(opt.params, GRAD_CLIP)
            opt.step(LR)

        stream = cupy.cuda.Stream(non_blocking=True)
        with stream:
            for _ in range(3):
                step()
            stream.synchronize()
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            stream.synchronize()
            eager = (time.perf_counter() - t0) / steps
            result = {"config": config, "eager_ms": 1e3 * eager}
            try:
                stream.begin_capture()
                step()
                graph = stream.end_capture()
            except Exception as exc:  # noqa: BLE001 - report whatever capture refused
                return {**result, "capture": f"failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"}
            graph.launch(stream)
            stream.synchronize()
            t0 = time.perf_counter()
            for _ in range(steps):
                graph.launch(stream)
            stream.synchronize()
            replay = (time.perf_counter() - t0) / steps
    return {**result, "capture": "ok", "replay_ms": 1e3 * replay, "speedup": eager / replay}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="cpu", help="a bench/gpu.py config (default cpu)")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    sys.path[:0] = [str(HERE), str(HERE.parent)]
    from tinylm import backends
    ok, reason = backends.availability("cupy")
    if not ok:
        raise SystemExit(f"error: bench/gpu_graph_probe.py needs an NVIDIA GPU: {reason}")
    print(json.dumps(probe(args.config, args.steps)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
