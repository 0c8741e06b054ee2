"""Static deltas in ostree's format: the real ostree applies strata's, and pulls use them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from strata.image.commit import CommitRequest, commit_directory
from strata.image.repo import Repo, RepoMode
from tests.conftest import run_ostree
from tests.image.helpers import describe_tree, strata
from tests.pull.test_pull import REF, make_tree, strata_client


def two_commits(tmp_path: Path) -> tuple[Repo, str, str]:
    repo = Repo.init(tmp_path / "www" / "repo", RepoMode.ARCHIVE)
    tree = make_tree(tmp_path / "tree", 5, files=80)
    first = commit_directory(repo, tree, REF, CommitRequest(subject="one", timestamp=1, bind_refs=[REF]))
    for index in range(5):
        (tree / "d1" / f"f{index * 5 + 1}").write_bytes(b"updated content %d\n" % index * 50)
    second = commit_directory(repo, tree, REF, CommitRequest(subject="two", timestamp=2, parent=first,
                                                             bind_refs=[REF]))
    return repo, first, second


def test_real_ostree_applies_strata_deltas(tmp_path: Path) -> None:
    repo, first, second = two_commits(tmp_path)
    strata("repo", "static-delta", "generate", "--repo", str(repo.path), "--from", first, "--to", second)
    strata("repo", "static-delta", "generate", "--repo", str(repo.path), "--empty", "--to", second)
    listed = run_ostree(f"--repo={repo.path}", "static-delta", "list").stdout.split()
    assert sorted(listed) == sorted([f"{first}-{second}", second])
    assert sorted(strata("repo", "static-delta", "list", "--repo", str(repo.path)).stdout.split()) == sorted(listed)
    client = tmp_path / "ostree-client"
    run_ostree(f"--repo={client}", "init", "--mode=bare-user")
    run_ostree(f"--repo={client}", "pull-local", str(repo.path), first)
    delta = next(p for p in (repo.path / "deltas").glob("*/*-*"))
    run_ostree(f"--repo={client}", "static-delta", "apply-offline", str(delta))
    assert "no errors found" in run_ostree(f"--repo={client}", "fsck").stdout
    run_ostree(f"--repo={client}", "checkout", second, str(tmp_path / "co"))
    assert describe_tree(tmp_path / "co") == describe_tree(tmp_path / "tree")


def test_pulls_use_deltas(tmp_path: Path, nginx: Callable[[Path], str]) -> None:
    repo, first, second = two_commits(tmp_path)
    strata("repo", "static-delta", "generate", "--repo", str(repo.path), "--from", first, "--to", second)
    url = nginx(tmp_path / "www") + "/repo"
    client = strata_client(tmp_path / "c", url)
    (repo.path / "refs/heads" / REF).write_text(first + "\n")
    strata("repo", "summary", "-u", "--repo", str(repo.path))
    strata("repo", "pull", "--repo", str(client), "origin", REF)
    by_objects = tmp_path / "c-objects"
    objects_client = strata_client(by_objects, url)
    strata("repo", "pull", "--repo", str(objects_client), "origin", REF)
    (repo.path / "refs/heads" / REF).write_text(second + "\n")
    strata("repo", "summary", "-u", "--repo", str(repo.path))
    access_log = next((tmp_path / "nginx").glob("nginx-*/access.log"))
    before = access_log.read_text()
    strata("repo", "pull", "--repo", str(client), "origin", REF)
    delta_requests = access_log.read_text()[len(before):]
    assert "/deltas/" in delta_requests and ".filez" not in delta_requests
    assert Repo.open(client).read_ref(REF, remote="origin") == second
    assert "no errors found" in strata("repo", "fsck", "--repo", str(client)).stdout
    before = access_log.read_text()
    strata("repo", "pull", "--repo", str(objects_client), "origin", REF, "--disable-static-deltas")
    object_requests = access_log.read_text()[len(before):]
    assert ".filez" in object_requests and "/deltas/" not in object_requests
    # and the real ostree pulls through strata's delta too (into a non-archive repo, as ostree only does then)
    ostree_client = tmp_path / "ostree-client"
    run_ostree(f"--repo={ostree_client}", "init", "--mode=bare-user")
    run_ostree(f"--repo={ostree_client}", "remote", "add", "--no-gpg-verify", "origin", url)
    run_ostree(f"--repo={ostree_client}", "pull", "origin", first)
    before = access_log.read_text()
    pulled = run_ostree(f"--repo={ostree_client}", "pull", "origin", REF, check=False)
    assert pulled.returncode == 0, pulled.stderr
    assert "/deltas/" in access_log.read_text()[len(before):]
    assert "no errors found" in run_ostree(f"--repo={ostree_client}", "fsck").stdout


def test_pull_through_ostree_made_delta_or_fall_back(tmp_path: Path, nginx: Callable[[Path], str]) -> None:
    repo, first, second = two_commits(tmp_path)
    url = nginx(tmp_path / "www") + "/repo"
    client = strata_client(tmp_path / "c", url)
    (repo.path / "refs/heads" / REF).write_text(first + "\n")
    run_ostree(f"--repo={repo.path}", "summary", "-u")
    strata("repo", "pull", "--repo", str(client), "origin", REF)
    (repo.path / "refs/heads" / REF).write_text(second + "\n")
    run_ostree(f"--repo={repo.path}", "static-delta", "generate", f"--from={first}", f"--to={second}")
    run_ostree(f"--repo={repo.path}", "summary", "-u")
    strata("repo", "pull", "--repo", str(client), "origin", REF)
    assert Repo.open(client).read_ref(REF, remote="origin") == second
    assert "no errors found" in strata("repo", "fsck", "--repo", str(client)).stdout
