"""Every hostile input of issue 17, run as a user runs it, under a 1 GiB address-space limit and
a 10 s timeout: each ends with one line on stderr and a non-zero exit, never a traceback, a hang
or a silent success. Then the cases that need two processes or a signal: two writers on one
--out, a FIFO as --data, Ctrl-C during start-up.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from reliability import (TINY_ARGS, forge_checkpoint, gpt2_directory, limited_run, report,
                         safetensors_bytes, tiny_run, write_corpus)

HUGE_INT = "9" * 5000
DEEP = "[" * 100_000 + "]" * 100_000
TENSOR = '"t": {"dtype": "F32", "shape": %s, "data_offsets": [0, 0]}'


def header_file(header: str, data: bytes = b""):
    def build(tmp, run, gpt2):
        (tmp / "ck").mkdir()
        (tmp / "ck" / "checkpoint.safetensors").write_bytes(safetensors_bytes(header, data))
        return ["eval", "--ckpt", tmp / "ck"]
    return build


def sparse_file(header=None, size: int = 4 * 2**30):
    """A 4 GiB file (sparse: no disk used) behind a small header; without ``header``, a valid
    one naming a single tensor of all the rest."""
    def build(tmp, run, gpt2):
        (tmp / "ck").mkdir()
        text = header
        n = size
        for _ in range(2 if text is None else 0):  # n has as many digits in both passes
            text = json.dumps({"t": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}},
                              separators=(",", ":"))
            text += " " * (-len(text) % 8)
            n = size - 8 - len(text)
        with open(tmp / "ck" / "checkpoint.safetensors", "wb") as fh:
            fh.write(safetensors_bytes(text))
            fh.truncate(size)
        return ["eval", "--ckpt", tmp / "ck"]
    return build


def forged(command: str, **forge):
    def build(tmp, run, gpt2):
        forge_checkpoint(run, tmp / "ck", **forge)
        if command == "eval":
            return ["eval", "--ckpt", tmp / "ck", "--batches", "1"]
        return ["train", "--resume", "--out", tmp / "ck", "--max-iters", "4"]
    return build


def train_field(key, value):
    return lambda meta: meta["train"].__setitem__(key, value)


def data_path(value):
    """Every place a run records its data (as given, absolute, beside the run) set to ``value``."""
    return lambda meta: meta["train"]["data"].update(path=value, resolved=value, relative_to_run=value)


def poison(value):
    def change(arrays):
        arrays["model/wte.weight"].flat[3] = value
        return arrays
    return change


def gpt2_variant(edit):
    """import-gpt2 of a copy of the GPT-2 directory after ``edit(directory)``."""
    def build(tmp, run, gpt2):
        shutil.copytree(gpt2, tmp / "g")
        edit(tmp / "g")
        return ["import-gpt2", tmp / "g", "--out", tmp / "imported"]
    return build


def edit_json(name, change=None, raw=None):
    def edit(directory):
        if raw is not None:
            (directory / name).write_text(raw)
            return
        doc = json.loads((directory / name).read_text())
        change(doc)
        (directory / name).write_text(json.dumps(doc))
    return edit


def index_file(weight_map_json: str):
    def edit(directory):
        (directory / "model.safetensors").rename(directory / "shard-1.safetensors")
        (directory / "model.safetensors.index.json").write_text(weight_map_json)
    return edit


def train_with(*options, data=True):
    def build(tmp, run, gpt2):
        corpus = ["--data", write_corpus(tmp)] if data else []
        return ["train", *corpus, "--out", tmp / "out", *TINY_ARGS, *options]
    return build


def file_then(name, content, *options):
    def build(tmp, run, gpt2):
        (tmp / name).write_text(content)
        return train_with(*[tmp / name if o is None else o for o in options])(tmp, run, gpt2)
    return build


def labelled(line):
    def build(tmp, run, gpt2):
        (tmp / "rows.jsonl").write_text(line + "\n")
        return ["finetune", "--ckpt", run, "--train", tmp / "rows.jsonl", "--val", tmp / "rows.jsonl",
                "--out", tmp / "ft"]
    return build


def fifo_data(tmp, run, gpt2):
    os.mkfifo(tmp / "pipe")
    return ["train", "--data", tmp / "pipe", "--out", tmp / "out", *TINY_ARGS]


def symlink_loop(tmp, run, gpt2):
    os.symlink(tmp / "b", tmp / "a")
    os.symlink(tmp / "a", tmp / "b")
    return train_with("--out", tmp / "a")(tmp, run, gpt2)


def literal(*args):
    return lambda tmp, run, gpt2: [*args]


# (case, how to build it, a fragment of the expected line)
CASES = [
    # 1. unbounded memory
    ("train --data /dev/zero", literal("train", "--data", "/dev/zero"), "character device"),
    ("eval of a run whose data is /dev/zero", forged("eval", edit=data_path("/dev/zero")), "character device"),
    ("resume of a run whose data is /dev/zero", forged("resume", edit=data_path("/dev/zero")), "character device"),
    ("import-gpt2, config n_layer 200 n_embd 1024", gpt2_variant(edit_json(
        "config.json", lambda c: c.update(n_layer=200, n_embd=1024))), "parameters but the weights hold"),
    ("import-gpt2, config n_layer 10**12", gpt2_variant(edit_json(
        "config.json", lambda c: c.update(n_layer=10**12))), "parameters but the weights hold"),
    ("4 GiB sparse checkpoint, bad header", sparse_file('{"a": nonsense}'), "not valid JSON"),
    ("4 GiB sparse checkpoint, one 4 GiB tensor", sparse_file(), "not a tinylm checkpoint"),
    # 2. a hang
    ("train --data FIFO", fifo_data, "FIFO"),
    # 3. tracebacks: huge integers and deep nesting everywhere JSON is read
    ("checkpoint header: huge int", header_file("{%s}" % (TENSOR % f"[{HUGE_INT}]")), "5000 digits"),
    ("checkpoint header: deep nesting", header_file('{"__metadata__": %s}' % DEEP), "levels deep"),
    ("checkpoint metadata: huge int", forged("eval", text=lambda s: s.replace('"step": 2', f'"step": {HUGE_INT}')),
     "5000 digits"),
    ("checkpoint metadata: deep nesting", forged("eval", text=lambda s: s.replace('"step": 2', f'"step": {DEEP}')),
     "levels deep"),
    ("tokenizer file: huge int", file_then("tok.json", '{"type": "char", "x": %s}' % HUGE_INT, "--tokenizer", None),
     "5000 digits"),
    ("tokenizer file: deep nesting", file_then("tok.json", DEEP, "--tokenizer", None), "levels deep"),
    ("labelled JSONL: huge int", labelled('{"text": "a", "label": %s}' % HUGE_INT), "5000 digits"),
    ("labelled JSONL: deep nesting", labelled(DEEP), "levels deep"),
    ("GPT-2 config.json: huge int", gpt2_variant(edit_json("config.json", raw='{"n_layer": %s}' % HUGE_INT)),
     "5000 digits"),
    ("GPT-2 config.json: deep nesting", gpt2_variant(edit_json("config.json", raw=DEEP)), "levels deep"),
    ("GPT-2 vocab.json: huge int", gpt2_variant(edit_json("vocab.json", raw='{"a": %s}' % HUGE_INT)),
     "5000 digits"),
    ("GPT-2 vocab.json: deep nesting", gpt2_variant(edit_json("vocab.json", raw=DEEP)), "levels deep"),
    ("GPT-2 model.safetensors: huge int", gpt2_variant(lambda d: (d / "model.safetensors").write_bytes(
        safetensors_bytes("{%s}" % (TENSOR % f"[{HUGE_INT}]")))), "5000 digits"),
    ("GPT-2 index: huge int", gpt2_variant(index_file('{"weight_map": {"a": %s}}' % HUGE_INT)), "5000 digits"),
    ("GPT-2 index: deep nesting", gpt2_variant(index_file(DEEP)), "levels deep"),
    ("shape [0, 10**30]", header_file("{%s}" % (TENSOR % f"[0, {10**30}]")), "describes more bytes"),
    ("shape [0, 2**63]", header_file("{%s}" % (TENSOR % f"[0, {2**63}]")), "describes more bytes"),
    ("shape of 65 dimensions", header_file("{%s}" % (TENSOR % json.dumps([1] * 65))), "65 dimensions"),
    ("forged history", forged("resume", edit=train_field("history", [[1, 2]])), "history[0] must be"),
    ("forged objective mlm on a character GPT", forged("eval", edit=train_field("objective", "mlm")),
     "does not train a 'gpt' model"),
    ("forged negative optimizer step", forged("resume", edit=lambda m: m["train"]["optimizer"].update(step=-1)),
     "step must be >= 0"),
    ("forged string optimizer step", forged("resume", edit=lambda m: m["train"]["optimizer"].update(step="5")),
     "must be an integer"),
    ("forged non-string data path", forged("eval", edit=data_path(5)), "'path' must be a string"),
    ("GPT-2 index without weight_map", gpt2_variant(index_file('{"metadata": {}}')), "missing field 'weight_map'"),
    ("GPT-2 index with a non-string shard", gpt2_variant(index_file('{"weight_map": {"a": 1}}')),
     "is not a file name"),
    ("GPT-2 vocab.json with float ids", gpt2_variant(edit_json(
        "vocab.json", lambda v: v.update({k: float(i) for k, i in list(v.items())[:3]}))), "integer ids"),
    # 4. accepted silently
    ("NaN weight", forged("eval", tensors=poison(np.nan)), "NaN or inf"),
    ("inf weight", forged("eval", tensors=poison(np.inf)), "NaN or inf"),
    ('TOML bias = "no"', file_then("c.toml", 'bias = "no"\n', "--config", None), "bias must be true or false"),
    ("GPT-2 index naming ../../x.safetensors", gpt2_variant(index_file(
        '{"weight_map": {"wte.weight": "../../x.safetensors"}}')), "is not a file name"),
    # 6. late failure of --out
    ('--out ""', train_with("--out", ""), "--out is empty"),
    ("--out /dev/null", train_with("--out", "/dev/null"), "not a directory"),
    ("--out /proc/x", train_with("--out", "/proc/tinylm-x"), "cannot write the run directory"),
    ("--out symlink loop", symlink_loop, "symlink loop"),
]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    base = tmp_path_factory.mktemp("untrusted")
    run = tiny_run(base)
    return run.out, gpt2_directory(base / "gpt2")


def _run_case(case, sources, root):
    name, build, fragment = case
    tmp = root / f"case{CASES.index(case)}"
    tmp.mkdir()
    args = build(tmp, *sources)
    code, stderr, seconds = limited_run(args, cwd=tmp)
    return name, fragment, code, stderr, seconds


def test_every_hostile_input_is_refused_in_one_line_within_memory_and_time(sources, tmp_path, capsys):
    with ThreadPoolExecutor(2) as pool:  # two at a time: the CI machine has 2 cores
        results = list(pool.map(lambda case: _run_case(case, sources, tmp_path), CASES))
    failures = []
    for name, fragment, code, stderr, seconds in results:
        lines = [line for line in stderr.splitlines() if line.strip()]
        # one error line, the last; before it at most the resolved config a command announces
        ok = (code not in (None, 0) and "Traceback" not in stderr and lines
              and lines[-1].startswith("error: ") and fragment in lines[-1]
              and all(line.startswith("finetune: {") for line in lines[:-1]))
        if not ok:
            failures.append(f"{name}: exit {code} after {seconds:.1f} s, stderr {stderr[-400:]!r}")
    slowest = max(results, key=lambda r: r[4])
    report(capsys, f"hostile inputs: {len(results)} cases under RLIMIT_AS 1 GiB, each refused in one "
                   f"line; slowest {slowest[4]:.1f} s ({slowest[0]})")
    assert not failures, "\n".join(failures)


# --------------------------------------------------------------------------- two writers
def test_a_second_writer_on_the_same_out_is_refused_naming_the_first(tmp_path):
    corpus = write_corpus(tmp_path)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "tinylm.console", "train", "--data", corpus,
                              "--out", tmp_path / "run", *TINY_ARGS, "--max-iters", "100000",
                              "--eval-interval", "100000"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(200):  # until it holds the lock (it reports its config after taking it)
            if (tmp_path / "run" / ".lock").exists() and \
                    (tmp_path / "run" / ".lock").read_text().startswith("pid "):
                break
            time.sleep(0.05)
        code, stderr, _ = limited_run(["train", "--data", corpus, "--out", tmp_path / "run",
                                       "--overwrite", *TINY_ARGS], cwd=tmp_path)
        assert code == 1 and stderr.count("\n") == 1, stderr
        assert f"is in use by pid {first.pid} on " in stderr, stderr
    finally:
        first.send_signal(signal.SIGINT)  # stops at the next step and saves
        first.communicate(timeout=60)
    assert first.returncode == 0
    # the first writer is gone: its lock went with it, and a new run takes the directory over
    code, stderr, _ = limited_run(["train", "--data", corpus, "--out", tmp_path / "run", "--overwrite",
                                   *TINY_ARGS], cwd=tmp_path, timeout=60)
    assert code == 0, stderr


def test_a_lock_left_by_a_killed_writer_is_taken_over(tmp_path):
    from tinylm.rundir import exclusive

    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()  # a pid that no longer runs
    (out / ".lock").write_text(f"pid {dead} on elsewhere\n")  # what a kill -9 leaves behind
    (out / f".probe.{dead}.0a1b2c3d.tmp").write_text("tinylm")  # killed while probing
    with exclusive(out):
        assert (out / ".lock").read_text().startswith(f"pid {os.getpid()} on ")
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


def test_the_lock_refuses_a_second_holder_in_this_process_too(tmp_path):
    from tinylm.rundir import RunDirectoryBusy, exclusive

    with exclusive(tmp_path / "run"):
        with pytest.raises(RunDirectoryBusy, match=rf"is in use by pid {os.getpid()} on "):
            with exclusive(tmp_path / "run"):
                pass


# --------------------------------------------------------------------------- start-up signals
def test_ctrl_c_during_start_up_is_one_line_and_exit_130(tmp_path, capsys):
    """SIGINT at moments spread over start-up (imports, argument parsing, reading the data)."""
    outcomes = []
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    for delay in (0.06, 0.12, 0.2, 0.3, 0.45, 0.6):
        process = subprocess.Popen([sys.executable, "-m", "tinylm.console", "train", "--preset", "tiny",
                                    "--out", tmp_path / f"run{delay}"], env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        lines = [line for line in stderr.splitlines() if line.strip()]
        outcomes.append((delay, process.returncode, lines[-1] if lines else ""))
        assert "Traceback" not in stderr, (delay, stderr)
        if process.returncode == 130:
            assert len(lines) == 1 and lines[0] in ("interrupted", "aborted"), stderr
        else:  # it got as far as training: the first SIGINT stops after a step and saves
            assert process.returncode == 0 and "stopped at step" in stderr, (delay, stderr)
    report(capsys, f"Ctrl-C during start-up: {[(d, c) for d, c, _ in outcomes]} (delay s, exit)")
    assert any(code == 130 for _, code, _ in outcomes)


def test_importing_tinylm_leaves_sigint_alone():
    code = ("import signal, tinylm, tinylm.cli, tinylm.console; "
            "assert signal.getsignal(signal.SIGINT) is signal.default_int_handler; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def test_a_fifo_given_to_eval_is_refused_without_waiting_for_a_writer(sources, tmp_path):
    os.mkfifo(tmp_path / "pipe")
    code, stderr, seconds = limited_run(["eval", "--ckpt", sources[0], "--data", tmp_path / "pipe"],
                                        cwd=tmp_path)
    assert code == 1 and stderr.startswith("error: data file ") and "is a FIFO" in stderr, stderr
    assert seconds < 10
