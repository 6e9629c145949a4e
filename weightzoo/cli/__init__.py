"""The ``weightzoo`` command: one module per command family, one shared helper module.

Exit codes, decided here and nowhere else: 0 success, 1 runtime failure, 2 bad input (any
:class:`weightzoo.errors.InputError`: a spec, an argument, a path that is not a zoo, an
unknown version), 130 interrupted. Commands may return 3 for "ran, and found differences"
(``regenerate``) or 1 for "ran, and found damage" (``verify``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
# Modules that contribute subcommands, in the order of `weightzoo --help`: each has
# ``add_commands(subparsers)``.
COMMAND_MODULES = ("build", "catalog", "studies", "interop", "pull", "regenerate", "verify", "serve")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    from weightzoo.errors import is_input_error

    args = parser().parse_args(argv)
    try:
        return args.handler(args)
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
