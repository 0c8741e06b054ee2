"""`override replace --experimental --from repo=NAME PKG` and `--freeze`: base packages replaced by builds
from an rpm-md repository rather than by local RPM files."""

from __future__ import annotations

from collections.abc import Sequence

from strata.core.client import ChangeOptions, Outcome
from strata.core.transaction import Progress
from strata.errors import InvalidInputError
from strata.sysroot.sysroot import Sysroot


def parse_source(source: str | None) -> str | None:
    """`repo=NAME` -> NAME (rpm-ostree's only kind of override source)."""
    if source is None:
        return None
    kind, sep, name = source.partition("=")
    if not sep or kind != "repo" or not name:
        raise InvalidInputError(f"Invalid override source: '{source}' (expected repo=NAME)")
    return name


def replace_from_repo(sysroot: Sysroot, stateroot: str | None, packages: Sequence[str], source: str | None,
                      freeze: bool, progress: Progress, options: ChangeOptions | None = None) -> Outcome:
    parse_source(source)
    del sysroot, stateroot, packages, freeze, progress, options
    raise InvalidInputError("override replace --from repo=NAME is not supported by strata yet; download the RPMs "
                            "and pass them as local files")
