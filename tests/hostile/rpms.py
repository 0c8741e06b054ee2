"""A generator of hostile RPMs: packages built with rpm-rs (as the lab distribution builds its own) whose
names, modes, scripts or bytes are what an attacker would ship, plus helpers to tamper with a built package
(with or without re-sealing its digests), sign it with the real `rpmsign`, and publish it as an rpm-md
repository with a `.repo` file.

    rpm = build_hostile_rpm(tmp, "evil", files={"/usr/bin/evil": b"x"}, scripts={"post": "echo hi"})
    corrupt_payload(rpm)                      # the payload digest no longer matches
    repo = make_repo(tmp / "repo", [rpm])     # createrepo_c metadata
    write_repo_file(tmp / "evil.repo", "evil", repo)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import rpm_rs

ARCH = "x86_64"
SOURCE_DATE = 1700000000
SCRIPT_KINDS = {"pre": "pre_install_script", "post": "post_install_script", "posttrans": "post_trans_script",
                "pretrans": "pre_trans_script", "preun": "pre_uninstall_script",
                "postun": "post_uninstall_script"}
HEADER_MAGIC = b"\x8e\xad\xe8\x01\x00\x00\x00\x00"
LEAD_SIZE = 96
# Tags of the signature header and of the main header that carry digests (rpm's rpmtag.h numbering).
SIG_SIZE, SIG_MD5, SIG_SHA1, SIG_SHA256 = 1000, 1004, 269, 273
TAG_FILESIZES, TAG_PAYLOADDIGEST, TAG_PAYLOADDIGESTALT = 1028, 5092, 5097
TYPE_INT32, TYPE_STRING, TYPE_BIN, TYPE_STRING_ARRAY = 4, 6, 7, 8

# Names an attacker would put in a payload.
TRAVERSAL_PATHS = ("/../../../tmp/strata-hostile-escape", "/usr/../../../tmp/strata-hostile-escape")
TMPFILES_INJECTION_DIR = "/var/lib/x\nR! /usr/share/test-scripts - - - -"
LONG_NAME = "/usr/share/" + "n" * 300


def build_hostile_rpm(outdir: Path, name: str, version: str = "1", release: str = "1", *, arch: str = ARCH,
                      files: Mapping[str, bytes] | None = None, symlinks: Mapping[str, str] | None = None,
                      dirs: Iterable[str] = (), scripts: Mapping[str, str] | None = None,
                      requires: Iterable[str] = (), provides: Iterable[str] = (),
                      modes: Mapping[str, int] | None = None, compressed: bool = True) -> Path:
    """Build one package. files: path -> content; symlinks: path -> target; dirs: directory paths;
    scripts: kind (pre, post, posttrans, pretrans, preun, postun) -> /bin/sh body; modes: path -> permission
    bits (e.g. 0o4755 for setuid), default 0644 for files and 0755 for dirs; requires/provides: "name" or
    "name OP version". Paths are taken as given: traversal, newlines and long names are not cleaned.
    compressed=False writes an uncompressed payload, so that tests can find and change file bytes in it."""
    outdir.mkdir(parents=True, exist_ok=True)
    mode_of = dict(modes or {})
    compression = rpm_rs.CompressionType.Zstd if compressed else rpm_rs.CompressionType.NONE
    builder = rpm_rs.PackageBuilder(name, version, "MIT", arch, f"hostile package {name}")
    builder.using_config(rpm_rs.BuildConfig(format=rpm_rs.RpmFormat.V4, compression=compression,
                                            source_date=SOURCE_DATE))
    builder.release(release)
    builder.description(f"hostile package {name}")
    builder.build_host("strata-hostile")
    for path in dirs:
        builder.with_dir_entry(rpm_rs.FileOptions.dir(path, permissions=mode_of.get(path, 0o755)))
    for path, content in (files or {}).items():
        builder.with_file_contents(content, rpm_rs.FileOptions.new(path, permissions=mode_of.get(path, 0o644)))
    for path, target in (symlinks or {}).items():
        builder.with_symlink(rpm_rs.FileOptions.symlink(path, target))
    for dep in requires:
        _add_dependency(builder.requires, dep)
    for dep in provides:
        _add_dependency(builder.provides, dep)
    for kind, body in (scripts or {}).items():
        getattr(builder, SCRIPT_KINDS[kind])(body)
    written = Path(str(builder.build().write_to(str(outdir))))
    os.utime(written, (SOURCE_DATE, SOURCE_DATE))
    return written


def _add_dependency(add: object, dep: str) -> None:
    assert callable(add)
    parts = dep.split()
    if len(parts) == 3:
        flags = rpm_rs.DependencyFlags
        ops = {">=": flags.GREATER | flags.EQUAL, "<=": flags.LESS | flags.EQUAL, "=": flags.EQUAL,
               ">": flags.GREATER, "<": flags.LESS}
        add(parts[0], parts[2], ops[parts[1]])
    else:
        add(dep)


# ---------------------------------------------------------------- the header structure, for tampering


@dataclass(frozen=True)
class HeaderEntry:
    tag: int
    type: int
    offset: int  # absolute offset in the file of the entry's data
    count: int


@dataclass(frozen=True)
class Layout:
    """Where the parts of a v4 package are: signature header, main header, payload."""

    signature_start: int
    signature_entries: dict[int, HeaderEntry]
    header_start: int
    header_entries: dict[int, HeaderEntry]
    payload_start: int


def _read_header(data: bytes, start: int) -> tuple[dict[int, HeaderEntry], int]:
    """The entries of the header at start and the offset just past its store."""
    if data[start:start + 8] != HEADER_MAGIC:
        raise ValueError(f"no RPM header at offset {start}")
    count, store_size = struct.unpack(">II", data[start + 8:start + 16])
    store = start + 16 + 16 * count
    entries = {}
    for index in range(count):
        tag, kind, offset, items = struct.unpack(">IIiI", data[start + 16 + 16 * index:start + 32 + 16 * index])
        entries[tag] = HeaderEntry(tag, kind, store + offset, items)
    return entries, store + store_size


def layout(data: bytes) -> Layout:
    signature, signature_end = _read_header(data, LEAD_SIZE)
    header_start = signature_end + (-signature_end % 8)
    header, payload_start = _read_header(data, header_start)
    return Layout(LEAD_SIZE, signature, header_start, header, payload_start)


def _put_hex(data: bytearray, entry: HeaderEntry, digest: str) -> None:
    """Overwrite a hex-string digest in place (same length, so no offset moves)."""
    encoded = digest.encode()
    data[entry.offset:entry.offset + len(encoded)] = encoded


def reseal(path: Path) -> None:
    """Recompute every digest of the package after tampering, so that only its content is hostile."""
    data = bytearray(path.read_bytes())
    parts = layout(bytes(data))
    payload = bytes(data[parts.payload_start:])
    for tag in (TAG_PAYLOADDIGEST, TAG_PAYLOADDIGESTALT):
        entry = parts.header_entries.get(tag)
        if entry is not None and (tag == TAG_PAYLOADDIGEST or _uncompressed(parts, data)):
            _put_hex(data, entry, hashlib.sha256(payload).hexdigest())
    header_blob = bytes(data[parts.header_start:parts.payload_start])
    if SIG_SHA256 in parts.signature_entries:
        _put_hex(data, parts.signature_entries[SIG_SHA256], hashlib.sha256(header_blob).hexdigest())
    if SIG_SHA1 in parts.signature_entries:
        _put_hex(data, parts.signature_entries[SIG_SHA1], hashlib.sha1(header_blob).hexdigest())
    if SIG_MD5 in parts.signature_entries:
        offset = parts.signature_entries[SIG_MD5].offset
        data[offset:offset + 16] = hashlib.md5(header_blob + payload).digest()
    if SIG_SIZE in parts.signature_entries:
        offset = parts.signature_entries[SIG_SIZE].offset
        data[offset:offset + 4] = struct.pack(">I", len(header_blob) + len(payload))
    path.write_bytes(bytes(data))


def _uncompressed(parts: Layout, data: bytearray) -> bool:
    return 1125 not in parts.header_entries  # RPMTAG_PAYLOADCOMPRESSOR absent: rpm-rs wrote a plain cpio


def corrupt_header(path: Path) -> None:
    """Change one byte of the main header's summary text without fixing the digests."""
    data = bytearray(path.read_bytes())
    parts = layout(bytes(data))
    summary = parts.header_entries[1004]  # RPMTAG_SUMMARY
    data[summary.offset] ^= 0x20
    path.write_bytes(bytes(data))


def corrupt_payload(path: Path, old: bytes | None = None, new: bytes | None = None) -> None:
    """Change payload bytes without fixing the digests: replace old by new (same length) in an uncompressed
    payload, or flip the last byte of any payload."""
    data = bytearray(path.read_bytes())
    start = layout(bytes(data)).payload_start
    if old is None or new is None:
        data[-1] ^= 0xFF
    else:
        if len(old) != len(new):
            raise ValueError("old and new must have the same length")
        index = data.find(old, start)
        if index < 0:
            raise ValueError("bytes not found in the payload")
        data[index:index + len(old)] = new
    path.write_bytes(bytes(data))


def truncate(path: Path, keep: int) -> None:
    """Cut the file after keep bytes (negative: drop that many from the end)."""
    data = path.read_bytes()
    path.write_bytes(data[:keep])


def declare_file_size(path: Path, size: int) -> None:
    """Make the header declare every file as size bytes (digests re-sealed: the package looks valid)."""
    data = bytearray(path.read_bytes())
    entry = layout(bytes(data)).header_entries[TAG_FILESIZES]
    for index in range(entry.count):
        offset = entry.offset + 4 * index
        data[offset:offset + 4] = struct.pack(">I", size & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    reseal(path)


CPIO_FIELDS = ("ino", "mode", "uid", "gid", "nlink", "mtime", "filesize")


def set_cpio_field(path: Path, member: str, field: str, value: int) -> None:
    """In an uncompressed payload, set a field of member's cpio (newc) header (digests re-sealed)."""
    data = bytearray(path.read_bytes())
    start = layout(bytes(data)).payload_start
    name = member.lstrip("/").encode()
    for prefix in (b"./", b"/", b""):
        index = data.find(prefix + name + b"\0", start)
        if index >= 0:
            break
    else:
        raise ValueError(f"{member} not found in the payload")
    header = data.rfind(b"070701", start, index)
    offset = header + 6 + 8 * CPIO_FIELDS.index(field)
    data[offset:offset + 8] = f"{value & 0xFFFFFFFF:08X}".encode()
    path.write_bytes(bytes(data))
    reseal(path)


def declare_cpio_size(path: Path, member: str, size: int) -> None:
    """Make the cpio header of member declare size bytes (uncompressed payload; digests re-sealed)."""
    set_cpio_field(path, member, "filesize", size)


# ---------------------------------------------------------------- repositories and signatures


def make_repo(directory: Path, rpms: Iterable[Path]) -> Path:
    """Copy rpms into directory/Packages and generate its rpm-md metadata with createrepo_c."""
    packages = directory / "Packages"
    packages.mkdir(parents=True, exist_ok=True)
    for rpm in rpms:
        shutil.copy2(rpm, packages / rpm.name)
    createrepo = shutil.which("createrepo_c")
    if createrepo is None:
        raise RuntimeError("createrepo_c is not installed (run tools/setup.sh)")
    subprocess.run([createrepo, "--quiet", "--no-database", str(directory)], check=True)
    return directory


def write_repo_file(path: Path, repo_id: str, baseurl: Path | str, *, gpgcheck: bool = False,
                    gpgkey: Iterable[str] = (), repo_gpgcheck: bool = False, extra: Mapping[str, str] | None = None
                    ) -> Path:
    """A .repo file with one section; baseurl may be a directory (made a file:// URL) or a URL."""
    url = f"file://{Path(baseurl).resolve()}" if isinstance(baseurl, Path) else baseurl
    lines = [f"[{repo_id}]", f"name={repo_id}", f"baseurl={url}", "enabled=1", f"gpgcheck={int(gpgcheck)}",
             f"repo_gpgcheck={int(repo_gpgcheck)}", "metadata_expire=0"]
    keys = list(gpgkey)
    if keys:
        lines.append("gpgkey=" + " ".join(keys))
    lines += [f"{key}={value}" for key, value in (extra or {}).items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass(frozen=True)
class GpgKey:
    """A throwaway signing key in its own GNUPGHOME; stop() ends its agent."""

    home: Path
    uid: str
    public_key: Path  # ASCII-armored export

    def stop(self) -> None:
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "all"], check=False,
                       capture_output=True)


def make_gpg_key(home: Path, uid: str = "strata hostile test <hostile@example.invalid>") -> GpgKey:
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    subprocess.run(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "",
                    "--quick-generate-key", uid, "rsa2048", "sign", "never"],
                   env=env, check=True, capture_output=True)
    public = home / "public.asc"
    exported = subprocess.run(["gpg", "--armor", "--export", uid], env=env, check=True, capture_output=True)
    public.write_bytes(exported.stdout)
    return GpgKey(home, uid, public)


def sign_rpm(rpm: Path, key: GpgKey) -> None:
    """Sign with the real rpmsign (Debian package `rpm`)."""
    gpg = shutil.which("gpg") or "gpg"
    subprocess.run(["rpmsign", "--addsign", "--define", f"_gpg_name {key.uid}", "--define", f"__gpg {gpg}",
                    "--define", f"_gpg_path {key.home}", str(rpm)],
                   env={**os.environ, "GNUPGHOME": str(key.home)}, check=True, capture_output=True,
                   stdin=subprocess.DEVNULL)


def sign_repomd(repo: Path, key: GpgKey) -> Path:
    """Write repodata/repomd.xml.asc, a detached armored signature, as yum repositories publish it."""
    repomd = repo / "repodata" / "repomd.xml"
    subprocess.run(["gpg", "--batch", "--yes", "--armor", "--local-user", key.uid, "--detach-sign",
                    "--output", f"{repomd}.asc", str(repomd)],
                   env={**os.environ, "GNUPGHOME": str(key.home)}, check=True, capture_output=True)
    return Path(f"{repomd}.asc")
