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
