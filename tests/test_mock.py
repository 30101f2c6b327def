"""MOCK devices: real results from the CPU kernels, shaped by properties (op set, failure injection,
optimal requests, device type, capabilities, compile cache) and test gates (pause / pause_compile)."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from hetero.errors import DeviceError, InferError, PropertyError, UnsupportedOpError
from hetero.multi import select_devices
from hetero.devices.registry import parse
from hetero.runtime.core import prepare_graph

from test_multi_fixtures import core, mock, reference, sample, softmax_model  # noqa: F401 - fixture

MODEL = softmax_model()


def test_results_are_real_and_equal_the_cpu(core):
    cpu = core.compile_model(MODEL, "CPU")
    m = core.compile_model(MODEL, "MOCK.2")
    for i in range(3):
        x = sample(i)
        np.testing.assert_array_equal(m(x)[0], cpu(x)[0])
        np.testing.assert_allclose(m(x)[0], reference(x), rtol=1e-5)
    assert m.create_infer_request().served_by is None
    r = m.create_infer_request()
    r.infer({"x": sample(0)})
    assert r.served_by == "MOCK.2"


def test_op_set_query_and_compile(core):
    mock(core, 1).set_property({"MOCK_SUPPORTED_OPS": "MatMul,Add"})
    assert core.query_model(MODEL, "MOCK.1") == {"mm": "MOCK.1", "add": "MOCK.1"}
    graph = prepare_graph(core.read_model(MODEL))
    assert mock(core, 1).query(graph)["sm"] == "Softmax: not in MOCK.1's op set"
    with pytest.raises(UnsupportedOpError, match="MOCK.1 cannot run 1 node\\(s\\): sm: Softmax: not in MOCK.1's op set"):
        core.compile_model(MODEL, "MOCK.1")


def test_fail_after_n_counts_inferences(core):
    cm = core.compile_model(MODEL, "MOCK.0", {"MOCK_FAIL_AFTER": 3})  # a per-compile override
    for i in range(3):
        cm(sample(i))
    with pytest.raises(DeviceError, match="MOCK.0: injected failure \\(inference 4 > MOCK_FAIL_AFTER=3\\)"):
        cm(sample(3))
    assert mock(core, 0).get_property("MOCK_FAIL_AFTER") == -1  # the device itself is untouched
    assert mock(core, 0).inferences == 4


def test_fail_after_set_live_breaks_a_running_model(core):
    cm = core.compile_model(MODEL, "MOCK.0")
    cm(sample(0))
    mock(core, 0).set_property({"MOCK_FAIL_AFTER": 0})  # counting restarts at the change
    with pytest.raises(DeviceError, match="injected failure"):
        cm(sample(1))


def test_fail_probability_is_seeded(core):
    def pattern():
        mock(core, 3).set_property({"MOCK_FAIL_PROBABILITY": 0.5, "MOCK_SEED": 7})
        cm = core.compile_model(MODEL, "MOCK.3")
        out = []
        for i in range(24):
            try:
                cm(sample(i))
                out.append(0)
            except DeviceError:
                out.append(1)
        return out

    first = pattern()
    mock(core, 3).reset()
    assert pattern() == first
    assert 0 < sum(first) < 24


def test_fail_compile_and_bad_values(core):
    with pytest.raises(DeviceError, match="MOCK.0: compile failed \\(injected by MOCK_FAIL_COMPILE\\)"):
        core.compile_model(MODEL, "MOCK.0", {"MOCK_FAIL_COMPILE": True})
    with pytest.raises(PropertyError, match="MOCK_FAIL_PROBABILITY"):
        mock(core, 0).set_property({"MOCK_FAIL_PROBABILITY": 2})
    with pytest.raises(PropertyError, match="MOCK_LATENCY_MS"):
        mock(core, 0).set_property({"MOCK_LATENCY_MS": "slow"})


@pytest.mark.parametrize("dtype, priority", [("discrete", 30), ("integrated", 20), ("cpu-opencl", 10),
                                             ("mock", 5), ("cpu", 0)])
def test_device_type_sets_auto_priority(core, dtype, priority):
    mock(core, 0).set_property({"MOCK_DEVICE_TYPE": dtype})
    assert core.get_property("MOCK.0", "DEVICE_TYPE") == dtype
    assert mock(core, 0).auto_priority == priority


def test_capabilities(core):
    assert core.get_property("MOCK.0", "OPTIMIZATION_CAPABILITIES") == ["FP32"]
    mock(core, 0).set_property({"MOCK_CAPABILITIES": "fp32, fp16"})
    assert core.get_property("MOCK.0", "OPTIMIZATION_CAPABILITIES") == ["FP32", "FP16"]


def test_auto_never_picks_a_mock_unless_named(core):
    mock(core, 0).set_property({"MOCK_DEVICE_TYPE": "discrete"})  # would outrank every real device
    assert not any(n.startswith("MOCK") for n in core.available_devices)
    graph = prepare_graph(core.read_model(MODEL))
    assert not any(n.startswith("MOCK") for n in select_devices(core, graph, parse("AUTO"), {}).candidates)
    assert select_devices(core, graph, parse("AUTO:MOCK.0,CPU"), {}).candidates == ("MOCK.0", "CPU")


def test_pause_holds_inference_until_resume(core):
    cm = core.compile_model(MODEL, "MOCK.0")
    mock(core, 0).pause()
    r = cm.create_infer_request()
    r.start_async({"x": sample(5)})
    assert not r.wait_for(20)  # held at the gate: it cannot have finished
    mock(core, 0).resume()
    r.wait()
    np.testing.assert_allclose(r.get_output_tensor(0), reference(sample(5)), rtol=1e-5)


def test_pause_compile_holds_compile(core):
    mock(core, 2).pause_compile()
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("cm", core.compile_model(MODEL, "MOCK.2")))
    t.start()
    t.join(0.05)
    assert t.is_alive() and "cm" not in out
    mock(core, 2).resume_compile()
    t.join()
    assert out["cm"].get_property("EXECUTION_DEVICES") == ["MOCK.2"]


def test_cache_dir_marker(core, tmp_path):
    cfg = {"CACHE_DIR": str(tmp_path)}
    graph = prepare_graph(core.read_model(MODEL))
    assert not mock(core, 1).is_cached(graph, cfg)
    first = core.compile_model(MODEL, "MOCK.1", cfg)
    assert first.get_property("LOADED_FROM_CACHE") is False
    assert mock(core, 1).is_cached(graph, cfg)
    assert not mock(core, 2).is_cached(graph, cfg)  # per device
    second = core.compile_model(MODEL, "MOCK.1", dict(cfg, MOCK_COMPILE_DELAY_MS=60_000))  # the delay is skipped
    assert second.get_property("LOADED_FROM_CACHE") is True
    np.testing.assert_allclose(second(sample(1))[0], reference(sample(1)), rtol=1e-5)


def test_cache_key_covers_attribute_values(core):
    """Softmax(axis=-1) and Softmax(axis=0) are different models: one's marker must not serve the other."""
    import dataclasses

    from hetero.devices.mock import graph_fingerprint

    graph = prepare_graph(core.read_model(MODEL))
    nodes = tuple(dataclasses.replace(n, attrs={**n.attrs, "axis": 0}) if n.op_type == "Softmax" else n
                  for n in graph.nodes)
    other = dataclasses.replace(graph, nodes=nodes)
    assert graph_fingerprint(graph) == graph_fingerprint(prepare_graph(core.read_model(MODEL)))
    assert graph_fingerprint(other) != graph_fingerprint(graph)


def test_bad_number_names_the_accepted_range(core):
    with pytest.raises(PropertyError, match=r"MOCK_FAIL_PROBABILITY: expected a number in \[0, 1\], got 2"):
        mock(core, 0).set_property({"MOCK_FAIL_PROBABILITY": 2})
    with pytest.raises(PropertyError, match="MOCK_LATENCY_MS: expected a number >= 0, got -1"):
        mock(core, 0).set_property({"MOCK_LATENCY_MS": -1})


def test_infer_error_from_bad_data_names_the_mock(core):
    cm = core.compile_model(MODEL, "MOCK.0")
    with pytest.raises(InferError, match="expected shape"):
        cm(np.zeros((2, 4), np.float32))
