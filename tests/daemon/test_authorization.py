"""Authorization: an unprivileged caller (nobody) reads status but cannot install until a polkit rule grants
its group rpm-ostree's action; the real polkitd answers on the private bus from a private mount namespace."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.core.test_client import Lab, strata
from tests.daemon.bus import DaemonProcess, start_bus, start_daemon
from tests.daemon.polkit import BUS_EXTRA, POLKITD, start_polkit

REPO_ROOT = Path(__file__).resolve().parents[2]
AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
SYSTEM_PYTHON_HAS_GI = subprocess.run(["/usr/bin/python3", "-c", "import gi"], capture_output=True,
                                     check=False).returncode == 0 if Path("/usr/bin/python3").exists() else False
pytestmark = pytest.mark.skipif(not Path(POLKITD).exists() or not SYSTEM_PYTHON_HAS_GI,
                                reason="needs Debian's polkitd and python3-gi (tools/setup.sh)")
GRANT_NOGROUP = """polkit.addRule(function(action, subject) {
    if (action.id == "org.projectatomic.rpmostree1.install-uninstall-packages" && subject.isInGroup("nogroup"))
        return polkit.Result.YES;
});
"""


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user can traverse (the bus socket, polkit's files, the transaction sockets)."""
    path = Path(tempfile.mkdtemp(prefix="strata-daemon-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _serve(open_dir: Path, lab_sysroot: Lab, rules: dict[str, str]) -> Iterator[DaemonProcess]:
    bus = start_bus(open_dir / "bus", BUS_EXTRA)
    polkit = start_polkit(bus.address, open_dir / "polkit", rules)
    daemon = start_daemon(bus.address, lab_sysroot.root, open_dir / "daemon")
    yield daemon
    daemon.stop()
    polkit.stop()
    bus.stop()


@pytest.fixture
def daemon_no_rules(open_dir: Path, lab_sysroot: Lab) -> Iterator[DaemonProcess]:
    yield from _serve(open_dir, lab_sysroot, {})


@pytest.fixture
def daemon_granting(open_dir: Path, lab_sysroot: Lab) -> Iterator[DaemonProcess]:
    yield from _serve(open_dir, lab_sysroot, {"50-strata-test.rules": GRANT_NOGROUP})


def _as_nobody(*argv: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", **({"PYTHONPATH": str(pythonpath)} if pythonpath else {})}
    return subprocess.run([*AS_NOBODY, *argv], capture_output=True, text=True, check=False, cwd="/", env=env)


def _install_as_nobody(address: str, open_dir: Path) -> subprocess.CompletedProcess[str]:
    """The client runs from a copy in open_dir: the checkout itself may sit where nobody cannot enter (a clone in
    a 0700 mktemp directory)."""
    root = open_dir / "client"
    (root / "tests" / "daemon").mkdir(parents=True, exist_ok=True)
    for name in ("tests/__init__.py", "tests/daemon/__init__.py", "tests/daemon/user_client.py",
                 "tests/daemon/rpmostree_client.py"):
        shutil.copyfile(REPO_ROOT / name, root / name)
    for directory in (root, root / "tests", root / "tests" / "daemon"):
        directory.chmod(0o755)
    return _as_nobody("/usr/bin/python3", "-m", "tests.daemon.user_client", address, "install", "htop",
                      pythonpath=root)


def test_nobody_reads_but_cannot_install(daemon_no_rules: DaemonProcess, lab_sysroot: Lab, open_dir: Path) -> None:
    address = daemon_no_rules.address
    booted = _as_nobody("busctl", f"--address={address}", "get-property", "org.projectatomic.rpmostree1",
                        "/org/projectatomic/rpmostree1/Sysroot", "org.projectatomic.rpmostree1.Sysroot", "Booted")
    assert booted.stdout.strip() == 'o "/org/projectatomic/rpmostree1/lab"', booted.stderr
    before = strata("status", "--sysroot", str(lab_sysroot.root)).stdout
    refused = _install_as_nobody(address, open_dir)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "AccessDenied" in refused.stdout and "PkgChange not allowed for user" in refused.stdout
    assert strata("status", "--sysroot", str(lab_sysroot.root)).stdout == before


def test_polkit_rule_grants_install(daemon_granting: DaemonProcess, lab_sysroot: Lab, open_dir: Path) -> None:
    done = _install_as_nobody(daemon_granting.address, open_dir)
    assert done.returncode == 0 and done.stdout.strip() == "[true, \"\"]", done.stdout + done.stderr
    assert "LayeredPackages: htop" in strata("status", "--sysroot", str(lab_sysroot.root)).stdout
