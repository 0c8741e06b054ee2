"""The `strata` command: parse arguments, run one operation, print `error: ...` on failure."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from strata import __version__
from strata.cli.common import import_optional
from strata.errors import StrataError

# Each module has register(subparsers) adding its verbs; a verb sets func(args) -> int.
MAX_ERROR_CHARS = 2000
VERB_MODULES = ("strata.cli.repo", "strata.cli.admin", "strata.cli.compose", "strata.cli.db", "strata.cli.client",
                "strata.cli.live", "strata.cli.initramfs", "strata.cli.status", "strata.cli.lab", "strata.cli.daemon",
                "strata.cli.ostree", "strata.cli.bisect")
# The module that registers each verb: a command imports only its own verb module (with cold caches, importing
# every verb module costs seconds, more than many operations themselves). Help and unknown words import them all;
# tests/test_cli_main.py checks this table against what the modules register.
CLIENT_VERBS = ("cancel", "cleanup", "deploy", "ex", "finalize-deployment", "install", "kargs",
                "makecache", "override", "pkg-add", "pkg-remove", "rebase", "refresh-md", "remove", "reset",
                "rollback", "search", "uninstall", "unlock", "update", "upgrade", "usroverlay")
VERB_HOME = {"repo": "strata.cli.repo", "admin": "strata.cli.admin", "compose": "strata.cli.compose",
             "db": "strata.cli.db", "status": "strata.cli.status", "lab": "strata.cli.lab",
             "daemon": "strata.cli.daemon", "reload": "strata.cli.daemon", "ostree": "strata.cli.ostree",
             "bisect": "strata.cli.bisect", "initramfs": "strata.cli.initramfs",
             "initramfs-etc": "strata.cli.initramfs", "apply-live": "strata.cli.live",
             **dict.fromkeys(CLIENT_VERBS, "strata.cli.client")}


QUIET_FLAGS = ("-q", "--quiet")
FEATURES = ("compose", "daemon", "fleetlock", "bubblewrap", "ostree-compat")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message}\n")


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="strata", description="Hybrid image/package system for OS updates")
    parser.add_argument("--version", action="store_true", help="print version information and exit")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument(*QUIET_FLAGS, dest="global_quiet", action="store_true",
                        help="suppress progress and informational output (errors and results still print)")
    parser.add_argument("--daemon-address", help=argparse.SUPPRESS)  # a private bus (tests); $STRATA_DAEMON_ADDRESS
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND", parser_class=_Parser)
    home = VERB_HOME.get(verb or "")
    for name in (home,) if home else VERB_MODULES:
        module = import_optional(name)
        if module is not None:
            module.register(sub)
    parser.set_defaults(known_verbs=frozenset(sub.choices))
    return parser


def version_text() -> str:
    """rpm-ostree's `--version`: a small YAML document."""
    lines = ["strata:", f" Version: '{__version__}'"]
    revision = _git_revision()
    if revision:
        lines.append(f" Git: {revision}")
    lines.append(" Features:")
    lines += [f"  - {feature}" for feature in FEATURES]
    return "\n".join(lines)


def _git_revision() -> str | None:
    """The source checkout's commit, when strata runs from one."""
    source = Path(__file__).resolve().parents[3]
    if not (source / ".git").exists():
        return None
    try:
        proc = subprocess.run(["git", "-C", str(source), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    revision = proc.stdout.strip()
    return revision if proc.returncode == 0 and revision.isalnum() else None


def _first_word(words: list[str]) -> str | None:
    """The command word: the first one that is neither a global option nor its value."""
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word == "--daemon-address":
            skip = True
        elif not word.startswith("-"):
            return word
    return None


def _parse(parser: argparse.ArgumentParser, words: list[str]) -> argparse.Namespace:
    """Parse, letting -q/--quiet stand after the verb too, as rpm-ostree does."""
    args, extra = parser.parse_known_args(words)
    unknown = [word for word in extra if word not in QUIET_FLAGS]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if len(unknown) < len(extra):
        args.global_quiet = True
    return args


def _usage_error(parser: argparse.ArgumentParser, message: str) -> int:
    sys.stderr.write(parser.format_usage())
    sys.stderr.write("Run 'strata --help' for the list of commands.\n")
    print(f"error: {message}", file=sys.stderr)
    return 1


def _set_quiet(quiet: bool) -> None:
    """-q: every verb of this invocation reports through a silent Progress; results and errors still print."""
    from strata.cli.progress import set_quiet_everywhere
    set_quiet_everywhere(quiet)


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["ostree"]:  # ostree's own command line, options first included (`strata ostree --version`)
        from strata.cli import ostree
        return ostree.main(words[1:])
    verb = _first_word(words)
    if "--version" in words[:words.index(verb) if verb in words else len(words)]:
        print(version_text())
        return 0
    parser = build_parser(verb)
    if verb is None and "-h" not in words and "--help" not in words:
        return _usage_error(parser, "No command specified")
    known_verbs = parser.get_default("known_verbs") or ()
    if verb is not None and known_verbs and verb not in known_verbs:
        return _usage_error(parser, f"Unknown command '{verb}'")
    args = _parse(parser, words)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    _set_quiet(bool(getattr(args, "global_quiet", False)))
    try:
        from strata.cli.via_daemon import route
        routed = route(args)
        return int(func(args) or 0) if routed is None else routed
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
