"""Package scriptlets (%pre, %post, %posttrans, file triggers) run in a bubblewrap sandbox over a tree.

The tree is an assembled root in OSTree layout: configuration lives in usr/etc and is shown to scripts as
/etc. Files in usr/etc are copied up before scripts run so that appending to e.g. /etc/passwd never
writes through a hardlink into the package cache.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from strata import bwrap
from strata.errors import StrataError

Log = Callable[[str], None]

RUN_KINDS = ("pre", "post", "posttrans", "transfiletriggerin")
# package.script pairs rpm-ostree deliberately does not run (spec E.6)
IGNORED_SCRIPTS = frozenset({
    "glibc.prein", "coreutils.prein", "ca-certificates.prein", "libgcc.post", "filesystem.posttrans",
    "filesystem.transfiletriggerin", "setup.post", "pinentry.prein", "fedora-release.posttrans",
    "vagrant.prein", "vagrant-libvirt.prein", "bash.post", "gdb.prein", "systemd.transfiletriggerin",
    "man-db.transfiletriggerin", "nfs-utils.post", "microcode_ctl.post", "microcode_ctl.posttrans",
    "kernel.posttrans", "kernel-core.posttrans", "kernel-modules.posttrans",
})
_RPM_NAMES = {"pre": "prein", "post": "post", "posttrans": "posttrans", "transfiletriggerin": "transfiletriggerin"}


@dataclass(frozen=True)
class Scriptlet:
    package: str
    kind: str  # pre, post, posttrans, transfiletriggerin
    interpreter: tuple[str, ...]  # e.g. ("/bin/sh",) or ("<lua>",)
    body: str

    @property
    def label(self) -> str:
        return f"{self.package}.{_RPM_NAMES.get(self.kind, self.kind)}"


def should_run(script: Scriptlet) -> bool:
    return script.label not in IGNORED_SCRIPTS and bool(script.body.strip() or script.interpreter[:1] != ("/bin/sh",))


def copy_up_etc(root: Path) -> None:
    """Replace every hardlinked regular file under usr/etc with a private copy."""
    etc = root / "usr/etc"
    if not etc.is_dir():
        return
    for dirpath, _dirs, files in os.walk(etc):
        for name in files:
            path = Path(dirpath) / name
            st = path.lstat()
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                tmp = path.with_name(f".{name}.copyup")
                shutil.copy2(path, tmp)
                os.chown(tmp, st.st_uid, st.st_gid)
                os.replace(tmp, path)


def sandbox_for(root: Path, workdir: Path) -> bwrap.Sandbox:
    """The scriptlet sandbox of spec E.6: tree as /, /etc from usr/etc, no network, private /run and /tmp."""
    empty = workdir / "empty"
    empty.mkdir(exist_ok=True)
    box = bwrap.Sandbox(root=root, tmpfs=["/run", "/tmp"],
                        env={"SYSTEMD_OFFLINE": "1", "PATH": "/usr/sbin:/usr/bin"})
    if (root / "usr/etc").is_dir():
        (root / "etc").mkdir(exist_ok=True)
        box.binds.append((str(root / "usr/etc"), "/etc"))
    if (root / "usr/share/rpm").is_dir():
        box.ro_binds.append((str(empty), "/usr/share/rpm"))
    box.files.append(("/run/ostree-booted", b""))
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        box.env = {**box.env, "SOURCE_DATE_EPOCH": epoch}
    return box


def run_scriptlets(root: Path, scripts: Iterable[Scriptlet], log: Log, *, upgrade: frozenset[str] = frozenset()
                   ) -> None:
    """Run scripts in the given order; the first failure stops with the script's output."""
    todo = [s for s in scripts if should_run(s)]
    if not todo:
        return
    copy_up_etc(root)
    with tempfile.TemporaryDirectory(prefix="strata-scripts-") as tmp:
        box = sandbox_for(root, Path(tmp))
        for script in todo:
            _run_one(box, script, "2" if script.package in upgrade else "1", log)
    cleanup_etc_mountpoint(root)


def cleanup_etc_mountpoint(root: Path) -> None:
    """Remove the empty /etc that bwrap needed as a mount point for usr/etc."""
    etc_mountpoint = root / "etc"
    if etc_mountpoint.is_dir() and not etc_mountpoint.is_symlink() and not any(etc_mountpoint.iterdir()):
        etc_mountpoint.rmdir()


def run_file_triggers(root: Path, triggers: Iterable[tuple[tuple[str, ...], Scriptlet]], paths: list[str],
                      log: Log) -> int:
    """%transfiletriggerin: each trigger whose prefixes match installed paths runs once, with the matching
    paths on its standard input (as rpm does). Returns how many ran."""
    ran = 0
    todo = [(patterns, script) for patterns, script in triggers if should_run(script)]
    if not todo:
        return 0
    copy_up_etc(root)
    with tempfile.TemporaryDirectory(prefix="strata-triggers-") as tmp:
        box = sandbox_for(root, Path(tmp))
        for patterns, script in todo:
            matched = [p for p in paths if any(p == pat or p.startswith(pat.rstrip("/") + "/") for pat in patterns)]
            if matched:
                _run_one(box, script, "0", log, stdin="".join(f"{p}\n" for p in matched).encode())
                ran += 1
    cleanup_etc_mountpoint(root)
    return ran


def _run_one(box: bwrap.Sandbox, script: Scriptlet, arg: str, log: Log, stdin: bytes | None = None) -> None:
    interpreter = list(script.interpreter) or ["/bin/sh"]
    if interpreter[0] == "<lua>":
        if "-- rpm-ostree-skip" in "\n".join(script.body.splitlines()[:10]):
            return
        raise StrataError(f"{script.label}: lua scripts are not supported")
    script_path = "/run/strata-script"
    box_with_script = bwrap.with_file(box, script_path, script.body.encode())
    proc = bwrap.run(box_with_script, [*interpreter, script_path, arg], stdin=stdin)
    output = proc.stdout.decode("utf-8", "replace") if proc.stdout else ""
    for line in output.splitlines():
        log(f"{script.label}: {line}")
    if proc.returncode != 0:
        last = output.strip().splitlines()[-1] if output.strip() else "no output"
        raise StrataError(f"Running {script.kind} script of {script.package} failed "
                          f"(exit {proc.returncode}): {last}")
