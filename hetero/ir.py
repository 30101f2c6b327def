"""hetero's graph IR: plain frozen data, independent of ONNX protobufs and of devices.

A :class:`Graph` holds nodes in topological order, the graph inputs/outputs as :class:`TensorInfo`,
initializers as numpy arrays, and every known value's :class:`TensorInfo` (from shape inference).
Passes never mutate a graph; they build a new one with :meth:`Graph.replace`.

Dimensions are ints when static, strings when symbolic (``"batch"``) and ``None`` when unknown.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Iterable, Mapping

import numpy as np

Dim = int | str | None


@dataclass(frozen=True)
class TensorInfo:
    """Name, element type and shape of one value. ``dtype`` None: unknown; ``shape`` None: unknown rank.

    ``kind`` is "tensor" for ordinary tensors, "sequence" / "optional" / "map" for the other ONNX types.
    """

    name: str
    dtype: np.dtype | None = None
    shape: tuple[Dim, ...] | None = None
    kind: str = "tensor"

    @property
    def is_static(self) -> bool:
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)

    @property
    def nbytes(self) -> int | None:
        if not self.is_static or self.dtype is None:
            return None
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def describe(self) -> str:
        dt = "?" if self.dtype is None else str(self.dtype)
        shp = "?" if self.shape is None else "[" + ",".join("?" if d is None else str(d) for d in self.shape) + "]"
        return f"{dt}{shp}"


@dataclass(frozen=True)
class Node:
    """One operation. ``inputs``/``outputs`` are value names; an empty string is an omitted optional input.

    ``attrs`` holds Python values: int, float, str, lists of them, numpy arrays (TENSOR), or
    :class:`Graph` (GRAPH attributes of If/Loop/Scan).
    """

    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    domain: str = ""
    # Original node names this node stands for after fusion (for OPTIMIZED_OUT profiling).
    fused: tuple[str, ...] = ()

    def __hash__(self) -> int:  # attrs is a dict; identity by name is enough inside one graph
        return hash((self.name, self.op_type))

    def with_(self, **changes) -> "Node":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, eq=False)
class Graph:
    """A frozen, topologically ordered dataflow graph."""

    name: str
    nodes: tuple[Node, ...]
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    initializers: Mapping[str, np.ndarray] = field(default_factory=dict)
    value_info: Mapping[str, TensorInfo] = field(default_factory=dict)
    opsets: Mapping[str, int] = field(default_factory=dict)
    # Names of nodes removed by transforms (Identity, Dropout, folded BatchNorm, ...).
    optimized_out: tuple[tuple[str, str], ...] = ()  # (node name, op type)
    # Values visible from an enclosing graph (for subgraphs of If/Loop/Scan); not produced here.
    outer_scope: frozenset[str] = frozenset()

    # ---- queries -------------------------------------------------------------------------
    @property
    def opset(self) -> int:
        """The default-domain opset version."""
        return int(self.opsets.get("", self.opsets.get("ai.onnx", 21)))

    @cached_property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @cached_property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    @cached_property
    def node_by_name(self) -> dict[str, Node]:
        return {n.name: n for n in self.nodes}

    @cached_property
    def producer(self) -> dict[str, Node]:
        """value name -> node producing it."""
        return {o: n for n in self.nodes for o in n.outputs if o}

    @cached_property
    def consumers(self) -> dict[str, list[Node]]:
        """value name -> nodes consuming it (including via subgraph outer-scope references)."""
        out: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in node_value_inputs(n):
                lst = out.setdefault(i, [])
                if not lst or lst[-1] is not n:
                    lst.append(n)
        return out

    def info(self, value: str) -> TensorInfo:
        """TensorInfo of a value (unknown dtype/shape if inference could not tell)."""
        vi = self.value_info.get(value)
        if vi is not None:
            return vi
        if value in self.initializers:
            a = self.initializers[value]
            return TensorInfo(value, a.dtype, tuple(a.shape))
        return TensorInfo(value)

    def replace(self, **changes) -> "Graph":
        """A new graph with some fields changed (cached queries are recomputed)."""
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        return (f"Graph({self.name!r}, {len(self.nodes)} nodes, inputs={list(self.input_names)}, "
                f"outputs={list(self.output_names)})")


def node_value_inputs(node: Node) -> list[str]:
    """Every value a node reads: its inputs plus outer-scope names its subgraphs reference."""
    names = [i for i in node.inputs if i]
    for g in subgraphs_of(node):
        names.extend(sorted(g.outer_scope))
    return names


def subgraphs_of(node: Node) -> list[Graph]:
    out = []
    for v in node.attrs.values():
        if isinstance(v, Graph):
            out.append(v)
        elif isinstance(v, (list, tuple)):
            out.extend(x for x in v if isinstance(x, Graph))
    return out


def topological_order(nodes: Iterable[Node], available: Iterable[str]) -> tuple[Node, ...]:
    """Order nodes so each comes after the producers of its inputs (stable: keeps given order
    where it can). Raises ValueError naming a node whose input nobody produces, or a cycle."""
    nodes = list(nodes)
    have = set(available)
    produced_by: dict[str, int] = {}
    for idx, n in enumerate(nodes):
        for o in n.outputs:
            if o:
                produced_by[o] = idx
    import heapq

    deps: list[set[int]] = []
    users: dict[int, list[int]] = {}
    for idx, n in enumerate(nodes):
        d = set()
        for i in node_value_inputs(n):
            if i in have:
                continue
            if i not in produced_by:
                raise ValueError(f"node {n.name!r} ({n.op_type}) reads {i!r}, which no node or input provides")
            d.add(produced_by[i])
        d.discard(idx)
        deps.append(d)
        for p in d:
            users.setdefault(p, []).append(idx)
    remaining = [len(d) for d in deps]
    ready = [i for i, r in enumerate(remaining) if r == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(nodes[i])
        for u in users.get(i, ()):
            remaining[u] -= 1
            if remaining[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(nodes):
        stuck = [nodes[i].name for i, r in enumerate(remaining) if r > 0]
        raise ValueError(f"graph has a cycle through nodes {stuck[:10]}")
    return tuple(order)
