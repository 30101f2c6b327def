"""The HETERO plan: frozen data describing how a graph is cut into per-device subgraphs.

Invariants (DESIGN.md §3), enforced by :meth:`Plan.check`:

1. every node is in exactly one subgraph;
2. every node of a subgraph is assigned that subgraph's device;
3. the graph of subgraphs is a DAG, and ``subgraphs`` is in a topological order (deps point back);
4. a subgraph's ``inputs`` are exactly the non-constant values its nodes consume but do not produce;
5. its ``outputs`` are exactly the values it produces that another subgraph consumes or that are
   graph outputs;
6. constants (initializers) are copied into each consuming subgraph (``constants``), never listed as
   inputs or boundaries;
7. there is one boundary per (value, destination device) where the value changes device, and each
   boundary's consumers are exactly the subgraphs on that device that read the value.

Graph inputs live on the host and graph outputs must end there. ``HOST`` names that place; the
``host_device`` (CPU) computes in host memory, so host <-> CPU is not a device change.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Mapping

import numpy as np

from ..errors import PartitionError
from ..ir import Graph, TensorInfo, node_value_inputs

HOST = "HOST"


def same_place(a: str, b: str, host_device: str) -> bool:
    """True when values on ``a`` are usable on ``b`` as they are (HOST and the host device match)."""
    return a == b or {a, b} == {HOST, host_device}


@dataclass(frozen=True)
class Subgraph:
    """A connected (or cycle-free merged) same-device part of the graph."""

    id: int
    device: str
    nodes: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    constants: tuple[str, ...]
    deps: tuple[int, ...]

    @property
    def label(self) -> str:
        return f"subgraph{self.id}"


@dataclass(frozen=True)
class Boundary:
    """A value changing device: from ``src`` (a subgraph, or None = graph input on the host) to the
    subgraphs ``dst`` on ``dst_device`` (``dst`` empty and ``dst_device`` HOST: a graph output)."""

    value: str
    src: int | None
    dst: tuple[int, ...]
    src_device: str
    dst_device: str
    dtype: str | None
    shape: tuple | None
    nbytes: int | None

    def describe(self) -> str:
        dt = self.dtype or "?"
        shp = "?" if self.shape is None else "[" + ",".join("?" if d is None else str(d) for d in self.shape) + "]"
        nb = "? B" if self.nbytes is None else f"{self.nbytes} B"
        return f"{dt}{shp} {nb}"


@dataclass(frozen=True)
class Reorder:
    """The explicit node on a boundary: transfer between memories, precision and layout conversion.
    One per (value, destination device), shared by all its consumers there."""

    name: str
    value: str
    src_device: str
    dst_device: str
    src_subgraph: int | None
    dst_subgraphs: tuple[int, ...]
    src_dtype: str | None
    dst_dtype: str | None
    src_layout: str
    dst_layout: str
    transfer: str  # "handoff" (same memory) | "upload" | "download" | "device-to-device"
    shape: tuple | None
    nbytes: int | None
    # also delivers the graph output ``value`` to HOST: the destination is a host-memory device in
    # the host's layout and dtype (the CPU), so HOST shares its copy -- one Reorder per (value,
    # destination memory), not a second download of the same tensor
    serves_host: bool = False

    @property
    def destinations(self) -> tuple[str, ...]:
        return (self.dst_device, HOST) if self.serves_host else (self.dst_device,)

    @property
    def subgraph(self) -> int:
        """The subgraph this Reorder is reported under: the first consumer, else the producer."""
        if self.dst_subgraphs:
            return self.dst_subgraphs[0]
        return -1 if self.src_subgraph is None else self.src_subgraph

    @property
    def converts(self) -> str:
        parts = [self.transfer]
        if self.src_dtype != self.dst_dtype:
            parts.append(f"{self.src_dtype}->{self.dst_dtype}")
        if self.src_layout != self.dst_layout:
            parts.append(f"{self.src_layout}->{self.dst_layout}")
        return ", ".join(parts)


@dataclass(frozen=True, eq=False)
class Plan:
    """Subgraphs in execution order, their boundaries and (after :func:`reorder`) Reorders."""

    graph: Graph = field(repr=False)
    subgraphs: tuple[Subgraph, ...]
    boundaries: tuple[Boundary, ...]
    assignment: Mapping[str, str] = field(repr=False)
    reasons: Mapping[str, str] = field(repr=False, default_factory=dict)
    host_device: str = "CPU"
    reorders: tuple[Reorder, ...] = ()

    # ---- queries -----------------------------------------------------------------------------
    def subgraph_of(self, node: str) -> int:
        return self._subgraph_of[node]

    @cached_property
    def _subgraph_of(self) -> dict[str, int]:
        """node -> subgraph id (the JSON twin, the dot dump and HETERO_DEBUG ask for every node)."""
        return {n: s.id for s in self.subgraphs for n in s.nodes}

    @property
    def devices(self) -> tuple[str, ...]:
        out: list[str] = []
        for s in self.subgraphs:
            if s.device not in out:
                out.append(s.device)
        return tuple(out)

    def same_place(self, a: str, b: str) -> bool:
        """True when values on ``a`` are usable on ``b`` as they are (HOST and the host device match)."""
        return same_place(a, b, self.host_device)

    def subgraph_graph(self, i: int) -> Graph:
        """Subgraph ``i`` as a standalone ir.Graph (constants copied in) for its device's compile."""
        s = self.subgraphs[i]
        g = self.graph
        by_name = g.node_by_name
        nodes = tuple(by_name[n] for n in s.nodes)
        used = set(s.inputs) | set(s.outputs) | {o for n in nodes for o in n.outputs if o} \
            | {v for n in nodes for v in n.inputs if v}
        return Graph(
            name=f"{g.name}_{s.label}",
            nodes=nodes,
            inputs=tuple(g.info(v) for v in s.inputs),
            outputs=tuple(g.info(v) for v in s.outputs),
            initializers={c: g.initializers[c] for c in s.constants},
            value_info={k: v for k, v in g.value_info.items() if k in used},
            opsets=dict(g.opsets),
        )

    # ---- invariants ----------------------------------------------------------------------------
    def check(self) -> "Plan":
        """Raise PartitionError naming the first broken invariant; return self when all hold."""
        g = self.graph
        consts = set(g.initializers)
        # 1. every node in exactly one subgraph
        where: dict[str, int] = {}
        for s in self.subgraphs:
            for n in s.nodes:
                if n in where:
                    raise PartitionError(f"plan: node {n!r} is in subgraph{where[n]} and subgraph{s.id}")
                where[n] = s.id
        missing = [n.name for n in g.nodes if n.name not in where]
        if missing:
            raise PartitionError(f"plan: node(s) {missing[:10]} are in no subgraph")
        extra = [n for n in where if n not in g.node_by_name]
        if extra:
            raise PartitionError(f"plan: subgraph node(s) {extra[:10]} are not in graph {g.name!r}")
        producer = {o: where[n.name] for n in g.nodes for o in n.outputs if o}
        consumers: dict[str, set[int]] = {}
        for n in g.nodes:
            for v in node_value_inputs(n):
                consumers.setdefault(v, set()).add(where[n.name])
        outs = set(g.output_names)
        for i, s in enumerate(self.subgraphs):
            if s.id != i:
                raise PartitionError(f"plan: subgraph at position {i} has id {s.id}")
            # 2. one device per subgraph
            for n in s.nodes:
                d = self.assignment.get(n)
                if d != s.device:
                    raise PartitionError(f"plan: node {n!r} is assigned {d!r} but sits in {s.label} on {s.device}")
            nodes = [g.node_by_name[n] for n in s.nodes]
            produced = {o for n in nodes for o in n.outputs if o}
            consumed = [v for n in nodes for v in node_value_inputs(n)]
            # 4. inputs
            want_in = {v for v in consumed if v not in produced and v not in consts}
            if set(s.inputs) != want_in or len(s.inputs) != len(want_in):
                raise PartitionError(f"plan: {s.label} inputs {sorted(s.inputs)} should be {sorted(want_in)} "
                                     "(values it consumes but does not produce)")
            # 6. constants copied, never transferred
            want_c = {v for v in consumed if v in consts and v not in produced}
            if set(s.constants) != want_c:
                raise PartitionError(f"plan: {s.label} constants {sorted(s.constants)} should be {sorted(want_c)}")
            # 5. outputs
            want_out = {v for v in produced if v in outs or (consumers.get(v, set()) - {s.id})}
            if set(s.outputs) != want_out or len(s.outputs) != len(want_out):
                raise PartitionError(f"plan: {s.label} outputs {sorted(s.outputs)} should be {sorted(want_out)} "
                                     "(values consumed elsewhere or graph outputs)")
            # 3. DAG in topological order
            want_deps = {producer[v] for v in want_in if v in producer}
            if set(s.deps) != want_deps:
                raise PartitionError(f"plan: {s.label} deps {sorted(s.deps)} should be {sorted(want_deps)}")
            later = [d for d in s.deps if d >= s.id]
            if later:
                raise PartitionError(f"plan: {s.label} depends on later subgraph(s) {later}: the subgraphs are "
                                     "not in topological order or form a cycle")
        # 7. boundaries
        seen = set()
        for b in self.boundaries:
            key = (b.value, b.dst_device)
            if key in seen:
                raise PartitionError(f"plan: two boundaries for value {b.value!r} to {b.dst_device}")
            seen.add(key)
            if b.value in consts:
                raise PartitionError(f"plan: constant {b.value!r} crosses a boundary; constants are copied")
            if self.same_place(b.src_device, b.dst_device):
                raise PartitionError(f"plan: boundary for {b.value!r} does not change device ({b.src_device})")
            want_dst = {c for c in consumers.get(b.value, ()) if self.subgraphs[c].device == b.dst_device
                        and c != b.src}
            if set(b.dst) != want_dst:
                raise PartitionError(f"plan: boundary {b.value!r} -> {b.dst_device} feeds {sorted(b.dst)}, "
                                     f"expected {sorted(want_dst)}")
        for s in self.subgraphs:
            for v in s.inputs:
                src = producer.get(v)
                src_dev = HOST if src is None else self.subgraphs[src].device
                if not self.same_place(src_dev, s.device) and (v, s.device) not in seen:
                    raise PartitionError(f"plan: {s.label} on {s.device} reads {v!r} from {src_dev} "
                                         "without a boundary")
        for v in g.output_names:
            src = producer.get(v)
            if src is not None and not self.same_place(self.subgraphs[src].device, HOST) and (v, HOST) not in seen:
                raise PartitionError(f"plan: graph output {v!r} leaves {self.subgraphs[src].device} "
                                     "without a boundary to the host")
        if self.reorders:
            got = [(r.value, r.dst_device) for r in self.reorders]
            served = {(r.value, HOST) for r in self.reorders if r.serves_host}
            for key in sorted(served - seen):
                raise PartitionError(f"plan: a Reorder serves {key[0]!r} to HOST but it is no graph output "
                                     "leaving its device")
            want = [(b.value, b.dst_device) for b in self.boundaries if (b.value, b.dst_device) not in served]
            if got != want:
                k = next((i for i, (x, y) in enumerate(zip(got, want)) if x != y), min(len(got), len(want)))
                raise PartitionError(f"plan: Reorders do not match the boundaries one to one: {len(got)} Reorder(s) "
                                     f"for {len(want)} boundary(ies); at position {k} Reorder "
                                     f"{got[k] if k < len(got) else None} vs boundary {want[k] if k < len(want) else None} "
                                     "(value, destination device)")
        return self

    # ---- JSON twin -----------------------------------------------------------------------------
    def to_json_dict(self) -> dict[str, Any]:
        def b_dict(b: Boundary):
            return {"value": b.value, "src": b.src, "dst": list(b.dst), "src_device": b.src_device,
                    "dst_device": b.dst_device, "dtype": b.dtype, "shape": _json_shape(b.shape), "nbytes": b.nbytes}

        def r_dict(r: Reorder):
            return {"name": r.name, "value": r.value, "src_device": r.src_device, "dst_device": r.dst_device,
                    "src_subgraph": r.src_subgraph, "dst_subgraphs": list(r.dst_subgraphs),
                    "src_dtype": r.src_dtype, "dst_dtype": r.dst_dtype, "src_layout": r.src_layout,
                    "dst_layout": r.dst_layout, "transfer": r.transfer, "shape": _json_shape(r.shape),
                    "nbytes": r.nbytes, "serves_host": r.serves_host}

        return {
            "model": self.graph.name,
            "host_device": self.host_device,
            "nodes": [{"name": n.name, "op": n.op_type, "device": self.assignment.get(n.name),
                       "reason": self.reasons.get(n.name, ""), "subgraph": self.subgraph_of(n.name)}
                      for n in self.graph.nodes],
            "subgraphs": [{"id": s.id, "device": s.device, "nodes": list(s.nodes), "inputs": list(s.inputs),
                           "outputs": list(s.outputs), "constants": list(s.constants), "deps": list(s.deps)}
                          for s in self.subgraphs],
            "boundaries": [b_dict(b) for b in self.boundaries],
            "reorders": [r_dict(r) for r in self.reorders],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_json_dict(), indent=1, sort_keys=True) + "\n"


def _json_shape(shape):
    return None if shape is None else list(shape)


def dtype_name(info: TensorInfo) -> str | None:
    return None if info.dtype is None else np.dtype(info.dtype).name
