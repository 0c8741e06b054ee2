"""ostree's repository verbs: init, commit, refs, rev-parse, log, show, ls, cat, checkout, reset, checksum, diff."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from strata.cli.ostree import Invocation, UsageError, Verb
from strata.cli.ostree_options import array, flag, integer, string
from strata.cli.ostree_util import (
    holder_of,
    key_value,
    lines_of,
    objects_by_kind,
    parse_datetime,
    refs_changed,
    resolve,
    set_refspec,
)
from strata.errors import InvalidInputError, NotFoundError, StrataError
from strata.image import inspect
from strata.image import objects as O
from strata.image.gvariant import Variant, byteswapped
from strata.image.objects import FileMeta, ObjectType
from strata.image.repo import Repo, RepoMode, validate_ref

if TYPE_CHECKING:  # the modules behind commit, checkout and diff load only for those verbs (start-up time)
    from strata.image.commit import TreeWriteOptions
    from strata.image.treediff import DiskOptions, Listing

# ---------------------------------------------------------------- helpers


# ---------------------------------------------------------------- init


def init(inv: Invocation) -> int:
    path = inv.args.string("repo") or "."
    mode = RepoMode.parse(inv.args.string("mode") or "bare")
    Repo.init(Path(path), mode, collection_id=inv.args.string("collection-id"))
    return 0


# ---------------------------------------------------------------- commit

COMMIT_OPTIONS = (
    string("parent"), string("subject", "s"), string("body", "m"), string("body-file", "F"), flag("editor", "e"),
    string("branch", "b"), flag("orphan"), flag("no-bindings"), array("bind-ref"), string("base"), array("tree"),
    array("add-metadata-string"), array("add-metadata"), array("keep-metadata"),
    array("add-detached-metadata-string"), integer("owner-uid"), integer("owner-gid"),
    flag("canonical-permissions"), flag("bootable"), flag("mode-ro-executables"), flag("no-xattrs"),
    string("selinux-policy"), flag("selinux-policy-from-base", "P"), flag("link-checkout-speedup"),
    flag("devino-canonical", "I"), flag("tar-autocreate-parents"), string("tar-pathname-filter"),
    flag("skip-if-unchanged"), string("statoverride"), string("skip-list"), flag("consume"), flag("table-output"),
    array("gpg-sign"), string("gpg-homedir"), array("sign"), string("sign-type"), flag("generate-sizes"),
    flag("disable-fsync"), string("fsync"), string("timestamp"),
)


def commit(inv: Invocation) -> int:
    from strata.image.commit import CommitRequest, tree_unchanged, write_commit
    a = inv.args
    if a.flag("editor"):
        raise UsageError("--editor is not supported; give the message with -s/-m/-F")
    branch = a.string("branch")
    if not branch and not a.flag("orphan"):
        raise UsageError("A branch must be specified with --branch, or use --orphan")
    repo = inv.repo()
    if a.flag("disable-fsync") or (a.string("fsync") or "true").lower() in ("false", "no", "0"):
        repo.fsync = False  # this commit only, as ostree's --fsync=false: no fsync, syncfs or sync at all
    tree_options = _tree_options(inv)
    before = objects_by_kind(repo) if a.flag("table-output") else None
    with repo.lock():
        parent = _commit_parent(repo, a.string("parent"), branch, a.flag("orphan"))
        root = _commit_trees(inv, repo, tree_options)
        _check_unmatched(tree_options)
        if a.flag("skip-if-unchanged") and tree_unchanged(repo, root, parent):
            print(parent)
            return 0
        request = CommitRequest(
            subject=a.string("subject") or "", body=_commit_body(inv),
            timestamp=parse_datetime(a.string("timestamp") or "") if a.string("timestamp") else None,
            metadata=_commit_metadata(inv, repo, parent, root), parent=parent,
            bind_refs=[] if a.flag("no-bindings") or not branch else [branch, *a.strings("bind-ref")])
        checksum = write_commit(repo, root, request)
        _write_detached(inv, repo, checksum)
        repo.sync()
        if branch:
            set_refspec(repo, branch, checksum)
    refs_changed(repo, by_commit=True)
    if tree_options.consume:
        _consume_roots(inv)
    if before is not None:
        _print_table(repo, checksum, before)
    else:
        print(checksum)
    return 0


def _print_table(repo: Repo, checksum: str, before: tuple[set[str], set[str]]) -> None:
    """commit --table-output: what the commit stored, counted as objects new to the repository."""
    from strata.image.commit import content_objects
    after = objects_by_kind(repo)
    root = _commit_pair(repo, checksum)
    contents = content_objects(repo, root)
    new_contents = after[1] - before[1]
    written_bytes = sum(0 if repo.read_file_meta(c).is_symlink else inspect.content_size(repo, c)
                        for c in new_contents)
    print(f"Commit: {checksum}")
    print(f"Metadata Total: {len(after[0] - before[0])}")
    print(f"Metadata Written: {len(after[0] - before[0])}")
    print(f"Content Total: {len(contents)}")
    print(f"Content Written: {len(new_contents)}")
    print(f"Content Cache Hits: {len(contents) - len(new_contents)}")
    print(f"Content Bytes Written: {written_bytes}")


def _tree_options(inv: Invocation) -> TreeWriteOptions:
    from strata.image.commit import TreeWriteOptions
    a = inv.args
    uid, gid = a.values.get("owner-uid"), a.values.get("owner-gid")
    canonical = a.flag("canonical-permissions")
    if canonical and (uid or 0) > 0:
        raise UsageError("Cannot specify both --canonical-permissions and non-zero --owner-uid")
    if canonical and (gid or 0) > 0:
        raise UsageError("Cannot specify both --canonical-permissions and non-zero --owner-gid")
    options = TreeWriteOptions(owner_uid=uid if uid is not None and uid >= 0 else None,
                               owner_gid=gid if gid is not None and gid >= 0 else None,
                               skip_xattrs=a.flag("no-xattrs"), canonical_permissions=canonical,
                               mode_ro_executables=a.flag("mode-ro-executables"), consume=a.flag("consume"),
                               devino_canonical=a.flag("devino-canonical"))
    if a.string("statoverride"):
        _read_statoverride(a.string("statoverride") or "", options)
    if a.string("skip-list"):
        options.skip_paths = set(lines_of(a.string("skip-list") or ""))
    return options


def _read_statoverride(path: str, options: TreeWriteOptions) -> None:
    for line in lines_of(path):
        mode_text, sep, name = line.partition(" ")
        if not sep:
            raise InvalidInputError("Malformed statoverride file (no space found)")
        if mode_text.startswith("="):
            options.mode_overrides[name] = _c_number(mode_text[1:])
        else:
            options.mode_adds[name] = _c_number(mode_text)


def _c_number(text: str) -> int:
    try:
        return int(float(text))
    except ValueError:
        return 0


def _check_unmatched(options: TreeWriteOptions) -> None:
    if options.mode_adds:
        for name in sorted(options.mode_adds):
            print(f"Unmatched statoverride path: {name}", file=sys.stderr)
        raise StrataError("Unmatched statoverride paths")
    if options.skip_paths:
        for name in sorted(options.skip_paths):
            print(f"Unmatched skip-list path: {name}", file=sys.stderr)
        raise StrataError("Unmatched skip-list paths")


def _commit_parent(repo: Repo, parent: str | None, branch: str | None, orphan: bool) -> str | None:
    if parent is not None:
        if parent == "none":
            return None
        if not O.is_checksum(parent):
            raise InvalidInputError(f"Invalid checksum '{parent}'")
        return parent
    if orphan or not branch:
        return None
    remote, _, ref = branch.rpartition(":")
    try:
        return repo.read_ref(ref, remote or None)
    except IsADirectoryError:
        return None


def _tree_specs(inv: Invocation) -> list[str]:
    specs = inv.args.strings("tree")
    if specs:
        return specs
    return [f"dir={inv.positional[0] if inv.positional else '.'}"]


def _commit_trees(inv: Invocation, repo: Repo, options: TreeWriteOptions) -> tuple[str, str]:
    from strata.image.commit import commit_root, layer_roots, modifies_metadata, rewrite_tree, write_tree_from_dir
    from strata.image.tarimport import import_tar
    roots = []
    for spec in _tree_specs(inv):
        kind, sep, value = spec.partition("=")
        if not sep:
            raise InvalidInputError(f"Missing type in tree specification '{spec}'")
        if kind == "dir":
            roots.append(write_tree_from_dir(repo, Path(value), options))
        elif kind == "tar":
            roots.append(import_tar(repo, value, options, autocreate_parents=inv.args.flag("tar-autocreate-parents")))
        elif kind == "ref":
            root = commit_root(repo, value)
            roots.append(rewrite_tree(repo, root, options) if modifies_metadata(options) else root)
        else:
            raise InvalidInputError(f"Invalid tree type specification '{kind}'")
    base = inv.args.string("base")
    return layer_roots(repo, roots, commit_root(repo, base) if base else None)


def _consume_roots(inv: Invocation) -> None:
    for spec in _tree_specs(inv):
        kind, _, value = spec.partition("=")
        if kind == "dir":
            with contextlib.suppress(OSError):
                os.rmdir(value)


def _commit_body(inv: Invocation) -> str:
    body_file = inv.args.string("body-file")
    if body_file:
        return Path(body_file).read_text()
    return inv.args.string("body") or ""


def _commit_metadata(inv: Invocation, repo: Repo, parent: str | None,
                     root: tuple[str, str]) -> list[tuple[str, str, object]]:
    a = inv.args
    entries: dict[str, tuple[str, str, object]] = {}
    for text in a.strings("add-metadata-string"):
        key, value = key_value(text, "add-metadata-string")
        entries[key] = (key, "s", value)
    for text in a.strings("add-metadata"):
        key, value = key_value(text, "add-metadata")
        sig, parsed = _parse_variant_text(value)
        entries[key] = (key, sig, _in_machine_order(sig, parsed))
    if a.strings("keep-metadata"):
        if parent is None:
            raise UsageError("Either --branch or --parent must be specified when using --keep-metadata")
        parent_metadata = dict(repo.load_commit(parent).metadata)
        for key in a.strings("keep-metadata"):
            kept = parent_metadata.get(key)
            if kept is None:
                raise StrataError(f"Missing metadata key '{key}' from commit '{parent}'")
            entries[key] = (key, kept.type, kept.value)
    if a.flag("bootable"):
        _bootable_metadata(repo, root, entries)
    if a.flag("generate-sizes"):
        from strata.image.sizes import sizes_entries
        entries["ostree.sizes"] = ("ostree.sizes", "aay", sizes_entries(repo, root))
    return list(entries.values())


def _in_machine_order(sig: str, value: object) -> object:
    """ostree stores --add-metadata values as GLib parsed them, in the machine's byte order, while this
    codec writes numbers big-endian: swapped here, the commit's bytes (and checksum) are ostree's."""
    return byteswapped(sig, value) if sys.byteorder == "little" else value


_TYPE_WORDS = {"byte": "y", "int16": "n", "uint16": "q", "int32": "i", "uint32": "u", "int64": "x", "uint64": "t"}


def _parse_variant_text(text: str) -> tuple[str, object]:
    """The subset of GVariant text format --add-metadata takes: typed numbers ('uint64 42', '@t 42'),
    booleans, quoted strings, empty dictionaries ('@a{sv} {}')."""
    text = text.strip()
    words = text.split(None, 1)
    if len(words) == 2 and words[0] in _TYPE_WORDS:
        return _TYPE_WORDS[words[0]], int(words[1], 0)
    if len(words) == 2 and words[0].startswith("@"):
        return _typed_value(words[0][1:], words[1])
    if text in ("true", "false"):
        return "b", text == "true"
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return "s", text[1:-1]
    for sig, convert in (("i", int), ("d", float)):
        try:
            return sig, convert(text)
        except ValueError:
            continue
    raise InvalidInputError(f"Parsing {text}: invalid GVariant text")


def _typed_value(sig: str, text: str) -> tuple[str, object]:
    if sig in _TYPE_WORDS.values():
        return sig, int(text, 0)
    if sig == "b" and text in ("true", "false"):
        return sig, text == "true"
    if sig == "s":
        return _parse_variant_text(text)
    if sig.startswith("a") and text in ("[]", "{}", "@" + sig + " []"):
        return sig, []
    raise InvalidInputError(f"Parsing @{sig} {text}: unsupported GVariant text")


def parse_metadata_option(text: str, option: str) -> tuple[str, Variant]:
    """KEY=GVARIANT-TEXT as --add-metadata takes it."""
    key, value = key_value(text, option)
    sig, parsed = _parse_variant_text(value)
    return key, Variant(sig, parsed)


def _bootable_metadata(repo: Repo, root: tuple[str, str], entries: dict[str, tuple[str, str, object]]) -> None:
    tree = repo.load_dirtree(root[0])
    usr = tree.dirs.get("usr")
    modules = None
    if usr is not None:
        lib = repo.load_dirtree(usr[0]).dirs.get("lib")
        modules = repo.load_dirtree(lib[0]).dirs.get("modules") if lib else None
    if modules is None or not repo.load_dirtree(modules[0]).dirs:
        raise NotFoundError("Failed to find kernel in /usr/lib/modules: No such file or directory")
    version = sorted(repo.load_dirtree(modules[0]).dirs)[0]
    entries["ostree.linux"] = ("ostree.linux", "s", version)
    entries["ostree.bootable"] = ("ostree.bootable", "b", True)


def _write_detached(inv: Invocation, repo: Repo, checksum: str) -> None:
    a = inv.args
    strings = a.strings("add-detached-metadata-string")
    if strings:
        pairs = [key_value(text, "add-detached-metadata-string") for text in strings]
        repo.write_detached_metadata(checksum, _vardict_bytes([(k, "s", v) for k, v in pairs]))
    keys = a.strings("sign")
    if keys:
        from strata.cli.ostree_sign import sign_commit
        sign_commit(repo, checksum, keys, a.string("sign-type") or "ed25519")
    for key_id in a.strings("gpg-sign"):
        from strata.image import gpg
        data = repo.read_metadata(checksum, ObjectType.COMMIT)
        homedir = a.string("gpg-homedir")
        detached = gpg.add_signature(repo.read_detached_metadata(checksum),
                                     gpg.sign(data, key_id, Path(homedir) if homedir else None))
        repo.write_detached_metadata(checksum, detached)


def _vardict_bytes(entries: list[tuple[str, str, object]]) -> bytes:
    from strata.image import gvariant
    return gvariant.encode("a{sv}", O.vardict(list(entries)))


# ---------------------------------------------------------------- refs, rev-parse, reset


def refs(inv: Invocation) -> int:
    a = inv.args
    repo = inv.repo()
    if a.flag("collections"):
        return _refs_collections(inv, repo)
    if a.string("create"):
        if len(inv.positional) != 1:
            raise UsageError("You must specify a revision when creating a new ref" if not inv.positional
                             else "You must specify only 1 existing ref when creating a new ref")
        _refs_create(repo, a.string("create") or "", inv.positional[0], alias=a.flag("alias"), force=a.flag("force"))
        refs_changed(repo)
        return 0
    if a.flag("delete"):
        if not inv.positional:
            raise UsageError("At least one PREFIX is required when deleting refs")
        for prefix in inv.positional:
            _refs_delete(repo, prefix)
        refs_changed(repo)
        return 0
    prefixes: list[str | None] = list(inv.positional) or [None]
    for wanted in prefixes:
        _refs_list(repo, wanted, full=a.flag("list"), aliases=a.flag("alias"))
    return 0


def _aliases(repo: Repo) -> dict[str, str]:
    """Refs in refs/heads that are symlinks to other refs: alias -> target ref."""
    heads = repo.path / "refs" / "heads"
    found: dict[str, str] = {}
    for dirpath, _dirs, files in os.walk(heads):
        for name in files:
            path = Path(dirpath) / name
            if path.is_symlink():
                target = (path.parent / os.readlink(path)).resolve()
                found[str(path.relative_to(heads))] = str(target.relative_to(heads.resolve()))
    return found


def _refs_list(repo: Repo, prefix: str | None, *, full: bool, aliases: bool) -> None:
    if aliases:
        for alias, target in sorted(_aliases(repo).items()):
            if prefix is None or alias == prefix or alias.startswith(prefix.rstrip("/") + "/"):
                print(f"{alias} -> {target}")
        return
    if not (repo.path / "refs" / "remotes").is_dir():
        raise NotFoundError("Listing refs: opendir(remotes): No such file or directory")
    if prefix and (prefix.endswith(":") or prefix.endswith(":.")):
        remote = prefix.partition(":")[0]
        for name in repo.list_refs():
            if name.startswith(f"{remote}:"):
                print(name)
        return
    names = list(repo.list_refs(prefix))
    if prefix and not full and prefix not in names:
        strip = prefix.rstrip("/") + "/"
        names = [name[len(strip):] for name in names]
    for name in names:
        print(name)


def validate_ref_name(ref: str) -> None:
    try:
        validate_ref(ref)
    except InvalidInputError:
        raise InvalidInputError(f"Invalid ref name {ref}") from None


def _refs_create(repo: Repo, new: str, existing: str, *, alias: bool, force: bool) -> None:
    remote, _, ref = new.rpartition(":")
    validate_ref_name(ref)
    current = repo.read_ref(ref, remote or None)
    aliases = _aliases(repo)
    if current is not None and not force and not (alias and ref in aliases):
        raise StrataError(f"--create specified but ref {new} already exists")
    if alias:
        if remote:
            raise StrataError(f"Cannot create alias to remote ref: {remote}")
        if existing not in repo.list_refs(remotes=False):
            raise StrataError(f"Cannot create alias to non-existent ref: {existing}")
        link = repo.path / "refs" / "heads" / ref
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(os.path.relpath(repo.path / "refs" / "heads" / existing, link.parent), link)
        return
    with repo.lock():
        set_refspec(repo, new, resolve(repo, existing))


def _refs_delete(repo: Repo, prefix: str) -> None:
    names = repo.list_refs(prefix)
    aliases = _aliases(repo)
    with repo.lock():
        for name in names:
            ref = name.rpartition(":")[2]
            for alias, target in aliases.items():
                if target == ref and alias != ref:
                    raise StrataError(f"Ref '{ref}' has an active alias: '{alias}'")
            set_refspec(repo, name, None)


def _refs_collections(inv: Invocation, repo: Repo) -> int:
    collection = repo.config.get("core", "collection-id")
    if inv.args.string("create"):
        new = inv.args.string("create") or ""
        collection_id, _, ref = new.partition(":")
        if not ref:
            raise InvalidInputError(f"Invalid collection ref {new}")
        target = resolve(repo, inv.positional[0])
        path = repo.path / "refs" / "mirrors" / collection_id / ref
        if collection_id == collection:
            repo.set_ref(ref, target)
            return 0
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(target + "\n")
        return 0
    if inv.args.flag("delete"):
        if not inv.positional:
            raise UsageError("At least one PREFIX is required when deleting refs")
        for collection_id in inv.positional:
            _delete_collection(repo, collection_id)
        return 0
    wanted = set(inv.positional)
    for _name, (cid, ref) in sorted(_collection_refs(repo).items()):
        if not wanted or cid in wanted:
            print(f"({cid}, {ref})")
    return 0


def _delete_collection(repo: Repo, collection_id: str) -> None:
    """refs --collections --delete ID: every ref of that collection, wherever it is kept."""
    with repo.lock():
        if repo.config.get("core", "collection-id") == collection_id:
            for name in repo.list_refs(remotes=False):
                set_refspec(repo, name, None)
        for remote in _remote_names(repo):
            if repo.config.get(f'remote "{remote}"', "collection-id") == collection_id:
                for name in repo.list_refs():
                    if name.startswith(f"{remote}:"):
                        set_refspec(repo, name, None)
        shutil.rmtree(repo.path / "refs" / "mirrors" / collection_id, ignore_errors=True)


def _collection_refs(repo: Repo) -> dict[str, tuple[str, str]]:
    found: dict[str, tuple[str, str]] = {}
    collection = repo.config.get("core", "collection-id")
    if collection:
        for ref in repo.list_refs(remotes=False):
            found[f"{collection}:{ref}"] = (collection, ref)
    for remote in _remote_names(repo):
        remote_cid = repo.config.get(f'remote "{remote}"', "collection-id")
        if remote_cid:
            for name in repo.list_refs():
                if name.startswith(f"{remote}:"):
                    ref = name.partition(":")[2]
                    found[f"{remote_cid}:{ref}"] = (remote_cid, ref)
    mirrors = repo.path / "refs" / "mirrors"
    if mirrors.is_dir():
        for cid in sorted(os.listdir(mirrors)):
            for dirpath, _dirs, files in os.walk(mirrors / cid):
                for file in files:
                    ref = str((Path(dirpath) / file).relative_to(mirrors / cid))
                    found[f"{cid}:{ref}"] = (cid, ref)
    return found


def _remote_names(repo: Repo) -> list[str]:
    return [g[len('remote "'):-1] for g in repo.config.groups if g.startswith('remote "')]


def rev_parse(inv: Invocation) -> int:
    repo = inv.repo()
    if inv.args.flag("single"):
        commits = [c for c, _ in repo.list_objects(ObjectType.COMMIT)]
        if len(commits) > 1:
            raise StrataError("Multiple commit objects found")
        if not commits:
            raise StrataError("No commit objects found")
        print(commits[0])
        return 0
    if not inv.positional:
        raise UsageError("REV must be specified")
    for rev in inv.positional:
        print(resolve(repo, rev))
    return 0


def reset(inv: Invocation) -> int:
    if len(inv.positional) < 2:
        raise UsageError("A ref and commit argument is required")
    ref, target = inv.positional[:2]
    repo = inv.repo()
    current = repo.read_ref(ref)
    if current is None:
        raise NotFoundError(f"Invalid ref '{ref}'")
    checksum = resolve(repo, target)
    with repo.lock():
        repo.set_ref(ref, checksum)
    refs_changed(repo)
    return 0


# ---------------------------------------------------------------- log, show, ls, cat


def log(inv: Invocation) -> int:
    if not inv.positional:
        raise UsageError("A rev argument is required")
    repo = inv.repo()
    checksum: str | None = resolve(repo, inv.positional[0])
    while checksum is not None:
        if not repo.has_object(checksum, ObjectType.COMMIT):
            print("<< History beyond this commit not fetched >>")
            break
        loaded = repo.load_commit(checksum)
        if inv.args.flag("raw"):
            print(f"commit {checksum}\n{_raw_commit(loaded)}")
        else:
            for line in inspect.log_entry(checksum, loaded):
                print(line)
        checksum = loaded.parent
    return 0


def _raw_commit(loaded: O.Commit) -> str:
    """The whole commit variant as ostree's --raw prints it (g_variant_print with type annotations)."""
    return inspect.format_typed(O.COMMIT_TYPE, (
        loaded.metadata, bytes.fromhex(loaded.parent or ""), loaded.related, loaded.subject, loaded.body,
        loaded.timestamp, bytes.fromhex(loaded.root_tree), bytes.fromhex(loaded.root_meta)))


def show(inv: Invocation) -> int:
    if not inv.positional:
        raise UsageError("An object argument is required")
    a = inv.args
    repo = inv.repo()
    rev = inv.positional[0]
    if O.is_checksum(rev) and not repo.has_object(rev, ObjectType.COMMIT):
        return _show_object(repo, rev)
    checksum = resolve(repo, rev)
    loaded = repo.load_commit(checksum)
    if a.string("print-metadata-key"):
        return _print_key(dict(loaded.metadata), a.string("print-metadata-key") or "", "metadata",
                          byteswap=a.flag("no-byteswap") and sys.byteorder == "little")
    if a.string("print-detached-metadata-key"):
        return _print_key(_detached_dict(repo, checksum), a.string("print-detached-metadata-key") or "", "detached")
    if a.flag("print-related"):
        for name, related in loaded.related:
            print(f"{name} {related.hex() if isinstance(related, bytes) else related}")
        return 0
    if a.flag("raw"):
        print(f"commit {checksum}\n{_raw_commit(loaded)}")
        return 0
    if a.flag("print-sizes"):
        return _print_sizes(repo, loaded)
    for line in inspect.log_entry(checksum, loaded):
        print(line)
    _print_signatures(repo, checksum)
    return 0


def _detached_dict(repo: Repo, checksum: str) -> dict[str, object]:
    data = repo.read_detached_metadata(checksum)
    if data is None:
        return {}
    from strata.image import gvariant
    return dict(gvariant.decode("a{sv}", data))


def _print_key(values: dict[str, object], key: str, what: str, *, byteswap: bool = False) -> int:
    if key not in values:
        if what == "detached":
            raise NotFoundError(f"No such detached metadata key '{key}'")
        raise NotFoundError(f"No such metadata key '{key}'")
    value = values[key]
    if isinstance(value, Variant) and value.type in _INT_TYPES:
        print(_format_int(value.type, value.value, byteswap=byteswap))
    else:
        print(inspect.format_value(value))
    return 0


# GVariant integer types: (annotation GLib prints, size in bytes, signed); int32 is printed bare
_INT_TYPES = {"y": ("byte", 1, False), "n": ("int16", 2, True), "q": ("uint16", 2, False),
              "i": ("", 4, True), "u": ("uint32", 4, False), "x": ("int64", 8, True), "t": ("uint64", 8, False)}


def _format_int(sig: str, number: int, *, byteswap: bool) -> str:
    """An integer as g_variant_print shows it. ostree byteswaps metadata for display unless -B (its own keys
    are stored big-endian); this codec reads numbers big-endian already, so the swap here is -B's native view."""
    name, size, signed = _INT_TYPES[sig]
    if byteswap and size > 1:
        number = int.from_bytes(number.to_bytes(size, "little", signed=signed), "big", signed=signed)
    if sig == "y":
        return f"0x{number:02x}"
    return f"{name} {number}" if name else str(number)


def _print_sizes(repo: Repo, loaded: O.Commit) -> int:
    """show --print-sizes: what the commit's objects weigh, and what of it this repository still lacks."""
    from strata.image.sizes import parse_sizes
    from strata.units import human_size
    entries = parse_sizes(loaded.meta("ostree.sizes"))
    needed = [e for e in entries if not repo.has_object(e.checksum, e.objtype)]
    archived = (sum(e.archived for e in needed), sum(e.archived for e in entries))
    unpacked = (sum(e.unpacked for e in needed), sum(e.unpacked for e in entries))
    print(f"Compressed size (needed/total): {human_size(archived[0])}/{human_size(archived[1])}\n"
          f"Unpacked size (needed/total): {human_size(unpacked[0])}/{human_size(unpacked[1])}\n"
          f"Number of objects (needed/total): {len(needed)}/{len(entries)}")
    return 0


def _print_signatures(repo: Repo, checksum: str) -> None:
    """ostree lists a commit's GPG signatures after it (ed25519 ones are not listed by show)."""
    from strata.image import gpg
    detached = repo.read_detached_metadata(checksum)
    count = len(gpg.signatures(detached))
    if not count:
        return
    print(f"Found {count} signature{'' if count == 1 else 's'}:")
    keyrings = gpg.trusted_keyrings(repo.path / "no-remote.trustedkeys.gpg")
    for report in gpg.describe(repo.read_metadata(checksum, ObjectType.COMMIT), detached, keyrings):
        print()
        for line in report:
            print(f"  {line}")


def _show_object(repo: Repo, checksum: str) -> int:
    for objtype in (ObjectType.DIRTREE, ObjectType.DIRMETA):
        if repo.has_object(checksum, objtype):
            data = repo.read_metadata(checksum, objtype)
            loaded = O.DirTree.parse(data) if objtype is ObjectType.DIRTREE else O.DirMeta.parse(data)
            print(loaded)
            return 0
    if repo.has_object(checksum, ObjectType.FILE):
        meta = repo.read_file_meta(checksum)
        print(f"Object: {checksum}\nType: file")
        if meta.is_symlink:
            print(f"File Type: symlink\nTarget: {meta.symlink_target}")
        else:
            print(f"File Type: regular\nSize: {inspect.content_size(repo, checksum)}")
        print(f"Mode: 0{stat.S_IMODE(meta.mode):04o}\nUid: {meta.uid}\nGid: {meta.gid}")
        print("Extended Attributes: (none)" if not meta.xattrs else
              "Extended Attributes: { " + inspect.format_entry(inspect.file_entry(repo, "", checksum)) + " }")
        return 0
    raise NotFoundError(f"No such metadata object {checksum}.commit")


def ls(inv: Invocation) -> int:
    if not inv.positional:
        raise UsageError("An COMMIT argument is required")
    a = inv.args
    repo = inv.repo()
    rev, *paths = inv.positional
    checksum = resolve(repo, rev)
    if not repo.has_object(checksum, ObjectType.COMMIT):
        raise NotFoundError(f"No such metadata object {checksum}.commit")
    for path in paths or ["/"]:
        _ls_path(repo, checksum, path, recursive=a.flag("recursive"), dironly=a.flag("dironly"),
                 xattrs=a.flag("xattrs"), show_checksum=a.flag("checksum"),
                 nul=a.flag("nul-filenames-only"))
    return 0


def _ls_path(repo: Repo, commit_checksum: str, path: str, *, recursive: bool, dironly: bool, xattrs: bool,
             show_checksum: bool, nul: bool) -> None:
    try:
        kind, entry = inspect.lookup(repo, commit_checksum, path)
    except NotFoundError:
        _raise_not_a_directory(repo, commit_checksum, path)
        raise
    entries = [entry]
    if kind == "dir" and not dironly:
        root = inspect.lookup_pair(repo, _commit_pair(repo, commit_checksum), path)
        assert root is not None
        entries += list(inspect.walk(repo, root, entry.path.rstrip("/"), recursive=recursive))
    for item in entries:
        if nul:
            sys.stdout.write(item.path + "\0")
        else:
            print(inspect.format_entry(item, xattrs=xattrs, checksum=show_checksum))


def _raise_not_a_directory(repo: Repo, commit_checksum: str, path: str) -> None:
    """ostree says 'Not a directory' when a path goes on below a file."""
    parts = [p for p in path.split("/") if p]
    for index in range(1, len(parts)):
        try:
            kind, _entry = inspect.lookup(repo, commit_checksum, "/" + "/".join(parts[:index]))
        except NotFoundError:
            return
        if kind == "file":
            raise NotFoundError(f"Failed to resolve path '{path}': Not a directory")


def _commit_pair(repo: Repo, checksum: str) -> tuple[str, str]:
    loaded = repo.load_commit(checksum)
    return loaded.root_tree, loaded.root_meta


def cat(inv: Invocation) -> int:
    if len(inv.positional) < 2:
        raise UsageError("An COMMIT and at least one PATH argument are required")
    repo = inv.repo()
    checksum = resolve(repo, inv.positional[0])
    for path in inv.positional[1:]:
        entry = _follow_links(repo, checksum, path)
        _meta, content = repo.read_file(entry.checksum, verify=True)
        sys.stdout.buffer.write(content)
    sys.stdout.buffer.flush()
    return 0


_MAX_LINKS = 40


def _follow_links(repo: Repo, commit_checksum: str, path: str) -> inspect.TreeEntry:
    """The regular file path names inside the commit, symbolic links followed within the commit's tree."""
    current = path
    for _ in range(_MAX_LINKS):
        kind, entry = inspect.lookup(repo, commit_checksum, current)
        if kind == "dir":
            raise InvalidInputError(f"Cannot open directory {path}: open directory")
        if entry.kind != "l":
            return entry
        base = current.rstrip("/").rpartition("/")[0]
        current = entry.target if entry.target.startswith("/") else os.path.normpath(f"{base}/{entry.target}")
    raise InvalidInputError(f"{path}: Too many levels of symbolic links")


# ---------------------------------------------------------------- checkout

CHECKOUT_OPTIONS = (
    flag("user-mode", "U"), flag("disable-cache"), string("subpath"), flag("union"), flag("union-add"),
    flag("union-identical"), flag("whiteouts"), flag("process-passthrough-whiteouts"), flag("allow-noent"),
    flag("from-stdin"), string("from-file"), string("fsync"), flag("require-hardlinks", "H"),
    flag("force-copy-zerosized", "z"), flag("force-copy", "C"), flag("bareuseronly-dirs", "M"),
    string("skip-list"), string("selinux-policy"), string("selinux-prefix"),
)


def checkout(inv: Invocation) -> int:
    a = inv.args
    _check_checkout_conflicts(inv)
    if not inv.positional and not a.flag("from-stdin") and not a.string("from-file"):
        raise UsageError("COMMIT must be specified")
    repo = inv.repo()
    user_mode = a.flag("user-mode") or repo.mode is RepoMode.BARE_USER_ONLY
    _check_hardlink_mode(repo, user_mode, a.flag("require-hardlinks"))
    if a.flag("from-stdin") or a.string("from-file"):
        source = sys.stdin.read() if a.flag("from-stdin") else Path(a.string("from-file") or "").read_text()
        for line in source.splitlines():
            rev, _, dest = line.partition("\t") if "\t" in line else line.partition(" ")
            _checkout_one(inv, repo, rev, dest, user_mode)
        return 0
    rev = inv.positional[0]
    dest = inv.positional[1] if len(inv.positional) > 1 else rev
    _checkout_one(inv, repo, rev, dest, user_mode)
    return 0


def _check_checkout_conflicts(inv: Invocation) -> None:
    a = inv.args
    pairs = (("union", "union-add"), ("union", "union-identical"), ("union-add", "union-identical"),
             ("require-hardlinks", "force-copy"))
    for first, second in pairs:
        if a.flag(first) and a.flag(second):
            raise UsageError(f"Cannot specify both --{first} and --{second}")
    if a.flag("union-identical") and not a.flag("require-hardlinks"):
        raise UsageError("--union-identical requires --require-hardlinks")


def _check_hardlink_mode(repo: Repo, user_mode: bool, require_hardlinks: bool) -> None:
    if not require_hardlinks:
        return
    if repo.mode is RepoMode.BARE_USER and not user_mode:
        raise StrataError("User repository mode requires user checkout mode to hardlink")
    if repo.mode is RepoMode.BARE and user_mode:
        raise StrataError("Bare repository mode cannot hardlink in user checkout mode")


def _checkout_one(inv: Invocation, repo: Repo, rev: str, dest: str, user_mode: bool) -> None:
    from strata.image.checkout import CheckoutOptions, checkout_commit
    a = inv.args
    checksum = resolve(repo, rev)
    repo = holder_of(repo, checksum)
    options = CheckoutOptions(user_mode=user_mode, union=a.flag("union") or a.flag("union-add"),
                              require_hardlinks=a.flag("require-hardlinks"), force_copy=a.flag("force-copy"),
                              subpath=a.string("subpath") or "", union_add=a.flag("union-add"),
                              no_cache=a.flag("disable-cache"),
                              process_whiteouts=a.flag("process-passthrough-whiteouts"),
                              bareuseronly_dirs=a.flag("bareuseronly-dirs"))
    destination = Path(dest)
    if a.flag("union-add") or a.flag("union-identical") or a.flag("union"):
        options.union = True
    if not options.union and (destination.exists() or destination.is_symlink()) and not a.string("subpath"):
        raise StrataError(f"Destination {dest} exists: File exists")
    try:
        if options.subpath and not destination.exists():
            kind, _entry = inspect.lookup(repo, checksum, options.subpath)
            if kind == "file":  # ostree puts a single file into the destination directory
                destination.mkdir(parents=True)
        if a.flag("union-identical") and destination.is_dir():
            _check_identical(repo, checksum, options.subpath, destination)
        checkout_commit(repo, checksum, destination, options)
    except NotFoundError:
        if a.flag("allow-noent") and a.string("subpath"):
            return
        raise
    if a.string("skip-list"):
        _remove_skipped(destination, lines_of(a.string("skip-list") or ""))


def _check_identical(repo: Repo, checksum: str, subpath: str, destination: Path) -> None:
    """--union-identical: a file already in the destination must be the same file as the commit's."""
    root = inspect.lookup_pair(repo, _commit_pair(repo, checksum), subpath or "/")
    if root is None:
        return
    for entry in inspect.walk(repo, root, ""):
        existing = destination / entry.path.lstrip("/")
        if entry.kind == "d" or not (existing.exists() or existing.is_symlink()):
            continue
        meta, content = repo.read_file(entry.checksum, verify=False)
        if meta.is_symlink:
            same = existing.is_symlink() and os.readlink(existing) == meta.symlink_target
        else:
            same = existing.is_file() and not existing.is_symlink() and existing.read_bytes() == content
        if not same:
            raise StrataError(f"Processing {entry.path}: File exists")


def _remove_skipped(destination: Path, skipped: list[str]) -> None:
    """--skip-list: the listed paths (relative to the checked-out root) are not left in the checkout."""
    for name in skipped:
        target = destination / name.lstrip("/")
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.is_symlink() or target.exists():
            target.unlink()


# ---------------------------------------------------------------- checksum, diff


def checksum(inv: Invocation) -> int:
    if not inv.positional:
        raise UsageError("A filename must be given")
    for name in inv.positional:
        print(file_checksum(Path(name), ignore_xattrs=inv.args.flag("ignore-xattrs")))
    return 0


def file_checksum(path: Path, *, ignore_xattrs: bool) -> str:
    """The content checksum ostree would give the file at path (symlinks not followed)."""
    from strata.image.fsutil import read_xattrs
    st = os.lstat(path)
    xattrs = () if ignore_xattrs else tuple(read_xattrs(str(path)))
    if stat.S_ISLNK(st.st_mode):
        return O.content_checksum(FileMeta(st.st_uid, st.st_gid, st.st_mode, os.readlink(path), xattrs))
    if stat.S_ISDIR(st.st_mode):
        raise InvalidInputError(f"{path} is a directory")
    return O.content_checksum(FileMeta(st.st_uid, st.st_gid, st.st_mode, "", xattrs), path.read_bytes())


def diff(inv: Invocation) -> int:
    from strata.image.treediff import DiskOptions, diff_listings
    if len(inv.positional) < 2:
        raise UsageError("REV must be specified")
    repo = inv.repo()
    a = inv.args
    disk = DiskOptions(owner_uid=a.values.get("owner-uid"), owner_gid=a.values.get("owner-gid"),
                       no_xattrs=a.flag("no-xattrs"))
    old, new = (_listing(repo, target, disk) for target in inv.positional[:2])
    on_disk = [_is_disk_target(target) for target in inv.positional[:2]]
    for change, path in diff_listings(old, new):
        # ostree prints a path on disk relative to the compared directory, a path in a commit absolute
        side_on_disk = on_disk[1] if change == "A" else on_disk[0]
        print(f"{change}    {path.lstrip('/') if side_on_disk else path}")
    return 0


def _is_disk_target(target: str) -> bool:
    return Path(target).is_dir() and ("/" in target or target in (".", ".."))


def _listing(repo: Repo, target: str, disk: DiskOptions) -> Listing:
    """A rev names a commit; anything else that is a directory on disk is read from there."""
    from strata.image.treediff import commit_listing, disk_listing
    if _is_disk_target(target):
        return disk_listing(Path(target), disk)
    return commit_listing(repo, _commit_pair(repo, resolve(repo, target)))


VERBS = (
    Verb("init", init, (string("mode"), string("collection-id"))),
    Verb("commit", commit, COMMIT_OPTIONS),
    Verb("refs", refs, (flag("delete"), flag("list"), flag("alias", "A"), string("create"),
                        flag("collections", "c"), flag("force"))),
    Verb("rev-parse", rev_parse, (flag("single", "S"),)),
    Verb("reset", reset),
    Verb("log", log, (flag("raw"),)),
    Verb("show", show, (flag("print-related"), string("print-variant-type"), string("print-metadata-key"),
                        string("print-detached-metadata-key"), flag("print-sizes"), flag("raw"),
                        flag("no-byteswap", "B"), string("gpg-homedir"), string("gpg-verify-remote"))),
    Verb("ls", ls, (flag("dironly", "d"), flag("recursive", "R"), flag("checksum", "C"), flag("xattrs", "X"),
                    flag("nul-filenames-only"))),
    Verb("cat", cat),
    Verb("checkout", checkout, CHECKOUT_OPTIONS),
    Verb("checksum", checksum, (flag("ignore-xattrs"),), takes_repo=False),
    Verb("diff", diff, (flag("stats"), flag("fs-diff"), flag("no-xattrs"), integer("owner-uid"),
                        integer("owner-gid"))),
)
