"""Named points where tests can kill a transaction (STRATA_CRASH_AT=name) to prove crash safety."""

from __future__ import annotations

import os
import signal


def crash_point(name: str) -> None:
    if os.environ.get("STRATA_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
