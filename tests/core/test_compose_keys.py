"""The effect of treefile keys on the composed commit, on the lab distribution plus a few synthetic RPMs
(one compose with many keys, then composes that each change one thing)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import rpm_rs

from strata.core.compose import ComposeOptions, ComposeResult, compose_tree
from strata.errors import StrataError
from strata.image import gpg, gvariant
from strata.image.checkout import checkout_commit
from strata.image.commit import CommitRequest, commit_directory
from strata.image.repo import Repo, RepoMode
from strata.packages.labdistro import SOURCE_DATE, Package, build_rpm

BASE = ["filesystem", "setup", "strata-release", "kernel", "glibc", "bash", "coreutils"]
KERNEL = "6.1.0-1.lab.x86_64"


def _keys_demo_rpm(outdir: Path) -> None:
    """A package with %lang files, an executable, a unit, a sysusers.d entry and files to filter out."""
    builder = rpm_rs.PackageBuilder("keys-demo", "1.0", "MIT", "noarch", "treefile keys demo")
    builder.using_config(rpm_rs.BuildConfig(format=rpm_rs.RpmFormat.V4, source_date=SOURCE_DATE))
    builder.release("1")
    builder.description("treefile keys demo")
    files = {
        "/usr/bin/keys-demo": (b"#!/bin/sh\necho demo\n", 0o755, None),
        "/usr/share/keys-demo/README": (b"from the package\n", 0o644, None),
        "/usr/share/keys-demo/junk-1": (b"junk\n", 0o644, None),
        "/usr/share/keys-demo/msg.fr": (b"bonjour\n", 0o644, "fr"),
        "/usr/share/keys-demo/msg.de": (b"hallo\n", 0o644, "de"),
        "/usr/lib/systemd/system/keys-demo.service": (b"[Service]\nExecStart=/usr/bin/keys-demo\n", 0o644, None),
        "/usr/lib/sysusers.d/keys-demo.conf": (b"u keysdemo - \"keys demo\" /var/empty\n", 0o644, None),
    }
    for path, (data, mode, lang) in files.items():
        builder.with_file_contents(data, rpm_rs.FileOptions.new(path, permissions=mode, language=lang))
    builder.with_file_contents(b"news\n", rpm_rs.FileOptions.new("/usr/share/doc/keys-demo/NEWS", doc=True))
    builder.build().write_to(str(outdir))


def _noarch(name: str, version: str) -> Package:
    pkg = Package(name, version, arch="noarch")
    pkg.add_file(f"/usr/share/{name}/VERSION", f"{version}\n".encode())
    return pkg


def _repo_dir(dest: Path, rpms: list[Package], *, lab: Path | None = None, demo: bool = False) -> Path:
    packages = dest / "Packages"
    if lab is not None:
        shutil.copytree(lab / "lab" / "Packages", packages)
    packages.mkdir(parents=True, exist_ok=True)
    for pkg in rpms:
        build_rpm(pkg, packages)
    if demo:
        _keys_demo_rpm(packages)
    subprocess.run(["createrepo_c", "--quiet", str(dest)], check=True)
    return dest


@pytest.fixture(scope="module")
def world(lab: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("keys")
    _repo_dir(work / "repos" / "custom", [_noarch("pinme", "2.0")], lab=lab, demo=True)
    _repo_dir(work / "repos" / "newer", [_noarch("pinme", "3.0"), _noarch("locked", "2.0")])
    _repo_dir(work / "repos" / "lockonly", [_noarch("locked", "3.0")])
    tf = work / "tf"
    tf.mkdir()
    (tf / "keys.repo").write_text("".join(
        f"[{name}]\nname={name}\nbaseurl=file://{work}/repos/$repodir_{name}\nenabled=1\ngpgcheck=0\n"
        "metadata_expire=0\n\n" for name in ("custom", "newer", "lockonly")))
    repo = work / "repo"
    Repo.init(repo, RepoMode.ARCHIVE)
    layer_src = work / "layer"
    (layer_src / "usr/share/layer").mkdir(parents=True)
    (layer_src / "usr/share/layer/hello").write_text("from a layer\n")
    commit_directory(Repo.open(repo), layer_src, "layers/extra", CommitRequest(subject="layer"))
    override_src = work / "override"
    (override_src / "usr/share/keys-demo").mkdir(parents=True)
    (override_src / "usr/share/keys-demo/README").write_text("from the override layer\n")
    commit_directory(Repo.open(repo), override_src, "layers/override", CommitRequest(subject="override"))
    return {"work": work, "tf": tf, "repo": repo, "cache": work / "cache"}


def _treefile(world: dict[str, Any], name: str, **extra: Any) -> Path:
    data = {"ref": "keys/x86_64", "repos": ["custom", "newer"], "recommends": False,
            "automatic-version-prefix": "7", "automatic-version-suffix": "-",
            "packages": [*BASE, "strace", "keys-demo", "pinme", "locked", "test-scripts"],
            "repovars": {f"repodir_{n}": n for n in ("custom", "newer", "lockonly")}, **extra}
    path = world["tf"] / name
    path.write_text(json.dumps(data))
    return path


def _compose(world: dict[str, Any], treefile: Path, **options: Any) -> tuple[ComposeResult, list[str]]:
    lines: list[str] = []
    result = compose_tree(treefile, ComposeOptions(repo=world["repo"], cachedir=world["cache"], **options),
                          lines.append)
    return result, lines


def _checkout(world: dict[str, Any], commit: str, name: str) -> Path:
    root = world["work"] / name
    checkout_commit(Repo.open(world["repo"]), commit, root)
    return root


@pytest.fixture(scope="module")
def composed(world: dict[str, Any]) -> dict[str, Any]:
    (world["tf"] / "locks.json").write_text(json.dumps({"packages": {"locked": {"evra": "3.0-1.noarch"}}}))
    treefile = _treefile(world, "many.json", **{
        "lockfile-repos": ["lockonly"],
        "repo-packages": [{"repo": "custom", "packages": ["pinme"]}],
        "remove-from-packages": [["strace", "/usr/bin/strace-log-merge"], ["keys-demo", "^/usr/share/keys-demo/junk"]],
        "install-langs": ["fr_FR"],
        "readonly-executables": True,
        "units": ["keys-demo.service"],
        "ostree-layers": ["layers/extra"],
        "ostree-override-layers": ["layers/override"],
        "container-cmd": ["/usr/bin/bash"],
        "repo-metadata": "detached",
        "sysusers": "compose-forced",
        "rpmdb": "target",
        "documentation": False,
        "recommends": True,
        "exclude-packages": ["tree"],
        "initramfs-args": ["--no-hostonly"],
        "add-commit-metadata": {"keys.demo": "yes"},
    })
    data = json.loads(treefile.read_text())
    data["packages"].append("test-recommends")
    treefile.write_text(json.dumps(data))
    result, lines = _compose(world, treefile, lockfiles=[world["tf"] / "locks.json"])
    assert result.commit is not None
    return {"result": result, "lines": lines, "root": _checkout(world, result.commit, "many")}


def test_remove_from_packages(composed: dict[str, Any]) -> None:
    root = composed["root"]
    assert (root / "usr/bin/strace").exists() and not (root / "usr/bin/strace-log-merge").exists()
    assert not (root / "usr/share/keys-demo/junk-1").exists()
    assert "Skipping file /usr/bin/strace-log-merge from strace" in composed["lines"]


def test_install_langs(composed: dict[str, Any]) -> None:
    root = composed["root"]
    assert (root / "usr/share/keys-demo/msg.fr").read_text() == "bonjour\n"  # "fr" is a prefix of fr_FR
    assert not (root / "usr/share/keys-demo/msg.de").exists()


def test_readonly_executables(composed: dict[str, Any]) -> None:
    root = composed["root"]
    assert stat.S_IMODE((root / "usr/bin/keys-demo").stat().st_mode) == 0o555
    assert stat.S_IMODE((root / "usr/share/keys-demo/README").stat().st_mode) == 0o644


def test_repo_packages_and_lockfile(composed: dict[str, Any]) -> None:
    versions = {n.name: n.version for n in composed["result"].packages}
    assert versions["pinme"] == "2.0"  # pinned to 'custom' although 'newer' has 3.0
    assert versions["locked"] == "3.0"  # the lockfile's build, from a lockfile-only repository


def test_units(composed: dict[str, Any]) -> None:
    link = composed["root"] / "usr/etc/systemd/system/multi-user.target.wants/keys-demo.service"
    assert os.readlink(link) == "/usr/lib/systemd/system/keys-demo.service"


def test_ostree_layers(composed: dict[str, Any]) -> None:
    root = composed["root"]
    assert (root / "usr/share/layer/hello").read_text() == "from a layer\n"
    assert (root / "usr/share/keys-demo/README").read_text() == "from the override layer\n"


def test_commit_metadata_keys(world: dict[str, Any], composed: dict[str, Any]) -> None:
    repo = Repo.open(world["repo"])
    commit = composed["result"].commit
    loaded = repo.load_commit(commit)
    assert loaded.meta("ostree.container-cmd") == ["/usr/bin/bash"]
    assert loaded.meta("rpmostree.initramfs-args") == ["--no-hostonly"]
    assert loaded.meta("keys.demo") == "yes" and loaded.version == "7"
    assert loaded.meta("rpmostree.rpmmd-repos") is None
    detached = dict(gvariant.decode("a{sv}", repo.read_detached_metadata(commit)))
    assert "rpmostree.rpmmd-repos" in detached


def test_sysusers_and_boot_location_new(composed: dict[str, Any]) -> None:
    root = composed["root"]
    assert "keysdemo:" in (root / "usr/lib/passwd").read_text()
    boot = sorted(p.name for p in (root / "usr/lib/ostree-boot").iterdir())
    assert [name.rsplit("-", 1)[0] for name in boot] == [f"initramfs-{KERNEL}.img", f"vmlinuz-{KERNEL}"]


def test_documentation_recommends_and_exclude(world: dict[str, Any], composed: dict[str, Any]) -> None:
    assert (composed["root"] / "usr/share/keys-demo/README").exists()
    assert not (composed["root"] / "usr/share/doc/keys-demo/NEWS").exists()
    names = {n.name for n in composed["result"].packages}
    assert "test-recommends" in names and "tree" not in names  # a recommended but excluded package
    treefile = _treefile(world, "recommends.json", recommends=True)
    data = json.loads(treefile.read_text())
    data["packages"].append("test-recommends")
    treefile.write_text(json.dumps(data))
    result, _lines = _compose(world, treefile, dry_run=True)
    assert "tree" in {n.name for n in result.packages}


def test_without_lockfile_the_newest_build_wins(world: dict[str, Any]) -> None:
    written = world["tf"] / "written-lock.json"
    result, _lines = _compose(world, _treefile(world, "plain.json"), dry_run=True, write_lockfile_to=written)
    versions = {n.name: n.version for n in result.packages}
    assert versions["pinme"] == "3.0" and versions["locked"] == "2.0"
    lock = json.loads(written.read_text())
    assert lock["packages"]["pinme"]["evra"] == "3.0-1.noarch"
    assert lock["packages"]["pinme"]["digest"].startswith("sha256:")
    assert set(lock["metadata"]["rpmmd_repos"]) == {"custom", "newer"}
    relocked, _lines = _compose(world, _treefile(world, "plain.json"), dry_run=True, lockfiles=[written],
                                lockfile_strict=True)
    assert sorted(n.nevra for n in relocked.packages) == sorted(n.nevra for n in result.packages)


def test_preserve_passwd_and_boot_location_modules(world: dict[str, Any], composed: dict[str, Any]) -> None:
    treefile = _treefile(world, "second.json", **{"boot-location": "modules",
                                                   "check-groups": {"type": "data", "entries": {"wheelx": 0}},
                                                   "ignore-removed-groups": ["wheelx"]})
    data = json.loads(treefile.read_text())
    data["packages"].remove("test-scripts")  # nothing creates testsvc any more
    treefile.write_text(json.dumps(data))
    result, lines = _compose(world, treefile)
    assert result.commit is not None and result.version == "7-1"
    root = _checkout(world, result.commit, "second")
    assert "testsvc:x:990:990:" in (root / "usr/lib/passwd").read_text()  # kept from the previous commit
    assert not list((root / "usr/lib/ostree-boot").glob("vmlinuz-*"))  # the directory comes from /boot
    assert "Ignored group missing from new group file: wheelx" in lines


def test_check_groups_refuses_a_missing_group_that_owns_files(world: dict[str, Any], composed: dict[str, Any]) -> None:
    treefile = _treefile(world, "check.json", **{"check-groups": {"type": "data", "entries": {"wheelx": 0}}})
    before = Repo.open(world["repo"]).read_ref("keys/x86_64")
    with pytest.raises(StrataError, match=r"^Group missing from new group file: wheelx$"):
        _compose(world, treefile, force_nocache=True)
    assert Repo.open(world["repo"]).read_ref("keys/x86_64") == before


@pytest.mark.parametrize(("extra", "message"), [
    ({"units": ["nope.service"]}, r"units: nope\.service is not shipped by the tree"),
    ({"repo-packages": [{"repo": "newer", "packages": ["bash"]}]}, "No matches for 'bash' in repo 'newer'"),
    ({"ostree-layers": ["layers/override"]}, "file /usr/share/keys-demo/README conflicts between packages "
                                             "keys-demo and ostree layer layers/override"),
])
def test_key_errors(world: dict[str, Any], composed: dict[str, Any], extra: dict[str, Any], message: str) -> None:
    with pytest.raises(StrataError, match=message):
        _compose(world, _treefile(world, "bad.json", **extra), force_nocache=True)


def test_gpg_key_signs_the_commit(world: dict[str, Any], composed: dict[str, Any],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    home = world["work"] / "gnupg"
    home.mkdir(mode=0o700)
    subprocess.run(["gpg", "--homedir", str(home), "--batch", "--passphrase", "", "--quick-gen-key",
                    "compose <compose@example.invalid>", "ed25519", "sign", "never"], check=True, capture_output=True)
    monkeypatch.setenv("GNUPGHOME", str(home))
    extra = world["tf"] / "extra-metadata.json"
    extra.write_text(json.dumps({"from.json": 3, "keys.demo": "overridden"}))
    result, _lines = _compose(world, _treefile(world, "signed.json", **{"gpg-key": "compose@example.invalid"}),
                              force_nocache=True, add_metadata_from_json=[extra])
    assert result.commit is not None
    repo = Repo.open(world["repo"])
    assert len(gpg.signatures(repo.read_detached_metadata(result.commit))) == 1
    assert repo.load_commit(result.commit).meta("from.json") == 3


def test_split_compose_verbs(world: dict[str, Any], composed: dict[str, Any]) -> None:
    """compose install, then postprocess, then commit (the CLI, as a build pipeline runs it)."""
    from tests.image.helpers import strata
    treefile = _treefile(world, "split.json")
    dest = world["work"] / "split"
    common = ["--repo", str(world["repo"])]
    out = strata("compose", "install", *common, "--cachedir", str(world["cache"]), "--force-nocache", str(treefile),
                 str(dest)).stdout
    assert f"rootfs: {dest}/rootfs" in out and (dest / "rootfs/usr/bin/bash").exists()
    assert not (dest / "rootfs/usr/lib/passwd").exists()  # the final layout is postprocess's job
    again = strata("compose", "install", *common, str(treefile), str(dest), check=False)
    assert again.returncode == 1 and "already exists" in again.stderr
    strata("compose", "postprocess", str(dest / "rootfs"), str(treefile))
    assert (dest / "rootfs/usr/lib/passwd").exists() and (dest / "rootfs/home").is_symlink()
    commit_file = world["work"] / "split-commit"
    strata("compose", "commit", *common, "--write-commitid-to", str(commit_file), str(treefile), str(dest / "rootfs"))
    commit = Repo.open(world["repo"]).load_commit(commit_file.read_text())
    names = [entry[0] for entry in commit.meta("rpmostree.rpmdb.pkglist")]
    assert "keys-demo" in names and commit.meta("ostree.linux") == KERNEL
    assert commit.meta("rpmostree.inputhash")
    passwd = (dest / "rootfs/usr/lib/passwd").read_text()
    strata("compose", "postprocess", str(dest / "rootfs"), str(treefile))  # a second run changes nothing
    assert (dest / "rootfs/usr/lib/passwd").read_text() == passwd
    (dest / "strata-compose.json").unlink()  # without install's state, the package list comes from the rpmdb
    strata("compose", "commit", *common, "--write-commitid-to", str(commit_file), str(treefile), str(dest / "rootfs"))
    again_commit = Repo.open(world["repo"]).load_commit(commit_file.read_text())
    assert again_commit.meta("rpmostree.rpmdb.pkglist") == commit.meta("rpmostree.rpmdb.pkglist")


def test_compose_options(world: dict[str, Any], composed: dict[str, Any]) -> None:
    treefile = _treefile(world, "options.json", **{"ostree-layers": ["layers/elsewhere"]})
    other = world["work"] / "layer-repo"
    Repo.init(other, RepoMode.ARCHIVE)
    (world["work"] / "elsewhere/usr/share/elsewhere").mkdir(parents=True)
    commit_directory(Repo.open(other), world["work"] / "elsewhere", "layers/elsewhere", CommitRequest())
    with pytest.raises(StrataError, match="ostree layer 'layers/elsewhere' not found"):
        _compose(world, treefile, dry_run=True)
    stamp = world["work"] / "changed"
    _result, lines = _compose(world, treefile, dry_run=True, layer_repo=other, touch_if_changed=stamp, cache_only=True)
    assert stamp.exists() and lines[-1] == f"--dry-run complete, updating --touch-if-changed={stamp}; exiting"
    with pytest.raises(StrataError, match="no cached metadata"):
        compose_tree(treefile, ComposeOptions(repo=world["repo"], cachedir=world["work"] / "empty-cache",
                                              dry_run=True, cache_only=True, layer_repo=other), lambda _line: None)
    bad_digest = world["tf"] / "bad-digest.json"
    bad_digest.write_text(json.dumps({"packages": {"locked": {"evra": "2.0-1.noarch", "digest": "sha256:00"}}}))
    with pytest.raises(StrataError, match=r"locked package 'locked-2\.0-1\.noarch' \(pkgs matching NEVRA: 1; "
                                          r"mismatched checksums: 1\)"):
        _compose(world, _treefile(world, "plain.json"), dry_run=True, lockfiles=[bad_digest])
    with pytest.raises(StrataError, match="--download-only can only be used with --cachedir"):
        compose_tree(treefile, ComposeOptions(repo=world["repo"], download_only=True), lambda _line: None)
