"""Identity / inference-Dropout removal and dead-node removal.

``remove_identity``: an ``Identity`` (or a ``Dropout`` that is a no-op at inference) copies ``x`` to
``y``; readers of ``y`` can read ``x`` instead. Names are resolved through an alias map so chains
collapse in one sweep. Graph outputs keep their names: when ``y`` is a graph output, the producer of
``x`` is renamed to write ``y`` directly (allowed only if ``x`` is an ordinary intermediate: not a graph
input, output or initializer, not from an outer scope, not read by a subgraph); otherwise the node
stays. Values read by subgraphs are never renamed either, as their names are baked into the bodies.

Traced example::

    x ─Relu─▶ a ─Identity─▶ b ─Dropout─▶ out (graph output)
    Identity: b is no graph output          → alias b → a, node removed
    Dropout:  input resolves to a; out is a graph output, a is an ordinary intermediate
              → alias a → out, node removed
    rewrite:  Relu(x) -> out                (1 node; Identity, Dropout OPTIMIZED_OUT)

``remove_dead_nodes``: walks the nodes backwards keeping those with an output that is a graph
output or read by a kept node (subgraph outer-scope reads count), then drops initializers no kept
node reads.
"""
from __future__ import annotations

from ..ir import Graph, Node, node_value_inputs
from .common import const, rebuild, subgraph_reads


def _passthrough_input(graph: Graph, node: Node) -> str | None:
    """The input an Identity / inference Dropout forwards unchanged, or None if the node is not one."""
    if node.domain not in ("", "ai.onnx") or not node.inputs or not node.inputs[0]:
        return None
    if node.op_type == "Identity":
        return node.inputs[0]
    if node.op_type != "Dropout":
        return None
    # Dropout-12+: training_mode input; a no-op only when it is absent or a constant False
    if len(node.inputs) >= 3 and node.inputs[2]:
        mode = const(graph, node.inputs[2])
        if mode is None or (mode.size and bool(mode.reshape(-1)[0])):
            return None
    # Dropout-1..6: is_test=0 means training mode in the spec, but every inference runtime (ONNX
    # Runtime, OpenVINO) treats it as a no-op; so do we.
    mask = node.outputs[1] if len(node.outputs) > 1 else ""
    if mask and (mask in graph.consumers or mask in graph.output_names):
        return None  # the mask is used: keep the node (its kernel yields an all-true mask)
    return node.inputs[0]


def remove_identity(graph: Graph) -> Graph:
    """Remove Identity and inference-mode Dropout nodes (see the module docstring)."""
    reads = subgraph_reads(graph)
    outputs = set(graph.output_names)
    fixed = set(graph.input_names) | outputs | set(graph.initializers) | set(graph.outer_scope) | reads
    produced = {o for n in graph.nodes for o in n.outputs if o}
    alias: dict[str, str] = {}

    def find(v: str) -> str:
        while v in alias:
            v = alias[v]
        return v

    removed: list[Node] = []
    removed_names: set[str] = set()
    for node in graph.nodes:
        x = _passthrough_input(graph, node)
        if x is None:
            continue
        x, y = find(x), node.outputs[0]
        if not y or y in reads:
            continue
        if y not in outputs:
            alias[y] = x  # readers of y read x
        elif x not in fixed and x in produced:
            alias[x] = y  # x's producer writes the graph output directly
        else:
            continue
        removed.append(node)
        removed_names.add(node.name)
    if not removed:
        return graph
    nodes = []
    for n in graph.nodes:
        if n.name in removed_names:
            continue
        ins = tuple(find(i) if i else i for i in n.inputs)
        outs = tuple(find(o) if o else o for o in n.outputs)
        nodes.append(n if (ins, outs) == (n.inputs, n.outputs) else n.with_(inputs=ins, outputs=outs))
    return rebuild(graph, nodes, removed)


def remove_dead_nodes(graph: Graph) -> Graph:
    """Drop nodes none of whose outputs is used, and initializers nobody reads."""
    live = set(graph.output_names)
    kept: list[Node] = []
    dead: list[Node] = []
    for node in reversed(graph.nodes):
        if any(o and o in live for o in node.outputs):
            kept.append(node)
            live.update(node_value_inputs(node))
        else:
            dead.append(node)
    unused_inits = [k for k in graph.initializers if k not in live]
    if not dead and not unused_inits:
        return graph
    inits = {k: v for k, v in graph.initializers.items() if k in live}
    return rebuild(graph, reversed(kept), reversed(dead), initializers=inits)
