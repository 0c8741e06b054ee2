"""Scripts that modify base files (issue 9, item 3): the tree they run on is hardlinked into an object store
(the system repo when layering, the compose package cache when composing). Their changes must reach the
new commit while every object stays intact, as both fscks see it."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from strata.image.repo import Repo, RepoMode
from tests.hostile.labsys import (
    assert_repo_clean,
    booted_lab_sysroot,
    deployment_root,
    strata,
)
from tests.hostile.rpms import build_hostile_rpm, make_repo, write_repo_file
from tests.lab import copy_treefile_dir

MODIFY_BASE = "echo X-from-post >> /usr/lib/os-release; chmod 4777 /usr/bin/sed; rm /usr/bin/grep"


def evil_rpm(outdir: Path) -> Path:
    return build_hostile_rpm(outdir, "evil-modify", files={"/usr/share/evil-modify/README": b"x\n"},
                             scripts={"post": MODIFY_BASE})


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_layering_script_changes_reach_the_commit_not_the_repo(lab_repo: Path, tmp_path: Path) -> None:
    sysroot = booted_lab_sysroot(lab_repo, tmp_path / "sysroot")
    proc = strata("install", "--sysroot", str(sysroot), str(evil_rpm(tmp_path / "rpm")))
    assert proc.returncode == 0, proc.stderr
    assert_repo_clean(sysroot / "ostree" / "repo")
    new, old = deployment_root(sysroot, 0), deployment_root(sysroot, 1)
    assert (new / "usr/lib/os-release").read_text().endswith("X-from-post\n")
    assert mode(new / "usr/bin/sed") == 0o4777 and not (new / "usr/bin/grep").exists()
    assert "X-from-post" not in (old / "usr/lib/os-release").read_text()
    assert mode(old / "usr/bin/sed") == 0o755 and (old / "usr/bin/grep").is_file()


@pytest.fixture
def hostile_treefile(lab: Path, tmp_path: Path) -> Path:
    """The lab treefile plus the evil package (from its own rpm-md repo) and a postprocess script that also
    modifies base files."""
    treefile = copy_treefile_dir(lab, tmp_path / "treefile")
    repo = make_repo(tmp_path / "evil-repo", [evil_rpm(tmp_path / "rpm")])
    write_repo_file(treefile.parent / "evil.repo", "evil", repo)
    data = json.loads(treefile.read_text())
    data["packages"].append("evil-modify")
    data["repos"].append("evil")
    data["postprocess"] = ["echo Y-from-postprocess >> /usr/lib/os-release; chmod 4777 /usr/bin/bash"]
    treefile.write_text(json.dumps(data))
    return treefile


def test_compose_script_changes_reach_the_commit_not_the_cache(hostile_treefile: Path, tmp_path: Path) -> None:
    repo, cache = tmp_path / "repo", tmp_path / "cache"
    Repo.init(repo, RepoMode.ARCHIVE)
    proc = strata("compose", "tree", "--repo", str(repo), "--cachedir", str(cache), str(hostile_treefile))
    assert proc.returncode == 0, proc.stderr
    assert_repo_clean(repo)
    assert_repo_clean(cache / "pkgcache-repo")
    ref = json.loads(hostile_treefile.read_text())["ref"].replace("${basearch}", "x86_64")
    os_release = strata("repo", "cat", "--repo", str(repo), ref, "/usr/lib/os-release").stdout.splitlines()
    assert "X-from-post" in os_release and os_release[-1] == "Y-from-postprocess"
    listing = strata("repo", "ls", "--repo", str(repo), ref, "/usr/bin/sed", "/usr/bin/bash", "/usr/bin/grep")
    assert "-04777 0 0" in listing.stdout.splitlines()[0] and "/usr/bin/sed" in listing.stdout
    assert "/usr/bin/bash" in listing.stdout.splitlines()[1] and "-04777" in listing.stdout.splitlines()[1]
    assert "/usr/bin/grep" not in listing.stdout
