"""How many threads llama.cpp runs with: the cores this machine can spare now."""
from __future__ import annotations

import os

from edge.errors import BackendError


def default_threads() -> int:
    """llama.cpp threads for a model loaded now: `$EDGE_THREADS`, else the free cores, capped.

    llama.cpp's threads spin while they wait for each other, so more threads
    than free cores is far slower, not a little: on a 2-core machine shared
    with a busy process, 2 threads decoded 7x slower than 1. On the same
    machine idle, 2 threads cut a Manager turn by a quarter. So: the cores
    the 1-minute load average leaves free, at most half the cores (about the
    physical ones; 2 on a 2-core machine), at least 1.
    """
    configured = os.environ.get("EDGE_THREADS", "").strip()
    if configured:
        try:
            return max(1, int(configured))
        except ValueError:
            raise BackendError(f"EDGE_THREADS={configured!r} is not a number.",
                               hint="set it to a thread count, e.g. EDGE_THREADS=2, or unset it") from None
    cores = usable_cores()
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows
        busy = 0.0
    ceiling = max(2, cores // 2) if cores >= 2 else 1
    return max(1, min(ceiling, cores - round(busy)))


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)
