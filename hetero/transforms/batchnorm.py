"""Fold inference BatchNormalization (and per-channel scale / shift) into the Conv or Gemm before it.

At inference BatchNormalization is an affine map per channel c:
``y = x * k[c] + shift[c]`` with ``k = scale / sqrt(var + epsilon)``, ``shift = beta - mean * k``.
Frameworks often follow it with more per-channel affine ops (Caffe2's ``SpatialBN, Mul, Add``), so
the pass walks a whole chain after the *head* node, accumulating one affine map ``y = x * s + t``:

    BatchNormalization   s, t  <-  s * k,  t * k + shift
    Mul(x, c) / Div      s, t  <-  s * c,  t * c          (Div: by 1 / c)
    Add(x, c) / Sub      t     <-  t + c                  (Sub: t - c)

where ``c`` is a constant holding one value per channel (axis 1) or a single value, broadcasting
to the head's output without changing its shape. The chain then folds into the head:

* Conv (``x[c] = W[c] * input + b[c]``):  ``W'[c] = W[c] * s[c]``, ``b'[c] = b[c] * s[c] + t[c]``;
* Gemm (``Y = alpha * A @ op(B) + beta * C``, channel = column n): column n of ``op(B)`` is scaled by
  ``s[n]`` (a row of B when ``transB=1``, a column otherwise), ``C' = beta * C * s + t``, ``beta = 1``;
* BatchNormalization (a BN not after a Conv, as in DenseNet's pre-activation blocks, absorbing the
  Mul/Add after it): ``scale' = scale * s``, ``B' = B * s + t``.

The factors s, t are accumulated in float64; the weights are scaled in float32 (float64 weights in
float64) and stored back in their own dtype (float32 stays float32).
New initializers get fresh names; the originals are left for dead-node removal (another node may
share them).

Conditions: each value along the chain has the next chain node as its only reader and is not a graph
output (nor read by a subgraph); W, B, C and every BN parameter are initializers; BatchNormalization
is in inference mode (``training_mode=0``, ``spatial=1``, its optional running-stat outputs unused).

Traced example (one channel, epsilon 0)::

    Conv(x, W=[[2]], b=[1]) -> c ; BatchNormalization(c, scale=[3], beta=[4], mean=[5], var=[9]) -> y
    k = 3 / sqrt(9) = 1, shift = 4 - 5 * 1 = -1  ->  s = 1, t = -1
    W' = [[2]] * 1 = [[2]] ;  b' = 1 * 1 + (-1) = 0
    => Conv(x, W', b') -> y          (BatchNormalization OPTIMIZED_OUT; Conv.fused = (bn,))
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Node
from .common import all_value_names, const, fresh_name, known_shape, rebuild, single_consumer, subgraph_reads

_AFFINE_OPS = ("BatchNormalization", "Mul", "Add", "Sub", "Div")


def _bn_affine(graph: Graph, bn: Node) -> tuple[np.ndarray, np.ndarray] | None:
    """(k, shift) of an inference BatchNormalization with constant parameters: y = x * k + shift."""
    if len(bn.inputs) < 5:
        return None
    if int(bn.attrs.get("training_mode", 0)) != 0 or int(bn.attrs.get("spatial", 1)) != 1:
        return None
    if any(o and (o in graph.consumers or o in graph.output_names) for o in bn.outputs[1:]):
        return None
    ps = [const(graph, v) for v in bn.inputs[1:5]]
    if any(p is None or p.dtype.kind != "f" for p in ps):
        return None
    scale, beta, mean, var = (p.astype(np.float64).reshape(-1) for p in ps)
    if not (scale.size == beta.size == mean.size == var.size):
        return None
    k = scale / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
    return k, beta - mean * k


def _per_channel(c: np.ndarray | None, rank: int, channels: int) -> np.ndarray | None:
    """``c`` as one float64 value per channel (axis 1 of a rank-``rank`` tensor), or None when it
    varies along another axis or would broadcast the tensor to a bigger shape."""
    if c is None or c.dtype.kind != "f" or c.ndim > rank or rank < 2:
        return None
    shape = (1,) * (rank - c.ndim) + tuple(c.shape)
    if any(d != 1 for i, d in enumerate(shape) if i != 1) or shape[1] not in (1, channels):
        return None
    return np.broadcast_to(c.astype(np.float64).reshape(-1), (channels,))


def _step(graph: Graph, node: Node, value: str, rank: int, channels: int, s: np.ndarray, t: np.ndarray):
    """(s, t) after applying chain node ``node`` (reading ``value``) to ``x * s + t``, or None."""
    op = node.op_type
    if node.domain not in ("", "ai.onnx") or op not in _AFFINE_OPS:
        return None
    if op == "BatchNormalization":
        if node.inputs[0] != value:
            return None
        bn = _bn_affine(graph, node)
        if bn is None or bn[0].size != channels:
            return None
        return s * bn[0], t * bn[0] + bn[1]
    if len(node.inputs) != 2 or "broadcast" in node.attrs or len(node.outputs) != 1:
        return None  # opset < 7 legacy broadcasting: not worth supporting
    a, b = node.inputs
    if op in ("Sub", "Div") and a != value:
        return None  # c - x, c / x are not affine in the per-channel sense we fold
    c = _per_channel(const(graph, b if a == value else a), rank, channels)
    if c is None or (op == "Div" and not np.all(c)):
        return None  # x / 0 is inf or nan at run time; a folded weight would not reproduce that
    if op == "Mul":
        return s * c, t * c
    if op == "Div":
        return s / c, t / c
    if op == "Add":
        return s, t + c
    return s, t - c


def _head_shape(graph: Graph, head: Node) -> tuple[int, int] | None:
    """(rank, channels) of the head's output, from its weights (Conv, Gemm) or shape inference."""
    if head.op_type == "Conv":
        w = const(graph, head.inputs[1]) if len(head.inputs) > 1 else None
        return None if w is None or w.ndim < 3 else (w.ndim, int(w.shape[0]))
    if head.op_type == "Gemm":
        b = const(graph, head.inputs[1]) if len(head.inputs) > 1 else None
        if b is None or b.ndim != 2:
            return None
        return 2, int(b.shape[0] if int(head.attrs.get("transB", 0)) else b.shape[1])
    shape = known_shape(graph, head.outputs[0])
    scale = const(graph, head.inputs[1]) if len(head.inputs) > 1 else None
    if shape is None or scale is None or len(shape) < 2:
        return None
    if isinstance(shape[1], int) and shape[1] != scale.size:
        return None
    return len(shape), int(scale.size)


def _fold_conv(graph, conv, s, t, taken, inits) -> tuple[tuple[str, ...], dict] | None:
    w = const(graph, conv.inputs[1])
    if w.dtype.kind != "f":
        return None
    b_name = conv.inputs[2] if len(conv.inputs) > 2 else ""
    b = const(graph, b_name)
    if b_name and (b is None or b.size != s.size):
        return None
    b64 = np.zeros(s.size) if b is None else b.astype(np.float64).reshape(-1)
    wn = fresh_name(f"{conv.inputs[1]}_folded", taken)
    bn = fresh_name(f"{conv.name}_bias_folded", taken)
    inits[wn] = _scaled(w, s.reshape((-1,) + (1,) * (w.ndim - 1)))
    inits[bn] = (b64 * s + t).astype(w.dtype)
    return (conv.inputs[0], wn, bn), dict(conv.attrs)


def _fold_gemm(graph, gemm, s, t, taken, inits) -> tuple[tuple[str, ...], dict] | None:
    if graph.opset < 7:  # Gemm-6 and older need a `broadcast` flag for a vector C; not worth it
        return None
    b = const(graph, gemm.inputs[1])
    if b.dtype.kind != "f":
        return None
    c_name = gemm.inputs[2] if len(gemm.inputs) > 2 else ""
    c = const(graph, c_name)
    if c_name and c is None:
        return None
    beta = float(gemm.attrs.get("beta", 1.0))
    trans_b = int(gemm.attrs.get("transB", 0))
    c_new = t if c is None else beta * c.astype(np.float64) * s + t  # broadcasts to (M or 1, N)
    if c_new.ndim > 2:
        return None
    bn = fresh_name(f"{gemm.inputs[1]}_folded", taken)
    cn = fresh_name(f"{gemm.name}_C_folded", taken)
    inits[bn] = _scaled(b, s[:, None] if trans_b else s[None, :])
    inits[cn] = c_new.astype(b.dtype)
    return (gemm.inputs[0], bn, cn), {**gemm.attrs, "beta": 1.0}


def _fold_bn(graph, bn, s, t, taken, inits) -> tuple[tuple[str, ...], dict] | None:
    if _bn_affine(graph, bn) is None:
        return None
    scale, beta = const(graph, bn.inputs[1]), const(graph, bn.inputs[2])
    sn = fresh_name(f"{bn.inputs[1]}_folded", taken)
    bn_ = fresh_name(f"{bn.inputs[2]}_folded", taken)
    inits[sn] = (scale.astype(np.float64).reshape(-1) * s).astype(scale.dtype)
    inits[bn_] = (beta.astype(np.float64).reshape(-1) * s + t).astype(beta.dtype)
    return (bn.inputs[0], sn, bn_) + tuple(bn.inputs[3:5]), dict(bn.attrs)


def _scaled(w: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``w * s`` in w's dtype. The weights are big (ResNet-50: 25M), so the product is taken in
    float32 (float64 for float64 weights) from the float64 factors rounded once: within one rounding
    of the all-float64 result, at a fraction of the time and memory."""
    work = np.result_type(w.dtype, np.float32)
    return np.multiply(w, s.astype(work), dtype=work).astype(w.dtype, copy=False)


_FOLD = {"Conv": _fold_conv, "Gemm": _fold_gemm, "BatchNormalization": _fold_bn}


def fold_batchnorm(graph: Graph) -> Graph:
    """Fold BatchNormalization / per-channel Mul, Add into a preceding Conv, Gemm or
    BatchNormalization (see the module docstring)."""
    reads = subgraph_reads(graph)
    taken = all_value_names(graph)
    inits = dict(graph.initializers)
    replace: dict[str, Node] = {}  # head name -> rewritten head
    absorbed: dict[str, Node] = {}  # chain node name -> node
    for head in graph.nodes:
        if head.op_type not in _FOLD or head.domain not in ("", "ai.onnx") or not head.outputs \
                or head.name in absorbed:
            continue
        dims = _head_shape(graph, head)
        if dims is None:
            continue
        rank, channels = dims
        # 1. walk the chain of per-channel affine nodes after the head
        s, t = np.ones(channels), np.zeros(channels)
        chain: list[Node] = []
        value = head.outputs[0]
        while True:
            nxt = single_consumer(graph, value, reads)
            if nxt is None or nxt.name in absorbed:
                break
            if head.op_type == "BatchNormalization" and nxt.op_type == "BatchNormalization":
                break  # BN after BN: rare; keep the head's own parameters' meaning simple
            st = _step(graph, nxt, value, rank, channels, s, t)
            if st is None:
                break
            s, t = st
            chain.append(nxt)
            value = nxt.outputs[0]
        if not chain:
            continue
        # 2. fold the accumulated map into the head's constants
        got = _FOLD[head.op_type](graph, head, s, t, taken, inits)
        if got is None:
            continue
        ins, attrs = got
        replace[head.name] = head.with_(
            inputs=ins, outputs=(value,), attrs=attrs,
            fused=tuple(head.fused) + tuple(x for c in chain for x in (c.name,) + tuple(c.fused)))
        for c in chain:
            absorbed[c.name] = c
    if not replace:
        return graph
    nodes = [replace.get(n.name, n) for n in graph.nodes if n.name not in absorbed]
    return rebuild(graph, nodes, absorbed.values(), initializers=inits)
