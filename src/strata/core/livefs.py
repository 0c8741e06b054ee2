"""apply-live (spec H) for a sysroot that is a directory: pure additions copied into the booted deployment,
with what they replace saved so that the next (simulated) boot drops the live changes again."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from strata import progress
from strata.core.pkgdiff import diff_packages
from strata.errors import StrataError
from strata.image import inspect
from strata.image.checkout import CheckoutOptions, checkout_tree
from strata.image.fsutil import atomic_write
from strata.image.objects import Commit
from strata.image.repo import Repo
from strata.packages.nevra import Nevra
from strata.sysroot.sysroot import Deployment, Sysroot

Log = Callable[[str], None]
LIVE_REF = "rpmostree/live-apply"


def live_state_dir(sysroot: Sysroot, dep: Deployment) -> Path:
    return sysroot.path / "run" / "ostree" / "deployment-state" / dep.name


def live_commit(sysroot: Sysroot, dep: Deployment) -> str | None:
    stamp = live_state_dir(sysroot, dep) / "rpmostree-is-live.stamp"
    return sysroot.repo.read_ref(LIVE_REF) if stamp.exists() else None


def apply_live(sysroot: Sysroot, booted: Deployment, target: str, log: Log, *, allow_replacement: bool = False
               ) -> None:
    repo = sysroot.repo
    source = live_commit(sysroot, booted) or booted.csum
    old, new = repo.load_commit(source), repo.load_commit(target)  # once each: a pkglist takes a while to parse
    diff = diff_packages(_packages(old), _packages(new))
    if not allow_replacement:
        if diff.removed:
            raise StrataError(f"packages would be removed: {len(diff.removed)}, allow replacement to override")
        if diff.upgraded or diff.downgraded:
            changed = len(diff.upgraded) + len(diff.downgraded)
            raise StrataError(f"packages would be changed: {changed}, allow replacement to override")
    changes = list(inspect.diff_trees(repo, (old.root_tree, old.root_meta), (new.root_tree, new.root_meta)))
    _refuse_changed_directories(repo, changes, (new.root_tree, new.root_meta))
    added = [p for c, p in changes if c == "A"]
    log(f"Computed /usr diff: {len(added)} added, {sum(c == 'M' for c, _ in changes)} changed, "
        f"{sum(c == 'D' for c, _ in changes)} removed")
    log(f"Computed pkg diff: {len(diff.added)} added, {len(diff.upgraded) + len(diff.downgraded)} changed, "
        f"{len(diff.removed)} removed")
    root = sysroot.deployment_dir(booted)
    state = live_state_dir(sysroot, booted)
    state.mkdir(parents=True, exist_ok=True)
    repo.set_ref("rpmostree/live-apply-inprogress", target)
    undo_file = state / "undo.json"
    previous = json.loads(undo_file.read_text()) if undo_file.exists() else {}
    with progress.task("Updating /usr"):
        undo = _apply_tree_changes(repo, (new.root_tree, new.root_meta), changes, root, state, previous)
    with progress.task("Updating /etc"):
        _update_etc(root, changes)
    atomic_write(undo_file, json.dumps(undo).encode())
    (state / "rpmostree-is-live.stamp").write_text("")
    repo.set_ref(LIVE_REF, target)
    repo.set_ref("rpmostree/live-apply-inprogress", None)
    log("Successfully updated running filesystem tree.")


def _packages(commit: Commit) -> list[Nevra]:
    entries = commit.meta("rpmostree.rpmdb.pkglist")
    return sorted(Nevra.from_pkglist_entry(tuple(e)) for e in entries) if isinstance(entries, list) else []


def _refuse_changed_directories(repo: Repo, changes: list[tuple[str, str]], root: tuple[str, str]) -> None:
    for change, path in changes:
        if change == "M" and inspect.lookup_pair(repo, root, path) is not None:
            raise StrataError("Changed directories are not supported yet")


def _apply_tree_changes(repo: Repo, root: tuple[str, str], changes: list[tuple[str, str]], deploy_dir: Path,
                        state: Path, previous: dict[str, list[str]]) -> dict[str, list[str]]:
    """Apply the changes to the live tree; returns the undo record of everything applied live so far.

    A path an earlier apply-live already touched keeps its first backup (the deployment's own file): backing up
    the live version again would make the next boot restore a live change instead of the deployment."""
    undo = {kind: list(previous.get(kind, [])) for kind in ("added", "replaced", "removed")}
    touched = {path for paths in undo.values() for path in paths}
    added_now: list[str] = []
    removed_now: list[str] = []
    backups = state / "replaced"
    for change, path in changes:
        if path.startswith("/usr/etc/") or path == "/usr/etc":
            continue
        target = deploy_dir / path.lstrip("/")
        if change == "D":
            if any(path.startswith(r + "/") for r in removed_now) or not (target.exists() or target.is_symlink()):
                continue
            _set_aside(target, backups / path.lstrip("/"), first_time=path not in touched)
            removed_now.append(path)
            if path not in touched:
                undo["removed"].append(path)
        elif change == "A":
            if any(path.startswith(a + "/") for a in added_now):
                continue  # already copied with its parent directory
            checkout_tree(repo, root, target, CheckoutOptions(subpath=path, force_copy=True))
            added_now.append(path)
            if path not in touched:
                undo["added"].append(path)
        elif change == "M":
            _set_aside(target, backups / path.lstrip("/"), first_time=path not in touched)
            checkout_tree(repo, root, target, CheckoutOptions(subpath=path, force_copy=True))
            if path not in touched:
                undo["replaced"].append(path)
    return undo


def _set_aside(target: Path, backup: Path, *, first_time: bool) -> None:
    """Move the deployment's file aside for the next boot to restore; a live version is simply dropped."""
    if first_time:
        backup.parent.mkdir(parents=True, exist_ok=True)
        os.rename(target, backup)
    elif target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    else:
        target.unlink()


def _update_etc(deploy_dir: Path, changes: list[tuple[str, str]]) -> None:
    """New default config files appear in /etc unless the admin already has a file there."""
    for change, path in changes:
        if change != "A" or not path.startswith("/usr/etc/"):
            continue
        source = deploy_dir / path.lstrip("/")
        target = deploy_dir / "etc" / path[len("/usr/etc/"):]
        if target.exists() or target.is_symlink() or not (source.exists() or source.is_symlink()):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir() and not source.is_symlink():
            shutil.copytree(source, target, symlinks=True)
        elif source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)


def drop_live_changes(sysroot: Sysroot) -> None:
    """What a reboot does to an apply-live overlay: it is gone."""
    deploy_root = sysroot.path / "run" / "ostree" / "deployment-state"
    if not deploy_root.is_dir():
        return
    for state in deploy_root.iterdir():
        undo_file = state / "undo.json"
        if not undo_file.exists():
            continue
        dep_dir = next((d for d in (sysroot.path / "ostree" / "deploy").glob(f"*/deploy/{state.name}")), None)
        if dep_dir is None:
            continue
        undo = json.loads(undo_file.read_text())
        for path in undo.get("added", []):
            target = dep_dir / path.lstrip("/")
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
        for path in [*undo.get("replaced", []), *undo.get("removed", [])]:
            target = dep_dir / path.lstrip("/")
            backup = state / "replaced" / path.lstrip("/")
            if backup.exists() or backup.is_symlink():
                if target.exists() or target.is_symlink():
                    target.unlink()
                os.rename(backup, target)
    if sysroot.repo.read_ref(LIVE_REF):
        sysroot.repo.set_ref(LIVE_REF, None)
