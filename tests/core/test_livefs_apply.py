"""apply-live on a lab sysroot through the CLI: only the changed paths of the live tree are touched, nothing is
written through a symlink of the deployment, a kill at any point leaves a tree the next boot restores, new
config files reach /etc unless the admin has one, and the command loads no solver or layering code."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from strata.core.invariants import check_invariants
from strata.sysroot.sysroot import Sysroot
from tests.core.test_client import Lab, booted_lab

Snapshot = dict[str, tuple[int, int, str]]  # path -> (inode, mode, content digest or link target)


@pytest.fixture(scope="module")
def nano_pending(lab: Path, lab_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A booted lab sysroot whose pending deployment adds nano (made once, copied by each test)."""
    box = booted_lab(lab, lab_repo, tmp_path_factory.mktemp("live") / "sysroot", "--karg=rw")
    box.run("install", "nano")
    return box.root


@pytest.fixture
def box(nano_pending: Path, lab: Path, tmp_path: Path) -> Lab:
    root = tmp_path / "sysroot"
    subprocess.run(["cp", "-a", str(nano_pending), str(root)], check=True)
    return Lab(root, lab)


def booted_dir(box: Lab) -> Path:
    sysroot = Sysroot.open(box.root)
    booted = sysroot.booted()
    assert booted is not None
    return sysroot.deployment_dir(booted)


def snapshot(tree: Path) -> Snapshot:
    """Every entry of the tree with its inode, mode and content: equal snapshots mean an untouched tree."""
    found: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                content = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                content = ""
            found[str(path.relative_to(tree))] = (st.st_ino, st.st_mode, content)
    return found


def tmp_copy(box: Lab) -> Lab:
    copy = box.root.with_name(box.root.name + "-retry")
    subprocess.run(["cp", "-a", str(box.root), str(copy)], check=True)
    return Lab(copy, box.distro)


def reboot_into_booted_commit(box: Lab) -> None:
    """Drop the pending deployment and reboot: the deployment that was live boots again, without live changes."""
    box.run("cleanup", "-p")
    box.admin("boot")


def test_apply_live_touches_only_the_changed_paths_and_the_next_boot_restores_the_tree(box: Lab) -> None:
    usr = booted_dir(box) / "usr"
    before = snapshot(usr)
    pending_usr = Sysroot.open(box.root).deployment_dir(Sysroot.open(box.root).deployments()[0]) / "usr"
    new_in_pending = {p for p in snapshot(pending_usr) if p not in before and not p.startswith("etc/")}
    out = box.run("apply-live").stdout
    assert "Computed pkg diff: 1 added, 0 changed, 0 removed" in out and "Added:\n  nano-7.2" in out
    after = snapshot(usr)  # before anything runs in the tree (rpm leaves its -wal and -shm files behind)
    assert "GNU nano" in box.inside("nano", "--version")
    changed = {p for p in before if after.get(p) != before[p]}
    assert changed == {"share/rpm/rpmdb.sqlite"}  # the one modified file; the rest kept even its inode
    assert set(after) - set(before) == new_in_pending and "bin/nano" in new_in_pending
    assert "LiveCommit: " in box.status()
    assert check_invariants(Sysroot.open(box.root)) == []

    reboot_into_booted_commit(box)
    assert snapshot(usr) == before  # the replaced rpmdb is the deployment's own file again, same inode
    assert "nano" not in box.rpm_qa() and "LiveCommit" not in box.status()


def test_apply_live_writes_nothing_through_a_symlinked_directory(box: Lab, tmp_path: Path) -> None:
    usr = booted_dir(box) / "usr"
    outside = tmp_path / "outside"
    outside.mkdir()
    os.rename(usr / "bin", usr / "bin.real")
    (usr / "bin").symlink_to(outside)
    proc = box.run("apply-live", check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and "/usr/bin in the tree is not a directory" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    assert list(outside.iterdir()) == []
    assert not (usr / "share/nano").exists() and "LiveCommit" not in box.status()


@pytest.mark.parametrize("crash_at", ["live-undo-recorded", "live-usr-updated"])
def test_a_killed_apply_live_is_undone_by_the_next_boot_or_completed_by_a_retry(box: Lab, crash_at: str) -> None:
    usr = booted_dir(box) / "usr"
    before = snapshot(usr)
    env = {**os.environ, "STRATA_CRASH_AT": crash_at}
    killed = subprocess.run([sys.executable, "-m", "strata.cli.main", "apply-live", "--sysroot", str(box.root)],
                            capture_output=True, text=True, env=env, check=False)
    assert killed.returncode == -signal.SIGKILL
    assert ((usr / "bin/nano").exists()) == (crash_at == "live-usr-updated")

    retry = tmp_copy(box)
    assert "Successfully updated running filesystem tree." in retry.run("apply-live").stdout
    assert "GNU nano" in retry.inside("nano", "--version") and "nano" in retry.rpm_qa()

    reboot_into_booted_commit(box)
    assert snapshot(usr) == before
    assert "nano" not in box.rpm_qa()


def test_an_interrupted_apply_live_may_only_be_retried_with_the_same_target(box: Lab) -> None:
    env = {**os.environ, "STRATA_CRASH_AT": "live-usr-updated"}
    killed = subprocess.run([sys.executable, "-m", "strata.cli.main", "apply-live", "--sysroot", str(box.root)],
                            capture_output=True, text=True, env=env, check=False)
    assert killed.returncode == -signal.SIGKILL
    sysroot = Sysroot.open(box.root)
    pending, booted = sysroot.deployments()[0], sysroot.booted()
    assert booted is not None
    proc = box.run("apply-live", "--reset", check=False)
    assert proc.returncode == 1 and proc.stderr == (f"error: Previously interrupted while targeting commit "
                                                    f"{pending.csum}, cannot change target to {booted.csum}\n")
    assert "Successfully updated running filesystem tree." in box.run("apply-live").stdout
    assert "Successfully updated running filesystem tree." in box.run("apply-live", "--reset").stdout


def test_new_config_files_reach_etc_unless_the_admin_has_one(box: Lab) -> None:
    sysroot = Sysroot.open(box.root)
    shipped = (sysroot.deployment_dir(sysroot.deployments()[0]) / "usr/etc/nanorc").read_text()
    conf = booted_dir(box) / "etc" / "nanorc"
    conf.write_text("set admin\n")
    box.run("apply-live")
    assert conf.read_text() == "set admin\n"

    conf.unlink()
    box.run("apply-live", "--reset", "--allow-replacement")
    assert not conf.exists()
    box.run("apply-live")
    assert conf.read_text() == shipped and "nano" in shipped


def test_the_apply_live_command_loads_no_solver_or_layering_code(box: Lab) -> None:
    probe = ("import json, sys\n"
             "from strata.cli.main import main\n"
             f"code = main(['-q', 'apply-live', '--sysroot', {str(box.root)!r}])\n"
             "print(json.dumps([code, sorted(sys.modules)]))\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    code, modules = json.loads(proc.stdout.splitlines()[-1])
    assert code == 0 and "GNU nano" in box.inside("nano", "--version")
    loaded = set(modules)
    assert loaded.isdisjoint({"solv", "strata.packages.solver", "strata.core.layering", "strata.core.client",
                              "strata.packages.rpmmd", "rpm_rs"}), sorted(loaded & {"solv", "rpm_rs"})
