"""The rpm-ostree lab, step by step, on a directory sysroot: status fields, origins, package diffs, what
runs inside the deployment, the rpmdb as the real rpm reads it, and the errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from strata.image.keyfile import KeyFile
from strata.image.repo import Repo
from strata.image.transfer import pull_local
from strata.sysroot.sysroot import Sysroot
from tests.conftest import LAB_REF

ORIGIN_REF = f"lab:{LAB_REF}"


def strata(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "strata.cli.main", *args], capture_output=True, text=True,
                          check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"strata {' '.join(args)} failed: {proc.stderr}")
    return proc


class Lab:
    def __init__(self, root: Path, distro: Path) -> None:
        self.root = root
        self.distro = distro

    def run(self, verb: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        words = verb.split()
        return strata(*words, "--sysroot", str(self.root), *args, check=check)

    def admin(self, verb: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return strata("admin", verb, "--sysroot", str(self.root), *args, check=check)

    def inside(self, *argv: str) -> str:
        return self.admin("run", "--", *argv).stdout

    def status(self) -> str:
        return self.run("status").stdout

    def default_origin(self) -> KeyFile:
        sysroot = Sysroot.open(self.root)
        return sysroot.read_origin(sysroot.deployments()[0])

    def rpm_qa(self) -> list[str]:
        sysroot = Sysroot.open(self.root)
        dep = sysroot.booted()
        assert dep is not None
        out = subprocess.run(["rpm", "--root", str(sysroot.deployment_dir(dep)), "--dbpath", "/usr/share/rpm",
                              "-qa", "--qf", "%{NAME}\n"], capture_output=True, text=True, check=True).stdout
        return sorted(out.split())


def booted_lab(lab: Path, remote_repo: Path, sysroot_dir: Path, *deploy_options: str) -> Lab:
    """A sysroot with stateroot `lab` whose remote `lab` is remote_repo, its lab ref deployed and booted."""
    root = Sysroot.init_fs(sysroot_dir)
    root.os_init("lab")
    pull_local(Repo.open(remote_repo), root.repo, [LAB_REF], remote="lab")
    root.repo.config.set('remote "lab"', "url", f"file://{remote_repo}")
    root.repo.save_config()
    box = Lab(root.path, lab)
    box.admin("deploy", "--os=lab", *deploy_options, ORIGIN_REF)
    box.admin("boot")
    return box


def served_lab_sysroot(lab: Path, lab_repo: Path, tmp_path: Path, *deploy_options: str) -> tuple[Lab, Path]:
    """A booted lab sysroot whose remote is a private copy of the lab repository, to publish new commits into."""
    server = tmp_path / "server"
    subprocess.run(["cp", "-a", str(lab_repo), str(server)], check=True)
    return booted_lab(lab, server, tmp_path / "sysroot", *deploy_options), server


@pytest.fixture
def lab_sysroot(lab_repo: Path, lab: Path, tmp_path: Path) -> Lab:
    return booted_lab(lab, lab_repo, tmp_path / "sysroot", "--karg=rw")


def test_layering_lab(lab_sysroot: Lab) -> None:
    box = lab_sysroot
    status = box.status()
    assert status.startswith("State: idle\nDeployments:\n● lab:strata-lab/x86_64/base\n")
    assert "                  Version: 1 (" in status and "                   Commit: " in status

    out = box.run("install", "htop").stdout
    for line in ("Checking out tree", "Enabled rpm-md repositories: lab", "Resolving dependencies" if False else
                 "Importing packages... done", "Running pre scripts... done", "Writing rpmdb... done",
                 "Staging deployment... done", "Added:\n  htop-3.2.2-2.x86_64",
                 'Changes queued for next boot. Run "strata admin boot --sysroot '):
        assert line in out, line
    status = box.status()
    assert "          LayeredPackages: htop" in status and "                     Diff: 3 added" in status
    assert "               BaseCommit: " in status
    origin = box.default_origin()
    assert origin.get("origin", "baserefspec") == ORIGIN_REF and origin.get_list("packages", "requested") == ["htop"]

    box.admin("boot")
    assert box.inside("htop", "--version").startswith("htop 3.2.2")
    assert "htop" in box.rpm_qa() and "libnl-3-200" in box.rpm_qa()

    out = box.run("install", "--apply-live", "nano").stdout
    assert "Successfully updated running filesystem tree." in out and "nano-7.2" in out
    assert "GNU nano" in box.inside("nano", "--version")
    status = box.status()
    assert "LiveCommit:" in status and "LiveDiff: 1 added" in status

    out = box.run("override remove", "strace").stdout
    assert "Removed:\n  strace-" in out and 'Use "strata override reset" to undo overrides' in out
    updates = sorted(str(p) for p in (box.distro / "lab-updates" / "Packages").glob("*.rpm"))
    out = box.run("override replace", *updates).stdout
    assert "demo-engine 1.13.1-21 -> 1.13.1-22" in out
    status = box.status()
    assert "      RemovedBasePackages: strace 6.1-0.1" in status
    assert "           LocalOverrides: demo-engine demo-engine-common demo-engine-plugin 1.13.1-21 -> 1.13.1-22" \
        in status
    box.admin("boot")
    assert "demo-engine 1.13.1-22" in box.inside("demo-engine")
    assert "strace" not in box.rpm_qa()
    assert subprocess.run(["true"]).returncode == 0
    assert box.admin("run", "--", "strace", "-V", check=False).returncode != 0

    box.run("reset")
    box.admin("boot")
    assert "htop" not in box.rpm_qa() and "strace" in box.rpm_qa()
    assert "LayeredPackages" not in box.status().split("\n\n")[0]
    box.run("rollback")
    box.admin("boot")
    assert "demo-engine 1.13.1-22" in box.inside("demo-engine")


def test_etc_edits_survive_transactions(lab_sysroot: Lab) -> None:
    box = lab_sysroot
    box.inside("/usr/bin/bash", "-c", "echo 'admin was here' > /etc/motd-local")
    box.run("install", "htop")
    box.admin("boot")
    assert box.inside("cat", "/etc/motd-local") == "admin was here\n"
    box.run("override remove", "strace")
    box.admin("boot")
    assert box.inside("cat", "/etc/motd-local") == "admin was here\n"


@pytest.mark.parametrize(("verb", "args", "message"), [
    ("install", ["no-such-package"], "Packages not found: no-such-package"),
    ("install", ["bash"], '"bash" is already provided by: bash-'),
    ("install", ["test-conflict-a", "test-conflict-b"], "conflicts with test-conflict"),
    ("override remove", ["htop"], 'Package "htop" not found'),
    ("uninstall", ["htop"], "Package/capability 'htop' is not currently requested"),
    ("apply-live", [], "No target commit specified and no pending deployment"),
])
def test_client_errors_change_nothing(lab_sysroot: Lab, verb: str, args: list[str], message: str) -> None:
    box = lab_sysroot
    before = box.status()
    proc = box.run(verb, *args, check=False)
    assert proc.returncode == 1, proc.stdout
    assert message in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert box.status() == before


def test_apply_live_refuses_modifications(lab_sysroot: Lab) -> None:
    box = lab_sysroot
    box.run("override remove", "strace")
    proc = box.run("apply-live", check=False)
    assert "packages would be removed: 1, allow replacement to override" in proc.stderr


def test_already_requested_and_locked(lab_sysroot: Lab) -> None:
    box = lab_sysroot
    box.run("install", "htop")
    proc = box.run("install", "htop", check=False)
    assert "Package/capability 'htop' is already requested" in proc.stderr
    assert box.run("install", "--idempotent", "htop").returncode == 0
    import fcntl
    with open(box.root / "ostree/lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = box.run("install", "nano", check=False)
    assert "another transaction is in progress" in proc.stderr


def test_guest_stateroot_keeps_host_default(lab_sysroot: Lab) -> None:
    box = lab_sysroot
    box.admin("os-init", "guest")
    box.admin("deploy", "--os=guest", "--not-as-default", ORIGIN_REF)
    out = box.run("install", "--os=guest", "htop").stdout
    assert "Staging deployment" not in out
    sysroot = Sysroot.open(box.root)
    deps = sysroot.deployments()
    assert deps[0].stateroot == "lab" and not any(d.staged for d in deps)
    assert "htop 3.2.2" in box.admin("run", "--os=guest", "--", "htop", "--version").stdout
    box.admin("boot")
    assert Sysroot.open(box.root).booted().stateroot == "lab"  # type: ignore[union-attr]


def _compose_variant(lab: Path, repo: Path, tmp: Path, name: str, **changes: object) -> str:
    import json

    from strata.core.compose import ComposeOptions, compose_tree
    from tests.lab import copy_treefile_dir
    treefile = copy_treefile_dir(lab, tmp / name)
    data = json.loads(treefile.read_text())
    data.update(changes)
    treefile.write_text(json.dumps(data))
    result = compose_tree(treefile, ComposeOptions(repo=repo, cachedir=tmp / "cache"), lambda _line: None)
    assert result.commit is not None
    return result.commit


def test_upgrade_deploy_version_and_rebase(lab: Path, lab_repo: Path, tmp_path: Path) -> None:
    box, server = served_lab_sysroot(lab, lab_repo, tmp_path)
    box.run("install", "htop", "nano")
    box.admin("boot")
    assert "No upgrade available." in box.run("upgrade").stdout

    packages = [*json_packages(lab), "htop"]
    _compose_variant(lab, server, tmp_path, "v2", packages=packages)
    out = box.run("upgrade").stdout
    assert "Inactive requests:\n  htop (already provided by htop-3.2.2-2.x86_64)" in out
    assert 'Run "strata admin boot --sysroot' in out and "No change." not in out
    box.admin("boot")
    status = box.run("status", "-v").stdout
    assert "                  Version: 1.1 (" in status
    assert "         InactiveRequests: htop" in status and "          LayeredPackages: nano" in status
    assert "GNU nano" in box.inside("nano", "--version") and "htop 3.2.2" in box.inside("htop", "--version")

    out = box.run("deploy", "1").stdout
    assert "Resolving version '1'" in out
    box.admin("boot")
    assert "                  Version: 1 (" in box.status().split("\n\n")[0]
    assert box.default_origin().get("origin", "override-commit") is not None
    missing = box.run("deploy", "9.9", check=False)
    assert "Version 9.9 not found in lab:strata-lab/x86_64/base" in missing.stderr

    _compose_variant(lab, server, tmp_path, "devel", ref="strata-lab/x86_64/devel", packages=packages)
    box.run("rebase", "strata-lab/x86_64/devel")
    box.admin("boot")
    assert box.status().split("\n")[2] == "● lab:strata-lab/x86_64/devel"
    assert box.run("rebase", "lab:strata-lab/x86_64/devel", check=False).returncode == 1
    box.run("rebase", "strata-lab/x86_64/base")
    box.admin("boot")
    assert box.status().split("\n")[2] == "● lab:strata-lab/x86_64/base"
    assert "GNU nano" in box.inside("nano", "--version")


def json_packages(lab: Path) -> list[str]:
    import json
    packages: list[str] = json.loads((lab / "lab.json").read_text())["packages"]
    return packages


def test_db_diff_defaults_refresh_md_and_cancel(lab_sysroot: Lab) -> None:
    box = lab_sysroot
    missing = strata("db", "diff", "--sysroot", str(box.root), check=False)
    assert "No pending or rollback deployment to diff against" in missing.stderr
    box.run("install", "htop")
    out = strata("db", "diff", "--sysroot", str(box.root)).stdout
    assert "Added:\n  htop-3.2.2-2.x86_64" in out
    assert "rpm-md repo 'lab'" in box.run("refresh-md").stdout
    assert box.run("cancel").stdout == "No active transaction.\n"
    assert "packages would be" not in box.run("ex livefs").stderr


def test_local_rpm_layering_and_cleanup_pending(lab_sysroot: Lab) -> None:
    box = lab_sysroot
    rpm = next((box.distro / "lab" / "Packages").glob("test-noarch-*.rpm"))
    out = box.run("install", str(rpm)).stdout
    assert "Added:\n  test-noarch-1.0-1.noarch" in out
    assert "            LocalPackages: test-noarch-1.0-1.noarch" in box.status()
    entry = box.default_origin().get_list("packages", "requested-local")[0]
    assert entry.endswith(":test-noarch-1.0-1.noarch") and len(entry.split(":")[0]) == 64
    again = box.run("install", str(rpm), check=False)
    assert "Package 'test-noarch-1.0-1.noarch' is already layered" in again.stderr
    box.run("cleanup", "-p")
    assert "LocalPackages" not in box.status()
    assert box.run("cleanup", "-p").stdout == "Deployments unchanged.\n"
    assert "At least one cleanup option must be specified" in box.run("cleanup", check=False).stderr


def test_upgrade_and_deploy_over_http(lab: Path, lab_repo: Path, tmp_path: Path) -> None:
    from tests.pull.nginx import start_nginx, stop_nginx
    server = tmp_path / "www" / "repo"
    server.parent.mkdir()
    subprocess.run(["cp", "-a", str(lab_repo), str(server)], check=True)
    strata("repo", "summary", "-u", "--repo", str(server))
    url, pid_file = start_nginx(server.parent, tmp_path / "nginx")
    try:
        root = Sysroot.init_fs(tmp_path / "sysroot")
        root.os_init("lab")
        strata("repo", "remote", "add", "--repo", str(root.repo.path), "lab", f"{url}/repo")
        strata("repo", "pull", "--repo", str(root.repo.path), "lab", LAB_REF)
        box = Lab(root.path, lab)
        box.admin("deploy", "--os=lab", ORIGIN_REF)
        box.admin("boot")
        _compose_variant(lab, server, tmp_path, "v2", packages=[*json_packages(lab), "htop"])
        strata("repo", "summary", "-u", "--repo", str(server))
        out = box.run("upgrade").stdout
        assert "Receiving objects" in out and 'Run "strata admin boot --sysroot' in out
        box.admin("boot")
        assert "htop 3.2.2" in box.inside("htop", "--version")
        box.run("deploy", "1")
        box.admin("boot")
        assert box.admin("run", "--", "htop", "--version", check=False).returncode != 0
        assert "no errors found" in strata("repo", "fsck", "--repo", str(root.repo.path)).stdout
    finally:
        stop_nginx(pid_file)
