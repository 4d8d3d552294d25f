"""Fuzzing the checkpoint loader: random bytes, damaged real checkpoints, and checkpoints whose
metadata is random but consistently signed. Each either loads (and then is exactly what was
saved, or is refused with a one-line TinyLMError further on) or is refused in one line.

Cases: 300 (ci) or 1,500 (thorough); a quarter go through `tinylm sample` / `tinylm train
--resume` as a user would run them.
"""

import dataclasses
import json
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from reliability import assert_clean, budget, invoke, report, tiny_run
from tinylm.checkpoint import FILENAME, load_checkpoint, load_model, save_checkpoint
from tinylm.errors import CheckpointError, TinyLMError
from tinylm.run import resume_run


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """(run directory, its checkpoint's bytes, its parsed checkpoint)."""
    run = tiny_run(tmp_path_factory.mktemp("fuzzckpt"))
    return run.out, (run.out / FILENAME).read_bytes(), load_checkpoint(run.out)


# --------------------------------------------------------------------------- damaged bytes
class Named:
    """A strategy argument shown by name (hypothesis would print the whole value in reports)."""

    def __init__(self, name, value):
        self.name, self.value = name, value

    def __repr__(self):
        return self.name


@st.composite
def damaged(draw, blob: Named) -> bytes:
    """The file after 1-4 random edits: overwrite, insert, delete, truncate, or splice."""
    data = bytearray(blob.value)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["overwrite", "overwrite", "insert", "delete", "truncate",
                                     "length"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[at:at + len(chunk)] = chunk
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del data[at:]
        else:  # the 8-byte header length
            data[:8] = draw(st.integers(0, 2**64 - 1)).to_bytes(8, "little")
    return bytes(data)


# --------------------------------------------------------------------------- signed nonsense
JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                              st.floats(allow_nan=False), st.text(max_size=6)),
                    lambda inner: st.one_of(st.lists(inner, max_size=3),
                                            st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                    max_leaves=8)
# Where random JSON goes in an otherwise valid checkpoint (paths into the Checkpoint fields).
TARGETS = [("model_config", k) for k in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd",
                                          "dropout", "bias", "extra")] + \
          [("tokenizer", k) for k in ("type", "chars")] + \
          [("train", k) for k in ("config", "step", "optimizer", "sampler", "dropout_rng", "history",
                                  "data")] + \
          [("train_config", k) for k in ("max_iters", "batch_size", "learning_rate", "seed")] + \
          [("model_type", None), ("tokenizer", None), ("train", None)]


@st.composite
def signed_nonsense(draw, ck: Named):
    """A checkpoint with valid digests whose metadata has random JSON in 1-3 places."""
    ck = ck.value
    ck = dataclasses.replace(ck, model_config=dict(ck.model_config), tokenizer=dict(ck.tokenizer),
                             train=json.loads(json.dumps(ck.train)))
    for where, key in draw(st.lists(st.sampled_from(TARGETS), min_size=1, max_size=3)):
        value = draw(JSON)
        if key is None:
            ck = dataclasses.replace(ck, **{where: value})
        elif where == "train_config":
            if isinstance(ck.train, dict) and isinstance(ck.train.get("config"), dict):
                ck.train["config"][key] = value
        elif isinstance(getattr(ck, where), dict):
            getattr(ck, where)[key] = value
    return ck


# --------------------------------------------------------------------------- the test
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                      HealthCheck.function_scoped_fixture])


def _expect_refusal_or_identity(path, blob, original_blob, tally):
    try:
        load_model(path)
    except CheckpointError as exc:
        assert "\n" not in str(exc), str(exc)
        tally["refused"] += 1
        return
    assert blob == original_blob, "a changed file loaded"  # success means: nothing changed
    tally["identical, loaded"] += 1


def _expect_clean_resume(run_dir, tally):
    try:
        resume_run(run_dir, {})
    except TinyLMError as exc:
        assert "\n" not in str(exc), str(exc)
        tally[f"{type(exc).__name__}"] += 1
        return
    tally["resumable"] += 1


def test_fuzzed_checkpoint_files_are_refused_in_one_line(original, tmp_path, capsys):
    run_dir, blob, ck = original
    tally, counter = Counter(), iter(range(10**9))
    start = time.perf_counter()

    @settings(max_examples=budget(100, 500), **SETTINGS)
    @given(st.one_of(st.binary(max_size=256), damaged(Named("the checkpoint's bytes", blob))),
           st.integers(0, 3))
    def raw_bytes(data, via_cli):
        path = tmp_path / f"bytes{next(counter)}"
        path.mkdir()
        (path / FILENAME).write_bytes(data)
        if via_cli == 0:
            result = invoke("sample", "--ckpt", path, "--num-tokens", "2", "--prompt", "1")
            assert_clean(result)
            tally["refused" if result.exit_code else "identical, loaded"] += 1
        else:
            _expect_refusal_or_identity(path, data, blob, tally)

    @settings(max_examples=budget(200, 1000), **SETTINGS)
    @given(signed_nonsense(Named("the checkpoint", ck)), st.integers(0, 3))
    def signed(nonsense, via_cli):
        path = tmp_path / f"signed{next(counter)}"
        try:
            save_checkpoint(path, nonsense)
        except (TypeError, ValueError, AttributeError):  # not JSON-able, or not a dict: cannot be
            # written by save_checkpoint, so cannot exist on disk
            tally["unwritable"] += 1
            return
        if via_cli == 0:
            assert_clean(invoke("train", "--resume", "--out", path, "--max-iters", "4"))
            tally["via train --resume"] += 1
        else:
            try:
                load_model(path)
            except TinyLMError as exc:
                assert "\n" not in str(exc), str(exc)
            _expect_clean_resume(path, tally)

    raw_bytes()
    signed()
    files = sum(n for k, n in tally.items() if k != "unwritable")
    report(capsys, f"fuzz checkpoints: {files} files in {time.perf_counter() - start:.1f} s "
                   f"({', '.join(f'{k}: {n}' for k, n in sorted(tally.items()))}); 0 tracebacks")
    assert files >= 0.9 * (budget(100, 500) + budget(200, 1000))
