"""Package scriptlets (%pre, %post, %posttrans, file triggers) run in a bubblewrap sandbox over a tree.

The tree is an assembled root in OSTree layout: configuration lives in usr/etc and is shown to scripts as
/etc. Scripts write through an overlay that is folded back into the tree afterwards, so that no script can
write through a hardlink into an object store; each has a time limit (STRATA_SCRIPT_TIMEOUT seconds,
default five minutes) after which its sandbox is killed and the transaction fails.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from strata import bwrap, fsroot
from strata.errors import InvalidInputError, StrataError

Log = Callable[[str], None]

DEFAULT_TIMEOUT = 300.0
TIMEOUT_VARIABLE = "STRATA_SCRIPT_TIMEOUT"
# Directories the host works in after scripts (rpmdb, passwd/group split, layout, commit): a script may not
# turn one into a symlink, which would point that work at the host's own files.
STRUCTURAL_DIRS = ("usr", "usr/etc", "usr/lib", "usr/share", "usr/share/rpm", "usr/bin", "usr/sbin")
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


def script_timeout() -> float:
    """Seconds a script may run: $STRATA_SCRIPT_TIMEOUT, or five minutes."""
    text = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < 1e9:
        raise InvalidInputError(f"{TIMEOUT_VARIABLE} must be a positive number of seconds, not {text!r}")
    return value


def sandbox_for(root: Path) -> bwrap.Sandbox:
    """The scriptlet sandbox of spec E.6: tree as / (writes through an overlay), /etc from usr/etc, no network,
    private /run and /tmp, an empty rpmdb directory."""
    box = bwrap.Sandbox(root=root, overlay=True, env={"SYSTEMD_OFFLINE": "1", "PATH": "/usr/sbin:/usr/bin"})
    if _is_real_dir(root, "usr/etc"):
        box.tree_binds.append(("usr/etc", "/etc"))
    if _is_real_dir(root, "usr/share/rpm"):
        box.tmpfs.append("/usr/share/rpm")
    box.files.append(("/run/ostree-booted", b""))
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        box.env = {**box.env, "SOURCE_DATE_EPOCH": epoch}
    return box


def _is_real_dir(root: Path, relpath: str) -> bool:
    try:
        fsroot.require_real_dir(root, relpath)
    except StrataError:
        return False
    return True


def run_scriptlets(root: Path, scripts: Iterable[Scriptlet], log: Log, *, upgrade: frozenset[str] = frozenset(),
                   advance: Callable[[], None] = lambda: None) -> None:
    """Run scripts in the given order; the first failure stops with the script's output. advance() is called
    once per script given (run or skipped), for progress."""
    scripts = list(scripts)
    todo = [s for s in scripts if should_run(s)]
    for _skipped in range(len(scripts) - len(todo)):
        advance()
    if not todo:
        return
    box = sandbox_for(root)
    for script in todo:
        _run_one(box, script, "2" if script.package in upgrade else "1", log)
        advance()


def run_file_triggers(root: Path, triggers: Iterable[tuple[tuple[str, ...], Scriptlet]], paths: list[str],
                      log: Log, *, advance: Callable[[], None] = lambda: None) -> int:
    """%transfiletriggerin: each trigger whose prefixes match installed paths runs once, with the matching
    paths on its standard input (as rpm does). Returns how many ran; advance() is called once per trigger."""
    ran = 0
    triggers = list(triggers)
    todo = [(patterns, script) for patterns, script in triggers if should_run(script)]
    for _skipped in range(len(triggers) - len(todo)):
        advance()
    if not todo:
        return 0
    box = sandbox_for(root)
    for patterns, script in todo:
        matched = [p for p in paths if any(p == pat or p.startswith(pat.rstrip("/") + "/") for pat in patterns)]
        if matched:
            _run_one(box, script, "0", log, stdin="".join(f"{p}\n" for p in matched).encode())
            ran += 1
        advance()
    return ran


def _run_one(box: bwrap.Sandbox, script: Scriptlet, arg: str, log: Log, stdin: bytes | None = None) -> None:
    interpreter = list(script.interpreter) or ["/bin/sh"]
    if interpreter[0] == "<lua>":
        if "-- rpm-ostree-skip" in "\n".join(script.body.splitlines()[:10]):
            return
        raise StrataError(f"{script.label}: lua scripts are not supported")
    run_in_sandbox(box, [*interpreter], script.body, [arg], f"{script.kind} script of {script.package}",
                   lambda line: log(f"{script.label}: {line}"), stdin=stdin)


def run_in_sandbox(box: bwrap.Sandbox, interpreter: list[str], body: str, args: list[str], what: str, log: Log,
                   *, stdin: bytes | None = None) -> None:
    """Run one script text in the sandbox with the time limit; failures name `what` (e.g. "post script of
    foo") and carry the script's last line of output."""
    script_path = "/run/strata-script"
    timeout = script_timeout()
    structure = [d for d in STRUCTURAL_DIRS if _is_real_dir(box.root, d)]
    outcome = bwrap.run(bwrap.with_file(box, script_path, body.encode()), [*interpreter, script_path, *args],
                        on_line=log, stdin=stdin, timeout=timeout)
    replaced = [d for d in structure if not _is_real_dir(box.root, d)]
    if replaced:
        raise StrataError(f"Running {what}: the script replaced the directory /{replaced[0]}")
    if outcome.timed_out:
        raise StrataError(f"Running {what} timed out after {timeout:g} s")
    if outcome.returncode != 0:
        raise StrataError(f"Running {what} failed (exit {outcome.returncode}): {outcome.last_line or 'no output'}")
