"""Errors (issue 2, point 9): the hierarchy of DESIGN.md section 2, messages that name what, where,
expected and got, property validation (PropertyError lists the accepted values), and a device that
fails mid-run (MOCK_FAIL_AFTER): the error names the device and no request is lost."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from onnx import TensorProto as T, helper as h, numpy_helper as nh

import hetero
from hetero import errors
from hetero.errors import (DeviceError, DeviceStringError, HeteroError, InferError, KernelBuildError, ModelError,
                           PartitionError, PropertyError, UnsupportedOpError)

W = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)


def model():
    """x[N,8] -> mm (MatMul W) -> relu -> y[N,4]"""
    g = h.make_graph([h.make_node("MatMul", ["x", "W"], ["a"], name="mm"), h.make_node("Relu", ["a"], ["y"], name="relu")],
                     "m", [h.make_tensor_value_info("x", T.FLOAT, ["N", 8])], [h.make_tensor_value_info("y", T.FLOAT, ["N", 4])],
                     [nh.from_array(W, "W")])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


MODEL = model()


def x_for(i: int) -> np.ndarray:
    return np.random.default_rng(i).standard_normal((2, 8)).astype(np.float32)


def y_for(i: int) -> np.ndarray:
    return np.maximum(x_for(i) @ W, 0)


@pytest.fixture
def core():
    c = hetero.Core()
    yield c
    from hetero.devices.mock import discover

    for d in discover():
        d.reset()


def message(exc_type, fn, *args, **kw) -> str:
    with pytest.raises(exc_type) as ei:
        fn(*args, **kw)
    return str(ei.value)


def has_all(msg: str, *fragments: str) -> None:
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"


# ---- the hierarchy -----------------------------------------------------------------------------------------

def test_hierarchy():
    for cls in (ModelError, UnsupportedOpError, DeviceError, DeviceStringError, KernelBuildError, PartitionError,
                InferError, PropertyError):
        assert issubclass(cls, HeteroError) and issubclass(cls, Exception)
        assert getattr(hetero, cls.__name__) is cls is getattr(errors, cls.__name__)
    # refinements: a bad device string and a failed kernel build are device errors
    assert issubclass(DeviceStringError, DeviceError) and issubclass(KernelBuildError, DeviceError)
    assert not issubclass(InferError, DeviceError) and not issubclass(ModelError, InferError)
    e = UnsupportedOpError("msg", {"n1": {"CPU": "why"}})
    assert e.nodes == {"n1": {"CPU": "why"}} and str(e) == "msg"


# ---- device strings -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("device, exc, fragments", [
    ("GPU.x", DeviceStringError, ["'GPU.x'", "NAME[.INDEX][(NREQ)]"]),
    (" ", DeviceStringError, ["empty device string", "'CPU'"]),
    ("HETERO:", DeviceStringError, ["empty device list item", "HETERO"]),
    ("MULTI", DeviceStringError, ["MULTI needs a device list", "'MULTI:GPU,CPU'"]),
    ("FOO:CPU", DeviceStringError, ["'FOO' is not a virtual device", "HETERO"]),
    ("MULTI:CPU,CPU", DeviceStringError, ["'CPU' is listed twice"]),
    ("CPU(0)", DeviceStringError, ["request count", ">= 1"]),
    ("TPU", DeviceError, ["'TPU'", "not available", "available devices", "CPU"]),
    ("CPU.3", DeviceError, ["'CPU.3'", "not available", "CPU"]),
])
def test_device_string_errors(core, device, exc, fragments):
    has_all(message(exc, core.compile_model, MODEL, device), *fragments)


# ---- properties ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key, value, fragments", [
    ("PERFORMANCE_HINT", "FAST", ["PERFORMANCE_HINT", "LATENCY, THROUGHPUT, CUMULATIVE_THROUGHPUT", "'FAST'"]),
    ("PERF_COUNT", "maybe", ["PERF_COUNT", "boolean", "'maybe'"]),
    ("NUM_STREAMS", 0, ["NUM_STREAMS", "integer >= 1 or 'AUTO'", "got 0"]),
    ("PERFORMANCE_HINT_NUM_REQUESTS", -1, ["PERFORMANCE_HINT_NUM_REQUESTS", "integer >= 0", "-1"]),
    ("INFERENCE_NUM_THREADS", "four", ["INFERENCE_NUM_THREADS", "an integer", "'four'"]),
    ("INFERENCE_PRECISION_HINT", "f64", ["INFERENCE_PRECISION_HINT", "f32, f16", "'f64'"]),
    ("PERFORMANCE_HINTS", "LATENCY", ["'PERFORMANCE_HINTS'", "did you mean 'PERFORMANCE_HINT'", "CPU"]),
    ("FULL_DEVICE_NAME", "mine", ["FULL_DEVICE_NAME", "read-only"]),
    ("MOCK_LATENCY_MS", 3, ["'MOCK_LATENCY_MS'", "CPU"]),  # a MOCK key the CPU does not take
])
def test_bad_properties_at_compile_and_set(core, key, value, fragments):
    has_all(message(PropertyError, core.compile_model, MODEL, "CPU", {key: value}), *fragments)
    has_all(message(PropertyError, core.set_property, "CPU", {key: value}), *fragments)


def test_property_values_are_validated_and_normalised(core):
    cm = core.compile_model(MODEL, "CPU", {"PERFORMANCE_HINT": "throughput", "PERF_COUNT": "YES",
                                           "NUM_STREAMS": "2", "INFERENCE_PRECISION_HINT": "F32"})
    assert cm.get_property("PERFORMANCE_HINT") == "THROUGHPUT" and cm.get_property("PERF_COUNT") is True
    assert cm.get_property("NUM_STREAMS") == 2 and cm.get_property("INFERENCE_PRECISION_HINT") == "f32"


def test_unknown_property_reads(core):
    has_all(message(PropertyError, core.get_property, "CPU", "FULL_DEVICE_NAM"), "'FULL_DEVICE_NAM'",
            "did you mean 'FULL_DEVICE_NAME'")
    has_all(message(PropertyError, core.compile_model(MODEL, "CPU").get_property, "NOPE"), "'NOPE'", "CPU")
    has_all(message(PropertyError, core.set_property, {"NOT_A_KEY": 1}), "'NOT_A_KEY'")


# ---- unsupported ops and failing nodes ---------------------------------------------------------------------

def test_unsupported_op_names_node_op_and_device(core):
    core._registry.get("MOCK.2").set_property({"MOCK_SUPPORTED_OPS": "Relu"})
    with pytest.raises(UnsupportedOpError) as ei:
        core.compile_model(MODEL, "MOCK.2")
    has_all(str(ei.value), "MOCK.2", "mm", "MatMul")
    assert set(ei.value.nodes) == {"mm"} and "MOCK.2" in ei.value.nodes["mm"]


def test_node_failing_at_run_time_names_node_op_device_and_inputs():
    """x[N] -> rs (Reshape to [3, -1]) -> y: fine for N = 6, impossible for N = 4"""
    g = h.make_graph([h.make_node("Reshape", ["x", "shape"], ["y"], name="rs")], "rs",
                     [h.make_tensor_value_info("x", T.FLOAT, ["N"])], [h.make_tensor_value_info("y", T.FLOAT, [3, None])],
                     [nh.from_array(np.array([3, -1], np.int64), "shape")])
    cm = hetero.compile_model(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), "CPU")
    assert cm({"x": np.arange(6, dtype=np.float32)})[0].shape == (3, 2)
    msg = message(InferError, cm, {"x": np.arange(4, dtype=np.float32)})
    has_all(msg, "node 'rs'", "(Reshape)", "on CPU", "float32[4]", "int64[2]")


def test_model_error_is_clear(core):
    has_all(message(ModelError, core.compile_model, b"not a model", "CPU"), "<bytes>", "not an ONNX model")


# ---- a device failing mid-run ---------------------------------------------------------------------------------

def test_device_failing_mid_run_sync(core):
    dev = core._registry.get("MOCK.0")
    cm = core.compile_model(MODEL, "MOCK.0")
    dev.set_property({"MOCK_FAIL_AFTER": 2})
    req = cm.create_infer_request()
    for i in range(2):
        np.testing.assert_allclose(req.infer({"x": x_for(i)})["y"], y_for(i), rtol=1e-5, atol=1e-6)
    with pytest.raises(DeviceError) as ei:
        req.infer({"x": x_for(2)})
    has_all(str(ei.value), "MOCK.0", "MOCK_FAIL_AFTER=2")
    # the failed run left no outputs behind that could pass for its result
    has_all(message(InferError, req.get_tensor, "y"), "'y'", "last inference failed", "MOCK.0")
    dev.set_property({"MOCK_FAIL_AFTER": -1})  # the device recovers: the same request works again
    np.testing.assert_allclose(req.infer({"x": x_for(3)})["y"], y_for(3), rtol=1e-5, atol=1e-6)


def test_device_failing_mid_run_async_loses_no_request(core):
    dev = core._registry.get("MOCK.0")
    cm = core.compile_model(MODEL, "MOCK.0", {"NUM_STREAMS": 3})
    dev.set_property({"MOCK_FAIL_AFTER": 5})
    queue = hetero.AsyncInferQueue(cm, jobs=3)
    outcome, lock = {}, threading.Lock()

    def done(request, i):
        try:
            value = request.get_tensor("y").copy()
        except InferError as e:
            value = e
        with lock:
            assert i not in outcome, f"job {i} reported twice"
            outcome[i] = value

    queue.set_callback(done)
    for i in range(12):
        queue.start_async({"x": x_for(i)}, userdata=i)
    with pytest.raises(DeviceError) as ei:
        queue.wait_all()
    has_all(str(ei.value), "MOCK.0", "injected failure")
    assert sorted(outcome) == list(range(12))  # every job reported back, once
    ok = [i for i, v in outcome.items() if isinstance(v, np.ndarray)]
    failed = [i for i, v in outcome.items() if isinstance(v, InferError)]
    assert len(ok) == 5 and len(failed) == 7  # exactly the first five inferences succeeded
    for i in ok:
        np.testing.assert_allclose(outcome[i], y_for(i), rtol=1e-5, atol=1e-6)
    for i in failed:
        has_all(str(outcome[i]), "last inference failed", "MOCK.0")


def test_multi_reruns_a_failed_request_on_another_device(core):
    core._registry.get("MOCK.0").set_property({"MOCK_FAIL_AFTER": 2})
    cm = core.compile_model(MODEL, "MULTI:MOCK.0,MOCK.1")
    queue = hetero.AsyncInferQueue(cm, jobs=4)
    got = {}
    queue.set_callback(lambda request, i: got.__setitem__(i, request.get_tensor("y").copy()))
    for i in range(16):
        queue.start_async({"x": x_for(i)}, userdata=i)
    queue.wait_all()  # MOCK.0's failures were absorbed by MOCK.1
    assert sorted(got) == list(range(16))
    for i in range(16):
        np.testing.assert_allclose(got[i], y_for(i), rtol=1e-5, atol=1e-6)
