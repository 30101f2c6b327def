"""BATCH: gathering single-sample requests into batched executions, the timeout's smaller batch, the
batch-dimension check at compile, static-shape devices (padding), properties.

Counting executions: ``batch_log`` (sizes run, in order) and the MOCK device's ``inferences`` counter.
"""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import hetero
from hetero.errors import DeviceStringError, ModelError, PropertyError
from hetero.multi import batched_graphs

from test_multi_fixtures import (core, finish, gpu_available, mock, reference, run_async, sample,  # noqa: F401
                                 softmax_model)

MODEL = softmax_model()


def test_full_batches_run_as_one_execution_each(core):
    cm = core.compile_model(MODEL, "BATCH:MOCK.0(4)", {"AUTO_BATCH_TIMEOUT": 10_000})
    reqs, xs = run_async(cm, 8)
    assert finish(reqs, xs) == ["MOCK.0"] * 8
    assert cm.batch_log == [4, 4]
    assert mock(core, 0).inferences == 2  # two device executions for eight requests
    assert cm.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS") == 4
    assert cm.get_property("EXECUTION_DEVICES") == ["MOCK.0"]


def test_timeout_runs_what_was_gathered_as_one_smaller_batch(core):
    cm = core.compile_model(MODEL, "BATCH:MOCK.1(4)", {"AUTO_BATCH_TIMEOUT": 200})
    # the requests are started while holding the batcher's (reentrant) lock, so its timeout cannot
    # fire between two starts however slow the machine is: the gathers below are exact
    with cm._batcher._cv:
        reqs, xs = run_async(cm, 3)
    finish(reqs, xs)
    assert cm.batch_log == [3]
    assert mock(core, 1).inferences == 1
    with cm._batcher._cv:
        reqs, xs = run_async(cm, 6, start=3)  # one full batch at once, then 2 after the timeout
    finish(reqs, xs)
    assert cm.batch_log == [3, 4, 2]


def test_sync_infer_and_symbolic_batch_model(core):
    model = softmax_model(batch="N")
    cm = core.compile_model(model, "BATCH:CPU(8)", {"AUTO_BATCH_TIMEOUT": 0})
    assert cm.inputs[0].shape == (1, 4) and cm.outputs[0].shape == (1, 3)
    for i in range(3):
        np.testing.assert_allclose(cm(sample(i))[0], reference(sample(i)), rtol=1e-5, atol=1e-6)
    assert cm.batch_log == [1, 1, 1]
    with pytest.raises(hetero.InferError, match="expected shape \\[1,4\\]"):
        cm(np.zeros((2, 4), np.float32))


def test_async_queue_through_batch(core):
    cm = core.compile_model(MODEL, "BATCH:MOCK.2(4)", {"AUTO_BATCH_TIMEOUT": 50})
    q = hetero.AsyncInferQueue(cm, 8)
    out = {}
    q.set_callback(lambda r, i: out.__setitem__(i, r.get_output_tensor(0).copy()))
    for i in range(20):
        q.start_async({"x": sample(i)}, i)
    q.wait_all()
    assert sorted(out) == list(range(20))
    for i, y in out.items():
        np.testing.assert_allclose(y, reference(sample(i)), rtol=1e-5, atol=1e-6)
    assert sum(cm.batch_log) == 20 and max(cm.batch_log) == 4


def test_timeout_can_change_while_serving(core):
    cm = core.compile_model(MODEL, "BATCH:MOCK.0(4)", {"AUTO_BATCH_TIMEOUT": 60_000})
    assert cm.get_property("AUTO_BATCH_TIMEOUT") == 60_000
    reqs, xs = run_async(cm, 2)
    cm.set_property({"AUTO_BATCH_TIMEOUT": 0})  # the waiting gather goes at once
    finish(reqs, xs)
    assert cm.batch_log == [2]
    with pytest.raises(PropertyError, match="AUTO_BATCH_TIMEOUT"):
        cm.set_property({"AUTO_BATCH_TIMEOUT": -1})


def test_a_failing_batch_fails_each_of_its_requests(core):
    cm = core.compile_model(MODEL, "BATCH:MOCK.3(2)", {"AUTO_BATCH_TIMEOUT": 10_000,
                                                       "DEVICE_PROPERTIES": {"MOCK.3": {"MOCK_FAIL_AFTER": 1}}})
    reqs, xs = run_async(cm, 4)
    finish(reqs[:2], xs[:2])
    for r in reqs[2:]:
        with pytest.raises(hetero.DeviceError, match="injected failure"):
            r.wait()
    assert cm.batch_log == [2]


def test_release_lets_handed_over_batches_finish_before_the_device_model_goes(core):
    import threading

    cm = core.compile_model(MODEL, "BATCH:MOCK.0(2)", {"AUTO_BATCH_TIMEOUT": 60_000})
    released, device_release = threading.Event(), cm._device_cm.release
    cm._device_cm.release = lambda: (device_release(), released.set())
    mock(core, 0).pause()
    reqs, xs = run_async(cm, 2)  # a full batch: handed to a batch worker, held at the MOCK's gate
    gathering, gx = run_async(cm, 1, start=2)  # waits for a second sample that will not come
    cm.release()
    with pytest.raises(hetero.InferError, match="BATCH:MOCK.0\\(2\\): the compiled model was released"):
        gathering[0].wait()
    assert not released.is_set()  # the held batch still uses the device's model
    mock(core, 0).resume()
    assert finish(reqs, xs) == ["MOCK.0", "MOCK.0"]
    assert released.wait(10)
    assert cm.batch_log == [2]


# ---- the batch dimension ----------------------------------------------------------------------------------

def test_batched_graph_shapes(core):
    g = core.read_model(MODEL)
    bg = batched_graphs(g, 4)
    assert bg.size == 4
    assert bg.static.inputs[0].shape == (4, 4) and bg.static.outputs[0].shape == (4, 3)
    assert bg.static.value_info["m"].shape == (4, 3)
    assert bg.dynamic.inputs[0].shape == ("batch", 4)
    assert [n.name for n in bg.static.nodes] == [n.name for n in g.nodes]
    np.testing.assert_array_equal(bg.static.initializers["W"], g.initializers["W"])


@pytest.mark.parametrize("model, message", [
    (softmax_model(reshape_to=(1, 3)),
     "cannot change the batch dimension of model 'tiny': with inputs of batch 4, output 'y' has shape "
     "float32\\[1,3\\] \\(expected dimension 0 = 4\\); node 'pin' \\(Reshape\\) turns 'a' \\(dimension 0 = 4\\) "
     "into 'r' \\(dimension 0 = 1\\)"),
    (softmax_model(reshape_to=(4, 3)),  # a constant that equals n: caught with n + 1
     "with inputs of batch 5, output 'y' has shape float32\\[4,3\\]"),
    (softmax_model(batch=3), "input 'x' has shape float32\\[3,4\\]: dimension 0 is 3"),
])
def test_models_whose_batch_cannot_change(core, model, message):
    with pytest.raises(ModelError, match=message):
        core.compile_model(model, "BATCH:CPU(4)")


def test_scalar_input_has_no_batch_dimension(core):
    g = helper.make_graph([helper.make_node("Neg", ["x"], ["y"], name="neg")], "scalar",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelError, match="input 'x' \\(float32\\[\\]\\) has no batch dimension"):
        core.compile_model(model, "BATCH:CPU(2)")


@pytest.mark.parametrize("device, config, error, message", [
    ("BATCH:CPU(2),MOCK.0(2)", {}, DeviceStringError, "BATCH takes exactly one device"),
    ("BATCH:MOCK.9(2)", {}, DeviceStringError, "unknown device 'MOCK.9\\(2\\)'"),
    ("BATCH:CPU(2)", {"SCHEDULE_POLICY": "ROUND_ROBIN"}, PropertyError, "not accepted by BATCH"),
    ("BATCH:CPU(2)", {"AUTO_BATCH_TIMEOUT": "soon"}, PropertyError, "AUTO_BATCH_TIMEOUT"),
])
def test_compile_errors(core, device, config, error, message):
    with pytest.raises(error, match=message):
        core.compile_model(MODEL, device, config)


def test_static_shape_gpu_pads_a_partial_batch(core):
    if not gpu_available(core):
        pytest.skip("no GPU device (OpenCL platform) available")
    cm = core.compile_model(MODEL, "BATCH:GPU(4)", {"AUTO_BATCH_TIMEOUT": 200})
    assert cm._batcher.dynamic is False  # the OpenCL plan wants static shapes: the batch-4 model
    reqs, xs = run_async(cm, 6)
    assert finish(reqs, xs, rtol=1e-4) == ["GPU.0"] * 6
    assert cm.batch_log == [4, 2]
