"""Leaving files of a package out of a compose: `remove-from-packages` (regular expressions searched in
each path, as rpm-ostree's checkout filter does) and `install-langs` (rpm's %_install_langs rule on the
header's %lang of each file). The package's cached commit is kept; a filtered copy of its tree is used."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass

from strata.image.commit import CommitRequest, MutableTree, load_mutable_tree, write_commit, write_mutable_tree
from strata.image.repo import Repo
from strata.packages.paths import translate_path
from strata.packages.rpmformat import read_layout
from strata.packages.rpmread import RpmHeader
from strata.packages.text import shown

Log = Callable[[str], None]
TAG_FILELANGS = 1097


@dataclass(frozen=True)
class PackageFilter:
    remove_patterns: dict[str, list[re.Pattern[str]]]  # package name -> expressions
    install_langs: tuple[str, ...] | None  # None: every language

    @classmethod
    def from_treefile(cls, remove_from_packages: list[list[str]], install_langs: list[str] | None) -> PackageFilter:
        patterns: dict[str, list[re.Pattern[str]]] = {}
        for name, *expressions in remove_from_packages:
            patterns.setdefault(name, []).extend(re.compile(e) for e in expressions)
        return cls(patterns, tuple(install_langs) if install_langs is not None else None)

    @property
    def active(self) -> bool:
        return bool(self.remove_patterns) or self.install_langs is not None


def filter_package(repo: Repo, commit: str, header: RpmHeader, rules: PackageFilter, log: Log) -> str:
    """The commit to check out for this package: the cached one, or a filtered copy written to repo."""
    name = header.nevra.name
    dropped = _foreign_language_paths(header, rules.install_langs) if rules.install_langs is not None else set()
    patterns = rules.remove_patterns.get(name, [])
    if not dropped and not patterns:
        return commit
    loaded = repo.load_commit(commit)
    tree = load_mutable_tree(repo, loaded.root_tree, loaded.root_meta)
    removed = _prune(tree, "", patterns, dropped)
    if not removed:
        return commit
    for path in removed:
        log(f"Skipping file {shown(path)} from {name}")
    root = write_mutable_tree(repo, tree)
    return write_commit(repo, root, CommitRequest(subject=f"{name} filtered", timestamp=0))


def _prune(node: MutableTree, prefix: str, patterns: list[re.Pattern[str]], dropped: set[str]) -> list[str]:
    removed = []
    for name in sorted(node.files):
        path = f"{prefix}/{name}"
        if path in dropped or any(p.search(path) for p in patterns):
            del node.files[name]
            removed.append(path)
    for name in sorted(node.dirs):
        path = f"{prefix}/{name}"
        if any(p.search(path) for p in patterns):
            del node.dirs[name]
            removed.append(path)
            continue
        removed += _prune(node.dirs[name], path, patterns, dropped)
    return removed


def _foreign_language_paths(header: RpmHeader, install_langs: tuple[str, ...]) -> set[str]:
    """Stored paths ("/usr/share/...") of files whose %lang is not wanted."""
    langs = read_layout(io.BytesIO(header.raw)).header.value(TAG_FILELANGS)
    if not isinstance(langs, list) or len(langs) != len(header.files):
        return set()
    dropped = set()
    for entry, lang in zip(header.files, langs, strict=True):
        if isinstance(lang, str) and lang and not lang_wanted(lang, install_langs):
            stored = translate_path(entry.path, entry.mode, entry.linkto).stored
            if stored:
                dropped.add(f"/{stored}")
    return dropped


def lang_wanted(file_langs: str, install_langs: tuple[str, ...]) -> bool:
    """rpm's rule: a file's languages are '|'-separated; one of them matches a wanted language when it is
    a prefix of it ("fr" matches "fr_FR"); "all" wants everything; files without %lang (or "C") always stay."""
    if file_langs == "C":
        return True
    for wanted in install_langs:
        if wanted == "all":
            return True
        if any(lang and wanted.startswith(lang) for lang in file_langs.split("|")):
            return True
    return False
