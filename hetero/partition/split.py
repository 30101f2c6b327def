"""split(): cut an assigned graph into per-device subgraphs (DESIGN.md §5.2).

Steps:

1. Clusters grow greedily in the graph's topological order. A node joins a cluster of its own device
   that holds one of its producers, unless that would close a cycle: a cycle appears exactly when
   another producer's cluster already depends (transitively) on that cluster. Joining a node may also
   fuse two same-device producer clusters it connects, when neither depends on the other. Otherwise
   the node starts a new cluster -- this is how "a region that would close a cycle is split".
   Dependencies between clusters are kept as transitive ancestor bitsets (Python ints).
2. Same-device clusters that are not connected are merged when neither depends on the other (merging
   them cannot close a cycle), earliest first.
3. Clusters are ordered topologically (ties: the one holding the earliest node first) and numbered.
4. Per subgraph: inputs (consumed, not produced, not constant), outputs (consumed elsewhere or graph
   outputs), constants (initializers it reads: copied, never transferred), dependencies.
5. Boundaries: one per (value, destination device) where a value changes device; graph inputs come
   from HOST and graph outputs go to HOST (HOST and the host device, CPU, share memory).

Traced example, the skip edge (tests/test_partition.py::test_skip_edge_splits_region)::

    x -> a(GPU) -> b(CPU) -> c(GPU) -> y        plus a -> c
    a: new cluster 0 (GPU); b: new cluster 1 (CPU), ancestors {0};
    c: producers in clusters 0 and 1; joining 0 would close 0 -> 1 -> 0 (cluster 1 depends on 0), so
       c starts cluster 2 (GPU) with ancestors {0, 1};
    step 2: clusters 0 and 2 are both GPU but 2 depends on 0: not merged.
    Result: subgraph0 GPU [a], subgraph1 CPU [b], subgraph2 GPU [c].
"""
from __future__ import annotations

import heapq
from typing import Mapping

from ..errors import PartitionError
from ..ir import Graph, node_value_inputs
from .plan import HOST, Boundary, Plan, Subgraph, dtype_name, same_place


def _device_map(assignment) -> tuple[Mapping[str, str], Mapping[str, str]]:
    if hasattr(assignment, "device") and hasattr(assignment, "reason"):
        return assignment.device, assignment.reason
    return dict(assignment), {}


def split(graph: Graph, assignment, host_device: str = "CPU") -> Plan:
    """Cut ``graph`` by ``assignment`` ({node: device} or an affinity Assignment) into a Plan."""
    device_of, reasons = _device_map(assignment)
    nodes = graph.nodes
    missing = [n.name for n in nodes if n.name not in device_of]
    if missing:
        raise PartitionError(f"split: node(s) {missing[:10]} of graph {graph.name!r} have no device "
                             f"({len(missing)} in all)")
    consts = set(graph.initializers)
    prod_idx = {o: i for i, n in enumerate(nodes) for o in n.outputs if o}
    preds: list[list[int]] = []
    for i, n in enumerate(nodes):
        ps = []
        for v in node_value_inputs(n):
            if v in consts:
                continue
            p = prod_idx.get(v)
            if p is not None and p != i and p not in ps:
                ps.append(p)
        preds.append(ps)
    dev = [device_of[n.name] for n in nodes]

    # 1. greedy clustering in topological order
    cluster_of: list[int] = [-1] * len(nodes)
    c_dev: list[str] = []
    c_members: list[list[int]] = []
    anc: list[int] = []  # bitset of clusters each cluster transitively depends on
    alive: list[bool] = []

    def propagate(c: int) -> None:
        """Clusters depending on c now also depend on everything c depends on."""
        bit, extra = 1 << c, anc[c]
        for w in range(len(anc)):
            if alive[w] and w != c and anc[w] & bit:
                anc[w] |= extra

    def merge_into(keep: int, gone: int) -> None:
        c_members[keep].extend(c_members[gone])
        for m in c_members[gone]:
            cluster_of[m] = keep
        c_members[gone] = []
        alive[gone] = False
        anc[keep] |= anc[gone]
        anc[keep] &= ~((1 << keep) | (1 << gone))
        gbit, kbit = 1 << gone, 1 << keep
        for w in range(len(anc)):
            if alive[w] and anc[w] & gbit:
                anc[w] = (anc[w] & ~gbit) | kbit
        propagate(keep)

    for i in range(len(nodes)):
        pcs = sorted({cluster_of[p] for p in preds[i]})
        chosen = -1
        for c in pcs:
            if c_dev[c] != dev[i]:
                continue
            bit = 1 << c
            if all(not (anc[z] & bit) for z in pcs if z != c):
                chosen = c
                break
        if chosen < 0:
            c = len(c_dev)
            c_dev.append(dev[i])
            c_members.append([i])
            a = 0
            for z in pcs:
                a |= anc[z] | (1 << z)
            anc.append(a)
            alive.append(True)
            cluster_of[i] = c
            continue
        c_members[chosen].append(i)
        cluster_of[i] = chosen
        # fuse other same-device producer clusters this node connects, when that closes no cycle
        for c2 in pcs:
            if c2 == chosen or not alive[c2] or c_dev[c2] != dev[i]:
                continue
            b2, bc = 1 << c2, 1 << chosen
            if anc[chosen] & b2 or anc[c2] & bc:
                continue
            if any(anc[z] & b2 for z in pcs if z not in (chosen, c2) and alive[z]):
                continue
            merge_into(chosen, c2)
        live_pcs = {cluster_of[p] for p in preds[i]} - {chosen}
        a = anc[chosen]
        for z in live_pcs:
            a |= anc[z] | (1 << z)
        if a != anc[chosen]:
            anc[chosen] = a & ~(1 << chosen)
            propagate(chosen)

    # 2. merge unconnected same-device clusters that do not depend on each other
    order = [c for c in range(len(c_dev)) if alive[c]]
    for x in order:
        if not alive[x]:
            continue
        for y in order:
            if y <= x or not alive[y] or c_dev[y] != c_dev[x]:
                continue
            if anc[x] & (1 << y) or anc[y] & (1 << x):
                continue
            merge_into(x, y)

    # 3. topological order of clusters (ties: earliest node first)
    live = [c for c in range(len(c_dev)) if alive[c]]
    for c in live:
        c_members[c].sort()
    cdeps = {c: {cluster_of[p] for i in c_members[c] for p in preds[i]} - {c} for c in live}
    indeg = {c: len(cdeps[c]) for c in live}
    users: dict[int, list[int]] = {c: [] for c in live}
    for c in live:
        for d in cdeps[c]:
            users[d].append(c)
    heap = [(c_members[c][0], c) for c in live if indeg[c] == 0]
    heapq.heapify(heap)
    topo: list[int] = []
    while heap:
        _, c = heapq.heappop(heap)
        topo.append(c)
        for u in users[c]:
            indeg[u] -= 1
            if indeg[u] == 0:
                heapq.heappush(heap, (c_members[u][0], u))
    if len(topo) != len(live):  # cannot happen if steps 1-2 are right; say so loudly
        raise PartitionError(f"split: subgraphs of {graph.name!r} form a cycle (internal error)")
    sid = {c: k for k, c in enumerate(topo)}

    # 4. subgraph interfaces
    node_sg = [sid[cluster_of[i]] for i in range(len(nodes))]
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for v in node_value_inputs(n):
            lst = consumers.setdefault(v, [])
            if node_sg[i] not in lst:
                lst.append(node_sg[i])
    outs = set(graph.output_names)
    subgraphs = []
    for k, c in enumerate(topo):
        mem = c_members[c]
        produced = [o for i in mem for o in nodes[i].outputs if o]
        pset = set(produced)
        ins, cst = [], []
        for i in mem:
            for v in node_value_inputs(nodes[i]):
                if v in pset:
                    continue
                tgt = cst if v in consts else ins
                if v not in tgt:
                    tgt.append(v)
        outputs = [v for v in produced if v in outs or any(s != k for s in consumers.get(v, ()))]
        deps = sorted({node_sg[prod_idx[v]] for v in ins if v in prod_idx})
        subgraphs.append(Subgraph(k, c_dev[c], tuple(nodes[i].name for i in mem), tuple(ins), tuple(outputs),
                                  tuple(cst), tuple(deps)))

    # 5. boundaries: one per (value, destination device) where the value changes device
    boundaries = []
    values = list(graph.input_names) + [o for n in nodes for o in n.outputs if o]
    seen = set()
    for v in values:
        if v in seen or v in consts:
            continue
        seen.add(v)
        src = node_sg[prod_idx[v]] if v in prod_idx else None
        src_dev = HOST if src is None else subgraphs[src].device
        by_dev: dict[str, list[int]] = {}
        for s in consumers.get(v, ()):
            if s != src:
                by_dev.setdefault(subgraphs[s].device, []).append(s)
        if v in outs:
            by_dev.setdefault(HOST, [])
        info = graph.info(v)
        for d, dst in by_dev.items():
            if same_place(src_dev, d, host_device):
                continue
            boundaries.append(Boundary(v, src, tuple(sorted(dst)), src_dev, d, dtype_name(info),
                                       info.shape, info.nbytes))
    return Plan(graph, tuple(subgraphs), tuple(boundaries), dict(device_of), dict(reasons), host_device)
