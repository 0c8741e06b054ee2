"""Bad input, corruption, concurrency, crashes and the device/inode cache of the image store."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from strata.errors import StrataError
from strata.image import gvariant
from strata.image import objects as O
from strata.image.checkout import CheckoutOptions, checkout_commit
from strata.image.commit import CommitRequest, commit_directory, write_commit
from strata.image.objects import ObjectType
from strata.image.repo import Repo, RepoMode
from tests.conftest import run_ostree
from tests.image.helpers import strata

REF = "test/ref"


def make_tree(root: Path, files: int = 20, seed: int = 0) -> Path:
    rng = random.Random(seed)
    for index in range(files):
        path = root / f"d{index % 7}" / f"f{index}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randint(0, 4000)))
    (root / "link").symlink_to("d0/f0")
    return root


def committed(tmp_path: Path, mode: RepoMode = RepoMode.ARCHIVE, files: int = 20) -> tuple[Repo, str]:
    repo = Repo.init(tmp_path / "repo", mode)
    tree = make_tree(tmp_path / "tree", files)
    return repo, commit_directory(repo, tree, REF, CommitRequest(subject="s", timestamp=1))


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_corrupt_object_named_by_fsck_and_refused(tmp_path: Path) -> None:
    repo, _commit = committed(tmp_path)
    victim = next(c for c, t in repo.list_objects(ObjectType.FILE) if repo.read_file(c)[1])
    path = repo.object_path(victim, ObjectType.FILE)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x55
    path.write_bytes(bytes(data))
    proc = strata("repo", "fsck", "--repo", str(repo.path), check=False)
    assert victim in proc.stdout and "Corrupted file object" in proc.stdout
    one_line_error(proc)
    assert run_ostree(f"--repo={repo.path}", "fsck", check=False).returncode != 0
    co = strata("repo", "checkout", "--repo", str(repo.path), REF, str(tmp_path / "co"), check=False)
    assert "corrupt" in one_line_error(co)


def test_missing_and_truncated_metadata(tmp_path: Path) -> None:
    repo, commit = committed(tmp_path)
    trees = [c for c, _ in repo.list_objects(ObjectType.DIRTREE) if c != repo.load_commit(commit).root_tree]
    repo.object_path(trees[0], ObjectType.DIRTREE).unlink()
    meta = repo.object_path(repo.load_commit(commit).root_meta, ObjectType.DIRMETA)
    meta.write_bytes(meta.read_bytes()[:5])
    out = strata("repo", "fsck", "--repo", str(repo.path), check=False)
    assert f"Missing dirtree object {trees[0]}" in out.stdout
    assert f"Corrupted dirmeta object {repo.load_commit(commit).root_meta}" in out.stdout
    one_line_error(out)


@pytest.mark.parametrize("kind", ["fifo", "symlink"])
def test_objects_that_are_not_regular_files_are_refused_without_blocking(tmp_path: Path, kind: str) -> None:
    """A FIFO would block every reader for ever and a symlink would read outside the store: both are
    corruption, reported in one line, for metadata, detached metadata and archive content alike."""
    repo, commit = committed(tmp_path)
    root_tree = repo.load_commit(commit).root_tree
    content = repo.load_dirtree(root_tree).files["link"]
    victims = [repo.object_path(root_tree, ObjectType.DIRTREE), repo.object_path(content, ObjectType.FILE),
               repo.object_path(commit, ObjectType.COMMITMETA)]
    for path in victims:
        path.unlink(missing_ok=True)
        if kind == "fifo":
            os.mkfifo(path)
        else:
            path.symlink_to("/etc/hostname")
    with pytest.raises(StrataError, match="is not a regular file"):
        repo.load_dirtree(root_tree)
    with pytest.raises(StrataError, match="is not a regular file"):
        repo.read_file(content)
    with pytest.raises(StrataError, match="is not a regular file"):
        repo.read_file_meta(content)
    with pytest.raises(StrataError, match="is not a regular file"):
        repo.verify_content(content)
    with pytest.raises(StrataError, match="is not a regular file"):
        repo.read_detached_metadata(commit)
    out = strata("repo", "fsck", "--repo", str(repo.path), check=False)
    assert out.returncode != 0
    one_line_error(out)


@pytest.mark.parametrize("bad_name", ["..", ".", "a/b", ""])
def test_hostile_tree_names_refused(tmp_path: Path, bad_name: str) -> None:
    repo = Repo.init(tmp_path / "repo", RepoMode.ARCHIVE)
    with repo.lock():
        content = repo.write_content(O.FileMeta(0, 0, 0o100644), b"pwned\n")
        dirtree = repo.write_metadata(ObjectType.DIRTREE, gvariant.encode(
            O.DIRTREE_TYPE, ([(bad_name, bytes.fromhex(content))], [])))
        dirmeta = repo.write_metadata(ObjectType.DIRMETA, O.DirMeta(0, 0, 0o40755).serialize())
        commit = write_commit(repo, (dirtree, dirmeta), CommitRequest(timestamp=1))
        repo.set_ref(REF, commit)
    proc = strata("repo", "checkout", "--repo", str(repo.path), REF, str(tmp_path / "co"), check=False)
    assert "invalid file name" in one_line_error(proc)
    assert not (tmp_path / "pwned").exists()
    assert "Invalid dirtree object" in strata("repo", "fsck", "--repo", str(repo.path), check=False).stdout


def test_refusing_hostile_names_when_committing(tmp_path: Path) -> None:
    repo = Repo.init(tmp_path / "repo", RepoMode.ARCHIVE)
    tree = tmp_path / "tree"
    tree.mkdir()
    os.mkfifo(tree / "fifo")
    proc = strata("repo", "commit", "--repo", str(repo.path), "-b", REF, f"--tree=dir={tree}", check=False)
    assert "special file" in one_line_error(proc)
    assert repo.list_refs() == {}


def test_bad_input_one_line_errors(tmp_path: Path) -> None:
    repo, commit = committed(tmp_path)
    assert "not found" in one_line_error(strata("repo", "rev-parse", "--repo", str(repo.path), "nope", check=False))
    for suffix in ("cd" + "1" * 60, "cd" + "2" * 60):
        (repo.path / "objects" / "ab").mkdir(exist_ok=True)
        (repo.path / "objects" / "ab" / f"{suffix}.commit").write_bytes(b"")
    assert "ambiguous" in one_line_error(strata("repo", "rev-parse", "--repo", str(repo.path), "abcd", check=False))
    for suffix in ("cd" + "1" * 60, "cd" + "2" * 60):
        (repo.path / "objects" / "ab" / f"{suffix}.commit").unlink()
    assert "not an OSTree repository" in one_line_error(
        strata("repo", "log", "--repo", str(tmp_path), REF, check=False))
    assert strata("repo", "rev-parse", "--repo", str(repo.path), commit[:10]).stdout.strip() == commit


def test_read_only_repo(tmp_path: Path) -> None:
    repo, _commit = committed(tmp_path)
    mount = tmp_path / "ro"
    mount.mkdir()
    subprocess.run(["mount", "--bind", "-o", "ro", str(repo.path), str(mount)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mount)], check=True)
        proc = strata("repo", "commit", "--repo", str(mount), "-b", "other", f"--tree=dir={tmp_path / 'tree'}",
                      check=False)
        assert "read-only" in one_line_error(proc)
        assert "no errors found" in strata("repo", "fsck", "--repo", str(mount)).stdout
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_concurrent_commits_both_land(tmp_path: Path) -> None:
    repo = Repo.init(tmp_path / "repo", RepoMode.BARE_USER)
    trees = [make_tree(tmp_path / f"t{i}", 400, seed=i) for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-m", "strata.cli.main", "repo", "commit", "--repo", str(repo.path),
                               "-b", f"branch{i}", f"--tree=dir={tree}"], stdout=subprocess.PIPE, text=True)
             for i, tree in enumerate(trees)]
    commits = [p.communicate()[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert repo.list_refs() == {"branch0": commits[0], "branch1": commits[1]}
    assert "no errors found" in strata("repo", "fsck", "--repo", str(repo.path)).stdout
    assert run_ostree(f"--repo={repo.path}", "fsck", check=False).returncode == 0


def test_killed_commits_leave_repo_clean(tmp_path: Path) -> None:
    repo, first = committed(tmp_path, RepoMode.ARCHIVE)
    big = make_tree(tmp_path / "big", 3000, seed=7)
    rng = random.Random(1)
    for _attempt in range(6):
        proc = subprocess.Popen([sys.executable, "-m", "strata.cli.main", "repo", "commit", "--repo",
                                 str(repo.path), "-b", REF, f"--tree=dir={big}"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ref = Repo.open(repo.path).read_ref(REF)
        if ref != first:  # the commit finished before the kill: it must be complete
            assert ref is not None
            assert "no errors found" in strata("repo", "fsck", "--repo", str(repo.path)).stdout
            first = ref
        assert "no errors found" in strata("repo", "fsck", "--repo", str(repo.path)).stdout
    assert run_ostree(f"--repo={repo.path}", "fsck", check=False).returncode == 0


def test_recommit_of_hardlinked_checkout_hashes_only_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    repo, commit = committed(tmp_path, RepoMode.BARE, files=200)
    checkout = tmp_path / "co"
    checkout_commit(repo, commit, checkout, CheckoutOptions(require_hardlinks=False))
    changed = sorted(p for p in checkout.rglob("f*") if p.stat().st_size > 0)[:10]
    for path in changed:
        replacement = path.with_name(path.name + ".new")
        replacement.write_bytes(b"changed " + path.name.encode())
        replacement.rename(path)  # never write through a hardlink into the store
    reads: list[str] = []
    original = Repo.write_content_from_file

    def counting(self: Repo, meta: O.FileMeta, source: str | os.PathLike[str], size: int) -> str:
        reads.append(str(source))
        return original(self, meta, source, size)

    monkeypatch.setattr(Repo, "write_content_from_file", counting)
    fresh = Repo.open(repo.path)
    second = commit_directory(fresh, checkout, REF, CommitRequest(subject="s2", timestamp=2))
    assert sorted(reads) == sorted(str(p) for p in changed)
    assert Repo.open(repo.path).load_commit(second).parent is None
    assert "no errors found" in strata("repo", "fsck", "--repo", str(repo.path)).stdout


def test_prune_drops_history(tmp_path: Path) -> None:
    repo, first = committed(tmp_path)
    (tmp_path / "tree" / "d0" / "f0").write_bytes(b"new content")
    second = commit_directory(repo, tmp_path / "tree", REF, CommitRequest(parent=first, timestamp=2))
    out = strata("repo", "prune", "--repo", str(repo.path), "--refs-only", "--depth=0").stdout
    assert "Deleted 4 objects" in out  # commit, root and d0 dirtrees, old f0
    assert not repo.has_object(first, ObjectType.COMMIT) and repo.has_object(second, ObjectType.COMMIT)
    assert run_ostree(f"--repo={repo.path}", "fsck", check=False).returncode == 0
    assert "No unreachable objects" in strata("repo", "prune", "--repo", str(repo.path)).stdout
