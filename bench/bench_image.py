"""Benchmark: strata's image store vs the real ostree on the same tree, in one run.

Lines: commit into a bare-user repo, commit into an archive repo, hardlink checkout (bare-user, user mode),
fsck (archive and bare-user), and a recommit of the checked-out tree after changing 10 files (bare-user,
device/inode cache). Page caches are dropped before every timed run; each line is measured --reps times
(fresh repositories each time), ostree and strata alternating. Prints the median seconds, their spread, the
median strata/ostree ratio and strata's peak RSS.

    .venv/bin/python bench/bench_image.py [--tree DIR] [--work DIR] [--reps N] [--only checkout]

--only checkout commits the tree once per tool and measures only the checkout line (--reps times).

The default tree is a copy of this machine's /usr/share and /usr/bin (tens of thousands of files).
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
CHECKOUT = "checkout (hardlinks, -U -H)"


def make_tree(work: Path) -> Path:
    tree = work / "tree"
    if not tree.exists():
        partial = work / "tree.partial"
        shutil.rmtree(partial, ignore_errors=True)
        (partial / "usr").mkdir(parents=True)
        for sub in ("share", "bin"):
            subprocess.run(["cp", "-a", f"/usr/{sub}", str(partial / "usr" / sub)], check=True)
        partial.rename(tree)
    return tree


def change_files(tree: Path, count: int) -> None:
    changed = 0
    for path in sorted(tree.rglob("*.txt")) + sorted(tree.rglob("*.py")):
        if changed == count:
            return
        if path.is_file() and not path.is_symlink():
            replacement = path.with_name(path.name + ".bench-new")
            replacement.write_bytes(path.read_bytes() + b"\n# changed by bench\n")
            replacement.rename(path)  # a new inode: never write through a hardlink into the store
            changed += 1


def run_pair(figures: dict[str, Figure], name: str, ours: list[str], theirs: list[str], *,
             ours_first: bool = False) -> None:
    if ours_first:
        strata_time, rss = timed_run(ours)
        ostree_time, _ = timed_run(theirs)
    else:
        ostree_time, _ = timed_run(theirs)
        strata_time, rss = timed_run(ours)
    figures.setdefault(name, Figure(name)).add(strata_time, ostree_time, rss)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", type=Path)
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/strata-bench-image"))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", choices=["checkout"], help="measure only this line")
    args = parser.parse_args()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    tree = args.tree or make_tree(work)
    files = sum(len(f) for _, _, f in os.walk(tree))
    figures: dict[str, Figure] = {}
    repos = init_repos(work / "runs", ("bare-user",)) if args.only else {}
    if args.only:
        commit_once(repos, tree)
    for _ in range(args.reps):
        if args.only:
            checkout_round(work / "runs", repos, figures)
        else:
            one_round(work / "runs", tree, figures)
        print_figures(list(figures.values()))  # as it goes: a long run that fails later still leaves its figures
    print(f"tree: {tree} ({files} files); load average (1, 5, 15 min) at the end: {os.getloadavg()}")
    print_figures(list(figures.values()))
    print("targets: ratio <= 1.0 on every line, peak RSS < 300 MB")
    return 0


def init_repos(runs: Path, modes: tuple[str, ...]) -> dict[str, Path]:
    """A fresh repository of each mode for each tool, named TOOL-MODE."""
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir()
    repos = {f"{tool}-{mode}": runs / f"{tool}-{mode}" for tool in ("strata", "ostree") for mode in modes}
    for name, path in repos.items():
        tool, mode = name.split("-", 1)
        if tool == "strata":
            subprocess.run([*STRATA, "repo", "init", "--repo", str(path), "--mode", mode], check=True)
        else:
            subprocess.run(["ostree", f"--repo={path}", "init", f"--mode={mode}"], check=True)
    return repos


def commit_once(repos: dict[str, Path], tree: Path) -> None:
    subprocess.run([*STRATA, "repo", "commit", "--repo", str(repos["strata-bare-user"]), "-b", "b",
                    f"--tree=dir={tree}"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["ostree", f"--repo={repos['ostree-bare-user']}", "commit", "-b", "b", f"--tree=dir={tree}"],
                   check=True, stdout=subprocess.DEVNULL)


def checkout_round(runs: Path, repos: dict[str, Path], figures: dict[str, Figure]) -> None:
    """One checkout by each tool; the tool that goes first alternates from round to round."""
    co_s, co_o = runs / "co-strata", runs / "co-ostree"
    for old in (co_s, co_o):
        shutil.rmtree(old, ignore_errors=True)
    subprocess.run(["sync"], check=True)  # the removal's writes are not the first timed run's
    run_checkouts(figures, repos, co_s, co_o, ours_first=len(figures.get(CHECKOUT, Figure(CHECKOUT)).ours) % 2 == 1)


def run_checkouts(figures: dict[str, Figure], repos: dict[str, Path], co_s: Path, co_o: Path, *,
                  ours_first: bool = False) -> None:
    run_pair(figures, CHECKOUT,
             [*STRATA, "repo", "checkout", "--repo", str(repos["strata-bare-user"]), "-U", "-H", "b", str(co_s)],
             ["ostree", f"--repo={repos['ostree-bare-user']}", "checkout", "-U", "-H", "b", str(co_o)],
             ours_first=ours_first)


def one_round(runs: Path, tree: Path, figures: dict[str, Figure]) -> None:
    repos = init_repos(runs, ("bare-user", "archive"))
    for mode in ("bare-user", "archive"):
        run_pair(figures, f"commit ({mode})",
                 [*STRATA, "repo", "commit", "--repo", str(repos[f"strata-{mode}"]), "-b", "b", f"--tree=dir={tree}"],
                 ["ostree", f"--repo={repos[f'ostree-{mode}']}", "commit", "-b", "b", f"--tree=dir={tree}"])
    co_s, co_o = runs / "co-strata", runs / "co-ostree"
    run_checkouts(figures, repos, co_s, co_o)
    for mode in ("archive", "bare-user"):
        run_pair(figures, f"fsck ({mode})", [*STRATA, "repo", "fsck", "--repo", str(repos[f"strata-{mode}"])],
                 ["ostree", f"--repo={repos[f'ostree-{mode}']}", "fsck"])
    change_files(co_s, 10)
    change_files(co_o, 10)
    run_pair(figures, "recommit, 10 changed files",
             [*STRATA, "repo", "commit", "--repo", str(repos["strata-bare-user"]), "-b", "b", f"--tree=dir={co_s}"],
             ["ostree", f"--repo={repos['ostree-bare-user']}", "commit", "--link-checkout-speedup", "-b", "b",
              f"--tree=dir={co_o}"])


if __name__ == "__main__":
    sys.exit(main())
