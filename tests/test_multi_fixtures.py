"""Shared models and fixtures for the MULTI / AUTO / BATCH / MOCK tests (imported by them; no tests here).

SOFTMAX_MODEL, one sample per request::

    x[1,4] ──MatMul(W[4,3])──▶ m ──Add(B[3])──▶ a ──Softmax──▶ y[1,3]

Every op runs on the CPU, on MOCK devices and on the OpenCL GPU; the numpy reference is
``softmax(x @ W + B)``. Requests use distinct inputs (``sample(i)``) so a result given to the wrong
request would be caught.
"""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import hetero

W = np.linspace(-1.0, 1.0, 12, dtype=np.float32).reshape(4, 3)
B = np.array([0.1, 0.2, 0.3], np.float32)


def softmax_model(batch=1, name: str = "tiny", reshape_to=None, dtype=TensorProto.FLOAT):
    """The model above; ``batch`` may be symbolic ("N"); ``reshape_to`` inserts a Reshape to that
    constant shape before the Softmax (a model that pins its batch when it starts with 1)."""
    np_dt = np.float16 if dtype == TensorProto.FLOAT16 else np.float32
    x = helper.make_tensor_value_info("x", dtype, [batch, 4])
    y = helper.make_tensor_value_info("y", dtype, [batch, 3])
    inits = [helper.make_tensor("W", dtype, [4, 3], W.astype(np_dt).ravel().tolist()),
             helper.make_tensor("B", dtype, [3], B.astype(np_dt).tolist())]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["m"], name="mm"),
             helper.make_node("Add", ["m", "B"], ["a"], name="add")]
    last = "a"
    if reshape_to is not None:
        inits.append(helper.make_tensor("shape", TensorProto.INT64, [len(reshape_to)], list(reshape_to)))
        nodes.append(helper.make_node("Reshape", ["a", "shape"], ["r"], name="pin"))
        last = "r"
    nodes.append(helper.make_node("Softmax", [last], ["y"], name="sm"))
    g = helper.make_graph(nodes, name, [x], [y], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def reference(x: np.ndarray) -> np.ndarray:
    a = x.astype(np.float32) @ W + B
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sample(i: int) -> np.ndarray:
    """A distinct input per request index."""
    return (np.arange(4, dtype=np.float32).reshape(1, 4) - 1.5) * (0.25 + 0.1 * i)


@pytest.fixture
def core():
    """A Core with every MOCK device back at its defaults (before and after the test)."""
    c = hetero.Core()
    mocks = c._registry.family("MOCK")
    for d in mocks:
        d.reset()
    yield c
    for d in mocks:
        d.reset()


def mock(core, i: int):
    return core._registry.get(f"MOCK.{i}")


def gpu_available(core) -> bool:
    return any(n.startswith("GPU") for n in core.available_devices)


def run_async(cm, n: int, start: int = 0):
    """``n`` requests started at once on ``cm`` with inputs sample(start..): (requests, inputs)."""
    reqs = [cm.create_infer_request() for _ in range(n)]
    xs = [sample(start + i) for i in range(n)]
    for r, x in zip(reqs, xs):
        r.start_async({"x": x})
    return reqs, xs


def finish(reqs, xs, rtol=1e-5):
    """Wait for every request and check each got its own input's result; their served_by, in order."""
    for r in reqs:
        r.wait()
    for r, x in zip(reqs, xs):
        np.testing.assert_allclose(r.get_output_tensor(0), reference(x), rtol=rtol, atol=1e-6)
    return [r.served_by for r in reqs]
