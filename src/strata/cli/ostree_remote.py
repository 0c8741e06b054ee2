"""ostree's remote, sign and gpg-sign verbs."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from strata.cli.ostree import Invocation, UsageError, Verb, dispatch
from strata.cli.ostree_options import array, flag, string
from strata.cli.ostree_util import resolve
from strata.errors import InvalidInputError, NotFoundError, StrataError
from strata.image import remote as remotes
from strata.image.objects import ObjectType
from strata.image.parents import repo_chain
from strata.image.repo import Repo

_MAX_STDIN_KEYS = 64 << 20

# ---------------------------------------------------------------- remote


def _remote_add(inv: Invocation) -> int:
    a = inv.args
    backend = a.string("custom-backend")
    if len(inv.positional) < (1 if backend else 2):
        raise UsageError("NAME and URL must be specified")
    name, branches = inv.positional[0], inv.positional[2:]
    url = inv.positional[1] if len(inv.positional) > 1 else None
    repo = inv.repo()
    if a.flag("if-not-exists") and a.flag("force"):
        raise UsageError("Can only specify one of --if-not-exists and --force")
    for spec in a.strings("sign-verify"):  # refused before --force deletes the remote it would replace
        remotes.verification_option(spec)
    if a.flag("force"):
        remotes.delete_remote(repo, name, if_exists=True, keep_keys=True)  # ostree replaces the config only
    settings = [_setting(text) for text in a.strings("set")]
    if a.flag("no-gpg-verify") or a.flag("no-sign-verify"):
        settings.append(("gpg-verify", "false"))
    elif not any(key == "gpg-verify" for key, _ in settings):
        settings.append(("gpg-verify", "true"))  # ostree verifies GPG signatures unless told not to
    if a.string("contenturl"):
        settings.append(("contenturl", a.string("contenturl") or ""))
    if a.string("collection-id"):
        settings.append(("collection-id", a.string("collection-id") or ""))
    if backend:
        settings.append(("custom-backend", backend))  # fetched by another tool: ostree's pull refuses it
    remotes.add_remote(repo, name, url, branches=branches, sign_verify=a.strings("sign-verify"),
                       no_sign_verify=a.flag("no-sign-verify"), settings=settings,
                       if_not_exists=a.flag("if-not-exists"))
    key_file = a.string("gpg-import")
    if key_file:
        from strata.image.gpgkeys import import_selected
        _print_imported(import_selected(remotes.keyring_path(repo, name), [Path(key_file)], []), name)
    return 0


def _print_imported(count: int, name: str) -> None:
    print(f"Imported {count} GPG key{'' if count == 1 else 's'} to remote \"{name}\"")


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
    owners = {name: holder for holder in repo_chain(repo) for name in remotes.list_remotes(holder)}
    names = sorted(owners)
    width = max((len(n) for n in names), default=0)
    for name in names:
        if inv.args.flag("show-urls"):
            print(f"{name:<{width}}  {remotes.get_remote(owners[name], name).url}")
        else:
            print(name)
    return 0


def _remote_show_url(inv: Invocation) -> int:
    if not inv.positional:
        raise UsageError("NAME must be specified")
    remote = remotes.get_remote(inv.repo(), inv.positional[0])
    if not remote.url:
        raise NotFoundError(f'No "url" option in remote "{remote.name}"')
    print(remote.url)
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
    """Keys into the remote's own keyring (REPO/NAME.trustedkeys.gpg): from --keyring files, from standard
    input, or from the user's GnuPG keyring; only KEY-IDs when some are named."""
    if not inv.positional:
        raise UsageError("NAME must be specified")
    keyrings = [Path(path) for path in inv.args.strings("keyring")]
    if keyrings and inv.args.flag("stdin"):
        raise UsageError("--keyring and --stdin are mutually exclusive")
    from strata.image.gpgkeys import import_selected
    repo = inv.repo()
    name, *key_ids = inv.positional
    _find_remote_holder(repo, name)
    keyring = remotes.keyring_path(repo, name)
    if not inv.args.flag("stdin"):
        _print_imported(import_selected(keyring, keyrings, key_ids), name)
        return 0
    with tempfile.TemporaryDirectory(prefix="strata-gpg-import-") as tmp:
        stdin_copy = Path(tmp) / "stdin.gpg"
        stdin_copy.write_bytes(sys.stdin.buffer.read(_MAX_STDIN_KEYS + 1))
        if stdin_copy.stat().st_size > _MAX_STDIN_KEYS:
            raise InvalidInputError(f"more than {_MAX_STDIN_KEYS} bytes of keys on standard input")
        _print_imported(import_selected(keyring, [stdin_copy], key_ids), name)
    return 0


def _find_remote_holder(repo: Repo, name: str) -> Repo:
    """The repository that defines remote name: repo itself or one of its core.parent repositories."""
    for holder in repo_chain(repo):
        if name in remotes.list_remotes(holder):
            return holder
    raise NotFoundError(f'Remote "{name}" not found')


def _remote_summary(inv: Invocation) -> int:
    """The remote's current summary as ostree prints it, after the checks a pull makes; with
    gpg-verify-summary, what its GPG signatures are."""
    if not inv.positional:
        raise UsageError("NAME must be specified")
    name = inv.positional[0]
    holder = _find_remote_holder(inv.repo(), name)
    cache_dir = inv.args.string("cache-dir")
    summary, signature = remotes.fetch_summary(holder, name, Path(cache_dir) if cache_dir else None)
    if summary is None:
        raise NotFoundError("Remote server has no summary file")
    raw = inv.args.flag("raw")
    if raw:
        from strata.image import gvariant, inspect
        from strata.image.summary import SUMMARY_TYPE
        print(inspect.format_typed(SUMMARY_TYPE, gvariant.decode(SUMMARY_TYPE, summary)))
    else:
        from strata.cli.ostree_maint import _view_summary  # summary --view's printer, shared
        _view_summary(summary)
    remote = remotes.get_remote(holder, name)
    if remote.gpg_verify_summary and signature is not None and not raw:
        _print_gpg_signatures(summary, signature, remote)
    return 0


def _print_gpg_signatures(data: bytes, signature: bytes, remote: remotes.Remote) -> None:
    from strata.image import gpg
    reports = gpg.describe(data, signature, remote.gpg_keyring.keyrings())
    print(f"\nGPG: Verification enabled, found {len(reports)} signature{'' if len(reports) == 1 else 's'}:")
    for report in reports:
        print()
        for line in report:
            print(f"  {line}")


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
    "summary": Verb("summary", _remote_summary, (string("cache-dir"), flag("raw"))),
}


def remote(inv: Invocation) -> int:
    return dispatch(REMOTE_VERBS, _raw_args(inv), "command")


def _raw_args(inv: Invocation) -> list[str]:
    """The arguments a verb with sub-verbs hands on (it parses nothing itself)."""
    return list(inv.args.values.get("__raw__", []))


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
    Verb("sign", sign, (flag("delete", "d"), flag("verify"), string("sign-type", "s"), string("keys-file"),
                        string("keys-dir"))),
    Verb("gpg-sign", gpg_sign, (flag("delete", "d"), string("gpg-homedir"))),
)
