"""onnx's nine light models (onnx/backend/test/data/light) on the GPU plugin, f32 and f16.

The input is built as onnx's backend runner builds it (np.arange(n).reshape(shape) / n, float32) and
the expected output is the *_output_0.pb file beside each model. f16 must be within the documented
f16 tolerance (hetero.devices.opencl.F16_RTOL / F16_ATOL_OF_MAX); these networks' activations grow
far past half's range (ResNet-50 reaches 1e10), so f16 exercises the calibrated mixed precision.
"""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import hetero
from hetero.devices.opencl import f16_allclose

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
MODELS = ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet", "squeezenet",
          "vgg19", "zfnet512"]
CORE = hetero.Core()
pytestmark = pytest.mark.skipif(not any(d.startswith("GPU") for d in CORE.available_devices),
                                reason="no OpenCL platform/device (pyopencl found no GPU.N)")


def _light(name):
    path = os.path.join(LIGHT, f"light_{name}.onnx")
    m = onnx.load(path)
    inits = {i.name for i in m.graph.initializer}
    inp = next(i for i in m.graph.input if i.name not in inits)
    shape = [d.dim_value if d.HasField("dim_value") else 1 for d in inp.type.tensor_type.shape.dim]
    n = int(np.prod(shape))
    x = (np.arange(n).reshape(shape) / n).astype(np.float32)
    expected = numpy_helper.to_array(onnx.load_tensor(os.path.join(LIGHT, f"light_{name}_output_0.pb")))
    return path, {inp.name: x}, expected


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["f32", "f16"])
@pytest.mark.parametrize("name", MODELS)
def test_light_model(name, precision):
    path, feeds, expected = _light(name)
    compiled = CORE.compile_model(path, "GPU", {"INFERENCE_PRECISION_HINT": precision})
    out = compiled(feeds)[0]
    assert out.shape == expected.shape and out.dtype == expected.dtype
    assert np.all(np.isfinite(out))
    if precision == "f32":
        np.testing.assert_allclose(out, expected, rtol=1e-3, atol=1e-5)
    else:
        assert f16_allclose(out, expected), f"max error {np.abs(out - expected).max()}"
        exe = compiled._runner
        assert exe.plan.half_nodes, "f16 ran no node on half storage"


def _randomized(name: str, seed: int = 0) -> onnx.ModelProto:
    """The light model with its constant weights (ConstantOfShape fills) replaced by random ones
    (uniform +-1/sqrt(fan_in) for weight tensors, [0.5, 1.5] for 1-D parameters such as BatchNorm's),
    so every channel and tap carries a different value and the outputs are far from uniform."""
    m = onnx.load(os.path.join(LIGHT, f"light_{name}.onnx"))
    rng = np.random.default_rng(seed)
    shapes = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    nodes = []
    for n in m.graph.node:
        if n.op_type == "ConstantOfShape" and n.input[0] in shapes:
            shape = tuple(int(d) for d in shapes[n.input[0]].ravel())
            if len(shape) >= 2:
                fan_in = int(np.prod(shape[1:]))
                v = rng.uniform(-1, 1, shape) / np.sqrt(fan_in)
            else:
                v = rng.uniform(0.5, 1.5, shape)
            n = onnx.helper.make_node("Constant", [], list(n.output),
                                      value=numpy_helper.from_array(v.astype(np.float32)))
        nodes.append(n)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return m


@pytest.mark.slow
@pytest.mark.parametrize("name", ["squeezenet", "shufflenet", "inception_v1"])
def test_light_model_random_weights_matches_onnxruntime(name):
    import onnxruntime as ort

    m = _randomized(name)
    _, feeds, _ = _light(name)
    x = next(iter(feeds.values()))
    feeds = {k: np.random.default_rng(1).random(x.shape).astype(np.float32) for k in feeds}
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, feeds)[0]
    got = CORE.compile_model(m, "GPU")(feeds)[0]
    assert np.abs(want).max() > 1.5 * np.abs(want).min() + 1e-6  # outputs are not uniform
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())
    got16 = CORE.compile_model(m, "GPU", {"INFERENCE_PRECISION_HINT": "f16"})(feeds)[0]
    assert f16_allclose(got16, want), f"f16 max error {np.abs(got16 - want).max()} of max {np.abs(want).max()}"


HALF_DEVICES = [d for d in CORE.available_devices if d.startswith("GPU") and CORE._registry.get(d).has_fp16]


@pytest.mark.slow
@pytest.mark.skipif(not HALF_DEVICES, reason="no OpenCL device with cl_khr_fp16 (the test extra's intel-opencl-rt "
                    "has one; PoCL 3 has not)")
@pytest.mark.parametrize("name", ["squeezenet", "shufflenet", "inception_v2", "densenet121"])
def test_light_model_half_math(name, monkeypatch):
    """f16 with half arithmetic (HETERO_OCL_HALF_MATH=1) on every cl_khr_fp16 device: the model's own
    output, and with random weights against ONNX Runtime; the convs really sum in half."""
    import onnxruntime as ort

    monkeypatch.setenv("HETERO_OCL_HALF_MATH", "1")
    path, feeds, expected = _light(name)
    m = _randomized(name)
    x = next(iter(feeds.values()))
    rfeeds = {k: np.random.default_rng(1).random(x.shape).astype(np.float32) for k in feeds}
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, rfeeds)[0]
    for dev in HALF_DEVICES:
        compiled = CORE.compile_model(path, dev, {"INFERENCE_PRECISION_HINT": "f16"})
        out = compiled(feeds)[0]
        assert f16_allclose(out, expected), f"{dev}: max error {np.abs(out - expected).max()}"
        half_gemms = [l for l in compiled._runner.plan.launches
                      if l.kernel.startswith("gemm") and ("HALF_MATH", None) in l.program.defines]
        assert half_gemms, f"{dev}: no GEMM summed in half"
        got = CORE.compile_model(m, dev, {"INFERENCE_PRECISION_HINT": "f16"})(rfeeds)[0]
        assert f16_allclose(got, want), f"{dev}: random weights, max error {np.abs(got - want).max()} of {np.abs(want).max()}"
