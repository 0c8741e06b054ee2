"""The `strata` command: parse arguments, run one operation, print `error: ...` on failure."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from strata import __version__
from strata.cli.common import import_optional
from strata.errors import StrataError

# Each module has register(subparsers) adding its verbs; a verb sets func(args) -> int.
VERB_MODULES = ("strata.cli.repo", "strata.cli.admin", "strata.cli.compose", "strata.cli.db", "strata.cli.client",
                "strata.cli.lab")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="strata", description="Hybrid image/package system for OS updates")
    parser.add_argument("--version", action="version", version=f"strata {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND", parser_class=_Parser)
    for name in VERB_MODULES:
        module = import_optional(name)
        if module is not None:
            module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except StrataError as exc:
        if args.debug or os.environ.get("STRATA_DEBUG"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:
        if args.debug or os.environ.get("STRATA_DEBUG"):
            raise
        print(f"error: {exc.strerror or exc}{': ' + str(exc.filename) if exc.filename else ''}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
