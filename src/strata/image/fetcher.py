"""HTTP(S) GETs for pulls, on libcurl (pycurl), the library ostree itself fetches with.

libcurl brings TLS with a chosen CA and client certificates, proxies, basic auth in the URL, HTTP/2 and one
kept-alive connection per handle; a CurlMulti runs many transfers from one thread without a Python thread
per connection. What libcurl does not decide is here: which base URL an object comes from (`contenturl`,
`mirrorlist=`), size caps (one byte over ends the transfer), bodies spooled to disk when large, and retries
of transient failures (network errors, 5xx, 408), each with the words ostree uses."""

from __future__ import annotations

import io
import tempfile
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

import pycurl

from strata.errors import CorruptionError, StrataError

_SPOOL_IN_MEMORY = 8 << 20
_RETRY_STATUSES = frozenset({408, 429})
_MIRRORLIST_LIMIT = 1 << 20
# libcurl failures another try cannot mend: bad URL or protocol, TLS certificates refused
_FINAL_ERRORS = frozenset({pycurl.E_UNSUPPORTED_PROTOCOL, pycurl.E_URL_MALFORMAT, pycurl.E_SSL_CERTPROBLEM,
                           pycurl.E_SSL_CACERT, pycurl.E_PEER_FAILED_VERIFICATION, pycurl.E_SSL_CACERT_BADFILE})


class FetchError(StrataError):
    def __init__(self, url: str, status: int | None, message: str) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


@dataclass(frozen=True)
class FetchSettings:
    """A remote's transport options (ostree's remote keys of the same names)."""

    timeout: float = 30.0
    retries: int = 3
    tls_ca_path: str | None = None
    tls_client_cert_path: str | None = None
    tls_client_key_path: str | None = None
    tls_permissive: bool = False
    proxy: str | None = None
    http2: bool = True
    headers: tuple[tuple[str, str], ...] = ()
    user_agent: str = "libostree/2022.7 strata"
    parallel: int = 8  # transfers one fetch_many keeps going


@dataclass
class Request:
    relpath: str
    optional: bool = False  # a 404 gives a None body instead of an error
    limit: int | None = None
    spool_dir: Path | None = None  # large bodies go to an unnamed file there instead of memory
    tag: object = None  # the caller's, handed back with the body
    attempts: int = field(default=0, repr=False)
    base_index: int = field(default=0, repr=False)  # which mirror the last attempt went to


Body = BinaryIO
OnDone = Callable[[Request, Body | None], Iterable[Request] | None]


class _Retry(Exception):
    def __init__(self, error: FetchError) -> None:
        super().__init__(str(error))
        self.error = error


class _Sink:
    """Where a body goes while it arrives; refuses to grow past the limit."""

    def __init__(self, url: str, limit: int | None, spool_dir: Path | None) -> None:
        self.url = url
        self.limit = limit
        self.size = 0
        self.over_limit = False
        self.file = _body_buffer(spool_dir)

    def write(self, chunk: bytes) -> int:
        self.size += len(chunk)
        if self.limit is not None and self.size > self.limit:
            self.over_limit = True
            return 0  # libcurl ends the transfer
        self.file.write(chunk)
        return len(chunk)


def _body_buffer(spool_dir: Path | None) -> BinaryIO:
    """In memory, or in an unnamed file in spool_dir beyond a few MiB (the caller closes it)."""
    if spool_dir is None:
        return io.BytesIO()
    return cast(BinaryIO, tempfile.SpooledTemporaryFile(_SPOOL_IN_MEMORY, dir=str(spool_dir)))


@dataclass(frozen=True)
class FetcherRecipe:
    """What another process needs to fetch as this fetcher does (mirror lists already read)."""

    meta_bases: tuple[str, ...]
    content_bases: tuple[str, ...]
    settings: FetchSettings


class Fetcher:
    """GETs of paths below a remote's URL; `bytes` counts what was received."""

    def __init__(self, url: str, settings: FetchSettings | None = None, *, content_url: str | None = None) -> None:
        self.settings = settings or FetchSettings()
        meta_bases = self._bases(url)
        self._setup(meta_bases, self._bases(content_url) if content_url else meta_bases)

    @classmethod
    def from_recipe(cls, recipe: FetcherRecipe) -> Fetcher:
        fetcher = cls.__new__(cls)
        fetcher.settings = recipe.settings
        fetcher._setup(list(recipe.meta_bases), list(recipe.content_bases))
        return fetcher

    def recipe(self) -> FetcherRecipe:
        return FetcherRecipe(tuple(self.meta_bases), tuple(self.content_bases), self.settings)

    def _setup(self, meta_bases: list[str], content_bases: list[str]) -> None:
        self.meta_bases = meta_bases
        self.content_bases = content_bases
        self.base_url = self.meta_bases[0]
        self.first_base = 0  # the mirror to try first: moves on past one that failed
        self.timeout = self.settings.timeout
        self.bytes = 0
        self.lock = threading.Lock()
        self.local = threading.local()

    # ------------------------------------------------------------------ one at a time

    def get(self, relpath: str, *, optional: bool = False, limit: int | None = None) -> bytes | None:
        body = self.get_body(Request(relpath, optional, limit))
        return None if body is None else body.read()

    def get_spooled(self, relpath: str, spool_dir: Path) -> BinaryIO:
        body = self.get_body(Request(relpath, spool_dir=spool_dir))
        assert body is not None
        return body

    def get_body(self, request: Request) -> Body | None:
        handle = getattr(self.local, "handle", None)
        if handle is None:
            handle = self.local.handle = self._new_handle()
        while True:
            sink = self._prepare(handle, request)
            error: tuple[int, str] | None = None
            try:
                handle.perform()
            except pycurl.error as exc:
                code, message = cast(tuple[int, str], exc.args)
                error = (code, message)
            try:
                return self._outcome(handle, request, sink, error)
            except _Retry as retry:
                self._count_attempt(request, retry.error)

    # ------------------------------------------------------------------ many at once

    def fetch_many(self, requests: Iterable[Request], on_done: OnDone) -> None:
        """Run requests several at a time; on_done gets each body as it completes (in this thread) and may
        return more requests to run."""
        pending = deque(requests)
        multi = pycurl.CurlMulti()
        free = [self._new_handle() for _ in range(max(1, self.settings.parallel))]
        active: dict[pycurl.Curl, tuple[Request, _Sink]] = {}
        try:
            while pending or active:
                while pending and free:
                    handle = free.pop()
                    request = pending.popleft()
                    active[handle] = (request, self._prepare(handle, request))
                    multi.add_handle(handle)
                self._drive(multi)
                for handle, error in self._finished(multi):
                    multi.remove_handle(handle)
                    request, sink = active.pop(handle)
                    free.append(handle)
                    try:
                        body = self._outcome(handle, request, sink, error)
                    except _Retry as retry:
                        self._count_attempt(request, retry.error)
                        pending.append(request)
                        continue
                    more = on_done(request, body)
                    if more:
                        pending.extend(more)
                if active:
                    multi.select(1.0)
        finally:
            for handle in active:
                multi.remove_handle(handle)
            for handle in [*active, *free]:
                handle.close()
            multi.close()

    @staticmethod
    def _drive(multi: pycurl.CurlMulti) -> None:
        while multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
            pass

    @staticmethod
    def _finished(multi: pycurl.CurlMulti) -> list[tuple[pycurl.Curl, tuple[int, str] | None]]:
        done: list[tuple[pycurl.Curl, tuple[int, str] | None]] = []
        while True:
            queued, succeeded, failed = multi.info_read()
            done += [(handle, None) for handle in succeeded]
            done += [(handle, (code, message)) for handle, code, message in failed]
            if not queued:
                return done

    # ------------------------------------------------------------------ the parts both share

    def _bases(self, url: str) -> list[str]:
        if url.startswith("mirrorlist="):
            return self._mirrors(url[len("mirrorlist="):])
        self._check_scheme(url)
        return [url.rstrip("/")]

    def _mirrors(self, list_url: str) -> list[str]:
        text = Fetcher(list_url, self.settings).get("", limit=_MIRRORLIST_LIMIT) or b""
        mirrors = [line.strip() for line in text.decode(errors="replace").splitlines()
                   if line.strip() and not line.lstrip().startswith("#")]
        usable = [m.rstrip("/") for m in mirrors if urllib.parse.urlsplit(m).scheme in ("http", "https", "file")]
        if not usable:
            raise StrataError(f"No valid mirrors were found in mirrorlist '{list_url}'")
        return usable

    @staticmethod
    def _check_scheme(url: str) -> None:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https", "file"):
            raise StrataError(f"Invalid URI scheme in {url}")

    def _url(self, request: Request) -> str:
        path = request.relpath
        # deltas (superblocks too) and their indexes come from the content URL, as in ostree
        is_content = (path.startswith("objects/") and not path.endswith(".commitmeta")) or path.startswith(
            ("deltas/", "delta-indexes/"))
        bases = self.content_bases if is_content else self.meta_bases
        start = self.first_base if request.attempts == 0 else request.base_index + 1
        request.base_index = start % len(bases)
        base = bases[request.base_index]
        return f"{base}/{path}" if path else base

    def _new_handle(self) -> pycurl.Curl:
        s = self.settings
        handle = pycurl.Curl()
        handle.setopt(pycurl.NOSIGNAL, 1)
        handle.setopt(pycurl.FOLLOWLOCATION, 1)
        handle.setopt(pycurl.MAXREDIRS, 8)
        handle.setopt(pycurl.CONNECTTIMEOUT_MS, int(s.timeout * 1000))
        handle.setopt(pycurl.LOW_SPEED_LIMIT, 1)
        handle.setopt(pycurl.LOW_SPEED_TIME, max(1, int(s.timeout)))
        handle.setopt(pycurl.USERAGENT, s.user_agent)
        handle.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS | pycurl.PROTO_FILE)
        handle.setopt(pycurl.REDIR_PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        handle.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_2TLS if s.http2 else pycurl.CURL_HTTP_VERSION_1_1)
        if s.headers:
            handle.setopt(pycurl.HTTPHEADER, [f"{key}: {value}" for key, value in s.headers])
        if s.tls_ca_path:
            handle.setopt(pycurl.CAINFO, s.tls_ca_path)
        if s.tls_client_cert_path:
            handle.setopt(pycurl.SSLCERT, s.tls_client_cert_path)
        if s.tls_client_key_path:
            handle.setopt(pycurl.SSLKEY, s.tls_client_key_path)
        if s.tls_permissive:
            handle.setopt(pycurl.SSL_VERIFYPEER, 0)
            handle.setopt(pycurl.SSL_VERIFYHOST, 0)
        if s.proxy is not None:
            handle.setopt(pycurl.PROXY, s.proxy)
        return handle

    def _prepare(self, handle: pycurl.Curl, request: Request) -> _Sink:
        url = self._url(request)
        sink = _Sink(url, request.limit, request.spool_dir)
        handle.setopt(pycurl.URL, url)
        handle.setopt(pycurl.WRITEFUNCTION, sink.write)
        handle.setopt(pycurl.MAXFILESIZE_LARGE, 0 if request.limit is None else request.limit)  # 0: no cap
        return sink

    def _outcome(self, handle: pycurl.Curl, request: Request, sink: _Sink,
                 error: tuple[int, str] | None) -> Body | None:
        """The body, None for an optional 404, or an error (raised; _Retry when worth another try)."""
        url = sink.url
        if sink.over_limit or (error is not None and error[0] == pycurl.E_FILESIZE_EXCEEDED):
            sink.file.close()
            raise CorruptionError(f"URI {url} exceeded maximum size of {request.limit} bytes")
        status = int(handle.getinfo(pycurl.RESPONSE_CODE) or 0)
        with self.lock:
            self.bytes += sink.size
        if error is not None and error[0] == pycurl.E_FILE_COULDNT_READ_FILE:
            error, status = None, 404  # a file:// URL that names nothing
        if error is not None:
            sink.file.close()
            failure = FetchError(url, None, f"While fetching {url}: [{error[0]}] {error[1]}")
            if error[0] == pycurl.E_PARTIAL_FILE:
                failure = FetchError(url, None, f"While fetching {url}: Download incomplete: {error[1]}")
            elif error[0] == pycurl.E_OPERATION_TIMEDOUT:
                failure = FetchError(url, None, f"While fetching {url}: no answer within {self.timeout:g} s")
            if error[0] in _FINAL_ERRORS:
                raise failure
            raise _Retry(failure)
        local = url.startswith("file:")  # libcurl gives no status for file: URLs, but 404 is set above
        if (not local and status != 200) or (local and status == 404):
            sink.file.close()
            if status == 404 and request.optional:
                return None
            failure = FetchError(url, status, f"Server returned HTTP {status} for {url}")
            if status >= 500 or status in _RETRY_STATUSES:
                raise _Retry(failure)
            raise failure
        sink.file.seek(0)
        return sink.file

    def _count_attempt(self, request: Request, error: FetchError) -> None:
        """Another try of request, or error when it had its tries (mirrors are tried in turn)."""
        request.attempts += 1
        mirrors = max(len(self.meta_bases), len(self.content_bases))
        if request.attempts >= max(self.settings.retries, 1) * mirrors:
            raise error
        if mirrors > 1:
            self.first_base = request.base_index + 1
        if request.attempts % mirrors == 0:  # every mirror failed once more: give the network a moment
            time.sleep(min(0.1 * request.attempts, 1.0))
