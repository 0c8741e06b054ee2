"""A checkout filled by forked worker processes gives the tree an in-process checkout gives and the real
ostree's checkout gives (modes, owners, xattrs, store links, directory mtimes), in every mode; it brings a
worker's error back as one error, and it never leaves a worker behind (error, interrupt, parent killed).

Each checkout runs in a fresh interpreter (tests/image/checkout_driver.py): workers are forked only from a
single-threaded process, and the test needs to see them (the driver looks at its children while they run)."""

from __future__ import annotations

import json
import os
import random
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from strata.image import gvariant
from strata.image import objects as O
from strata.image.objects import ObjectType
from strata.image.repo import Repo, RepoMode
from tests.conftest import run_ostree
from tests.image.helpers import describe_tree, init_both

REF = "co/test"
ROOT = Path(__file__).resolve().parents[2]
IN_PROCESS = 10**9  # fork_after: never fork
FORKED = 0  # fork_after: fork before the first directory with files


def make_tree(root: Path) -> Path:
    """Nested directories (some read-only, setgid, sticky, other owners, an xattr) holding regular files of
    several modes (setuid too), empty files, symlinks, a hardlink pair and a user xattr."""
    rng = random.Random(12)
    tree = root / "tree"
    for top in range(8):
        for sub in range(top % 4 + 1):
            leaf = tree / f"top{top}" / f"sub{sub}" / ("deeper/" * (sub % 3)) / "leaf"
            leaf.mkdir(parents=True, exist_ok=True)
            for f in range(12):
                path = leaf / f"f{f}"
                path.write_bytes(b"" if f % 7 == 0 else rng.randbytes(rng.choice([1, 90, 4096, 9000])))
                path.chmod(rng.choice([0o644, 0o755, 0o600, 0o4755, 0o2711, 0o444]))
            (leaf / "rel-link").symlink_to("f1")
            (leaf / "long-link").symlink_to("x" * 300)
            os.link(leaf / "f2", leaf / "hard-f2")
            os.setxattr(leaf / "f3", "user.note", b"value")
            os.chown(leaf / "f4", 1000, 1001)
    os.chmod(tree / "top1", 0o555)
    os.chmod(tree / "top2", 0o2775)
    os.chmod(tree / "top3" / "sub0", 0o1777)
    os.chown(tree / "top4", 1000, 1000)
    os.setxattr(tree / "top5", "user.dir", b"x")
    return tree


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("co-workers"))


def drive(repo: Path, dest: Path, fork_after: int, options: dict[str, Any], rev: str = REF) -> dict[str, Any]:
    """A checkout by tests/image/checkout_driver.py; options are CheckoutOptions fields and the driver's."""
    proc = subprocess.run([sys.executable, "-m", "tests.image.checkout_driver", str(repo), rev, str(dest),
                           json.dumps({"fork_after": fork_after, **options})],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def file_count(tree: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(tree))


def dir_mtimes(root: Path) -> dict[str, int]:
    return {str(Path(d).relative_to(root)): os.lstat(d).st_mtime_ns for d, _, _ in os.walk(root)}


def store_links(root: Path, repo: Path) -> dict[str, bool]:
    """For each regular file of a checkout: whether it shares its inode with a file of repo (store or cache)."""
    inodes = {(st.st_dev, st.st_ino) for st in (p.lstat() for p in repo.rglob("*.file"))}
    return {str(p.relative_to(root)): (p.lstat().st_dev, p.lstat().st_ino) in inodes
            for p in root.rglob("*") if stat.S_ISREG(p.lstat().st_mode)}


def _as_strata_keeps_user_dirs(described: dict[str, tuple[Any, ...]], options: dict[str, Any]
                               ) -> dict[str, tuple[Any, ...]]:
    """strata differs from ostree on purpose for directories in user mode (owner rwx kept, no setuid/setgid,
    so the user can always remove the checkout): their modes are left out of the comparison with ostree."""
    if not options.get("user_mode"):
        return described
    return {path: (kind, None if kind == "d" else mode, *rest) for path, (kind, mode, *rest) in described.items()}


@pytest.mark.parametrize(("mode", "options", "flags"), [
    ("bare-user", {"user_mode": True, "require_hardlinks": True}, ["-U", "-H"]),
    ("bare", {"require_hardlinks": True}, ["-H"]),
    ("bare", {"user_mode": True}, ["-U"]),
    ("archive", {}, []),
    ("bare-user", {"user_mode": True, "force_copy": True}, ["-U", "-C"]),
])
def test_forked_checkout_equals_in_process_and_ostree(tmp_path: Path, tree: Path, mode: str,
                                                     options: dict[str, Any], flags: list[str]) -> None:
    ours, theirs = init_both(tmp_path, mode, tree, REF)
    forked = drive(ours, tmp_path / "forked", FORKED, options)
    sliced = drive(ours, tmp_path / "sliced", FORKED, {**options, "slice_files": 5})  # every leaf in slices
    in_process = drive(ours, tmp_path / "in-process", IN_PROCESS, options)
    run_ostree(f"--repo={theirs}", "checkout", *flags, REF, str(tmp_path / "ostree"))
    assert forked["error"] is None and sliced["error"] is None and in_process["error"] is None
    assert forked["workers_seen"] >= min(2, len(os.sched_getaffinity(0))) and in_process["workers_seen"] == 0
    assert forked["files"] == sliced["files"] == in_process["files"] == file_count(tree)
    assert forked["children_after"] == sliced["children_after"] == []
    assert describe_tree(tmp_path / "forked") == describe_tree(tmp_path / "in-process")
    assert describe_tree(tmp_path / "sliced") == describe_tree(tmp_path / "in-process")
    assert dir_mtimes(tmp_path / "sliced") == dir_mtimes(tmp_path / "in-process")
    expected = _as_strata_keeps_user_dirs(describe_tree(tmp_path / "ostree"), options)
    assert _as_strata_keeps_user_dirs(describe_tree(tmp_path / "forked"), options) == expected
    assert dir_mtimes(tmp_path / "forked") == dir_mtimes(tmp_path / "in-process")
    if not options.get("force_copy"):  # ostree leaves the mtimes of a copying checkout's directories alone
        assert dir_mtimes(tmp_path / "forked") == dir_mtimes(tmp_path / "ostree")
    linked = store_links(tmp_path / "forked", ours)
    assert linked == store_links(tmp_path / "in-process", ours)
    assert linked == store_links(tmp_path / "ostree", theirs)


def test_union_and_union_add_in_workers(tmp_path: Path, tree: Path) -> None:
    ours, _theirs = init_both(tmp_path, "bare-user", tree, REF)
    results = {}
    for fork_after in (FORKED, IN_PROCESS):
        dest = tmp_path / f"dest-{fork_after}"
        (dest / "top0").mkdir(parents=True)
        (dest / "top0" / "own-file").write_text("kept\n")
        for options in ({"union": True}, {"union": True, "union_add": True}):
            sliced = {"slice_files": 5} if fork_after == FORKED else {}
            done = drive(ours, dest, fork_after, {"user_mode": True, **sliced, **options})
            assert done["error"] is None and done["children_after"] == []
        results[fork_after] = describe_tree(dest)
    assert results[FORKED] == results[IN_PROCESS]
    assert results[FORKED]["/top0/own-file"][0] == "-"


def test_worker_error_comes_back_as_one_error(tmp_path: Path, tree: Path) -> None:
    ours, _theirs = init_both(tmp_path, "bare-user", tree, REF)
    repo = Repo.open(ours)
    victim = repo.load_dirtree(repo.load_dirtree(repo.load_dirtree(repo.load_commit(
        repo.resolve_rev(REF) or "").root_tree).dirs["top7"][0]).dirs["sub3"][0]).dirs["leaf"][0]
    checksum = repo.load_dirtree(victim).files["f5"]
    os.unlink(repo.file_object_path(checksum))
    done = drive(ours, tmp_path / "dest", FORKED, {"user_mode": True})
    assert done["error"] == f"MissingFileObjectError: file object {checksum} not found"
    assert done["children_after"] == []


def test_malformed_dirtree_deep_in_the_tree_is_refused_by_a_worker(tmp_path: Path, tree: Path) -> None:
    ours, _theirs = init_both(tmp_path, "bare-user", tree, REF)
    repo = Repo.open(ours)
    commit = repo.load_commit(repo.resolve_rev(REF) or "")
    files, dirs = gvariant.decode(O.DIRTREE_TYPE, repo.read_metadata(commit.root_tree, ObjectType.DIRTREE))
    sub_files, sub_dirs = gvariant.decode(O.DIRTREE_TYPE, repo.read_metadata(dirs[6][1].hex(), ObjectType.DIRTREE))
    with repo.lock():
        evil_sub = repo.write_metadata(ObjectType.DIRTREE, gvariant.encode(O.DIRTREE_TYPE,
                                                                           (sub_files, [sub_dirs[0], *sub_dirs])))
        dirs[6] = (dirs[6][0], bytes.fromhex(evil_sub), dirs[6][2])
        evil_root = repo.write_metadata(ObjectType.DIRTREE, gvariant.encode(O.DIRTREE_TYPE, (files, dirs)))
        evil = repo.write_metadata(ObjectType.COMMIT, O.Commit([], None, "", "", 1704067200, evil_root,
                                                                 commit.root_meta).serialize())
    done = drive(ours, tmp_path / "dest", FORKED, {"user_mode": True}, rev=evil)
    assert done["error"] == f"CorruptionError: invalid dirtree: duplicate name '{sub_dirs[0][0]}'"
    assert done["children_after"] == []


def test_symlink_in_union_destination_is_not_followed(tmp_path: Path, tree: Path) -> None:
    ours, _theirs = init_both(tmp_path, "bare-user", tree, REF)
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    (dest / "top6" / "sub2").mkdir(parents=True)
    (dest / "top6" / "sub2" / "deeper").symlink_to(outside)
    done = drive(ours, dest, FORKED, {"user_mode": True, "union": True})
    assert done["error"] == f"StrataError: cannot check out directory over non-directory {dest}/top6/sub2/deeper"
    assert done["children_after"] == [] and list(outside.iterdir()) == []


def test_interrupt_kills_and_reaps_every_worker(tmp_path: Path, tree: Path) -> None:
    ours, _theirs = init_both(tmp_path, "bare-user", tree, REF)
    done = drive(ours, tmp_path / "dest", FORKED, {"user_mode": True, "interrupt": True})
    assert done["error"] == "KeyboardInterrupt: " and done["workers_seen"] >= 1
    assert done["children_after"] == []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_workers_die_with_their_parent(tmp_path: Path, tree: Path) -> None:
    ours, _theirs = init_both(tmp_path, "bare-user", tree, REF)
    pids_file = tmp_path / "pids"
    proc = subprocess.run([sys.executable, "-m", "tests.image.checkout_driver", str(ours), REF,
                           str(tmp_path / "dest"), json.dumps({"fork_after": FORKED, "user_mode": True,
                                                               "die": str(pids_file)})],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == -9
    workers = json.loads(pids_file.read_text())
    assert workers
    # The kernel sends SIGKILL to each worker as the parent exits; wait for them to be gone (a guard against
    # hanging, not a speed limit).
    for pid in workers:
        waited = subprocess.run(["timeout", "60", "sh", "-c", f"while [ -d /proc/{pid} ] && "
                                 f"! grep -q '^State:.*[ZX]' /proc/{pid}/status 2>/dev/null; do sleep 0.05; done"],
                                check=False)
        assert waited.returncode == 0, f"worker {pid} outlived its parent"
        assert not _alive(pid)


def test_deep_tree_past_path_max_in_workers(tmp_path: Path) -> None:
    """Directories nested past PATH_MAX with several subdirectories at every level: the workers continue from
    descriptors there and never hand such a directory to another process."""
    repo = Repo.init(tmp_path / "repo", RepoMode.BARE_USER)
    name = "d" * 100
    levels = 60  # 60 * 101 bytes: past PATH_MAX (4096) and past the anchor point
    with repo.lock():
        meta = repo.write_metadata(ObjectType.DIRMETA, O.DirMeta(0, 0, 0o40755).serialize())
        content = repo.write_content(O.FileMeta(0, 0, 0o100644), b"leaf\n")
        tree = repo.write_metadata(ObjectType.DIRTREE, O.DirTree({"leaf": content}, {}).serialize())
        for level in range(levels):
            side = repo.write_metadata(ObjectType.DIRTREE, O.DirTree({f"file{level}": content}, {}).serialize())
            tree = repo.write_metadata(ObjectType.DIRTREE, O.DirTree(
                {"f": content}, {name: (tree, meta), "side-a": (side, meta), "side-b": (side, meta)}).serialize())
        commit = repo.write_metadata(ObjectType.COMMIT, O.Commit([], None, "", "", 1704067200, tree,
                                                                 meta).serialize())
        repo.set_ref(REF, commit)
    dest = tmp_path / "dest"
    done = drive(repo.path, dest, FORKED, {"user_mode": True})
    assert done["error"] is None and done["children_after"] == []
    assert done["files"] == 1 + levels * 3
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(levels):
            assert sorted(os.listdir(fd)) == sorted(["f", name, "side-a", "side-b"])
            side_fd = os.open("side-a", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            assert os.listdir(side_fd) == [f"file{levels - 1 - level}"]
            os.close(side_fd)
            next_fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            assert os.stat(next_fd).st_mtime == 0 and stat.S_IMODE(os.stat(next_fd).st_mode) == 0o755
            os.close(fd)
            fd = next_fd
        leaf = os.open("leaf", os.O_RDONLY, dir_fd=fd)
        assert os.read(leaf, 100) == b"leaf\n"
        os.close(leaf)
    finally:
        os.close(fd)
    subprocess.run(["rm", "-rf", str(dest)], check=True)


@pytest.mark.parametrize("name", ["f1", "rel-link", "f0"])  # a regular file, a symlink, an empty file
def test_bare_user_object_without_its_xattr_is_refused(tmp_path: Path, tree: Path, name: str) -> None:
    """The link loop reads every bare-user object's user.ostreemeta (it tells symlinks and empty files apart):
    an object that lost it is refused in one line, in-process and in a worker alike."""
    ours, _theirs = init_both(tmp_path, "bare-user", tree, REF)
    repo = Repo.open(ours)
    leaf = repo.load_dirtree(repo.load_dirtree(repo.load_dirtree(repo.load_dirtree(
        repo.load_commit(repo.resolve_rev(REF) or "").root_tree).dirs["top0"][0]).dirs["sub0"][0]).dirs["leaf"][0])
    checksum = leaf.files[name]
    os.removexattr(repo.file_object_path(checksum), "user.ostreemeta")
    for fork_after, dest in ((FORKED, "forked"), (IN_PROCESS, "in-process")):
        done = drive(ours, tmp_path / dest, fork_after, {"user_mode": True})
        assert done["error"] == f"StrataError: file object {checksum} has no user.ostreemeta"
        assert done["children_after"] == []
