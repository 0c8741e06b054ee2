"""Remotes, kept in the repository config as `[remote "NAME"]` groups the way ostree keeps them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from strata.errors import InvalidInputError, NotFoundError
from strata.image.gpg import import_keys
from strata.image.repo import Repo, validate_remote_name
from strata.image.sign import public_keys

if TYPE_CHECKING:
    from strata.image.fetcher import FetchSettings


@dataclass(frozen=True)
class Remote:
    name: str
    url: str
    gpg_verify: bool
    gpg_keyring: Path
    sign_verify: bool
    sign_verify_summary: bool
    keys: tuple[bytes, ...]
    branches: tuple[str, ...]
    timeout: float = 30.0
    content_url: str | None = None  # `contenturl`: where objects come from, when not from url

    @property
    def verifies(self) -> bool:
        return self.sign_verify


def _group(name: str) -> str:
    return f'remote "{name}"'


def keyring_path(repo: Repo, name: str) -> Path:
    return repo.path / f"{name}.trustedkeys.gpg"


def add_remote(repo: Repo, name: str, url: str, *, branches: list[str], sign_verify: str | None,
               no_sign_verify: bool, settings: list[tuple[str, str]], if_not_exists: bool = False,
               gpg_import: Path | None = None) -> None:
    validate_remote_name(name)
    group = _group(name)
    if repo.config.has_group(group):
        if if_not_exists:
            return
        raise InvalidInputError(f"Remote configuration for \"{name}\" already exists")
    repo.config.set(group, "url", url)
    if branches:
        repo.config.set(group, "branches", branches)
    repo.config.set(group, "gpg-verify", gpg_import is not None)
    if gpg_import is not None:
        import_keys(keyring_path(repo, name), gpg_import)
    if sign_verify:
        key_type, _, spec = sign_verify.partition("=")
        if key_type != "ed25519":
            raise InvalidInputError(f"unsupported signature type {key_type}")
        public_keys(spec)
        kind, _, value = spec.partition(":")
        repo.config.set(group, "sign-verify", True)
        repo.config.set(group, "verification-ed25519-key" if kind == "inline" else "verification-ed25519-file", value)
    elif no_sign_verify:
        repo.config.set(group, "sign-verify", False)
    for key, value in settings:
        repo.config.set(group, key, value)
    repo.save_config()


def delete_remote(repo: Repo, name: str, *, if_exists: bool = False) -> None:
    group = _group(name)
    if not repo.config.has_group(group):
        if if_exists:
            return
        raise NotFoundError(f'Remote "{name}" not found')
    repo.config.remove(group)
    repo.save_config()
    keyring_path(repo, name).unlink(missing_ok=True)  # its trusted keys go with it, as in ostree


def list_remotes(repo: Repo) -> list[str]:
    return [g[len('remote "'):-1] for g in repo.config.groups if g.startswith('remote "') and g.endswith('"')]


def get_remote(repo: Repo, name: str) -> Remote:
    group = _group(name)
    if not repo.config.has_group(group):
        raise NotFoundError(f'Remote "{name}" not found')
    url = repo.config.get(group, "url") or ""
    keys: list[bytes] = []
    inline = repo.config.get(group, "verification-ed25519-key")
    key_file = repo.config.get(group, "verification-ed25519-file")
    if inline:
        keys += public_keys(f"inline:{inline}")
    if key_file:
        keys += public_keys(f"file:{key_file}")
    return Remote(name, url, repo.config.get_bool(group, "gpg-verify", True), keyring_path(repo, name),
                  repo.config.get_bool(group, "sign-verify", False),
                  repo.config.get_bool(group, "sign-verify-summary", False), tuple(keys),
                  tuple(repo.config.get_list(group, "branches")),
                  repo.config.get_number(group, "timeout", 30, low=0.1, high=86400),
                  repo.config.get(group, "contenturl") or None)


def fetch_settings(repo: Repo, name: str) -> FetchSettings:
    """The transport keys of a remote, as ostree reads them (tls-*, proxy, http2, network retries)."""
    from strata.image.fetcher import FetchSettings
    group = _group(name)
    config = repo.config
    return FetchSettings(
        timeout=config.get_number(group, "timeout", 30, low=0.1, high=86400),
        tls_ca_path=config.get(group, "tls-ca-path") or None,
        tls_client_cert_path=config.get(group, "tls-client-cert-path") or None,
        tls_client_key_path=config.get(group, "tls-client-key-path") or None,
        tls_permissive=config.get_bool(group, "tls-permissive", False),
        proxy=config.get(group, "proxy") or None,
        http2=config.get_bool(group, "http2", True))
