"""Partition: cut an assigned graph into per-device subgraphs, add Reorders, draw it (DESIGN.md §5.2-5.5).

Device-agnostic: takes the graph and a {node: device} mapping (or an affinity Assignment) and returns
frozen data (:class:`Plan`, :class:`Subgraph`, :class:`Boundary`, :class:`Reorder`).
"""
from .dot import device_colour, safe_name, to_affinity_dot, to_subgraphs_dot, write_dumps
from .plan import HOST, Boundary, Plan, Reorder, Subgraph
from .reorder import reorder, traits
from .split import split

__all__ = ["split", "reorder", "traits", "Plan", "Subgraph", "Boundary", "Reorder", "HOST", "to_affinity_dot",
           "to_subgraphs_dot", "write_dumps", "device_colour", "safe_name"]
