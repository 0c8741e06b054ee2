"""`ostree config get|set|unset`: reading and editing the repository's config key file."""

from __future__ import annotations

from strata.errors import NotFoundError
from strata.image.repo import Repo


def config_get(repo: Repo, group: str, key: str) -> str:
    if not repo.config.has_group(group):
        raise NotFoundError(f"Key file does not have group “{group}”")
    value = repo.config.get(group, key)
    if value is None:
        raise NotFoundError(f"Key file does not have key “{key}” in group “{group}”")
    return value


def config_set(repo: Repo, group: str, key: str, value: str) -> None:
    with repo.lock():
        repo.config.set(group, key, value)
        repo.save_config()


def config_unset(repo: Repo, group: str, key: str) -> None:
    """Removing a key or group that does not exist is not an error (as in ostree)."""
    if repo.config.get(group, key) is None:
        return
    with repo.lock():
        repo.config.remove(group, key)
        repo.save_config()
