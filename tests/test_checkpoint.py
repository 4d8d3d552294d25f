"""Checkpoints: no pickle, every damaged file refused in one line, nothing in a file ever runs."""

import dataclasses
import errno
import os
import pickle  # only to build hostile files and to prove their payload is live
import random
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from reliability import (assert_one_line_error, budget, invoke, report, same_arrays, tiny_run,
                         write_corpus, TINY_ARGS)
from tinylm import checkpoint as ckpt_module
from tinylm.checkpoint import FILENAME, load_checkpoint, load_model, save_checkpoint
from tinylm.errors import CheckpointError
from tinylm.rundir import LOCK_NAME
from tinylm.metrics import METRICS_FILE, PLOT_FILE
from tinylm.safetensors import save_file

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(run directory, file bytes) of a tiny trained run."""
    root = tmp_path_factory.mktemp("ckpt")
    run = tiny_run(root)
    return run.out, (run.out / FILENAME).read_bytes()


def _header_end(blob: bytes) -> int:
    return 8 + struct.unpack("<Q", blob[:8])[0]


def _refused(path: Path, cli: bool = False) -> str:
    """load_model(path) must raise CheckpointError with a one-line message naming the file;
    with ``cli``, `tinylm sample --ckpt path` must print that line as 'error: ...', exit 1."""
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    if cli:
        line = assert_one_line_error(invoke("sample", "--ckpt", path, "--num-tokens", "1"), code=1)
        assert line == f"error: {message}"
    return message


# ----------------------------------------------------------------------------- no pickle
PICKLE_USE = re.compile(r"^\s*(import|from)\s+(pickle|cPickle|dill|joblib|shelve|marshal)\b"
                        r"|allow_pickle\s*=\s*True|\b(np|numpy|torch)\.load\(|pickle\.loads?\(",
                        re.MULTILINE)


def test_no_pickle_anywhere_in_the_project():
    assert PICKLE_USE.search("import pickle\n") and PICKLE_USE.search("x = np.load(f)")
    sources = [ROOT / "cli.py", *(ROOT / "tinylm").rglob("*.py"), *(ROOT / "backends").rglob("*.py")]
    offenders = [f"{p.relative_to(ROOT)}: {m.group(0).strip()}" for p in sources if not p.is_symlink()
                 for m in PICKLE_USE.finditer(p.read_text(encoding="utf-8"))]
    assert len(sources) > 10 and offenders == []


class _Plant:
    """Unpickling this creates the file ``marker``: proof that a payload ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _hostile_files(directory: Path, marker: Path, saved_bytes: bytes) -> dict[str, bytes]:
    payload = pickle.dumps(_Plant(marker))
    npy, npz = directory / "payload.npy", directory / "payload.npz"
    np.save(npy, np.array([_Plant(marker)], dtype=object), allow_pickle=True)
    np.savez(npz, weights=np.array([_Plant(marker)], dtype=object))
    header = {"__metadata__": {"tinylm": payload.decode("latin-1")},
              "model/wte.weight": {"dtype": "U8", "shape": [len(payload)],
                                   "data_offsets": [0, len(payload)]}}
    import json
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    smuggled = struct.pack("<Q", len(raw)) + raw + payload
    return {"raw pickle": payload, "npy object array": npy.read_bytes(),
            "npz object array": npz.read_bytes(), "pickle in metadata and data": smuggled,
            "pickle appended to a real checkpoint": saved_bytes + payload,
            "object dtype in header": smuggled.replace(b'"U8"', b'"O" ', 1)}


def test_a_file_carrying_a_pickle_payload_is_refused_and_the_payload_never_runs(saved, tmp_path):
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Plant(control)))
    assert control.exists()  # the payload is live: unpickling it would leave the marker

    marker = tmp_path / "marker"
    for kind, blob in _hostile_files(tmp_path, marker, saved[1]).items():
        run_dir = tmp_path / kind.replace(" ", "_")
        run_dir.mkdir()
        (run_dir / FILENAME).write_bytes(blob)
        _refused(run_dir)
        assert_one_line_error(invoke("sample", "--ckpt", run_dir, "--num-tokens", "1"))
        assert_one_line_error(invoke("train", "--resume", "--out", run_dir), code=1)
        assert not marker.exists(), f"{kind}: the pickle payload ran"


def test_pickle_bytes_inside_valid_metadata_stay_an_inert_string(saved, tmp_path):
    """A consistent checkpoint whose sampler state is a pickle: resume refuses it, nothing runs."""
    marker = tmp_path / "marker"
    ck = load_checkpoint(saved[0])
    ck.train["sampler"] = pickle.dumps(_Plant(marker)).decode("latin-1")
    save_checkpoint(tmp_path / "run", ck)
    assert_one_line_error(invoke("train", "--resume", "--out", tmp_path / "run",
                                 "--data", write_corpus(tmp_path)), "sampler state")
    assert not marker.exists()


# ----------------------------------------------------------------------------- damaged files
def test_every_truncation_is_refused(saved, tmp_path, capsys):
    run_dir, blob = saved
    rng = random.Random(1)
    cuts = sorted({*range(0, 24), *range(_header_end(blob) - 8, _header_end(blob) + 8), len(blob) - 1,
                   *rng.sample(range(len(blob)), min(len(blob), budget(400, len(blob))))})
    path = tmp_path / FILENAME
    for n in cuts:
        path.write_bytes(blob[:n])
        _refused(path)
    report(capsys, f"truncation: {len(cuts)} lengths of a {len(blob)}-byte checkpoint, all refused")


def test_one_changed_byte_anywhere_is_refused(saved, tmp_path, capsys):
    run_dir, blob = saved
    rng = random.Random(2)
    end = _header_end(blob)
    positions = sorted({*range(0, 8), *range(end - 8, min(len(blob), end + 8)), len(blob) - 1,
                        *rng.sample(range(8, end), min(end - 8, budget(600, end))),
                        *rng.sample(range(end, len(blob)), min(len(blob) - end, budget(200, len(blob))))})
    path = tmp_path / FILENAME
    for i in positions:
        damaged = bytearray(blob)
        damaged[i] = rng.choice([b for b in range(256) if b != blob[i]])
        path.write_bytes(bytes(damaged))
        _refused(path)
    report(capsys, f"tampering: {len(positions)} single-byte changes "
                   f"({sum(p < end for p in positions)} in the header), all refused")


def test_a_relabelled_dtype_or_shape_is_refused(saved, tmp_path):
    """Same bytes, other meaning: F32 read as I32, or (C, V) read as (V, C)."""
    blob = saved[1]
    path = tmp_path / FILENAME
    path.write_bytes(blob.replace(b'"dtype":"F32"', b'"dtype":"I32"', 1))
    assert "SHA-256" in _refused(path, cli=True)
    ck = load_checkpoint(saved[0])
    V, C = ck.weights["wte.weight"].shape
    assert V != C
    relabelled = blob.replace(f'"model/wte.weight":{{"dtype":"F32","shape":[{V},{C}]'.encode(),
                              f'"model/wte.weight":{{"dtype":"F32","shape":[{C},{V}]'.encode(), 1)
    assert relabelled != blob
    path.write_bytes(relabelled)
    assert "SHA-256" in _refused(path)


def test_whitespace_in_the_header_padding_is_noticed(saved, tmp_path):
    """JSON would accept a tab for a padding space; the loader must not."""
    ck = load_checkpoint(saved[0])
    for k in range(8):  # lengthen the metadata until the header needs padding
        blob = save_checkpoint(tmp_path, dataclasses.replace(ck, info={"note": "x" * k})).read_bytes()
        raw = blob[8:_header_end(blob)]
        if raw.endswith(b" "):
            break
    load_checkpoint(tmp_path)  # the untouched file loads
    path = tmp_path / FILENAME
    for replacement in (b"\t", b"\n", b"\r"):
        end = _header_end(blob)
        path.write_bytes(blob[:end - 1] + replacement + blob[end:])
        assert "not as tinylm wrote it" in _refused(path)


def test_wrong_format_version_is_named(saved, tmp_path, monkeypatch):
    ck = load_checkpoint(saved[0])
    monkeypatch.setattr(ckpt_module, "VERSION", 99)
    save_checkpoint(tmp_path, ck)
    monkeypatch.undo()
    message = _refused(tmp_path, cli=True)
    assert "format version 99" in message and "reads version 1" in message


def test_a_checkpoint_whose_shapes_do_not_fit_its_config_is_refused(saved, tmp_path):
    ck = load_checkpoint(saved[0])
    bigger = dataclasses.replace(ck, model_config={**ck.model_config, "n_embd": 4096})
    save_checkpoint(tmp_path / "bigger", bigger)  # would need GBs if it were allocated
    assert "parameters but the file holds" in _refused(tmp_path / "bigger", cli=True)

    V, T = ck.model_config["vocab_size"], ck.model_config["block_size"]
    swapped = dataclasses.replace(ck, model_config={**ck.model_config, "vocab_size": T,
                                                    "block_size": V})   # same count, other shapes
    save_checkpoint(tmp_path / "swapped", swapped)
    assert "parameter wte.weight has shape" in _refused(tmp_path / "swapped", cli=True)


def test_a_foreign_safetensors_file_is_not_a_checkpoint(tmp_path):
    save_file({"w": np.zeros(3, np.float32)}, tmp_path / FILENAME, metadata={"format": "pt"})
    assert "not a tinylm checkpoint" in _refused(tmp_path, cli=True)


def test_cli_reports_a_damaged_checkpoint_in_one_line(saved, tmp_path):
    run_dir, blob = saved
    (tmp_path / FILENAME).write_bytes(blob[: len(blob) // 2])
    for command in (["sample", "--ckpt", tmp_path], ["eval", "--ckpt", tmp_path],
                    ["train", "--resume", "--out", tmp_path]):
        assert_one_line_error(invoke(*command), str(tmp_path), code=1)
    assert_one_line_error(invoke("sample", "--ckpt", tmp_path / "missing"), "no checkpoint")


# ----------------------------------------------------------------------------- saving
def test_non_finite_weights_are_never_saved(saved, tmp_path):
    ck = load_checkpoint(saved[0])
    save_checkpoint(tmp_path, ck)
    before = (tmp_path / FILENAME).read_bytes()
    poisoned = dict(ck.weights)
    poisoned["ln_f.weight"] = np.full_like(poisoned["ln_f.weight"], np.nan)
    with pytest.raises(CheckpointError, match="ln_f.weight holds NaN"):
        save_checkpoint(tmp_path, dataclasses.replace(ck, weights=poisoned))
    assert (tmp_path / FILENAME).read_bytes() == before


class _FullDisk:
    """Stands in for ``os`` inside tinylm.fileio: files accept ``room`` bytes, then ENOSPC."""

    def __init__(self, room: int):
        self.room = room

    def __getattr__(self, name):
        return getattr(os, name)

    def fdopen(self, fd, mode):
        disk, real = self, os.fdopen(fd, mode)

        class File:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                real.close()

            def write(self, data):
                if len(data) > disk.room:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                disk.room -= len(data)
                return real.write(data)

            def __getattr__(self, name):
                return getattr(real, name)

        return File()


def test_a_full_disk_keeps_the_previous_checkpoint_and_says_so(tmp_path, monkeypatch):
    data = write_corpus(tmp_path)
    out = tmp_path / "run"
    args = ["train", "--data", data, "--out", out, *TINY_ARGS]
    assert invoke(*args).exit_code == 0
    good = load_checkpoint(out)
    size = (out / FILENAME).stat().st_size
    # the first save of the resumed run (step 4) finds the disk full halfway through the file
    monkeypatch.setattr("tinylm.fileio.os", _FullDisk(room=size // 2))
    result = invoke("train", "--resume", "--out", out, "--max-iters", "6")
    line = assert_one_line_error(result, "could not save the checkpoint at step 4",
                                 "No space left on device", "(step 2)", "intact", "--resume")
    monkeypatch.undo()
    after = load_checkpoint(out)
    assert after.train["step"] == 2 and same_arrays(after.weights, good.weights), line
    # the run's record and its lock stay beside the checkpoint
    leftovers = {p.name for p in out.iterdir()} - {METRICS_FILE, PLOT_FILE, LOCK_NAME}
    assert leftovers == {FILENAME}  # no temporary file left behind


def test_a_full_disk_at_the_first_save_does_not_suggest_resuming_what_does_not_exist(tmp_path,
                                                                                        monkeypatch):
    data = write_corpus(tmp_path)
    monkeypatch.setattr("tinylm.fileio.os", _FullDisk(room=100))
    result = invoke("train", "--data", data, "--out", tmp_path / "run", *TINY_ARGS)
    line = assert_one_line_error(result, "could not save the checkpoint at step 2",
                                 "no checkpoint of this run was written", "run the same command again")
    assert "--resume" not in line and not (tmp_path / "run" / FILENAME).exists()
