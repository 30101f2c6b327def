"""A released compiled model refuses new work at once instead of queueing it forever."""
import numpy as np
import pytest
from onnx import TensorProto, helper

import hetero

#   x -> Relu -> y
MODEL = helper.make_model(helper.make_graph(
    [helper.make_node("Relu", ["x"], ["y"], name="relu")], "relu",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])]))
X = np.array([[-1, 0, 1], [2, -3, 4]], np.float32)


@pytest.mark.parametrize("device", ["CPU", "MOCK.0"])
def test_requests_after_release_raise_device_error(device):
    cm = hetero.compile_model(MODEL, device)
    req = cm.create_infer_request()
    req.start_async({"x": X})
    req.wait()
    np.testing.assert_array_equal(req.get_output_tensor(0), np.maximum(X, 0))
    cm.release()
    with pytest.raises(hetero.DeviceError, match=f"{device}: the compiled model was released"):
        req.start_async({"x": X})
    with pytest.raises(hetero.DeviceError, match="released"):
        req.infer({"x": X})
    assert req.wait_for(0)  # not left busy
