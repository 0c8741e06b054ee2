"""`strata db list|diff`: package lists and differences of commits (rpm-ostree's `db`)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from strata.core.db import (
    commit_packages,
    default_diff_pair,
    new_changelogs,
    resolve_revisions_and_prefixes,
    rpmdb_version,
)
from strata.core.pkgdiff import PackageDiff, block_lines, diff_format_lines, diff_packages, json_items
from strata.errors import InvalidInputError
from strata.image.repo import Repo

FORMATS = ("block", "diff", "json")


def register(sub: Any) -> None:
    parser = sub.add_parser("db", help="Commands to query the RPM database",
                            description="Commands to query the RPM database")
    verbs = parser.add_subparsers(dest="db_verb", metavar="VERB", parser_class=type(parser))
    p = verbs.add_parser("list", help="List packages within commits", description="List packages within commits")
    _repo_option(p)
    p.add_argument("revs", nargs="+", metavar="REV [PREFIX]", help="commits, then package name prefixes")
    p.set_defaults(func=_list)
    p = verbs.add_parser("diff", help="Show package changes between two commits",
                         description="Show package changes between two commits")
    _repo_option(p)
    p.add_argument("from_rev", nargs="?", metavar="FROM_REV", help="the older commit (default: the booted one)")
    p.add_argument("to_rev", nargs="?", metavar="TO_REV", help="the newer commit (default: the pending one)")
    p.add_argument("-F", "--format", default="block", help='Output format: "diff" or "json" or (default) "block"')
    p.add_argument("-c", "--changelogs", action="store_true", help="Also output RPM changelogs")
    p.add_argument("--base", action="store_true", help="Diff against deployments' base, not layered commits")
    p.set_defaults(func=_diff)
    p = verbs.add_parser("version", help="Show rpmdb version of packages within the commits",
                         description="Show rpmdb version of packages within the commits")
    _repo_option(p)
    p.add_argument("revs", nargs="+", metavar="COMMIT", help="commits or refs")
    p.set_defaults(func=_version)


def _repo_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("-r", "--repo", metavar="PATH", help="Path to OSTree repository (defaults to the sysroot's "
                   "ostree/repo)")
    p.add_argument("--sysroot", default="/", metavar="SYSROOT", help="Use system root SYSROOT (default: /)")


def _version(args: argparse.Namespace) -> int:
    repo = open_db_repo(args)
    for rev in args.revs:
        checksum = repo.resolve_rev(rev)
        assert checksum is not None
        print(f"ostree commit: {_describe(rev, checksum)}")
        print(f"  rpmdbv is: {rpmdb_version(repo, checksum):>66}")
    return 0


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
    if args.base and args.repo:
        raise InvalidInputError("--base works on a sysroot's deployments, not with --repo")
    if args.from_rev is None or args.to_rev is None:
        from strata.sysroot.sysroot import Sysroot
        args.from_rev, args.to_rev = default_diff_pair(Sysroot.open(Path(args.sysroot)), args.from_rev,
                                                       base=args.base)
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
    if args.changelogs:
        _print_changelogs(repo, old, new, diff)
    return 0


def _print_changelogs(repo: Repo, old: str, new: str, diff: PackageDiff) -> None:
    for name, entries in new_changelogs(repo, old, new, diff.upgraded).items():
        if not entries:
            continue
        print(f"Changelogs for {name}:")
        for entry in entries:
            day = datetime.fromtimestamp(entry.time, UTC).strftime("%a %b %d %Y")
            print(f"* {day} {entry.author}")
            print(entry.text)
            print()
