"""compose tree on the lab distribution: a runnable tree, the real rpm agrees, change detection, errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from strata.core.compose import ComposeOptions, ComposeResult, compose_tree
from strata.errors import StrataError
from strata.image.checkout import checkout_commit
from strata.image.repo import Repo, RepoMode
from strata.packages.labdistro import Package, build_rpm
from tests.lab import copy_treefile_dir

REF = "strata-lab/x86_64/base"


def compose(treefile: Path, repo: Path, cache: Path, **kwargs: Any) -> tuple[ComposeResult, list[str]]:
    lines: list[str] = []
    result = compose_tree(treefile, ComposeOptions(repo=repo, cachedir=cache, **kwargs), lines.append)
    return result, lines


def edit_treefile(treefile: Path, **changes: Any) -> Path:
    data = json.loads(treefile.read_text())
    data.update(changes)
    treefile.write_text(json.dumps(data))
    return treefile


def in_tree(root: Path, *argv: str) -> str:
    proc = subprocess.run(["bwrap", "--bind", str(root), "/", "--ro-bind", str(root / "usr/etc"), "/etc",
                           "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/run", "--tmpfs", "/var",
                           *argv], capture_output=True, text=True, check=True)
    return proc.stdout


def rpm_qa(root: Path) -> list[str]:
    out = subprocess.run(["rpm", "--root", str(root), "--dbpath", "/usr/share/rpm", "-qa", "--qf",
                          "%{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}\n"], capture_output=True, text=True, check=True)
    return sorted(out.stdout.split())


@pytest.fixture(scope="module")
def composed(lab: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("compose")
    treefile = edit_treefile(copy_treefile_dir(lab, work / "tf"), packages=[
        *json.loads((lab / "lab.json").read_text())["packages"], "htop"])
    repo = work / "repo"
    Repo.init(repo, RepoMode.ARCHIVE)
    result, lines = compose(treefile, repo, work / "cache")
    root = work / "checkout"
    assert result.commit is not None
    checkout_commit(Repo.open(repo), result.commit, root)
    return {"work": work, "treefile": treefile, "repo": repo, "result": result, "lines": lines, "root": root}


def test_tree_runs_and_has_script_results(composed: dict[str, Any]) -> None:
    root = composed["root"]
    assert "htop 3." in in_tree(root, "/usr/bin/htop", "--version")
    assert in_tree(root, "/usr/bin/bash", "-c", "echo $((6 * 7))").strip() == "42"
    assert in_tree(root, "/usr/bin/getent", "passwd", "testsvc").startswith("testsvc:x:990:990:")
    assert (root / "usr/share/test-scripts/post-ran").read_text() == "post ran with argument 1\n"
    assert "testsvc" in (root / "usr/lib/passwd").read_text()
    assert "testsvc" not in (root / "usr/etc/passwd").read_text()
    assert (root / "usr/etc/test-config/test.conf").exists()
    assert "d /var/lib/test-config 0750 root root - -" in (
        root / "usr/lib/rpm-ostree/tmpfiles.d/test-config.conf").read_text()


def test_real_rpm_lists_exactly_the_solved_set(composed: dict[str, Any]) -> None:
    result = composed["result"]
    expected = sorted(f"{p.name}-{p.version}-{p.release}.{p.arch}" for p in result.packages)
    assert rpm_qa(composed["root"]) == expected
    owner = subprocess.run(["rpm", "--root", str(composed["root"]), "--dbpath", "/usr/share/rpm", "-qf",
                            "/usr/bin/htop"], capture_output=True, text=True, check=True).stdout
    assert owner.startswith("htop-")


def test_commit_metadata_and_real_ostree(composed: dict[str, Any]) -> None:
    repo = Repo.open(composed["repo"])
    commit = repo.load_commit(composed["result"].commit)
    top = repo.load_dirtree(commit.root_tree)
    assert "etc" not in top.dirs and "usr" in top.dirs and top.files.keys() >= {"bin", "lib64", "ostree"}
    assert repo.load_dirtree(top.dirs["var"][0]).files == {}
    assert commit.version == "1"
    assert commit.meta("rpmostree.inputhash") == composed["result"].inputhash
    names = [entry[0] for entry in commit.meta("rpmostree.rpmdb.pkglist")]
    assert "htop" in names and names == sorted(names)
    assert commit.meta("ostree.linux") == "6.1.0-1.lab.x86_64"
    fsck = subprocess.run(["ostree", f"--repo={composed['repo']}", "fsck"], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stderr


def test_second_compose_reports_no_changes(composed: dict[str, Any]) -> None:
    before = Repo.open(composed["repo"]).read_ref(REF)
    result, lines = compose(composed["treefile"], composed["repo"], composed["work"] / "cache")
    assert result.commit is None
    assert "No apparent changes since previous commit; use --force-nocache to override" in lines
    assert Repo.open(composed["repo"]).read_ref(REF) == before


def _custom_repo(lab: Path, dest: Path, extra: list[Package], drop: tuple[str, ...] = ()) -> Path:
    packages = dest / "Packages"
    shutil.copytree(lab / "lab" / "Packages", packages)
    for name in drop:
        for path in packages.glob(f"{name}-[0-9]*.rpm"):
            path.unlink()
    for pkg in extra:
        build_rpm(pkg, packages)
    subprocess.run(["createrepo_c", "--quiet", str(dest)], check=True)
    return dest


def _treefile_for(repo_dir: Path, tf_dir: Path, packages: list[str], **extra: Any) -> Path:
    tf_dir.mkdir(parents=True, exist_ok=True)
    (tf_dir / "custom.repo").write_text(f"[custom]\nname=custom\nbaseurl=file://{repo_dir}\nenabled=1\ngpgcheck=0\n")
    treefile = tf_dir / "t.json"
    treefile.write_text(json.dumps({"ref": "custom/x86_64", "repos": ["custom"], "packages": packages,
                                    "recommends": False, **extra}))
    return treefile


BASE = ["filesystem", "setup", "strata-release", "kernel", "glibc", "bash", "coreutils"]


def test_changed_package_is_the_only_one_imported_again(lab: Path, tmp_path: Path) -> None:
    noarch = Package("test-noarch", "1.0", arch="noarch")
    noarch.add_file("/usr/bin/test-noarch", b"#!/bin/sh\necho rebuilt\n", 0o755)
    first = _custom_repo(lab, tmp_path / "r1", [])
    second = _custom_repo(lab, tmp_path / "r2", [noarch], drop=("test-noarch",))
    repo = tmp_path / "repo"
    Repo.init(repo, RepoMode.BARE_USER)
    cache = tmp_path / "cache"
    result1, _ = compose(_treefile_for(first, tmp_path / "tf", [*BASE, "test-noarch"]), repo, cache)
    assert "test-noarch-1.0-1.noarch" in result1.imported and len(result1.imported) > 5
    result2, _ = compose(_treefile_for(second, tmp_path / "tf", [*BASE, "test-noarch"]), repo, cache)
    assert result2.imported == ["test-noarch-1.0-1.noarch"]
    assert result2.commit is not None and result2.commit != result1.commit


def _failing(name: str, **fields: Any) -> Package:
    pkg = Package(name, "1.0")
    pkg.add_file(f"/usr/share/{name}/README", b"x\n")
    for key, value in fields.items():
        setattr(pkg, key, value)
    return pkg


@pytest.mark.parametrize(("packages", "extra", "message"), [
    (["test-broken-dep"], {}, "nothing provides does-not-exist"),
    (["test-file-collision"], {}, "conflicts between packages"),
    (["fails-post"], {}, "Running post script of fails-post failed"),
    (["no-such-package"], {}, "Packages not found: no-such-package"),
    ([], {"repos": ["missing-repo"]}, "repository not found: missing-repo"),
    ([], {"frobnicate": True}, "Unknown fields: frobnicate"),
])
def test_errors_move_no_ref(lab: Path, tmp_path: Path, packages: list[str], extra: dict[str, Any],
                            message: str) -> None:
    custom = _custom_repo(lab, tmp_path / "r", [_failing("fails-post", post="echo failing >&2; exit 3")])
    repo = tmp_path / "repo"
    Repo.init(repo, RepoMode.ARCHIVE)
    treefile = _treefile_for(custom, tmp_path / "tf", [*BASE, *packages], **extra)
    with pytest.raises(StrataError, match=message):
        compose(treefile, repo, tmp_path / "cache")
    assert Repo.open(repo).list_refs() == {}


def test_corrupt_rpm_is_refused(lab: Path, tmp_path: Path) -> None:
    custom = _custom_repo(lab, tmp_path / "r", [])
    victim = next((custom / "Packages").glob("coreutils-*.rpm"))
    data = bytearray(victim.read_bytes())
    data[-100] ^= 0xFF
    victim.write_bytes(bytes(data))
    repo = tmp_path / "repo"
    Repo.init(repo, RepoMode.ARCHIVE)
    with pytest.raises(StrataError, match="checksum mismatch"):
        compose(_treefile_for(custom, tmp_path / "tf", BASE), repo, tmp_path / "cache")
    assert Repo.open(repo).list_refs() == {}


def test_print_only_and_dry_run(lab: Path, tmp_path: Path) -> None:
    from tests.image.helpers import strata
    treefile = copy_treefile_dir(lab, tmp_path / "tf")
    printed = json.loads(strata("compose", "tree", "--print-only", str(treefile)).stdout)
    assert printed["ref"] == "strata-lab/x86_64/base" and "bash" in printed["packages"]
    repo = tmp_path / "repo"
    Repo.init(repo, RepoMode.ARCHIVE)
    out = strata("compose", "tree", "--repo", str(repo), "--cachedir", str(tmp_path / "c"), "--dry-run",
                 str(treefile)).stdout
    assert "Installing " in out and out.rstrip().endswith("--dry-run complete; exiting")
    assert Repo.open(repo).list_refs() == {}
    missing = strata("compose", "tree", str(treefile), check=False)
    assert missing.returncode == 1 and "--repo must be specified" in missing.stderr


def test_postprocessing_keys(lab: Path, tmp_path: Path) -> None:
    treefile = copy_treefile_dir(lab, tmp_path / "tf")
    script = tmp_path / "tf" / "post.sh"
    script.write_text("#!/bin/sh\necho from-script > /usr/share/postprocess-script-ran\n")
    script.chmod(0o755)
    (tmp_path / "tf" / "motd").write_text("welcome to the lab\n")
    (tmp_path / "tf" / "lab.service").write_text("[Service]\nExecStart=/usr/bin/true\n")
    edit_treefile(treefile, postprocess=["echo inline > /usr/share/postprocess-inline-ran"],
                  **{"postprocess-script": "post.sh", "units": ["lab.service"], "default-target": "graphical.target",
                     "remove-files": ["usr/share/test-scripts/README"],
                     "add-files": [["strata-lab.repo", "/etc/yum.repos.d/strata-lab.repo"],
                                   ["motd", "/usr/share/motd"],
                                   ["lab.service", "/usr/lib/systemd/system/lab.service"]],
                     "etc-group-members": ["testsvc"]})
    repo = tmp_path / "repo"
    Repo.init(repo, RepoMode.ARCHIVE)
    result, lines = compose(treefile, repo, tmp_path / "cache")
    assert ">>>> Executing `postprocess` inline script '0' <<<<" in lines
    assert "Adding lab.service to multi-user.target.wants" in lines
    assert "Deleting: usr/share/test-scripts/README" in lines
    root = tmp_path / "co"
    assert result.commit is not None
    checkout_commit(Repo.open(repo), result.commit, root)
    assert (root / "usr/share/postprocess-inline-ran").read_text() == "inline\n"
    assert (root / "usr/share/postprocess-script-ran").read_text() == "from-script\n"
    wants = root / "usr/etc/systemd/system/multi-user.target.wants/lab.service"
    assert os.readlink(wants) == "/usr/lib/systemd/system/lab.service"
    assert os.readlink(root / "usr/lib/systemd/system/default.target") == "graphical.target"
    assert not (root / "usr/share/test-scripts/README").exists()
    assert (root / "usr/share/motd").read_text() == "welcome to the lab\n"
    assert "testsvc:x:990:" in (root / "usr/etc/group").read_text()
    assert "testsvc:x:990:" in (root / "usr/lib/group").read_text()
    assert "OSTREE_VERSION=1" in (root / "usr/lib/os-release").read_text()


def test_transfiletriggerin_runs_with_matching_paths(lab: Path, tmp_path: Path) -> None:
    treefile = copy_treefile_dir(lab, tmp_path / "tf")
    packages = json.loads(treefile.read_text())["packages"]
    edit_treefile(treefile, packages=[*packages, "test-trigger"])
    repo = tmp_path / "repo"
    Repo.init(repo, RepoMode.ARCHIVE)
    result, _lines = compose(treefile, repo, tmp_path / "cache")
    assert result.commit is not None
    root = tmp_path / "co"
    checkout_commit(Repo.open(repo), result.commit, root)
    seen = (root / "usr/share/test-trigger/seen").read_text().split()
    assert "/usr/lib/demo-engine/plugin.conf" in seen
    assert all(p.startswith("/usr/lib/demo-engine") for p in seen)
