"""The compiled window kernels (hetero/devices/cpu/kernels/jit.py): depthwise conv and stride-1 pools
equal ONNX's reference evaluator, with the compiled path and with the numpy path (HETERO_JIT=0), and
the phase-buffer geometry matches the module doc's traced example."""
import itertools

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from hetero.devices.cpu.kernels import conv as CV
from hetero.devices.cpu.kernels import jit as JIT
from hetero.devices.cpu.kernels import pool as PL


@pytest.fixture(params=["compiled", "numpy"])
def path(request, monkeypatch):
    if request.param == "numpy":
        monkeypatch.setenv("HETERO_JIT", "0")
    elif JIT.kernels() is None:
        pytest.skip(f"compiled kernels unavailable: {JIT.unavailable_reason()}")
    return request.param


def _ref(op, inputs, opset=19, **attrs):
    names = [f"i{k}" for k in range(len(inputs))]
    tp = helper.np_dtype_to_tensor_dtype(inputs[0].dtype)
    node = helper.make_node(op, names, ["o"], **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, tp, None) for n in names],
                          [helper.make_tensor_value_info("o", tp, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    return ReferenceEvaluator(m).run(None, dict(zip(names, inputs)))[0]


def _rand(shape, seed, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# (H, W), kernel, strides, dilations, pads, channel multiplier
DW = [((9, 11), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), 1),
      ((9, 11), (3, 3), (2, 2), (1, 1), (1, 1, 1, 1), 1),
      ((8, 8), (3, 3), (1, 3), (2, 1), (2, 0, 1, 3), 1),
      ((7, 9), (1, 3), (2, 1), (1, 2), (0, 0, 0, 0), 2),
      ((12, 5), (5, 5), (1, 1), (1, 1), (2, 2, 2, 2), 1),
      ((6, 6), (3, 3), (3, 3), (1, 1), (0, 1, 2, 0), 3)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hw,k,s,d,p,mult", DW)
def test_depthwise_conv_matches_reference(path, hw, k, s, d, p, mult, dtype):
    C = 5
    x, w, b = _rand((2, C) + hw, 1, dtype), _rand((C * mult, 1) + k, 2, dtype), _rand((C * mult,), 3, dtype)
    attrs = dict(group=C, kernel_shape=list(k), strides=list(s), dilations=list(d), pads=list(p))
    want = _ref("Conv", [x, w, b], **attrs)
    np.testing.assert_allclose(CV.conv(x, w, b, **attrs), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("act,params,fn", [
    ("Relu", [], lambda v: np.maximum(v, 0)),
    ("Clip", [0.0, 0.5], lambda v: np.clip(v, 0, 0.5)),
    ("LeakyRelu", [0.1], lambda v: np.where(v < 0, v * 0.1, v)),
    ("Sigmoid", [], lambda v: 1 / (1 + np.exp(-v))),  # not fused in the compiled store: applied after
])
def test_fused_depthwise_epilogue(path, act, params, fn):
    C = 6
    x, w, b = _rand((2, C, 10, 7), 4), _rand((C, 1, 3, 3), 5), _rand((C,), 6)
    attrs = dict(group=C, kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 1])
    conv = _ref("Conv", [x, w, b], **attrs)
    res = _rand(conv.shape, 7)
    out = np.empty(conv.shape, np.float32)
    got = CV.fused_conv(x, w, b, res, activation=act, activation_params=params, _out=out, **attrs)
    assert got is out
    np.testing.assert_allclose(got, fn(conv + res), rtol=1e-5, atol=1e-5)


POOLS = [c for c in itertools.product(["MaxPool", "AveragePool"], [(7, 9), (5, 5)], [(3, 3), (2, 3), (1, 1)],
                                      [(0, 0, 0, 0), (1, 1, 1, 1), (0, 1, 1, 0)], [(1, 1), (2, 1)], [0, 1])
         if all(pp < kk for pp, kk in zip(c[3], c[2] + c[2]))
         and not (c[0] == "AveragePool" and c[4] != (1, 1))]


@pytest.mark.parametrize("op,hw,k,p,dil,cip", POOLS)
def test_stride1_pool_matches_reference(path, op, hw, k, p, dil, cip):
    attrs = dict(kernel_shape=list(k), pads=list(p))
    if op == "MaxPool":
        attrs["dilations"] = list(dil)
    else:
        attrs["count_include_pad"] = cip
    x = _rand((2, 3) + hw, len(str(attrs)))
    got = (PL.max_pool if op == "MaxPool" else PL.average_pool)(x, **attrs)
    np.testing.assert_allclose(got, _ref(op, [x], **attrs), rtol=1e-5, atol=1e-6)


def test_maxpool_keeps_nan(path):
    # np.maximum propagates NaN; the compiled max must too (it takes NaN over any number)
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    x[0, 0, 1, 1] = np.nan
    got = PL.max_pool(x, kernel_shape=[2, 2])
    want = np.array([[5, 6, 7], [9, 10, 11], [13, 14, 15]], np.float32)  # window max: its bottom-right
    want[:2, :2] = np.nan
    np.testing.assert_array_equal(got[0, 0], want)


def test_plan_traced_example():
    # module doc: 3x3 stride 2 pads 1 on 5x5 -> 3x3 output, phase planes 4x4; tap (1, 2) -> 33
    offs, Hq, Wq = JIT.plan((3, 3), (3, 3), (2, 2), (1, 1))
    assert (Hq, Wq) == (4, 4)
    assert offs.tolist() == [0, 16, 1, 32, 48, 33, 4, 20, 5]


def test_pack_refills_padding_when_the_layout_changes(path):
    # the same thread's phase buffer, same shape, first padded with -inf (MaxPool) then with 0
    # (AveragePool counting the pads): the second must not see the first's padding
    x = _rand((1, 4, 6, 6), 8)
    attrs = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    np.testing.assert_allclose(PL.max_pool(x, **attrs), _ref("MaxPool", [x], **attrs), rtol=1e-6)
    got = PL.average_pool(x, count_include_pad=1, **attrs)
    np.testing.assert_allclose(got, _ref("AveragePool", [x], count_include_pad=1, **attrs), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(PL.max_pool(x, **attrs), _ref("MaxPool", [x], **attrs), rtol=1e-6)


def test_window_split_over_two_threads(pool_task_counts, monkeypatch):
    if JIT.kernels() is None:
        pytest.skip(f"compiled kernels unavailable: {JIT.unavailable_reason()}")
    monkeypatch.setattr(JIT, "MIN_PARALLEL_TAPS", 0)
    C = 7
    x, w = _rand((1, C, 12, 12), 9), _rand((C * 2, 1, 3, 3), 10)
    got = CV.conv(x, w, group=C, pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    assert pool_task_counts == [2]
    np.testing.assert_allclose(got, _ref("Conv", [x, w], group=C, pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
                               rtol=1e-5, atol=1e-5)


def test_disabled_by_env(monkeypatch):
    monkeypatch.setenv("HETERO_JIT", "0")
    assert JIT.kernels() is None
    assert JIT.unavailable_reason() == "HETERO_JIT=0"
    x = np.zeros((1, 2, 4, 4), np.float32)
    assert JIT.window2d(x, np.empty((1, 2, 2, 2), np.float32), k=(3, 3), strides=(1, 1), dilations=(1, 1),
                        pb=(0, 0), mode=JIT.MODE_MAX) is False
