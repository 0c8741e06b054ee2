"""`strata compose tree`: build a commit from a treefile and RPM repositories."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from strata.cli.repo import parse_key_value
from strata.core.compose import ComposeOptions, compose_tree
from strata.core.treefile import load_treefile
from strata.errors import InvalidInputError


def register(sub: Any) -> None:
    parser = sub.add_parser("compose", help="compose trees on a build server")
    verbs = parser.add_subparsers(dest="compose_verb", metavar="VERB", parser_class=type(parser))
    p = verbs.add_parser("tree", help="compose a commit from a treefile")
    p.add_argument("treefile")
    p.add_argument("-r", "--repo", help="target repository (required)")
    p.add_argument("--cachedir", help="package cache and rpm-md cache directory")
    p.add_argument("--dry-run", action="store_true", help="print the transaction and stop")
    p.add_argument("--print-only", action="store_true", help="print the expanded treefile as JSON and stop")
    p.add_argument("--force-nocache", action="store_true", help="commit even if nothing changed")
    p.add_argument("--unified-core", action="store_true", help="accepted for compatibility (always on)")
    p.add_argument("--add-metadata-string", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--parent", help="parent commit (default: the ref's current commit)")
    p.add_argument("--no-parent", action="store_true")
    p.add_argument("--write-commitid-to", metavar="FILE")
    p.add_argument("--previous-inputhash")
    p.add_argument("--previous-version")
    p.set_defaults(func=_tree)


def _log(line: str) -> None:
    print(line, flush=True)


def _tree(args: argparse.Namespace) -> int:
    treefile = Path(args.treefile)
    if args.print_only:
        print(load_treefile(treefile).to_json())
        return 0
    if not args.repo:
        raise InvalidInputError("--repo must be specified")
    metadata = []
    for item in args.add_metadata_string:
        if "=" not in item:
            raise InvalidInputError(f"Missing '=' in KEY=VALUE metadata '{item}'")
        metadata.append(parse_key_value(item))
    options = ComposeOptions(
        repo=Path(args.repo), cachedir=Path(args.cachedir) if args.cachedir else None, dry_run=args.dry_run,
        force_nocache=args.force_nocache, add_metadata=metadata, parent=args.parent, no_parent=args.no_parent,
        write_commitid_to=Path(args.write_commitid_to) if args.write_commitid_to else None,
        previous_inputhash=args.previous_inputhash, previous_version=args.previous_version)
    compose_tree(treefile, options, _log)
    sys.stdout.flush()
    return 0
