"""`compose tree --test CMD`: the composed lab commit boots in a scratch sysroot, the commands run inside,
and the ref (and summary) move only when every command passed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from strata.image.repo import Repo, RepoMode
from strata.image.summary import parse_summary
from tests.conftest import LAB_REF


def strata(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "strata.cli.main", *args], capture_output=True, text=True,
                          check=False)


@pytest.fixture(scope="module")
def cachedir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compose-test-cache")


def _compose(lab: Path, repo: Path, cachedir: Path, *tests: str) -> subprocess.CompletedProcess[str]:
    words = [word for text in tests for word in ("--test", text)]
    return strata("compose", "tree", "--repo", str(repo), "--cachedir", str(cachedir), str(lab / "lab.json"), *words)


def test_passing_tests_move_the_ref_and_the_summary(lab: Path, cachedir: Path, tmp_path: Path) -> None:
    repo = Repo.init(tmp_path / "repo", RepoMode.ARCHIVE)
    assert strata("repo", "summary", "-u", "--repo", str(repo.path)).returncode == 0
    proc = _compose(lab, repo.path, cachedir, "bash -c 'grep -q ^ID= /etc/os-release && echo booted-ok'",
                    "demo-engine")
    assert proc.returncode == 0, proc.stderr
    assert "Test passed: demo-engine" in proc.stdout and "Booted " in proc.stdout
    commit = Repo.open(repo.path).read_ref(LAB_REF)
    assert commit is not None and f"{LAB_REF} => {commit}" in proc.stdout
    refs, _meta = parse_summary((repo.path / "summary").read_bytes())
    assert [(r.name, r.checksum) for r in refs] == [(LAB_REF, commit)]
    assert not list(repo.tmp_dir.glob("compose-test-*")), "the scratch sysroot is removed"


def test_a_failing_test_leaves_the_ref_and_shows_its_output(lab: Path, cachedir: Path, tmp_path: Path) -> None:
    repo = Repo.init(tmp_path / "repo", RepoMode.ARCHIVE)
    proc = _compose(lab, repo.path, cachedir, "bash -c 'echo first-test-output'",
                    "bash -c 'echo failing-test-says-hello; exec no-such-program --version'", "true")
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("error: test ")
    assert len([line for line in proc.stderr.splitlines() if line.startswith("error:")]) == 1
    assert "  | failing-test-says-hello" in proc.stdout
    assert "  | first-test-output" not in proc.stdout, "a passing test's output is not shown"
    assert "no-such-program" in proc.stdout and "exited with status 127" in proc.stderr
    assert "Running test: true" not in proc.stdout, "tests after a failing one do not run"
    assert Repo.open(repo.path).read_ref(LAB_REF) is None
    assert not list(repo.tmp_dir.glob("compose-test-*"))


def test_an_empty_test_command_is_refused_before_composing(lab: Path, tmp_path: Path) -> None:
    repo = Repo.init(tmp_path / "repo", RepoMode.ARCHIVE)
    proc = _compose(lab, repo.path, tmp_path / "cache", "  ")
    assert proc.returncode != 0 and proc.stderr.strip() == "error: --test needs a command"
    assert not (tmp_path / "cache").exists()
