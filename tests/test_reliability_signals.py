"""Interruption: `tinylm train` as a process, stopped by SIGINT, SIGTERM or SIGKILL at random
moments, then resumed, ends with exactly the parameters of a run that was never interrupted.

The number of random points is TINYLM_INTERRUPTIONS, else 6 (ci) or 24 (thorough profile);
each point costs two process starts (~0.4 s each) plus the training itself.
"""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from reliability import budget, report, same_arrays, tinylm_process, write_corpus
from tinylm.checkpoint import FILENAME, load_checkpoint
from tinylm.rundir import LOCK_NAME
from tinylm.metrics import METRICS_FILE, PLOT_FILE

MAX_ITERS = 30
ARGS = ["--preset", "tiny", "--max-iters", str(MAX_ITERS), "--eval-interval", "5",
        "--eval-iters", "1", "--dropout", "0.1", "--warmup-iters", "5"]
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)


def _finish(proc, timeout=120):
    out, err = proc.communicate(timeout=timeout)
    assert "Traceback" not in err, err
    return proc.returncode, out, err


def _train(data, out, *extra):
    """Run `tinylm train` to completion; (stdout, stderr)."""
    rc, stdout, stderr = _finish(tinylm_process("train", "--data", data, "--out", out, *ARGS, *extra))
    assert rc == 0 and f"done: {MAX_ITERS} steps" in stdout, stderr
    return stdout, stderr


def _wait_for_training(proc) -> None:
    """Read stderr until the first progress line: training has begun (handlers are installed)."""
    for line in proc.stderr:
        if line.startswith("step "):
            return
    raise AssertionError(f"the run ended before training began: rc {proc.wait()}")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(data path, final checkpoint, seconds of training) of an uninterrupted run."""
    root = tmp_path_factory.mktemp("uninterrupted")
    data = write_corpus(root)
    proc = tinylm_process("train", "--data", data, "--out", root / "run", *ARGS)
    _wait_for_training(proc)
    start = time.monotonic()
    rc, stdout, stderr = _finish(proc)
    assert rc == 0, stderr
    return data, load_checkpoint(root / "run"), time.monotonic() - start


def _interrupt(data, out: Path, sig, delay: float):
    """Start a run, deliver ``sig`` ``delay`` s into training. Returns the step it stopped at
    (0: killed before the first checkpoint), or None and the seconds the run took if it
    finished first. Checks what each signal promises."""
    proc = tinylm_process("train", "--data", data, "--out", out, *ARGS)
    _wait_for_training(proc)
    start = time.monotonic()
    time.sleep(delay)
    proc.send_signal(sig)
    rc, stdout, stderr = _finish(proc)
    if "done:" in stdout:
        return None, time.monotonic() - start  # the signal came after the last step
    if sig == signal.SIGKILL:
        assert rc == -signal.SIGKILL, (rc, stderr)
        if not (out / FILENAME).exists():
            return 0, None  # killed before the first checkpoint: nothing to resume, nothing damaged
        step = load_checkpoint(out).train["step"]  # the last checkpoint is intact
        assert step % 5 == 0
        return step, None
    assert rc == 0, (rc, stderr)
    assert f"Resume with: tinylm train --resume --out {out}" in stderr, stderr
    step = load_checkpoint(out).train["step"]
    assert f"stopped at step {step};" in stderr
    return step, None


def test_interrupted_runs_resume_to_the_uninterrupted_parameters(reference, tmp_path, capsys):
    data, final, seconds = reference
    points = int(os.environ.get("TINYLM_INTERRUPTIONS", budget(6, 24)))
    rng = random.Random(int(os.environ.get("TINYLM_INTERRUPTION_SEED", "8")))
    stopped_at, missed, start = [], 0, time.monotonic()
    for i in range(points):
        sig = SIGNALS[i % 3]
        out = tmp_path / f"point{i}"
        for attempt in range(5):
            step, took = _interrupt(data, out, sig, rng.uniform(0, 0.9 * seconds))
            if step is not None:
                break
            missed += 1  # this machine is faster now than when the reference ran: aim earlier
            seconds = min(seconds, took)
            (out / FILENAME).unlink()
        assert step is not None, "five signals in a row came after the last step"
        if step == 0:
            _train(data, out)
        else:
            rc, stdout, stderr = _finish(tinylm_process("train", "--resume", "--out", out))
            assert rc == 0 and f"resuming {out} at step {step}" in stderr, stderr
        resumed = load_checkpoint(out)
        assert resumed.train["step"] == MAX_ITERS
        assert same_arrays(resumed.weights, final.weights), f"{sig.name} at step {step}: weights differ"
        assert same_arrays(resumed.optimizer, final.optimizer), f"{sig.name} at step {step}: moments"
        assert resumed.train["history"] == final.train["history"]
        stopped_at.append(f"{sig.name[3:]}@{step}")
    report(capsys, f"interruption: {points} random points ({', '.join(stopped_at)}), {missed} signals "
                   f"after the end redrawn; all resumed bitwise to the uninterrupted parameters in "
                   f"{time.monotonic() - start:.1f} s")


# A run that saves at step 2, then is held inside its second save (step 4) until killed.
_HELD_IN_SAVE = textwrap.dedent("""
    import os, sys, time
    from tinylm import fileio
    from tinylm.cli import main
    sys.modules["matplotlib"] = None  # no loss.png: the only atomic write is the checkpoint's
    data, out, where = sys.argv[1:4]
    args = ["train", "--data", data, "--out", out, "--n-layer", "1", "--n-head", "2",
            "--n-embd", "8", "--block-size", "8", "--batch-size", "2", "--eval-interval", "2",
            "--eval-iters", "1"]
    try:
        main([*args, "--max-iters", "2"])
    except SystemExit:
        pass
    real_fdopen, real_fsync = os.fdopen, os.fsync

    def hold(*_):
        print("holding", flush=True)
        time.sleep(600)

    class HalfWritten:
        def __init__(self, f):
            self.f, self.writes = f, 0
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            self.f.close()
        def write(self, data):
            self.writes += 1
            if self.writes == 3:  # length and header written, tensor data not
                self.f.flush()
                hold()
            return self.f.write(data)
        def __getattr__(self, name):
            return getattr(self.f, name)

    if where == "during-write":
        fileio.os.fdopen = lambda fd, mode: HalfWritten(real_fdopen(fd, mode))
    else:
        fileio.os.fsync = hold
    main(["train", "--resume", "--out", out, "--max-iters", "4"])
""")


@pytest.mark.parametrize("where", ["during-write", "before-rename"])
def test_sigkill_inside_a_save_leaves_the_previous_checkpoint(tmp_path, where):
    data, out = write_corpus(tmp_path), tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", _HELD_IN_SAVE, str(data), str(out), where],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        held = any(line.strip() == "holding" for line in proc.stdout)  # stops at "holding"
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert held, "the writer never reached the save"
    assert load_checkpoint(out).train["step"] == 2
    kept = {FILENAME, METRICS_FILE, PLOT_FILE, LOCK_NAME}  # the checkpoint, the run's record, the lock
    leftovers = [p.name for p in out.iterdir() if p.name not in kept]
    assert len(leftovers) == 1 and leftovers[0].endswith(".tmp")  # the killed writer's temporary
    rc, _, stderr = _finish(tinylm_process("train", "--resume", "--out", out, "--max-iters", "4"))
    assert rc == 0, stderr
    assert load_checkpoint(out).train["step"] == 4
    assert {p.name for p in out.iterdir()} <= kept  # the stale temporary was removed


def test_first_signal_asks_to_stop_a_second_ctrl_c_aborts():
    from tinylm.cli import StopOnSignal

    with StopOnSignal() as stop:
        signal.raise_signal(signal.SIGTERM)
        assert stop.requested  # the loop finishes its step, saves and exits 0
        with pytest.raises(KeyboardInterrupt):  # the CLI prints "interrupted", exit 130
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
