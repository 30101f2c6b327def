"""assign(): decide the device of every node, and say why.

Inputs are plain data (this module knows nothing about device plugins):

* ``supported``: {device: {node: True | reason}} -- each device's answer to ``query(graph)``;
* ``priorities``: the HETERO device list, fastest first; the last is the fallback;
* ``manual``: AFFINITY, {node: device}, possibly partial;
* ``rules``: AFFINITY_RULES (see :mod:`hetero.affinity.rules`);
* ``policy``: "FALLBACK" (priorities) or "COST" (:mod:`hetero.affinity.cost`, needs ``costs``).

Precedence, for each node:

1. manual affinity ("manual");
2. the first matching rule ("rule 2 (conv*=GPU)");
3. the policy: FALLBACK gives the node to the first device in ``priorities`` that supports it
   ("priority 1 (GPU.0)" or "fallback to CPU: GPU.0 cannot run it (TopK: no GPU kernel)");
   COST minimises estimated time ("cost: GPU.0 0.120 ms (vs CPU 0.500 ms)").

A manual entry or rule that sends a node to a device that cannot run it is an error naming both.
A node no listed device can run is an UnsupportedOpError listing every such node, its op and each
device's reason -- unless ``strict=False`` (query_model), which records it in ``unsupported``.

Traced example (tests/test_affinity.py::test_fallback_reasons): priorities (GPU, CPU); GPU supports
conv and relu but not topk ("TopK: no GPU kernel"); rules "Relu=CPU". conv -> GPU "priority 1 (GPU)";
relu -> CPU "rule 1 (Relu=CPU)"; topk -> CPU "fallback to CPU: GPU cannot run it (TopK: no GPU kernel)".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Iterable, Mapping

from ..errors import PropertyError, UnsupportedOpError, suggest
from ..ir import Graph
from .rules import Rule, first_match, parse_rules

#: the device query_model reports for a node no listed device can run
UNSUPPORTED = "UNSUPPORTED"
POLICIES = ("FALLBACK", "COST")


@dataclass(frozen=True)
class Assignment:
    """node -> device, and why. Read-only mappings."""

    device: Mapping[str, str]
    reason: Mapping[str, str]
    priorities: tuple[str, ...]
    policy: str = "FALLBACK"
    #: node -> {device: reason} for nodes no listed device can run (only with strict=False)
    unsupported: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: MappingProxyType({}))

    def __getitem__(self, node: str) -> str:
        return self.device[node]

    def why(self, node: str) -> str:
        if node in self.unsupported:
            return "unsupported: " + "; ".join(f"{d}: {r}" for d, r in self.unsupported[node].items())
        return self.reason[node]

    def devices_used(self) -> tuple[str, ...]:
        used = set(self.device.values())
        return tuple(d for d in self.priorities if d in used)

    def as_dict(self) -> dict[str, str]:
        """{node: device}, with UNSUPPORTED for nodes no device can run."""
        out = dict(self.device)
        out.update({n: UNSUPPORTED for n in self.unsupported})
        return out


def _reason_of(supported: Mapping[str, Mapping[str, object]], device: str, node: str) -> str | None:
    """None if ``device`` runs ``node``, else why not."""
    ans = supported.get(device, {}).get(node)
    if ans is True:
        return None
    if ans is False:
        return f"not supported by {device}"
    if ans is None:
        return f"{device}'s query did not report it"
    return str(ans)


def fused_originals(graph: Graph) -> dict[str, tuple[tuple[str, str], ...]]:
    """node -> ((name, op type), ...) of the original nodes graph passes fused into it."""
    ops = dict(graph.optimized_out)
    return {n.name: tuple((f, ops.get(f, "?")) for f in n.fused) for n in graph.nodes if n.fused}


def _manual_targets(graph: Graph, manual: Mapping[str, str], prio: tuple[str, ...]):
    """AFFINITY keyed by the graph's nodes: an entry naming an original node that was fused into
    another applies to the fused node; one naming a node the passes removed is dropped (it runs
    nowhere). Returns ({node: (device, reason)}, originals)."""
    originals = fused_originals(graph)
    fused_into = {name: n for n, orig in originals.items() for name, _op in orig}
    removed = {name for name, _op in graph.optimized_out} - set(fused_into)
    names = graph.node_by_name
    out: dict[str, tuple[str, str]] = {}
    for node, dev in manual.items():
        if dev not in prio:
            raise PropertyError(f"AFFINITY sends node {node!r} to {dev!r}, which is not in the HETERO device "
                                f"list {list(prio)}")
        if node in names:
            target, why = node, "manual"
        elif node in fused_into:
            target, why = fused_into[node], f"manual (via {node}, fused into it)"
        elif node in removed:
            continue
        else:
            raise PropertyError("AFFINITY names an unknown node: " + suggest(node, list(names) + list(fused_into)))
        if target in out and out[target][0] != dev:
            raise PropertyError(f"AFFINITY sends nodes that were fused into {target!r} "
                                f"({', '.join(f for f, _ in originals.get(target, ()))}) to different devices: "
                                f"{out[target][0]} and {dev} (via {node!r})")
        if target not in out or node == target:
            out[target] = (dev, why)
    return out, originals


def assign(graph: Graph, supported: Mapping[str, Mapping[str, object]], priorities: Iterable[str],
           rules: Iterable[Rule] | str | None = (), policy: str = "FALLBACK", *,
           manual: Mapping[str, str] | None = None, costs=None, strict: bool = True) -> Assignment:
    """Place every node of ``graph`` (see the module doc for the order of precedence)."""
    # 1. check the inputs
    prio = tuple(priorities)
    if not prio:
        raise PropertyError("HETERO needs at least one device in its priority list")
    if len(set(prio)) != len(prio):
        raise PropertyError(f"HETERO device list {list(prio)} names a device twice")
    policy = str(policy).upper()
    if policy not in POLICIES:
        raise PropertyError(f"property AFFINITY_POLICY: expected one of {', '.join(POLICIES)}, got {policy!r}")
    rules = parse_rules(rules)
    names = graph.node_by_name
    manual, originals = _manual_targets(graph, manual or {}, prio)
    for r in rules:
        if r.device not in prio:
            raise PropertyError(f"AFFINITY_RULES {r.describe()} names device {r.device!r}, which is not in the "
                                f"HETERO device list {list(prio)}")

    device: dict[str, str] = {}
    reason: dict[str, str] = {}
    bad_forced: list[str] = []
    bad_nodes: dict[str, dict[str, str]] = {}
    # 2. manual affinity, then rules
    for n in graph.nodes:
        if n.name in manual:
            d, why = manual[n.name]
            src = "AFFINITY"
        else:
            r = first_match(rules, n, originals.get(n.name, ()))
            if r is None:
                continue
            d, why, src = r.device, r.describe(), f"AFFINITY_RULES {r.describe()}"
        not_ok = _reason_of(supported, d, n.name)
        if not_ok is not None:
            bad_forced.append(f"{src} sends node {n.name!r} ({n.op_type}) to {d}, which cannot run it: {not_ok}")
            bad_nodes[n.name] = {d: not_ok}
            continue
        device[n.name], reason[n.name] = d, why
    if bad_forced:
        raise UnsupportedOpError("; ".join(bad_forced), bad_nodes)

    # 3. which devices can run each remaining node
    candidates: dict[str, tuple[str, ...]] = {}
    unsupported: dict[str, dict[str, str]] = {}
    for n in graph.nodes:
        if n.name in device:
            continue
        cands = tuple(d for d in prio if _reason_of(supported, d, n.name) is None)
        if cands:
            candidates[n.name] = cands
        else:
            unsupported[n.name] = {d: _reason_of(supported, d, n.name) or "" for d in prio}
    if unsupported and strict:
        lines = [f"{name} ({names[name].op_type}): " + "; ".join(f"{d}: {r}" for d, r in why.items())
                 for name, why in unsupported.items()]
        raise UnsupportedOpError(f"no device in {list(prio)} can run {len(unsupported)} node(s): "
                                 + " | ".join(lines), unsupported)

    # 4. the policy
    if policy == "FALLBACK" or not candidates:
        for name, cands in candidates.items():
            d = cands[0]
            device[name] = d
            i = prio.index(d)
            if i == 0:
                reason[name] = f"priority 1 ({d})"
            else:
                refused = "; ".join(f"{p} cannot run it ({_reason_of(supported, p, name)})" for p in prio[:i])
                reason[name] = f"fallback to {d}: {refused}"
    else:
        if costs is None:
            raise PropertyError("AFFINITY_POLICY=COST needs cost estimates (costs=...)")
        from .cost import optimise

        sub = graph
        if unsupported:  # optimise over the nodes that have a device
            sub = graph.replace(nodes=tuple(n for n in graph.nodes if n.name not in unsupported))
        placed, why = optimise(sub, candidates, dict(device), prio, costs)
        for name in candidates:
            device[name], reason[name] = placed[name], why[name]

    order = {n.name: i for i, n in enumerate(graph.nodes)}
    device = dict(sorted(device.items(), key=lambda kv: order[kv[0]]))
    reason = {k: reason[k] for k in device}
    return Assignment(MappingProxyType(device), MappingProxyType(reason), prio, policy,
                      MappingProxyType({k: MappingProxyType(v) for k, v in unsupported.items()}))
