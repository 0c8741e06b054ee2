"""RPM files a client passes as file descriptors (rpm-ostree's `install-local-packages` and
`override-replace-local-packages`, type `ah`): each copied into the transaction's own directory before the
worker sees it, so the caller cannot change the file underneath the transaction. The content is untrusted:
only regular files, size-limited; the engine verifies the RPM itself."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from gi.repository import Gio

from strata.errors import InvalidInputError

MAX_PACKAGE_BYTES = 2 * 1024**3
CHUNK = 1 << 20


def receive_packages(fd_list: Gio.UnixFDList | None, indices: list[int], directory: Path, prefix: str) -> list[str]:
    """Copies of the passed files, named PREFIX-N.rpm in DIRECTORY; InvalidInputError for a bad descriptor."""
    if fd_list is None:
        raise InvalidInputError("local packages were requested but no file descriptors were passed")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths = []
    for number, index in enumerate(indices):
        if not 0 <= index < fd_list.get_length():
            raise InvalidInputError(f"file descriptor index {index} is not in the message")
        fd = fd_list.get(index)  # our own duplicate
        try:
            paths.append(str(_copy(fd, directory / f"{prefix}-{number}.rpm")))
        finally:
            os.close(fd)
    return paths


def _copy(fd: int, target: Path) -> Path:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise InvalidInputError("a passed package is not a regular file")
    if info.st_size > MAX_PACKAGE_BYTES:
        raise InvalidInputError(f"a passed package is larger than {MAX_PACKAGE_BYTES} bytes")
    offset = 0
    with open(target, "xb") as out:
        while chunk := os.pread(fd, CHUNK, offset):
            offset += len(chunk)
            if offset > MAX_PACKAGE_BYTES:
                raise InvalidInputError(f"a passed package is larger than {MAX_PACKAGE_BYTES} bytes")
            out.write(chunk)
    return target
