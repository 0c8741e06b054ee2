"""Stable accounts across composes: `preserve-passwd` seeds the new tree with the previous accounts (or a
file's), `check-passwd`/`check-groups` refuse a tree whose uids/gids moved, `ignore-removed-*` let some go."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from strata import fsroot
from strata.core.treefile import Treefile
from strata.errors import StrataError
from strata.image.repo import Repo

Log = Callable[[str], None]
_LIMIT = 16 * 1024 * 1024
KINDS = ("passwd", "group")
_CHECK_KEY = {"passwd": "check-passwd", "group": "check-groups"}
_IGNORE_KEY = {"passwd": "ignore-removed-users", "group": "ignore-removed-groups"}


@dataclass(frozen=True)
class Account:
    name: str
    uid: int  # the gid for a group
    gid: int


def parse_accounts(text: str, kind: str) -> dict[str, Account]:
    accounts: dict[str, Account] = {}
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) < 3 or not fields[0] or line.startswith("#"):
            continue
        try:
            first = int(fields[2])
            second = int(fields[3]) if kind == "passwd" and len(fields) > 3 else first
        except ValueError:
            continue
        accounts.setdefault(fields[0], Account(fields[0], first, second))
    return accounts


def previous_file(repo: Repo, commit: str, relpath: str) -> str:
    """A regular file of a commit as text ('' when absent), read from the object store."""
    loaded = repo.load_commit(commit)
    tree = repo.load_dirtree(loaded.root_tree)
    *parents, name = relpath.split("/")
    for part in parents:
        if part not in tree.dirs:
            return ""
        tree = repo.load_dirtree(tree.dirs[part][0])
    if name not in tree.files:
        return ""
    meta, data = repo.read_file(tree.files[name])
    if not stat.S_ISREG(meta.mode) or len(data) > _LIMIT:
        return ""
    return data.decode("utf-8", "replace")


def preserve_accounts(rootfs: Path, treefile: Treefile, repo: Repo, previous: str | None, log: Log) -> None:
    """Before package scripts run: /etc/{passwd,group} start from the previous commit's accounts (or the
    check-* file's), so scripts that add users find their old ids taken by the same names."""
    if not treefile.get("preserve-passwd", True):
        return
    for kind in KINDS:
        seed = _seed_text(treefile, repo, previous, kind)
        if not seed:
            continue
        if fsroot.lstat_in_tree(rootfs, "usr/etc") is None:
            (rootfs / "usr/etc").mkdir(parents=True, mode=0o755)
        fsroot.require_real_dir(rootfs, "usr/etc")  # a package's /etc link must not lead the writes out
        origin = "the check file" if _check_type(treefile, kind) == "file" else "the previous commit"
        log(f"Preserving /etc/{kind} accounts from {origin}")
        current = fsroot.read_in_root(rootfs, f"usr/etc/{kind}", _LIMIT) or b""
        lines = _unique_by_name([*seed.splitlines(), *current.decode("utf-8", "replace").splitlines()])
        _replace_file(rootfs / "usr/etc" / kind, "".join(f"{line}\n" for line in lines))


def _unique_by_name(lines: list[str]) -> list[str]:
    """The first line of each account name (etc-group-members groups are in both /usr/lib and /etc)."""
    seen: set[str] = set()
    kept = []
    for line in lines:
        name = line.split(":", 1)[0]
        if line.strip() and name not in seen:
            seen.add(name)
            kept.append(line)
    return kept


def _seed_text(treefile: Treefile, repo: Repo, previous: str | None, kind: str) -> str:
    spec = treefile.get(_CHECK_KEY[kind]) or {}
    if spec.get("type") == "file":
        return (treefile.directory / str(spec["filename"])).read_text()
    if previous is None:
        return ""
    return previous_file(repo, previous, f"usr/lib/{kind}") + previous_file(repo, previous, f"usr/etc/{kind}")


def _check_type(treefile: Treefile, kind: str) -> str:
    return str((treefile.get(_CHECK_KEY[kind]) or {}).get("type", "previous"))


def _replace_file(path: Path, text: str) -> None:
    mode = path.lstat().st_mode & 0o7777 if path.is_file() and not path.is_symlink() else 0o644
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600), "w") as out:
        out.write(text)
    tmp.chmod(mode)
    os.replace(tmp, path)  # never writes through a hardlink into the package cache


def check_accounts(rootfs: Path, treefile: Treefile, repo: Repo, previous: str | None, log: Log) -> None:
    """After postprocessing: the accounts of /usr/lib/{passwd,group} keep the expected ids."""
    for kind in KINDS:
        expected = _expected_accounts(treefile, repo, previous, kind)
        if expected is None:
            continue
        data = fsroot.read_in_root(rootfs, f"usr/lib/{kind}", _LIMIT) or b""
        _compare(rootfs, kind, expected, parse_accounts(data.decode("utf-8", "replace"), kind),
                 set(treefile.get(_IGNORE_KEY[kind]) or []), log)


def _expected_accounts(treefile: Treefile, repo: Repo, previous: str | None, kind: str) -> dict[str, Account] | None:
    spec: dict[str, Any] = treefile.get(_CHECK_KEY[kind]) or {"type": "previous"}
    kind_of_check = spec["type"]
    if kind_of_check == "none":
        return None
    if kind_of_check == "previous":
        if previous is None:
            return None
        return parse_accounts(previous_file(repo, previous, f"usr/lib/{kind}"), kind)
    if kind_of_check == "file":
        return parse_accounts((treefile.directory / spec["filename"]).read_text(), kind)
    accounts = {}
    for name, ids in spec["entries"].items():
        uid, gid = (ids[0], ids[1]) if isinstance(ids, list) else (ids, ids)
        accounts[name] = Account(name, uid, gid)
    return accounts


def _compare(rootfs: Path, kind: str, expected: dict[str, Account], found: dict[str, Account],
             ignored: set[str], log: Log) -> None:
    label = {"passwd": ("User", "passwd", "UID"), "group": ("Group", "group", "GID")}[kind]
    for name in sorted(set(expected) - set(found)):
        if "*" in ignored or name in ignored:
            log(f"Ignored {label[0].lower()} missing from new {label[1]} file: {name}")
            continue
        if _owns_files(rootfs, expected[name].uid, kind):
            raise StrataError(f"{label[0]} missing from new {label[1]} file: {name}")
        log(f"Unused {label[0].lower()} removed from new {label[1]} file: {name}")
    for name, account in sorted(found.items()):
        old = expected.get(name)
        if old is None:
            continue
        if account.uid != old.uid:
            raise StrataError(f"{label[1]} {label[2]} changed: {name} ({old.uid} to {account.uid})")
        if kind == "passwd" and account.gid != old.gid:
            raise StrataError(f"passwd GID changed: {name} ({old.gid} to {account.gid})")


def _owns_files(rootfs: Path, ident: int, kind: str) -> bool:
    for dirpath, dirnames, filenames in os.walk(rootfs):
        for name in [*dirnames, *filenames]:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_uid if kind == "passwd" else st.st_gid) == ident:
                return True
    return False
