"""Pulling from an archive repository over HTTP (spec §13): the commit first, then only the objects this
repository lacks, several at a time; every object is checked against its name before it is stored, and the
ref moves only when the whole commit is present. A pull that stops midway resumes where it was."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import os
import secrets
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast

from strata.errors import CorruptionError, NotFoundError, StrataError
from strata.image import gpg, sign
from strata.image import objects as O
from strata.image.deltas import UnsupportedDeltaError, apply_part, delta_relpath, parse_superblock
from strata.image.objects import Commit, DirTree, ObjectType
from strata.image.remote import Remote, get_remote
from strata.image.repo import Repo
from strata.image.summary import advertised_deltas, parse_summary
from strata.progress import transfer as current_transfer
from strata.units import human_size

Progress = Callable[[str], None]
_T = TypeVar("_T")
_WORKERS = 12
_PROCESSES = 3
_PROCESS_THRESHOLD = 512
_INFLATE_IN_MEMORY = 16 << 20
_SPOOL_IN_MEMORY = 8 << 20
_BATCH = 128
_RETRIES = 3
_TIMEOUT = 30.0
# ostree 2022.7's OSTREE_MAX_METADATA_SIZE: the cap on commits, dirtrees, dirmetas, the summary, signatures
# and refs fetched over HTTP (later ostree releases raised it to 128 MiB).
MAX_METADATA_SIZE = 10 << 20
_READ = 1 << 20
_ERROR_BODY = 64 << 10


class FetchError(StrataError):
    def __init__(self, url: str, status: int | None, message: str) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


@dataclass
class PullOptions:
    depth: int = 0
    commit_metadata_only: bool = False
    mirror: bool = False
    disable_static_deltas: bool = False
    progress: Progress | None = None
    trusted: bool = False  # --http-trusted: archive objects are stored as served, unchecked (mirroring)


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


class Fetcher:
    """HTTP GETs over one keep-alive connection per worker thread, with retries for transient failures."""

    def __init__(self, base_url: str, timeout: float = _TIMEOUT) -> None:
        self.base_url = base_url
        self.timeout = timeout
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https"):
            raise StrataError(f"unsupported URL scheme for pull: {base_url}")
        self.scheme = parsed.scheme
        self.netloc = parsed.netloc
        self.base_path = parsed.path.rstrip("/")
        self.local = threading.local()
        self.lock = threading.Lock()
        self.bytes = 0

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            conn = cls(self.netloc, timeout=self.timeout)
            self.local.conn = conn
        return conn  # type: ignore[no-any-return]

    def get(self, relpath: str, *, optional: bool = False, limit: int | None = None) -> bytes | None:
        body = self._get(relpath, optional, limit, None)
        return None if body is None else body.read()

    def get_spooled(self, relpath: str, spool_dir: Path) -> BinaryIO:
        """The body as a file object: in memory while small, in an unnamed file in spool_dir beyond that, so
        a large (or endless) object never has to fit in memory."""
        body = self._get(relpath, False, None, spool_dir)
        assert body is not None
        return body

    def _get(self, relpath: str, optional: bool, limit: int | None, spool_dir: Path | None) -> BinaryIO | None:
        url = f"{self.scheme}://{self.netloc}{self.base_path}/{relpath}"
        last: Exception | None = None
        for attempt in range(_RETRIES):
            try:
                return self._get_once(relpath, url, optional, limit, spool_dir)
            except FetchError as exc:
                if exc.status is not None and exc.status < 500:
                    raise
                last = exc
            except http.client.IncompleteRead:
                last = FetchError(url, None, f"Truncated response for {url}")
            except TimeoutError:
                last = FetchError(url, None, f"While fetching {url}: no answer within {self.timeout:g} s")
            except (OSError, http.client.HTTPException) as exc:
                last = FetchError(url, None, f"While fetching {url}: {exc or type(exc).__name__}")
            self.local.conn = None
            time.sleep(0.2 * (attempt + 1))
        assert last is not None
        raise last

    def _get_once(self, relpath: str, url: str, optional: bool, limit: int | None,
                  spool_dir: Path | None) -> BinaryIO | None:
        conn = self._connection()
        conn.request("GET", f"{self.base_path}/{relpath}", headers={"User-Agent": "strata"})
        response = conn.getresponse()
        if response.status != 200:
            self._discard(response)
            if response.status == 404 and optional:
                return None
            raise FetchError(url, response.status, f"Server returned HTTP {response.status} for {url}")
        declared = _content_length(response, url)
        if limit is not None and declared is not None and declared > limit:
            self._drop_connection()
            raise CorruptionError(f"URI {url} exceeded maximum size of {limit} bytes")
        body = _body_buffer(spool_dir)
        try:
            received = self._read_capped(response, url, limit, body)
            if declared is not None and declared != received:
                raise FetchError(url, None, f"Truncated response for {url}")
        except BaseException:
            body.close()
            raise
        with self.lock:
            self.bytes += received
        body.seek(0)
        return body

    def _read_capped(self, response: http.client.HTTPResponse, url: str, limit: int | None, body: BinaryIO) -> int:
        """Copy the body in chunks: one byte over limit ends the transfer (the server may not have said)."""
        received = 0
        while chunk := response.read(_READ):
            body.write(chunk)
            received += len(chunk)
            if limit is not None and received > limit:
                self._drop_connection()
                raise CorruptionError(f"URI {url} exceeded maximum size of {limit} bytes")
        return received

    def _discard(self, response: http.client.HTTPResponse) -> None:
        """Read an error body to reuse the connection, unless it is large: then the connection goes."""
        if len(response.read(_ERROR_BODY)) == _ERROR_BODY and response.read(1):
            self._drop_connection()

    def _drop_connection(self) -> None:
        conn = getattr(self.local, "conn", None)
        if conn is not None:
            conn.close()
        self.local.conn = None


def _body_buffer(spool_dir: Path | None) -> BinaryIO:
    """Where a response body goes (the caller closes it)."""
    if spool_dir is None:
        return io.BytesIO()
    return cast(BinaryIO, tempfile.SpooledTemporaryFile(_SPOOL_IN_MEMORY, dir=str(spool_dir)))


def _content_length(response: http.client.HTTPResponse, url: str) -> int | None:
    value = response.getheader("Content-Length")
    if value is None:
        return None
    if not value.strip().isdigit():
        raise FetchError(url, None, f"Invalid Content-Length for {url}")
    return int(value)


def pull(repo: Repo, remote_name: str, refs: list[str], options: PullOptions | None = None) -> PullStats:
    opts = options or PullOptions()
    remote = get_remote(repo, remote_name)
    fetcher = Fetcher(remote.url, remote.timeout)
    stats = PullStats()
    summary = fetcher.get("summary", optional=True, limit=MAX_METADATA_SIZE)
    if summary is not None and remote.sign_verify:
        signature = fetcher.get("summary.sig", optional=True, limit=MAX_METADATA_SIZE)
        if signature is not None or remote.sign_verify_summary:
            sign.verify(summary, signature, list(remote.keys), "summary")
    if summary is not None and remote.gpg_verify:
        signature = fetcher.get("summary.sig", optional=True, limit=MAX_METADATA_SIZE)
        if gpg.signatures(signature):
            gpg.verify(summary, signature, remote.gpg_keyring, "summary")
    targets = _resolve_refs(fetcher, summary, refs or list(remote.branches))
    if not targets:
        raise StrataError(f"No refs to pull from remote {remote_name}")
    session = _Session(repo, fetcher, remote, opts)
    deltas = {} if summary is None or opts.disable_static_deltas else advertised_deltas(summary)
    try:
        for ref, checksum in targets.items():
            local = repo.read_ref(ref) if opts.mirror else repo.read_ref(ref, remote=remote_name)
            if not session.try_delta(ref, local, checksum, deltas):
                session.pull_commit(ref, checksum)
    finally:
        session.close()
    for ref, checksum in targets.items():
        if O.is_checksum(ref):
            stats.refs[ref] = checksum
            continue  # a commit asked for by checksum has no ref to move
        with repo.lock():
            if opts.mirror:
                repo.set_ref(ref, checksum)
            else:
                repo.set_ref(ref, checksum, remote=remote_name)
        stats.refs[ref] = checksum
    stats.fetched_objects = session.fetched
    stats.fetched_bytes = fetcher.bytes
    stats.fetched_metadata = session.fetched_metadata
    stats.fetched_content = session.fetched_content
    stats.content_written = session.content_written
    stats.fetched_delta_parts = session.fetched_delta_parts
    session.report(final=True)
    session.transfer.end()
    return stats


def remote_refs(repo: Repo, remote_name: str) -> list[str]:
    """The refs a remote's summary lists (verified like a pull would)."""
    remote = get_remote(repo, remote_name)
    fetcher = Fetcher(remote.url)
    summary = fetcher.get("summary", optional=True, limit=MAX_METADATA_SIZE)
    if summary is None:
        raise StrataError(f"remote {remote_name} has no summary file")
    if remote.sign_verify:
        sign.verify(summary, fetcher.get("summary.sig", optional=True, limit=MAX_METADATA_SIZE), list(remote.keys),
                    "summary")
    return [ref.name for ref in parse_summary(summary)[0]]


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
        body = fetcher.get(f"refs/heads/{ref}", optional=True, limit=MAX_METADATA_SIZE)
        if body is None:
            raise NotFoundError(f"No such branch '{ref}' in repository")
        text = body.decode(errors="replace").strip()
        if not O.is_checksum(text):
            raise CorruptionError(f"ref {ref} on the server does not hold a checksum")
        result[ref] = text
    return result


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

    def close(self) -> None:
        if self.processes is not None:
            self.processes.shutdown()

    def pull_commit(self, ref: str, checksum: str) -> None:
        current: str | None = checksum
        depth = self.opts.depth
        while current is not None:
            commit = self._fetch_commit(ref if current == checksum else None, current)
            if not self.opts.commit_metadata_only:
                self._fetch_tree(commit)
            with self.repo.lock():
                self.repo.sync()
                self.repo.clear_partial(current)
            if depth == 0 or commit.parent is None:
                break
            depth -= 1
            current = commit.parent

    def try_delta(self, ref: str, local: str | None, checksum: str, deltas: dict[str, bytes]) -> bool:
        """Fetch the commit through a static delta the summary advertises, if one fits what we have."""
        have = local if local and self.repo.has_object(local, ObjectType.COMMIT) and not self.repo.is_partial(
            local) else None
        name = f"{have}-{checksum}" if have and f"{have}-{checksum}" in deltas else (
            checksum if checksum in deltas else None)
        if name is None or local == checksum:
            return False
        try:
            return self._pull_delta(ref, name, have, checksum, deltas[name])
        except UnsupportedDeltaError:
            return False  # objects one by one instead; whatever the delta already wrote is kept

    def _pull_delta(self, ref: str, name: str, have: str | None, checksum: str, digest: bytes) -> bool:
        source = have if "-" in name else None
        relpath = delta_relpath(source, checksum)
        superblock = self.fetcher.get(f"{relpath}/superblock", limit=MAX_METADATA_SIZE)
        assert superblock is not None
        if hashlib.sha256(superblock).digest() != digest:
            raise CorruptionError(f"static delta {name}: superblock does not match the summary")
        parsed = parse_superblock(superblock)
        if parsed.target != checksum or hashlib.sha256(parsed.commit).hexdigest() != checksum:
            raise CorruptionError(f"static delta {name} does not lead to commit {checksum}")
        commit = self._fetch_commit(ref, checksum, data=parsed.commit)
        with self.repo.lock():
            for index, part in enumerate(parsed.parts):
                if all(self.repo.has_object(checksum, objtype) for objtype, checksum in part.objects):
                    continue
                data = self.fetcher.get(f"{relpath}/{index}", limit=part.size)
                assert data is not None
                if hashlib.sha256(data).digest() != part.checksum:
                    raise CorruptionError(f"static delta {name}: part {index} is corrupt")
                self.fetched += apply_part(self.repo, data, part)
                self.fetched_delta_parts += 1
            self.repo.sync()
        if not self.opts.commit_metadata_only:
            self._fetch_tree(commit)  # fills in anything the delta did not carry (normally nothing)
        with self.repo.lock():
            self.repo.clear_partial(checksum)
        return True

    def _fetch_commit(self, ref: str | None, checksum: str, data: bytes | None = None) -> Commit:
        detached = self.fetcher.get(O.object_relpath(checksum, ObjectType.COMMITMETA, False), optional=True,
                                    limit=MAX_METADATA_SIZE)
        if data is None:
            if self.repo.has_object(checksum, ObjectType.COMMIT) and not self.repo.is_partial(checksum):
                data = self.repo.read_metadata(checksum, ObjectType.COMMIT)
            else:
                data = self._get_metadata(checksum, ObjectType.COMMIT)
        if self.remote.sign_verify:
            sign.verify(data, detached, list(self.remote.keys), f"commit {checksum}")
        if self.remote.gpg_verify:
            gpg.verify(data, detached, self.remote.gpg_keyring, f"commit {checksum}")
        commit = _parsed(Commit.parse, data, checksum, ObjectType.COMMIT)
        _parsed(O.check_timestamp, commit.timestamp, checksum, ObjectType.COMMIT)
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
        with ThreadPoolExecutor(max_workers=_WORKERS) as pool, self.repo.lock():
            self._store_metadata(pool, [(commit.root_meta, ObjectType.DIRMETA)])
            level = [commit.root_tree]
            seen: set[str] = set()
            while level:
                trees = list(pool.map(self._tree, level))
                files: list[str] = []
                metas: list[tuple[str, ObjectType]] = []
                next_level: list[str] = []
                for tree in trees:
                    files += [c for c in tree.files.values() if not self.repo.has_object(c, ObjectType.FILE)]
                    for sub_tree, sub_meta in tree.dirs.values():
                        metas.append((sub_meta, ObjectType.DIRMETA))
                        if sub_tree not in seen:
                            seen.add(sub_tree)
                            next_level.append(sub_tree)
                self._store_metadata(pool, metas)
                self._fetch_contents(pool, sorted(set(files)))
                level = next_level

    def _tree(self, checksum: str) -> DirTree:
        if self.repo.has_object(checksum, ObjectType.DIRTREE):
            return self.repo.load_dirtree(checksum)
        data = self._get_metadata(checksum, ObjectType.DIRTREE)
        tree = _parsed(DirTree.parse, data, checksum, ObjectType.DIRTREE)
        self.repo.write_metadata(ObjectType.DIRTREE, data, expected=checksum)
        return tree

    def _store_metadata(self, pool: ThreadPoolExecutor, wanted: list[tuple[str, ObjectType]]) -> None:
        missing = sorted({w for w in wanted if not self.repo.has_object(*w)})

        def fetch(item: tuple[str, ObjectType]) -> None:
            data = self._get_metadata(*item)
            _parsed(O.DirMeta.parse, data, *item)
            self.repo.write_metadata(item[1], data, expected=item[0])
        list(pool.map(fetch, missing))

    def _fetch_content(self, checksum: str) -> None:
        _received, written = store_content_object(self.repo, self.fetcher, checksum,
                                                         trusted=self.opts.trusted)
        self._count(content=1, written=written)

    def _fetch_contents(self, pool: ThreadPoolExecutor, checksums: list[str]) -> None:
        """Many objects go to worker processes (the GIL would cap threads at one core); few to threads."""
        if len(checksums) < _PROCESS_THRESHOLD:
            list(pool.map(self._fetch_content, checksums))
            return
        if self.processes is None:
            self.processes = ProcessPoolExecutor(max_workers=_PROCESSES, initializer=_init_worker,
                                                 initargs=(str(self.repo.path), self.fetcher.base_url,
                                                           self.fetcher.timeout, self.opts.trusted))
        batches = [checksums[i:i + _BATCH] for i in range(0, len(checksums), _BATCH)]
        for count, size, written in self.processes.map(_fetch_batch, batches):
            with self.count_lock:
                self.fetcher.bytes += size
            self._count(content=count, written=written)

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


def store_content_object(repo: Repo, fetcher: Fetcher, checksum: str, *,
                         trusted: bool = False) -> tuple[int, int]:
    """Fetch one .filez, check it against its name, store it; returns the bytes received and the object's
    uncompressed size. Memory stays bounded whatever the object's size: the body spools to disk when large
    and is inflated in chunks."""
    with fetcher.get_spooled(O.object_relpath(checksum, ObjectType.FILE, True), repo.tmp_dir) as body:
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


_worker_state: tuple[Repo, Fetcher, ThreadPoolExecutor, bool] | None = None


def _init_worker(repo_path: str, base_url: str, timeout: float, trusted: bool) -> None:
    global _worker_state
    _worker_state = (Repo.open(repo_path), Fetcher(base_url, timeout), ThreadPoolExecutor(max_workers=_WORKERS // 2),
                     trusted)


def _fetch_batch(checksums: list[str]) -> tuple[int, int, int]:
    """Objects stored, bytes received, uncompressed bytes written."""
    assert _worker_state is not None
    repo, fetcher, pool, trusted = _worker_state
    try:
        sizes = list(pool.map(lambda c: store_content_object(repo, fetcher, c, trusted=trusted), checksums))
    except CorruptionError as exc:
        raise CorruptionError(str(exc)) from None
    except StrataError as exc:  # FetchError and friends do not pickle with their extra fields
        raise StrataError(str(exc)) from None
    return len(sizes), sum(received for received, _ in sizes), sum(written for _, written in sizes)


def terminal_progress(line: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r{line}\x1b[K")
        sys.stderr.flush()
