"""The compiled vector pools (hetero/devices/cpu/kernels/vpool.py): MaxPool / AveragePool of float32
2-D planes equal ONNX's reference evaluator (or ONNX Runtime / a numpy formula where the reference is
known wrong) over strides 1..4, dilations, pads, ceil_mode and windows past the unrolled sizes; NaN
propagates; row blocks and plane ranges split as the module doc says; and what it declines goes to
the numba / numpy paths."""
import itertools

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from hetero.devices.cpu.kernels import direct, vpool
from hetero.devices.cpu.kernels import pool as PL


@pytest.fixture(autouse=True)
def compiled():
    if direct.engine() is None:
        pytest.skip(f"no LLVM compiler: {direct._state.get('why')}")


def _ref(op, x, **attrs):
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    return ReferenceEvaluator(m).run(None, {"x": x})[0]


def _spy(monkeypatch):
    """Records the arguments of every vpool.pool2d call and whether it ran."""
    calls = []
    real = vpool.pool2d

    def spy(x, y, **kw):
        ran = real(x, y, **kw)
        calls.append((tuple(kw["strides"]), tuple(kw["k"]), ran))
        return ran
    monkeypatch.setattr(vpool, "pool2d", spy)
    return calls


# (H, W), kernel, strides, dilations, pads, ceil_mode: unit and column strides 2, 3, 4 (the shuffle
# taking every s-th lane), dilated taps, uneven pads, ceil_mode windows past the end, a 9-wide
# window (over MAX_UNROLL: the generic variant's runtime tap loops), rows wider than one vector
GEOMETRIES = [((7, 9), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), 0),
              ((27, 27), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), 0),
              ((11, 37), (3, 3), (2, 2), (1, 1), (0, 0, 0, 0), 1),
              ((12, 40), (2, 3), (2, 3), (1, 1), (1, 0, 0, 2), 1),
              ((9, 35), (3, 4), (3, 4), (2, 1), (2, 1, 2, 3), 0),
              ((10, 33), (3, 2), (1, 2), (2, 3), (0, 1, 2, 1), 1),
              ((6, 20), (9, 9), (1, 1), (1, 1), (4, 4, 4, 4), 0),
              ((13, 13), (9, 8), (2, 3), (1, 1), (2, 3, 2, 3), 1),
              ((5, 5), (1, 1), (1, 1), (1, 1), (0, 0, 0, 0), 0)]


@pytest.mark.parametrize("hw,k,s,d,p,ceil", GEOMETRIES)
def test_maxpool_matches_reference(hw, k, s, d, p, ceil, monkeypatch):
    calls = _spy(monkeypatch)
    attrs = dict(kernel_shape=list(k), strides=list(s), dilations=list(d), pads=list(p), ceil_mode=ceil)
    x = np.random.default_rng(len(str(attrs))).standard_normal((2, 3) + hw).astype(np.float32)
    got = PL.max_pool(x, **attrs)
    assert [c[2] for c in calls] == [True]  # vpool ran it
    np.testing.assert_array_equal(got, _ref("MaxPool", x, **attrs))


def _avg_formula(x, k, s, p, cip, ceil):
    """AveragePool as a formula (onnx's reference misplaces ceil_mode windows): the mean of each
    window over the input and, with ``cip``, the explicit pads; a window starting past the input
    and its begin pad is dropped."""
    H, W = x.shape[2:]
    span = (H + p[0] + p[2] - k[0], W + p[1] + p[3] - k[1])
    oh, ow = ((-(-span[i] // s[i]) if ceil else span[i] // s[i]) + 1 for i in range(2))
    oh -= bool(ceil and (oh - 1) * s[0] >= H + p[0])
    ow -= bool(ceil and (ow - 1) * s[1] >= W + p[1])
    big = np.full(x.shape[:2] + (H + p[0] + p[2] + k[0] + s[0], W + p[1] + p[3] + k[1] + s[1]), np.nan)
    big[..., :H + p[0] + p[2], :W + p[1] + p[3]] = 0.0 if cip else np.nan
    big[..., p[0]:p[0] + H, p[1]:p[1] + W] = x
    out = np.empty(x.shape[:2] + (oh, ow), np.float32)
    for i in range(oh):  # (a test oracle over a few dozen outputs: loops are fine)
        for j in range(ow):
            out[..., i, j] = np.nanmean(big[..., i * s[0]:i * s[0] + k[0], j * s[1]:j * s[1] + k[1]], axis=(2, 3))
    return out


@pytest.mark.parametrize("cip", [0, 1])
@pytest.mark.parametrize("hw,k,s,d,p,ceil", [g for g in GEOMETRIES if g[3] == (1, 1)])
def test_averagepool_matches_formula(hw, k, s, d, p, ceil, cip, monkeypatch):
    calls = _spy(monkeypatch)
    attrs = dict(kernel_shape=list(k), strides=list(s), pads=list(p), ceil_mode=ceil, count_include_pad=cip)
    x = np.random.default_rng(len(str(attrs))).standard_normal((2, 3) + hw).astype(np.float32)
    got = PL.average_pool(x, **attrs)
    assert [c[2] for c in calls] == [True]
    np.testing.assert_allclose(got, _avg_formula(x, k, s, p, cip, ceil), rtol=1e-5, atol=1e-6)
    if not ceil:
        np.testing.assert_allclose(got, _ref("AveragePool", x, **attrs), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("s", [(1, 1), (2, 2)])
def test_maxpool_keeps_nan(s):
    # np.maximum's semantics: a NaN in a window wins over any number, whichever tap (first, later,
    # in the column pass or the row pass) brings it
    x = np.arange(2 * 9 * 20, dtype=np.float32).reshape(1, 2, 9, 20)
    for r, c in [(0, 0), (4, 7), (8, 19), (3, 16)]:
        x[0, 1, r, c] = np.nan
    attrs = dict(kernel_shape=[3, 3], strides=list(s), pads=[1, 1, 1, 1])
    got = PL.max_pool(x, **attrs)
    want = np.lib.stride_tricks.sliding_window_view(
        np.pad(x, [(0, 0), (0, 0), (1, 1), (1, 1)], constant_values=-np.inf), (3, 3), axis=(2, 3))
    want = want.max(axis=(4, 5))[:, :, ::s[0], ::s[1]]  # (numpy's max propagates NaN)
    assert np.isnan(got).sum() == np.isnan(want).sum() > 0
    np.testing.assert_array_equal(got, want)


def test_traced_example():
    # the module doc: 3x3, stride 1, pads 1 on a 4x4 plane; output (0, 0) is max(id, r0, r1) over
    # input rows 0 and 1, output (0, 3) max(r2, r3, id)
    x = np.random.default_rng(4).permutation(16).astype(np.float32).reshape(1, 1, 4, 4)
    y = np.empty((1, 1, 4, 4), np.float32)
    assert vpool.pool2d(x, y, k=(3, 3), strides=(1, 1), dilations=(1, 1), pb=(1, 1), mode=vpool.MODE_MAX)
    assert y[0, 0, 0, 0] == x[0, 0, :2, :2].max()
    assert y[0, 0, 0, 3] == x[0, 0, :2, 2:].max()


def test_row_blocks(monkeypatch):
    # BUF_FLOATS small: one row buffer per block (RB = 1) and, at 3, blocks of 3 rows with a
    # partial last block (11 output rows). Row buffer: 21 columns + 1 pad, and room for the last
    # output vector's taps: 2 vectors (+ 2 taps), whole vectors
    eng = direct.engine()
    x = np.random.default_rng(5).standard_normal((1, 4, 11, 21)).astype(np.float32)
    attrs = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    want = _ref("MaxPool", x, **attrs)
    Wt = -(-(-(-21 // eng.VW) * eng.VW + 2) // eng.VW) * eng.VW
    for rows in (1, 3):
        monkeypatch.setattr(vpool, "BUF_FLOATS", rows * Wt)
        vpool._tls.plans = {}
        p = vpool._Plan(eng, vpool.MODE_MAX, x.shape, (3, 3), (1, 1), (1, 1), (1, 1), (11, 21), 1)
        assert p.rows.prm[0, vpool.PRM.index("Wt")] == Wt and p.rows.prm[0, vpool.PRM.index("RB")] == rows
        np.testing.assert_array_equal(PL.max_pool(x, **attrs), want)
    vpool._tls.plans = {}


def test_planes_split_over_two_threads(pool_task_counts, monkeypatch):
    monkeypatch.setattr(vpool, "MIN_PARALLEL_TAPS", 0)
    vpool._tls.plans = {}
    x = np.random.default_rng(6).standard_normal((2, 5, 9, 9)).astype(np.float32)
    attrs = dict(kernel_shape=[3, 3], strides=[2, 2])
    got = PL.max_pool(x, **attrs)
    vpool._tls.plans = {}
    assert pool_task_counts == [8]  # 10 planes cut into four ranges per thread
    np.testing.assert_array_equal(got, _ref("MaxPool", x, **attrs))


def test_declines_what_it_cannot_run(monkeypatch):
    # a column stride over 4 and negative pads are not vpool's: the numba / numpy paths run them
    calls = _spy(monkeypatch)
    x = np.random.default_rng(7).standard_normal((1, 2, 8, 30)).astype(np.float32)
    attrs = dict(kernel_shape=[2, 5], strides=[1, 5])
    np.testing.assert_array_equal(PL.max_pool(x, **attrs), _ref("MaxPool", x, **attrs))
    assert calls == [((1, 5), (2, 5), False)]
    y = np.empty((1, 2, 8, 30), np.float32)
    assert not vpool.pool2d(x, y, k=(1, 1), strides=(1, 1), dilations=(1, 1), pb=(0, -1), mode=vpool.MODE_MAX)
    # float64 never reaches it
    calls.clear()
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(PL.max_pool(x64, kernel_shape=[3, 3]), _ref("MaxPool", x, kernel_shape=[3, 3]))
    assert calls == []


def test_variants_by_window(monkeypatch):
    # windows up to MAX_UNROLL get their own variant (tap loops unrolled), bigger ones share the
    # generic one (KH = KW = 0)
    eng = direct.engine()
    keys = []
    real = eng.variant
    monkeypatch.setattr(eng, "variant", lambda key, build, name: keys.append(key) or real(key, build, name))
    for k in [(3, 3), (9, 9), (8, 2)]:
        vpool._Plan(eng, vpool.MODE_SUM, (1, 1, 20, 20), k, (2, 1), (1, 1), (0, 0), (6, 20 - k[1] + 1), 1)
    assert keys == [("pool", vpool.MODE_SUM, 1, 3, 3), ("pool", vpool.MODE_SUM, 1, 0, 0),
                    ("pool", vpool.MODE_SUM, 1, 0, 0)]


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_many_shapes_against_numba(op):
    # the same pools through vpool and through numba's kernels (float64 input, cast back): every
    # combination of small kernel, stride and pad
    rng = np.random.default_rng(8)
    fn = PL.max_pool if op == "MaxPool" else PL.average_pool
    for (kh, kw), (sh, sw), pad in itertools.product([(2, 2), (3, 3), (1, 3)], [(1, 1), (2, 2), (1, 3)], [0, 1]):
        if pad >= min(kh, kw):
            continue
        x = rng.standard_normal((1, 3, 10, 19)).astype(np.float32)
        attrs = dict(kernel_shape=[kh, kw], strides=[sh, sw], pads=[pad] * 4)
        np.testing.assert_allclose(fn(x, **attrs), fn(x.astype(np.float64), **attrs).astype(np.float32),
                                   rtol=1e-6, atol=1e-6, err_msg=str(attrs))


# ---- the global pools (vpool.planes): one window over each whole plane ----

@pytest.mark.parametrize("hw", [(1, 1), (4, 4), (2, 8), (7, 7), (13, 13), (5, 19)])
def test_global_pools_match_numpy(hw, monkeypatch):
    # planes shorter than, exactly, and longer than a vector, with a tail; two images; NaN in one
    # plane (the max keeps it, the mean too)
    calls = []
    real = vpool.planes
    monkeypatch.setattr(vpool, "planes", lambda x, y, mode: calls.append(mode) or real(x, y, mode))
    x = np.random.default_rng(hw[0] * 100 + hw[1]).standard_normal((2, 5) + hw).astype(np.float32)
    x[1, 2].flat[-1] = np.nan
    want_mean = x.astype(np.float64).mean(axis=(2, 3), keepdims=True)
    want_max = x.max(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(PL.global_average_pool(x), want_mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(PL.global_max_pool(x), want_max)
    # an AveragePool / MaxPool whose one window is the plane, unpadded: the same kernel
    np.testing.assert_allclose(PL.average_pool(x, kernel_shape=list(hw)), want_mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(PL.max_pool(x, kernel_shape=list(hw)), want_max)
    assert calls == [vpool.MODE_SUM, vpool.MODE_MAX, vpool.MODE_SUM, vpool.MODE_MAX]


def test_global_pool_planes_split_over_two_threads(pool_task_counts, monkeypatch):
    monkeypatch.setattr(vpool, "MIN_PARALLEL_TAPS", 0)
    vpool._tls.planes = {}
    x = np.random.default_rng(9).standard_normal((1, 10, 6, 6)).astype(np.float32)
    got = PL.global_average_pool(x)
    vpool._tls.planes = {}
    assert pool_task_counts == [8]  # 10 planes in four ranges per thread
    np.testing.assert_allclose(got, x.mean(axis=(2, 3), keepdims=True), rtol=1e-6, atol=1e-7)


def test_pools_write_into_the_plan_buffer():
    # given the memory plan's buffer (here: a channel slice of a Concat's buffer, contiguous for
    # one image), the compiled pools write into it; a buffer that does not fit gets a new array
    x = np.random.default_rng(10).standard_normal((1, 4, 9, 9)).astype(np.float32)
    cat = np.zeros((1, 10, 4, 4), np.float32)
    out = cat[:, 2:6]
    got = PL.max_pool(x, kernel_shape=[3, 3], strides=[2, 2], _out=out)
    assert got is out
    np.testing.assert_array_equal(cat[:, 2:6], _ref("MaxPool", x, kernel_shape=[3, 3], strides=[2, 2]))
    assert not cat[:, :2].any() and not cat[:, 6:].any()
    g = np.empty((1, 4, 1, 1), np.float32)
    assert PL.global_average_pool(x, _out=g) is g and PL.average_pool(x, kernel_shape=[9, 9], _out=g) is g
    wrong = np.empty((1, 4, 5, 5), np.float32)
    got = PL.average_pool(x, kernel_shape=[3, 3], strides=[2, 2], _out=wrong)
    assert got is not wrong and got.shape == (1, 4, 4, 4)
