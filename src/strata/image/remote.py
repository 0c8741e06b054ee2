"""Remotes, kept in the repository config as `[remote "NAME"]` groups the way ostree keeps them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from strata.errors import InvalidInputError, NotFoundError
from strata.image.gpg import TrustedKeys, import_keys
from strata.image.repo import Repo, validate_remote_name
from strata.image.sign import Verifier, check_engine, parse_public, verifiers_from_config

if TYPE_CHECKING:
    from strata.image.fetcher import FetchSettings

_MAX_PARENTS = 16


@dataclass(frozen=True)
class Remote:
    name: str
    url: str
    gpg_verify: bool
    gpg_keyring: TrustedKeys
    branches: tuple[str, ...]
    timeout: float = 30.0
    content_url: str | None = None  # `contenturl`: where objects come from, when not from url
    options: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)  # the group's keys

    @property
    def sign_verify(self) -> bool:
        """Commits must carry a signature of ostree's sign API (`sign-verify` is true or names engines)."""
        return _verification_on(self.options.get("sign-verify"))

    @property
    def sign_verify_summary(self) -> bool:
        return _verification_on(self.options.get("sign-verify-summary"))

    @property
    def gpg_verify_summary(self) -> bool:
        return self.options.get("gpg-verify-summary", "false").strip().lower() in ("true", "1", "yes")

    @cached_property
    def commit_verifiers(self) -> tuple[Verifier, ...]:
        """The engines and keys commits are checked with; a broken key configuration raises here, when a
        pull needs it, not when the remote is only listed."""
        return verifiers_from_config(self.options.get("sign-verify"), self.options.get)

    @cached_property
    def summary_verifiers(self) -> tuple[Verifier, ...]:
        return verifiers_from_config(self.options.get("sign-verify-summary"), self.options.get)

    @property
    def keys(self) -> tuple[Verifier, ...]:
        """commit_verifiers, under the name pull callers use with sign.verify."""
        return self.commit_verifiers


def _verification_on(value: str | None) -> bool:
    return value is not None and value.strip() not in ("", "false", "0")


def _group(name: str) -> str:
    return f'remote "{name}"'


def keyring_path(repo: Repo, name: str) -> Path:
    return repo.path / f"{name}.trustedkeys.gpg"


def find_keyring(repo: Repo, name: str) -> Path | None:
    """The remote's keyring in repo or, failing that, in its nearest core.parent repository that has one."""
    current: Repo | None = repo
    for _ in range(_MAX_PARENTS):
        if current is None:
            break
        path = keyring_path(current, name)
        if path.is_file():
            return path
        parent = current.config.get("core", "parent")
        current = Repo.open(Path(parent)) if parent else None
    return None


def add_remote(repo: Repo, name: str, url: str | None, *, branches: list[str], sign_verify: str | Sequence[str] | None,
               no_sign_verify: bool, settings: list[tuple[str, str]], if_not_exists: bool = False,
               gpg_import: Path | None = None) -> None:
    validate_remote_name(name)
    group = _group(name)
    if repo.config.has_group(group):
        if if_not_exists:
            return
        raise InvalidInputError(f"Remote configuration for \"{name}\" already exists")
    specs = [sign_verify] if isinstance(sign_verify, str) else list(sign_verify or [])
    if specs and no_sign_verify:
        raise InvalidInputError("Cannot specify both --sign-verify and --no-sign-verify")
    key_options = [verification_option(spec) for spec in specs]  # all checked before anything is written
    if url is not None:  # a remote of a custom backend may have none
        repo.config.set(group, "url", url)
    if branches:
        repo.config.set(group, "branches", branches)
    repo.config.set(group, "gpg-verify", gpg_import is not None)
    if gpg_import is not None:
        import_keys(keyring_path(repo, name), gpg_import)
    engines = list(dict.fromkeys(engine for engine, _key, _value in key_options))
    for _engine, key, value in key_options:
        repo.config.set(group, key, value)
    if engines:
        repo.config.set(group, "sign-verify", engines[0] if len(engines) == 1 else engines)
    elif no_sign_verify:
        repo.config.set(group, "sign-verify", False)
    for key, value in settings:
        repo.config.set(group, key, value)
    repo.save_config()


def verification_option(spec: str) -> tuple[str, str, str]:
    """--sign-verify=ENGINE=inline:KEY or ENGINE=file:PATH as (engine, config key, value)."""
    engine, sep, reference = spec.partition("=")
    if not sep:
        raise InvalidInputError(f"Failed to parse KEYTYPE=[inline|file]:DATA in {spec}")
    check_engine(engine)
    kind, _, value = reference.partition(":")
    if kind not in ("inline", "file"):
        raise InvalidInputError(f"Invalid key reference {kind}, expected inline|file")
    if kind == "inline" and engine == "ed25519":
        parse_public(value)
    return engine, f"verification-{engine}-{'key' if kind == 'inline' else 'file'}", value


def delete_remote(repo: Repo, name: str, *, if_exists: bool = False, keep_keys: bool = False) -> None:
    """Remove the remote's configuration and, unless keep_keys (a remote about to be replaced), its keyring."""
    group = _group(name)
    if not repo.config.has_group(group):
        if if_exists:
            return
        raise NotFoundError(f'Remote "{name}" not found')
    repo.config.remove(group)
    repo.save_config()
    if not keep_keys:
        keyring_path(repo, name).unlink(missing_ok=True)  # its trusted keys go with it, as in ostree


def list_remotes(repo: Repo) -> list[str]:
    return [g[len('remote "'):-1] for g in repo.config.groups if g.startswith('remote "') and g.endswith('"')]


def get_remote(repo: Repo, name: str) -> Remote:
    group = _group(name)
    if not repo.config.has_group(group):
        raise NotFoundError(f'Remote "{name}" not found')
    config = repo.config
    options = dict(config.groups[group])
    return Remote(name, config.get(group, "url") or "", config.get_bool(group, "gpg-verify", True),
                  TrustedKeys(find_keyring(repo, name), options.get("gpgkeypath")),
                  tuple(config.get_list(group, "branches")),
                  config.get_number(group, "timeout", 30, low=0.1, high=86400),
                  config.get(group, "contenturl") or None, options)


def fetch_summary(repo: Repo, name: str, cache_dir: Path | None = None) -> tuple[bytes | None, bytes | None]:
    """The remote's summary and summary.sig as its server has them now (or as cached in cache_dir, by default
    REPO/tmp/cache, while the signature is unchanged), verified as a pull verifies them."""
    from strata.image.pull import PullOptions, remote_fetcher
    from strata.image.summary_fetch import fetch_summary as fetch_verified
    remote = get_remote(repo, name)
    return fetch_verified(remote_fetcher(repo, remote, PullOptions()), remote, cache_dir or repo.path / "tmp" / "cache")


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
