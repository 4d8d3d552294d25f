"""What the command modules share: the backend and checkpoint options, progress, signals.

Library code raises tinylm's exceptions; cli.TinyLMGroup turns them into one line
on stderr. Helpers here only format and forward.
"""

from __future__ import annotations

import signal
import sys

import click

from tinylm import backends


def echo_err(message: str) -> None:
    """A diagnostic or progress line: stderr, so that stdout carries only results."""
    click.echo(message, err=True)


def backends_help() -> str:
    """The --backend help: every registered backend, and which of them can run on this machine."""
    rows = backends.available_backends()  # imports each backend's module; starts none
    here = [name for name, ok, _ in rows if ok]
    elsewhere = [name for name, ok, _ in rows if not ok]
    return (f"Array backend: {', '.join(name for name, _, _ in rows)}. Runs here: "
            f"{', '.join(here) or 'none'}" + (f"; not here: {', '.join(elsewhere)}" if elsewhere else "")
            + " ('tinylm backends' says why).")


class BackendOption(click.Option):
    """--backend, its help computed when it is shown (which backends run here), not at import."""

    def get_help_record(self, ctx):
        self.help = backends_help()
        return super().get_help_record(ctx)


def backend_option(f):
    f = click.option("--threads", type=click.IntRange(min=1), default=None,
                     help="CPU threads for the backend's kernels and, on numba, its matmuls.")(f)
    return click.option("--backend", cls=BackendOption, default="numpy", show_default=True,
                        help="Array backend (see 'tinylm backends').")(f)


def activate_backend(name: str, threads: int | None):
    backend = backends.set_backend(name)
    if threads:
        backend.set_threads(threads)
    compile_s = getattr(backend, "compile_seconds", None)
    if compile_s:
        echo_err(f"backend {backend.name}: kernels ready in {compile_s:.1f} s (JIT, not training time)")
    return backend


def checkpoint_option(written_by: str = "'tinylm train --out'"):
    """--ckpt, whose help names the command that writes such a checkpoint."""
    return click.option("--ckpt", required=True, type=click.Path(),
                        help=f"Run directory written by {written_by} (or its .safetensors file).")


ckpt_option = checkpoint_option()


class Progress:
    """Renders training events on stderr: one updating line on a terminal, log lines otherwise.

    The loop sends a step event every ``log_interval`` steps, so a log (stderr not a
    terminal) gets one line per ``--log-interval`` steps.
    """

    def __init__(self, max_iters: int, baseline: float | None):
        self.max_iters, self.baseline = max_iters, baseline
        self.tty = sys.stderr.isatty()

    def __call__(self, e: dict) -> None:
        if e["event"] == "step":
            done = e["step"] / self.max_iters
            eta = (self.max_iters - e["step"]) * e["ms_per_iter"] / 1e3
            line = (f"step {e['step']:>6}/{self.max_iters} {100 * done:3.0f}% | loss {e['loss']:.4f} "
                    f"| lr {e['lr']:.2e} | {e['ms_per_iter']:.0f} ms/it "
                    f"| {e['tokens_per_s'] / 1e3:.1f}k tok/s | eta {int(eta // 60)}:{int(eta % 60):02d}")
            if self.tty:
                click.echo("\r" + line.ljust(100), nl=False, err=True)
            else:
                echo_err(line)
        elif e["event"] == "eval":
            base = f" (unigram baseline {self.baseline:.3f})" if self.baseline else ""
            prefix = "\n" if self.tty else ""
            echo_err(f"{prefix}step {e['step']}: train loss {e['train_loss']:.4f}, "
                      f"val loss {e['val_loss']:.4f}{base}")


class StopOnSignal:
    """First SIGINT/SIGTERM: finish the step, save, exit 0. A second SIGINT aborts at once."""

    def __init__(self):
        self.requested = False

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        echo_err(f"\n{signal.Signals(signum).name}: finishing this step and saving a checkpoint "
                  "(Ctrl-C again to abort without saving)")

    def __enter__(self):
        self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
