"""``HETERO_DEBUG``: 1 prints placements and compile summaries, 2 also per-node timings (to stderr)."""
from __future__ import annotations

import os
import sys


def debug_level() -> int:
    """The HETERO_DEBUG level; unset, empty, '0' or garbage mean off."""
    try:
        return int(os.environ.get("HETERO_DEBUG", "0") or 0)
    except ValueError:
        return 0


def debug(msg: str, level: int = 1) -> None:
    if debug_level() >= level:
        print(f"[hetero] {msg}", file=sys.stderr)
