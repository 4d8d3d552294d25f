"""What the reliability and fuzz tests share: a tiny corpus and run, the CLI as a user
runs it, the one-line-error check, and how many cases each hypothesis profile runs.

TINYLM_HYPOTHESIS_PROFILE=thorough (see tests/conftest.py) raises every budget to the
acceptance figures of issue 8; the default (ci) keeps the whole set under ~90 s.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from tinylm.cli import cli
from tinylm.run import new_run
from tinylm.train import TrainConfig

PROFILE = os.environ.get("TINYLM_HYPOTHESIS_PROFILE", "ci")

TEXT = "".join(f"{i} little pigs went to market, {i * 3 % 7} came home\n" for i in range(120))
MODEL = dict(n_layer=1, n_head=2, n_embd=8, block_size=8, dropout=0.0, bias=True)
TINY_ARGS = ["--n-layer", "1", "--n-head", "2", "--n-embd", "8", "--block-size", "8",
             "--batch-size", "2", "--max-iters", "2", "--eval-interval", "2", "--eval-iters", "1",
             "--warmup-iters", "1"]


def budget(ci: int, thorough: int) -> int:
    """Cases to run: ``thorough`` in the thorough profile, else ``ci``; TINYLM_FUZZ_SCALE multiplies."""
    n = thorough if PROFILE == "thorough" else ci
    return max(1, int(n * float(os.environ.get("TINYLM_FUZZ_SCALE", "1"))))


def write_corpus(directory: Path, text: str = TEXT) -> Path:
    path = Path(directory) / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    return path


def tiny_run(directory: Path, model: dict | None = None, **train):
    """A run of the tiny model on TEXT, trained and saved in ``directory / 'run'``."""
    config = TrainConfig(**{**dict(batch_size=2, max_iters=2, eval_interval=2, eval_iters=1,
                                   warmup_iters=1, log_interval=1, seed=3), **train})
    run = new_run(model or MODEL, config, str(write_corpus(directory)), 0.1, Path(directory) / "run")
    run.execute()
    return run


def invoke(*args, **kwargs):
    """`tinylm ARGS` in this process; exceptions other than SystemExit propagate (a traceback)."""
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, **kwargs)


def assert_clean(result) -> None:
    """Exit 0, or exit 1/2 with exactly one line 'error: ...' as the last line on stderr."""
    assert "Traceback" not in result.output, result.output
    if result.exit_code == 0:
        return
    assert result.exit_code in (1, 2), (result.exit_code, result.output)
    lines = result.stderr.rstrip("\n").splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr


def assert_one_line_error(result, *fragments, code: int = 1) -> str:
    """Exit ``code``; the last line on stderr, and the only 'error: ' one, holds every fragment.

    (Progress a command printed before failing, like train's config lines, may precede it.)
    """
    assert result.exit_code == code, (result.exit_code, result.output)
    assert_clean(result)
    line = result.stderr.rstrip("\n").splitlines()[-1]
    for fragment in fragments:
        assert fragment in line, line
    return line


def tinylm_process(*args, **popen) -> subprocess.Popen:
    """`tinylm ARGS` as a separate process (one BLAS thread: bitwise-repeatable, and fair on 2 cores)."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "tinylm.cli", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def report(capsys, line: str) -> None:
    """Print a summary line past pytest's capture (it shows without -s)."""
    with capsys.disabled():
        print(f"\n[reliability] {line}")


def same_arrays(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- hostile files
def forge_checkpoint(source: Path, directory: Path, edit=lambda meta: None, tensors=lambda t: t,
                     text=lambda s: s) -> Path:
    """A copy of ``source``'s checkpoint in ``directory`` with consistent digests: ``edit``
    changes the metadata dict in place, ``tensors`` the arrays, ``text`` the JSON text."""
    from tinylm import checkpoint as ck
    from tinylm.safetensors import load_file, save_file

    arrays, metadata = load_file(ck.checkpoint_path(source))
    meta = json.loads(metadata[ck.META_KEY])
    edit(meta)
    arrays = tensors(arrays)
    meta["sha256"] = {name: ck._digest(a) for name, a in arrays.items()}
    document = text(json.dumps(meta))
    Path(directory).mkdir(parents=True, exist_ok=True)
    path = Path(directory) / ck.FILENAME
    save_file(arrays, path, {ck.META_KEY: document, ck.META_DIGEST_KEY: ck._text_digest(document)})
    return path


def safetensors_bytes(header: bytes | str, data: bytes = b"") -> bytes:
    """A safetensors file with this raw header (no checks: for hostile files)."""
    header = header.encode() if isinstance(header, str) else header
    return struct.pack("<Q", len(header)) + header + data


def gpt2_directory(directory: Path) -> Path:
    """A small GPT-2 checkpoint directory (config.json, model.safetensors, vocab.json, merges.txt)."""
    from tinylm.bpe import train_bpe
    from tinylm.gpt2 import export_gpt2
    from tinylm.models import GPT, GPTConfig

    tokenizer = train_bpe(TEXT, 300)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=16, n_layer=1, n_head=2,
                          n_embd=16))
    export_gpt2(model, tokenizer, directory)
    return Path(directory)


# --------------------------------------------------------------------------- bounded processes
def limited_run(args, cwd, memory: int = 2**30, timeout: float = 10.0):
    """`tinylm ARGS` through the console entry point under an address-space limit (RLIMIT_AS)
    and a wall-clock timeout; returns (exit code or None if it timed out, stderr, seconds).

    One BLAS thread: each OpenBLAS thread reserves its own buffers, which count against the limit.
    """
    import resource
    import time

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "tinylm.console", *map(str, args)], cwd=cwd,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=limit)
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
        return None, stderr, time.perf_counter() - start
    return process.returncode, stderr, time.perf_counter() - start
