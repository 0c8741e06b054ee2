"""ostree's pull and pull-local verbs."""
from __future__ import annotations

import re
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING

from strata.cli.ostree import Invocation, UsageError, Verb
from strata.cli.ostree_options import array, flag, integer, string
from strata.cli.ostree_util import objects_by_kind, ostree_problem, resolve
from strata.errors import CorruptionError, InvalidInputError, NotFoundError, StrataError
from strata.image import inspect, parents
from strata.image import objects as O
from strata.image import remote as remotes
from strata.image.objects import ObjectType
from strata.image.repo import Repo, RepoMode
from strata.image.subpaths import Subpaths
from strata.image.transfer import link_objects, metadata_types, missing_objects
from strata.image.transfer import pull_local as copy_local

if TYPE_CHECKING:
    from strata.image.pull import PullStats
    from strata.image.pull_deltas import DeltaTotals
from strata.image.traverse import history
from strata.units import human_size

# ---------------------------------------------------------------- pull, pull-local


def pull(inv: Invocation) -> int:
    from strata.image.pull import PullOptions, remote_refs
    from strata.image.pull import pull as pull_remote
    a = inv.args
    if not inv.positional:
        raise UsageError("REMOTE must be specified")
    repo = inv.repo()
    name, *ref_args = inv.positional
    if ":" in name:
        name, _, first = name.partition(":")
        ref_args = [first, *ref_args]
    options = PullOptions(depth=a.number("depth", 0), commit_metadata_only=a.flag("commit-metadata-only"),
                          mirror=a.flag("mirror"), disable_static_deltas=a.flag("disable-static-deltas"),
                          trusted=a.flag("http-trusted"), url=a.string("url"),
                          headers=tuple(_header(text) for text in a.strings("http-header")),
                          user_agent_suffix=a.string("append-user-agent"),
                          retries=a.number("network-retries", 5) if a.string("network-retries") else None,
                          localcache=tuple(a.strings("localcache-repo")), cache_dir=a.string("cache-dir"),
                          require_static_deltas=a.flag("require-static-deltas"), dry_run=a.flag("dry-run"),
                          subpaths=Subpaths.parse(a.strings("subpath")))
    _check_pull_request(repo, name, inv)
    pinned = dict(_split_at(ref) for ref in ref_args if "@" in ref)  # REF@COMMIT: that commit, REF moved to it
    options.not_older_than = _timestamp_floors(repo, inv, name, ref_args)
    ref_args = [ref.partition("@")[2] if "@" in ref else ref for ref in ref_args]
    mirror_all = a.flag("mirror") and not ref_args and not _find_remote(repo, name).branches
    if mirror_all:
        ref_args = sorted(remote_refs(repo, name))  # a mirror with no refs named takes every ref of the summary
    remote_url = _find_remote(repo, name).url
    if remote_url.startswith("file://") and not pinned and not options.require_static_deltas:
        return _pull_from_directory(repo, name, ref_args, mirror=a.flag("mirror"),
                                    depth=a.number("depth", 0), subpaths=options.subpaths)
    bareuseronly = a.flag("bareuseronly-files")
    before = objects_by_kind(repo) if bareuseronly else (set(), set())
    refs_before = repo.list_refs()
    started = time.monotonic()
    stats = pull_remote(repo, name, ref_args, options)
    elapsed = int(time.monotonic() - started)
    if stats.delta_totals is not None:
        print(_dry_run_line(stats.delta_totals))
        return 0
    if bareuseronly:
        _undo_unless_bareuseronly(repo, before, refs_before)
    with repo.lock():
        for ref, checksum in pinned.items():
            repo.set_ref(ref, checksum, remote=None if a.flag("mirror") else name)
        if a.flag("commit-metadata-only"):
            _mark_incomplete_partial(repo, list(stats.refs.values()))
    _drop_tombstones_of_present(repo)
    if mirror_all:  # a mirror of some refs keeps its own summary (ostree issue 846)
        _mirror_summary(repo, name)
    print(_pull_status(stats, elapsed))
    return 0


def _timestamp_floors(repo: Repo, inv: Invocation, remote: str, ref_args: list[str]) -> dict[str, str]:
    """-T / --timestamp-check-from-rev: for each pull target, the commit it may not be older than."""
    from_rev = inv.args.string("timestamp-check-from-rev")
    if not (inv.args.flag("timestamp-check") or from_rev):
        return {}
    floors = {}
    for arg in ref_args:
        ref, _, pinned = arg.partition("@")
        current = resolve(repo, from_rev) if from_rev else repo.read_ref(ref, remote=remote)
        if current:
            floors[pinned or ref] = current
    return floors


def _header(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UsageError(f"Missing '=' in --http-header: {text}")
    return key, value


def check_bareuseronly(repo: Repo, checksum: str) -> None:
    """--bareuseronly-files: only regular files within 0775 and symlinks are acceptable."""
    meta = repo.read_file_meta(checksum)
    if meta.is_symlink:
        return
    invalid = stat.S_IMODE(meta.mode) & ~0o775
    if invalid:
        raise InvalidInputError(f"Content object {checksum}: invalid mode 0{meta.mode:04o} with bits 0{invalid:04o}")


def _undo_unless_bareuseronly(repo: Repo, before: tuple[set[str], set[str]], refs_before: dict[str, str]) -> None:
    """ostree refuses such objects while it fetches them; strata checks after the fetch and takes back
    everything the pull stored (objects and refs) when one is refused."""
    new_contents = objects_by_kind(repo)[1] - before[1]
    try:
        for checksum in sorted(new_contents):
            check_bareuseronly(repo, checksum)
    except InvalidInputError:
        after = objects_by_kind(repo)
        with repo.lock():
            for name in repo.list_refs():
                if name not in refs_before:
                    remote, _, ref = name.rpartition(":")
                    repo.set_ref(ref, None, remote=remote or None)
            for name, checksum in refs_before.items():
                remote, _, ref = name.rpartition(":")
                repo.set_ref(ref, checksum, remote=remote or None)
            for checksum, objtype in metadata_types(repo, after[0] - before[0]):
                repo.object_path(checksum, objtype).unlink(missing_ok=True)
            for checksum in new_contents:
                repo.object_path(checksum, ObjectType.FILE).unlink(missing_ok=True)
        raise


def _pull_from_directory(repo: Repo, name: str, refs: list[str], *, mirror: bool, depth: int,
                         subpaths: Subpaths) -> int:
    """A file:// remote is a repository on this machine: its objects are imported as pull-local does, with
    the remote's GPG and sign-API verification."""
    remote = _find_remote(repo, name)
    source = Repo.open(Path(remote.url[len("file://"):]))
    wanted = refs or list(remote.branches) or (list(source.list_refs(remotes=False)) if mirror else [])
    if not wanted:
        raise InvalidInputError(f"No refs to pull from remote {name}")
    from strata.image import gpg, sign
    for ref in wanted if remote.gpg_verify or remote.sign_verify else []:
        checksum = resolve(source, ref)
        data, detached = source.read_metadata(checksum, ObjectType.COMMIT), source.read_detached_metadata(checksum)
        if remote.gpg_verify:
            gpg.verify(data, detached, remote.gpg_keyring, f"commit {checksum}")
        if remote.sign_verify:
            sign.verify(data, detached, list(remote.keys), f"commit {checksum}")
    metadata, contents = missing_objects(source, repo, [resolve(source, r) for r in wanted], depth, subpaths)
    link_objects(source, repo, metadata, contents)
    copy_local(source, repo, wanted, remote=None if mirror else name, depth=depth, subpaths=subpaths)
    written = sum(_content_bytes(repo, checksum) for checksum in contents)
    print(f"{len(metadata)} metadata, {len(contents)} content objects imported; {human_size(written)} content written")
    return 0


def _drop_tombstones_of_present(repo: Repo) -> None:
    """A commit pulled back is no longer deleted: its tombstone goes."""
    for checksum, objtype in list(repo.list_objects(ObjectType.TOMBSTONE_COMMIT)):
        if repo.has_object(checksum, ObjectType.COMMIT):
            repo.object_path(checksum, objtype).unlink(missing_ok=True)


def _mirror_summary(repo: Repo, name: str) -> None:
    """A mirror keeps the remote's summary (and its signature) as they are."""
    from strata.image.pull import MAX_METADATA_SIZE, PullOptions, remote_fetcher
    remote = _find_remote(repo, name)
    fetcher = remote_fetcher(repo, remote, PullOptions())
    for filename in ("summary", "summary.sig"):
        data = fetcher.get(filename, optional=True, limit=MAX_METADATA_SIZE)
        if data is not None:
            (repo.path / filename).write_bytes(data)


def _mark_incomplete_partial(repo: Repo, commits: list[str]) -> None:
    """A commit whose tree was not fetched is partial (fsck and later pulls know to complete it)."""
    for commit in commits:
        if repo.has_object(commit, ObjectType.COMMIT) and not repo.has_object(repo.load_commit(commit).root_tree,
                                                                               ObjectType.DIRTREE):
            repo.mark_partial(commit)


def _split_at(text: str) -> tuple[str, str]:
    ref, _, checksum = text.partition("@")
    if not O.is_checksum(checksum):
        raise InvalidInputError(f"Invalid checksum '{checksum}' in {text}")
    return ref, checksum


def _find_remote(repo: Repo, name: str) -> remotes.Remote:
    """A remote of repo, or of one of its core.parent repositories."""
    for holder in parents.repo_chain(repo):
        if name in remotes.list_remotes(holder):
            return remotes.get_remote(holder, name)
    return remotes.get_remote(repo, name)


def _check_pull_request(repo: Repo, name: str, inv: Invocation) -> None:
    from strata.image.pull import check_fetchable
    remote = _find_remote(repo, name)
    check_fetchable(remote)
    url = remote.url
    scheme = url.partition("://")[0] if "://" in url else ""
    if scheme not in ("http", "https", "file"):
        raise InvalidInputError(f"Invalid URI scheme in {url}")
    if inv.args.flag("require-static-deltas") and repo.is_archive:
        raise InvalidInputError("Can't use static deltas in an archive repo")
    if inv.args.flag("dry-run") and not inv.args.flag("require-static-deltas"):
        raise UsageError("--dry-run requires --require-static-deltas")
    if inv.args.flag("require-static-deltas") and inv.args.flag("disable-static-deltas"):
        raise InvalidInputError("Can't specify both --disable-static-deltas and --require-static-deltas")


def glib_size(size: int) -> str:
    """GLib's g_format_size, as ostree prints sizes: a no-break space before a unit, a plain one before
    "bytes"."""
    text = human_size(size)
    return text if size < 1000 else text.replace(" ", "\u00a0")


def _dry_run_line(totals: DeltaTotals) -> str:
    return (f"Delta update: {totals.fetched_parts}/{totals.total_parts} parts, "
            f"{glib_size(totals.fetched_size)}/{glib_size(totals.total_size)}, "
            f"{glib_size(totals.total_usize)} total uncompressed")


def _pull_status(stats: PullStats, elapsed: int) -> str:
    """ostree's closing line of a pull: objects fetched, bytes transferred, content written."""
    if stats.fetched_delta_parts:
        status = (f"{stats.fetched_delta_parts} delta parts, "
                  f"{stats.fetched_metadata + stats.fetched_content} loose fetched")
    else:
        status = f"{stats.fetched_metadata} metadata, {stats.fetched_content} content objects fetched"
    if stats.imported_metadata or stats.imported_content:
        status += f" ({stats.imported_metadata} meta, {stats.imported_content} content local)"
    transferred = stats.fetched_bytes
    if transferred > 0:
        amount = f"{transferred} B" if transferred < 1024 else f"{transferred // 1024} KiB"
        status += f"; {amount} transferred in {elapsed} seconds"
    return status + f"; {glib_size(stats.content_written)} content written"


def pull_local(inv: Invocation) -> int:
    try:
        return _pull_local(inv)
    except StrataError as exc:  # the words ostree uses for a path in a tree name
        slash = re.match(r"^invalid file name in tree: '(.*/.*)'$", str(exc))
        if slash:
            raise CorruptionError(f"Invalid / in filename {slash[1]}") from None
        raise


def _pull_local(inv: Invocation) -> int:
    a = inv.args
    if not inv.positional:
        raise UsageError("DESTINATION must be specified")
    source_path, *ref_args = inv.positional
    source = Repo.open(Path(source_path))
    target = inv.repo()
    refs = ref_args or sorted(source.list_refs())
    for ref in refs if not ref_args else []:
        if ":" in ref:  # ostree mirrors every ref and refuses a remote one (a known limit it reports cleanly)
            raise InvalidInputError(f"Invalid ref name {ref}")
    _verify_local_source(inv, source, target, refs)
    if a.flag("require-static-deltas"):
        _apply_local_deltas(source, target, refs)
    if a.flag("commit-metadata-only"):
        _copy_commit_objects(source, target, refs, a.string("remote"), a.number("depth", 0))
        return 0
    depth = a.number("depth", 0)
    metadata, contents = missing_objects(source, target, [resolve(source, r) for r in refs], depth)
    written = sum(_content_bytes(source, checksum) for checksum in contents)
    if a.flag("bareuseronly-files") or target.mode is RepoMode.BARE_USER_ONLY:  # such a repo cannot hold them
        for checksum in sorted(contents):
            check_bareuseronly(source, checksum)
    if a.flag("untrusted"):
        for checksum in sorted(contents):
            _verify_or_raise(source, checksum)
    link_objects(source, target, metadata, contents)
    copy_local(source, target, refs, remote=a.string("remote"), depth=depth, trusted=not a.flag("untrusted"))
    print(f"{len(metadata)} metadata, {len(contents)} content objects imported; {human_size(written)} content written")
    return 0


def _apply_local_deltas(source: Repo, target: Repo, refs: list[str]) -> None:
    """--require-static-deltas: each ref's commit arrives through a delta the source advertises, or not at all."""
    from strata.image.deltas import apply_local
    for ref in refs:
        commit = source.resolve_rev(ref)
        if commit is not None and not target.has_object(commit, ObjectType.COMMIT):
            apply_local(target, source, commit)


def _verify_or_raise(repo: Repo, checksum: str) -> None:
    try:
        repo.verify_content(checksum)
    except CorruptionError as exc:
        raise CorruptionError(ostree_problem(str(exc))) from None


def _verify_local_source(inv: Invocation, source: Repo, target: Repo, refs: list[str]) -> None:
    """pull-local --gpg-verify / --gpg-verify-summary: signatures checked with the keys of --remote."""
    a = inv.args
    if not (a.flag("gpg-verify") or a.flag("gpg-verify-summary")):
        return
    from strata.image import gpg
    remote = a.string("remote")
    if not remote:
        raise UsageError("--gpg-verify and --gpg-verify-summary need --remote")
    keyring = remotes.keyring_path(target, remote)
    if a.flag("gpg-verify-summary"):
        summary = source.path / "summary"
        if not summary.exists():
            raise NotFoundError("GPG verification enabled, but no summary found")
        signature = source.path / "summary.sig"
        gpg.verify(summary.read_bytes(), signature.read_bytes() if signature.exists() else None, keyring, "summary")
    if a.flag("gpg-verify"):
        for ref in refs:
            checksum = resolve(source, ref)
            gpg.verify(source.read_metadata(checksum, ObjectType.COMMIT), source.read_detached_metadata(checksum),
                       keyring, f"commit {checksum}")


def _copy_commit_objects(source: Repo, target: Repo, refs: list[str], remote: str | None, depth: int) -> None:
    """pull-local --commit-metadata-only: the commit objects alone, marked partial, and their refs."""
    with target.lock():
        for ref in refs:
            checksum = resolve(source, ref)
            for commit in history(source, checksum, depth):
                if target.has_object(commit, ObjectType.COMMIT):
                    continue
                target.mark_partial(commit)
                detached = source.read_detached_metadata(commit)
                if detached is not None:
                    target.write_detached_metadata(commit, detached)
                target.write_metadata(ObjectType.COMMIT, source.read_metadata(commit, ObjectType.COMMIT),
                                      expected=commit)
            if not O.is_checksum(ref):
                target.set_ref(ref.rpartition(":")[2], checksum, remote=remote)
    print(f"{len(refs)} metadata, 0 content objects imported; 0 bytes content written")


def _content_bytes(repo: Repo, checksum: str) -> int:
    return 0 if repo.read_file_meta(checksum).is_symlink else inspect.content_size(repo, checksum)


VERBS = (
    Verb("pull", pull, (
        flag("commit-metadata-only"), string("cache-dir"), flag("disable-fsync"), flag("per-object-fsync"),
        flag("disable-static-deltas"), flag("require-static-deltas"), flag("mirror"), array("subpath"),
        flag("untrusted"), flag("http-trusted"), flag("bareuseronly-files"), flag("dry-run"), integer("depth"),
        string("url"), array("http-header"), integer("update-frequency"), integer("network-retries"),
        array("localcache-repo", "L"), flag("timestamp-check", "T"), string("timestamp-check-from-rev"),
        flag("disable-verify-bindings"), string("append-user-agent"))),
    Verb("pull-local", pull_local, (
        flag("commit-metadata-only"), string("remote"), flag("disable-fsync"), flag("per-object-fsync"),
        flag("untrusted"), flag("bareuseronly-files"), flag("require-static-deltas"), flag("gpg-verify"),
        flag("gpg-verify-summary"), flag("disable-verify-bindings"), integer("depth"))),
)
