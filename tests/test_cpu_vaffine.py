"""The compiled per-channel affine of inference BatchNormalization (hetero/devices/cpu/kernels/
vaffine.py): BatchNormalization and FusedBatchNormalization (+ Relu / Clip / LeakyRelu) of float32
equal the numpy formula, NaN kept as np.maximum / np.clip keep it, over planes shorter and longer
than a vector, several images and 3-D / 5-D inputs, on one thread and split over two."""
import numpy as np
import pytest

from hetero.devices.cpu.kernels import direct, vaffine
from hetero.devices.cpu.kernels import nn as NN


@pytest.fixture(autouse=True)
def compiled():
    if direct.engine() is None:
        pytest.skip(f"no LLVM compiler: {direct._state.get('why')}")


ACTS = {"": (lambda r: r, []), "Relu": (lambda r: np.maximum(r, 0), []),
        "Clip": (lambda r: np.clip(r, -0.3, 0.4), [-0.3, 0.4]),
        "LeakyRelu": (lambda r: np.where(r < 0, r * 0.2, r), [0.2])}


def _spy(monkeypatch):
    calls = []
    real = vaffine.affine
    monkeypatch.setattr(vaffine, "affine", lambda *a: calls.append(a[4]) or real(*a))
    return calls


@pytest.mark.parametrize("act", sorted(ACTS))
@pytest.mark.parametrize("shape", [(1, 6, 9, 11), (2, 5, 3, 3), (1, 4, 1, 1), (3, 7, 21), (1, 3, 2, 4, 5)])
def test_matches_formula(shape, act, monkeypatch):
    calls = _spy(monkeypatch)
    rng = np.random.default_rng(len(shape) * 10 + shape[1])
    x = rng.standard_normal(shape).astype(np.float32)
    x.flat[::17] = np.nan
    C = shape[1]
    s, b, m = (rng.standard_normal(C).astype(np.float32) for _ in range(3))
    v = np.abs(rng.standard_normal(C)).astype(np.float32) + 0.1
    sh = (1, C) + (1,) * (len(shape) - 2)
    fn, params = ACTS[act]
    want = fn((x - m.reshape(sh)) / np.sqrt(v.reshape(sh) + 1e-5) * s.reshape(sh) + b.reshape(sh))
    if act:
        got = NN.fused_batch_normalization(x, s, b, m, v, activation=act, activation_params=params)
    else:
        got = NN.batch_normalization(x, s, b, m, v)
    assert calls == [{"": 0, "Relu": 1, "Clip": 2, "LeakyRelu": 3}[act]]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)  # (NaN where want has NaN)


def test_planes_split_over_two_threads(pool_task_counts, monkeypatch):
    monkeypatch.setattr(vaffine, "MIN_PARALLEL_ELEMS", 0)
    vaffine._tls.plans = {}
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 5, 6, 6)).astype(np.float32)
    s, b, m = (rng.standard_normal(5).astype(np.float32) for _ in range(3))
    v = np.ones(5, np.float32)
    got = NN.fused_batch_normalization(x, s, b, m, v, activation="Relu")
    vaffine._tls.plans = {}
    assert pool_task_counts == [8]  # 10 planes, four ranges per thread
    a = (s / np.sqrt(v + 1e-5)).reshape(1, 5, 1, 1)
    np.testing.assert_allclose(got, np.maximum(x * a + (b - m * a.reshape(5)).reshape(1, 5, 1, 1), 0), rtol=1e-5, atol=1e-6)


def test_float64_takes_the_numba_path(monkeypatch):
    calls = _spy(monkeypatch)
    x = np.random.default_rng(6).standard_normal((1, 3, 4, 4))
    one = np.ones(3)
    np.testing.assert_allclose(NN.fused_batch_normalization(x, one, 0 * one, 0 * one, one, epsilon=0.0,
                                                            activation="Relu"), np.maximum(x, 0))
    assert calls == []
