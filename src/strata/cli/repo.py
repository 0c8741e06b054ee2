"""`strata repo ...`: the image store verbs, named like ostree's."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from strata.cli.common import add_repo_option, import_optional
from strata.errors import InvalidInputError
from strata.image.checkout import CheckoutOptions, checkout_commit
from strata.image.commit import CommitRequest, TreeWriteOptions, commit_directory
from strata.image.objects import check_timestamp
from strata.image.repo import Repo, RepoMode
from strata.image.transfer import pull_local

# Modules that add more verbs to `strata repo` (register_repo_verbs(subparsers)).
EXTRA_REPO_VERB_MODULES = ("strata.cli.repo_inspect", "strata.cli.remote")


def register(sub: Any) -> None:
    parser = sub.add_parser("repo", help="operate on an OSTree-format repository")
    verbs = parser.add_subparsers(dest="repo_verb", metavar="VERB", parser_class=type(parser))
    _register_init(verbs)
    _register_commit(verbs)
    _register_checkout(verbs)
    _register_refs(verbs)
    _register_rev_parse(verbs)
    _register_pull_local(verbs)
    for name in EXTRA_REPO_VERB_MODULES:
        module = import_optional(name)
        if module is not None:
            module.register_repo_verbs(verbs)


def open_repo(args: argparse.Namespace) -> Repo:
    return Repo.open(Path(args.repo))


# ---------------------------------------------------------------- init


def _register_init(verbs: Any) -> None:
    p = verbs.add_parser("init", help="create a repository")
    add_repo_option(p)
    p.add_argument("--mode", default="bare", choices=["bare", "bare-user", "bare-user-only", "archive", "archive-z2"])
    p.add_argument("--collection-id")
    p.set_defaults(func=_init)


def _init(args: argparse.Namespace) -> int:
    Repo.init(Path(args.repo), RepoMode.parse(args.mode), collection_id=args.collection_id)
    return 0


# ---------------------------------------------------------------- commit


def _register_commit(verbs: Any) -> None:
    p = verbs.add_parser("commit", help="commit a directory tree")
    add_repo_option(p)
    p.add_argument("-b", "--branch", required=True)
    p.add_argument("--tree", action="append", required=True, help="dir=PATH")
    p.add_argument("--parent", help="parent commit (default: the branch's current commit; 'none' for none)")
    p.add_argument("--timestamp", help="ISO 8601 date or @SECONDS")
    p.add_argument("-s", "--subject", default="")
    p.add_argument("-m", "--body", default="")
    p.add_argument("--add-metadata-string", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--owner-uid", type=int)
    p.add_argument("--owner-gid", type=int)
    p.add_argument("--no-xattrs", action="store_true")
    p.add_argument("--no-bindings", action="store_true")
    p.add_argument("--bind-ref", action="append", default=[])
    p.set_defaults(func=_commit)


def parse_timestamp(text: str) -> int:
    """@SECONDS or an ISO 8601 date, between 1970 and the end of year 9999."""
    if text.startswith("@"):
        try:
            return check_timestamp(int(text[1:]))
        except ValueError:
            raise InvalidInputError(f"invalid timestamp: {text}") from None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInputError(f"invalid timestamp: {text}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return check_timestamp(int(parsed.timestamp()))


def parse_key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise InvalidInputError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _commit(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    if len(args.tree) != 1 or not args.tree[0].startswith("dir="):
        raise InvalidInputError("exactly one --tree=dir=PATH is supported")
    source = Path(args.tree[0][4:])
    if not source.is_dir():
        raise InvalidInputError(f"{source} is not a directory")
    if args.parent is None:
        parent = repo.read_ref(args.branch)
    elif args.parent == "none":
        parent = None
    else:
        parent = repo.resolve_rev(args.parent)
    request = CommitRequest(
        subject=args.subject, body=args.body,
        timestamp=parse_timestamp(args.timestamp) if args.timestamp else None,
        metadata=[(k, "s", v) for k, v in map(parse_key_value, args.add_metadata_string)],
        parent=parent,
        bind_refs=[] if args.no_bindings else [args.branch, *args.bind_ref])
    tree_options = TreeWriteOptions(owner_uid=args.owner_uid, owner_gid=args.owner_gid, skip_xattrs=args.no_xattrs)
    print(commit_directory(repo, source, args.branch, request, tree_options))
    return 0


# ---------------------------------------------------------------- checkout


def _register_checkout(verbs: Any) -> None:
    p = verbs.add_parser("checkout", help="check out a commit into a directory")
    add_repo_option(p)
    p.add_argument("rev")
    p.add_argument("destination")
    p.add_argument("--subpath", default="")
    p.add_argument("--union", action="store_true")
    p.add_argument("-H", "--require-hardlinks", action="store_true")
    p.add_argument("-U", "--user-mode", action="store_true")
    p.add_argument("--force-copy", action="store_true")
    p.set_defaults(func=_checkout)


def _checkout(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    commit = repo.resolve_rev(args.rev)
    assert commit is not None
    options = CheckoutOptions(user_mode=args.user_mode, union=args.union, require_hardlinks=args.require_hardlinks,
                              force_copy=args.force_copy, subpath=args.subpath)
    checkout_commit(repo, commit, Path(args.destination), options)
    return 0


# ---------------------------------------------------------------- refs, rev-parse


def _register_refs(verbs: Any) -> None:
    p = verbs.add_parser("refs", help="list, create or delete refs")
    add_repo_option(p)
    p.add_argument("prefix", nargs="?")
    p.add_argument("--delete", action="store_true", help="delete the refs matching PREFIX")
    p.add_argument("--create", metavar="NEW", help="create ref NEW pointing at PREFIX (a rev)")
    p.add_argument("--list", action="store_true", help="list with checksums")
    p.set_defaults(func=_refs)


def _refs(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    if args.create:
        if not args.prefix:
            raise InvalidInputError("--create needs an existing rev")
        target = repo.resolve_rev(args.prefix)
        if repo.read_ref(args.create) is not None:
            raise InvalidInputError(f"ref {args.create} already exists")
        with repo.lock():
            repo.set_ref(args.create, target)
        return 0
    refs = repo.list_refs(args.prefix)
    if args.delete:
        if not args.prefix:
            raise InvalidInputError("--delete needs a ref or prefix")
        if not refs:
            raise InvalidInputError(f"no refs match {args.prefix}")
        with repo.lock():
            for name in refs:
                remote, sep, ref = name.partition(":")
                if sep:
                    repo.set_ref(ref, None, remote=remote)
                else:
                    repo.set_ref(name, None)
        return 0
    for name, checksum in refs.items():
        print(f"{name} {checksum}" if args.list else name)
    return 0


def _register_rev_parse(verbs: Any) -> None:
    p = verbs.add_parser("rev-parse", help="print the commit checksum a rev names")
    add_repo_option(p)
    p.add_argument("rev")
    p.set_defaults(func=_rev_parse)


def _rev_parse(args: argparse.Namespace) -> int:
    print(open_repo(args).resolve_rev(args.rev))
    return 0


def _register_pull_local(verbs: Any) -> None:
    p = verbs.add_parser("pull-local", help="copy commits and refs from a repository on this machine")
    add_repo_option(p)
    p.add_argument("source")
    p.add_argument("refs", nargs="*")
    p.add_argument("--remote", help="store the refs as REMOTE:REF")
    p.add_argument("--depth", type=int, default=0)
    p.set_defaults(func=_pull_local)


def _pull_local(args: argparse.Namespace) -> int:
    source = Repo.open(Path(args.source))
    target = open_repo(args)
    refs = args.refs or [name for name in source.list_refs(remotes=False)]
    for ref, commit in pull_local(source, target, refs, remote=args.remote, depth=args.depth,
                                       link=True).items():
        print(f"{ref} {commit}")
    return 0
