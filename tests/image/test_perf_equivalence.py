"""The fast paths of commit, checkout and fsck give what the real ostree gives on the same tree: the same
dirtree bytes, the same hardlink checkouts (modes, owners, xattrs, which files share the store's inodes), a
devino recommit equal to a full one, and fsck verdicts."""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path

import pytest

from strata.image import gvariant
from strata.image.objects import DIRTREE_TYPE, DirTree, decode_dirtree_fast
from tests.conftest import run_ostree
from tests.image.helpers import describe_tree, init_both, strata

REF = "perf/test"


def _names(rng: random.Random, count: int) -> list[str]:
    alphabet = "abcXYZ019._-é€"
    lengths = [1, 3, 12, 60, 187, 188, 189, 221, 222, 250]
    return sorted({"".join(rng.choice(alphabet) for _ in range(rng.choice(lengths)))[:200] + str(i)
                   for i in range(count)})


def test_dirtree_codec_equals_generic_gvariant() -> None:
    rng = random.Random(15)
    for _ in range(300):
        names = _names(rng, rng.choice([0, 1, 3, 40, 400]))
        split = rng.randrange(len(names) + 1)
        tree = DirTree({n: os.urandom(32).hex() for n in names[:split]},
                       {n: (os.urandom(32).hex(), os.urandom(32).hex()) for n in names[split:]})
        files = [(n, bytes.fromhex(c)) for n, c in sorted(tree.files.items(), key=lambda kv: kv[0].encode())]
        dirs = [(n, bytes.fromhex(t), bytes.fromhex(m))
                for n, (t, m) in sorted(tree.dirs.items(), key=lambda kv: kv[0].encode())]
        data = gvariant.encode(DIRTREE_TYPE, (files, dirs))
        assert tree.serialize() == data
        assert decode_dirtree_fast(data) == (files, dirs)
        assert DirTree.parse(data) == tree
        if data:  # damaged bytes are either refused or read exactly as the generic decoder reads them
            damaged = bytearray(data)
            damaged[rng.randrange(len(damaged))] ^= rng.choice([1, 0x40, 0xFF])
            fast = decode_dirtree_fast(bytes(damaged))
            assert fast is None or fast == gvariant.decode(DIRTREE_TYPE, bytes(damaged))


def _make_tree(root: Path) -> Path:
    """Several hundred files in nested directories: empty files, executables, setuid, symlinks (also to
    directories), hardlinks inside the tree, user xattrs, other owners."""
    rng = random.Random(7)
    tree = root / "tree"
    for d in range(12):
        sub = tree / f"dir{d}" / ("deep/" * (d % 4)) / "leaf"
        sub.mkdir(parents=True)
        for f in range(25):
            path = sub / f"f{f}.txt"
            path.write_bytes(b"" if f % 9 == 0 else rng.randbytes(rng.choice([1, 100, 5000])))
            path.chmod(rng.choice([0o644, 0o755, 0o600, 0o4755, 0o444]))
        (sub / "link").symlink_to("f1.txt")
        (sub / "dirlink").symlink_to("..")
        os.link(sub / "f1.txt", sub / "hard-f1")
        os.setxattr(sub / "f2.txt", "user.note", b"value")
        os.chown(sub / "f3.txt", 1000, 1001)
        os.chown(sub / "link", 1000, 1000, follow_symlinks=False)
    os.chmod(tree / "dir1", 0o750)
    os.chown(tree / "dir2", 1000, 1000)
    os.setxattr(tree / "dir3", "user.dir", b"x")
    return tree


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_tree(tmp_path_factory.mktemp("perf"))


def _store_links(root: Path, repo: Path) -> dict[str, bool]:
    """For each regular file of a checkout: whether it is a hardlink of an object of repo."""
    objects = {(st.st_dev, st.st_ino) for st in (p.lstat() for p in (repo / "objects").rglob("*.file"))}
    result = {}
    for path in root.rglob("*"):
        st = path.lstat()
        if stat.S_ISREG(st.st_mode):
            result[str(path.relative_to(root))] = (st.st_dev, st.st_ino) in objects
    return result


@pytest.mark.parametrize(("mode", "flags"), [("bare-user", ["-U", "-H"]), ("bare", ["-H"])])
def test_hardlink_checkout_equals_ostree(tmp_path: Path, tree: Path, mode: str, flags: list[str]) -> None:
    ours, theirs = init_both(tmp_path, mode, tree, REF)
    assert (strata("repo", "rev-parse", "--repo", str(ours), REF).stdout
            == run_ostree(f"--repo={theirs}", "rev-parse", REF).stdout)
    strata("repo", "checkout", "--repo", str(ours), *flags, REF, str(tmp_path / "co-strata"))
    run_ostree(f"--repo={theirs}", "checkout", *flags, REF, str(tmp_path / "co-ostree"))
    assert describe_tree(tmp_path / "co-strata") == describe_tree(tmp_path / "co-ostree")
    linked = _store_links(tmp_path / "co-strata", ours)
    assert linked == _store_links(tmp_path / "co-ostree", theirs)
    assert any(linked.values()) and not all(linked.values())  # empty files are copies, the rest links
    fsck = run_ostree(f"--repo={ours}", "fsck", check=False)
    assert fsck.returncode == 0, fsck.stderr


def test_recommit_of_hardlink_checkout_is_unchanged(tmp_path: Path, tree: Path) -> None:
    ours, theirs = init_both(tmp_path, "bare-user", tree, REF)
    first = run_ostree(f"--repo={ours}", "ls", "-R", "-C", REF).stdout
    strata("repo", "checkout", "--repo", str(ours), "-U", "-H", REF, str(tmp_path / "co"))
    changed = tmp_path / "co/dir5/deep/leaf/f4.txt"
    changed.unlink()
    changed.write_bytes(b"changed\n")
    changed.chmod(0o644)
    strata("repo", "commit", "--repo", str(ours), "-b", REF, f"--tree=dir={tmp_path / 'co'}",
           "--timestamp=@1704067200")
    run_ostree(f"--repo={theirs}", "checkout", "-U", "-H", REF, str(tmp_path / "co-o"))
    changed_o = tmp_path / "co-o/dir5/deep/leaf/f4.txt"
    changed_o.unlink()
    changed_o.write_bytes(b"changed\n")
    changed_o.chmod(0o644)
    run_ostree(f"--repo={theirs}", "commit", "--link-checkout-speedup", "-b", REF,
               f"--tree=dir={tmp_path / 'co-o'}", "--timestamp=@1704067200")
    second = run_ostree(f"--repo={ours}", "ls", "-R", "-C", REF).stdout
    assert second != first
    assert second == run_ostree(f"--repo={theirs}", "ls", "-R", "-C", REF).stdout


def test_fsck_finds_a_damaged_object_in_parallel_walk(tmp_path: Path, tree: Path) -> None:
    ours, _theirs = init_both(tmp_path, "bare-user", tree, REF)
    assert "no errors found" in strata("repo", "fsck", "--repo", str(ours)).stdout
    victim = next(p for p in sorted((ours / "objects").rglob("*.file")) if p.stat().st_size > 50)
    victim.chmod(0o644)
    data = bytearray(victim.read_bytes())
    data[10] ^= 0xFF
    victim.write_bytes(bytes(data))
    result = strata("repo", "fsck", "--repo", str(ours), check=False)
    assert result.returncode != 0
    name = victim.parent.name + victim.name.removesuffix(".file")
    assert name in result.stdout + result.stderr
