"""Seeded mutation fuzzing of the RPM reader (lead, signature header, header index and store, payload) and
of the rpm-md parsers (.repo files, repomd.xml, primary.xml through libsolv): every input is read or refused
with StrataError; no other exception, no Rust panic, no input that takes seconds.

STRATA_FUZZ_ITERATIONS=N sets the number of inputs per target (default: a few thousand in all, < 30 s);
STRATA_FUZZ_SEED=S picks another seed. A failing input is kept in the test's tmp directory."""

from __future__ import annotations

import os
import random
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from strata.errors import StrataError
from strata.packages.rpmformat import LEAD_SIZE, read_layout
from strata.packages.rpmmd import RepoConfig, RepoMetadata, parse_repo_files, parse_repomd
from strata.packages.rpmread import RpmHeader, RpmPackage
from strata.packages.solver import Solver
from tests.hostile import rpms as H

SEED = int(os.environ.get("STRATA_FUZZ_SEED", "20261202"))
SLOW_INPUT_SECONDS = 5.0
INTERESTING_INTS = (0, 1, 2, 7, 8, 15, 16, 0x7F, 0x80, 0xFF, 0xFFFF, 0x10000, 0x0FFFFFFF, 0x7FFFFFFF, 0x80000000,
                    0xFFFFFFFF)
INTERESTING_TEXT = (b"..", b"/", b"\0", b"../../", b"99999999999999999999", b"-1", b"&amp;", b"<", b">", b"]]>",
                    b'"', b"sha999", b"\xff\xfe", b"\n", b"=", b"[", b"]", b"%", b"$basearch")
SCRIPT_KINDS = ("pre", "post", "posttrans", "pretrans", "preun", "postun")


def iterations(default: int) -> int:
    return int(os.environ.get("STRATA_FUZZ_ITERATIONS", default))


@dataclass(frozen=True)
class Region:
    start: int
    end: int


class Mutator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def mutate(self, data: bytes, regions: list[Region]) -> bytes:
        out = bytearray(data)
        for _ in range(self.rng.randint(1, 3)):
            region = self.rng.choice(regions)
            position = self.rng.randrange(region.start, max(region.start + 1, min(region.end, len(out))))
            if position >= len(out):
                continue
            self.rng.choice([self._flip, self._byte, self._int32, self._truncate, self._delete, self._insert,
                             self._text])(out, position)
        return bytes(out)

    def _flip(self, out: bytearray, position: int) -> None:
        out[position] ^= 1 << self.rng.randrange(8)

    def _byte(self, out: bytearray, position: int) -> None:
        out[position] = self.rng.choice((0, 1, 0x7F, 0x80, 0xFF, self.rng.randrange(256)))

    def _int32(self, out: bytearray, position: int) -> None:
        aligned = position - position % 4
        out[aligned:aligned + 4] = self.rng.choice(INTERESTING_INTS).to_bytes(4, "big")

    def _truncate(self, out: bytearray, position: int) -> None:
        del out[position:]

    def _delete(self, out: bytearray, position: int) -> None:
        del out[position:position + self.rng.randint(1, 64)]

    def _insert(self, out: bytearray, position: int) -> None:
        out[position:position] = self.rng.randbytes(self.rng.randint(1, 64))

    def _text(self, out: bytearray, position: int) -> None:
        token = self.rng.choice(INTERESTING_TEXT)
        out[position:position + (len(token) if self.rng.random() < 0.5 else 0)] = token


def run_inputs(name: str, count: int, inputs: Iterator[bytes], exercise: Callable[[bytes], object],
               keep: Path) -> None:
    slowest = 0.0
    refused = 0
    for index, data in zip(range(count), inputs, strict=False):
        started = time.monotonic()
        try:
            exercise(data)
        except StrataError as exc:
            refused += 1
            assert "\n" not in str(exc), f"{name} #{index}: multi-line error {exc!r}"
        except BaseException as exc:  # a Rust panic is a BaseException
            if isinstance(exc, KeyboardInterrupt):
                raise
            (keep / f"{name}-{index}.bin").write_bytes(data)
            raise AssertionError(f"{name} input #{index} (seed {SEED}, kept in {keep}) raised "
                                 f"{type(exc).__name__}: {str(exc)[:200]}") from exc
        elapsed = time.monotonic() - started
        slowest = max(slowest, elapsed)
        if elapsed > SLOW_INPUT_SECONDS:
            (keep / f"{name}-{index}.bin").write_bytes(data)
            raise AssertionError(f"{name} input #{index} took {elapsed:.1f} s")
    print(f"{name}: {count} inputs, {refused} refused, slowest {slowest * 1000:.1f} ms")


# ---------------------------------------------------------------- RPM


def seed_rpm(outdir: Path, compressed: bool) -> Path:
    return H.build_hostile_rpm(
        outdir, "fuzzed", compressed=compressed,
        files={"/usr/bin/fuzzed": b"#!/bin/sh\necho fuzzed\n", "/usr/share/fuzzed/data": bytes(range(256)) * 4},
        symlinks={"/usr/bin/fuzzed-link": "fuzzed", "/var/lib/fuzzed-link": "/usr/share/fuzzed"},
        dirs=["/usr/share/fuzzed", "/var/lib/fuzzed"], scripts={kind: f"echo {kind}" for kind in SCRIPT_KINDS},
        requires=["bash", "glibc >= 2.0"], provides=["fuzzed-virtual = 1"], modes={"/usr/bin/fuzzed": 0o4755})


def rpm_regions(data: bytes) -> list[Region]:
    """Lead, signature header index, its store, main header index, its store, start of the payload."""
    parts = H.layout(data)
    count = int.from_bytes(data[LEAD_SIZE + 8:LEAD_SIZE + 12], "big")
    signature_store = LEAD_SIZE + 16 + 16 * count
    header_count = int.from_bytes(data[parts.header_start + 8:parts.header_start + 12], "big")
    header_store = parts.header_start + 16 + 16 * header_count
    return [Region(0, LEAD_SIZE), Region(LEAD_SIZE, signature_store), Region(signature_store, parts.header_start),
            Region(parts.header_start, header_store), Region(header_store, parts.payload_start),
            Region(parts.payload_start, parts.payload_start + 64)]


def read_everything(pkg: RpmHeader) -> None:
    pkg.nevra.nevra  # noqa: B018 - reading is the test
    for entry in pkg.files:
        assert isinstance(entry.path, str)
    for kind in SCRIPT_KINDS:
        pkg.scriptlets(kind)
    pkg.transfiletriggers_in()
    for kind in ("requires", "provides", "conflicts", "obsoletes", "recommends"):
        pkg.dependencies(kind)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    base = tmp_path_factory.mktemp("fuzz-seeds")
    return [seed_rpm(base / "plain", compressed=False).read_bytes(),
            seed_rpm(base / "zstd", compressed=True).read_bytes()]


def mutated(seeds: list[bytes], salt: int) -> Iterator[bytes]:
    mutator = Mutator(SEED + salt)
    while True:
        seed = mutator.rng.choice(seeds)
        yield mutator.mutate(seed, rpm_regions(seed))


def test_fuzz_rpm_files(seeds: list[bytes], tmp_path: Path) -> None:
    """Whole files: the structure and digest checks must refuse every mutation cleanly."""
    target = tmp_path / "input.rpm"

    def exercise(data: bytes) -> None:
        target.write_bytes(data)
        pkg = RpmPackage.open(target)
        read_everything(pkg)
        list(pkg.payload())

    run_inputs("rpm-file", iterations(1500), mutated(seeds, 1), exercise, tmp_path)


def test_fuzz_rpm_headers(seeds: list[bytes], tmp_path: Path) -> None:
    """Headers without digests in the way: what rpm-rs parses after the structure check."""
    def exercise(data: bytes) -> None:
        try:
            end = H.layout(data).payload_start
        except (ValueError, IndexError, struct.error):  # the test's own layout reader gave up: take it all
            end = len(data)
        read_everything(RpmHeader.from_bytes(data[:end]))

    run_inputs("rpm-header", iterations(1500), mutated(seeds, 2), exercise, tmp_path)


def test_fuzz_resealed_rpms(seeds: list[bytes], tmp_path: Path) -> None:
    """Mutations whose digests the attacker fixed up: the payload reader and header consumers see them."""
    target = tmp_path / "input.rpm"

    def inputs() -> Iterator[bytes]:
        for data in mutated(seeds, 3):
            target.write_bytes(data)
            try:
                H.reseal(target)
            except (ValueError, IndexError, KeyError, struct.error):
                continue  # the mutation broke the structure the resealer needs: the other targets cover it
            yield target.read_bytes()

    def exercise(data: bytes) -> None:
        target.write_bytes(data)
        pkg = RpmPackage.open(target)
        read_everything(pkg)
        list(pkg.payload())

    run_inputs("rpm-resealed", iterations(600), inputs(), exercise, tmp_path)


def test_structure_reader_refuses_huge_declarations(seeds: list[bytes], tmp_path: Path) -> None:
    data = bytearray(seeds[0])
    data[LEAD_SIZE + 8:LEAD_SIZE + 16] = (0x7FFFFFFF).to_bytes(4, "big") + (0x7FFFFFFF).to_bytes(4, "big")
    target = tmp_path / "huge.rpm"
    target.write_bytes(bytes(data))
    with pytest.raises(StrataError, match=r"huge.rpm: not an RPM package \(signature header too large"):
        RpmPackage.open(target)
    import io
    with pytest.raises(StrataError, match="too large"):
        read_layout(io.BytesIO(bytes(data)))


# ---------------------------------------------------------------- rpm-md


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("fuzz-repo")
    rpms = [H.build_hostile_rpm(base / "build", f"pkg{i}", requires=[f"pkg{i + 1}"] if i < 2 else [],
                                files={f"/usr/share/pkg{i}/file": b"x"}) for i in range(3)]
    return H.make_repo(base / "repo", rpms)


def text_regions(data: bytes) -> list[Region]:
    return [Region(0, len(data))]


def mutated_text(seed: bytes, salt: int) -> Iterator[bytes]:
    mutator = Mutator(SEED + salt)
    while True:
        yield mutator.mutate(seed, text_regions(seed))


def test_fuzz_repomd(published: Path, tmp_path: Path) -> None:
    seed = (published / "repodata/repomd.xml").read_bytes()
    run_inputs("repomd", iterations(1500), mutated_text(seed, 4), parse_repomd, tmp_path)


def test_fuzz_primary_through_libsolv(published: Path, tmp_path: Path) -> None:
    import gzip
    primary = next((published / "repodata").glob("*-primary.xml.gz"))
    seed = gzip.decompress(primary.read_bytes())
    target = tmp_path / "primary.xml"
    config = RepoConfig("fuzz", "fuzz", f"file://{published}")
    meta = RepoMetadata(config, "1", 0, {"primary": target}, published / "repodata/repomd.xml", cached=False)

    def exercise(data: bytes) -> None:
        target.write_bytes(data)
        for candidate in Solver([meta]).resolve(["pkg0"]).install:
            assert candidate.location and candidate.checksum[0] in ("sha256", "sha1", "sha512", "sha384", "sha224",
                                                                     "md5")

    run_inputs("primary", iterations(800), mutated_text(seed, 5), exercise, tmp_path)


def test_fuzz_repo_files(tmp_path: Path) -> None:
    seed = H.write_repo_file(tmp_path / "seed.repo", "fuzz", "https://example.invalid/repo", gpgcheck=True,
                             gpgkey=["file:///etc/pki/key"], extra={"name": "Fuzz $basearch"}).read_bytes()
    directory = tmp_path / "repos"
    directory.mkdir()
    target = directory / "fuzz.repo"

    def exercise(data: bytes) -> None:
        target.write_bytes(data)
        for config in parse_repo_files(directory, {"basearch": "x86_64"}):
            assert config.id and "/" not in config.id and config.id not in (".", "..")

    run_inputs("repo-file", iterations(1500), mutated_text(seed, 6), exercise, tmp_path)
