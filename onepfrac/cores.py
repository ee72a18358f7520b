"""How many CPU cores this process may use (the generator's pool, the trainer's DataLoader)."""

from __future__ import annotations

import os


def available_cores() -> int:
    """Cores this process may run on (respects affinity masks and container CPU sets)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1
