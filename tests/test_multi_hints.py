"""Performance hints on every device and on MULTI / AUTO / BATCH: OPTIMAL_NUMBER_OF_INFER_REQUESTS
follows PERFORMANCE_HINT (LATENCY -> 1; THROUGHPUT -> the device's optimum; CUMULATIVE_THROUGHPUT ->
THROUGHPUT per device, summed over AUTO's selection) and PERFORMANCE_HINT_NUM_REQUESTS caps it.
"""
from __future__ import annotations

import os

import pytest

from test_multi_fixtures import core, gpu_available, mock, softmax_model  # noqa: F401

MODEL = softmax_model()
CORES = os.cpu_count() or 1


def optimal(core, device, config) -> int:
    cm = core.compile_model(MODEL, device, config)
    n = cm.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
    cm.release()
    return n


@pytest.mark.parametrize("config, expected", [
    ({}, 1),
    ({"PERFORMANCE_HINT": "LATENCY"}, 1),
    ({"PERFORMANCE_HINT": "THROUGHPUT"}, 3),
    ({"PERFORMANCE_HINT": "CUMULATIVE_THROUGHPUT"}, 3),
    ({"PERFORMANCE_HINT": "THROUGHPUT", "PERFORMANCE_HINT_NUM_REQUESTS": 2}, 2),
    ({"PERFORMANCE_HINT": "THROUGHPUT", "PERFORMANCE_HINT_NUM_REQUESTS": 9}, 3),
    ({"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 5}, 5),
])
def test_mock_device(core, config, expected):
    mock(core, 0).set_property({"MOCK_OPTIMAL_REQUESTS": 3})
    assert optimal(core, "MOCK.0", config) == expected


@pytest.mark.parametrize("config, expected", [
    ({"PERFORMANCE_HINT": "LATENCY"}, 1),
    ({"PERFORMANCE_HINT": "THROUGHPUT"}, CORES),
    ({"PERFORMANCE_HINT": "CUMULATIVE_THROUGHPUT"}, CORES),
    ({"PERFORMANCE_HINT": "THROUGHPUT", "PERFORMANCE_HINT_NUM_REQUESTS": 1}, 1),
])
def test_cpu(core, config, expected):
    assert optimal(core, "CPU", config) == expected


def test_gpu(core):
    if not gpu_available(core):
        pytest.skip("no GPU device (OpenCL platform) available")
    assert optimal(core, "GPU", {"PERFORMANCE_HINT": "LATENCY"}) == 1
    thr = optimal(core, "GPU", {"PERFORMANCE_HINT": "THROUGHPUT"})
    assert thr >= 1
    assert optimal(core, "GPU", {"PERFORMANCE_HINT": "THROUGHPUT", "PERFORMANCE_HINT_NUM_REQUESTS": 1}) == 1


@pytest.mark.parametrize("device, config, expected", [
    ("MULTI:MOCK.0,MOCK.1", {}, 3 + 2),  # MULTI's default hint is THROUGHPUT
    ("MULTI:MOCK.0,MOCK.1", {"PERFORMANCE_HINT": "THROUGHPUT"}, 5),
    ("MULTI:MOCK.0,MOCK.1", {"PERFORMANCE_HINT": "CUMULATIVE_THROUGHPUT"}, 5),
    ("MULTI:MOCK.0,MOCK.1", {"PERFORMANCE_HINT": "LATENCY"}, 1 + 1),
    ("MULTI:MOCK.0,MOCK.1", {"PERFORMANCE_HINT_NUM_REQUESTS": 4}, 4),
    ("MULTI:MOCK.0(6),MOCK.1", {"PERFORMANCE_HINT": "LATENCY"}, 6 + 1),
    ("MULTI:MOCK.0,MOCK.1", {"DEVICE_PROPERTIES": {"MOCK.1": {"PERFORMANCE_HINT": "LATENCY"}}}, 3 + 1),
    ("AUTO:MOCK.0,MOCK.1", {}, 1),  # AUTO's default is LATENCY
    ("AUTO:MOCK.0,MOCK.1", {"PERFORMANCE_HINT": "THROUGHPUT"}, 3),  # the accelerator's optimum
    ("AUTO:MOCK.0,MOCK.1", {"PERFORMANCE_HINT": "THROUGHPUT", "PERFORMANCE_HINT_NUM_REQUESTS": 2}, 2),
    ("AUTO:MOCK.0,MOCK.1", {"PERFORMANCE_HINT": "CUMULATIVE_THROUGHPUT"}, 5),
    ("AUTO:MOCK.0,MOCK.1", {"PERFORMANCE_HINT": "CUMULATIVE_THROUGHPUT", "PERFORMANCE_HINT_NUM_REQUESTS": 4}, 4),
    ("BATCH:MOCK.0(4)", {}, 4),
    ("BATCH:MOCK.0(4)", {"PERFORMANCE_HINT": "THROUGHPUT"}, 4 * 3),  # a batch per batch worker
    ("BATCH:MOCK.0(4)", {"PERFORMANCE_HINT": "THROUGHPUT", "PERFORMANCE_HINT_NUM_REQUESTS": 6}, 6),
])
def test_virtual_devices(core, device, config, expected):
    mock(core, 0).set_property({"MOCK_OPTIMAL_REQUESTS": 3})
    mock(core, 1).set_property({"MOCK_OPTIMAL_REQUESTS": 2})
    assert optimal(core, device, config) == expected


def test_hint_is_reported_and_forwarded(core):
    cm = core.compile_model(MODEL, "MULTI:MOCK.0,CPU", {"PERFORMANCE_HINT": "CUMULATIVE_THROUGHPUT"})
    assert cm.get_property("PERFORMANCE_HINT") == "CUMULATIVE_THROUGHPUT"
    inner = {n: d.compiled.get_property("PERFORMANCE_HINT") for n, d in cm._sched._devices.items()}
    assert inner == {"MOCK.0": "THROUGHPUT", "CPU": "THROUGHPUT"}
    auto = core.compile_model(MODEL, "AUTO:MOCK.0,CPU", {"PERFORMANCE_HINT": "THROUGHPUT"})
    assert auto.get_property("PERFORMANCE_HINT") == "THROUGHPUT"
    auto.wait_ready(10)
    assert auto._sched._devices["MOCK.0"].compiled.get_property("PERFORMANCE_HINT") == "THROUGHPUT"
