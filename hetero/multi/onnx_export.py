"""hetero IR -> ONNX ModelProto, so ONNX's own shape inference can re-run on a changed graph.

BATCH changes the batch dimension of a model's inputs; every shape downstream (including shapes that
constant folding would bake in) must then be re-inferred. The IR keeps no protobuf, so this module
writes the graph back: nodes with their attributes, initializers, inputs and outputs (value_info is
left out on purpose: it is what gets re-inferred).

Attribute types come from the op's schema where one is known (an empty list attribute is otherwise
ambiguous), else from the Python value (see ``hetero.onnx_import.convert_attribute`` for the inverse).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..ir import Graph, TensorInfo

_A = onnx.AttributeProto


def _tensor(name: str, arr: np.ndarray) -> onnx.TensorProto:
    arr = np.asarray(arr)
    if arr.dtype == object:  # strings: ONNX stores bytes
        arr = np.array([x.encode("utf-8") if isinstance(x, str) else x for x in arr.ravel()],
                       dtype=object).reshape(arr.shape)
    return numpy_helper.from_array(arr, name)


def _value_info(t: TensorInfo, keep_shape: bool = True) -> onnx.ValueInfoProto:
    if t.kind != "tensor":
        return onnx.ValueInfoProto(name=t.name)  # type left to inference
    elem = 0 if t.dtype is None else helper.np_dtype_to_tensor_dtype(np.dtype(t.dtype))
    shape = None
    if keep_shape and t.shape is not None:
        shape = list(t.shape)
    return helper.make_tensor_value_info(t.name, elem, shape)


def _schema_types(op: str, domain: str, opset: int) -> dict[str, int]:
    try:
        s = onnx.defs.get_schema(op, opset, domain)
    except onnx.defs.SchemaError:  # an op onnx does not know (a custom domain): types from the values
        return {}
    return {k: int(v.type) for k, v in s.attributes.items()}


def _attribute(name: str, value: Any, typ: int | None, opsets) -> onnx.AttributeProto:
    if isinstance(value, Graph):
        return helper.make_attribute(name, graph_proto(value, opsets))
    if isinstance(value, np.ndarray):
        return helper.make_attribute(name, _tensor("", value))
    if isinstance(value, list) and value and isinstance(value[0], Graph):
        return helper.make_attribute(name, [graph_proto(g, opsets) for g in value])
    if isinstance(value, list) and value and isinstance(value[0], np.ndarray):
        return helper.make_attribute(name, [_tensor("", v) for v in value])
    if isinstance(value, (list, tuple)) and not value and typ is not None:
        return helper.make_attribute(name, [], attr_type=typ)
    if typ == _A.FLOAT and isinstance(value, int):
        value = float(value)
    if typ == _A.FLOATS and isinstance(value, (list, tuple)):
        value = [float(v) for v in value]
    return helper.make_attribute(name, value)


def node_proto(node, opsets) -> onnx.NodeProto:
    version = int(opsets.get(node.domain, opsets.get("", 21)))
    types = _schema_types(node.op_type, node.domain, version)
    attrs = []
    for k, v in node.attrs.items():
        if node.op_type == "Constant" and k == "sparse_value":  # the importer densified it
            k = "value"
        attrs.append(_attribute(k, v, types.get(k), opsets))
    p = helper.make_node(node.op_type, list(node.inputs), list(node.outputs), name=node.name,
                         domain=node.domain or None)
    p.attribute.extend(attrs)
    return p


def graph_proto(graph: Graph, opsets=None, input_infos: list[TensorInfo] | None = None) -> onnx.GraphProto:
    opsets = opsets if opsets is not None else graph.opsets
    inputs = [_value_info(t) for t in (input_infos if input_infos is not None else graph.inputs)]
    # outputs: element type only, so inference is free to find the (new) shape
    outputs = [_value_info(t, keep_shape=False) for t in graph.outputs]
    inits = [_tensor(k, v) for k, v in graph.initializers.items()]
    return helper.make_graph([node_proto(n, opsets) for n in graph.nodes], graph.name, inputs, outputs, inits)


def to_onnx(graph: Graph, input_infos: list[TensorInfo] | None = None) -> onnx.ModelProto:
    """``graph`` as a ModelProto (inputs replaced by ``input_infos`` when given)."""
    opsets = dict(graph.opsets) or {"": 21}
    opsets.setdefault("", 21)
    imports = [helper.make_opsetid(d, v) for d, v in opsets.items()]
    model = helper.make_model(graph_proto(graph, opsets, input_infos), opset_imports=imports,
                              producer_name="hetero")
    model.ir_version = min(model.ir_version, onnx.IR_VERSION)
    return model
