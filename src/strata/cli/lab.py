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
from strata.packages.labdistro import build_lab

LAB_REF = "strata-lab/x86_64/base"


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


def build_distribution(s: Session) -> Path:
    s.say("Build the embedded lab distribution (RPMs repackaged from this machine's Debian packages)")
    out = s.workdir / "distro"
    build_lab(out)
    packages = sorted(p.name for p in (out / "lab" / "Packages").glob("*.rpm"))
    print(f"{len(packages)} RPMs in {out / 'lab'} (plus the newer demo-engine family in lab-updates)")
    return out


def compose_base(s: Session, distro: Path) -> str:
    repo = str(s.workdir / "build-repo")
    s.say("Compose the base OS on the build server: treefile + rpm-md repos -> one OSTree commit")
    s.run("repo", "init", "--repo", repo, "--mode", "archive")
    s.run("compose", "tree", "--repo", repo, "--cachedir", str(s.workdir / "compose-cache"), str(distro / "lab.json"))
    s.say("Compose again: nothing changed, so no new commit")
    s.run("compose", "tree", "--repo", repo, "--cachedir", str(s.workdir / "compose-cache"), str(distro / "lab.json"))
    s.run("repo", "log", "--repo", repo, LAB_REF)
    s.run("db", "list", "--repo", repo, LAB_REF, "bash", "glibc", "kernel")
    return repo


def deploy_and_boot(s: Session, build_repo: str) -> str:
    sysroot = str(s.workdir / "sysroot")
    s.say("A client: a sysroot in a directory, with one stateroot")
    s.run("admin", "init-fs", sysroot)
    s.run("admin", "os-init", "--sysroot", sysroot, "lab")
    s.run("repo", "pull-local", "--repo", f"{sysroot}/ostree/repo", "--remote", "lab", build_repo, LAB_REF)
    s.run("admin", "deploy", "--sysroot", sysroot, "--os", "lab", "--karg=root=LABEL=lab-root", "--karg=rw",
          f"lab:{LAB_REF}")
    s.run("admin", "boot", "--sysroot", sysroot)
    s.run("admin", "status", "--sysroot", sysroot)
    s.say("Run commands inside the booted deployment (bubblewrap: deployment as /, its /etc, the stateroot's /var)")
    s.run("admin", "run", "--sysroot", sysroot, "--", "/usr/bin/bash", "-c",
          "cat /etc/os-release | head -2; id testsvc; cat /usr/share/test-scripts/post-ran")
    return sysroot


def layering(s: Session, sysroot: str, distro: Path) -> None:
    sr = ["--sysroot", sysroot]
    s.say("Package layering: install htop on top of the base, as a new deployment for the next boot")
    s.run("status", *sr)
    s.run("install", *sr, "htop")
    s.run("status", *sr)
    s.say("Reboot into it and run htop")
    s.run("admin", "boot", *sr)
    s.run("admin", "run", *sr, "--", "htop", "--version")
    s.say("apply-live: install nano and use it at once, without a reboot")
    s.run("install", *sr, "--apply-live", "nano")
    s.run("admin", "run", *sr, "--", "nano", "--version")
    s.run("status", *sr)
    s.say("Base overrides: remove strace from the base, replace the demo-engine family with the newer build")
    s.run("override", "remove", *sr, "strace")
    updates = sorted(str(p) for p in (distro / "lab-updates" / "Packages").glob("*.rpm"))
    s.run("override", "replace", *sr, *updates)
    s.run("admin", "boot", *sr)
    s.run("admin", "run", *sr, "--", "demo-engine")
    s.run("status", *sr)
    s.say("reset drops every layered package and override; rollback brings the previous deployment back")
    s.run("reset", *sr)
    s.run("admin", "boot", *sr)
    s.run("status", *sr)
    s.run("rollback", *sr)
    s.run("admin", "boot", *sr)
    s.run("admin", "run", *sr, "--", "/usr/bin/bash", "-c", "htop --version; demo-engine | head -1")
    s.run("status", *sr)


def local_compose(s: Session, sysroot: str) -> None:
    sr = ["--sysroot", sysroot]
    s.say("A local compose: the installed system plus tree, as a new tree in the sysroot's repo, to rebase onto")
    s.run("compose", "local", *sr, "--ref", "local/tools", "tree")
    s.run("compose", "trees", *sr)
    s.run("rebase", *sr, ":local/tools")
    s.run("admin", "boot", *sr)
    s.run("admin", "run", *sr, "--", "tree", "--version")
    s.run("status", *sr)


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
    distro = build_distribution(session)
    build_repo = compose_base(session, distro)
    sysroot = deploy_and_boot(session, build_repo)
    layering(session, sysroot, distro)
    local_compose(session, sysroot)
    print("\nlab complete")
    return 0
