"""Where the paths of an RPM payload go in an OSTree tree (spec E.2), and the tmpfiles.d lines that stand in
for what is not stored. Paths come from untrusted packages: each is checked here, once."""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass

from strata.errors import StrataError
from strata.packages.text import shown

TMPFILES_SUBDIR = "usr/lib/rpm-ostree/tmpfiles.d"
UNSUPPORTED_PATH_HINT = "Unsupported path; see https://github.com/projectatomic/rpm-ostree/issues/233"
# Top-level directories the composed layout creates itself (spec E.9); packages such as `filesystem`
# ship them, and they are skipped instead of refused.
LAYOUT_TOPLEVEL = frozenset({"dev", "proc", "sys", "run", "tmp", "home", "srv", "mnt", "media", "root", "afs",
                             "sysroot", "ostree", "var"})
STORED_TOPLEVEL = frozenset({"usr", "bin", "sbin", "lib", "lib64", "lib32", "libx32"})
NAME_MAX = 255  # bytes in one path component, as Linux file systems allow
PATH_MAX = 4096
_VAR_TO_USR = {"var/lib/alternatives": "usr/lib/alternatives", "var/lib/vagrant": "usr/lib/vagrant"}
# systemd-tmpfiles splits the path field on whitespace and reads quotes and backslashes in it, without C
# escapes in older versions: such paths cannot be written portably, so the package is refused.
_UNWRITABLE_IN_TMPFILES_PATH = re.compile(r"[\x00-\x1f\x7f\\\"']")
_OWNER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\$?")


@dataclass
class Translation:
    stored: str | None  # relative path in the commit, or None if not stored
    tmpfiles: str | None = None  # a tmpfiles.d line replacing the entry


def normalize_payload_path(path: str) -> str:
    """A payload path as a relative path; anything that escapes the root or no file system can hold is
    refused."""
    text = path[1:] if path.startswith(".") and path[1:2] in ("/", "") else path
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts or "\0" in text:
        raise StrataError(f"payload path escapes the root: {shown(path)}")
    if len(text.encode("utf-8", "surrogateescape")) > PATH_MAX:
        raise StrataError(f"file name too long: {shown(path)}")
    for part in parts:
        if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX:
            raise StrataError(f"file name too long: {shown(path)}")
    return "/".join(parts)


def translate_path(path: str, mode: int, link_target: str = "", owner: str = "root root") -> Translation:
    """Where an RPM path goes in an OSTree tree (spec E.2)."""
    rel = normalize_payload_path(path)
    top = rel.split("/", 1)[0]
    if rel in ("", "."):
        return Translation(None)
    if top == "etc":
        return Translation("usr/" + rel)
    if top == "boot":
        return Translation("usr/lib/ostree-boot" + rel[4:])
    if top == "opt":
        line = None
        parts = rel.split("/")
        if len(parts) == 2:
            line = tmpfiles_line("L", f"/opt/{parts[1]}", argument=f"../../usr/lib/opt/{parts[1]}")
        return Translation("usr/lib/opt" + rel[3:], line)
    for var_path, usr_path in _VAR_TO_USR.items():
        if rel == var_path or rel.startswith(var_path + "/"):
            line = tmpfiles_line("L", f"/{var_path}", argument=f"../../{usr_path[4:]}") if rel == var_path else None
            return Translation(usr_path + rel[len(var_path):], line)
    if top in ("var", "run"):
        return _tmpfiles_translation(rel, mode, link_target, owner)
    if top in STORED_TOPLEVEL:
        return Translation(rel)
    if top in LAYOUT_TOPLEVEL and (stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
        return Translation(None)
    raise StrataError(f"Analyzing /{shown(rel)}: {UNSUPPORTED_PATH_HINT}")


def _tmpfiles_translation(rel: str, mode: int, link_target: str, owner: str) -> Translation:
    if rel.startswith("var/lib/rpm"):
        return Translation(None)
    if stat.S_ISDIR(mode):
        user, _, group = owner.partition(" ")
        return Translation(None, tmpfiles_line("d", f"/{rel}", f"{stat.S_IMODE(mode):04o}", user, group))
    if stat.S_ISLNK(mode):
        return Translation(None, tmpfiles_line("L", f"/{rel}", argument=link_target))
    return Translation(None)


def tmpfiles_line(kind: str, path: str, mode: str = "-", user: str = "-", group: str = "-",
                  argument: str = "") -> str:
    """One tmpfiles.d line, with the path and argument written so that systemd-tmpfiles reads them back
    exactly; a path it cannot read back is refused."""
    for name in (user, group):
        if name != "-" and not _OWNER_NAME.fullmatch(name):
            raise StrataError(f"invalid owner name for {shown(path)}: {shown(name)}")
    fields = [kind, _tmpfiles_path(path), mode, user, group, "-"]
    if argument:
        fields.append(_tmpfiles_argument(argument))
    else:
        fields.append("-")
    return " ".join(fields)


def _tmpfiles_path(path: str) -> str:
    if _UNWRITABLE_IN_TMPFILES_PATH.search(path) or any(_is_escaped_byte(c) for c in path):
        raise StrataError(f"path cannot be expressed in tmpfiles.d: {shown(path)}")
    escaped = path.replace("%", "%%")  # tmpfiles expands %-specifiers in paths
    return f'"{escaped}"' if " " in escaped else escaped


def _tmpfiles_argument(argument: str) -> str:
    """The last field is C-unescaped by systemd-tmpfiles: escape what would end or split it."""
    out = []
    for char in argument:
        if char == "%":
            out.append("%%")
        elif _is_escaped_byte(char):  # an undecodable byte of the RPM, kept by surrogateescape
            out.append(f"\\x{ord(char) - 0xDC00:02x}")
        elif char == "\\" or ord(char) <= 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return "".join(out)


def _is_escaped_byte(char: str) -> bool:
    return 0xDC80 <= ord(char) <= 0xDCFF
