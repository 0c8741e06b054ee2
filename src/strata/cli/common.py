"""Helpers shared by the CLI modules."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from strata.errors import NotFoundError, StrataError

if TYPE_CHECKING:
    from strata.sysroot.sysroot import Sysroot


def import_optional(name: str) -> Any | None:
    """A verb module that may be absent; an import error inside it still surfaces."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            return None
        raise


def add_repo_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", default=os.environ.get("STRATA_REPO", os.environ.get("OSTREE_REPO", ".")),
                        help="path to the repository (default: $STRATA_REPO or the current directory)")


def add_sysroot_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sysroot", default=os.environ.get("STRATA_SYSROOT", "/"),
                        help="path to the sysroot (default: $STRATA_SYSROOT or /)")


def open_sysroot(path: str) -> Sysroot:
    from strata.sysroot.sysroot import Sysroot  # on use: verbs that open no sysroot start without it
    try:
        return Sysroot.open(Path(path))
    except NotFoundError:
        if Path(path).resolve() == Path("/"):
            raise StrataError("This system was not booted via libostree; cannot operate") from None
        raise


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def is_terminal() -> bool:
    return sys.stdout.isatty()
