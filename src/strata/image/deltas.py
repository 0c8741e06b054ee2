"""Static deltas: names and the superblock digests the summary advertises (spec §17)."""

from __future__ import annotations

import base64
import hashlib

from strata.image.repo import Repo


def to_mbase64(checksum: str) -> str:
    """ostree's modified base64 of a checksum: '/' becomes '_', no padding."""
    return base64.b64encode(bytes.fromhex(checksum)).decode().rstrip("=").replace("/", "_")


def from_mbase64(text: str) -> str:
    padded = text.replace("_", "/") + "=" * (-len(text) % 4)
    return base64.b64decode(padded).hex()


def list_deltas(repo: Repo) -> list[tuple[str, bytes]]:
    """(FROM-TO or TO, sha256 of the superblock) for every delta in deltas/."""
    top = repo.path / "deltas"
    if not top.is_dir():
        return []
    found = []
    for prefix in sorted(top.iterdir()):
        for rest in sorted(prefix.iterdir()):
            superblock = rest / "superblock"
            if not superblock.is_file():
                continue
            name = prefix.name + rest.name
            if "-" in name:
                source, _, target = name.partition("-")
                label = f"{from_mbase64(source)}-{from_mbase64(target)}"
            else:
                label = from_mbase64(name)
            found.append((label, hashlib.sha256(superblock.read_bytes()).digest()))
    return found
