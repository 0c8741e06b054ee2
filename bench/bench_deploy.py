"""Benchmark: `strata admin deploy` vs the real `ostree admin deploy` of a distro-sized commit, in one run.

Everything happens inside a tmpfs this script mounts (the real ostree freezes the filesystem holding
/boot, which a tmpfs refuses harmlessly). Each tool gets its own sysroot with the same tree committed
into its bare repo; timed: a first deploy, and a second deploy of a commit that shares all but 10 files.
Page caches are dropped before each timed run; the whole sequence runs --reps times (fresh sysroots) and the
median, the spread and the median ratio are printed.

    .venv/bin/python bench/bench_deploy.py [--source DIR] [--reps N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from benchlib import Figure, print_figures, timed_run

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


def change_files(tree: Path, count: int, round_number: int) -> None:
    for path in sorted(tree.rglob("*.txt"))[:count]:
        path.write_bytes(path.read_bytes() + f"\nchanged {round_number}\n".encode())


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
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    mount = args.work / "tmpfs"
    mount.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12g", "tmpfs", str(mount)], check=True)
    try:
        tree = mount / "tree"
        files = make_tree(args.source, tree)
        figures = [Figure("first deploy"), Figure("second deploy (10 files changed)")]
        for round_number in range(args.reps):
            one_round(mount, tree, figures, round_number)
            print_figures(figures)  # as it goes: a long run that fails later still leaves its figures
        print(f"tree: {files} files")
        print_figures(figures)
        print("target: ratio <= 1.0")
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        shutil.rmtree(args.work, ignore_errors=True)
    return 0


def one_round(mount: Path, tree: Path, figures: list[Figure], round_number: int) -> None:
    """Fresh sysroots with the tree committed; a first deploy, then one of the tree with 10 files changed."""
    times: dict[str, list[tuple[float, float]]] = {}
    for tool in ("ostree", "strata"):
        remove_sysroot(mount / f"sysroot-{tool}-{round_number - 1}")
        sysroot = mount / f"sysroot-{tool}-{round_number}"
        prepare(tool, sysroot, tree)
        times[tool] = [timed_run(deploy_argv(tool, sysroot))]
    change_files(tree, 10, round_number)
    for tool in ("ostree", "strata"):
        sysroot = mount / f"sysroot-{tool}-{round_number}"
        recommit(tool, sysroot, tree)
        times[tool].append(timed_run(deploy_argv(tool, sysroot)))
    for index, figure in enumerate(figures):
        (ours, rss), (theirs, _) = times["strata"][index], times["ostree"][index]
        figure.add(ours, theirs, rss)


def remove_sysroot(sysroot: Path) -> None:
    """Deployments are made immutable (chattr +i) where the filesystem allows; clear that first."""
    if sysroot.exists():
        subprocess.run(["chattr", "-R", "-f", "-i", str(sysroot)], check=False)
        shutil.rmtree(sysroot)


if __name__ == "__main__":
    sys.exit(main())
