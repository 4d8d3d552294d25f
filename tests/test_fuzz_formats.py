"""Every JSON-bearing format tinylm reads, fuzzed with structured mutants (tests/jsonfuzz.py):
deep nesting, huge integers, non-JSON numbers, wrong types, missing, extra and duplicate fields.
Each file is read by the library reader a user's command calls; it is read, or refused with a
one-line TinyLMError, never another exception. (The CLI path of the same refusals is
tests/test_reliability_untrusted.py, under a memory limit.)

Cases: 500 per format (ci), 5,000 (thorough); TINYLM_FUZZ_SEED picks another seed.
"""

import json
import os
import random
import shutil
import time
from collections import Counter

import pytest

from jsonfuzz import mutant
from reliability import TEXT, budget, forge_checkpoint, gpt2_directory, report, tiny_run
from tinylm.bpe import train_bpe
from tinylm.checkpoint import FILENAME, load_model
from tinylm.config import read_toml, resolve_config
from tinylm import fileio
from tinylm.errors import CheckpointError, TinyLMError
from tinylm.gpt2 import load_gpt2, load_gpt2_tokenizer
from tinylm.labelled import read_labelled
from tinylm.safetensors import load_file, read_header
from tinylm.tokenizers import CharTokenizer, WithSpecialTokens, load_tokenizer

SEED = int(os.environ.get("TINYLM_FUZZ_SEED", "17"))
CASES = budget(500, 5000)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzzformats")
    run = tiny_run(base)
    return {"run": run.out, "gpt2": gpt2_directory(base / "gpt2")}


# --------------------------------------------------------------------------- one reader per format
def checkpoint_header(sources, text, tmp):
    """The safetensors header of a real checkpoint, mutated; the data section kept."""
    path = sources["run"] / FILENAME
    blob = path.read_bytes()
    header = read_header(path)
    raw = text.encode("utf-8", "surrogatepass")
    (tmp / FILENAME).write_bytes(len(raw).to_bytes(8, "little") + raw + blob[header.data_start:])
    load_file(tmp / FILENAME)  # the safetensors reader alone
    try:
        load_model(tmp)
    except CheckpointError as exc:
        assert "\n" not in str(exc)
        return "read as safetensors, refused as a checkpoint"


def checkpoint_metadata(sources, text, tmp):
    """The tinylm metadata document, mutated and signed again (digests do not stop forgery)."""
    forge_checkpoint(sources["run"], tmp, text=lambda _: text)
    load_model(tmp)


def char_tokenizer(sources, text, tmp):
    (tmp / "tok.json").write_text(text, encoding="utf-8", errors="surrogatepass")
    assert load_tokenizer(tmp / "tok.json").vocab_size > 0


def bpe_tokenizer(sources, text, tmp):
    (tmp / "tok.json").write_text(text, encoding="utf-8", errors="surrogatepass")
    load_tokenizer(tmp / "tok.json").encode("the cat")


def labelled_jsonl(sources, text, tmp):
    (tmp / "rows.jsonl").write_text(text.replace("\n", " ") + "\n" + '{"text": "ok", "label": "a"}\n',
                                    encoding="utf-8", errors="surrogatepass")
    _, bad = read_labelled(tmp / "rows.jsonl")
    assert all("\n" not in b.reason for b in bad)
    return "a bad row" if bad else None


def _gpt2_copy(sources, tmp, name, text):
    """The GPT-2 directory with ``name`` replaced by ``text`` (the other files hard links)."""
    directory = tmp / "g"
    shutil.copytree(sources["gpt2"], directory, copy_function=os.link)
    (directory / name).unlink(missing_ok=True)  # a new file, not a write through the link
    (directory / name).write_text(text, encoding="utf-8", errors="surrogatepass")
    return directory


def gpt2_config(sources, text, tmp):
    load_gpt2(_gpt2_copy(sources, tmp, "config.json", text))


def gpt2_vocab(sources, text, tmp):
    load_gpt2_tokenizer(_gpt2_copy(sources, tmp, "vocab.json", text))


def gpt2_index(sources, text, tmp):
    directory = _gpt2_copy(sources, tmp, "model.safetensors.index.json", text)
    (directory / "model.safetensors").rename(directory / "model-00001-of-00001.safetensors")
    load_gpt2(directory)


def toml_config(sources, text, tmp):
    """TOML, not JSON, but the same attacks: the mutant's top-level fields as TOML values."""
    (tmp / "c.toml").write_text(as_toml(text), encoding="utf-8", errors="surrogatepass")
    values = read_toml(str(tmp / "c.toml"))
    resolve_config(None, values, {})


def as_toml(text: str) -> str:
    """Each top-level field of a JSON object mutant as `key = value` (JSON values are mostly
    TOML values: arrays, strings, numbers, true/false); anything else as the raw text."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return f"n_layer = {text}\n"
    if not isinstance(doc, dict):
        return f"n_layer = {text}\n"
    lines = []
    for key, value in doc.items():
        if value is None:
            value = "null"  # not TOML: refused as such
        lines.append(f"{json.dumps(key)} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- valid documents
def documents(sources):
    meta_text = read_header(sources["run"] / FILENAME).metadata["tinylm"]
    char = CharTokenizer.from_text(TEXT)
    bpe = train_bpe(TEXT, 270)
    vocab = json.loads((sources["gpt2"] / "vocab.json").read_text(encoding="utf-8"))
    names = list(read_header(sources["gpt2"] / "model.safetensors").entries)
    return {
        "checkpoint header": json.loads(read_header(sources["run"] / FILENAME).raw),
        "checkpoint metadata": json.loads(meta_text),
        "tokenizer JSON (char, special tokens)": [char.to_dict(), WithSpecialTokens(char).to_dict()],
        "tokenizer JSON (BPE)": bpe.to_dict(),
        "labelled JSONL": {"text": "a fine film", "label": "pos"},
        "GPT-2 config.json": json.loads((sources["gpt2"] / "config.json").read_text()),
        "GPT-2 vocab.json": vocab,
        "GPT-2 index": {"metadata": {"total_size": 1}, "weight_map": {
            n: "model-00001-of-00001.safetensors" for n in names}},
        "TOML config": {"n_layer": 1, "n_head": 2, "n_embd": 8, "block_size": 8, "bias": True,
                        "dropout": 0.0, "learning_rate": 1e-3, "max_iters": 2, "data": "x.txt",
                        "val_fraction": 0.1, "preset": "tiny"},
    }


READERS = {"checkpoint header": checkpoint_header, "checkpoint metadata": checkpoint_metadata,
           "tokenizer JSON (char, special tokens)": char_tokenizer, "tokenizer JSON (BPE)": bpe_tokenizer,
           "labelled JSONL": labelled_jsonl, "GPT-2 config.json": gpt2_config,
           "GPT-2 vocab.json": gpt2_vocab, "GPT-2 index": gpt2_index, "TOML config": toml_config}


@pytest.mark.parametrize("fmt", list(READERS))
def test_fuzzed_files_are_read_or_refused_in_one_line(fmt, sources, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(fileio.os, "fsync", lambda fd: None)  # tmp files need no durability: 5x faster
    docs = documents(sources)[fmt]
    rng = random.Random(f"{SEED}-{fmt}")
    tally, slowest = Counter(), 0.0
    start = time.perf_counter()
    for case in range(CASES):
        doc = rng.choice(docs) if isinstance(docs, list) else docs
        text = mutant(rng, doc)
        tmp = tmp_path / str(case)
        tmp.mkdir()
        began = time.perf_counter()
        try:
            tally[READERS[fmt](sources, text, tmp) or "read"] += 1
        except TinyLMError as exc:
            message = str(exc)
            assert message and "\n" not in message, (fmt, text[:300], message)
            tally[type(exc).__name__] += 1
        slowest = max(slowest, time.perf_counter() - began)
        shutil.rmtree(tmp)
    seconds = time.perf_counter() - start
    report(capsys, f"fuzz {fmt}: {CASES} files in {seconds:.1f} s, slowest {slowest:.2f} s "
                   f"({', '.join(f'{k}: {n}' for k, n in sorted(tally.items()))}); 0 tracebacks")
    assert sum(tally.values()) == CASES and slowest < 5, slowest
    assert tally["read"] < CASES, "no mutant was refused: the fuzzer is not reaching the checks"


def test_mutants_carry_each_kind_of_attack():
    rng = random.Random(0)
    texts = [mutant(rng, {"a": [1, 2], "b": {"c": "d"}}) for _ in range(400)]
    assert any("9" * 4301 in t for t in texts)
    assert any("[" * 1000 in t for t in texts)
    assert any("NaN" in t or "Infinity" in t for t in texts)
    assert any(t.count('"a": ') == 2 or t.count('"c": ') == 2 for t in texts)  # duplicate keys
    assert any('"extra"' in t for t in texts)
    assert any('"b"' not in t and t.startswith('{"a"') for t in texts)  # a missing field
