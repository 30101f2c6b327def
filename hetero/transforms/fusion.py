"""Fuse an activation (and a residual Add) into the Conv / Gemm / MatMul / BatchNormalization
that feeds it.

Targets are hetero's own ops (domain ``"hetero"``, opset 1), run by the devices' kernels:

* ``FusedConv(X, W, [B], [residual])``: Conv's attributes plus ``activation`` and
  ``activation_params``; computes ``act(conv(X, W, B) + residual)``;
* ``FusedGemm(A, B, [C])``: Gemm's attributes plus the activation: ``act(gemm(A, B, C))``;
* ``FusedMatMul(A, B)``: ``act(A @ B)``;
* ``FusedBatchNormalization(X, scale, B, mean, var)``: an inference BatchNormalization's
  attributes plus the activation (DenseNet's pre-activation BN + Relu, which cannot fold into a
  Conv: one pass over the tensor instead of two). Training-mode BNs are not fused.

``activation`` is one of ``ACTIVATIONS``; ``activation_params`` are floats: Clip ``[min, max]``
(Clip-11+ takes them as inputs: fused only when they are constants; an absent bound is +-inf),
LeakyRelu ``[alpha]``, HardSigmoid ``[alpha, beta]``, none for the rest. A fused node without an
activation (Conv + Add only) carries neither attribute.

Rules:
1. the intermediate value (Conv output, Add output) has exactly one reader, the next node of the
   pattern, and is neither a graph output nor read by a subgraph;
2. residual: ``Add(conv_out, other)`` (either order; ``Sum`` with two inputs too, as old ResNets
   write it) where ``other`` has exactly conv_out's shape, both fully known (symbolic dims equal
   by name): no broadcasting hides in the fused op;
3. when an Add's two operands are both fusable convs, the later conv takes it (the earlier conv's
   output, already computed, becomes the residual): convs are visited last-first;
4. the fused node keeps the Conv's name, sits where the last absorbed node was (all its inputs are
   ready there), writes the last absorbed node's output, and lists the absorbed nodes in ``fused``;
   the absorbed nodes go to ``optimized_out``.

Traced example (a ResNet bottleneck tail)::

    c1 = Conv(x, W1, B1)          ; shortcut, shape [1,256,56,56]
    c3 = Conv(h, W3, B3)          ; main branch, shape [1,256,56,56]
    s  = Sum(c3, c1) ; y = Relu(s)
    visit c3 (later) first: single reader Sum, other operand c1 has the same shape, Sum's single
    reader is Relu  ->  FusedConv(h, W3, B3, c1; activation="Relu") -> y, fused=(Sum, Relu)
    visit c1: its reader Sum is taken  ->  c1 stays a Conv
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Node
from .common import const, is_float_or_unknown, known_shape, rebuild, single_consumer, subgraph_reads, \
    with_opset

ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSwish", "HardSigmoid", "Tanh")
FUSED_OP = {"Conv": "FusedConv", "Gemm": "FusedGemm", "MatMul": "FusedMatMul",
            "BatchNormalization": "FusedBatchNormalization"}
DOMAIN = "hetero"


def activation_params(graph: Graph, act: Node) -> list[float] | None:
    """``activation_params`` for ``act``, or None when it cannot be fused (e.g. Clip bounds that
    are computed at run time)."""
    op = act.op_type
    if op in ("Relu", "Sigmoid", "HardSwish", "Tanh"):
        return []
    if op == "LeakyRelu":
        return [float(act.attrs.get("alpha", 0.01))]
    if op == "HardSigmoid":
        return [float(act.attrs.get("alpha", 0.2)), float(act.attrs.get("beta", 0.5))]
    if op == "Clip":
        if graph.opset < 11:
            return [float(act.attrs.get("min", -3.4028234663852886e38)),
                    float(act.attrs.get("max", 3.4028234663852886e38))]
        bounds = []
        for idx, default in ((1, -np.inf), (2, np.inf)):
            name = act.inputs[idx] if len(act.inputs) > idx else ""
            if not name:
                bounds.append(float(default))
                continue
            v = const(graph, name)
            if v is None or v.size != 1:
                return None
            bounds.append(float(v.reshape(-1)[0]))
        return bounds
    return None


def _as_activation(graph: Graph, node: Node | None, value: str) -> tuple[Node, list[float]] | None:
    """(node, params) when ``node`` is a fusable activation applied to ``value``."""
    if node is None or node.op_type not in ACTIVATIONS or node.domain not in ("", "ai.onnx"):
        return None
    if node.inputs[0] != value or len(node.outputs) != 1:
        return None
    params = activation_params(graph, node)
    return None if params is None else (node, params)


def _residual_operand(graph: Graph, add: Node, value: str) -> str | None:
    """The other operand of ``add`` when it can be a FusedConv residual for ``value``."""
    if add.domain not in ("", "ai.onnx") or add.op_type not in ("Add", "Sum") or len(add.inputs) != 2:
        return None
    a, b = add.inputs
    if a == b or value not in (a, b) or not a or not b:
        return None
    other = b if a == value else a
    sa, so = known_shape(graph, value), known_shape(graph, other)
    if sa is None or so is None or sa != so:
        return None
    da, do = graph.info(value).dtype, graph.info(other).dtype
    if da is not None and do is not None and da != do:
        return None
    return other


def fuse_activations(graph: Graph) -> Graph:
    """Fuse Conv/Gemm/MatMul + activation and Conv + Add [+ activation] (see the module docstring)."""
    reads = subgraph_reads(graph)
    taken: set[str] = set()  # names of nodes already part of some fused node
    place: dict[str, Node] = {}  # name of the last absorbed node -> fused node that replaces it
    absorbed: dict[str, Node] = {}
    for node in reversed(graph.nodes):
        op = FUSED_OP.get(node.op_type)
        if op is None or node.domain not in ("", "ai.onnx") or len(node.outputs) != 1:
            continue
        if node.op_type == "BatchNormalization" and int(node.attrs.get("training_mode", 0)):
            continue
        out = node.outputs[0]
        if not is_float_or_unknown(graph, out):
            continue
        nxt = single_consumer(graph, out, reads)
        if nxt is None or nxt.name in taken:
            continue
        inputs = tuple(node.inputs)
        chain: list[Node] = []
        # 1. residual Add (Conv only)
        other = _residual_operand(graph, nxt, out) if node.op_type == "Conv" else None
        if other is not None:
            inputs = (inputs + ("",))[:3] + (other,)
            chain.append(nxt)
            out = nxt.outputs[0]
            nxt = single_consumer(graph, out, reads)
            if nxt is not None and nxt.name in taken:
                nxt = None
        # 2. activation
        act = _as_activation(graph, nxt, out)
        attrs = dict(node.attrs)
        # Gemm-1..6's `broadcast` flag only says whether C may broadcast; in a valid model numpy
        # broadcasting gives the same result either way, and the fused op has no such flag
        attrs.pop("broadcast", None)
        if act is not None:
            chain.append(act[0])
            attrs["activation"] = act[0].op_type
            attrs["activation_params"] = act[1]
        if not chain:
            continue
        fused = node.with_(op_type=op, domain=DOMAIN, inputs=inputs, outputs=(chain[-1].outputs[0],),
                           attrs=attrs,
                           fused=tuple(node.fused) + tuple(x for c in chain for x in (c.name,) + tuple(c.fused)))
        place[chain[-1].name] = fused
        absorbed[node.name] = node
        for c in chain:
            taken.add(c.name)
        taken.add(node.name)
    if not place:
        return graph
    chain_names = taken - set(absorbed)  # the Add / activation nodes, now inside fused nodes
    nodes, removed = [], []
    for n in graph.nodes:
        if n.name in place:
            nodes.append(place[n.name])  # the fused node sits where its last absorbed node was
        if n.name in chain_names:
            removed.append(n)
        elif n.name not in absorbed:  # (an absorbed Conv/Gemm/MatMul lives on as the fused node)
            nodes.append(n)
    return rebuild(graph, nodes, removed, opsets=with_opset(graph, DOMAIN, 1))
