"""`compose tree --test CMD`: the composed commit is deployed into a throwaway directory sysroot, booted
(simulated), and each command runs inside it, before the ref is allowed to move."""

from __future__ import annotations

import dataclasses
import shlex
import tempfile
from collections.abc import Callable
from pathlib import Path

from strata import bwrap, progress
from strata.errors import InvalidInputError, StrataError
from strata.image.keyfile import KeyFile
from strata.image.repo import Repo
from strata.image.transfer import copy_commit
from strata.sysroot import deploy as ops
from strata.sysroot.boot import sandbox, simulated_boot
from strata.sysroot.sysroot import Sysroot

Log = Callable[[str], None]
TEST_STATEROOT = "compose-test"
TEST_TIMEOUT = 600.0  # seconds for one command
_OUTPUT_LINES_KEPT = 200


class ComposeTestFailed(StrataError):
    pass


def parse_test_command(text: str) -> list[str]:
    """A --test command is split as a shell would split words (no shell runs it: `sh -c '...'` for pipes)."""
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise InvalidInputError(f"--test {text!r}: {exc}") from None
    if not argv:
        raise InvalidInputError("--test needs a command")
    return argv


def run_compose_tests(repo: Repo, commit: str, commands: list[str], log: Log) -> None:
    """Deploy commit into a scratch sysroot beside repo, boot it, run each command; the first failing one
    raises ComposeTestFailed after its output was logged. The scratch sysroot is removed either way."""
    argvs = [parse_test_command(text) for text in commands]
    with tempfile.TemporaryDirectory(prefix="compose-test-", dir=repo.tmp_dir) as scratch:
        sysroot = _booted_scratch_sysroot(repo, commit, Path(scratch), log)
        booted = sysroot.booted()
        assert booted is not None
        box = dataclasses.replace(sandbox(sysroot, booted), terminal=False)
        for text, argv in zip(commands, argvs, strict=True):
            _run_one(box, text, argv, log)


def _booted_scratch_sysroot(repo: Repo, commit: str, scratch: Path, log: Log) -> Sysroot:
    with progress.task("Deploying the commit for testing"):
        sysroot = Sysroot.init_fs(scratch / "sysroot")
        sysroot.os_init(TEST_STATEROOT)
        copy_commit(repo, sysroot.repo, commit, trusted=True)
        with sysroot.repo.lock():
            sysroot.repo.set_ref("compose-test", commit)
        origin = KeyFile()
        origin.set("origin", "refspec", "compose-test")
        ops.deploy(sysroot, commit, ops.DeployOptions(TEST_STATEROOT, origin), lambda _line: None)
        simulated_boot(sysroot, lambda _line: None)
    log(f"Booted {commit[:10]} in a scratch sysroot")
    return sysroot


def _run_one(box: bwrap.Sandbox, text: str, argv: list[str], log: Log) -> None:
    output: list[str] = []

    def keep(line: str) -> None:
        output.append(line)
        del output[:-_OUTPUT_LINES_KEPT]

    log(f"Running test: {text}")
    outcome = bwrap.run(box, argv, on_line=keep, timeout=TEST_TIMEOUT)
    if outcome.returncode == 0 and not outcome.timed_out:
        log(f"Test passed: {text}")
        return
    for line in output:
        log(f"  | {line}")
    reason = "timed out" if outcome.timed_out else f"exited with status {outcome.returncode}"
    raise ComposeTestFailed(f"test '{text}' {reason}; the ref was not moved")
