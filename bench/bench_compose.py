"""Benchmark: `strata compose tree` vs the traditional path (rpm -i into a root, then ostree commit).

Builds (once, cached) a distro-sized corpus with ../shared/corpus/mkcorpus, then times in one run:
  traditional  rpm --root T -i --nodeps --noscripts (all RPMs) + ostree commit into an archive repo
  cold         strata compose tree with an empty cache
  warm         strata compose tree --force-nocache with the package cache filled
  no-change    strata compose tree again (nothing changed: no commit)
Page caches are dropped before each timed run. Prints times, ratios and strata's peak RSS.

    .venv/bin/python bench/bench_compose.py [--size small|medium] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchlib import drop_caches, timed_run

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
MKCORPUS = PROJECT.parent / "shared" / "corpus" / "mkcorpus"
STRATA = [sys.executable, "-m", "strata.cli.main"]






def build_corpus(work: Path, size: str) -> Path:
    out = work / f"corpus-{size}"
    if not (out / "distro" / "corpus.json").exists():
        subprocess.run([sys.executable, str(MKCORPUS), "distro", str(out), "--size", size, "--level", "3"],
                       check=True)
    return out / "distro"


def write_treefile(corpus: Path, tree_dir: Path) -> Path:
    info = json.loads((corpus / "corpus.json").read_text())
    names = sorted(p["name"] for p in info["packages"])
    tree_dir.mkdir(parents=True, exist_ok=True)
    (tree_dir / "bench.repo").write_text(
        f"[bench]\nname=bench\nbaseurl=file://{corpus}\nenabled=1\ngpgcheck=0\n")
    treefile = tree_dir / "bench.yaml"
    treefile.write_text(json.dumps({"ref": "bench/x86_64/distro", "repos": ["bench"], "packages": names,
                                    "recommends": False}))
    return treefile


def traditional(corpus: Path, work: Path) -> float:
    root = work / "trad-root"
    repo = work / "trad-repo"
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(repo, ignore_errors=True)
    rpms = sorted(str(p) for p in corpus.rglob("*.rpm"))
    subprocess.run(["ostree", f"--repo={repo}", "init", "--mode=archive"], check=True)
    drop_caches()
    start = time.monotonic()
    subprocess.run(["rpm", "--root", str(root), "--dbpath", "/usr/share/rpm", "-i", "--nodeps", "--noscripts",
                    "--nosignature", "--nodigest", *rpms], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["ostree", f"--repo={repo}", "commit", "-b", "trad", f"--tree=dir={root}"], check=True,
                   stdout=subprocess.DEVNULL)
    return time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="medium", choices=["small", "medium"])
    parser.add_argument("--work", default="/var/tmp/strata-bench-compose")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    corpus = build_corpus(work, args.size)
    treefile = write_treefile(corpus, work / "treefile")
    repo = work / "strata-repo"
    cache = work / "strata-cache"
    for path in (repo, cache):
        shutil.rmtree(path, ignore_errors=True)
    subprocess.run([*STRATA, "repo", "init", "--repo", str(repo), "--mode", "archive"], check=True)
    compose = [*STRATA, "compose", "tree", "--repo", str(repo), "--cachedir", str(cache), str(treefile)]

    trad = traditional(corpus, work)
    cold, rss_cold = timed_run(compose, PROJECT)
    warm, rss_warm = timed_run([*compose, "--force-nocache"], PROJECT)
    nochange, rss_nochange = timed_run(compose, PROJECT)
    rss = max(rss_cold, rss_warm, rss_nochange)
    info = json.loads((corpus / "corpus.json").read_text())
    print(f"corpus: {len(info['packages'])} packages")
    print(f"{'run':<28}{'seconds':>10}{'ratio':>10}")
    print(f"{'traditional (rpm + ostree)':<28}{trad:>10.1f}{1.0:>10.2f}")
    print(f"{'strata cold cache':<28}{cold:>10.1f}{cold / trad:>10.2f}   target <= 1.0")
    print(f"{'strata warm cache':<28}{warm:>10.1f}{warm / trad:>10.2f}   target <= 0.5")
    print(f"{'strata no-change':<28}{nochange:>10.1f}{nochange / trad:>10.2f}   target < 2 s")
    print(f"strata peak RSS: {rss:.0f} MB (target < 500 MB; the rpm it runs for the rpmdb is not counted)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
