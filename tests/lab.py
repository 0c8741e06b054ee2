"""The lab distribution, built once per test session (or taken from $STRATA_LAB_CACHE)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from strata.packages.labdistro import build_lab


def lab_distribution(tmp_root: Path) -> Path:
    cached = os.environ.get("STRATA_LAB_CACHE")
    out = Path(cached) if cached else tmp_root / "lab"
    if not (out / "lab.json").exists():
        build_lab(out)
    return out


def copy_treefile_dir(lab: Path, dest: Path) -> Path:
    """A private copy of the treefile and repo file, so a test can edit them."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("lab.json", "strata-lab.repo"):
        shutil.copy(lab / name, dest / name)
    return dest / "lab.json"
