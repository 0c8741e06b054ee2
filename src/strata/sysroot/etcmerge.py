"""The three-way /etc merge (spec §23): the admin's changes to the old defaults, applied to the new /etc."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

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
    _diff_dir(orig, modified, "", changes)
    return changes


def _diff_dir(orig: Path, modified: Path, rel: str, changes: EtcChanges) -> None:
    orig_names = set(os.listdir(orig)) if orig.is_dir() and not orig.is_symlink() else set()
    mod_names = set(os.listdir(modified))
    for name in sorted(orig_names - mod_names):
        changes.removed.append(f"{rel}{name}")
    for name in sorted(mod_names):
        path = f"{rel}{name}"
        mod_path = modified / name
        orig_path = orig / name
        if name not in orig_names:
            _add_recursively(mod_path, path, changes)
            continue
        both_dirs = (orig_path.is_dir() and not orig_path.is_symlink()
                     and mod_path.is_dir() and not mod_path.is_symlink())
        if both_dirs:
            if _identity(orig_path) != _identity(mod_path):
                changes.modified.append(path)
            _diff_dir(orig_path, mod_path, path + "/", changes)
        elif _identity(orig_path) != _identity(mod_path):
            changes.modified.append(path)


def _add_recursively(path: Path, rel: str, changes: EtcChanges) -> None:
    changes.added.append(rel)
    if path.is_dir() and not path.is_symlink():
        for name in sorted(os.listdir(path)):
            _add_recursively(path / name, f"{rel}/{name}", changes)


def apply_changes(changes: EtcChanges, modified: Path, new: Path) -> None:
    """Removed paths go, modified and added ones are copied from the old /etc over the new one."""
    for rel in changes.removed:
        _remove(new / rel)
    for rel in changes.modified + changes.added:
        _copy_entry(modified, new, rel)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.is_symlink() or path.exists():
        path.unlink()


def _copy_entry(modified: Path, new: Path, rel: str) -> None:
    source = modified / rel
    target = new / rel
    _ensure_parents(modified, new, rel)
    st = source.lstat()
    if stat.S_ISDIR(st.st_mode):
        if target.exists() and not target.is_dir():
            _remove(target)
        target.mkdir(exist_ok=True)
        _copy_metadata(source, target, st)
        return
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        return  # devices and fifos are not carried over
    if target.is_dir() and not target.is_symlink():
        if stat.S_ISREG(st.st_mode):
            raise StrataError(f"/etc merge: /etc/{rel} is modified locally but is a directory in the new tree")
        shutil.rmtree(target)
    tmp = target.with_name(f".{target.name}.etcmerge")
    _remove(tmp)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(source), tmp)
    else:
        shutil.copyfile(source, tmp)
    _copy_metadata(source, tmp, st)
    os.replace(tmp, target)


def _copy_metadata(source: Path, target: Path, st: os.stat_result) -> None:
    os.chown(target, st.st_uid, st.st_gid, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(target, stat.S_IMODE(st.st_mode))
    apply_xattrs(target, read_xattrs(source))


def _ensure_parents(modified: Path, new: Path, rel: str) -> None:
    parts = Path(rel).parts[:-1]
    for index in range(len(parts)):
        sub = Path(*parts[:index + 1])
        target = new / sub
        if not target.exists():
            target.mkdir()
            _copy_metadata(modified / sub, target, (modified / sub).lstat())


def merge_etc(orig: Path, modified: Path, new: Path) -> EtcChanges:
    changes = compute_changes(orig, modified)
    apply_changes(changes, modified, new)
    return changes
