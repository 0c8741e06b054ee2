"""Hostile OSTree repositories (archive mode), as a compromised mirror would serve them.

Every builder writes objects exactly as given (unsorted, duplicated, misnamed, oversized) with strata's
encoders, bypassing the checks strata's own writers make, and moves a ref to the result. `serve` puts a
directory on HTTP through the pull tests' nginx; `serve_without_length` uses a small server of our own that
sends bodies without Content-Length (so only a streaming cap can stop an oversized object).
"""

from __future__ import annotations

import functools
import http.server
import socketserver
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from strata.image import gvariant
from strata.image import objects as O
from strata.image.objects import ObjectType
from strata.image.repo import Repo, RepoMode
from strata.image.summary import update_summary

REF = "hostile/x86_64"
DIRMETA = O.DirMeta(0, 0, 0o40755)
FileEntry = tuple[str, str]  # (name, content checksum)
DirEntry = tuple[str, str, str]  # (name, dirtree, dirmeta)


@dataclass(frozen=True)
class Served:
    repo: Repo
    commit: str


def new_server_repo(path: Path) -> Repo:
    return Repo.init(path, RepoMode.ARCHIVE)


def content(repo: Repo, data: bytes, mode: int = 0o100644) -> str:
    with repo.lock():
        return repo.write_content(O.FileMeta(0, 0, mode), data)


def symlink(repo: Repo, target: str) -> str:
    with repo.lock():
        return repo.write_content(O.FileMeta(0, 0, 0o120777, target))


def dirmeta(repo: Repo) -> str:
    with repo.lock():
        return repo.write_metadata(ObjectType.DIRMETA, DIRMETA.serialize())


def raw_dirtree(repo: Repo, files: list[FileEntry], dirs: list[DirEntry] | None = None,
                *, nul_names: bool = False) -> str:
    """A dirtree with exactly these entries in this order. With nul_names, every 'X' of a name becomes a NUL
    byte (GVariant strings cannot hold one, so it is patched into the encoded bytes)."""
    data = gvariant.encode(O.DIRTREE_TYPE, (
        [(name, bytes.fromhex(csum)) for name, csum in files],
        [(name, bytes.fromhex(tree), bytes.fromhex(meta)) for name, tree, meta in dirs or []]))
    if nul_names:
        for name, _csum in files:
            data = data.replace(name.encode() + b"\0", name.replace("X", "\0").encode() + b"\0")
    with repo.lock():
        return repo.write_metadata(ObjectType.DIRTREE, data)


def raw_commit(repo: Repo, root: tuple[str, str], *, timestamp: int = 1, parent: str | None = None,
               ref: str = REF) -> str:
    """A commit over root (any timestamp, even one strata refuses to write) with ref moved to it and the
    summary updated."""
    data = gvariant.encode(O.COMMIT_TYPE, (
        [], bytes.fromhex(parent) if parent else b"", [], "hostile", "", timestamp,
        bytes.fromhex(root[0]), bytes.fromhex(root[1])))
    with repo.lock():
        commit = repo.write_metadata(ObjectType.COMMIT, data)
        repo.set_ref(ref, commit)
    update_summary(repo)
    return commit


def tree_commit(repo: Repo, files: list[FileEntry], dirs: list[DirEntry] | None = None, *, timestamp: int = 1) -> str:
    return raw_commit(repo, (raw_dirtree(repo, files, dirs), dirmeta(repo)), timestamp=timestamp)


def benign(repo: Repo) -> str:
    """A small valid commit on REF: what a client has before the mirror turns hostile."""
    files = sorted([("hello", content(repo, b"hello\n")), ("motd", content(repo, b"welcome\n"))])
    sub = raw_dirtree(repo, [("inner", content(repo, b"inner\n"))])
    return tree_commit(repo, files, [("sub", sub, dirmeta(repo))])


# ---------------------------------------------------------------- malformed trees


def duplicate_file(repo: Repo) -> str:
    first, second = content(repo, b"one\n"), content(repo, b"two\n")
    return tree_commit(repo, [("a", first), ("a", second)])


def file_and_dir(repo: Repo) -> str:
    inner = raw_dirtree(repo, [("x", content(repo, b"x\n"))])
    return tree_commit(repo, [("a", content(repo, b"a\n"))], [("a", inner, dirmeta(repo))])


def duplicate_dir(repo: Repo) -> str:
    inner = raw_dirtree(repo, [("x", content(repo, b"x\n"))])
    return tree_commit(repo, [], [("d", inner, dirmeta(repo)), ("d", inner, dirmeta(repo))])


def unsorted_files(repo: Repo) -> str:
    return tree_commit(repo, [("b", content(repo, b"b\n")), ("a", content(repo, b"a\n"))])


def unsorted_dirs(repo: Repo) -> str:
    inner = raw_dirtree(repo, [("x", content(repo, b"x\n"))])
    return tree_commit(repo, [], [("z", inner, dirmeta(repo)), ("y", inner, dirmeta(repo))])


def bad_name(repo: Repo, name: str) -> str:
    """A file entry named name: '', '.', '..', 'a/b', '/'; 'X' stands for a NUL byte."""
    return raw_commit(repo, (raw_dirtree(repo, [(name, content(repo, b"pwned\n"))], nul_names="X" in name),
                             dirmeta(repo)))


def short_checksum(repo: Repo) -> str:
    data = gvariant.encode(O.DIRTREE_TYPE, ([("a", b"\x01" * 31)], []))
    with repo.lock():
        tree = repo.write_metadata(ObjectType.DIRTREE, data)
    return raw_commit(repo, (tree, dirmeta(repo)))


def escaping_symlinks(repo: Repo, host_dir: Path) -> str:
    """Symlinks out of the tree (absolute, and by '..'), which a checkout must store and never follow."""
    files = sorted([("abs", symlink(repo, str(host_dir))), ("up", symlink(repo, "../../../../../../../..")),
                    ("victim", symlink(repo, str(host_dir / "victim")))])
    return tree_commit(repo, files)


def deep_chain(repo: Repo, depth: int, leaf: bytes = b"bottom\n") -> str:
    """depth nested directories d/d/d/.../leaf, written bottom up without recursion."""
    meta = dirmeta(repo)
    tree = raw_dirtree(repo, [("leaf", content(repo, leaf))])
    for _level in range(depth - 1):
        tree = raw_dirtree(repo, [], [("d", tree, meta)])
    return raw_commit(repo, (tree, meta))


# ---------------------------------------------------------------- objects that lie


def filez_bomb(repo: Repo, declared: int = 10, inflated: int = 1 << 30) -> str:
    """A content object whose header declares `declared` bytes and whose deflate stream expands to
    `inflated` zero bytes (1 GiB is about 1 MiB compressed). It is named after its declared content."""
    meta = O.FileMeta(0, 0, 0o100644)
    checksum = O.content_checksum(meta, b"\0" * declared)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = bytes(1 << 20)
    body = bytearray(O.archive_header(meta, declared))
    for _ in range(inflated // len(block)):
        body += comp.compress(block)
    body += comp.flush()
    path = repo.object_path(checksum, ObjectType.FILE)
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(bytes(body))
    return tree_commit(repo, [("bomb", checksum)])


def trailing_data(repo: Repo) -> str:
    """A content object whose deflate stream is followed by more bytes."""
    checksum = content(repo, b"honest\n")
    path = repo.object_path(checksum, ObjectType.FILE)
    path.write_bytes(path.read_bytes() + b"smuggled")
    return tree_commit(repo, [("f", checksum)])


def oversized_dirtree(repo: Repo, size: int = (10 << 20) + (1 << 20)) -> str:
    """A well-formed dirtree over ostree 2022.7's 10 MiB metadata limit (entries of ~45 bytes)."""
    checksum = content(repo, b"x")
    count = size // 45
    files = [(f"f{index:08d}", checksum) for index in range(count)]
    return tree_commit(repo, files)


def wrong_content(repo: Repo) -> str:
    """A content object whose bytes are another object's: its name does not match what it holds."""
    named, other = content(repo, b"expected\n"), content(repo, b"tampered\n")
    repo.object_path(named, ObjectType.FILE).write_bytes(repo.object_path(other, ObjectType.FILE).read_bytes())
    return tree_commit(repo, [("f", named)])


def wrong_dirtree(repo: Repo) -> str:
    """A dirtree whose bytes are another dirtree's."""
    named = raw_dirtree(repo, [("a", content(repo, b"a\n"))])
    other = raw_dirtree(repo, [("b", content(repo, b"b\n"))])
    repo.object_path(named, ObjectType.DIRTREE).write_bytes(repo.object_path(other, ObjectType.DIRTREE).read_bytes())
    return raw_commit(repo, (named, dirmeta(repo)))


def garbage_summary(repo: Repo) -> str:
    """A summary that is not a GVariant of the summary type (the refs stay where they are)."""
    commit = duplicate_file(repo)
    (repo.path / "summary").write_bytes(bytes(range(256)) * 3)
    return commit


def retyped_signature(repo: Repo) -> str:
    """Detached metadata whose ed25519 signature entry is a string, not an array of byte strings."""
    commit = duplicate_file(repo)
    repo.write_detached_metadata(commit, gvariant.encode("a{sv}", [("ostree.sign.ed25519", gvariant.Variant(
        "s", "not a signature"))]))
    return commit


def far_future(repo: Repo) -> str:
    return tree_commit(repo, [("f", content(repo, b"f\n"))], timestamp=99999999999999)


# ---------------------------------------------------------------- serving


class _NoLengthHandler(http.server.SimpleHTTPRequestHandler):
    """Files without Content-Length, the end of the body marked by closing the connection."""

    protocol_version = "HTTP/1.0"

    def send_header(self, keyword: str, value: str) -> None:
        if keyword.lower() != "content-length":
            super().send_header(keyword, value)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve_without_length(root: Path) -> Iterator[str]:
    handler = functools.partial(_NoLengthHandler, directory=str(root))
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
