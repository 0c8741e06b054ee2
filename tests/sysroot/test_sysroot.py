"""Deployments, boot entries and /etc merges, judged by the real `ostree admin` and the vectors."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from strata.image.repo import Repo
from strata.image.transfer import pull_local
from strata.sysroot.sysroot import Sysroot
from tests.conftest import run_ostree, untar
from tests.image.helpers import strata
from tests.sysroot.conftest import OS1, OS2, OS_REF


def admin(sysroot: Sysroot | Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    path = sysroot.path if isinstance(sysroot, Sysroot) else sysroot
    verb, *rest = args
    return strata("admin", verb, "--sysroot", str(path), *rest, check=check)


def ostree_status(path: Path) -> str:
    return run_ostree("admin", "status", f"--sysroot={path}").stdout


def entries(path: Path) -> dict[str, str]:
    loader = path / "boot" / "loader" / "entries"
    return {p.name: p.read_text() for p in sorted(loader.iterdir())}


def admin_edit_etc(etc: Path) -> None:
    """The admin's local changes of vector (b)."""
    (etc / "app.conf").write_text("mode=local-admin\n")
    (etc / "local.conf").write_text("added by admin\n")
    (etc / "removed.conf").unlink()
    (etc / "local.d").mkdir()
    (etc / "local.d" / "x.conf").write_text("nested\n")


def test_two_deploys_and_pin_match_ostree_vector(sysroot: Sysroot, vectors: Path) -> None:
    admin(sysroot, "deploy", "--os=stratos", "--karg=root=LABEL=strata-root", "--karg=rw", f"{OS1}")
    origin = sysroot.path / f"ostree/deploy/stratos/deploy/{OS1}.0.origin"
    origin.write_text(f"[origin]\nrefspec=strata:{OS_REF}\n")
    admin_edit_etc(sysroot.path / f"ostree/deploy/stratos/deploy/{OS1}.0/etc")
    out = admin(sysroot, "deploy", "--os=stratos", "--karg-append=quiet", f"strata:{OS_REF}").stdout
    assert "Copying /etc changes: 1 modified, 1 removed, 3 added" in out
    admin(sysroot, "pin", "1")
    ours = admin(sysroot, "status").stdout
    assert ours == (vectors / "b/admin-status.txt").read_text()
    assert ostree_status(sysroot.path) == ours
    expected_entries = {name: text for name, text in _vector_entries(vectors).items()}
    assert entries(sysroot.path) == expected_entries
    etc = sysroot.path / f"ostree/deploy/stratos/deploy/{OS2}.0/etc"
    assert (etc / "app.conf").read_text() == "mode=local-admin\n"
    assert not (etc / "removed.conf").exists()
    assert (etc / "local.d/x.conf").read_text() == "nested\n"
    assert (etc / "untouched.conf").read_text() == "untouched v2\n"
    assert os.readlink(sysroot.path / "boot/loader") == "loader.0"
    assert os.readlink(sysroot.path / "ostree/boot.0") == "boot.0.1"
    assert Repo.open(sysroot.path / "ostree/repo").list_refs("ostree", remotes=False) == {
        "ostree/0/1/0": OS2, "ostree/0/1/1": OS1}


def _vector_entries(vectors: Path) -> dict[str, str]:
    import tarfile
    found = {}
    with tarfile.open(vectors / "b/sysroot.tar") as tf:
        for member in tf.getmembers():
            if "/boot/loader.0/entries/" in member.name and member.isfile():
                handle = tf.extractfile(member)
                assert handle is not None
                found[Path(member.name).name] = handle.read().decode()
    return found


def test_strata_reads_vector_sysroot_and_deploys_onto_it(tmp_path: Path, vectors: Path) -> None:
    root = untar(vectors / "b/sysroot.tar", tmp_path / "v") / "sysroot"
    assert admin(root, "status").stdout == (vectors / "b/admin-status.txt").read_text()
    data = admin(root, "status", "--json").stdout
    assert f'"checksum": "{OS2}"' in data
    out = admin(root, "deploy", "--os=stratos", f"{OS1}").stdout
    assert "deployment count change: +1" in out
    status = admin(root, "status").stdout
    assert status.splitlines()[0] == f"  stratos {OS1}.1"
    assert ostree_status(root) == status
    assert run_ostree("fsck", f"--repo={root / 'ostree/repo'}", check=False).returncode == 0


def test_fresh_ostree_sysroot_in_tmpfs(tmpfs: Path, osrepo: Path) -> None:
    root = tmpfs / "sysroot"
    root.mkdir()
    run_ostree("admin", "init-fs", str(root))
    run_ostree("admin", "os-init", f"--sysroot={root}", "stratos")
    run_ostree(f"--repo={root / 'ostree/repo'}", "remote", "add", "--no-gpg-verify", "strata", "http://example.invalid")
    run_ostree(f"--repo={root / 'ostree/repo'}", "pull-local", "--remote=strata", str(osrepo), OS_REF, "--depth=1")
    run_ostree("admin", "deploy", f"--sysroot={root}", "--os=stratos", "--karg=root=LABEL=x", OS1)
    by_ostree = entries(root)
    assert admin(root, "status").stdout == ostree_status(root)
    admin(root, "deploy", "--os=stratos", f"strata:{OS_REF}")
    assert admin(root, "status").stdout == ostree_status(root)
    run_ostree("admin", "deploy", f"--sysroot={root}", "--os=stratos", f"strata:{OS_REF}")
    assert admin(root, "status").stdout == ostree_status(root)
    assert next(iter(by_ostree.values())).startswith("title Strata OS 1 (ostree:0)\nversion 1\noptions root=LABEL=x")


def test_bls_entries_match_ostree_for_same_deploys(tmpfs: Path, tmp_path: Path, osrepo: Path) -> None:
    results: dict[str, dict[str, str]] = {}
    for tool, base in (("ostree", tmpfs), ("strata", tmp_path)):
        root = base / f"sysroot-{tool}"
        Sysroot.init_fs(root).os_init("stratos")
        pull_local(Repo.open(osrepo), Sysroot.open(root).repo, [OS_REF], remote="strata", depth=1)
        for rev, karg in ((OS1, "--karg=root=LABEL=r"), (f"strata:{OS_REF}", "--karg-append=quiet")):
            if tool == "ostree":
                run_ostree("admin", "deploy", f"--sysroot={root}", "--os=stratos", karg, rev)
            else:
                admin(root, "deploy", "--os=stratos", karg, rev)
        results[tool] = entries(root)
    assert results["strata"] == results["ostree"]


def test_etc_merge_keeps_modes_owners_symlinks_xattrs(sysroot: Sysroot) -> None:
    admin(sysroot, "deploy", "--os=stratos", OS1)
    etc = sysroot.path / f"ostree/deploy/stratos/deploy/{OS1}.0/etc"
    secret = etc / "secret.conf"
    secret.write_text("s\n")
    os.chown(secret, 1000, 1000)
    secret.chmod(0o600)
    os.setxattr(secret, "user.note", b"kept")
    (etc / "alias").symlink_to("hostname")
    os.chmod(etc / "hostname", 0o640)
    admin(sysroot, "deploy", "--os=stratos", OS2)
    new_etc = sysroot.path / f"ostree/deploy/stratos/deploy/{OS2}.0/etc"
    st = (new_etc / "secret.conf").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1000, 1000, 0o600)
    assert os.getxattr(new_etc / "secret.conf", "user.note") == b"kept"
    assert os.readlink(new_etc / "alias") == "hostname"
    assert (new_etc / "hostname").stat().st_mode & 0o777 == 0o640
    assert (new_etc / "app.conf").read_text() == "mode=default-v2\n"


def test_var_untouched_and_per_stateroot(sysroot: Sysroot) -> None:
    sysroot.os_init("guest")
    var = sysroot.path / "ostree/deploy/stratos/var"
    (var / "lib" / "state").write_text("precious\n")
    before = sorted(str(p.relative_to(var)) for p in var.rglob("*"))
    admin(sysroot, "deploy", "--os=stratos", OS1)
    admin(sysroot, "deploy", "--os=guest", OS2)
    admin(sysroot, "deploy", "--os=stratos", OS2)
    assert sorted(str(p.relative_to(var)) for p in var.rglob("*")) == before
    assert (var / "lib" / "state").read_text() == "precious\n"
    assert not (sysroot.path / "ostree/deploy/guest/var/lib/state").exists()


def _status_lines(sysroot: Sysroot) -> list[str]:
    return [line for line in admin(sysroot, "status").stdout.splitlines() if not line.startswith("    ")]


def test_rollback_pin_undeploy_cleanup(sysroot: Sysroot) -> None:
    admin(sysroot, "deploy", "--os=stratos", OS1)
    admin(sysroot, "boot")
    admin(sysroot, "deploy", "--os=stratos", OS2)
    assert _status_lines(sysroot) == [f"  stratos {OS2}.0 (pending)", f"* stratos {OS1}.0"]
    admin(sysroot, "rollback")
    assert _status_lines(sysroot) == [f"* stratos {OS1}.0", f"  stratos {OS2}.0 (rollback)"]
    admin(sysroot, "boot")
    admin(sysroot, "deploy", "--os=stratos", OS2)
    lines = _status_lines(sysroot)
    assert lines[1] == f"* stratos {OS1}.0" and len(lines) == 2  # the old one was neither booted nor rollback
    admin(sysroot, "boot")
    admin(sysroot, "pin", "1")
    admin(sysroot, "deploy", "--os=stratos", OS1)
    admin(sysroot, "deploy", "--os=stratos", OS2)
    lines = _status_lines(sysroot)
    assert f"  stratos {OS1}.0 (rollback)" in lines, lines  # pinned survives
    booted_line = next(line for line in lines if line.startswith("*"))
    index = lines.index(booted_line)
    failed = admin(sysroot, "undeploy", str(index), check=False)
    assert failed.returncode != 0 and "booted" in failed.stderr
    admin(sysroot, "undeploy", "0")
    admin(sysroot, "cleanup")
    deploy_dir = sysroot.path / "ostree/deploy/stratos/deploy"
    listed = {line.split()[-1] if not line.endswith(")") else line.split()[-2] for line in _status_lines(sysroot)}
    on_disk = {p.name for p in deploy_dir.iterdir() if p.is_dir()}
    assert on_disk == listed
    assert run_ostree("fsck", f"--repo={sysroot.path / 'ostree/repo'}", check=False).returncode == 0


def test_guest_stateroot_does_not_take_default(sysroot: Sysroot) -> None:
    admin(sysroot, "deploy", "--os=stratos", OS1)
    admin(sysroot, "boot")
    sysroot.os_init("guest")
    admin(sysroot, "deploy", "--os=guest", "--not-as-default", OS2)
    lines = _status_lines(sysroot)
    assert lines == [f"* stratos {OS1}.0", f"  guest {OS2}.0"]
    admin(sysroot, "deploy", "--os=guest", OS1)
    assert _status_lines(sysroot)[0] == f"* stratos {OS1}.0"
    assert "(ostree:stratos:0)" in "".join(entries(sysroot.path).values())


def test_staged_deployment_is_finalized_at_boot(sysroot: Sysroot) -> None:
    admin(sysroot, "deploy", "--os=stratos", OS1)
    admin(sysroot, "boot")
    admin(sysroot, "deploy", "--os=stratos", "--stage", OS2)
    assert _status_lines(sysroot)[0] == f"  stratos {OS2}.0 (staged)"
    etc = sysroot.path / f"ostree/deploy/stratos/deploy/{OS1}.0/etc"
    (etc / "after-staging.conf").write_text("edited after staging\n")
    out = admin(sysroot, "boot").stdout
    assert "Copying /etc changes: 0 modified, 0 removed, 1 added" in out
    assert _status_lines(sysroot)[0] == f"* stratos {OS2}.0"
    new_etc = sysroot.path / f"ostree/deploy/stratos/deploy/{OS2}.0/etc"
    assert (new_etc / "after-staging.conf").read_text() == "edited after staging\n"


def test_kargs_edit_through_new_entries(sysroot: Sysroot) -> None:
    admin(sysroot, "deploy", "--os=stratos", "--karg=root=LABEL=a", "--karg=quiet", OS1)
    admin(sysroot, "kargs", "--karg-append=debug", "--karg-delete=quiet", "--karg=root=LABEL=b")
    shown = admin(sysroot, "kargs").stdout.split()
    assert [a for a in shown if not a.startswith("ostree=")] == ["root=LABEL=b", "debug"]
    options = next(iter(entries(sysroot.path).values()))
    assert "options root=LABEL=b ostree=/ostree/boot.0/stratos/" in options and options.rstrip().count("debug") == 1


@pytest.mark.parametrize(("args", "message"), [
    (["deploy", "--os=stratos", "no/such/ref"], "not found"),
    (["deploy", "--os=nope", OS1], "stateroot 'nope' not found"),
    (["undeploy", "5"], "Out of range deployment index 5"),
    (["rollback"], "No rollback deployment found"),
])
def test_bad_input(sysroot: Sysroot, args: list[str], message: str) -> None:
    before = sorted(str(p) for p in sysroot.path.rglob("*"))
    proc = admin(sysroot, *args, check=False)
    assert proc.returncode == 1 and message in proc.stderr and proc.stderr.count("\n") == 1
    assert sorted(str(p) for p in sysroot.path.rglob("*")) == before


def test_tree_without_kernel_and_uninitialised_sysroot(sysroot: Sysroot, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "usr/etc").mkdir(parents=True)
    (tree / "usr/etc/x").write_text("x\n")
    commit = strata("repo", "commit", "--repo", str(sysroot.repo.path), "-b", "nokernel",
                    f"--tree=dir={tree}").stdout.strip()
    proc = admin(sysroot, "deploy", "--os=stratos", commit, check=False)
    assert "no kernel found" in proc.stderr
    assert not list((sysroot.path / "ostree/deploy/stratos/deploy").iterdir())
    proc = strata("admin", "status", "--sysroot", str(tmp_path), check=False)
    assert proc.returncode == 1 and "not an initialized sysroot" in proc.stderr


def test_locked_sysroot(sysroot: Sysroot) -> None:
    import fcntl
    with open(sysroot.path / "ostree/lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = admin(sysroot, "deploy", "--os=stratos", OS1, check=False)
    assert proc.returncode == 1 and "another transaction is in progress" in proc.stderr
    assert not list((sysroot.path / "ostree/deploy/stratos/deploy").iterdir())


def test_boot_space_checked_before_writing(sysroot: Sysroot) -> None:
    boot = sysroot.path / "boot"
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(boot)], check=True)
    try:
        (boot / "filler").write_bytes(b"\0" * 60 * 1024)
        proc = admin(sysroot, "deploy", "--os=stratos", OS1, check=False)
        assert proc.returncode == 1 and "not enough space in /boot" in proc.stderr and "cleanup" in proc.stderr
        assert sorted(p.name for p in boot.iterdir()) == ["filler"]
    finally:
        subprocess.run(["umount", str(boot)], check=True)




def test_set_origin_and_finalize_staged(sysroot: Sysroot) -> None:
    admin(sysroot, "deploy", "--os=stratos", OS1)
    admin(sysroot, "set-origin", "mirror", "http://127.0.0.1:9/repo", "strata/os/x86_64")
    origin = sysroot.read_origin(sysroot.deployments()[0])
    assert origin.get("origin", "refspec") == "mirror:strata/os/x86_64"
    assert Sysroot.open(sysroot.path).repo.config.get('remote "mirror"', "url") == "http://127.0.0.1:9/repo"
    assert ostree_status(sysroot.path).splitlines()[2] == "    origin refspec: mirror:strata/os/x86_64"
    admin(sysroot, "boot")
    admin(sysroot, "deploy", "--os=stratos", "--stage", OS2)
    out = admin(sysroot, "finalize-staged").stdout
    assert "Copying /etc changes" in out
    assert _status_lines(sysroot)[0] == f"  stratos {OS2}.0 (pending)"
