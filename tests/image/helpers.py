"""Helpers shared by image tests: describing a directory tree completely, running strata's CLI."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

from strata.image.fsutil import read_xattrs


def describe_tree(root: Path, *, xattrs: bool = True, owners: bool = True) -> dict[str, tuple[Any, ...]]:
    """path -> (type, permission bits, uid, gid, symlink target or content digest, xattrs)."""
    result: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, ""]:
            full = Path(dirpath) / name if name else Path(dirpath)
            if not name and full != root:
                continue
            st = full.lstat()
            rel = "/" + str(full.relative_to(root)) if full != root else "/"
            if stat.S_ISLNK(st.st_mode):
                kind, data = "l", os.readlink(full)
            elif stat.S_ISDIR(st.st_mode):
                kind, data = "d", ""
            else:
                kind, data = "-", hashlib.sha256(full.read_bytes()).hexdigest()
            attrs = tuple(a for a in read_xattrs(full) if a[0].startswith(b"user.")) if xattrs else ()
            owner = (st.st_uid, st.st_gid) if owners else (0, 0)
            result[rel] = (kind, stat.S_IMODE(st.st_mode), *owner, data, attrs)
    return result


def strata(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "strata.cli.main", *args], capture_output=True, text=True,
                          check=check)


def init_both(base: Path, mode: str, tree: Path, ref: str) -> tuple[Path, Path]:
    """A strata and an ostree repository of mode under base, each holding tree committed as ref at the same
    timestamp (so their commits can be compared byte for byte)."""
    from tests.conftest import run_ostree
    ours, theirs = base / f"strata-{mode}", base / f"ostree-{mode}"
    strata("repo", "init", "--repo", str(ours), "--mode", mode)
    run_ostree(f"--repo={theirs}", "init", f"--mode={mode}")
    strata("repo", "commit", "--repo", str(ours), "-b", ref, f"--tree=dir={tree}", "--timestamp=@1704067200")
    run_ostree(f"--repo={theirs}", "commit", "-b", ref, f"--tree=dir={tree}", "--timestamp=@1704067200")
    return ours, theirs
