#!/usr/bin/env python3
"""Build hetero's bundled demo model: a small residual CNN classifier (hetero/data/demo_cnn.onnx).

    input [1,3,32,32] -> Conv3x3(16)+BN+Relu -> MaxPool2 -> Conv3x3(32)+Relu -> Conv3x3(32) -+-> Add -> Relu
                                                                 \\________________________/
      -> GlobalAveragePool -> Flatten -> Gemm(10) -> Softmax -> probs [1,10]
                                                          \\-> TopK(k=3) -> top_values, top_indices

TopK has no OpenCL kernel, so under HETERO:GPU,CPU it falls back to CPU (the point of the demo).
Weights are seeded (He-initialised) so the file is reproducible: `python tools/make_demo_model.py`.
"""
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = Path(__file__).resolve().parents[1] / "hetero" / "data" / "demo_cnn.onnx"


def build() -> onnx.ModelProto:
    rng = np.random.default_rng(2026)

    def he(*shape):
        fan_in = int(np.prod(shape[1:]))
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    inits = {
        "conv1.w": he(16, 3, 3, 3), "conv1.b": np.zeros(16, np.float32),
        "bn1.scale": (1 + 0.1 * rng.standard_normal(16)).astype(np.float32),
        "bn1.bias": (0.1 * rng.standard_normal(16)).astype(np.float32),
        "bn1.mean": (0.1 * rng.standard_normal(16)).astype(np.float32),
        "bn1.var": (1 + 0.1 * rng.random(16)).astype(np.float32),
        "conv2.w": he(32, 16, 3, 3), "conv2.b": (0.01 * rng.standard_normal(32)).astype(np.float32),
        "conv3.w": he(32, 32, 3, 3), "conv3.b": (0.01 * rng.standard_normal(32)).astype(np.float32),
        "fc.w": he(10, 32), "fc.b": (0.01 * rng.standard_normal(10)).astype(np.float32),
        "k": np.array([3], np.int64),
    }
    n = helper.make_node
    nodes = [
        n("Conv", ["input", "conv1.w", "conv1.b"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        n("BatchNormalization", ["c1", "bn1.scale", "bn1.bias", "bn1.mean", "bn1.var"], ["b1"], name="bn1"),
        n("Relu", ["b1"], ["r1"], name="relu1"),
        n("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        n("Conv", ["p1", "conv2.w", "conv2.b"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        n("Relu", ["c2"], ["r2"], name="relu2"),
        n("Conv", ["r2", "conv3.w", "conv3.b"], ["c3"], name="conv3", pads=[1, 1, 1, 1]),
        n("Add", ["c3", "r2"], ["a3"], name="residual_add"),
        n("Relu", ["a3"], ["r3"], name="relu3"),
        n("GlobalAveragePool", ["r3"], ["g"], name="gap"),
        n("Flatten", ["g"], ["f"], name="flatten"),
        n("Gemm", ["f", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
        n("Softmax", ["logits"], ["probs"], name="softmax", axis=1),
        n("TopK", ["probs", "k"], ["top_values", "top_indices"], name="topk"),
    ]
    graph = helper.make_graph(
        nodes, "demo_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 10]),
         helper.make_tensor_value_info("top_values", TensorProto.FLOAT, [1, 3]),
         helper.make_tensor_value_info("top_indices", TensorProto.INT64, [1, 3])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="hetero")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(build(), OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
