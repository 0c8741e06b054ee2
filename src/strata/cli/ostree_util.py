"""Helpers the ostree verb modules share: revs, refs, dates, small files."""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from strata.errors import InvalidInputError, NotFoundError, StrataError
from strata.image.objects import ObjectType
from strata.image.parents import repo_chain
from strata.image.repo import Repo


def resolve(repo: Repo, rev: str) -> str:
    """A rev as ostree resolves it; REMOTE/REF also names the remote ref REMOTE:REF."""
    try:
        checksum = repo.resolve_rev(rev)
    except NotFoundError:
        if "/" in rev and ":" not in rev:
            try:
                return resolve(repo, rev.replace("/", ":", 1))
            except NotFoundError:
                pass
        raise NotFoundError(f"Refspec '{rev}' not found") from None
    assert checksum is not None
    return checksum


def holder_of(repo: Repo, checksum: str) -> Repo:
    """The repository holding a commit: repo itself, or one of its core.parent repositories."""
    return next((holder for holder in repo_chain(repo) if holder.has_object(checksum, ObjectType.COMMIT)), repo)


def set_refspec(repo: Repo, refspec: str, checksum: str | None) -> None:
    """Point REF or REMOTE:REF at checksum (None deletes it). An empty directory in the way of a new ref is
    removed, and so are the directories a deleted ref leaves empty, as ostree does."""
    remote, _, ref = refspec.rpartition(":")
    top = repo.path / "refs" / ("remotes/" + remote if remote else "heads")
    path = top / ref
    if checksum is not None and path.is_dir() and not path.is_symlink():
        try:
            path.rmdir()
        except OSError:
            raise StrataError(f"Cannot create ref {refspec}: a directory of refs with that name exists") from None
    repo.set_ref(ref, checksum, remote=remote or None)
    if checksum is None:
        parent = path.parent
        while parent != top and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent


def parse_datetime(text: str) -> int:
    """A date as ostree (gnulib's parse_datetime) reads it: ISO 8601, '@SECONDS', or what `date -d` takes."""
    if text.startswith("@") and text[1:].lstrip("-").isdigit():
        return int(text[1:])
    for candidate in (text, text.replace(" +", "+").replace(" -", "-")):
        try:
            parsed = datetime.fromisoformat(candidate.replace("Z", "+00:00"))
        except ValueError:
            continue
        return int((parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp())
    result = subprocess.run(["date", "-u", "-d", text, "+%s"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise InvalidInputError(f"Could not parse '{text}'")
    return int(result.stdout.strip())


def key_value(text: str, option: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise InvalidInputError(f"Missing '=' in KEY=VALUE for --{option}")
    if not key:
        raise InvalidInputError("Empty metadata key")
    return key, value


def lines_of(path: str) -> list[str]:
    return [line for line in Path(path).read_text().splitlines() if line]


def refs_changed(repo: Repo, *, by_commit: bool = False) -> None:
    """Refs moved: with core.auto-update-summary (or, for a commit, core.commit-update-summary) the summary
    follows at once, as ostree keeps it."""
    config = repo.config
    if config.get_bool("core", "auto-update-summary", False) or (
            by_commit and config.get_bool("core", "commit-update-summary", False)):
        from strata.image.summary import update_summary
        update_summary(repo)


_CORRUPT_RES = (re.compile(r"[Cc]orrupted (\w+) object (\w+) \(actual (\w+)\)"),
                re.compile(r"[Cc]orrupted (\w+) object (\w+); actual checksum (\w+)"))
_BAD_NAME_RE = re.compile(r"Invalid (\w+) object (\w+): invalid file name in tree: '([^']*)'")
_MISSING_REF_RE = re.compile(r"^Ref (\S+) points to missing commit (\w+)$")
_IN_COMMIT_RE = re.compile(r"^(.*) \(in commit (\w+)\)$")


def ostree_problem(text: str) -> str:
    """strata's corruption messages in the words ostree uses (scripts grep 'Corrupted ... checksum' and
    'In commits C: ...')."""
    for pattern in _CORRUPT_RES:
        text = pattern.sub(lambda m: f"Corrupted {m[1]} object; checksum expected='{m[2]}' actual='{m[3]}'", text)
    text = _BAD_NAME_RE.sub(lambda m: f"fsck {m[2]}.{m[1]}: {m[2]}.{m[1]}: Invalid / in filename {m[3]}"
                            if "/" in m[3] else m[0], text)
    missing = _MISSING_REF_RE.match(text)
    if missing:
        return f"Loading commit for ref {missing[1]}: No such metadata object {missing[2]}.commit"
    found = _IN_COMMIT_RE.match(text)
    return f"In commits {found[2]}: {found[1]}" if found else text


def objects_by_kind(repo: Repo) -> tuple[set[str], set[str]]:
    """The checksums of a repository's metadata objects and of its content objects."""
    metadata: set[str] = set()
    contents: set[str] = set()
    for checksum, objtype in repo.list_objects():
        (contents if objtype is ObjectType.FILE else metadata).add(checksum)
    return metadata, contents
