"""rpm-md repositories: yum .repo files, repomd.xml with its primary/filelists metadata, package downloads.

Everything fetched is checked against the checksum that names it before it is used or cached."""

from __future__ import annotations

import configparser
import hashlib
import os
import re
import shutil
import stat
import tempfile
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from strata.errors import CorruptionError, InvalidInputError, NotFoundError, StrataError
from strata.image.fsutil import atomic_write
from strata.packages.signatures import check_key_url, verify_detached
from strata.packages.text import shown, summarize

Log = Callable[[str], None]
REPO_NS = "{http://linux.duke.edu/metadata/repo}"
_TIMEOUT = 60
_CHUNK = 1 << 20
MAX_REPO_FILE_SIZE = 1 << 20
MAX_REPOMD_SIZE = 16 << 20
MAX_METADATA_SIZE = 1 << 30  # primary or filelists whose repomd.xml entry gives no size
MAX_KEY_SIZE = 1 << 20  # an armored key file or a detached signature
REPOMD_SIGNATURE = "repomd.xml.asc"
_CHECKSUM_TYPES = frozenset({"md5", "sha1", "sha224", "sha256", "sha384", "sha512"})
REPO_ID = re.compile(r"[A-Za-z0-9_.:-]+")


@dataclass
class RepoConfig:
    id: str
    name: str
    baseurl: str
    enabled: bool = True
    gpgcheck: bool = False
    repo_gpgcheck: bool = False
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
            parser.read_string(_read_text(path), source=str(path))
        except configparser.Error as exc:
            raise InvalidInputError(f"{path}: {_syntax_error(exc)}") from None
        for section in parser.sections():
            _check_repo_id(section, path)
            repos.append(_repo_from_section(section, parser[section], path, variables or {}))
    return repos


def _read_text(path: Path) -> str:
    """A .repo file's text: a regular file of bounded size, reached through no symlink out of its directory
    (a package could ship one pointing at /dev/zero or /etc/shadow)."""
    if path.is_symlink() and not path.resolve().is_relative_to(path.parent.resolve()):
        raise InvalidInputError(f"{path}: a symlink out of {path.parent}")
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(descriptor, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise InvalidInputError(f"{path}: not a regular file")
        data = f.read(MAX_REPO_FILE_SIZE + 1)
    if len(data) > MAX_REPO_FILE_SIZE:
        raise InvalidInputError(f"{path}: larger than {MAX_REPO_FILE_SIZE:,} bytes, not a .repo file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{path}: not a text file (invalid UTF-8 at byte {exc.start})") from None


def _syntax_error(exc: configparser.Error) -> str:
    """The line and the kind of error, never the line's text (which could come from any file)."""
    if isinstance(exc, configparser.MissingSectionHeaderError):
        return f"line {exc.lineno}: no [section] before the first option"
    if isinstance(exc, configparser.ParsingError) and exc.errors:
        return f"line {exc.errors[0][0]}: not a [section] or key=value line"
    return shown(str(exc).splitlines()[0])


def _check_repo_id(section: str, path: Path) -> None:
    """dnf's rule: letters, digits and -_.: only. The id also names the repository's cache directory."""
    if not REPO_ID.fullmatch(section) or section in (".", ".."):
        raise InvalidInputError(f"{path}: invalid repository id [{shown(section)}] "
                                "(allowed: letters, digits and -_.:)")


def _repo_from_section(section: str, values: configparser.SectionProxy, path: Path,
                       variables: dict[str, str]) -> RepoConfig:
    baseurl = _substitute(values.get("baseurl", "").split()[0] if values.get("baseurl") else "", variables)
    if not baseurl:
        raise InvalidInputError(f"{path.name}: repository '{section}' has no baseurl")
    where = f"{path.name}: repository '{section}'"
    return RepoConfig(
        id=section, name=values.get("name", section), baseurl=baseurl,
        enabled=_bool(values, "enabled", True, where), gpgcheck=_bool(values, "gpgcheck", False, where),
        repo_gpgcheck=_bool(values, "repo_gpgcheck", False, where),
        gpgkey=[_substitute(k, variables) for k in values.get("gpgkey", "").replace(",", " ").split()],
        metadata_expire=_duration(values, "metadata_expire", 48 * 3600, where))


def _substitute(text: str, variables: dict[str, str]) -> str:
    for key, value in sorted(variables.items(), key=lambda item: -len(item[0])):  # $releasever_major first
        text = text.replace(f"${key}", value).replace(f"${{{key}}}", value)
    return text


_TRUE = frozenset({"1", "yes", "true", "on"})
_FALSE = frozenset({"0", "no", "false", "off"})


def _bool(values: configparser.SectionProxy, key: str, default: bool, where: str) -> bool:
    text = values.get(key)
    if text is None or not text.strip():
        return default
    word = text.strip().lower()
    if word in _TRUE | _FALSE:
        return word in _TRUE
    raise InvalidInputError(f"{where}: {key}={shown(text.strip())} is not a boolean (1/0, yes/no, true/false, on/off)")


_DURATION = re.compile(r"(\d+(?:\.\d*)?)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(values: configparser.SectionProxy, key: str, default: int, where: str) -> int:
    """Seconds, as dnf reads them: a number with an optional s/m/h/d unit, or -1/never for no expiry."""
    text = values.get(key)
    if text is None or not text.strip():
        return default
    word = text.strip().lower()
    if word in ("never", "-1"):
        return -1
    match = _DURATION.fullmatch(word)
    if match is None:
        raise InvalidInputError(f"{where}: {key}={shown(text.strip())} is not a duration "
                                "(seconds, or a number with s/m/h/d, or never)")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


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
    if url.startswith("file:"):  # a local repository: no need for urllib's machinery (slow to import)
        return _open_file_url(url)
    import urllib.error
    import urllib.request
    try:
        response = urllib.request.urlopen(url, timeout=_TIMEOUT)
    except urllib.error.HTTPError as exc:
        raise StrataError(f"cannot fetch {url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StrataError(f"cannot fetch {url}: {reason}") from None
    length = response.headers.get("Content-Length") if hasattr(response, "headers") else None
    return response, int(length) if length else None


def _open_file_url(url: str) -> tuple[object, int | None]:
    parsed = urllib.parse.urlsplit(url)
    if parsed.netloc not in ("", "localhost"):
        raise StrataError(f"cannot fetch {url}: file:// URLs on other hosts are not supported")
    try:
        handle = open(urllib.parse.unquote(parsed.path), "rb")  # noqa: SIM115 (the caller closes it)
        return handle, os.fstat(handle.fileno()).st_size
    except OSError as exc:
        raise StrataError(f"cannot fetch {url}: {exc}") from None


def fetch_to(url: str, dest: Path, *, checksum: tuple[str, str] | None = None, size: int | None = None,
             limit: int | None = None) -> None:
    """Download url to dest (atomically), verifying (algorithm, hex) when given. The transfer stops as soon as
    it passes the expected size or the limit, so a server cannot fill the disk."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    digest = hashlib.new(checksum[0]) if checksum else None
    most = size if size is not None else limit
    response, _length = _open_url(url)
    written = 0
    try:
        with response as src, open(tmp, "wb") as out:  # type: ignore[attr-defined]
            while chunk := src.read(_CHUNK):
                out.write(chunk)
                written += len(chunk)
                if most is not None and written > most:
                    break
                if digest:
                    digest.update(chunk)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StrataError(f"cannot fetch {url}: {exc}") from None
    if size is not None and written != size:
        tmp.unlink(missing_ok=True)
        raise CorruptionError(f"{url}: expected {size} bytes, got {'more' if written > size else written}")
    if limit is not None and written > limit:
        tmp.unlink(missing_ok=True)
        raise CorruptionError(f"{url}: larger than {limit:,} bytes")
    if checksum and digest and digest.hexdigest() != checksum[1]:
        tmp.unlink(missing_ok=True)
        raise CorruptionError(f"{url}: checksum mismatch (expected {checksum[0]}:{checksum[1]}, "
                              f"got {digest.hexdigest()})")
    os.replace(tmp, dest)


def _algorithm(name: str) -> str:
    algo = name.lower().replace("-", "")
    if algo == "sha":
        algo = "sha1"
    if algo not in _CHECKSUM_TYPES:
        raise CorruptionError(f"unsupported checksum type {shown(name)}")
    return algo


def load_metadata(config: RepoConfig, cachedir: Path, log: Log, *, force: bool = False,
                  cache_only: bool = False) -> RepoMetadata:
    """Fetch (or reuse) repomd.xml and the primary and filelists data of a repository; with cache_only,
    only what the cache holds (nothing is fetched, however old)."""
    repo_cache = cache_path(cachedir, config.id, "repository id")
    repomd_path = repo_cache / "repomd.xml"
    if cache_only:
        return _cached_metadata(config, repo_cache, repomd_path)
    fresh = (not force and repomd_path.exists() and config.metadata_expire != 0
             and (config.metadata_expire < 0 or time.time() - repomd_path.stat().st_mtime < config.metadata_expire))
    if not fresh or config.is_local:
        fresh = _refresh_repomd(config, repomd_path)
    elif config.repo_gpgcheck:
        _verify_repomd(config, repomd_path, repo_cache / REPOMD_SIGNATURE)
    revision, timestamp, data = _parse_repomd(repomd_path)
    files: dict[str, Path] = {}
    for kind in ("primary", "filelists"):
        if kind not in data:
            if kind == "primary":
                raise CorruptionError(f"repository '{config.id}' has no primary metadata")
            continue
        href, algo, hexsum, size = data[kind]
        target = cache_path(repo_cache, href.rsplit("/", 1)[-1], f"repository '{config.id}' metadata file")
        if target.name in (repomd_path.name, f"{repomd_path.name}.new", REPOMD_SIGNATURE):
            raise CorruptionError(f"repository '{config.id}': metadata file named {target.name}")
        if not (target.exists() and _file_digest(target, algo) == hexsum):
            fetch_to(_url_join(config.baseurl, href), target, checksum=(algo, hexsum), size=size,
                     limit=MAX_METADATA_SIZE)
            fresh = False
        files[kind] = target
    _drop_stale(repo_cache, {repomd_path.name, REPOMD_SIGNATURE, *(p.name for p in files.values())})
    return RepoMetadata(config, revision, timestamp, files, repomd_path, cached=fresh)


def _cached_metadata(config: RepoConfig, repo_cache: Path, repomd_path: Path) -> RepoMetadata:
    if not repomd_path.exists():
        raise NotFoundError(f"repository '{config.id}': no cached metadata (cache only)")
    if config.repo_gpgcheck:
        _verify_repomd(config, repomd_path, repo_cache / REPOMD_SIGNATURE)
    revision, timestamp, data = _parse_repomd(repomd_path)
    files: dict[str, Path] = {}
    for kind in ("primary", "filelists"):
        if kind not in data:
            continue
        href, algo, hexsum, _size = data[kind]
        target = cache_path(repo_cache, href.rsplit("/", 1)[-1], f"repository '{config.id}' metadata file")
        if not (target.exists() and _file_digest(target, algo) == hexsum):
            raise NotFoundError(f"repository '{config.id}': cached {kind} metadata missing (cache only)")
        files[kind] = target
    if "primary" not in files:
        raise CorruptionError(f"repository '{config.id}' has no primary metadata")
    return RepoMetadata(config, revision, timestamp, files, repomd_path, cached=True)


def _refresh_repomd(config: RepoConfig, repomd_path: Path) -> bool:
    """Fetch repomd.xml (and, with repo_gpgcheck, its signature, verified before either is kept);
    True when it did not change."""
    tmp = repomd_path.with_name(f"{repomd_path.name}.new")
    fetch_to(_url_join(config.baseurl, "repodata/repomd.xml"), tmp, limit=MAX_REPOMD_SIZE)
    signature = repomd_path.with_name(REPOMD_SIGNATURE)
    try:
        if config.repo_gpgcheck:
            tmp_signature = signature.with_name(f"{REPOMD_SIGNATURE}.new")
            try:
                fetch_to(_url_join(config.baseurl, f"repodata/{REPOMD_SIGNATURE}"), tmp_signature,
                         limit=MAX_KEY_SIZE)
            except StrataError as exc:
                raise CorruptionError(f"repository '{config.id}': repomd.xml is not signed (repo_gpgcheck=1; "
                                      f"{REPOMD_SIGNATURE}: {exc})") from None
            _verify_repomd(config, tmp, tmp_signature)
            os.replace(tmp_signature, signature)
        new = tmp.read_bytes()
        unchanged = repomd_path.exists() and repomd_path.read_bytes() == new
        atomic_write(repomd_path, new, fsync=False)
    finally:
        tmp.unlink(missing_ok=True)
    return unchanged


def _verify_repomd(config: RepoConfig, repomd: Path, signature: Path) -> None:
    if not signature.exists():
        raise CorruptionError(f"repository '{config.id}': repomd.xml is not signed (repo_gpgcheck=1)")
    with tempfile.TemporaryDirectory(prefix="strata-repomd-") as tmp:
        keys = fetch_keys(config, Path(tmp))
        verify_detached(repomd, signature, keys, Path(tmp), f"repository '{config.id}': repomd.xml")


def fetch_keys(config: RepoConfig, directory: Path) -> list[Path]:
    """The repository's gpgkey= keys, fetched into directory through the same downloader as its data."""
    paths = []
    for index, url in enumerate(config.gpgkey):
        target = directory / f"key{index}.asc"
        fetch_to(check_key_url(url, config.id), target, limit=MAX_KEY_SIZE)
        paths.append(target)
    return paths


def cache_path(directory: Path, name: str, what: str) -> Path:
    """directory/name for a name taken from a .repo file or repository metadata: one plain file name."""
    if name in ("", ".", "..") or "/" in name or "\0" in name or len(name.encode()) > 255:
        raise CorruptionError(f"{what}: unusable file name {shown(name)!r}")
    return directory / name


def _parse_repomd(path: Path) -> tuple[str, int, dict[str, tuple[str, str, str, int | None]]]:
    try:
        return parse_repomd(path.read_bytes())
    except CorruptionError as exc:
        raise CorruptionError(f"{path.parent.name}: malformed repomd.xml: {exc}") from None


def parse_repomd(text: bytes) -> tuple[str, int, dict[str, tuple[str, str, str, int | None]]]:
    """(revision, newest timestamp, data type -> (href, algorithm, hex digest, size)) of a repomd.xml."""
    try:
        root = ET.fromstring(text)
    except (ET.ParseError, LookupError, ValueError) as exc:  # LookupError: an unknown declared encoding
        raise CorruptionError(shown(str(exc))) from None
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
                      (checksum.text or "").strip(), _number(size_text, "size") if size_text else None)
        stamp = entry.findtext(f"{REPO_NS}timestamp")
        if stamp:
            newest = max(newest, _number(stamp, "timestamp"))
    return revision, newest, data


def _number(text: str, what: str) -> int:
    try:
        value = int(float(text.strip()))
    except (ValueError, OverflowError):
        raise CorruptionError(f"{what} is not a number: {shown(text)}") from None
    if not 0 <= value < 1 << 63:
        raise CorruptionError(f"{what} out of range: {shown(text)}")
    return value


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
    target = cache_path(dest, location.rsplit("/", 1)[-1], f"repository '{config.id}' package file")
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
        raise NotFoundError(f"repository not found: {summarize(missing)}")
    return [by_id[r] for r in wanted]


def clear_cache(cachedir: Path) -> None:
    shutil.rmtree(cachedir, ignore_errors=True)
