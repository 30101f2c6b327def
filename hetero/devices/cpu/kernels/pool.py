"""CPU kernels: MaxPool (+ Indices), AveragePool, LpPool, the Global* pools, MaxUnpool, MaxRoiPool.

Window reductions are separable: a box max/sum over k0 x k1 x ... taps is reduced one spatial axis
at a time (k0 + k1 + ... strided whole-array ops instead of k0 * k1 * ...). Padding goes into a
per-thread workspace (-inf / dtype min for max, 0 for sums); AveragePool's divisor is the product of
per-axis window counts, so no mask pooling is needed. MaxPool with an Indices output tracks the
winning tap over all taps (first maximum wins) and turns it into flat NCHW indices.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from ..registry import kernel
from . import jit, parallel, vpool
from .conv import _compute_dtype, _ints, _tap_slices, conv_geometry, pad_input, workspace


def _pool_geometry(in_sp, k, st, dl, pads, auto_pad, ceil_mode):
    """(pads_begin, declared pads_end, pads_end needed for the windows, out_spatial)."""
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    key = (tuple(in_sp), tuple(k), tuple(st), tuple(dl), None if pads is None else tuple(int(p) for p in pads),
           auto_pad or "NOTSET", bool(ceil_mode))
    return _pool_geometry_cached(*key)


@functools.lru_cache(maxsize=1024)
def _pool_geometry_cached(in_sp, k, st, dl, pads, auto_pad, ceil_mode):
    n = len(in_sp)
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else (auto_pad or "NOTSET")
    ext = [(k[i] - 1) * dl[i] + 1 for i in range(n)]
    if auto_pad != "NOTSET" or not ceil_mode:
        pb, pe, out = conv_geometry(in_sp, k, st, dl, pads, auto_pad)
    else:
        p = _ints(pads, 2 * n, 0, "pads")
        pb, pe = p[:n], p[n:]
        out = []
        for i in range(n):
            span = in_sp[i] + pb[i] + pe[i] - ext[i]
            o = -(-span // st[i]) + 1 if span >= 0 else 0
            if o > 0 and (o - 1) * st[i] >= in_sp[i] + pb[i]:  # last window must start inside
                o -= 1
            out.append(max(0, o))
    pe_need = [max(pe[i], (out[i] - 1) * st[i] + ext[i] - in_sp[i] - pb[i]) if out[i] > 0 else pe[i]
               for i in range(n)]
    return tuple(pb), tuple(pe), tuple(pe_need), tuple(out)


def _prep(x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, what):
    if x.ndim < 3:
        raise ValueError(f"{what} input must have rank >= 3 (N, C, spatial...), got shape {x.shape}")
    nsp = x.ndim - 2
    if kernel_shape is None or len(kernel_shape) != nsp:
        raise ValueError(f"{what}: kernel_shape {kernel_shape} must have {nsp} entries")
    k = tuple(int(a) for a in kernel_shape)
    st = _ints(strides, nsp, 1, "strides")
    dl = _ints(dilations, nsp, 1, "dilations")
    pb, pe, pe_need, out = _pool_geometry(x.shape[2:], k, st, dl, pads, auto_pad, ceil_mode)
    return k, st, dl, pb, pe, pe_need, out


def _window_reduce(X, k, dl, st, pb, pe_need, out, ufunc, dtype, pad_value):
    """Reduce every pooling window of X (N, C, *sp) with ufunc (maximum / add) -> (N, C, *out).

    Separable: one spatial axis at a time. The last axis runs on the flattened buffer: with its
    padded length a multiple of the stride, "every s-th element from offset t*d" is a 1-D strided
    slice, so each tap is ONE long 1-D ufunc call (no per-row loop inside numpy); rows get a few
    garbage tail columns that are cropped at the end. The other axes slice whole contiguous rows.
    """
    nsp = X.ndim - 2
    N, C = X.shape[:2]
    out = [int(o) for o in out]
    pe_need = list(pe_need)
    sl = st[-1]
    last_len = X.shape[-1] + pb[-1] + pe_need[-1]
    pe_need[-1] += (-last_len) % sl  # padded last extent: a multiple of the stride
    xp = pad_input(X, pb, pe_need, value=pad_value)
    if not xp.flags.c_contiguous:
        xp = np.ascontiguousarray(xp)
    D = xp.shape[-1]
    Wq = D // sl
    A = xp.size // D
    O_l = out[-1]
    Lout = (A - 1) * Wq + O_l
    lead_shape = xp.shape[:-1]
    direct = nsp == 1 and Wq == O_l
    if direct:
        res = np.empty((N, C, O_l), dtype)
        r = res.reshape(-1)
    else:
        buf = workspace("pool0", A * Wq, dtype)
        r = buf[:Lout]
    flat = xp.reshape(-1)
    kl, dlast = k[-1], dl[-1]
    for t in range(kl):
        src = flat[t * dlast: t * dlast + sl * (Lout - 1) + 1: sl]
        if t == 0:
            np.copyto(r, src, casting="unsafe")
        else:
            ufunc(r, src, out=r)
    if direct:
        return res
    cur = buf.reshape(lead_shape + (Wq,))
    # remaining axes, last-but-one first: slices of whole rows
    for step, ax in enumerate(range(nsp - 2, -1, -1)):
        shape = list(cur.shape)
        shape[2 + ax] = out[ax]
        final = ax == 0 and Wq == O_l
        if final:
            nxt = np.empty(shape, dtype)
        else:
            nxt = workspace(f"pool{(step + 1) % 2}", math.prod(shape), dtype).reshape(shape)
        lead = (slice(None),) * (2 + ax)
        for t in range(k[ax]):
            src = cur[lead + (slice(t * dl[ax], t * dl[ax] + (out[ax] - 1) * st[ax] + 1, st[ax]),)]
            if t == 0:
                np.copyto(nxt, src, casting="unsafe")
            else:
                ufunc(nxt, src, out=nxt)
        cur = nxt
        if final:
            return cur
    return np.ascontiguousarray(cur[..., :O_l])


def _tap_range(L, pb, s, d, O, t):
    """Output positions [lo, hi) whose tap ``t`` lands inside an input axis of length L, and the input
    position the first of them reads: output i reads i*s - pb + t*d."""
    off = t * d - pb
    lo = min(O, max(0, -(off // s) if off < 0 else 0))
    hi = min(O, max(0, (L - 1 - off) // s + 1)) if L - 1 - off >= 0 else 0
    return lo, hi, lo * s + off


def _window_reduce_direct(X, k, dl, st, pb, out, ufunc, dtype, pad_value):
    """Same result as ``_window_reduce`` without a padded copy: one spatial axis at a time, FIRST axis
    first (for H that is slices of whole contiguous rows, the cheap direction), so the strided work on
    the last axis runs on an array already shrunk by the earlier strides. Each tap reduces into the
    output positions whose window it reaches (``_tap_range``); positions outside the input act as
    ``pad_value`` (the ufunc's identity) without being stored. A tap that reaches every output
    position seeds the buffer (a copy); when none does, it is filled with ``pad_value`` first.

    Traced example, MaxPool 3x3 s2 pads 1 on H = 112 (O = 56): tap 0 reads rows -1, 1, ..., 109
    -> outputs [1, 56) from row 1; tap 1 rows 0..110 -> all 56 (the seed); tap 2 rows 1..111 -> all.
    """
    nsp = X.ndim - 2
    cur = X
    for ax in range(nsp):
        L = cur.shape[2 + ax]
        O = int(out[ax])
        if ax == nsp - 1 and ax > 0 and st[ax] == 1 and dl[ax] == 1 and O == L and 0 <= pb[ax] < k[ax]:
            return _last_axis_same(np.ascontiguousarray(cur), k[ax], pb[ax], ufunc, dtype)
        shape = list(cur.shape)
        shape[2 + ax] = O
        nxt = np.empty(shape, dtype)
        lead = (slice(None),) * (2 + ax)
        ranges = [_tap_range(L, pb[ax], st[ax], dl[ax], O, t) for t in range(k[ax])]
        seed = next((t for t, (lo, hi, _) in enumerate(ranges) if lo == 0 and hi == O), None)
        if seed is None:
            nxt[...] = pad_value
        for t in ([seed] if seed is not None else []) + [t for t in range(k[ax]) if t != seed]:
            lo, hi, p0 = ranges[t]
            if hi <= lo:
                continue
            src = cur[lead + (slice(p0, p0 + (hi - lo - 1) * st[ax] + 1, st[ax]),)]
            if t == seed:
                np.copyto(nxt, src, casting="unsafe")
            else:
                dst = nxt[lead + (slice(lo, hi),)]
                ufunc(dst, src, out=dst)
        cur = nxt
    return cur


def _last_axis_same(R, k, pb, ufunc, dtype):
    """Stride-1 window along the last axis of contiguous R when the output is as long as the input
    ("same" pooling): each tap is ONE flat shifted ufunc over the whole array (no per-row inner loops,
    which are short on 7-28 wide planes); the few columns whose window crosses a row end (they read a
    neighbour row in the flat pass) are then recomputed exactly, column by column.

    Traced example, k = 3, pb = 1, W = 4: taps at offsets -1, 0, +1; the flat passes give every
    column max(R[j-1], R[j], R[j+1]) in flat terms; column 0 (its -1 read the previous row's last
    element) becomes max(R[0], R[1]) and column 3 becomes max(R[2], R[3])."""
    W = R.shape[-1]
    Y = np.empty(R.shape, dtype)
    Rf, Yf = R.reshape(-1), Y.reshape(-1)
    n = Rf.size
    offs = [t - pb for t in range(k)]
    np.copyto(Yf, Rf, casting="unsafe")  # offset 0 (t = pb) reaches every position
    for off in offs:
        if off > 0 and off < n:
            ufunc(Yf[:n - off], Rf[off:], out=Yf[:n - off])
        elif off < 0 and -off < n:
            ufunc(Yf[-off:], Rf[:n + off], out=Yf[-off:])
    bad = sorted({j for j in range(W) for off in offs if not 0 <= j + off < W})
    for j in bad:
        col = Y[..., j]
        np.copyto(col, R[..., j], casting="unsafe")
        for off in offs:
            if off and 0 <= j + off < W:
                ufunc(col, R[..., j + off], out=col)
    return Y


def _reduce(X, k, dl, st, pb, pe_need, out, ufunc, dtype, pad_value):
    """Strided last axis: ``_window_reduce_direct`` (measured, MaxPool 3x3 s2 on 64x112x112: 1.26 ms
    vs 1.76 ms); stride 1: the flat 1-D passes of ``_window_reduce`` win on small planes (192x28x28:
    0.50 ms vs 0.62 ms), where row-by-row slices have short inner loops."""
    if X.ndim >= 3 and (st[-1] > 1 or (X.ndim >= 4 and st[-1] == 1 and dl[-1] == 1 and out[-1] == X.shape[-1])):
        return _window_reduce_direct(X, k, dl, st, pb, out, ufunc, dtype, pad_value)
    return _window_reduce(X, k, dl, st, pb, pe_need, out, ufunc, dtype, pad_value)


def _covers_all(in_sp, k, dl, st, pb, out):
    """True when there is a single window per axis and it spans the whole input (a global pool)."""
    return all(out[i] == 1 and pb[i] <= 0 and -pb[i] + (k[i] - 1) * dl[i] + 1 >= in_sp[i] and dl[i] == 1
               for i in range(len(in_sp))) and all(o == 1 for o in out)


#: dtypes the compiled window kernels run (others: the numpy paths)
_JIT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _jit_pool(x, y, k, st, dl, pb, mode, padval, divisor=None):
    """The compiled paths of MaxPool / AveragePool over 2-D planes; False when they do not apply
    (no compiler; the caller's numpy path then runs). float32: ``vpool.pool2d``, vector code on the
    native pool (3x3 stride 1 on 256 x 27x27, MaxPool: 0.96 ms on numba's tap loop in GoogLeNet,
    about 0.15 there). Otherwise numba: unit strides run the tap loop of ``jit.window2d`` over the
    whole plane (MaxPool 3x3 s1 on 192x28x28: 0.38 ms against numpy's 0.45; AveragePool 0.27 vs
    0.55); strided ones the separable ``jit.pool2d``, since splitting the input into stride phases
    for the tap loop costs what it saves (MaxPool 3x3 s2 on 64x111x111: numpy 1.5 ms, tap loop
    1.6 ms, separable 0.5 ms)."""
    if x.dtype == np.float32 and vpool.pool2d(x, y, k=k, strides=st, dilations=dl, pb=pb,
                                              mode=vpool.MODE_MAX if mode == jit.MODE_MAX else vpool.MODE_SUM,
                                              divisor=divisor):
        return True
    if all(s == 1 for s in st):
        return jit.window2d(x, y, k=k, strides=st, dilations=dl, pb=pb, mode=mode, padval=padval,
                            divisor=divisor)
    return jit.pool2d(x, y, k=k, strides=st, dilations=dl, pb=pb, mode=mode, padval=padval, divisor=divisor)


def _min_value(dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return -np.inf
    if dtype.kind in "iu":
        return np.iinfo(dtype).min
    if dtype.kind == "b":
        return False
    raise ValueError(f"MaxPool does not support dtype {dtype}")


@kernel("MaxPool", since=1)
def max_pool(X, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None, pads=None,
             storage_order=0, strides=None, _num_outputs=1, _out=None):
    k, st, dl, pb, pe, pe_need, out = _prep(X, kernel_shape, strides, dilations, pads, auto_pad,
                                            ceil_mode, "MaxPool")
    N, C = X.shape[:2]
    nsp = X.ndim - 2
    dt = X.dtype
    if math.prod(out) == 0 or N * C == 0:
        y = np.empty((N, C) + tuple(out), dt)
        return y if _num_outputs <= 1 else (y, np.empty(y.shape, np.int64))
    if _num_outputs <= 1:
        if _is_global(X, k, dl, pb, pe):
            y = _global_vpool(X, vpool.MODE_MAX, _out)
            if y is not None:
                return y
        # (one window over each plane: numpy's row max, but float32 planes go to vpool, faster)
        if _covers_all(X.shape[2:], k, dl, st, pb, out) and not (nsp == 2 and dt == np.float32):
            return X.reshape(N, C, -1).max(axis=2).reshape((N, C) + (1,) * nsp)
        lo = _min_value(dt)
        if nsp == 2 and dt in _JIT_DTYPES:
            y = _buffer(_out, (N, C) + tuple(out), dt)
            if _jit_pool(np.ascontiguousarray(X), y, k, st, dl, pb, jit.MODE_MAX, lo):
                return y
        # channels are independent: blocks of them pooled on all threads
        return parallel.channels(X, lambda xs: _reduce(xs, k, dl, st, pb, pe_need, out, np.maximum, dt, lo))
    xp = pad_input(X, pb, pe_need, value=_min_value(dt))
    # values + indices: running max over all taps, remembering the first winning tap
    taps = _tap_slices(k, dl, st, out)
    lead = (slice(None), slice(None))
    y = np.array(xp[lead + taps[0]], dtype=dt, copy=True)
    best = np.zeros(y.shape, np.int32)
    for t in range(1, len(taps)):
        v = xp[lead + taps[t]]
        m = v > y
        np.copyto(y, v, where=m)
        best[m] = t
    tap_idx = np.array(list(np.ndindex(*k)), dtype=np.int64).reshape(-1, nsp)
    in_sp = X.shape[2:]
    if storage_order:
        mult = [math.prod(in_sp[:i]) for i in range(nsp)]  # column-major over spatial axes
    else:
        mult = [math.prod(in_sp[i + 1:]) for i in range(nsp)]
    plane = math.prod(in_sp)
    idx = (np.arange(N * C, dtype=np.int64) * plane).reshape((N, C) + (1,) * nsp)
    idx = np.broadcast_to(idx, y.shape).copy()
    for ax in range(nsp):
        oshape = [1] * (nsp + 2)
        oshape[2 + ax] = out[ax]
        base = (np.arange(out[ax], dtype=np.int64) * st[ax] - pb[ax]).reshape(oshape)
        coord = base + tap_idx[best, ax] * dl[ax]
        idx += coord * mult[ax]
    return y, idx


def _divisor(in_sp, k, st, dl, pb, pe, out, count_include_pad, dtype):
    """Per-output window element counts (product of per-axis counts), shaped (*out); cached, read-only."""
    return _divisor_cached(tuple(in_sp), tuple(k), tuple(st), tuple(dl), tuple(pb), tuple(pe), tuple(out),
                           bool(count_include_pad), np.dtype(dtype))


@functools.lru_cache(maxsize=1024)
def _divisor_cached(in_sp, k, st, dl, pb, pe, out, count_include_pad, dtype):
    div = None
    nsp = len(in_sp)
    for ax in range(nsp):
        lo, hi = (-pb[ax], in_sp[ax] + pe[ax]) if count_include_pad else (0, in_sp[ax])
        pos = (np.arange(out[ax])[:, None] * st[ax] - pb[ax] + np.arange(k[ax])[None, :] * dl[ax])
        cnt = ((pos >= lo) & (pos < hi)).sum(axis=1).astype(dtype)
        shp = [1] * nsp
        shp[ax] = out[ax]
        cnt = cnt.reshape(shp)
        div = cnt if div is None else div * cnt
    div = np.ascontiguousarray(div)
    div.flags.writeable = False
    return div


@kernel("AveragePool", since=1)
def average_pool(X, *, auto_pad="NOTSET", ceil_mode=0, count_include_pad=0, dilations=None,
                 kernel_shape=None, pads=None, strides=None, _out=None):
    k, st, dl, pb, pe, pe_need, out = _prep(X, kernel_shape, strides, dilations, pads, auto_pad,
                                            ceil_mode, "AveragePool")
    N, C = X.shape[:2]
    dt = X.dtype
    cdt = _compute_dtype(dt)
    if math.prod(out) == 0 or N * C == 0:
        return np.empty((N, C) + tuple(out), dt)
    if _is_global(X, k, dl, pb, pe):  # (count_include_pad is moot: no pads)
        y = _global_vpool(X, vpool.MODE_SUM, _out)
        if y is not None:
            return y
    x = X.astype(cdt, copy=False)
    div = _divisor(X.shape[2:], k, st, dl, pb, pe, out, count_include_pad, cdt)
    if X.ndim == 4 and (x.dtype == np.float32 or not _covers_all(X.shape[2:], k, dl, st, pb, out)):
        y = _buffer(_out, (N, C) + tuple(out), cdt)
        if _jit_pool(np.ascontiguousarray(x), y, k, st, dl, pb, jit.MODE_SUM, 0.0, div):
            return y if y.dtype == dt else y.astype(dt)
    def block(xs):  # window sums over a block of channels, then the per-window divisor
        if _covers_all(X.shape[2:], k, dl, st, pb, out):
            ys = xs.reshape(N, xs.shape[1], -1).sum(axis=2, dtype=cdt).reshape(xs.shape[:2] + (1,) * (X.ndim - 2))
        else:
            ys = _reduce(xs, k, dl, st, pb, pe_need, out, np.add, cdt, 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ys /= div
        return ys
    y = parallel.channels(x, block)  # channels are independent: blocks on all threads
    return y if y.dtype == dt else y.astype(dt)


@kernel("LpPool", since=1)
def lp_pool(X, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None, p=2, pads=None,
            strides=None):
    k, st, dl, pb, pe, pe_need, out = _prep(X, kernel_shape, strides, dilations, pads, auto_pad,
                                            ceil_mode, "LpPool")
    N, C = X.shape[:2]
    dt = X.dtype
    cdt = _compute_dtype(dt)
    if math.prod(out) == 0 or N * C == 0:
        return np.empty((N, C) + tuple(out), dt)
    p = float(p)
    x = np.abs(X.astype(cdt, copy=False))
    if p == 2.0:
        np.square(x, out=x)
    elif p != 1.0:
        np.power(x, np.asarray(p, cdt), out=x)
    y = _window_reduce(x, k, dl, st, pb, pe_need, out, np.add, cdt, 0)
    if p == 2.0:
        np.sqrt(y, out=y)
    elif p != 1.0:
        np.power(y, np.asarray(1.0 / p, cdt), out=y)
    return y if y.dtype == dt else y.astype(dt)


# --------------------------------------------------------------------------------------------
# global pools
# --------------------------------------------------------------------------------------------


def _global_shape(X):
    if X.ndim < 2:
        raise ValueError(f"global pooling expects rank >= 2, got shape {X.shape}")
    return X.shape[:2] + (1,) * (X.ndim - 2)


def _is_global(X, k, dl, pb, pe):
    """A 2-D window exactly one plane, unpadded (ResNet's and GoogLeNet's last AveragePool)."""
    return X.ndim == 4 and tuple(k) == X.shape[2:] and not any(pb) and not any(pe) and tuple(dl) == (1, 1)


def _buffer(out, shape, dtype):
    """The memory plan's buffer ``out`` when it fits (the pool then writes in place: into its
    slice of a Concat's buffer, for an inception block's pool branch), else a new array."""
    if out is not None and out.shape == shape and out.dtype == dtype and out.flags.c_contiguous:
        return out
    return np.empty(shape, dtype)


def _global_vpool(X, mode, out=None):
    """A global pool of 4-D float32 X through ``vpool.planes``, or None where it does not apply."""
    if X.ndim != 4 or X.dtype != np.float32 or X.size == 0:
        return None
    y = _buffer(out, X.shape[:2] + (1, 1), np.float32)
    return y if vpool.planes(np.ascontiguousarray(X), y, mode) else None


@kernel("GlobalAveragePool", since=1)
def global_average_pool(X, _out=None):
    y = _global_vpool(X, vpool.MODE_SUM, _out)
    if y is not None:
        return y
    dt = X.dtype
    cdt = _compute_dtype(dt)
    N, C = X.shape[:2]
    y = X.reshape(N * C, -1).mean(axis=1, dtype=cdt)
    return y.reshape(_global_shape(X)).astype(dt, copy=False)


@kernel("GlobalMaxPool", since=1)
def global_max_pool(X, _out=None):
    y = _global_vpool(X, vpool.MODE_MAX, _out)
    if y is not None:
        return y
    N, C = X.shape[:2]
    y = X.reshape(N * C, -1).max(axis=1)
    return y.reshape(_global_shape(X))


@kernel("GlobalLpPool", since=1)
def global_lp_pool(X, *, p=2):
    dt = X.dtype
    cdt = _compute_dtype(dt)
    N, C = X.shape[:2]
    x = np.abs(X.reshape(N * C, -1).astype(cdt, copy=False))
    p = float(p)
    if p == 2.0:
        y = np.sqrt(np.einsum("ij,ij->i", x, x))
    else:
        y = np.power(np.power(x, np.asarray(p, cdt)).sum(axis=1), np.asarray(1.0 / p, cdt))
    return y.reshape(_global_shape(X)).astype(dt, copy=False)


# --------------------------------------------------------------------------------------------
# MaxUnpool, MaxRoiPool
# --------------------------------------------------------------------------------------------


@kernel("MaxUnpool", since=9)
def max_unpool(X, I, output_shape=None, *, kernel_shape=None, pads=None, strides=None):
    nsp = X.ndim - 2
    if kernel_shape is None or len(kernel_shape) != nsp:
        raise ValueError(f"MaxUnpool: kernel_shape {kernel_shape} must have {nsp} entries")
    k = [int(a) for a in kernel_shape]
    st = _ints(strides, nsp, 1, "strides")
    p = _ints(pads, 2 * nsp, 0, "pads")
    inferred = list(X.shape[:2]) + [
        (X.shape[2 + i] - 1) * st[i] - (p[i] + p[nsp + i]) + k[i] for i in range(nsp)]
    total = math.prod(inferred)
    flat = np.zeros(total, X.dtype)
    idx = np.asarray(I, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= total):
        raise ValueError(f"MaxUnpool: indices out of range for output of {total} elements")
    flat[idx] = X.reshape(-1)
    y = flat.reshape(inferred)
    if output_shape is None:
        return y
    shape = [int(a) for a in np.asarray(output_shape).reshape(-1)]
    if len(shape) != X.ndim:
        raise ValueError(f"MaxUnpool: output_shape {shape} must have rank {X.ndim}")
    if shape == inferred:
        return y
    res = np.zeros(shape, X.dtype)
    sl = tuple(slice(0, min(a, b)) for a, b in zip(inferred, shape))
    res[sl] = y[sl]
    return res


@kernel("MaxRoiPool", since=1)
def max_roi_pool(X, rois, *, pooled_shape, spatial_scale=1.0):
    if X.ndim != 4:
        raise ValueError(f"MaxRoiPool expects a 4-D input, got shape {X.shape}")
    N, C, H, W = X.shape
    ph_n, pw_n = (int(a) for a in pooled_shape)
    rois = np.asarray(rois)
    R = rois.shape[0]
    y = np.zeros((R, C, ph_n, pw_n), X.dtype)
    neg = _min_value(X.dtype)
    for r in range(R):  # one vectorised pass per region
        b = int(rois[r, 0])
        x1, y1, x2, y2 = (int(np.round(float(v) * spatial_scale)) for v in rois[r, 1:5])
        rh = max(y2 - y1 + 1, 1)
        rw = max(x2 - x1 + 1, 1)
        bh = rh / ph_n
        bw = rw / pw_n
        hs = np.clip(np.floor(np.arange(ph_n) * bh).astype(np.int64) + y1, 0, H)
        he = np.clip(np.ceil(np.arange(1, ph_n + 1) * bh).astype(np.int64) + y1, 0, H)
        ws = np.clip(np.floor(np.arange(pw_n) * bw).astype(np.int64) + x1, 0, W)
        we = np.clip(np.ceil(np.arange(1, pw_n + 1) * bw).astype(np.int64) + x1, 0, W)
        hh = np.arange(H)
        ww = np.arange(W)
        mh = (hh[None, :] >= hs[:, None]) & (hh[None, :] < he[:, None])  # (ph, H)
        mw = (ww[None, :] >= ws[:, None]) & (ww[None, :] < we[:, None])  # (pw, W)
        xb = X[b]  # (C, H, W)
        a = np.where(mw[None, None, :, :], xb[:, :, None, :], neg).max(axis=3)  # (C, H, pw)
        m = np.where(mh[None, :, :, None], a[:, None, :, :], neg).max(axis=2)  # (C, ph, pw)
        empty = (~mh.any(1))[:, None] | (~mw.any(1))[None, :]
        m[:, empty] = 0
        y[r] = m
    return y
