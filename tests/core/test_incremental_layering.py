"""Layering on top of a previous layered commit gives the commit a rebuild from the base gives: the same
commit checksum (tree, rpmdb bytes and metadata), with and without package scripts; changes that are not
pure additions (uninstall, overrides) rebuild from the base and still agree."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from strata.image.checkout import CheckoutOptions, checkout_tree
from strata.image.inspect import diff_trees
from strata.image.objects import ObjectType
from strata.image.repo import Repo
from strata.image.transfer import pull_local
from strata.packages.labdistro import Entry, Package, build_rpm
from strata.sysroot.sysroot import Sysroot
from tests.conftest import LAB_REF

INCREMENTAL = "Adding to the layered commit"


def _packages() -> list[Package]:
    plain = Package("inc-plain", "1.0", summary="no scripts")
    plain.add_file("/usr/bin/inc-plain", b"#!/bin/sh\necho inc-plain\n", 0o755)
    scripts = Package("inc-scripts", "1.0", summary="%pre adds an account, %post writes a file")
    scripts.add(Entry("/usr/share/inc-scripts", "dir", 0o755))
    scripts.add_file("/usr/share/inc-scripts/README", b"inc-scripts\n")
    scripts.pre = ("echo 'incsvc:x:981:' >> /etc/group\n"
                   "echo 'incsvc:x:981:981::/:/sbin/nologin' >> /etc/passwd\n")
    scripts.post = "echo \"post $1\" > /usr/share/inc-scripts/post-ran\n"
    second = Package("inc-scripts-b", "1.0", summary="another account, a file it owns")
    second.requires.add("inc-scripts")
    second.add(Entry("/usr/share/inc-scripts-b", "dir", 0o755))
    second.add(Entry("/usr/share/inc-scripts-b/data", "file", 0o640, data=b"owned\n", user="incsvcb",
                     group="incsvcb"))
    second.pre = ("echo 'incsvcb:x:982:' >> /etc/group\n"
                  "echo 'incsvcb:x:982:982::/:/sbin/nologin' >> /etc/passwd\n")
    return [plain, scripts, second]


class Box:
    def __init__(self, root: Path, server: Path) -> None:
        self.root = root
        self.server = server  # the remote the base comes from

    def run(self, *args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "strata.cli.main", *args, "--sysroot", str(self.root)],
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0, f"strata {' '.join(args)}: {proc.stderr}"
        return proc.stdout

    def pending(self) -> str:
        sysroot = Sysroot.open(self.root)
        booted = sysroot.booted()
        deps = sysroot.deployments()
        assert booted is not None and deps[0].key != booted.key, "no pending deployment"
        return deps[0].csum

    def drop_pending(self) -> None:
        self.run("cleanup", "-p")


@pytest.fixture
def box(lab_repo: Path, tmp_path: Path) -> Box:
    extra = tmp_path / "extra"
    (extra / "Packages").mkdir(parents=True)
    for pkg in _packages():
        build_rpm(pkg, extra / "Packages")
    subprocess.run(["createrepo_c", "--quiet", str(extra)], check=True)
    server = tmp_path / "server"
    subprocess.run(["cp", "-a", str(lab_repo), str(server)], check=True)
    sysroot = Sysroot.init_fs(tmp_path / "sysroot")
    sysroot.os_init("lab")
    pull_local(Repo.open(server), sysroot.repo, [LAB_REF], remote="lab")
    sysroot.repo.config.set('remote "lab"', "url", f"file://{server}")
    sysroot.repo.save_config()
    result = Box(sysroot.path, server)
    result.run("admin", "deploy", "--os=lab", f"lab:{LAB_REF}")
    result.run("admin", "boot")
    etc = sysroot.deployment_dir(Sysroot.open(sysroot.path).deployments()[0]) / "etc"
    (etc / "yum.repos.d" / "extra.repo").write_text(f"[extra]\nname=extra\nbaseurl=file://{extra}\nenabled=1\n")
    return result


def _installed(box: Box, commit: str, tmp_path: Path) -> list[str]:
    """The packages the real rpm reads from the commit's rpmdb."""
    repo = Sysroot.open(box.root).repo
    loaded = repo.load_commit(commit)
    root = tmp_path / f"db-{commit[:12]}"
    (root / "usr/share").mkdir(parents=True)
    checkout_tree(repo, (loaded.root_tree, loaded.root_meta), root / "usr/share/rpm",
                  CheckoutOptions(subpath="usr/share/rpm", force_copy=True))
    out = subprocess.run(["rpm", "--root", str(root), "--dbpath", "/usr/share/rpm", "-qa", "--qf", "%{NAME}\n"],
                         capture_output=True, text=True, check=True).stdout
    return sorted(out.split())


def test_adding_packages_gives_the_rebuilt_commit(box: Box, tmp_path: Path) -> None:
    assert INCREMENTAL not in box.run("install", "inc-scripts")
    assert INCREMENTAL in box.run("install", "inc-plain")  # no scripts: assembled in memory
    assert INCREMENTAL in box.run("install", "inc-scripts-b")  # scripts and owners: checked out and run
    incremental = box.pending()
    box.drop_pending()
    assert INCREMENTAL not in box.run("install", "inc-scripts", "inc-plain", "inc-scripts-b")
    assert box.pending() == incremental
    assert {"inc-plain", "inc-scripts", "inc-scripts-b", "bash"} <= set(_installed(box, incremental, tmp_path))

    out = box.run("uninstall", "inc-plain")  # not an addition: rebuilt from the base
    assert INCREMENTAL not in out
    without = box.pending()
    box.drop_pending()
    box.run("install", "inc-scripts", "inc-scripts-b")
    assert box.pending() == without
    assert "inc-plain" not in _installed(box, without, tmp_path)


def test_overrides_then_addition_agrees_with_the_other_order(box: Box) -> None:
    box.run("override", "remove", "strace")
    assert INCREMENTAL in box.run("install", "inc-plain")  # the same override, one more package
    incremental = box.pending()
    box.drop_pending()
    box.run("install", "inc-plain")
    assert INCREMENTAL not in box.run("override", "remove", "strace")  # overrides changed: from the base
    assert box.pending() == incremental


def _publish_same_tree(server: Path) -> str:
    """A new base commit on the remote: the same tree, a minute younger."""
    repo = Repo.open(server)
    old = repo.read_ref(LAB_REF)
    assert old is not None
    newer = dataclasses.replace(repo.load_commit(old), parent=old, timestamp=repo.load_commit(old).timestamp + 60)
    commit = repo.write_metadata(ObjectType.COMMIT, newer.serialize())
    repo.set_ref(LAB_REF, commit)
    return commit


def test_upgrade_rebuilds_the_layer_on_the_new_base(box: Box) -> None:
    box.run("install", "inc-plain")
    layered = box.pending()
    new_base = _publish_same_tree(box.server)
    assert INCREMENTAL not in box.run("upgrade")
    upgraded = box.pending()
    repo = Sysroot.open(box.root).repo
    before, after = repo.load_commit(layered), repo.load_commit(upgraded)
    assert after.parent == new_base
    # the same tree and packages: only the install times in the rpmdb follow the new base's timestamp
    changes = list(diff_trees(repo, (before.root_tree, before.root_meta), (after.root_tree, after.root_meta)))
    assert changes == [("M", "/usr/share/rpm/rpmdb.sqlite")]
