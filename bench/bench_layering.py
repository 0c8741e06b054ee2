"""Benchmark: layering one small package on a distro-sized base (about 500 packages), in one run.

strata: `install` (a new staged deployment) and `apply-live` of it, on a booted directory sysroot whose base
is the mkcorpus distro composed by strata; reference: `rpm -i` of the same package into a plain root holding
the same package set. Each figure is the median of --runs runs (page caches dropped before each), printed
with its spread and strata's peak RSS. Between runs the pending deployment is cleaned up, the live changes
dropped (what a reboot does) and the package cache entry deleted, so that every run starts from the same
state and imports the package.

The base (corpus, composed commit, rpm -i root) is built once in --base-work (several minutes), or reused
from bench_compose.py's work directory when that holds a composed distro.

    .venv/bin/python bench/bench_layering.py [--runs 3] [--second]

--second also times layering a second package on top of the first (the incremental path: the cost should
follow the layer, not the base); --third then a third one, whose deployment is patched from the spare tree
the second install left in the trash (the first install's staged deployment) instead of checked out.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from bench_compose import build_corpus, write_treefile
from benchlib import timed_run

from strata.core.livefs import drop_live_changes
from strata.packages.labdistro import Package, build_rpm
from strata.packages.pkgcache import package_ref
from strata.sysroot.sysroot import Sysroot

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
STRATA = [sys.executable, "-m", "strata.cli.main"]
COMPOSE_WORK = Path("/var/tmp/strata-bench-compose")
WORK = Path("/var/tmp/strata-bench-layering")
REF = "bench/x86_64/distro"
PACKAGES = ("bench-tool", "bench-tool-two", "bench-tool-three")


def base_ready(work: Path) -> bool:
    return (work / "strata-repo" / "refs" / "heads" / REF).exists() and (work / "trad-root" / "usr").is_dir()


def build_base(work: Path) -> None:
    """Corpus, the strata-composed base commit and the same package set installed by rpm into a plain root."""
    work.mkdir(parents=True, exist_ok=True)
    corpus = build_corpus(work, "medium")
    treefile = write_treefile(corpus, work / "treefile")
    repo = work / "strata-repo"
    shutil.rmtree(repo, ignore_errors=True)
    subprocess.run([*STRATA, "repo", "init", "--repo", str(repo), "--mode", "archive"], check=True)
    subprocess.run([*STRATA, "compose", "tree", "--repo", str(repo), "--cachedir", str(work / "strata-cache"),
                    str(treefile)], check=True, stdout=subprocess.DEVNULL, cwd=PROJECT)
    root = work / "trad-root"
    shutil.rmtree(root, ignore_errors=True)
    rpms = sorted(str(p) for p in corpus.rglob("*.rpm"))
    subprocess.run(["rpm", "--root", str(root), "--dbpath", "/usr/share/rpm", "-i", "--nodeps", "--noscripts",
                    "--nosignature", "--nodigest", "--force-debian", *rpms], check=True, stdout=subprocess.DEVNULL)


def small_package_repo() -> Path:
    repo = WORK / "extra-repo"
    (repo / "Packages").mkdir(parents=True)
    for name in PACKAGES:
        pkg = Package(name, "1.0", summary="one small tool")
        pkg.add_file(f"/usr/bin/{name}", f"#!/bin/sh\necho {name}\n".encode(), 0o755)
        pkg.add_file(f"/usr/share/{name}/README", b"bench\n")
        build_rpm(pkg, repo / "Packages")
    subprocess.run(["createrepo_c", "--quiet", str(repo)], check=True)
    return repo


def booted_sysroot(base_work: Path, extra: Path) -> Path:
    sysroot = WORK / "sysroot"
    subprocess.run([*STRATA, "admin", "init-fs", str(sysroot)], check=True)
    subprocess.run([*STRATA, "admin", "os-init", "--sysroot", str(sysroot), "os"], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([*STRATA, "repo", "pull-local", "--repo", f"{sysroot}/ostree/repo", "--remote", "bench",
                    str(base_work / "strata-repo"), REF], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*STRATA, "admin", "deploy", "--sysroot", str(sysroot), "--os", "os", f"bench:{REF}"], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([*STRATA, "admin", "boot", "--sysroot", str(sysroot)], check=True, stdout=subprocess.DEVNULL)
    etc = next((sysroot / "ostree/deploy/os/deploy").glob("*.0")) / "etc"
    (etc / "yum.repos.d").mkdir(exist_ok=True)
    (etc / "yum.repos.d" / "extra.repo").write_text(f"[extra]\nname=extra\nbaseurl=file://{extra}\nenabled=1\n")
    return sysroot


def forget(sysroot: Path, names: tuple[str, ...]) -> None:
    """Back to the booted base: no pending deployment, no live changes, the packages not cached."""
    subprocess.run([*STRATA, "cleanup", "-p", "--sysroot", str(sysroot)], check=True, stdout=subprocess.DEVNULL)
    opened = Sysroot.open(sysroot)
    drop_live_changes(opened)
    for name in names:
        ref = package_ref(name, None, "1.0", "1", "x86_64")
        if opened.repo.read_ref(ref) is not None:
            opened.repo.set_ref(ref, None)


def strata_runs(sysroot: Path, runs: int, second: bool, third: bool) -> dict[str, list[tuple[float, float]]]:
    results: dict[str, list[tuple[float, float]]] = {"install": [], "apply-live": [], "install second": [],
                                                     "install third": []}
    for _ in range(runs):
        forget(sysroot, PACKAGES)
        results["install"].append(timed_run([*STRATA, "install", "--sysroot", str(sysroot), PACKAGES[0]], PROJECT))
        results["apply-live"].append(timed_run([*STRATA, "apply-live", "--sysroot", str(sysroot)], PROJECT))
        for wanted, name, package in ((second or third, "install second", PACKAGES[1]),
                                      (third, "install third", PACKAGES[2])):
            if wanted:
                results[name].append(timed_run([*STRATA, "install", "--sysroot", str(sysroot), package], PROJECT))
    forget(sysroot, PACKAGES)
    return results


def reference_runs(base_work: Path, extra: Path, runs: int) -> list[tuple[float, float]]:
    root = WORK / "rpm-root"
    rpm_file = next((extra / "Packages").glob(f"{PACKAGES[0]}-1.0*.rpm"))
    rpm = ["rpm", "--root", str(root), "--dbpath", "/usr/share/rpm", "--force-debian", "--nodeps"]
    subprocess.run(["cp", "-a", str(base_work / "trad-root"), str(root)], check=True)
    results = []
    for _ in range(runs):
        results.append(timed_run([*rpm, "-i", str(rpm_file)]))
        subprocess.run([*rpm, "-e", PACKAGES[0]], check=True)
    return results


def summary(name: str, samples: list[tuple[float, float]], target: str, reference: float | None = None) -> str:
    times = [s for s, _ in samples]
    median = statistics.median(times)
    ratio = f"{median / reference:>8.1f}x" if reference else " " * 9
    return (f"{name:<36}{median:>8.2f}  [{min(times):.2f} - {max(times):.2f}]{ratio}"
            f"{max(r for _, r in samples):>8.0f} MB   {target}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--second", action="store_true", help="also time a second package on top of the first")
    parser.add_argument("--third", action="store_true", help="and a third on top of those (implies --second)")
    parser.add_argument("--base-work", type=Path, default=Path("/var/tmp/strata-bench-layering-base"))
    args = parser.parse_args()
    base_work: Path = COMPOSE_WORK if base_ready(COMPOSE_WORK) and not base_ready(args.base_work) else args.base_work
    if not base_ready(base_work):
        build_base(base_work)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    extra = small_package_repo()
    sysroot = booted_sysroot(base_work, extra)
    results = strata_runs(sysroot, args.runs, args.second, args.third)
    reference = reference_runs(base_work, extra, args.runs)
    ref_median = statistics.median(s for s, _ in reference)
    packages = subprocess.run(["rpm", "--root", str(base_work / "trad-root"), "--dbpath", "/usr/share/rpm", "-qa"],
                              capture_output=True, text=True, check=True).stdout.count("\n")
    print(f"base: {packages} packages; {args.runs} runs each, caches dropped before each")
    print(f"{'operation':<36}{'median':>8}  {'[min - max]':<15}{'vs rpm':>7}{'peak RSS':>11}")
    lines: list[tuple[str, str, Callable[[], list[tuple[float, float]]]]] = [
        ("strata install (staged deployment)", "target <= 1.5 s", lambda: results["install"]),
        ("strata apply-live", "target <= 0.4 s", lambda: results["apply-live"]),
    ]
    if args.second or args.third:
        lines.append(("strata install, second package", "target <= 1.5 s", lambda: results["install second"]))
    if args.third:
        lines.append(("strata install, third (spare tree)", "target <= 1.5 s", lambda: results["install third"]))
    for name, target, samples in lines:
        print(summary(name, samples(), target, ref_median))
    print(summary("rpm -i into a plain root (reference)", reference, ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
