"""Quantization CPU kernels: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear.

Granularity follows the shape of the scale: a scalar (or one-element tensor) is per-tensor, a
1-D tensor is per-axis along ``axis``, and a tensor of the input's rank with ``block_size > 0`` is
blocked (every scale entry repeated ``block_size`` times along ``axis``). The low-precision
types (int4/uint4/int2/uint2, float8 variants, float4/float6) are ml_dtypes dtypes, as in onnx.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np
from onnx import TensorProto, helper

from ..registry import kernel

_INT_RANGES = {
    np.dtype(np.uint8): (0, 255),
    np.dtype(np.int8): (-128, 127),
    np.dtype(np.uint16): (0, 65535),
    np.dtype(np.int16): (-32768, 32767),
    np.dtype(np.int32): (-(2 ** 31), 2 ** 31 - 1),
    np.dtype(ml_dtypes.uint4): (0, 15),
    np.dtype(ml_dtypes.int4): (-8, 7),
}
for _name, _rng in (("uint2", (0, 3)), ("int2", (-2, 1))):
    if hasattr(ml_dtypes, _name):
        _INT_RANGES[np.dtype(getattr(ml_dtypes, _name))] = _rng

_FLOAT8 = {np.dtype(getattr(ml_dtypes, n)) for n in
           ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz")}
# types without an inf encoding: ml_dtypes' cast already saturates them
_SMALL_FLOATS = {np.dtype(getattr(ml_dtypes, n)) for n in
                 ("float4_e2m1fn", "float6_e2m3fn", "float6_e3m2fn") if hasattr(ml_dtypes, n)}


def _np_dtype(onnx_type: int) -> np.dtype:
    return np.dtype(helper.tensor_dtype_to_np_dtype(int(onnx_type)))


def _broadcast_param(p: np.ndarray, x_shape, axis: int, block_size: int, what: str) -> np.ndarray:
    """Reshape/expand a scale or zero point so it broadcasts against an input of ``x_shape``."""
    p = np.asarray(p)
    r = len(x_shape)
    if block_size and block_size > 0:
        if r == 0:
            raise ValueError(f"blocked quantization needs a ranked input, got a scalar")
        ax = axis + r if axis < 0 else axis
        if not 0 <= ax < r:
            raise ValueError(f"axis {axis} out of range for rank {r}")
        if p.ndim != r:
            raise ValueError(f"blocked quantization: {what} rank {p.ndim} != input rank {r}")
        d = x_shape[ax]
        if p.shape[ax] * block_size < d:
            raise ValueError(f"blocked quantization: {what} dim {p.shape[ax]} * block_size "
                             f"{block_size} < input dim {d}")
        expanded = np.repeat(p, block_size, axis=ax)
        return np.take(expanded, np.arange(d), axis=ax)
    if p.size == 1 and p.ndim <= 1:
        return p.reshape(())
    if p.ndim == 0:
        return p
    if p.ndim == 1:
        if r == 0:
            raise ValueError(f"per-axis {what} of shape {p.shape} needs a ranked input")
        ax = axis + r if axis < 0 else axis
        if not 0 <= ax < r:
            raise ValueError(f"axis {axis} out of range for rank {r}")
        if p.shape[0] != x_shape[ax]:
            raise ValueError(f"per-axis {what} length {p.shape[0]} != input dim {x_shape[ax]} "
                             f"(axis {axis})")
        shape = [1] * r
        shape[ax] = p.shape[0]
        return p.reshape(shape)
    if p.ndim == r:
        return p  # same-rank parameter: plain broadcasting
    raise ValueError(f"{what} of shape {p.shape} does not fit input of shape {tuple(x_shape)} "
                     "(need scalar, 1-D per-axis, or blocked with block_size)")


def _float_type(dt: np.dtype) -> np.dtype:
    """The float type arithmetic on ``dt`` values runs in (ints -> float32/float64)."""
    if dt.kind == "f" or dt == np.dtype(ml_dtypes.bfloat16):
        return dt
    if dt.kind in "iu" and dt.itemsize >= 4:
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def _as_float(a: np.ndarray, dtype=np.float32) -> np.ndarray:
    return np.asarray(a).astype(dtype)


@kernel("QuantizeLinear", since=10)
def quantize_linear(x, y_scale, y_zero_point=None, *, axis=1, saturate=1, block_size=0,
                    output_dtype=0, precision=0):
    x = np.asarray(x)
    y_scale = np.asarray(y_scale)
    # output type
    if y_zero_point is not None:
        out_dt = np.asarray(y_zero_point).dtype
        if output_dtype and _np_dtype(output_dtype) != out_dt:
            raise ValueError(f"output_dtype {output_dtype} does not match the zero point's "
                             f"type {out_dt}")
    elif output_dtype:
        out_dt = _np_dtype(output_dtype)
    else:
        out_dt = np.dtype(np.uint8)
    if out_dt not in _INT_RANGES and out_dt not in _FLOAT8 and out_dt not in _SMALL_FLOATS:
        raise ValueError(f"QuantizeLinear: unsupported quantized type {out_dt}")

    scale = _broadcast_param(y_scale, x.shape, axis, block_size, "y_scale")
    # division precision: `precision` attribute, else the (promoted) scale type
    if precision:
        cdt = _np_dtype(precision)
    else:
        a, b = _float_type(x.dtype), _float_type(scale.dtype)
        try:
            cdt = np.promote_types(a, b)
        except TypeError:  # bfloat16 with float16: no common numpy type
            cdt = np.dtype(np.float32)
    if cdt.kind != "f":  # bfloat16 and friends: divide in float32 then round to cdt
        q = (x.astype(np.float32) / scale.astype(np.float32)).astype(cdt).astype(np.float32)
    else:
        q = x.astype(cdt) / scale.astype(cdt)

    zp = None
    if y_zero_point is not None:
        zp = _broadcast_param(np.asarray(y_zero_point), x.shape, axis, block_size, "y_zero_point")

    if out_dt in _INT_RANGES:
        lo, hi = _INT_RANGES[out_dt]
        y = np.rint(q.astype(np.float64))
        if zp is not None:
            y = y + zp.astype(np.float64)
        y = np.clip(y, lo, hi)
        y = np.where(np.isnan(y), 0, y)
        return y.astype(np.int64).astype(out_dt)

    y = q.astype(np.float32)
    if zp is not None:
        y = y + zp.astype(np.float32)
    if out_dt in _FLOAT8 and saturate:
        fi = ml_dtypes.finfo(out_dt)
        y = np.clip(y, float(fi.min), float(fi.max))  # NaN stays NaN
    return y.astype(out_dt)


@kernel("DequantizeLinear", since=10)
def dequantize_linear(x, x_scale, x_zero_point=None, *, axis=1, block_size=0, output_dtype=0):
    x = np.asarray(x)
    x_scale = np.asarray(x_scale)
    if output_dtype:
        out_dt = _np_dtype(output_dtype)
    elif x_scale.dtype.kind == "f" or x_scale.dtype == np.dtype(ml_dtypes.bfloat16):
        out_dt = x_scale.dtype
    else:
        out_dt = np.dtype(np.float32)  # e.g. float8e8m0 scales without output_dtype
    wide = x.dtype in (np.dtype(np.int32), np.dtype(np.uint32), np.dtype(np.int64))
    cdt = np.float64 if wide else np.float32
    dx = _as_float(x, cdt)
    if x_zero_point is not None:
        zp = np.asarray(x_zero_point)
        if zp.dtype != x.dtype and x.dtype not in _FLOAT8 and x.dtype not in _SMALL_FLOATS:
            raise ValueError(f"DequantizeLinear: zero point type {zp.dtype} != input type {x.dtype}")
        dx = dx - _as_float(_broadcast_param(zp, x.shape, axis, block_size, "x_zero_point"), cdt)
    s = _as_float(_broadcast_param(x_scale, x.shape, axis, block_size, "x_scale"), cdt)
    y = dx * s
    return np.asarray(y).astype(out_dt)


@kernel("DynamicQuantizeLinear", since=11)
def dynamic_quantize_linear(x):
    x = np.asarray(x)
    xf = x.astype(np.float32)
    if xf.size:
        x_min = np.minimum(np.float32(0), xf.min())
        x_max = np.maximum(np.float32(0), xf.max())
    else:
        x_min = x_max = np.float32(0)
    scale = np.float32((x_max - x_min) / np.float32(255))
    if scale == 0:  # all-zero input: everything quantizes to the zero point 0
        return (np.zeros(x.shape, dtype=np.uint8), np.asarray(scale, dtype=np.float32),
                np.asarray(0, dtype=np.uint8))
    zp = np.clip(np.rint(np.float32(0) - x_min / scale), 0, 255)
    y = np.clip(np.rint(xf / scale) + zp, 0, 255)
    y = np.where(np.isnan(y), 0, y)
    return (y.astype(np.uint8), np.asarray(scale, dtype=np.float32),
            np.asarray(zp).astype(np.uint8))
