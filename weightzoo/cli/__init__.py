"""The ``weightzoo`` command: one module per command family, one shared helper module.

Exit codes, decided here and nowhere else: 0 success, 1 runtime failure, 2 bad input (any
:class:`weightzoo.errors.InputError`: a spec, an argument, a path that is not a zoo, an
unknown version), 128 + the signal's number when stopped by SIGINT (Ctrl-C, 130), SIGTERM
(what ``timeout``, Slurm, CI runners and ``docker stop`` send, 143) or SIGHUP (129). Commands
may return 3 for "ran, and found differences" (``regenerate``) or 1 for "ran, and found
damage" (``verify``).

A stopping signal unwinds the command like Ctrl-C does, so everything it started (the local
Prefect server, the Dask cluster and its workers) is stopped before it exits.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading

EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
# Modules that contribute subcommands, in the order of `weightzoo --help`: each has
# ``add_commands(subparsers)``.
COMMAND_MODULES = ("build", "catalog", "studies", "interop", "pull", "regenerate", "verify", "serve")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    from weightzoo.errors import is_input_error

    args = parser().parse_args(argv)
    previous = _stop_on_signals()
    try:
        return args.handler(args)
    except Stopped as stop:
        what = "interrupted" if stop.signum == signal.SIGINT else f"stopped by {signal.Signals(stop.signum).name}"
        print(f"{what}: staged models are kept; run the same command again to resume", file=sys.stderr)
        return 128 + stop.signum
    except BrokenPipeError:  # the reader went away (`weightzoo query ... --csv | head`): not a failure
        _silence_stdout()
        return 0
    except KeyboardInterrupt:
        print("interrupted: staged models are kept; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001 - one clear line instead of a deep traceback
        if os.environ.get("WEIGHTZOO_DEBUG"):
            print(f"error: {error}", file=sys.stderr)
            raise
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return EXIT_USAGE if is_input_error(error) else EXIT_FAILURE
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class Stopped(BaseException):
    """A stopping signal (SIGTERM, SIGHUP) arrived; raised where the command was, like
    KeyboardInterrupt, so its ``finally`` blocks stop the server and the cluster."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop_on_signals() -> dict:
    """Turn SIGTERM, SIGHUP and SIGINT into :class:`Stopped` (in the main thread); the previous
    handlers. SIGINT is handled here too rather than left to Python's KeyboardInterrupt, which
    the flow engine can take for its own while it waits on the cluster (a Ctrl-C or ``kill
    -INT`` that did not stop a build was seen)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def stop(signum, frame):
        raise Stopped(signum)

    return {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}


def parser() -> argparse.ArgumentParser:
    """The whole command line."""
    result = argparse.ArgumentParser(prog="weightzoo", description="Versioned weight-space datasets.")
    sub = result.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"weightzoo.cli.{name}").add_commands(sub)
    return result


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so Python's flush at exit cannot raise again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a file descriptor (tests capture it)
        pass


def _one_line(error: Exception) -> str:
    """The first line of an error (a library's may hold a whole report), with a pointer to the rest."""
    text = str(error).strip() or type(error).__name__
    first, _, rest = text.partition("\n")
    return f"{first} (WEIGHTZOO_DEBUG=1 for details)" if rest.strip() else first
