"""Ownership, special mode bits and file capabilities applied after %pre (spec E.5 step 12).

Package commits store every file as root-owned; the real owners may be users that only a %pre script
creates, so they are applied to the assembled tree once those scripts ran."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

from strata import fsroot
from strata.errors import StrataError
from strata.packages.importer import translate_path

_SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX


class OwnedFile(Protocol):
    @property
    def path(self) -> str: ...

    @property
    def mode(self) -> int: ...

    @property
    def user(self) -> str: ...

    @property
    def group(self) -> str: ...

    @property
    def caps(self) -> bytes | None: ...  # raw security.capability value


class HeaderWithFiles(Protocol):
    @property
    def files(self) -> Sequence[OwnedFile]: ...


def read_ids(root: Path, name: str) -> dict[str, int]:
    """name -> id from usr/etc/NAME and usr/lib/NAME (passwd or group) of the tree."""
    ids: dict[str, int] = {}
    for relpath in (f"usr/lib/{name}", f"usr/etc/{name}"):
        data = fsroot.read_in_root(root, relpath, 16 * 1024 * 1024)  # never the host's own file
        if data is not None:
            for line in data.decode("utf-8", "replace").splitlines():
                fields = line.split(":")
                if len(fields) > 2 and fields[2].isdigit():
                    ids[fields[0]] = int(fields[2])
    return ids


def needs_fixup(entry: OwnedFile) -> bool:
    return (entry.user not in ("", "root") or entry.group not in ("", "root")
            or bool(entry.mode & _SPECIAL_BITS) or bool(entry.caps))


def fix_ownership(root: Path, headers: Iterable[HeaderWithFiles]) -> int:
    """Apply owners, setuid/setgid/sticky bits and capabilities; returns how many paths changed."""
    users = read_ids(root, "passwd")
    groups = read_ids(root, "group")
    changed = 0
    for header in headers:
        for entry in header.files:
            if not needs_fixup(entry):
                continue
            translated = translate_path(entry.path, entry.mode)
            if translated.stored is None or not translated.stored.startswith(("usr/", "bin/", "sbin/", "lib")):
                continue
            parent_rel, _, name = translated.stored.rpartition("/")
            parent = fsroot.real_path_in_root(root, parent_rel)  # a symlinked parent never leaves the tree
            if parent is None or not parent.is_dir():
                continue
            target = parent / name
            if not (target.exists() or target.is_symlink()):
                continue
            _apply(target, entry, users, groups)
            changed += 1
    return changed


def _apply(target: Path, entry: OwnedFile, users: dict[str, int], groups: dict[str, int]) -> None:
    uid = _lookup(users, entry.user, "user", "passwd")
    gid = _lookup(groups, entry.group, "group", "group")
    st = target.lstat()
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
        _break_hardlink(target)
    os.chown(target, uid, gid, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(target, stat.S_IMODE(entry.mode))
        if entry.caps:
            os.setxattr(target, "security.capability", entry.caps)


def _lookup(ids: dict[str, int], name: str, kind: str, file_name: str) -> int:
    if name in ("", "root"):
        return 0
    if name not in ids:
        raise StrataError(f"Could not find {kind} '{name}' in {file_name} file")
    return ids[name]


def _break_hardlink(path: Path) -> None:
    tmp = path.with_name(f".{path.name}.strata-copy")
    shutil.copy2(path, tmp)
    os.replace(tmp, path)
