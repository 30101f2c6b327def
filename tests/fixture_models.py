"""Small ONNX models several test files build their fixtures from (imported as ``fixture_models``,
like ``op_cases``)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto as T, helper as h


def chain_model(batch="N"):
    """x[N,8] -> mm (MatMul W) -> add (+B) -> relu -> sm (Softmax) -> topk (k=2) -> values, indices

    The GPU has no TopK kernel, so HETERO:GPU,CPU cuts after sm: subgraph0 GPU [mm,add,relu,sm],
    subgraph1 CPU [topk]; the only value crossing is p float32[N,8]."""
    rng = np.random.default_rng(0)
    inits = [onnx.numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "W"),
             onnx.numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "B"),
             onnx.numpy_helper.from_array(np.array([2], np.int64), "k")]
    nodes = [h.make_node("MatMul", ["x", "W"], ["a"], name="mm"), h.make_node("Add", ["a", "B"], ["b"], name="add"),
             h.make_node("Relu", ["b"], ["r"], name="relu"), h.make_node("Softmax", ["r"], ["p"], name="sm", axis=1),
             h.make_node("TopK", ["p", "k"], ["values", "indices"], name="topk")]
    g = h.make_graph(nodes, "chain", [h.make_tensor_value_info("x", T.FLOAT, [batch, 8])],
                     [h.make_tensor_value_info("values", T.FLOAT, [batch, 2]),
                      h.make_tensor_value_info("indices", T.INT64, [batch, 2])], inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
