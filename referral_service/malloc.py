"""Memory of the long-lived processes that run many threads (`run`, `worker`).

glibc gives a thread that meets contention on malloc an arena of its own, up to eight per core, and
memory freed in an arena mostly stays with the process. So the RSS of a many-threaded Python process
keeps climbing long after its live data has stopped growing: in `run`, with 4 intake threads beside
the workers, RSS grew 95.7 -> 101.4 MB from 1,000 to 6,000 referrals while the Python heap and
SQLite's own heap stayed flat; capped at two arenas, 92.4 -> 95.3 MB, and +0.5 MB over the last
3,000 (BENCHMARKS.md, "RSS"). Two is what `MALLOC_ARENA_MAX=2`, the usual setting for such servers,
gives; an operator's own `MALLOC_ARENA_MAX` (read by glibc itself at start) is left alone.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

#: mallopt's parameter number for the arena cap (glibc's malloc.h).
M_ARENA_MAX = -8
ARENAS = 2


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas for this process; call before starting threads. Whether it was set
    (not on another C library or system, and not over the operator's `MALLOC_ARENA_MAX`)."""
    if os.environ.get("MALLOC_ARENA_MAX") or sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library this process already uses
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False
