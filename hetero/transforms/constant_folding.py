"""Constant folding: evaluate, at compile time, every node whose result cannot change between runs.

A node folds when all its inputs are constants (initializers, or outputs of nodes folded before it),
or when it is a ``Shape``/``Size`` of a value whose shape shape inference knows statically. It is then
run once with the CPU kernel that would have run it anyway (so results match bit for bit), its outputs
become initializers, and it is listed in ``optimized_out``. ``Constant`` nodes simply become
initializers.

Not folded: random ops (``RandomNormal``, ``Bernoulli``, ``Dropout``, ...); nodes with subgraphs;
nodes producing a graph output (a graph output stays the output of a node, which every device and the
partitioner expect); results over ``MAX_FOLD_BYTES`` (``ConstantOfShape``/``Expand``/``Tile`` can blow
a few bytes up into gigabytes, cheaper to compute at run time than to keep in memory; except a
result read only as a weight operand -- Conv/ConvTranspose W, Gemm B/C, MatMul B -- up to
``MAX_WEIGHT_FOLD_BYTES``: that is a model's weights stored as a fill, which would otherwise be
re-materialised on every inference, e.g. VGG-19's 400 MB first FC weight); results that are
not plain tensors (sequences, optionals); and nodes whose kernel raises (the error then surfaces at run
time, where it names the inputs).

Traced example: the usual "flatten to [batch, -1]" subgraph with a static input::

    x: f32[1,64,7,7]
    Shape(x) -> s            x is static: s = [1,64,7,7]             (folded: Shape rule)
    Gather(s, 0) -> b        inputs s, 0 constant: b = 1             (folded: Gather kernel)
    Unsqueeze(b, [0]) -> bu  bu = [1]                                (folded)
    Concat(bu, [-1]) -> shp  shp = [1,-1]                            (folded)
    Reshape(x, shp) -> y     x is not constant: kept, reads the initializer shp

leaves one node, ``Reshape(x, shp)``, and four OPTIMIZED_OUT entries.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..ir import Graph, Node, TensorInfo, subgraphs_of
from .common import RANDOM_OPS, rebuild, subgraph_reads

#: largest result (all outputs of one node together) kept as a folded constant
MAX_FOLD_BYTES = 16 * 1024 * 1024
#: largest result folded when every reader takes it as a weight operand (see ``_weight_only``)
MAX_WEIGHT_FOLD_BYTES = 1024 * 1024 * 1024
#: (op type -> input positions) that hold weights: kept in memory anyway once computed
_WEIGHT_INPUTS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2), "MatMul": (1,)}


def fold_constants(graph: Graph) -> Graph:
    """Fold constant subexpressions into initializers (see the module docstring)."""
    # the CPU plugin's kernel table (imported here, not at module level: devices sit above transforms)
    from ..devices import cpu

    consts: dict[str, Any] = dict(graph.initializers)
    outputs = set(graph.output_names)
    weights = _weight_only(graph)
    kept: list[Node] = []
    folded: list[Node] = []
    new_info: dict[str, TensorInfo] = {}
    for node in graph.nodes:
        limit = MAX_WEIGHT_FOLD_BYTES if node.outputs and all(o in weights for o in node.outputs if o) \
            else MAX_FOLD_BYTES
        values = _try_fold(graph, node, consts, outputs, cpu, limit)
        if values is None:
            kept.append(node)
            continue
        folded.append(node)
        for name, arr in zip(node.outputs, values):
            if name:
                consts[name] = arr
                new_info[name] = TensorInfo(name, arr.dtype, tuple(arr.shape))
    if not folded:
        return graph
    initializers = {k: v for k, v in consts.items()}
    value_info = dict(graph.value_info)
    value_info.update(new_info)
    return rebuild(graph, kept, folded, initializers=initializers, value_info=value_info)


def _weight_only(graph: Graph) -> set[str]:
    """Values every reader of which takes them as a weight operand (``_WEIGHT_INPUTS``)."""
    good: set[str] = set()
    bad: set[str] = set()
    for node in graph.nodes:
        pos = _WEIGHT_INPUTS.get(node.op_type, ()) if node.domain in ("", "ai.onnx") else ()
        for i, name in enumerate(node.inputs):
            if name:
                (good if i in pos else bad).add(name)
    return good - bad - subgraph_reads(graph) - set(graph.output_names)


def _try_fold(graph: Graph, node: Node, consts: dict[str, Any], outputs: set[str],
              cpu, limit: int = MAX_FOLD_BYTES) -> list[np.ndarray] | None:
    """The node's output values if it folds, else None."""
    if any(o in outputs for o in node.outputs) or node.op_type in RANDOM_OPS or subgraphs_of(node):
        return None
    if node.domain in ("", "ai.onnx") and node.op_type in ("Shape", "Size") and node.inputs \
            and node.inputs[0] not in consts:
        return _fold_static_shape(graph, node)
    if not all(i in consts for i in node.inputs if i):
        return None
    args = [consts[i] if i else None for i in node.inputs]
    if any(a is not None and not isinstance(a, np.ndarray) for a in args):
        return None
    # 1. refuse before running when the result is known (or estimated) to be huge
    est = _estimated_nbytes(graph, node, args)
    if est is not None and est > limit:
        return None
    # 2. run the CPU kernel exactly as the CPU executor would
    if cpu.unsupported_reason(graph, node) is not None:
        return None
    opset = cpu._node_opset(graph, node)
    entry = cpu.registry.lookup(node.op_type, node.domain, opset)
    if "_run_graph" in entry.context:
        return None
    kwargs = dict(node.attrs)
    if "_num_outputs" in entry.context:
        kwargs["_num_outputs"] = len(node.outputs)
    if "_opset" in entry.context:
        kwargs["_opset"] = opset
    if "_output_dtypes" in entry.context:
        kwargs["_output_dtypes"] = [graph.info(o).dtype if o else None for o in node.outputs]
    try:
        res = entry.fn(*args, **kwargs)
    except Exception:  # noqa: BLE001 - left to run time, where the error names the inputs
        return None
    # the executor's convention: one output may come as a 1-tuple; several come as a tuple/list
    if len(node.outputs) == 1:
        res = [res[0] if isinstance(res, tuple) else res]
    else:
        res = list(res) if isinstance(res, (tuple, list)) else [res]
    if len(res) < sum(1 for o in node.outputs if o):
        return None
    values = []
    total = 0
    for name, v in zip(node.outputs, res):
        if not name:
            values.append(None)
            continue
        if isinstance(v, np.generic):
            v = np.asarray(v)
        if not isinstance(v, np.ndarray):  # sequence, optional, map: not an initializer
            return None
        want = graph.info(name).dtype
        if want is not None and v.dtype != want:
            return None  # disagrees with type inference: let run time decide
        total += v.nbytes
        values.append(v)
    if total > limit and node.op_type != "Constant":
        return None
    return values


def _fold_static_shape(graph: Graph, node: Node) -> list[np.ndarray] | None:
    """``Shape(x)``/``Size(x)`` where x is computed at run time but its shape is static."""
    info = graph.info(node.inputs[0])
    if info.kind != "tensor" or not info.is_static:
        return None
    shape = tuple(int(d) for d in info.shape)
    if node.op_type == "Size":
        return [np.array(int(np.prod(shape, dtype=np.int64)), dtype=np.int64)]
    start = int(node.attrs.get("start", 0))
    end = node.attrs.get("end")
    # ONNX clamps start/end into [0, rank] after adding rank to negatives: Python slicing does the same
    return [np.array(shape[start:None if end is None else int(end)], dtype=np.int64)]


def _estimated_nbytes(graph: Graph, node: Node, args: list) -> int | None:
    """Bytes the node would produce: from static shape inference, or from the inputs of the ops that
    can expand a small input into a large output; None when it cannot tell cheaply."""
    infos = [graph.info(o) for o in node.outputs if o]
    if infos and all(i.is_static and i.dtype is not None for i in infos):
        return sum(i.nbytes for i in infos)
    try:
        itemsize = infos[0].dtype.itemsize if infos and infos[0].dtype is not None else 8
        if node.op_type == "ConstantOfShape" and args and args[0] is not None:
            return int(np.prod(args[0].astype(np.int64), dtype=np.int64)) * itemsize
        if node.op_type == "Expand" and len(args) == 2:
            shape = np.broadcast_shapes(args[0].shape, tuple(int(d) for d in args[1]))
            return int(np.prod(shape, dtype=np.int64)) * args[0].dtype.itemsize
        if node.op_type == "Tile" and len(args) >= 2:
            reps = np.asarray(args[1], dtype=np.int64)
            return int(args[0].size * np.prod(reps, dtype=np.int64)) * args[0].dtype.itemsize
        if node.op_type == "Range" and len(args) == 3:
            start, limit, delta = (float(a) for a in args)
            return int(max(np.ceil((limit - start) / delta), 0)) * args[0].dtype.itemsize
    except Exception:  # noqa: BLE001 - malformed inputs: the kernel will report them
        return None
    return None
