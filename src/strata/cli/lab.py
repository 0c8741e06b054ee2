"""`strata lab`: the guided demo a newcomer runs first. It drives the real `strata` commands and prints them
as a user would see them in a terminal session."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from strata.errors import StrataError


def register(sub: Any) -> None:
    p = sub.add_parser("lab", help="run the guided lab on the embedded default")
    p.add_argument("--workdir", help="where to build the lab (default: a new temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.set_defaults(func=_lab)


class Session:
    """Runs strata commands, echoing each as `$ strata ...` followed by its output."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.env = dict(os.environ)

    def say(self, text: str) -> None:
        print(f"\n## {text}", flush=True)

    def run(self, *argv: str, check: bool = True) -> str:
        shown = " ".join(shlex.quote(a) for a in argv).replace(str(self.workdir), "$LAB")
        print(f"$ strata {shown}", flush=True)
        proc = subprocess.run([sys.executable, "-m", "strata.cli.main", *argv], env=self.env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
        out = proc.stdout.replace(str(self.workdir), "$LAB")
        if out:
            print(out, end="" if out.endswith("\n") else "\n", flush=True)
        if check and proc.returncode != 0:
            raise StrataError(f"lab step failed (exit {proc.returncode}): strata {shown}")
        return proc.stdout


def _make_demo_tree(root: Path, version: int) -> None:
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    (root / "usr/etc").mkdir(parents=True, exist_ok=True)
    (root / "usr/lib").mkdir(parents=True, exist_ok=True)
    hello = root / "usr/bin/hello"
    hello.write_text(f"#!/bin/sh\necho 'hello from demo OS {version}'\n")
    hello.chmod(0o755)
    (root / "usr/etc/motd").write_text(f"Demo OS version {version}\n")
    (root / "usr/lib/os-release").write_text(f'NAME="Demo OS"\nVERSION_ID={version}\n')
    link = root / "usr/bin/hi"
    if not link.is_symlink():
        link.symlink_to("hello")


def image_store_demo(s: Session) -> None:
    repo = str(s.workdir / "repo")
    tree = s.workdir / "tree"
    s.say("An OSTree-format repository: commit a tree, check it out, change it, commit again")
    s.run("repo", "init", "--repo", repo, "--mode", "archive")
    _make_demo_tree(tree, 1)
    s.run("repo", "commit", "--repo", repo, "-b", "demo/os", f"--tree=dir={tree}", "-s", "Demo OS 1",
          "--add-metadata-string=version=1")
    _make_demo_tree(tree, 2)
    s.run("repo", "commit", "--repo", repo, "-b", "demo/os", f"--tree=dir={tree}", "-s", "Demo OS 2",
          "--add-metadata-string=version=2")
    s.run("repo", "refs", "--repo", repo, "--list")
    s.run("repo", "rev-parse", "--repo", repo, "demo/os^")
    s.run("repo", "checkout", "--repo", repo, "demo/os", str(s.workdir / "checkout"))
    print((s.workdir / "checkout/usr/etc/motd").read_text(), end="")


def _lab(args: argparse.Namespace) -> int:
    if args.workdir:
        workdir = Path(args.workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        return _run_lab(workdir)
    workdir = Path(tempfile.mkdtemp(prefix="strata-lab-"))
    try:
        return _run_lab(workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _run_lab(workdir: Path) -> int:
    session = Session(workdir)
    image_store_demo(session)
    print("\nlab complete")
    return 0
