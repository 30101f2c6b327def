"""Resampling CPU kernels: Resize (opsets 10-19), Upsample, GridSample, AffineGrid.

Resize is separable: for every resized axis we compute, once, the source taps of each output
position (an ``(out, n)`` index array) and their weights, then apply them with ``np.take`` and a
weighted sum over the ``n`` taps. Nothing loops over output pixels.

GridSample gathers, for every sampling point, the ``n**r`` neighbouring pixels (n = 1/2/4 taps per
spatial axis for nearest/linear/cubic) with fancy indexing; the loop runs over tap combinations
only.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from ..registry import kernel


# ---- Resize ------------------------------------------------------------------------------------

def _cubic_kernel(d: np.ndarray, a: float) -> np.ndarray:
    d = np.abs(d)
    d2 = d * d
    d3 = d2 * d
    near = (a + 2) * d3 - (a + 3) * d2 + 1
    far = a * d3 - 5 * a * d2 + 8 * a * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def _source_coords(mode: str, out_len: int, in_len: int, scale: float, roi_start: float,
                   roi_end: float):
    """Source coordinate of each output index along one axis, and the extrapolation mask."""
    y = np.arange(out_len, dtype=np.float64)
    out_w = scale * in_len  # the (possibly fractional) output length the scale implies
    extrap = None
    if mode == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    elif mode == "half_pixel_symmetric":
        adjustment = out_len / out_w
        offset = in_len / 2 * (1 - adjustment)
        x = offset + (y + 0.5) / scale - 0.5
    elif mode == "pytorch_half_pixel":
        x = (y + 0.5) / scale - 0.5 if out_len > 1 else np.zeros_like(y)
    elif mode == "align_corners":
        x = np.zeros_like(y) if out_w == 1 else y * (in_len - 1) / (out_w - 1)
    elif mode == "asymmetric":
        x = y / scale
    elif mode == "tf_half_pixel_for_nn":
        x = (y + 0.5) / scale
    elif mode == "tf_crop_and_resize":
        if out_w == 1:
            x = np.full_like(y, 0.5 * (roi_start + roi_end) * (in_len - 1))
        else:
            x = roi_start * (in_len - 1) + y * (roi_end - roi_start) * (in_len - 1) / (out_w - 1)
        extrap = (x < 0) | (x > in_len - 1)
    else:
        raise ValueError(f"Resize: unknown coordinate_transformation_mode {mode!r}")
    return x, extrap


def _nearest_index(x: np.ndarray, nearest_mode: str, scale: float) -> np.ndarray:
    if nearest_mode == "round_prefer_floor":
        return np.ceil(x - 0.5)
    if nearest_mode == "round_prefer_ceil":
        return np.floor(x + 0.5)
    if nearest_mode == "floor":
        return np.floor(x)
    if nearest_mode == "ceil":
        return np.ceil(x)
    if nearest_mode == "simple":  # Resize-10 / Upsample: floor when upsampling, ceil when down
        return np.ceil(x) if scale < 1 else np.floor(x)
    raise ValueError(f"Resize: unknown nearest_mode {nearest_mode!r}")


def _axis_taps(x: np.ndarray, in_len: int, mode: str, scale: float, nearest_mode: str,
               cubic_a: float, exclude_outside: bool, antialias: bool):
    """(indices (O, n) clipped into the input, weights (O, n)) for one axis."""
    if mode == "nearest":
        idx = _nearest_index(x, nearest_mode, scale).astype(np.int64)[:, None]
        w = np.ones(idx.shape, dtype=np.float64)
    else:
        s = min(scale, 1.0) if antialias else 1.0
        support = 1.0 if mode == "linear" else 2.0
        start = int(math.floor(-support / s)) + 1
        n = 2 - 2 * start
        base = np.ceil(x) - 1  # the tap left of x; an integral x counts as ratio 1 (taps agree)
        ratio = x - base
        k = np.arange(start, start + n, dtype=np.float64)
        idx = base.astype(np.int64)[:, None] + k.astype(np.int64)[None, :]
        d = (k[None, :] - ratio[:, None]) * s
        if mode == "linear":
            w = np.clip(1 - np.abs(d), 0, 1)
        else:
            w = _cubic_kernel(d, cubic_a)
        if antialias:
            tot = w.sum(axis=1, keepdims=True)
            w = w / np.where(tot == 0, 1, tot)
    if exclude_outside:
        w = np.where((idx < 0) | (idx >= in_len), 0.0, w)
        tot = w.sum(axis=1, keepdims=True)
        w = w / np.where(tot == 0, 1, tot)
    return np.clip(idx, 0, max(in_len - 1, 0)), w


def _resample_axis(data: np.ndarray, axis: int, idx: np.ndarray, w: np.ndarray,
                   cdt) -> np.ndarray:
    if idx.shape[1] == 1 and np.all(w == 1):
        return np.take(data, idx[:, 0], axis=axis)
    wshape = [1] * data.ndim
    wshape[axis] = idx.shape[0]
    out = None
    for t in range(idx.shape[1]):  # loop over the filter taps, not the pixels
        wt = w[:, t]
        if not wt.any():
            continue
        term = np.take(data, idx[:, t], axis=axis) * wt.astype(cdt).reshape(wshape)
        out = term if out is None else out + term
    if out is None:
        shape = list(data.shape)
        shape[axis] = idx.shape[0]
        out = np.zeros(shape, dtype=cdt)
    return out


def _resize(X, roi, scales, sizes, *, mode, coordinate_transformation_mode, nearest_mode,
            cubic_coeff_a, exclude_outside, extrapolation_value, antialias, axes,
            keep_aspect_ratio_policy):
    X = np.asarray(X)
    r = X.ndim
    scales = None if scales is None or np.asarray(scales).size == 0 else np.asarray(scales)
    sizes = None if sizes is None or np.asarray(sizes).size == 0 else np.asarray(sizes)
    roi = None if roi is None or np.asarray(roi).size == 0 else np.asarray(roi, dtype=np.float64)
    if scales is not None and sizes is not None:
        raise ValueError("Resize: only one of 'scales' and 'sizes' may be given")
    if scales is None and sizes is None:
        raise ValueError("Resize: one of 'scales' and 'sizes' must be given")
    if mode not in ("nearest", "linear", "cubic"):
        raise ValueError(f"Resize: unknown mode {mode!r}")
    if axes is None or len(axes) == 0:
        ax_list = list(range(r))
    else:
        ax_list = [a + r if a < 0 else a for a in axes]
        if any(not 0 <= a < r for a in ax_list) or len(set(ax_list)) != len(ax_list):
            raise ValueError(f"Resize: invalid axes {list(axes)} for rank {r}")
    na = len(ax_list)
    given = scales if scales is not None else sizes
    if given.size != na:
        raise ValueError(f"Resize: {'scales' if scales is not None else 'sizes'} has "
                         f"{given.size} entries, expected {na}")
    scale_f = [1.0] * r
    out_size = list(X.shape)
    if scales is not None:
        for i, a in enumerate(ax_list):
            sc = float(scales.reshape(-1)[i])
            if not sc > 0:
                raise ValueError(f"Resize: scales must be positive, got {sc}")
            scale_f[a] = sc
            out_size[a] = int(math.floor(sc * X.shape[a]))
    else:
        sz = [int(v) for v in sizes.reshape(-1)]
        if keep_aspect_ratio_policy in ("not_larger", "not_smaller"):
            ratios = [sz[i] / X.shape[a] for i, a in enumerate(ax_list)]
            sc = min(ratios) if keep_aspect_ratio_policy == "not_larger" else max(ratios)
            for a in ax_list:
                scale_f[a] = sc
                out_size[a] = int(sc * X.shape[a] + 0.5)
        elif keep_aspect_ratio_policy in ("stretch", None, ""):
            for i, a in enumerate(ax_list):
                out_size[a] = sz[i]
                scale_f[a] = sz[i] / X.shape[a] if X.shape[a] else 1.0
        else:
            raise ValueError(f"Resize: unknown keep_aspect_ratio_policy {keep_aspect_ratio_policy!r}")
    roi_s, roi_e = [0.0] * r, [1.0] * r
    if roi is not None:
        rv = roi.reshape(-1)
        if rv.size == 2 * na:
            for i, a in enumerate(ax_list):
                roi_s[a], roi_e[a] = float(rv[i]), float(rv[na + i])
        elif rv.size == 2 * r:
            roi_s, roi_e = [float(v) for v in rv[:r]], [float(v) for v in rv[r:]]
        elif coordinate_transformation_mode == "tf_crop_and_resize":
            raise ValueError(f"Resize: roi has {rv.size} entries, expected {2 * na}")
    if coordinate_transformation_mode == "tf_crop_and_resize" and roi is None:
        raise ValueError("Resize: tf_crop_and_resize needs the roi input")
    if any(s < 0 for s in out_size):
        raise ValueError(f"Resize: negative output size {out_size}")

    nearest = mode == "nearest"
    if nearest:
        cdt = None
        result = X
    else:
        if X.dtype in (np.float32, np.float64):
            cdt = X.dtype
        elif X.dtype.kind in "fV":
            cdt = np.dtype(np.float32)
        else:
            cdt = np.dtype(np.float64)
        result = X.astype(cdt)
    if 0 in out_size or X.size == 0:
        if X.size == 0 and 0 not in out_size:
            raise ValueError(f"Resize: cannot resize an empty input {X.shape} to {out_size}")
        return np.zeros(out_size, dtype=X.dtype)
    ctm = coordinate_transformation_mode
    for a in range(r):
        in_len, o_len, sc = X.shape[a], out_size[a], scale_f[a]
        if (o_len == in_len and math.isclose(sc, 1.0)
                and (ctm != "tf_crop_and_resize"
                     or (math.isclose(roi_s[a], 0.0) and math.isclose(roi_e[a], 1.0)))):
            continue  # identity along this axis
        x, extrap = _source_coords(ctm, o_len, in_len, sc, roi_s[a], roi_e[a])
        idx, w = _axis_taps(x, in_len, mode, sc, nearest_mode, cubic_coeff_a,
                            bool(exclude_outside), bool(antialias) and not nearest)
        result = _resample_axis(result, a, idx, w, cdt)
        if extrap is not None and extrap.any():
            mshape = [1] * r
            mshape[a] = o_len
            fill = _cast_out(np.asarray(extrapolation_value, dtype=np.float64), result.dtype)
            result = np.where(extrap.reshape(mshape), fill, result)
    return _cast_out(result, X.dtype)


def _cast_out(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == dtype:
        return a
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(a), info.min, info.max).astype(dtype)
    if dtype == np.bool_:
        return a != 0
    return a.astype(dtype)


@kernel("Resize", since=10)
def resize_10(X, scales, *, mode="nearest"):
    return _resize(X, None, scales, None, mode=mode, coordinate_transformation_mode="asymmetric",
                   nearest_mode="simple", cubic_coeff_a=-0.75, exclude_outside=0,
                   extrapolation_value=0.0, antialias=0, axes=None,
                   keep_aspect_ratio_policy="stretch")


@kernel("Resize", since=11)
def resize(X, roi=None, scales=None, sizes=None, *, antialias=0, axes=None,
           coordinate_transformation_mode="half_pixel", cubic_coeff_a=-0.75, exclude_outside=0,
           extrapolation_value=0.0, keep_aspect_ratio_policy="stretch", mode="nearest",
           nearest_mode="round_prefer_floor"):
    return _resize(X, roi, scales, sizes, mode=mode,
                   coordinate_transformation_mode=coordinate_transformation_mode,
                   nearest_mode=nearest_mode, cubic_coeff_a=cubic_coeff_a,
                   exclude_outside=exclude_outside, extrapolation_value=extrapolation_value,
                   antialias=antialias, axes=axes, keep_aspect_ratio_policy=keep_aspect_ratio_policy)


def _upsample(X, scales, mode):
    if mode == "bilinear":
        mode = "linear"
    if mode not in ("nearest", "linear"):
        raise ValueError(f"Upsample: unknown mode {mode!r}")
    scales = np.asarray(scales, dtype=np.float32)
    if scales.size != np.ndim(X):
        raise ValueError(f"Upsample: {scales.size} scales for an input of rank {np.ndim(X)}")
    return _resize(X, None, scales, None, mode=mode, coordinate_transformation_mode="asymmetric",
                   nearest_mode="floor", cubic_coeff_a=-0.75, exclude_outside=0,
                   extrapolation_value=0.0, antialias=0, axes=None,
                   keep_aspect_ratio_policy="stretch")


@kernel("Upsample", since=1)
def upsample_1(X, *, height_scale=1.0, width_scale=1.0, mode="nearest"):
    x = np.asarray(X)
    scales = [1.0] * (x.ndim - 2) + [height_scale, width_scale]
    return _upsample(x, scales, mode)


@kernel("Upsample", since=7)
def upsample_7(X, *, scales=(), mode="nearest"):
    return _upsample(X, list(scales), mode)


@kernel("Upsample", since=9)
def upsample_9(X, scales, *, mode="nearest"):
    return _upsample(X, scales, mode)


# ---- GridSample ------------------------------------------------------------------------------

def _reflect(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Reflect coordinates into [lo, hi] (repeatedly, by the nearer border)."""
    rng = hi - lo
    if rng <= 0:
        return np.full_like(x, lo)
    below = x < lo
    above = x > hi
    dx = np.where(below, lo - x, np.where(above, x - hi, 0.0))
    n = np.floor(dx / rng)
    rem = dx - n * rng
    even = (n % 2) == 0
    from_below = np.where(even, lo + rem, hi - rem)
    from_above = np.where(even, hi - rem, lo + rem)
    return np.where(below, from_below, np.where(above, from_above, x))


def _gs_axis(coord: np.ndarray, size: int, mode: str, padding_mode: str, align_corners: bool):
    """Tap indices (..., n), weights (..., n) and validity (..., n) along one spatial axis."""
    if align_corners:
        x = (coord + 1) / 2.0 * (size - 1)
        lo, hi = 0.0, size - 1.0
    else:
        x = ((coord + 1) * size - 1) / 2.0
        lo, hi = -0.5, size - 0.5
    if mode == "nearest":
        x = np.rint(x)
    outside = (x < lo) | (x > hi)
    if padding_mode == "border":
        x = np.where(outside, np.clip(x, 0, size - 1), x)
    elif padding_mode == "reflection":
        x = np.where(outside, _reflect(x, lo, hi), x)
    if mode == "nearest":
        taps = np.trunc(x)[..., None]
        w = np.ones_like(taps)
    elif mode == "linear":
        x0 = np.floor(x)
        t = x - x0
        taps = x0[..., None] + np.array([0.0, 1.0])
        w = np.stack([1 - t, t], axis=-1)
    else:  # cubic, a = -0.75 as in PyTorch
        x0 = np.floor(x)
        t = x - x0
        taps = x0[..., None] + np.array([-1.0, 0.0, 1.0, 2.0])
        w = _cubic_kernel(np.stack([t + 1, t, 1 - t, 2 - t], axis=-1), -0.75)
    if padding_mode == "zeros":
        valid = (taps >= 0) & (taps <= size - 1)
        idx = np.clip(taps, 0, size - 1)
    elif padding_mode == "border":
        valid = None
        idx = np.clip(taps, 0, size - 1)
    else:
        valid = None
        idx = np.clip(np.trunc(_reflect(taps, lo, hi)), 0, size - 1)
    return np.nan_to_num(idx, nan=0.0).astype(np.intp), w, valid  # NaN coords: NaN weights


@kernel("GridSample", since=16)
def grid_sample(X, grid, *, align_corners=0, mode="linear", padding_mode="zeros"):
    X = np.asarray(X)
    grid = np.asarray(grid)
    mode = {"bilinear": "linear", "bicubic": "cubic"}.get(mode, mode)
    if mode not in ("nearest", "linear", "cubic"):
        raise ValueError(f"GridSample: unknown mode {mode!r}")
    if padding_mode not in ("zeros", "border", "reflection"):
        raise ValueError(f"GridSample: unknown padding_mode {padding_mode!r}")
    if X.ndim < 3:
        raise ValueError(f"GridSample: input must have rank >= 3, got {X.shape}")
    r = X.ndim - 2
    if grid.ndim != r + 2 or grid.shape[-1] != r or grid.shape[0] != X.shape[0]:
        raise ValueError(f"GridSample: grid shape {grid.shape} does not fit input {X.shape}")
    n, c = X.shape[:2]
    dims = X.shape[2:]
    out_sp = grid.shape[1:-1]
    y_shape = (n, c, *out_sp)
    if 0 in y_shape:
        return np.zeros(y_shape, dtype=X.dtype)
    if 0 in dims:
        raise ValueError(f"GridSample: empty spatial input {X.shape}")
    g = grid.reshape(n, -1, r).astype(np.float64)
    per_axis = [_gs_axis(g[..., r - 1 - a], dims[a], mode, padding_mode, bool(align_corners))
                for a in range(r)]
    bidx = np.arange(n)[:, None]
    xt = np.moveaxis(X, 1, -1)  # (N, *dims, C)
    acc = None
    for combo in itertools.product(*[range(p[0].shape[-1]) for p in per_axis]):
        wgt = None
        index = [bidx]
        for a, k in enumerate(combo):
            idx, w, valid = per_axis[a]
            wk = w[..., k] if valid is None else np.where(valid[..., k], w[..., k], 0.0)
            wgt = wk if wgt is None else wgt * wk
            index.append(idx[..., k])
        vals = xt[tuple(index)]  # (N, P, C)
        term = vals * wgt[..., None]
        acc = term if acc is None else acc + term
    y = np.moveaxis(acc, -1, 1).reshape(y_shape)
    return _cast_out(y, X.dtype)


@kernel("AffineGrid", since=20)
def affine_grid(theta, size, *, align_corners=0):
    theta = np.asarray(theta)
    size = [int(v) for v in np.asarray(size).reshape(-1)]
    if len(size) not in (4, 5):
        raise ValueError(f"AffineGrid: size must have 4 or 5 entries, got {size}")
    sp = size[2:]
    r = len(sp)
    if theta.ndim != 3 or theta.shape[1:] != (r, r + 1):
        raise ValueError(f"AffineGrid: theta shape {theta.shape} != (N, {r}, {r + 1})")

    def lin(m):
        if m <= 1:
            return np.zeros(m, dtype=np.float64)
        i = np.arange(m, dtype=np.float64)
        if align_corners:
            return -1 + 2 * i / (m - 1)
        return (2 * i + 1) / m - 1

    axes = [lin(m) for m in sp]  # (D,) H, W
    mesh = np.meshgrid(*axes, indexing="ij")
    # homogeneous coords ordered (x, y[, z], 1) with x along the last (width) axis
    base = np.stack([m.reshape(-1) for m in reversed(mesh)] + [np.ones(mesh[0].size)], axis=-1)
    cdt = theta.dtype if theta.dtype.kind == "f" else np.float32
    out = np.einsum("pk,njk->npj", base.astype(np.float64), theta.astype(np.float64))
    return out.reshape(theta.shape[0], *sp, r).astype(theta.dtype if theta.dtype.kind == "f" else cdt)
