"""An nginx of our own on 127.0.0.1 serving a directory, for pull tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.pull.nginx import start_nginx, stop_nginx


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Callable[[Path], str]]:
    """serve(directory) -> base URL; nginx stops at the end of the test."""
    pid_files: list[Path] = []

    def serve(root: Path) -> str:
        url, pid_file = start_nginx(root, tmp_path / "nginx")
        pid_files.append(pid_file)
        return url

    yield serve
    for pid_file in pid_files:
        stop_nginx(pid_file)


@pytest.fixture(autouse=True)
def _stop_gpg_agents(tmp_path: Path) -> Iterator[None]:
    """gpg starts an agent per homedir; the tests' homedirs are temporary, so are their agents."""
    yield
    import shutil
    import subprocess
    gpgconf = shutil.which("gpgconf")
    if gpgconf is None:
        return
    for home in tmp_path.rglob("pubring.kbx"):
        subprocess.run([gpgconf, "--homedir", str(home.parent), "--kill", "gpg-agent"], check=False,
                       capture_output=True)
