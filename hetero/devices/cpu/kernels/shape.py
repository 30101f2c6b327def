"""CPU kernels: shape manipulation, indexing, gather/scatter, padding and tensor constructors.

Hot-path ops (Reshape, Transpose, Slice, Squeeze/Unsqueeze, Flatten, Split) return views of their
input where numpy can.
"""
from __future__ import annotations

import numpy as np

from ..registry import kernel
from . import parallel

_INT_MAX = 2**63 - 1


# --------------------------------------------------------------------------------------------------
# helpers


def _ints(v) -> list[int]:
    """A list of Python ints from an attribute list or a 0-/1-D integer tensor."""
    if v is None:
        return []
    if isinstance(v, np.ndarray):
        if v.dtype.kind not in "iu":
            v = v.astype(np.int64)
        return v.reshape(-1).tolist()
    return [int(a) for a in v]


def _prod(dims) -> int:
    p = 1
    for d in dims:
        p *= int(d)
    return p


def _norm_axis(axis, rank: int, what: str = "axis") -> int:
    a = int(axis)
    if not -rank <= a < rank:
        raise ValueError(f"{what} {axis} is out of range for rank {rank}")
    return a + rank if a < 0 else a


def _norm_axes(axes, rank: int, what: str = "axes") -> list[int]:
    out = [_norm_axis(a, rank, what) for a in axes]
    if len(set(out)) != len(out):
        raise ValueError(f"{what} contain duplicates: {list(axes)}")
    return out


def _norm_indices(idx: np.ndarray, dim) -> np.ndarray:
    """Negative indices wrapped by ``dim`` (broadcastable), bounds-checked; returns int64."""
    idx = np.asarray(idx)
    if idx.dtype.kind not in "iu":
        raise ValueError(f"indices must be integers, got {idx.dtype}")
    idx = idx.astype(np.int64, copy=False)
    dim_arr = np.asarray(dim, dtype=np.int64)
    if idx.size and (np.any(idx < -dim_arr) or np.any(idx >= dim_arr)):
        bad = idx[(idx < -dim_arr) | (idx >= dim_arr)] if dim_arr.ndim == 0 else None
        raise IndexError(f"index out of bounds (dim {dim}){'' if bad is None else f': {bad[:5].tolist()}'}")
    return np.where(idx < 0, idx + dim_arr, idx)


def _np_dtype(onnx_dtype: int) -> np.dtype:
    from onnx import helper  # noqa: PLC0415  (numpy type mapping only)

    return np.dtype(helper.tensor_dtype_to_np_dtype(int(onnx_dtype)))


def _zero_of(dtype: np.dtype):
    if dtype == object:
        return ""
    return np.zeros((), dtype=dtype)


# --------------------------------------------------------------------------------------------------
# Reshape / Flatten / Squeeze / Unsqueeze / Transpose


def _reshape(x, shape, allowzero):
    x = np.asarray(x)
    shape = _ints(shape)
    new = []
    for i, d in enumerate(shape):
        if d == 0 and not allowzero:
            if i >= x.ndim:
                raise ValueError(f"Reshape: 0 at position {i} but input has rank {x.ndim}")
            new.append(x.shape[i])
        elif d < -1:
            raise ValueError(f"Reshape: invalid dimension {d}")
        else:
            new.append(d)
    if new.count(-1) > 1:
        raise ValueError(f"Reshape: more than one -1 in {shape}")
    if -1 in new:
        known = _prod([d for d in new if d != -1])
        if known == 0:
            if x.size != 0:
                raise ValueError(f"Reshape: cannot infer -1 in {shape} for input {x.shape}")
            new[new.index(-1)] = 0
        else:
            if x.size % known:
                raise ValueError(f"Reshape: cannot reshape {x.shape} into {shape}")
            new[new.index(-1)] = x.size // known
    if _prod(new) != x.size:
        raise ValueError(f"Reshape: cannot reshape {x.shape} (size {x.size}) into {tuple(new)}")
    return x.reshape(new)


@kernel("Reshape", since=1)
def reshape_v1(data, *, shape=None):
    return _reshape(data, shape, 0)


@kernel("Reshape", since=5)
def reshape(data, shape, *, allowzero=0):
    return _reshape(data, shape, allowzero)


@kernel("Flatten", since=1)
def flatten(input, *, axis=1):
    x = np.asarray(input)
    r = x.ndim
    if not -r <= axis <= r:
        raise ValueError(f"Flatten: axis {axis} out of range for rank {r}")
    a = axis + r if axis < 0 else axis
    outer = _prod(x.shape[:a])
    inner = _prod(x.shape[a:])
    return x.reshape(outer, inner)


def _squeeze(x, axes):
    x = np.asarray(x)
    if axes is None or len(_ints(axes)) == 0:
        return x.reshape([d for d in x.shape if d != 1])
    ax = _norm_axes(_ints(axes), x.ndim)
    for a in ax:
        if x.shape[a] != 1:
            raise ValueError(f"Squeeze: dimension {a} has size {x.shape[a]}, not 1")
    return x.reshape([d for i, d in enumerate(x.shape) if i not in ax])


@kernel("Squeeze", since=1)
def squeeze_v1(data, *, axes=None):
    return _squeeze(data, axes)


@kernel("Squeeze", since=13)
def squeeze(data, axes=None):
    return _squeeze(data, axes)


def _unsqueeze(x, axes):
    x = np.asarray(x)
    axes = _ints(axes)
    r = x.ndim + len(axes)
    ax = sorted(_norm_axes(axes, r))
    shape = list(x.shape)
    for a in ax:
        shape.insert(a, 1)
    return x.reshape(shape)


@kernel("Unsqueeze", since=1)
def unsqueeze_v1(data, *, axes):
    return _unsqueeze(data, axes)


@kernel("Unsqueeze", since=13)
def unsqueeze(data, axes):
    return _unsqueeze(data, axes)


@kernel("Transpose", since=1)
def transpose(data, *, perm=None):
    x = np.asarray(data)
    if perm is None or len(perm) == 0:
        return x.transpose()
    perm = [int(p) for p in perm]
    if sorted(_norm_axes(perm, x.ndim, "perm")) != list(range(x.ndim)):
        raise ValueError(f"Transpose: perm {perm} is not a permutation of rank {x.ndim}")
    return x.transpose(perm)


# --------------------------------------------------------------------------------------------------
# Concat / Split


def _concat_fits(arrs, ax, out) -> bool:
    """Every input matches ``out`` off the concat axis, and their lengths along it add up."""
    shp = out.shape
    return (sum(a.shape[ax] for a in arrs) == shp[ax]
            and all(a.ndim == out.ndim and a.shape[:ax] == shp[:ax] and a.shape[ax + 1:] == shp[ax + 1:]
                    for a in arrs))


def _in_place(a, dst) -> bool:
    """``a`` already is ``dst`` (same memory, shape and strides): the memory plan had its producer
    write straight into its slice of the Concat's output (memory.py, step 5)."""
    if a.shape != dst.shape or not np.may_share_memory(a, dst):  # (cheap: bounds only)
        return False
    return (a.__array_interface__["data"][0] == dst.__array_interface__["data"][0]
            and all(sa == sd for sa, sd, n in zip(a.strides, dst.strides, a.shape) if n > 1))  # (a length-1
    # axis's stride is arbitrary: the Concat buffer's batch stride is longer than the slice's)


def _concat_into(arrs, ax, out) -> None:
    """Concat into ``out``, skipping inputs already in place. Large outputs are cut along ``ax``
    into one range per thread, each thread copying the pieces of the inputs in its range
    (DenseNet's concat of a big running feature map and a thin new one is split evenly, not input
    by input)."""
    lead = (slice(None),) * ax
    todo = []
    o0 = 0
    for a in arrs:
        o1 = o0 + a.shape[ax]
        dst = out[lead + (slice(o0, o1),)]
        if not _in_place(a, dst):
            todo.append((a, o0, o1, dst))
        o0 = o1
    moved = sum(t[0].size for t in todo)
    if moved < parallel.MIN_SPLIT_ELEMS or parallel.threads() <= 1:
        for a, _, _, dst in todo:
            np.copyto(dst, a)
        return

    def copy_range(lo, hi):
        for a, o0, o1, _ in todo:
            a0, a1 = max(lo, o0), min(hi, o1)
            if a0 < a1:
                np.copyto(out[lead + (slice(a0, a1),)], a[lead + (slice(a0 - o0, a1 - o0),)])

    parallel.run([(lambda lo=lo, hi=hi: copy_range(lo, hi)) for lo, hi in parallel.split(out.shape[ax])])


@kernel("Concat", since=1)
def concat(*inputs, axis=1, _out=None):
    arrs = [np.asarray(a) for a in inputs if a is not None]
    if not arrs:
        raise ValueError("Concat needs at least one input")
    rank = arrs[0].ndim
    if rank == 0:
        raise ValueError("Concat of scalars is not allowed")
    ax = _norm_axis(axis, rank)
    if len(arrs) == 1:
        return arrs[0]
    if _out is not None and all(a.dtype == _out.dtype for a in arrs) and _concat_fits(arrs, ax, _out):
        _concat_into(arrs, ax, _out)
        return _out
    return np.concatenate(arrs, axis=ax)


def _split(x, sizes, axis, n_out, num_outputs=None):
    x = np.asarray(x)
    ax = _norm_axis(axis, x.ndim)
    dim = x.shape[ax]
    if sizes is not None and len(_ints(sizes)):
        sizes = _ints(sizes)
        if any(s < 0 for s in sizes) or sum(sizes) != dim:
            raise ValueError(f"Split: sizes {sizes} don't add up to dimension {dim}")
        if n_out is not None and len(sizes) != n_out:
            raise ValueError(f"Split: {len(sizes)} split sizes but {n_out} outputs")
    else:
        n = int(num_outputs) if num_outputs is not None else (n_out or 1)
        if n <= 0:
            raise ValueError(f"Split: invalid number of outputs {n}")
        if num_outputs is None and dim % n:
            raise ValueError(f"Split: dimension {dim} not divisible into {n} equal outputs")
        chunk = -(-dim // n)
        sizes = [min(chunk, max(dim - i * chunk, 0)) for i in range(n)]
        if num_outputs is not None and n_out is not None and n_out != n:
            raise ValueError(f"Split: num_outputs={n} but node has {n_out} outputs")
    bounds = np.cumsum(sizes)[:-1].tolist()
    return tuple(np.split(x, bounds, axis=ax))


@kernel("Split", since=1)
def split_v1(input, split_in=None, *, axis=0, split=None, _num_outputs=None):
    sizes = split_in if split_in is not None else split
    return _split(input, sizes, axis, _num_outputs)


@kernel("Split", since=13)
def split_v13(input, split=None, *, axis=0, _num_outputs=None):
    return _split(input, split, axis, _num_outputs)


@kernel("Split", since=18)
def split(input, split=None, *, axis=0, num_outputs=None, _num_outputs=None):
    if split is not None and num_outputs is not None:
        raise ValueError("Split: both the split input and num_outputs are given")
    return _split(input, split, axis, _num_outputs, num_outputs)


# --------------------------------------------------------------------------------------------------
# Slice


def _slice(x, starts, ends, axes, steps):
    x = np.asarray(x)
    starts, ends = _ints(starts), _ints(ends)
    if len(starts) != len(ends):
        raise ValueError(f"Slice: starts {starts} and ends {ends} differ in length")
    axes = _ints(axes) if axes is not None else list(range(len(starts)))
    steps = _ints(steps) if steps is not None else [1] * len(starts)
    if not (len(axes) == len(steps) == len(starts)):
        raise ValueError("Slice: starts, ends, axes and steps must have the same length")
    axes = _norm_axes(axes, x.ndim)
    index = [slice(None)] * x.ndim
    for a, s, e, st in zip(axes, starts, ends, steps):
        dim = x.shape[a]
        if st == 0:
            raise ValueError("Slice: step must not be 0")
        if s < 0:
            s += dim
        if e < 0:
            e += dim
        if st > 0:
            s = min(max(s, 0), dim)
            e = min(max(e, 0), dim)
            index[a] = slice(s, e, st)
        else:
            s = min(max(s, 0), dim - 1)
            e = min(max(e, -1), dim - 1)
            index[a] = slice(s, e if e >= 0 else None, st)
    return x[tuple(index)]


@kernel("Slice", since=1)
def slice_v1(data, *, starts, ends, axes=None):
    return _slice(data, starts, ends, axes, None)


@kernel("Slice", since=10)
def slice_(data, starts, ends, axes=None, steps=None):
    return _slice(data, starts, ends, axes, steps)


# --------------------------------------------------------------------------------------------------
# Gather family


@kernel("Gather", since=1)
def gather(data, indices, *, axis=0):
    x = np.asarray(data)
    ax = _norm_axis(axis, x.ndim)
    idx = np.asarray(indices)
    if idx.ndim == 0:
        i = int(idx)
        dim = x.shape[ax]
        if not -dim <= i < dim:
            raise IndexError(f"Gather: index {i} out of bounds for axis of size {dim}")
        # a scalar index: basic indexing gives a view
        return x[(slice(None),) * ax + (i,)]
    return np.take(x, _norm_indices(idx, x.shape[ax]), axis=ax)


@kernel("GatherElements", since=11)
def gather_elements(data, indices, *, axis=0):
    x = np.asarray(data)
    idx = np.asarray(indices)
    ax = _norm_axis(axis, x.ndim)
    if idx.ndim != x.ndim:
        raise ValueError(f"GatherElements: indices rank {idx.ndim} != data rank {x.ndim}")
    return np.take_along_axis(x, _norm_indices(idx, x.shape[ax]), axis=ax)


@kernel("GatherND", since=11)
def gather_nd(data, indices, *, batch_dims=0):
    x = np.asarray(data)
    idx = np.asarray(indices)
    b = int(batch_dims)
    if idx.ndim < 1:
        raise ValueError("GatherND: indices must have rank >= 1")
    k = idx.shape[-1]
    if b + k > x.ndim:
        raise ValueError(f"GatherND: batch_dims + indices.shape[-1] = {b + k} > data rank {x.ndim}")
    if x.shape[:b] != idx.shape[:b]:
        raise ValueError(f"GatherND: batch dims differ: {x.shape[:b]} vs {idx.shape[:b]}")
    batch_shape = x.shape[:b]
    B = int(np.prod(batch_shape, dtype=np.int64))
    xb = x.reshape((B,) + x.shape[b:])
    mid_shape = idx.shape[b:-1]
    M = int(np.prod(mid_shape, dtype=np.int64))
    ib = _norm_indices(idx.reshape((B, M, k)), np.asarray(x.shape[b:b + k], dtype=np.int64))
    if k == 0:
        r = np.broadcast_to(xb[:, None], (B, M) + xb.shape[1:])
    else:
        sel = (np.arange(B, dtype=np.int64)[:, None],) + tuple(ib[..., j] for j in range(k))
        r = xb[sel]  # (B, M) + x.shape[b+k:]
    return r.reshape(batch_shape + mid_shape + x.shape[b + k:])


# --------------------------------------------------------------------------------------------------
# Scatter family

_REDUCTIONS = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _scatter_elements(data, indices, updates, axis, reduction):
    x = np.asarray(data)
    idx = np.asarray(indices)
    upd = np.asarray(updates)
    ax = _norm_axis(axis, x.ndim)
    if idx.shape != upd.shape or idx.ndim != x.ndim:
        raise ValueError(f"ScatterElements: indices {idx.shape} / updates {upd.shape} / data {x.shape} mismatch")
    idx = _norm_indices(idx, x.shape[ax])
    out = x.copy()
    if idx.size == 0:
        return out
    grids = list(np.indices(idx.shape, sparse=True))
    grids[ax] = idx
    sel = tuple(grids)
    if reduction in (None, "", "none"):
        out[sel] = upd
    elif reduction in _REDUCTIONS:
        _REDUCTIONS[reduction].at(out, sel, upd.astype(out.dtype, copy=False))
    else:
        raise ValueError(f"unknown reduction {reduction!r}")
    return out


@kernel("Scatter", since=9)
def scatter(data, indices, updates, *, axis=0):
    return _scatter_elements(data, indices, updates, axis, None)


@kernel("ScatterElements", since=11)
def scatter_elements(data, indices, updates, *, axis=0, reduction="none"):
    return _scatter_elements(data, indices, updates, axis, reduction)


@kernel("ScatterND", since=11)
def scatter_nd(data, indices, updates, *, reduction="none"):
    x = np.asarray(data)
    idx = np.asarray(indices)
    upd = np.asarray(updates)
    if idx.ndim < 1:
        raise ValueError("ScatterND: indices must have rank >= 1")
    k = idx.shape[-1]
    if k > x.ndim:
        raise ValueError(f"ScatterND: indices.shape[-1]={k} > data rank {x.ndim}")
    exp = idx.shape[:-1] + x.shape[k:]
    if upd.shape != exp:
        raise ValueError(f"ScatterND: updates shape {upd.shape}, expected {exp}")
    idx = _norm_indices(idx, np.asarray(x.shape[:k], dtype=np.int64))
    out = x.copy()
    sel = tuple(idx[..., j] for j in range(k))
    if reduction in (None, "", "none"):
        out[sel] = upd
    elif reduction in _REDUCTIONS:
        _REDUCTIONS[reduction].at(out, sel, upd.astype(out.dtype, copy=False))
    else:
        raise ValueError(f"unknown reduction {reduction!r}")
    return out


@kernel("TensorScatter", since=24)
def tensor_scatter(past_cache, update, write_indices=None, *, axis=-2, mode="linear"):
    past = np.asarray(past_cache)
    upd = np.asarray(update)
    if past.ndim != upd.ndim or past.ndim < 2:
        raise ValueError(f"TensorScatter: cache {past.shape} and update {upd.shape} ranks differ or < 2")
    ax = _norm_axis(axis, past.ndim)
    if ax == 0:
        raise ValueError("TensorScatter: axis must not be the batch axis")
    if any(p != u for i, (p, u) in enumerate(zip(past.shape, upd.shape)) if i != ax):
        raise ValueError(f"TensorScatter: cache {past.shape} and update {upd.shape} differ off the axis")
    B, max_len, seq = past.shape[0], past.shape[ax], upd.shape[ax]
    wi = np.zeros(B, np.int64) if write_indices is None else np.asarray(write_indices, np.int64).reshape(-1)
    pos = wi[:, None] + np.arange(seq, dtype=np.int64)[None, :]  # (B, seq)
    if mode == "circular":
        pos = pos % max_len if max_len else pos
    elif mode != "linear":
        raise ValueError(f"TensorScatter: unknown mode {mode!r}")
    if pos.size and (pos.min() < 0 or pos.max() >= max_len):
        raise IndexError("TensorScatter: write position out of the cache range")
    out = past.copy()
    ov = np.moveaxis(out, ax, 1)
    uv = np.moveaxis(upd, ax, 1)
    ov[np.arange(B)[:, None], pos] = uv
    return out


# --------------------------------------------------------------------------------------------------
# Pad / CenterCropPad / Tile / Expand


def _pad(x, pads, mode, value, axes=None):
    x = np.asarray(x)
    pads = _ints(pads)
    rank = x.ndim
    ax = list(range(rank)) if axes is None else _norm_axes(_ints(axes), rank)
    n = len(ax)
    if len(pads) != 2 * n:
        raise ValueError(f"Pad: pads has {len(pads)} entries, expected {2 * n}")
    before = [0] * rank
    after = [0] * rank
    for i, a in enumerate(ax):
        before[a] = pads[i]
        after[a] = pads[i + n]
    # negative pads crop
    if any(p < 0 for p in before + after):
        index = tuple(slice(max(-b, 0), x.shape[i] - max(-a, 0)) for i, (b, a) in enumerate(zip(before, after)))
        x = x[index]
        before = [max(b, 0) for b in before]
        after = [max(a, 0) for a in after]
    width = list(zip(before, after))
    if not any(before) and not any(after):
        return x.copy()
    if mode == "constant":
        if value is None:
            cv = _zero_of(x.dtype)
        else:
            v = np.asarray(value)
            cv = v.reshape(-1)[0] if v.size else _zero_of(x.dtype)
        out_shape = tuple(d + b + a for d, b, a in zip(x.shape, before, after))
        out = np.full(out_shape, cv, dtype=x.dtype)
        out[tuple(slice(b, b + d) for b, d in zip(before, x.shape))] = x
        return out
    if mode in ("reflect", "edge", "wrap"):
        for i, (b, a) in enumerate(width):
            if (b or a) and x.shape[i] == 0:
                raise ValueError(f"Pad: mode {mode!r} cannot pad an empty axis {i}")
        return np.pad(x, width, mode=mode)
    raise ValueError(f"Pad: unknown mode {mode!r}")


@kernel("Pad", since=1)
def pad_v1(data, *, paddings=None, pads=None, mode="constant", value=0.0):
    p = pads if pads is not None else paddings
    if p is None:
        raise ValueError("Pad: pads attribute missing")
    return _pad(data, p, mode, np.asarray(value, dtype=np.asarray(data).dtype), None)


@kernel("Pad", since=11)
def pad(data, pads, constant_value=None, axes=None, *, mode="constant"):
    return _pad(data, pads, mode, constant_value, axes)


@kernel("CenterCropPad", since=18)
def center_crop_pad(input_data, shape, *, axes=None):
    x = np.asarray(input_data)
    shape = _ints(shape)
    ax = list(range(x.ndim)) if axes is None else _norm_axes(_ints(axes), x.ndim)
    if len(shape) != len(ax):
        raise ValueError(f"CenterCropPad: shape {shape} does not match axes {ax}")
    index = [slice(None)] * x.ndim
    width = [(0, 0)] * x.ndim
    for a, t in zip(ax, shape):
        d = x.shape[a]
        if t < d:
            s = (d - t) // 2
            index[a] = slice(s, s + t)
        elif t > d:
            b = (t - d) // 2
            width[a] = (b, t - d - b)
    y = x[tuple(index)]
    if any(w != (0, 0) for w in width):
        out = np.zeros(tuple(d + b + e for d, (b, e) in zip(y.shape, width)), dtype=x.dtype)
        out[tuple(slice(b, b + d) for (b, _), d in zip(width, y.shape))] = y
        return out
    return y.copy()


@kernel("Tile", since=1)
def tile_v1(input, tiles, axis):
    x = np.asarray(input)
    reps = [1] * x.ndim
    reps[_norm_axis(int(np.asarray(axis).reshape(-1)[0]), x.ndim)] = int(np.asarray(tiles).reshape(-1)[0])
    return np.tile(x, reps)


@kernel("Tile", since=6)
def tile(input, repeats):
    x = np.asarray(input)
    reps = _ints(repeats)
    if len(reps) != x.ndim:
        raise ValueError(f"Tile: repeats has {len(reps)} entries for a tensor of rank {x.ndim}")
    if any(r < 0 for r in reps):
        raise ValueError(f"Tile: negative repeats {reps}")
    return np.tile(x, reps)


@kernel("Expand", since=8)
def expand(input, shape):
    x = np.asarray(input)
    try:
        out_shape = np.broadcast_shapes(x.shape, tuple(_ints(shape)))
    except ValueError as e:
        raise ValueError(f"Expand: cannot broadcast {x.shape} to {_ints(shape)}") from e
    if out_shape == x.shape:
        return x
    return np.array(np.broadcast_to(x, out_shape))


# --------------------------------------------------------------------------------------------------
# Shape / Size / Range / constructors


@kernel("Shape", since=1)
def shape(data, *, start=0, end=None):
    s = np.asarray(data).shape
    r = len(s)
    st = int(start)
    st = min(max(st + r if st < 0 else st, 0), r)
    if end is None:
        en = r
    else:
        en = int(end)
        en = min(max(en + r if en < 0 else en, 0), r)
    return np.array(s[st:en], dtype=np.int64)


@kernel("Size", since=1)
def size(data):
    return np.array(np.asarray(data).size, dtype=np.int64)


@kernel("Range", since=11)
def range_(start, limit, delta, *, stash_type=1):
    s, l, d = (np.asarray(v).reshape(-1)[0] for v in (start, limit, delta))
    dt = np.asarray(start).dtype
    calc = dt
    if dt.kind == "f" or dt.kind == "V":
        if dt != np.float64:
            calc = np.dtype(np.float32) if (stash_type or dt == np.float32) else dt
    if d == 0:
        raise ValueError("Range: delta must not be 0")
    if dt.kind in "iu":
        s_, l_, d_ = int(s), int(l), int(d)
        n = max(-((s_ - l_) // d_), 0)  # ceil((l - s) / d)
        return (s_ + np.arange(n, dtype=np.int64) * d_).astype(dt)
    sf, lf, df = (np.asarray(v, dtype=np.float64) for v in (s, l, d))
    n = int(max(np.ceil((lf - sf) / df), 0))
    sc, dc = np.asarray(s, dtype=calc), np.asarray(d, dtype=calc)
    r = sc + np.arange(n, dtype=calc) * dc
    return r.astype(dt, copy=False)


@kernel("OneHot", since=9)
def one_hot(indices, depth, values, *, axis=-1):
    idx = np.asarray(indices)
    dep = np.asarray(depth).reshape(-1)
    if dep.size != 1:
        raise ValueError("OneHot: depth must be a scalar")
    n = int(dep[0])
    if n < 1:
        raise ValueError(f"OneHot: depth must be >= 1, got {n}")
    vals = np.asarray(values).reshape(-1)
    if vals.size != 2:
        raise ValueError("OneHot: values must have 2 elements [off, on]")
    if idx.dtype.kind not in "iu":
        idx = np.trunc(idx.astype(np.float64))
    idx = idx.astype(np.int64)
    idx = np.where(idx < 0, idx + n, idx)
    r = idx.ndim + 1
    ax = _norm_axis(axis, r)
    shape = [1] * r
    shape[ax] = n
    rng = np.arange(n, dtype=np.int64).reshape(shape)
    hot = np.expand_dims(idx, ax) == rng
    return np.where(hot, vals[1], vals[0]).astype(vals.dtype, copy=False)


@kernel("NonZero", since=9)
def non_zero(X):
    x = np.asarray(X)
    if x.ndim == 0:  # like onnxruntime: a scalar counts as a 1-element vector
        return np.zeros((1, 1 if bool(x) else 0), dtype=np.int64)
    if x.dtype == object:
        x = x.astype(bool)
    return np.array(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1)


@kernel("Unique", since=11)
def unique(X, *, axis=None, sorted=1):
    x = np.asarray(X)
    if axis is None:
        flat = x.reshape(-1)
        y, first, inv, counts = np.unique(flat, return_index=True, return_inverse=True, return_counts=True)
    else:
        ax = _norm_axis(axis, x.ndim)
        y, first, inv, counts = np.unique(x, return_index=True, return_inverse=True, return_counts=True,
                                          axis=ax)
    inv = np.asarray(inv).reshape(-1)
    if not sorted:
        order = np.argsort(first, kind="stable")  # unique entries by first occurrence
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        y = np.take(y, order, axis=0 if axis is None else ax)
        first = first[order]
        counts = counts[order]
        inv = rank[inv]
    return (y, first.astype(np.int64), inv.astype(np.int64), counts.astype(np.int64))


@kernel("DepthToSpace", since=1)
def depth_to_space(input, *, blocksize, mode="DCR"):
    x = np.asarray(input)
    if x.ndim != 4:
        raise ValueError(f"DepthToSpace needs a 4-D input, got shape {x.shape}")
    b, c, h, w = x.shape
    bs = int(blocksize)
    if bs <= 0 or c % (bs * bs):
        raise ValueError(f"DepthToSpace: channels {c} not divisible by blocksize^2 ({bs}^2)")
    if mode == "DCR":
        t = x.reshape(b, bs, bs, c // (bs * bs), h, w).transpose(0, 3, 4, 1, 5, 2)
    elif mode == "CRD":
        t = x.reshape(b, c // (bs * bs), bs, bs, h, w).transpose(0, 1, 4, 2, 5, 3)
    else:
        raise ValueError(f"DepthToSpace: unknown mode {mode!r}")
    return t.reshape(b, c // (bs * bs), h * bs, w * bs)


@kernel("SpaceToDepth", since=1)
def space_to_depth(input, *, blocksize, mode="DCR"):
    x = np.asarray(input)
    if x.ndim != 4:
        raise ValueError(f"SpaceToDepth needs a 4-D input, got shape {x.shape}")
    b, c, h, w = x.shape
    bs = int(blocksize)
    if bs <= 0 or h % bs or w % bs:
        raise ValueError(f"SpaceToDepth: spatial dims {h}x{w} not divisible by blocksize {bs}")
    t = x.reshape(b, c, h // bs, bs, w // bs, bs)
    if mode == "DCR":
        t = t.transpose(0, 3, 5, 1, 2, 4)
    elif mode == "CRD":
        t = t.transpose(0, 1, 3, 5, 2, 4)
    else:
        raise ValueError(f"SpaceToDepth: unknown mode {mode!r}")
    return t.reshape(b, c * bs * bs, h // bs, w // bs)


@kernel("Compress", since=9)
def compress(input, condition, *, axis=None):
    x = np.asarray(input)
    cond = np.asarray(condition).reshape(-1).astype(bool)
    if axis is None:
        flat = x.reshape(-1)
        c = cond[:flat.size]
        return flat[:c.size][c]
    ax = _norm_axis(axis, x.ndim)
    n = x.shape[ax]
    if cond.size > n:
        if cond[n:].any():
            raise ValueError("Compress: condition selects past the end of the axis")
        cond = cond[:n]
    sel = np.nonzero(cond)[0]
    return np.take(x, sel, axis=ax)


@kernel("Trilu", since=14)
def trilu(input, k=None, *, upper=1):
    x = np.asarray(input)
    if x.ndim < 2:
        raise ValueError(f"Trilu needs rank >= 2, got shape {x.shape}")
    kk = 0 if k is None else int(np.asarray(k).reshape(-1)[0])
    n, m = x.shape[-2:]
    rows = np.arange(n)[:, None]
    cols = np.arange(m)[None, :]
    keep = (cols - rows >= kk) if upper else (cols - rows <= kk)
    return np.where(keep, x, _zero_of(x.dtype)).astype(x.dtype, copy=False)


@kernel("EyeLike", since=9)
def eye_like(input, *, dtype=None, k=0):
    x = np.asarray(input)
    if x.ndim != 2:
        raise ValueError(f"EyeLike needs a 2-D input, got shape {x.shape}")
    dt = x.dtype if dtype is None else _np_dtype(dtype)
    if dt.kind in "fiub" and dt.kind != "V":
        return np.eye(x.shape[0], x.shape[1], k=int(k), dtype=dt)
    return np.eye(x.shape[0], x.shape[1], k=int(k), dtype=np.float32).astype(dt)


@kernel("ConstantOfShape", since=9)
def constant_of_shape(input, *, value=None):
    shp = _ints(input)
    if any(d < 0 for d in shp):
        raise ValueError(f"ConstantOfShape: negative dimension in {shp}")
    if value is None:
        return np.zeros(shp, dtype=np.float32)
    v = np.asarray(value)
    if v.size != 1:
        raise ValueError("ConstantOfShape: value must have exactly one element")
    return np.full(shp, v.reshape(-1)[0], dtype=v.dtype)


@kernel("Constant", since=1)
def constant(*, value=None, sparse_value=None, value_float=None, value_floats=None, value_int=None,
             value_ints=None, value_string=None, value_strings=None):
    given = [(n, v) for n, v in (("value", value), ("sparse_value", sparse_value),
                                 ("value_float", value_float), ("value_floats", value_floats),
                                 ("value_int", value_int), ("value_ints", value_ints),
                                 ("value_string", value_string), ("value_strings", value_strings))
             if v is not None]
    if len(given) != 1:
        raise ValueError(f"Constant needs exactly one value attribute, got {[n for n, _ in given]}")
    name, v = given[0]
    if name in ("value", "sparse_value"):
        if not isinstance(v, np.ndarray):
            v = np.asarray(v)
        return v
    if name == "value_float":
        return np.array(v, dtype=np.float32)
    if name == "value_floats":
        return np.array(list(v), dtype=np.float32).reshape(-1)
    if name == "value_int":
        return np.array(v, dtype=np.int64)
    if name == "value_ints":
        return np.array(list(v), dtype=np.int64).reshape(-1)
    if name == "value_string":
        s = v.decode("utf-8") if isinstance(v, bytes) else v
        out = np.empty((), dtype=object)
        out[()] = s
        return out
    out = np.empty(len(v), dtype=object)
    out[:] = [s.decode("utf-8") if isinstance(s, bytes) else s for s in v]
    return out


@kernel("ReverseSequence", since=10)
def reverse_sequence(input, sequence_lens, *, batch_axis=1, time_axis=0):
    x = np.asarray(input)
    if x.ndim < 2:
        raise ValueError("ReverseSequence needs rank >= 2")
    ba, ta = _norm_axis(batch_axis, x.ndim), _norm_axis(time_axis, x.ndim)
    if ba == ta:
        raise ValueError("ReverseSequence: batch_axis == time_axis")
    lens = np.asarray(sequence_lens).astype(np.int64).reshape(-1)
    T, B = x.shape[ta], x.shape[ba]
    if lens.size != B:
        raise ValueError(f"ReverseSequence: {lens.size} lengths for batch size {B}")
    lens = np.clip(lens, 0, T)
    t = np.arange(T, dtype=np.int64)[:, None]  # (T, 1)
    src = np.where(t < lens[None, :], lens[None, :] - 1 - t, t)  # (T, B)
    xm = np.moveaxis(x, (ta, ba), (0, 1))
    src = src.reshape(src.shape + (1,) * (x.ndim - 2))
    r = np.take_along_axis(xm, np.broadcast_to(src, xm.shape), axis=0)
    return np.ascontiguousarray(np.moveaxis(r, (0, 1), (ta, ba)))
