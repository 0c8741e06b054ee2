"""upgrade's downgrade rule (--allow-downgrade, deploy --disallow-downgrade), -C/--cache-only and
--download-only on the base, exit 77, the update alias; db version, search and the help of install."""

from __future__ import annotations

from pathlib import Path

from strata.image.commit import CommitRequest, write_commit
from strata.image.repo import Repo
from strata.sysroot.sysroot import Sysroot
from tests.conftest import LAB_REF
from tests.core.test_client import Lab, lab_sysroot, served_lab_sysroot

__all__ = ["lab_sysroot"]


def _deployment_keys(box: Lab) -> list[tuple[str, str]]:
    return [d.key for d in Sysroot.open(box.root).deployments()]



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
    before = _deployment_keys(box)
    assert "Downloaded; nothing deployed" in box.run("install", "--download-only", "htop").stdout
    assert _deployment_keys(box) == before
    assert "Added:\n  htop-3.2.2-2.x86_64" in box.run("install", "-C", "htop").stdout  # cached now
    disabled = box.run("install", "--disablerepo=*", "nano", check=False)
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
    box, server = served_lab_sysroot(lab, lab_repo, tmp_path)
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
    assert Sysroot.open(box.root).deployments()[0].csum == older

    newer = _commit_at(server, first, timestamp + 3600, "1.1")
    cached = box.run("upgrade", "-C", "--unchanged-exit-77", check=False)
    assert cached.returncode == 77  # the newer commit is not pulled
    assert "Update downloaded." in box.run("upgrade", "--download-only").stdout
    assert Sysroot.open(box.root).deployments()[0].csum == older
    box.run("upgrade", "-C")
    assert Sysroot.open(box.root).deployments()[0].csum == newer
    disallowed = box.run("deploy", "--disallow-downgrade", f"revision={first}", check=False)
    assert disallowed.returncode == 1 and "chronologically older" in disallowed.stderr
