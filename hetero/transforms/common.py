"""Small helpers shared by the graph passes (no pass logic here)."""
from __future__ import annotations

from typing import Iterable

import numpy as np

from ..ir import Graph, Node, subgraphs_of

#: ops whose result changes from run to run: never evaluated at compile time
RANDOM_OPS = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                        "Bernoulli", "Multinomial", "Dropout"})


def subgraph_reads(graph: Graph) -> frozenset[str]:
    """Values of ``graph`` that some If/Loop/Scan body reads from the enclosing scope.

    Those names are baked into the body graphs, so a pass must neither rename nor remove them.
    """
    out: set[str] = set()
    for n in graph.nodes:
        for g in subgraphs_of(n):
            out.update(g.outer_scope)
    return frozenset(out)


def all_value_names(graph: Graph) -> set[str]:
    """Every name in use: inputs, initializers, node outputs, value infos, outer scope."""
    names = set(graph.input_names) | set(graph.output_names) | set(graph.initializers)
    names |= set(graph.value_info) | set(graph.outer_scope)
    for n in graph.nodes:
        names.update(o for o in n.outputs if o)
    return names


def fresh_name(base: str, taken: set[str]) -> str:
    """``base`` if free, else ``base_1``, ``base_2``, ...; the chosen name is added to ``taken``."""
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


def single_consumer(graph: Graph, value: str, reads: frozenset[str]) -> Node | None:
    """The only node reading ``value``, or None when there are several, none, or the value must stay
    visible (a graph output, or read by a subgraph)."""
    if value in graph.output_names or value in reads:
        return None
    users = graph.consumers.get(value, [])
    if len(users) != 1:
        return None
    user = users[0]
    if sum(1 for i in user.inputs if i == value) != 1:  # e.g. Mul(x, x): not a simple chain
        return None
    return user


def const(graph: Graph, value: str) -> np.ndarray | None:
    """The initializer named ``value``, or None (also for the empty name of an omitted input)."""
    if not value:
        return None
    return graph.initializers.get(value)


def known_shape(graph: Graph, value: str) -> tuple | None:
    """The value's shape if every dimension is known (an int, or a named symbolic dim), else None."""
    info = graph.info(value)
    if info.kind != "tensor" or info.shape is None or any(d is None for d in info.shape):
        return None
    return tuple(info.shape)


def is_float_or_unknown(graph: Graph, value: str) -> bool:
    dt = graph.info(value).dtype
    return dt is None or dt.kind == "f"


def with_opset(graph: Graph, domain: str, version: int) -> dict[str, int]:
    opsets = dict(graph.opsets)
    opsets.setdefault(domain, version)
    return opsets


def rebuild(graph: Graph, nodes: Iterable[Node], removed: Iterable[Node] = (), **changes) -> Graph:
    """A new graph with ``nodes``; ``removed`` nodes are appended to ``optimized_out``."""
    out = tuple(graph.optimized_out) + tuple((n.name, n.op_type) for n in removed)
    return graph.replace(nodes=tuple(nodes), optimized_out=out, **changes)
