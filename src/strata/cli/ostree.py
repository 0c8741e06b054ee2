"""`strata-ostree` (and `strata ostree ...`): a drop-in for the `ostree` command line.

ostree takes the first argument that does not start with `-` as the verb and leaves every other argument,
before or after it, to the verb's own option parser; a verb with sub-verbs (`remote`, `static-delta`,
`admin`) does the same once more. Errors print as `error: MESSAGE` and exit 1, as ostree's do.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from strata import __version__
from strata.cli.ostree_options import Option, Parsed, parse, string
from strata.errors import MissingFileObjectError, NotFoundError, StrataError
from strata.image.repo import Repo

FEATURES = ("libcurl", "gpgme", "sign-ed25519", "libarchive", "p2p")
REPO_OPTION = string("repo")


class UsageError(StrataError):
    """A command line ostree would refuse before doing anything."""


@dataclass
class Invocation:
    """One verb's parsed command line and the context it runs in."""

    verb: str
    args: Parsed
    _repo: Repo | None = field(default=None, repr=False)

    @property
    def positional(self) -> list[str]:
        return self.args.positional

    def repo(self) -> Repo:
        if self._repo is None:
            self._repo = open_repo(self.args.string("repo"))
        return self._repo


Handler = Callable[[Invocation], int]


@dataclass(frozen=True)
class Verb:
    name: str
    run: Handler
    options: tuple[Option, ...] = ()
    takes_repo: bool = True
    has_subverbs: bool = False  # the handler dispatches its own sub-verbs from the raw arguments


def open_repo(path: str | None) -> Repo:
    """--repo, else the current directory when it is a repository, else $OSTREE_REPO, else the system repo."""
    if path is None:
        in_repo = Path("objects").is_dir() and Path("config").is_file()
        path = "." if in_repo else os.environ.get("OSTREE_REPO") or None
    if path is None:
        system = Path(os.environ.get("OSTREE_SYSROOT", "/")) / "ostree" / "repo"
        if not (system / "config").is_file():
            raise UsageError("Command requires a --repo argument")
        path = str(system)
    root = Path(path)
    if not root.exists():
        raise NotFoundError(f"opening repo: opendir({path}): No such file or directory")
    repo = Repo.open(root)
    _ensure_tmp(root)
    return repo


def _ensure_tmp(root: Path) -> None:
    tmp = root / "tmp"
    if not tmp.is_dir():
        with contextlib.suppress(OSError):
            tmp.mkdir()


def split_verb(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """The first argument not starting with '-' is the verb; the others stay in order."""
    rest: list[str] = []
    verb: str | None = None
    for arg in argv:
        if verb is None and not arg.startswith("-"):
            verb = arg
        else:
            rest.append(arg)
    return verb, rest


def dispatch(verbs: dict[str, Verb], argv: Sequence[str], what: str) -> int:
    name, rest = split_verb(argv)
    verb = verbs.get(name or "")
    if verb is None:
        if "--version" in rest:
            print_version()
            return 0
        _print_usage(verbs, what, to_stderr="--help" not in rest and "-h" not in rest)
        if "--help" in rest or "-h" in rest:
            return 0
        raise UsageError(f"Unknown {what} '{name}'" if name else f"No {what} specified")
    if verb.has_subverbs:
        return verb.run(Invocation(verb.name, Parsed(values={"__raw__": rest})))
    options = (*verb.options, REPO_OPTION) if verb.takes_repo else verb.options
    args = parse(rest, options)
    if args.flag("version"):
        print_version()
        return 0
    if args.flag("help"):
        print(f"Usage:\n  ostree {verb.name} [OPTION...]")
        return 0
    return verb.run(Invocation(verb.name, args))


def _print_usage(verbs: dict[str, Verb], what: str, *, to_stderr: bool) -> None:
    lines = ["Usage:", f"  ostree [OPTION...] {what.upper()}", "", "Builtin Commands:"]
    lines += [f"  {name}" for name in verbs]
    print("\n".join(lines) + "\n", file=sys.stderr if to_stderr else sys.stdout)


def print_version() -> None:
    print("libostree:")
    print(f" Version: '{__version__}'")
    print(" Features:")
    for feature in FEATURES:
        print(f"  - {feature}")


def require_args(inv: Invocation, count: int, message: str) -> list[str]:
    if len(inv.positional) < count:
        raise UsageError(message)
    return inv.positional


# Which module implements each verb: only that module is imported (start-up time matters to scripts that run
# ostree hundreds of times).
VERB_MODULES = {
    **dict.fromkeys(("init", "commit", "refs", "rev-parse", "reset", "log", "show", "ls", "cat", "checkout",
                     "checksum", "diff"), "strata.cli.ostree_repo"),
    **dict.fromkeys(("remote", "sign", "gpg-sign"), "strata.cli.ostree_remote"),
    **dict.fromkeys(("pull", "pull-local"), "strata.cli.ostree_pull"),
    **dict.fromkeys(("summary", "fsck", "prune", "config"), "strata.cli.ostree_maint"),
    "static-delta": "strata.cli.ostree_delta",
    "admin": "strata.cli.ostree_admin",
}


class _LazyVerbs(dict[str, Verb]):
    """The verb table, importing a verb's module when the verb is looked up."""

    def __init__(self) -> None:
        super().__init__()
        for name in VERB_MODULES:
            self[name] = Verb(name, _unloaded)

    def get(self, name: str, default: Any = None) -> Any:
        module_name = VERB_MODULES.get(name)
        if module_name is None:
            return default
        module = importlib.import_module(module_name)
        return next((verb for verb in module.VERBS if verb.name == name), default)


def _unloaded(inv: Invocation) -> int:
    raise StrataError(f"verb {inv.verb} is not loaded")


def verbs_table() -> dict[str, Verb]:
    return _LazyVerbs()


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        return dispatch(verbs_table(), arguments, "command")
    except StrataError as exc:
        if os.environ.get("STRATA_DEBUG"):
            raise
        sys.stdout.flush()
        print(f"error: {_one_line(_ostree_words(exc))}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        if os.environ.get("STRATA_DEBUG"):
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {_one_line(where + (exc.strerror or str(exc)))}", file=sys.stderr)
        return 1


def _ostree_words(exc: StrataError) -> str:
    """A few refusals in the words ostree uses, which scripts grep for."""
    if isinstance(exc, MissingFileObjectError):
        return f"Couldn't find file object '{exc.checksum}'"
    text = str(exc)
    if "invalid file name in tree: '" in text:
        import re
        text = re.sub(r"Invalid (\w+) object (\w+) from the server: invalid file name in tree: '(.*/.*)'",
                      r"\2.\1: Invalid / in filename \3", text)
        return re.sub(r"invalid file name in tree: '(.*/.*)'", r"Invalid / in filename \1", text)
    return text


def _one_line(text: str) -> str:
    from strata.cli.main import one_line
    return one_line(text)


def register(sub: Any) -> None:
    """`strata ostree ARGS...`: the same command under the strata entry point."""
    parser = sub.add_parser("ostree", help="ostree's command line (drop-in)", add_help=False)
    import argparse  # not at the top: `strata-ostree` itself never needs it
    parser.add_argument("ostree_args", nargs=argparse.REMAINDER)
    parser.set_defaults(func=lambda args: main(args.ostree_args))


if __name__ == "__main__":
    sys.exit(main())
