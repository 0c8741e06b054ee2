"""Package scripts against the host (issue 9, items 2 and 11): layering a hostile package onto the lab's
booted sysroot must leave the host's sysctls, the admin's terminal and the sysroot alone, and a script
that never ends must fail the transaction within its time limit."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.hostile.labsys import (
    assert_repo_clean,
    booted_lab_sysroot,
    copy_tree,
    deployment_root,
    strata,
    sysroot_state,
)
from tests.hostile.rpms import build_hostile_rpm

SYSCTL = Path("/proc/sys/kernel/printk_ratelimit_burst")
INJECTED = "touch /tmp/strata-tiocsti-injected"
TIOCSTI_HELPER = r"""
#include <fcntl.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int fds[4] = {0, 1, 2, open("/dev/tty", O_RDWR | O_NOCTTY)};
    for (int i = 0; i < 4; i++) {
        int ok = fds[i] >= 0;
        for (const char *p = argv[1]; ok && *p; p++)
            ok = ioctl(fds[i], TIOCSTI, p) == 0;
        fprintf(stderr, "tiocsti fd#%d %s\n", i, ok ? "pushed" : "refused");
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def pristine(lab_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return booted_lab_sysroot(lab_repo, tmp_path_factory.mktemp("pristine") / "sysroot")


@pytest.fixture
def sysroot(pristine: Path, tmp_path: Path) -> Path:
    return copy_tree(pristine, tmp_path / "sysroot")


def install(root: Path, rpm: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return strata("install", "--sysroot", str(root), str(rpm), env=env)


def test_scripts_run_on_the_lab_base_with_tmp_symlinked_into_sysroot(sysroot: Path, tmp_path: Path) -> None:
    assert os.readlink(deployment_root(sysroot) / "tmp") == "sysroot/tmp"
    rpm = build_hostile_rpm(tmp_path, "benign-post", files={"/usr/share/benign-post/README": b"benign\n"},
                            scripts={"post": "echo scratch > /tmp/scratch && cat /tmp/scratch > "
                                             "/usr/share/benign-post/ran; echo post says hello"})
    proc = install(sysroot, rpm)
    assert proc.returncode == 0, proc.stderr
    assert "benign-post.post: post says hello" in proc.stdout.splitlines()
    assert (deployment_root(sysroot) / "usr/share/benign-post/ran").read_text() == "scratch\n"


def test_post_cannot_write_host_sysctl(sysroot: Path, tmp_path: Path) -> None:
    before = SYSCTL.read_text()
    rpm = build_hostile_rpm(tmp_path, "evil-sysctl", files={"/usr/share/evil-sysctl/README": b"x\n"}, scripts={
        "post": f"echo $(( $(cat {SYSCTL}) + 1 )) > {SYSCTL}; echo 1 > /proc/sysrq-trigger; exit 0"})
    proc = install(sysroot, rpm)
    assert SYSCTL.read_text() == before
    assert proc.returncode == 0, proc.stderr
    assert f"evil-sysctl.post: /run/strata-script: line 1: {SYSCTL}: Read-only file system" in proc.stdout


def _compile_tiocsti(tmp_path: Path) -> Path:
    source = tmp_path / "tiocsti.c"
    source.write_text(TIOCSTI_HELPER)
    binary = tmp_path / "tiocsti"
    subprocess.run(["gcc", "-static", "-O1", "-o", str(binary), str(source)], check=True)
    return binary


def _under_pty(argv: list[str], timeout: float = 300) -> str:
    """Run argv with a new pseudo-terminal as its controlling terminal; returns what the terminal showed
    (what was typed into it, TIOCSTI included, is echoed there)."""
    pid, master = pty.fork()
    if pid == 0:
        os.execv(argv[0], argv)
    shown = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    os.waitpid(pid, 0)
    os.close(master)
    return shown.decode("utf-8", "replace")


def test_post_cannot_push_input_into_the_admins_terminal(sysroot: Path, tmp_path: Path) -> None:
    helper = _compile_tiocsti(tmp_path)
    control = _under_pty([str(helper), INJECTED + "\n"])
    assert INJECTED in control and "tiocsti fd#0 pushed" in control  # the attack works where it is allowed
    rpm = build_hostile_rpm(tmp_path / "rpm", "evil-tiocsti", files={"/usr/libexec/evil-tiocsti": helper.read_bytes()},
                            modes={"/usr/libexec/evil-tiocsti": 0o755},
                            scripts={"post": f"/usr/libexec/evil-tiocsti '{INJECTED}\n'"})
    shown = _under_pty([sys.executable, "-m", "strata.cli.main", "install", "--sysroot", str(sysroot), str(rpm)])
    assert "evil-tiocsti.post: tiocsti fd#3 refused" in shown
    assert "pushed" not in shown
    assert INJECTED not in shown.replace(f"'{INJECTED}", "")


def test_endless_post_times_out_and_changes_nothing(sysroot: Path, tmp_path: Path) -> None:
    before = sysroot_state(sysroot)
    rpm = build_hostile_rpm(tmp_path, "evil-sleep", files={"/usr/share/evil-sleep/README": b"x\n"},
                            scripts={"post": "echo going to sleep; sleep 100000"})
    started = time.monotonic()
    proc = install(sysroot, rpm, env={**os.environ, "STRATA_SCRIPT_TIMEOUT": "3"})
    assert time.monotonic() - started < 60
    assert proc.returncode != 0
    assert proc.stderr.strip() == "error: Running post script of evil-sleep timed out after 3 s"
    assert not _processes_running(["sleep", "100000"])
    assert sysroot_state(sysroot) == before
    assert_repo_clean(sysroot / "ostree" / "repo")


def test_processes_left_behind_by_a_script_are_killed(sysroot: Path, tmp_path: Path) -> None:
    rpm = build_hostile_rpm(tmp_path, "evil-daemon", files={"/usr/share/evil-daemon/README": b"x\n"},
                            scripts={"post": "(sleep 100001 > /dev/null 2>&1 &); exit 0"})
    proc = install(sysroot, rpm)
    assert proc.returncode == 0, proc.stderr
    assert not _processes_running(["sleep", "100001"])


def _processes_running(argv: list[str]) -> bool:
    wanted = "\0".join(argv).encode() + b"\0"
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes() == wanted:
                    return True
            except OSError:
                continue
    return False


def test_script_made_symlinks_never_point_host_side_work_at_the_host(sysroot: Path, tmp_path: Path) -> None:
    """After scripts, strata itself reads and rewrites passwd/group and writes the rpmdb: a script that
    makes those symlinks to host files must neither leak nor change the host files."""
    host = tmp_path / "host"
    (host / "rpmdb").mkdir(parents=True)
    (host / "shadow").write_text("root:HOST-SECRET-SHADOW:19000::::::\n")
    (host / "rpmdb" / "rpmdb.sqlite").write_text("host rpmdb\n")
    before = {p.name: p.read_bytes() for p in [host / "shadow", host / "rpmdb" / "rpmdb.sqlite"]}
    passwd = build_hostile_rpm(tmp_path / "a", "evil-passwd", files={"/usr/share/evil-passwd/README": b"x\n"},
                               scripts={"post": f"rm -f /etc/passwd /etc/group; ln -s {host}/shadow /etc/passwd; "
                                                f"ln -s {host}/shadow /etc/group"})
    proc = install(sysroot, passwd)
    assert proc.returncode == 0, proc.stderr
    new = deployment_root(sysroot, 0)
    assert "HOST-SECRET" not in (new / "usr/lib/passwd").read_text() + (new / "usr/lib/group").read_text()
    usr_etc = build_hostile_rpm(tmp_path / "b", "evil-usr-etc", files={"/usr/share/evil-usr-etc/README": b"x\n"},
                                scripts={"post": f"rm -rf /usr/etc; ln -s {host}/rpmdb /usr/etc"})
    proc = install(sysroot, usr_etc)
    assert proc.stderr.strip() == ("error: Running post script of evil-usr-etc: the script replaced the directory "
                                   "/usr/etc")
    assert {p.name: p.read_bytes() for p in [host / "shadow", host / "rpmdb" / "rpmdb.sqlite"]} == before
    assert sorted(p.name for p in (host / "rpmdb").iterdir()) == ["rpmdb.sqlite"]
