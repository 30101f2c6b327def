"""ONNX file / bytes / ModelProto -> :class:`hetero.ir.Graph`.

Steps (``read_model``):
  1. load the protobuf without external data (a parse failure is a ModelError, not a traceback);
  2. check every external-data location stays inside the model's folder, then load it;
  3. inline model-local functions; refuse op domains no device knows;
  4. run ``onnx.checker`` and shape inference (symbolic dims stay strings);
  5. convert nodes, attributes, initializers and value infos to plain IR data.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import ModelError
from .ir import Graph, Node, TensorInfo, topological_order

KNOWN_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training", "ai.onnx.preview")


def read_model(model: Any, *, check: bool = True) -> Graph:
    """Read an ONNX model from a path, bytes, or ``onnx.ModelProto`` into a Graph."""
    proto, base_dir, where = _load_proto(model)
    return graph_from_proto(proto, base_dir=base_dir, where=where, check=check)


def _load_proto(model: Any) -> tuple[onnx.ModelProto, Path | None, str]:
    if isinstance(model, onnx.ModelProto):
        return model, None, "<ModelProto>"
    if isinstance(model, (bytes, bytearray, memoryview)):
        proto = _parse(bytes(model), "<bytes>")
        return proto, None, "<bytes>"
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.exists():
            raise ModelError(f"model file {str(path)!r} does not exist")
        if path.is_dir():
            raise ModelError(f"model path {str(path)!r} is a directory, expected an .onnx file")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ModelError(f"cannot read model file {str(path)!r}: {e}") from None
        proto = _parse(data, str(path))
        return proto, path.resolve().parent, str(path)
    raise ModelError(f"read_model expects a path, bytes or onnx.ModelProto, got {type(model).__name__}")


def _parse(data: bytes, where: str) -> onnx.ModelProto:
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as e:  # protobuf DecodeError and friends
        raise ModelError(f"{where} is not an ONNX model: protobuf parse failed ({type(e).__name__}: {e})") from None
    if not proto.HasField("graph") or (proto.ir_version == 0 and not proto.opset_import):
        raise ModelError(f"{where} is not an ONNX model: no graph / ir_version in the file")
    return proto


def _external_tensors(proto: onnx.ModelProto):
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    for t in _get_all_tensors(proto):
        if uses_external_data(t):
            yield t


def _load_external(proto: onnx.ModelProto, base_dir: Path | None, where: str) -> None:
    tensors = list(_external_tensors(proto))
    if not tensors:
        return
    if base_dir is None:
        raise ModelError(f"{where}: tensor {tensors[0].name!r} stores its data in an external file; "
                         "load the model from its path so the file can be found")
    for t in tensors:
        loc = next((e.value for e in t.external_data if e.key == "location"), None)
        if not loc:
            raise ModelError(f"{where}: tensor {t.name!r} uses external data but gives no location")
        p = Path(loc)
        target = (base_dir / p).resolve()
        if p.is_absolute() or (base_dir.resolve() not in target.parents):
            raise ModelError(f"{where}: tensor {t.name!r} external data location {loc!r} points outside "
                             f"the model's folder {str(base_dir)!r}; refused")
        if not target.exists():
            raise ModelError(f"{where}: tensor {t.name!r} external data file {str(target)!r} does not exist")
    try:
        onnx.external_data_helper.load_external_data_for_model(proto, str(base_dir))
    except Exception as e:
        raise ModelError(f"{where}: loading external data failed: {e}") from None


def graph_from_proto(proto: onnx.ModelProto, *, base_dir: Path | None = None, where: str = "<model>",
                     check: bool = True) -> Graph:
    if any(True for _ in _external_tensors(proto)):  # loading external data mutates: work on a copy
        proto_copy = onnx.ModelProto()
        proto_copy.CopyFrom(proto)
        proto = proto_copy
        _load_external(proto, base_dir, where)
    # 3. local functions are inlined so devices only ever see standard ops
    if proto.functions:
        try:
            from onnx import inliner

            proto = inliner.inline_local_functions(proto)
        except Exception as e:
            raise ModelError(f"{where}: inlining model-local functions failed: {e}") from None
    local_domains = {f.domain for f in proto.functions}
    opsets = {o.domain: o.version for o in proto.opset_import}
    for n in _all_nodes(proto.graph):
        if n.domain not in KNOWN_DOMAINS and n.domain not in local_domains:
            raise ModelError(f"{where}: node {n.name or '<unnamed>'!r} ({n.op_type}) uses unknown op domain "
                             f"{n.domain!r}; known domains: {sorted({d or 'ai.onnx' for d in KNOWN_DOMAINS} | local_domains)}")
    default_opset = opsets.get("", opsets.get("ai.onnx"))
    max_opset = onnx.defs.onnx_opset_version()
    if default_opset is None:
        if not opsets:
            raise ModelError(f"{where}: model imports no opset at all (opset_import is empty)")
        # e.g. an ai.onnx.ml-only model: standard ops cannot appear, so any default opset will do
        opsets[""] = max_opset
    elif default_opset < 1 or default_opset > max_opset:
        raise ModelError(f"{where}: opset {default_opset} is outside the supported range 1..{max_opset}")
    # 4. checker + shape inference, on a copy without the big float weights: both serialise the whole
    #    model (twice for inference), which for VGG-sized weights costs seconds and could pass 2 GB
    light, weights = _without_big_weights(proto)
    if check:
        try:
            onnx.checker.check_model(light)
        except Exception as e:
            msg = str(e).strip().splitlines()
            raise ModelError(f"{where}: fails onnx.checker: {' '.join(msg[:6])}") from None
    try:
        inferred = onnx.shape_inference.infer_shapes(light, check_type=False, strict_mode=False, data_prop=True)
    except Exception:
        inferred = light  # inference is best effort; kernels compute real shapes at run time
    try:
        return _convert_graph(inferred.graph, opsets, outer=frozenset(), top=True, weights=weights)
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"{where}: cannot convert graph: {type(e).__name__}: {e}") from None


BIG_WEIGHT_BYTES = 1 << 16
_FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)


def _without_big_weights(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, onnx.TensorProto]]:
    """A copy of ``proto`` whose big float initializers are typed graph inputs instead, and those tensors.

    Float weights never feed shape computations, so the checker and shape inference answer the same
    on the copy; small and integer initializers (shapes, axes) stay so data propagation still works.
    """
    big = {t.name: t for t in proto.graph.initializer
           if t.data_type in _FLOATS and len(t.raw_data) >= BIG_WEIGHT_BYTES}
    if not big:
        return proto, {}
    graph = onnx.GraphProto()
    for fd, value in proto.graph.ListFields():
        if fd.name == "initializer":
            graph.initializer.extend(t for t in value if t.name not in big)
        else:
            _copy_field(graph, fd.name, value)
    listed = {i.name for i in graph.input}  # IR < 4 lists initializers among the inputs already
    graph.input.extend(helper.make_tensor_value_info(n, t.data_type, list(t.dims))
                       for n, t in big.items() if n not in listed)
    light = onnx.ModelProto()
    for fd, value in proto.ListFields():
        if fd.name != "graph":
            _copy_field(light, fd.name, value)
    light.graph.CopyFrom(graph)
    return light, big


def _copy_field(dst, name: str, value) -> None:
    if hasattr(value, "extend"):  # repeated field
        getattr(dst, name).extend(value)
    elif hasattr(value, "CopyFrom"):  # message
        getattr(dst, name).CopyFrom(value)
    else:
        setattr(dst, name, value)


def _all_nodes(g: onnx.GraphProto):
    for n in g.node:
        yield n
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for sg in a.graphs:
                    yield from _all_nodes(sg)


# ---- conversion ---------------------------------------------------------------------------

def np_dtype(elem_type: int) -> np.dtype | None:
    if elem_type == 0:
        return None
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception:
        return None


def _type_info(name: str, tp: onnx.TypeProto) -> TensorInfo:
    which = tp.WhichOneof("value")
    if which == "tensor_type":
        tt = tp.tensor_type
        shape = None
        if tt.HasField("shape"):
            shape = tuple(
                d.dim_value if d.HasField("dim_value") else (d.dim_param if d.HasField("dim_param") else None)
                for d in tt.shape.dim)
        return TensorInfo(name, np_dtype(tt.elem_type), shape)
    if which == "sparse_tensor_type":
        return TensorInfo(name, np_dtype(tp.sparse_tensor_type.elem_type), None)
    if which == "sequence_type":
        inner = _type_info(name, tp.sequence_type.elem_type)
        return TensorInfo(name, inner.dtype, None, kind="sequence")
    if which == "optional_type":
        inner = _type_info(name, tp.optional_type.elem_type)
        return TensorInfo(name, inner.dtype, inner.shape, kind="optional")
    if which == "map_type":
        return TensorInfo(name, None, None, kind="map")
    return TensorInfo(name)


def to_numpy(t: onnx.TensorProto) -> np.ndarray:
    arr = numpy_helper.to_array(t)
    if arr.dtype == object:
        arr = np.array([x.decode("utf-8") if isinstance(x, bytes) else x for x in arr.ravel()],
                       dtype=object).reshape(arr.shape)
    return arr


def _sparse_to_dense(sp: onnx.SparseTensorProto) -> np.ndarray:
    values = to_numpy(sp.values)
    dims = tuple(sp.dims)
    dense = np.zeros(dims, dtype=values.dtype)
    idx = to_numpy(sp.indices)
    if values.size:
        if idx.ndim == 1:
            dense.reshape(-1)[idx] = values
        else:
            dense[tuple(idx.T)] = values
    return dense


def convert_attribute(a: onnx.AttributeProto, outer: frozenset[str], opsets) -> Any:
    T = onnx.AttributeProto
    if a.type == T.INT:
        return int(a.i)
    if a.type == T.FLOAT:
        return float(np.float32(a.f))
    if a.type == T.STRING:
        return a.s.decode("utf-8", errors="replace")
    if a.type == T.INTS:
        return [int(x) for x in a.ints]
    if a.type == T.FLOATS:
        return [float(x) for x in a.floats]
    if a.type == T.STRINGS:
        return [s.decode("utf-8", errors="replace") for s in a.strings]
    if a.type == T.TENSOR:
        return to_numpy(a.t)
    if a.type == T.TENSORS:
        return [to_numpy(t) for t in a.tensors]
    if a.type == T.SPARSE_TENSOR:
        return _sparse_to_dense(a.sparse_tensor)
    if a.type == T.GRAPH:
        return _convert_graph(a.g, opsets, outer=outer, top=False)
    if a.type == T.GRAPHS:
        return [_convert_graph(g, opsets, outer=outer, top=False) for g in a.graphs]
    if a.type == T.TYPE_PROTO:
        return a.tp
    if a.type == T.TYPE_PROTOS:
        return list(a.type_protos)
    return helper.get_attribute_value(a)


def _convert_graph(g: onnx.GraphProto, opsets, *, outer: frozenset[str], top: bool,
                   weights: dict[str, onnx.TensorProto] | None = None) -> Graph:
    initializers = {t.name: to_numpy(t) for t in g.initializer}
    if weights:  # the big weights _without_big_weights set aside (as inputs) go back to initializers
        initializers.update((n, to_numpy(t)) for n, t in weights.items())
    for sp in g.sparse_initializer:
        initializers[sp.values.name] = _sparse_to_dense(sp)
    # Old models list initializers among the inputs; those are constants, not user inputs.
    inputs = tuple(_type_info(i.name, i.type) for i in g.input if i.name not in initializers)
    outputs = tuple(_type_info(o.name, o.type) for o in g.output)
    value_info: dict[str, TensorInfo] = {}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        value_info[vi.name] = _type_info(vi.name, vi.type)
    for name, arr in initializers.items():
        value_info[name] = TensorInfo(name, arr.dtype, tuple(arr.shape))

    local = set(initializers) | {i.name for i in g.input}
    for n in g.node:
        local.update(o for o in n.output if o)
    visible = frozenset(outer | local)

    nodes = []
    used_names: set[str] = set()
    for idx, n in enumerate(g.node):
        name = n.name or f"{n.op_type}_{idx}"
        if name in used_names:
            k = 1
            while f"{name}_{k}" in used_names:
                k += 1
            name = f"{name}_{k}"
        used_names.add(name)
        attrs = {a.name: convert_attribute(a, visible, opsets) for a in n.attribute}
        nodes.append(Node(name=name, op_type=n.op_type, inputs=tuple(n.input), outputs=tuple(n.output),
                          attrs=attrs, domain="" if n.domain == "ai.onnx" else n.domain))

    # names this graph reads from an enclosing scope
    referenced = set()
    for n in nodes:
        referenced.update(i for i in n.inputs if i)
        for v in n.attrs.values():
            gs = [v] if isinstance(v, Graph) else [x for x in v if isinstance(x, Graph)] if isinstance(v, list) else []
            for sg in gs:
                referenced.update(sg.outer_scope)
    referenced.update(o.name for o in g.output)
    outer_used = frozenset(r for r in referenced if r not in local and r in outer)

    try:
        ordered = topological_order(nodes, set(initializers) | {i.name for i in g.input} | outer_used)
    except ValueError as e:
        raise ModelError(f"graph {g.name!r}: {e}") from None
    return Graph(name=g.name or "model", nodes=ordered, inputs=inputs, outputs=outputs,
                 initializers=initializers, value_info=value_info,
                 opsets={("" if k == "ai.onnx" else k): v for k, v in dict(opsets).items()},
                 outer_scope=outer_used)
