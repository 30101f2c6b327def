"""CPU kernels: reductions (Reduce*, ArgMax/ArgMin), scans (CumSum/CumProd), TopK, softmax family,
LpNormalization, Det and Einsum."""
from __future__ import annotations

import math

import numpy as np

from ..registry import kernel

# --------------------------------------------------------------------------------------------------
# helpers


def _is_native_float(dt: np.dtype) -> bool:
    return dt.kind == "f" and dt in (np.dtype(np.float32), np.dtype(np.float64))


def _is_floatlike(dt: np.dtype) -> bool:
    # ml_dtypes types (bfloat16, float8*) have kind 'V' or 'f' depending on version
    return dt.kind == "f" or dt.kind == "V"


def _norm_axis(axis: int, rank: int, what: str = "axis") -> int:
    a = int(axis)
    if not -max(rank, 1) <= a < max(rank, 1):
        raise ValueError(f"{what} {axis} is out of range for a tensor of rank {rank}")
    return a + rank if a < 0 else a


def _resolve_axes(x: np.ndarray, axes, noop_with_empty_axes: int):
    """Normalised axes tuple, or None meaning 'no-op' (return input unchanged)."""
    if axes is not None:
        axes = np.asarray(axes).astype(np.int64, copy=False).reshape(-1).tolist()
    if not axes:
        if noop_with_empty_axes:
            return None
        return tuple(range(x.ndim))
    rank = x.ndim
    out = []
    for a in axes:
        if not -rank <= a < max(rank, 1):
            raise ValueError(f"reduction axis {a} out of range for a tensor of rank {rank}")
        a = a + rank if a < 0 else a
        if a not in out:
            out.append(a)
    return tuple(sorted(out))


def _empty_reduction(x: np.ndarray, axes) -> bool:
    return x.size == 0 or any(x.shape[a] == 0 for a in axes)


def _out_shape(x: np.ndarray, axes, keepdims: int):
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    return tuple(d for i, d in enumerate(x.shape) if i not in axes)


def _finish(r, x_dtype: np.dtype, shape) -> np.ndarray:
    r = np.asarray(r)
    if r.dtype != x_dtype:
        if x_dtype.kind in "iu" and r.dtype.kind == "f":
            with np.errstate(invalid="ignore"):
                r = np.trunc(r)
        r = r.astype(x_dtype)
    return r.reshape(shape)


def _reduce(x, axes, keepdims, noop_with_empty_axes, fn, empty_value):
    """Generic driver: ``fn(xc, axes)`` computes the reduction with keepdims=True on the compute array."""
    x = np.asarray(x)
    ax = _resolve_axes(x, axes, noop_with_empty_axes)
    if ax is None:
        # no axes: each element is reduced over a singleton set (x for sum/mean/max/min/prod,
        # x**2 for ReduceSumSquare, log(x) for ReduceLogSum, |x| for ReduceL1/L2, ...)
        if fn in (_sum, _mean, _max, _min, _prod):
            return x
        ax = ()
    shape = _out_shape(x, ax, keepdims)
    if _empty_reduction(x, ax):
        if x.dtype.kind in "iu" and isinstance(empty_value, float) and not np.isfinite(empty_value):
            info = np.iinfo(x.dtype)
            empty_value = info.min if empty_value < 0 else info.max
        elif x.dtype == bool and isinstance(empty_value, float) and not np.isfinite(empty_value):
            empty_value = empty_value > 0
        return np.full(shape, empty_value, dtype=x.dtype)
    xc = x
    if _is_floatlike(x.dtype) and not _is_native_float(x.dtype):
        xc = x.astype(np.float32)
    r = fn(xc, ax)
    return _finish(r, x.dtype, shape)


def _sum(xc, ax):
    return np.sum(xc, axis=ax, keepdims=True)


def _mean(xc, ax):
    if xc.dtype.kind in "iub":
        return np.mean(xc, axis=ax, keepdims=True, dtype=np.float64)
    return np.mean(xc, axis=ax, keepdims=True)


def _max(xc, ax):
    return np.max(xc, axis=ax, keepdims=True)


def _min(xc, ax):
    return np.min(xc, axis=ax, keepdims=True)


def _prod(xc, ax):
    return np.prod(xc, axis=ax, keepdims=True)


def _l1(xc, ax):
    return np.sum(np.abs(xc), axis=ax, keepdims=True)


def _l2(xc, ax):
    if xc.dtype.kind in "iu":
        s = np.sum(xc.astype(np.float64) ** 2, axis=ax, keepdims=True)
    else:
        s = np.sum(np.square(xc), axis=ax, keepdims=True)
    return np.sqrt(s)


def _logsum(xc, ax):
    s = np.sum(xc, axis=ax, keepdims=True)
    if s.dtype.kind in "iu":
        s = s.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(s)


def _logsumexp(xc, ax):
    if xc.dtype.kind in "iu":
        xc = xc.astype(np.float64)
    m = np.max(xc, axis=ax, keepdims=True)
    m = np.where(np.isfinite(m), m, np.zeros_like(m))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.log(np.sum(np.exp(xc - m), axis=ax, keepdims=True)) + m


def _sumsquare(xc, ax):
    return np.sum(np.square(xc), axis=ax, keepdims=True)


_REDUCERS = {
    # name: (fn, value of an empty reduction, axes-as-input since)
    "ReduceSum": (_sum, 0, 13),
    "ReduceMean": (_mean, float("nan"), 18),
    "ReduceMax": (_max, float("-inf"), 18),
    "ReduceMin": (_min, float("inf"), 18),
    "ReduceProd": (_prod, 1, 18),
    "ReduceL1": (_l1, 0, 18),
    "ReduceL2": (_l2, 0, 18),
    "ReduceLogSum": (_logsum, float("-inf"), 18),
    "ReduceLogSumExp": (_logsumexp, float("-inf"), 18),
    "ReduceSumSquare": (_sumsquare, 0, 18),
}


def _make_reducers():
    for op, (fn, empty, input_since) in _REDUCERS.items():

        def attr_form(data, *, axes=None, keepdims=1, _fn=fn, _empty=empty):
            return _reduce(data, axes, keepdims, 0, _fn, _empty)

        def input_form(data, axes=None, *, keepdims=1, noop_with_empty_axes=0, _fn=fn, _empty=empty):
            return _reduce(data, axes, keepdims, noop_with_empty_axes, _fn, _empty)

        kernel(op, since=1)(_hide_bound(attr_form, f"{op}_attr_axes", lambda f: (
            lambda data, *, axes=None, keepdims=1: f(data, axes=axes, keepdims=keepdims))))
        kernel(op, since=input_since)(_hide_bound(input_form, f"{op}_input_axes", lambda f: (
            lambda data, axes=None, *, keepdims=1, noop_with_empty_axes=0:
            f(data, axes, keepdims=keepdims, noop_with_empty_axes=noop_with_empty_axes))))


def _hide_bound(f, name, wrap):
    """Wrap ``f`` so that its bound ``_fn``/``_empty`` defaults are not seen as ONNX attributes."""
    g = wrap(f)
    g.__name__ = g.__qualname__ = name
    return g


_make_reducers()

# --------------------------------------------------------------------------------------------------
# ArgMax / ArgMin


def _arg(x, axis, keepdims, select_last_index, fn):
    x = np.asarray(x)
    if x.dtype.kind == "V" or (x.dtype.kind == "f" and not _is_native_float(x.dtype)):
        x = x.astype(np.float32)
    if x.ndim == 0:
        return np.zeros((), dtype=np.int64)
    axis = _norm_axis(axis, x.ndim)
    n = x.shape[axis]
    if n == 0:
        raise ValueError("ArgMax/ArgMin over an empty axis")
    if select_last_index:
        r = (n - 1) - fn(np.flip(x, axis=axis), axis=axis, keepdims=True)
    else:
        r = fn(x, axis=axis, keepdims=True)
    r = r.astype(np.int64, copy=False)
    if not keepdims:
        r = np.squeeze(r, axis=axis)
    return r


@kernel("ArgMax", since=1)
def argmax(data, *, axis=0, keepdims=1, select_last_index=0):
    return _arg(data, axis, keepdims, select_last_index, np.argmax)


@kernel("ArgMin", since=1)
def argmin(data, *, axis=0, keepdims=1, select_last_index=0):
    return _arg(data, axis, keepdims, select_last_index, np.argmin)


# --------------------------------------------------------------------------------------------------
# CumSum / CumProd


def _scan_axis(axis) -> int:
    a = np.asarray(axis)
    if a.size != 1:
        raise ValueError(f"axis must be a scalar (or 1-element tensor), got shape {a.shape}")
    return int(a.reshape(-1)[0])


def _cum(x, axis, exclusive, reverse, fn, identity):
    x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError("cumulative ops need a tensor of rank >= 1")
    ax = _norm_axis(_scan_axis(axis), x.ndim)
    xc = x.astype(np.float32) if (_is_floatlike(x.dtype) and not _is_native_float(x.dtype)) else x
    if reverse:
        xc = np.flip(xc, axis=ax)
    r = fn(xc, axis=ax, dtype=xc.dtype)
    if exclusive:
        pad_shape = list(r.shape)
        pad_shape[ax] = 1
        head = np.full(pad_shape, identity, dtype=r.dtype)
        body = np.take(r, np.arange(0, max(r.shape[ax] - 1, 0)), axis=ax)
        r = np.concatenate([head, body], axis=ax)
        if x.shape[ax] == 0:
            r = np.take(r, np.arange(0), axis=ax)
    if reverse:
        r = np.flip(r, axis=ax)
    return np.ascontiguousarray(r.astype(x.dtype, copy=False))


@kernel("CumSum", since=11)
def cumsum(x, axis, *, exclusive=0, reverse=0):
    return _cum(x, axis, exclusive, reverse, np.cumsum, 0)


@kernel("CumProd", since=1)
def cumprod(x, axis, *, exclusive=0, reverse=0):
    return _cum(x, axis, exclusive, reverse, np.cumprod, 1)


# --------------------------------------------------------------------------------------------------
# TopK


def _topk(x, k, axis, largest, sorted_):
    # the result is always sorted (sorted=0 leaves the order unspecified)
    x = np.asarray(x)
    k = int(np.asarray(k).reshape(-1)[0])
    if x.ndim == 0:
        raise ValueError("TopK needs a tensor of rank >= 1")
    ax = _norm_axis(axis, x.ndim)
    n = x.shape[ax]
    if k < 0 or k > n:
        raise ValueError(f"TopK: k={k} out of range for axis of size {n}")
    xs = x.astype(np.float32) if (x.dtype.kind == "V" or (x.dtype.kind == "f" and not _is_native_float(x.dtype))) else x
    if largest:
        # descending value, ties by ascending index: stable-sort the flipped axis, reverse, map back
        order = np.argsort(np.flip(xs, axis=ax), axis=ax, kind="stable")
        order = np.flip(order, axis=ax)
        idx = (n - 1) - np.take(order, np.arange(k), axis=ax)
    else:
        order = np.argsort(xs, axis=ax, kind="stable")
        idx = np.take(order, np.arange(k), axis=ax)
    idx = idx.astype(np.int64, copy=False)
    vals = np.take_along_axis(x, idx, axis=ax)
    return vals, idx


@kernel("TopK", since=1)
def topk_v1(x, *, k, axis=-1):
    return _topk(x, k, axis, 1, 1)


@kernel("TopK", since=10)
def topk_v10(x, k, *, axis=-1):
    return _topk(x, k, axis, 1, 1)


@kernel("TopK", since=11)
def topk(x, k, *, axis=-1, largest=1, sorted=1):
    return _topk(x, k, axis, largest, sorted)


# --------------------------------------------------------------------------------------------------
# Softmax / LogSoftmax / Hardmax


def _as_2d(x, axis):
    ax = _norm_axis(axis, x.ndim) if x.ndim else 0
    return x.reshape(math.prod(x.shape[:ax]), math.prod(x.shape[ax:]))


def _softmax_core(xc, axis, log, out=None):
    if out is not None and not log and xc.shape[axis]:
        # the common case in a few calls: with every row's max finite, x - max <= 0, so exp
        # cannot overflow and each row's sum is >= 1 (no errstate, no where; a classifier's
        # Softmax over 1000 classes: 35 -> about 19 us). A row with NaN or inf: the general path
        m = np.max(xc, axis=axis, keepdims=True)
        if np.isfinite(m).all():
            e = np.subtract(xc, m, out=out)
            np.exp(e, out=e)
            return np.divide(e, np.add.reduce(e, axis=axis, keepdims=True), out=e)
    m = np.max(xc, axis=axis, keepdims=True) if xc.shape[axis] else np.zeros(())
    m = np.where(np.isfinite(m), m, np.zeros_like(m))
    # a fresh array (or the caller's out buffer): the in-place steps below never touch x
    e = np.subtract(xc, m, dtype=xc.dtype, out=out)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if log:
            lse = np.log(np.sum(np.exp(e), axis=axis, keepdims=True))
            return np.subtract(e, lse, out=e)
        np.exp(e, out=e)
        return np.divide(e, np.sum(e, axis=axis, keepdims=True), out=e)


def _softmax(x, axis, log, flatten, out=None):
    x = np.asarray(x)
    if (out is not None and x.size and x.ndim and _is_native_float(x.dtype) and out.dtype == x.dtype
            and out.shape == x.shape and out.flags.c_contiguous):
        # written straight into the executor's buffer (a reshape of a contiguous array is a view)
        if flatten:
            _softmax_core(_as_2d(x, axis), 1, log, _as_2d(out, axis))
        else:
            _softmax_core(x, _norm_axis(axis, x.ndim), log, out)
        return out
    # float16 stays float16 (as onnx's expected outputs are computed); bfloat16/float8 go via float32
    xc = x if (_is_native_float(x.dtype) or x.dtype == np.float16) else x.astype(np.float32)
    if x.size == 0:
        return x.copy()
    if x.ndim == 0:
        r = np.zeros((), xc.dtype) if log else np.ones((), xc.dtype)
        return r.astype(x.dtype)
    if flatten:
        r = _softmax_core(_as_2d(xc, axis), 1, log).reshape(x.shape)
    else:
        r = _softmax_core(xc, _norm_axis(axis, x.ndim), log)
    return r.astype(x.dtype, copy=False)


def _hardmax(x, axis, flatten):
    x = np.asarray(x)
    if x.size == 0:
        return x.copy()
    if x.ndim == 0:
        return np.ones((), dtype=x.dtype)
    xs = x if x.dtype.kind in "fiu" and x.dtype.kind != "V" else x.astype(np.float32)
    if flatten:
        x2 = _as_2d(xs, axis)
        ax = 1
    else:
        x2 = xs
        ax = _norm_axis(axis, x.ndim)
    idx = np.argmax(x2, axis=ax)
    out = np.zeros(x2.shape, dtype=x.dtype)
    np.put_along_axis(out, np.expand_dims(idx, ax), np.ones((), dtype=x.dtype), axis=ax)
    return out.reshape(x.shape)


@kernel("Softmax", since=1)
def softmax_v1(input, *, axis=1, _out=None):
    return _softmax(input, axis, False, True, _out)


@kernel("Softmax", since=13)
def softmax(input, *, axis=-1, _out=None):
    return _softmax(input, axis, False, False, _out)


@kernel("LogSoftmax", since=1)
def log_softmax_v1(input, *, axis=1, _out=None):
    return _softmax(input, axis, True, True, _out)


@kernel("LogSoftmax", since=13)
def log_softmax(input, *, axis=-1, _out=None):
    return _softmax(input, axis, True, False, _out)


@kernel("Hardmax", since=1)
def hardmax_v1(input, *, axis=1):
    return _hardmax(input, axis, True)


@kernel("Hardmax", since=13)
def hardmax(input, *, axis=-1):
    return _hardmax(input, axis, False)


# --------------------------------------------------------------------------------------------------
# LpNormalization


@kernel("LpNormalization", since=1)
def lp_normalization(input, *, axis=-1, p=2):
    x = np.asarray(input)
    if x.ndim == 0:
        raise ValueError("LpNormalization needs a tensor of rank >= 1")
    ax = _norm_axis(axis, x.ndim)
    xc = x if _is_native_float(x.dtype) else x.astype(np.float32)
    if p == 1:
        norm = np.sum(np.abs(xc), axis=ax, keepdims=True)
    elif p == 2:
        norm = np.sqrt(np.sum(np.square(xc), axis=ax, keepdims=True))
    else:
        raise ValueError(f"LpNormalization: p must be 1 or 2, got {p}")
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(norm == 0, np.zeros((), xc.dtype), xc / norm)
    return r.astype(x.dtype, copy=False)


# --------------------------------------------------------------------------------------------------
# Det / Einsum


@kernel("Det", since=11)
def det(X):
    x = np.asarray(X)
    if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"Det needs [..., M, M] input, got shape {x.shape}")
    xc = x if _is_native_float(x.dtype) else x.astype(np.float32)
    return np.asarray(np.linalg.det(xc)).astype(x.dtype, copy=False)


@kernel("Einsum", since=12)
def einsum(*inputs, equation):
    eq = equation.replace(" ", "")
    arrs = [np.asarray(a) for a in inputs]
    if not arrs:
        raise ValueError("Einsum needs at least one input")
    dt = arrs[0].dtype
    conv = [a if (a.dtype.kind in "iub" or _is_native_float(a.dtype)) else a.astype(np.float32) for a in arrs]
    r = np.einsum(eq, *conv, optimize=len(conv) > 1)
    return np.asarray(r).astype(dt, copy=False)
