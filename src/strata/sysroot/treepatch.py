"""Turning a checkout of one commit into the checkout of another by changing only what differs.

A deployment's tree is a checkout: directories of its own, files hardlinked to the repository's objects. A
tree nothing references any more (a replaced staged deployment in the trash) differs from the next
deployment's commit in a few directories when both are layers on the same base; patching it costs the
difference, a checkout costs the whole tree. The walk compares dirtree checksums, so it descends only
where the commits differ; the patched tree is the one a checkout of the new commit gives (same entries,
same objects linked, same directory metadata, mtime 0 like every directory a checkout creates)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from strata import fsroot
from strata.image.checkout import CheckoutOptions, apply_dir_metadata, checkout_tree
from strata.image.repo import Repo, RepoMode

MAX_CHANGES = 512  # past this many changed entries a full checkout is the simpler (and not slower) way

_Dir = tuple[str, str]  # (dirtree, dirmeta)


@dataclass
class _Plan:
    """What to change, found before anything changes (a patch too large is refused untouched)."""

    remove: list[str] = field(default_factory=list)  # relative paths of files and directories
    new_dirs: list[tuple[str, _Dir]] = field(default_factory=list)
    files: list[tuple[str, _Dir, str]] = field(default_factory=list)  # (directory, its new tree, name)
    dirmeta: list[tuple[str, str]] = field(default_factory=list)  # (directory, dirmeta), children first

    @property
    def size(self) -> int:
        return len(self.remove) + len(self.new_dirs) + len(self.files)


def patch_checkout(repo: Repo, root: Path, old: _Dir, new: _Dir) -> bool:
    """Make root, a checkout of the tree `old`, the checkout of `new`; False (root untouched) when the trees
    differ in more than MAX_CHANGES entries."""
    plan = _Plan()
    if not _compare(repo, "", old, new, plan) or plan.size > MAX_CHANGES:
        return False
    for relpath in plan.remove:
        fsroot.remove_tree(root / relpath)
    for relpath, tree in plan.new_dirs:
        checkout_tree(repo, tree, root / relpath)
    for relpath, tree, name in plan.files:
        checkout_tree(repo, tree, root / relpath, CheckoutOptions(subpath=name))
    for relpath, meta in plan.dirmeta:
        apply_dir_metadata(root / relpath, repo.load_dirmeta(meta), drop_other_xattrs=True,
                           bareuseronly=repo.mode is RepoMode.BARE_USER_ONLY)
    return True


def _compare(repo: Repo, relpath: str, old: _Dir, new: _Dir, plan: _Plan) -> bool:
    if old == new:
        return True
    if old[0] != new[0]:
        before, after = repo.load_dirtree(old[0]), repo.load_dirtree(new[0])
        for name, checksum in before.files.items():
            if after.files.get(name) != checksum:
                plan.remove.append(_join(relpath, name))
        for name in before.dirs:
            if name not in after.dirs:
                plan.remove.append(_join(relpath, name))
        for name, checksum in after.files.items():
            if before.files.get(name) != checksum:
                plan.files.append((relpath, new, name))
        for name, sub in after.dirs.items():
            if name in before.dirs:
                if not _compare(repo, _join(relpath, name), before.dirs[name], sub, plan):
                    return False
            else:
                plan.new_dirs.append((_join(relpath, name), sub))
        if plan.size > MAX_CHANGES:
            return False
    plan.dirmeta.append((relpath, new[1]))  # also after a change inside: the directory's mtime goes back to 0
    return True


def is_untouched_copy(root: Path) -> bool:
    """Whether root and everything below it still have mtime 0, as a checkout leaves whatever it creates:
    an entry written, added or removed since moves its own or its directory's mtime."""
    if os.lstat(root).st_mtime != 0:
        return False
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            if os.lstat(os.path.join(dirpath, name)).st_mtime != 0:
                return False
    return True


def _join(relpath: str, name: str) -> str:
    return f"{relpath}/{name}" if relpath else name


