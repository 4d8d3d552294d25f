"""The ``tinylm`` command's entry point: Ctrl-C at any moment of start-up is one line, exit 130.

Importing the CLI (NumPy, click, the backends) takes a good part of a second, and
Python's own SIGINT handler would end it with a KeyboardInterrupt traceback from
whichever import was running. So this module, which imports nothing heavy, first
installs a handler that writes one line and exits 130; once the CLI is imported,
the previous handler is back and the CLI's own handling (``TinyLMGroup``,
``StopOnSignal``) takes over. Only the command does this: ``import tinylm``
leaves SIGINT alone.
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
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
