"""`strata bisect` against a server (an archive repo behind nginx) publishing 16 builds of the lab tree, where
build 11 brings a demo-engine update whose program fails: bisect names build 11, fetching the content of the
builds it tries only, and reset puts the sysroot back as it was."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from strata.image.commit import load_mutable_tree, write_mutable_tree
from strata.image.objects import Commit, FileMeta, ObjectType, vardict
from strata.image.repo import Repo
from strata.sysroot.sysroot import Sysroot
from tests.conftest import LAB_REF
from tests.core.test_client import ORIGIN_REF, Lab, strata
from tests.pull.nginx import start_nginx, stop_nginx

BUILDS = 16
FIRST_BROKEN = 11
BROKEN_ENGINE = b"#!/bin/sh\necho 'demo-engine: cannot load plugin' >&2\nexit 1\n"


@dataclass
class Server:
    url: str
    repo: Path
    access_log: Path
    commits: list[str]  # commits[n - 1] is build n

    def fetched_builds(self, since: int) -> set[int]:
        """The builds whose root dirtree was requested after byte `since` of nginx's access log."""
        roots = {Repo.open(self.repo).load_commit(c).root_tree: n for n, c in enumerate(self.commits, 1)}
        lines = self.access_log.read_bytes()[since:].decode().splitlines()
        requested = {m[1] + m[2] for line in lines if (m := re.search(r"/objects/(..)/(\w{62})\.dirtree", line))}
        return {n for root, n in roots.items() if root in requested}


def publish_builds(repo_path: Path) -> list[str]:
    """Builds 1..16 of the composed lab tree, each with its own /usr/share/strata-build; from build 11 on,
    demo-engine 1.13.1-22 (in the package list) whose program exits 1."""
    repo = Repo.open(repo_path)
    head = repo.resolve_rev(LAB_REF)
    assert head is not None
    base = repo.load_commit(head)
    tree = load_mutable_tree(repo, base.root_tree, base.root_meta)
    usr_bin, usr_share = tree.lookup_dir("usr/bin"), tree.lookup_dir("usr/share")
    assert usr_bin is not None and usr_share is not None
    working = usr_bin.files["demo-engine"]
    packages = base.meta("rpmostree.rpmdb.pkglist")
    updated = [(n, e, v, "22" if n.startswith("demo-engine") and r == "21" else r, a) for n, e, v, r, a in packages]
    assert updated != packages
    kept = [(k, v) for k, v in base.metadata if k not in ("version", "rpmostree.rpmdb.pkglist")]
    commits: list[str] = []
    with repo.lock():
        broken = repo.write_content(FileMeta(0, 0, 0o100755), BROKEN_ENGINE)
        for n in range(1, BUILDS + 1):
            usr_share.files["strata-build"] = repo.write_content(FileMeta(0, 0, 0o100644), f"{n}\n".encode())
            usr_bin.files["demo-engine"] = broken if n >= FIRST_BROKEN else working
            metadata = kept + vardict([("version", "s", str(n)), ("rpmostree.rpmdb.pkglist", "a(sssss)",
                                       updated if n >= FIRST_BROKEN else packages)])
            commit = Commit(metadata, commits[-1] if commits else None, f"build {n}", "", base.timestamp + 60 * n,
                            *write_mutable_tree(repo, tree))
            commits.append(repo.write_metadata(ObjectType.COMMIT, commit.serialize()))
        repo.set_ref(LAB_REF, commits[-1])
    strata("repo", "summary", "-u", "--repo", str(repo_path))
    return commits


@pytest.fixture(scope="module")
def server(lab_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("bisect-server")
    (work / "www").mkdir()
    subprocess.run(["cp", "-a", str(lab_repo), str(work / "www" / "repo")], check=True)
    commits = publish_builds(work / "www" / "repo")
    url, pid_file = start_nginx(work / "www", work / "nginx")
    try:
        yield Server(f"{url}/repo", work / "www" / "repo", pid_file.parent / "access.log", commits)
    finally:
        stop_nginx(pid_file)


@pytest.fixture
def box(server: Server, lab: Path, tmp_path: Path) -> Lab:
    """A sysroot on build 16 (pulled over HTTP), booted."""
    root = Sysroot.init_fs(tmp_path / "sysroot")
    root.os_init("lab")
    strata("repo", "remote", "add", "--repo", str(root.repo.path), "--no-gpg-verify", "lab", server.url)
    strata("repo", "pull", "--repo", str(root.repo.path), "lab", LAB_REF)
    lab_box = Lab(root.path, lab)
    lab_box.admin("deploy", "--os=lab", ORIGIN_REF)
    lab_box.admin("boot")
    return lab_box


def _deployments(box: Lab) -> list[tuple[str, bool]]:
    sysroot = Sysroot.open(box.root)
    return [(d.name, sysroot.is_pinned(d)) for d in sysroot.deployments()]


def _status(box: Lab) -> dict[str, object]:
    data: dict[str, object] = json.loads(box.run("bisect status", "--json").stdout)
    return data


def _assert_reset(box: Lab, before: list[tuple[str, bool]]) -> None:
    out = box.run("bisect reset").stdout
    assert f"Default deployment: lab {before[0][0]}" in out
    assert _deployments(box) == before
    booted = Sysroot.open(box.root).booted()
    assert booted is not None and booted.name == before[0][0]
    assert not (box.root / "ostree/deploy/lab/var/lib/strata/bisect.json").exists()
    assert "Not bisecting" in box.run("bisect status", check=False).stderr


def test_bisect_run_finds_build_11(server: Server, box: Lab) -> None:
    before = _deployments(box)
    log_offset = server.access_log.stat().st_size
    out = box.run("bisect start", "--good", "1", "--bad", "16", "--run", "demo-engine").stdout
    assert f"Build 11 is the first bad build\n  Commit: {server.commits[10]}\n" in out
    assert f"  Last good: 10 ({server.commits[9]})" in out
    assert "Upgraded:\n  demo-engine 1.13.1-21 -> 1.13.1-22\n" in out
    assert "cannot load plugin" in out or "exit status 1: bad" in out

    status = _status(box)
    steps = status["steps"]
    assert isinstance(steps, list) and 1 <= len(steps) <= 5 and all(s["by"] == "run" for s in steps)
    assert status["first-bad"] == {"version": "11", "commit": server.commits[10]} and status["done"] is True
    tried = {int(s["version"]) for s in steps}
    assert server.fetched_builds(log_offset) == tried
    repo = Repo.open(box.root / "ostree" / "repo")
    with_content = {n for n, c in enumerate(server.commits, 1)
                    if repo.has_object(c, ObjectType.COMMIT)
                    and repo.has_object(repo.load_commit(c).root_tree, ObjectType.DIRTREE)}
    assert with_content <= tried | {16}
    assert "no errors found" in strata("repo", "fsck", "--repo", str(repo.path)).stdout
    assert box.run("bisect log").stdout.count(" # run") == len(steps)
    _assert_reset(box, before)


def test_bisect_manual_steps_and_bad_input(server: Server, box: Lab) -> None:
    before = _deployments(box)
    for good, bad, message in (("12", "4", "good build 12 is not an ancestor of bad build 4"),
                               ("99", "16", "Version 99 not found in lab:strata-lab/x86_64/base"),
                               ("1", "1", "good and bad name the same build")):
        failed = box.run("bisect start", "--good", good, "--bad", bad, check=False)
        assert failed.returncode == 1 and failed.stderr == f"error: {message}\n"
        assert _deployments(box) == before
    assert "Not bisecting" in box.run("bisect good", check=False).stderr

    out = box.run("bisect start", "--good", "1", "--bad", server.commits[15]).stdout
    assert "Next: reboot into it" in out and _deployments(box)[1] == (before[0][0], True)
    assert "The booted deployment is not build" in box.run("bisect good", check=False).stderr
    verdicts = []
    for _ in range(8):
        box.admin("boot")
        build = int(box.inside("cat", "/usr/share/strata-build"))
        verdict = "skip" if not verdicts else "bad" if build >= FIRST_BROKEN else "good"
        verdicts.append(verdict)
        out = box.run(f"bisect {verdict}").stdout
        if "first bad build" in out:
            break
    assert "skip" in verdicts and f"Build 11 is the first bad build\n  Commit: {server.commits[10]}\n" in out
    assert _status(box)["first-bad"] == {"version": "11", "commit": server.commits[10]}
    assert "Bisect is finished (first bad build: 11)" in box.run("bisect bad", check=False).stderr
    _assert_reset(box, before)


def test_skipped_builds_leave_candidates(tmp_path: Path) -> None:
    from strata.core.bisect import BisectState, Build, state_path
    sysroot = Sysroot.init_fs(tmp_path / "sysroot")
    sysroot.os_init("lab")
    builds = [Build(f"{n:064x}", str(n)) for n in range(1, 5)]
    state = BisectState("lab", "lab:ref", "x.0", False, [], builds, good=0, bad=3, skipped=[1])
    path = state_path(sysroot, "lab")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(state.to_json()))
    root = str(sysroot.path)
    assert "is not newer than the good build 1" in strata("bisect", "bad", "1", "--sysroot", root,
                                                          check=False).stderr
    out = strata("bisect", "skip", "3", "--sysroot", root).stdout
    assert out == "There are only skipped builds left to test. The first bad build could be any of: 2, 3, 4\n"
    status = json.loads(strata("bisect", "status", "--json", "--sysroot", root).stdout)
    assert status["done"] is True and status["first-bad"] is None
    assert [c["version"] for c in status["candidates"]] == ["2", "3", "4"]
    assert strata("bisect", "log", "--sysroot", root).stdout.splitlines()[1:] == [f"skip 3 ({builds[2].commit})"]
    path.write_text("{")
    assert "unreadable bisect state" in strata("bisect", "status", "--sysroot", root, check=False).stderr
