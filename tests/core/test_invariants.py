"""The invariant checker: a healthy lab sysroot passes, and each kind of breakage made on purpose is reported."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from strata.core.invariants import (
    InvariantError,
    check_invariants,
    require_invariants,
    snapshot_pending,
    unsatisfied_dependencies,
)
from strata.image.objects import ObjectType
from strata.sysroot.sysroot import STAGED_STATE, Deployment, Sysroot
from tests.core.model import ORIGIN_REF, Box, make_lab_box


@pytest.fixture
def box(lab_repo: Path, tmp_path: Path) -> Box:
    return make_lab_box(lab_repo, tmp_path / "sysroot")


def only_deployment(box: Box) -> Deployment:
    [dep] = box.sysroot.deployments()
    return dep


def with_guest(box: Box) -> Box:
    box.must(box.admin("os-init", "guest"))
    box.must(box.admin("deploy", "--os=guest", "--not-as-default", "--karg=guestarg", ORIGIN_REF))
    return box


def one_problem(problems: list[str], *fragments: str) -> str:
    matching = [p for p in problems if all(f in p for f in fragments)]
    assert len(matching) == 1, problems
    return matching[0]


def test_healthy_sysroot_has_no_violations(box: Box) -> None:
    with_guest(box)
    box.must(box.admin("deploy", "--stage", ORIGIN_REF))
    sysroot = box.sysroot
    assert len(sysroot.deployments()) == 3
    assert check_invariants(sysroot, before=snapshot_pending(sysroot), deep=True) == []
    require_invariants(sysroot, deep=True)


def test_missing_commit(box: Box) -> None:
    dep = only_deployment(box)
    box.sysroot.repo.object_path(dep.csum, ObjectType.COMMIT).unlink()
    problem = one_problem(check_invariants(box.sysroot), "missing from the repository")
    assert dep.csum in problem and dep.name in problem


def test_commit_without_deployment_ref(box: Box) -> None:
    sysroot = box.sysroot
    dep = only_deployment(box)
    for name in sysroot.repo.list_refs("ostree", remotes=False):
        sysroot.repo.set_ref(name, None)
    one_problem(check_invariants(sysroot), dep.name, "not held by a deployment ref")


def test_base_of_layered_deployment_needs_a_base_ref(box: Box) -> None:
    box.must(box.client("install", "test-noarch"))
    sysroot = box.sysroot
    layered = sysroot.deployments()[0]
    base = sysroot.repo.load_commit(layered.csum).parent
    assert layered.staged and base is not None
    for name in sysroot.repo.list_refs("rpmostree/base", remotes=False):
        sysroot.repo.set_ref(name, None)
    problem = one_problem(check_invariants(sysroot), "base commit", "rpmostree/base/N")
    assert base in problem and layered.name in problem
    sysroot.repo.set_ref("rpmostree/base/0", base)
    assert not [p for p in check_invariants(sysroot) if "base commit" in p]
    sysroot.repo.object_path(base, ObjectType.COMMIT).unlink()
    one_problem(check_invariants(sysroot), f"base commit {base} is missing")


def test_entry_pointing_at_a_missing_deployment(box: Box) -> None:
    sysroot = box.sysroot
    dep = only_deployment(box)
    shutil.rmtree(sysroot.deployment_dir(dep))
    problems = check_invariants(sysroot)
    one_problem(problems, "boot entry ostree-1-lab.conf", "does not lead to a deployment")


def test_booted_deployment_removed_from_the_entries(box: Box) -> None:
    box.must(box.admin("deploy", "--os=lab", ORIGIN_REF))
    sysroot = box.sysroot
    booted = sysroot.booted()
    assert booted is not None
    sysroot.write_deployments([d for d in sysroot.deployments() if d.key != booted.key])
    one_problem(check_invariants(box.sysroot), f"booted deployment lab:{booted.name} was removed")


def test_incomplete_deployment_and_missing_kernel(box: Box) -> None:
    sysroot = box.sysroot
    dep = only_deployment(box)
    shutil.rmtree(sysroot.deployment_dir(dep) / "etc")
    sysroot.origin_path(dep).write_text("[origin]\nnothing=here\n")
    kernel = next((sysroot.path / "boot" / "ostree").glob("lab-*/vmlinuz-*"))
    kernel.unlink()
    problems = check_invariants(sysroot)
    one_problem(problems, f"deployment {dep.name} has no etc/")
    one_problem(problems, "unreadable origin", "neither refspec nor baserefspec")
    one_problem(problems, f"names linux /ostree/{kernel.parent.name}/{kernel.name}, which is missing")


def test_no_default_entry(box: Box) -> None:
    sysroot = box.sysroot
    box.must(box.admin("deploy", "--stage", ORIGIN_REF))
    for entry in (sysroot.path / "boot" / "loader" / "entries").iterdir():
        entry.unlink()
    one_problem(check_invariants(sysroot), "no default boot entry")


def test_write_to_one_stateroot_changing_another_ones_pending_deployment(box: Box) -> None:
    with_guest(box)
    box.must(box.admin("deploy", "--stage", "--karg-append=staged=1", ORIGIN_REF))
    sysroot = box.sysroot
    before = snapshot_pending(sysroot)
    staged, _host_booted, guest = sysroot.deployments()
    assert before["lab"] is not None and before["lab"].staged and before["lab"].csum == staged.csum
    assert before["guest"] is not None and before["guest"].kargs == ("guestarg",)
    assert check_invariants(sysroot, before=before, changed_stateroot="guest") == []

    origin = sysroot.origin_path(staged)
    origin.write_text(origin.read_text() + "[packages]\nrequested=htop\n")
    one_problem(check_invariants(sysroot, before=before, changed_stateroot="guest"),
                "stateroot 'lab' changed", "requested=htop")
    assert check_invariants(sysroot, before=before, changed_stateroot="lab") == []

    (sysroot.path / STAGED_STATE).unlink()
    one_problem(check_invariants(sysroot, before=before, changed_stateroot="guest"), "stateroot 'lab'", "-> none")

    sysroot.origin_path(guest).write_text("[origin]\nrefspec=lab:elsewhere\n")
    one_problem(check_invariants(sysroot, before=before, changed_stateroot="lab"), "stateroot 'guest'",
                "refspec=lab:elsewhere")


def test_pending_follows_rpm_ostree(box: Box) -> None:
    assert snapshot_pending(box.sysroot) == {"lab": None}
    box.must(box.admin("deploy", "--os=lab", "--karg-append=next=1", ORIGIN_REF))
    pending = snapshot_pending(box.sysroot)["lab"]
    assert pending is not None and not pending.staged and pending.kargs == ("rw", "next=1")
    box.must(box.admin("boot"))
    assert snapshot_pending(box.sysroot) == {"lab": None}  # the other one is now the rollback
    box.must(box.admin("rollback"))
    pending = snapshot_pending(box.sysroot)["lab"]
    assert pending is not None and pending.kargs == ("rw",) and b"refspec=" + ORIGIN_REF.encode() in pending.origin


def test_dependency_removed_from_a_deployment_rpmdb(box: Box) -> None:
    sysroot = box.sysroot
    dep = only_deployment(box)
    rpmdb = sysroot.deployment_dir(dep) / "usr/share/rpm/rpmdb.sqlite"
    private = rpmdb.with_name("copy")
    shutil.copy2(rpmdb, private)
    private.replace(rpmdb)  # no longer a hardlink into the object store
    subprocess.run(["rpm", "--root", str(sysroot.deployment_dir(dep)), "--dbpath", "/usr/share/rpm", "-e",
                    "--nodeps", "--justdb", "demo-engine-common"], check=True, capture_output=True)
    assert check_invariants(sysroot) == []
    problem = one_problem(check_invariants(sysroot, deep=True), "demo-engine-common", "is needed by")
    assert "(installed) demo-engine-1.13.1-21" in problem and dep.name in problem


def test_unsatisfied_dependencies_of_a_healthy_rpmdb(box: Box) -> None:
    dep = only_deployment(box)
    rpmdb = box.sysroot.deployment_dir(dep) / "usr/share/rpm"
    before = sorted(p.name for p in rpmdb.iterdir())
    assert unsatisfied_dependencies(rpmdb) == []
    assert sorted(p.name for p in rpmdb.iterdir()) == before  # rpm ran on a copy


def test_repository_damage_is_found_by_the_deep_check(box: Box) -> None:
    sysroot = box.sysroot
    victim = next(c for c, t in sysroot.repo.list_objects(ObjectType.FILE))
    Path(sysroot.repo.object_path(victim, ObjectType.FILE)).unlink()
    assert check_invariants(sysroot) == []
    one_problem(check_invariants(sysroot, deep=True), "repository fsck", f"Missing file object {victim}")


def test_require_invariants_raises_with_every_violation(box: Box) -> None:
    sysroot = box.sysroot
    dep = only_deployment(box)
    for name in sysroot.repo.list_refs("ostree", remotes=False):
        sysroot.repo.set_ref(name, None)
    shutil.rmtree(sysroot.deployment_dir(dep) / "usr")
    with pytest.raises(InvariantError) as caught:
        require_invariants(sysroot)
    assert len(caught.value.violations) == 2 and "\n" not in str(caught.value)


def test_unreadable_deployment_list(box: Box) -> None:
    sysroot = box.sysroot
    entry = next((sysroot.path / "boot" / "loader" / "entries").iterdir())
    entry.write_text(entry.read_text().replace("ostree=/ostree/boot.", "ostree=/ostree/x/boot."))
    one_problem(check_invariants(Sysroot.open(sysroot.path)), "the deployment list cannot be read")
