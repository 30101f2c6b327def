"""AUTO: device selection, the CPU helper and the hot swap, startup / runtime fallback, CACHE_DIR,
CUMULATIVE_THROUGHPUT.

The helper is the candidate whose DEVICE_TYPE is "cpu": the real CPU, or a MOCK with
MOCK_DEVICE_TYPE="cpu" where the test must hold the helper's requests in flight (``pause()``).
Accelerator compiles are held with ``pause_compile()``; ``wait_ready()`` / ``wait_helper_released()``
block until the swap and the release happen. No durations are asserted: orders, sets and counts.
"""
from __future__ import annotations

import numpy as np
import pytest

from hetero.devices.mock import MockDevice
from hetero.devices.registry import DeviceRegistry, parse
from hetero.errors import DeviceError, DeviceStringError
from hetero.multi import AutoCompiledModel, select_devices
from hetero.runtime.core import prepare_graph

from test_multi_fixtures import core, finish, mock, reference, run_async, sample, softmax_model  # noqa: F401
from onnx import TensorProto

MODEL = softmax_model()


def graph_of(core, model=MODEL):
    return prepare_graph(core.read_model(model))


def texts(cm) -> list[str]:
    return [t for _, t in cm.events]


# ---- selection ------------------------------------------------------------------------------------------

class _Fake(MockDevice):
    family = "FAKE"

    def __init__(self, index, kind):
        super().__init__(index)
        self.name = f"FAKE.{index}"
        self._config["MOCK_DEVICE_TYPE"] = kind


def test_default_order_discrete_integrated_other_cpu(core, monkeypatch):
    """Without a list: every real device by auto_priority (discovery order among equals)."""
    monkeypatch.setenv("HETERO_DISABLE_OPENCL", "1")
    reg = DeviceRegistry()
    kinds = ["cpu-opencl", "mock", "integrated", "discrete", "discrete"]
    reg.register_family("FAKE", lambda: [_Fake(i, k) for i, k in enumerate(kinds)])
    core._registry = reg
    sel = select_devices(core, graph_of(core), parse("AUTO"), {})
    assert sel.candidates == ("FAKE.3", "FAKE.4", "FAKE.2", "FAKE.0", "FAKE.1", "CPU")
    assert sel.device == "FAKE.3"
    sel = select_devices(core, graph_of(core), parse("AUTO:-FAKE.3,-CPU"), {})
    assert sel.candidates == ("FAKE.4", "FAKE.2", "FAKE.0", "FAKE.1")


def test_default_order_on_this_machine(core):
    sel = select_devices(core, graph_of(core), parse("AUTO"), {})
    expected = sorted(core.available_devices, key=lambda n: -core._registry.get(n).auto_priority)
    assert list(sel.candidates) == expected and sel.candidates[-1] == "CPU"
    if len(expected) > 1:
        assert select_devices(core, graph_of(core), parse("AUTO:-CPU"), {}).candidates == tuple(expected[:-1])


def test_explicit_order_is_kept(core):
    mock(core, 0).set_property({"MOCK_DEVICE_TYPE": "discrete"})
    assert select_devices(core, graph_of(core), parse("AUTO:CPU,MOCK.1,MOCK.0"), {}).candidates == \
        ("CPU", "MOCK.1", "MOCK.0")
    assert select_devices(core, graph_of(core), parse("AUTO"), {"MULTI_DEVICE_PRIORITIES": "MOCK.1,CPU"}).candidates \
        == ("MOCK.1", "CPU")


def test_skips_devices_that_cannot_run_the_model(core):
    mock(core, 0).set_property({"MOCK_SUPPORTED_OPS": "MatMul,Add"})
    sel = select_devices(core, graph_of(core), parse("AUTO:MOCK.0,MOCK.1,CPU"), {})
    assert sel.candidates == ("MOCK.1", "CPU")
    assert sel.skipped == (("MOCK.0", "cannot run 1 node(s), e.g. sm: Softmax: not in MOCK.0's op set"),)
    cm = core.compile_model(MODEL, "AUTO:MOCK.0,MOCK.1,CPU", {"ENABLE_STARTUP_FALLBACK": False})
    assert cm.get_property("EXECUTION_DEVICES") == ["MOCK.1"]


def test_skips_devices_lacking_the_precision(core):
    f16 = softmax_model(dtype=TensorProto.FLOAT16)
    sel = select_devices(core, graph_of(core, f16), parse("AUTO:MOCK.0,CPU"), {})
    assert sel.candidates == ("CPU",)
    assert sel.skipped[0][0] == "MOCK.0" and "lacks precision FP16 ('x' is float16)" in sel.skipped[0][1]
    sel = select_devices(core, graph_of(core), parse("AUTO:MOCK.0,CPU"), {"INFERENCE_PRECISION_HINT": "f16"})
    assert sel.candidates == ("CPU",) and "INFERENCE_PRECISION_HINT=f16" in sel.skipped[0][1]
    mock(core, 0).set_property({"MOCK_CAPABILITIES": "FP32,FP16"})
    assert select_devices(core, graph_of(core, f16), parse("AUTO:MOCK.0,CPU"), {}).candidates == ("MOCK.0", "CPU")


def test_no_usable_device(core):
    mock(core, 0).set_property({"MOCK_SUPPORTED_OPS": "MatMul"})
    with pytest.raises(DeviceError, match="AUTO:MOCK.0: no device can run model 'tiny': MOCK.0: cannot run 2"):
        core.compile_model(MODEL, "AUTO:MOCK.0")
    with pytest.raises(DeviceStringError, match="unknown device '-MOCK.7'"):
        core.compile_model(MODEL, "AUTO:-MOCK.7")


# ---- startup: helper and hot swap ----------------------------------------------------------------------

def test_hot_swap_with_a_2s_accelerator_compile(core):
    """The acceptance case: the accelerator takes 2 s to compile. compile_model returns at once; the
    first results come from the CPU; once the accelerator is ready every new request goes to it; no
    request is lost; the CPU model is released."""
    cm = core.compile_model(MODEL, "AUTO:MOCK.0,CPU", {"DEVICE_PROPERTIES": {"MOCK.0": {"MOCK_COMPILE_DELAY_MS": 2000}}})
    assert isinstance(cm, AutoCompiledModel)
    assert cm.get_property("EXECUTION_DEVICES") == ["(CPU)"]
    served, reqs, xs = [], [], []
    for i in range(3):  # first results: long before the accelerator can be ready
        r = cm.create_infer_request()
        r.infer({"x": sample(i)})
        served.append(r.served_by)
        np.testing.assert_allclose(r.get_output_tensor(0), reference(sample(i)), rtol=1e-5)
    assert served == ["CPU"] * 3
    i = 3
    while not cm.wait_ready(0.1):  # keep requests coming (async, unchecked until the end) while it compiles
        rs, x = run_async(cm, 2, start=i)
        reqs += rs
        xs += x
        i += 2
    after, ax = run_async(cm, 4, start=i)
    served += finish(reqs + after, xs + ax)
    first_accel = served.index("MOCK.0")
    assert set(served[:first_accel]) == {"CPU"} and set(served[first_accel:]) == {"MOCK.0"}
    assert served[-4:] == ["MOCK.0"] * 4
    assert cm.get_property("EXECUTION_DEVICES") == ["MOCK.0"]
    assert cm.wait_helper_released(10) and cm.helper_released
    counts = cm.get_property("MULTI_SERVED_REQUESTS")
    assert counts == {"CPU": served.count("CPU"), "MOCK.0": served.count("MOCK.0")} and sum(counts.values()) == i + 4
    t = texts(cm)
    order = ["MOCK.0 compiling in the background", "helper CPU compiled; serving from CPU until MOCK.0 is ready",
             "MOCK.0 ready; new requests go to MOCK.0; CPU finishes its in-flight requests", "CPU released"]
    assert [x for x in t if x in order] == order


def test_helper_in_flight_requests_finish_on_the_helper(core):
    mock(core, 1).set_property({"MOCK_DEVICE_TYPE": "cpu"})
    mock(core, 0).pause_compile()
    cm = core.compile_model(MODEL, "AUTO:MOCK.0,MOCK.1")
    assert cm.get_property("EXECUTION_DEVICES") == ["(MOCK.1)"]
    mock(core, 1).pause()
    held, hx = run_async(cm, 1)  # in flight on the helper (one worker: LATENCY)
    queued, qx = run_async(cm, 2, start=1)  # waiting in the queue
    assert [d.device for d in cm.dispatch_log] == ["MOCK.1"]
    mock(core, 0).resume_compile()
    assert cm.wait_ready(10)
    assert finish(queued, qx) == ["MOCK.0", "MOCK.0"]  # queued requests went to the accelerator
    assert not cm.helper_released  # the helper still has one in flight
    later, lx = run_async(cm, 2, start=3)
    assert finish(later, lx) == ["MOCK.0", "MOCK.0"]
    mock(core, 1).resume()
    assert finish(held, hx) == ["MOCK.1"]
    assert cm.wait_helper_released(10)
    assert cm.get_property("MULTI_SERVED_REQUESTS") == {"MOCK.1": 1, "MOCK.0": 4}
    assert cm.get_property("EXECUTION_DEVICES") == ["MOCK.0"]


def test_startup_fallback_off_waits_for_the_accelerator(core):
    cm = core.compile_model(MODEL, "AUTO:MOCK.0,CPU", {"ENABLE_STARTUP_FALLBACK": False,
                                                       "DEVICE_PROPERTIES": {"MOCK.0": {"MOCK_COMPILE_DELAY_MS": 50}}})
    assert cm.get_property("EXECUTION_DEVICES") == ["MOCK.0"]
    assert cm.get_property("ENABLE_STARTUP_FALLBACK") is False
    reqs, xs = run_async(cm, 3)
    assert finish(reqs, xs) == ["MOCK.0"] * 3
    assert cm.get_property("MULTI_SERVED_REQUESTS") == {"MOCK.0": 3}
    assert not any("helper" in t for t in texts(cm))


def test_no_helper_when_the_accelerator_is_cached(core, tmp_path):
    cfg = {"CACHE_DIR": str(tmp_path), "DEVICE_PROPERTIES": {"MOCK.0": {"MOCK_COMPILE_DELAY_MS": 20}}}
    first = core.compile_model(MODEL, "AUTO:MOCK.0,CPU", cfg)
    assert first.get_property("EXECUTION_DEVICES") == ["(CPU)"]  # nothing cached yet: the helper serves
    first.wait_ready(10)
    second = core.compile_model(MODEL, "AUTO:MOCK.0,CPU", cfg)
    assert texts(second) == ["MOCK.0 compiled (from CACHE_DIR); serving from MOCK.0"]
    assert second.get_property("EXECUTION_DEVICES") == ["MOCK.0"]
    assert second.get_property("LOADED_FROM_CACHE") is True
    r = second.create_infer_request()
    r.infer({"x": sample(1)})
    assert r.served_by == "MOCK.0"


def test_accelerator_compile_failure_stays_on_cpu_with_a_warning(core):
    with pytest.warns(RuntimeWarning, match="AUTO:MOCK.0,CPU: MOCK.0 failed to compile .*; staying on CPU"):
        cm = core.compile_model(MODEL, "AUTO:MOCK.0,CPU", {"DEVICE_PROPERTIES": {"MOCK.0": {"MOCK_FAIL_COMPILE": True}}})
        assert cm.wait_ready(10)
    assert cm.get_property("EXECUTION_DEVICES") == ["CPU"]
    reqs, xs = run_async(cm, 3)
    assert finish(reqs, xs) == ["CPU"] * 3
    assert not cm.helper_released


def test_accelerator_failure_tries_the_next_candidate(core):
    mock(core, 0).set_property({"MOCK_FAIL_COMPILE": True})
    with pytest.warns(RuntimeWarning, match="MOCK.0 failed to compile .*; trying MOCK.1"):
        cm = core.compile_model(MODEL, "AUTO:MOCK.0,MOCK.1,CPU")
        assert cm.wait_ready(10)
    assert cm.get_property("EXECUTION_DEVICES") == ["MOCK.1"]
    assert cm.wait_helper_released(10)


def test_neither_the_accelerator_nor_the_helper_compiles(core):
    mock(core, 0).set_property({"MOCK_FAIL_COMPILE": True})
    mock(core, 1).set_property({"MOCK_FAIL_COMPILE": True, "MOCK_DEVICE_TYPE": "cpu"})
    with pytest.warns(RuntimeWarning, match="MOCK.0 failed to compile"):
        with pytest.raises(DeviceError, match=r"AUTO:MOCK.0,MOCK.1: neither MOCK.0 nor the helper MOCK.1 compiled "
                           r"model .*MOCK.1: DeviceError: .*MOCK_FAIL_COMPILE.*; MOCK.0: DeviceError: "):
            core.compile_model(MODEL, "AUTO:MOCK.0,MOCK.1")


def test_cpu_first_or_alone_needs_no_helper(core):
    for device in ("AUTO:CPU,MOCK.0", "AUTO:CPU"):
        cm = core.compile_model(MODEL, device)
        assert cm.get_property("EXECUTION_DEVICES") == ["CPU"]
        assert cm.wait_ready(0)
        np.testing.assert_allclose(cm(sample(4))[0], reference(sample(4)), rtol=1e-5)


def test_auto_on_this_machine(core):
    cm = core.compile_model(MODEL, "AUTO")
    cm.wait_ready(60)
    assert cm.get_property("EXECUTION_DEVICES") == [cm.selection.device]
    reqs, xs = run_async(cm, 4)
    assert set(finish(reqs, xs)) == {cm.selection.device}


def test_release_while_the_accelerator_compiles(core):
    mock(core, 0).pause_compile()
    cm = core.compile_model(MODEL, "AUTO:MOCK.0,CPU")
    np.testing.assert_allclose(cm(sample(0))[0], reference(sample(0)), rtol=1e-5)
    cm.release()
    mock(core, 0).resume_compile()
    assert cm.wait_ready(10)
    assert cm._sched.devices == ["CPU"]  # the late accelerator was released, not added
    with pytest.raises(DeviceError, match="released"):
        cm(sample(1))


# ---- runtime fallback ------------------------------------------------------------------------------------

def test_runtime_fallback_to_the_next_candidate(core):
    cm = core.compile_model(MODEL, "AUTO:MOCK.0,CPU", {"ENABLE_STARTUP_FALLBACK": False, "DEVICE_PROPERTIES": {
        "MOCK.0": {"MOCK_FAIL_AFTER": 2}}})
    served = []
    for i in range(6):
        r = cm.create_infer_request()
        r.infer({"x": sample(i)})
        np.testing.assert_allclose(r.get_output_tensor(0), reference(sample(i)), rtol=1e-5)
        served.append(r.served_by)
    assert served == ["MOCK.0", "MOCK.0", "CPU", "CPU", "CPU", "CPU"]
    assert "runtime fallback: compiled CPU; serving from it" in texts(cm)
    assert cm.get_property("EXECUTION_DEVICES") == ["CPU"]


def test_runtime_fallback_while_the_helper_serves(core):
    """The helper fails before the accelerator is ready: its requests wait for the accelerator."""
    mock(core, 1).set_property({"MOCK_DEVICE_TYPE": "cpu"})
    mock(core, 0).pause_compile()
    cm = core.compile_model(MODEL, "AUTO:MOCK.0,MOCK.1", {"DEVICE_PROPERTIES": {"MOCK.1": {"MOCK_FAIL_AFTER": 1}}})
    reqs, xs = run_async(cm, 1)
    assert finish(reqs, xs) == ["MOCK.1"]
    more, mx = run_async(cm, 3, start=1)  # MOCK.1 fails on the first: out; all wait for MOCK.0
    mock(core, 0).resume_compile()
    assert finish(more, mx) == ["MOCK.0"] * 3


def test_runtime_fallback_off(core):
    cm = core.compile_model(MODEL, "AUTO:MOCK.0,CPU", {"ENABLE_STARTUP_FALLBACK": False,
                                                       "ENABLE_RUNTIME_FALLBACK": False,
                                                       "DEVICE_PROPERTIES": {"MOCK.0": {"MOCK_FAIL_AFTER": 0}}})
    with pytest.raises(DeviceError, match="MOCK.0: injected failure"):
        cm(sample(0))


# ---- CUMULATIVE_THROUGHPUT -----------------------------------------------------------------------------

def test_cumulative_throughput_is_multi_over_the_selection(core):
    mock(core, 0).set_property({"MOCK_OPTIMAL_REQUESTS": 3})
    mock(core, 2).set_property({"MOCK_SUPPORTED_OPS": "MatMul"})  # cannot run the model: left out
    cm = core.compile_model(MODEL, "AUTO:MOCK.0,MOCK.2,MOCK.1", {"PERFORMANCE_HINT": "CUMULATIVE_THROUGHPUT",
                                                                 "SCHEDULE_POLICY": "ROUND_ROBIN"})
    assert cm.get_property("EXECUTION_DEVICES") == ["MOCK.0", "MOCK.1"]
    assert cm.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS") == 4
    assert cm.selection.skipped[0][0] == "MOCK.2"
    for i in range(4):
        cm(sample(i))
    assert [d.device for d in cm.dispatch_log] == ["MOCK.0", "MOCK.1", "MOCK.0", "MOCK.1"]


@pytest.mark.parametrize("precision", ["f32", "f16"])
def test_no_helper_when_the_real_gpu_is_cached(core, tmp_path, precision):
    """The OpenCL plugin's is_cached: a second AUTO compile with a warm CACHE_DIR serves from the GPU
    at once (no CPU helper)."""
    if not any(d.startswith("GPU") for d in core.available_devices):
        pytest.skip("no OpenCL device (pip install pocl-binary-distribution)")
    gpu = core._registry.get("GPU")
    cfg = {"CACHE_DIR": str(tmp_path), "DEVICE_PROPERTIES": {"GPU": {"INFERENCE_PRECISION_HINT": precision}}}
    graph = prepare_graph(core.read_model(MODEL))
    dev_cfg = {"CACHE_DIR": str(tmp_path), "INFERENCE_PRECISION_HINT": precision}
    assert not gpu.is_cached(graph, dev_cfg)
    first = core.compile_model(MODEL, "AUTO:GPU,CPU", cfg)
    assert first.wait_ready(120)
    assert gpu.is_cached(graph, dev_cfg)
    second = core.compile_model(MODEL, "AUTO:GPU,CPU", cfg)
    assert second.get_property("EXECUTION_DEVICES") == [gpu.name]
    r = second.create_infer_request()
    r.infer({"x": sample(1)})
    assert r.served_by == gpu.name
    np.testing.assert_allclose(r.get_output_tensor(0), reference(sample(1)), rtol=2e-2, atol=2e-3)
