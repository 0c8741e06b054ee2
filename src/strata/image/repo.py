"""The OSTree-format repository: layout, config, objects in each mode, refs and locking."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import os
import re
import secrets
import shutil
import stat
import threading
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import BinaryIO

from strata.errors import CorruptionError, InvalidInputError, MissingFileObjectError, NotFoundError, StrataError
from strata.image import objects as O
from strata.image.fsutil import apply_xattrs, atomic_write, flock, fsync_file, read_xattrs, syncfs
from strata.image.keyfile import KeyFile
from strata.image.objects import Commit, DirMeta, DirTree, FileMeta, ObjectType

OSTREEMETA_XATTR = "user.ostreemeta"
_REF_FRAGMENT = r"[\w\d][-._\w\d]*"
_REF_RE = re.compile(rf"{_REF_FRAGMENT}(/{_REF_FRAGMENT})*", re.ASCII)
_REMOTE_RE = re.compile(_REF_FRAGMENT, re.ASCII)
_STREAM_THRESHOLD = 16 << 20
_CHUNK = 1 << 20


class RepoMode(Enum):
    BARE = "bare"
    BARE_USER = "bare-user"
    BARE_USER_ONLY = "bare-user-only"
    ARCHIVE = "archive-z2"

    @classmethod
    def parse(cls, text: str) -> RepoMode:
        if text == "archive":
            return cls.ARCHIVE
        for mode in cls:
            if mode.value == text:
                return mode
        raise InvalidInputError(f"unsupported repository mode: {text}")

    @property
    def summary_name(self) -> str:
        return self.value


def validate_ref(ref: str) -> None:
    if not _REF_RE.fullmatch(ref):
        raise InvalidInputError(f"invalid ref name: {ref!r}")


def validate_remote_name(name: str) -> None:
    if not _REMOTE_RE.fullmatch(name):
        raise InvalidInputError(f"invalid remote name: {name!r}")


_PARSED_COMMITS_KEPT = 64


class Repo:
    """An open repository. Objects are written to tmp/ and linked into objects/ when complete."""

    def __init__(self, path: Path, config: KeyFile) -> None:
        self.path = path
        self.config = config
        mode_text = config.get("core", "mode", "bare") or "bare"
        self.mode = RepoMode.parse(mode_text)
        self.is_archive = self.mode is RepoMode.ARCHIVE
        self.zlib_level = int(config.get_number("archive", "zlib-level", 6, low=0, high=9))
        self.fsync = config.get_bool("core", "fsync", True)
        self.per_object_fsync = config.get_bool("core", "per-object-fsync", False)
        self._file_ext = "filez" if self.is_archive else "file"
        self._objects_dir = str(path / "objects")
        self._devino: dict[tuple[int, int], str] | None = None
        self._devino_lock = threading.Lock()
        self._prefix_dirs: set[str] = set()  # objects/XX known to exist
        self._tmpfile_works = hasattr(os, "O_TMPFILE")
        self._parsed_commits: dict[str, tuple[bytes, Commit]] = {}  # checksum -> (bytes, parse), see load_commit

    # ------------------------------------------------------------ lifecycle

    @classmethod
    def init(cls, path: str | os.PathLike[str], mode: RepoMode, *, collection_id: str | None = None) -> Repo:
        root = Path(path)
        if (root / "config").exists():
            repo = cls.open(root)
            if repo.mode is not mode:
                raise StrataError(f"{root} is already a repository of mode {repo.mode.value}")
            return repo
        root.mkdir(parents=True, exist_ok=True)
        for sub in ("objects", "refs/heads", "refs/remotes", "refs/mirrors", "state", "tmp", "extensions"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        config = KeyFile()
        config.set("core", "repo_version", "1")
        config.set("core", "mode", mode.value)
        if collection_id:
            config.set("core", "collection-id", collection_id)
        if mode is RepoMode.BARE_USER:
            _probe_user_xattrs(root / "tmp")
        config.save(root / "config")
        return cls(root, config)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Repo:
        root = Path(path)
        config_path = root / "config"
        if not config_path.is_file() or not (root / "objects").is_dir():
            raise NotFoundError(f"{root} is not an OSTree repository")
        config = KeyFile.load(config_path)
        if config.get("core", "repo_version") != "1":
            raise StrataError(f"{root}: unsupported repo_version")
        if config.get_bool("core", "archive", False):
            raise StrataError(f"{root}: the pre-2012 archive format is not supported")
        return cls(root, config)

    def save_config(self) -> None:
        self.config.save(self.path / "config", fsync=self.fsync)

    @contextlib.contextmanager
    def lock(self, *, exclusive: bool = False) -> Iterator[None]:
        """Shared for writers of objects and refs, exclusive for prune and similar."""
        self.check_writable()
        with flock(self.path / ".lock", exclusive=exclusive):
            yield

    def check_writable(self) -> None:
        if not os.access(self.path / "objects", os.W_OK) or not os.access(self.path / "tmp", os.W_OK):
            raise StrataError(f"repository {self.path} is read-only")

    @property
    def tmp_dir(self) -> Path:
        return self.path / "tmp"

    def _tmp_name(self, prefix: str = "obj") -> Path:
        return self.tmp_dir / f"{prefix}-{secrets.token_hex(8)}"

    # ------------------------------------------------------------ object paths

    def object_path(self, checksum: str, objtype: ObjectType) -> Path:
        return self.path / O.object_relpath(checksum, objtype, self.is_archive)

    def file_object_path(self, checksum: str) -> str:
        """object_path for content objects as a plain string (the hot path of checkouts)."""
        return f"{self._objects_dir}/{checksum[:2]}/{checksum[2:]}.{self._file_ext}"

    def has_object(self, checksum: str, objtype: ObjectType) -> bool:
        if objtype is ObjectType.FILE:
            return os.path.lexists(self.file_object_path(checksum))
        return os.path.lexists(self.object_path(checksum, objtype))

    def _ensure_prefix_dir(self, prefix: str) -> None:
        if prefix not in self._prefix_dirs:
            with contextlib.suppress(FileExistsError):
                os.mkdir(f"{self._objects_dir}/{prefix}")
            self._prefix_dirs.add(prefix)

    def list_objects(self, objtype: ObjectType | None = None) -> Iterator[tuple[str, ObjectType]]:
        exts = {t.value: t for t in ObjectType}
        if self.is_archive:
            exts["filez"] = ObjectType.FILE
            del exts["file"]
        objdir = self.path / "objects"
        for prefix in sorted(os.listdir(objdir)):
            if len(prefix) != 2:
                continue
            with os.scandir(objdir / prefix) as entries:
                for entry in entries:
                    rest, _, ext = entry.name.partition(".")
                    found = exts.get(ext)
                    if found is None or len(rest) != 62 or (objtype is not None and found is not objtype):
                        continue
                    yield prefix + rest, found

    # ------------------------------------------------------------ metadata objects

    def read_metadata(self, checksum: str, objtype: ObjectType, *, verify: bool = False) -> bytes:
        try:
            data = _read_regular_file(self.object_path(checksum, objtype), f"{objtype.value} object {checksum}")
        except FileNotFoundError:
            raise NotFoundError(f"{objtype.value} object {checksum} not found") from None
        if verify and objtype not in (ObjectType.COMMITMETA, ObjectType.TOMBSTONE_COMMIT):
            actual = hashlib.sha256(data).hexdigest()
            if actual != checksum:
                raise CorruptionError(f"corrupted {objtype.value} object {checksum} (actual {actual})")
        return data

    def load_commit(self, checksum: str, *, verify: bool = False) -> Commit:
        """The parsed commit. A transaction reads the same few commits dozens of times, and a parse costs
        milliseconds: the object is still read every time (so a deleted or changed file is noticed), and a
        parse is reused while the bytes are the ones it was made from. Callers get their own lists."""
        data = self.read_metadata(checksum, ObjectType.COMMIT, verify=verify)
        if verify:
            return Commit.parse(data, strict=True)
        cached = self._parsed_commits.get(checksum)
        if cached is None or cached[0] != data:
            if len(self._parsed_commits) >= _PARSED_COMMITS_KEPT:
                self._parsed_commits.pop(next(iter(self._parsed_commits)), None)
            cached = (data, Commit.parse(data, strict=False))
            self._parsed_commits[checksum] = cached
        parsed = cached[1]
        return dataclasses.replace(parsed, metadata=list(parsed.metadata), related=list(parsed.related))

    def load_dirtree(self, checksum: str, *, verify: bool = False) -> DirTree:
        return DirTree.parse(self.read_metadata(checksum, ObjectType.DIRTREE, verify=verify), strict=verify)

    def load_dirmeta(self, checksum: str, *, verify: bool = False) -> DirMeta:
        return DirMeta.parse(self.read_metadata(checksum, ObjectType.DIRMETA, verify=verify), strict=verify)

    def write_metadata(self, objtype: ObjectType, data: bytes, *, expected: str | None = None) -> str:
        checksum = hashlib.sha256(data).hexdigest()
        if expected is not None and checksum != expected:
            raise CorruptionError(f"{objtype.value} object {expected} has checksum {checksum}")
        if not self.has_object(checksum, objtype):
            self._publish_bytes(checksum, objtype, data)
        return checksum

    def write_detached_metadata(self, commit: str, data: bytes | None) -> None:
        """Replace (or with None remove) the .commitmeta of a commit."""
        path = self.object_path(commit, ObjectType.COMMITMETA)
        if data is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return
        path.parent.mkdir(exist_ok=True)
        atomic_write(path, data, fsync=self.fsync)

    def read_detached_metadata(self, commit: str) -> bytes | None:
        try:
            return _read_regular_file(self.object_path(commit, ObjectType.COMMITMETA),
                                      f"detached metadata of commit {commit}")
        except FileNotFoundError:
            return None

    def _publish_bytes(self, checksum: str, objtype: ObjectType, data: bytes) -> None:
        tmp = self._tmp_name()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            _write_all(fd, data)
            os.fchmod(fd, 0o644)
        finally:
            os.close(fd)
        self._link_into_store(tmp, checksum, objtype)

    def _link_into_store(self, tmp: Path, checksum: str, objtype: ObjectType) -> None:
        """Move a complete staged object into objects/, keeping an existing copy untouched."""
        final = self.object_path(checksum, objtype)
        try:
            if self.per_object_fsync:
                fsync_file(tmp)
            self._ensure_prefix_dir(checksum[:2])
            with contextlib.suppress(FileExistsError):
                os.link(tmp, final, follow_symlinks=False)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    # ------------------------------------------------------------ content objects

    def canonical_meta(self, meta: FileMeta) -> FileMeta:
        """What bare-user-only keeps of a file: its mode, without owner or xattrs; a regular file's mode may
        not carry setuid, setgid, sticky or world-write bits (ostree refuses those objects too)."""
        if self.mode is not RepoMode.BARE_USER_ONLY:
            return meta
        if meta.is_symlink:
            return FileMeta(0, 0, meta.mode, meta.symlink_target)
        invalid = meta.mode & 0o7777 & ~0o775
        if invalid:
            raise InvalidInputError(f"invalid mode 0{meta.mode:04o} with bits 0{invalid:04o} for a bare-user-only "
                                    f"repository")
        return FileMeta(0, 0, meta.mode)

    def canonical_dirmeta(self, meta: DirMeta) -> DirMeta:
        if self.mode is not RepoMode.BARE_USER_ONLY:
            return meta
        return DirMeta(0, 0, meta.mode & (stat.S_IFDIR | 0o755))

    def write_content(self, meta: FileMeta, content: bytes = b"", *, expected: str | None = None) -> str:
        """Store a regular file or symlink object held in memory; return its checksum."""
        meta = self.canonical_meta(meta)
        checksum = O.content_checksum(meta, content)
        if expected is not None and checksum != expected:
            raise CorruptionError(f"content object {expected} has checksum {checksum}")
        if self.has_object(checksum, ObjectType.FILE):
            return checksum
        if self._publish_unnamed(checksum, meta, content):
            return checksum
        tmp = self._tmp_name()
        self._stage_content(tmp, meta, content)
        self._link_into_store(tmp, checksum, ObjectType.FILE)
        return checksum

    def _publish_unnamed(self, checksum: str, meta: FileMeta, content: bytes) -> bool:
        """Write a content object as an unnamed file in tmp/ (O_TMPFILE) and link it into objects/: no
        temporary name to pick and unlink, metadata set through the descriptor. False where the filesystem
        has no O_TMPFILE, or for what is stored as a symlink."""
        mode = self.mode
        if not self._tmpfile_works or (meta.is_symlink and mode in (RepoMode.BARE, RepoMode.BARE_USER_ONLY)):
            return False
        try:
            fd = os.open(self.tmp_dir, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                self._tmpfile_works = False
                return False
            raise
        try:
            if mode is RepoMode.ARCHIVE:
                data = O.archive_header(meta, 0 if meta.is_symlink else len(content))
                _write_all(fd, data + (b"" if meta.is_symlink else O.archive_compress(content, self.zlib_level)))
                os.fchmod(fd, 0o644)
            elif mode is RepoMode.BARE_USER:
                _write_all(fd, meta.symlink_target.encode() + b"\0" if meta.is_symlink else content)
                os.setxattr(fd, OSTREEMETA_XATTR, O.encode_ostreemeta(meta))
                os.fchmod(fd, 0o644 if meta.is_symlink else (meta.mode & 0o775) | 0o400)
            else:
                _write_all(fd, content)
                if mode is RepoMode.BARE:
                    os.fchown(fd, meta.uid, meta.gid)
                    apply_xattrs(fd, meta.xattrs)
                os.fchmod(fd, meta.mode & 0o7777)  # after fchown, which clears setuid bits
            if mode is not RepoMode.ARCHIVE:
                os.utime(fd, (0, 0))
            if self.per_object_fsync:
                os.fsync(fd)
            self._ensure_prefix_dir(checksum[:2])
            try:
                # src_dir_fd only makes Python call linkat() with AT_SYMLINK_FOLLOW (the path is absolute)
                os.link(f"/proc/self/fd/{fd}", self.file_object_path(checksum), src_dir_fd=fd, follow_symlinks=True)
            except FileExistsError:
                pass
            except FileNotFoundError:  # no /proc: named temporary files from now on
                self._tmpfile_works = False
                return False
        finally:
            os.close(fd)
        return True

    def write_archive_object(self, checksum: str, data: bytes | BinaryIO) -> None:
        """Store a .filez exactly as received, from bytes or a file object (the caller verified it)."""
        if not self.is_archive:
            raise StrataError("raw .filez objects only go into archive repositories")
        if self.has_object(checksum, ObjectType.FILE):
            return
        if isinstance(data, bytes):
            self._publish_bytes(checksum, ObjectType.FILE, data)
            return
        tmp = self._tmp_name()
        with open(tmp, "xb") as out:
            shutil.copyfileobj(data, out, _CHUNK)
        os.chmod(tmp, 0o644)
        self._link_into_store(tmp, checksum, ObjectType.FILE)

    def write_content_from_file(self, meta: FileMeta, source: str | os.PathLike[str], size: int) -> str:
        """Store a regular file from disk; large files are streamed twice instead of held in memory."""
        if size < _STREAM_THRESHOLD:
            with open(source, "rb") as f:
                return self.write_content(meta, f.read())
        meta = self.canonical_meta(meta)
        digest = hashlib.sha256(O.file_header(meta))
        with open(source, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        checksum = digest.hexdigest()
        if self.has_object(checksum, ObjectType.FILE):
            return checksum
        tmp = self._tmp_name()
        self._stage_content_stream(tmp, meta, source, size)
        self._link_into_store(tmp, checksum, ObjectType.FILE)
        return checksum

    def _stage_content(self, tmp: Path, meta: FileMeta, content: bytes) -> None:
        mode = self.mode
        if mode is RepoMode.ARCHIVE:
            body = O.archive_header(meta, 0 if meta.is_symlink else len(content))
            if not meta.is_symlink:
                body += O.archive_compress(content, self.zlib_level)
            _create_file(tmp, body, 0o644)
        elif meta.is_symlink and mode in (RepoMode.BARE, RepoMode.BARE_USER_ONLY):
            os.symlink(meta.symlink_target, tmp)
            if mode is RepoMode.BARE:
                os.lchown(tmp, meta.uid, meta.gid)
                apply_xattrs(tmp, meta.xattrs)
            os.utime(tmp, (0, 0), follow_symlinks=False)
        elif mode is RepoMode.BARE_USER:
            data = meta.symlink_target.encode() + b"\0" if meta.is_symlink else content
            disk_mode = 0o644 if meta.is_symlink else (meta.mode & 0o775) | 0o400
            _create_file(tmp, data, disk_mode)
            os.setxattr(tmp, OSTREEMETA_XATTR, O.encode_ostreemeta(meta))
            os.utime(tmp, (0, 0))
        else:
            _create_file(tmp, content, meta.mode & 0o7777)
            if mode is RepoMode.BARE:
                os.chown(tmp, meta.uid, meta.gid)
                apply_xattrs(tmp, meta.xattrs)
                os.chmod(tmp, meta.mode & 0o7777)  # chown clears setuid bits
            os.utime(tmp, (0, 0))

    def _stage_content_stream(self, tmp: Path, meta: FileMeta, source: str | os.PathLike[str], size: int) -> None:
        if self.mode is RepoMode.ARCHIVE:
            comp = O.new_archive_compressor(self.zlib_level)
            with open(source, "rb") as src, open(tmp, "wb") as dst:
                dst.write(O.archive_header(meta, size))
                while chunk := src.read(_CHUNK):
                    dst.write(comp.compress(chunk))
                dst.write(comp.flush())
            os.chmod(tmp, 0o644)
            return
        with open(source, "rb") as src, open(tmp, "wb") as dst:
            while chunk := src.read(_CHUNK):
                dst.write(chunk)
        if self.mode is RepoMode.BARE_USER:
            os.chmod(tmp, (meta.mode & 0o775) | 0o400)
            os.setxattr(tmp, OSTREEMETA_XATTR, O.encode_ostreemeta(meta))
        elif self.mode is RepoMode.BARE:
            os.chown(tmp, meta.uid, meta.gid)
            apply_xattrs(tmp, meta.xattrs)
            os.chmod(tmp, meta.mode & 0o7777)
        else:
            os.chmod(tmp, meta.mode & 0o7777)
        os.utime(tmp, (0, 0))

    def is_symlink_object(self, checksum: str, st: os.stat_result) -> bool:
        """Whether a content object is a symlink, from what lstat already gave (bare-user: its xattr)."""
        if self.mode is RepoMode.BARE_USER and stat.S_ISREG(st.st_mode):
            try:
                value = os.getxattr(self.file_object_path(checksum), OSTREEMETA_XATTR)
            except OSError:
                raise CorruptionError(f"file object {checksum} has no {OSTREEMETA_XATTR}") from None
            return stat.S_ISLNK(O.ostreemeta_mode(value))
        return stat.S_ISLNK(st.st_mode)

    def read_file_meta(self, checksum: str) -> FileMeta:
        """The owner, mode, target and xattrs of a content object, without reading its data."""
        path = self.object_path(checksum, ObjectType.FILE)
        try:
            if self.is_archive:
                return self.archive_header(checksum)[0]
            st = os.lstat(path)
        except FileNotFoundError:
            raise MissingFileObjectError(checksum) from None
        if self.mode is RepoMode.BARE_USER:
            try:
                uid, gid, mode, xattrs = O.decode_ostreemeta(os.getxattr(path, OSTREEMETA_XATTR))
            except OSError:
                raise CorruptionError(f"file object {checksum} has no {OSTREEMETA_XATTR}") from None
            target = ""
            if stat.S_ISLNK(mode):
                target = _read_symlink_file(path)
            meta = FileMeta(uid, gid, mode, target, tuple(xattrs))
        elif stat.S_ISLNK(st.st_mode):
            target = os.readlink(path)
            if self.mode is RepoMode.BARE_USER_ONLY:
                meta = FileMeta(0, 0, st.st_mode, target)
            else:
                meta = FileMeta(st.st_uid, st.st_gid, st.st_mode, target, tuple(read_xattrs(path)))
        elif self.mode is RepoMode.BARE_USER_ONLY:
            meta = FileMeta(0, 0, st.st_mode)
        else:
            meta = FileMeta(st.st_uid, st.st_gid, st.st_mode, "", tuple(read_xattrs(path)))
        meta.validate()
        return meta

    def archive_header(self, checksum: str) -> tuple[FileMeta, int]:
        """An archive content object's metadata and uncompressed size, from its header alone."""
        try:
            with _open_regular(self.object_path(checksum, ObjectType.FILE), f"file object {checksum}") as f:
                return _read_archive_header(f)
        except FileNotFoundError:
            raise MissingFileObjectError(checksum) from None

    def read_file(self, checksum: str, *, verify: bool = True) -> tuple[FileMeta, bytes]:
        """A content object's metadata and content (empty for symlinks), checked against its name."""
        path = self.object_path(checksum, ObjectType.FILE)
        if self.is_archive:
            try:
                data = _read_regular_file(path, f"file object {checksum}")
            except FileNotFoundError:
                raise MissingFileObjectError(checksum) from None
            meta, size, offset = O.parse_archive_header(data)
            content = b"" if meta.is_symlink else O.archive_decompress(data[offset:], size)
        else:
            meta = self.read_file_meta(checksum)
            content = b"" if meta.is_symlink else path.read_bytes()
        if verify:
            actual = O.content_checksum(meta, content)
            if actual != checksum:
                raise CorruptionError(f"corrupted file object {checksum} (actual {actual})")
        return meta, content

    def verify_content(self, checksum: str) -> None:
        """Recompute a content object's checksum, streaming, so big files never sit in memory whole."""
        path = self.object_path(checksum, ObjectType.FILE)
        if self.is_archive:
            try:
                f = _open_regular(path, f"file object {checksum}")
            except FileNotFoundError:
                raise MissingFileObjectError(checksum) from None
            with f:
                meta, size = _read_archive_header(f)
                digest = hashlib.sha256(O.file_header(meta))
                if not meta.is_symlink:
                    O.hash_inflated(f.read, digest, size)
        else:
            meta = self.read_file_meta(checksum)
            digest = hashlib.sha256(O.file_header(meta))
            if not meta.is_symlink:
                with open(path, "rb") as f:
                    while chunk := f.read(_CHUNK):
                        digest.update(chunk)
        actual = digest.hexdigest()
        if actual != checksum:
            raise CorruptionError(f"corrupted file object {checksum} (actual {actual})")

    def devino_lookup(self, st: os.stat_result) -> str | None:
        """The checksum of the object a hardlinked checkout file shares its inode with, if any."""
        if self.mode is RepoMode.ARCHIVE or st.st_nlink < 2:
            return None
        with self._devino_lock:
            if self._devino is None:
                self._devino = self._scan_devino()
        return self._devino.get((st.st_dev, st.st_ino))

    def _scan_devino(self) -> dict[tuple[int, int], str]:
        found: dict[tuple[int, int], str] = {}
        objdir = self.path / "objects"
        for prefix in os.listdir(objdir):
            if len(prefix) != 2:
                continue
            with os.scandir(objdir / prefix) as entries:
                for entry in entries:
                    if entry.name.endswith(".file"):
                        est = entry.stat(follow_symlinks=False)
                        found[(est.st_dev, est.st_ino)] = prefix + entry.name[:-5]
        return found

    def sync(self) -> None:
        """Flush written objects to disk before a ref points at them (ostree syncs once per transaction)."""
        if self.fsync:
            syncfs(self.tmp_dir)

    # ------------------------------------------------------------ refs

    def _ref_path(self, ref: str, remote: str | None = None) -> Path:
        validate_ref(ref)
        if remote is not None:
            validate_remote_name(remote)
            return self.path / "refs" / "remotes" / remote / ref
        return self.path / "refs" / "heads" / ref

    def read_ref(self, ref: str, remote: str | None = None) -> str | None:
        try:
            text = self._ref_path(ref, remote).read_text().strip()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        if not O.is_checksum(text):
            raise CorruptionError(f"ref {ref} does not hold a checksum")
        return text

    def set_ref(self, ref: str, checksum: str | None, remote: str | None = None) -> None:
        """Point ref at checksum (None deletes it). Written by rename, after the objects exist."""
        path = self._ref_path(ref, remote)
        if checksum is None:
            try:
                path.unlink()
            except FileNotFoundError:
                raise NotFoundError(f"ref {ref} not found") from None
            return
        if not O.is_checksum(checksum):
            raise InvalidInputError(f"not a checksum: {checksum}")
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, (checksum + "\n").encode(), fsync=self.fsync)

    def list_refs(self, prefix: str | None = None, *, remotes: bool = True) -> dict[str, str]:
        """All refs as name -> checksum; remote refs are named REMOTE:REF."""
        result: dict[str, str] = {}
        heads = self.path / "refs" / "heads"
        for name, csum in _walk_refs(heads):
            result[name] = csum
        if remotes:
            remotes_dir = self.path / "refs" / "remotes"
            if remotes_dir.is_dir():
                for remote in sorted(os.listdir(remotes_dir)):
                    for name, csum in _walk_refs(remotes_dir / remote):
                        result[f"{remote}:{name}"] = csum
        if prefix:
            result = {k: v for k, v in result.items() if k == prefix or k.startswith(prefix.rstrip("/") + "/")}
        return dict(sorted(result.items()))

    def resolve_rev(self, rev: str, *, allow_missing: bool = False) -> str | None:
        """Resolve a checksum, unique checksum prefix, REF, REMOTE:REF or any of them followed by ^."""
        base = rev.rstrip("^")
        depth = len(rev) - len(base)
        if not base:
            raise InvalidInputError(f"invalid revision: {rev!r}")
        checksum = self._resolve_base(base)
        if checksum is None:
            if allow_missing and depth == 0:
                return None
            raise NotFoundError(f"refspec {base} not found")
        for _ in range(depth):
            parent = self.load_commit(checksum).parent
            if parent is None:
                raise NotFoundError(f"commit {checksum} has no parent")
            checksum = parent
        return checksum

    def _resolve_base(self, base: str) -> str | None:
        if O.is_checksum(base):
            return base
        if ":" in base:
            remote, _, ref = base.partition(":")
            return self.read_ref(ref, remote or None)
        if _REF_RE.fullmatch(base):
            found = self.read_ref(base)
            if found:
                return found
            remotes_dir = self.path / "refs" / "remotes"
            if remotes_dir.is_dir():
                for remote in sorted(os.listdir(remotes_dir)):
                    found = self.read_ref(base, remote)
                    if found:
                        return found
        if re.fullmatch(r"[0-9a-f]{4,63}", base):
            return self._resolve_prefix(base)
        if not _REF_RE.fullmatch(base):
            raise InvalidInputError(f"invalid refspec: {base!r}")
        return None

    def _resolve_prefix(self, prefix: str) -> str | None:
        subdir = self.path / "objects" / prefix[:2]
        if not subdir.is_dir():
            return None
        matches = sorted(prefix[:2] + name[:62] for name in os.listdir(subdir)
                         if name.startswith(prefix[2:]) and name.endswith(".commit"))
        if len(matches) > 1:
            raise InvalidInputError(f"ambiguous checksum prefix {prefix}: {', '.join(m[:12] for m in matches)}")
        return matches[0] if matches else None

    # ------------------------------------------------------------ partial commits

    def mark_partial(self, commit: str, marker: bytes = b"") -> None:
        atomic_write(self.path / "state" / f"{commit}.commitpartial", marker, fsync=self.fsync)

    def clear_partial(self, commit: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.path / "state" / f"{commit}.commitpartial").unlink()

    def is_partial(self, commit: str) -> bool:
        return (self.path / "state" / f"{commit}.commitpartial").exists()


def _walk_refs(top: Path) -> Iterator[tuple[str, str]]:
    if not top.is_dir():
        return
    for dirpath, _dirs, files in os.walk(top):
        for name in files:
            full = Path(dirpath) / name
            if name.startswith("."):
                continue
            text = full.read_text().strip()
            if O.is_checksum(text):
                yield full.relative_to(top).as_posix(), text


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _create_file(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        _write_all(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _read_symlink_file(path: Path) -> str:
    data = path.read_bytes()
    if not data.endswith(b"\0"):
        raise CorruptionError(f"bare-user symlink object {path.name} lacks its NUL terminator")
    return data[:-1].decode("utf-8", "surrogateescape")


def _probe_user_xattrs(directory: Path) -> None:
    probe = directory / f"xattr-probe-{secrets.token_hex(4)}"
    probe.touch()
    try:
        os.setxattr(probe, OSTREEMETA_XATTR, b"probe")
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EPERM):
            raise StrataError(f"bare-user mode needs user.* xattrs, which {directory} does not support") from None
        raise
    finally:
        probe.unlink()


_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _open_regular_fd(path: Path, what: str) -> int:
    """An open descriptor of path, which must be a regular file: a FIFO would block the reader for ever, a
    symlink would read outside the store. Anything else is corruption of what."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CorruptionError(f"{what} is not a regular file") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CorruptionError(f"{what} is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_regular(path: Path, what: str) -> BinaryIO:
    return os.fdopen(_open_regular_fd(path, what), "rb")


def _read_regular_file(path: Path, what: str) -> bytes:
    fd = _open_regular_fd(path, what)
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, size)
        while len(data) < size and (more := os.read(fd, size - len(data))):
            data += more
        return data
    finally:
        os.close(fd)


def _read_archive_header(f: BinaryIO) -> tuple[FileMeta, int]:
    """The header of an archive content object open at its start; leaves f at the compressed body."""
    head = f.read(8)
    length = int.from_bytes(head[:4], "big") if len(head) == 8 else 0
    meta, size, _offset = O.parse_archive_header(head + f.read(length))
    return meta, size
