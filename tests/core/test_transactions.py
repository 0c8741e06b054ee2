"""Regression tests for the user sequences of issue 10 that broke systems, each run through the CLI on a lab
sysroot, with the invariant checker run after the sequence."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from strata.core.invariants import check_invariants
from strata.sysroot.sysroot import STAGED_STATE, Sysroot
from tests.conftest import LAB_REF, run_ostree
from tests.core.test_client import ORIGIN_REF, Lab, lab_sysroot, served_lab_sysroot, strata

__all__ = ["lab_sysroot"]


def sound(box: Lab) -> None:
    assert check_invariants(Sysroot.open(box.root)) == []


def booted_cmdline(box: Lab) -> list[str]:
    """The kernel arguments the sysroot booted with, without ostree=."""
    return [a for a in (box.root / "run/strata/cmdline").read_text().split() if not a.startswith("ostree=")]


@pytest.fixture
def served_lab(lab: Path, lab_repo: Path, tmp_path: Path) -> tuple[Lab, Path]:
    """A booted lab sysroot whose remote is a private copy of the lab repo, to publish new bases into."""
    box, server = served_lab_sysroot(lab, lab_repo, tmp_path, "--karg=rw")
    return box, server


def publish_same_tree(server: Path, version: str) -> str:
    """A new base commit on the lab ref: the same tree, a new version, no rpm package list (like a plain
    OSTree commit)."""
    run_ostree("commit", f"--repo={server}", "-b", LAB_REF, f"--tree=ref={LAB_REF}", "-s", f"base {version}",
               f"--add-metadata-string=version={version}")
    return run_ostree("rev-parse", f"--repo={server}", LAB_REF).stdout.strip()


def test_case1_cleanup_keeps_the_bases_of_layered_deployments(served_lab: tuple[Lab, Path]) -> None:
    box, server = served_lab
    box.run("install", "htop")
    box.admin("boot")
    old_base = Sysroot.open(box.root).repo.read_ref(LAB_REF, remote="lab")
    publish_same_tree(server, "2")
    box.run("upgrade")
    box.admin("boot")
    box.run("rollback")
    box.admin("boot")  # booted: version 1 + htop; its base is on no remote ref any more
    box.run("cleanup", "-b")
    box.admin("cleanup")
    repo = Sysroot.open(box.root).repo
    assert old_base is not None and old_base in repo.list_refs("rpmostree/base", remotes=False).values()
    assert "                  Version: 1 (" in box.status()
    box.run("install", "nano")
    box.admin("boot")
    assert "GNU nano" in box.inside("nano", "--version") and "htop 3.2.2" in box.inside("htop", "--version")
    box.run("reset")
    box.admin("boot")
    assert box.admin("run", "--", "htop", "--version", check=False).returncode != 0
    sound(box)


def test_case2_guest_write_keeps_the_hosts_staged_deployment(lab_sysroot: Lab) -> None:
    box = lab_sysroot
    box.admin("os-init", "guest")
    box.admin("deploy", "--os=guest", "--not-as-default", ORIGIN_REF)
    box.run("install", "htop")
    staged_state = (box.root / STAGED_STATE).read_bytes()
    rpm = next((box.distro / "lab" / "Packages").glob("test-noarch-*.rpm"))
    out = box.run("install", "--os=guest", str(rpm)).stdout
    assert "Changes written to stateroot 'guest', which is not the next boot" in out
    assert "Changes queued for next boot" not in out
    assert (box.root / STAGED_STATE).read_bytes() == staged_state
    sound(box)
    box.admin("boot")
    assert "htop 3.2.2" in box.inside("htop", "--version")
    assert "test-noarch works" in box.admin("run", "--os=guest", "--", "test-noarch").stdout


@pytest.mark.parametrize(("verb", "packages", "unsatisfied"), [
    ("override remove", ["demo-engine-common"], ["demo-engine-common"]),
    ("override replace", ["demo-engine-1.13.1-22.x86_64.rpm"], ["demo-engine-common = 1.13.1-22"]),
])
def test_case3_overrides_are_solved_as_a_whole(lab_sysroot: Lab, verb: str, packages: list[str],
                                               unsatisfied: list[str]) -> None:
    box = lab_sysroot
    before = box.status()
    updates = box.distro / "lab-updates" / "Packages"
    args = [str(updates / p) if p.endswith(".rpm") else p for p in packages]
    proc = box.run(verb, *args, check=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "error: Could not depsolve transaction;" in proc.stderr
    for requirement in unsatisfied:
        assert f"requires {requirement}" in proc.stderr, proc.stderr
    assert box.status() == before


def test_case4_kargs_accumulate_on_the_pending_deployment(lab_sysroot: Lab) -> None:
    box = lab_sysroot
    box.run("kargs", "--append=a=1")
    box.run("kargs", "--append=b=2")
    assert box.run("kargs").stdout.split() == ["rw", "a=1", "b=2"]
    box.run("install", "htop")
    assert box.run("kargs").stdout.split() == ["rw", "a=1", "b=2"]
    box.run("kargs", "--delete=a=1")
    box.admin("boot")
    assert booted_cmdline(box) == ["rw", "b=2"]
    assert "htop 3.2.2" in box.inside("htop", "--version")
    sound(box)


def test_case5_apply_live_applies_removals(lab_sysroot: Lab) -> None:
    box = lab_sysroot
    assert box.admin("run", "--", "strace", "-V", check=False).returncode == 0
    box.run("override remove", "strace")
    out = box.run("apply-live", "--allow-replacement").stdout
    assert "Removed:\n  strace-" in out
    assert box.admin("run", "--", "strace", "-V", check=False).returncode != 0
    box.run("cleanup", "-p")
    box.admin("boot")  # the pending deployment is gone: the original boots, live changes dropped
    assert box.admin("run", "--", "strace", "-V", check=False).returncode == 0
    sound(box)


def test_case6_verbs_work_on_commits_without_package_lists(lab_sysroot: Lab) -> None:
    box = lab_sysroot
    repo = box.root / "ostree/repo"
    for version in ("p1", "p2"):
        run_ostree("commit", f"--repo={repo}", "-b", "plain", f"--tree=ref=lab:{LAB_REF}", "-s", version,
                   f"--add-metadata-string=version={version}")
        box.admin("deploy", "--os=lab", "plain")
        box.admin("boot")
    assert "                  Version: p2 (" in box.status().split("\n\n")[0]
    out = box.run("rollback")
    assert out.returncode == 0 and "Added:" not in out.stdout and "Removed:" not in out.stdout
    box.admin("boot")
    assert "                  Version: p1 (" in box.status().split("\n\n")[0]
    assert "● lab:" not in box.run("status", "-v").stdout  # the origin is the local ref "plain"
    box.run("kargs", "--append=plain=1")
    box.admin("boot")
    assert "plain=1" in booted_cmdline(box)
    sound(box)


def _commit_at(repo: Path, tree: Path, timestamp: int) -> str:
    proc = strata("repo", "commit", "--repo", str(repo), "-b", "main", f"--tree=dir={tree}",
                  f"--timestamp=@{timestamp}", "-s", str(timestamp))
    return proc.stdout.strip().split()[-1]


def test_case7_prune_keep_younger_than_deletes_older_history(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    strata("repo", "init", "--repo", str(repo), "--mode=archive")
    now = int(time.time())
    commits = []
    for index, age_days in enumerate((30, 10, 1)):
        tree = tmp_path / f"tree{index}"
        tree.mkdir()
        (tree / "file").write_text(f"content {index}\n")
        commits.append(_commit_at(repo, tree, now - age_days * 86400))
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(repo), str(copy)], check=True)
    strata("repo", "prune", "--repo", str(repo), "--keep-younger-than=5 days ago")
    run_ostree("prune", f"--repo={copy}", "--keep-younger-than=5 days ago")
    kept = [c for c in commits if (repo / "objects" / c[:2] / f"{c[2:]}.commit").exists()]
    kept_by_ostree = [c for c in commits if (copy / "objects" / c[:2] / f"{c[2:]}.commit").exists()]
    assert kept == kept_by_ostree == [commits[2]]
    strata("repo", "prune", "--repo", str(repo), "--keep-younger-than=2020-01-01")
    assert "no errors found" in strata("repo", "fsck", "--repo", str(repo)).stdout
    refused = strata("repo", "prune", "--repo", str(repo), "--keep-younger-than=not a date", check=False)
    assert refused.returncode == 1 and "Could not parse 'not a date'" in refused.stderr


def _state(box: Lab) -> tuple[str, dict[str, str], list[str]]:
    repo = Sysroot.open(box.root).repo
    deploy_dirs = sorted(str(p.relative_to(box.root)) for p in (box.root / "ostree/deploy").glob("*/deploy/*"))
    deploy_dirs += sorted(f"tmp/{name}" for name in os.listdir(repo.tmp_dir))
    # Packages imported before the cancel stay in the package cache (complete, content-addressed: a cache).
    refs = {name: c for name, c in repo.list_refs(remotes=False).items() if not name.startswith("rpmostree/pkg/")}
    return box.status(), refs, deploy_dirs


def test_case8_busy_state_and_cancel(lab_sysroot: Lab) -> None:
    box = lab_sysroot
    before = _state(box)
    env = dict(os.environ, STRATA_PAUSE_AT="after-assemble", STRATA_PAUSE_SECONDS="120")
    slow = subprocess.Popen([sys.executable, "-m", "strata.cli.main", "install", "--sysroot", str(box.root), "htop"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        status = _wait_busy(box)
        assert status.startswith("State: busy\nTransaction: install htop\n  Initiator: client(id:cli pid:")
        assert f"pid:{slow.pid} " in status and "strata install --sysroot" in status
        locked = box.run("uninstall", "htop", check=False)
        assert "another transaction is in progress: install htop (pid" in locked.stderr
        cancel = box.run("cancel")
        assert cancel.stdout == "Cancelled transaction: install htop\n"
        _out, err = slow.communicate(timeout=60)
    finally:
        if slow.poll() is None:
            slow.kill()
    assert slow.returncode == 1 and err == "error: Transaction cancelled\n"
    assert _state(box) == before
    assert not (box.root / STAGED_STATE).exists()
    assert box.run("cancel").stdout == "No active transaction.\n"
    assert "htop" in box.run("install", "htop").stdout
    sound(box)


def _wait_busy(box: Lab) -> str:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = box.status()
        if status.startswith("State: busy"):
            return status
        time.sleep(0.2)
    raise AssertionError("the transaction never showed as busy")


def test_case9_messages(served_lab: tuple[Lab, Path]) -> None:
    box, server = served_lab
    out = box.run("upgrade").stdout
    assert out.count("No upgrade available.") == 1 and "No change." not in out
    first = Sysroot.open(box.root).deployments()[0].csum
    publish_same_tree(server, "2")
    box.run("upgrade")
    out = box.run("deploy", first[:6]).stdout
    assert f'Run "strata admin boot --sysroot {box.root}" to start a reboot' in out
    assert "systemctl" not in out
    box.admin("boot")
    assert Sysroot.open(box.root).booted().csum == first  # type: ignore[union-attr]
    collision = box.run("install", "test-file-collision", check=False)
    assert "file /usr/lib/os-release conflicts between packages strata-release-1.0-1.x86_64 and " \
           "test-file-collision-1.0-1.x86_64" in collision.stderr
    host = strata("status", "--sysroot", "/", check=False)
    assert host.returncode == 1
    assert host.stderr == "error: This system was not booted via libostree; cannot operate\n"


def _sleeping(marker: str) -> bool:
    for entry in Path("/proc").iterdir():
        try:
            if (entry / "cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", marker.encode()]:
                return True
        except OSError:
            continue
    return False


def test_case8_cancel_stops_a_running_package_script(lab_sysroot: Lab, tmp_path: Path) -> None:
    from tests.hostile.rpms import build_hostile_rpm
    box = lab_sysroot
    marker = "117.5"
    rpm = build_hostile_rpm(tmp_path / "rpms", "slow-script", files={"/usr/share/slow-script/README": b"slow\n"},
                            scripts={"post": f"sleep {marker}"})
    before = _state(box)
    slow = subprocess.Popen([sys.executable, "-m", "strata.cli.main", "install", "--sysroot", str(box.root),
                             str(rpm)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not _sleeping(marker):
            assert time.monotonic() < deadline and slow.poll() is None, "the package script never ran"
            time.sleep(0.2)
        assert box.run("cancel").stdout == f"Cancelled transaction: install {rpm}\n"
        _out, err = slow.communicate(timeout=60)
    finally:
        if slow.poll() is None:
            slow.kill()
    assert slow.returncode == 1 and err.endswith("error: Transaction cancelled\n")
    deadline = time.monotonic() + 10
    while _sleeping(marker):
        assert time.monotonic() < deadline, "the package script outlived its transaction"
        time.sleep(0.2)
    assert _state(box) == before
    sound(box)


def test_staging_again_after_undeploy_keeps_every_deployment_ref(lab_sysroot: Lab) -> None:
    """Found by the model test: a second staging numbered its ref after the listed deployments, on top of the
    last one's (the staged deployment is ref 0 once the deployment list was rewritten)."""
    box = lab_sysroot
    box.admin("os-init", "guest")
    box.admin("deploy", "--os=guest", "--not-as-default", ORIGIN_REF)
    rpm = next((box.distro / "lab" / "Packages").glob("test-noarch-*.rpm"))
    box.run("install", "--os=guest", str(rpm))  # a guest commit of its own, listed last but one
    box.run("install", "htop")
    box.admin("undeploy", "3")
    out = box.run("kargs", "--append=k2=2")
    assert "Kernel arguments updated." in out.stdout
    sound(box)


def test_undeploying_the_staged_deployment_keeps_the_others_refs(lab_sysroot: Lab) -> None:
    """Found by the model test: with the staged deployment numbered first, dropping it left the last listed
    deployment's ref beyond the end, where cleanup deleted it (and prune its commit)."""
    box = lab_sysroot
    box.admin("os-init", "guest")
    box.admin("deploy", "--os=guest", "--not-as-default", ORIGIN_REF)
    rpm = next((box.distro / "lab" / "Packages").glob("test-noarch-*.rpm"))
    box.run("install", "--os=guest", str(rpm))
    box.run("uninstall", "--os=guest", "test-noarch")  # the layered guest commit is now listed last
    box.run("install", "htop")
    assert "Deleted deployment" in box.admin("undeploy", "0").stdout
    sound(box)
