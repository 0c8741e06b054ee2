"""Pulling from an archive repository over HTTP (spec §13): the commit first, then only the objects this
repository lacks, several at a time; every object is checked against its name before it is stored, and the
ref moves only when the whole commit is present. A pull that stops midway resumes where it was."""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from strata.errors import CorruptionError, NotFoundError, StrataError
from strata.image import gpg, sign
from strata.image import objects as O
from strata.image.deltas import (
    Superblock,
    UnsupportedDeltaError,
    apply_part,
    delta_relpath,
    parse_delta_name,
    parse_superblock,
)
from strata.image.fetcher import Fetcher, FetcherRecipe, FetchError, Request
from strata.image.objects import Commit, DirTree, ObjectType
from strata.image.pull_deltas import AdvertisedDeltas, DeltaTotals, Route, choose, required_error
from strata.image.remote import Remote, fetch_settings, get_remote
from strata.image.repo import Repo
from strata.image.subpaths import Subpaths
from strata.image.summary import advertised_deltas, parse_summary
from strata.image.summary_fetch import fetch_summary
from strata.progress import transfer as current_transfer
from strata.units import human_size

Progress = Callable[[str], None]
_T = TypeVar("_T")
_WORKERS = 12
_PROCESSES = 4  # more than the cores: each stores files one at a time, waiting on the disk between
_PROCESS_THRESHOLD = 512
_INFLATE_IN_MEMORY = 16 << 20
_BATCH = 128
# ostree 2022.7's OSTREE_MAX_METADATA_SIZE: the cap on commits, dirtrees, dirmetas, the summary, signatures
# and refs fetched over HTTP (later ostree releases raised it to 128 MiB).
MAX_METADATA_SIZE = 10 << 20

__all__ = ["MAX_METADATA_SIZE", "FetchError", "Fetcher", "PullOptions", "PullStats", "pull", "remote_refs"]


@dataclass
class PullOptions:
    depth: int = 0
    commit_metadata_only: bool = False
    mirror: bool = False
    disable_static_deltas: bool = False
    progress: Progress | None = None
    trusted: bool = False  # --http-trusted: archive objects are stored as served, unchecked (mirroring)
    url: str | None = None  # --url: this URL instead of the remote's
    headers: tuple[tuple[str, str], ...] = ()
    user_agent_suffix: str | None = None
    retries: int | None = None
    localcache: tuple[str, ...] = ()  # --localcache-repo: objects found there are copied, not fetched
    not_older_than: dict[str, str] = field(default_factory=dict)  # -T: target -> commit it may not predate
    cache_dir: str | None = None  # --cache-dir: where signed summaries are kept (default REPO/tmp/cache)
    require_static_deltas: bool = False  # no delta to a commit is an error, not a fetch of its objects
    dry_run: bool = False  # with require_static_deltas: add up what the deltas would fetch, change nothing
    subpaths: Subpaths = field(default_factory=Subpaths)  # --subpath: only these parts; the commit stays partial


@dataclass
class PullStats:
    fetched_objects: int = 0
    fetched_bytes: int = 0
    refs: dict[str, str] = field(default_factory=dict)
    fetched_metadata: int = 0  # commits, dirtrees and dirmetas fetched one by one
    fetched_content: int = 0  # content objects fetched one by one
    content_written: int = 0  # uncompressed bytes of the content objects stored (ostree's "content written")
    fetched_delta_parts: int = 0
    imported_metadata: int = 0  # objects copied from a --localcache-repo instead of fetched
    imported_content: int = 0
    delta_totals: DeltaTotals | None = None  # a dry run's sums


def pull(repo: Repo, remote_name: str, refs: list[str], options: PullOptions | None = None) -> PullStats:
    opts = options or PullOptions()
    remote = get_remote(repo, remote_name)
    check_fetchable(remote)
    fetcher = remote_fetcher(repo, remote, opts)
    wanted = refs or list(remote.branches)
    no_deltas = _deltas_unwanted(repo, opts)
    summary, indexed = _fetch_summary(repo, fetcher, remote, opts, wanted, no_deltas)
    targets = _resolve_refs(fetcher, summary, wanted)
    if not targets:
        raise StrataError(f"No refs to pull from remote {remote_name}")
    advertised = None if no_deltas else AdvertisedDeltas(
        advertised_deltas(summary) if summary is not None else {}, indexed)
    if opts.require_static_deltas and not (advertised and advertised.any):
        raise NotFoundError("Fetch configured to require static deltas, but no summary deltas or delta index found")
    session = _Session(repo, fetcher, remote, opts)
    try:
        for ref, checksum in targets.items():
            local = repo.read_ref(ref) if opts.mirror else repo.read_ref(ref, remote=remote_name)
            session.pull_target(ref, None if O.is_checksum(ref) else local, checksum, advertised)
    finally:
        session.close()
    if opts.dry_run:
        return PullStats(fetched_bytes=fetcher.bytes, delta_totals=session.delta_totals)
    stats = _stats(session, advertised)
    for ref, checksum in targets.items():
        stats.refs[ref] = checksum
        if not O.is_checksum(ref):  # a commit asked for by checksum has no ref to move
            with repo.lock():
                repo.set_ref(ref, checksum, remote=None if opts.mirror else remote_name)
    session.report(final=True)
    session.transfer.end()
    return stats


def _deltas_unwanted(repo: Repo, opts: PullOptions) -> bool:
    """A delta brings a whole tree: not what a pull of commit metadata or of subpaths wants; and ostree
    applies none into an archive repository."""
    return (opts.disable_static_deltas or opts.commit_metadata_only or repo.is_archive
            or not opts.subpaths.whole)


def _stats(session: _Session, advertised: AdvertisedDeltas | None) -> PullStats:
    return PullStats(fetched_objects=session.fetched, fetched_bytes=session.fetcher.bytes,
                     fetched_metadata=session.fetched_metadata + (advertised.fetched_indexes if advertised else 0),
                     fetched_content=session.fetched_content, content_written=session.content_written,
                     fetched_delta_parts=session.fetched_delta_parts, imported_metadata=session.imported_metadata,
                     imported_content=session.imported_content)


def check_fetchable(remote: Remote) -> None:
    """A remote marked unconfigured, or one another tool fetches from, or one without a URL is refused before
    anything is asked."""
    unconfigured = remote.options.get("unconfigured-state")
    if unconfigured:
        raise StrataError(f"remote unconfigured-state: {unconfigured}")
    backend = remote.options.get("custom-backend")
    if backend:
        raise StrataError(f"Cannot fetch via libostree - remote '{remote.name}' uses custom backend '{backend}'")
    _require_url(remote)


def _require_url(remote: Remote) -> None:
    if not remote.url:
        raise NotFoundError(f'No "url" option in remote "{remote.name}"')


def _fetch_summary(repo: Repo, fetcher: Fetcher, remote: Remote, opts: PullOptions, wanted: list[str],
                   no_deltas: bool) -> tuple[bytes | None, bool]:
    """(summary, whether deltas are indexed). Commits asked for by checksum need no summary
    (ostree: an override commit does not use it); to find their deltas the remote's config is enough when it
    says the deltas are indexed."""
    by_checksum_only = bool(wanted) and all(O.is_checksum(ref) for ref in wanted)
    if by_checksum_only and (no_deltas or _config_says_indexed(fetcher)):
        return None, not no_deltas
    summary, _signature = fetch_summary(fetcher, remote, Path(opts.cache_dir) if opts.cache_dir else
                                        repo.path / "tmp" / "cache")
    indexed = summary is not None and parse_summary(summary)[1].get("ostree.summary.indexed-deltas") is True
    return summary, indexed


def _config_says_indexed(fetcher: Fetcher) -> bool:
    """The remote's config has core.indexed-deltas=true (its deltas are found without the summary)."""
    data = fetcher.get("config", optional=True, limit=MAX_METADATA_SIZE)
    if not data:
        return False
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(data.decode("utf-8", errors="replace"))
    except configparser.Error:
        return False
    return parser.get("core", "indexed-deltas", fallback="false").strip().lower() in ("true", "1", "yes")


def remote_refs(repo: Repo, remote_name: str) -> list[str]:
    """The refs a remote's summary lists (verified like a pull would)."""
    remote = get_remote(repo, remote_name)
    _require_url(remote)
    fetcher = remote_fetcher(repo, remote, PullOptions())
    summary, _signature = fetch_summary(fetcher, remote, None)
    if summary is None:
        raise StrataError(f"remote {remote_name} has no summary file")
    return [ref.name for ref in parse_summary(summary)[0]]


def remote_fetcher(repo: Repo, remote: Remote, opts: PullOptions) -> Fetcher:
    """A fetcher with the remote's transport settings and the pull's overrides."""
    settings = fetch_settings(repo, remote.name)
    settings = replace(settings, headers=settings.headers + opts.headers,
                       user_agent=" ".join(filter(None, (settings.user_agent, opts.user_agent_suffix))),
                       retries=settings.retries if opts.retries is None else opts.retries)
    return Fetcher(opts.url or remote.url, settings, content_url=remote.content_url)


def _resolve_refs(fetcher: Fetcher, summary: bytes | None, refs: list[str]) -> dict[str, str]:
    listed = {r.name: r.checksum for r in parse_summary(summary)[0]} if summary is not None else {}
    result = {}
    for ref in refs:
        if O.is_checksum(ref):
            result[ref] = ref
            continue
        if ref in listed:
            result[ref] = listed[ref]
            continue
        # without a summary the ref file must be there (its 404 is the error); with one, a ref it does not
        # list yet may still be on the server
        body = fetcher.get(f"refs/heads/{ref}", optional=summary is not None, limit=MAX_METADATA_SIZE)
        if body is None:
            raise NotFoundError(f"No such branch '{ref}' in repository")
        result[ref] = _ref_contents(ref, body)
    return result


def _ref_contents(ref: str, body: bytes) -> str:
    """The checksum a ref file from the server holds; anything else (an HTML page, say) is refused in a
    few words of it, newlines flattened, as ostree does."""
    text = body.decode(errors="replace").rstrip()
    if O.is_checksum(text):
        return text
    if len(text) == 64:
        bad = next(c for c in text if c not in "0123456789abcdef")
        problem = f"Invalid character '{ord(bad)}' in rev '{text}'"
    else:
        problem = "Invalid rev " + text[:64].replace("\n", " ")
    raise CorruptionError(f"Fetching checksum for ref ((empty), {ref}): {problem}")


class _Unset:
    """No value given (None is a value: no detached metadata)."""


_UNSET = _Unset()


class _Session:
    def __init__(self, repo: Repo, fetcher: Fetcher, remote: Remote, opts: PullOptions) -> None:
        self.repo = repo
        self.fetcher = fetcher
        self.remote = remote
        self.opts = opts
        self.fetched = 0
        self.fetched_metadata = 0
        self.fetched_content = 0
        self.content_written = 0
        self.fetched_delta_parts = 0
        self.count_lock = threading.Lock()
        self.last_report = 0.0
        self.started = time.monotonic()
        self.transfer = current_transfer()  # the caller's progress receiver, for the worker threads to report to
        self.processes: ProcessPoolExecutor | None = None
        self.caches = [Repo.open(path) for path in opts.localcache]
        self.imported_metadata = 0
        self.imported_content = 0
        self.delta_totals = DeltaTotals()

    def close(self) -> None:
        if self.processes is not None:
            self.processes.shutdown()

    def pull_commit(self, ref: str, checksum: str) -> None:
        current: str | None = checksum
        depth = self.opts.depth
        while current is not None:
            if current != checksum and not self._server_has_commit(current):
                break  # history the server pruned ends the walk back, as in ostree
            complete = self.repo.has_object(current, ObjectType.COMMIT) and not self.repo.is_partial(current)
            commit = self._fetch_commit(ref if current == checksum else None, current)
            if not self.opts.commit_metadata_only:
                self._fetch_tree(commit)
            # without its whole tree a new commit stays partial
            if complete or (self.opts.subpaths.whole and not self.opts.commit_metadata_only):
                with self.repo.lock():
                    self.repo.sync()
                    self.repo.clear_partial(current)
            if depth == 0 or commit.parent is None:
                break
            depth -= 1
            current = commit.parent

    def pull_target(self, ref: str, local: str | None, checksum: str, advertised: AdvertisedDeltas | None) -> None:
        """Bring checksum (what ref points at on the server) here: through a static delta when one fits, else
        object by object. A dry run only adds up what the delta would fetch."""
        if advertised is None:  # deltas disabled
            self.pull_commit(ref, checksum)
            return
        named_ref = None if O.is_checksum(ref) else ref
        choice = choose(self.repo, checksum, local, lambda: advertised.leading_to(
            self.fetcher, checksum, MAX_METADATA_SIZE), required=self.opts.require_static_deltas, ref=named_ref)
        if choice.route is Route.NOTHING:
            return
        if choice.route is Route.DELTA:
            assert choice.name is not None
            superblock = self._superblock(choice.name, checksum, choice.digest)
            if superblock is None and self.opts.require_static_deltas:
                raise required_error(named_ref, checksum)
            if superblock is not None and self.opts.dry_run:
                self.delta_totals.add(self.repo, superblock)
                return
            if superblock is not None and self._apply_delta(ref, superblock):
                return
        if not self.opts.dry_run:
            self.pull_commit(ref, checksum)

    def _superblock(self, name: str, checksum: str, digest: bytes | None) -> Superblock | None:
        """The delta's superblock from the server, checked against the digest the remote advertised; None
        when the server does not have it."""
        source, _target = parse_delta_name(name)
        data = self.fetcher.get(f"{delta_relpath(source, checksum)}/superblock", optional=True,
                                limit=MAX_METADATA_SIZE)
        if not data:
            return None
        self._count(metadata=1)
        if digest is not None and hashlib.sha256(data).digest() != digest:
            raise CorruptionError(f"Invalid checksum for static delta {name}")
        parsed = parse_superblock(data)
        if parsed.target != checksum or parsed.source != source or hashlib.sha256(
                parsed.commit).hexdigest() != checksum:
            raise CorruptionError(f"static delta {name} does not lead to commit {checksum}")
        return parsed

    def _apply_delta(self, ref: str, parsed: Superblock) -> bool:
        """Apply a fetched delta; False when strata cannot execute it (objects one by one instead, whatever
        the delta already wrote is kept)."""
        try:
            self._pull_delta(ref, parsed)
        except UnsupportedDeltaError:
            return False
        return True

    def _pull_delta(self, ref: str, parsed: Superblock) -> None:
        checksum = parsed.target
        relpath = delta_relpath(parsed.source, checksum)
        commit = self._fetch_commit(ref, checksum, data=parsed.commit, detached=parsed.detached_commitmeta())
        with self.repo.lock():
            for index, part in enumerate(parsed.parts):
                if all(self.repo.has_object(checksum, objtype) for objtype, checksum in part.objects):
                    continue
                data = parsed.inline_part(index)  # covered by the superblock's digest: no part checksum
                if data is None:
                    data = self.fetcher.get(f"{relpath}/{index}", limit=part.size)
                    assert data is not None
                    if hashlib.sha256(data).digest() != part.checksum:
                        raise CorruptionError(f"static delta {parsed.name}: part {index} is corrupt")
                self.fetched += apply_part(self.repo, data, part)
                self.fetched_delta_parts += 1
            self.repo.sync()
        if not self.opts.commit_metadata_only:
            self._fetch_tree(commit)  # fallback objects, and anything else the delta did not carry
        with self.repo.lock():
            self.repo.clear_partial(checksum)

    def _server_has_commit(self, checksum: str) -> bool:
        if self.repo.has_object(checksum, ObjectType.COMMIT) and not self.repo.is_partial(checksum):
            return True
        relpath = O.object_relpath(checksum, ObjectType.COMMIT, False)
        return self.fetcher.get(relpath, optional=True, limit=MAX_METADATA_SIZE) is not None

    def _fetch_commit(self, ref: str | None, checksum: str, data: bytes | None = None,
                      detached: bytes | _Unset | None = _UNSET) -> Commit:
        """The commit (from data, this repo or the server) checked and stored partial; its detached metadata
        is fetched unless given (a delta's superblock carries it)."""
        if isinstance(detached, _Unset):
            detached = self.fetcher.get(O.object_relpath(checksum, ObjectType.COMMITMETA, False), optional=True,
                                        limit=MAX_METADATA_SIZE)
            with self.count_lock:  # ostree's closing line counts this request, found or not; strata's does not
                self.fetched_metadata += 1
        if data is None:
            if self.repo.has_object(checksum, ObjectType.COMMIT) and not self.repo.is_partial(checksum):
                data = self.repo.read_metadata(checksum, ObjectType.COMMIT)
            else:
                data = self._cached_metadata(checksum, ObjectType.COMMIT) or self._get_metadata(
                    checksum, ObjectType.COMMIT)
        if self.remote.sign_verify:
            sign.verify(data, detached, list(self.remote.keys), f"commit {checksum}")
        if self.remote.gpg_verify:
            gpg.verify(data, detached, self.remote.gpg_keyring, f"commit {checksum}")
        commit = _parsed(Commit.parse, data, checksum, ObjectType.COMMIT)
        _parsed(O.check_timestamp, commit.timestamp, checksum, ObjectType.COMMIT)
        floor = self.opts.not_older_than.get(ref or "")
        if floor and floor != checksum and commit.timestamp < self.repo.load_commit(floor).timestamp:
            raise StrataError(f"Upgrade {checksum} is chronologically older than current {floor}")
        bindings = commit.typed_meta("ostree.ref-binding", "as")
        if ref is not None and not O.is_checksum(ref) and bindings is not None and ref not in bindings:
            raise StrataError(f"commit {checksum} is not bound to ref {ref} (bound to {', '.join(bindings)})")
        with self.repo.lock():
            self.repo.mark_partial(checksum)
            self.repo.write_metadata(ObjectType.COMMIT, data, expected=checksum)
            if detached is not None:
                self.repo.write_detached_metadata(checksum, detached)
        return commit

    def _get_metadata(self, checksum: str, objtype: ObjectType) -> bytes:
        data = self.fetcher.get(O.object_relpath(checksum, objtype, False), limit=MAX_METADATA_SIZE)
        assert data is not None
        actual = hashlib.sha256(data).hexdigest()
        if actual != checksum:
            raise CorruptionError(f"Corrupted {objtype.value} object {checksum} from the server (actual {actual})")
        self._count(metadata=1)
        return data

    def _fetch_tree(self, commit: Commit) -> None:
        """Walk the tree level by level (metadata on threads); content objects go out in batches as they are
        found, so the worker processes store files while the walk goes on."""
        with ThreadPoolExecutor(max_workers=_WORKERS) as pool, self.repo.lock():
            self._store_metadata(pool, [(commit.root_meta, ObjectType.DIRMETA)])
            subpaths = self.opts.subpaths
            level = [(commit.root_tree, "/")]
            seen: set[tuple[str, str]] = set()  # (dirtree, its path when only subpaths are pulled)
            wanted: set[str] = set()
            pending: list[str] = []
            batches: list[Future[tuple[int, int, int]]] = []
            while level:
                trees = list(pool.map(self._tree, [checksum for checksum, _path in level]))
                metas: list[tuple[str, ObjectType]] = []
                next_level: list[tuple[str, str]] = []
                for (_checksum, path), tree in zip(level, trees, strict=True):
                    for name, checksum in tree.files.items():
                        if not subpaths.wants(path, name, is_dir=False):
                            continue
                        if checksum not in wanted and not self.repo.has_object(checksum, ObjectType.FILE):
                            wanted.add(checksum)
                            if not self._import_content(checksum):
                                pending.append(checksum)
                    for name, (sub_tree, sub_meta) in tree.dirs.items():
                        if not subpaths.wants(path, name, is_dir=True):
                            continue
                        metas.append((sub_meta, ObjectType.DIRMETA))
                        sub_path = f"{path}{name}/"
                        key = (sub_tree, "" if subpaths.whole else sub_path)
                        if key not in seen:
                            seen.add(key)
                            next_level.append((sub_tree, sub_path))
                self._store_metadata(pool, metas)
                pending = self._send_batches(pending, batches, final=False)
                level = next_level
            self._send_batches(pending, batches, final=True)
            if pending and self.processes is None:
                list(pool.map(self._fetch_content, pending))
            for batch in batches:
                self._collect(batch.result())

    def _send_batches(self, pending: list[str], batches: list[Future[tuple[int, int, int]]], *,
                      final: bool) -> list[str]:
        """Hand full batches to the worker processes once there are enough objects to be worth them;
        returns what is still to be sent."""
        if self.processes is None and len(pending) < _PROCESS_THRESHOLD:
            return pending
        if self.processes is None:
            self.processes = ProcessPoolExecutor(max_workers=_PROCESSES, initializer=_init_worker,
                                                 initargs=(str(self.repo.path), self.fetcher.recipe(),
                                                           self.opts.trusted))
        whole = len(pending) if final else len(pending) - len(pending) % _BATCH
        for start in range(0, whole, _BATCH):
            batches.append(self.processes.submit(_fetch_batch, pending[start:start + _BATCH]))
        for done in [b for b in batches if b.done()]:
            batches.remove(done)
            self._collect(done.result())
        return pending[whole:]

    def _collect(self, result: tuple[int, int, int]) -> None:
        count, size, written = result
        with self.count_lock:
            self.fetcher.bytes += size
        self._count(content=count, written=written)

    def _cached_metadata(self, checksum: str, objtype: ObjectType) -> bytes | None:
        """A metadata object of a --localcache-repo, checked against its name."""
        for cache in self.caches:
            if cache.has_object(checksum, objtype):
                data = cache.read_metadata(checksum, objtype)
                if hashlib.sha256(data).hexdigest() == checksum:
                    with self.count_lock:
                        self.imported_metadata += 1
                    return data
        return None

    def _import_content(self, checksum: str) -> bool:
        """Copy a content object from a --localcache-repo (verified on the way in); False if none has it."""
        for cache in self.caches:
            if cache.has_object(checksum, ObjectType.FILE):
                meta, content = cache.read_file(checksum, verify=False)
                self.repo.write_content(meta, content, expected=checksum)
                with self.count_lock:
                    self.imported_content += 1
                    self.content_written += 0 if meta.is_symlink else len(content)
                return True
        return False

    def _tree(self, checksum: str) -> DirTree:
        if self.repo.has_object(checksum, ObjectType.DIRTREE):
            return self.repo.load_dirtree(checksum)
        data = self._cached_metadata(checksum, ObjectType.DIRTREE) or self._get_metadata(checksum, ObjectType.DIRTREE)
        tree = _parsed(DirTree.parse, data, checksum, ObjectType.DIRTREE)
        self.repo.write_metadata(ObjectType.DIRTREE, data, expected=checksum)
        return tree

    def _store_metadata(self, pool: ThreadPoolExecutor, wanted: list[tuple[str, ObjectType]]) -> None:
        missing = sorted({w for w in wanted if not self.repo.has_object(*w)})

        def fetch(item: tuple[str, ObjectType]) -> None:
            data = self._cached_metadata(*item) or self._get_metadata(*item)
            _parsed(O.DirMeta.parse, data, *item)
            self.repo.write_metadata(item[1], data, expected=item[0])
        list(pool.map(fetch, missing))

    def _fetch_content(self, checksum: str) -> None:
        _received, written = store_content_object(self.repo, self.fetcher, checksum,
                                                         trusted=self.opts.trusted)
        self._count(content=1, written=written)

    def _count(self, *, metadata: int = 0, content: int = 0, written: int = 0) -> None:
        with self.count_lock:
            self.fetched += metadata + content
            self.fetched_metadata += metadata
            self.fetched_content += content
            self.content_written += written
        self.report()

    def report(self, final: bool = False) -> None:
        self.transfer.update(self.fetched, self.fetcher.bytes, final=final)
        progress = self.opts.progress
        now = time.monotonic()
        if progress is None or (not final and now - self.last_report < 0.5):
            return
        self.last_report = now
        rate = self.fetcher.bytes / max(now - self.started, 1e-6)
        progress(f"Receiving objects: {self.fetched} ({human_size(self.fetcher.bytes)}, {human_size(int(rate))}/s)")


def _parsed(parse: Callable[[Any], _T], data: Any, checksum: str, objtype: ObjectType) -> _T:
    """parse(data) for an object from the server, any refusal named after the object, as ostree does."""
    try:
        return parse(data)
    except StrataError as exc:
        raise CorruptionError(f"Invalid {objtype.value} object {checksum} from the server: {exc}") from None



def _content_request(repo: Repo, checksum: str) -> Request:
    return Request(O.object_relpath(checksum, ObjectType.FILE, True), spool_dir=repo.tmp_dir, tag=checksum)


def store_content_object(repo: Repo, fetcher: Fetcher, checksum: str, *,
                         trusted: bool = False) -> tuple[int, int]:
    """Fetch one .filez, check it against its name, store it; returns the bytes received and the object's
    uncompressed size."""
    body = fetcher.get_body(_content_request(repo, checksum))
    assert body is not None
    return store_fetched_object(repo, body, checksum, trusted=trusted)


def store_fetched_object(repo: Repo, body: BinaryIO, checksum: str, *, trusted: bool = False) -> tuple[int, int]:
    """Check a fetched .filez against its name and store it (closing body). Memory stays bounded whatever the
    object's size: the body spooled to disk when large and is inflated in chunks."""
    with body:
        received = body.seek(0, os.SEEK_END)
        body.seek(0)
        try:
            meta, size = O.read_archive_header(body.read)
            if repo.is_archive:
                if not trusted:
                    _verify_filez(meta, size, body, checksum)
                body.seek(0)
                repo.write_archive_object(checksum, body)  # verified: keep the compressed bytes
            elif meta.is_symlink or size < _INFLATE_IN_MEMORY:
                content = b"" if meta.is_symlink else O.archive_decompress(body.read(), size)
                repo.write_content(meta, content, expected=checksum)  # verifies before storing
            else:
                _store_large_content(repo, meta, size, body, checksum)
        except CorruptionError as exc:
            raise CorruptionError(f"Corrupted file object {checksum} from the server: {exc}") from None
    return received, 0 if meta.is_symlink else size


def _verify_filez(meta: O.FileMeta, size: int, deflated: BinaryIO, checksum: str) -> None:
    digest = hashlib.sha256(O.file_header(meta))
    if not meta.is_symlink:
        O.hash_inflated(deflated.read, digest, size)
    if digest.hexdigest() != checksum:
        raise CorruptionError(f"actual checksum {digest.hexdigest()}")


def _store_large_content(repo: Repo, meta: O.FileMeta, size: int, deflated: BinaryIO, checksum: str) -> None:
    """Inflate into a file in the repo's tmp/ (not memory), checking the checksum on the way."""
    staged = repo.tmp_dir / f"pull-{secrets.token_hex(8)}"
    digest = hashlib.sha256(O.file_header(repo.canonical_meta(meta)))
    try:
        with open(staged, "wb") as out:
            O.hash_inflated(deflated.read, _Tee(digest, out), size)
        if digest.hexdigest() != checksum:
            raise CorruptionError(f"actual checksum {digest.hexdigest()}")
        repo.write_content_from_file(meta, staged, size)
    finally:
        with contextlib.suppress(FileNotFoundError):
            staged.unlink()


class _Tee:
    """A digest that also writes what it is fed."""

    def __init__(self, digest: Any, out: Any) -> None:
        self.digest = digest
        self.out = out

    def update(self, data: bytes) -> None:
        self.digest.update(data)
        self.out.write(data)


_worker_state: tuple[Repo, Fetcher, bool] | None = None


def _init_worker(repo_path: str, recipe: FetcherRecipe, trusted: bool) -> None:
    global _worker_state
    _worker_state = (Repo.open(repo_path), Fetcher.from_recipe(recipe), trusted)


def _fetch_batch(checksums: list[str]) -> tuple[int, int, int]:
    """Objects stored, bytes received, uncompressed bytes written."""
    assert _worker_state is not None
    repo, fetcher, trusted = _worker_state
    sizes: list[tuple[int, int]] = []

    def store(request: Request, body: BinaryIO | None) -> None:
        assert body is not None
        sizes.append(store_fetched_object(repo, body, str(request.tag), trusted=trusted))
    try:
        fetcher.fetch_many((_content_request(repo, checksum) for checksum in checksums), store)
    except CorruptionError as exc:
        raise CorruptionError(str(exc)) from None
    except StrataError as exc:  # FetchError and friends do not pickle with their extra fields
        raise StrataError(str(exc)) from None
    return len(sizes), sum(received for received, _ in sizes), sum(written for _, written in sizes)


def terminal_progress(line: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r{line}\x1b[K")
        sys.stderr.flush()
