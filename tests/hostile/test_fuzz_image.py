"""Seeded mutation fuzzing of everything the image layer parses from untrusted bytes: the GVariant decoder,
commit, dirtree, dirmeta, .filez header and content, summary, static delta superblock and part, detached
signature metadata and key files. Every input must parse or raise StrataError: no other exception, and no
input may take more than a few seconds.

Seeds are the objects the real ostree wrote in tests/data/vectors and objects strata writes (with xattrs,
signatures, deltas). STRATA_FUZZ_ITERATIONS=N sets the number of mutated inputs in all (default 5000,
about 15 s); STRATA_FUZZ_SEED=S another seed. `python -m tests.hostile.test_fuzz_image` runs it alone
and prints the statistics."""

from __future__ import annotations

import os
import random
import signal
import sys
import tarfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from strata.errors import StrataError
from strata.image import gpg, gvariant, inspect, sign
from strata.image import objects as O
from strata.image.commit import CommitRequest, commit_directory
from strata.image.deltas import PART_TYPE, _part_body, apply_part, generate, parse_superblock
from strata.image.keyfile import KeyFile
from strata.image.objects import ObjectType
from strata.image.repo import Repo, RepoMode
from strata.image.summary import SUMMARY_TYPE, advertised_deltas, parse_summary, update_summary

VECTORS = Path(__file__).parent.parent / "data" / "vectors"
SEED = int(os.environ.get("STRATA_FUZZ_SEED", "9"))
DEFAULT_ITERATIONS = 5000
INPUT_SECONDS = 5.0  # generous for a loaded CI machine; the slowest input is reported
BOUNDARY_INTS = (0, 1, 2, 7, 8, 31, 32, 33, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFF)
GVARIANT_TYPES = (O.COMMIT_TYPE, O.DIRTREE_TYPE, O.DIRMETA_TYPE, O.ARCHIVE_HEADER_TYPE, "a{sv}", SUMMARY_TYPE,
                  PART_TYPE, "v", "av", "a(say)", "(tas)", "mv", "a{s(taya{sv})}", "aay")


# ---------------------------------------------------------------- parsers under test


def _filez(data: bytes) -> object:
    meta, size, offset = O.parse_archive_header(data)
    return meta if meta.is_symlink else O.archive_decompress(data[offset:], size)


def _commit(data: bytes) -> object:
    """What pull, log and show do with a commit."""
    commit = O.Commit.parse(data)
    lines = inspect.log_entry("0" * 64, commit) + [inspect.format_value(value) for _key, value in commit.metadata]
    return commit.typed_meta("ostree.ref-binding", "as"), lines


def _summary(data: bytes) -> object:
    return parse_summary(data), advertised_deltas(data)


def _superblock(data: bytes) -> object:
    return parse_superblock(data)


def _part(data: bytes) -> object:
    return gvariant.decode(PART_TYPE, _part_body(data, 1 << 20), strict=False)


def _signatures(data: bytes) -> object:
    return sign.signatures(data), gpg.signatures(data)


def _keyfile(data: bytes) -> object:
    config = KeyFile.parse_bytes(data)
    return config.get_number('remote "origin"', "timeout", 30, low=0.1, high=86400)


def _any_gvariant(data: bytes) -> object:
    return [gvariant.decode(sig, data, strict=strict) for sig in GVARIANT_TYPES for strict in (True, False)
            if _decodes(sig, data, strict)]


def _decodes(sig: str, data: bytes, strict: bool) -> bool:
    try:
        gvariant.decode(sig, data, strict=strict)
        return True
    except StrataError:
        return False


PARSERS: dict[str, Callable[[bytes], object]] = {
    "commit": _commit,
    "dirtree": lambda data: O.DirTree.parse(data),
    "dirtree-loose": lambda data: O.DirTree.parse(data, strict=False),
    "dirmeta": lambda data: O.DirMeta.parse(data),
    "filez": _filez,
    "summary": _summary,
    "superblock": _superblock,
    "part": _part,
    "commitmeta": _signatures,
    "config": _keyfile,
    "gvariant": _any_gvariant,
}


# ---------------------------------------------------------------- seeds


def vector_seeds() -> Iterator[tuple[str, bytes]]:
    """(parser, bytes) for every object and summary the real ostree wrote in the vectors."""
    kinds = {"commit": "commit", "dirtree": "dirtree", "dirmeta": "dirmeta", "filez": "filez"}
    for archive in ("a/archive.tar", "d/archive.tar"):
        with tarfile.open(VECTORS / archive) as tf:
            for member in tf.getmembers():
                extracted = tf.extractfile(member) if member.isfile() else None
                if extracted is None:
                    continue
                name = member.name.rsplit("/", 1)[-1]
                kind = kinds.get(name.rsplit(".", 1)[-1]) if "/objects/" in member.name else (
                    "summary" if name == "summary" else "config" if name == "config" else None)
                if kind is not None:
                    yield kind, extracted.read()


def strata_seeds(repo: Repo, work: Path) -> Iterator[tuple[str, bytes]]:
    """Objects strata writes: a commit with xattrs and a symlink, a signed commit, a delta, a summary."""
    tree = work / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "data").write_bytes(bytes(range(256)) * 40)
    (tree / "link").symlink_to("sub/data")
    os.setxattr(tree / "sub", "user.fuzz", b"value")
    first = commit_directory(repo, tree, "fuzz", CommitRequest(subject="one", timestamp=1,
                                                               metadata=[("version", "s", "1.0")]))
    (tree / "sub" / "more").write_text("more\n")
    second = commit_directory(repo, tree, "fuzz", CommitRequest(subject="two", timestamp=2, parent=first))
    secret, _public = sign.generate_keypair()
    detached = sign.add_signature(None, sign.sign(repo.read_metadata(second, ObjectType.COMMIT),
                                                  sign.load_secret(secret)))
    yield "commitmeta", detached
    delta = generate(repo, first, second, compress=False)  # its part's operations are what mutations should hit
    yield "superblock", (delta / "superblock").read_bytes()
    yield "part", (delta / "0").read_bytes()
    yield "part", (generate(repo, None, second) / "0").read_bytes()
    yield "summary", update_summary(repo)
    yield "config", (repo.path / "config").read_bytes() + b'[remote "origin"]\nurl=http://x\ntimeout=5\n'
    for checksum, objtype in repo.list_objects():
        kind = "filez" if objtype is ObjectType.FILE else objtype.value
        if kind in ("commit", "dirtree", "dirmeta", "filez"):
            path = repo.path / O.object_relpath(checksum, objtype, True)
            yield kind, path.read_bytes()


# ---------------------------------------------------------------- mutation


STRUCTURED = {"commit": O.COMMIT_TYPE, "summary": SUMMARY_TYPE, "commitmeta": "a{sv}"}


def _palette(rng: random.Random) -> gvariant.Variant:
    """A well-formed value of a type the reader may not expect, for a key it knows."""
    deep = gvariant.Variant("s", "bottom")
    for _ in range(rng.choice((1, 2, 60, 120))):
        deep = gvariant.Variant("v", deep)
    return rng.choice((gvariant.Variant("s", "x" * rng.choice((0, 1, 300))), gvariant.Variant("t", (1 << 64) - 1),
                       gvariant.Variant("as", ["a", ""]), gvariant.Variant("ay", b"\0" * 31),
                       gvariant.Variant("aay", [b"", b"x" * 64]), gvariant.Variant("b", True),
                       gvariant.Variant("a{sv}", [("k", gvariant.Variant("i", -1))]), deep))


class Mutator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def mutate_value(self, sig: str, data: bytes) -> bytes:
        """Decode, give some variant values another type or nesting, encode: well-formed, unexpected."""
        return gvariant.encode(sig, self._retype(gvariant.decode(sig, data, strict=False)))

    def _retype(self, value: Any) -> Any:
        if isinstance(value, gvariant.Variant):
            return _palette(self.rng) if self.rng.random() < 0.3 else gvariant.Variant(value.type,
                                                                                      self._retype(value.value))
        if isinstance(value, tuple):
            return tuple(self._retype(item) for item in value)
        if isinstance(value, list):
            return [self._retype(item) for item in value]
        return value

    def mutate(self, data: bytes, other: bytes) -> bytes:
        out = bytearray(data)
        for _ in range(self.rng.choice((1, 1, 1, 2, 3, 8))):
            operation = self.rng.choice((self._flip, self._flip, self._byte, self._offset, self._offset,
                                         self._truncate, self._insert, self._delete, self._duplicate))
            operation(out, other)
        return bytes(out)

    def _position(self, out: bytearray, *, near_end: bool = False) -> int:
        if not out:
            return 0
        if near_end and self.rng.random() < 0.7:  # framing offsets sit at the end of GVariant containers
            return max(0, len(out) - self.rng.randint(1, min(len(out), 16)))
        return self.rng.randrange(len(out))

    def _flip(self, out: bytearray, _other: bytes) -> None:
        if out:
            out[self._position(out)] ^= 1 << self.rng.randrange(8)

    def _byte(self, out: bytearray, _other: bytes) -> None:
        if out:
            out[self._position(out)] = self.rng.choice((0, 0xFF, 0x2F, 0x2E, self.rng.randrange(256)))

    def _offset(self, out: bytearray, _other: bytes) -> None:
        """Overwrite a little-endian framing offset or a big-endian length field with a boundary value."""
        width = self.rng.choice((1, 2, 4, 8))
        value = self.rng.choice((*BOUNDARY_INTS, len(out), len(out) + 1, len(out) - 1)) % (1 << (8 * width))
        position = self._position(out, near_end=True)
        order = self.rng.choice(("little", "big"))
        out[position:position + width] = value.to_bytes(width, order)  # type: ignore[arg-type]

    def _truncate(self, out: bytearray, _other: bytes) -> None:
        del out[self._position(out):]

    def _insert(self, out: bytearray, _other: bytes) -> None:
        position = self._position(out)
        out[position:position] = self.rng.randbytes(self.rng.choice((1, 2, 4, 8, 33)))

    def _delete(self, out: bytearray, _other: bytes) -> None:
        position = self._position(out)
        del out[position:position + self.rng.choice((1, 2, 4, 32, 64))]

    def _duplicate(self, out: bytearray, other: bytes) -> None:
        """Splice in a piece of this or another seed (repeats entries, mixes types)."""
        source = other if other and self.rng.random() < 0.5 else bytes(out)
        if not source:
            return
        start = self.rng.randrange(len(source))
        piece = source[start:start + self.rng.randint(1, 64)]
        position = self._position(out)
        out[position:position] = piece


# ---------------------------------------------------------------- the loop


class _Slow(Exception):
    pass


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    def expire(_signum: int, _frame: FrameType | None) -> None:
        raise _Slow

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Stats:
    inputs: int = 0
    parsed: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    findings: list[str] = field(default_factory=list)
    slowest: float = 0.0


def fuzz(corpus: Corpus, count: int, seed: int, keep: Path | None = None,
         input_seconds: float = INPUT_SECONDS) -> Stats:
    mutator = Mutator(seed)
    stats = Stats()
    for index in range(count):
        kind, data = corpus.seeds[index % len(corpus.seeds)]
        if kind in STRUCTURED and mutator.rng.random() < 0.3:
            sample = mutator.mutate_value(STRUCTURED[kind], data)
        else:
            sample = mutator.mutate(data, mutator.rng.choice(corpus.seeds)[1])
        outcome = _run_one(corpus.parsers[kind], sample, stats, input_seconds)
        stats.inputs += 1
        if outcome in ("parsed", "refused"):
            (stats.parsed if outcome == "parsed" else stats.refused)[kind] += 1
            continue
        stats.findings.append(f"{kind} input {index}: {outcome}")
        if keep is not None:
            (keep / f"finding-{kind}-{index}.bin").write_bytes(sample)
    return stats


def _run_one(parser: Callable[[bytes], Any], sample: bytes, stats: Stats, seconds: float) -> str:
    start = time.perf_counter()
    try:
        with time_limit(seconds):
            parser(sample)
        outcome = "parsed"
    except StrataError:
        outcome = "refused"
    except _Slow:
        outcome = f"took more than {seconds} s"
    except Exception as exc:  # any other exception is what the fuzzer looks for
        outcome = f"{type(exc).__name__}: {str(exc)[:200]}"
    stats.slowest = max(stats.slowest, time.perf_counter() - start)
    return outcome


@dataclass
class Corpus:
    seeds: list[tuple[str, bytes]]  # (parser name, valid input)
    parsers: dict[str, Callable[[bytes], object]]


def build_corpus(work: Path) -> Corpus:
    repo = Repo.init(work / "repo", RepoMode.ARCHIVE)
    seeds = list(vector_seeds()) + list(strata_seeds(repo, work))
    seeds += [("gvariant", data) for kind, data in seeds if kind in ("commit", "dirtree", "dirmeta", "summary")]
    seeds += [("dirtree-loose", data) for kind, data in seeds if kind == "dirtree"]
    parsers = dict(PARSERS)
    # Executing a delta part: its operations against the part header the superblock gave, into a scratch repo.
    superblock = next(data for kind, data in seeds if kind == "superblock")
    header = parse_superblock(superblock).parts[0]
    scratch = Repo.init(work / "scratch", RepoMode.BARE_USER)
    parsers["part-apply"] = lambda data: apply_part(scratch, data, header)
    seeds += [("part-apply", data) for kind, data in seeds if kind == "part"][:1]
    return Corpus(seeds, parsers)


def test_seeds_parse(tmp_path: Path) -> None:
    """The unmutated seeds are valid: the fuzzer starts from objects every parser accepts."""
    corpus = build_corpus(tmp_path)
    assert {kind for kind, _ in corpus.seeds} == set(corpus.parsers)
    for kind, data in corpus.seeds:
        corpus.parsers[kind](data)


def test_mutated_objects_parse_or_refuse(tmp_path: Path) -> None:
    count = int(os.environ.get("STRATA_FUZZ_ITERATIONS", DEFAULT_ITERATIONS))
    stats = fuzz(build_corpus(tmp_path), count, SEED, keep=tmp_path)
    assert stats.findings == [], "\n".join(stats.findings[:20])
    assert stats.inputs == count and sum(stats.refused.values()) > count // 4  # the mutations do bite


def test_fuzzer_reports_crashes_and_hangs(tmp_path: Path) -> None:
    """The harness itself: a parser that raises something else, or loops, is reported, with its input kept."""
    def fragile(data: bytes) -> object:
        if data[:1] == b"h":
            while True:
                pass
        return data.decode("ascii")

    corpus = Corpus([("fragile", b"harmless text"), ("fragile", b"plain ascii")], {"fragile": fragile})
    stats = fuzz(corpus, 40, SEED, keep=tmp_path, input_seconds=0.2)
    assert any("UnicodeDecodeError" in f for f in stats.findings)
    assert any("took more than" in f for f in stats.findings)
    assert len(list(tmp_path.glob("finding-fragile-*.bin"))) == len(stats.findings)


def main() -> int:
    import tempfile
    count = int(os.environ.get("STRATA_FUZZ_ITERATIONS", DEFAULT_ITERATIONS))
    with tempfile.TemporaryDirectory() as tmp:
        corpus = build_corpus(Path(tmp))
        start = time.monotonic()
        stats = fuzz(corpus, count, SEED, keep=Path(tmp))
        elapsed = time.monotonic() - start
    print(f"{stats.inputs} inputs from {len(corpus.seeds)} seeds (seed {SEED}) in {elapsed:.1f} s; slowest input "
          f"{stats.slowest * 1000:.0f} ms; {len(stats.findings)} findings")
    for kind in corpus.parsers:
        print(f"  {kind:14} parsed {stats.parsed[kind]:7}  refused {stats.refused[kind]:7}")
    for finding in stats.findings[:50]:
        print("  " + finding)
    return 1 if stats.findings else 0


if __name__ == "__main__":
    sys.exit(main())
