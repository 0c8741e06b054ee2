"""rpm-ostree's verbs and options beyond the lab walk-through, on the lab sysroot: dry runs that change
nothing, --cache-only refusing downloads, exit 77 when nothing changed, finalization locks, the /usr overlay
dropped at boot, the history, the downgrade rules of upgrade, and the aliases."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from strata.image.commit import CommitRequest, write_commit
from strata.image.repo import Repo
from strata.image.transfer import pull_local
from strata.sysroot.sysroot import Sysroot
from tests.conftest import LAB_REF
from tests.core.test_client import ORIGIN_REF, Lab, lab_sysroot

__all__ = ["lab_sysroot"]


def _deployment_keys(box: Lab) -> list[tuple[str, str]]:
    return [d.key for d in Sysroot.open(box.root).deployments()]


def test_dry_run_cache_only_exit_77_and_history(lab_sysroot: Lab) -> None:
    box = lab_sysroot
    before = _deployment_keys(box)
    dry = box.run("install", "--dry-run", "htop")
    assert "Installing " in dry.stdout and "  htop-3.2.2-2.x86_64 (lab)" in dry.stdout
    assert "Exiting because of '--dry-run' option" in dry.stdout
    refused = box.run("install", "-C", "htop", check=False)
    assert refused.returncode == 1 and "--cache-only" in refused.stderr and "htop" in refused.stderr
    assert _deployment_keys(box) == before

    unchanged = box.run("uninstall", "--idempotent", "--unchanged-exit-77", "htop", check=False)
    assert unchanged.returncode == 77 and "No change." in unchanged.stdout
    assert box.run("kargs", "--append-if-missing=rw", "--unchanged-exit-77", check=False).returncode == 77
    assert box.run("kargs", "--delete-if-present=nothere", "--unchanged-exit-77", check=False).returncode == 77
    no_terminal = box.run("kargs", "--editor", check=False)
    assert no_terminal.returncode == 1 and "needs a terminal" in no_terminal.stderr

    out = box.run("pkg-add", "htop").stdout  # rpm-ostree's old name of install
    assert "Added:\n  htop-3.2.2-2.x86_64" in out and 'Run "strata admin boot --sysroot' in out
    box.run("kargs", "--append-if-missing=quiet")
    history = box.run("ex history", "--limit", "0").stdout
    assert "CreateCommand: strata install htop" in history and "CreateCommand: strata kargs" in history
    assert history.index("kargs") < history.index("install")  # newest first
    box.admin("boot")
    assert "quiet" in box.run("kargs").stdout.split() and "htop" in box.rpm_qa()

    assert "Packages not found" not in box.run("remove", "htop").stdout  # dnf's name of uninstall
    box.admin("boot")
    assert "htop" not in box.rpm_qa()


def test_reset_parts_and_uninstall_all(lab_sysroot: Lab) -> None:
    box = lab_sysroot
    box.run("install", "htop")
    box.run("override remove", "strace")
    out = box.run("reset", "--overlays").stdout
    assert "Removed:\n  strace-" in out and "htop" not in out  # against the booted deployment
    origin = box.default_origin()
    assert origin.get_list("packages", "requested") == [] and origin.get_list("overrides", "remove") == ["strace"]
    box.run("install", "htop")
    box.run("uninstall", "--install=nano", "htop")  # one change: htop out, nano in
    assert box.default_origin().get_list("packages", "requested") == ["nano"]
    box.run("uninstall", "--all")
    origin = box.default_origin()
    assert origin.get_list("packages", "requested") == [] and origin.get_list("overrides", "remove") == ["strace"]
    assert box.run("uninstall", "--all", "--unchanged-exit-77", check=False).returncode == 77


def test_lock_finalization_and_finalize_deployment(lab_sysroot: Lab) -> None:
    box = lab_sysroot
    booted = Sysroot.open(box.root).booted()
    assert booted is not None
    box.run("kargs", "--append=locked=1", "--lock-finalization")
    boot = box.admin("boot").stdout
    assert "Not finalizing" in boot
    sysroot = Sysroot.open(box.root)
    assert sysroot.booted() == booted and "locked=1" not in box.run("kargs").stdout
    assert sysroot.staged_deployment() is None

    box.run("kargs", "--append=locked=2", "--lock-finalization")
    wrong = box.run("finalize-deployment", "0" * 64, check=False)
    assert wrong.returncode == 1 and f"but found {booted.csum}" in wrong.stderr
    out = box.run("finalize-deployment", booted.csum).stdout
    assert "Booted" in out
    assert "locked=2" in box.run("kargs").stdout.split()
    unlocked = box.run("finalize-deployment", "--allow-missing-checksum", check=False)
    assert unlocked.returncode == 1 and "No pending staged deployment found" in unlocked.stderr


def test_usroverlay_is_writable_until_boot(lab_sysroot: Lab) -> None:
    box = lab_sysroot
    sysroot = Sysroot.open(box.root)
    booted = sysroot.booted()
    assert booted is not None
    usr = sysroot.deployment_dir(booted) / "usr"
    bash_inode = (usr / "bin" / "bash").stat().st_ino
    try:
        out = box.run("unlock").stdout  # the alias of usroverlay
        assert "A writable overlayfs is now mounted on /usr" in out and "strata admin boot --sysroot" in out
        assert sysroot.unlocked_state(booted) == "transient" and os.path.ismount(usr)
        again = box.run("usroverlay", check=False)
        assert again.returncode == 1 and "already in unlocked state: transient" in again.stderr
        box.inside("sh", "-c", "echo hotfix > /usr/share/strata-hotfix")
        assert (usr / "share" / "strata-hotfix").read_text() == "hotfix\n"
        (usr / "bin" / "bash").write_bytes(b"overwritten")  # copied up: the object store keeps its file
    finally:
        box.admin("boot")
    assert not os.path.ismount(usr) and sysroot.unlocked_state(booted) == "none"
    assert not (usr / "share" / "strata-hotfix").exists()
    assert (usr / "bin" / "bash").stat().st_ino == bash_inode and (usr / "bin" / "bash").stat().st_size > 1000


def test_db_version_search_and_help(lab_sysroot: Lab) -> None:
    box = lab_sysroot
    booted = Sysroot.open(box.root).booted()
    assert booted is not None
    out = box.run("db version", booted.csum).stdout
    count = len(box.rpm_qa())
    assert out.startswith(f"ostree commit: {booted.csum}\n  rpmdbv is: ") and f" {count}:" in out
    found = box.run("search", "htop").stdout
    assert "===== Summary & Name Matched =====\nhtop : " in found or "===== Name Matched =====\nhtop : " in found
    assert box.run("search", "no-such-package-anywhere").stdout.strip() == "No matches found."
    helptext = box.run("install", "--help").stdout
    for option in ("--dry-run", "--cache-only", "--download-only", "--unchanged-exit-77", "--lock-finalization",
                   "--uninstall PKG", "--enablerepo", "--force-replacefiles", "--assumeyes"):
        assert option in helptext, option
    disabled = box.run("install", "--disablerepo=*", "htop", check=False)
    assert disabled.returncode == 1 and "No enabled rpm-md repositories." in disabled.stdout


def _commit_at(repo_path: Path, parent: str, timestamp: int, version: str) -> str:
    repo = Repo.open(repo_path)
    base = repo.load_commit(parent)
    with repo.lock():
        commit = write_commit(repo, (base.root_tree, base.root_meta), CommitRequest(
            timestamp=timestamp, parent=parent, metadata=[("version", "s", version)]))
    repo.set_ref(LAB_REF, commit)
    return commit


def test_upgrade_downgrade_cache_only_and_download_only(lab: Path, lab_repo: Path, tmp_path: Path) -> None:
    server = tmp_path / "server"
    subprocess.run(["cp", "-a", str(lab_repo), str(server)], check=True)
    root = Sysroot.init_fs(tmp_path / "sysroot")
    root.os_init("lab")
    pull_local(Repo.open(server), root.repo, [LAB_REF], remote="lab")
    root.repo.config.set('remote "lab"', "url", f"file://{server}")
    root.repo.save_config()
    box = Lab(root.path, lab)
    box.admin("deploy", "--os=lab", ORIGIN_REF)
    box.admin("boot")
    first = Repo.open(server).resolve_rev(LAB_REF)
    assert first is not None
    nothing = box.run("update", "--unchanged-exit-77", check=False)
    assert nothing.returncode == 77 and "No upgrade available." in nothing.stdout

    timestamp = Repo.open(server).load_commit(first).timestamp
    older = _commit_at(server, first, timestamp - 3600, "0.9")
    refused = box.run("upgrade", check=False)
    assert refused.returncode == 1 and "chronologically older" in refused.stderr
    assert "--allow-downgrade" in refused.stderr and len(_deployment_keys(box)) == 1
    box.run("upgrade", "--allow-downgrade")
    assert Sysroot.open(root.path).deployments()[0].csum == older

    newer = _commit_at(server, first, timestamp + 3600, "1.1")
    cached = box.run("upgrade", "-C", "--unchanged-exit-77", check=False)
    assert cached.returncode == 77  # the newer commit is not pulled
    assert "Update downloaded." in box.run("upgrade", "--download-only").stdout
    assert Sysroot.open(root.path).deployments()[0].csum == older
    box.run("upgrade", "-C")
    assert Sysroot.open(root.path).deployments()[0].csum == newer
    disallowed = box.run("deploy", "--disallow-downgrade", f"revision={first}", check=False)
    assert disallowed.returncode == 1 and "chronologically older" in disallowed.stderr
