"""`strata-ostree summary` against the real `ostree summary`: the ostree-metadata commit of repositories with
a collection ID, ostree's summary keys, the byte order of --add-metadata values and the --view text."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from strata.image.objects import ObjectType
from strata.image.repo import Repo

pytestmark = pytest.mark.skipif(shutil.which("ostree") is None, reason="needs the real ostree")
ENV = {**os.environ, "TZ": "UTC"}


def run(tool: str, repo: Path, *args: str) -> str:
    command = ["ostree"] if tool == "ostree" else [sys.executable, "-m", "strata.cli.ostree"]
    done = subprocess.run([*command, f"--repo={repo}", *args], capture_output=True, text=True, check=False, env=ENV)
    assert done.returncode == 0, (tool, args, done.stderr)
    return done.stdout


def collection_repo(tool: str, top: Path) -> Path:
    """A repo of collection org.example.C1 with one commit on test-1, mirrored as (org.example.C2, test-1)."""
    repo, tree = top / tool / "repo", top / tool / "tree"
    tree.mkdir(parents=True)
    (tree / "a").write_text("a\n")
    run(tool, repo, "init", "--mode=archive", "--collection-id=org.example.C1")
    run(tool, repo, "commit", "-b", "test-1", "--timestamp=2020-01-01", str(tree))
    run(tool, repo, "refs", "--collections", "--create=org.example.C2:test-1", "test-1")
    return repo


def test_summary_update_records_the_metadata_commit(tmp_path: Path) -> None:
    repo = collection_repo("strata", tmp_path)
    run("strata", repo, "summary", "--update", "--add-metadata=map=@a{sv} {}")
    run("strata", repo, "summary", "--update", "-m", "some-int=@t 123")
    assert "(org.example.C1, ostree-metadata)" in run("ostree", repo, "refs", "--collections").splitlines()
    raw = run("ostree", repo, "show", "--raw", "ostree-metadata")
    assert "'some-int': <uint64 8863084066665136128>" in raw  # stored little-endian, as ostree stores it
    assert "'ostree.ref-binding': <['ostree-metadata']>" in raw
    assert "'ostree.collection-binding': <'org.example.C1'>" in raw
    log = run("ostree", repo, "log", "ostree-metadata")
    assert log.count("commit ") == 2
    assert run("ostree", repo, "ls", "ostree-metadata").splitlines() == ["d00755 0 0      0 /"]
    reference = collection_repo("ostree", tmp_path)
    run("ostree", reference, "summary", "--update")
    ours, theirs = Repo.open(repo), Repo.open(reference)
    mine = ours.load_commit(ours.read_ref("ostree-metadata") or "")
    upstream = theirs.load_commit(theirs.read_ref("ostree-metadata") or "")
    assert (mine.root_tree, mine.root_meta) == (upstream.root_tree, upstream.root_meta)
    assert "no errors found" in run("ostree", repo, "fsck")


def test_no_metadata_commit_without_a_collection_id(tmp_path: Path) -> None:
    repo, tree = tmp_path / "repo", tmp_path / "tree"
    tree.mkdir()
    (tree / "a").write_text("a\n")
    run("strata", repo, "init", "--mode=archive")
    run("strata", repo, "commit", "-b", "main", str(tree))
    run("strata", repo, "summary", "--update")
    assert run("ostree", repo, "refs").split() == ["main"]
    opened = Repo.open(repo)
    assert [checksum for checksum, _ in opened.list_objects(ObjectType.COMMIT)] == [opened.read_ref("main")]


@pytest.mark.parametrize("writer", ["ostree", "strata"])
def test_view_prints_what_ostree_prints(tmp_path: Path, writer: str) -> None:
    repo = collection_repo(writer, tmp_path)
    run(writer, repo, "summary", "--update", "--add-metadata=map=@a{sv} {}", "-m", "some-int=@t 123",
        "-m", "name='x'")
    theirs, ours = run("ostree", repo, "summary", "--view"), run("strata", repo, "summary", "--view")
    assert ours == theirs
    assert "* (org.example.C2, test-1)" in ours and "some-int: 123" in ours and "map: {}" in ours


def test_summary_without_an_action_is_refused(tmp_path: Path) -> None:
    repo = collection_repo("strata", tmp_path)
    done = subprocess.run([sys.executable, "-m", "strata.cli.ostree", f"--repo={repo}", "summary"],
                          capture_output=True, text=True, check=False)
    assert done.returncode != 0
    assert "No option specified; use -u to update summary" in done.stderr
