"""What every command does with an error it expects: one line on stderr naming the problem, exit status 1.

    from runtime.cli import CommandError, exits_on

    @exits_on(BundleError, FileNotFoundError)
    def main(argv=None) -> int:
        ...
        raise CommandError("--episodes: need at least 1 layout")

Expected errors (a bad file, a missing port, a refused bundle) carry a
message written for the user, so it is printed as it is, without a
traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import functools
import sys


class CommandError(ValueError):
    """A bad argument combination found after parsing; the message names the argument."""


def show_defaults(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Every option's default in --help ("default: tiny"), unless its help already says it: a default a user
    cannot see is one they follow without knowing (a real-robot recipe that trained the tiny preset)."""
    for action in parser._actions:
        if (not action.option_strings or action.default in (None, False, argparse.SUPPRESS)
                or action.help == argparse.SUPPRESS or "default" in (action.help or "")):
            continue
        action.help = f"{action.help}; default: %(default)s" if action.help else "default: %(default)s"
    return parser


def exits_on(*errors: type[BaseException]):
    """Decorate a `main(argv) -> int`: the listed errors (and CommandError) print `error: ...` and return 1."""
    caught = (CommandError, *errors)

    def decorate(main):
        @functools.wraps(main)
        def run(*args, **kwargs) -> int:
            try:
                return main(*args, **kwargs)
            except caught as e:
                print(f"error: {e}", file=sys.stderr)
                return 1

        return run

    return decorate
