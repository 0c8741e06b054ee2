"""Progress as people see it: bars with rates on a terminal (driven through a real pty), one line per phase in
logs and pipes, and the signals the lower layers send (the ones the daemon forwards)."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from strata import progress
from strata.core.transaction import LineProgress
from strata.image.repo import Repo
from strata.image.transfer import pull_local
from strata.sysroot.sysroot import Sysroot
from tests.conftest import LAB_REF

# "Importing packages:  33%|██████▋   | 1/3 [00:00, 2.51 items/s]" or "... | 1/3 [00:00, 100kB, 654kB/s]"
BAR_WITH_RATE = re.compile(r"(Downloading from 'lab'|Importing packages): +\d+%\|.*\| \d+/\d+ \[\d\d:\d\d, "
                           r"(?:[^\]]*, )?\s*[\d.]+ ?(?:items|[kMGT]?B)/s\]")  # a measured rate, not "?"


class Recorder:
    """A Reporter that keeps the calls, as the daemon's PipeProgress would forward them."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.downloads: list[tuple[int, int]] = []

    def message(self, text: str) -> None:
        self.calls.append(("message", text))

    def task_begin(self, text: str) -> None:
        self.calls.append(("task_begin", text))

    def task_end(self, text: str) -> None:
        self.calls.append(("task_end", text))

    def percent(self, text: str, percentage: int) -> None:
        self.calls.append(("percent", text, percentage))

    def download(self, fetched_objects: int, fetched_bytes: int) -> None:
        self.calls.append(("download", fetched_objects, fetched_bytes))
        self.downloads.append((fetched_objects, fetched_bytes))

    def progress_end(self) -> None:
        self.calls.append(("progress_end",))


def test_items_send_rpm_ostree_n_items_signals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "UPDATE_INTERVAL", 0.0)
    recorder = Recorder()
    with progress.reporting_to(recorder), progress.items("Importing packages", 2) as bar:
        bar.advance(nbytes=100)
        bar.advance(nbytes=50)
    with progress.reporting_to(recorder), progress.items("Running posttrans scripts", 0):
        pass
    assert recorder.calls == [("percent", "Importing packages (0/2)", 0), ("download", 1, 100),
                              ("percent", "Importing packages (1/2)", 50), ("download", 2, 150),
                              ("percent", "Importing packages (2/2)", 100), ("progress_end",),
                              ("task_begin", "Running posttrans scripts"), ("task_end", "done")]
    assert progress.current() is None  # the receiver is gone with its block


def test_transfer_of_metadata_only_shows_no_phase() -> None:
    recorder = Recorder()
    with progress.reporting_to(recorder):
        empty = progress.transfer()
    empty.update(0, 1228, final=True)
    empty.end()
    assert recorder.calls == []


def test_line_progress_gives_one_line_per_phase() -> None:
    lines: list[str] = []
    out = LineProgress(lines.append)
    with progress.reporting_to(out):
        with progress.task("Writing rpmdb"):
            pass
        with progress.items("Downloading from 'lab'", 2) as bar:
            bar.advance(nbytes=1000)
            bar.advance(nbytes=234)
        with progress.items("Running post scripts", 1) as bar:
            out.message("foo: post ran")
            bar.advance()
        pull = progress.transfer()
        pull.update(12, 3_400_000, final=True)
        pull.end()
    out.message("Inactive requests:")
    assert lines == ["Writing rpmdb... done", "Downloading from 'lab'... done (1.2 kB)",
                     "Running post scripts...", "foo: post ran", "Running post scripts... done",
                     "Receiving objects... done (12 objects, 3.4 MB)", "Inactive requests:"]


def test_line_progress_drops_a_failed_phase() -> None:
    lines: list[str] = []
    out = LineProgress(lines.append)
    with pytest.raises(OSError), progress.reporting_to(out), progress.task("Writing rpmdb"):
        raise OSError("disk full")
    out.finished(False, "disk full")
    out.message("next")
    assert lines == ["next"]


def test_a_transaction_forwards_lower_layer_progress_as_daemon_signals(tmp_path: Path) -> None:
    from strata.core.transaction import Transaction
    from strata.daemon.worker import PipeProgress

    stream = io.StringIO()
    root = Sysroot.init_fs(tmp_path / "sysroot")
    with Transaction(root, "install", ["demo"], PipeProgress(stream), check=False):
        with progress.task("Writing rpmdb"):
            pass
        with progress.items("Running post scripts", 1) as bar:
            bar.advance()
    assert progress.current() is None
    signals = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert signals == [["TaskBegin", "Writing rpmdb"], ["TaskEnd", "done"],
                       ["PercentProgress", "Running post scripts (0/1)", 0],
                       ["PercentProgress", "Running post scripts (1/1)", 100], ["ProgressEnd"]]


def test_http_pull_reports_objects_and_bytes_then_ends(lab_repo: Path, tmp_path: Path) -> None:
    from strata.image.pull import pull
    from strata.image.repo import RepoMode
    from tests.pull.nginx import start_nginx, stop_nginx

    url, pid_file = start_nginx(lab_repo.parent, tmp_path / "nginx")
    try:
        client = Repo.init(tmp_path / "client", RepoMode.BARE_USER)
        client.config.set('remote "lab"', "url", f"{url}/{lab_repo.name}")
        client.config.set('remote "lab"', "gpg-verify", "false")
        client.save_config()
        recorder = Recorder()
        with progress.reporting_to(recorder):
            stats = pull(client, "lab", [LAB_REF])
            again = pull(Repo.open(client.path), "lab", [LAB_REF])
    finally:
        stop_nginx(pid_file)
    assert recorder.downloads[-1] == (stats.fetched_objects, stats.fetched_bytes) and stats.fetched_objects > 100
    assert recorder.downloads == sorted(recorder.downloads)  # the counts only grow
    assert recorder.calls[-1] == ("progress_end",) and recorder.calls.count(("progress_end",)) == 1
    assert again.fetched_objects == 0  # the second pull fetched nothing and showed nothing


def test_local_pull_counts_the_content_it_copies(lab_repo: Path, tmp_path: Path) -> None:
    from strata.image.repo import RepoMode
    recorder = Recorder()
    target = Repo.init(tmp_path / "target", RepoMode.BARE_USER)
    with progress.reporting_to(recorder):
        pull_local(Repo.open(lab_repo), target, [LAB_REF])
        pull_local(Repo.open(lab_repo), target, [LAB_REF])  # nothing left to copy: no phase
    texts = [str(call[1]) for call in recorder.calls if call[0] == "percent"]
    title, done, total = progress.split_count(texts[-1])
    assert title == "Receiving objects" and done == total and total is not None and total > 100
    assert recorder.calls[-1] == ("progress_end",) and recorder.calls.count(("progress_end",)) == 1
    assert recorder.downloads[-1][1] > 1_000_000  # the lab's content bytes


# ------------------------------------------------------------------ the CLI on a lab sysroot


@pytest.fixture(scope="module")
def sysroot(lab_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = Sysroot.init_fs(tmp_path_factory.mktemp("progress") / "sysroot")
    root.os_init("lab")
    pull_local(Repo.open(lab_repo), root.repo, [LAB_REF], remote="lab")
    root.repo.config.set('remote "lab"', "url", f"file://{lab_repo}")
    root.repo.save_config()
    for argv in (["admin", "deploy", "--os=lab", f"lab:{LAB_REF}"], ["admin", "boot"]):
        subprocess.run([sys.executable, "-m", "strata.cli.main", *argv[:2], "--sysroot", str(root.path), *argv[2:]],
                       check=True, capture_output=True)
    return root.path


def on_terminal(argv: list[str]) -> tuple[int, str]:
    """Run strata with a pseudo-terminal (100x30) as its stdin, stdout and stderr; returns (status, output)."""
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["TERM"] = "xterm"
        os.execv(sys.executable, [sys.executable, "-m", "strata.cli.main", *argv])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    _pid, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode(errors="replace")


def test_install_on_a_terminal_shows_bars_with_rates(sysroot: Path) -> None:
    status, output = on_terminal(["install", "--sysroot", str(sysroot), "htop"])
    assert status == 0, output
    screens = output.replace("\x1b[K", "").replace("\r\n", "\n").replace("\r", "\n").splitlines()
    assert any(BAR_WITH_RATE.search(line) for line in screens), output
    assert [line for line in screens if line.startswith("Importing packages... done")], output


def test_install_in_a_log_gives_one_line_per_phase(sysroot: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "strata.cli.main", "install", "--sysroot", str(sysroot), "nano"],
                          capture_output=True, text=True, check=True)
    lines = proc.stdout.splitlines()
    assert "\x1b" not in proc.stdout and "\r" not in proc.stdout
    for phase in ("Downloading from 'lab'", "Importing packages", "Writing rpmdb", "Writing OSTree commit"):
        ends = [line for line in lines if line.startswith(f"{phase}... done")]
        assert len(ends) == 1, (phase, lines)
        assert f"{phase}..." not in lines, lines  # no "X..." line before its "X... done"
    assert not any(line.startswith("Receiving objects: 0") for line in lines), lines
