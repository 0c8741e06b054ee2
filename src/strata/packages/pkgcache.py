"""The package cache: one commit per RPM under rpmostree/pkg/NAME/EVR.ARCH refs (spec E.1)."""

from __future__ import annotations

import string

from strata.errors import InvalidInputError, StrataError
from strata.image.objects import ObjectType
from strata.image.repo import Repo
from strata.packages.nevra import Nevra
from strata.packages.rpmread import RpmHeader

PKG_REF_PREFIX = "rpmostree/pkg"
_KEEP = frozenset(string.ascii_letters + string.digits + ".-")


def escape_ref_component(text: str) -> str:
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        if char == "_":
            out.append("__")
        elif char in _KEEP:
            out.append(char)
        else:
            out.append(f"_{byte:02X}")
    return "".join(out)


def unescape_ref_component(text: str) -> str:
    out = bytearray()
    i = 0
    while i < len(text):
        char = text[i]
        if char != "_":
            out.append(ord(char))
            i += 1
        elif text[i + 1:i + 2] == "_":
            out.append(ord("_"))
            i += 2
        else:
            hex_digits = text[i + 1:i + 3]
            if len(hex_digits) != 2:
                raise InvalidInputError(f"malformed package cache ref component: {text}")
            out.append(int(hex_digits, 16))
            i += 3
    return out.decode("utf-8")


def evr_string(epoch: int | None, version: str, release: str) -> str:
    return f"{epoch}:{version}-{release}" if epoch else f"{version}-{release}"


def package_ref(name: str, epoch: int | None, version: str, release: str, arch: str) -> str:
    evr = evr_string(epoch, version, release)
    return f"{PKG_REF_PREFIX}/{escape_ref_component(name)}/{escape_ref_component(evr)}.{escape_ref_component(arch)}"


def cached_commit(repo: Repo, nevra: Nevra, repodata_checksum: str, *, nodocs: bool) -> str | None:
    """The package's commit if it is cached from the same RPM (same repodata checksum) and filtering."""
    commit = repo.read_ref(package_ref(nevra.name, nevra.epoch, nevra.version, nevra.release, nevra.arch))
    if commit is None or not repo.has_object(commit, ObjectType.COMMIT):
        return None
    loaded = repo.load_commit(commit)
    if loaded.meta("rpmostree.repodata_checksum") != repodata_checksum:
        return None
    if bool(loaded.meta("rpmostree.nodocs", False)) != nodocs:
        return None
    return commit


def header_of(repo: Repo, commit: str) -> RpmHeader:
    raw = repo.load_commit(commit).meta("rpmostree.metadata")
    if not isinstance(raw, bytes):
        raise StrataError(f"package commit {commit} has no rpmostree.metadata")
    return RpmHeader.from_bytes(raw)
