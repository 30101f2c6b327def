"""MULTI: device strings, worker pools, exact dispatch sequences (DEVICE_PRIORITY, ROUND_ROBIN), the
wait queue, priority changes while serving, runtime fallback, and MULTI over the real CPU and GPU.

Determinism: MOCK devices are held with ``pause()`` so which worker is busy is known exactly; a
dispatch happens inside ``start_async`` (under the scheduler lock), so ``dispatch_log`` is complete
when it returns. Nothing here asserts a duration.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

import hetero
from hetero.errors import DeviceError, DeviceStringError, InferError, PropertyError

from test_multi_fixtures import (core, finish, gpu_available, mock, reference, run_async, sample,  # noqa: F401
                                 softmax_model)

MODEL = softmax_model()


def devices(cm) -> list[str]:
    return [d.device for d in cm.dispatch_log]


# ---- compile ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("device, config, workers", [
    ("MULTI:MOCK.0,MOCK.1", {}, {"MOCK.0": 3, "MOCK.1": 2}),
    ("MULTI:MOCK.0(4),MOCK.1(1)", {}, {"MOCK.0": 4, "MOCK.1": 1}),
    ("MULTI", {"MULTI_DEVICE_PRIORITIES": "MOCK.1,MOCK.0(2)"}, {"MOCK.1": 2, "MOCK.0": 2}),
    ("MULTI:MOCK.0,MOCK.1", {"MULTI_DEVICE_PRIORITIES": "MOCK.0,MOCK.1"}, {"MOCK.0": 3, "MOCK.1": 2}),
])
def test_worker_pools_and_optimal_requests(core, device, config, workers):
    mock(core, 0).set_property({"MOCK_OPTIMAL_REQUESTS": 3})
    mock(core, 1).set_property({"MOCK_OPTIMAL_REQUESTS": 2})
    cm = core.compile_model(MODEL, device, config)
    assert cm._sched.workers() == workers
    assert cm.get_property("EXECUTION_DEVICES") == list(workers)
    assert cm.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS") == sum(workers.values())
    assert cm.get_property("MULTI_DEVICE_PRIORITIES") == ",".join(workers)
    assert cm.get_property("MULTI_SERVED_REQUESTS") == {n: 0 for n in workers}
    assert "MULTI_SERVED_REQUESTS" in cm.get_property("SUPPORTED_PROPERTIES")
    np.testing.assert_allclose(cm(sample(2))[0], reference(sample(2)), rtol=1e-5)
    cm.release()


@pytest.mark.parametrize("device, config, error, message", [
    ("MULTI:MOCK.0,MOCK.9", {}, DeviceStringError, "unknown device 'MOCK.9'"),
    ("MULTI:MOCK.0,MOCK.0", {}, DeviceStringError, "listed twice"),
    ("MULTI", {}, DeviceStringError, "MULTI needs a device list"),
    ("MULTI:MOCK.0,MOCK.1", {"MULTI_DEVICE_PRIORITIES": "MOCK.1"}, DeviceStringError, "MULTI_DEVICE_PRIORITIES"),
    ("MULTI:MOCK.0", {"AFFINITY": {}}, PropertyError, "'AFFINITY' is not accepted by MULTI"),
    ("MULTI:MOCK.0", {"SCHEDULE_POLICY": "FASTEST"}, PropertyError, "SCHEDULE_POLICY"),
    ("MULTI:MOCK.0", {"DEVICE_PROPERTIES": {"MOCK.2": {"NUM_STREAMS": 2}}}, PropertyError,
     "device 'MOCK.2' is not in the device list"),
    ("MULTI:MOCK.0,MOCK.1", {"DEVICE_PROPERTIES": {"MOCK.1": {"MOCK_FAIL_COMPILE": True}}}, DeviceError,
     "MULTI: compiling on MOCK.1 failed: MOCK.1: compile failed"),
])
def test_compile_errors(core, device, config, error, message):
    with pytest.raises(error, match=message):
        core.compile_model(MODEL, device, config)


def test_a_device_that_cannot_run_the_model_fails_compile(core):
    mock(core, 1).set_property({"MOCK_SUPPORTED_OPS": "MatMul,Add"})
    with pytest.raises(hetero.UnsupportedOpError, match="MULTI: compiling on MOCK.1 failed: .*Softmax") as e:
        core.compile_model(MODEL, "MULTI:MOCK.0,MOCK.1")
    assert e.value.nodes == {"sm": {"MOCK.1": "Softmax: not in MOCK.1's op set"}}


# ---- dispatch sequences ------------------------------------------------------------------------------

def test_device_priority_sequence(core):
    """Sync requests one at a time: always the first device. Concurrent ones: MOCK.0's two workers,
    then MOCK.1's; the rest wait and go to the next worker that finishes (MOCK.1: MOCK.0 is held)."""
    cm = core.compile_model(MODEL, "MULTI:MOCK.0(2),MOCK.1(2)", {"SCHEDULE_POLICY": "DEVICE_PRIORITY"})
    for i in range(4):
        np.testing.assert_allclose(cm(sample(i))[0], reference(sample(i)), rtol=1e-5)
    assert devices(cm) == ["MOCK.0"] * 4
    mock(core, 0).pause()
    mock(core, 1).pause()
    reqs, xs = run_async(cm, 6)
    assert devices(cm)[4:] == ["MOCK.0", "MOCK.0", "MOCK.1", "MOCK.1"]  # r4, r5 are queued
    assert [d.seq for d in cm.dispatch_log[4:]] == [r.request_id for r in reqs[:4]]
    mock(core, 1).resume()
    for r in reqs[2:]:
        r.wait()
    assert devices(cm)[8:] == ["MOCK.1", "MOCK.1"]
    mock(core, 0).resume()
    assert finish(reqs, xs) == ["MOCK.0", "MOCK.0", "MOCK.1", "MOCK.1", "MOCK.1", "MOCK.1"]
    assert cm.get_property("MULTI_SERVED_REQUESTS") == {"MOCK.0": 6, "MOCK.1": 4}


def test_round_robin_sequence(core):
    cm = core.compile_model(MODEL, "MULTI:MOCK.0(2),MOCK.1(2),MOCK.2(1)", {"SCHEDULE_POLICY": "ROUND_ROBIN"})
    for i in range(5):
        cm(sample(i))
    assert devices(cm) == ["MOCK.0", "MOCK.1", "MOCK.2", "MOCK.0", "MOCK.1"]
    for i in range(3):
        mock(core, i).pause()
    reqs, xs = run_async(cm, 6)
    # the rotation goes on from MOCK.2; MOCK.2 has one worker, so the next turn passes over it
    assert devices(cm)[5:] == ["MOCK.2", "MOCK.0", "MOCK.1", "MOCK.0", "MOCK.1"]
    for i in range(3):
        mock(core, i).resume()
    finish(reqs, xs)
    assert sum(cm.get_property("MULTI_SERVED_REQUESTS").values()) == 11


def test_policy_can_change_while_serving(core):
    cm = core.compile_model(MODEL, "MULTI:MOCK.0,MOCK.1")
    cm(sample(0))
    cm.set_property({"SCHEDULE_POLICY": "ROUND_ROBIN"})
    assert cm.get_property("SCHEDULE_POLICY") == "ROUND_ROBIN"
    for i in range(4):
        cm(sample(i))
    assert devices(cm) == ["MOCK.0", "MOCK.0", "MOCK.1", "MOCK.0", "MOCK.1"]


def test_every_request_completes_exactly_once_under_load(core):
    for i in range(2):
        mock(core, i).set_property({"MOCK_LATENCY_MS": 1 + 2 * i})
    cm = core.compile_model(MODEL, "MULTI:MOCK.0(2),MOCK.1(3)")
    done = []
    lock = threading.Lock()
    q = hetero.AsyncInferQueue(cm, 8)

    def cb(req, i):
        with lock:
            done.append(i)
        np.testing.assert_allclose(req.get_output_tensor(0), reference(sample(i)), rtol=1e-5)

    q.set_callback(cb)
    for i in range(60):
        q.start_async({"x": sample(i)}, i)
    q.wait_all()
    assert sorted(done) == list(range(60))
    served = cm.get_property("MULTI_SERVED_REQUESTS")
    assert sum(served.values()) == 60 and served["MOCK.0"] > 0 and served["MOCK.1"] > 0
    assert len(cm.dispatch_log) == 60


# ---- priorities while serving ----------------------------------------------------------------------------

def test_priority_change_while_serving(core):
    cm = core.compile_model(MODEL, "MULTI:MOCK.0(1),MOCK.1(1)")
    mock(core, 0).pause()
    held, hx = run_async(cm, 1)  # in flight on MOCK.0
    cm.set_property({"MULTI_DEVICE_PRIORITIES": "MOCK.1"})
    assert cm.get_property("EXECUTION_DEVICES") == ["MOCK.1"]
    assert cm.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS") == 1
    reqs, xs = run_async(cm, 3, start=1)  # one runs on MOCK.1, two wait for it, none for MOCK.0
    assert finish(reqs, xs) == ["MOCK.1"] * 3
    mock(core, 0).resume()
    assert finish(held, hx) == ["MOCK.0"]  # a removed device finishes what it had
    for i in range(3):
        cm(sample(i))
    assert cm.get_property("MULTI_SERVED_REQUESTS") == {"MOCK.0": 1, "MOCK.1": 6}
    cm.set_property({"MULTI_DEVICE_PRIORITIES": "MOCK.1,MOCK.0"})
    cm(sample(0))
    cm.set_property({"MULTI_DEVICE_PRIORITIES": "mock.0"})  # device tokens are canonicalised
    cm(sample(0))
    assert devices(cm)[-2:] == ["MOCK.1", "MOCK.0"]
    assert cm.get_property("MULTI_DEVICE_PRIORITIES") == "MOCK.0"


def test_queued_requests_follow_a_new_order(core):
    cm = core.compile_model(MODEL, "MULTI:MOCK.0(1),MOCK.1(1)")
    mock(core, 0).pause()
    mock(core, 1).pause()
    reqs, xs = run_async(cm, 4)  # r0 on MOCK.0, r1 on MOCK.1, r2 and r3 queued
    cm.set_property({"MULTI_DEVICE_PRIORITIES": "MOCK.0"})
    mock(core, 1).resume()
    reqs[1].wait()  # MOCK.1 is out of rotation: it must not take r2 or r3
    mock(core, 0).resume()
    assert finish(reqs, xs) == ["MOCK.0", "MOCK.1", "MOCK.0", "MOCK.0"]


@pytest.mark.parametrize("value, message", [
    ("", "no device is in rotation|MULTI needs|empty"),
    ("MOCK.2", "device 'MOCK.2' is not in the device list"),
    ("MOCK.0(3)", "MOCK.0 was compiled with 1 worker request\\(s\\)"),
    ("MOCK.0,,MOCK.1", "empty device list item"),
])
def test_bad_priority_changes(core, value, message):
    cm = core.compile_model(MODEL, "MULTI:MOCK.0(1),MOCK.1(1)")
    with pytest.raises((PropertyError, DeviceStringError), match=message):
        cm.set_property({"MULTI_DEVICE_PRIORITIES": value})
    assert cm.get_property("EXECUTION_DEVICES") == ["MOCK.0", "MOCK.1"]
    with pytest.raises(PropertyError, match="cannot be changed after compile"):
        cm.set_property({"PERFORMANCE_HINT": "LATENCY"})


# ---- runtime fallback --------------------------------------------------------------------------------

def test_device_failing_midway_every_request_completes(core):
    for i in range(2):
        mock(core, i).set_property({"MOCK_LATENCY_MS": 1})
    cm = core.compile_model(MODEL, "MULTI:MOCK.0(2),MOCK.1(2)",
                            {"DEVICE_PROPERTIES": {"MOCK.0": {"MOCK_FAIL_AFTER": 3}}})
    q = hetero.AsyncInferQueue(cm)
    results = {}
    q.set_callback(lambda req, i: results.__setitem__(i, (req.served_by, req.get_output_tensor(0).copy())))
    for i in range(24):
        q.start_async({"x": sample(i)}, i)
    q.wait_all()
    assert sorted(results) == list(range(24))
    for i, (_, y) in results.items():
        np.testing.assert_allclose(y, reference(sample(i)), rtol=1e-5)
    assert cm.get_property("MULTI_SERVED_REQUESTS") == {"MOCK.0": 3, "MOCK.1": 21}
    assert cm.get_property("EXECUTION_DEVICES") == ["MOCK.1"]
    retries = [d for d in cm.dispatch_log if d.retry]
    assert retries and all(d.device == "MOCK.1" for d in retries)
    assert len(cm.dispatch_log) == 24 + len(retries)


def test_no_device_left_combines_every_error(core):
    cm = core.compile_model(MODEL, "MULTI:MOCK.0,MOCK.1", {"DEVICE_PROPERTIES": {
        "MOCK.0": {"MOCK_FAIL_AFTER": 0}, "MOCK.1": {"MOCK_FAIL_AFTER": 1}}})
    np.testing.assert_allclose(cm(sample(0))[0], reference(sample(0)), rtol=1e-5)  # MOCK.0 fails, MOCK.1 serves
    r = cm.create_infer_request()
    r.start_async({"x": sample(1)})
    with pytest.raises(DeviceError, match="failed on every device \\(2\\): MOCK.0: DeviceError: MOCK.0: injected "
                                          "failure .*; MOCK.1: DeviceError: MOCK.1: injected failure"):
        r.wait()
    with pytest.raises(DeviceError, match="failed on every device"):  # later requests fail at once, never hang
        cm(sample(2))
    assert cm.get_property("EXECUTION_DEVICES") == []
    # naming a failed device again puts it back in rotation
    mock(core, 1).set_property({"MOCK_FAIL_AFTER": 100})  # read live: overrides the compile-time 1
    cm.set_property({"MULTI_DEVICE_PRIORITIES": "MOCK.1"})
    np.testing.assert_allclose(cm(sample(3))[0], reference(sample(3)), rtol=1e-5)


def test_queued_requests_fail_when_the_last_device_fails(core):
    cm = core.compile_model(MODEL, "MULTI:MOCK.0(1)", {"DEVICE_PROPERTIES": {"MOCK.0": {"MOCK_FAIL_AFTER": 0}}})
    mock(core, 0).pause()
    reqs, _ = run_async(cm, 3)  # one in flight, two queued
    mock(core, 0).resume()
    for r in reqs:
        with pytest.raises(DeviceError, match="failed on every device \\(1\\): MOCK.0"):
            r.wait()


def test_without_runtime_fallback_the_error_surfaces(core):
    cm = core.compile_model(MODEL, "MULTI:MOCK.0,MOCK.1", {"ENABLE_RUNTIME_FALLBACK": False,
                                                           "DEVICE_PROPERTIES": {"MOCK.0": {"MOCK_FAIL_AFTER": 0}}})
    with pytest.raises(DeviceError, match="MOCK.0: injected failure"):
        cm(sample(0))
    assert cm.get_property("EXECUTION_DEVICES") == ["MOCK.0", "MOCK.1"]
    cm.set_property({"ENABLE_RUNTIME_FALLBACK": True})
    np.testing.assert_allclose(cm(sample(1))[0], reference(sample(1)), rtol=1e-5)
    assert cm.get_property("EXECUTION_DEVICES") == ["MOCK.1"]


def test_bad_data_fails_the_request_not_the_device(core):
    """An InferError raised by a kernel is the request's fault: no device is taken out for it."""
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Gather", ["data", "i"], ["y"], name="g")], "gather",
                          [helper.make_tensor_value_info("i", TensorProto.INT64, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
                          [helper.make_tensor("data", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    cm = core.compile_model(model, "MULTI:MOCK.0,MOCK.1")
    with pytest.raises(InferError):
        cm(np.array([7], np.int64))
    assert cm.get_property("EXECUTION_DEVICES") == ["MOCK.0", "MOCK.1"]
    assert cm(np.array([2], np.int64))[0].tolist() == [3.0]


def test_release_fails_queued_requests(core):
    cm = core.compile_model(MODEL, "MULTI:MOCK.0(1)")
    dev_cm = cm._sched._devices["MOCK.0"].compiled
    released, dev_release = threading.Event(), dev_cm.release
    dev_cm.release = lambda: (dev_release(), released.set())
    mock(core, 0).pause()
    reqs, xs = run_async(cm, 3)  # r0 in flight (held at the gate), r1 and r2 queued
    cm.release()  # (returns at once; the gate opens only after it, so r1 and r2 are still queued)
    assert not released.is_set()  # r0 still runs on the device's model
    mock(core, 0).resume()
    for r in reqs[1:]:
        with pytest.raises(DeviceError, match="released"):
            r.wait()
    assert finish(reqs[:1], xs[:1]) == ["MOCK.0"]
    assert released.wait(10)  # freed once r0 was done


# ---- real devices --------------------------------------------------------------------------------------

def test_multi_over_cpu_and_gpu_equals_single_devices(core):
    if not gpu_available(core):
        pytest.skip("no GPU device (OpenCL platform) available")
    cpu = core.compile_model(MODEL, "CPU")
    gpu = core.compile_model(MODEL, "GPU")
    cm = core.compile_model(MODEL, "MULTI:GPU,CPU", {"SCHEDULE_POLICY": "ROUND_ROBIN"})
    assert cm.get_property("EXECUTION_DEVICES") == ["GPU.0", "CPU"]
    reqs, xs = run_async(cm, 16)
    served = finish(reqs, xs)
    assert set(served) == {"GPU.0", "CPU"}
    for r, x in zip(reqs, xs):
        single = (gpu if r.served_by == "GPU.0" else cpu)(x)[0]
        np.testing.assert_allclose(r.get_output_tensor(0), single, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(r.get_output_tensor(0), cpu(x)[0], rtol=1e-4, atol=1e-6)
    cm.release()
