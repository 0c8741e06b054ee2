"""Runs one checkout in a fresh, single-threaded interpreter (pytest may run threads, and a checkout forks its
workers only from a single-threaded process) and prints what the test needs to know as JSON.

    python -m tests.image.checkout_driver REPO REV DEST OPTIONS-JSON

OPTIONS-JSON: CheckoutOptions fields, plus "fork_after" (files the parent fills before forking),
"slice_files" (a directory with more files is shared out in slices of this many),
"interrupt" (raise KeyboardInterrupt at the first progress report while workers run) and "die" (the parent
kills itself with SIGKILL there, after writing its workers' pids to the file named by "die").
Prints {"files": N, "workers_seen": K, "error": "Type: message" or null, "children_after": [pids]}."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from strata.image import checkout
from strata.image.repo import Repo


def children() -> list[int]:
    """This process's living children, from the kernel's list (every thread's)."""
    pids: list[int] = []
    for task in Path("/proc/self/task").iterdir():
        pids += [int(p) for p in (task / "children").read_text().split()]
    return pids


def main() -> int:
    repo_path, rev, dest, options_json = sys.argv[1:5]
    options: dict[str, Any] = json.loads(options_json)
    checkout._FORK_AFTER_FILES = options.pop("fork_after", checkout._FORK_AFTER_FILES)
    checkout._SLICE_FILES = options.pop("slice_files", checkout._SLICE_FILES)
    interrupt = options.pop("interrupt", False)
    die = options.pop("die", None)
    seen = {"files": 0, "workers": 0}

    def files_done(count: int) -> None:
        seen["files"] += count
        workers = children()
        seen["workers"] = max(seen["workers"], len(workers))
        if workers and die:
            Path(die).write_text(json.dumps(workers))
            os.kill(os.getpid(), signal.SIGKILL)
        if workers and interrupt:
            raise KeyboardInterrupt

    repo = Repo.open(repo_path)
    commit = repo.resolve_rev(rev)
    assert commit is not None
    error = None
    try:
        checkout.checkout_commit(repo, commit, Path(dest), checkout.CheckoutOptions(**options, files_done=files_done))
    except (Exception, KeyboardInterrupt) as exc:
        error = f"{type(exc).__name__}: {exc}"
    print(json.dumps({"files": seen["files"], "workers_seen": seen["workers"], "error": error,
                      "children_after": children()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
