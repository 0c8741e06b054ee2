"""What systemd-tmpfiles does for /var at boot, for the subset of tmpfiles.d that composed trees carry (the lines
rpm-ostree and strata generate and packages ship): `d`/`D` directories, `L` symlinks, `f` files, `z` mode and
owner of what exists. Other types and lines with %-specifiers are left out, as are paths outside /var.

/var is the stateroot's, shared by every deployment and written by the booted system, so nothing there is
trusted: every path is walked one component at a time from an fd of /var with O_NOFOLLOW, a symlink or a
non-directory on the way stops the line, and nothing is ever created or changed through a symlink. The
configuration comes from the deployment (usr/lib/tmpfiles.d, /etc/tmpfiles.d of the deployment, and the
per-package files of usr/lib/rpm-ostree/tmpfiles.d) and is read inside its root."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from strata import fsroot
from strata.errors import StrataError

Log = Callable[[str], None]

# Lowest precedence last; a file name in an earlier directory masks the same name in a later one.
CONFIG_DIRS = ("etc/tmpfiles.d", "usr/lib/tmpfiles.d")
PACKAGE_CONFIG_DIR = "usr/lib/rpm-ostree/tmpfiles.d"  # merged after the others, as rpm-ostree's autovar file
ACCOUNT_FILES = {"passwd": ("etc/passwd", "usr/lib/passwd"), "group": ("etc/group", "usr/lib/group")}
SYNTHETIC_IDS = {"root": 0, "nobody": 65534}  # known to systemd without any passwd or group file
MAX_CONFIG_SIZE = 1 << 20
MAX_ACCOUNTS_SIZE = 16 << 20
SUPPORTED_TYPES = frozenset("dDLfz")
_FIELD = re.compile(r'\s*("(?:[^"\\]|\\.)*"|\'[^\']*\'|\S+)')
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|[0-7]{3}|.)")
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", " ": " "}


@dataclass(frozen=True)
class Line:
    kind: str  # d, D, L, f or z (a trailing + or ! is dropped: nothing here is ever replaced)
    path: str  # below /var, relative ("lib/foo")
    mode: int | None
    user: str | None
    group: str | None
    argument: str


def apply_to_var(deployment: Path, var: Path, log: Log) -> int:
    """Apply the deployment's tmpfiles.d lines for /var to var (the stateroot's /var); returns how many
    lines created or changed something. Lines that cannot be applied safely are reported and skipped."""
    accounts = _Accounts(deployment)
    done = 0
    for line in read_lines(deployment, log):
        try:
            if _apply(var, line, accounts):
                done += 1
        except (OSError, StrataError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            log(f"tmpfiles: /var/{line.path}: {reason}; skipped")
    return done


def read_lines(deployment: Path, log: Log) -> list[Line]:
    """The /var lines of the deployment's configuration, one per path (the first file, by name, wins)."""
    by_path: dict[str, Line] = {}
    for relpath in _config_files(deployment):
        data = fsroot.read_in_root(deployment, relpath, MAX_CONFIG_SIZE)
        if data is None:
            continue
        for number, text in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            try:
                line = parse_line(text)
            except StrataError as exc:
                log(f"tmpfiles: /{relpath}:{number}: {exc}; skipped")
                continue
            if line is not None and line.path not in by_path:
                by_path[line.path] = line
    # parents before children, as systemd-tmpfiles orders items by path
    return [by_path[path] for path in sorted(by_path, key=lambda p: p.split("/"))]


def _config_files(deployment: Path) -> list[str]:
    chosen: dict[str, str] = {}
    for directory in CONFIG_DIRS:
        for name in _conf_names(deployment, directory):
            chosen.setdefault(name, f"{directory}/{name}")
    ordered = [chosen[name] for name in sorted(chosen)]
    return ordered + [f"{PACKAGE_CONFIG_DIR}/{name}" for name in sorted(_conf_names(deployment, PACKAGE_CONFIG_DIR))]


def _conf_names(deployment: Path, directory: str) -> list[str]:
    found = fsroot.real_path_in_root(deployment, directory)
    if found is None or not found.is_dir():
        return []
    return [name for name in os.listdir(found) if name.endswith(".conf")]


def parse_line(text: str) -> Line | None:
    """One configuration line; None for comments, blank lines and what this subset does not handle."""
    stripped = text.strip()
    if not stripped or stripped.startswith("#"):
        return None
    fields, rest = _split_fields(stripped, 6)
    if len(fields) < 2:
        raise StrataError("too few fields")
    kind = fields[0].rstrip("+!-=~^")
    path = fields[1]
    if len(kind) != 1 or kind not in SUPPORTED_TYPES or not path.startswith("/var/"):
        return None
    if "%" in path.replace("%%", ""):
        return None  # specifiers depend on the running system
    relpath = _var_relpath(path.replace("%%", "%"))
    mode_field, user, group = [*fields, "-", "-", "-"][2:5]
    argument = _unescape(rest).replace("%%", "%") if rest else ""
    if kind == "L" and not argument:
        raise StrataError("symlink without a target")
    return Line(kind, relpath, _mode(mode_field), None if user == "-" else user, None if group == "-" else group,
                argument)


def _split_fields(text: str, count: int) -> tuple[list[str], str]:
    """The first count whitespace-separated fields (quotes removed) and the unsplit rest, the argument."""
    fields: list[str] = []
    position = 0
    while len(fields) < count:
        found = _FIELD.match(text, position)
        if found is None:
            break
        word = found.group(1)
        fields.append(word[1:-1] if word[0] in "\"'" and len(word) > 1 else word)
        position = found.end()
    rest = text[position:].strip()
    return fields, "" if rest == "-" else rest


def _unescape(text: str) -> str:
    def one(found: re.Match[str]) -> str:
        code = found.group(1)
        if code.startswith("x") and len(code) == 3:
            return chr(int(code[1:], 16))
        if len(code) == 3 and code.isdigit():
            return chr(int(code, 8))
        return _SIMPLE_ESCAPES.get(code, code)
    return _ESCAPE.sub(one, text)


def _var_relpath(path: str) -> str:
    parts = [p for p in path.split("/")[2:] if p not in ("", ".")]
    if not parts or ".." in parts or any("\0" in p for p in parts):
        raise StrataError(f"path is not normalized: {path}")
    return "/".join(parts)


def _mode(field: str) -> int | None:
    field = field.lstrip("~:")
    if field in ("", "-"):
        return None
    try:
        mode = int(field, 8)
    except ValueError:
        raise StrataError(f"invalid mode {field!r}") from None
    if mode > 0o7777:
        raise StrataError(f"invalid mode {field!r}")
    return mode


# ------------------------------------------------------------------ applying


class _Accounts:
    """User and group names of the deployment (its /etc and the altfiles copies under /usr/lib)."""

    def __init__(self, deployment: Path) -> None:
        self.deployment = deployment
        self._ids: dict[str, dict[str, int]] = {}

    def uid(self, name: str | None) -> int:
        return self._lookup("passwd", name)

    def gid(self, name: str | None) -> int:
        return self._lookup("group", name)

    def _lookup(self, database: str, name: str | None) -> int:
        if name is None:
            return 0
        if name.isdigit():
            return int(name)
        ids = self._ids.get(database)
        if ids is None:
            ids = self._ids[database] = self._read(database)
        if name not in ids and name in SYNTHETIC_IDS:
            return SYNTHETIC_IDS[name]
        if name not in ids:
            raise StrataError(f"unknown {'user' if database == 'passwd' else 'group'} {name!r}")
        return ids[name]

    def _read(self, database: str) -> dict[str, int]:
        ids: dict[str, int] = {}
        for relpath in ACCOUNT_FILES[database]:
            data = fsroot.read_in_root(self.deployment, relpath, MAX_ACCOUNTS_SIZE) or b""
            for entry in data.decode("utf-8", "replace").splitlines():
                fields = entry.split(":")
                if len(fields) >= 3 and fields[2].isdigit():
                    ids.setdefault(fields[0], int(fields[2]))
        return ids


@dataclass(frozen=True)
class _Owner:
    uid: int | None  # None: keep
    gid: int | None


def _apply(var: Path, line: Line, accounts: _Accounts) -> bool:
    owner = _Owner(None if line.user is None else accounts.uid(line.user),
                   None if line.group is None else accounts.gid(line.group))  # unknown names: nothing created
    *parents, name = line.path.split("/")
    with _parent_dir(var, parents) as parent:
        if line.kind in "dD":
            return _directory(parent, name, line.mode, owner)
        if line.kind == "L":
            return _symlink(parent, name, line.argument)
        if line.kind == "f":
            return _file(parent, name, line, owner)
        return _adjust_existing(parent, name, line.mode, owner)


@contextlib.contextmanager
def _parent_dir(var: Path, parents: list[str]) -> Iterator[int]:
    """An fd of var/PARENTS, missing directories created (0755 root); a symlink on the way is refused."""
    fd = os.open(var, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for part in parents:
            created = True
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                created = False
            child = _open_dir(fd, part)
            os.close(fd)
            fd = child
            if created:
                os.fchmod(fd, 0o755)  # whatever the umask, as systemd-tmpfiles (which sets 0022)
        yield fd
    finally:
        os.close(fd)


def _open_dir(parent: int, name: str) -> int:
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise StrataError(f"{name} is not a directory (a symlink is never followed)") from None
        raise


def _directory(parent: int, name: str, mode: int | None, owner: _Owner) -> bool:
    created = True
    try:
        os.mkdir(name, 0o700, dir_fd=parent)
    except FileExistsError:
        created = False
    fd = _open_dir(parent, name)
    try:
        return _set_owner_and_mode(fd, owner, 0o755 if created and mode is None else mode) or created
    finally:
        os.close(fd)


def _symlink(parent: int, name: str, target: str) -> bool:
    try:
        os.symlink(target, name, dir_fd=parent)
    except FileExistsError:
        return False
    return True


def _file(parent: int, name: str, line: Line, owner: _Owner) -> bool:
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=parent)
    except FileExistsError:
        return _adjust_existing(parent, name, line.mode, owner)
    try:
        os.write(fd, line.argument.encode("utf-8", "surrogateescape"))
        _set_owner_and_mode(fd, owner, 0o644 if line.mode is None else line.mode)
    finally:
        os.close(fd)
    return True


def _adjust_existing(parent: int, name: str, mode: int | None, owner: _Owner) -> bool:
    """`z` (and `f` on an existing file): owner and mode of a directory or regular file; anything else, a
    symlink above all, is left as it is."""
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        return False
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent)
    try:
        if (os.fstat(fd).st_ino, os.fstat(fd).st_dev) != (st.st_ino, st.st_dev):
            return False  # replaced since the stat
        return _set_owner_and_mode(fd, owner, mode)
    finally:
        os.close(fd)


def _set_owner_and_mode(fd: int, owner: _Owner, mode: int | None) -> bool:
    st = os.fstat(fd)
    changed = False
    uid = st.st_uid if owner.uid is None else owner.uid
    gid = st.st_gid if owner.gid is None else owner.gid
    if (uid, gid) != (st.st_uid, st.st_gid):
        os.fchown(fd, uid, gid)
        changed = True
    if mode is not None and stat.S_IMODE(os.fstat(fd).st_mode) != mode:
        os.fchmod(fd, mode)
        changed = True
    return changed
