"""`strata db list|diff`: package lists and differences of commits (rpm-ostree's `db`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from strata.core.db import commit_packages, resolve_revisions_and_prefixes
from strata.core.pkgdiff import block_lines, diff_format_lines, diff_packages, json_items
from strata.errors import InvalidInputError, StrataError
from strata.image.repo import Repo

FORMATS = ("block", "diff", "json")


def register(sub: Any) -> None:
    parser = sub.add_parser("db", help="query the package lists of commits")
    verbs = parser.add_subparsers(dest="db_verb", metavar="VERB", parser_class=type(parser))
    p = verbs.add_parser("list", help="list the packages of commits")
    _repo_option(p)
    p.add_argument("revs", nargs="+", metavar="REV [PREFIX]")
    p.set_defaults(func=_list)
    p = verbs.add_parser("diff", help="show package changes between two commits")
    _repo_option(p)
    p.add_argument("from_rev", nargs="?")
    p.add_argument("to_rev", nargs="?")
    p.add_argument("-F", "--format", default="block")
    p.set_defaults(func=_diff)


def _repo_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("-r", "--repo", help="repository (default: the sysroot's ostree/repo)")
    p.add_argument("--sysroot", default="/")


def open_db_repo(args: argparse.Namespace) -> Repo:
    return Repo.open(Path(args.repo) if args.repo else Path(args.sysroot) / "ostree" / "repo")


def _describe(rev: str, checksum: str) -> str:
    return checksum if rev == checksum else f"{rev} ({checksum})"


def _list(args: argparse.Namespace) -> int:
    repo = open_db_repo(args)
    revisions, prefixes = resolve_revisions_and_prefixes(repo, args.revs)
    for rev, checksum in zip(args.revs, revisions, strict=False):
        print(f"ostree commit: {_describe(rev, checksum)}")
        for pkg in commit_packages(repo, checksum):
            if not prefixes or any(pkg.name.startswith(prefix) for prefix in prefixes):
                print(f" {pkg.nevra}")
    return 0


def _diff(args: argparse.Namespace) -> int:
    if args.format not in FORMATS:
        raise InvalidInputError("Format argument is invalid, pick one of: diff, block, json")
    repo = open_db_repo(args)
    if args.from_rev is None or args.to_rev is None:
        args.from_rev, args.to_rev = _default_diff_pair(args)
    old = repo.resolve_rev(args.from_rev)
    new = repo.resolve_rev(args.to_rev)
    assert old is not None and new is not None
    diff = diff_packages(commit_packages(repo, old), commit_packages(repo, new))
    if args.format == "json":
        print(json.dumps({"ostree-commit-from": old, "ostree-commit-to": new, "pkgdiff": json_items(diff),
                          "advisories": []}, indent=2))
        return 0
    print(f"ostree diff commit from: {_describe(args.from_rev, old)}")
    print(f"ostree diff commit to:   {_describe(args.to_rev, new)}")
    for line in block_lines(diff) if args.format == "block" else diff_format_lines(diff):
        print(line)
    return 0


def _default_diff_pair(args: argparse.Namespace) -> tuple[str, str]:
    """booted -> pending, else rollback -> booted; one revision: booted -> it."""
    from strata.sysroot.sysroot import Sysroot
    sysroot = Sysroot.open(Path(args.sysroot))
    booted = sysroot.booted()
    if booted is None:
        raise StrataError("db diff without revisions needs a booted sysroot")
    if args.from_rev is not None:
        return booted.csum, args.from_rev
    deps = [d for d in sysroot.deployments() if d.stateroot == booted.stateroot]
    index = next(i for i, d in enumerate(deps) if d.key == booted.key)
    if index > 0:
        return booted.csum, deps[index - 1].csum
    if index + 1 < len(deps):
        return deps[index + 1].csum, booted.csum
    raise StrataError("No pending or rollback deployment to diff against")
