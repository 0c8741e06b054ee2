"""`strata-ostree fsck` against the real `ostree fsck` on copies of one damaged repository: every commit that
reaches a missing or corrupt object is named and marked partial, as ostree marks it."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from strata.image.fsck import fsck
from strata.image.objects import ObjectType
from strata.image.repo import Repo
from tests.hostile import ostree_repos as H

pytestmark = pytest.mark.skipif(shutil.which("ostree") is None, reason="needs the real ostree")


def ostree(repo: Path, *args: str) -> str:
    return subprocess.run(["ostree", f"--repo={repo}", *args], capture_output=True, text=True, check=True).stdout


def run(tool: str, repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = ["ostree"] if tool == "ostree" else [sys.executable, "-m", "strata.cli.ostree"]
    return subprocess.run([*command, f"--repo={repo}", *args], capture_output=True, text=True, check=False)


def _ls_checksum(repo: Path, rev: str, path: str) -> str:
    return ostree(repo, "ls", "-C", rev, path).split()[4]


def partial_markers(repo: Path) -> dict[str, bytes]:
    return {marker.name: marker.read_bytes() for marker in (repo / "state").glob("*.commitpartial")}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, list[str]]:
    """A bare repo where three commits (two on main, one on other, in another directory) hold one shared file;
    returns (repo, the shared file's checksum, the three commits)."""
    top = tmp_path_factory.mktemp("shared")
    repo, tree = top / "repo", top / "tree"
    (tree / "sub").mkdir(parents=True)
    ostree(repo, "init", "--mode=bare")
    (tree / "shared").write_text("shared\n")
    commits = [ostree(repo, "commit", "-b", "main", "--timestamp=2020-01-01", str(tree)).strip()]
    (tree / "extra").write_text("extra\n")
    commits.append(ostree(repo, "commit", "-b", "main", "--timestamp=2020-01-02", str(tree)).strip())
    (tree / "shared").rename(tree / "sub" / "shared")
    commits.append(ostree(repo, "commit", "-b", "other", "--timestamp=2020-01-03", str(tree)).strip())
    return repo, _ls_checksum(repo, "main", "/shared"), commits


def copies(source: Path, tmp_path: Path) -> tuple[Path, Path]:
    theirs, ours = tmp_path / "theirs" / "repo", tmp_path / "ours" / "repo"
    for copy in (theirs, ours):
        shutil.copytree(source, copy, symlinks=True)
    return theirs, ours


def object_file(repo: Path, checksum: str) -> Path:
    return repo / "objects" / checksum[:2] / f"{checksum[2:]}.file"


def commits_named(text: str, pattern: str) -> set[str]:
    found = re.search(pattern, text, re.MULTILINE)
    assert found, text
    return set(found[1].split(", "))


def test_missing_shared_object_marks_every_commit(shared: tuple[Path, str, list[str]], tmp_path: Path) -> None:
    source, checksum, commits = shared
    theirs, ours = copies(source, tmp_path)
    for repo in (theirs, ours):
        object_file(repo, checksum).unlink()
    expected, got = run("ostree", theirs, "fsck", "-q"), run("strata", ours, "fsck", "-q")
    assert expected.returncode != 0 and got.returncode != 0
    assert partial_markers(ours) == partial_markers(theirs) == {f"{c}.commitpartial": b"f" for c in commits}
    missing = rf"^Object missing in commits (.*): {checksum}\.file$"
    assert commits_named(got.stderr, missing) == commits_named(expected.stderr, missing) == set(commits)
    marked = {line.removeprefix("Marking commit as partial: ") for line in got.stderr.splitlines()
              if line.startswith("Marking")}
    assert marked == set(commits)
    assert got.stderr.splitlines()[-1] == "error: Repository corruption encountered"
    again = run("strata", ours, "fsck")
    assert again.returncode != 0
    assert again.stderr.strip() == "error: 3 partial commits from fsck-detected corruption"
    assert "3 partial commits not verified" in again.stdout


def corrupt(path: Path) -> None:
    path.chmod(0o644)
    with path.open("ab") as f:
        f.write(b"corrupted\n")


def test_corrupt_shared_object_deleted_and_commits_marked(shared: tuple[Path, str, list[str]],
                                                          tmp_path: Path) -> None:
    source, checksum, commits = shared
    theirs, ours = copies(source, tmp_path)
    for repo in (theirs, ours):
        corrupt(object_file(repo, checksum))
    expected, got = run("ostree", theirs, "fsck", "-q", "--delete"), run("strata", ours, "fsck", "-q", "--delete")
    assert expected.returncode != 0 and got.returncode != 0
    assert not object_file(ours, checksum).exists() and not object_file(theirs, checksum).exists()
    assert partial_markers(ours) == partial_markers(theirs)
    pattern = (rf"^In commits ([0-9a-f, ]+): fsck content object {checksum}: "
               rf"Corrupted file object; checksum expected='{checksum}'")
    assert commits_named(got.stderr, pattern) == commits_named(expected.stderr, pattern) == set(commits)


def test_corrupt_object_stops_fsck_without_delete(shared: tuple[Path, str, list[str]], tmp_path: Path) -> None:
    source, checksum, _commits = shared
    theirs, ours = copies(source, tmp_path)
    for repo in (theirs, ours):
        corrupt(object_file(repo, checksum))
    expected, got = run("ostree", theirs, "fsck", "-q"), run("strata", ours, "fsck", "-q")
    assert expected.returncode != 0 and got.returncode != 0
    assert len(got.stderr.splitlines()) == 1 and got.stderr.startswith("error: In commits ")
    assert "Corrupted file object; checksum expected" in got.stderr
    assert object_file(ours, checksum).exists()
    assert partial_markers(ours) == partial_markers(theirs) == {}
    actual = hashlib.sha256(object_file(ours, checksum).read_bytes()).hexdigest()
    assert actual != checksum


def test_all_reports_every_corrupt_object_and_keeps_them(shared: tuple[Path, str, list[str]],
                                                         tmp_path: Path) -> None:
    source, checksum, _commits = shared
    extra = _ls_checksum(source, "main", "/extra")
    theirs, ours = copies(source, tmp_path)
    for repo in (theirs, ours):
        corrupt(object_file(repo, checksum))
        corrupt(object_file(repo, extra))
    expected, got = run("ostree", theirs, "fsck", "-q", "--all"), run("strata", ours, "fsck", "-q", "--all")
    assert expected.returncode != 0 and got.returncode != 0
    for name in (checksum, extra):
        assert re.search(rf"Corrupted file object.*{name}", got.stderr), got.stderr
        assert object_file(ours, name).exists()
    assert got.stderr.splitlines()[-1] == "error: Repository corruption encountered"
    assert partial_markers(ours) == partial_markers(theirs) == {}


def test_library_fsck_names_all_commits_and_changes_nothing(shared: tuple[Path, str, list[str]],
                                                            tmp_path: Path) -> None:
    source, checksum, commits = shared
    _theirs, ours = copies(source, tmp_path)
    object_file(ours, checksum).unlink()
    report = fsck(Repo.open(ours))
    assert [(bad.checksum, bad.missing, bad.commits) for bad in report.bad] == [(checksum, True, sorted(commits))]
    assert report.marked == [] and partial_markers(ours) == {}


def test_object_deep_in_a_tree_is_traced_to_its_commit(tmp_path: Path) -> None:
    repo = H.new_server_repo(tmp_path / "repo")
    commit = H.deep_chain(repo, 3000)  # deeper than Python's recursion limit
    leaf = H.content(repo, b"bottom\n")
    repo.object_path(leaf, ObjectType.FILE).unlink()
    report = fsck(Repo.open(repo.path), mark_missing=True)
    assert [(bad.checksum, bad.commits) for bad in report.bad] == [(leaf, [commit])]
    assert report.marked == [commit]
