"""Random generators: RandomUniform(Like), RandomNormal(Like), Bernoulli, Multinomial.

Values are drawn from numpy's PCG64 generator; a ``seed`` attribute makes a node deterministic
(same seed -> same values on every run), but the streams differ from other runtimes', as ONNX allows.
"""
from __future__ import annotations

import numpy as np

from ..registry import kernel


def _np_dtype(onnx_type: int):
    from onnx.helper import tensor_dtype_to_np_dtype

    try:
        return np.dtype(tensor_dtype_to_np_dtype(int(onnx_type)))
    except Exception:
        raise ValueError(f"unsupported dtype {onnx_type}") from None


def _rng(seed):
    if seed is None:
        return np.random.default_rng()
    s = float(seed)
    # the seed is a float attribute: use its bit pattern so 1.5 and 1.0 differ
    return np.random.default_rng(int(np.float64(s).view(np.uint64)))


def _float_out(dt, what):
    dt = np.dtype(dt)
    if dt.kind != "f" and dt.name != "bfloat16":
        raise ValueError(f"{what} output dtype must be a float type, got {dt}")
    return dt


def _shape(shape):
    if shape is None:
        raise ValueError("the shape attribute is required")
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise ValueError(f"shape must be non-negative, got {list(shape)}")
    return shape


@kernel("RandomUniform", since=1)
def random_uniform(*, dtype=1, high=1.0, low=0.0, seed=None, shape=None):
    dt = _float_out(_np_dtype(dtype), "RandomUniform")
    return _rng(seed).uniform(low, high, _shape(shape)).astype(dt)


@kernel("RandomNormal", since=1)
def random_normal(*, dtype=1, mean=0.0, scale=1.0, seed=None, shape=None):
    dt = _float_out(_np_dtype(dtype), "RandomNormal")
    return _rng(seed).normal(mean, scale, _shape(shape)).astype(dt)


def _like_dtype(x, dtype):
    if dtype is not None:
        return _np_dtype(dtype)
    return np.asarray(x).dtype


@kernel("RandomUniformLike", since=1)
def random_uniform_like(input, *, dtype=None, high=1.0, low=0.0, seed=None):
    dt = _float_out(_like_dtype(input, dtype), "RandomUniformLike")
    return _rng(seed).uniform(low, high, np.shape(input)).astype(dt)


@kernel("RandomNormalLike", since=1)
def random_normal_like(input, *, dtype=None, mean=0.0, scale=1.0, seed=None):
    dt = _float_out(_like_dtype(input, dtype), "RandomNormalLike")
    return _rng(seed).normal(mean, scale, np.shape(input)).astype(dt)


@kernel("Bernoulli", since=15)
def bernoulli(input, *, dtype=None, seed=None):
    p = np.asarray(input)
    dt = _like_dtype(p, dtype)
    u = _rng(seed).random(p.shape)
    return (u < p.astype(np.float64)).astype(dt)


@kernel("Multinomial", since=7)
def multinomial(input, *, dtype=6, sample_size=1, seed=None):
    logits = np.asarray(input, dtype=np.float64)
    if logits.ndim != 2:
        raise ValueError(f"Multinomial input must be [batch, classes], got shape {logits.shape}")
    dt = _np_dtype(dtype)
    if dt not in (np.dtype(np.int32), np.dtype(np.int64)):
        raise ValueError(f"Multinomial dtype must be int32 or int64, got {dt}")
    n = int(sample_size)
    if n < 0:
        raise ValueError(f"sample_size must be non-negative, got {n}")
    batch, k = logits.shape
    if k == 0:
        raise ValueError("Multinomial needs at least one class")
    m = logits.max(axis=1, keepdims=True)
    p = np.exp(logits - m)
    cdf = np.cumsum(p, axis=1)
    cdf /= cdf[:, -1:]
    u = _rng(seed).random((batch, n))
    # class = number of cdf entries strictly below u (vectorised inverse-CDF sampling)
    idx = (u[:, :, None] >= cdf[:, None, :]).sum(axis=-1)
    return np.minimum(idx, k - 1).astype(dt)
