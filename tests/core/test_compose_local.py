"""`compose local` on the lab sysroot: a tree from the booted deployment's packages plus more, the plan shown
first, newer builds pulled in when a new package needs them, `compose trees`, `rebase :local/NAME` and back,
and another sysroot rebasing onto the tree served by nginx."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from strata.image.repo import Repo, RepoMode
from strata.image.transfer import pull_local
from strata.packages.labdistro import Package, build_rpm
from strata.sysroot.sysroot import Sysroot
from tests.conftest import LAB_REF
from tests.core.test_client import ORIGIN_REF, strata
from tests.pull.nginx import start_nginx, stop_nginx


def lab_sysroot(root: Path, url: str, repo: Repo | None = None) -> Path:
    """A directory sysroot with the lab base deployed and booted, remote 'lab' at url."""
    sysroot = Sysroot.init_fs(root)
    sysroot.os_init("lab")
    if repo is not None:
        pull_local(repo, sysroot.repo, [LAB_REF], remote="lab")
    sysroot.repo.config.set('remote "lab"', "url", url)
    sysroot.repo.config.set('remote "lab"', "gpg-verify", False)
    sysroot.repo.save_config()
    strata("admin", "deploy", "--sysroot", str(root), "--os=lab", "--karg=rw", ORIGIN_REF)
    strata("admin", "boot", "--sysroot", str(root))
    return root


def inside(root: Path, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return strata("admin", "run", "--sysroot", str(root), "--", *argv, check=check)


def rpm_qa(root: Path) -> list[str]:
    """The booted deployment's packages as the real rpm reads its rpmdb."""
    sysroot = Sysroot.open(root)
    booted = sysroot.booted()
    assert booted is not None
    out = subprocess.run(["rpm", "--root", str(sysroot.deployment_dir(booted)), "--dbpath", "/usr/share/rpm", "-qa",
                          "--qf", "%{NAME}-%{VERSION}-%{RELEASE}\n"], capture_output=True, text=True, check=True)
    return sorted(out.stdout.split())


@pytest.fixture
def box(lab_repo: Path, tmp_path: Path) -> Path:
    return lab_sysroot(tmp_path / "sysroot", f"file://{lab_repo}", Repo.open(lab_repo))


def test_local_tree_rebase_and_back(box: Path, tmp_path: Path) -> None:
    tool = Package("local-tool", "2.0", summary="a local RPM layered before the local compose")
    tool.add_file("/usr/bin/local-tool", b"#!/bin/sh\necho local-tool works\n", 0o755)
    strata("install", "--sysroot", str(box), str(build_rpm(tool, tmp_path)))
    strata("admin", "boot", "--sysroot", str(box))
    dry = strata("compose", "local", "--sysroot", str(box), "--dry-run", "htop")
    assert "Source: lab deployment " in dry.stdout and "Adding 3 packages:\n  libnl-3-200-" in dry.stdout
    assert "--dry-run complete" in dry.stdout and Sysroot.open(box).repo.read_ref("local/lab") is None

    out = strata("compose", "local", "--sysroot", str(box), "htop").stdout
    assert out.index("Adding 3 packages:") < out.index("Committing")
    commit = Sysroot.open(box).repo.read_ref("local/lab")
    assert commit is not None and f"local/lab => {commit}" in out
    meta = Sysroot.open(box).repo.load_commit(commit)
    source = Sysroot.open(box).booted()
    assert source is not None and meta.meta("strata.local.source-checksum") == source.csum
    assert meta.meta("strata.local.source-refspec") == ORIGIN_REF and meta.version == "1.local"
    assert "requested-local=" in meta.meta("strata.local.source-origin")
    assert "htop-3.2.2-2.x86_64" in meta.meta("strata.local.added")

    trees = strata("compose", "trees", "--sysroot", str(box)).stdout
    assert trees.startswith("local/lab\n    Version: 1.local\n") and "Requested: htop" in trees

    strata("rebase", ":local/lab", "--sysroot", str(box))
    strata("admin", "boot", "--sysroot", str(box))
    assert inside(box, "htop", "--version").stdout.startswith("htop 3.2.2")
    assert "htop-3.2.2-2" in rpm_qa(box) and "local-tool-2.0-1" in rpm_qa(box)
    assert inside(box, "local-tool").stdout == "local-tool works\n"
    assert "● :local/lab" in strata("status", "--sysroot", str(box)).stdout
    assert inside(box, "cat", "/etc/yum.repos.d/strata-lab.repo").stdout.startswith("[lab]")

    strata("rebase", ORIGIN_REF, "--sysroot", str(box))
    strata("admin", "boot", "--sysroot", str(box))
    assert inside(box, "htop", "--version", check=False).returncode != 0
    assert Sysroot.open(box).repo.read_ref("local/lab") == commit, "the hosted tree stays"


def test_newer_builds_pulled_in_and_hosted_over_http(box: Path, lab_repo: Path, tmp_path: Path) -> None:
    addon = Package("demo-addon", "1.0", summary="needs the newer demo-engine")
    addon.add_file("/usr/share/demo-addon/README", b"addon\n")
    addon.requires.add("demo-engine >= 1.13.1-22")
    rpm = build_rpm(addon, tmp_path)
    inside(box, "sed", "-i", "/^\\[lab-updates\\]/,$ s/^enabled=0/enabled=1/", "/etc/yum.repos.d/strata-lab.repo")

    out = strata("compose", "local", "--sysroot", str(box), "--ref", "local/addon", str(rpm)).stdout
    plan = out[:out.index("Committing")]
    assert "Updating 3 packages (required by new ones):\n  demo-engine-1.13.1-21.x86_64 -> demo-engine-1.13.1-22" \
        in plan and "  demo-engine-common-1.13.1-21.noarch -> demo-engine-common-1.13.1-22.noarch" in plan
    assert "  demo-addon-1.0-1.x86_64 (@commandline)" in plan
    trees = strata("compose", "trees", "--json", "--sysroot", str(box)).stdout
    assert '"from": "demo-engine-1.13.1-21.x86_64"' in trees and '"ref": "local/addon"' in trees

    served = Repo.init(tmp_path / "www" / "repo", RepoMode.ARCHIVE)
    strata("repo", "pull-local", "--repo", str(served.path), str(box / "ostree" / "repo"), "local/addon")
    strata("repo", "summary", "-u", "--repo", str(served.path))
    other = lab_sysroot(tmp_path / "other", f"file://{lab_repo}", Repo.open(lab_repo))
    url, pid_file = start_nginx(tmp_path / "www", tmp_path)
    try:
        strata("repo", "remote", "add", "--repo", str(other / "ostree" / "repo"), "--no-gpg-verify", "host",
               f"{url}/repo")
        strata("rebase", "host:local/addon", "--sysroot", str(other))
    finally:
        stop_nginx(pid_file)
    strata("admin", "boot", "--sysroot", str(other))
    assert "demo-engine 1.13.1-22" in inside(other, "demo-engine").stdout
    assert "demo-addon-1.0-1" in rpm_qa(other)


def test_bad_requests_write_nothing(box: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.rpm"
    garbage.write_bytes(b"\xed\xab\xee\xdb" + b"\0" * 200)
    for args, message in ((["--ref", "mine", "htop"], "error: --ref must name a ref under local/"),
                          (["--ref", "local/../x", "htop"], "error: "),
                          ([str(garbage)], "error: "),
                          (["no-such-package"], "error: Packages not found: no-such-package"),
                          (["test-broken-dep"], "error: Could not depsolve transaction")):
        proc = strata("compose", "local", "--sysroot", str(box), *args, check=False)
        assert proc.returncode != 0 and proc.stderr.startswith(message), (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    repo = Sysroot.open(box).repo
    assert repo.list_refs("local") == {} and not list(repo.tmp_dir.glob("compose-local-*"))
    assert strata("compose", "trees", "--sysroot", str(box)).stdout == "No local trees.\n"
