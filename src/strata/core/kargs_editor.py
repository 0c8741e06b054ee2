"""`kargs --editor`: the kernel arguments in a temporary file, one line, edited with $EDITOR (then $VISUAL,
then vi); lines starting with # are comments."""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from pathlib import Path

from strata.errors import StrataError

HEADER = ("# Edit the kernel arguments on the line below; lines starting with # are ignored.\n"
          "# Save and quit to apply them; an unchanged line changes nothing.\n")


def editor_command() -> list[str]:
    text = os.environ.get("EDITOR") or os.environ.get("VISUAL") or "vi"
    argv = shlex.split(text)
    if not argv:
        raise StrataError("$EDITOR is empty")
    return argv


def edit_kargs(current: list[str]) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="strata-kargs-") as tmp:
        path = Path(tmp) / "kargs"
        path.write_text(HEADER + " ".join(current) + "\n")
        proc = subprocess.run([*editor_command(), str(path)], check=False)
        if proc.returncode != 0:
            raise StrataError(f"editor exited with status {proc.returncode}; kernel arguments unchanged")
        return parse_edited(path.read_text())


def parse_edited(text: str) -> list[str]:
    return [word for line in text.splitlines() if not line.lstrip().startswith("#") for word in line.split()]
