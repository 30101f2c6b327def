"""The cost-aware placement policy (AFFINITY_POLICY=COST).

Model: a placement ``device_of: {node: device}`` costs

    compute   sum over nodes of node_time[device_of[n]][n]
  + transfer  sum over values v crossing devices of transfer_time[v], once per destination device
              (one Reorder per (tensor, destination device), shared by its consumers there)
  + io        io_time[d][v] for each graph input v read on device d, and for each graph output v
              produced on d (zero for devices that compute in host memory)
  + overhead  subgraph_overhead per connected same-device region (dispatch + synchronisation)

Constants (initializers) cost nothing: they are copied into each consuming subgraph at compile time.

How it is minimised:

1. Every free node (not placed by AFFINITY or AFFINITY_RULES) starts on its cheapest device.
2. Two devices: one minimum s-t cut (networkx) over compute + transfer + io is the exact optimum of
   those three terms. Source side = first device, sink side = second. A node n has edges
   s->n (capacity: its time on the second device) and n->t (its time on the first); a value with
   several consumers is a hyperedge, modelled with one auxiliary vertex per direction so that its
   transfer is charged once, not once per consumer.
   More devices: alpha-beta swaps -- the same cut for each pair of devices over the nodes currently on
   either, everything else fixed -- repeated while the exact total improves.
3. Island absorption: the cut cannot see the per-subgraph overhead, so each connected same-device
   region ("island") is tentatively moved to each neighbouring device that can run all of it and
   kept there if the exact total (now including the overhead) goes down. Repeat until stable.

Traced example (tests/test_affinity.py::test_cost_cut_chain): x -> a -> b -> c -> y on CPU/GPU with
node times a: CPU 5/GPU 1, b: CPU 2/GPU 1.5, c: CPU 5/GPU 1 (ms), transfer 1 ms per edge, io 1 ms
for GPU. Cheapest-per-node gives all GPU (1 + 1.5 + 1 + io 2 = 5.5 ms); the cut confirms it, since
moving b to CPU saves nothing (2 > 1.5) and costs two transfers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np

from ..ir import Graph, Node, node_value_inputs

INF = math.inf


@dataclass(frozen=True)
class Costs:
    """Plain numbers the policy minimises (seconds)."""

    #: device -> node -> seconds; a node missing for a device cannot run there
    node_time: Mapping[str, Mapping[str, float]]
    #: value -> seconds to move it from one device to another (once per destination device)
    transfer_time: Mapping[str, float] = field(default_factory=dict)
    #: device -> graph input/output value -> seconds to bring it from / give it to the host
    io_time: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    #: seconds per subgraph (dispatch + sync); only island absorption sees it
    subgraph_overhead: float = 0.0
    #: per-device overhead of one region (a device with a fixed per-run cost, e.g. a launch latency,
    #: pays it for its own regions only); devices missing here pay ``subgraph_overhead``
    device_overhead: Mapping[str, float] = field(default_factory=dict)

    def overhead_of(self, device: str) -> float:
        return self.device_overhead.get(device, self.subgraph_overhead)


@dataclass(frozen=True)
class CostBreakdown:
    compute: float
    transfer: float
    io: float
    overhead: float
    regions: int

    @property
    def total(self) -> float:
        return self.compute + self.transfer + self.io + self.overhead


@dataclass(frozen=True)
class Flow:
    """One non-constant value: its producer (None: a graph input), consumers, and whether it is a
    graph output."""

    value: str
    producer: str | None
    consumers: tuple[str, ...]
    is_output: bool


def flows(graph: Graph) -> tuple[Flow, ...]:
    """Every non-constant value that some node produces or a graph input provides."""
    consts = set(graph.initializers)
    producer = {o: n.name for n in graph.nodes for o in n.outputs if o}
    cons: dict[str, list[str]] = {}
    for n in graph.nodes:
        for v in node_value_inputs(n):
            if v in consts:
                continue
            lst = cons.setdefault(v, [])
            if not lst or lst[-1] != n.name:
                lst.append(n.name)
    outs = set(graph.output_names)
    out: list[Flow] = []
    seen = set()
    for v in list(graph.input_names) + [o for n in graph.nodes for o in n.outputs if o]:
        if v in seen or v in consts:
            continue
        seen.add(v)
        out.append(Flow(v, producer.get(v), tuple(cons.get(v, ())), v in outs))
    return tuple(out)


def regions(graph: Graph, device_of: Mapping[str, str], fl: Iterable[Flow] | None = None) -> list[list[str]]:
    """Connected same-device regions (undirected, through non-constant values), in node order."""
    parent = {n.name: n.name for n in graph.nodes}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for f in (fl if fl is not None else flows(graph)):
        if f.producer is None:
            continue
        d = device_of.get(f.producer)
        for c in f.consumers:
            if device_of.get(c) == d:
                ra, rb = find(f.producer), find(c)
                if ra != rb:
                    parent[rb] = ra
    groups: dict[str, list[str]] = {}
    for n in graph.nodes:
        groups.setdefault(find(n.name), []).append(n.name)
    return list(groups.values())


def total_cost(graph: Graph, device_of: Mapping[str, str], costs: Costs,
               fl: tuple[Flow, ...] | None = None) -> CostBreakdown:
    """The model's cost of a complete placement."""
    fl = flows(graph) if fl is None else fl
    compute = 0.0
    for n in graph.nodes:
        compute += costs.node_time.get(device_of[n.name], {}).get(n.name, INF)
    transfer = io = 0.0
    for f in fl:
        dsts = {device_of[c] for c in f.consumers}
        if f.producer is None:
            for d in dsts:
                io += costs.io_time.get(d, {}).get(f.value, 0.0)
            continue
        src = device_of[f.producer]
        transfer += costs.transfer_time.get(f.value, 0.0) * len(dsts - {src})
        if f.is_output:
            io += costs.io_time.get(src, {}).get(f.value, 0.0)
    regs = regions(graph, device_of, fl) if graph.nodes else []
    overhead = sum(costs.overhead_of(device_of[r[0]]) for r in regs)
    return CostBreakdown(compute, transfer, io, overhead, len(regs))


# ---- the binary cut ------------------------------------------------------------------------------

class _CutGraph:
    """Accumulates capacities (parallel edges add up; None = infinite) and solves the cut."""

    def __init__(self) -> None:
        self.cap: dict[tuple, float | None] = {}
        self.n_aux = 0

    def add(self, u, v, c: float | None) -> None:
        if c is not None and c <= 0:
            return
        if c is None or c == INF:
            self.cap[(u, v)] = None
            return
        old = self.cap.get((u, v), 0.0)
        if old is not None:
            self.cap[(u, v)] = old + c

    def aux(self):
        self.n_aux += 1
        return ("aux", self.n_aux)

    def solve(self) -> set:
        """The source side of a minimum s-t cut: every node that cannot reach t over residual
        capacity once a maximum preflow is pushed (what ``nx.minimum_cut`` does).

        Why not ``nx.minimum_cut`` itself: it counts an edge as saturated only when its flow
        equals its capacity exactly, and with float capacities a saturated edge can keep a
        rounding residue (2e-16 left of 2.895823704881573 pushed as 1.0 + 1.895823704881573);
        nodes behind it then "reach" t, land on the sink side, and the cut can cost far more than
        the minimum (found by the brute-force property test: 8.40 against 7.96). Here residues
        below ``eps`` count as saturated; the cut is then within (edges x eps) of the minimum."""
        import networkx as nx
        from networkx.algorithms.flow import preflow_push

        G = nx.DiGraph()
        G.add_node("s")
        G.add_node("t")
        for (u, v), c in self.cap.items():
            if c is None:
                G.add_edge(u, v)
            else:
                G.add_edge(u, v, capacity=c)
        R = preflow_push(G, "s", "t", value_only=True)
        finite = [c for c in self.cap.values() if c is not None]
        eps = 1e-12 * (1.0 + max(finite, default=0.0))
        into: dict = {}  # v -> nodes u with residual capacity u -> v
        for u, nbrs in R.adj.items():
            for v, e in nbrs.items():
                if e["capacity"] - e["flow"] > eps:
                    into.setdefault(v, []).append(u)
        sink_side, todo = {"t"}, ["t"]
        while todo:
            for u in into.get(todo.pop(), ()):
                if u not in sink_side:
                    sink_side.add(u)
                    todo.append(u)
        return set(G) - sink_side


def binary_cut(graph: Graph, fl: tuple[Flow, ...], device_of: Mapping[str, str], free: set[str],
               a: str, b: str, costs: Costs) -> dict[str, str]:
    """Place every node of ``free`` on ``a`` or ``b`` minimising compute + transfer + io, with all
    other nodes fixed where ``device_of`` says. Returns the new placement of ``free``."""
    if not free:
        return {}
    g = _CutGraph()
    S, T = "s", "t"
    ta, tb = costs.node_time.get(a, {}), costs.node_time.get(b, {})
    for n in free:
        # s->n is cut when n ends on the sink side (b): it pays its time on b; n->t likewise for a
        g.add(S, ("n", n), tb.get(n, INF))
        g.add(("n", n), T, ta.get(n, INF))

    def pay_if_any_on_a(nodes: list[str], c: float) -> None:
        if len(nodes) == 1:
            g.add(("n", nodes[0]), T, c)
            return
        w = g.aux()
        for x in nodes:
            g.add(("n", x), w, None)
        g.add(w, T, c)

    def pay_if_any_on_b(nodes: list[str], c: float) -> None:
        if len(nodes) == 1:
            g.add(S, ("n", nodes[0]), c)
            return
        w = g.aux()
        g.add(S, w, c)
        for x in nodes:
            g.add(w, ("n", x), None)

    for f in fl:
        fc = [c for c in f.consumers if c in free]
        fixed_dsts = {device_of[c] for c in f.consumers if c not in free}
        if f.producer is None:  # graph input: each device that reads it pays its io once
            if fc:
                pay_if_any_on_a(fc, costs.io_time.get(a, {}).get(f.value, 0.0))
                pay_if_any_on_b(fc, costs.io_time.get(b, {}).get(f.value, 0.0))
            continue
        tr = costs.transfer_time.get(f.value, 0.0)
        p = f.producer
        if p in free:
            pn = ("n", p)
            if f.is_output:
                g.add(pn, T, costs.io_time.get(a, {}).get(f.value, 0.0))
                g.add(S, pn, costs.io_time.get(b, {}).get(f.value, 0.0))
            if tr <= 0:
                continue
            # a is a destination and p sits on b
            if a in fixed_dsts:
                g.add(S, pn, tr)
            elif fc:
                if len(fc) == 1:
                    g.add(("n", fc[0]), pn, tr)
                else:
                    w = g.aux()
                    for c in fc:
                        g.add(("n", c), w, None)
                    g.add(w, pn, tr)
            # b is a destination and p sits on a
            if b in fixed_dsts:
                g.add(pn, T, tr)
            elif fc:
                if len(fc) == 1:
                    g.add(pn, ("n", fc[0]), tr)
                else:
                    w = g.aux()
                    g.add(pn, w, tr)
                    for c in fc:
                        g.add(w, ("n", c), None)
        elif fc and tr > 0:
            src = device_of[p]
            if src != a and a not in fixed_dsts:
                pay_if_any_on_a(fc, tr)
            if src != b and b not in fixed_dsts:
                pay_if_any_on_b(fc, tr)
    S_side = g.solve()
    return {n: (a if ("n", n) in S_side else b) for n in free}


# ---- the policy ----------------------------------------------------------------------------------

def optimise(graph: Graph, candidates: Mapping[str, tuple[str, ...]], fixed: Mapping[str, str],
             priorities: tuple[str, ...], costs: Costs) -> tuple[dict[str, str], dict[str, str]]:
    """Place the nodes not in ``fixed``; ``candidates[node]`` are the devices that can run it, in
    priority order (never empty). Returns (placement of every node, reason for each free node)."""
    fl = flows(graph)
    free = [n.name for n in graph.nodes if n.name not in fixed]

    def t(d, n):
        return costs.node_time.get(d, {}).get(n, INF)

    # 1. cheapest device per node (ties: priority order)
    device_of = dict(fixed)
    for n in free:
        device_of[n] = min(candidates[n], key=lambda d: (t(d, n), priorities.index(d)))
    # 2. cuts
    pairs = [(priorities[i], priorities[j]) for i in range(len(priorities)) for j in range(i + 1, len(priorities))]
    best = total_cost(graph, device_of, costs, fl).total
    restricted = _restrict(costs, candidates)  # (the same for every pair and round)
    for _round in range(1 if len(priorities) == 2 else 6):
        improved = False
        for a, b in pairs:
            movable = {n for n in free if device_of[n] in (a, b)
                       and (a in candidates[n] or b in candidates[n])}
            if not movable:
                continue
            placed = binary_cut(graph, fl, device_of, movable, a, b, restricted)
            trial = dict(device_of)
            trial.update(placed)
            c = total_cost(graph, trial, costs, fl).total
            if c < best - 1e-12 * max(1.0, abs(best)):
                device_of, best, improved = trial, c, True
        if not improved:
            break
    reasons = {}
    for n in free:
        d = device_of[n]
        others = ", ".join(f"{o} {t(o, n) * 1e3:.3f} ms" if o in candidates[n] else f"{o} cannot run it"
                           for o in priorities if o != d)
        reasons[n] = f"cost: {d} {t(d, n) * 1e3:.3f} ms" + (f" (vs {others})" if others else "")
    # 3. island absorption (now with the per-subgraph overhead)
    free_set = set(free)
    adj: dict[str, set[str]] = {n.name: set() for n in graph.nodes}
    for f in fl:
        if f.producer is not None:
            for c in f.consumers:
                adj[f.producer].add(c)
                adj[c].add(f.producer)
    current = total_cost(graph, device_of, costs, fl).total
    for _ in range(len(graph.nodes)):
        moved = False
        isl = [r for r in regions(graph, device_of, fl) if all(n in free_set for n in r)]
        isl.sort(key=lambda r: (sum(t(device_of[n], n) for n in r), len(r)))
        for island in isl:
            own = device_of[island[0]]
            nbr = {device_of[m] for n in island for m in adj[n]} - {own}
            best_d, best_c = None, current
            for d in priorities:
                if d not in nbr or any(d not in candidates[n] for n in island):
                    continue
                trial = dict(device_of)
                trial.update({n: d for n in island})
                c = total_cost(graph, trial, costs, fl).total
                if c < best_c - 1e-12 * max(1.0, abs(best_c)):
                    best_d, best_c = d, c
            if best_d is not None:
                for n in island:
                    device_of[n] = best_d
                    reasons[n] = (f"cost: island of {len(island)} node(s) absorbed from {own} into {best_d} "
                                  f"(saves {(current - best_c) * 1e3:.3f} ms)")
                current = best_c
                moved = True
                break
        if not moved:
            break
    # 4. the whole model on one device is always a candidate: the cut never sees region overheads and
    #    absorption only moves islands that have a neighbour, so a placement that put everything on a
    #    device with a large per-run overhead could otherwise survive
    for d in priorities:
        if all(device_of[n] == d for n in free) or any(d not in candidates[n] for n in free):
            continue
        trial = dict(device_of)
        trial.update({n: d for n in free})
        c = total_cost(graph, trial, costs, fl).total
        if c < current - 1e-12 * max(1.0, abs(current)):
            for n in free:
                reasons[n] = (f"cost: whole model on {d} (saves {(current - c) * 1e3:.3f} ms over the "
                              f"split placement)")
            device_of, current = trial, c
    return device_of, reasons


def _restrict(costs: Costs, candidates: Mapping[str, tuple[str, ...]]) -> Costs:
    """Costs where a node has no time on a device that cannot run it (so the cut never puts it there)."""
    nt = {d: {n: v for n, v in m.items() if d in candidates.get(n, (d,))} for d, m in costs.node_time.items()}
    return Costs(nt, costs.transfer_time, costs.io_time, costs.subgraph_overhead, costs.device_overhead)


# ---- estimating costs from device profiles --------------------------------------------------------

@dataclass(frozen=True)
class DeviceProfile:
    """Rough speed of a device, enough to rank placements.

    ``host_memory``: the device computes in host memory, so moving a tensor to or from it is a
    hand-off (``link_latency_s``), not a copy over a link."""

    flops_per_s: float
    bytes_per_s: float
    node_overhead_s: float = 5e-6
    host_memory: bool = True
    link_bytes_per_s: float = INF
    link_latency_s: float = 5e-6
    subgraph_overhead_s: float = 20e-6


def _numel(shape) -> int | None:
    if shape is None or not all(isinstance(d, int) for d in shape):
        return None
    return int(np.prod(shape, dtype=np.int64))


def node_work(graph: Graph, node: Node) -> tuple[float, float]:
    """(flops, bytes moved) of one node, from inferred shapes; unknown shapes count as small."""
    infos = [graph.info(v) for v in node.inputs if v]
    outs = [graph.info(v) for v in node.outputs if v]
    nbytes = float(sum(i.nbytes or 0 for i in infos) + sum(o.nbytes or 0 for o in outs))
    out_n = sum(_numel(o.shape) or 0 for o in outs)
    flops = float(out_n)
    op = node.op_type
    try:
        if op in ("Conv", "ConvTranspose", "ConvInteger", "QLinearConv") and len(infos) > 1:
            w = infos[1 if op != "QLinearConv" else 3].shape
            k = _numel(w[1:]) if w is not None else None
            if k and out_n:
                flops = 2.0 * out_n * k
        elif op in ("Gemm", "MatMul", "MatMulInteger", "FusedMatMul") and infos:
            a = infos[0].shape
            if a is not None and len(a) >= 1 and isinstance(a[-1], int):
                k = a[0] if (op == "Gemm" and node.attrs.get("transA", 0) and len(a) == 2) else a[-1]
                if isinstance(k, int) and out_n:
                    flops = 2.0 * out_n * k
    except (TypeError, IndexError):
        pass
    return flops, nbytes


def estimate_costs(graph: Graph, profiles: Mapping[str, DeviceProfile],
                   supported: Mapping[str, Mapping[str, object]] | None = None) -> Costs:
    """Costs from per-device profiles: node time = max(flops / rate, bytes / bandwidth) + overhead."""
    node_time: dict[str, dict[str, float]] = {}
    work = {n.name: node_work(graph, n) for n in graph.nodes}
    for d, p in profiles.items():
        ok = (supported or {}).get(d)
        m = {}
        for n in graph.nodes:
            if ok is not None and ok.get(n.name) is not True:
                continue
            fl_, by = work[n.name]
            m[n.name] = max(fl_ / p.flops_per_s, by / p.bytes_per_s) + p.node_overhead_s
        node_time[d] = m

    def move(p: DeviceProfile, nbytes: int) -> float:
        return p.link_latency_s + (nbytes / p.link_bytes_per_s if p.link_bytes_per_s != INF else 0.0)

    transfer, io = {}, {d: {} for d in profiles}
    for f in flows(graph):
        nb = graph.info(f.value).nbytes or 0
        transfer[f.value] = max((move(p, nb) for p in profiles.values()), default=0.0)
        if f.producer is None or f.is_output:
            for d, p in profiles.items():
                if not p.host_memory:
                    io[d][f.value] = move(p, nb)
    overhead = max((p.subgraph_overhead_s for p in profiles.values()), default=0.0)
    return Costs(node_time, transfer, io, overhead, {d: p.subgraph_overhead_s for d, p in profiles.items()})
