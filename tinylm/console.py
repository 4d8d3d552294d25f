"""The ``tinylm`` command's entry point: Ctrl-C at any moment of start-up is one line, exit 130.

Importing the CLI (NumPy, click, the backends) takes a good part of a second, and
Python's own SIGINT handler would end it with a KeyboardInterrupt traceback from
whichever import was running. So this module, which imports nothing heavy, first
installs a handler that writes one line and exits 130; once the CLI is imported,
the previous handler is back and the CLI's own handling (``TinyLMGroup``,
``StopOnSignal``) takes over, and its exit 130 leaves by ``os._exit``. Only the
command does this: ``import tinylm`` leaves SIGINT alone.
"""

import os
import signal
import sys


def _interrupted_during_startup(signum, frame):
    os.write(2, b"interrupted\n")
    os._exit(130)  # nothing to clean up yet: no file has been opened for writing


def main(argv=None):
    previous = signal.signal(signal.SIGINT, _interrupted_during_startup)
    try:
        from tinylm.cli import main as cli_main
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        return cli_main(argv)
    except SystemExit as exc:
        if exc.code != 130:
            raise
        # Ctrl-C, its one line written: leave now. After a KeyboardInterrupt was caught the
        # interpreter sometimes ends the process by SIGINT at exit instead (exit -2 after
        # "aborted": 2 of 100 interrupts 0.2 s into start-up); the command's files are closed.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)


if __name__ == "__main__":
    sys.exit(main())
