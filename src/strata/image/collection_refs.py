"""Collection refs: (COLLECTION-ID, REF) names for refs wherever they are kept.

The repository's own collection holds refs/heads; other collections are mirrored under
refs/mirrors/COLLECTION-ID/; a remote with a `collection-id` option lends that ID to its refs/remotes/REMOTE/.
"""

from __future__ import annotations

import os
from pathlib import Path

from strata.image import objects as O
from strata.image.repo import Repo

CollectionRef = tuple[str, str]  # (collection ID, ref name)


def collection_refs(repo: Repo, *, heads: bool = True, remotes: bool = True) -> dict[CollectionRef, str]:
    """Every ref that has a collection ID, with the commit it names (heads=False, remotes=False: the mirrored
    refs alone)."""
    found: dict[CollectionRef, str] = {}
    main = repo.config.get("core", "collection-id")
    if main and heads:
        found.update(((main, name), checksum) for name, checksum in repo.list_refs(remotes=False).items())
    mirrors = repo.path / "refs" / "mirrors"
    for collection in sorted(os.listdir(mirrors)) if mirrors.is_dir() else []:
        found.update(((collection, name), checksum) for name, checksum in _refs_under(mirrors / collection))
    for remote, collection in _remote_collections(repo).items() if remotes else ():
        found.update(((collection, name), checksum)
                     for name, checksum in _refs_under(repo.path / "refs" / "remotes" / remote))
    return found


def _remote_collections(repo: Repo) -> dict[str, str]:
    prefix = 'remote "'
    return {group[len(prefix):-1]: collection for group in repo.config.groups
            if group.startswith(prefix) and (collection := repo.config.get(group, "collection-id"))}


def _refs_under(top: Path) -> list[tuple[str, str]]:
    """(ref name relative to top, checksum) for every ref file holding a checksum; symlinks are not followed
    out of top."""
    if not top.is_dir() or top.is_symlink():
        return []
    found = []
    for dirpath, _dirs, files in os.walk(top):
        for name in files:
            path = Path(dirpath) / name
            if name.startswith(".") or path.is_symlink():
                continue
            text = path.read_text(errors="replace").strip()
            if O.is_checksum(text):
                found.append((str(path.relative_to(top)), text))
    return sorted(found)
