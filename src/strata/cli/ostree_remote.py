"""ostree's distribution and maintenance verbs: remote, pull, pull-local, summary, sign, gpg-sign,
fsck, prune, config."""

from __future__ import annotations

import os
import re
import stat
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from strata.cli.ostree import Invocation, UsageError, Verb, dispatch
from strata.cli.ostree_options import array, flag, integer, string
from strata.cli.ostree_util import parse_datetime, resolve
from strata.errors import CorruptionError, InvalidInputError, NotFoundError, StrataError
from strata.image import inspect
from strata.image import objects as O
from strata.image import remote as remotes
from strata.image.config import config_get, config_set, config_unset
from strata.image.fsck import fsck as fsck_repo
from strata.image.objects import ObjectType
from strata.image.prune import PruneOptions
from strata.image.prune import prune as prune_repo
from strata.image.repo import Repo
from strata.image.summary import parse_summary, summary_metadata, update_summary
from strata.image.transfer import pull_local as copy_local

if TYPE_CHECKING:
    from strata.image.pull import PullStats
from strata.image.traverse import commit_objects, history
from strata.units import human_size

# ---------------------------------------------------------------- remote


def _remote_add(inv: Invocation) -> int:
    a = inv.args
    if len(inv.positional) < 2:
        raise UsageError("NAME and URL must be specified")
    name, url, *branches = inv.positional
    repo = inv.repo()
    if a.flag("if-not-exists") and a.flag("force"):
        raise UsageError("Can only specify one of --if-not-exists and --force")
    if a.flag("force"):
        remotes.delete_remote(repo, name, if_exists=True)
    settings = [_setting(text) for text in a.strings("set")]
    if a.flag("no-gpg-verify") or a.flag("no-sign-verify"):
        settings.append(("gpg-verify", "false"))
    elif not any(key == "gpg-verify" for key, _ in settings):
        settings.append(("gpg-verify", "true"))  # ostree verifies GPG signatures unless told not to
    if a.string("contenturl"):
        settings.append(("contenturl", a.string("contenturl") or ""))
    if a.string("collection-id"):
        settings.append(("collection-id", a.string("collection-id") or ""))
    sign_verify = a.strings("sign-verify")
    remotes.add_remote(repo, name, url, branches=branches, sign_verify=sign_verify[0] if sign_verify else None,
                       no_sign_verify=a.flag("no-sign-verify"), settings=settings,
                       if_not_exists=a.flag("if-not-exists"))
    key_file = a.string("gpg-import")
    if key_file:
        from strata.image.gpgkeys import import_selected
        count = import_selected(remotes.keyring_path(repo, name), Path(key_file), [])
        print(f"Imported {count} GPG key{'' if count == 1 else 's'} to remote \"{name}\"")
    return 0


def _setting(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise InvalidInputError(f"Missing '=' in KEY=VALUE for --set: {text}")
    return key, value


def _remote_delete(inv: Invocation) -> int:
    if not inv.positional:
        raise UsageError("NAME must be specified")
    remotes.delete_remote(inv.repo(), inv.positional[0], if_exists=inv.args.flag("if-exists"))
    return 0


def _remote_list(inv: Invocation) -> int:
    repo = inv.repo()
    owners = {name: holder for holder in _repo_chain(repo) for name in remotes.list_remotes(holder)}
    names = sorted(owners)
    width = max((len(n) for n in names), default=0)
    for name in names:
        if inv.args.flag("show-urls"):
            print(f"{name:<{width}}  {remotes.get_remote(owners[name], name).url}")
        else:
            print(name)
    return 0


def _repo_chain(repo: Repo) -> list[Repo]:
    """repo and its core.parent repositories, nearest first."""
    chain = [repo]
    while len(chain) < 16 and chain[-1].config.get("core", "parent"):
        chain.append(Repo.open(Path(chain[-1].config.get("core", "parent") or "")))
    return chain


def _remote_show_url(inv: Invocation) -> int:
    if not inv.positional:
        raise UsageError("NAME must be specified")
    print(remotes.get_remote(inv.repo(), inv.positional[0]).url)
    return 0


def _remote_refs(inv: Invocation) -> int:
    from strata.image.pull import remote_refs
    if not inv.positional:
        raise UsageError("NAME must be specified")
    name = inv.positional[0]
    for ref in sorted(remote_refs(inv.repo(), name)):
        print(f"{name}:{ref}")
    return 0


def _remote_gpg_import(inv: Invocation) -> int:
    if not inv.positional:
        raise UsageError("NAME must be specified")
    from strata.image.gpgkeys import import_selected
    repo = inv.repo()
    name, *key_ids = inv.positional
    remotes.get_remote(repo, name)
    sources = [Path(path) for path in inv.args.strings("keyring")]
    if inv.args.flag("stdin"):
        stdin_copy = repo.path / "tmp" / "gpg-import-stdin"
        stdin_copy.write_bytes(sys.stdin.buffer.read())
        sources.append(stdin_copy)
    if not sources:
        sources = [Path.home() / ".gnupg" / "pubring.kbx"]
    keyring = remotes.keyring_path(repo, name)
    count = sum(import_selected(keyring, source, key_ids) for source in sources)
    print(f"Imported {count} GPG key{'' if count == 1 else 's'} to remote \"{name}\"")
    return 0


REMOTE_VERBS = {
    "add": Verb("add", _remote_add, (array("set"), flag("no-gpg-verify"), flag("no-sign-verify"),
                                     array("sign-verify"), flag("if-not-exists"), flag("force"),
                                     string("gpg-import"), string("custom-backend"), string("contenturl"),
                                     string("collection-id"), string("sysroot"))),
    "delete": Verb("delete", _remote_delete, (flag("if-exists"), string("sysroot"))),
    "list": Verb("list", _remote_list, (flag("show-urls", "u"),)),
    "show-url": Verb("show-url", _remote_show_url),
    "refs": Verb("refs", _remote_refs, (string("cache-dir"),)),
    "gpg-import": Verb("gpg-import", _remote_gpg_import, (array("keyring", "k"), flag("stdin"))),
}


def remote(inv: Invocation) -> int:
    return dispatch(REMOTE_VERBS, _raw_args(inv), "command")


def _raw_args(inv: Invocation) -> list[str]:
    """The arguments a verb with sub-verbs hands on (it parses nothing itself)."""
    return list(inv.args.values.get("__raw__", []))


# ---------------------------------------------------------------- pull, pull-local


def pull(inv: Invocation) -> int:
    from strata.image.pull import PullOptions, remote_refs
    from strata.image.pull import pull as pull_remote
    a = inv.args
    if not inv.positional:
        raise UsageError("REMOTE must be specified")
    repo = inv.repo()
    name, *ref_args = inv.positional
    if ":" in name:
        name, _, first = name.partition(":")
        ref_args = [first, *ref_args]
    options = PullOptions(depth=a.number("depth", 0), commit_metadata_only=a.flag("commit-metadata-only"),
                          mirror=a.flag("mirror"), disable_static_deltas=a.flag("disable-static-deltas"),
                          trusted=a.flag("http-trusted"), url=a.string("url"),
                          headers=tuple(_header(text) for text in a.strings("http-header")),
                          user_agent_suffix=a.string("append-user-agent"),
                          retries=a.number("network-retries", 5) if a.string("network-retries") else None,
                          localcache=tuple(a.strings("localcache-repo")), cache_dir=a.string("cache-dir"))
    _check_pull_request(repo, name, inv)
    pinned = dict(_split_at(ref) for ref in ref_args if "@" in ref)  # REF@COMMIT: that commit, REF moved to it
    options.not_older_than = _timestamp_floors(repo, inv, name, ref_args)
    ref_args = [ref.partition("@")[2] if "@" in ref else ref for ref in ref_args]
    mirror_all = a.flag("mirror") and not ref_args and not _find_remote(repo, name).branches
    if mirror_all:
        ref_args = sorted(remote_refs(repo, name))  # a mirror with no refs named takes every ref of the summary
    remote_url = _find_remote(repo, name).url
    if remote_url.startswith("file://") and not pinned:
        return _pull_from_directory(repo, name, ref_args, mirror=a.flag("mirror"),
                                    depth=a.number("depth", 0))
    bareuseronly = a.flag("bareuseronly-files")
    before = _object_counts(repo) if bareuseronly else (set(), set())
    refs_before = repo.list_refs()
    started = time.monotonic()
    stats = pull_remote(repo, name, ref_args, options)
    elapsed = int(time.monotonic() - started)
    if bareuseronly:
        _undo_unless_bareuseronly(repo, before, refs_before)
    with repo.lock():
        for ref, checksum in pinned.items():
            repo.set_ref(ref, checksum, remote=None if a.flag("mirror") else name)
        if a.flag("commit-metadata-only"):
            _mark_incomplete_partial(repo, list(stats.refs.values()))
        if a.strings("subpath"):  # strata fetches whole trees; the commit stays partial, as after ostree's
            for checksum in stats.refs.values():
                repo.mark_partial(checksum)
    _drop_tombstones_of_present(repo)
    if mirror_all:  # a mirror of some refs keeps its own summary (ostree issue 846)
        _mirror_summary(repo, name)
    print(_pull_status(stats, elapsed))
    return 0


def _timestamp_floors(repo: Repo, inv: Invocation, remote: str, ref_args: list[str]) -> dict[str, str]:
    """-T / --timestamp-check-from-rev: for each pull target, the commit it may not be older than."""
    from_rev = inv.args.string("timestamp-check-from-rev")
    if not (inv.args.flag("timestamp-check") or from_rev):
        return {}
    floors = {}
    for arg in ref_args:
        ref, _, pinned = arg.partition("@")
        current = resolve(repo, from_rev) if from_rev else repo.read_ref(ref, remote=remote)
        if current:
            floors[pinned or ref] = current
    return floors


def _header(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UsageError(f"Missing '=' in --http-header: {text}")
    return key, value


def check_bareuseronly(repo: Repo, checksum: str) -> None:
    """--bareuseronly-files: only regular files within 0775 and symlinks are acceptable."""
    meta = repo.read_file_meta(checksum)
    if meta.is_symlink:
        return
    invalid = stat.S_IMODE(meta.mode) & ~0o775
    if invalid:
        raise InvalidInputError(f"Content object {checksum}: invalid mode 0{meta.mode:04o} with bits 0{invalid:04o}")


def _undo_unless_bareuseronly(repo: Repo, before: tuple[set[str], set[str]], refs_before: dict[str, str]) -> None:
    """ostree refuses such objects while it fetches them; strata checks after the fetch and takes back
    everything the pull stored (objects and refs) when one is refused."""
    new_contents = _object_counts(repo)[1] - before[1]
    try:
        for checksum in sorted(new_contents):
            check_bareuseronly(repo, checksum)
    except InvalidInputError:
        after = _object_counts(repo)
        with repo.lock():
            for name in repo.list_refs():
                if name not in refs_before:
                    remote, _, ref = name.rpartition(":")
                    repo.set_ref(ref, None, remote=remote or None)
            for name, checksum in refs_before.items():
                remote, _, ref = name.rpartition(":")
                repo.set_ref(ref, checksum, remote=remote or None)
            for checksum, objtype in _object_types(repo, after[0] - before[0]):
                repo.object_path(checksum, objtype).unlink(missing_ok=True)
            for checksum in new_contents:
                repo.object_path(checksum, ObjectType.FILE).unlink(missing_ok=True)
        raise


def _pull_from_directory(repo: Repo, name: str, refs: list[str], *, mirror: bool, depth: int) -> int:
    """A file:// remote is a repository on this machine: its objects are imported as pull-local does, with
    the remote's GPG verification."""
    remote = _find_remote(repo, name)
    source = Repo.open(Path(remote.url[len("file://"):]))
    wanted = refs or list(remote.branches) or (list(source.list_refs(remotes=False)) if mirror else [])
    if not wanted:
        raise InvalidInputError(f"No refs to pull from remote {name}")
    if remote.gpg_verify:
        from strata.image import gpg
        for ref in wanted:
            checksum = resolve(source, ref)
            gpg.verify(source.read_metadata(checksum, ObjectType.COMMIT), source.read_detached_metadata(checksum),
                       remote.gpg_keyring, f"commit {checksum}")
    metadata, contents = _missing_objects(source, repo, wanted, depth)
    _link_objects(source, repo, metadata, contents)
    copy_local(source, repo, wanted, remote=None if mirror else name, depth=depth)
    written = sum(_content_bytes(repo, checksum) for checksum in contents)
    print(f"{len(metadata)} metadata, {len(contents)} content objects imported; {human_size(written)} content written")
    return 0


def _drop_tombstones_of_present(repo: Repo) -> None:
    """A commit pulled back is no longer deleted: its tombstone goes."""
    for checksum, objtype in list(repo.list_objects(ObjectType.TOMBSTONE_COMMIT)):
        if repo.has_object(checksum, ObjectType.COMMIT):
            repo.object_path(checksum, objtype).unlink(missing_ok=True)


def _mirror_summary(repo: Repo, name: str) -> None:
    """A mirror keeps the remote's summary (and its signature) as they are."""
    from strata.image.pull import MAX_METADATA_SIZE, PullOptions, remote_fetcher
    remote = _find_remote(repo, name)
    fetcher = remote_fetcher(repo, remote, PullOptions())
    for filename in ("summary", "summary.sig"):
        data = fetcher.get(filename, optional=True, limit=MAX_METADATA_SIZE)
        if data is not None:
            (repo.path / filename).write_bytes(data)


def _mark_incomplete_partial(repo: Repo, commits: list[str]) -> None:
    """A commit whose tree was not fetched is partial (fsck and later pulls know to complete it)."""
    for commit in commits:
        if repo.has_object(commit, ObjectType.COMMIT) and not repo.has_object(repo.load_commit(commit).root_tree,
                                                                               ObjectType.DIRTREE):
            repo.mark_partial(commit)


def _split_at(text: str) -> tuple[str, str]:
    ref, _, checksum = text.partition("@")
    if not O.is_checksum(checksum):
        raise InvalidInputError(f"Invalid checksum '{checksum}' in {text}")
    return ref, checksum


def _find_remote(repo: Repo, name: str) -> remotes.Remote:
    """A remote of repo, or of one of its core.parent repositories."""
    for holder in _repo_chain(repo):
        if name in remotes.list_remotes(holder):
            return remotes.get_remote(holder, name)
    return remotes.get_remote(repo, name)


def _check_pull_request(repo: Repo, name: str, inv: Invocation) -> None:
    url = _find_remote(repo, name).url
    scheme = url.partition("://")[0] if "://" in url else ""
    if scheme not in ("http", "https", "file"):
        raise InvalidInputError(f"Invalid URI scheme in {url}")
    if inv.args.flag("require-static-deltas") and repo.is_archive and not inv.args.flag("dry-run"):
        raise InvalidInputError("Can't use static deltas in an archive repo")
    if inv.args.flag("require-static-deltas") and inv.args.flag("disable-static-deltas"):
        raise InvalidInputError("Can't specify both --disable-static-deltas and --require-static-deltas")


def _object_counts(repo: Repo) -> tuple[set[str], set[str]]:
    metadata: set[str] = set()
    contents: set[str] = set()
    for checksum, objtype in repo.list_objects():
        (contents if objtype is ObjectType.FILE else metadata).add(checksum)
    return metadata, contents


def _pull_status(stats: PullStats, elapsed: int) -> str:
    """ostree's closing line of a pull: objects fetched, bytes transferred, content written."""
    if stats.fetched_delta_parts:
        status = (f"{stats.fetched_delta_parts} delta parts, "
                  f"{stats.fetched_metadata + stats.fetched_content} loose fetched")
    else:
        status = f"{stats.fetched_metadata} metadata, {stats.fetched_content} content objects fetched"
    if stats.imported_metadata or stats.imported_content:
        status += f" ({stats.imported_metadata} meta, {stats.imported_content} content local)"
    transferred = stats.fetched_bytes
    if transferred > 0:
        amount = f"{transferred} B" if transferred < 1024 else f"{transferred // 1024} KiB"
        status += f"; {amount} transferred in {elapsed} seconds"
    return status + f"; {human_size(stats.content_written)} content written"


def pull_local(inv: Invocation) -> int:
    try:
        return _pull_local(inv)
    except StrataError as exc:  # the words ostree uses for a path in a tree name
        slash = re.match(r"^invalid file name in tree: '(.*/.*)'$", str(exc))
        if slash:
            raise CorruptionError(f"Invalid / in filename {slash[1]}") from None
        raise


def _pull_local(inv: Invocation) -> int:
    a = inv.args
    if not inv.positional:
        raise UsageError("DESTINATION must be specified")
    source_path, *ref_args = inv.positional
    source = Repo.open(Path(source_path))
    target = inv.repo()
    refs = ref_args or sorted(source.list_refs())
    for ref in refs if not ref_args else []:
        if ":" in ref:  # ostree mirrors every ref and refuses a remote one (a known limit it reports cleanly)
            raise InvalidInputError(f"Invalid ref name {ref}")
    _verify_local_source(inv, source, target, refs)
    if a.flag("require-static-deltas"):
        _apply_local_deltas(source, target, refs)
    if a.flag("commit-metadata-only"):
        _copy_commit_objects(source, target, refs, a.string("remote"), a.number("depth", 0))
        return 0
    depth = a.number("depth", 0)
    metadata, contents = _missing_objects(source, target, refs, depth)
    written = sum(_content_bytes(source, checksum) for checksum in contents)
    if a.flag("bareuseronly-files"):
        for checksum in sorted(contents):
            check_bareuseronly(source, checksum)
    if a.flag("untrusted"):
        for checksum in sorted(contents):
            _verify_or_raise(source, checksum)
    _link_objects(source, target, metadata, contents)
    copy_local(source, target, refs, remote=a.string("remote"), depth=depth, trusted=not a.flag("untrusted"))
    print(f"{len(metadata)} metadata, {len(contents)} content objects imported; {human_size(written)} content written")
    return 0


def _apply_local_deltas(source: Repo, target: Repo, refs: list[str]) -> None:
    """--require-static-deltas: each ref's commit arrives through a delta the source advertises, or not at all."""
    from strata.image.deltas import apply_local
    for ref in refs:
        commit = source.resolve_rev(ref)
        if commit is not None and not target.has_object(commit, ObjectType.COMMIT):
            apply_local(target, source, commit)


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


def _verify_or_raise(repo: Repo, checksum: str) -> None:
    try:
        repo.verify_content(checksum)
    except CorruptionError as exc:
        raise CorruptionError(ostree_problem(str(exc))) from None


def _verify_local_source(inv: Invocation, source: Repo, target: Repo, refs: list[str]) -> None:
    """pull-local --gpg-verify / --gpg-verify-summary: signatures checked with the keys of --remote."""
    a = inv.args
    if not (a.flag("gpg-verify") or a.flag("gpg-verify-summary")):
        return
    from strata.image import gpg
    remote = a.string("remote")
    if not remote:
        raise UsageError("--gpg-verify and --gpg-verify-summary need --remote")
    keyring = remotes.keyring_path(target, remote)
    if a.flag("gpg-verify-summary"):
        summary = source.path / "summary"
        if not summary.exists():
            raise NotFoundError("GPG verification enabled, but no summary found")
        signature = source.path / "summary.sig"
        gpg.verify(summary.read_bytes(), signature.read_bytes() if signature.exists() else None, keyring, "summary")
    if a.flag("gpg-verify"):
        for ref in refs:
            checksum = resolve(source, ref)
            gpg.verify(source.read_metadata(checksum, ObjectType.COMMIT), source.read_detached_metadata(checksum),
                       keyring, f"commit {checksum}")


def _copy_commit_objects(source: Repo, target: Repo, refs: list[str], remote: str | None, depth: int) -> None:
    """pull-local --commit-metadata-only: the commit objects alone, marked partial, and their refs."""
    with target.lock():
        for ref in refs:
            checksum = resolve(source, ref)
            for commit in history(source, checksum, depth):
                if target.has_object(commit, ObjectType.COMMIT):
                    continue
                target.mark_partial(commit)
                detached = source.read_detached_metadata(commit)
                if detached is not None:
                    target.write_detached_metadata(commit, detached)
                target.write_metadata(ObjectType.COMMIT, source.read_metadata(commit, ObjectType.COMMIT),
                                      expected=commit)
            if not O.is_checksum(ref):
                target.set_ref(ref.rpartition(":")[2], checksum, remote=remote)
    print(f"{len(refs)} metadata, 0 content objects imported; 0 bytes content written")


def _link_objects(source: Repo, target: Repo, metadata: set[str], contents: set[str]) -> None:
    """Between repositories on one filesystem, objects are hardlinked as ostree does: metadata objects always
    (they are the same bytes in every mode, and are checked first), content objects when the modes agree."""
    linkable = [(c, t) for c, t in _object_types(source, metadata)]
    if source.mode is target.mode:
        linkable += [(c, ObjectType.FILE) for c in contents]
    with target.lock():
        for checksum, objtype in linkable:
            if objtype is not ObjectType.FILE and O.sha256_hex(source.read_metadata(checksum, objtype)) != checksum:
                continue
            destination = target.object_path(checksum, objtype)
            destination.parent.mkdir(exist_ok=True)
            try:
                os.link(source.object_path(checksum, objtype), destination, follow_symlinks=False)
            except FileExistsError:
                pass
            except OSError:
                return  # another filesystem (EXDEV) or no permission: copy as usual


def _object_types(repo: Repo, checksums: set[str]) -> list[tuple[str, ObjectType]]:
    found = []
    for checksum in sorted(checksums):
        for objtype in (ObjectType.DIRMETA, ObjectType.DIRTREE, ObjectType.COMMIT):
            if repo.has_object(checksum, objtype):
                found.append((checksum, objtype))
    return found


def _content_bytes(repo: Repo, checksum: str) -> int:
    return 0 if repo.read_file_meta(checksum).is_symlink else inspect.content_size(repo, checksum)


def _missing_objects(source: Repo, target: Repo, refs: list[str], depth: int) -> tuple[set[str], set[str]]:
    """The metadata and content objects a pull-local of refs copies (what target lacks)."""
    metadata: set[str] = set()
    contents: set[str] = set()
    for ref in refs:
        for commit in history(source, resolve(source, ref), depth):
            for checksum, objtype in commit_objects(source, commit):
                if target.has_object(checksum, objtype):
                    continue
                (contents if objtype is ObjectType.FILE else metadata).add(checksum)
    return metadata, contents


# ---------------------------------------------------------------- summary


def summary(inv: Invocation) -> int:
    a = inv.args
    repo = inv.repo()
    if a.flag("update"):
        from strata.cli.ostree_repo import parse_metadata_option
        additional = [parse_metadata_option(text, "add-metadata") for text in a.strings("add-metadata")]
        data = update_summary(repo, additional)
        _sign_summary(inv, repo, data)
        return 0
    path = repo.path / "summary"
    if not path.exists():
        raise NotFoundError("No summary file")
    if a.flag("raw"):
        from strata.image import gvariant
        from strata.image.summary import SUMMARY_TYPE
        print(inspect.format_typed(SUMMARY_TYPE, gvariant.decode(SUMMARY_TYPE, path.read_bytes())))
        return 0
    refs, extra = parse_summary(path.read_bytes())
    for ref in refs:
        print(f"* {ref.name}")
        print(f"    Latest Commit ({ref.size} bytes):")
        print(f"      {ref.checksum}")
        if ref.version:
            print(f"    Version (ostree.commit.version): {ref.version}")
        if ref.timestamp is not None:
            when = datetime.fromtimestamp(ref.timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S+00")
            print(f"    Timestamp (ostree.commit.timestamp): {when}")
    print()
    typed = summary_metadata(path.read_bytes())
    for key in sorted(extra):
        print(f"{key}: {_summary_value(typed.get(key, extra[key]))}")
    return 0


def _summary_value(value: object) -> str:
    from strata.image.gvariant import Variant
    if isinstance(value, Variant):
        if value.type.startswith("a{") and not value.value:
            return "{}"
        value = value.value
    return inspect.format_value(value)


def _sign_summary(inv: Invocation, repo: Repo, data: bytes) -> None:
    keys = inv.args.strings("sign")
    gpg_keys = inv.args.strings("gpg-sign")
    if gpg_keys:
        from strata.image import gpg
        homedir = inv.args.string("gpg-homedir")
        detached: bytes | None = None
        for key_id in gpg_keys:
            detached = gpg.add_signature(detached, gpg.sign(data, key_id, Path(homedir) if homedir else None))
        assert detached is not None
        (repo.path / "summary.sig").write_bytes(detached)
    if not keys:
        return
    from strata.cli.ostree_sign import detached_signatures
    (repo.path / "summary.sig").write_bytes(detached_signatures(data, keys, inv.args.string("sign-type") or "ed25519"))


# ---------------------------------------------------------------- fsck, prune


def fsck(inv: Invocation) -> int:
    a = inv.args
    quiet = a.flag("quiet")
    repo = inv.repo()
    if not quiet:
        print("Validating refs...")
        print("Validating refs in collections...")
        print("Enumerating commits...")
    report = fsck_repo(repo, delete=a.flag("delete"))
    if a.flag("add-tombstones"):
        _add_tombstones(repo)
    if not quiet:
        print(f"Verifying content integrity of {report.commits} commit objects...")
    missing = [found for found in map(_MISSING_RE.match, report.problems) if found]
    if missing and len(missing) == len(report.problems) and not a.flag("delete"):
        _mark_missing(repo, missing)  # ostree reports every missing object and carries on
        raise CorruptionError("Repository corruption encountered")
    problems = [ostree_problem(problem) for problem in report.problems]
    if problems and not a.flag("delete"):
        raise CorruptionError(problems[0])  # ostree stops at the first corrupt object
    for problem in problems:
        print(problem, file=sys.stderr)
    for commit in sorted(report.bad_commits) if a.flag("delete") else []:
        print(f"Marking commit as partial: {commit}", file=sys.stderr)
    if report.partial:
        print(f"{report.partial} partial commits not verified")
    if problems:
        raise StrataError(f"{len(report.bad_commits) or len(problems)} partial commits from fsck-detected corruption")
    fsck_partial = _fsck_partial_commits(repo)
    if fsck_partial:
        raise StrataError(f"{fsck_partial} partial commits from fsck-detected corruption")
    if not quiet:
        print(f"object fsck of {report.commits} commits completed successfully - no errors found.")
    return 0


_MISSING_RE = re.compile(r"^(?:Missing (\w+) object (\w+)) \(in commit (\w+)\)$")
_SUFFIXES = {"file": "file", "dirtree": "dirtree", "dirmeta": "dirmeta", "commit": "commit"}


def _mark_missing(repo: Repo, missing: list[re.Match[str]]) -> None:
    """ostree's report of objects gone from under a commit; the commit becomes partial (marker 'f')."""
    marked: set[str] = set()
    for found in missing:
        objtype, checksum, commit = found[1], found[2], found[3]
        print(f"Object missing in commits {commit}: {checksum}.{_SUFFIXES.get(objtype, objtype)}", file=sys.stderr)
        if commit not in marked:
            marked.add(commit)
            print(f"Marking commit as partial: {commit}", file=sys.stderr)
            with repo.lock():
                repo.mark_partial(commit, b"f")


def _fsck_partial_commits(repo: Repo) -> int:
    """Commits an earlier `fsck --delete` left partial (their marker holds 'f', as ostree writes it)."""
    return sum(1 for marker in (repo.path / "state").glob("*.commitpartial") if marker.read_bytes()[:1] == b"f")


def _add_tombstones(repo: Repo) -> None:
    """fsck --add-tombstones: a tombstone for every missing parent commit, none for commits present."""
    commits = {checksum for checksum, _ in repo.list_objects(ObjectType.COMMIT)}
    with repo.lock():
        repo.config.set("core", "tombstone-commits", True)
        repo.save_config()
        for checksum in sorted(commits):
            parent = repo.load_commit(checksum).parent
            tombstone = repo.object_path(parent, ObjectType.TOMBSTONE_COMMIT) if parent else None
            if parent and parent not in commits and tombstone and not tombstone.exists():
                print(f"Adding tombstone for commit {parent}")
                tombstone.parent.mkdir(exist_ok=True)
                tombstone.write_bytes(O.tombstone(parent))
        for checksum, objtype in list(repo.list_objects(ObjectType.TOMBSTONE_COMMIT)):
            if checksum in commits:
                repo.object_path(checksum, objtype).unlink()


def prune(inv: Invocation) -> int:
    a = inv.args
    repo = inv.repo()
    delete_commit = a.string("delete-commit")
    if a.flag("static-deltas-only"):
        if not delete_commit:
            raise UsageError("--static-deltas-only requires --delete-commit")
        _delete_deltas_to(repo, resolve(repo, delete_commit))
        return 0
    deletes = [resolve(repo, delete_commit)] if delete_commit else []
    for commit in deletes:
        _refuse_referenced(repo, commit)
    younger = a.string("keep-younger-than")
    options = PruneOptions(refs_only=a.flag("refs-only"), depth=a.number("depth", -1), delete_commits=tuple(deletes),
                           dry_run=a.flag("no-prune"),
                           keep_younger_than=parse_datetime(younger) if younger else None)
    commits_before = {checksum for checksum, _ in repo.list_objects(ObjectType.COMMIT)}
    result = prune_repo(repo, options)
    if repo.config.get_bool("core", "tombstone-commits", False) and not a.flag("no-prune"):
        _tombstone_deleted(repo, commits_before)
    _drop_stale_summary_caches(repo)
    print(f"Total objects: {result.total}")
    if result.deleted == 0:
        print("No unreachable objects")
    elif a.flag("no-prune"):
        print(f"Would delete: {result.deleted} objects, freeing {human_size(result.freed_bytes)}")
    else:
        print(f"Deleted {result.deleted} objects, {human_size(result.freed_bytes)} freed")
    return 0


def _delete_deltas_to(repo: Repo, target: str) -> None:
    """prune --static-deltas-only: the static deltas that lead to target go; the commit stays."""
    import shutil

    from strata.image.deltas import delta_dir, list_deltas
    with repo.lock():
        for name, _digest in list_deltas(repo):
            source, _, to = name.rpartition("-")
            if to == target:
                shutil.rmtree(delta_dir(repo.path, source or None, to), ignore_errors=True)


def _drop_stale_summary_caches(repo: Repo) -> None:
    """Cached summaries of remotes that no longer exist go, as ostree's prune removes them."""
    folder = repo.path / "tmp" / "cache" / "summaries"
    if not folder.is_dir():
        return
    known = set(remotes.list_remotes(repo))
    for path in folder.iterdir():
        if path.name.removesuffix(".sig") not in known:
            path.unlink(missing_ok=True)


def _tombstone_deleted(repo: Repo, commits_before: set[str]) -> None:
    """With core.tombstone-commits, every commit prune removed leaves a tombstone (pulls then know it was
    deleted on purpose)."""
    remaining = {checksum for checksum, _ in repo.list_objects(ObjectType.COMMIT)}
    with repo.lock():
        for checksum in sorted(commits_before - remaining):
            path = repo.object_path(checksum, ObjectType.TOMBSTONE_COMMIT)
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(O.tombstone(checksum))


def _refuse_referenced(repo: Repo, commit: str) -> None:
    for name, checksum in repo.list_refs().items():
        if checksum == commit:
            raise StrataError(f"Commit '{commit}' is referenced by '{name}'")


# ---------------------------------------------------------------- config


def config(inv: Invocation) -> int:
    if not inv.positional:
        raise UsageError("OPERATION must be specified")
    action, *rest = inv.positional
    expected = {"get": 1, "set": 2, "unset": 1}.get(action)
    if expected is None:
        raise UsageError(f"Unknown operation {action}")
    if len(rest) > expected:
        raise UsageError("Too many arguments given")
    if len(rest) < expected:
        raise UsageError("KEY and VALUE must be specified" if action == "set" else "KEY must be specified")
    repo = inv.repo()
    group, key = _config_key(inv.args.string("group"), rest[0])
    if action == "get":
        print(config_get(repo, group, key))
    elif action == "set":
        config_set(repo, group, key, rest[1])
    else:
        config_unset(repo, group, key)
    return 0


def _config_key(group: str | None, text: str) -> tuple[str, str]:
    if group:
        return group, text
    section, dot, key = text.partition(".")
    if not dot:
        raise InvalidInputError('Key must be of the form "sectionname.keyname"')
    return section, key


# ---------------------------------------------------------------- sign, gpg-sign


def sign(inv: Invocation) -> int:
    from strata.cli.ostree_sign import sign_verb
    return sign_verb(inv)


def gpg_sign(inv: Invocation) -> int:
    if len(inv.positional) < 2:
        raise UsageError("Need a COMMIT to sign or verify")
    from strata.image import gpg, gvariant
    from strata.image.gpgkeys import same_key, signature_key_id
    repo = inv.repo()
    checksum = resolve(repo, inv.positional[0])
    key_ids = inv.positional[1:]
    detached = repo.read_detached_metadata(checksum)
    signed = [(signature, signature_key_id(signature)) for signature in gpg.signatures(detached)]
    if inv.args.flag("delete"):
        kept = [sig for sig, owner in signed if not any(same_key(owner, key) for key in key_ids)]
        entries = [(k, v) for k, v in (gvariant.decode("a{sv}", detached) if detached else []) if k != gpg.GPG_KEY]
        if kept:
            entries.append((gpg.GPG_KEY, gvariant.Variant("aay", kept)))
        with repo.lock():
            repo.write_detached_metadata(checksum, gvariant.encode("a{sv}", entries))  # empty, not gone: as ostree
        print(f"Signatures deleted: {len(signed) - len(kept)}")
        return 0
    data = repo.read_metadata(checksum, ObjectType.COMMIT)
    homedir = inv.args.string("gpg-homedir")
    for key_id in key_ids:
        if any(same_key(owner, key_id) for _sig, owner in signed):
            raise StrataError(f"Commit is already signed with GPG key {key_id}")
        detached = gpg.add_signature(detached, gpg.sign(data, key_id, Path(homedir) if homedir else None))
    with repo.lock():
        repo.write_detached_metadata(checksum, detached)
    return 0


VERBS = (
    Verb("remote", remote, has_subverbs=True),
    Verb("pull", pull, (
        flag("commit-metadata-only"), string("cache-dir"), flag("disable-fsync"), flag("per-object-fsync"),
        flag("disable-static-deltas"), flag("require-static-deltas"), flag("mirror"), array("subpath"),
        flag("untrusted"), flag("http-trusted"), flag("bareuseronly-files"), flag("dry-run"), integer("depth"),
        string("url"), array("http-header"), integer("update-frequency"), integer("network-retries"),
        array("localcache-repo", "L"), flag("timestamp-check", "T"), string("timestamp-check-from-rev"),
        flag("disable-verify-bindings"), string("append-user-agent"))),
    Verb("pull-local", pull_local, (
        flag("commit-metadata-only"), string("remote"), flag("disable-fsync"), flag("per-object-fsync"),
        flag("untrusted"), flag("bareuseronly-files"), flag("require-static-deltas"), flag("gpg-verify"),
        flag("gpg-verify-summary"), flag("disable-verify-bindings"), integer("depth"))),
    Verb("summary", summary, (flag("update", "u"), flag("view", "v"), flag("raw"), array("gpg-sign"),
                              string("gpg-homedir"), array("sign"), string("sign-type"),
                              array("add-metadata", "m"))),
    Verb("fsck", fsck, (flag("add-tombstones"), flag("quiet", "q"), flag("all", "a"), flag("delete"),
                        flag("verify-bindings"), flag("verify-back-refs"))),
    Verb("prune", prune, (flag("no-prune"), flag("refs-only"), integer("depth"), string("delete-commit"),
                          string("keep-younger-than"), flag("static-deltas-only"), array("retain-branch-depth"),
                          array("only-branch"), flag("commit-only"))),
    Verb("config", config, (string("group"),)),
    Verb("sign", sign, (flag("delete", "d"), flag("verify"), string("sign-type", "s"), string("keys-file"),
                        string("keys-dir"))),
    Verb("gpg-sign", gpg_sign, (flag("delete", "d"), string("gpg-homedir"))),
)
