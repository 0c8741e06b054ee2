"""Benchmark: `strata-ostree prune` vs the real `ostree prune` on a repository with a long history, in one run.

The repository (written by the real ostree, so both tools read the same objects) holds --commits commits on
one branch, each changing one file of a small tree, and a second branch forked halfway. Lines: prune from every
commit (ostree's default: each commit a root, all history), and prune --refs-only --depth=10 --no-prune. Page
caches are dropped before every timed run; each line is measured --reps times, ostree and strata alternating,
each run on a fresh copy. Prints the median seconds, their spread, the median strata/ostree ratio and strata's
peak RSS.

    .venv/bin/python bench/bench_prune.py [--commits N] [--reps N] [--work DIR] [--strata-src DIR]

--strata-src runs strata from another source tree (e.g. an older commit unpacked with git archive), to compare
versions of strata on the same repository.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib import Figure, print_figures, timed_run

LINES = {
    "prune (every commit a root)": ["prune"],
    "prune --refs-only --depth=10 (dry)": ["prune", "--refs-only", "--depth=10", "--no-prune"],
}


def make_history(work: Path, commits: int) -> Path:
    repo = work / "history"
    if (repo / "refs" / "heads" / "main").exists():
        return repo
    partial, tree = work / "history.partial", work / "tree"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(tree, ignore_errors=True)
    subprocess.run(["ostree", f"--repo={partial}", "init", "--mode=archive"], check=True)
    for n in range(20):
        (tree / f"d{n % 4}").mkdir(parents=True, exist_ok=True)
        (tree / f"d{n % 4}" / f"f{n}").write_text(f"file {n}\n")
    for n in range(commits):
        (tree / f"d{n % 4}" / f"f{n % 20}").write_text(f"file {n % 20} version {n}\n")
        subprocess.run(["ostree", f"--repo={partial}", "commit", "-b", "main", f"--timestamp=@{1_600_000_000 + n}",
                        str(tree)], check=True, stdout=subprocess.DEVNULL)
        if n == commits // 2:
            subprocess.run(["ostree", f"--repo={partial}", "refs", "--create=fork", "main"], check=True)
    partial.rename(repo)
    return repo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--strata-src", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="strata-bench-prune-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    if args.strata_src:
        os.environ["PYTHONPATH"] = str(args.strata_src)
    strata = [sys.executable, "-m", "strata.cli.ostree"]
    history = make_history(work, args.commits)
    figures: dict[str, Figure] = {}
    for _rep in range(args.reps):
        for name, verb in LINES.items():
            copies = {side: work / f"run-{side}" for side in ("ostree", "strata")}
            for copy in copies.values():
                shutil.rmtree(copy, ignore_errors=True)
                shutil.copytree(history, copy, symlinks=True)
            theirs, _ = timed_run(["ostree", f"--repo={copies['ostree']}", *verb])
            ours, rss = timed_run([*strata, f"--repo={copies['strata']}", *verb])
            figures.setdefault(name, Figure(name)).add(ours, theirs, rss)
    for copy in work.glob("run-*"):
        shutil.rmtree(copy)
    print(f"{args.commits} commits; strata from {args.strata_src or 'this checkout'}")
    print_figures(list(figures.values()))
    print(f"work dir: {work} (remove it when done)")


if __name__ == "__main__":
    main()
