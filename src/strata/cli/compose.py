"""`strata compose tree|install|postprocess|commit`: build commits from a treefile and RPM repositories
(rpm-ostree's one-step compose and its split steps); `compose local|trees`: trees composed from the installed
deployment plus packages, hosted in the sysroot repository for rebasing."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from strata.cli.common import add_sysroot_option, print_json
from strata.cli.progress import make_progress
from strata.cli.repo import parse_key_value
from strata.core.compose import (
    ComposeOptions,
    compose_commit,
    compose_install,
    compose_postprocess,
    compose_tree,
)
from strata.core.localcompose import LocalTree, compose_local, local_trees, request_from_words
from strata.core.treefile import load_treefile
from strata.errors import InvalidInputError
from strata.progress import reporting_to
from strata.sysroot.sysroot import Sysroot

Log = Callable[[str], None]


def register(sub: Any) -> None:
    parser = sub.add_parser("compose", help="compose trees on a build server")
    verbs = parser.add_subparsers(dest="compose_verb", metavar="VERB", parser_class=type(parser))
    tree = verbs.add_parser("tree", help="Process a \"treefile\"; install packages and commit the result to an "
                                         "OSTree repository")
    tree.add_argument("treefile", help="the treefile (YAML or JSON)")
    _repo_options(tree)
    _install_options(tree)
    _commit_options(tree)
    tree.add_argument("--test", action="append", default=[], metavar="CMD",
                      help="Boot the composed commit in a scratch sysroot and run CMD inside; the ref moves only "
                           "if every CMD exits 0 (repeatable)")
    tree.set_defaults(func=_tree)
    install = verbs.add_parser("install", help="Install packages into a target path")
    install.add_argument("treefile", help="the treefile (YAML or JSON)")
    install.add_argument("destdir", help="directory that receives rootfs/ (must not hold one yet)")
    _repo_options(install)
    _install_options(install)
    install.add_argument("--postprocess", action="store_true", help="also run the final postprocessing")
    install.set_defaults(func=_install)
    post = verbs.add_parser("postprocess", help="Perform final postprocessing on an installation root")
    post.add_argument("rootfs", help="the installation root (DESTDIR/rootfs of compose install)")
    post.add_argument("treefile", nargs="?", help="the treefile (optional: defaults apply without one)")
    post.add_argument("--unified-core", action="store_true", help="accepted for compatibility (always on)")
    post.set_defaults(func=_postprocess)
    commit = verbs.add_parser("commit", help="Commit a target path to an OSTree repository")
    commit.add_argument("treefile", help="the treefile (YAML or JSON)")
    commit.add_argument("rootfs", help="the postprocessed installation root")
    _repo_options(commit)
    _commit_options(commit)
    commit.set_defaults(func=_commit)
    local = verbs.add_parser("local", help="Compose a tree from the installed deployment's packages plus PKG..., "
                                           "committed to local/NAME in the sysroot repository")
    local.add_argument("packages", nargs="+", metavar="PKG|file.rpm", help="packages to add (names, provides "
                                                                           "or local RPM files)")
    local.add_argument("--os", dest="stateroot", help="the stateroot whose deployment is the source")
    local.add_argument("--ref", help="the ref to commit to (default: local/OSNAME)")
    local.add_argument("--dry-run", action="store_true", help="Just print the plan and exit")
    add_sysroot_option(local)
    local.set_defaults(func=_local)
    trees = verbs.add_parser("trees", help="List the local trees of the sysroot repository")
    trees.add_argument("--json", action="store_true", help="Output JSON")
    add_sysroot_option(trees)
    trees.set_defaults(func=_trees)


def _repo_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-r", "--repo", help="Path to OSTree repository (required)")
    p.add_argument("--unified-core", action="store_true", help="accepted for compatibility (always on)")


def _install_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cachedir", help="Cached state: package cache and rpm-md cache directory")
    p.add_argument("--dry-run", action="store_true", help="Just print the transaction and exit")
    p.add_argument("--print-only", action="store_true", help="Just expand any includes and print treefile")
    p.add_argument("--force-nocache", action="store_true", help="Always create a new OSTree commit, even if "
                                                                "nothing appears to have changed")
    p.add_argument("--previous-inputhash", metavar="DIGEST", help="Use this input hash for change detection")
    p.add_argument("--previous-version", metavar="VERSION", help="Use this version number for automatic "
                                                                 "version numbering")
    p.add_argument("--ex-lockfile", action="append", default=[], metavar="FILE",
                   help="Read lockfile from FILE (repeatable; later files win)")
    p.add_argument("--ex-lockfile-strict", action="store_true",
                   help="With --ex-lockfile, only allow installing locked packages")
    p.add_argument("--ex-write-lockfile-to", metavar="FILE", help="Write lockfile to FILE")
    p.add_argument("--layer-repo", metavar="REPO", help="Repository holding the ostree-layers refs "
                                                        "(default: --repo)")
    p.add_argument("--cache-only", action="store_true", help="Assume cache is present, do not attempt to update it")
    p.add_argument("--download-only", action="store_true", help="Like --dry-run, but download and import RPMs "
                                                                "as well; requires --cachedir")
    p.add_argument("--touch-if-changed", metavar="FILE", help="Update the modification time on FILE if a new "
                                                              "commit was created")
    p.add_argument("--previous-commit", metavar="COMMIT", help="Use this commit for change detection")
    p.add_argument("--workdir", metavar="WORKDIR", help="Working directory")
    p.add_argument("--disable-selinux", action="store_true", help="Disable SELinux labeling (strata never labels)")


def _commit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--add-metadata-string", action="append", default=[], metavar="KEY=VALUE",
                   help="Append given key and value (in string format) to metadata")
    p.add_argument("--add-metadata-from-json", action="append", default=[], metavar="JSON",
                   help="Parse the given JSON file as object, convert to GVariant, append to OSTree commit")
    p.add_argument("--parent", metavar="REV", help="Commit with specific parent (default: the ref's commit)")
    p.add_argument("--no-parent", action="store_true", help="Always commit without a parent")
    p.add_argument("--write-commitid-to", metavar="FILE", help="File to write the composed commitid to "
                                                                "instead of updating the ref")


def _options(args: argparse.Namespace) -> ComposeOptions:
    if not args.repo:
        raise InvalidInputError("--repo must be specified")
    metadata = []
    for item in getattr(args, "add_metadata_string", []):
        if "=" not in item:
            raise InvalidInputError(f"Missing '=' in KEY=VALUE metadata '{item}'")
        metadata.append(parse_key_value(item))
    write_to = getattr(args, "write_commitid_to", None)
    return ComposeOptions(
        repo=Path(args.repo), cachedir=Path(args.cachedir) if getattr(args, "cachedir", None) else None,
        dry_run=getattr(args, "dry_run", False), force_nocache=getattr(args, "force_nocache", False),
        add_metadata=metadata, parent=getattr(args, "parent", None), no_parent=getattr(args, "no_parent", False),
        write_commitid_to=Path(write_to) if write_to else None,
        previous_inputhash=getattr(args, "previous_inputhash", None),
        previous_version=getattr(args, "previous_version", None),
        lockfiles=[Path(p) for p in getattr(args, "ex_lockfile", [])],
        lockfile_strict=getattr(args, "ex_lockfile_strict", False),
        write_lockfile_to=_path(args, "ex_write_lockfile_to"), previous_commit=getattr(args, "previous_commit", None),
        layer_repo=_path(args, "layer_repo"), touch_if_changed=_path(args, "touch_if_changed"),
        add_metadata_from_json=[Path(p) for p in getattr(args, "add_metadata_from_json", [])],
        download_only=getattr(args, "download_only", False), cache_only=getattr(args, "cache_only", False),
        workdir=_path(args, "workdir"), tests=list(getattr(args, "test", [])))


def _path(args: argparse.Namespace, name: str) -> Path | None:
    value = getattr(args, name, None)
    return Path(value) if value else None


def _with_progress(step: Callable[[Log], object]) -> int:
    reporter = make_progress()
    try:
        with reporting_to(reporter):
            step(reporter.message)
    except BaseException as exc:
        reporter.finished(False, str(exc))
        raise
    reporter.finished(True, "")
    sys.stdout.flush()
    return 0


def _print_only(args: argparse.Namespace) -> bool:
    if args.print_only:
        print(load_treefile(Path(args.treefile)).to_json())
    return bool(args.print_only)


def _tree(args: argparse.Namespace) -> int:
    if _print_only(args):
        return 0
    options = _options(args)
    return _with_progress(lambda log: compose_tree(Path(args.treefile), options, log))


def _install(args: argparse.Namespace) -> int:
    if _print_only(args):
        return 0
    options = _options(args)
    return _with_progress(lambda log: compose_install(Path(args.treefile), Path(args.destdir), options, log,
                                                      postprocess=args.postprocess))


def _postprocess(args: argparse.Namespace) -> int:
    treefile = Path(args.treefile) if args.treefile else None
    return _with_progress(lambda log: compose_postprocess(Path(args.rootfs), treefile, log))


def _commit(args: argparse.Namespace) -> int:
    options = _options(args)
    return _with_progress(lambda log: compose_commit(Path(args.treefile), Path(args.rootfs), options, log))


def _local(args: argparse.Namespace) -> int:
    sysroot = Sysroot.open(Path(args.sysroot))
    request = request_from_words(args.packages, args.stateroot, args.ref, dry_run=args.dry_run)
    return _with_progress(lambda log: compose_local(sysroot, request, log))


def _trees(args: argparse.Namespace) -> int:
    trees = local_trees(Sysroot.open(Path(args.sysroot)).repo)
    if args.json:
        print_json([_tree_json(tree) for tree in trees])
        return 0
    if not trees:
        print("No local trees.")
    for tree in trees:
        print(f"{tree.ref}")
        print(f"    Version: {tree.version or '(none)'}")
        print(f"     Commit: {tree.commit}")
        source = f"{tree.source_refspec} {tree.source_version or ''}".rstrip()
        print(f"     Source: {source} ({(tree.source_checksum or '?')[:10]})")
        print(f"  Requested: {' '.join(tree.requested) or '(none)'}")
        print(f"      Added: {' '.join(tree.added) or '(none)'}")
        for index, (old, new) in enumerate(tree.updated):
            print(f"    {'Updated:' if index == 0 else '        '} {old} -> {new}")
    return 0


def _tree_json(tree: LocalTree) -> dict[str, object]:
    return {"ref": tree.ref, "commit": tree.commit, "version": tree.version,
            "source": {"checksum": tree.source_checksum, "refspec": tree.source_refspec,
                       "version": tree.source_version},
            "requested": tree.requested, "added": tree.added,
            "updated": [{"from": old, "to": new} for old, new in tree.updated]}
