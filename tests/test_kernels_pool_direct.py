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


# stride-1 "same" windows along W (output as wide as the input): flat shifted passes + exact border columns
SAME = [(op, kw, pw, sh, ceil) for op in ("MaxPool", "AveragePool")
        for kw, pw in [(3, (1, 1)), (3, (0, 2)), (3, (2, 0)), (2, (0, 1)), (2, (1, 0)), (5, (2, 2)), (1, (0, 0))]
        for sh in (1, 2) for ceil in (0, 1)]


def _ort(op, x, attrs):
    ort = pytest.importorskip("onnxruntime")
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, ir_version=8, opset_imports=[helper.make_opsetid("", 17)])
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


# oracle: ONNX Runtime (onnx's reference evaluator mis-sizes MaxPool with asymmetric pads, e.g. pads
# [1, 2, 1, 0] on 6x7 gives 5x8 instead of 6x7)
@pytest.mark.parametrize("op,kw,pw,sh,ceil", SAME)
def test_same_width_pool_matches_onnxruntime(op, kw, pw, sh, ceil):
    attrs = dict(kernel_shape=[3, kw], strides=[sh, 1], pads=[1, pw[0], 1, pw[1]], ceil_mode=ceil)
    if op == "AveragePool":
        attrs["count_include_pad"] = kw % 2
    x = np.random.default_rng(kw * 10 + sh).standard_normal((2, 3, 6, 7)).astype(np.float32)
    got = (PL.max_pool if op == "MaxPool" else PL.average_pool)(x, **attrs)
    assert got.shape[-1] == 7
    np.testing.assert_allclose(got, _ort(op, x, attrs), rtol=1e-5, atol=1e-6)
