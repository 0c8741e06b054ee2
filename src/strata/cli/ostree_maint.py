"""ostree's repository maintenance verbs: summary, fsck, prune, config."""
from __future__ import annotations

import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from strata.cli.ostree import Invocation, UsageError, Verb
from strata.cli.ostree_options import array, flag, integer, string
from strata.cli.ostree_util import ostree_problem, parse_datetime, resolve
from strata.errors import CorruptionError, InvalidInputError, NotFoundError, StrataError
from strata.image import gvariant, inspect
from strata.image import objects as O
from strata.image import remote as remotes
from strata.image.config import config_get, config_set, config_unset
from strata.image.fsutil import atomic_write
from strata.image.gvariant import Variant, byteswapped
from strata.image.objects import ObjectType
from strata.image.prune import PruneOptions, held_refs
from strata.image.prune import prune as prune_repo
from strata.image.repo import Repo
from strata.image.summary import SUMMARY_TYPE, commit_summary_metadata, swap64, update_summary
from strata.units import human_size

if TYPE_CHECKING:
    from strata.image.fsck import FsckReport

# ---------------------------------------------------------------- summary


def summary(inv: Invocation) -> int:
    a = inv.args
    repo = inv.repo()
    if a.flag("update"):
        from strata.cli.ostree_repo import parse_metadata_option
        additional = [parse_metadata_option(text, "add-metadata") for text in a.strings("add-metadata")]
        commit_summary_metadata(repo, additional, sign=lambda commit: _sign_commit(inv, repo, commit))
        data = update_summary(repo, additional)
        _sign_summary(inv, repo, data)
        return 0
    if not (a.flag("view") or a.flag("raw")):
        raise UsageError("No option specified; use -u to update summary")
    path = repo.path / "summary"
    if not path.exists():
        raise NotFoundError("No summary file")
    data = path.read_bytes()
    if a.flag("raw"):
        print(inspect.format_typed(SUMMARY_TYPE, gvariant.decode(SUMMARY_TYPE, data)))
    else:
        _view_summary(data)
    return 0


def _view_summary(data: bytes) -> None:
    """The summary as ostree's `summary --view` prints it: refs by collection, then the metadata in the
    file's order, ostree's own keys with their names."""
    refs, extra = gvariant.decode(SUMMARY_TYPE, data)
    _print_summary_refs(gvariant.vardict_lookup(extra, "ostree.summary.collection-id", "s"), refs)
    for collection, collection_refs in gvariant.vardict_lookup(extra, "ostree.summary.collection-map",
                                                               "a{sa(s(taya{sv}))}", []):
        _print_summary_refs(collection, collection_refs)
    for key, value in extra:
        pretty = _pretty_summary_value(key, value)
        print(f"{pretty[0]} ({key}): {pretty[1]}" if pretty else f"{key}: {_machine_value(value)}")


def _print_summary_refs(collection: str | None, refs: list[Any]) -> None:
    for name, (size, checksum, meta) in refs:
        print(f"* ({collection}, {name})" if collection else f"* {name}")
        print(f"    Latest Commit ({human_size(swap64(size))}):")
        print(f"      {checksum.hex()}" if len(checksum) == 32
              else f"      Invalid checksum of length {len(checksum)} expected 32")
        for key, value in meta:
            if key == "ostree.commit.timestamp" and value.type == "t":
                print(f"    Timestamp ({key}): {_iso8601(value.value)}")
            elif key == "ostree.commit.version" and value.type == "s":
                print(f"    Version ({key}): {value.value}")
            else:
                print(f"    {key}: {_machine_value(value)}")
        print()


_MODES = ("bare", "archive-z2", "archive", "bare-user", "bare-user-only", "bare-split-xattrs")
_SHOWN: dict[tuple[str, str], tuple[str, Callable[[Any], str]]] = {
    ("ostree.static-deltas", "a{sv}"): ("Static Deltas", lambda v: inspect.format_typed("a{sv}", v, False)),
    ("ostree.summary.last-modified", "t"): ("Last-Modified", lambda v: _iso8601(v)),
    ("ostree.summary.expires", "t"): ("Expires", lambda v: _iso8601(v)),
    ("ostree.summary.collection-id", "s"): ("Collection ID", str),
    ("ostree.summary.collection-map", "a{sa(s(taya{sv}))}"): ("Collection Map", lambda _v: "(printed above)"),
    ("ostree.summary.mode", "s"): ("Repository Mode", lambda v: v if v in _MODES else f"Invalid (\u2018{v}\u2019)"),
    ("ostree.summary.tombstone-commits", "b"): ("Has Tombstone Commits", lambda v: "Yes" if v else "No"),
}


def _pretty_summary_value(key: str, value: Variant) -> tuple[str, str] | None:
    """(ostree's name for the key, the value as it shows it) for ostree's own summary keys of the right type."""
    found = _SHOWN.get((key, value.type))
    return (found[0], found[1](value.value)) if found else None


def _machine_value(value: Variant) -> str:
    """A value other tools wrote in the machine's byte order, as g_variant_print shows it."""
    native = byteswapped("v", value) if sys.byteorder == "little" else value
    if native.type.startswith("a{") and not native.value:
        return "{}"  # GLib's text for an empty dictionary (inspect.format_typed prints an empty array)
    return inspect.format_typed(native.type, native.value, False)


def _iso8601(seconds: int) -> str:
    """Seconds since the epoch in local time as GLib's "%FT%T%:::z" shows them; "invalid" out of range."""
    try:
        when = datetime.fromtimestamp(seconds, UTC).astimezone()
    except (OverflowError, OSError, ValueError):
        return "invalid"
    minutes = int((when.utcoffset() or timedelta()).total_seconds()) // 60
    zone = f"{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}"
    if minutes % 60:
        zone += f":{abs(minutes) % 60:02d}"
    return when.strftime("%Y-%m-%dT%H:%M:%S") + zone


def _sign_commit(inv: Invocation, repo: Repo, commit: str) -> None:
    """The ostree-metadata commit gets the signatures the summary gets."""
    gpg_keys, keys = inv.args.strings("gpg-sign"), inv.args.strings("sign")
    if not (gpg_keys or keys):
        return
    data = repo.read_metadata(commit, ObjectType.COMMIT)
    repo.write_detached_metadata(commit, _signatures(inv, data, repo.read_detached_metadata(commit)))


def _signatures(inv: Invocation, data: bytes, detached: bytes | None) -> bytes:
    """detached metadata with a signature of data by every --gpg-sign and --sign key added."""
    homedir = inv.args.string("gpg-homedir")
    if inv.args.strings("gpg-sign"):
        from strata.image import gpg
        for key_id in inv.args.strings("gpg-sign"):
            detached = gpg.add_signature(detached, gpg.sign(data, key_id, Path(homedir) if homedir else None))
    if inv.args.strings("sign"):
        from strata.cli.ostree_sign import add_signatures
        detached = add_signatures(detached, data, inv.args.strings("sign"), inv.args.string("sign-type") or "ed25519")
    assert detached is not None
    return detached


def _sign_summary(inv: Invocation, repo: Repo, data: bytes) -> None:
    if inv.args.strings("gpg-sign") or inv.args.strings("sign"):
        atomic_write(repo.path / "summary.sig", _signatures(inv, data, None))


# ---------------------------------------------------------------- fsck, prune


def fsck(inv: Invocation) -> int:
    a = inv.args
    quiet = a.flag("quiet")
    repo = inv.repo()
    if not quiet:
        print("Validating refs...")
        print("Validating refs in collections...")
        print("Enumerating commits...")
    from strata.image.fsck import fsck as fsck_repo  # its own verb: not loaded for the others
    report = fsck_repo(repo, delete=a.flag("delete"), mark_missing=True)
    for name, checksum in report.missing_refs:
        print(f"Object missing: {checksum}.commit", file=sys.stderr)
        raise CorruptionError(f"Loading commit for ref {name.partition(':')[2] or name}: "
                              f"No such metadata object {checksum}.commit")
    if not quiet:
        print(f"Verifying content integrity of {report.commits} commit objects...")
    _report_bad_objects(report, delete=a.flag("delete"), keep_going=a.flag("all"))
    if a.flag("add-tombstones"):
        _add_tombstones(repo)
    elif report.partial:
        print(f"{report.partial} partial commits not verified")
    if report.bad:
        raise CorruptionError("Repository corruption encountered")
    fsck_partial = _fsck_partial_commits(repo)
    if fsck_partial:
        raise StrataError(f"{fsck_partial} partial commits from fsck-detected corruption")
    if not quiet:
        print(f"object fsck of {report.commits} commits completed successfully - no errors found.")
    return 0


def _report_bad_objects(report: FsckReport, *, delete: bool, keep_going: bool) -> None:
    """ostree's lines for each bad object, and for each commit marked partial because of it; a corrupt object
    stops the run unless --delete or --all."""
    announced: set[str] = set()
    for bad in report.bad:
        commits = ", ".join(bad.commits)
        if bad.missing:
            where = f" in commits {commits}" if commits else ""
            print(f"Object missing{where}: {bad.checksum}.{bad.objtype.value}", file=sys.stderr)
        else:
            message = ostree_problem(bad.cause)
            if bad.objtype is ObjectType.FILE:
                message = f"fsck content object {bad.checksum}: {message}"
            message = f"In commits {commits}: {message}" if commits else message
            if not (delete or keep_going):
                raise CorruptionError(message)
            print(message, file=sys.stderr)
        for commit in bad.commits:
            if commit in report.marked and commit not in announced:
                announced.add(commit)
                print(f"Marking commit as partial: {commit}", file=sys.stderr)


def _fsck_partial_commits(repo: Repo) -> int:
    """Commits an earlier `fsck --delete` left partial (their marker holds 'f', as ostree writes it)."""
    return sum(1 for marker in (repo.path / "state").glob("*.commitpartial") if marker.read_bytes()[:1] == b"f")


def _add_tombstones(repo: Repo) -> None:
    """fsck --add-tombstones: a tombstone for every missing parent commit, none for commits present."""
    commits = {checksum for checksum, _ in repo.list_objects(ObjectType.COMMIT)}
    with repo.lock():
        repo.config.set("core", "tombstone-commits", True)
        repo.save_config()
        for checksum in sorted(commits):
            parent = repo.load_commit(checksum).parent
            tombstone = repo.object_path(parent, ObjectType.TOMBSTONE_COMMIT) if parent else None
            if parent and parent not in commits and tombstone and not tombstone.exists():
                print(f"Adding tombstone for commit {parent}")
                tombstone.parent.mkdir(exist_ok=True)
                tombstone.write_bytes(O.tombstone(parent))
        for checksum, objtype in list(repo.list_objects(ObjectType.TOMBSTONE_COMMIT)):
            if checksum in commits:
                repo.object_path(checksum, objtype).unlink()


def prune(inv: Invocation) -> int:
    a = inv.args
    repo = inv.repo()
    delete_commit = a.string("delete-commit")
    if delete_commit and a.flag("no-prune"):
        raise UsageError("Cannot specify both --delete-commit and --no-prune")
    if a.flag("static-deltas-only"):
        if not delete_commit:
            raise StrataError("--static-deltas-only requires --delete-commit; "
                              "see https://github.com/ostreedev/ostree/issues/1479")
        _delete_deltas_to(repo, resolve(repo, delete_commit))
        return 0
    deletes = [resolve(repo, delete_commit)] if delete_commit else []
    for commit in deletes:
        _refuse_referenced(repo, commit)
    younger = a.string("keep-younger-than")
    options = PruneOptions(refs_only=a.flag("refs-only"), depth=a.number("depth", -1), delete_commits=tuple(deletes),
                           dry_run=a.flag("no-prune"),
                           keep_younger_than=parse_datetime(younger) if younger else None,
                           retain_branch_depth=dict(map(_branch_depth, a.strings("retain-branch-depth"))),
                           only_branches=tuple(a.strings("only-branch")), commit_only=a.flag("commit-only"))
    tombstones = repo.config.get_bool("core", "tombstone-commits", False) and not options.dry_run
    commits_before = {checksum for checksum, _ in repo.list_objects(ObjectType.COMMIT)} if tombstones else set()
    result = prune_repo(repo, options)
    if tombstones:
        _tombstone_deleted(repo, commits_before)
    _drop_stale_summary_caches(repo)
    print(f"Total (commit only) objects: {result.total}" if options.commit_only else f"Total objects: {result.total}")
    if result.deleted == 0:
        print("No unreachable objects")
    elif a.flag("no-prune"):
        print(f"Would delete: {result.deleted} objects, freeing {human_size(result.freed_bytes)}")
    else:
        print(f"Deleted {result.deleted} objects, {human_size(result.freed_bytes)} freed")
    return 0


_DEPTH_RE = re.compile(r"\s*[+-]?\d+")


def _branch_depth(text: str) -> tuple[str, int]:
    """--retain-branch-depth=BRANCH=DEPTH; like ostree, digits after the number are ignored."""
    branch, eq, depth_text = text.partition("=")
    if not eq:
        raise InvalidInputError(f"Invalid value {text}, must specify BRANCH=DEPTH")
    number = _DEPTH_RE.match(depth_text)
    if number is None:
        raise InvalidInputError(f"Invalid depth {depth_text}")
    depth = int(number[0])
    if not -1 <= depth < 2**31:
        raise InvalidInputError(f"Out of range depth {depth_text}")
    return branch, depth


def _delete_deltas_to(repo: Repo, target: str) -> None:
    """prune --static-deltas-only: the static deltas that lead to target go; the commit stays."""
    import shutil

    from strata.image.deltas import delta_dir, list_deltas
    with repo.lock():
        for name, _digest in list_deltas(repo):
            source, _, to = name.rpartition("-")
            if to == target:
                shutil.rmtree(delta_dir(repo.path, source or None, to), ignore_errors=True)


def _drop_stale_summary_caches(repo: Repo) -> None:
    """Cached summaries of remotes that no longer exist go, as ostree's prune removes them."""
    folder = repo.path / "tmp" / "cache" / "summaries"
    if not folder.is_dir():
        return
    known = set(remotes.list_remotes(repo))
    for path in folder.iterdir():
        if path.name.removesuffix(".sig") not in known:
            path.unlink(missing_ok=True)


def _tombstone_deleted(repo: Repo, commits_before: set[str]) -> None:
    """With core.tombstone-commits, every commit prune removed leaves a tombstone (pulls then know it was
    deleted on purpose)."""
    remaining = {checksum for checksum, _ in repo.list_objects(ObjectType.COMMIT)}
    with repo.lock():
        for checksum in sorted(commits_before - remaining):
            path = repo.object_path(checksum, ObjectType.TOMBSTONE_COMMIT)
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(O.tombstone(checksum))


def _refuse_referenced(repo: Repo, commit: str) -> None:
    for name, checksum in held_refs(repo).items():
        if checksum == commit:
            holder = name if name.startswith("(") else f"'{name}'"
            raise StrataError(f"Commit '{commit}' is referenced by {holder}")


# ---------------------------------------------------------------- config


def config(inv: Invocation) -> int:
    if not inv.positional:
        raise UsageError("OPERATION must be specified")
    action, *rest = inv.positional
    expected = {"get": 1, "set": 2, "unset": 1}.get(action)
    if expected is None:
        raise UsageError(f"Unknown operation {action}")
    if len(rest) > expected:
        raise UsageError("Too many arguments given")
    if len(rest) < expected:
        raise UsageError("KEY and VALUE must be specified" if action == "set" else "KEY must be specified")
    repo = inv.repo()
    group, key = _config_key(inv.args.string("group"), rest[0])
    if action == "get":
        print(config_get(repo, group, key))
    elif action == "set":
        config_set(repo, group, key, rest[1])
    else:
        config_unset(repo, group, key)
    return 0


def _config_key(group: str | None, text: str) -> tuple[str, str]:
    if group:
        return group, text
    section, dot, key = text.partition(".")
    if not dot:
        raise InvalidInputError('Key must be of the form "sectionname.keyname"')
    return section, key



VERBS = (
    Verb("summary", summary, (flag("update", "u"), flag("view", "v"), flag("raw"), array("gpg-sign"),
                              string("gpg-homedir"), array("sign"), string("sign-type"),
                              array("add-metadata", "m"))),
    Verb("fsck", fsck, (flag("add-tombstones"), flag("quiet", "q"), flag("all", "a"), flag("delete"),
                        flag("verify-bindings"), flag("verify-back-refs"))),
    Verb("prune", prune, (flag("no-prune"), flag("refs-only"), integer("depth"), string("delete-commit"),
                          string("keep-younger-than"), flag("static-deltas-only"), array("retain-branch-depth"),
                          array("only-branch"), flag("commit-only"))),
    Verb("config", config, (string("group"),)),
)
