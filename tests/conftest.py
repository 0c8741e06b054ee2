"""Fixtures shared by every test package."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).parent / "data"
VECTORS = DATA / "vectors"


@pytest.fixture(scope="session")
def vectors() -> Path:
    return VECTORS


@pytest.fixture(scope="session")
def expected() -> dict[str, Any]:
    result: dict[str, Any] = json.loads((VECTORS / "expected.json").read_text())
    return result


def untar(archive: Path, dest: Path) -> Path:
    """Unpack a vector tarball keeping owners, modes and xattrs (needs root, as CI has)."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-p", "-xf", str(archive),
                    "-C", str(dest)], check=True)
    return dest


@pytest.fixture
def unpack(tmp_path: Path) -> Any:
    def _unpack(relpath: str) -> Path:
        return untar(VECTORS / relpath, tmp_path / ("unpacked-" + relpath.replace("/", "-")))
    return _unpack


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; run tools/setup.sh")
    return path


def run_ostree(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the real ostree as an oracle."""
    return subprocess.run([require_tool("ostree"), *args], text=True, capture_output=True, check=check)


def tar_members(archive: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(archive) as tf:
        return tf.getmembers()


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded lab distribution (RPMs + rpm-md), built once per session."""
    from tests.lab import lab_distribution
    return lab_distribution(tmp_path_factory.mktemp("lab"))


LAB_REF = "strata-lab/x86_64/base"


@pytest.fixture(scope="session")
def lab_repo(lab: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An archive repo holding the lab base composed from the embedded lab distribution (ref LAB_REF)."""
    from strata.core.compose import ComposeOptions, compose_tree
    from strata.image.repo import Repo, RepoMode
    work = tmp_path_factory.mktemp("lab-repo")
    Repo.init(work / "repo", RepoMode.ARCHIVE)
    compose_tree(lab / "lab.json", ComposeOptions(repo=work / "repo", cachedir=work / "cache"), lambda _line: None)
    return work / "repo"
