"""rebase -b/-m/--skip-purge/--custom-origin-*, deploy --preview, upgrade --trigger-automatic-update-policy,
kargs --deploy-index/--import-proc-cmdline/--editor, and the pure parts (repository selection, history
records) on their own."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from strata.core import history
from strata.core.kargs_editor import edit_kargs, parse_edited
from strata.core.repos import RepoOptions, selected_ids
from strata.errors import InvalidInputError
from strata.image.commit import CommitRequest, write_commit
from strata.image.repo import Repo
from strata.packages.rpmmd import RepoConfig
from strata.sysroot.sysroot import Sysroot
from tests.conftest import LAB_REF
from tests.core.test_client import ORIGIN_REF, Lab, lab_sysroot, served_lab_sysroot

__all__ = ["lab_sysroot"]
DEVEL_REF = "strata-lab/x86_64/devel"


def _branch(server: Path, ref: str, timestamp_shift: int, version: str) -> str:
    repo = Repo.open(server)
    head = repo.resolve_rev(LAB_REF)
    assert head is not None
    base = repo.load_commit(head)
    with repo.lock():
        commit = write_commit(repo, (base.root_tree, base.root_meta), CommitRequest(
            timestamp=base.timestamp + timestamp_shift, parent=head, metadata=[("version", "s", version)]))
    repo.set_ref(ref, commit)
    return commit


@pytest.fixture
def served(lab: Path, lab_repo: Path, tmp_path: Path) -> tuple[Lab, Path]:
    box, server = served_lab_sysroot(lab, lab_repo, tmp_path, "--karg=rw")
    return box, server


def test_rebase_options_and_deploy_preview(served: tuple[Lab, Path]) -> None:
    box, server = served
    devel = _branch(server, DEVEL_REF, 60, "2.0")
    out = box.run("rebase", "-b", DEVEL_REF, "--custom-origin-url=https://example.org/devel",
                  "--custom-origin-description=Devel builds").stdout
    assert 'Run "strata admin boot --sysroot' in out
    origin = box.default_origin()
    assert origin.get("origin", "refspec") == f"lab:{DEVEL_REF}"
    assert origin.get("origin", "custom-url") == "https://example.org/devel"
    assert origin.get("origin", "custom-description") == "Devel builds"
    repo = Sysroot.open(box.root).repo
    assert repo.read_ref(LAB_REF, "lab") is None and repo.read_ref(DEVEL_REF, "lab") == devel  # purged
    orphan = box.run("rebase", "--custom-origin-description=x", "-b", LAB_REF, check=False)
    assert orphan.returncode == 1 and "--custom-origin-description requires --custom-origin-url" in orphan.stderr

    box.run("rebase", "-m", "lab", "-b", LAB_REF, "--skip-purge")
    origin = box.default_origin()
    assert origin.get("origin", "refspec") == ORIGIN_REF and origin.get("origin", "custom-url") is None
    assert repo.read_ref(DEVEL_REF, "lab") == devel  # kept

    newer = _branch(server, LAB_REF, 120, "3.0")
    preview = box.run("deploy", "--preview", "3.0")
    assert preview.returncode == 0 and f"Commit: {newer}" in preview.stdout and "Version: 3.0" in preview.stdout
    assert Sysroot.open(box.root).deployments()[0].csum != newer  # nothing deployed
    both = box.run("rebase", ORIGIN_REF, "1", "-b", DEVEL_REF, check=False)
    assert both.returncode == 1 and "Cannot specify both a REFSPEC and --branch/--remote" in both.stderr


def test_automatic_update_trigger(served: tuple[Lab, Path], tmp_path: Path) -> None:
    box, server = served
    config = tmp_path / "rpm-ostreed.conf"
    env = {**os.environ, "STRATA_DAEMON_CONFIG": str(config)}
    config.write_text("[Daemon]\nAutomaticUpdatePolicy=none\n")
    argv = [*_strata(), "upgrade", "--sysroot", str(box.root), "--trigger-automatic-update-policy"]
    off = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    assert off.returncode == 0 and "Automatic updates are not enabled" in off.stdout
    newer = _branch(server, LAB_REF, 60, "1.5")
    config.write_text("[Daemon]\nAutomaticUpdatePolicy=stage\n")
    staged = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    assert staged.returncode == 0, staged.stderr
    first = Sysroot.open(box.root).deployments()[0]
    assert first.csum == newer and first.staged


def _strata() -> list[str]:
    import sys
    return [sys.executable, "-m", "strata.cli.main"]


def test_kargs_deploy_index_and_import_proc_cmdline(lab_sysroot: Lab) -> None:
    box = lab_sysroot
    box.run("kargs", "--append=first=1")
    box.admin("boot")
    box.run("kargs", "--append=second=2")
    # 0: the staged deployment (second=2), 1: the booted one (first=1), 2: the rollback
    assert box.run("kargs", "--deploy-index=2").stdout.split() == ["rw"]
    box.run("kargs", "--deploy-index=2", "--append=from-rollback=1")
    args = box.run("kargs").stdout.split()
    assert "from-rollback=1" in args and "first=1" not in args and "second=2" not in args
    box.run("kargs", "--import-proc-cmdline", "--append=live=1")
    args = box.run("kargs").stdout.split()
    assert args == ["rw", "first=1", "live=1"]


def test_kargs_editor_runs_editor_on_the_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "editor"
    script.write_text("#!/bin/sh\nsed -i 's/quiet/loud/' \"$1\"\n")
    script.chmod(0o755)
    monkeypatch.setenv("EDITOR", str(script))
    assert edit_kargs(["rw", "quiet"]) == ["rw", "loud"]
    monkeypatch.setenv("EDITOR", "false")
    with pytest.raises(Exception, match="editor exited with status 1"):
        edit_kargs(["rw"])
    assert parse_edited("# comment rw\nroot=/dev/sda quiet\n\n") == ["root=/dev/sda", "quiet"]


def test_repository_selection() -> None:
    configs = [RepoConfig("a", "a", "file:///a"), RepoConfig("b", "b", "file:///b", enabled=False),
               RepoConfig("c", "c", "file:///c")]
    assert selected_ids(configs, RepoOptions()) == ["a", "c"]
    assert selected_ids(configs, RepoOptions(enable=("b",), disable=("c",))) == ["a", "b"]
    assert selected_ids(configs, RepoOptions(enable=("b",), disable=("*",))) == ["b"]
    with pytest.raises(InvalidInputError, match="Unknown rpm-md repository: nope"):
        selected_ids(configs, RepoOptions(enable=("nope",)))


def test_history_skips_damaged_lines(tmp_path: Path) -> None:
    sysroot = Sysroot.init_fs(tmp_path / "sysroot")
    history.record(sysroot, "install", ["htop"], None, "lab")
    path = sysroot.repo.path / history.HISTORY_PATH
    with open(path, "ab") as f:
        f.write(b'{"torn": \n\xff\xfe not json\n')
    history.record(sysroot, "kargs", ["--append=x"], None, "lab")
    found = history.entries(sysroot)
    assert [(e.verb, e.args) for e in found] == [("kargs", ("--append=x",)), ("install", ("htop",))]
