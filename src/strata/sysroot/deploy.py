"""Deployment-list operations: deploy (and stage), finalize, rollback, undeploy, pin, kargs (spec §22-§26)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from strata import fsroot
from strata.errors import InvalidInputError, NotFoundError, StrataError
from strata.image.checkout import CheckoutOptions, checkout_commit, checkout_tree
from strata.image.keyfile import KeyFile
from strata.image.objects import DirTree, ObjectType
from strata.image.repo import Repo
from strata.sysroot import bls
from strata.sysroot.crashpoints import crash_point
from strata.sysroot.etcmerge import merge_etc
from strata.sysroot.sysroot import Deployment, Sysroot
from strata.sysroot.treepatch import is_untouched_copy, patch_checkout

Log = Callable[[str], None]


@dataclass
class KargEdits:
    """Kernel argument changes, applied to the merge deployment's arguments (or an empty list)."""

    replace: list[str] = field(default_factory=list)  # --karg
    append: list[str] = field(default_factory=list)  # --karg-append
    delete: list[str] = field(default_factory=list)  # --karg-delete
    none: bool = False  # --karg-none
    from_proc: bool = False  # --karg-proc-cmdline

    @property
    def empty(self) -> bool:
        return not (self.replace or self.append or self.delete or self.none or self.from_proc)

    def apply(self, base: list[str]) -> list[str]:
        args = [] if self.none else list(base)
        if self.from_proc:
            args = bls.without_ostree_karg(Path("/proc/cmdline").read_text().split())
        for item in self.replace:
            args = bls.replace_karg(args, item)
        args += self.append
        for item in self.delete:
            args = bls.delete_karg(args, item)
        return args


@dataclass
class DeployOptions:
    stateroot: str
    origin: KeyFile
    kargs: KargEdits = field(default_factory=KargEdits)
    stage: bool = False
    retain: bool = False
    not_as_default: bool = False
    prune: bool = True
    merge: Deployment | None = None  # kargs and origin come from it; default: merge_deployment()
    etc_merge: Deployment | None = None  # /etc comes from it; default: the merge deployment
    overlay_initrds: list[str] = field(default_factory=list)  # staged in boot/ostree/initramfs-overlays first


def merge_deployment(sysroot: Sysroot, stateroot: str) -> Deployment | None:
    booted = sysroot.booted()
    if booted is not None and booted.stateroot == stateroot:
        return booted
    return next((d for d in sysroot.deployments() if d.stateroot == stateroot and not d.staged), None)


def deploy(sysroot: Sysroot, commit: str, options: DeployOptions, log: Log) -> Deployment:
    """Check out commit as a new deployment and make it part of the boot configuration (or stage it)."""
    sysroot.require_stateroot(options.stateroot)
    if not sysroot.has_commit(commit):
        raise NotFoundError(f"commit {commit} not found in the sysroot's repository")
    booted = sysroot.booted()
    if options.stage and booted is None:
        raise StrataError("Cannot stage deployment: Not currently booted into an OSTree system")
    merge = options.merge or merge_deployment(sysroot, options.stateroot)
    etc_merge = options.etc_merge or merge
    dep = _prepare(sysroot, commit, options, merge)
    try:
        if options.stage:
            _stage(sysroot, dep, etc_merge, options)
            log("Staging deployment... done")
            return dep
        if etc_merge is not None:
            changes = merge_etc(sysroot.deployment_dir(etc_merge) / "usr/etc",
                                sysroot.deployment_dir(etc_merge) / "etc", sysroot.deployment_dir(dep) / "etc")
            log(f"Copying /etc changes: {changes.summary()}")
        crash_point("after-etc-merge")
        current = [d for d in sysroot.deployments() if not d.staged]
        new_list = _retained_list(sysroot, dep, current, merge, booted, options)
        staged = sysroot.staged_deployment()
        if staged is not None and staged.stateroot == options.stateroot:
            sysroot.clear_staged_state()  # another stateroot's staged deployment stays staged
        swapped, bootversion = sysroot.write_deployments(new_list, prune_repo=options.prune)
    except BaseException:
        if sysroot.find(dep.key) is None:
            _remove_dir(sysroot, dep)
        raise
    log(f"Transaction complete; bootconfig swap: {'yes' if swapped else 'no'}; bootversion: {bootversion}, "
        f"deployment count change: {_count_change(current, new_list)}")
    return dep


def _count_change(old: list[Deployment], new: list[Deployment]) -> str:
    change = len(new) - len(old)
    return f"+{change}" if change > 0 else str(change)


def _prepare(sysroot: Sysroot, commit: str, options: DeployOptions, merge: Deployment | None) -> Deployment:
    serial = sysroot.next_serial(options.stateroot, commit)
    dep = Deployment(options.stateroot, commit, serial, bootcsum="")
    target = sysroot.deployment_dir(dep)
    _remove_dir(sysroot, dep)
    try:
        etc_ready = _materialize(sysroot, commit, target)
        crash_point("after-checkout")
        kernel = sysroot.find_kernel(target)
        if not etc_ready:
            _prepare_etc(sysroot, commit, target)
        dep.bootcsum = kernel.bootcsum
        dep.kernel_version = kernel.version
        dep.overlay_initrds = list(options.overlay_initrds)
        base = merge.kargs if merge is not None else []
        dep.kargs = options.kargs.apply(base) if not options.kargs.empty else list(base)
        origin = options.origin
        origin.remove("libostree-transient")
        sysroot.write_origin(dep, origin)
    except BaseException:
        _remove_dir(sysroot, dep)
        raise
    return dep


def _materialize(sysroot: Sysroot, commit: str, target: Path) -> bool:
    """The commit's tree at target: a spare tree from the trash (a replaced staged deployment) patched into
    it when the two commits are close, else a checkout. Returns whether target/etc is in place already (the
    spare's own copy, kept when the commit's usr/etc is the same)."""
    spare = sysroot.take_spare_tree()
    if spare is not None:
        path, spare_commit = spare
        try:
            etc_kept = _patch_spare(sysroot.repo, path, spare_commit, commit)
            if etc_kept is not None:
                os.rename(path, target)
                return etc_kept
        except (OSError, StrataError):
            pass  # what is left of the spare is plain trash now; a checkout is always right
    checkout_commit(sysroot.repo, commit, target)
    return False


def _patch_spare(repo: Repo, path: Path, old_commit: str, new_commit: str) -> bool | None:
    """Patch the spare at path into the new commit's tree; None when it cannot be, else whether its /etc
    stays (the same usr/etc in both commits, and the copy untouched since it was made)."""
    if not repo.has_object(old_commit, ObjectType.COMMIT):
        return None
    old, new = repo.load_commit(old_commit), repo.load_commit(new_commit)
    old_root, new_root = repo.load_dirtree(old.root_tree), repo.load_dirtree(new.root_tree)
    if "etc" in old_root.dirs or "etc" in new_root.dirs:
        return None  # the legacy layout: the deployment's usr/etc is not the commit's
    if set(os.listdir(path)) != {*old_root.files, *old_root.dirs, "etc"}:
        return None  # not the deployment this name says it is
    keep_etc = _usr_etc(repo, old_root) == _usr_etc(repo, new_root) and is_untouched_copy(path / "etc")
    if not keep_etc:
        fsroot.remove_tree(path / "etc")  # made again from the new usr/etc
    if not patch_checkout(repo, path, (old.root_tree, old.root_meta), (new.root_tree, new.root_meta)):
        return None
    return keep_etc


def _usr_etc(repo: Repo, root: DirTree) -> tuple[str, str] | None:
    usr = root.dirs.get("usr")
    return repo.load_dirtree(usr[0]).dirs.get("etc") if usr is not None else None


def _prepare_etc(sysroot: Sysroot, commit: str, target: Path) -> None:
    """The deployment's /etc, copied from the commit's usr/etc (or, in the legacy layout, its etc, which
    becomes usr/etc). Both must be real directories of the tree: a symlink there would point the copy, and
    later /etc merges, at the host."""
    etc = _tree_dir(target, "etc")
    usr_etc = _tree_dir(target, "usr/etc")
    if etc and usr_etc:
        raise StrataError("tree contains both /etc and /usr/etc")
    if not etc and not usr_etc:
        (target / "etc").mkdir()
        return
    loaded = sysroot.repo.load_commit(commit)
    if etc:
        os.rename(target / "etc", target / "usr/etc")
    checkout_tree(sysroot.repo, (loaded.root_tree, loaded.root_meta), target / "etc",
                  CheckoutOptions(subpath="etc" if etc else "usr/etc", force_copy=True))


def _tree_dir(root: Path, relpath: str) -> bool:
    """Whether relpath is a directory of the tree (False when absent); refused when it is anything else."""
    st = fsroot.lstat_in_tree(root, relpath)
    if st is None:
        return False
    if not stat.S_ISDIR(st.st_mode):
        raise StrataError(f"the tree's /{relpath} is not a directory")
    return True


def _remove_dir(sysroot: Sysroot, dep: Deployment) -> None:
    fsroot.remove_tree(sysroot.deployment_dir(dep))
    origin = sysroot.origin_path(dep)
    if origin.exists():
        origin.unlink()


def _retained_list(sysroot: Sysroot, new: Deployment, current: list[Deployment], merge: Deployment | None,
                   booted: Deployment | None, options: DeployOptions) -> list[Deployment]:
    """Which old deployments survive a deploy (spec §26.4), in order, with the new one placed."""
    kept = []
    for dep in current:
        keep = (options.retain or dep.stateroot != options.stateroot or sysroot.is_pinned(dep)
                or (booted is not None and dep.key == booted.key)
                or (merge is not None and dep.key == merge.key))
        if keep:
            kept.append(dep)
    default_elsewhere = current and current[0].stateroot != options.stateroot
    if options.not_as_default or default_elsewhere:
        anchor = booted if booted is not None and booted.key in {d.key for d in kept} else (kept[0] if kept else None)
        position = kept.index(anchor) + 1 if anchor is not None else 0
        return [*kept[:position], new, *kept[position:]]
    return [new, *kept]


def _stage(sysroot: Sysroot, dep: Deployment, merge: Deployment | None, options: DeployOptions) -> None:
    previous = sysroot.staged_deployment()
    kargs = None if options.kargs.empty else dep.kargs
    bootversion = sysroot.bootversion
    subboot = sysroot.subbootversion(bootversion)
    listed = [d for d in sysroot.deployments() if not d.staged]
    # The new commit is held by a ref of its own before the staged state names it; then the refs are rewritten
    # as ostree numbers them (the staged deployment first) and the extra one goes.
    spare = f"ostree/{bootversion}/{subboot}/{len(listed) + 1}"
    sysroot.repo.set_ref(spare, dep.csum)
    sysroot.write_staged_state(dep, merge, kargs if kargs is not None else list(dep.kargs))
    sysroot._write_deployment_refs(listed, bootversion, subboot)
    sysroot.repo.set_ref(spare, None)
    if previous is not None and previous.key != dep.key:
        crash_point("before-trash-staged")
        sysroot.trash_deployment(previous, spare=True)  # the next cleanup deletes it; until then a spare


def finalize_staged(sysroot: Sysroot, log: Log) -> Deployment | None:
    """What shutdown does: merge /etc from the merge deployment as it is now, then write the boot entries."""
    staged = sysroot.staged_deployment()
    if staged is None:
        sysroot.clear_staged_state()
        return None
    merge_name = sysroot.staged_merge_name()
    current = [d for d in sysroot.deployments() if not d.staged]
    merge = next((d for d in current if d.name == merge_name and d.stateroot == staged.stateroot), None)
    sysroot.clear_staged_state()
    if merge is not None:
        changes = merge_etc(sysroot.deployment_dir(merge) / "usr/etc", sysroot.deployment_dir(merge) / "etc",
                            sysroot.deployment_dir(staged) / "etc")
        log(f"Copying /etc changes: {changes.summary()}")
    booted = sysroot.booted()
    options = DeployOptions(staged.stateroot, KeyFile())
    new_list = _retained_list(sysroot, replace(staged, staged=False), current, merge, booted, options)
    sysroot.write_deployments(new_list, prune_repo=False)
    return staged


def rollback(sysroot: Sysroot, log: Log) -> Deployment:
    """Make the other deployment of the booted stateroot the default (spec §I.2)."""
    deps = sysroot.deployments()
    booted = sysroot.booted()
    stateroot = booted.stateroot if booted else (deps[0].stateroot if deps else "")
    same = [d for d in deps if d.stateroot == stateroot]
    if booted is None:
        if len(same) < 2:
            raise StrataError("No rollback deployment found")
        target = same[1]
    else:
        index = next(i for i, d in enumerate(deps) if d.key == booted.key)
        pending = next((d for d in deps[:index] if d.stateroot == stateroot), None)
        rollback_dep = next((d for d in deps[index + 1:] if d.stateroot == stateroot), None)
        if pending is not None and pending.staged:
            raise StrataError("Staged deployment (remove with cleanup -p)")
        if rollback_dep is None and pending is None:
            raise StrataError("No rollback deployment found")
        target = rollback_dep if rollback_dep is not None else booted
    listed = [d for d in deps if not d.staged]
    new_list = [target, *[d for d in listed if d.key != target.key]]
    log(f"Moving '{target.name}' to be first deployment")
    swapped, bootversion = sysroot.write_deployments(new_list, prune_repo=False)
    log(f"Transaction complete; bootconfig swap: {'yes' if swapped else 'no'}; bootversion: {bootversion}, "
        f"deployment count change: 0")
    return target


def by_index(sysroot: Sysroot, index: int) -> Deployment:
    deps = sysroot.deployments()
    if index < 0 or index >= len(deps):
        raise InvalidInputError(f"Out of range deployment index {index}")
    return deps[index]


def undeploy(sysroot: Sysroot, index: int, log: Log) -> Deployment:
    target = by_index(sysroot, index)
    booted = sysroot.booted()
    if booted is not None and target.key == booted.key:
        raise StrataError(f"Cannot undeploy currently booted deployment {index}")
    if target.staged:
        sysroot.clear_staged_state()
        # The refs numbered the staged deployment first: renumber them before cleanup drops the last one.
        bootversion = sysroot.bootversion
        sysroot._write_deployment_refs([d for d in sysroot.deployments() if not d.staged], bootversion,
                                       sysroot.subbootversion(bootversion))
        sysroot.cleanup(prune_repo=True)
    else:
        remaining = [d for d in sysroot.deployments() if not d.staged and d.key != target.key]
        sysroot.write_deployments(remaining)
    log(f"Deleted deployment {target.name}")
    return target


def set_pinned(sysroot: Sysroot, index: int, pinned: bool) -> Deployment:
    target = by_index(sysroot, index)
    if target.staged:
        raise StrataError("Cannot pin staged deployment")
    origin = sysroot.read_origin(target)
    if pinned:
        origin.set("libostree-transient", "pinned", True)
    else:
        origin.remove("libostree-transient", "pinned")
    sysroot.write_origin(target, origin)
    return target


def set_kargs(sysroot: Sysroot, index: int, edits: KargEdits, log: Log) -> Deployment:
    """Change one deployment's kernel arguments through a new boot entry set."""
    target = by_index(sysroot, index)
    if target.staged:
        raise StrataError("Cannot change the kernel arguments of a staged deployment")
    listed = [d for d in sysroot.deployments() if not d.staged]
    changed = replace(target, kargs=edits.apply(target.kargs))
    if changed.kargs == target.kargs:
        log("No changes.")
        return target
    swapped, bootversion = sysroot.write_deployments([changed if d.key == target.key else d for d in listed],
                                                     prune_repo=False)
    log(f"Transaction complete; bootconfig swap: {'yes' if swapped else 'no'}; bootversion: {bootversion}, "
        f"deployment count change: 0")
    return changed
