"""Benchmark: layering one small package on a distro-sized base (about 500 packages), in one run.

strata: `install` (a new staged deployment) and `apply-live` of it, on a booted directory sysroot whose base
is the distro composed by bench_compose.py; reference: `rpm -i` of the same package into a plain root
holding the same package set. Page caches are dropped before each timed run.

    .venv/bin/python bench/bench_layering.py        (run bench/bench_compose.py first)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from benchlib import timed

from strata.packages.labdistro import Package, build_rpm

STRATA = [sys.executable, "-m", "strata.cli.main"]
COMPOSE_WORK = Path("/var/tmp/strata-bench-compose")
WORK = Path("/var/tmp/strata-bench-layering")
REF = "bench/x86_64/distro"




def small_package_repo() -> Path:
    repo = WORK / "extra-repo"
    (repo / "Packages").mkdir(parents=True)
    pkg = Package("bench-tool", "1.0", summary="one small tool")
    pkg.add_file("/usr/bin/bench-tool", b"#!/bin/sh\necho bench-tool\n", 0o755)
    pkg.add_file("/usr/share/bench-tool/README", b"bench\n")
    build_rpm(pkg, repo / "Packages")
    subprocess.run(["createrepo_c", "--quiet", str(repo)], check=True)
    return repo


def main() -> int:
    if not (COMPOSE_WORK / "strata-repo" / "refs" / "heads" / REF).exists():
        print("run bench/bench_compose.py first (it composes the distro base this benchmark layers on)")
        return 1
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    extra = small_package_repo()
    sysroot = WORK / "sysroot"
    subprocess.run([*STRATA, "admin", "init-fs", str(sysroot)], check=True)
    subprocess.run([*STRATA, "admin", "os-init", "--sysroot", str(sysroot), "os"], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([*STRATA, "repo", "pull-local", "--repo", f"{sysroot}/ostree/repo", "--remote", "bench",
                    str(COMPOSE_WORK / "strata-repo"), REF], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*STRATA, "admin", "deploy", "--sysroot", str(sysroot), "--os", "os", f"bench:{REF}"], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([*STRATA, "admin", "boot", "--sysroot", str(sysroot)], check=True, stdout=subprocess.DEVNULL)
    etc = next((sysroot / "ostree/deploy/os/deploy").glob("*.0")) / "etc"
    (etc / "yum.repos.d").mkdir(exist_ok=True)
    (etc / "yum.repos.d" / "extra.repo").write_text(f"[extra]\nname=extra\nbaseurl=file://{extra}\nenabled=1\n")
    install = timed([*STRATA, "install", "--sysroot", str(sysroot), "bench-tool"])
    live = timed([*STRATA, "apply-live", "--sysroot", str(sysroot)])
    root = WORK / "rpm-root"
    subprocess.run(["cp", "-a", str(COMPOSE_WORK / "trad-root"), str(root)], check=True)
    rpm_file = next((extra / "Packages").glob("*.rpm"))
    reference = timed(["rpm", "--root", str(root), "--dbpath", "/usr/share/rpm", "-i", "--force-debian", "--nodeps",
                       str(rpm_file)])
    packages = subprocess.run(["rpm", "--root", str(root), "--dbpath", "/usr/share/rpm", "-qa"], capture_output=True,
                              text=True, check=True).stdout.count("\n")
    print(f"base: {packages} packages")
    print(f"{'operation':<40}{'seconds':>10}")
    print(f"{'strata install (staged deployment)':<40}{install:>10.2f}   target < 5 s")
    print(f"{'strata apply-live':<40}{live:>10.2f}   target < 2 s")
    print(f"{'rpm -i into a plain root (reference)':<40}{reference:>10.2f}")
    print(f"ratio install/rpm: {install / reference:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
