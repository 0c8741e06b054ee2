"""`strata-ostree prune` against the real `ostree prune` on copies of one repository: the same objects survive
and the same summary line is printed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("ostree") is None, reason="needs the real ostree")


def ostree(repo: Path, *args: str) -> str:
    done = subprocess.run(["ostree", f"--repo={repo}", *args], capture_output=True, text=True, check=True)
    return done.stdout


def strata(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "strata.cli.ostree", f"--repo={repo}", *args],
                          capture_output=True, text=True, check=False)


def object_names(repo: Path) -> set[str]:
    return {str(path.relative_to(repo / "objects")) for path in (repo / "objects").rglob("*.*")}


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two branches, stable and dev, with three old (1985) and two new commits each; every commit changes a file."""
    top = tmp_path_factory.mktemp("history")
    repo, tree = top / "repo", top / "tree"
    tree.mkdir()
    ostree(repo, "init", "--mode=archive")
    for day in range(1, 6):
        when = [f"--timestamp=October {day} 1985"] if day <= 3 else []
        for branch in ("stable", "dev"):
            (tree / "file").write_text(f"{branch} {day}\n")
            ostree(repo, "commit", f"--branch={branch}", "-s", f"{branch} {day}", *when, str(tree))
    return repo


PRUNES = [
    ("--refs-only", "--depth=0"),
    ("--refs-only", "--depth=2"),
    ("--depth=1",),
    ("--keep-younger-than=1 week ago",),
    ("--keep-younger-than=1 week ago", "--retain-branch-depth=stable=-1"),
    ("--depth=0", "--retain-branch-depth=stable=3"),
    ("--only-branch=dev", "--depth=0"),
    ("--only-branch=dev", "--only-branch=stable", "--depth=1"),
    ("--only-branch=dev", "--depth=0", "--retain-branch-depth=stable=1"),
    ("--only-branch=stable", "--keep-younger-than=1 week ago"),
    ("--commit-only", "--refs-only", "--depth=1"),
    ("--commit-only", "--only-branch=dev", "--depth=0"),
    ("--refs-only", "--depth=0", "--no-prune"),
]


@pytest.mark.parametrize("options", PRUNES, ids=" ".join)
def test_prune_keeps_what_ostree_keeps(history: Path, tmp_path: Path, options: tuple[str, ...]) -> None:
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    shutil.copytree(history, theirs, symlinks=True)
    shutil.copytree(history, ours, symlinks=True)
    expected = ostree(theirs, "prune", *options)
    done = strata(ours, "prune", *options)
    assert done.returncode == 0, done.stderr
    assert object_names(ours) == object_names(theirs)
    assert done.stdout.splitlines()[0] == expected.splitlines()[0]  # the total
    assert done.stdout.splitlines()[1].split(",")[0] == expected.splitlines()[1].split(",")[0]  # the deleted count


def test_retain_branch_depth_needs_a_number(history: Path) -> None:
    for value, message in (("stable=BACON", "Invalid depth BACON"),
                           ("stable", "Invalid value stable, must specify BRANCH=DEPTH")):
        done = strata(history, "prune", f"--retain-branch-depth={value}")
        assert done.returncode != 0
        assert done.stderr.strip() == f"error: {message}"


def test_only_branch_must_exist(history: Path) -> None:
    before = object_names(history)
    done = strata(history, "prune", "--only-branch=BACON")
    assert done.returncode != 0
    assert "Refspec 'BACON' not found" in done.stderr
    assert object_names(history) == before


def test_deltas_to_pruned_commits_go(tmp_path: Path) -> None:
    repo, tree = tmp_path / "repo", tmp_path / "tree"
    tree.mkdir()
    ostree(repo, "init", "--mode=archive")
    for n in range(3):
        (tree / "file").write_text(f"{n}\n")
        ostree(repo, "commit", "--branch=main", str(tree))
    ostree(repo, "static-delta", "generate", "main^")
    ostree(repo, "static-delta", "generate", "main")
    assert len(ostree(repo, "static-delta", "list").splitlines()) == 2
    done = strata(repo, "prune", "--refs-only", "--depth=0")
    assert done.returncode == 0, done.stderr
    assert ostree(repo, "static-delta", "list").split() == [ostree(repo, "rev-parse", "main^").strip() + "-"
                                                             + ostree(repo, "rev-parse", "main").strip()]
    assert os.listdir(repo / "deltas")
