"""Copying commits between local repositories (`pull-local`): only missing objects, each verified unless the
caller trusts the source (ostree's pull-local without --untrusted: a repository on this machine)."""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from strata import progress
from strata.errors import StrataError
from strata.image import objects as O
from strata.image.objects import ObjectType
from strata.image.parents import has_in_chain, repo_chain
from strata.image.repo import Repo, RepoMode
from strata.image.subpaths import Subpaths
from strata.image.subpaths import commit_objects as subpath_objects
from strata.image.traverse import commit_objects, history

Progress = Callable[[str], None]
_WHOLE = Subpaths()


def copy_commit(source: Repo, target: Repo, commit: str, *, depth: int = 0, trusted: bool = False,
                subpaths: Subpaths = _WHOLE) -> int:
    """Copy commit (and up to depth parents) with every object target lacks; returns objects copied.
    Content is re-checksummed on the way in, so a corrupt source cannot poison the target; a trusted copy into
    an archive repository keeps the source's names unchecked, as ostree does for local sources. With
    subpaths only those parts of the trees are copied, and a commit not complete before stays partial."""
    copied = 0
    chain = repo_chain(target)
    with target.lock():
        for current in history(source, commit, depth):
            complete = target.has_object(current, ObjectType.COMMIT) and not target.is_partial(current)
            target.mark_partial(current)
            wanted = commit_objects(source, current) if subpaths.whole else subpath_objects(source, current,
                                                                                              subpaths)
            missing = [(c, t) for c, t in wanted if not has_in_chain(chain, c, t)]
            metadata = [(c, t) for c, t in missing if t is not ObjectType.FILE and t is not ObjectType.COMMIT]
            contents = [c for c, t in missing if t is ObjectType.FILE]
            for checksum, objtype in metadata:
                target.write_metadata(objtype, source.read_metadata(checksum, objtype), expected=checksum)
            _copy_contents(source, target, contents, trusted)
            detached = source.read_detached_metadata(current)
            if detached is not None:
                target.write_detached_metadata(current, detached)
            target.sync()
            if not target.has_object(current, ObjectType.COMMIT):
                _place_commit(source, target, current, link=trusted)
            if complete or subpaths.whole:
                target.clear_partial(current)
            copied += len(missing)
    return copied


def _place_commit(source: Repo, target: Repo, checksum: str, *, link: bool) -> None:
    """The commit object, once its tree is in: from a trusted source on one filesystem hardlinked as ostree
    does (metadata is the same bytes in every mode; checked against its name first), else written."""
    data = source.read_metadata(checksum, ObjectType.COMMIT)
    if link and O.sha256_hex(data) == checksum:
        destination = target.object_path(checksum, ObjectType.COMMIT)
        destination.parent.mkdir(exist_ok=True)
        try:
            os.link(source.object_path(checksum, ObjectType.COMMIT), destination, follow_symlinks=False)
            return
        except FileExistsError:
            return
        except OSError:
            pass  # another filesystem (EXDEV) or no permission: written below
    target.write_metadata(ObjectType.COMMIT, data, expected=checksum)


def _copy_contents(source: Repo, target: Repo, checksums: list[str], trusted: bool) -> None:
    if not checksums:
        return
    with progress.items("Receiving objects", len(checksums)) as bar, ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda c: bar.advance(nbytes=_copy_content(source, target, c, trusted)), checksums))


def _copy_content(source: Repo, target: Repo, checksum: str, trusted: bool) -> int:
    """Copy one content object; returns its size, for progress."""
    meta, content = source.read_file(checksum, verify=False)
    if trusted and target.is_archive:
        header = O.archive_header(meta, 0 if meta.is_symlink else len(content))
        body = b"" if meta.is_symlink else O.archive_compress(content, target.zlib_level)
        target.write_archive_object(checksum, header + body)
    else:
        target.write_content(meta, content, expected=checksum)
    return len(content)


def pull_local(source: Repo, target: Repo, refs: list[str], *, remote: str | None = None, depth: int = 0,
               trusted: bool = False, subpaths: Subpaths = _WHOLE, link: bool = False) -> dict[str, str]:
    """Copy refs (names in source) with their commits; refs move only after their commit is complete (or, with
    subpaths, once the parts asked for are here). With link, objects are first hardlinked where link_objects
    allows it."""
    if link:
        heads = [source.resolve_rev(ref) for ref in refs]
        metadata, contents = missing_objects(source, target, [h for h in heads if h], depth, subpaths)
        link_objects(source, target, metadata, contents, trusted=trusted)
    moved: dict[str, str] = {}
    for ref in refs:
        commit = source.resolve_rev(ref)
        assert commit is not None
        copy_commit(source, target, commit, depth=depth, trusted=trusted, subpaths=subpaths)
        if ":" not in ref and not _is_checksum(ref):
            with target.lock():
                target.set_ref(ref, commit, remote=remote)
        moved[ref] = commit
    return moved


def missing_objects(source: Repo, target: Repo, heads: list[str], depth: int = 0,
                    subpaths: Subpaths = _WHOLE) -> tuple[set[str], set[str]]:
    """The metadata and content objects a local pull of the commits heads (and depth parents of each) copies:
    those target and its parent repositories lack."""
    metadata: set[str] = set()
    contents: set[str] = set()
    chain = repo_chain(target)
    for head in heads:
        for commit in history(source, head, depth):
            wanted = commit_objects(source, commit) if subpaths.whole else subpath_objects(source, commit, subpaths)
            for checksum, objtype in wanted:
                if not has_in_chain(chain, checksum, objtype):
                    (contents if objtype is ObjectType.FILE else metadata).add(checksum)
    return metadata, contents


def link_objects(source: Repo, target: Repo, metadata: set[str], contents: set[str], *,
                 trusted: bool = True) -> None:
    """Between repositories on one filesystem, objects are hardlinked as ostree does: metadata objects always
    (the same bytes in every mode; each checked against its name first), content objects when both modes store
    them alike (unless trusted, only those whose content matches their name). Commits are left to pull_local,
    which places each after its tree. Stops quietly at the first link the filesystem refuses (another
    filesystem, no permission): the copy that follows does the rest."""
    linkable = [(c, t) for c, t in metadata_types(source, metadata) if t is not ObjectType.COMMIT]
    if source.mode is target.mode:
        linkable += [(c, ObjectType.FILE) for c in contents]
    elif source.mode is RepoMode.BARE_USER and target.mode is RepoMode.BARE_USER_ONLY:
        linkable += [(c, ObjectType.FILE) for c in contents if _same_bytes_in_bare_user_only(source, c)]
    with target.lock():
        for checksum, objtype in linkable:
            if not _intact(source, checksum, objtype, trusted):
                continue
            destination = target.object_path(checksum, objtype)
            destination.parent.mkdir(exist_ok=True)
            try:
                os.link(source.object_path(checksum, objtype), destination, follow_symlinks=False)
            except FileExistsError:
                pass
            except OSError:
                return


def _intact(repo: Repo, checksum: str, objtype: ObjectType, trusted: bool) -> bool:
    if objtype is not ObjectType.FILE:
        return O.sha256_hex(repo.read_metadata(checksum, objtype)) == checksum
    if trusted:
        return True
    try:
        repo.verify_content(checksum)
    except (StrataError, ValueError, zlib.error):  # the copy that follows reports what is wrong
        return False
    return True


def _same_bytes_in_bare_user_only(source: Repo, checksum: str) -> bool:
    """A bare-user object that bare-user-only stores as the very same file: a regular file of owner 0:0
    without xattrs whose mode is already on the file. Symlinks never are (bare-user keeps them as files)."""
    meta = source.read_file_meta(checksum)
    if meta.is_symlink or meta.uid or meta.gid or meta.xattrs or meta.mode & 0o7777 & ~0o775:
        return False
    return os.lstat(source.object_path(checksum, ObjectType.FILE)).st_mode == meta.mode


def metadata_types(repo: Repo, checksums: set[str]) -> list[tuple[str, ObjectType]]:
    """Each metadata checksum with the type(s) repo holds it under, in checksum order."""
    found = []
    for checksum in sorted(checksums):
        for objtype in (ObjectType.DIRMETA, ObjectType.DIRTREE, ObjectType.COMMIT):
            if repo.has_object(checksum, objtype):
                found.append((checksum, objtype))
    return found


def _is_checksum(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)
