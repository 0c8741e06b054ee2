"""Dependency closure of a layered tree: with base packages removed or replaced (or local RPMs layered, which
no solver chose), the resulting package set must still satisfy every requirement. The set is judged as a
whole by the real rpm on the tree's rpmdb, compared with the base's own state so that only what the change
broke is refused."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from strata.core.invariants import unsatisfied_dependencies
from strata.errors import StrataError
from strata.image.checkout import CheckoutOptions, checkout_tree
from strata.image.repo import Repo
from strata.packages.rpmdb import RPMDB_DIR

_NEEDED = re.compile(r"^(?P<dep>.+) is needed by (?:\(installed\) )?(?P<pkg>\S+)$")


class DependencyError(StrataError):
    """The package set of a change is not dependency-closed."""


def unsatisfied(repo: Repo, commit: str) -> list[str]:
    """rpm's "X is needed by P" lines for the commit's rpmdb (empty when the tree has no rpmdb)."""
    loaded = repo.load_commit(commit)
    with tempfile.TemporaryDirectory(prefix="strata-closure-", dir=repo.tmp_dir) as tmp:
        target = Path(tmp) / "rpm"
        try:
            checkout_tree(repo, (loaded.root_tree, loaded.root_meta), target,
                          CheckoutOptions(subpath=RPMDB_DIR, force_copy=True))
        except StrataError:
            return []
        if not (target / "rpmdb.sqlite").is_file():
            return []
        return unsatisfied_dependencies(target)


def check_closure(repo: Repo, base: str, commit: str) -> None:
    """Refuse `commit` when it leaves requirements unsatisfied that `base` satisfied, listing every one."""
    before = set(unsatisfied(repo, base))
    problems = [line for line in unsatisfied(repo, commit) if line not in before]
    if problems:
        raise DependencyError(describe(problems))


def describe(lines: list[str]) -> str:
    count = len(lines)
    texts = []
    for index, line in enumerate(lines, 1):
        match = _NEEDED.match(line.strip())
        text = f"package {match['pkg']} requires {match['dep']}, but none of the providers can be installed" \
            if match else line.strip()
        texts.append(f"Problem {index}: {text}" if count > 1 else f"Problem: {text}")
    return f"Could not depsolve transaction; {count} problem{'s' if count > 1 else ''} detected: " + "; ".join(texts)
