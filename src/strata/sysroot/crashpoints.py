"""Named points where tests can kill a transaction (STRATA_CRASH_AT=name) to prove crash safety, or hold it
(STRATA_PAUSE_AT=name, for STRATA_PAUSE_SECONDS, default 60) to watch it busy and cancel it."""

from __future__ import annotations

import os
import signal
import time


def crash_point(name: str) -> None:
    if os.environ.get("STRATA_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("STRATA_PAUSE_AT") == name:
        time.sleep(float(os.environ.get("STRATA_PAUSE_SECONDS", "60")))
