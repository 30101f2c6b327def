"""CNN kernels (conv.py, pool.py, nn.py) against onnx.reference and plain numpy formulas."""
from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from hetero.devices.cpu.kernels import conv as K
from hetero.devices.cpu.kernels import nn as NN
from hetero.devices.cpu.kernels import pool as P

RNG = np.random.default_rng(0)


def rand(*shape, dtype=np.float32):
    return (RNG.standard_normal(shape)).astype(dtype)


def ref_run(op, inputs, attrs=None, n_out=1, opset=22):
    """Run one ONNX node with onnx.reference; ``inputs`` is a list of arrays (None = omitted)."""
    names = [f"i{k}" if v is not None else "" for k, v in enumerate(inputs)]
    outs = [f"o{k}" for k in range(n_out)]
    node = helper.make_node(op, names, outs, **(attrs or {}))
    ins = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
           for n, v in zip(names, inputs) if v is not None]
    g = helper.make_graph([node], "g", ins, [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None)
                                               for o in outs])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    feeds = {n: v for n, v in zip(names, inputs) if v is not None}
    res = ReferenceEvaluator(m).run(None, feeds)
    return res if n_out > 1 else res[0]


def naive_conv(x, w, b=None, group=1, strides=None, dilations=None, pads=None):
    """Direct convolution by summing over kernel taps (no im2col), any rank."""
    nsp = x.ndim - 2
    strides = strides or [1] * nsp
    dilations = dilations or [1] * nsp
    pads = pads or [0] * 2 * nsp
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0)] + [(pads[i], pads[nsp + i]) for i in range(nsp)])
    k = w.shape[2:]
    out = [(xp.shape[2 + i] - ((k[i] - 1) * dilations[i] + 1)) // strides[i] + 1 for i in range(nsp)]
    N, C = x.shape[:2]
    M = w.shape[0]
    Cg, Mg = C // group, M // group
    y = np.zeros((N, M) + tuple(out))
    for g in range(group):
        for idx in itertools.product(*[range(a) for a in k]):
            sl = tuple(slice(idx[i] * dilations[i], idx[i] * dilations[i] + (out[i] - 1) * strides[i] + 1, strides[i])
                       for i in range(nsp))
            patch = xp[(slice(None), slice(g * Cg, (g + 1) * Cg)) + sl]
            wt = w[(slice(g * Mg, (g + 1) * Mg), slice(None)) + idx].astype(np.float64)
            y[:, g * Mg:(g + 1) * Mg] += np.einsum("nc...,mc->nm...", patch, wt)
    if b is not None:
        y += b.reshape((1, M) + (1,) * nsp)
    return y.astype(x.dtype)


# --------------------------------------------------------------------------------------------
# Conv
# --------------------------------------------------------------------------------------------

CONV_CASES = [
    # x shape, w shape, attrs
    ((1, 3, 7, 6), (4, 3, 3, 3), dict(pads=[1, 1, 1, 1])),
    ((2, 4, 9, 8), (6, 2, 3, 2), dict(group=2, strides=[2, 1], pads=[1, 0, 2, 1])),
    ((1, 3, 10, 10), (2, 3, 3, 3), dict(dilations=[2, 2], auto_pad="SAME_UPPER")),
    ((1, 3, 10, 9), (2, 3, 4, 3), dict(strides=[2, 2], auto_pad="SAME_LOWER")),
    ((1, 3, 10, 9), (2, 3, 3, 3), dict(strides=[3, 2], auto_pad="VALID")),
    ((2, 5, 11), (4, 5, 3), dict(strides=[2], pads=[1, 2])),                          # 1-D
    ((1, 2, 5, 6, 4), (3, 2, 3, 2, 2), dict(pads=[1, 0, 1, 1, 1, 0])),                # 3-D
    ((1, 6, 8, 8), (12, 1, 3, 3), dict(group=6, pads=[1, 1, 1, 1], strides=[2, 2])),  # depthwise x2
    ((1, 6, 9, 9), (6, 1, 3, 3), dict(group=6, dilations=[2, 2], pads=[2, 2, 2, 2])),  # depthwise
    ((2, 8, 5, 5), (4, 8, 1, 1), dict(strides=[2, 2])),                               # 1x1 strided
    ((1, 8, 5, 5), (8, 2, 1, 1), dict(group=4)),                                      # grouped 1x1
]


@pytest.mark.parametrize("xs,ws,attrs", CONV_CASES)
def test_conv_matches_reference(xs, ws, attrs):
    x, w, b = rand(*xs), rand(*ws), rand(ws[0])
    got = K.conv(x, w, b, kernel_shape=list(ws[2:]), **attrs)
    want = ref_run("Conv", [x, w, b], dict(kernel_shape=list(ws[2:]), **attrs))
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_conv_im2col_chunking_and_winograd_paths(monkeypatch):
    monkeypatch.setenv("HETERO_DIRECT", "0")  # the BLAS paths (the direct kernel: test_cpu_direct.py)
    # big enough for the Winograd path (3x3, stride 1, >= 32 channels, >= 14x14) and for
    # several im2col chunks; compared with a direct tap-sum convolution
    x = rand(2, 40, 17, 15)
    w = (rand(36, 40, 3, 3) / 20).astype(np.float32)
    b = rand(36)
    assert K._use_winograd(x, w, 1, [1, 1], [1, 1], (17, 15), (3, 3))
    want = naive_conv(x, w, b, pads=[1, 1, 1, 1])
    got = K.conv(x, w, b, pads=[1, 1, 1, 1])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # the same weights again (cached transform) and a different pad / odd output size
    got2 = K.conv(x, w, None, pads=[0, 1, 2, 0])
    np.testing.assert_allclose(got2, naive_conv(x, w, None, pads=[0, 1, 2, 0]), rtol=1e-4, atol=1e-4)
    old = K._COLS_CHUNK_BYTES, K._MIN_CHUNK_COLS
    try:
        K._COLS_CHUNK_BYTES, K._MIN_CHUNK_COLS = 1, 1  # one output row per chunk
        got3 = K.conv(x, w, b, pads=[1, 1, 1, 1], strides=[2, 1])
    finally:
        K._COLS_CHUNK_BYTES, K._MIN_CHUNK_COLS = old
    np.testing.assert_allclose(got3, naive_conv(x, w, b, strides=[2, 1], pads=[1, 1, 1, 1]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape,wshape,pads,dil", [
    ((2, 24, 9, 11), (8, 24, 3, 3), [1, 1, 1, 1], [1, 1]),     # DenseNet-like: 3 outputs per 9 inputs
    ((1, 20, 7, 6), (6, 20, 3, 2), [0, 2, 1, 0], [2, 1]),      # asymmetric pads, dilation, 3x2 kernel
    ((1, 16, 5, 5), (4, 16, 5, 5), [0, 0, 0, 0], [1, 1]),      # no padding: x itself plus slack
])
def test_conv_shifted_gemm_path(shape, wshape, pads, dil, monkeypatch):
    monkeypatch.setenv("HETERO_DIRECT", "0")  # the BLAS path (the direct kernel: test_cpu_direct.py)
    # "GEMM first, shift after" (fewer outputs than inputs, stride 1): exact structure of the
    # dispatch and the numerics against the direct tap sum, with the FusedConv epilogue and _out
    x, w, b = rand(*shape), (rand(*wshape) / 10).astype(np.float32), rand(wshape[0])
    assert K._use_shifted(x, w, 1, [1, 1], None, tuple(wshape[2:]))
    want = naive_conv(x, w, b, pads=pads, dilations=dil)
    got = K.conv(x, w, b, pads=pads, dilations=dil)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    r = rand(*want.shape)
    out = np.empty(want.shape, np.float32)
    got2 = K.fused_conv(x, w, b, r, pads=pads, dilations=dil, activation="Relu", _out=out)
    assert got2 is out
    np.testing.assert_allclose(got2, np.maximum(want + r, 0), rtol=1e-4, atol=1e-4)


def test_conv_float16_and_inputs_untouched():
    x, w = rand(1, 3, 6, 6).astype(np.float16), rand(2, 3, 3, 3).astype(np.float16)
    x0, w0 = x.copy(), w.copy()
    got = K.conv(x, w, None, pads=[1, 1, 1, 1])
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32),
                               naive_conv(x.astype(np.float32), w.astype(np.float32), pads=[1, 1, 1, 1]),
                               rtol=1e-2, atol=1e-2)
    assert np.array_equal(x, x0) and np.array_equal(w, w0)


def test_conv_bad_group_raises():
    with pytest.raises(ValueError):
        K.conv(rand(1, 4, 5, 5), rand(3, 2, 3, 3), None, group=2)


@pytest.mark.parametrize("act,params", [("", []), ("Relu", []), ("Clip", [-0.5, 0.7]), ("LeakyRelu", [0.2]),
                                        ("Sigmoid", []), ("HardSigmoid", [0.3, 0.4]), ("HardSwish", []),
                                        ("Tanh", [])])
def test_fused_conv_residual_activation(act, params):
    x, w, b = rand(1, 4, 6, 6), rand(5, 4, 3, 3), rand(5)
    r = rand(1, 5, 6, 6)
    y = naive_conv(x, w, b, pads=[1, 1, 1, 1]).astype(np.float64) + r
    expect = {
        "": y, "Relu": np.maximum(y, 0), "Clip": np.clip(y, -0.5, 0.7),
        "LeakyRelu": np.where(y < 0, 0.2 * y, y), "Sigmoid": 1 / (1 + np.exp(-y)),
        "HardSigmoid": np.clip(0.3 * y + 0.4, 0, 1), "HardSwish": y * np.clip(y / 6 + 0.5, 0, 1),
        "Tanh": np.tanh(y)}[act]
    got = K.fused_conv(x, w, b, r, pads=[1, 1, 1, 1], activation=act, activation_params=params)
    np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-5)


def test_fused_gemm_and_matmul():
    a, bm, c = rand(3, 4), rand(5, 4), rand(5)
    got = NN.fused_gemm(a, bm, c, transB=1, alpha=0.5, activation="Relu")
    np.testing.assert_allclose(got, np.maximum(0.5 * a @ bm.T + c, 0), rtol=1e-5, atol=1e-6)
    got = NN.fused_matmul(rand(2, 3, 4), rand(4, 2), activation="LeakyRelu", activation_params=[0.1])
    assert got.shape == (2, 3, 2) and got.dtype == np.float32


# --------------------------------------------------------------------------------------------
# ConvTranspose, Col2Im, DeformConv, integer convs
# --------------------------------------------------------------------------------------------

CONVT_CASES = [
    ((1, 2, 3, 3), (2, 3, 3, 3), dict(strides=[2, 2])),
    ((1, 2, 3, 4), (2, 3, 3, 3), dict(strides=[3, 2], output_padding=[1, 1], pads=[1, 0, 1, 1])),
    ((1, 2, 3, 3), (2, 3, 3, 3), dict(strides=[2, 2], output_shape=[8, 7])),
    ((1, 2, 3, 3), (2, 3, 3, 3), dict(strides=[2, 2], auto_pad="SAME_UPPER")),
    ((1, 2, 4, 4), (2, 2, 2, 2), dict(dilations=[2, 2])),
    ((2, 1, 5), (1, 2, 3), dict(strides=[2])),
]


@pytest.mark.parametrize("xs,ws,attrs", CONVT_CASES)
def test_conv_transpose_matches_reference(xs, ws, attrs):
    x, w = rand(*xs), rand(*ws)
    got = K.conv_transpose(x, w, None, **attrs)
    want = ref_run("ConvTranspose", [x, w], attrs)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_conv_transpose_groups_against_naive_scatter():
    x, w, b = rand(2, 4, 3, 3), rand(4, 3, 2, 2), rand(6)
    got = K.conv_transpose(x, w, b, group=2, strides=[2, 2])
    # scatter definition: y[n, g*3+m, i*2+p, j*2+q] += x[n, g*2+c, i, j] * w[g*2+c, m, p, q]
    y = np.zeros((2, 6, 6, 6))
    for g, c, m, p, q in itertools.product(range(2), range(2), range(3), range(2), range(2)):
        y[:, g * 3 + m, p::2, q::2] += x[:, g * 2 + c] * w[g * 2 + c, m, p, q]
    np.testing.assert_allclose(got, y + b.reshape(1, 6, 1, 1), rtol=1e-5, atol=1e-5)


def test_col2im_inverts_sum_of_im2col():
    x = rand(1, 2 * 4, 6)  # C=2, block 2x2, 6 blocks of a 3x4 image with stride 1... (2 x 3 blocks)
    got = K.col2im(x, np.array([3, 4]), np.array([2, 2]))
    want = ref_run("Col2Im", [x, np.array([3, 4], np.int64), np.array([2, 2], np.int64)], opset=18)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_deform_conv_zero_offset_is_conv():
    x, w, b = rand(1, 4, 6, 6), rand(4, 2, 3, 3), rand(4)
    off = np.zeros((1, 2 * 2 * 9, 6, 6), np.float32)
    got = K.deform_conv(x, w, off, b, None, group=2, offset_group=2, pads=[1, 1, 1, 1])
    np.testing.assert_allclose(got, naive_conv(x, w, b, group=2, pads=[1, 1, 1, 1]), rtol=1e-4, atol=1e-5)
    # fractional offsets against the reference
    off = (rand(1, 2 * 9, 4, 4) * 0.7).astype(np.float32)
    mask = np.abs(rand(1, 9, 4, 4))
    x1, w1 = rand(1, 2, 6, 6), rand(2, 2, 3, 3)
    got = K.deform_conv(x1, w1, off, None, mask, strides=[1, 1])
    want = ref_run("DeformConv", [x1, w1, off, None, mask], dict(strides=[1, 1]), opset=22)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_qlinear_conv_and_conv_integer():
    x = RNG.integers(0, 255, (1, 3, 5, 5)).astype(np.uint8)
    w = RNG.integers(0, 255, (2, 3, 3, 3)).astype(np.uint8)
    got = K.conv_integer(x, w, np.uint8(3), np.uint8(100), pads=[1, 1, 1, 1])
    want = ref_run("ConvInteger", [x, w, np.array(3, np.uint8), np.array(100, np.uint8)],
                   dict(pads=[1, 1, 1, 1]), opset=10)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)
    args = [x, np.float32(0.02), np.uint8(3), w, np.array([0.01, 0.03], np.float32), np.array([100, 90], np.uint8),
            np.float32(0.5), np.uint8(7)]
    got = K.qlinear_conv(*args, np.array([10, -20], np.int32))
    want = ref_run("QLinearConv", [np.asarray(a) for a in args] + [np.array([10, -20], np.int32)], opset=10)
    assert got.dtype == np.uint8
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


# --------------------------------------------------------------------------------------------
# pools
# --------------------------------------------------------------------------------------------

POOL_CASES = [
    ((1, 2, 7, 6), dict(kernel_shape=[3, 3], strides=[2, 2])),
    ((1, 2, 7, 6), dict(kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 1, 1], ceil_mode=1)),
    ((2, 3, 8, 8), dict(kernel_shape=[2, 2], dilations=[2, 2], strides=[1, 1])),
    ((1, 1, 6, 7), dict(kernel_shape=[3, 3], auto_pad="SAME_UPPER", strides=[2, 2])),
    ((1, 2, 9), dict(kernel_shape=[4], strides=[3], pads=[1, 2])),
    ((1, 1, 4, 5, 6), dict(kernel_shape=[2, 3, 2], strides=[2, 1, 2], pads=[0, 1, 1, 1, 1, 0])),
]


@pytest.mark.parametrize("xs,attrs", POOL_CASES)
def test_maxpool_values_and_indices(xs, attrs):
    x = rand(*xs)
    for order in (0, 1):
        y, idx = P.max_pool(x, storage_order=order, _num_outputs=2, **attrs)
        ry, ridx = ref_run("MaxPool", [x], dict(storage_order=order, **attrs), n_out=2)
        np.testing.assert_allclose(y, ry)
        if x.ndim <= 4 or order == 0:
            np.testing.assert_array_equal(idx, ridx)
        assert idx.dtype == np.int64


@pytest.mark.parametrize("xs,attrs", POOL_CASES)
@pytest.mark.parametrize("cip", [0, 1])
def test_average_pool(xs, attrs, cip):
    x = rand(*xs)
    got = P.average_pool(x, count_include_pad=cip, **attrs)
    want = ref_run("AveragePool", [x], dict(count_include_pad=cip, **attrs))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_lp_pool_and_globals():
    x = rand(2, 3, 5, 6)
    np.testing.assert_allclose(P.lp_pool(x, kernel_shape=[2, 3], p=3, strides=[1, 2]),
                               ref_run("LpPool", [x], dict(kernel_shape=[2, 3], p=3, strides=[1, 2])),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(P.global_average_pool(x), x.mean(axis=(2, 3), keepdims=True), rtol=1e-5)
    np.testing.assert_allclose(P.global_max_pool(x), x.max(axis=(2, 3), keepdims=True))
    np.testing.assert_allclose(P.global_lp_pool(x, p=2), np.sqrt((x ** 2).sum(axis=(2, 3), keepdims=True)),
                               rtol=1e-5)


def test_maxpool_uint8_and_maxunpool_roundtrip():
    x = RNG.integers(0, 255, (1, 1, 4, 4)).astype(np.uint8)
    y = P.max_pool(x, kernel_shape=[2, 2], strides=[2, 2])
    assert y.dtype == np.uint8
    np.testing.assert_array_equal(y, x.reshape(1, 1, 2, 2, 2, 2).max(axis=(3, 5)))
    xf = rand(1, 2, 4, 4)
    yv, idx = P.max_pool(xf, kernel_shape=[2, 2], strides=[2, 2], _num_outputs=2)
    up = P.max_unpool(yv, idx, None, kernel_shape=[2, 2], strides=[2, 2])
    assert up.shape == xf.shape
    np.testing.assert_allclose(np.where(up != 0, xf, 0), up)


def test_max_roi_pool():
    x = rand(1, 2, 8, 8)
    rois = np.array([[0, 1, 1, 6, 5], [0, 0, 0, 7, 7]], np.float32)
    got = P.max_roi_pool(x, rois, pooled_shape=[2, 2])
    # roi 1 covers the whole image: bins are the four 4x4 quadrants
    np.testing.assert_allclose(got[1], x[0].reshape(2, 2, 4, 2, 4).max(axis=(2, 4)))


# --------------------------------------------------------------------------------------------
# normalisations, LRN, Gemm/MatMul, Dropout
# --------------------------------------------------------------------------------------------


def test_batchnorm_inference_and_training():
    x, s, b, m, v = rand(2, 3, 4, 5), rand(3), rand(3), rand(3), np.abs(rand(3)) + 0.5
    np.testing.assert_allclose(NN.batch_normalization(x, s, b, m, v, epsilon=1e-3),
                               ref_run("BatchNormalization", [x, s, b, m, v], dict(epsilon=1e-3)),
                               rtol=1e-5, atol=1e-5)
    got = NN.batch_normalization(x, s, b, m, v, training_mode=1, momentum=0.8, _num_outputs=3, _opset=15)
    want = ref_run("BatchNormalization", [x, s, b, m, v], dict(training_mode=1, momentum=0.8), n_out=3,
                   opset=15)
    for g, r in zip(got, want):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("axis", [0, 1, -1, 2])
def test_layer_normalization_outputs(axis):
    x = rand(2, 3, 4)
    rank_axis = axis % 3
    sc, bi = rand(*x.shape[rank_axis:]), rand(*x.shape[rank_axis:])
    got = NN.layer_normalization(x, sc, bi, axis=axis, epsilon=1e-4, _num_outputs=3)
    want = ref_run("LayerNormalization", [x, sc, bi], dict(axis=axis, epsilon=1e-4), n_out=3, opset=17)
    for g, r in zip(got, want):
        assert g.shape == r.shape and g.dtype == r.dtype
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)


def test_instance_group_rms_mvn_lrn():
    x = rand(2, 4, 3, 5)
    s, b = rand(4), rand(4)
    np.testing.assert_allclose(NN.instance_normalization(x, s, b),
                               ref_run("InstanceNormalization", [x, s, b]), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(NN.group_normalization(x, s, b, num_groups=2),
                               ref_run("GroupNormalization", [x, s, b], dict(num_groups=2), opset=21),
                               rtol=1e-4, atol=1e-5)
    sg, bg = rand(2), rand(2)  # opset-18 form: per-group scale/bias
    got18 = NN.group_normalization(x, sg, bg, num_groups=2)
    xg = x.reshape(2, 2, -1).astype(np.float64)
    want18 = (xg - xg.mean(-1, keepdims=True)) / np.sqrt(xg.var(-1, keepdims=True) + 1e-5)
    want18 = want18 * sg.reshape(1, 2, 1) + bg.reshape(1, 2, 1)
    np.testing.assert_allclose(got18, want18.reshape(x.shape), rtol=1e-4, atol=1e-5)
    sr = rand(3, 5)
    np.testing.assert_allclose(NN.rms_normalization(x, sr, axis=2),
                               ref_run("RMSNormalization", [x, sr], dict(axis=2), opset=23), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(NN.mean_variance_normalization(x),
                               ref_run("MeanVarianceNormalization", [x], opset=13), rtol=1e-4, atol=1e-5)
    for size in (3, 4):  # (onnx.reference's LRN loops over the batch axis: check the formula directly)
        sq = np.zeros(x.shape)
        for c in range(x.shape[1]):
            lo, hi = max(0, c - (size - 1) // 2), min(x.shape[1], c + size // 2 + 1)
            sq[:, c] = (x[:, lo:hi].astype(np.float64) ** 2).sum(axis=1)
        want = x / (1.5 + 0.01 / size * sq) ** 0.75
        np.testing.assert_allclose(NN.lrn(x, size=size, alpha=0.01, beta=0.75, bias=1.5), want, rtol=1e-5, atol=1e-6)


def test_gemm_matmul_variants():
    a, b = rand(4, 3), rand(5, 4)
    for c in (None, rand(5), rand(1, 5), rand(3, 5), np.float32(2.0)):
        got = NN.gemm(a, b, c, transA=1, transB=1, alpha=0.5, beta=2.0)
        want = 0.5 * a.T @ b.T + (0 if c is None else 2.0 * c)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(NN.matmul(rand(3, 1, 2, 4), rand(5, 4, 3)).shape, (3, 5, 2, 3))
    assert NN.matmul(rand(4), rand(4)).shape == ()
    h = NN.matmul(rand(2, 3).astype(np.float16), rand(3, 2).astype(np.float16))
    assert h.dtype == np.float16
    ai = RNG.integers(0, 255, (3, 4)).astype(np.uint8)
    bi = RNG.integers(-128, 127, (4, 2)).astype(np.int8)
    got = NN.matmul_integer(ai, bi, np.uint8(12), np.int8(-3))
    np.testing.assert_array_equal(got, (ai.astype(np.int32) - 12) @ (bi.astype(np.int32) + 3))
    assert got.dtype == np.int32


def test_dropout_modes():
    x = rand(3, 4, 5)
    assert NN.dropout(x) is x
    y, mask = NN.dropout(x, np.float32(0.3), np.bool_(False), _num_outputs=2)
    assert y is x and mask.dtype == np.bool_ and mask.all()
    y, mask = NN.dropout(x, np.float32(0.75), np.bool_(True), seed=0, _num_outputs=2)
    np.random.seed(0)
    keep = np.random.uniform(0, 1.0, x.shape) >= 0.75
    np.testing.assert_array_equal(mask, keep)
    np.testing.assert_allclose(y, keep * x * 4.0, rtol=1e-6)
    # opset < 10: mask has the data's type
    _, m7 = NN.dropout(x, _num_outputs=2, _opset=7)
    assert m7.dtype == x.dtype


def test_end_to_end_conv_pool_model():
    import hetero

    x = rand(1, 3, 12, 12)
    w = onnx.numpy_helper.from_array(rand(8, 3, 3, 3), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 6, 6])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    got = hetero.compile_model(m, "CPU")({"x": x})
    got = got[0] if not isinstance(got, dict) else next(iter(got.values()))
    want = ReferenceEvaluator(m).run(None, {"x": x})[0]
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)
