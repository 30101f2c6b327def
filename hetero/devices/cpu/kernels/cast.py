"""Cast, CastLike and BitCast CPU kernels.

Numeric types follow numpy/ml_dtypes conversions (RNE for floats, truncation toward zero for
float -> int, wrap-around between integer types); float8 targets honour ``saturate`` as the ONNX
spec's tables say; FLOAT8E8M0 honours ``round_mode``. Strings are object arrays of ``str``.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np
from onnx import TensorProto, helper

from ..registry import kernel

_F8 = frozenset(np.dtype(t) for t in (ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e4m3fnuz,
                                       ml_dtypes.float8_e5m2, ml_dtypes.float8_e5m2fnuz))
_E8M0 = np.dtype(ml_dtypes.float8_e8m0fnu)
_NATIVE_FLOATS = frozenset(np.dtype(t) for t in (np.float16, np.float32, np.float64))
_F8_LIMITS = {dt: float(ml_dtypes.finfo(dt).max) for dt in _F8}
_STR = np.dtype(object)

_DTYPE_CACHE: dict[int, np.dtype] = {}


def onnx_to_np_dtype(to) -> np.dtype:
    """numpy dtype of an ONNX TensorProto data type (int code, or name as Cast-1 spelled it)."""
    if isinstance(to, (bytes, str)):
        name = to.decode() if isinstance(to, bytes) else to
        try:
            to = TensorProto.DataType.Value(name.upper())
        except ValueError:
            raise ValueError(f"Cast: unknown target type {name!r}") from None
    to = int(to)
    dt = _DTYPE_CACHE.get(to)
    if dt is None:
        if to == TensorProto.STRING:
            dt = _STR
        else:
            try:
                dt = np.dtype(helper.tensor_dtype_to_np_dtype(to))
            except Exception:
                raise ValueError(f"Cast: unsupported target type {to}") from None
        _DTYPE_CACHE[to] = dt
    return dt


# ---- strings ---------------------------------------------------------------------------------

def _str_array(x: np.ndarray) -> np.ndarray:
    """An object array of str/bytes as a numpy unicode array (vectorised parsing needs it)."""
    if x.size and any(isinstance(v, bytes) for v in x.reshape(-1)[:1]):
        x = np.char.decode(x.astype(np.bytes_), "utf-8")
    return x.astype(np.str_)


def _from_string(x: np.ndarray, dt: np.dtype, saturate: int, round_mode: str) -> np.ndarray:
    s = np.char.strip(_str_array(x))
    if dt == _STR:
        return x
    if dt.kind in "iu":
        try:
            return s.astype(dt)
        except (ValueError, OverflowError):
            f = s.astype(np.float64)
            with np.errstate(all="ignore"):
                return np.trunc(f).astype(dt)
    if dt.kind == "b":
        low = np.char.lower(s)
        s = np.where(low == "true", "1", np.where(low == "false", "0", s))
        try:
            return s.astype(np.float64) != 0  # NaN counts as non-zero
        except ValueError:
            raise ValueError("Cast: cannot parse strings as numbers") from None
    try:
        f = s.astype(np.float64)
    except ValueError:
        raise ValueError("Cast: cannot parse strings as numbers") from None
    return _cast_numeric(f, dt, saturate, round_mode)


def _to_string(x: np.ndarray) -> np.ndarray:
    if x.dtype.kind == "V":
        x = x.astype(np.float32)
    return x.astype(np.str_).astype(object)


# ---- float8 e8m0 -------------------------------------------------------------------------------

def _to_e8m0(x: np.ndarray, saturate: int, round_mode: str) -> np.ndarray:
    """FLOAT8E8M0 (2**(e-127), e in 0..254, 255 = NaN) from any real input; the sign is ignored."""
    if round_mode not in ("up", "down", "nearest"):
        raise ValueError(f"Cast: round_mode must be 'up', 'down' or 'nearest', got {round_mode!r}")
    f = np.asarray(x, dtype=np.float32)
    if not f.flags.c_contiguous:
        f = f.copy()
    bits = f.view(np.uint32)
    exp = ((bits >> 23) & 0xFF).astype(np.int32)
    mant = bits & 0x7FFFFF
    special = exp == 0xFF
    isnan = special & (mant != 0)
    isinf = special & (mant == 0)
    sub = exp == 0  # zero and float32 subnormals: below 2**-126
    if round_mode == "up":
        inc = (mant != 0) & ~sub
        inc_sub = mant > 0x400000  # x > 2**-127
    elif round_mode == "nearest":
        inc = (mant & 0x400000) != 0  # mantissa >= 0.5: at or past 1.5 * 2**e, ties up
        inc_sub = mant >= 0x600000  # x >= 1.5 * 2**-127
    else:
        inc = np.zeros(exp.shape, dtype=bool)
        inc_sub = inc
    e = np.where(sub, inc_sub.astype(np.int32), exp + inc)
    if saturate:
        e = np.minimum(e, 0xFE)
        e = np.where(isinf, 0xFE, e)
    else:
        e = np.where(isinf | (sub & (mant == 0)), 0xFF, e)  # inf and 0 are not representable
        e = np.minimum(e, 0xFF)  # overflow past 2**127 -> NaN
    e = np.where(isnan, 0xFF, e)
    return e.astype(np.uint8).view(_E8M0)


# ---- numeric -----------------------------------------------------------------------------------

def _cast_numeric(x: np.ndarray, dt: np.dtype, saturate: int, round_mode: str) -> np.ndarray:
    src = x.dtype
    if src == dt:
        return x
    if dt in _F8:
        xf = x if src in _NATIVE_FLOATS else x.astype(np.float32)
        if saturate:
            m = _F8_LIMITS[dt]
            xf = np.clip(xf, -m, m)  # NaN stays NaN, +-inf and overflow clamp to +-max
        with np.errstate(all="ignore"):
            return xf.astype(dt)
    if dt == _E8M0:
        return _to_e8m0(x, saturate, round_mode)
    with np.errstate(all="ignore"):
        try:
            return x.astype(dt)
        except (TypeError, ValueError):
            pass
        # ml_dtypes lacks some direct conversions (e.g. bool -> int4): go through a wide type
        mid = np.float64 if (src.kind in "iu" and src.itemsize >= 4) or src == np.float64 else np.float32
        if dt.kind in "iu" and src.kind in "iub":
            mid = np.int64
        return x.astype(mid).astype(dt)


def cast_array(x, dt: np.dtype, saturate: int = 1, round_mode: str = "up"):
    if x is None:
        return None
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    if x.dtype == _STR:
        return _from_string(x, dt, saturate, round_mode)
    if dt == _STR:
        return _to_string(x)
    r = _cast_numeric(x, dt, saturate, round_mode)
    return r if type(r) is np.ndarray else np.asarray(r, dtype=dt)


_PLAIN = "biuf"  # numpy's own bool/int/float kinds (ml_dtypes' types have kind 'V')


def _cast_into(x, dt: np.dtype, out) -> bool:
    """Cast plain numeric/bool ``x`` into ``out`` (the executor's buffer, see registry ``_out``) when
    both are numpy's own types and ``out`` has x's shape and dtype ``dt``: numpy's casting loops are
    the ones ``astype`` runs, so the values are the same."""
    if (out is None or out.dtype != dt or out.shape != x.shape or dt.kind not in _PLAIN
            or x.dtype.kind not in _PLAIN):
        return False
    with np.errstate(all="ignore"):
        np.copyto(out, x, casting="unsafe")
    return True


@kernel("Cast", since=1)
def cast(x, *, to=None, saturate=1, round_mode="up", _out=None):
    if to is None:
        raise ValueError("Cast: attribute 'to' is required")
    dt = onnx_to_np_dtype(to)
    if type(x) is np.ndarray and _cast_into(x, dt, _out):
        return _out
    return cast_array(x, dt, saturate, round_mode)


@kernel("CastLike", since=15)
def cast_like(x, target_type, *, saturate=1, round_mode="up", _out=None):
    if type(x) is np.ndarray and _cast_into(x, target_type.dtype, _out):
        return _out
    return cast_array(x, target_type.dtype, saturate, round_mode)


@kernel("BitCast", since=26)
def bit_cast(x, *, to=None):
    if to is None:
        raise ValueError("BitCast: attribute 'to' is required")
    dt = onnx_to_np_dtype(to)
    if dt == _STR or x.dtype == _STR:
        raise ValueError("BitCast: string tensors cannot be bit-cast")
    if dt.itemsize != x.dtype.itemsize:
        raise ValueError(f"BitCast: {x.dtype} and {dt} differ in bit width")
    if not x.flags.c_contiguous:
        x = x.copy()
    return x.view(dt)
