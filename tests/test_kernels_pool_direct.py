"""Strided pools take the pad-free path (pool.py ``_window_reduce_direct``): windows hanging over the
padding or (ceil_mode) past the end, dilations, uneven pads -- all equal to ONNX's reference evaluator."""
import itertools

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import hetero.devices.cpu.kernels.pool as PL

CASES = [c for c in itertools.product(
    ["MaxPool", "AveragePool"], [(5, 7), (8, 9)], [(3, 3), (3, 2)], [(2, 2), (3, 2)],
    [(0, 0, 0, 0), (1, 1, 1, 1), (0, 1, 1, 0)], [0, 1], [0, 1], [(1, 1), (2, 1)])
    if not (c[0] == "AveragePool" and c[7] != (1, 1)) and not (c[0] == "MaxPool" and c[6])]


def _reference(op, x, attrs):
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return ReferenceEvaluator(helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])).run(None, {"x": x})[0]


@pytest.mark.parametrize("op,hw,k,s,p,ceil,cip,dil", CASES)
def test_strided_pool_matches_reference(op, hw, k, s, p, ceil, cip, dil):
    attrs = dict(kernel_shape=list(k), strides=list(s), pads=list(p), ceil_mode=ceil)
    if op == "AveragePool":
        attrs["count_include_pad"] = cip
    else:
        attrs["dilations"] = list(dil)
    x = np.random.default_rng(len(str(attrs))).standard_normal((2, 3) + hw).astype(np.float32)
    got = (PL.max_pool if op == "MaxPool" else PL.average_pool)(x, **attrs)
    np.testing.assert_allclose(got, _reference(op, x, attrs), rtol=1e-5, atol=1e-6)


def test_tap_range_traced_example():
    # MaxPool 3x3 s2 pads 1 on 112 rows -> 56 outputs (the docstring's example)
    assert [PL._tap_range(112, 1, 2, 1, 56, t) for t in range(3)] == [(1, 56, 1), (0, 56, 0), (0, 56, 1)]
