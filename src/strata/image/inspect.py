"""Reading commits the way `ostree log|show|ls|cat|diff` present them."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from strata.errors import InvalidInputError, NotFoundError
from strata.image import gvariant
from strata.image.gvariant import Variant
from strata.image.objects import Commit, FileMeta, check_timestamp
from strata.image.repo import Repo


@dataclass(frozen=True)
class TreeEntry:
    path: str
    kind: str  # 'd', '-', 'l'
    mode: int
    uid: int
    gid: int
    size: int
    target: str = ""
    xattrs: tuple[tuple[bytes, bytes], ...] = ()
    checksum: str = ""  # content checksum, or dirtree checksum for directories


def format_date(timestamp: int) -> str:
    """As ostree shows a commit date; a timestamp past year 9999 (possible in a hostile commit) is refused."""
    return datetime.fromtimestamp(check_timestamp(timestamp), UTC).strftime("%Y-%m-%d %H:%M:%S +0000")


def log_entry(checksum: str, commit: Commit) -> list[str]:
    lines = [f"commit {checksum}"]
    if commit.parent:
        lines.append(f"Parent:  {commit.parent}")
    lines.append(f"ContentChecksum:  {commit.content_checksum}")
    lines.append(f"Date:  {format_date(commit.timestamp)}")
    if commit.version is not None:
        lines.append(f"Version: {commit.version}")
    lines += ["", f"    {commit.subject}", ""]
    if commit.body:
        lines += [f"    {line}" for line in commit.body.splitlines()] + [""]
    return lines


def format_value(value: object) -> str:
    """A GVariant value in roughly GLib's text form, for `show` and `ls -X`."""
    if isinstance(value, Variant):
        return format_value(value.value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return "b'" + value.decode("utf-8", "backslashreplace") + "'" if value.isascii() else "[" + ", ".join(
            f"0x{b:02x}" for b in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(format_value(v) for v in value) + ")"
    if isinstance(value, list):
        if value and isinstance(value[0], tuple) and len(value[0]) == 2 and isinstance(value[0][1], Variant):
            return "{" + ", ".join(f"{format_value(k)}: <{format_value(v)}>" for k, v in value) + "}"
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


_ANNOTATED = {"y": "byte", "n": "int16", "q": "uint16", "u": "uint32", "x": "int64", "t": "uint64",
              "h": "handle", "o": "objectpath", "g": "signature"}


def format_typed(sig: str, value: Any, annotate: bool = True) -> str:
    """A value of GVariant type sig as g_variant_print(value, TRUE) prints it: a type word before a value
    whose type the text would not tell (uint64, byte, ...), for the first element of a container only, and
    always inside a variant."""
    code = sig[0]
    if code == "v":
        return "<" + format_typed(value.type, value.value, True) + ">"
    if code == "(":
        members = gvariant.parse_type(sig).children
        items = [format_typed(t.code, v, annotate) for t, v in zip(members, value, strict=True)]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    if code == "a":
        return _format_typed_array(sig, list(value), annotate)
    if code == "b":
        return "true" if value else "false"
    if code in "sog":
        text = format_value(str(value))
    elif code == "y":
        text = f"0x{int(value):02x}"
    elif code == "d":
        text = repr(float(value))
    else:
        text = str(int(value))
    return f"{_ANNOTATED[code]} {text}" if annotate and code in _ANNOTATED else text


def _format_typed_array(sig: str, items: list[Any], annotate: bool) -> str:
    element = sig[1:]
    if not items:
        empty = "{}" if element.startswith("{") else "[]"
        return f"@{sig} {empty}" if annotate else empty
    if element.startswith("{"):
        key_type, value_type = (t.code for t in gvariant.parse_type(element).children)
        entries = [f"{format_typed(key_type, k, annotate and not i)}: {format_typed(value_type, v, annotate and not i)}"
                   for i, (k, v) in enumerate(items)]
        return "{" + ", ".join(entries) + "}"
    return "[" + ", ".join(format_typed(element, item, annotate and not i) for i, item in enumerate(items)) + "]"


def walk(repo: Repo, root: tuple[str, str], path: str = "", *, recursive: bool = True) -> Iterator[TreeEntry]:
    """Entries below a directory, depth first, files before subdirectories as ostree lists them. A stack of
    per-directory iterators instead of recursion: trees can nest deeper than Python's recursion limit."""
    levels = [_walk_level(repo, root, path)]
    while levels:
        item = next(levels[-1], None)
        if item is None:
            levels.pop()
            continue
        entry, subdir = item
        yield entry
        if subdir is not None and recursive:
            levels.append(_walk_level(repo, subdir, entry.path))


def _walk_level(repo: Repo, root: tuple[str, str], path: str) -> Iterator[tuple[TreeEntry, tuple[str, str] | None]]:
    tree = repo.load_dirtree(root[0])  # parsing checked that names are sorted
    for name, checksum in tree.files.items():
        yield file_entry(repo, f"{path}/{name}", checksum), None
    for name, sub in tree.dirs.items():
        yield dir_entry(repo, f"{path}/{name}", sub), sub


def dir_entry(repo: Repo, path: str, pair: tuple[str, str]) -> TreeEntry:
    meta = repo.load_dirmeta(pair[1])
    return TreeEntry(path or "/", "d", stat.S_IMODE(meta.mode), meta.uid, meta.gid, 0, xattrs=meta.xattrs,
                     checksum=pair[0])


def file_entry(repo: Repo, path: str, checksum: str) -> TreeEntry:
    meta: FileMeta = repo.read_file_meta(checksum)
    if meta.is_symlink:
        return TreeEntry(path, "l", stat.S_IMODE(meta.mode), meta.uid, meta.gid, 0, meta.symlink_target,
                         meta.xattrs, checksum)
    return TreeEntry(path, "-", stat.S_IMODE(meta.mode), meta.uid, meta.gid, content_size(repo, checksum),
                     xattrs=meta.xattrs, checksum=checksum)


def content_size(repo: Repo, checksum: str) -> int:
    if repo.is_archive:
        return repo.archive_header(checksum)[1]
    from strata.image.objects import ObjectType
    return repo.object_path(checksum, ObjectType.FILE).stat().st_size


def lookup(repo: Repo, commit: str, path: str) -> tuple[str, TreeEntry]:
    """('dir'|'file', entry) for a path inside a commit."""
    loaded = repo.load_commit(commit)
    pair = (loaded.root_tree, loaded.root_meta)
    parts = [p for p in path.strip("/").split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise InvalidInputError(f"invalid path: {path}")
    current = ""
    for index, part in enumerate(parts):
        tree = repo.load_dirtree(pair[0])
        current += "/" + part
        if part in tree.dirs:
            pair = tree.dirs[part]
        elif part in tree.files and index == len(parts) - 1:
            return "file", file_entry(repo, current, tree.files[part])
        else:
            raise NotFoundError(f"No such file or directory: {current}")
    return "dir", dir_entry(repo, current, pair)


def format_entry(entry: TreeEntry, *, xattrs: bool = False, checksum: bool = False) -> str:
    text = f"{entry.kind}{entry.mode:05o} {entry.uid} {entry.gid} {entry.size:6d} "
    if checksum:
        text += f"{entry.checksum} "
    if xattrs:
        text += "{ " + _xattrs_text(entry.xattrs) + " } "
    text += entry.path
    if entry.kind == "l":
        text += f" -> {entry.target}"
    return text


def _xattrs_text(xattrs: tuple[tuple[bytes, bytes], ...]) -> str:
    if not xattrs:
        return "@a(ayay) []"
    # GLib's text form annotates the type on the first byte array only
    items = []
    for index, (name, value) in enumerate(xattrs):
        data = ", ".join(f"0x{b:02x}" for b in value)
        prefix = "byte " if index == 0 and value else ""
        items.append(f"({name!r}, [{prefix}{data}])" if value else f"({name!r}, @ay [])")
    return "[" + ", ".join(items) + "]"


def diff_trees(repo: Repo, old: tuple[str, str], new: tuple[str, str], path: str = "") -> Iterator[tuple[str, str]]:
    """('A'|'M'|'D', path) for every difference, like `ostree diff` (iteratively, as walk)."""
    levels = [_diff_level(repo, old, new, path)]
    while levels:
        step = next(levels[-1], None)
        if step is None:
            levels.pop()
        elif isinstance(step, _SubDiff):
            levels.append(_diff_level(repo, step.old, step.new, step.path))
        else:
            yield step


@dataclass(frozen=True)
class _SubDiff:
    """A directory present on both sides, to compare next."""

    old: tuple[str, str]
    new: tuple[str, str]
    path: str


def _diff_level(repo: Repo, old: tuple[str, str], new: tuple[str, str], path: str
                ) -> Iterator[tuple[str, str] | _SubDiff]:
    """The changes of one directory level; a pair of subdirectories to compare is yielded as (old, new, path)."""
    if old == new:
        return
    old_tree = repo.load_dirtree(old[0])
    new_tree = repo.load_dirtree(new[0])
    names = sorted(set(old_tree.files) | set(old_tree.dirs) | set(new_tree.files) | set(new_tree.dirs))
    for name in names:
        sub = f"{path}/{name}"
        in_old = name in old_tree.files or name in old_tree.dirs
        in_new = name in new_tree.files or name in new_tree.dirs
        if not in_new:
            yield "D", sub
        elif not in_old:
            yield "A", sub
        elif name in old_tree.files and name in new_tree.files:
            if old_tree.files[name] != new_tree.files[name]:
                yield "M", sub
        elif name in old_tree.dirs and name in new_tree.dirs:
            if old_tree.dirs[name][1] != new_tree.dirs[name][1]:
                yield "M", sub
            yield _SubDiff(old_tree.dirs[name], new_tree.dirs[name], sub)
        else:
            yield "D", sub
            yield "A", sub


def lookup_pair(repo: Repo, root: tuple[str, str], path: str) -> tuple[str, str] | None:
    """The (dirtree, dirmeta) of a directory inside a tree, or None when path is not a directory there."""
    pair = root
    for part in [p for p in path.strip("/").split("/") if p]:
        tree = repo.load_dirtree(pair[0])
        if part not in tree.dirs:
            return None
        pair = tree.dirs[part]
    return pair
