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
from strata.image.objects import DirTree, ObjectType
from strata.image.repo import Repo
from strata.packages import scripts
from strata.packages.rpmread import RpmHeader


class FileConflictError(StrataError):
    pass


class LazyTree(MutableTree):
    """A committed directory being edited: its dirtree is read only when its entries are first used, so that
    editing a few paths of a large tree reads and rewrites only the directories on those paths."""

    def __init__(self, repo: Repo, dirtree: str, dirmeta: str) -> None:  # no super().__init__: nothing loaded
        self.meta = dirmeta
        self.source = dirtree  # the dirtree this directory still is while it is not loaded
        self._repo = repo
        self._files: dict[str, str] | None = None
        self._dirs: dict[str, MutableTree] | None = None

    @classmethod
    def of_commit(cls, repo: Repo, commit: str) -> LazyTree:
        loaded = repo.load_commit(commit)
        return cls(repo, loaded.root_tree, loaded.root_meta)

    @property
    def loaded(self) -> bool:
        return self._files is not None

    def _load(self) -> None:
        listing = self._repo.load_dirtree(self.source)
        self._files = dict(listing.files)
        self._dirs = {name: LazyTree(self._repo, tree, meta) for name, (tree, meta) in listing.dirs.items()}

    @property
    def files(self) -> dict[str, str]:
        if self._files is None:
            self._load()
        assert self._files is not None
        return self._files

    @files.setter
    def files(self, value: dict[str, str]) -> None:
        if self._dirs is None:
            self._load()
        self._files = value

    @property
    def dirs(self) -> dict[str, MutableTree]:
        if self._dirs is None:
            self._load()
        assert self._dirs is not None
        return self._dirs

    @dirs.setter
    def dirs(self, value: dict[str, MutableTree]) -> None:
        if self._files is None:
            self._load()
        self._dirs = value


def write_edited_tree(repo: Repo, tree: MutableTree) -> tuple[str, str]:
    """Write the dirtrees of the directories that were loaded or built (bottom-up, without recursion); a
    directory never loaded is still its source dirtree. Returns (root dirtree, root dirmeta)."""
    order = [tree]  # every loaded node before its descendants
    for node in order:
        if not (isinstance(node, LazyTree) and not node.loaded):
            order.extend(node.dirs.values())
    written: dict[int, tuple[str, str]] = {}
    for node in reversed(order):
        if not node.meta:
            raise StrataError("directory without dirmeta in tree")
        if isinstance(node, LazyTree) and not node.loaded:
            written[id(node)] = node.source, node.meta
            continue
        listing = DirTree(dict(node.files), {name: written[id(child)] for name, child in node.dirs.items()})
        written[id(node)] = repo.write_metadata(ObjectType.DIRTREE, listing.serialize()), node.meta
    return written[id(tree)]


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
    root = write_edited_tree(repo, tree) if isinstance(tree, LazyTree) else write_mutable_tree(repo, tree)
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
