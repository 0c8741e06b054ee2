"""What every benchmark needs: cold caches before a timed run, the run's time and peak memory, and the median
and spread of repeated figures (the machine is shared, so a single run means little)."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


def drop_caches() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def timed_run(argv: list[str], cwd: Path | None = None) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of argv, started with cold page caches; fails loudly if argv fails."""
    drop_caches()
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, cwd=cwd)
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(argv)}")
    return elapsed, usage.ru_maxrss / 1024


def timed(argv: list[str]) -> float:
    return timed_run(argv)[0]


@dataclass
class Figure:
    """One benchmark line measured several times: strata's and the reference's seconds, strata's RSS."""

    name: str
    ours: list[float] = field(default_factory=list)
    theirs: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)

    def add(self, ours: float, theirs: float, rss: float = 0.0) -> None:
        self.ours.append(ours)
        self.theirs.append(theirs)
        self.rss.append(rss)

    @property
    def ratios(self) -> list[float]:
        return [o / t for o, t in zip(self.ours, self.theirs, strict=True)]


def spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def print_figures(figures: list[Figure], *, reference: str = "ostree") -> None:
    """Median of every figure, its spread (min-max), and the median of the per-run ratios."""
    print(f"{'operation':<34}{'strata s':>9}{'(spread)':>16}{reference + ' s':>10}{'(spread)':>16}"
          f"{'ratio':>7}{'(spread)':>12}{'RSS MB':>8}  runs")
    for fig in figures:
        print(f"{fig.name:<34}{statistics.median(fig.ours):>9.2f}{spread(fig.ours):>16}"
              f"{statistics.median(fig.theirs):>10.2f}{spread(fig.theirs):>16}"
              f"{statistics.median(fig.ratios):>7.2f}{spread(fig.ratios):>12}{max(fig.rss):>8.0f}  {len(fig.ours)}")
