"""The direct convolution kernel (hetero/devices/cpu/kernels/direct.py, LLVM IR through llvmlite):
every conv geometry it takes equals ONNX's reference evaluator, with the kernel and with BLAS
(HETERO_DIRECT=0), on one thread and on the pool; its tables match the module doc's traced example."""
import numpy as np
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from hetero.devices.cpu.kernels import conv as CV
from hetero.devices.cpu.kernels import direct as DI
from hetero.devices.cpu.kernels import parallel


@pytest.fixture(params=["direct", "blas"])
def path(request, monkeypatch):
    if request.param == "blas":
        monkeypatch.setenv("HETERO_DIRECT", "0")
        assert DI.engine() is None
    elif DI.engine() is None:
        pytest.skip(f"direct kernel unavailable: {DI._state.get('why', 'HETERO_JIT=0')}")
    return request.param


def _ref(x, w, b, **attrs):
    names = ["x", "w"] + (["b"] if b is not None else [])
    node = helper.make_node("Conv", names, ["o"], **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, 1, None) for n in names],
                          [helper.make_tensor_value_info("o", 1, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    return ReferenceEvaluator(m).run(None, dict(zip(names, [x, w] + ([b] if b is not None else []))))[0]


def _rand(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# (N, C, H, W), (M, kh, kw), strides, dilations, pads (begin h, w, end h, w), group
CASES = [
    ((1, 16, 23, 23), (64, 3, 3), (1, 1), (1, 1), (1, 1, 1, 1), 1),   # wide output cropped
    ((2, 5, 7, 6), (13, 3, 3), (1, 1), (1, 1), (1, 1, 1, 1), 1),      # M not a multiple of MR, N = 2
    ((1, 3, 9, 11), (7, 1, 1), (1, 1), (1, 1), (0, 0, 0, 0), 1),      # 1x1 on the input itself
    ((1, 64, 17, 17), (20, 1, 1), (2, 2), (1, 1), (0, 0, 0, 0), 1),   # strided 1x1: one phase packed
    ((1, 8, 12, 10), (12, 3, 3), (2, 2), (1, 1), (1, 1, 1, 1), 2),    # stride phases, groups
    ((1, 6, 15, 15), (9, 5, 5), (2, 3), (1, 1), (2, 1, 0, 2), 3),     # asymmetric pads
    ((1, 4, 14, 13), (6, 3, 3), (1, 1), (2, 2), (2, 2, 2, 2), 1),     # dilation
    ((1, 3, 40, 40), (16, 7, 7), (2, 2), (1, 1), (3, 3, 3, 3), 1),    # a stem
    ((1, 32, 7, 7), (100, 3, 3), (1, 1), (1, 1), (1, 1, 1, 1), 1),    # one (partial) tile
    ((1, 7, 8, 8), (5, 2, 3), (3, 1), (1, 1), (0, 0, 0, 0), 1),       # no padding, odd kernel
    ((1, 5, 1, 1), (3, 1, 1), (1, 1), (1, 1), (0, 0, 0, 0), 1),       # one pixel
    ((1, 6, 2, 3), (4, 3, 3), (1, 1), (1, 1), (1, 1, 1, 1), 1),       # plane smaller than a vector
    ((1, 3, 5, 70), (4, 3, 3), (1, 1), (1, 1), (1, 1, 1, 1), 1),      # copy: vectors and a tail
    ((1, 2, 7, 75), (3, 3, 3), (2, 2), (1, 1), (1, 1, 1, 1), 1),      # copy, stride 2: vectors, tail
    ((1, 3, 9, 66), (2, 1, 1), (2, 2), (1, 1), (0, 0, 0, 0), 1),      # stride-2 copy, even width
    ((2, 24, 10, 9), (24, 3, 3), (1, 1), (1, 1), (1, 1, 1, 1), 24),   # depthwise, one row per block
    ((1, 40, 13, 38), (40, 3, 3), (2, 2), (1, 1), (1, 1, 1, 1), 40),  # depthwise, stride 2
    ((1, 8, 6, 7), (24, 3, 3), (1, 1), (1, 1), (1, 1, 1, 1), 8),      # depthwise, multiplier 3
    ((1, 24, 11, 11), (112, 1, 1), (1, 1), (1, 1), (0, 0, 0, 0), 4),  # grouped 1x1
    ((1, 300, 14, 14), (20, 1, 1), (1, 1), (1, 1), (0, 0, 0, 0), 1),  # 1x1, many channels, L = 196
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("xs,ks,s,d,p,g", CASES)
def test_conv_matches_reference(path, xs, ks, s, d, p, g, threads, monkeypatch):
    monkeypatch.setattr(DI, "MIN_PARALLEL_MACS", 0)  # two threads: units really cut, even when small
    M, kh, kw = ks
    x, w, b = _rand(xs, 1), _rand((M, xs[1] // g, kh, kw), 2), _rand((M,), 3)
    attrs = dict(group=g, kernel_shape=[kh, kw], strides=list(s), dilations=list(d), pads=list(p))
    want = _ref(x, w, b, **attrs)
    with parallel.limit(threads):
        got = CV.conv(x, w, b, **attrs)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("act,params,fn", [
    ("Relu", [], lambda v: np.maximum(v, 0)),
    ("Clip", [-0.5, 0.7], lambda v: np.clip(v, -0.5, 0.7)),
    ("LeakyRelu", [0.1], lambda v: np.where(v >= 0, v, 0.1 * v)),
    ("Sigmoid", [], lambda v: 1 / (1 + np.exp(-v))),  # not in the kernel: applied after
])
@pytest.mark.parametrize("residual", [False, True])
def test_fused_epilogue(path, act, params, fn, residual):
    """Bias, residual and activation stored by the kernel equal the unfused formula."""
    x, w, b = _rand((2, 12, 9, 10), 4), _rand((14, 12, 3, 3), 5), _rand((14,), 6)
    attrs = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    plain = _ref(x, w, b, **attrs)
    r = _rand(plain.shape, 7) if residual else None
    want = fn(plain + (r if residual else 0))
    out = np.empty_like(want)
    got = CV.fused_conv(x, w, b, r, activation=act, activation_params=params, _out=out, **attrs)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_weights_changed_in_place_are_not_served_stale(path):
    """A writeable weight (a graph input) is packed on every call; read-only ones are cached."""
    x, w = _rand((1, 8, 6, 6), 8), _rand((10, 8, 3, 3), 9)
    attrs = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    first = CV.conv(x, w, None, **attrs)
    np.testing.assert_allclose(first, _ref(x, w, None, **attrs), rtol=1e-5, atol=1e-5)
    w *= 2
    np.testing.assert_allclose(CV.conv(x, w, None, **attrs), 2 * first, rtol=1e-5, atol=1e-5)


def test_tables_match_traced_example():
    """The module doc's example: 3x3, pads 1, 4x4 input -> wide rows of Wq = 6, L = 24."""
    eng = DI.engine()
    if eng is None:
        pytest.skip(f"direct kernel unavailable: {DI._state.get('why', 'HETERO_JIT=0')}")
    plan = DI._Plan(eng, (1, 2, 4, 4), (3, 2, 3, 3), 1, (1, 1), (1, 1), (1, 1), (1, 3, 4, 4), 1)
    table, mask, dst = plan.tables
    assert plan.pack and plan.S == 36
    assert table[0 * 9 + 5] == 8 and table[1 * 9 + 5] == 36 + 8  # tap (1, 2) of channels 0 and 1
    assert mask.size % eng.TILE == 0 and mask[:24].tolist() == [1, 1, 1, 1, 0, 0] * 4
    assert not mask[24:].any()
    assert int(mask[:6].sum()) == 4  # so q = 6, output (1, 0), lands at 4
    assert dst.tolist() == [int(mask[:v].sum()) for v in range(0, mask.size, eng.VW)]
    row = dict(zip(DI.PRM, plan.rows.prm[0].tolist()))
    assert (row["J"], row["L"], row["M"], row["ldy"], row["p0"], row["p1"]) == (18, 24, 3, 16, 0, eng.TILE)


def test_groups_cut_into_units():
    """Depthwise, 24 channels, 2 images, 2 threads: 4 units, each image's channels cut in two, each
    unit running 12 groups of one channel (MR = 1), the offsets stepping one plane per group."""
    eng = DI.engine()
    if eng is None:
        pytest.skip(f"direct kernel unavailable: {DI._state.get('why', 'HETERO_JIT=0')}")
    plan = DI._Plan(eng, (2, 24, 10, 9), (24, 1, 3, 3), 24, (1, 1), (1, 1), (1, 1), (2, 24, 10, 9), 2)
    rows = [dict(zip(DI.PRM, r)) for r in plan.rows.prm.tolist()]
    assert plan.MR == 1 and len(rows) == 4
    assert [r["ng"] for r in rows] == [12] * 4
    assert [r["y"] for r in rows] == [0, 12 * 90, 24 * 90, 36 * 90]  # (n * M + g0 * Mg) * OH * OW
    assert [r["w"] for r in rows] == [0, 12 * 9, 0, 12 * 9]          # g0 * blocks * J * MR
    assert [r["bias"] for r in rows] == [0, 12, 0, 12]
    assert (rows[0]["xg"], rows[0]["wg"], rows[0]["yg"], rows[0]["bg"]) == (plan.S, 9, 90, 1)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("extra", [1, 17, 33, 49])
def test_last_tile_runs_its_live_vectors(extra, residual):
    """A run of TILE + extra positions: the last tile runs 1, 2, 3 or 4 vectors (AVX-512: 16 lanes
    each), the last masked; cropped (3x3, pads 1: wide rows) and straight (1x1), with a residual."""
    eng = DI.engine()
    if eng is None:
        pytest.skip(f"direct kernel unavailable: {DI._state.get('why', 'HETERO_JIT=0')}")
    for k, p in [(1, 0), (3, 1)]:
        W = eng.TILE + extra - 2 * p  # 1x1: L = TILE + extra; 3x3: one row of Wq = TILE + extra
        x, w, b = _rand((1, 5, 1, W), extra), _rand((7, 5, k, k), 2), _rand((7,), 3)
        attrs = dict(kernel_shape=[k, k], pads=[p] * 4)
        want = _ref(x, w, b, **attrs)
        r = _rand(want.shape, 4) if residual else None
        got = CV.fused_conv(x, w, b, r, activation="Relu", **attrs)
        np.testing.assert_allclose(got, np.maximum(want + (r if residual else 0), 0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk_tiles", [1, 2])
def test_chunks(chunk_tiles, monkeypatch):
    """CHUNK_BYTES cut to one or two tiles' input: the blocks run chunk by chunk (5 tiles: the last
    chunk partial), the same output."""
    eng = DI.engine()
    if eng is None:
        pytest.skip(f"direct kernel unavailable: {DI._state.get('why', 'HETERO_JIT=0')}")
    monkeypatch.setattr(DI, "CHUNK_BYTES", 4 * 6 * eng.TILE * chunk_tiles)  # 6 channels, 1 phase
    DI._tls.plans = {}
    xs, ws = (1, 6, 5, eng.TILE - 2), (13, 6, 3, 3)  # wide rows of TILE: 5 tiles
    x, w, b = _rand(xs, 5), _rand(ws, 6), _rand((13,), 7)
    attrs = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    plan = DI._Plan(eng, xs, ws, 1, (1, 1), (1, 1), (1, 1), (1, 13, 5, eng.TILE - 2), 1)
    assert plan.rows.prm[0, DI.PRM.index("CL")] == chunk_tiles * eng.TILE
    got = CV.conv(x, w, b, **attrs)
    DI._tls.plans = {}
    np.testing.assert_allclose(got, _ref(x, w, b, **attrs), rtol=1e-5, atol=1e-5)


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv("HETERO_DIRECT", "off")
    assert DI.engine() is None
    x, w = _rand((1, 3, 5, 5), 10), _rand((4, 3, 3, 3), 11)
    y = np.empty((1, 4, 3, 3), np.float32)
    assert DI.conv2d(x, w, y, 1, (1, 1), (1, 1), (0, 0), None, None, 0, 0.0, 0.0) is False


@pytest.mark.parametrize("act,params", [("Relu", []), ("Clip", [-0.5, 0.7]), ("LeakyRelu", [0.1])])
def test_fused_activation_keeps_nan(path, act, params):
    """A NaN reaching the fused activation stays NaN, as ONNX's Relu / Clip / LeakyRelu (np.maximum,
    np.clip) give it: a NaN input pixel spoils the outputs whose window covers it, and only those."""
    x, w, b = _rand((1, 3, 6, 7), 20), _rand((5, 3, 3, 3), 21), _rand((5,), 22)
    x[0, 1, 2, 3] = np.nan
    attrs = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    got = CV.fused_conv(x, w, b, activation=act, activation_params=params, **attrs)
    nan = np.zeros((6, 7), bool)
    nan[1:4, 2:5] = True  # the outputs whose 3x3 window covers (2, 3)
    assert (np.isnan(got[0]) == nan[None]).all()
