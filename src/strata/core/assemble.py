"""Assembling a tree from package commits: their trees are merged in memory (a path shipped with different
content by two packages is a conflict naming both), then the union is checked out once by hardlinks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from strata import progress
from strata.core.ownership import fix_ownership
from strata.errors import StrataError
from strata.image.checkout import checkout_tree
from strata.image.commit import MutableTree, write_mutable_tree
from strata.image.repo import Repo
from strata.packages import scripts
from strata.packages.rpmread import RpmHeader


class FileConflictError(StrataError):
    pass


@dataclass
class _Owned:
    """A merged tree plus, per path, the package that put it there (for conflict messages)."""

    tree: MutableTree
    owners: dict[str, str] = field(default_factory=dict)
    base_owner: Callable[[str], str] | None = None  # names the package of a path that was in the base

    def owner(self, path: str) -> str:
        if path in self.owners:
            return self.owners[path]
        return self.base_owner(path) if self.base_owner is not None else "base"


def merge_package_trees(repo: Repo, packages: list[tuple[str, str]], base: MutableTree | None = None,
                        *, replace_files: frozenset[str] = frozenset(),
                        base_owner: Callable[[str], str] | None = None) -> MutableTree:
    """Merge the trees of (package label, commit) pairs, in order, over base (or an empty tree)."""
    merged = _Owned(base or MutableTree(), base_owner=base_owner)
    for label, commit in packages:
        loaded = repo.load_commit(commit)
        if not merged.tree.meta:
            merged.tree.meta = loaded.root_meta
        _merge_dir(repo, merged, merged.tree, loaded.root_tree, "", label, label in replace_files)
    return merged.tree


def _merge_dir(repo: Repo, merged: _Owned, node: MutableTree, dirtree: str, prefix: str, label: str,
               overwrite: bool) -> None:
    loaded = repo.load_dirtree(dirtree)
    for name, checksum in loaded.files.items():
        path = f"{prefix}/{name}"
        if name in node.dirs:
            raise FileConflictError(f"file {path} from package {label} conflicts with a directory "
                                    f"from package {merged.owner(path)}")
        existing = node.files.get(name)
        if existing is not None and existing != checksum and not overwrite:
            raise FileConflictError(f"file {path} conflicts between packages {merged.owner(path)} "
                                    f"and {label}")
        node.files[name] = checksum
        merged.owners.setdefault(path, label)
    for name, (sub_tree, sub_meta) in loaded.dirs.items():
        path = f"{prefix}/{name}"
        if name in node.files:
            raise FileConflictError(f"directory {path} from package {label} conflicts with a file "
                                    f"from package {merged.owner(path)}")
        child = node.dirs.get(name)
        if child is None:
            child = node.dirs[name] = MutableTree(sub_meta)
            merged.owners.setdefault(path, label)
        _merge_dir(repo, merged, child, sub_tree, path, label, overwrite)


def check_out_merged(repo: Repo, tree: MutableTree, dest: Path) -> tuple[str, str]:
    """Write the merged tree's dirtrees and check it out by hardlinks; returns (dirtree, dirmeta)."""
    root = write_mutable_tree(repo, tree)
    checkout_tree(repo, root, dest)
    return root



def run_package_scripts(rootfs: Path, headers: list[RpmHeader], log: Callable[[str], None], *,
                        upgrades: frozenset[str] = frozenset()) -> None:
    """%pre of every package, then owners and capabilities, %post, %posttrans and %transfiletriggerin."""
    for kind in ("pre", "post", "posttrans"):
        scriptlets = [s for h in headers for s in h.scriptlets(kind)]
        triggers = [t for h in headers for t in h.transfiletriggers_in()] if kind == "posttrans" else []
        with progress.items(f"Running {kind} scripts", len(scriptlets) + len(triggers)) as bar:
            scripts.run_scriptlets(rootfs, scriptlets, log, upgrade=upgrades, advance=bar.advance)
            if kind == "pre":
                fix_ownership(rootfs, headers)
            if triggers:
                installed = sorted({f.path for h in headers for f in h.files})
                scripts.run_file_triggers(rootfs, triggers, installed, log, advance=bar.advance)
