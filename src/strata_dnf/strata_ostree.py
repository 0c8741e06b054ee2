"""dnf 4 front end to strata: `dnf ostree ...`, and dnf install/remove as layering on an image-based root.

Installed as a file in dnf's plugin directory and run by the system python3 that runs dnf, so it imports
nothing of strata: it drives strata through its command line (`--json` where it reads results). The strata
executable is $STRATA (split like shell words), else `strata=` in the [main] section of the plugin's
configuration file (/etc/dnf/plugins/strata_ostree.conf, written at install time), else `strata` on PATH.

A root is strata-managed when it is / on a booted OSTree system (/run/ostree-booted), or when --installroot
is a deployment of a directory sysroot (SYSROOT/ostree/deploy/OS/deploy/CHECKSUM.SERIAL). There, dnf
install and dnf remove become `strata install`/`strata uninstall` (layering for the next boot), and any other
dnf transaction is refused before it writes anything.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dnf
import dnf.cli
import dnf.exceptions
from dnf.cli.commands.install import InstallCommand
from dnf.cli.commands.remove import RemoveCommand

PLUGIN_NAME = "strata_ostree"
BOOTED_FLAG = Path("/run/ostree-booted")
_DEPLOY_DIR = re.compile(r"[0-9a-f]{64}\.[0-9]+")
_SUBCOMMANDS = ("status", "rebase", "compose", "trees", "bisect")
# dnf commands that always change the installed packages: refused outright on a strata-managed root
_WRITERS = frozenset({"upgrade", "update", "upgrade-minimal", "update-minimal", "downgrade", "reinstall",
                      "distro-sync", "autoremove", "swap"})
_PASSED_OPTIONS = {"--ref": "compose: the ref to commit to (local/NAME)", "--good": "bisect start: a good build",
                   "--bad": "bisect start: a bad build", "--run": "bisect start: the test command to run inside"}


@dataclass(frozen=True)
class Target:
    """The strata sysroot (and stateroot and deployment, when --installroot names one) dnf operates on."""

    sysroot: str
    osname: str | None = None
    deployment: str | None = None

    def sysroot_args(self, with_os: bool = True) -> list[str]:
        words = ["--sysroot", self.sysroot]
        if with_os and self.osname is not None:
            words += ["--os", self.osname]
        return words


def find_target(installroot: str, booted_flag: Path = BOOTED_FLAG) -> Target | None:
    """The strata-managed root behind dnf's installroot, or None when dnf may manage it itself."""
    root = Path(os.path.realpath(installroot))
    if root == Path("/"):
        return Target("/") if booted_flag.exists() else None
    parts = root.parts
    for i in range(len(parts) - 5, 0, -1):
        osname, deployment = parts[i + 2], parts[i + 4]
        if parts[i:i + 2] == ("ostree", "deploy") and parts[i + 3] == "deploy" and _DEPLOY_DIR.fullmatch(deployment):
            sysroot = Path(*parts[:i])
            if (sysroot / "ostree" / "repo" / "config").is_file():
                return Target(str(sysroot), osname, deployment)
    return None


def strata_command(base: Any) -> list[str]:
    """How to run strata: $STRATA, the plugin configuration's strata=, or PATH."""
    override = os.environ.get("STRATA")
    if override:
        return shlex.split(override)
    parser = StrataOstree.read_config(base.conf)
    if parser.has_section("main") and parser.has_option("main", "strata"):
        return [parser.get("main", "strata")]
    found = shutil.which("strata")
    if found is None:
        raise dnf.exceptions.Error("strata not found: set STRATA, or strata= in the [main] section of "
                                   f"{PLUGIN_NAME}.conf in dnf's plugin configuration directory")
    return [found]


def run_strata(base: Any, args: list[str]) -> int:
    """Run strata with the terminal (its progress and messages go straight to the user); dnf -q is strata -q."""
    quiet = ["-q"] if base.conf.debuglevel == 0 else []
    sys.stdout.flush()
    try:
        return subprocess.run([*strata_command(base), *quiet, *args], check=False).returncode
    except OSError as err:
        raise dnf.exceptions.Error(f"cannot run strata: {err}") from err


def strata_json(base: Any, args: list[str], expect: type) -> Any:
    """Run a strata verb with --json and return what it printed, decoded (a value of type expect)."""
    try:
        proc = subprocess.run([*strata_command(base), *args], check=False, capture_output=True, text=True)
    except OSError as err:
        raise dnf.exceptions.Error(f"cannot run strata: {err}") from err
    if proc.returncode != 0:
        raise dnf.exceptions.Error(proc.stderr.strip() or f"strata {args[0]} failed ({proc.returncode})")
    try:
        value = json.loads(proc.stdout)
    except ValueError as err:
        raise dnf.exceptions.Error(f"strata {args[0]} --json printed no JSON: {err}") from err
    if not isinstance(value, expect):
        raise dnf.exceptions.Error(f"strata {args[0]} --json printed a {type(value).__name__}, not a "
                                   f"{expect.__name__}")
    return value


def require_target(base: Any) -> Target:
    target = find_target(base.conf.installroot)
    if target is None:
        raise dnf.cli.CliError(f"{base.conf.installroot} is not an image-based system managed by strata "
                               f"(not booted from a deployment: no {BOOTED_FLAG}; not a deployment "
                               "SYSROOT/ostree/deploy/OS/deploy/CHECKSUM.SERIAL)")
    return target


def layering_demands(cli: Any, root: bool = True) -> None:
    """dnf loads no repositories, solves nothing and runs no transaction: strata does all of that."""
    demands = cli.demands
    demands.sack_activation = False
    demands.available_repos = False
    demands.resolving = False
    demands.root_user = root


def package_words(opts: Any, verb: str) -> list[str]:
    """The package arguments strata understands: names/provides and RPM files (made absolute)."""
    if getattr(opts, "grp_specs", None):
        groups = ", ".join("@" + spec for spec in opts.grp_specs)
        raise dnf.cli.CliError(f"image-based system: groups and modules cannot be {verb} ({groups})")
    files = [os.path.abspath(name) if "://" not in name else name for name in opts.filenames]
    return [*opts.pkg_specs, *files]


def yes_no_args(base: Any) -> list[str]:
    """dnf's global answers: --assumeno is strata's dry run, -y its assume-yes."""
    if base.conf.assumeno:
        return ["--dry-run"]
    return ["-y"] if base.conf.assumeyes else []


class LayeringInstall(InstallCommand):  # type: ignore[misc]
    """dnf install: dnf's own command, or strata install on a strata-managed root."""

    target: Target | None = None

    @staticmethod
    def set_argparser(parser: Any) -> None:
        InstallCommand.set_argparser(parser)
        parser.add_argument("--apply-live", action="store_true", dest="apply_live",
                            help="image-based system: also apply the layered packages to the running system")

    def configure(self) -> None:
        self.target = find_target(self.base.conf.installroot)
        if self.target is None:
            if self.opts.apply_live:
                raise dnf.cli.CliError("--apply-live: only on an image-based system managed by strata")
            super().configure()
            return
        layering_demands(self.cli)

    def run(self) -> None:
        if self.target is None:
            super().run()
            return
        packages = package_words(self.opts, "layered")
        when = "for the next boot and the running system" if self.opts.apply_live else "for the next boot"
        print(f"image-based system: layering {' '.join(packages)} {when}")
        args = ["install", *self.target.sysroot_args(), *yes_no_args(self.base)]
        args += ["--apply-live"] if self.opts.apply_live else []
        args += ["--cache-only"] if self.base.conf.cacheonly else []
        args += ["--download-only"] if self.base.conf.downloadonly else []
        self.cli.demands.success_exit_status = run_strata(self.base, [*args, *repo_args(self.opts), *packages])


class LayeringRemove(RemoveCommand):  # type: ignore[misc]
    """dnf remove: dnf's own command, or strata uninstall on a strata-managed root."""

    target: Target | None = None

    def configure(self) -> None:
        self.target = find_target(self.base.conf.installroot)
        if self.target is None:
            super().configure()
            return
        if self.opts.duplicated or self.opts.oldinstallonly:
            raise dnf.cli.CliError("image-based system: --duplicates and --oldinstallonly do not apply")
        layering_demands(self.cli)

    def run(self) -> None:
        if self.target is None:
            super().run()
            return
        packages = package_words(self.opts, "removed")
        if not packages:
            raise dnf.cli.CliError("image-based system: name the layered packages to remove")
        print(f"image-based system: removing layered {' '.join(packages)} from the next boot "
              "(base packages: strata override remove)")
        args = ["uninstall", *self.target.sysroot_args(), *yes_no_args(self.base), *packages]
        self.cli.demands.success_exit_status = run_strata(self.base, args)


def repo_args(opts: Any) -> list[str]:
    """dnf's --enablerepo/--disablerepo, the last word for each repo (dnf parses its options twice, so the
    list it keeps holds each of them twice)."""
    actions: dict[str, str] = {}
    for repo, action in getattr(opts, "repos_ed", None) or []:
        actions[repo] = action
    return [word for repo, action in actions.items() for word in (f"--{action}repo", repo)]


class OstreeCommand(dnf.cli.Command):  # type: ignore[misc]
    """dnf ostree status|rebase|compose|trees|bisect: strata's image verbs from dnf."""

    aliases = ("ostree",)
    summary = "image-based system (strata): status, rebase, local composes, hosted trees, bisect"

    target: Target

    @staticmethod
    def set_argparser(parser: Any) -> None:
        parser.add_argument("subcommand", choices=_SUBCOMMANDS, metavar="{" + ",".join(_SUBCOMMANDS) + "}",
                            help="status; rebase REFSPEC [REVISION]; compose [--ref REF] [--dry-run] PKG...; "
                                 "trees; bisect start|good|bad|skip|reset|status|log ...")
        parser.add_argument("--json", action="store_true", dest="strata_json", help="print strata's JSON")
        # Declared here, not left to the pass-through words: dnf's own parser would take --ref for --refresh
        for option, helptext in _PASSED_OPTIONS.items():
            parser.add_argument(option, dest="strata_" + option[2:].replace("-", "_"), metavar=option[2:].upper(),
                                help=helptext)
        parser.add_argument("--dry-run", action="store_true", dest="strata_dry_run",
                            help="compose: print the plan and stop")
        parser.add_argument("arguments", nargs=argparse.REMAINDER, metavar="ARG",
                            help="arguments of the sub-command, passed on to strata")

    def configure(self) -> None:
        self.target = require_target(self.base)
        layering_demands(self.cli, root=self.opts.subcommand in ("rebase", "compose", "bisect"))

    def run(self) -> None:
        handler = getattr(self, "_" + self.opts.subcommand)
        self.cli.demands.success_exit_status = handler(self.target, list(self.opts.arguments))

    def _passed_options(self) -> list[str]:
        words: list[str] = []
        for option in _PASSED_OPTIONS:
            value = getattr(self.opts, "strata_" + option[2:].replace("-", "_"))
            words += [option, value] if value is not None else []
        return words + (["--dry-run"] if self.opts.strata_dry_run else [])

    def _status(self, target: Target, words: list[str]) -> int:
        status = strata_json(self.base, ["status", "--json", *target.sysroot_args(with_os=False), *words], dict)
        if self.opts.strata_json:
            print(json.dumps(status, indent=2))
        else:
            for line in status_lines(status, target):
                print(line)
        return 0

    def _rebase(self, target: Target, words: list[str]) -> int:
        if not words:
            raise dnf.cli.CliError("dnf ostree rebase: name the REFSPEC ([REMOTE:]REF, or :local/NAME)")
        return run_strata(self.base, ["rebase", *target.sysroot_args(), *yes_no_args(self.base), *words])

    def _compose(self, target: Target, words: list[str]) -> int:
        if not words:
            raise dnf.cli.CliError("dnf ostree compose: name the packages (or RPM files) to add")
        words = [os.path.abspath(word) if word.endswith(".rpm") else word for word in words]
        return run_strata(self.base, ["compose", "local", *target.sysroot_args(), *self._passed_options(), *words])

    def _trees(self, target: Target, words: list[str]) -> int:
        args = ["compose", "trees", "--json", *target.sysroot_args(with_os=False), *words]
        trees = strata_json(self.base, args, list)
        if self.opts.strata_json:
            print(json.dumps(trees, indent=2))
        else:
            for line in tree_lines(trees):
                print(line)
        return 0

    def _bisect(self, target: Target, words: list[str]) -> int:
        if not words:
            return run_strata(self.base, ["bisect", "--help"])
        options = self._passed_options() + (["--json"] if self.opts.strata_json else [])
        return run_strata(self.base, ["bisect", words[0], *target.sysroot_args(), *options, *words[1:]])


def status_lines(status: dict[str, Any], target: Target) -> list[str]:
    """strata status --json as a short list, the deployment --installroot names marked."""
    lines = [f"Image-based system (strata), sysroot {target.sysroot}"]
    deployments = status.get("deployments", [])
    for index, dep in enumerate(deployments):
        name = f"{dep['checksum']}.{dep['serial']}"
        marks = ["booted"] if dep.get("booted") else []
        if dep.get("staged") or (index == 0 and not dep.get("booted") and any(d.get("booted") for d in deployments)):
            marks.append("pending: next boot")
        if name == target.deployment:
            marks.append("--installroot")
        bullet = "●" if dep.get("booted") else " "
        lines.append(f"{bullet} {dep.get('origin') or dep['checksum']} ({dep['osname']})"
                     + (f"  [{', '.join(marks)}]" if marks else ""))
        lines.append(f"    Version: {dep.get('version') or '-'}  Deployment: {name}")
        lines += deployment_change_lines(dep)
    if not deployments:
        lines.append("  (no deployments)")
    return lines


def deployment_change_lines(dep: dict[str, Any]) -> list[str]:
    changes = [("Layered", dep.get("requested-packages", []) + dep.get("requested-local-packages", [])),
               ("Removed", dep.get("requested-base-removals", [])),
               ("Replaced", dep.get("requested-base-local-replacements", []))]
    return [f"    {label}: {' '.join(sorted(names))}" for label, names in changes if names]


def tree_lines(trees: list[dict[str, Any]]) -> list[str]:
    """strata compose trees --json: one block per hosted tree."""
    if not trees:
        return ["No local trees (dnf ostree compose PKG... makes one)"]
    lines = []
    for tree in trees:
        source = tree.get("source") or {}
        lines.append(f"{tree['ref']}  version {tree.get('version') or '-'}  commit {tree['commit']}")
        lines.append(f"    From: {source.get('refspec', '-')} version {source.get('version') or '-'}")
        lines.append(f"    Adds: {' '.join(tree.get('added', [])) or '-'}")
        updated = [f"{pair['from']} -> {pair['to']}" for pair in tree.get("updated", [])]
        if updated:
            lines.append(f"    Updates: {', '.join(updated)}")
    return lines


def install_commands(cli: Any) -> None:
    """dnf install/remove (every alias) become the layering-aware commands."""
    for replacement in (LayeringInstall, LayeringRemove):
        for alias in replacement.aliases:
            cli.cli_commands[alias] = replacement


class StrataOstree(dnf.Plugin):  # type: ignore[misc]
    """The plugin: registers `dnf ostree`, swaps install/remove, and refuses other transactions on a
    strata-managed root."""

    name = PLUGIN_NAME

    def __init__(self, base: Any, cli: Any) -> None:
        super().__init__(base, cli)
        if cli is not None:
            cli.register_command(OstreeCommand)
            install_commands(cli)

    def config(self) -> None:
        command = getattr(self.cli, "command", None) if self.cli is not None else None
        target = find_target(self.base.conf.installroot)
        if target is not None and command is not None and _WRITERS & set(command.aliases):
            raise dnf.exceptions.Error(
                f"image-based system: dnf {command.aliases[0]} does not apply to a strata deployment; use strata "
                f"upgrade/override (sysroot {target.sysroot}), or dnf install/remove to layer packages")

    def resolved(self) -> None:
        target = find_target(self.base.conf.installroot)
        if target is not None and self.base.transaction:
            raise dnf.exceptions.Error(
                "image-based system: dnf does not change the packages of a strata deployment; use dnf install/"
                f"remove (layering), dnf ostree ..., or strata (sysroot {target.sysroot})")
