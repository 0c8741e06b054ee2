"""`strata repo remote|pull|summary|sign|static-delta`: distribution over HTTP."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from strata.cli.common import add_repo_option
from strata.cli.repo import open_repo, parse_key_value
from strata.errors import InvalidInputError
from strata.image import gpg, sign
from strata.image import remote as remotes
from strata.image.deltas import generate, list_deltas
from strata.image.pull import PullOptions, pull, remote_refs, terminal_progress
from strata.image.summary import parse_summary, update_summary


def register_repo_verbs(verbs: Any) -> None:
    remote = verbs.add_parser("remote", help="manage remotes")
    remote_verbs = remote.add_subparsers(dest="remote_verb", metavar="VERB", parser_class=type(remote))
    p = remote_verbs.add_parser("add", help="add a remote")
    add_repo_option(p)
    p.add_argument("name")
    p.add_argument("url")
    p.add_argument("branches", nargs="*")
    p.add_argument("--no-sign-verify", action="store_true")
    p.add_argument("--no-gpg-verify", action="store_true")
    p.add_argument("--sign-verify", metavar="ed25519=inline:KEY|ed25519=file:PATH")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--gpg-import", metavar="FILE", help="trust the GPG keys in FILE and verify commits")
    p.add_argument("--if-not-exists", action="store_true")
    p.set_defaults(func=_remote_add)
    p = remote_verbs.add_parser("delete", help="delete a remote")
    add_repo_option(p)
    p.add_argument("name")
    p.add_argument("--if-exists", action="store_true")
    p.set_defaults(func=_remote_delete)
    p = remote_verbs.add_parser("list", help="list remotes")
    add_repo_option(p)
    p.add_argument("-u", "--show-urls", action="store_true")
    p.set_defaults(func=_remote_list)
    p = remote_verbs.add_parser("refs", help="list the refs a remote's summary offers")
    add_repo_option(p)
    p.add_argument("name")
    p.set_defaults(func=_remote_refs)
    p = remote_verbs.add_parser("show-url", help="print a remote's URL")
    add_repo_option(p)
    p.add_argument("name")
    p.set_defaults(func=_remote_show_url)

    p = verbs.add_parser("pull", help="fetch commits from a remote over HTTP")
    add_repo_option(p)
    p.add_argument("remote")
    p.add_argument("refs", nargs="*")
    p.add_argument("--depth", type=int, default=0)
    p.add_argument("--commit-metadata-only", action="store_true")
    p.add_argument("--mirror", action="store_true")
    p.add_argument("--disable-static-deltas", action="store_true")
    p.set_defaults(func=_pull)

    p = verbs.add_parser("summary", help="update or view the summary file")
    add_repo_option(p)
    p.add_argument("-u", "--update", action="store_true")
    p.add_argument("--view", action="store_true")
    p.add_argument("--sign", metavar="KEYFILE", action="append", default=[], help="secret key file (base64)")
    p.add_argument("--sign-type", default="ed25519")
    p.set_defaults(func=_summary)

    p = verbs.add_parser("sign", help="sign a commit (ed25519)")
    add_repo_option(p)
    p.add_argument("rev")
    p.add_argument("keys", nargs="*", help="secret keys (base64)")
    p.add_argument("--keys-file", action="append", default=[])
    p.add_argument("--verify", action="store_true", help="verify with the given public keys instead")
    p.add_argument("-s", "--sign-type", default="ed25519")
    p.set_defaults(func=_sign)

    p = verbs.add_parser("gpg-sign", help="sign a commit with GPG")
    add_repo_option(p)
    p.add_argument("rev")
    p.add_argument("key_ids", nargs="+")
    p.add_argument("--gpg-homedir")
    p.set_defaults(func=_gpg_sign)

    p = verbs.add_parser("static-delta", help="static deltas")
    delta_verbs = p.add_subparsers(dest="delta_verb", metavar="VERB", parser_class=type(p))
    q = delta_verbs.add_parser("list", help="list static deltas")
    add_repo_option(q)
    q.set_defaults(func=_delta_list)
    q = delta_verbs.add_parser("generate", help="generate a static delta")
    add_repo_option(q)
    q.add_argument("--from", dest="source", metavar="REV")
    q.add_argument("--to", dest="target", required=True, metavar="REV")
    q.add_argument("--empty", action="store_true", help="a delta from nothing (a full download in one piece)")
    q.add_argument("--disable-compression", action="store_true")
    q.set_defaults(func=_delta_generate)


def _remote_add(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    settings = [parse_key_value(item) for item in args.set]
    remotes.add_remote(repo, args.name, args.url, branches=args.branches, sign_verify=args.sign_verify,
                       no_sign_verify=args.no_sign_verify, settings=settings, if_not_exists=args.if_not_exists,
                       gpg_import=Path(args.gpg_import) if args.gpg_import else None)
    return 0


def _remote_delete(args: argparse.Namespace) -> int:
    remotes.delete_remote(open_repo(args), args.name, if_exists=args.if_exists)
    return 0


def _remote_list(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    for name in remotes.list_remotes(repo):
        print(f"{name}  {remotes.get_remote(repo, name).url}" if args.show_urls else name)
    return 0


def _remote_refs(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    for name in remote_refs(repo, args.name):
        print(f"{args.name}:{name}")
    return 0


def _gpg_sign(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    commit = repo.resolve_rev(args.rev)
    assert commit is not None
    from strata.image.objects import ObjectType
    data = repo.read_metadata(commit, ObjectType.COMMIT)
    detached = repo.read_detached_metadata(commit)
    for key_id in args.key_ids:
        detached = gpg.add_signature(detached, gpg.sign(data, key_id, Path(args.gpg_homedir)
                                                        if args.gpg_homedir else None))
    assert detached is not None
    with repo.lock():
        repo.write_detached_metadata(commit, detached)
    return 0


def _remote_show_url(args: argparse.Namespace) -> int:
    print(remotes.get_remote(open_repo(args), args.name).url)
    return 0


def _pull(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    options = PullOptions(depth=args.depth, commit_metadata_only=args.commit_metadata_only, mirror=args.mirror,
                          disable_static_deltas=args.disable_static_deltas,
                          progress=terminal_progress if sys.stderr.isatty() else None)
    stats = pull(repo, args.remote, args.refs, options)
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    print(f"{stats.fetched_objects} objects fetched ({stats.fetched_bytes} bytes)")
    return 0


def _summary(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    if args.update:
        data = update_summary(repo)
        if args.sign:
            if args.sign_type != "ed25519":
                raise InvalidInputError(f"unsupported signature type {args.sign_type}")
            detached: bytes | None = None
            for key_file in args.sign:
                detached = sign.add_signature(detached, sign.sign(data, sign.load_secret(Path(key_file).read_text())))
            assert detached is not None
            (repo.path / "summary.sig").write_bytes(detached)
        return 0
    summary = repo.path / "summary"
    if not summary.exists():
        raise InvalidInputError("the repository has no summary (run `strata repo summary -u`)")
    refs, extra = parse_summary(summary.read_bytes())
    for ref in refs:
        print(f"* {ref.name}")
        print(f"    Latest Commit ({ref.size} bytes):")
        print(f"      {ref.checksum}")
        if ref.version:
            print(f"    Version (ostree.commit.version): {ref.version}")
    print()
    for key in sorted(extra):
        print(f"{key}: {extra[key]}")
    return 0


def _sign(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    if args.sign_type != "ed25519":
        raise InvalidInputError(f"unsupported signature type {args.sign_type}")
    commit = repo.resolve_rev(args.rev)
    assert commit is not None
    from strata.image.objects import ObjectType
    data = repo.read_metadata(commit, ObjectType.COMMIT)
    keys = list(args.keys) + [Path(f).read_text().strip() for f in args.keys_file]
    if not keys:
        raise InvalidInputError("no key given")
    if args.verify:
        public = [k for key in keys for k in sign.public_keys(f"inline:{key}")]
        sign.verify(data, repo.read_detached_metadata(commit), public, f"commit {commit}")
        print(f"Signature verified for commit {commit}")
        return 0
    detached = repo.read_detached_metadata(commit)
    for key in keys:
        detached = sign.add_signature(detached, sign.sign(data, sign.load_secret(key)))
    with repo.lock():
        repo.write_detached_metadata(commit, detached)
    return 0


def _delta_generate(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    if args.empty == bool(args.source):
        raise InvalidInputError("give exactly one of --from REV and --empty")
    target = repo.resolve_rev(args.target)
    source = repo.resolve_rev(args.source) if args.source else None
    assert target is not None
    with repo.lock():
        generate(repo, source, target, compress=not args.disable_compression)
    print(f"Generated static delta {source + '-' if source else ''}{target}")
    return 0


def _delta_list(args: argparse.Namespace) -> int:
    deltas = list_deltas(open_repo(args))
    if not deltas:
        print("(No static deltas)")
    for name, _digest in deltas:
        print(name)
    return 0
