"""The simulated boot applies the deployment's tmpfiles.d to the stateroot's /var as systemd-tmpfiles does on a
real first boot (checked against the host's systemd-tmpfiles), and never through a symlink of that /var, which
the booted system may have filled with anything."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from strata.core.layout import INTEGRATION_LINES
from strata.sysroot.sysroot import Sysroot
from tests.conftest import require_tool
from tests.image.helpers import strata
from tests.sysroot.conftest import OS2

PACKAGE_LINES = """\
d /var/lib/demo 0750 root root - -
d /var/lib/demo/sub/deeper 0711 0 0 - -
f /var/lib/demo/state 0640 root root - first\\x20boot
L /var/lib/demo/link - - - - ../../usr/share/demo
d "/var/lib/with space" 0755 root root - -
z /var/lib/demo/sub 0700 - - - -
d /var/cache/%%percent 0755 root root - -
"""


def admin(sysroot: Sysroot, *args: str) -> subprocess.CompletedProcess[str]:
    return strata("admin", args[0], "--sysroot", str(sysroot.path), *args[1:])


def deployed(sysroot: Sysroot, config: str) -> tuple[Path, Path]:
    """Deploy OS2 with config as the deployment's /etc/tmpfiles.d/test.conf; returns (deployment, var)."""
    admin(sysroot, "deploy", "--os=stratos", OS2)
    dep = sysroot.deployments()[0]
    root = sysroot.deployment_dir(dep)
    (root / "etc/tmpfiles.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/tmpfiles.d/test.conf").write_text(config)
    return root, sysroot.stateroot_var("stratos")


def describe(top: Path, relpaths: list[str]) -> dict[str, tuple[object, ...]]:
    found: dict[str, tuple[object, ...]] = {}
    for rel in relpaths:
        st = os.lstat(top / rel)
        if stat.S_ISLNK(st.st_mode):
            found[rel] = ("link", os.readlink(top / rel))
        elif stat.S_ISREG(st.st_mode):
            found[rel] = ("file", oct(stat.S_IMODE(st.st_mode)), st.st_uid, st.st_gid, (top / rel).read_bytes())
        else:
            found[rel] = ("dir", oct(stat.S_IMODE(st.st_mode)), st.st_uid, st.st_gid)
    return found


CREATED = ["home", "srv", "roothome", "mnt", "lib/rpm", "lib/demo", "lib/demo/sub", "lib/demo/sub/deeper",
           "lib/demo/state", "lib/demo/link", "lib/with space", "cache/%percent"]


def test_first_boot_creates_var_as_systemd_tmpfiles_does(sysroot: Sysroot, tmp_path: Path) -> None:
    config = INTEGRATION_LINES + PACKAGE_LINES
    _root, var = deployed(sysroot, config)
    assert not (var / "roothome").exists()
    assert "tmpfiles:" not in admin(sysroot, "boot").stdout  # every line applied
    ours = describe(var, CREATED)
    assert ours["roothome"] == ("dir", "0o700", 0, 0)
    assert ours["lib/demo/state"] == ("file", "0o640", 0, 0, b"first boot")
    assert ours["lib/rpm"] == ("link", "../../usr/share/rpm")

    oracle = tmp_path / "oracle"
    (oracle / "etc/tmpfiles.d").mkdir(parents=True)
    (oracle / "var").mkdir()
    (oracle / "etc/tmpfiles.d/test.conf").write_text(config)
    subprocess.run([require_tool("systemd-tmpfiles"), f"--root={oracle}", "--create", "--prefix=/var"],
                   check=True, capture_output=True)
    assert ours == describe(oracle / "var", CREATED)

    (var / "lib/demo/state").write_text("kept\n")
    admin(sysroot, "boot")
    assert (var / "lib/demo/state").read_text() == "kept\n"  # later boots create, they do not reset


def test_hostile_var_and_config_never_lead_out(sysroot: Sysroot, tmp_path: Path) -> None:
    host = tmp_path / "host"
    (host / "dir").mkdir(parents=True)
    (host / "file").write_text("host\n")
    (host / "file").chmod(0o600)
    (host / "evil.conf").write_text("d /var/from-host-config 0755 root root - -\n")
    config = "".join([
        "d /var/lib/escape/inside 0755 root root - -\n",  # lib/escape is a symlink to the host
        "f /var/lib/escape/file 0644 root root - pwned\n",
        "z /var/lib/hostfile 0666 root root - -\n",  # a symlink to a host file: never chmod through it
        "f /var/lib/hostfile 0666 root root - pwned\n",
        f"d /var/../../../../../../../..{host}/dotdot 0755 root root - -\n",
        "d /var/lib/fine 0755 root root - -\n",
    ])
    root, var = deployed(sysroot, config)
    (var / "lib").mkdir(exist_ok=True)
    (var / "lib/escape").symlink_to(host / "dir")
    (var / "lib/hostfile").symlink_to(host / "file")
    (root / "etc/tmpfiles.d/evil.conf").symlink_to(host / "evil.conf")  # read inside the deployment: absent

    out = admin(sysroot, "boot").stdout
    assert list((host / "dir").iterdir()) == []
    assert (host / "file").read_text() == "host\n" and stat.S_IMODE((host / "file").stat().st_mode) == 0o600
    assert not (host / "dotdot").exists() and not (var / "from-host-config").exists()
    assert (var / "lib/fine").is_dir()  # the safe lines still apply
    assert "tmpfiles: /var/lib/escape/inside:" in out and "skipped" in out


@pytest.mark.parametrize("line", ["d /var/x 99999 root root", "d", "L /var/x - - - -"])
def test_bad_lines_are_skipped_with_a_message(sysroot: Sysroot, line: str) -> None:
    _root, var = deployed(sysroot, f"{line}\nd /var/after 0755 root root - -\n")
    out = admin(sysroot, "boot").stdout
    assert "tmpfiles: /etc/tmpfiles.d/test.conf:1:" in out
    assert (var / "after").is_dir() and not (var / "x").exists()


def test_unknown_owner_creates_nothing(sysroot: Sysroot) -> None:
    _root, var = deployed(sysroot, "d /var/lib/owned 0755 no-such-user root - -\nd /var/lib/fine 0755 root root - -\n")
    out = admin(sysroot, "boot").stdout
    assert "tmpfiles: /var/lib/owned: unknown user 'no-such-user'; skipped" in out
    assert not (var / "lib/owned").exists() and (var / "lib/fine").is_dir()
