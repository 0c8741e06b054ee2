"""`ostree admin ...`: the sysroot verbs, on strata's sysroot implementation."""

from __future__ import annotations

VERBS: tuple[()] = ()
