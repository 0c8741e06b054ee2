"""Static deltas in ostree's format, both ways: the real ostree applies and pulls strata's deltas (which use
rollsum and bsdiff for modified files), and strata applies and pulls ostree's, making the same objects."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from strata.image.repo import Repo
from tests.conftest import run_ostree
from tests.image.helpers import describe_tree, strata
from tests.pull.test_pull import REF, strata_client


def strata_ostree(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "strata.cli.ostree", *args], capture_output=True, text=True,
                          check=check)


def write_version(tree: Path, version: int) -> None:
    """Files an update changes the way packages do: appended to (rollsum), rewritten near the start (bsdiff),
    compressed (travels whole), plus a new file and a symlink."""
    rng = random.Random(7)
    body = rng.randbytes(300_000)
    (tree / "usr/lib").mkdir(parents=True, exist_ok=True)
    (tree / "usr/lib/libgrow.so").write_bytes(body + (b"\0" * 40 if version == 2 else b""))
    (tree / "usr/lib/librebuilt.so").write_bytes((b"aheader\n" if version == 2 else b"") + body[::-1])
    (tree / "usr/lib/data.xz").write_bytes(rng.randbytes(50_000) if version == 1 else rng.randbytes(51_000))
    (tree / "usr/lib/os-release").write_text(f"NAME=lab\nVERSION={version}\n")
    if version == 2:
        (tree / "usr/lib/new-file").write_bytes(b"new\n" * 100)
        (tree / "usr/lib/big-new").write_bytes(b"\1" * 1_100_000)  # over --min-fallback-size=1
        (tree / "usr/lib/link").symlink_to("libgrow.so")


def two_commits(tmp_path: Path) -> tuple[Path, str, str, Path]:
    """An archive repo (under tmp_path/www) with REF at version 1 then 2; returns (repo, v1, v2, tree)."""
    repo = tmp_path / "www" / "repo"
    repo.parent.mkdir()
    run_ostree(f"--repo={repo}", "init", "--mode=archive")
    tree = tmp_path / "tree"
    commits = []
    for version in (1, 2):
        write_version(tree, version)
        run_ostree(f"--repo={repo}", "commit", "-b", REF, f"--subject=v{version}", f"--tree=dir={tree}",
                   "--owner-uid=0", "--owner-gid=0", f"--timestamp=2024-01-0{version}")
        commits.append(run_ostree(f"--repo={repo}", "rev-parse", REF).stdout.strip())
    return repo, commits[0], commits[1], tree


def bare_client(path: Path, source: Path, commit: str) -> Path:
    run_ostree(f"--repo={path}", "init", "--mode=bare-user")
    run_ostree(f"--repo={path}", "pull-local", str(source), commit)
    return path


def object_names(repo: Path) -> set[str]:
    return {str(p.relative_to(repo / "objects")) for p in (repo / "objects").rglob("*") if p.is_file()}


def test_strata_delta_uses_rollsum_and_bsdiff_and_ostree_applies_it(tmp_path: Path) -> None:
    repo, first, second, tree = two_commits(tmp_path)
    made = strata_ostree(f"--repo={repo}", "static-delta", "generate", f"--from={first}", f"--to={second}")
    assert "rollsum=1 objects" in made.stderr and "bsdiff=2 objects" in made.stderr, made.stderr
    name = f"{first}-{second}"
    shown = strata_ostree(f"--repo={repo}", "static-delta", "show", name).stdout
    assert shown == run_ostree(f"--repo={repo}", "static-delta", "show", name).stdout
    assert "open=3 " in shown and "setread=3 " in shown and "bspatch=2" in shown and "Endianness: little" in shown
    client = bare_client(tmp_path / "client", repo, first)
    delta = next((repo / "deltas").glob("*/*-*"))
    run_ostree(f"--repo={client}", "static-delta", "apply-offline", str(delta))
    assert "no errors found" in run_ostree(f"--repo={client}", "fsck").stdout
    run_ostree(f"--repo={client}", "checkout", second, str(tmp_path / "co"))
    assert describe_tree(tmp_path / "co", owners=False) == describe_tree(tree, owners=False)


def test_ostree_delta_applied_by_strata_makes_the_same_objects(tmp_path: Path) -> None:
    repo, first, second, _tree = two_commits(tmp_path)
    made = run_ostree(f"--repo={repo}", "static-delta", "generate", f"--from={first}", f"--to={second}")
    assert "rollsum=1 objects" in made.stderr and "bsdiff=2 objects" in made.stderr, made.stderr
    delta = next((repo / "deltas").glob("*/*-*"))
    by_ostree = bare_client(tmp_path / "by-ostree", repo, first)
    run_ostree(f"--repo={by_ostree}", "static-delta", "apply-offline", str(delta))
    by_strata = bare_client(tmp_path / "by-strata", repo, first)
    strata_ostree(f"--repo={by_strata}", "static-delta", "apply-offline", str(delta))
    assert object_names(by_strata) == object_names(by_ostree)
    assert "no errors found" in run_ostree(f"--repo={by_strata}", "fsck").stdout
    # a delta from a commit the repository lacks is refused before anything is written
    empty = tmp_path / "empty"
    run_ostree(f"--repo={empty}", "init", "--mode=bare-user")
    refused = strata_ostree(f"--repo={empty}", "static-delta", "apply-offline", str(delta), check=False)
    assert refused.returncode == 1
    assert refused.stderr == f"error: Commit {first}, which is the delta source, is not in repository\n"
    assert object_names(empty) == set()


def test_pulls_use_deltas(tmp_path: Path, nginx: Callable[[Path], str]) -> None:
    repo, first, second, _tree = two_commits(tmp_path)
    strata_ostree(f"--repo={repo}", "static-delta", "generate", f"--from={first}", f"--to={second}")
    url = nginx(tmp_path / "www") + "/repo"
    (repo / "refs/heads" / REF).write_text(first + "\n")
    run_ostree(f"--repo={repo}", "summary", "-u")
    client = strata_client(tmp_path / "c", url)
    strata("repo", "pull", "--repo", str(client), "origin", REF)
    ostree_client = tmp_path / "ostree-client"
    run_ostree(f"--repo={ostree_client}", "init", "--mode=bare-user")
    run_ostree(f"--repo={ostree_client}", "remote", "add", "--no-gpg-verify", "origin", url)
    run_ostree(f"--repo={ostree_client}", "pull", "origin", REF)
    (repo / "refs/heads" / REF).write_text(second + "\n")
    run_ostree(f"--repo={repo}", "summary", "-u")
    access_log = next((tmp_path / "nginx").glob("nginx-*/access.log"))
    before = access_log.read_text()
    strata("repo", "pull", "--repo", str(client), "origin", REF)
    requests = access_log.read_text()[len(before):]
    assert "/deltas/" in requests and ".filez" not in requests
    assert Repo.open(client).read_ref(REF, remote="origin") == second
    assert "no errors found" in strata("repo", "fsck", "--repo", str(client)).stdout
    # the real ostree pulls through strata's rollsum and bsdiff operations too (ostree 2022.7 also fetches
    # some of the delta's objects loose while the part executes, with its own deltas as well)
    before = access_log.read_text()
    run_ostree(f"--repo={ostree_client}", "pull", "origin", REF)
    requests = access_log.read_text()[len(before):]
    assert "/deltas/" in requests and "/0 HTTP" in requests
    assert "no errors found" in run_ostree(f"--repo={ostree_client}", "fsck").stdout
    assert object_names(ostree_client) == object_names(client)


def test_pull_through_ostree_made_delta(tmp_path: Path, nginx: Callable[[Path], str]) -> None:
    repo, first, second, _tree = two_commits(tmp_path)
    url = nginx(tmp_path / "www") + "/repo"
    (repo / "refs/heads" / REF).write_text(first + "\n")
    run_ostree(f"--repo={repo}", "summary", "-u")
    client = strata_client(tmp_path / "c", url)
    strata("repo", "pull", "--repo", str(client), "origin", REF)
    (repo / "refs/heads" / REF).write_text(second + "\n")
    run_ostree(f"--repo={repo}", "static-delta", "generate", "--min-fallback-size=1", f"--from={first}",
               f"--to={second}")
    run_ostree(f"--repo={repo}", "summary", "-u")
    fallback = run_ostree(f"--repo={repo}", "static-delta", "show", f"{first}-{second}").stdout
    assert "Number of fallback entries: 1\n" in fallback
    big = fallback.split("Number of fallback entries: 1\n  ")[1].split()[0]
    access_log = next((tmp_path / "nginx").glob("nginx-*/access.log"))
    before = access_log.read_text()
    strata("repo", "pull", "--repo", str(client), "origin", REF)
    requests = access_log.read_text()[len(before):]
    assert "/deltas/" in requests  # executed, not fallen back to objects: only the fallback object comes alone
    assert [line.split()[6].rsplit("/", 1)[1] for line in requests.splitlines() if ".filez" in line] == [
        f"{big[2:]}.filez"]
    assert Repo.open(client).read_ref(REF, remote="origin") == second
    assert "no errors found" in run_ostree(f"--repo={client}", "fsck").stdout
    reference = bare_client(tmp_path / "reference", repo, first)
    run_ostree(f"--repo={reference}", "pull-local", str(repo), second)
    assert object_names(client) == object_names(reference)
