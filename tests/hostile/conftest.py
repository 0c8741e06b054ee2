"""Fixtures of the hostile suite."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _remove_deep_trees(tmp_path: Path) -> Iterator[None]:
    """Remove each test's directory when it ends: hostile trees thousands of levels deep defeat pytest's own
    clean-up (shutil.rmtree recurses once per level) and would break every later session on the machine."""
    yield
    subprocess.run(["rm", "-rf", "--one-file-system", str(tmp_path)], check=False)
