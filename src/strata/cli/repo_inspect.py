"""`strata repo log|show|ls|cat|diff|fsck|prune`: reading and maintaining a repository."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from strata.cli.common import add_repo_option
from strata.cli.repo import open_repo
from strata.errors import InvalidInputError, StrataError
from strata.image import inspect
from strata.image.fsck import fsck
from strata.image.objects import FileMeta
from strata.image.prune import PruneOptions, parse_date, prune
from strata.image.traverse import history
from strata.units import human_size


def register_repo_verbs(verbs: Any) -> None:
    p = verbs.add_parser("log", help="show a commit and its history")
    add_repo_option(p)
    p.add_argument("rev")
    p.set_defaults(func=_log)

    p = verbs.add_parser("show", help="show a commit with its metadata")
    add_repo_option(p)
    p.add_argument("rev")
    p.add_argument("--print-metadata-key", metavar="KEY")
    p.add_argument("--raw", action="store_true")
    p.set_defaults(func=_show)

    p = verbs.add_parser("ls", help="list files of a commit")
    add_repo_option(p)
    p.add_argument("rev")
    p.add_argument("paths", nargs="*", default=["/"])
    p.add_argument("-R", "--recursive", action="store_true")
    p.add_argument("-X", "--xattrs", action="store_true")
    p.add_argument("-C", "--checksum", action="store_true")
    p.add_argument("-d", "--dironly", action="store_true")
    p.set_defaults(func=_ls)

    p = verbs.add_parser("cat", help="print a file of a commit")
    add_repo_option(p)
    p.add_argument("rev")
    p.add_argument("paths", nargs="+")
    p.set_defaults(func=_cat)

    p = verbs.add_parser("diff", help="compare the trees of two commits")
    add_repo_option(p)
    p.add_argument("rev_a")
    p.add_argument("rev_b")
    p.set_defaults(func=_diff)

    p = verbs.add_parser("fsck", help="verify every object")
    add_repo_option(p)
    p.add_argument("--delete", action="store_true", help="remove corrupt objects, mark their commits partial")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_fsck)

    p = verbs.add_parser("prune", help="delete unreachable objects")
    add_repo_option(p)
    p.add_argument("--refs-only", action="store_true")
    p.add_argument("--depth", type=int, default=-1)
    p.add_argument("--keep-younger-than", metavar="DATE")
    p.add_argument("--delete-commit", action="append", default=[], metavar="REV")
    p.add_argument("--no-prune", action="store_true", help="only report what would be deleted")
    p.set_defaults(func=_prune)


def _log(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    commit = repo.resolve_rev(args.rev)
    assert commit is not None
    for checksum in history(repo, commit):
        for line in inspect.log_entry(checksum, repo.load_commit(checksum)):
            print(line)
    last = list(history(repo, commit))[-1]
    if repo.load_commit(last).parent:
        print("<< History beyond this commit not fetched >>")
    return 0


def _show(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    checksum = repo.resolve_rev(args.rev)
    assert checksum is not None
    commit = repo.load_commit(checksum)
    if args.print_metadata_key:
        value = commit.meta(args.print_metadata_key)
        if value is None:
            raise StrataError(f"No such metadata key '{args.print_metadata_key}'")
        print(inspect.format_value(value))
        return 0
    if args.raw:
        print(inspect.format_value((commit.metadata, bytes.fromhex(commit.parent or ""), commit.related,
                                    commit.subject, commit.body, commit.timestamp)))
        return 0
    for line in inspect.log_entry(checksum, commit):
        print(line)
    if commit.metadata:
        print("Metadata:")
        for key, value in commit.metadata:
            print(f"  {key}: {inspect.format_value(value)}")
    return 0


def _ls(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    commit = repo.resolve_rev(args.rev)
    assert commit is not None
    for path in args.paths:
        kind, entry = inspect.lookup(repo, commit, path)
        print(inspect.format_entry(entry, xattrs=args.xattrs, checksum=args.checksum))
        if kind == "dir" and not args.dironly:
            prefix = entry.path.rstrip("/")
            for child in inspect.walk(repo, (entry.checksum, _dirmeta_of(repo, commit, path)), prefix,
                                      recursive=args.recursive):
                print(inspect.format_entry(child, xattrs=args.xattrs, checksum=args.checksum))
    return 0


def _dirmeta_of(repo: Any, commit: str, path: str) -> str:
    loaded = repo.load_commit(commit)
    pair = (loaded.root_tree, loaded.root_meta)
    for part in [p for p in path.strip("/").split("/") if p]:
        pair = repo.load_dirtree(pair[0]).dirs[part]
    return str(pair[1])


def _cat(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    commit = repo.resolve_rev(args.rev)
    assert commit is not None
    for path in args.paths:
        kind, entry = inspect.lookup(repo, commit, path)
        if kind == "dir":
            raise InvalidInputError(f"{path} is a directory")
        meta: FileMeta
        meta, content = repo.read_file(entry.checksum, verify=True)
        if meta.is_symlink:
            raise InvalidInputError(f"{path} is a symbolic link to {meta.symlink_target}")
        sys.stdout.buffer.write(content)
    sys.stdout.buffer.flush()
    return 0


def _diff(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    commits = [repo.load_commit(repo.resolve_rev(rev) or "") for rev in (args.rev_a, args.rev_b)]
    old = (commits[0].root_tree, commits[0].root_meta)
    new = (commits[1].root_tree, commits[1].root_meta)
    for change, path in inspect.diff_trees(repo, old, new):
        print(f"{change}    {path}")
    return 0


def _fsck(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    report = fsck(repo, delete=args.delete)
    for problem in report.problems:
        print(problem)
    if report.partial:
        print(f"{report.partial} partial commits not verified")
    if not report.ok:
        action = "; corrupt objects deleted" if args.delete else ""
        raise StrataError(f"fsck found {len(report.problems)} missing or corrupt objects{action}")
    if not args.quiet:
        print(f"object fsck of {report.commits} commits completed successfully - no errors found.")
    return 0


def _prune(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    deletes = []
    for rev in args.delete_commit:
        resolved = repo.resolve_rev(rev)
        assert resolved is not None
        deletes.append(resolved)
    options = PruneOptions(refs_only=args.refs_only, depth=args.depth, delete_commits=tuple(deletes),
                           dry_run=args.no_prune,
                           keep_younger_than=parse_date(args.keep_younger_than) if args.keep_younger_than
                           else None)
    result = prune(repo, options)
    print(f"Total objects: {result.total}")
    if result.deleted == 0:
        print("No unreachable objects")
    else:
        verb = "Would delete" if args.no_prune else "Deleted"
        print(f"{verb} {result.deleted} objects, {human_size(result.freed_bytes)} freed")
    return 0

