"""Benchmark: static deltas for the lab's one-package update (the lab OS, then the same with `tree` added),
made by strata and by the real `ostree static-delta generate` from the same archive repository in one run.
Prints each delta's size against the bytes of the new objects (what a pull object by object fetches), and
the generation time of both tools (median of --runs, page caches dropped before each run, with the spread).

    .venv/bin/python bench/bench_delta.py [--runs 3] [--work /var/tmp/strata-bench-delta]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from benchlib import timed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.lab import lab_distribution

from strata.image.objects import ObjectType
from strata.image.repo import Repo
from strata.image.traverse import commit_objects

STRATA = [sys.executable, "-m", "strata.cli.main"]
STRATA_OSTREE = [sys.executable, "-m", "strata.cli.ostree"]
REF = "strata-lab/x86_64/base"


def compose(work: Path, lab: Path, extra: list[str]) -> str:
    """Commit the lab treefile (plus extra packages) on REF; returns the commit."""
    treedir = work / ("treefile-" + "-".join(extra or ["base"]))
    treedir.mkdir(parents=True, exist_ok=True)
    shutil.copy(lab / "strata-lab.repo", treedir / "strata-lab.repo")
    treefile = json.loads((lab / "lab.json").read_text())
    treefile["packages"] += extra
    (treedir / "lab.json").write_text(json.dumps(treefile))
    subprocess.run([*STRATA, "compose", "tree", "--repo", str(work / "repo"), "--cachedir", str(work / "cache"),
                    str(treedir / "lab.json")], check=True, stdout=subprocess.DEVNULL)
    return Repo.open(work / "repo").resolve_rev(REF) or ""


def new_object_bytes(repo: Repo, old: str, new: str) -> int:
    have = set(commit_objects(repo, old))
    wanted = {item for item in commit_objects(repo, new) if item not in have}
    return sum(repo.object_path(checksum, objtype).stat().st_size for checksum, objtype in wanted
               if objtype is not ObjectType.COMMIT)


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def generate(argv: list[str], repo: Path, runs: int) -> tuple[list[float], int]:
    """Times of `runs` generations into a fresh copy of repo's deltas, and the delta's size."""
    times = []
    for _ in range(runs):
        shutil.rmtree(repo / "deltas", ignore_errors=True)
        times.append(timed(argv))
    return times, directory_bytes(repo / "deltas")


def applied_by_the_other(work: Path, tool: str, old: str, new: str) -> str:
    """Apply tool's delta with the other tool into a bare-user client holding old; fsck's verdict."""
    client = work / f"client-{tool}"
    shutil.rmtree(client, ignore_errors=True)
    subprocess.run(["ostree", f"--repo={client}", "init", "--mode=bare-user"], check=True)
    subprocess.run(["ostree", f"--repo={client}", "pull-local", str(work / "repo"), old], check=True,
                   stdout=subprocess.DEVNULL)
    applier = ["ostree"] if tool == "strata" else STRATA_OSTREE
    delta = next((work / f"repo-{tool}" / "deltas").glob("*/*-*"))
    subprocess.run([*applier, f"--repo={client}", "static-delta", "apply-offline", str(delta)], check=True)
    fsck = subprocess.run(["ostree", f"--repo={client}", "fsck"], capture_output=True, text=True, check=False)
    whole = subprocess.run(["ostree", f"--repo={client}", "ls", "-R", new], capture_output=True, check=False)
    return "fsck clean" if "no errors found" in fsck.stdout and whole.returncode == 0 else "BROKEN"


def spread(times: list[float]) -> str:
    return f"{statistics.median(times):.2f} s (spread {min(times):.2f}-{max(times):.2f})"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/strata-bench-delta"))
    args = parser.parse_args()
    work: Path = args.work
    if not (work / "repo").is_dir():
        work.mkdir(parents=True, exist_ok=True)
        lab = lab_distribution(work)
        subprocess.run([*STRATA, "repo", "init", "--repo", str(work / "repo"), "--mode", "archive"], check=True)
        compose(work, lab, [])
        compose(work, lab, ["tree"])
    repo = Repo.open(work / "repo")
    new = repo.resolve_rev(REF) or ""
    old = repo.load_commit(new).parent or ""
    objects = new_object_bytes(repo, old, new)
    print(f"lab update {old[:12]} -> {new[:12]} (+tree): new objects {objects} bytes")
    results = {}
    for tool, argv_prefix in (("strata", STRATA_OSTREE), ("ostree", ["ostree"])):
        copy = work / f"repo-{tool}"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(work / "repo", copy, symlinks=True)
        times, size = generate([*argv_prefix, f"--repo={copy}", "static-delta", "generate", f"--from={old}",
                                f"--to={new}"], copy, args.runs)
        results[tool] = size
        print(f"  {tool:7} delta {size} bytes = {size / objects:.2f}x the new objects; generate {spread(times)}; "
              f"applied by the other tool: {applied_by_the_other(work, tool, old, new)}")
    print(f"  strata/ostree delta size: {results['strata'] / results['ostree']:.2f} (target: strata <= 0.4x objects)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
