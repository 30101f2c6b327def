"""Elementwise CPU kernels: unary math, broadcasting binary arithmetic, comparisons, logic,
variadic Max/Min/Sum/Mean, Where, Clip and activations.

Every kernel keeps ONNX's output dtype exactly: numpy ufuncs are called so that float32 stays
float32 (NEP 50 keeps Python scalars weak), and results whose dtype drifted (ml_dtypes' bfloat16,
mixed-dtype Pow, ...) are cast back. Numpy may hand back 0-d results as numpy scalars; ``_arr``
turns them into arrays again.

Kernels declaring ``_out`` (see hetero.devices.cpu.registry) write their result into that
preallocated array when its shape and dtype are exactly the result's (``_fits``/``_fits2``), via the
ufuncs' ``out=``; otherwise they ignore it and allocate as before.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from ..registry import kernel
from . import parallel

_SIGNED_INT = "i"
_INT_KINDS = "iu"


# ---- helpers -----------------------------------------------------------------------------------

def _arr(r, dtype=None) -> np.ndarray:
    """``r`` as an ndarray of ``dtype`` (no copy when it already is one)."""
    if type(r) is not np.ndarray:
        r = np.asarray(r)
    if dtype is not None and r.dtype != dtype:
        r = r.astype(dtype)
    return r


def _fits(out, x: np.ndarray) -> bool:
    """``out`` can take the same-shape, same-dtype result of an elementwise op on ``x``."""
    return out is not None and out.dtype == x.dtype and out.shape == x.shape


def _fits2(out, a: np.ndarray, b: np.ndarray) -> bool:
    """``out`` can take ``ufunc(a, b)`` in a's dtype: both operands have out's dtype and one has its
    shape. Then numpy either fills exactly ``out`` or raises (the broadcast is bigger than ``out``:
    wrong shape inference), which callers catch to fall back to allocating."""
    if out is None:
        return False
    dt = out.dtype
    return a.dtype == dt and b.dtype == dt and (out.shape == a.shape or out.shape == b.shape)


def _into(ufunc, a: np.ndarray, b: np.ndarray, out):
    """``ufunc(a, b)`` written into ``out`` when ``_fits2`` allows it; None when it does not or
    numpy refuses the shapes (the caller then allocates)."""
    if not _fits2(out, a, b):
        return None
    try:
        return ufunc(a, b, out=out)
    except ValueError:
        return None


def _fwork(x: np.ndarray) -> np.ndarray:
    """``x`` in a dtype numpy ufuncs handle natively (bfloat16/float8 -> float32)."""
    if x.dtype.kind == "V":
        return x.astype(np.float32)
    return x


def _legacy_b(a: np.ndarray, b: np.ndarray, broadcast: int, axis) -> np.ndarray:
    """Opset < 7 broadcasting: with ``broadcast=1`` and ``axis``, B's dims align with A's from ``axis``."""
    if broadcast and axis is not None and b.ndim and b.ndim < a.ndim:
        ax = axis + a.ndim if axis < 0 else axis
        trailing = a.ndim - ax - b.ndim
        if trailing < 0:
            raise ValueError(f"legacy broadcast: axis={axis} does not fit shapes {a.shape} and {b.shape}")
        if trailing:
            b = b.reshape(b.shape + (1,) * trailing)
    return b


def _quiet(fn):
    """Run ``fn`` with numpy's floating-point warnings off (inf * 0, overflow in exp, ...): results
    follow IEEE semantics, which is what ONNX expects."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)
    return wrapper


def _unary(op, fn, since=1, legacy=False, keep_dtype=True, domain=""):
    """Register a unary kernel ``fn(x)``; float math on ml_dtypes inputs runs in float32. When ``fn``
    carries ``.ufunc`` (float math, see ``_ffn``), float inputs go through it with ``out=_out``."""
    uf = getattr(fn, "ufunc", None)
    if uf is not None and legacy:
        def k(x, *, consumed_inputs=None, _out=None):
            if _fits(_out, x) and x.dtype.kind == "f":
                with np.errstate(all="ignore"):
                    return uf(x, out=_out)
            return _arr(fn(x), x.dtype if keep_dtype else None)
    elif uf is not None:
        def k(x, *, _out=None):
            if _fits(_out, x) and x.dtype.kind == "f":
                with np.errstate(all="ignore"):
                    return uf(x, out=_out)
            return _arr(fn(x), x.dtype if keep_dtype else None)
    elif legacy:
        def k(x, *, consumed_inputs=None):
            return _arr(fn(x), x.dtype if keep_dtype else None)
    else:
        def k(x):
            return _arr(fn(x), x.dtype if keep_dtype else None)
    k.__name__ = k.__qualname__ = op.lower()
    kernel(op, since=since, domain=domain)(k)
    return k


def _ffn(ufunc):
    """A float ufunc applied in a dtype numpy supports, warnings (log(0), sqrt(-1)) silenced."""
    def f(x):
        with np.errstate(all="ignore"):
            return ufunc(_fwork(x))
    f.ufunc = ufunc
    return f


# ---- unary math --------------------------------------------------------------------------------

def _abs(x):
    if x.dtype.kind in "ub":
        return x
    return np.abs(_fwork(x))


def _neg(x):
    if x.dtype.kind == "V":
        return np.negative(x.astype(np.float32))
    return np.negative(x)


def _sign(x):
    if x.dtype.kind == "u":
        return (x != 0).astype(x.dtype)
    return np.sign(_fwork(x))


def _reciprocal(x):
    xw = _fwork(x)
    if xw.dtype.kind in _INT_KINDS:
        with np.errstate(all="ignore"):
            return np.floor_divide(xw.dtype.type(1), xw)
    with np.errstate(all="ignore"):
        return np.reciprocal(xw)


def _round(x):
    if x.dtype.kind in _INT_KINDS:
        return x
    return np.rint(_fwork(x))  # rint rounds half to even


def _floor(x):
    return x if x.dtype.kind in _INT_KINDS else np.floor(_fwork(x))


def _ceil(x):
    return x if x.dtype.kind in _INT_KINDS else np.ceil(_fwork(x))


for _op, _fn, _since, _legacy in [
    ("Abs", _abs, 1, True),
    ("Neg", _neg, 1, True),
    ("Exp", _ffn(np.exp), 1, True),
    ("Log", _ffn(np.log), 1, True),
    ("Sqrt", _ffn(np.sqrt), 1, True),
    ("Reciprocal", _reciprocal, 1, True),
    ("Floor", _floor, 1, True),
    ("Ceil", _ceil, 1, True),
    ("Round", _round, 11, False),
    ("Sign", _sign, 9, False),
    ("Sin", _ffn(np.sin), 7, False),
    ("Cos", _ffn(np.cos), 7, False),
    ("Tan", _ffn(np.tan), 7, False),
    ("Asin", _ffn(np.arcsin), 7, False),
    ("Acos", _ffn(np.arccos), 7, False),
    ("Atan", _ffn(np.arctan), 7, False),
    ("Sinh", _ffn(np.sinh), 9, False),
    ("Cosh", _ffn(np.cosh), 9, False),
    ("Asinh", _ffn(np.arcsinh), 9, False),
    ("Acosh", _ffn(np.arccosh), 9, False),
    ("Atanh", _ffn(np.arctanh), 9, False),
    ("Tanh", _ffn(np.tanh), 1, True),
]:
    _unary(_op, _fn, since=_since, legacy=_legacy)


# erf without scipy, branch-free (numpy's masked selects are slow on unpredictable masks):
# erf(x) = c * P(c^2) / Q(c^2) with c = clip(x, -4, 4). P (degree 6) and Q (degree 5) are a
# relative least-squares rational fit of erf(x)/x on [0, 4] made for this module (max relative error
# 1.4e-8 in float64, 3.3e-7 evaluated in float32); erf(4) rounds to 1 in float32.
_ERF_P = (1.1283791680762136, 0.18528009669903042, 0.054354074468943886, 0.00385648970605061,
          0.00038086158982385764, 4.715176707531663e-06, -1.336058920516722e-08)
_ERF_Q = (1.0, 0.49753360808334285, 0.11401410547846313, 0.015479875345999755,
          0.0013106969793437145, 6.340412314559513e-05)

# erfc for a >= 0 with *relative* accuracy in the tail (Numerical Recipes' Chebyshev fit, relative
# error < 1.2e-7); Gelu uses it so that 1 + erf(x) does not cancel for negative x.
_ERFC_C = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
           0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277)


def _horner(z: np.ndarray, coeffs) -> np.ndarray:
    acc = np.full_like(z, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        acc *= z
        acc += c
    return acc


def _erfc_abs(a: np.ndarray) -> np.ndarray:
    """erfc(a) for a >= 0 (NaN passes through), in a's float dtype."""
    t = a * 0.5
    t += 1.0
    np.reciprocal(t, out=t)
    acc = _horner(t, _ERFC_C)
    acc -= a * a
    with np.errstate(all="ignore"):
        np.exp(acc, out=acc)
    acc *= t
    return acc


def _erf_core(x: np.ndarray) -> np.ndarray:
    """erf of a float16/32/64 array, computed in (at least) float32 and returned in x's dtype."""
    dt = x.dtype
    w = x.astype(np.float32) if dt == np.float16 else x
    if w.ndim == 0:
        w = w.reshape(1)
    c = np.clip(w, -4.0, 4.0)
    z = c * c
    r = _horner(z, _ERF_P)
    r /= _horner(z, _ERF_Q)
    r *= c
    return r.astype(dt, copy=False).reshape(x.shape)


def _erf(x):
    if x.dtype.kind in _INT_KINDS:
        return np.rint(_erf_core(x.astype(np.float64)))
    return _erf_core(_fwork(x))


_unary("Erf", _erf, since=9)


@kernel("IsNaN", since=9)
def isnan(x):
    if x.dtype.kind in _INT_KINDS or x.dtype.kind == "b":
        return np.zeros(x.shape, dtype=bool)
    return _arr(np.isnan(_fwork(x)))


@kernel("IsInf", since=10)
def isinf(x, *, detect_negative=1, detect_positive=1):
    if x.dtype.kind in _INT_KINDS or x.dtype.kind == "b":
        return np.zeros(x.shape, dtype=bool)
    x = _fwork(x)
    if detect_negative and detect_positive:
        return _arr(np.isinf(x))
    if detect_positive:
        return _arr(np.isposinf(x))
    if detect_negative:
        return _arr(np.isneginf(x))
    return np.zeros(x.shape, dtype=bool)


@kernel("Not", since=1)
def not_(x):
    return _arr(np.logical_not(x))


@kernel("BitwiseNot", since=18)
def bitwise_not(x):
    return _arr(np.invert(x))


# ---- binary arithmetic -------------------------------------------------------------------------

def _binary(op, fn, since_modern=7, legacy=True):
    """Register ``fn(a, b, *, _out=None)`` itself for opset >= since_modern (no wrapper: a call
    less per node), plus an opset-1 kernel with the legacy ``broadcast``/``axis``/``consumed_inputs``
    attributes."""
    modern = functools.wraps(fn)(lambda a, b, *, _out=None: fn(a, b, _out=_out))
    if getattr(fn, "_ours", False):  # a closure made for this op alone: register it as it is
        modern = fn
    modern.__name__ = modern.__qualname__ = op.lower()
    kernel(op, since=since_modern)(modern)
    if legacy:
        def old(a, b, *, broadcast=0, axis=None, consumed_inputs=None, _out=None):
            return fn(a, _legacy_b(a, b, broadcast, axis), _out=_out)

        old.__name__ = old.__qualname__ = op.lower() + "_legacy"
        kernel(op, since=1)(old)


def _same_dtype_op(ufunc):
    def f(a, b, *, _out=None):
        r = _into(ufunc, a, b, _out)
        if r is not None:
            return r
        dt = a.dtype
        if dt.kind == "V":  # bfloat16 & co: compute in float32
            return _arr(ufunc(a.astype(np.float32), b.astype(np.float32)), dt)
        r = ufunc(a, b)
        if type(r) is not np.ndarray or r.dtype != dt:
            r = _arr(r, dt)
        return r
    f._ours = True
    return f


_add = _same_dtype_op(np.add)
_sub = _same_dtype_op(np.subtract)
_mul = _same_dtype_op(np.multiply)


def _div(a, b, *, _out=None):
    dt = a.dtype
    if _out is not None and dt.kind == "f" and _fits2(_out, a, b):
        try:
            with np.errstate(all="ignore"):
                return np.divide(a, b, out=_out)
        except ValueError:
            pass
    if dt.kind in _INT_KINDS:
        if b.dtype != dt:
            b = b.astype(dt)
        with np.errstate(all="ignore"):
            q = np.floor_divide(a, b)
            if dt.kind == _SIGNED_INT:
                # floor -> truncation toward zero (C semantics): bump the quotient where the
                # remainder is non-zero and the operands' signs differ.
                fix = (q * b != a) & ((a < 0) != (b < 0))
                if fix.any():
                    q = q + fix.astype(dt)
        return _arr(q, dt)
    if dt.kind == "b":
        raise ValueError("Div does not support bool inputs")
    if dt.kind == "V":
        return _arr(np.divide(a.astype(np.float32), b.astype(np.float32)), dt)
    with np.errstate(all="ignore"):
        return _arr(np.divide(a, b), dt)


def _pow(x, y, *, _out=None):
    dt = x.dtype
    if dt.kind == "V":
        return _arr(_pow(x.astype(np.float32), _fwork(y)), dt)
    yk = y.dtype.kind
    if y.dtype.kind == "V":
        y = y.astype(np.float32)
        yk = "f"
    with np.errstate(all="ignore"):
        if dt.kind == "f":
            if y.size == 1 and y.ndim <= x.ndim:
                v = float(y.reshape(-1)[0])
                if v == 2.0:
                    return _arr(np.square(x).reshape(np.broadcast_shapes(x.shape, y.shape)), dt)
                if v == 1.0:
                    return x.reshape(np.broadcast_shapes(x.shape, y.shape))
            if yk in _INT_KINDS or (yk == "f" and y.dtype.itemsize < dt.itemsize):
                y = y.astype(dt)
            return _arr(np.power(x, y), dt)
        if dt.kind in _INT_KINDS:
            if yk in _INT_KINDS and not (y < 0).any():
                return _arr(np.power(x, y), dt)
            return _arr(np.power(x.astype(np.float64), y.astype(np.float64)), dt)
    raise ValueError(f"Pow: unsupported base dtype {dt}")


def _mod_impl(a, b, fmod):
    dt = a.dtype
    if dt.kind == "V":
        return _arr(_mod_impl(a.astype(np.float32), b.astype(np.float32), fmod), dt)
    with np.errstate(all="ignore"):
        r = np.fmod(a, b) if fmod else np.mod(a, b)
    return _arr(r, dt)


_binary("Add", _add)
_binary("Sub", _sub)
_binary("Mul", _mul)
_binary("Div", _div)
_binary("Pow", _pow)


@kernel("Mod", since=10)
def mod(a, b, *, fmod=0):
    # fmod=0 is only defined for integers by ONNX; for floats numpy's floored modulo is the
    # natural extension (sign of the divisor), fmod=1 is C's fmod (sign of the dividend).
    return _mod_impl(a, b, fmod)


@kernel("BitShift", since=11)
def bit_shift(x, y, *, direction=None):
    if direction not in ("LEFT", "RIGHT"):
        raise ValueError(f"BitShift: direction must be 'LEFT' or 'RIGHT', got {direction!r}")
    dt = x.dtype
    if y.dtype != dt:
        y = y.astype(dt)
    r = np.left_shift(x, y) if direction == "LEFT" else np.right_shift(x, y)
    return _arr(r, dt)


@kernel("BitwiseAnd", since=18)
def bitwise_and(a, b):
    return _arr(np.bitwise_and(a, b), a.dtype)


@kernel("BitwiseOr", since=18)
def bitwise_or(a, b):
    return _arr(np.bitwise_or(a, b), a.dtype)


@kernel("BitwiseXor", since=18)
def bitwise_xor(a, b):
    return _arr(np.bitwise_xor(a, b), a.dtype)


# ---- comparisons and logic ---------------------------------------------------------------------

def _as_str(x: np.ndarray) -> np.ndarray:
    if x.dtype == object and x.size:
        flat = x.reshape(-1)
        if any(isinstance(v, bytes) for v in flat[:1]):
            return np.array([v.decode("utf-8") if isinstance(v, bytes) else v for v in flat],
                            dtype=object).reshape(x.shape)
    return x


def _cmp(ufunc):
    def f(a, b, *, _out=None):
        if (_out is not None and _out.dtype == np.bool_ and a.dtype == b.dtype and a.dtype.kind in "biuf"
                and (_out.shape == a.shape or _out.shape == b.shape)):
            try:
                return ufunc(a, b, out=_out)
            except ValueError:
                pass
        if a.dtype == object or b.dtype == object:
            a, b = _as_str(a), _as_str(b)
            return _arr(ufunc(a, b), np.bool_)
        if a.dtype.kind == "V" or b.dtype.kind == "V":
            a, b = _fwork(a), _fwork(b)
        return _arr(ufunc(a, b))
    f._ours = True
    return f


_binary("Equal", _cmp(np.equal))
_binary("Less", _cmp(np.less))
_binary("Greater", _cmp(np.greater))
_binary("LessOrEqual", _cmp(np.less_equal), since_modern=12, legacy=False)
_binary("GreaterOrEqual", _cmp(np.greater_equal), since_modern=12, legacy=False)


def _logic(ufunc):
    def f(a, b, *, _out=None):
        r = _into(ufunc, a, b, _out)
        if r is not None:
            return r
        return _arr(ufunc(a, b))
    f._ours = True
    return f


_binary("And", _logic(np.logical_and))
_binary("Or", _logic(np.logical_or))
_binary("Xor", _logic(np.logical_xor))


# ---- variadic ----------------------------------------------------------------------------------

def _variadic(ufunc, xs, out=None):
    xs = [x for x in xs if x is not None]
    if not xs:
        raise ValueError("expected at least one input")
    dt = xs[0].dtype
    if (len(xs) >= 2 and out is not None and out.dtype == dt and all(x.dtype == dt for x in xs)
            and out.shape == np.broadcast_shapes(*(x.shape for x in xs))):
        ufunc(xs[0], xs[1], out=out)
        for x in xs[2:]:
            ufunc(out, x, out=out)
        return out
    if dt.kind == "V":
        xs = [x.astype(np.float32) for x in xs]
    if len(xs) == 1:
        return xs[0] if xs[0].dtype == dt else _arr(xs[0], dt)
    if len(xs) == 2:
        r = ufunc(xs[0], xs[1])
    else:
        r = ufunc(xs[0], xs[1])
        for x in xs[2:]:
            r = ufunc(r, x, out=r) if r.shape == np.broadcast_shapes(r.shape, x.shape) and \
                r.dtype == np.result_type(r, x) else ufunc(r, x)
    return _arr(r, dt)


@kernel("Max", since=1)
def max_(*xs, consumed_inputs=None, _out=None):
    return _variadic(np.maximum, xs, _out)


@kernel("Min", since=1)
def min_(*xs, consumed_inputs=None, _out=None):
    return _variadic(np.minimum, xs, _out)


@kernel("Sum", since=1)
def sum_(*xs, consumed_inputs=None, _out=None):
    return _variadic(np.add, xs, _out)


@kernel("Mean", since=1)
def mean(*xs, consumed_inputs=None):
    xs = [x for x in xs if x is not None]
    s = _variadic(np.add, xs)
    dt = s.dtype
    if dt.kind == "V":
        return _arr(s.astype(np.float32) / len(xs), dt)
    if dt.kind in _INT_KINDS:
        return _arr(s // len(xs), dt)
    if len(xs) == 1:
        return s
    return _arr(np.divide(s, len(xs), out=s if s is not xs[0] else None), dt)


_UINT_OF_SIZE = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_SELECT_MIN = 4096


def _select(cond: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """np.where(cond, a, b) for same-dtype numeric a, b. Large inputs use a branch-free bitwise
    select ((a & m) | (b & ~m) on the raw bits), several times faster than np.where on an
    unpredictable mask, and exact for every value (NaN payloads, -0.0)."""
    dt = a.dtype
    u = _UINT_OF_SIZE.get(dt.itemsize)
    if (u is None or b.dtype != dt or dt == object or dt.kind in "SU"
            or max(cond.size, a.size, b.size) < _SELECT_MIN):
        return np.where(cond, a, b)
    m = cond.astype(u)
    np.negative(m, out=m)  # 1 -> all ones, 0 -> 0
    r = np.bitwise_and(a.view(u), m)
    np.invert(m, out=m)
    t = np.bitwise_and(b.view(u), m)
    if r.shape == np.broadcast_shapes(r.shape, t.shape):
        r |= t
    else:
        r = np.bitwise_or(r, t)
    return r.view(dt)


@kernel("Where", since=9)
def where(condition, x, y):
    if condition.dtype != np.bool_:
        condition = condition.astype(bool)
    if x.dtype == y.dtype:
        return _arr(_select(condition, x, y))
    return _arr(np.where(condition, x, y))


# ---- Clip --------------------------------------------------------------------------------------

def _clip(x, lo, hi):
    dt = x.dtype
    if x.dtype.kind == "V":
        return _arr(_clip(x.astype(np.float32), lo, hi), dt)
    if lo is not None and hi is not None:
        if lo > hi:  # ONNX: every value becomes max
            lo = hi
        return _arr(np.clip(x, lo, hi), dt)
    if lo is not None:
        return _arr(np.maximum(x, lo), dt)
    if hi is not None:
        return _arr(np.minimum(x, hi), dt)
    return x


def _bound(v, dt):
    if v is None:
        return None
    v = np.asarray(v)
    if v.size == 0:
        return None
    if v.size != 1:
        raise ValueError(f"Clip: min/max must be scalars, got shape {v.shape}")
    v = v.reshape(())
    if v.dtype != dt:
        v = v.astype(np.float32 if dt.kind == "V" else dt)
    return v[()]


@kernel("Clip", since=1)
def clip_legacy(x, *, min=-3.4028234663852886e38, max=3.4028234663852886e38, consumed_inputs=None):
    dt = x.dtype
    lo, hi = min, max
    if dt.kind == "f":
        lo, hi = dt.type(lo), dt.type(hi)
    return _clip(x, lo, hi)


@kernel("Clip", since=11)
def clip(x, min=None, max=None, *, _out=None):
    dt = x.dtype
    lo, hi = _bound(min, dt), _bound(max, dt)
    if lo is not None and hi is not None and _fits(_out, x) and dt.kind in "iuf":
        return np.clip(x, hi if lo > hi else lo, hi, out=_out)
    return _clip(x, lo, hi)


# ---- activations -------------------------------------------------------------------------------
#
# Activations run in float32 for float16/bfloat16/float8 inputs (as the reference does; float16
# intermediates lose too much), use in-place ufuncs on their own temporaries, and treat 0-d inputs as
# shape (1,) so that ``out=`` always has an array to write to.

def _ain(x: np.ndarray) -> np.ndarray:
    if x.dtype.kind == "V" or x.dtype == np.float16:
        x = x.astype(np.float32)
    return x.reshape(1) if x.ndim == 0 else x


def _aout(r, x: np.ndarray) -> np.ndarray:
    r = _arr(r, x.dtype)
    return r.reshape(()) if x.ndim == 0 else r


def _sigmoid_f(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Logistic in x's float dtype as 1 / (1 + exp(-x)): exp overflowing to inf for x << 0 gives
    the correct limit 0 (callers silence the warning), and there is no cancellation anywhere.
    Written into ``out`` when given (x's shape and dtype)."""
    e = np.negative(x, out=out)
    np.exp(e, out=e)
    e += 1
    np.reciprocal(e, out=e)
    return e


@kernel("Relu", since=1)
def relu(x, *, consumed_inputs=None, _out=None):
    if _fits(_out, x):
        zero = x.dtype.type(0)
        if x.ndim >= 2:  # channel blocks on all threads (one block below MIN_SPLIT_ELEMS)
            parallel.batched(x.shape[1], lambda lo, hi: np.maximum(x[:, lo:hi], zero, out=_out[:, lo:hi]), x.size)
            return _out
        return np.maximum(x, zero, out=_out)
    if x.dtype.kind == "V":
        return _arr(np.maximum(x.astype(np.float32), 0), x.dtype)
    return _arr(np.maximum(x, x.dtype.type(0)))


@kernel("LeakyRelu", since=1)
@_quiet
def leaky_relu(x, *, alpha=0.01, consumed_inputs=None, _out=None):
    if 0.0 <= alpha <= 1.0 and _fits(_out, x) and x.dtype.kind == "f" and x.dtype != np.float16:
        np.multiply(x, alpha, out=_out)
        return np.maximum(x, _out, out=_out)
    xw = _ain(x)
    if 0.0 <= alpha <= 1.0:
        r = xw * alpha
        np.maximum(xw, r, out=r)
    else:
        r = np.minimum(xw, xw.dtype.type(0))
        r *= alpha
        r += np.maximum(xw, xw.dtype.type(0))
    return _aout(r, x)


@kernel("PRelu", since=1)
@_quiet
def prelu(x, slope, *, consumed_inputs=None):
    xw = _ain(x)
    if slope.dtype != xw.dtype:
        slope = slope.astype(xw.dtype)
    if x.ndim and (slope.ndim > x.ndim or np.broadcast_shapes(x.shape, slope.shape) != x.shape):
        # pre-opset-7 PRelu: a 1-D slope of size C applies along axis 1
        if slope.ndim == 1 and x.ndim >= 2 and slope.shape[0] == x.shape[1]:
            slope = slope.reshape((-1,) + (1,) * (x.ndim - 2))
    # max(x, 0) + slope * min(x, 0): branch-free, same values as where(x < 0, slope * x, x)
    zero = xw.dtype.type(0)
    r = np.minimum(xw, zero)
    r = np.multiply(r, slope, out=r if r.shape == np.broadcast_shapes(r.shape, slope.shape) else None)
    r += np.maximum(xw, zero)
    if x.ndim == 0 and r.ndim:
        r = r.reshape(np.broadcast_shapes(x.shape, slope.shape))
        return _arr(r, x.dtype)
    return _aout(r, x)


def _elu_f(xw: np.ndarray, alpha: float) -> np.ndarray:
    """max(x, 0) + alpha * expm1(min(x, 0)): Elu without a select, never overflowing."""
    zero = xw.dtype.type(0)
    r = np.minimum(xw, zero)
    np.expm1(r, out=r)
    r *= alpha
    r += np.maximum(xw, zero)
    return r


@kernel("Elu", since=1)
@_quiet
def elu(x, *, alpha=1.0, consumed_inputs=None):
    return _aout(_elu_f(_ain(x), alpha), x)


@kernel("Selu", since=1)
@_quiet
def selu(x, *, alpha=1.67326319217681884765625, gamma=1.05070102214813232421875, consumed_inputs=None):
    r = _elu_f(_ain(x), alpha)
    r *= gamma
    return _aout(r, x)


@kernel("Celu", since=12)
@_quiet
def celu(x, *, alpha=1.0):
    xw = _ain(x)
    neg = np.minimum(xw, xw.dtype.type(0))
    neg /= alpha
    np.expm1(neg, out=neg)
    neg *= alpha
    r = np.maximum(xw, xw.dtype.type(0))
    r += neg
    return _aout(r, x)


@kernel("Sigmoid", since=1)
@_quiet
def sigmoid(x, *, consumed_inputs=None, _out=None):
    if _fits(_out, x) and x.dtype.kind == "f" and x.dtype != np.float16:
        return _sigmoid_f(x, _out)
    xw = _ain(x)
    if xw.dtype.kind != "f":
        xw = xw.astype(np.float64)
    return _aout(_sigmoid_f(xw), x)


@kernel("HardSigmoid", since=1)
@_quiet
def hard_sigmoid(x, *, alpha=0.2, beta=0.5, consumed_inputs=None, _out=None):
    native = _fits(_out, x) and x.dtype.kind == "f" and x.dtype != np.float16
    xw = x if native else _ain(x)
    r = np.multiply(xw, alpha, out=_out if native else None)
    r += beta
    np.clip(r, 0, 1, out=r)
    return r if native else _aout(r, x)


@kernel("HardSwish", since=14)
@_quiet
def hard_swish(x, *, _out=None):
    native = _fits(_out, x) and x.dtype.kind == "f" and x.dtype != np.float16
    xw = x if native else _ain(x)
    r = np.multiply(xw, 1.0 / 6.0, out=_out if native else None)
    r += 0.5
    np.clip(r, 0, 1, out=r)
    r *= xw
    return r if native else _aout(r, x)


def _softplus_f(xw: np.ndarray) -> np.ndarray:
    """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)) (np.logaddexp is far slower)."""
    r = np.abs(xw)
    np.negative(r, out=r)
    np.exp(r, out=r)
    np.log1p(r, out=r)
    r += np.maximum(xw, xw.dtype.type(0))
    return r


@kernel("Softplus", since=1)
@_quiet
def softplus(x):
    return _aout(_softplus_f(_ain(x)), x)


@kernel("Softsign", since=1)
@_quiet
def softsign(x):
    xw = _ain(x)
    d = np.abs(xw)
    d += 1
    return _aout(np.divide(xw, d, out=d), x)


@kernel("Swish", since=24)
@_quiet
def swish(x, *, alpha=1.0):
    xw = _ain(x)
    if xw.dtype.kind != "f":
        xw = xw.astype(np.float64)
    s = _sigmoid_f(xw * alpha if alpha != 1.0 else xw)
    s *= xw
    return _aout(s, x)


@kernel("Mish", since=18)
@_quiet
def mish(x):
    # tanh(softplus(x)) = n (n + 2) / (n (n + 2) + 2) with n = exp(x); x is capped at 20 where the
    # ratio is 1 to working precision (and n*n cannot overflow float32).
    xw = _ain(x)
    n = np.minimum(xw, xw.dtype.type(20))
    np.exp(n, out=n)
    num = n + 2
    num *= n
    n = np.add(num, 2, out=n)
    np.divide(num, n, out=num)
    num *= xw
    return _aout(num, x)


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT2 = 1.0 / math.sqrt(2.0)


@kernel("Gelu", since=20)
@_quiet
def gelu(x, *, approximate="none"):
    xw = _ain(x)
    if approximate == "tanh":
        # 1 + tanh(y) = 2 * sigmoid(2y): the stable sigmoid avoids cancellation for negative x
        inner = xw * xw
        inner *= 0.044715
        inner += 1
        inner *= xw
        inner *= 2.0 * _SQRT_2_OVER_PI
        inner = _sigmoid_f(inner)
        inner *= 2
    elif approximate == "none":
        # 0.5 * x * (1 + erf(x/sqrt2)) = 0.5 * x * erfc(-x/sqrt2): with erfc of |x|/sqrt2 there is
        # no cancellation on the negative side.
        a = np.abs(xw)
        a *= _INV_SQRT2
        e = _erfc_abs(a)
        # inner = e for x < 0, 2 - e otherwise, branch-free: e + [x >= 0] * (2 - 2e)
        inner = np.multiply(e, -2.0)
        inner += 2.0
        inner *= (xw >= 0)
        inner += e
    else:
        raise ValueError(f"Gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    inner *= xw
    inner *= 0.5
    return _aout(inner, x)


@kernel("ThresholdedRelu", since=10)
@_quiet
def thresholded_relu(x, *, alpha=1.0):
    xw = _ain(x)
    return _aout(_select(xw > alpha, xw, np.zeros((), xw.dtype)), x)


@kernel("Shrink", since=9)
@_quiet
def shrink(x, *, bias=0.0, lambd=0.5):
    xw = _ain(x)
    if xw.dtype.kind in _INT_KINDS:
        # compute in float64 so that x -/+ bias neither wraps nor truncates early
        xw = xw.astype(np.float64)
    r = np.where(xw < -lambd, xw + bias, np.where(xw > lambd, xw - bias, xw.dtype.type(0)))
    return _aout(r, x)


@kernel("Identity", since=1)
def identity(x):
    return x


@kernel("Binarizer", since=1, domain="ai.onnx.ml")
@_quiet
def binarizer(x, *, threshold=0.0):
    xw = _fwork(x)
    return _arr(xw > threshold, x.dtype)
