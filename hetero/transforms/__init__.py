"""Compile-time graph passes: each a pure function Graph -> Graph."""
from __future__ import annotations

from ..ir import Graph


def optimize(graph: Graph) -> Graph:
    """Run the standard pass pipeline."""
    return graph
