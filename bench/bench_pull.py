"""Benchmark: `strata repo pull` vs the real `ostree pull` of the same archive repository from the same local
nginx, in one run (time, CPU time and bytes), into fresh bare-user repositories, alternating the two, --reps
times each (median and spread). Page caches dropped before each run. CPU time (user+sys of the pull and its
worker processes) is the steadier number on a shared machine: wall time follows the machine's load.

    .venv/bin/python bench/bench_pull.py [--source-repo ARCHIVE_REPO] [--reps 3] [--skip-update]

The default source is the archive repo bench_image.py leaves behind (a commit of /usr/share and /usr/bin).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from benchlib import timed, timed_run

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.pull.nginx import start_nginx, stop_nginx

STRATA = [sys.executable, "-m", "strata.cli.main"]
WORK = Path("/var/tmp/strata-bench-pull")




def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_with_cpu(argv: list[str]) -> tuple[float, float]:
    """Wall seconds (cold caches) and CPU seconds of argv and the processes it waited for."""
    before = children_cpu()
    elapsed = timed_run(argv)[0]
    return elapsed, children_cpu() - before


def fresh_client(path: Path, url: str, *, strata: bool) -> None:
    shutil.rmtree(path, ignore_errors=True)
    if strata:
        subprocess.run([*STRATA, "repo", "init", "--repo", str(path), "--mode", "bare-user"], check=True)
        subprocess.run([*STRATA, "repo", "remote", "add", "--repo", str(path), "origin", url], check=True)
    else:
        subprocess.run(["ostree", f"--repo={path}", "init", "--mode=bare-user"], check=True)
        subprocess.run(["ostree", f"--repo={path}", "remote", "add", "--no-gpg-verify", "origin", url], check=True)


def summary_line(name: str, runs: list[tuple[float, float]]) -> str:
    walls, cpus = [w for w, _ in runs], [c for _, c in runs]
    return (f"{name:<22}{statistics.median(walls):>9.2f} ({min(walls):.1f}-{max(walls):.1f})"
            f"{statistics.median(cpus):>9.2f} ({min(cpus):.1f}-{max(cpus):.1f})")


def bytes_served(access_log: Path) -> int:
    total = 0
    for line in access_log.read_text().splitlines():
        fields = line.split('"')
        if len(fields) > 2:
            parts = fields[2].split()
            if len(parts) >= 2 and parts[1].isdigit():
                total += int(parts[1])
    return total


def small_update(repo: Path, ref: str) -> tuple[int, int]:
    """Commit 10 changed files on top of ref and a static delta to it; (files, their .filez bytes)."""
    tree = WORK / "update-tree"
    subprocess.run([*STRATA, "repo", "checkout", "--repo", str(repo), ref, str(tree)], check=True)
    # package-sized changes: ten program files of 100 kB or more, as an update of a few packages brings
    changed = [p for p in sorted(tree.rglob("*")) if p.is_file() and not p.is_symlink()
               and p.stat().st_size > 100_000 and "/bin/" in str(p)]
    changed = changed[:: max(1, len(changed) // 10)][:10]
    for path in changed:
        path.write_bytes(path.read_bytes() + b"\nupdated\n")
    old = subprocess.run([*STRATA, "repo", "rev-parse", "--repo", str(repo), ref], capture_output=True, text=True,
                         check=True).stdout.strip()
    subprocess.run([*STRATA, "repo", "commit", "--repo", str(repo), "-b", ref, f"--tree=dir={tree}"], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([*STRATA, "repo", "static-delta", "generate", "--repo", str(repo), "--from", old, "--to", ref],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*STRATA, "repo", "summary", "-u", "--repo", str(repo)], check=True)
    sizes = 0
    for path in changed:
        digest = _content_checksum(path)
        sizes += (repo / "objects" / digest[:2] / f"{digest[2:]}.filez").stat().st_size
    return len(changed), sizes


def _content_checksum(path: Path) -> str:
    from strata.image.objects import FileMeta, content_checksum
    st = path.lstat()
    return content_checksum(FileMeta(st.st_uid, st.st_gid, st.st_mode), path.read_bytes())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source-repo", type=Path, default=Path("/var/tmp/strata-bench-image/runs/strata-archive"))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--skip-update", action="store_true", help="only the full pulls")
    args = parser.parse_args()
    source: Path = args.source_repo
    if not (source / "config").exists():
        print(f"no archive repo at {source}: run bench/bench_image.py first or pass --source-repo")
        return 1
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    served = WORK / "www" / "repo"
    served.parent.mkdir()
    subprocess.run(["cp", "-a", str(source), str(served)], check=True)
    source = served
    subprocess.run([*STRATA, "repo", "summary", "-u", "--repo", str(source)], check=True)
    refs = subprocess.run([*STRATA, "repo", "refs", "--repo", str(source)], capture_output=True, text=True,
                          check=True).stdout.split()
    url, pid_file = start_nginx(source.parent, WORK / "nginx")
    log = pid_file.parent / "access.log"
    remote_url = f"{url}/{source.name}"
    theirs: list[tuple[float, float]] = []
    ours: list[tuple[float, float]] = []
    try:
        ostree_repo, strata_repo = WORK / "ostree-client", WORK / "strata-client"
        for _ in range(args.reps):
            fresh_client(ostree_repo, remote_url, strata=False)
            before = bytes_served(log)
            theirs.append(timed_with_cpu(["ostree", f"--repo={ostree_repo}", "pull", "origin", *refs]))
            middle = bytes_served(log)
            fresh_client(strata_repo, remote_url, strata=True)
            ours.append(timed_with_cpu([*STRATA, "repo", "pull", "--repo", str(strata_repo), "origin", *refs]))
            after = bytes_served(log)
        print(f"{'pull':<22}{'seconds (spread)':>22}{'CPU s (spread)':>22}")
        print(summary_line("ostree pull", theirs) + f"   {(middle - before) / 1e6:.1f} MB")
        print(summary_line("strata repo pull", ours) + f"   {(after - middle) / 1e6:.1f} MB")
        wall_ratio = statistics.median(w for w, _ in ours) / statistics.median(w for w, _ in theirs)
        cpu_ratio = statistics.median(c for _, c in ours) / statistics.median(c for _, c in theirs)
        print(f"ratio strata/ostree: {wall_ratio:.2f} wall, {cpu_ratio:.2f} CPU (target <= 0.8)")
        if args.skip_update:
            return 0
        update = small_update(source, refs[0])
        objects_client = WORK / "strata-client-objects"
        subprocess.run(["cp", "-a", str(strata_repo), str(objects_client)], check=True)
        mark = bytes_served(log)
        by_objects = timed([*STRATA, "repo", "pull", "--repo", str(objects_client), "--disable-static-deltas",
                            "origin", *refs])
        objects_bytes = bytes_served(log) - mark
        mark = bytes_served(log)
        by_delta = timed([*STRATA, "repo", "pull", "--repo", str(strata_repo), "origin", *refs])
        delta_bytes = bytes_served(log) - mark
    finally:
        stop_nginx(pid_file)
    print(f"update of {update[0]} changed files ({update[1]} bytes as compressed .filez objects):")
    print(f"  by objects: {by_objects:.2f} s, {objects_bytes} bytes")
    print(f"  by static delta: {by_delta:.2f} s, {delta_bytes} bytes "
          f"({delta_bytes / update[1]:.2f}x the compressed changed files; target <= 1.2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
