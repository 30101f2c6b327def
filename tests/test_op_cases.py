"""Every device present runs the shared op-case table (tests/op_cases.py) against onnx.reference."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import hetero
from op_cases import CASES, compare, device_model, make_values, reference

CORE = hetero.Core()
DEVICES = ["CPU"] + [d for d in CORE.available_devices if d.startswith("GPU")]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_op_case(case, device):
    vals = make_values(case)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        expected = reference(case, vals)
    model, feeds = device_model(case, vals, expected)
    claimed = CORE.query_model(model, device)
    graph = hetero.read_model(model) if not isinstance(model, hetero.Graph) else model
    from hetero.runtime.core import prepare_graph

    nodes = [n.name for n in prepare_graph(graph).nodes]
    if not all(n in claimed for n in nodes):
        family = device.split(".")[0]
        if family in case.required:
            dev = CORE._registry.get(device)
            reasons = {k: v for k, v in dev.query(prepare_graph(graph)).items() if v is not True}
            pytest.fail(f"{device} must run {case.id} but does not claim it: {reasons}")
        pytest.skip(f"{device} does not run {case.op}")
    compiled = CORE.compile_model(model, device)
    got = compiled(feeds)
    compare(case, [got[i] for i in range(len(expected))], expected)
