"""A repository's parent chain (`core.parent`): objects found in a parent count as present, as in ostree,
so a local pull into a child repository copies only what the whole chain lacks."""

from __future__ import annotations

from pathlib import Path

from strata.image.objects import ObjectType
from strata.image.repo import Repo

MAX_PARENTS = 16  # a loop of core.parent settings ends here instead of running forever


def repo_chain(repo: Repo) -> list[Repo]:
    """repo and its core.parent repositories, nearest first."""
    chain = [repo]
    while len(chain) <= MAX_PARENTS:
        parent = chain[-1].config.get("core", "parent")
        if not parent:
            break
        chain.append(Repo.open(Path(parent)))
    return chain


def has_in_chain(chain: list[Repo], checksum: str, objtype: ObjectType) -> bool:
    return any(repo.has_object(checksum, objtype) for repo in chain)
