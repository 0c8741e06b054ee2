"""The dnf front end: the real dnf 4 binary with the strata_ostree plugin from this checkout, against the lab
sysroot (--installroot naming its booted deployment) and, for the argument mapping, a stand-in strata."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from strata.image.repo import Repo
from strata.image.transfer import pull_local
from strata.sysroot.sysroot import Sysroot
from tests.conftest import LAB_REF

ORIGIN_REF = f"lab:{LAB_REF}"
PLUGIN_DIR = Path(__file__).resolve().parents[2] / "src" / "strata_dnf"
STRATA = Path(sys.executable).with_name("strata")

pytestmark = pytest.mark.skipif(shutil.which("dnf") is None, reason="dnf is not installed (tools/setup.sh installs it)")


def dnf(root: Path, *args: str, strata: Path = STRATA, env: dict[str, str] | None = None,
        ) -> subprocess.CompletedProcess[str]:
    """The real dnf with this checkout's plugin; Debian's rpm looks for an installroot's rpmdb in ~/.rpmdb,
    so the release version is given rather than read from the tree."""
    command = ["dnf", "--releasever=1", f"--setopt=pluginpath={PLUGIN_DIR}", "--installroot", str(root), *args]
    return subprocess.run(command, capture_output=True, text=True, check=False,
                          env={**os.environ, "STRATA": str(strata), **(env or {})}, timeout=600)


def strata(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(STRATA), *args], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc


def deployments(root: Path) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = json.loads(strata("status", "--json", "--sysroot", str(root)).stdout)["deployments"]
    return result


def snapshot(tree: Path) -> dict[str, tuple[int, int, int, int]]:
    """Every entry under tree with its inode, mode, size and mtime: any write shows."""
    result = {}
    for path in [tree, *tree.rglob("*")]:
        st = path.lstat()
        result[str(path.relative_to(tree))] = (st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns)
    return result


@pytest.fixture(scope="module")
def template(lab_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory sysroot with the lab base deployed and booted, built once and copied by each test."""
    root = tmp_path_factory.mktemp("dnf-template") / "sysroot"
    sysroot = Sysroot.init_fs(root)
    sysroot.os_init("lab")
    pull_local(Repo.open(lab_repo), sysroot.repo, [LAB_REF], remote="lab")
    sysroot.repo.config.set('remote "lab"', "url", f"file://{lab_repo}")
    sysroot.repo.config.set('remote "lab"', "gpg-verify", False)
    sysroot.repo.save_config()
    strata("admin", "deploy", "--sysroot", str(root), "--os=lab", "--karg=rw", ORIGIN_REF)
    strata("admin", "boot", "--sysroot", str(root))
    return root


@pytest.fixture
def box(template: Path, tmp_path: Path) -> Path:
    root = tmp_path / "sysroot"
    subprocess.run(["cp", "-a", str(template), str(root)], check=True)
    return root


def booted_dir(root: Path) -> Path:
    booted = Sysroot.open(root).booted()
    assert booted is not None
    return root / "ostree" / "deploy" / "lab" / "deploy" / f"{booted.csum}.{booted.serial}"


def test_status_install_remove_layer_for_next_boot(box: Path) -> None:
    deploy = booted_dir(box)
    status = dnf(deploy, "ostree", "status")
    assert status.returncode == 0, status.stderr
    line = f"● {ORIGIN_REF} (lab)  [booted, --installroot]\n    Version: 1  Deployment: {deploy.name}\n"
    assert line in status.stdout
    usr, etc = snapshot(deploy / "usr"), snapshot(deploy / "etc")

    out = dnf(deploy, "install", "htop")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("image-based system: layering htop for the next boot\n")
    assert snapshot(deploy / "usr") == usr and snapshot(deploy / "etc") == etc
    pending, booted = deployments(box)
    assert pending["requested-packages"] == ["htop"] and not pending["booted"]
    assert booted["booted"] and f"{booted['checksum']}.{booted['serial']}" == deploy.name
    assert (box / "ostree/deploy/lab/deploy" / f"{pending['checksum']}.{pending['serial']}/usr/bin/htop").is_file()
    assert "Layered: htop" in dnf(deploy, "ostree", "status").stdout

    out = dnf(deploy, "remove", "htop")
    assert out.returncode == 0, out.stderr
    assert "image-based system: removing layered htop from the next boot" in out.stdout
    after = deployments(box)
    assert after[0]["requested-packages"] == [] and after[0]["checksum"] != pending["checksum"]
    assert snapshot(deploy / "usr") == usr

    missing = dnf(deploy, "install", "no-such-package")
    assert missing.returncode == 1 and "no-such-package" in missing.stderr
    refused = dnf(deploy, "upgrade")
    assert refused.returncode == 1 and "image-based system: dnf upgrade does not apply" in refused.stderr
    assert deployments(box) == after and snapshot(deploy / "usr") == usr

    direct = subprocess.run([str(STRATA), "bisect", "log", "--sysroot", str(box), "--os", "lab"],
                            capture_output=True, text=True, check=False)
    bisect = dnf(deploy, "ostree", "bisect", "log")
    assert (bisect.returncode, bisect.stdout, bisect.stderr) == (direct.returncode, direct.stdout, direct.stderr)


def test_apply_live_reaches_the_running_deployment(box: Path, tmp_path: Path) -> None:
    deploy = booted_dir(box)
    out = dnf(deploy, "-y", "install", "--apply-live", "nano")
    assert out.returncode == 0, out.stderr
    assert "image-based system: layering nano for the next boot and the running system" in out.stdout
    assert (deploy / "usr/bin/nano").is_file()
    assert deployments(box)[0]["requested-packages"] == ["nano"]

    plain = tmp_path / "plain"
    plain.mkdir()
    refused = dnf(plain, "install", "--apply-live", "nano")
    assert refused.returncode == 1 and "--apply-live: only on an image-based system" in refused.stderr
    assert not (plain / "usr").exists()


def test_compose_trees_rebase_and_back(box: Path) -> None:
    deploy = booted_dir(box)
    out = dnf(deploy, "ostree", "compose", "--ref", "local/tools", "htop")
    assert out.returncode == 0, out.stderr
    assert "local/tools => " in out.stdout
    trees = dnf(deploy, "ostree", "trees")
    assert trees.returncode == 0, trees.stderr
    assert trees.stdout.startswith("local/tools  version 1.local  commit ")
    assert "    From: lab:strata-lab/x86_64/base version 1\n    Adds: " in trees.stdout and "htop-" in trees.stdout

    out = dnf(deploy, "ostree", "rebase", ":local/tools")
    assert out.returncode == 0, out.stderr
    assert deployments(box)[0]["origin"] == ":local/tools"
    out = dnf(deploy, "ostree", "rebase", ORIGIN_REF)
    assert out.returncode == 0, out.stderr
    pending = deployments(box)[0]
    assert pending["origin"] == ORIGIN_REF and not pending["booted"]
    assert "local/tools  version 1.local" in dnf(deploy, "ostree", "trees").stdout


FAKE_STRATA = """#!/bin/sh
printf '%s\\n' "$*" >> "$FAKE_LOG"
case "$*" in *"trees --json"*) echo '[]'; exit 0;; *"status --json"*) echo '{"deployments": []}'; exit 0;; esac
exit "${FAKE_RC:-0}"
"""


def test_argument_mapping_and_exit_codes(tmp_path: Path) -> None:
    """What each dnf command line becomes, seen by a stand-in strata that logs its arguments."""
    fake = tmp_path / "strata"
    fake.write_text(FAKE_STRATA)
    fake.chmod(0o755)
    log = tmp_path / "log"
    sysroot = tmp_path / "sys"
    (sysroot / "ostree/repo").mkdir(parents=True)
    (sysroot / "ostree/repo/config").write_text("[core]\nrepo_version=1\nmode=bare\n")
    deploy = sysroot / "ostree/deploy/os1/deploy" / ("ab" * 32 + ".0")
    (deploy / "etc/yum.repos.d").mkdir(parents=True)
    (deploy / "etc/yum.repos.d/lab.repo").write_text("[lab]\nbaseurl=file:///nonexistent\nenabled=0\n")
    target = f"--sysroot {sysroot} --os os1"

    def mapped(*args: str, rc: int = 0) -> str:
        log.write_text("")
        proc = dnf(deploy, *args, strata=fake, env={"FAKE_LOG": str(log), "FAKE_RC": str(rc)})
        assert proc.returncode == rc, proc.stderr
        return log.read_text().strip()

    assert mapped("-y", "install", "--apply-live", "htop", "/srv/x.rpm") == \
        f"install {target} -y --apply-live htop /srv/x.rpm"
    assert mapped("--assumeno", "remove", "htop") == f"uninstall {target} --dry-run htop"
    assert mapped("-q", "install", "htop", rc=77) == f"-q install {target} htop"
    assert mapped("-C", "--downloadonly", "--disablerepo=*", "--enablerepo=lab", "install", "htop") == \
        f"install {target} --cache-only --download-only --disablerepo * --enablerepo lab htop"
    assert mapped("ostree", "compose", "--ref", "local/x", "--dry-run", "htop") == \
        f"compose local {target} --ref local/x --dry-run htop"
    assert mapped("ostree", "bisect", "start", "--good", "3", "--bad", "10", "--run", "test -x /usr/bin/htop",
                  rc=3) == f"bisect start {target} --good 3 --bad 10 --run test -x /usr/bin/htop"
    assert mapped("ostree", "rebase", ":local/x", rc=1) == f"rebase {target} :local/x"
    assert mapped("ostree", "trees") == f"compose trees --json --sysroot {sysroot}"

    outside = dnf(tmp_path, "ostree", "status", strata=fake, env={"FAKE_LOG": str(log)})
    assert outside.returncode == 1 and "is not an image-based system managed by strata" in outside.stderr
    booted = tmp_path / "ostree-booted"
    probe = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); import strata_ostree as p; "
             "print(p.find_target('/', Path(sys.argv[2])), p.find_target(sys.argv[3] + '/usr', Path(sys.argv[2])))")
    found = subprocess.run(["/usr/bin/python3", "-c", probe, str(PLUGIN_DIR), str(booted), str(deploy)],
                           capture_output=True, text=True, check=True).stdout
    assert found == f"None Target(sysroot='{sysroot}', osname='os1', deployment='{deploy.name}')\n"
    booted.touch()
    found = subprocess.run(["/usr/bin/python3", "-c", probe, str(PLUGIN_DIR), str(booted), str(deploy)],
                           capture_output=True, text=True, check=True).stdout
    assert found.startswith("Target(sysroot='/', osname=None, deployment=None) ")
