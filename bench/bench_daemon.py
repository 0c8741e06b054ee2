"""Benchmark: `status` through the daemon against in-process, and the daemon's memory, in one run.

On the lab sysroot (the embedded lab distribution composed into a base, deployed and booted), served by
`strata daemon` on a private dbus-daemon:
- status in-process: the deployments as `status --json` computes them, in this process (median of N);
- status through the daemon: Sysroot.Deployments + ActiveTransaction read over D-Bus (median of N);
- status as a command: `strata status`, the same routed through the daemon (`--daemon-address`), and
  `busctl get-property ... Deployments` (median of N processes);
- the daemon's RSS when idle, and its peak (with its transaction worker) during `PkgChange install htop`.

    .venv/bin/python bench/bench_daemon.py
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.daemon.bus import start_bus, start_daemon
from tests.daemon.rpmostree_client import (
    OS_IFACE,
    SYSROOT_IFACE,
    SYSROOT_PATH,
    call,
    connect,
    get_property,
    os_path,
    run_transaction,
)
from tests.lab import lab_distribution

from strata.core.compose import ComposeOptions, compose_tree
from strata.core.status import deployment_record
from strata.core.transaction import active_transaction
from strata.image.repo import Repo, RepoMode
from strata.image.transfer import pull_local
from strata.sysroot.sysroot import Sysroot

STRATA = [sys.executable, "-m", "strata.cli.main"]
RUNS = 30
LAB_REF = "strata-lab/x86_64/base"


def lab_sysroot(work: Path) -> Path:
    lab = lab_distribution(work)
    repo = work / "repo"
    Repo.init(repo, RepoMode.ARCHIVE)
    compose_tree(lab / "lab.json", ComposeOptions(repo=repo, cachedir=work / "cache"), lambda _line: None)
    root = Sysroot.init_fs(work / "sysroot")
    root.os_init("lab")
    pull_local(Repo.open(repo), root.repo, [LAB_REF], remote="lab")
    root.repo.config.set('remote "lab"', "url", f"file://{repo}")
    root.repo.save_config()
    for argv in (["admin", "deploy", "--sysroot", str(root.path), "--os=lab", f"lab:{LAB_REF}"],
                 ["admin", "boot", "--sysroot", str(root.path)]):
        subprocess.run([*STRATA, *argv], check=True, stdout=subprocess.DEVNULL)
    return root.path


def median_ms(work: Callable[[], object], runs: int = RUNS) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def status_in_process(root: Path) -> object:
    sysroot = Sysroot.open(root)
    booted = sysroot.booted()
    return [deployment_record(sysroot, d, booted) for d in sysroot.deployments()], active_transaction(sysroot)


def rss_mb(pid: int) -> float:
    """The resident set of pid and its children (the transaction worker), in MB."""
    total = 0
    pids = [pid, *(int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]
    for each in pids:
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="strata-bench-daemon-"))
    try:
        root = lab_sysroot(work)
        bus = start_bus(work / "bus")
        daemon = start_daemon(bus.address, root, work / "daemon")
        try:
            report(root, bus.address, daemon.process.pid)
        finally:
            daemon.stop()
            bus.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(root: Path, address: str, pid: int) -> None:
    client = connect(address)
    in_process = median_ms(lambda: status_in_process(root))
    through = median_ms(lambda: (get_property(client, SYSROOT_PATH, SYSROOT_IFACE, "Deployments"),
                                 get_property(client, SYSROOT_PATH, SYSROOT_IFACE, "ActiveTransaction")))
    cli = median_ms(lambda: subprocess.run([*STRATA, "status", "--sysroot", str(root)], check=True,
                                           stdout=subprocess.DEVNULL), runs=10)
    routed = median_ms(lambda: subprocess.run([*STRATA, "--daemon-address", address, "status"], check=True,
                                              stdout=subprocess.DEVNULL), runs=10)
    busctl = median_ms(lambda: subprocess.run(
        ["busctl", f"--address={address}", "get-property", "org.projectatomic.rpmostree1", SYSROOT_PATH,
         SYSROOT_IFACE, "Deployments"], check=True, stdout=subprocess.DEVNULL), runs=10)
    print(f"status in-process:            {in_process:8.1f} ms (median of {RUNS})")
    print(f"status through the daemon:    {through:8.1f} ms (median of {RUNS}; target <= 150 ms)")
    print(f"`strata status` process:      {cli:8.1f} ms (median of 10)")
    print(f"`strata status` via daemon:   {routed:8.1f} ms (median of 10; the CLI routed over D-Bus)")
    print(f"busctl get-property process:  {busctl:8.1f} ms (median of 10)")
    time.sleep(1)
    print(f"daemon RSS idle:              {rss_mb(pid):8.1f} MB (target < 80 MB)")
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb(pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.monotonic()
    address_tx = call(client, os_path(client), OS_IFACE, "PkgChange", "(a{sv}asas)", ({}, ["htop"], []))[0]
    finished = run_transaction(address_tx).finished
    elapsed = time.monotonic() - start
    done.set()
    sampler.join()
    print(f"install htop through daemon:  {elapsed:8.2f} s, finished={finished}")
    print(f"daemon + worker RSS peak:     {peak[0]:8.1f} MB")
    time.sleep(1)
    print(f"daemon RSS after the install: {rss_mb(pid):8.1f} MB")


if __name__ == "__main__":
    sys.exit(main())
