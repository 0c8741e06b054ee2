"""apply-live (spec H) for a sysroot that is a directory: pure additions copied into the booted deployment,
with what they replace saved so that the next (simulated) boot drops the live changes again.

The cost follows the size of the change, not of the tree: the two commits are compared dirtree by dirtree,
descending only where their checksums differ, and only the changed paths of the live tree are touched.
The undo record is written before the live tree changes, so that a crash at any point leaves a tree the
next boot restores."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from strata import fsroot, progress
from strata.core import history
from strata.core.pkgdiff import PackageDiff, diff_packages
from strata.errors import InvalidInputError, NotFoundError, StrataError
from strata.image import inspect
from strata.image.checkout import CheckoutOptions, checkout_tree
from strata.image.fsutil import atomic_write
from strata.image.objects import Commit
from strata.image.repo import Repo
from strata.packages.nevra import Nevra
from strata.sysroot.crashpoints import crash_point
from strata.sysroot.sysroot import Deployment, Sysroot

if TYPE_CHECKING:
    from strata.core.transaction import Progress

Log = Callable[[str], None]
Change = tuple[str, str]  # ('A'|'M'|'D', absolute path in the tree)
Undo = dict[str, list[str]]  # "added" | "replaced" | "removed" -> paths
LIVE_REF = "rpmostree/live-apply"
INPROGRESS_REF = "rpmostree/live-apply-inprogress"
UNDO_KINDS = ("added", "replaced", "removed")
USR_ETC = "/usr/etc"


@dataclass(frozen=True)
class LiveResult:
    diff: PackageDiff | None  # None when the source or the target commit carries no package list


def live_state_dir(sysroot: Sysroot, dep: Deployment) -> Path:
    return sysroot.path / "run" / "ostree" / "deployment-state" / dep.name


def live_commit(sysroot: Sysroot, dep: Deployment) -> str | None:
    stamp = live_state_dir(sysroot, dep) / "rpmostree-is-live.stamp"
    return sysroot.repo.read_ref(LIVE_REF) if stamp.exists() else None


# ---------------------------------------------------------------- the verb


def apply_live(sysroot: Sysroot, allow_replacement: bool, progress: Progress, *, target: str | None = None,
               reset: bool = False) -> LiveResult:
    """Apply the pending deployment (or --target COMMIT, or with --reset the booted commit itself) to the
    running system."""
    # Imported here: status and admin read the live state through this module and need no transaction frame.
    from strata.core.transaction import Transaction
    booted = sysroot.booted()
    if booted is None:
        raise StrataError("apply-live needs a booted system (run `strata admin boot` first)")
    if target is not None and reset:
        raise InvalidInputError("Cannot specify both --target and --reset")
    args = [*(["--allow-replacement"] if allow_replacement else []), *([f"--target={target}"] if target else []),
            *(["--reset"] if reset else [])]
    # No invariant check (as usroverlay): the live tree, its /run state and the live refs are all apply-live
    # changes, and no invariant covers them; the checks would parse every deployment's commit twice.
    with Transaction(sysroot, "apply-live", args, progress, stateroot=booted.stateroot, check=False) as txn:
        commit = _live_target(sysroot, booted, target, reset)
        with txn.critical():
            diff = update_live_tree(sysroot, booted, commit, txn.log, allow_replacement=allow_replacement or reset)
            history.record(sysroot, "apply-live", args, booted)
    return LiveResult(diff)


def _live_target(sysroot: Sysroot, booted: Deployment, target: str | None, reset: bool) -> str:
    if reset:
        return booted.csum
    if target is not None:
        commit = sysroot.repo.resolve_rev(target, allow_missing=True)
        if commit is None:
            raise NotFoundError(f"apply-live --target: {target} not found in the sysroot's repository")
        return commit
    deps = sysroot.deployments()
    index = next(i for i, d in enumerate(deps) if d.key == booted.key)
    pending = next((d for d in deps[:index] if d.stateroot == booted.stateroot), None)
    if pending is None:
        raise StrataError("No target commit specified and no pending deployment")
    return pending.csum


# ---------------------------------------------------------------- the live tree


def update_live_tree(sysroot: Sysroot, booted: Deployment, target: str, log: Log, *,
                     allow_replacement: bool = False) -> PackageDiff | None:
    """Make the booted deployment's tree look like commit `target`; returns the package diff from the
    current live (or booted) commit to the target."""
    repo = sysroot.repo
    interrupted = _interrupted_target(sysroot, booted)
    if interrupted is not None and interrupted != target:
        # the live tree holds part of that target: only finishing it keeps the tree and its undo record whole
        raise StrataError(f"Previously interrupted while targeting commit {interrupted}, cannot change target "
                          f"to {target}")
    old, new = repo.load_commit(live_commit(sysroot, booted) or booted.csum), repo.load_commit(target)
    before, after = _packages(old), _packages(new)
    diff = diff_packages(before or [], after or [])
    if not allow_replacement:
        _refuse_replacements(diff)
    new_root = (new.root_tree, new.root_meta)
    changes = list(inspect.diff_trees(repo, (old.root_tree, old.root_meta), new_root))
    _refuse_changed_directories(repo, changes, new_root)
    log(f"Computed /usr diff: {_count(changes, 'A')} added, {_count(changes, 'M')} changed, "
        f"{_count(changes, 'D')} removed")
    log(f"Computed pkg diff: {len(diff.added)} added, {len(diff.upgraded) + len(diff.downgraded)} changed, "
        f"{len(diff.removed)} removed")
    root = sysroot.deployment_dir(booted)
    _require_real_parents(root, changes)
    _write_live_tree(repo, target, new_root, changes, root, live_state_dir(sysroot, booted))
    log("Successfully updated running filesystem tree.")
    return diff if before is not None and after is not None else None


def _interrupted_target(sysroot: Sysroot, booted: Deployment) -> str | None:
    """The target of an apply-live of this boot that did not finish; the in-progress ref of an earlier boot
    (whose live state in /run is gone) does not count."""
    if not (live_state_dir(sysroot, booted) / "undo.json").exists():
        return None
    return sysroot.repo.read_ref(INPROGRESS_REF)


def _write_live_tree(repo: Repo, commit: str, new_root: tuple[str, str], changes: list[Change], root: Path,
                     state: Path) -> None:
    """The changes into the live tree, recorded first for the next boot to undo, then the live state."""
    state.mkdir(parents=True, exist_ok=True)
    repo.set_ref(INPROGRESS_REF, commit)
    undo_file = state / "undo.json"
    undo = _planned_undo(_read_undo(undo_file), changes, root)
    atomic_write(undo_file, json.dumps(undo).encode())  # before the tree changes: a crash leaves it complete
    crash_point("live-undo-recorded")
    with progress.task("Updating /usr"):
        _apply_tree_changes(repo, new_root, changes, root, state, undo)
    crash_point("live-usr-updated")
    with progress.task("Updating /etc"):
        _update_etc(repo, new_root, root, changes)
    (state / "rpmostree-is-live.stamp").write_text("")
    repo.set_ref(LIVE_REF, commit)
    repo.set_ref(INPROGRESS_REF, None)


def _count(changes: list[Change], kind: str) -> int:
    return sum(change == kind for change, _ in changes)


def _packages(commit: Commit) -> list[Nevra] | None:
    """The commit's package list, or None for a plain OSTree commit; typed, as the commit may be hostile."""
    entries = commit.typed_meta("rpmostree.rpmdb.pkglist", "a(sssss)")
    return None if entries is None else sorted(Nevra.from_pkglist_entry(tuple(e)) for e in entries)


def _refuse_replacements(diff: PackageDiff) -> None:
    if diff.removed:
        raise StrataError(f"packages would be removed: {len(diff.removed)}, allow replacement to override")
    if diff.upgraded or diff.downgraded:
        changed = len(diff.upgraded) + len(diff.downgraded)
        raise StrataError(f"packages would be changed: {changed}, allow replacement to override")


def _refuse_changed_directories(repo: Repo, changes: list[Change], root: tuple[str, str]) -> None:
    for change, path in changes:
        if change == "M" and inspect.lookup_pair(repo, root, path) is not None:
            raise StrataError("Changed directories are not supported yet")


def _in_usr_etc(path: str) -> bool:
    return path == USR_ETC or path.startswith(USR_ETC + "/")


def _under(path: str, tops: AbstractSet[str]) -> bool:
    """path is one of tops or inside one of them."""
    while path not in ("", "/"):
        if path in tops:
            return True
        path = os.path.dirname(path)
    return False


def _read_undo(undo_file: Path) -> Undo:
    try:
        data = json.loads(undo_file.read_bytes())
    except FileNotFoundError:
        return {kind: [] for kind in UNDO_KINDS}
    except ValueError as exc:
        raise StrataError(f"{undo_file}: the live changes record is damaged: {exc}") from exc
    if not isinstance(data, dict):
        raise StrataError(f"{undo_file}: the live changes record is damaged")
    return {kind: [str(p) for p in data.get(kind, [])] for kind in UNDO_KINDS}


def _backup_path(state: Path, path: str) -> Path:
    return state / "replaced" / path.lstrip("/")


def _planned_undo(previous: Undo, changes: list[Change], deploy_dir: Path) -> Undo:
    """The undo record once `changes` are applied on top of what earlier apply-lives did this boot.

    A path keeps its first record: its backup is the deployment's own file, and backing up a live version
    again would make the next boot restore a live change instead of the deployment. A path first added live
    is simply removed at the next boot, whatever later apply-lives did to it. An added path that is already
    in the live tree (put there outside any commit) is backed up like a replaced one."""
    undo = {kind: list(previous[kind]) for kind in UNDO_KINDS}
    recorded = {path for paths in undo.values() for path in paths}
    for change, path in changes:
        if _in_usr_etc(path) or _under(path, recorded):
            continue
        if change == "D":
            kind = "removed"
        else:
            kind = "replaced" if change == "M" or _exists(deploy_dir / path.lstrip("/")) else "added"
        undo[kind].append(path)
        recorded.add(path)
    return undo


def _require_real_parents(deploy_dir: Path, changes: list[Change]) -> None:
    """Every changed path's parent must be a real directory of the deployment: a symlink there could lead
    outside it. Checked for all of them before anything changes."""
    checked: set[str] = set()
    for _change, path in changes:
        parent = os.path.dirname(path.lstrip("/"))
        if parent not in checked and not _in_usr_etc(path):
            fsroot.require_real_dir(deploy_dir, parent)
            checked.add(parent)


def _apply_tree_changes(repo: Repo, root: tuple[str, str], changes: list[Change], deploy_dir: Path,
                        state: Path, undo: Undo) -> None:
    live_added = set(undo["added"])
    for change, path in changes:
        if _in_usr_etc(path):
            continue
        target = deploy_dir / path.lstrip("/")
        if _exists(target):
            _set_aside(target, _backup_path(state, path), keep=not _under(path, live_added))
        if change != "D":
            checkout_tree(repo, root, target, CheckoutOptions(subpath=path, force_copy=True))


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _set_aside(target: Path, backup: Path, *, keep: bool) -> None:
    """Move the deployment's file aside for the next boot to restore (once: the first backup is the
    deployment's own); a live version is simply dropped."""
    if keep and not _exists(backup):
        backup.parent.mkdir(parents=True, exist_ok=True)
        os.rename(target, backup)
    else:
        fsroot.remove_tree(target)


def _update_etc(repo: Repo, root: tuple[str, str], deploy_dir: Path, changes: list[Change]) -> None:
    """New default config files appear in /etc unless the admin already has a file there; nothing is
    written through a symlink of /etc."""
    for change, path in changes:
        if change != "A" or not path.startswith(USR_ETC + "/"):
            continue
        rel = "etc/" + path[len(USR_ETC) + 1:]
        parent = os.path.dirname(rel)
        if _admin_path_in_the_way(deploy_dir, parent):
            continue
        target = deploy_dir / rel
        if _exists(target):
            continue
        (deploy_dir / parent).mkdir(parents=True, exist_ok=True)
        checkout_tree(repo, root, target, CheckoutOptions(subpath=path, force_copy=True))


def _admin_path_in_the_way(deploy_dir: Path, relpath: str) -> bool:
    """True when some existing component of relpath is not a real directory (an admin's symlink or file)."""
    try:
        st = fsroot.lstat_in_tree(deploy_dir, relpath)
    except StrataError:
        return True
    return st is not None and not stat.S_ISDIR(st.st_mode)


def drop_live_changes(sysroot: Sysroot) -> None:
    """What a reboot does to the live changes: the deployments' files are restored, the live state in /run
    and the live refs are gone."""
    deploy_root = sysroot.path / "run" / "ostree" / "deployment-state"
    states = [s for s in deploy_root.iterdir() if (s / "undo.json").exists()] if deploy_root.is_dir() else []
    for state in states:
        dep_dir = next((d for d in (sysroot.path / "ostree" / "deploy").glob(f"*/deploy/{state.name}")), None)
        if dep_dir is not None:
            _undo_live_changes(dep_dir, state, _read_undo(state / "undo.json"))
        for name in ("rpmostree-is-live.stamp", "undo.json"):
            (state / name).unlink(missing_ok=True)
    for ref in (LIVE_REF, INPROGRESS_REF):
        if sysroot.repo.read_ref(ref):
            sysroot.repo.set_ref(ref, None)


def _undo_live_changes(dep_dir: Path, state: Path, undo: Undo) -> None:
    for path in undo["added"]:
        fsroot.remove_tree(dep_dir / path.lstrip("/"))
    for path in [*undo["replaced"], *undo["removed"]]:
        backup = _backup_path(state, path)
        if _exists(backup):
            target = dep_dir / path.lstrip("/")
            fsroot.remove_tree(target)
            os.rename(backup, target)
