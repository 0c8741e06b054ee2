"""Benchmark: `strata admin deploy` vs the real `ostree admin deploy` of a distro-sized commit, in one run.

Everything happens inside a tmpfs this script mounts (the real ostree freezes the filesystem holding
/boot, which a tmpfs refuses harmlessly). Each tool gets its own sysroot with the same tree committed
into its bare repo; timed: a first deploy, and a second deploy of a commit that shares all but 10 files.
Page caches are dropped before each timed run.

    .venv/bin/python bench/bench_deploy.py [--source DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from benchlib import timed

STRATA = [sys.executable, "-m", "strata.cli.main"]
KVER = "6.1.0-bench"




def make_tree(source: Path, tree: Path) -> int:
    (tree / "usr").mkdir(parents=True)
    for sub in ("share", "bin"):
        subprocess.run(["cp", "-a", str(source / "usr" / sub), str(tree / "usr" / sub)], check=True)
    modules = tree / "usr/lib/modules" / KVER
    modules.mkdir(parents=True)
    (modules / "vmlinuz").write_bytes(b"bench kernel\n" * 1000)
    (modules / "initramfs.img").write_bytes(b"bench initramfs\n" * 1000)
    (tree / "usr/lib/os-release").write_text('NAME="Bench OS"\nID=bench\nPRETTY_NAME="Bench OS"\n')
    (tree / "usr/etc").mkdir()
    (tree / "usr/etc/hostname").write_text("bench\n")
    return sum(len(files) for _, _, files in os.walk(tree))


def change_files(tree: Path, count: int) -> None:
    for path in sorted(tree.rglob("*.txt"))[:count]:
        path.write_bytes(path.read_bytes() + b"\nchanged\n")


def prepare(tool: str, sysroot: Path, tree: Path) -> None:
    sysroot.mkdir(parents=True)
    if tool == "ostree":
        subprocess.run(["ostree", "admin", "init-fs", str(sysroot)], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["ostree", "admin", "os-init", f"--sysroot={sysroot}", "bench"], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["ostree", f"--repo={sysroot}/ostree/repo", "commit", "-b", "bench", f"--tree=dir={tree}"],
                       check=True, stdout=subprocess.DEVNULL)
    else:
        subprocess.run([*STRATA, "admin", "init-fs", str(sysroot)], check=True)
        subprocess.run([*STRATA, "admin", "os-init", "--sysroot", str(sysroot), "bench"], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run([*STRATA, "repo", "commit", "--repo", f"{sysroot}/ostree/repo", "-b", "bench",
                        f"--tree=dir={tree}"], check=True, stdout=subprocess.DEVNULL)


def recommit(tool: str, sysroot: Path, tree: Path) -> None:
    if tool == "ostree":
        subprocess.run(["ostree", f"--repo={sysroot}/ostree/repo", "commit", "-b", "bench", f"--tree=dir={tree}"],
                       check=True, stdout=subprocess.DEVNULL)
    else:
        subprocess.run([*STRATA, "repo", "commit", "--repo", f"{sysroot}/ostree/repo", "-b", "bench",
                        f"--tree=dir={tree}"], check=True, stdout=subprocess.DEVNULL)


def deploy_argv(tool: str, sysroot: Path) -> list[str]:
    if tool == "ostree":
        return ["ostree", "admin", "deploy", f"--sysroot={sysroot}", "--os=bench", "--karg=rw", "bench"]
    return [*STRATA, "admin", "deploy", "--sysroot", str(sysroot), "--os=bench", "--karg=rw", "bench"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", type=Path, default=Path("/"), help="where usr/share and usr/bin come from")
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/strata-bench-deploy"))
    args = parser.parse_args()
    mount = args.work / "tmpfs"
    mount.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12g", "tmpfs", str(mount)], check=True)
    try:
        tree = mount / "tree"
        files = make_tree(args.source, tree)
        results: dict[str, list[float]] = {}
        for tool in ("ostree", "strata"):
            sysroot = mount / f"sysroot-{tool}"
            prepare(tool, sysroot, tree)
            first = timed(deploy_argv(tool, sysroot))
            results[tool] = [first]
        change_files(tree, 10)
        for tool in ("ostree", "strata"):
            sysroot = mount / f"sysroot-{tool}"
            recommit(tool, sysroot, tree)
            results[tool].append(timed(deploy_argv(tool, sysroot)))
        print(f"tree: {files} files")
        print(f"{'deploy':<34}{'strata s':>10}{'ostree s':>10}{'ratio':>8}")
        for index, name in enumerate(("first deploy", "second deploy (10 files changed)")):
            ours, theirs = results["strata"][index], results["ostree"][index]
            print(f"{name:<34}{ours:>10.2f}{theirs:>10.2f}{ours / theirs:>8.2f}")
        print("target: ratio <= 1.5")
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        shutil.rmtree(args.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
