"""initramfs controls on the lab sysroot: `initramfs --enable/--disable` with the tree's own dracut (a stand-in
dracut package that writes a recognisable cpio, since the lab has no real dracut), and `initramfs-etc`'s overlay
initrd of tracked /etc files, read back from the boot entry."""

from __future__ import annotations

import gzip
import os
import stat
import subprocess
from pathlib import Path

import pytest

from strata.core import initramfs
from strata.errors import StrataError
from strata.packages.labdistro import stand_in_dracut
from strata.sysroot import bls
from strata.sysroot.sysroot import Sysroot
from tests.core.test_client import Lab, lab_sysroot  # noqa: F401  (lab_sysroot is a fixture)
from tests.hostile.rpms import build_hostile_rpm

# A stand-in dracut: `dracut [OPTION...] IMAGE KVER` writes IMAGE as a newc cpio holding one file that records
# the arguments it got and the machine /etc it saw.
FAKE_DRACUT = stand_in_dracut("strata-fake-dracut",
                              "args: $*\nmachine: $(cat /etc/strata-machine-marker 2>/dev/null || echo none)\n")


def read_newc(data: bytes) -> dict[str, tuple[int, bytes]]:
    """name -> (mode, data) of a newc cpio archive, gzipped or not."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    members: dict[str, tuple[int, bytes]] = {}
    offset = 0
    while True:
        header = data[offset:offset + 110]
        assert header[:6] == b"070701", f"not a newc member at {offset}"
        fields = [int(header[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name = data[offset + 110:offset + 110 + namesize - 1].decode()
        offset += 110 + namesize
        offset += -offset % 4
        body = data[offset:offset + size]
        offset += size + (-size % 4)
        if name == "TRAILER!!!":
            return members
        members[name] = (mode, body)


def default_entry(root: Path) -> bls.BlsEntry:
    entries = sorted((root / "boot/loader/entries").glob("ostree-*.conf"))
    return bls.sort_entries([bls.BlsEntry.load(p) for p in entries])[0]


def initrds(root: Path) -> list[str]:
    return [value for key, value in default_entry(root).fields if key == "initrd"]


def booted_etc(root: Path) -> Path:
    sysroot = Sysroot.open(root)
    booted = sysroot.booted()
    assert booted is not None
    return sysroot.deployment_dir(booted) / "etc"


def test_initramfs_etc_overlay_round_trip(lab_sysroot: Lab, tmp_path: Path) -> None:  # noqa: F811
    box = lab_sysroot
    etc = booted_etc(box.root)
    (etc / "strata-demo.conf").write_text("demo=1\n")
    (etc / "strata-dir").mkdir()
    (etc / "strata-dir" / "inner.conf").write_text("inner\n")
    host_secret = tmp_path / "host-secret"
    host_secret.write_text("HOST SECRET\n")
    (etc / "leak").symlink_to(host_secret)
    (etc / "leakdir").symlink_to(tmp_path)
    assert box.run("initramfs-etc").stdout == "No tracked files.\n"

    outside = box.run("initramfs-etc", "--track", "/usr/lib/os-release", check=False)
    assert outside.returncode != 0 and outside.stderr == "error: Path outside /etc forbidden: /usr/lib/os-release\n"
    through = box.run("initramfs-etc", "--track", "/etc/leakdir/host-secret", check=False)
    assert through.returncode != 0 and "symlinks are not followed" in through.stderr
    assert len(through.stderr.splitlines()) == 1 and len(Sysroot.open(box.root).deployments()) == 1

    out = box.run("initramfs-etc", "--track", "/etc/strata-demo.conf", "--track", "/etc/strata-dir",
                  "--track", "/etc/leak").stdout
    assert "to start a reboot" in out
    assert box.default_origin().get("rpmostree", "initramfs-etc") == "/etc/strata-demo.conf;/etc/strata-dir;/etc/leak;"
    assert "InitramfsEtc: /etc/strata-demo.conf /etc/strata-dir /etc/leak" in box.status()
    assert box.run("initramfs-etc").stdout == ("Tracked files:\n  /etc/strata-demo.conf\n  /etc/strata-dir\n"
                                               "  /etc/leak\n")
    assert box.run("initramfs-etc", "--track", "/etc/strata-demo.conf").stdout.endswith("No changes.\n")

    box.admin("boot")  # finalizes the staged deployment: the entry now lists the overlay
    lines = initrds(box.root)
    assert len(lines) == 2 and lines[1].startswith("/ostree/initramfs-overlays/")
    members = read_newc((box.root / "boot" / lines[1].lstrip("/")).read_bytes())
    assert members["etc/strata-demo.conf"] == (stat.S_IFREG | 0o644, b"demo=1\n")
    assert members["etc/strata-dir/inner.conf"][1] == b"inner\n"
    mode, target = members["etc/leak"]
    assert stat.S_ISLNK(mode) and target == os.fsencode(host_secret)  # the link itself, never the host file
    assert not any(b"HOST SECRET" in body for _mode, body in members.values())
    assert Sysroot.open(box.root).deployments()[0].overlay_initrds == [Path(lines[1]).stem]

    box.run("initramfs-etc", "--untrack-all")
    box.admin("boot")
    assert len(initrds(box.root)) == 1 and box.status().count("InitramfsEtc:") == 1  # only the rollback
    assert box.default_origin().get("rpmostree", "initramfs-etc") is None
    overlays = box.root / "boot/ostree/initramfs-overlays"
    assert [p.name for p in overlays.iterdir()] == [Path(lines[1]).name]  # the rollback deployment's
    box.admin("undeploy", "1")
    assert not list(overlays.iterdir())  # cleanup removed the one no entry lists


def test_regeneration_by_the_trees_own_dracut(lab_sysroot: Lab, tmp_path: Path) -> None:  # noqa: F811
    box = lab_sysroot
    before = initrds(box.root)
    missing = box.run("initramfs", "--enable", check=False)
    assert missing.returncode != 0 and "the tree has no dracut" in missing.stderr
    assert len(missing.stderr.splitlines()) == 1 and len(Sysroot.open(box.root).deployments()) == 1
    assert box.run("initramfs").stdout == "Initramfs regeneration: disabled\n"

    rpm = build_hostile_rpm(tmp_path / "rpms", "dracut", "059", files={"/usr/bin/dracut": FAKE_DRACUT.encode()},
                            modes={"/usr/bin/dracut": 0o755})
    box.run("install", str(rpm))
    box.admin("boot")
    (booted_etc(box.root) / "strata-machine-marker").write_text("this machine\n")
    out = box.run("initramfs", "--enable", "--arg=--strata-mark").stdout
    assert "Initramfs regeneration is now: enabled" in out
    origin = box.default_origin()
    assert origin.get("rpmostree", "regenerate-initramfs") == "true"
    assert origin.get("rpmostree", "initramfs-args") == "--strata-mark;"
    assert "Initramfs: --strata-mark" in box.status()
    assert box.run("initramfs").stdout == "Initramfs regeneration: enabled\nInitramfs args: --strata-mark \n"

    box.admin("boot")
    image = initrds(box.root)
    assert len(image) == 1 and image != before
    members = read_newc((box.root / "boot" / image[0].lstrip("/")).read_bytes())
    text = members["strata-fake-dracut"][1].decode()
    assert "--strata-mark" in text and "machine: this machine" in text
    kernel = Sysroot.open(box.root).deployments()[0].kernel_version or image[0].rsplit("initramfs-", 1)[1][:-4]
    assert f" {kernel}" in text and f"/usr/lib/modules/{kernel}/initramfs.img" in text

    out = box.run("initramfs", "--disable").stdout
    assert "Initramfs will be reset to default on next reboot." in out
    assert box.default_origin().get("rpmostree", "regenerate-initramfs") is None
    box.admin("boot")
    assert initrds(box.root) == before
    already = box.run("initramfs", "--disable", check=False)
    assert already.returncode != 0 and already.stderr == "error: initramfs regeneration state is already disabled\n"


def test_overlay_cpio_refuses_what_is_not_a_file(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    os.mkfifo(etc / "fifo")
    with pytest.raises(StrataError, match="not a regular file"):
        initramfs.etc_overlay_cpio(etc, ["/etc/fifo"])
    with pytest.raises(StrataError, match="no such file"):
        initramfs.etc_overlay_cpio(etc, ["/etc/absent"])
    for bad in ("/etc/../shadow", "/etc//x", "etc/x"):
        with pytest.raises(StrataError):
            initramfs.etc_overlay_cpio(etc, [bad])
    (etc / "a.conf").write_bytes(b"x" * 5)
    members = read_newc(initramfs.etc_overlay_cpio(etc, ["/etc/a.conf"]))
    assert list(members) == ["etc", "etc/a.conf"] and members["etc/a.conf"][1] == b"xxxxx"


def test_the_lab_dracut_writes_a_newc_initramfs(tmp_path: Path) -> None:
    from strata.packages.labdistro import dracut_package
    script = dracut_package().entries["/usr/bin/dracut"].data
    assert script is not None
    (tmp_path / "dracut").write_bytes(script)
    subprocess.run(["bash", str(tmp_path / "dracut"), "--force", "-I", "/etc/x", str(tmp_path / "out.img"), "6.1"],
                   check=True)
    members = read_newc((tmp_path / "out.img").read_bytes())
    assert b"args: --force -I /etc/x " in members["strata-lab-initramfs"][1]
