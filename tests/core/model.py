"""A lab sysroot driven through the real `strata` command line, in-process (a subprocess only to run commands
inside a deployment), for the invariant tests and the model-based random test."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from strata.cli.main import main
from strata.image.repo import Repo
from strata.image.transfer import pull_local
from strata.sysroot.sysroot import Sysroot
from tests.conftest import LAB_REF

ORIGIN_REF = f"lab:{LAB_REF}"


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    code: int
    out: str
    err: str

    @property
    def ok(self) -> bool:
        return self.code == 0

    def __str__(self) -> str:
        return f"strata {' '.join(self.argv)} -> {self.code}\n{self.out}{self.err}"


def strata(*argv: str) -> Result:
    """`strata ARGV...` in this process, with its output captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 1
    return Result(tuple(argv), code, out.getvalue(), err.getvalue())


class Box:
    """A directory sysroot with the lab's remote `lab`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def sysroot(self) -> Sysroot:
        return Sysroot.open(self.root)

    def client(self, verb: str, *args: str) -> Result:
        return strata(*verb.split(), "--sysroot", str(self.root), *args)

    def admin(self, verb: str, *args: str) -> Result:
        return strata("admin", verb, "--sysroot", str(self.root), *args)

    def must(self, result: Result) -> Result:
        if not result.ok:
            raise AssertionError(str(result))
        return result

    def status_json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.must(self.client("status", "--json")).out)
        return data

    def inside(self, *argv: str, stateroot: str | None = None) -> subprocess.CompletedProcess[str]:
        """argv inside the booted deployment (or the first one of `stateroot`), through `strata admin run`."""
        where = [f"--os={stateroot}"] if stateroot else []
        return subprocess.run([sys.executable, "-m", "strata.cli.main", "admin", "run", "--sysroot", str(self.root),
                               *where, "--", *argv], capture_output=True, text=True, check=False)


def make_lab_box(lab_repo: Path, dest: Path, *, server: Path | None = None) -> Box:
    """A booted sysroot with one deployment of the lab base (`rw` on its command line). `server` (default:
    lab_repo) is the repository the remote `lab` points at."""
    source = server or lab_repo
    root = Sysroot.init_fs(dest)
    root.os_init("lab")
    pull_local(Repo.open(source), root.repo, [LAB_REF], remote="lab")
    root.repo.config.set('remote "lab"', "url", f"file://{source}")
    root.repo.save_config()
    box = Box(root.path)
    box.must(box.admin("deploy", "--os=lab", "--karg=rw", ORIGIN_REF))
    box.must(box.admin("boot"))
    return box
