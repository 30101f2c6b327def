"""Random affinities on real models (onnx's light SqueezeNet, ResNet-50, Inception v1): every split
is a valid Plan and HETERO's outputs equal the single-device outputs.

The light models' weights are constant (0.02); they are replaced by seeded random weights (He scale)
so that a mis-wired subgraph would show in the outputs."""
from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import hetero
from hetero.devices.mock import discover as mock_devices
from hetero.partition import split
from hetero.runtime.core import prepare_graph

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
MODELS = ("squeezenet", "resnet50", "inception_v1")


@lru_cache(maxsize=None)
def model(name: str):
    """(optimized graph with random weights, input feed, CPU reference output)."""
    path = os.path.join(LIGHT, f"light_{name}.onnx")
    if not os.path.exists(path):
        pytest.skip(f"{path} is not shipped with this onnx version")
    g = prepare_graph(hetero.read_model(path))
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    inits = {}
    for k, v in g.initializers.items():
        if v.dtype == np.float32 and v.ndim >= 2:  # conv / gemm weights
            fan_in = int(np.prod(v.shape[1:]))
            inits[k] = (rng.standard_normal(v.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        elif v.dtype == np.float32 and v.ndim == 1:  # biases
            inits[k] = (rng.standard_normal(v.shape) * 0.1).astype(np.float32)
        else:
            inits[k] = v
    g = g.replace(initializers=inits)
    x = rng.standard_normal(g.inputs[0].shape).astype(np.float32)
    feeds = {g.inputs[0].name: x}
    ref = hetero.Core().compile_model(g, "CPU")(feeds)[0]
    return g, feeds, ref


@lru_cache(maxsize=None)
def raw_model(name: str):
    return hetero.read_model(os.path.join(LIGHT, f"light_{name}.onnx"))


def devices() -> list[str]:
    core = hetero.Core()
    return ["CPU", "MOCK.0", "MOCK.1"] + [d for d in core.available_devices if d.startswith("GPU")][:1]


@st.composite
def placement(draw, n_nodes: int, devs: list[str]):
    """Per-node devices: uniformly random, or a few contiguous runs in graph order (realistic splits)."""
    if draw(st.booleans()):
        return draw(st.lists(st.sampled_from(devs), min_size=n_nodes, max_size=n_nodes))
    cuts = sorted(draw(st.lists(st.integers(1, n_nodes - 1), min_size=1, max_size=5, unique=True)))
    seg = draw(st.lists(st.sampled_from(devs), min_size=len(cuts) + 1, max_size=len(cuts) + 1))
    out, start = [], 0
    for d, end in zip(seg, cuts + [n_nodes]):
        out += [d] * (end - start)
        start = end
    return out


@pytest.mark.parametrize("name", ["squeezenet", pytest.param("resnet50", marks=pytest.mark.slow),
                                  pytest.param("inception_v1", marks=pytest.mark.slow)])
@settings(max_examples=2, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_affinity_matches_single_device(name, data):
    g, feeds, ref = model(name)
    devs = devices()
    chosen = data.draw(placement(len(g.nodes), devs), label="devices")
    affinity = {n.name: d for n, d in zip(g.nodes, chosen)}
    try:
        cm = hetero.Core().compile_model(g, "HETERO:" + ",".join(devs), {"AFFINITY": affinity})
        plan = cm.plan.check()
        assert {s.device for s in plan.subgraphs} == set(chosen)
        assert sum(len(s.nodes) for s in plan.subgraphs) == len(g.nodes)
        out = cm(feeds)[0]
    finally:
        for m in mock_devices():
            m.reset()
    rtol = 1e-3 if any(d.startswith("GPU") for d in chosen) else 1e-5
    np.testing.assert_allclose(out, ref, rtol=rtol, atol=1e-6)


@pytest.mark.parametrize("name", MODELS + ("inception_v2", "densenet121"))
@settings(max_examples=5, deadline=None, derandomize=True)
@given(data=st.data())
def test_random_split_of_raw_model_is_a_valid_plan(name, data):
    """Unoptimized graphs (hundreds of nodes, ConstantOfShape weights): split + check only."""
    g = raw_model(name)
    chosen = data.draw(placement(len(g.nodes), ["CPU", "GPU.0", "MOCK.0"]), label="devices")
    plan = split(g, {n.name: d for n, d in zip(g.nodes, chosen)}).check()
    assert [s.id for s in plan.subgraphs] == list(range(len(plan.subgraphs)))
