"""Static delta pieces: rollsum chunking against a plain model of bup's rolling sum, bsdiff patches, hostile
part programs, and `strata-ostree static-delta` options checked against the real ostree."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from strata.errors import CorruptionError, NotFoundError
from strata.image import bsdiff, gvariant, rollsum, varint
from strata.image.deltas import PART_TYPE, DeltaPart, apply_local, apply_part
from strata.image.objects import ObjectType
from strata.image.repo import Repo, RepoMode
from strata.image.sign import generate_keypair
from tests.conftest import run_ostree

REF = "test"


def model_chunks(data: bytes) -> list[tuple[int, int, int]]:
    """bup's rolling sum restarted at every chunk, one byte at a time, as ostree cuts files."""
    chunks, start, ended = [], 0, False
    while start < len(data):
        length = 0
        if not ended:
            s1, s2, window = 64 * 31, 64 * 63 * 31, [0] * 64
            for count in range(len(data) - start):
                byte, drop = data[start + count], window[count % 64]
                window[count % 64] = byte
                s1 = (s1 + byte - drop) & 0xFFFFFFFF
                s2 = (s2 + s1 - 64 * (drop + 31)) & 0xFFFFFFFF
                if s2 & 0x1FFF == 0x1FFF:
                    length = count + 1
                    break
            ended = length == 0
        length = min(length or 32768, 32768, len(data) - start)
        chunks.append((zlib.crc32(data[:length]), start, length))
        start += length
    return chunks


@pytest.mark.parametrize("size", [0, 1, 63, 70_000, 1_200_000])
def test_rollsum_chunks_follow_bup(size: int) -> None:
    rng = random.Random(size)
    data = bytes(rng.randrange(4) for _ in range(size // 2)) + rng.randbytes(size - size // 2)
    got = [(c.crc, c.start, c.length) for c in rollsum.chunks(data)]
    assert got == model_chunks(data)
    assert sum(length for _crc, _start, length in got) == size


def test_rollsum_matches_need_the_same_file_start() -> None:
    old = random.Random(1).randbytes(400_000)
    appended = rollsum.compute_matches(old, old + b"\0" * 40)
    assert appended.match_ratio >= 90 and all(m.to_start == m.from_start for m in appended.matches)
    assert rollsum.compute_matches(old, b"aheader\n" + old).bufmatches == 0  # ostree's choice: bsdiff instead


def test_bsdiff_round_trip_and_hostile_patches() -> None:
    rng = random.Random(2)
    old = rng.randbytes(50_000)
    new = old[:1000] + b"changed" + old[1000:40_000] + rng.randbytes(500)
    patch = bsdiff.diff(old, new)
    assert bsdiff.patch(old, patch, len(new)) == new
    negative = bsdiff.encode_offset(-1) + bsdiff.encode_offset(0) + bsdiff.encode_offset(0)
    for bad in (patch[:-1], patch[:10], negative + patch[24:], bsdiff.encode_offset(1 << 40) + patch[8:]):
        with pytest.raises(CorruptionError):
            bsdiff.patch(old, bad, len(new))


def _part(ops: bytes, payload: bytes = b"") -> bytes:
    return b"\0" + gvariant.encode(PART_TYPE, ([(0, 0, 0o100644)], [[]], payload, ops))


@pytest.mark.parametrize("ops", [
    b"Z",  # unknown opcode
    b"w" + varint.encode(1) + varint.encode(0),  # write with nothing open
    b"o" + varint.encode(0) + varint.encode(0) + varint.encode(4) + b"w" + varint.encode(8) + varint.encode(0),
    b"o" + varint.encode(0) + varint.encode(0) + varint.encode(4) + b"c",  # closed short
    b"c",  # close with nothing open
    b"o" + varint.encode(0) + varint.encode(0) + varint.encode(4) + b"B" + varint.encode(0) + varint.encode(4),
    b"r" + varint.encode(40),  # read source past the payload
    b"S" + varint.encode(0) + varint.encode(0) + varint.encode(4) + varint.encode(0) + b"S",  # more than listed
    b"o" + varint.encode(0) + varint.encode(0) + b"\x80",  # truncated varint
    b"",  # ends before making its object
    b"o" + varint.encode(0) + varint.encode(0) + varint.encode(1 << 40),  # more than the header declares
])
def test_hostile_part_programs_are_refused(tmp_path: Path, ops: bytes) -> None:
    repo = Repo.init(tmp_path / "repo", RepoMode.BARE_USER)
    part = DeltaPart(b"\0" * 32, 0, 4, [(ObjectType.FILE, "ab" * 32)])
    with pytest.raises(CorruptionError):
        apply_part(repo, _part(ops, b"data" * 10), part)
    assert list(repo.list_objects()) == []


# ---------------------------------------------------------------- the command line against the real ostree


def strata_ostree(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "strata.cli.ostree", *args], capture_output=True, text=True,
                          check=check)


@pytest.fixture(scope="module")
def commits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    root = tmp_path_factory.mktemp("deltas")
    repo, tree = root / "repo", root / "tree"
    run_ostree(f"--repo={repo}", "init", "--mode=archive")
    tree.mkdir()
    rng = random.Random(3)
    (tree / "prog").write_bytes(rng.randbytes(100_000))
    run_ostree(f"--repo={repo}", "commit", "-b", REF, f"--tree=dir={tree}")
    (tree / "prog").write_bytes(b"aheader\n" + (tree / "prog").read_bytes())
    (tree / "fresh").write_bytes(bytes(1_100_000))  # new and over a megabyte: a fallback candidate
    run_ostree(f"--repo={repo}", "commit", "-b", REF, f"--tree=dir={tree}")
    new = run_ostree(f"--repo={repo}", "rev-parse", REF).stdout.strip()
    return repo, run_ostree(f"--repo={repo}", "rev-parse", f"{REF}^").stdout.strip(), new


def bare_client(path: Path, source: Path, commit: str) -> Path:
    run_ostree(f"--repo={path}", "init", "--mode=bare-user")
    run_ostree(f"--repo={path}", "pull-local", str(source), commit)
    return path


def test_generate_messages_and_errors_as_ostree(commits: tuple[Path, str, str]) -> None:
    repo, old, new = commits
    made = strata_ostree(f"--repo={repo}", "static-delta", "generate", f"--to={new}")  # --from defaults to TO^
    assert made.stdout == f"Generating static delta:\n  From: {old}\n  To:   {new}\n"
    again = strata_ostree(f"--repo={repo}", "static-delta", "generate", "-n", f"--from={old}", f"--to={new}")
    assert again.stdout == f"Delta {old}-{new} already exists.\n"
    for args, message in ((["--empty", f"--from={old}", f"--to={new}"], "Cannot specify both --empty and --from=REV"),
                          ([], "TO revision must be specified"),
                          (["--set-endianness=x", f"--to={new}"], "Invalid endianness 'x'")):
        ours = strata_ostree(f"--repo={repo}", "static-delta", "generate", *args, check=False)
        theirs = run_ostree(f"--repo={repo}", "static-delta", "generate", *args, check=False)
        assert (ours.returncode, ours.stderr) == (1, f"error: {message}\n")
        assert theirs.returncode == 1 and message in theirs.stderr
    bad = strata_ostree(f"--repo={repo}", "static-delta", "show", "GARBAGE", check=False)
    assert bad.stderr == "error: Invalid rev GARBAGE\n"
    assert strata_ostree(f"--repo={repo}", "static-delta", "list").stdout == f"{old}-{new}\n"
    strata_ostree(f"--repo={repo}", "static-delta", "delete", f"{old}-{new}")
    assert strata_ostree(f"--repo={repo}", "static-delta", "list").stdout == "(No static deltas)\n"


def test_inline_swapped_and_fallback_deltas(commits: tuple[Path, str, str], tmp_path: Path) -> None:
    repo, old, new = commits
    name = f"{old}-{new}"
    strata_ostree(f"--repo={repo}", "static-delta", "generate", "--inline", "--swap-endianness", f"--from={old}",
                  f"--to={new}")
    directory = next((repo / "deltas").glob("*/*-*"))
    assert sorted(p.name for p in directory.iterdir()) == ["superblock"]
    # ostree 2022.7's show looks for part files even for inline deltas (and fails after the header lines)
    assert "Endianness: big\n" in run_ostree(f"--repo={repo}", "static-delta", "show", name, check=False).stdout
    assert "Endianness: big\n" in strata_ostree(f"--repo={repo}", "static-delta", "show", name).stdout
    client = bare_client(tmp_path / "client", repo, old)
    run_ostree(f"--repo={client}", "static-delta", "apply-offline", str(directory))
    assert "no errors found" in run_ostree(f"--repo={client}", "fsck").stdout
    # files over --min-fallback-size megabytes are left to single fetches; offline application refuses those
    strata_ostree(f"--repo={repo}", "static-delta", "generate", "--min-fallback-size=1", f"--from={old}",
                  f"--to={new}")
    ours = strata_ostree(f"--repo={repo}", "static-delta", "show", name).stdout
    assert ours == run_ostree(f"--repo={repo}", "static-delta", "show", name).stdout
    assert "Number of fallback entries: 1" in ours
    refused = strata_ostree(f"--repo={bare_client(tmp_path / 'c2', repo, old)}", "static-delta", "apply-offline",
                            str(directory), check=False)
    assert refused.stderr == "error: Cannot execute delta offline: contains nonempty http fallback entries\n"
    strata_ostree(f"--repo={repo}", "static-delta", "delete", name)


def test_filename_writes_outside_the_repository(commits: tuple[Path, str, str], tmp_path: Path) -> None:
    repo, _old, new = commits
    target = tmp_path / "out" / "some.delta"
    target.parent.mkdir()
    strata_ostree(f"--repo={repo}", "static-delta", "generate", "--empty", f"--to={new}", f"--filename={target}")
    assert sorted(p.name for p in target.parent.iterdir()) == ["0", "some.delta"]
    assert strata_ostree(f"--repo={repo}", "static-delta", "list").stdout == "(No static deltas)\n"
    header = f"From <scratch>\nTo: {new}\nEndianness: little\n"
    assert header in run_ostree(f"--repo={repo}", "static-delta", "show", str(target), check=False).stdout
    assert header in strata_ostree(f"--repo={repo}", "static-delta", "show", str(target)).stdout


def ostree_dummy_signing(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The real ostree with its test-only 'dummy' signatures enabled (Debian's build has no ed25519)."""
    return subprocess.run(["ostree", *args], capture_output=True, text=True, check=check,
                          env={**os.environ, "OSTREE_DUMMY_SIGN_ENABLED": "1"})


def test_signed_deltas_verified_both_ways(commits: tuple[Path, str, str], tmp_path: Path) -> None:
    repo, old, new = commits
    name = f"{old}-{new}"
    for maker in (strata_ostree, ostree_dummy_signing):
        maker(f"--repo={repo}", "static-delta", "generate", f"--from={old}", f"--to={new}", "--sign-type=dummy",
              "--sign=secretkey")
        for checker in (strata_ostree, ostree_dummy_signing):
            good = checker(f"--repo={repo}", "static-delta", "verify", "--sign-type=dummy", name, "secretkey")
            assert good.stdout == "Verification OK\n"
            bad = checker(f"--repo={repo}", "static-delta", "verify", "--sign-type=dummy", name, "wrong",
                          check=False)
            assert (bad.returncode, bad.stdout) == (1, "Verification fails\n")
    secret, public = generate_keypair()
    _other_secret, wrong = generate_keypair()
    strata_ostree(f"--repo={repo}", "static-delta", "generate", f"--from={old}", f"--to={new}",
                  "--sign-type=ed25519", f"--sign={secret}")
    assert "Signed: yes" in strata_ostree(f"--repo={repo}", "static-delta", "show", name).stdout
    good = strata_ostree(f"--repo={repo}", "static-delta", "verify", name, wrong, public)
    assert good.stdout == "Verification OK\n"
    directory = next((repo / "deltas").glob("*/*-*"))
    client = bare_client(tmp_path / "client", repo, old)
    refused = strata_ostree(f"--repo={client}", "static-delta", "apply-offline", str(directory), wrong, check=False)
    assert refused.stderr.startswith("error: ed25519: Signature couldn't be verified with: key '")
    assert not (client / "objects" / new[:2] / f"{new[2:]}.commit").exists()
    strata_ostree(f"--repo={client}", "static-delta", "apply-offline", str(directory), public)
    assert "no errors found" in run_ostree(f"--repo={client}", "fsck").stdout
    strata_ostree(f"--repo={repo}", "static-delta", "delete", name)


def test_local_delta_found_through_the_index(commits: tuple[Path, str, str], tmp_path: Path) -> None:
    repo, old, new = commits
    strata_ostree(f"--repo={repo}", "static-delta", "generate", f"--from={old}", f"--to={new}")
    run_ostree(f"--repo={repo}", "summary", "-u")
    client = Repo.open(bare_client(tmp_path / "client", repo, old))
    assert apply_local(client, Repo.open(repo), new) == f"{old}-{new}"
    assert "no errors found" in run_ostree(f"--repo={client.path}", "fsck").stdout
    shutil.rmtree(repo / "delta-indexes")  # the summary says deltas are indexed: no index, no delta
    with pytest.raises(NotFoundError, match=f"Static deltas required, but none found for {new}"):
        apply_local(client, Repo.open(repo), new)
    strata_ostree(f"--repo={repo}", "static-delta", "delete", f"{old}-{new}")
