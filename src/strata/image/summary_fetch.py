"""A remote's summary as a pull takes it: summary.sig first, the cached summary when the signature has not
changed (CACHE/summaries/REMOTE and REMOTE.sig, as ostree keeps them), the signatures checked (ostree's sign
engines with sign-verify-summary, GPG with gpg-verify-summary), and the cache written only with a pair that
verified, so a summary and a signature that do not belong together are never kept."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from strata.errors import StrataError
from strata.image import gpg, sign
from strata.image.fsutil import TooLargeError, atomic_write, read_capped

if TYPE_CHECKING:
    from strata.image.fetcher import Fetcher
    from strata.image.remote import Remote

MAX_SUMMARY_SIZE = 10 << 20  # as pull's MAX_METADATA_SIZE
TEST_ERROR_ENV = "OSTREE_REPO_TEST_ERROR"  # ostree's fault injection for its test suite


def fetch_summary(fetcher: Fetcher, remote: Remote, cache_dir: Path | None) -> tuple[bytes | None, bytes | None]:
    """(summary, summary.sig) of the remote, verified; either is None when the server has none."""
    signature = fetcher.get("summary.sig", optional=True, limit=MAX_SUMMARY_SIZE)
    cached = _cached_summary(cache_dir, remote.name, signature)
    if cached is not None:
        try:
            verify_summary(remote, cached, signature)
            return cached, signature
        except StrataError:
            if "invalid-cache" in os.environ.get(TEST_ERROR_ENV, "").split(","):
                raise StrataError(f"Remote {remote.name} cached summary invalid and "
                                  "OSTREE_REPO_TEST_ERROR_INVALID_CACHE specified") from None
    summary = fetcher.get("summary", optional=True, limit=MAX_SUMMARY_SIZE)
    if summary is None:
        if remote.sign_verify_summary or remote.gpg_verify_summary:
            raise StrataError("Signature verification enabled, but no summary found (check that the configured "
                              "URL in remote config is correct)")
        return None, signature
    verify_summary(remote, summary, signature)
    if cache_dir is not None and signature is not None:
        _store(cache_dir, remote.name, summary, signature)
    return summary, signature


def verify_summary(remote: Remote, summary: bytes, signature: bytes | None) -> None:
    if remote.gpg_verify_summary:
        if signature is None:
            raise StrataError("GPG verification enabled, but no summary.sig found (use gpg-verify-summary=false in "
                              "remote config to disable)")
        gpg.verify(summary, signature, remote.gpg_keyring, "summary")
    if remote.sign_verify_summary:
        if signature is None:
            raise StrataError("Signatures verification enabled, but no summary.sig found (use "
                              "sign-verify-summary=false in remote config to disable)")
        sign.verify(summary, signature, list(remote.summary_verifiers), "summary")


def _cached_summary(cache_dir: Path | None, name: str, signature: bytes | None) -> bytes | None:
    """The cached summary when the cached signature is the one the server has now."""
    if cache_dir is None or signature is None:
        return None
    folder = cache_dir / "summaries"
    try:
        if read_capped(folder / f"{name}.sig", MAX_SUMMARY_SIZE) != signature:
            return None
        return read_capped(folder / name, MAX_SUMMARY_SIZE)
    except (OSError, TooLargeError):
        return None




def _store(cache_dir: Path, name: str, summary: bytes, signature: bytes) -> None:
    folder = cache_dir / "summaries"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / name, summary, fsync=False)
    atomic_write(folder / f"{name}.sig", signature, fsync=False)
