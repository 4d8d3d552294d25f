"""Fuzzing the command line and the TOML config: every input gets a result or one line
'error: ...' (exit 1 or 2), never a traceback, never a hang.

Values are drawn per option from what a user might type: small valid numbers, zero,
negatives, NaN and infinities, junk text, and sizes so large that the run must be
refused before it allocates (never sizes that would merely train for a long time:
that is a valid request, not a hang). Cases: 400 (ci) or 1,200 (thorough).
"""

import json
import math
import shutil
import signal
import time
from collections import Counter
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from reliability import assert_clean, budget, invoke, report, tiny_run, write_corpus

SECONDS_PER_CASE = 30  # far above the slowest legitimate case (~1 s); beyond it is a hang


class Hang(Exception):
    pass


@contextmanager
def time_limit(seconds: float):
    def expired(signum, frame):
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --------------------------------------------------------------------------- values
def _ints(low, high, refused=None):
    """Small integers, plus (if given) sizes far beyond any machine's memory."""
    small = st.integers(low, high)
    return st.one_of(small, st.integers(*refused)) if refused else small


ANY_FLOAT = st.one_of(st.floats(), st.floats(-2, 2), st.integers(-3, 3))
FIELDS = {
    # sizes: small, or so large that the memory estimate or the data length refuses them
    "n_layer": _ints(-1, 2, (10**9, 10**15)),
    "n_head": _ints(-1, 4, (10**9, 10**15)),
    "n_embd": _ints(-1, 16, (10**7, 10**15)),
    "block_size": _ints(-1, 12, (10**6, 10**15)),
    "batch_size": _ints(-1, 6, (10**9, 10**15)),
    # how long it runs: small only
    "max_iters": _ints(-1, 4),
    "eval_iters": _ints(-1, 2),
    "grad_accum": _ints(-1, 2),
    # free
    "eval_interval": _ints(-1, 10**15),
    "log_interval": _ints(-1, 10**15),
    "warmup_iters": _ints(-3, 10**15),
    "lr_decay_iters": _ints(-3, 10**15),
    "seed": _ints(-3, 2**80),
    "learning_rate": ANY_FLOAT, "min_lr": ANY_FLOAT, "weight_decay": ANY_FLOAT,
    "beta1": ANY_FLOAT, "beta2": ANY_FLOAT, "grad_clip": ANY_FLOAT, "dropout": ANY_FLOAT,
    "bias": st.one_of(st.booleans(), st.integers(-1, 2)),
    "val_fraction": ANY_FLOAT,
}
SAFE = dict(n_layer=1, n_head=2, n_embd=8, block_size=8, batch_size=2, max_iters=2,
            eval_interval=2, eval_iters=1, warmup_iters=1)
JUNK = st.one_of(st.text(max_size=6), st.sampled_from(["", "1e3", "0x10", "1_000", "--", "∞",
                                                      "NaN", "true", "-0", " 3"]))


def _option_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


@st.composite
def train_argv(draw, paths):
    """`tinylm train` arguments: safe sizes first, then fuzzed options (later ones win)."""
    argv = ["train", "--out", draw(st.sampled_from(["fresh", "copy of trained", "a file"])), *sum(
        ([f"--{k.replace('_', '-')}", str(v)] for k, v in SAFE.items()), [])]
    argv += ["--data", draw(st.sampled_from(["corpus", "corpus", "corpus", "missing", "directory",
                                            "binary", "empty"]))]
    for name in draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=6, unique=True)):
        value = draw(JUNK) if draw(st.integers(0, 4)) == 0 else _option_text(draw(FIELDS[name]))
        argv += [f"--{name.replace('_', '-')}", value]
    flags = draw(st.lists(st.sampled_from(["--resume", "--overwrite", "--preset", "--backend",
                                          "--threads", "--bogus", "--config"]), max_size=2, unique=True))
    for flag in flags:
        if flag == "--preset":
            argv += [flag, draw(st.sampled_from(["tiny", "cpu", "shakespeare", "huge", ""]))]
        elif flag == "--backend":
            argv += [flag, draw(st.sampled_from(["numpy", "cupy", "tpu", ""]))]
        elif flag == "--threads":
            argv += [flag, draw(st.sampled_from(["1", "0", "-2", "many"]))]
        elif flag == "--config":
            argv += [flag, draw(st.sampled_from(["missing.toml", "directory", "binary"]))]
        else:
            argv.append(flag)
    return [paths.get(a, a) if not a.startswith("-") else a for a in argv]


@st.composite
def other_argv(draw, paths):
    """`tinylm sample`, `eval` and `backends` with fuzzed options."""
    command = draw(st.sampled_from(["sample", "eval", "backends", "nonsense"]))
    ckpt = ["--ckpt", paths[draw(st.sampled_from(["trained", "trained", "fresh", "a file", "corpus"]))]]
    if command == "sample":
        options = {"--prompt": st.text(alphabet=st.characters(exclude_characters="\x00"), max_size=12),
                   "--num-tokens": st.one_of(_ints(-2, 5).map(str), JUNK),
                   "--temperature": st.one_of(ANY_FLOAT.map(_option_text), JUNK),
                   "--top-k": st.one_of(_ints(-2, 10**20).map(str), JUNK),
                   "--seed": st.one_of(_ints(-3, 2**70).map(str), JUNK)}
    elif command == "eval":
        options = {"--data": st.sampled_from(["corpus", "missing", "binary", "empty", "directory"]),
                   "--batches": st.one_of(_ints(-1, 3).map(str), JUNK),
                   "--batch-size": st.one_of(_ints(-1, 4, (10**9, 10**15)).map(str), JUNK)}
    else:
        options = {}
    argv = [command, *(ckpt if command in ("sample", "eval") and draw(st.integers(0, 9)) else [])]
    for name in draw(st.lists(st.sampled_from(sorted(options)), max_size=4, unique=True)) if options else []:
        argv += [name, draw(options[name])]
    if draw(st.integers(0, 4)) == 0:
        argv.append(draw(st.sampled_from(["--json", "--help", "--bogus", "extra"])))
    return [paths.get(a, a) if a in ("corpus", "missing", "binary", "empty", "directory") else a
            for a in argv]


# --------------------------------------------------------------------------- TOML
TOML_KEYS = sorted(FIELDS) + ["preset", "data", "val_fraction", "nonsense", "n-layer"]
NOT_INTEGERS = st.one_of(
    st.floats(), st.booleans(),
    st.text(alphabet=st.characters(), max_size=8),   # lone surrogates included: invalid UTF-8
    st.sampled_from(["1979-05-27T07:32:00Z", "07:32:00", "[1, 2]", "{ a = 1 }", "tiny", "cpu"]))
TOML_SCALAR = st.one_of(st.integers(-(2**63), 2**63 - 1), NOT_INTEGERS)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") \
            if math.isinf(value) else repr(value)
    if isinstance(value, str) and value[:1] in "[{0" and value not in ("", "0"):
        return value  # a literal array, table or date
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string
    return str(value)


@st.composite
def toml_documents(draw) -> bytes:
    """Mostly well-formed TOML naming config fields (safe sizes unless overridden), some junk."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(max_size=64))
    if kind == 1:
        return draw(st.text(max_size=64)).encode("utf-8", "surrogatepass")
    entries = {k: _toml_value(v) for k, v in SAFE.items()}
    entries["data"] = json.dumps("CORPUS")
    for key in draw(st.lists(st.sampled_from(TOML_KEYS), max_size=5, unique=True)):
        # a config field's integers come from FIELDS only (no size that merely trains for long)
        value = draw(st.one_of(FIELDS[key], NOT_INTEGERS) if key in FIELDS else TOML_SCALAR)
        entries[key] = _toml_value(value)
    lines = [f"{k} = {v}" for k, v in entries.items()]
    if draw(st.booleans()):  # some keys inside [model] / [train] tables
        split = draw(st.integers(0, len(lines)))
        lines = lines[:split] + [draw(st.sampled_from(["[model]", "[train]", "[[train]]", "[x"]))] \
            + lines[split:]
    return "\n".join(lines).encode("utf-8", "surrogatepass")


# --------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzzcli")
    run = tiny_run(root)
    (root / "directory").mkdir()
    (root / "binary").write_bytes(bytes(range(256)) * 4)
    (root / "empty").write_text("")
    (root / "a file").write_text("not a directory")
    return {"root": root, "corpus": str(write_corpus(root)), "trained": str(run.out),
            "missing": str(root / "missing"), "directory": str(root / "directory"),
            "binary": str(root / "binary"), "empty": str(root / "empty"),
            "a file": str(root / "a file"), "fresh": str(root / "fresh"),
            "copy of trained": str(root / "copy")}


SETTINGS = dict(deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


def _run_case(argv, tally, slowest):
    start = time.perf_counter()
    with time_limit(SECONDS_PER_CASE):
        result = invoke(*argv)
    slowest[:] = max(slowest, [time.perf_counter() - start, argv])
    assert_clean(result)
    tally[result.exit_code] += 1


def test_fuzzed_command_lines_and_configs_never_crash(paths, capsys):
    tally, slowest, fresh = Counter(), [0.0, None], iter(range(10**9))

    def fresh_out(argv):
        """Every case trains into its own directory (a copy, where it resumes the trained run)."""
        n = next(fresh)
        if paths["copy of trained"] in argv:
            shutil.copytree(paths["trained"], f"{paths['copy of trained']}{n}")
        return [f"{a}{n}" if a in (paths["fresh"], paths["copy of trained"]) else a for a in argv]

    @settings(max_examples=budget(240, 800), **SETTINGS)
    @given(st.one_of(train_argv(paths), train_argv(paths), other_argv(paths)))
    def command_line(argv):
        _run_case(fresh_out(argv), tally, slowest)

    @settings(max_examples=budget(160, 400), **SETTINGS)
    @given(toml_documents(), st.lists(st.sampled_from(sorted(FIELDS)), max_size=2))
    def config_file(document, cli_overrides):
        config = paths["root"] / "config.toml"
        config.write_bytes(document.replace(b"CORPUS", paths["corpus"].encode()))
        argv = ["train", "--config", str(config), "--out", paths["fresh"]]
        if b"CORPUS" not in document:  # not one of ours: keep a valid one from training for long
            argv += ["--data", paths["corpus"], *sum(([f"--{k.replace('_', '-')}", str(v)]
                                                      for k, v in SAFE.items()), [])]
        argv += sum(([f"--{k.replace('_', '-')}", _option_text(SAFE.get(k, 1))] for k in cli_overrides), [])
        _run_case(fresh_out(argv), tally, slowest)

    start = time.perf_counter()
    command_line()
    config_file()
    total = sum(tally.values())
    report(capsys, f"fuzz CLI/config: {total} inputs in {time.perf_counter() - start:.1f} s "
                   f"(exit 0: {tally[0]}, 1: {tally[1]}, 2: {tally[2]}); 0 tracebacks, 0 hangs; "
                   f"slowest {slowest[0]:.2f} s: {slowest[1]}")
    assert total >= budget(240, 800) + budget(160, 400) - 10
