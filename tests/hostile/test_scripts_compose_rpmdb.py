"""Compose writes the rpmdb after the scripts, on the host: a package that makes /usr/share/rpm a symlink
to a host directory is refused before anything is written there."""

from __future__ import annotations

import json
from pathlib import Path

from strata.image.repo import Repo, RepoMode
from tests.hostile.labsys import strata
from tests.hostile.rpms import build_hostile_rpm, make_repo, write_repo_file
from tests.lab import copy_treefile_dir


def test_rpmdb_symlinked_to_the_host_is_refused(lab: Path, tmp_path: Path) -> None:
    host = tmp_path / "host-rpmdb"
    host.mkdir()
    (host / "rpmdb.sqlite-shm").write_text("host file\n")
    rpm = build_hostile_rpm(tmp_path / "rpm", "evil-rpmdb-link", symlinks={"/usr/share/rpm": str(host)})
    treefile = copy_treefile_dir(lab, tmp_path / "treefile")
    write_repo_file(treefile.parent / "evil.repo", "evil", make_repo(tmp_path / "evil-repo", [rpm]))
    data = json.loads(treefile.read_text())
    data["packages"].append("evil-rpmdb-link")
    data["repos"].append("evil")
    treefile.write_text(json.dumps(data))
    Repo.init(tmp_path / "repo", RepoMode.ARCHIVE)
    proc = strata("compose", "tree", "--repo", str(tmp_path / "repo"), "--cachedir", str(tmp_path / "cache"),
                  str(treefile))
    assert proc.returncode != 0
    assert proc.stderr.strip() == "error: /usr/share/rpm in the tree is not a directory"
    assert sorted(p.name for p in host.iterdir()) == ["rpmdb.sqlite-shm"]
    assert (host / "rpmdb.sqlite-shm").read_text() == "host file\n"
