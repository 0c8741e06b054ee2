"""The three-way /etc merge (spec §23): the admin's changes to the old defaults, applied to the new /etc.

The new /etc comes from a tree, which is not trusted: a symlink in it is copied, removed or replaced, never
followed (so /etc/foo -> /var/tmp/victim cannot make the merge write or delete there). Walks are iterative,
so a directory chain of any depth is merged without recursion."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from strata import fsroot
from strata.errors import StrataError
from strata.image.fsutil import apply_xattrs, read_xattrs


@dataclass
class EtcChanges:
    modified: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return f"{len(self.modified)} modified, {len(self.removed)} removed, {len(self.added)} added"


def _identity(path: Path) -> tuple[object, ...]:
    """What makes two paths equal for the merge: type, content or target, owner and mode (not xattrs)."""
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        payload: object = os.readlink(path)
    elif stat.S_ISREG(st.st_mode):
        payload = _digest(path)
    else:
        payload = None
    return (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, payload)


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def compute_changes(orig: Path, modified: Path) -> EtcChanges:
    """Diff the old defaults (usr/etc) against the old /etc."""
    changes = EtcChanges()
    _require_dir(modified)
    todo = [""]
    while todo:
        rel = todo.pop()
        todo += reversed(_diff_dir(orig / rel if rel else orig, modified / rel if rel else modified,
                                   f"{rel}/" if rel else "", changes))
    return changes


def _require_dir(path: Path) -> None:
    if not stat.S_ISDIR(path.lstat().st_mode):
        raise StrataError(f"/etc merge: {path} is not a directory")


def _real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except FileNotFoundError:
        return False


def _diff_dir(orig: Path, modified: Path, rel: str, changes: EtcChanges) -> list[str]:
    """Record the differences of one directory level; returns the subdirectories to compare next."""
    orig_names = set(os.listdir(orig)) if _real_dir(orig) else set()
    mod_names = set(os.listdir(modified))
    for name in sorted(orig_names - mod_names):
        changes.removed.append(f"{rel}{name}")
    deeper = []
    for name in sorted(mod_names):
        path = f"{rel}{name}"
        mod_path = modified / name
        orig_path = orig / name
        if name not in orig_names:
            _add_recursively(mod_path, path, changes)
            continue
        if _real_dir(orig_path) and _real_dir(mod_path):
            if _identity(orig_path) != _identity(mod_path):
                changes.modified.append(path)
            deeper.append(path)
        elif _identity(orig_path) != _identity(mod_path):
            changes.modified.append(path)
    return deeper


def _add_recursively(path: Path, rel: str, changes: EtcChanges) -> None:
    todo = [(path, rel)]
    while todo:
        current, current_rel = todo.pop()
        changes.added.append(current_rel)
        if _real_dir(current):
            todo += [(current / name, f"{current_rel}/{name}") for name in sorted(os.listdir(current), reverse=True)]


def apply_changes(changes: EtcChanges, modified: Path, new: Path) -> None:
    """Removed paths go, modified and added ones are copied from the old /etc over the new one."""
    _require_dir(new)
    for rel in changes.removed:
        if _parents_are_dirs(new, rel):
            _remove(new / rel)
    for rel in changes.modified + changes.added:
        _copy_entry(modified, new, rel)


def _parents_are_dirs(top: Path, rel: str) -> bool:
    parent = top
    for part in Path(rel).parts[:-1]:
        parent = parent / part
        if not _real_dir(parent):
            return False
    return True


def _remove(path: Path) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        fsroot.remove_tree(path)
    else:
        path.unlink()


def _copy_entry(modified: Path, new: Path, rel: str) -> None:
    source = modified / rel
    target = new / rel
    _ensure_parents(modified, new, rel)
    st = source.lstat()
    if stat.S_ISDIR(st.st_mode):
        if not _real_dir(target):
            _remove(target)
            target.mkdir()
        _copy_metadata(source, target, st)
        return
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        return  # devices and fifos are not carried over
    if _real_dir(target):
        if stat.S_ISREG(st.st_mode):
            raise StrataError(f"/etc merge: /etc/{rel} is modified locally but is a directory in the new tree")
        fsroot.remove_tree(target)
    tmp = target.with_name(f".{target.name}.etcmerge")
    _remove(tmp)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(source), tmp)
    else:
        _copy_file(source, tmp)
    _copy_metadata(source, tmp, st)
    os.replace(tmp, target)


def _copy_file(source: Path, dest: Path) -> None:
    """Copy a regular file without following a symlink at either end."""
    src_fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        dest_fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            while chunk := os.read(src_fd, 1 << 20):
                os.write(dest_fd, chunk)
        finally:
            os.close(dest_fd)
    finally:
        os.close(src_fd)


def _copy_metadata(source: Path, target: Path, st: os.stat_result) -> None:
    os.chown(target, st.st_uid, st.st_gid, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(target, stat.S_IMODE(st.st_mode))
    apply_xattrs(target, read_xattrs(source))


def _ensure_parents(modified: Path, new: Path, rel: str) -> None:
    """Every parent of rel in the new /etc becomes a real directory: where the new tree has a symlink or a
    file, the admin's directory (which holds the change) takes its place."""
    parts = Path(rel).parts[:-1]
    for index in range(len(parts)):
        sub = Path(*parts[:index + 1])
        target = new / sub
        if _real_dir(target):
            continue
        _remove(target)
        target.mkdir()
        _copy_metadata(modified / sub, target, (modified / sub).lstat())


def merge_etc(orig: Path, modified: Path, new: Path) -> EtcChanges:
    try:
        changes = compute_changes(orig, modified)
        apply_changes(changes, modified, new)
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            raise
        raise StrataError("/etc merge: a path in /etc is longer than PATH_MAX") from exc
    return changes
