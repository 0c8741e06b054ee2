"""What every benchmark needs: cold caches before a timed run, and the run's time and peak memory."""

from __future__ import annotations

import os
import subprocess
import time
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
