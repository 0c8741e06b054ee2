"""The file-system pieces under the sandbox and the deployment reads: folding an overlay's upper directory
back into a tree (modified, deleted, replaced entries), resolving paths inside a tree (kernel openat2 and
the userspace resolver must agree), and removing trees of any depth."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from strata import fsroot, overlay
from strata.errors import StrataError


def _whiteout(path: Path) -> None:
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(0, 0))


def test_fold_replaces_deletes_and_never_writes_through_hardlinks(tmp_path: Path) -> None:
    store = tmp_path / "store-object"
    store.write_text("pristine\n")
    lower = tmp_path / "tree"
    (lower / "d").mkdir(parents=True)
    (lower / "gone").mkdir()
    (lower / "gone" / "file").write_text("old\n")
    (lower / "replaced").mkdir()
    (lower / "replaced" / "hidden").write_text("old\n")
    os.link(store, lower / "d" / "linked")
    (lower / "d" / "deleted").write_text("old\n")
    (tmp_path / "scratch").mkdir()
    layer = overlay.new_layer(lower, tmp_path / "scratch")
    upper = layer.upper
    (upper / "d").mkdir()
    os.chmod(upper / "d", 0o700)
    os.setxattr(upper / "d", "trusted.overlay.impure", b"y")
    (upper / "d" / "linked").write_text("pristine\nmodified\n")
    os.setxattr(upper / "d" / "linked", "trusted.overlay.origin", b"x")
    _whiteout(upper / "d" / "deleted")
    _whiteout(upper / "gone")
    (upper / "replaced").mkdir()
    os.setxattr(upper / "replaced", "trusted.overlay.opaque", b"y")
    (upper / "replaced" / "new").write_text("new\n")
    (upper / "link").symlink_to("/somewhere")

    changed = overlay.fold(layer)

    assert changed == ["d/deleted", "d/linked", "gone", "link", "replaced"]
    assert store.read_text() == "pristine\n" and store.stat().st_nlink == 1
    assert (lower / "d" / "linked").read_text() == "pristine\nmodified\n"
    assert stat.S_IMODE((lower / "d").stat().st_mode) == 0o700
    assert not (lower / "d" / "deleted").exists() and not (lower / "gone").exists()
    assert sorted(p.name for p in (lower / "replaced").iterdir()) == ["new"]
    assert os.readlink(lower / "link") == "/somewhere"
    for path in (lower / "d", lower / "d" / "linked", lower / "replaced"):
        assert not [n for n in os.listxattr(path) if n.startswith("trusted.overlay.")]


@pytest.fixture(params=["openat2", "userspace"])
def resolver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(fsroot, "_openat2_works", None if request.param == "openat2" else False)
    yield str(request.param)


def test_paths_resolve_inside_the_tree(tmp_path: Path, resolver: str) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret").write_text("host secret\n")
    root = tmp_path / "root"
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/os-release").write_text("ID=tree\n")
    (root / "etc").mkdir()
    (root / "etc/os-release").symlink_to("../usr/lib/os-release")
    (root / "etc/absolute").symlink_to("/usr/lib/os-release")
    (root / "etc/escape").symlink_to(str(host / "secret"))
    (root / "etc/dotdot").symlink_to("../../../../../../.." + str(host / "secret"))
    (root / "etc/loop").symlink_to("loop")
    assert fsroot.read_in_root(root, "etc/os-release", 100) == b"ID=tree\n"
    assert fsroot.read_in_root(root, "etc/absolute", 100) == b"ID=tree\n"
    assert fsroot.read_in_root(root, "etc/escape", 100) is None
    assert fsroot.read_in_root(root, "etc/dotdot", 100) is None
    assert fsroot.real_path_in_root(root, "/etc/absolute") == (root / "usr/lib/os-release").resolve()
    with pytest.raises(StrataError, match="larger than 4 bytes"):
        fsroot.read_in_root(root, "usr/lib/os-release", 4)
    with pytest.raises(StrataError):
        fsroot.read_in_root(root, "etc/loop", 100)


def test_lstat_in_tree_refuses_symlinked_parents(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr").mkdir(parents=True)
    (root / "usr/etc").symlink_to(str(tmp_path))
    assert fsroot.lstat_in_tree(root, "usr/missing") is None
    assert stat.S_ISLNK(fsroot.lstat_in_tree(root, "usr/etc").st_mode)  # type: ignore[union-attr]
    with pytest.raises(StrataError, match="/usr/etc in the tree is not a directory"):
        fsroot.lstat_in_tree(root, "usr/etc/passwd")


def test_remove_tree_of_any_depth_without_following_symlinks(tmp_path: Path) -> None:
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "file").write_text("kept\n")
    top = tmp_path / "chain"
    top.mkdir()
    fd = os.open(top, os.O_RDONLY)
    for _ in range(2500):
        os.mkdir("d", dir_fd=fd)
        os.symlink(str(keep), "link", dir_fd=fd)
        child = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)
    fsroot.remove_tree(top)
    assert not top.exists()
    assert (keep / "file").read_text() == "kept\n"
