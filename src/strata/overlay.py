"""Copy-up for package scripts: the tree is shown through a kernel overlay whose upper directory is folded
back into the tree afterwards, so that a script that modifies a file hardlinked into an object store
(`echo X >> /usr/lib/os-release`, `chmod 4777 /usr/bin/sed`) replaces it instead of writing into the
store (rofiles-fuse semantics, as rpm-ostree has them).

The overlay is mounted in a private mount namespace of the sandbox's own process (the `preexec` of the
bwrap child), so it never appears on the host and disappears with the sandbox, even after kill -9.
Folding moves the upper directory's entries over the tree by rename: modified files become new inodes
(which the commit then hashes: a stale device/inode cache entry cannot match them), whiteouts delete,
opaque directories replace."""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from strata import fsroot
from strata.errors import StrataError

_CLONE_NEWNS = 0x00020000
_MS_REC = 0x4000
_MS_PRIVATE = 1 << 18
_OVERLAY_XATTR = "trusted.overlay."
_OPAQUE = "trusted.overlay.opaque"
# Plain overlay semantics: no redirects (a renamed directory is copied), no metadata-only copy-up, no index;
# volatile (Linux 5.10) skips the sync of the whole upper filesystem at unmount: the fold and the commit
# that follow decide what is kept, and the upper dir is thrown away after a crash anyway.
_OPTIONS = "redirect_dir=off,metacopy=off,index=off,xino=off"
_VOLATILE = ",volatile"
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class Layer:
    lower: Path  # the tree
    upper: Path
    work: Path
    merged: Path  # where the sandbox's process mounts the overlay


def new_layer(lower: Path, scratch: Path) -> Layer:
    """Empty upper/work directories in scratch (which must be on lower's filesystem)."""
    layer = Layer(lower, scratch / "upper", scratch / "work", scratch / "merged")
    for path in (layer.upper, layer.work, layer.merged):
        path.mkdir()
    for path in (layer.lower, layer.upper, layer.work):
        if any(c in str(path) for c in ",:\\"):
            raise StrataError(f"cannot run scripts over {path}: overlay paths may not contain ',', ':' or '\\'")
    return layer


def enter(layer: Layer) -> Callable[[], None]:
    """A function for subprocess's preexec_fn: a private mount namespace with the overlay mounted."""
    options = f"lowerdir={layer.lower},upperdir={layer.upper},workdir={layer.work},{_OPTIONS}".encode()
    volatile = options + _VOLATILE.encode()
    merged = os.fsencode(layer.merged)

    def mount_overlay() -> None:
        if _libc.unshare(_CLONE_NEWNS) != 0:
            raise OSError(ctypes.get_errno(), "unshare")
        if _libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
            raise OSError(ctypes.get_errno(), "mount --make-rprivate /")
        if _libc.mount(b"overlay", merged, b"overlay", 0, volatile) != 0 and (
                ctypes.get_errno() != errno.EINVAL or _libc.mount(b"overlay", merged, b"overlay", 0, options) != 0):
            raise OSError(ctypes.get_errno(), "mount overlay")
    return mount_overlay


def fold(layer: Layer) -> list[str]:
    """Apply the upper directory to the tree; returns the changed paths (relative, sorted)."""
    changed: list[str] = []
    todo = [""]
    while todo:
        rel = todo.pop()
        with os.scandir(layer.upper / rel) as entries:
            listed = sorted(entries, key=lambda e: e.name)
        for entry in listed:
            sub = f"{rel}/{entry.name}" if rel else entry.name
            if _fold_entry(layer, entry, sub):
                todo.append(sub)
            else:
                changed.append(sub)
    return sorted(changed)


def _fold_entry(layer: Layer, entry: os.DirEntry[str], sub: str) -> bool:
    """Fold one upper entry; True when it is a directory merged with the tree's (descend into it)."""
    st = entry.stat(follow_symlinks=False)
    target = layer.lower / sub
    low = _lstat(target)
    if _is_whiteout(st):
        fsroot.remove_tree(target)
        return False
    if stat.S_ISDIR(st.st_mode) and low is not None and stat.S_ISDIR(low.st_mode) and not _opaque(entry.path):
        _copy_dir_metadata(entry.path, target, st)
        return True
    if low is not None and (stat.S_ISDIR(low.st_mode) or stat.S_ISDIR(st.st_mode)):
        fsroot.remove_tree(target)
    if stat.S_ISDIR(st.st_mode):
        _clean_subtree(Path(entry.path))
    else:
        _strip_overlay_xattrs(entry.path)
    os.replace(entry.path, target)
    return False


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _opaque(path: str) -> bool:
    try:
        return os.getxattr(path, _OPAQUE, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _overlay_xattrs(path: str) -> list[str]:
    return [n for n in os.listxattr(path, follow_symlinks=False) if n.startswith(_OVERLAY_XATTR)]


def _strip_overlay_xattrs(path: str) -> None:
    for name in _overlay_xattrs(path):
        os.removexattr(path, name, follow_symlinks=False)


def _clean_subtree(top: Path) -> None:
    """A directory about to be moved in whole: no overlay xattrs, no whiteouts left in it."""
    todo = [top]
    while todo:
        current = todo.pop()
        _strip_overlay_xattrs(str(current))
        with os.scandir(current) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                if _is_whiteout(st):
                    os.unlink(entry.path)
                elif stat.S_ISDIR(st.st_mode):
                    todo.append(Path(entry.path))
                else:
                    _strip_overlay_xattrs(entry.path)


def _copy_dir_metadata(source: str, target: Path, st: os.stat_result) -> None:
    """A directory the scripts changed in place (chmod, chown, xattrs): carry that over."""
    os.chown(target, st.st_uid, st.st_gid, follow_symlinks=False)
    os.chmod(target, stat.S_IMODE(st.st_mode))
    wanted = {n: os.getxattr(source, n, follow_symlinks=False)
              for n in os.listxattr(source, follow_symlinks=False) if not n.startswith(_OVERLAY_XATTR)}
    for name in os.listxattr(target, follow_symlinks=False):
        if name not in wanted and not name.startswith(_OVERLAY_XATTR):
            os.removexattr(target, name, follow_symlinks=False)
    for name, value in wanted.items():
        os.setxattr(target, name, value, follow_symlinks=False)
