"""The compiled window kernels (hetero/devices/cpu/kernels/jit.py): depthwise conv, stride-1 pools (tap
loop) and strided pools (separable) equal ONNX's reference evaluator, with the compiled path and with the numpy path (HETERO_JIT=0), and
the phase-buffer geometry matches the module doc's traced example."""
import itertools

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from hetero.devices.cpu.kernels import conv as CV
from hetero.devices.cpu.kernels import jit as JIT
from hetero.devices.cpu.kernels import nn as NN
from hetero.devices.cpu.kernels import pool as PL
from op_cases import _lrn_ref


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


# the GEMM conv paths (conv_core's dispatch) whose blocks end in the compiled one-pass epilogue:
# x shape, w shape, attrs
GEMM_CONVS = {
    "1x1": ((2, 8, 5, 6), (12, 8, 1, 1), {}),
    "im2col": ((1, 4, 9, 9), (6, 4, 3, 3), dict(pads=[1, 1, 1, 1], strides=[2, 2])),
    "winograd": ((1, 32, 14, 14), (32, 32, 3, 3), dict(pads=[1, 1, 1, 1])),
    "shifted": ((1, 16, 8, 8), (8, 16, 3, 3), dict(pads=[1, 0, 1, 2])),
}
ACTS = [("", [], lambda v: v),
        ("Relu", [], lambda v: np.maximum(v, 0)),
        ("Clip", [-0.5, 0.5], lambda v: np.clip(v, -0.5, 0.5)),
        ("LeakyRelu", [0.2], lambda v: np.where(v < 0, v * 0.2, v)),
        ("Sigmoid", [], lambda v: 1 / (1 + np.exp(-v)))]  # not compiled: numpy after the bias


@pytest.mark.parametrize("bias,residual", [(True, True), (True, False), (False, True), (False, False)])
@pytest.mark.parametrize("act,params,fn", ACTS, ids=[a[0] or "none" for a in ACTS])
@pytest.mark.parametrize("kind", GEMM_CONVS)
def test_gemm_conv_epilogue(path, kind, act, params, fn, bias, residual):
    xs, ws, attrs = GEMM_CONVS[kind]
    x, w, b = _rand(xs, 20), _rand(ws, 21) * 0.3, _rand((ws[0],), 22)
    conv = _ref("Conv", [x, w, b] if bias else [x, w], kernel_shape=list(ws[2:]), **attrs)
    res = _rand(conv.shape, 23) if residual else None
    got = CV.fused_conv(x, w, b if bias else None, res, activation=act, activation_params=params,
                        kernel_shape=list(ws[2:]), **attrs)
    # (absolute tolerance on the output's scale: Winograd F(4x4, 3x3) rounds at about 1e-6 of it)
    np.testing.assert_allclose(got, fn(conv + res if residual else conv), rtol=1e-4,
                               atol=1e-5 * np.abs(conv).max())


def test_epilogue_compiled_where_it_applies(path):
    y = np.zeros((1, 4, 3, 3), np.float32)
    b = np.ones(4, np.float32)
    on = path == "compiled"
    assert (CV._Epilogue(y, b, None, "Relu", ())._compiled() is not None) == on
    assert (CV._Epilogue(y, None, y.copy(), "Clip", (0.0, 1.0))._compiled() is not None) == on
    assert CV._Epilogue(y, b, None, "Sigmoid", ())._compiled() is None  # numpy applies it
    assert CV._Epilogue(y, None, None, "", ())._compiled() is None  # nothing to do
    assert CV._Epilogue(y.astype(np.float16), b, None, "Relu", ())._compiled() is None


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


# strided pools (the separable jit.pool2d): kernel, strides, pads, dilations, ceil_mode. The first
# four rows hit the specialised (kernel width, column stride) variants, the rest the generic one.
STRIDED = [((3, 3), (2, 2), (0, 0, 0, 0), (1, 1), 0),
           ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1),
           ((2, 2), (2, 2), (0, 0, 0, 0), (1, 1), 0),
           ((2, 3), (3, 1), (1, 0, 0, 2), (1, 1), 0),
           ((3, 2), (2, 3), (0, 1, 2, 1), (1, 1), 1),
           ((3, 3), (2, 2), (1, 2, 1, 0), (2, 2), 0),
           ((1, 4), (1, 2), (0, 0, 0, 0), (1, 1), 0),
           ((5, 5), (3, 3), (2, 2, 2, 2), (1, 1), 1)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("k,s,p,dil,ceil", STRIDED)
def test_strided_pool_matches_reference(path, op, k, s, p, dil, ceil, dtype):
    attrs = dict(kernel_shape=list(k), strides=list(s), pads=list(p), ceil_mode=ceil)
    if op == "MaxPool":
        attrs["dilations"] = list(dil)
    elif dil != (1, 1):
        pytest.skip("AveragePool's reference has no dilations before opset 19's")
    for cip in ([0] if op == "MaxPool" else [0, 1]):
        if op == "AveragePool":
            attrs["count_include_pad"] = cip
        x = _rand((2, 3, 11, 10), len(str(attrs)), dtype)
        got = (PL.max_pool if op == "MaxPool" else PL.average_pool)(x, **attrs)
        assert got.dtype == dtype
        # onnx's reference evaluator misplaces ceil_mode windows of AveragePool (ONNX Runtime
        # agrees with the formula): there the numpy formula is the oracle
        want = _avg_pool_formula(x, k, s, p, cip) if op == "AveragePool" and ceil else _ref(op, [x], **attrs)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _avg_pool_formula(x, k, s, p, cip):
    """AveragePool with ceil_mode=1 as a formula: the mean of each window over the input and, when
    ``cip``, the explicit pads; window parts past the end pads (ceil_mode's extra windows) count
    nothing, and a last window that would start past the input and its begin pad is dropped."""
    H, W = x.shape[2:]
    oh, ow = (-(-(H + p[0] + p[2] - k[0]) // s[0]) + 1, -(-(W + p[1] + p[3] - k[1]) // s[1]) + 1)
    oh -= (oh - 1) * s[0] >= H + p[0]
    ow -= (ow - 1) * s[1] >= W + p[1]
    big = np.full(x.shape[:2] + (H + p[0] + p[2] + k[0] + s[0], W + p[1] + p[3] + k[1] + s[1]), np.nan)
    big[..., :H + p[0] + p[2], :W + p[1] + p[3]] = 0.0 if cip else np.nan
    big[..., p[0]:p[0] + H, p[1]:p[1] + W] = x
    out = np.empty(x.shape[:2] + (oh, ow))
    for i in range(oh):  # (a test oracle over a 5x4 output: loops are fine)
        for j in range(ow):
            out[..., i, j] = np.nanmean(big[..., i * s[0]:i * s[0] + k[0], j * s[1]:j * s[1] + k[1]], axis=(2, 3))
    return out


def test_pool2d_traced_example():
    # jit.pool2d's doc: MaxPool 3x3 s2 on 5x5 -> 2x2; output (1, 1) is the max of rows 2-4, columns 2-4
    if JIT.kernels() is None:
        pytest.skip(f"compiled kernels unavailable: {JIT.unavailable_reason()}")
    x = np.random.default_rng(3).permutation(25).astype(np.float32).reshape(1, 1, 5, 5)
    y = np.empty((1, 1, 2, 2), np.float32)
    assert JIT.pool2d(x, y, k=(3, 3), strides=(2, 2), dilations=(1, 1), pb=(0, 0), mode=JIT.MODE_MAX,
                      padval=-np.inf)
    assert y[0, 0, 1, 1] == x[0, 0, 2:5, 2:5].max()
    assert y[0, 0].tolist() == [[x[0, 0, r:r + 3, c:c + 3].max() for c in (0, 2)] for r in (0, 2)]


def test_strided_pool_split_over_two_threads(pool_task_counts, monkeypatch):
    if JIT.kernels() is None:
        pytest.skip(f"compiled kernels unavailable: {JIT.unavailable_reason()}")
    monkeypatch.setattr(JIT, "MIN_PARALLEL_POOL", 0)
    x = _rand((1, 5, 9, 9), 12, np.float64)  # (float32 goes to vpool: test_cpu_vpool.py)
    attrs = dict(kernel_shape=[3, 3], strides=[2, 2])
    got = PL.max_pool(x, **attrs)
    assert pool_task_counts == [2]
    np.testing.assert_array_equal(got, _ref("MaxPool", [x], **attrs))


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_stride1_pool_channel_blocks(path, op, monkeypatch):
    # the tap loop runs POOL_BLOCK // plane channels as one wide run: 30x30 planes padded to 32x32
    # (S = 1024) give runs of 4 channels, so 10 channels end in a partial block of 2
    if path == "compiled":
        assert JIT.POOL_BLOCK // (32 * 32) == 4
    attrs = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    x = _rand((2, 10, 30, 30), 40)
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
    # strided (the separable kernel): NaN in either pass, first and later taps
    x = np.arange(36, dtype=np.float32).reshape(1, 1, 6, 6)
    x[0, 0, 0, 0] = x[0, 0, 3, 4] = np.nan
    got = PL.max_pool(x, kernel_shape=[2, 2], strides=[2, 2])
    want = np.array([[np.nan, 9, 11], [19, 21, np.nan], [31, 33, 35]], np.float32)
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
    monkeypatch.setenv("HETERO_DIRECT", "0")  # depthwise convs go to the direct kernel otherwise
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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 5, 4, 3), (1, 7, 9), (3, 4)])
def test_batchnorm_matches_reference(path, shape, dtype):
    C = shape[1]
    rng = np.random.default_rng(len(shape))
    x = rng.standard_normal(shape).astype(dtype)
    scale, bias, mean = (rng.standard_normal(C).astype(dtype) for _ in range(3))
    var = rng.uniform(0.5, 2.0, C).astype(dtype)
    params = [scale, bias, mean, var]
    for p in params:  # as the CPU plugin passes initializers: read-only (then cached)
        p.flags.writeable = False
    want = _ref("BatchNormalization", [x] + params, epsilon=1e-3)
    for _ in range(2):  # the second call takes the cached affine form
        got = NN.batch_normalization(x, *params, epsilon=1e-3)
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_batchnorm_params_changed_in_place_are_seen(path):
    # a writeable parameter (a graph input, say) may change between calls: never a stale cache
    x = _rand((1, 3, 4, 4), 30)
    scale, bias, mean, var = (np.ones(3, np.float32) for _ in range(4))
    first = NN.batch_normalization(x, scale, bias, mean, var, epsilon=0.0)
    np.testing.assert_allclose(first, x, rtol=1e-6)
    scale[:] = 2.0
    second = NN.batch_normalization(x, scale, bias, mean, var, epsilon=0.0)
    np.testing.assert_allclose(second, 2 * x - 1, rtol=1e-6, atol=1e-6)


def test_weights_fed_as_inputs_and_changed_in_place_are_seen(path):
    # Conv weights as a graph input, reused by the caller and changed between inferences: the
    # Winograd path (C, M >= 32, 14x14) caches transformed weights for read-only arrays only
    import hetero

    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 14, 14]),
                                        helper.make_tensor_value_info("w", TensorProto.FLOAT, [32, 32, 3, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 14, 14])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    compiled = hetero.compile_model(m, "CPU")
    x, w = _rand((1, 32, 14, 14), 31), _rand((32, 32, 3, 3), 32)
    for _ in range(2):
        got = compiled({"x": x, "w": w})["y"]
        np.testing.assert_allclose(got, _ref("Conv", [x, w], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                                   rtol=1e-4, atol=1e-4)
        w *= -0.5  # same array, new values


@pytest.mark.parametrize("act,params,fn", ACTS, ids=[a[0] or "none" for a in ACTS])
def test_fused_batchnorm_activation(path, act, params, fn):
    # DenseNet's BN + Relu as one FusedBatchNormalization: the activation in the same compiled pass
    # (Relu, Clip, LeakyRelu), or applied after by numpy (Sigmoid)
    rng = np.random.default_rng(41)
    x = rng.standard_normal((2, 4, 5, 3)).astype(np.float32)
    scale, bias, mean = (rng.standard_normal(4).astype(np.float32) for _ in range(3))
    var = rng.uniform(0.5, 2.0, 4).astype(np.float32)
    want = fn(_ref("BatchNormalization", [x, scale, bias, mean, var], epsilon=1e-3))
    out = np.empty_like(x)
    got = NN.fused_batch_normalization(x, scale, bias, mean, var, epsilon=1e-3, activation=act,
                                       activation_params=params, _out=out)
    assert got is out
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size,beta,shape", [(5, 0.75, (2, 7, 4, 3)), (4, 0.5, (1, 6, 5)), (3, 1.0, (1, 3, 2, 2)),
                                             (5, 0.6, (1, 9, 3, 3)), (7, 0.75, (1, 2, 4, 4))])
def test_lrn_matches_formula(path, size, beta, shape, dtype):
    # (the spec's formula: onnx.reference's LRN is wrong across channels; beta 0.75 / 0.5 / 1 take
    # the square-root forms, 0.6 the power; size 7 > 2 channels: windows clipped at both ends)
    x = _rand(shape, size, dtype)
    got = NN.lrn(x, size=size, alpha=1e-2, beta=beta, bias=1.5)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, _lrn_ref(x, size, 1e-2, beta, 1.5)[0], rtol=1e-5, atol=1e-6)


def test_variant_without_a_disk_cache(monkeypatch):
    # numba refuses cache=True where it finds no writable cache directory (at decoration): a
    # variant built after that must still come, compiled in memory
    if JIT.kernels() is None:
        pytest.skip(f"compiled kernels unavailable: {JIT.unavailable_reason()}")
    import numba

    kern = JIT._compile(cache=True)
    real = numba.njit
    refused = []

    def njit(*args, **kw):
        if kw.get("cache"):
            refused.append(kw)
            raise RuntimeError("cannot cache function: no locator available")
        return real(*args, **kw)

    monkeypatch.setattr(numba, "njit", njit)
    fn = kern.pool(JIT.MODE_MAX, 3, 2)
    assert refused, "the variant never asked for a disk cache"
    x = _rand((1, 2, 7, 7), 50)
    y = np.empty((1, 2, 3, 3), np.float32)
    fn(x[0], y[0], 3, 3, 2, 2, 1, 1, 0, 0, np.float32(-np.inf), JIT.empty(np.float32, 2), 0, 2)
    np.testing.assert_array_equal(y, _ref("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2]))
