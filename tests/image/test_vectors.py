"""strata's encodings reproduce, byte for byte, every object the real ostree wrote in the vectors."""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from pathlib import Path
from typing import Any

import pytest

from strata.errors import CorruptionError
from strata.image import gvariant
from strata.image import objects as O
from strata.image.objects import Commit, DirMeta, DirTree

PARSERS: dict[str, Any] = {"dirtree": DirTree, "dirmeta": DirMeta, "commit": Commit}


def _objects(archive: Path) -> list[tuple[str, str, bytes]]:
    found = []
    with tarfile.open(archive) as tf:
        for member in tf.getmembers():
            if "/objects/" not in member.name or not member.isfile():
                continue
            rel = member.name.split("/objects/")[1]
            checksum = rel[:2] + rel[3:].split(".")[0]
            extracted = tf.extractfile(member)
            assert extracted is not None
            found.append((checksum, rel.rsplit(".", 1)[1], extracted.read()))
    return found


@pytest.mark.parametrize("archive", ["a/archive.tar", "d/archive.tar", "b/osrepo.tar"])
def test_archive_objects_roundtrip(vectors: Path, archive: str) -> None:
    objects = _objects(vectors / archive)
    assert objects
    for checksum, ext, data in objects:
        if ext == "filez":
            meta, size, offset = O.parse_archive_header(data)
            content = b"" if meta.is_symlink else O.archive_decompress(data[offset:], size)
            assert O.content_checksum(meta, content) == checksum
            rebuilt = O.archive_header(meta, size) + (b"" if meta.is_symlink else O.archive_compress(content))
            assert rebuilt == data, f"{checksum}.filez differs"
        else:
            assert hashlib.sha256(data).hexdigest() == checksum
            assert PARSERS[ext].parse(data).serialize() == data


def test_expected_commits(vectors: Path, expected: dict[str, Any]) -> None:
    objects = {c: d for c, ext, d in _objects(vectors / "a/archive.tar") if ext == "commit"}
    for info in expected["a"]["commits"]:
        commit = Commit.parse(objects[info["checksum"]])
        assert commit.root_tree == info["root_dirtree"]
        assert commit.root_meta == info["root_dirmeta"]
        assert commit.parent == info["parent"]
        assert commit.content_checksum == info["content_checksum"]
        assert len(commit.serialize()) == info["commit_object_size"]


def test_worked_examples() -> None:
    empty = O.FileMeta(0, 0, 0o100644)
    assert O.content_checksum(empty) == "cc700d46f407c6c5ab2d5dde474366a928b7398277e61162e7f8ec06f469f07e"
    link = O.FileMeta(0, 0, 0o120777, "README.md")
    assert O.content_checksum(link) == "80c4dde42bcbc67aeb67807fb09f015f23cff8306ba8e62ca0cdd013e3e2faa6"
    root_meta = DirMeta(0, 0, 0o40755).serialize()
    assert hashlib.sha256(root_meta).hexdigest() == "446a0ef11b7cc167f3b603e585c7eeeeb675faa412d5ec73f62988eb0b6c5488"
    assert DirTree().serialize() == b"\0"
    xattr_meta = DirMeta(0, 0, 0o40755, ((b"user.strata.dir", b"d"),)).serialize()
    assert hashlib.sha256(xattr_meta).hexdigest() == (
        "4a8b35c42a5d72c4a0bcf9dc7325113b530f518692b4cf7e130e05845e886c1a")


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b"])
def test_bad_names_refused_when_reading(bad: str) -> None:
    from strata.errors import InvalidInputError
    data = gvariant.encode(O.DIRTREE_TYPE, ([(bad, b"\1" * 32)], []))
    with pytest.raises(InvalidInputError):
        DirTree.parse(data)


@pytest.mark.parametrize(("files", "dirs", "problem"), [
    ([("b", 1), ("a", 1)], [], "unsorted entries ('b' before) 'a'"),
    ([("a", 1), ("a", 2)], [], "duplicate name 'a'"),
    ([], [("d", 1), ("d", 1)], "duplicate name 'd'"),
    ([("Z", 1), ("a", 1), ("\u00e9", 1)], [("z", 1), ("\u00fc", 1)], ""),  # byte order: 'Z' < 'a' < 'é'
])
def test_dirtree_entries_strictly_ascending(files: list[tuple[str, int]], dirs: list[tuple[str, int]],
                                            problem: str) -> None:
    data = gvariant.encode(O.DIRTREE_TYPE, ([(n, bytes([c]) * 32) for n, c in files],
                                            [(n, bytes([c]) * 32, bytes([c]) * 32) for n, c in dirs]))
    if not problem:
        assert DirTree.parse(data).serialize() == data
        return
    with pytest.raises(CorruptionError, match=re.escape(problem)):
        DirTree.parse(data, strict=False)


def test_inflation_stops_at_the_declared_size() -> None:
    meta = O.FileMeta(0, 0, 0o100644)
    bomb = O.archive_compress(bytes(64 << 20))  # 64 MiB of zeros in about 64 KiB
    with pytest.raises(CorruptionError, match="inflates beyond the header size 10"):
        O.archive_decompress(bomb, 10)
    with pytest.raises(CorruptionError, match="data follows"):
        O.archive_decompress(O.archive_compress(b"0123456789") + b"x", 10)
    with pytest.raises(CorruptionError, match="truncated"):
        O.archive_decompress(O.archive_compress(bytes(range(256)) * 8)[:-4], 2048)
    digest = hashlib.sha256(O.file_header(meta))
    with pytest.raises(CorruptionError, match="inflates beyond"):
        O.hash_inflated(io.BytesIO(bomb).read, digest, 1 << 20)


def test_gvariant_nesting_limited() -> None:
    value: object = gvariant.Variant("s", "x")
    for _ in range(200):
        value = gvariant.Variant("v", value)
    data = gvariant.encode("v", value)
    with pytest.raises(CorruptionError, match="nested deeper than 128"):
        gvariant.decode("v", data)
    with pytest.raises(CorruptionError):
        gvariant.decode("v", b"x\0" + b"a" * 300 + b"y")
