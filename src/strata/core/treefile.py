"""Treefiles: parsing YAML/JSON, includes and their merge rules, variables, validation."""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from strata.core.treefile_keys import check_supported
from strata.errors import InvalidInputError

MAX_INCLUDE_DEPTH = 50
MAX_NESTING = 64  # levels of lists and maps in one treefile
MAX_VALUES = 1_000_000  # values once YAML aliases are expanded

LIST_KEYS = {
    "repos", "postprocess", "add-files", "remove-files", "remove-from-packages", "units", "install-langs",
    "initramfs-args", "exclude-packages", "ostree-layers", "ostree-override-layers", "etc-group-members",
    "lockfile-repos", "repo-packages", "container-cmd", "cliwrap-binaries",
}
SET_KEYS = {"packages", "ignore-removed-users", "ignore-removed-groups", "bootstrap_packages"}
MAP_KEYS = {"add-commit-metadata", "metadata", "variables", "repovars"}
SCALAR_KEYS = {
    "ref", "releasever", "edition", "selinux", "selinux-label-version", "ima", "ignore-devices", "recommends",
    "documentation", "no-initramfs", "boot-location", "tmp-is-dir", "opt-usrlocal", "machineid-compat",
    "default-target", "preserve-passwd", "check-passwd", "check-groups", "postprocess-script",
    "mutate-os-release", "automatic-version-prefix", "automatic-version-suffix", "gpg-key", "container",
    "rpmdb", "rpmdb-normalize", "readonly-executables", "repo-metadata", "advisories-metadata",
    "platform-module", "cliwrap", "sysusers", "rojig", "basearch",
}
INCLUDE_KEYS = {"include", "arch-include", "conditional-include"}
LEGACY_KEYS = {"default_target": "default-target", "boot_location": "boot-location", "gpg_key": "gpg-key",
               "automatic_version_prefix": "automatic-version-prefix"}
DERIVE_KEYS = {"base-refspec", "container-image-reference", "packages-local", "packages-local-fileoverride",
               "override-remove", "override-replace-local", "ex-override-replace", "initramfs", "custom",
               "override-commit", "unconfigured-state"}
KNOWN_KEYS = LIST_KEYS | SET_KEYS | MAP_KEYS | SCALAR_KEYS | INCLUDE_KEYS
STRING_LIST_KEYS = (SET_KEYS | {"repos", "postprocess", "units", "install-langs", "initramfs-args",
                                 "exclude-packages", "ostree-layers", "ostree-override-layers", "etc-group-members",
                                 "lockfile-repos", "container-cmd", "cliwrap-binaries"}) - {"remove-files"}
BOOL_KEYS = {"recommends", "documentation", "selinux", "ima", "ignore-devices", "no-initramfs", "tmp-is-dir",
             "machineid-compat", "container", "readonly-executables", "cliwrap", "rpmdb-normalize",
             "preserve-passwd"}
STRING_KEYS = {"ref", "boot-location", "default-target", "postprocess-script", "mutate-os-release",
               "automatic-version-prefix", "automatic-version-suffix", "gpg-key", "rpmdb", "repo-metadata",
               "advisories-metadata", "platform-module", "sysusers", "opt-usrlocal", "basearch"}
CHECK_TYPES = ("none", "previous", "file", "data")
RESERVED_VARIABLES = ("basearch", "releasever")
_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_COND_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(==|!=|<=|>=|<|>)\s*(.+?)\s*$")


def host_basearch() -> str:
    machine = platform.machine()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


@dataclass
class Treefile:
    """A fully expanded treefile: includes merged, variables substituted."""

    path: Path
    data: dict[str, Any]
    basearch: str
    sources: list[Path] = field(default_factory=list)  # every file read, top file first

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def ref(self) -> str | None:
        ref = self.data.get("ref")
        return str(ref) if ref is not None else None

    @property
    def packages(self) -> list[str]:
        return list(self.data.get("packages", []))

    @property
    def exclude_packages(self) -> list[str]:
        return list(self.data.get("exclude-packages", []))

    @property
    def recommends(self) -> bool:
        return bool(self.data.get("recommends", True))

    @property
    def documentation(self) -> bool:
        return bool(self.data.get("documentation", True))

    @property
    def repos(self) -> list[str] | None:
        repos = self.data.get("repos")
        return list(repos) if repos is not None else None

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def to_json(self) -> str:
        return json.dumps(self.data, indent=2, sort_keys=True)

    def canonical_bytes(self) -> bytes:
        """The flattened treefile re-serialised, so that formatting and key order do not matter."""
        return json.dumps(self.data, sort_keys=True, separators=(",", ":")).encode()


def load_treefile(path: str | os.PathLike[str], *, basearch: str | None = None) -> Treefile:
    top = Path(path).resolve()
    arch = basearch or host_basearch()
    if arch != host_basearch():
        raise InvalidInputError(f"Invalid basearch {arch} on {host_basearch()}: cross-composes are not supported")
    loader = _Loader(arch)
    merged = loader.load(top, depth=0)
    data = _finalize(merged, loader.variables, arch)
    if str(data.get("edition", "2014")) == "2024":
        _refuse_associated_directories(loader.seen)
    return Treefile(top, data, arch, loader.seen)


def _refuse_associated_directories(sources: list[Path]) -> None:
    """Edition 2024 runs finalize.d executables next to each manifest on the host; strata runs nothing
    outside its sandbox, so it refuses them rather than leaving them out."""
    for source in sources:
        if (source.parent / "finalize.d").is_dir():
            raise InvalidInputError(f"{source.parent / 'finalize.d'}: associated directories (finalize.d) "
                                    "are not supported by strata")


class _Loader:
    """rpm-ostree's include walk: a file's own values win over what it includes; list values of included
    files come first (of several includes, the later ones first); variables live in one map shared along
    the walk, where the includer's values win, so an included file's conditions see its includer's
    variables. The plain and arch includes are read before the conditions are evaluated, so the
    includer's conditions also see the variables its included files declare (the spec's rule)."""

    def __init__(self, basearch: str) -> None:
        self.basearch = basearch
        self.seen: list[Path] = []
        self.variables: dict[str, Any] = {"basearch": basearch}

    def load(self, path: Path, depth: int) -> dict[str, Any]:
        if depth > MAX_INCLUDE_DEPTH:
            raise InvalidInputError(f"maximum include depth {MAX_INCLUDE_DEPTH} exceeded at {path}")
        if path in self.seen:
            raise InvalidInputError(f"{path} is included more than once")
        self.seen.append(path)
        return self.expand(_read_file(path), path.parent, depth, str(path))

    def expand(self, raw: dict[str, Any], directory: Path, depth: int, source: str) -> dict[str, Any]:
        own = _normalise_keys(raw, source)
        self._fold_variables(own, source)
        plain = _as_list(own.pop("include", None)) + _as_list((own.pop("arch-include", None) or {}).get(self.basearch))
        included = [self._include(include, directory, depth) for include in plain]
        for cond in own.pop("conditional-include", None) or []:
            if not _condition_holds(cond.get("if"), self.variables, source):
                continue
            for include in _as_list(cond.get("include")):
                if isinstance(include, dict):  # an inline treefile merges at once, before any file
                    own = _merge(self._include(include, directory, depth), own)
                else:
                    included.append(self._include(include, directory, depth))
        for data in included:
            own = _merge(data, own)
        return own

    def _fold_variables(self, own: dict[str, Any], source: str) -> None:
        declared = dict(own.get("variables") or {})
        for name in RESERVED_VARIABLES:
            if name in declared:
                raise InvalidInputError(f"cannot define reserved variable '{name}'")
        for name, value in declared.items():
            if not isinstance(value, bool | int | float | str):
                raise InvalidInputError(f"{source}: variable '{name}' must be a boolean, a number or a string")
        if own.get("releasever") is not None:
            declared["releasever"] = own["releasever"]
        self.variables = {**declared, **self.variables}

    def _include(self, include: Any, directory: Path, depth: int) -> dict[str, Any]:
        if isinstance(include, dict):
            return self.expand(include, directory, depth + 1, "inline include")
        if not isinstance(include, str):
            raise InvalidInputError(f"invalid include: {include!r}")
        return self.load((directory / include).resolve(), depth + 1)


def _read_file(path: Path) -> dict[str, Any]:
    if path.suffix == ".ks":
        raise InvalidInputError(f"{path}: kickstart treefiles are not supported by strata (use YAML or JSON)")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InvalidInputError(f"treefile not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"cannot parse treefile {path}: not UTF-8 text (at byte {exc.start})") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidInputError(f"cannot parse treefile {path}: {first[:200]}") from None
    except RecursionError:  # both parsers recurse once per nesting level
        raise InvalidInputError(f"cannot parse treefile {path}: nested more than {MAX_NESTING} levels") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidInputError(f"treefile {path} must be a map at the top level")
    _check_shape(data, path)
    return data


def _check_shape(data: Any, path: Path) -> None:
    """Bound nesting depth and the number of values (YAML aliases can share one list many times over)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    values = 0
    while stack:
        node, depth = stack.pop()
        values += 1
        if depth > MAX_NESTING:
            raise InvalidInputError(f"treefile {path} is nested more than {MAX_NESTING} levels")
        if values > MAX_VALUES:
            raise InvalidInputError(f"treefile {path} holds more than {MAX_VALUES:,} values")
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children)


def _normalise_keys(raw: dict[str, Any], source: str) -> dict[str, Any]:
    own: dict[str, Any] = {}
    derive = sorted(k for k in raw if k in DERIVE_KEYS)
    if derive:
        raise InvalidInputError(f"the following derivation fields are not supported: {', '.join(derive)}")
    unknown = sorted(k for k in raw if k not in KNOWN_KEYS and k not in LEGACY_KEYS
                     and not k.startswith("packages-"))
    if unknown:
        raise InvalidInputError(f"{source}: Unknown fields: {', '.join(unknown)}")
    for key, value in raw.items():
        check_supported(key, value, source)
        own[LEGACY_KEYS.get(key, key)] = value
    for key, value in own.items():
        _check_type(key, value, source)
    if "bootstrap_packages" in own:
        own["packages"] = list(own.get("packages") or []) + list(own.pop("bootstrap_packages") or [])
    return own


def _check_type(key: str, value: Any, source: str) -> None:
    """Refuse a value of the wrong type at once, before merging could take a string apart letter by letter."""
    if value is None:
        return
    expected = _expected_type(key)
    if expected is not None and not _has_type(value, expected):
        raise InvalidInputError(f"{source}: treefile key '{key}' must be {expected}")


_SPECIAL_TYPES = {
    "releasever": "a string or a number", "edition": "a string or a number", "selinux-label-version": "a number",
    "check-passwd": "a map", "check-groups": "a map", "repo-packages": "a list of maps",
    "remove-from-packages": "a list of lists of strings", "add-files": "a list of lists of strings",
    "include": "a string or a list of strings", "arch-include": "a map", "conditional-include": "a list of maps",
}


def _expected_type(key: str) -> str | None:
    if key in _SPECIAL_TYPES:
        return _SPECIAL_TYPES[key]
    if key in STRING_LIST_KEYS or key.startswith("packages-"):
        return "a list of strings"
    if key in LIST_KEYS:
        return "a list"
    if key in MAP_KEYS:
        return "a map"
    if key in BOOL_KEYS:
        return "a boolean"
    if key in STRING_KEYS:
        return "a string"
    return None


def _has_type(value: Any, expected: str) -> bool:
    checks = {
        "a list of strings": lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v),
        "a list": lambda v: isinstance(v, list),
        "a map": lambda v: isinstance(v, dict),
        "a boolean": lambda v: isinstance(v, bool),
        "a string": lambda v: isinstance(v, str),
        "a string or a number": lambda v: isinstance(v, str | int | float) and not isinstance(v, bool),
        "a string or a list of strings": lambda v: isinstance(v, str | dict) or (
            isinstance(v, list) and all(isinstance(i, str | dict) for i in v)),
        "a list of maps": lambda v: isinstance(v, list) and all(isinstance(i, dict) for i in v),
        "a number": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "a list of lists of strings": lambda v: isinstance(v, list) and all(
            isinstance(i, list) and all(isinstance(j, str) for j in i) for i in v),
    }
    return bool(checks[expected](value))


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _merge(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """Merge an included treefile (parent) with the includer (child) by the documented rules."""
    result = dict(parent)
    for key, value in child.items():
        if value is None and key in result:
            continue
        if key not in result:
            result[key] = value
        elif key in LIST_KEYS or key.startswith("packages-"):
            result[key] = list(result[key] or []) + list(value or [])
        elif key in SET_KEYS:
            merged = list(result[key] or [])
            merged += [v for v in value or [] if v not in merged]
            result[key] = merged
        elif key in MAP_KEYS:
            result[key] = {**(result[key] or {}), **(value or {})}
        else:
            result[key] = value
    return result


def _condition_holds(cond: Any, variables: dict[str, Any], source: str) -> bool:
    return all(_one_condition(c, variables, source) for c in _as_list(cond))


def _one_condition(text: Any, variables: dict[str, Any], source: str) -> bool:
    match = _COND_RE.match(str(text))
    if not match:
        raise InvalidInputError(f"{source}: invalid condition: {text!r}")
    name, op, raw_value = match.groups()
    if name not in variables:
        raise InvalidInputError(f"{source}: unknown variable in condition: {name}")
    left = variables[name]
    right: Any = yaml.safe_load(raw_value)
    mismatch = isinstance(left, bool) != isinstance(right, bool) or (
        isinstance(left, int | float) != isinstance(right, int | float))
    if mismatch and not (isinstance(left, str) and isinstance(right, str)):
        raise InvalidInputError(f"{source}: type mismatch in condition: {text!r}")
    ops = {"==": left == right, "!=": left != right}
    if op in ops:
        return bool(ops[op])
    return bool({"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op])


def substitute(text: str, variables: dict[str, Any]) -> str:
    def repl(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in variables:
            raise InvalidInputError(f"unknown variable ${{{name}}}")
        value = variables[name]
        return str(value).lower() if isinstance(value, bool) else str(value)
    return _VAR_RE.sub(repl, text)


def split_package_entries(entries: list[Any]) -> list[str]:
    """Split `packages` entries on whitespace, except single-quoted ones (which may hold constraints)."""
    result: list[str] = []
    for entry in entries:
        text = str(entry)
        if text.count("'") % 2:
            raise InvalidInputError(f"Missing terminating quote: {text}")
        lexer = shlex.shlex(text, posix=True)
        lexer.whitespace_split = True
        lexer.quotes = "'"
        result.extend(token for token in lexer if token)
    return result


def _finalize(data: dict[str, Any], variables: dict[str, Any], basearch: str) -> dict[str, Any]:
    out = dict(data)
    packages = split_package_entries(out.get("packages") or [])
    for key in [k for k in out if k.startswith("packages-")]:
        extra = out.pop(key) or []
        if key == f"packages-{basearch}":
            packages += [p for p in split_package_entries(extra) if p not in packages]
    if packages or "packages" in out:
        out["packages"] = packages
    if "exclude-packages" in out:
        excluded = split_package_entries(out["exclude-packages"] or [])
        both = sorted(set(excluded) & set(packages))
        if both:
            raise InvalidInputError(f"package(s) both in packages and exclude-packages: {', '.join(both)}")
        out["exclude-packages"] = excluded
    for key in ("ref", "automatic-version-prefix", "mutate-os-release", "platform-module"):
        if isinstance(out.get(key), str):
            out[key] = substitute(out[key], variables)
    for key in ("metadata", "add-commit-metadata"):
        if isinstance(out.get(key), dict):
            out[key] = {k: substitute(v, variables) if isinstance(v, str) else v for k, v in out[key].items()}
    suffix = out.get("automatic-version-suffix")
    if suffix is not None and (len(str(suffix)) != 1 or not str(suffix).isascii()):
        raise InvalidInputError(f"Invalid automatic-version-suffix, must be exactly one ASCII character: {suffix}")
    for src_dest in out.get("add-files") or []:
        _check_add_file(src_dest)
    for path in out.get("remove-files") or []:
        if str(path).startswith("/") or ".." in str(path).split("/"):
            raise InvalidInputError(f"invalid path in remove-files: {path}")
    if out.get("units") and out.get("machineid-compat") is False:
        raise InvalidInputError("'units' directive is incompatible with machineid-compat = false")
    if out.get("basearch") is not None and out["basearch"] != basearch:
        raise InvalidInputError(f"Invalid basearch {out['basearch']} on {basearch}: "
                                "cross-composes are not supported")
    _apply_implied_defaults(out)
    _check_repo_packages(out.get("repo-packages") or [])
    _check_remove_from_packages(out.get("remove-from-packages") or [])
    _check_repovars(out.get("repovars") or {})
    for key in ("check-passwd", "check-groups"):
        if out.get(key) is not None:
            _check_account_check(key, out[key])
    return out


def _apply_implied_defaults(out: dict[str, Any]) -> None:
    """What `edition: 2024` and `container: true` imply, as rpm-ostree sets them (explicit values win for
    the edition; container forces them)."""
    if out.get("container"):
        out.update({"boot-location": "modules", "selinux": False, "tmp-is-dir": True, "preserve-passwd": False,
                    "check-passwd": {"type": "none"}, "check-groups": {"type": "none"}})
    if str(out.get("edition", "2014")) == "2024":
        out.setdefault("boot-location", "modules")
        out.setdefault("tmp-is-dir", True)


def _check_repo_packages(entries: list[dict[str, Any]]) -> None:
    for entry in entries:
        unknown = sorted(set(entry) - {"repo", "packages"})
        if unknown:
            raise InvalidInputError(f"repo-packages: unknown fields: {', '.join(unknown)}")
        packages = entry.get("packages")
        if not isinstance(entry.get("repo"), str) or not isinstance(packages, list) or not all(
                isinstance(p, str) for p in packages):
            raise InvalidInputError("repo-packages entries need 'repo' (a string) and 'packages' (a list of strings)")
        entry["packages"] = split_package_entries(packages)


def _check_remove_from_packages(entries: list[list[str]]) -> None:
    for entry in entries:
        if len(entry) < 2:
            raise InvalidInputError(f"remove-from-packages entries are [package, regex, ...]: {entry!r}")
        for pattern in entry[1:]:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise InvalidInputError(
                    f"remove-from-packages: invalid regular expression {pattern!r}: {exc}") from None


def _check_repovars(repovars: dict[str, Any]) -> None:
    if "releasever" in repovars:
        raise InvalidInputError('Treefile repo var "releasever" invalid; use "releasever" field instead')
    if "basearch" in repovars:
        raise InvalidInputError('Treefile repo var "basearch" invalid; it is automatically filled in')
    for name, value in repovars.items():
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_]+", name):
            raise InvalidInputError(f"repovars: '{name}' must be a plain name with a string value")


def _check_account_check(key: str, spec: dict[str, Any]) -> None:
    kind = spec.get("type")
    if kind not in CHECK_TYPES:
        raise InvalidInputError(f"{key}: type must be one of {', '.join(CHECK_TYPES)}")
    if kind == "file":
        name = spec.get("filename")
        if not isinstance(name, str) or not name or name.startswith("/") or ".." in name.split("/"):
            raise InvalidInputError(f"{key}: 'filename' must be a path relative to the treefile directory")
    if kind == "data":
        entries = spec.get("entries")
        if not isinstance(entries, dict) or not all(_is_id_spec(v) for v in entries.values()):
            raise InvalidInputError(f"{key}: 'entries' must map names to an id or [uid, gid]")


def _is_id_spec(value: Any) -> bool:
    if isinstance(value, list):
        return len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    return isinstance(value, int) and not isinstance(value, bool)


_ADD_FILES_ROOTS = ("/usr/", "/etc/", "/bin/", "/sbin/", "/lib/", "/lib64/")


def _check_add_file(entry: Any) -> None:
    if not isinstance(entry, list) or len(entry) != 2:
        raise InvalidInputError(f"add-files entries must be [source, destination]: {entry!r}")
    dest = str(entry[1])
    if not dest.startswith(_ADD_FILES_ROOTS) or dest.startswith("/usr/local/") or ".." in dest.split("/"):
        raise InvalidInputError(f"Unsupported path in add-files: {dest}")
    src = str(entry[0])
    if src.startswith("/") or ".." in src.split("/"):
        raise InvalidInputError(f"add-files source must be relative to the treefile directory: {src}")
