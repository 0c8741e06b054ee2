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
MAX_ERROR_CHARS = 2000
VERB_MODULES = ("strata.cli.repo", "strata.cli.admin", "strata.cli.compose", "strata.cli.db", "strata.cli.client",
                "strata.cli.status", "strata.cli.lab", "strata.cli.daemon", "strata.cli.ostree")


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
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["ostree"]:  # ostree's own command line, options first included (`strata ostree --version`)
        from strata.cli import ostree
        return ostree.main(words[1:])
    parser = build_parser()
    args = parser.parse_args(words)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except StrataError as exc:
        if _debugging(args):
            raise
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:
        if _debugging(args):
            raise
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {one_line(f'{exc.strerror or exc}{where}')}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug, not a user error: still one line and no traceback unless asked
        if _debugging(args):
            raise
        print(f"error: internal error ({type(exc).__name__}): {one_line(str(exc))}; "
              "run with --debug for the traceback", file=sys.stderr)
        return 70


def _debugging(args: argparse.Namespace) -> bool:
    return bool(args.debug or os.environ.get("STRATA_DEBUG"))


def one_line(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """An error message as one printable line: control characters from untrusted names are escaped (a newline in
    a file name must not forge a second output line), and an enormous message is cut."""
    escaped = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
    return escaped if len(escaped) <= limit else escaped[:limit] + f"... ({len(escaped) - limit} more characters)"

if __name__ == "__main__":
    sys.exit(main())
