"""Reading a repository's metadata ahead of a walk over its history.

A history walk reads commit and dirtree objects one after the other, each read waiting for the disk when the
page cache is cold: the walk cannot know the next object before it has parsed the current one. Asking the
kernel for every metadata file up front (posix_fadvise WILLNEED from a few threads) keeps several reads in
flight, so the walk mostly finds its objects in memory. Nothing is read into Python: the page cache holds the
data, and the kernel may drop it again under memory pressure."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from strata.image.repo import Repo

_THREADS = 8
_EXTENSIONS = (".commit", ".dirtree")


@contextmanager
def metadata_read_ahead(repo: Repo) -> Iterator[None]:
    """While the block runs, background threads ask the kernel to read the repository's commit and dirtree
    objects; they stop when the block ends."""
    if not hasattr(os, "posix_fadvise"):
        yield
        return
    stop = threading.Event()
    worker = threading.Thread(target=_advise_all, args=(str(repo.path / "objects"), stop), daemon=True)
    worker.start()
    try:
        yield
    finally:
        stop.set()
        worker.join()


def _advise_all(objects_dir: str, stop: threading.Event) -> None:
    with ThreadPoolExecutor(_THREADS) as pool:
        for prefix in _prefix_dirs(objects_dir):
            if stop.is_set():
                return
            paths = _metadata_files(prefix)
            if paths:
                pool.submit(_advise, paths, stop)


def _prefix_dirs(objects_dir: str) -> list[str]:
    try:
        with os.scandir(objects_dir) as entries:
            return [entry.path for entry in entries if len(entry.name) == 2]
    except OSError:
        return []


def _metadata_files(prefix: str) -> list[str]:
    try:
        with os.scandir(prefix) as entries:
            return [entry.path for entry in entries if entry.name.endswith(_EXTENSIONS)]
    except OSError:
        return []


def _advise(paths: list[str], stop: threading.Event) -> None:
    for path in paths:
        if stop.is_set():
            return
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue  # gone already, or not a regular file: the walk reports what matters
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(fd)
