"""The cache of what a base commit's rpmdb holds keeps entries only for commits the repository still has."""

from __future__ import annotations

from pathlib import Path

from strata.core import layering
from strata.core.layering import BaseInfo
from strata.image.commit import CommitRequest, write_commit, write_tree_from_dir
from strata.image.repo import Repo, RepoMode
from strata.packages.nevra import Nevra
from strata.packages.solver import InstalledPackage


def commit_of(repo: Repo, tmp_path: Path, text: str) -> str:
    tree = tmp_path / f"tree-{text}"
    tree.mkdir()
    (tree / "f").write_text(text)
    return write_commit(repo, write_tree_from_dir(repo, tree), CommitRequest(subject=text, timestamp=1))


def test_writing_an_entry_drops_those_of_pruned_commits(tmp_path: Path) -> None:
    repo = Repo.init(tmp_path / "repo", RepoMode.BARE_USER)
    kept, new = commit_of(repo, tmp_path, "kept"), commit_of(repo, tmp_path, "new")
    package = InstalledPackage(Nevra("bash", 0, "5.2", "1", "x86_64"), ("bash",), ("/usr/bin/bash",))
    layering._cache_base(repo, BaseInfo(kept, [package]))
    directory = layering._base_cache_path(repo, kept).parent
    pruned = directory / f"{'ab' * 32}.json"
    pruned.write_text("{}")
    unrelated = directory / "notes.txt"
    unrelated.write_text("left alone")
    layering._cache_base(repo, BaseInfo(new, [package]))
    assert sorted(p.name for p in directory.iterdir()) == sorted([f"{kept}.json", f"{new}.json", "notes.txt"])
    cached = layering._cached_base(repo, kept)
    assert cached is not None and cached.nevras == [package.nevra]
