"""The sysroot verbs of `strata admin` (ostree admin's), each one transaction: the same lock, busy record,
kept refs and invariant checks as the client verbs."""

from __future__ import annotations

from collections.abc import Sequence

from strata.core import history
from strata.core.livefs import drop_live_changes
from strata.core.refs import base_commit, is_layered, sync_base_refs
from strata.core.transaction import Progress, Transaction
from strata.core.usroverlay import drop_overlays
from strata.errors import InvalidInputError, StrataError
from strata.image.keyfile import KeyFile
from strata.sysroot import deploy as ops
from strata.sysroot.boot import simulated_boot
from strata.sysroot.sysroot import Deployment, Sysroot


def default_stateroot(sysroot: Sysroot, requested: str | None) -> str:
    if requested:
        return requested
    booted = sysroot.booted()
    if booted is not None:
        return booted.stateroot
    roots = sysroot.stateroots()
    if len(roots) == 1:
        return roots[0]
    raise InvalidInputError("--os must be given: the sysroot has no booted deployment to take it from")


def os_init(sysroot: Sysroot, stateroot: str, progress: Progress) -> None:
    with Transaction(sysroot, "admin os-init", [stateroot], progress, stateroot=stateroot):
        sysroot.os_init(stateroot)


def deploy(sysroot: Sysroot, refspec: str, origin: KeyFile | None, options: ops.DeployOptions, args: Sequence[str],
           progress: Progress) -> Deployment:
    with Transaction(sysroot, "admin deploy", args, progress, stateroot=options.stateroot) as txn:
        sysroot.require_stateroot(options.stateroot)
        commit = sysroot.repo.resolve_rev(refspec)
        assert commit is not None
        if origin is None:
            origin = KeyFile()
            origin.set("origin", "refspec", refspec)
        options.origin = origin
        sync_base_refs(sysroot, [base_commit(sysroot.repo, commit)] if is_layered(sysroot.repo, commit) else [])
        with txn.critical():
            dep = ops.deploy(sysroot, commit, options, txn.log)
            sync_base_refs(sysroot)
    return dep


def _stateroot_at(sysroot: Sysroot, index: int) -> str:
    return ops.by_index(sysroot, index).stateroot


def undeploy(sysroot: Sysroot, index: int, progress: Progress) -> Deployment:
    with Transaction(sysroot, "admin undeploy", [str(index)], progress) as txn:
        txn.stateroot = _stateroot_at(sysroot, index)
        with txn.critical():
            sync_base_refs(sysroot)
            dep = ops.undeploy(sysroot, index, txn.log)
            sync_base_refs(sysroot)
    return dep


def pin(sysroot: Sysroot, index: int, pinned: bool, progress: Progress) -> Deployment:
    args = [str(index), *([] if pinned else ["--unpin"])]
    with Transaction(sysroot, "admin pin", args, progress) as txn:
        txn.stateroot = _stateroot_at(sysroot, index)
        with txn.critical():
            return ops.set_pinned(sysroot, index, pinned)


def set_origin(sysroot: Sysroot, index: int, remote: str, url: str, branch: str | None, progress: Progress) -> None:
    with Transaction(sysroot, "admin set-origin", [remote, url, *([branch] if branch else [])], progress) as txn:
        dep = ops.by_index(sysroot, index)
        txn.stateroot = dep.stateroot
        origin = sysroot.read_origin(dep)
        old = origin.get("origin", "refspec") or ""
        origin.set("origin", "refspec", f"{remote}:{branch or old.split(':', 1)[-1]}")
        with txn.critical():
            sysroot.write_origin(dep, origin)
            repo = sysroot.repo
            repo.config.set(f'remote "{remote}"', "url", url)
            if repo.config.get(f'remote "{remote}"', "gpg-verify") is None:
                repo.config.set(f'remote "{remote}"', "gpg-verify", False)
            repo.save_config()


def cleanup(sysroot: Sysroot, progress: Progress) -> None:
    with Transaction(sysroot, "admin cleanup", [], progress) as txn, txn.critical():
        sync_base_refs(sysroot)
        sysroot.cleanup(prune_repo=True)


def finalize_staged(sysroot: Sysroot, progress: Progress) -> Deployment | None:
    with Transaction(sysroot, "admin finalize-staged", [], progress, isolate=False) as txn, txn.critical():
        dep = ops.finalize_staged(sysroot, txn.log)
        sync_base_refs(sysroot)
    return dep


def rollback(sysroot: Sysroot, progress: Progress) -> Deployment:
    with Transaction(sysroot, "admin rollback", [], progress) as txn:
        booted = sysroot.booted()
        deps = sysroot.deployments()
        txn.stateroot = booted.stateroot if booted else (deps[0].stateroot if deps else None)
        with txn.critical():
            return ops.rollback(sysroot, txn.log)


def set_kargs(sysroot: Sysroot, index: int, edits: ops.KargEdits, progress: Progress) -> Deployment:
    with Transaction(sysroot, "admin kargs", [f"--deployment={index}"], progress) as txn:
        txn.stateroot = _stateroot_at(sysroot, index)
        with txn.critical():
            return ops.set_kargs(sysroot, index, edits, txn.log)


def boot(sysroot: Sysroot, progress: Progress) -> Deployment:
    """A simulated reboot: live changes dropped, a staged deployment finalized, the default entry booted."""
    with Transaction(sysroot, "admin boot", [], progress, isolate=False) as txn, txn.critical():
        drop_live_changes(sysroot)
        drop_overlays(sysroot)
        dep = simulated_boot(sysroot, txn.log)
        sync_base_refs(sysroot)
    return dep


def finalize_deployment(sysroot: Sysroot, stateroot: str | None, checksum: str | None, progress: Progress, *,
                        allow_missing_checksum: bool = False, allow_unlocked: bool = False) -> Deployment:
    """rpm-ostree's finalize-deployment: take the finalization lock off the staged deployment, after checking
    it is the one the caller expects (its base commit); the caller then reboots into it."""
    if checksum is None and not allow_missing_checksum:
        raise InvalidInputError("Must provide expected CHECKSUM or --allow-missing-checksum")
    if checksum is not None and allow_missing_checksum:
        raise InvalidInputError("Cannot specify both CHECKSUM and --allow-missing-checksum")
    with Transaction(sysroot, "finalize-deployment", [checksum or "--allow-missing-checksum"], progress) as txn:
        deps = sysroot.deployments()
        if not deps:
            raise StrataError("No deployments found")
        staged = deps[0]
        if not staged.staged:
            raise StrataError("No pending staged deployment found")
        txn.stateroot = staged.stateroot
        name = default_stateroot(sysroot, stateroot)
        if staged.stateroot != name:
            raise StrataError(f"Staged deployment is not for osname '{name}'")
        base = base_commit(sysroot.repo, staged.csum)
        if checksum is not None and checksum != base:
            raise StrataError(f"Expected staged base checksum {checksum}, but found {base}")
        if not sysroot.finalization_locked:
            if not allow_unlocked:
                raise StrataError("Staged deployment already unlocked")
            return staged
        with txn.critical():
            sysroot.set_finalization_locked(False)
            history.record(sysroot, "finalize-deployment", [checksum or "--allow-missing-checksum"], staged)
    return staged
