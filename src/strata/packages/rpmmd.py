"""rpm-md repositories: yum .repo files, repomd.xml with its primary/filelists metadata, package downloads.

Everything fetched is checked against the checksum that names it before it is used or cached."""

from __future__ import annotations

import configparser
import hashlib
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from strata.errors import CorruptionError, InvalidInputError, NotFoundError, StrataError
from strata.image.fsutil import atomic_write

Log = Callable[[str], None]
REPO_NS = "{http://linux.duke.edu/metadata/repo}"
_TIMEOUT = 60
_CHUNK = 1 << 20


@dataclass
class RepoConfig:
    id: str
    name: str
    baseurl: str
    enabled: bool = True
    gpgcheck: bool = False
    gpgkey: list[str] = field(default_factory=list)
    metadata_expire: int = 48 * 3600  # seconds

    @property
    def is_local(self) -> bool:
        return self.baseurl.startswith("file://") or self.baseurl.startswith("/")


def parse_repo_files(directory: Path, variables: dict[str, str] | None = None) -> list[RepoConfig]:
    """Every repository defined in *.repo files of directory, in file then section order."""
    repos: list[RepoConfig] = []
    for path in sorted(directory.glob("*.repo")):
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        try:
            parser.read_string(path.read_text(), source=str(path))
        except configparser.Error as exc:
            raise InvalidInputError(f"{path.name}: {str(exc).splitlines()[0]}") from None
        for section in parser.sections():
            repos.append(_repo_from_section(section, parser[section], path, variables or {}))
    return repos


def _repo_from_section(section: str, values: configparser.SectionProxy, path: Path,
                       variables: dict[str, str]) -> RepoConfig:
    baseurl = _substitute(values.get("baseurl", "").split()[0] if values.get("baseurl") else "", variables)
    if not baseurl:
        raise InvalidInputError(f"{path.name}: repository '{section}' has no baseurl")
    return RepoConfig(
        id=section, name=values.get("name", section), baseurl=baseurl,
        enabled=_bool(values.get("enabled", "1")), gpgcheck=_bool(values.get("gpgcheck", "0")),
        gpgkey=[_substitute(k, variables) for k in values.get("gpgkey", "").split()],
        metadata_expire=_duration(values.get("metadata_expire", "172800")))


def _substitute(text: str, variables: dict[str, str]) -> str:
    for key, value in variables.items():
        text = text.replace(f"${key}", value).replace(f"${{{key}}}", value)
    return text


def _bool(text: str) -> bool:
    return text.strip().lower() in ("1", "yes", "true", "on")


def _duration(text: str) -> int:
    text = text.strip().lower()
    if text in ("never", "-1"):
        return -1
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text or 0)


@dataclass
class RepoMetadata:
    """A repository whose metadata files are in the local cache and verified."""

    config: RepoConfig
    revision: str
    timestamp: int  # newest 'timestamp' of the data entries: the repo's generation time
    files: dict[str, Path]  # data type (primary, filelists, ...) -> cached file
    repomd: Path
    cached: bool


def _url_join(base: str, relative: str) -> str:
    return base.rstrip("/") + "/" + relative.lstrip("/")


def _open_url(url: str) -> tuple[object, int | None]:
    if url.startswith("/"):
        url = "file://" + url
    try:
        response = urllib.request.urlopen(url, timeout=_TIMEOUT)
    except urllib.error.HTTPError as exc:
        raise StrataError(f"cannot fetch {url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StrataError(f"cannot fetch {url}: {reason}") from None
    length = response.headers.get("Content-Length") if hasattr(response, "headers") else None
    return response, int(length) if length else None


def fetch_to(url: str, dest: Path, *, checksum: tuple[str, str] | None = None, size: int | None = None) -> None:
    """Download url to dest (atomically), verifying (algorithm, hex) when given."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    digest = hashlib.new(checksum[0]) if checksum else None
    response, _length = _open_url(url)
    written = 0
    try:
        with response as src, open(tmp, "wb") as out:  # type: ignore[attr-defined]
            while chunk := src.read(_CHUNK):
                out.write(chunk)
                written += len(chunk)
                if digest:
                    digest.update(chunk)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StrataError(f"cannot fetch {url}: {exc}") from None
    if size is not None and written != size:
        tmp.unlink(missing_ok=True)
        raise CorruptionError(f"{url}: expected {size} bytes, got {written}")
    if checksum and digest and digest.hexdigest() != checksum[1]:
        tmp.unlink(missing_ok=True)
        raise CorruptionError(f"{url}: checksum mismatch (expected {checksum[0]}:{checksum[1]}, "
                              f"got {digest.hexdigest()})")
    os.replace(tmp, dest)


def _algorithm(name: str) -> str:
    algo = name.lower().replace("-", "")
    if algo == "sha":
        algo = "sha1"
    if algo not in hashlib.algorithms_available:
        raise CorruptionError(f"unsupported checksum type {name}")
    return algo


def load_metadata(config: RepoConfig, cachedir: Path, log: Log, *, force: bool = False) -> RepoMetadata:
    """Fetch (or reuse) repomd.xml and the primary and filelists data of a repository."""
    repo_cache = cachedir / config.id
    repomd_path = repo_cache / "repomd.xml"
    fresh = (not force and repomd_path.exists() and config.metadata_expire != 0
             and (config.metadata_expire < 0 or time.time() - repomd_path.stat().st_mtime < config.metadata_expire))
    if not fresh or config.is_local:
        tmp = repo_cache / "repomd.xml.new"
        fetch_to(_url_join(config.baseurl, "repodata/repomd.xml"), tmp)
        old = repomd_path.read_bytes() if repomd_path.exists() else None
        new = tmp.read_bytes()
        fresh = old == new
        atomic_write(repomd_path, new, fsync=False)
        tmp.unlink()
    revision, timestamp, data = _parse_repomd(repomd_path)
    files: dict[str, Path] = {}
    for kind in ("primary", "filelists"):
        if kind not in data:
            if kind == "primary":
                raise CorruptionError(f"repository '{config.id}' has no primary metadata")
            continue
        href, algo, hexsum, size = data[kind]
        target = repo_cache / Path(href).name
        if not (target.exists() and _file_digest(target, algo) == hexsum):
            fetch_to(_url_join(config.baseurl, href), target, checksum=(algo, hexsum), size=size)
            fresh = False
        files[kind] = target
    _drop_stale(repo_cache, {repomd_path.name, *(p.name for p in files.values())})
    return RepoMetadata(config, revision, timestamp, files, repomd_path, cached=fresh)


def _parse_repomd(path: Path) -> tuple[str, int, dict[str, tuple[str, str, str, int | None]]]:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise CorruptionError(f"malformed repomd.xml: {exc}") from None
    revision = (root.findtext(f"{REPO_NS}revision") or "").strip()
    data: dict[str, tuple[str, str, str, int | None]] = {}
    newest = 0
    for entry in root.findall(f"{REPO_NS}data"):
        kind = entry.get("type", "")
        location = entry.find(f"{REPO_NS}location")
        checksum = entry.find(f"{REPO_NS}checksum")
        if location is None or checksum is None or not location.get("href"):
            continue
        size_text = entry.findtext(f"{REPO_NS}size")
        data[kind] = (location.get("href", ""), _algorithm(checksum.get("type", "sha256")),
                      (checksum.text or "").strip(), int(size_text) if size_text else None)
        stamp = entry.findtext(f"{REPO_NS}timestamp")
        if stamp:
            newest = max(newest, int(float(stamp)))
    return revision, newest, data


def _file_digest(path: Path, algo: str) -> str:
    digest = hashlib.new(algo)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _drop_stale(directory: Path, keep: set[str]) -> None:
    for entry in directory.iterdir():
        if entry.name not in keep and entry.is_file() and not entry.name.endswith(".solv"):
            entry.unlink()


def download_package(config: RepoConfig, location: str, checksum: tuple[str, str], dest: Path,
                     size: int | None = None) -> Path:
    """Fetch one package into dest (a directory), verified against its repodata checksum."""
    target = dest / Path(location).name
    if target.exists() and _file_digest(target, checksum[0]) == checksum[1]:
        return target
    try:
        fetch_to(_url_join(config.baseurl, location), target, checksum=checksum, size=size)
    except CorruptionError as exc:
        raise CorruptionError(f"package {Path(location).name} from '{config.id}': {exc}") from None
    return target


def select_repos(all_repos: list[RepoConfig], wanted: list[str] | None) -> list[RepoConfig]:
    """The treefile's `repos` (any of them, enabled or not), or every enabled repository."""
    if wanted is None:
        return [r for r in all_repos if r.enabled]
    by_id = {r.id: r for r in all_repos}
    missing = [r for r in wanted if r not in by_id]
    if missing:
        raise NotFoundError(f"repository not found: {', '.join(missing)}")
    return [by_id[r] for r in wanted]


def clear_cache(cachedir: Path) -> None:
    shutil.rmtree(cachedir, ignore_errors=True)
