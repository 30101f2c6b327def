"""Data movement (cl/data.cl): views without copies, strided copies, Pad, Gather, Resize.

* Reshape / Flatten / Squeeze / Unsqueeze / Identity / Dropout (inference): the output *is* the
  input's device buffer (no launch).
* Transpose, Slice, Expand, Tile, Concat, Split, DepthToSpace, SpaceToDepth: one strided-copy kernel;
  each op only computes a 6-D index space with source and destination strides (traced: Transpose
  [2,3,4] perm (2,0,1) -> dims (4,2,3), source strides (1,12,4), destination contiguous (6,3,1)).
* Resize: the separable tap tables (index and weight per output coordinate and axis) are computed on
  the host with the ONNX formulas for every coordinate_transformation_mode / nearest_mode / cubic
  coefficient / exclude_outside / antialias, then one kernel sums the taps.
"""
from __future__ import annotations

import math

import numpy as np

from ..plan import ELEM_BY_SIZE, U64, BufRef, NodeBuilder, Unsupported, planner, prod


def _merge(dims, *stride_lists):
    """Drop size-1 axes and merge adjacent axes that are contiguous in every stride list."""
    keep = [i for i, d in enumerate(dims) if d != 1]
    dims = [int(dims[i]) for i in keep]
    sts = [[int(s[i]) for i in keep] for s in stride_lists]
    i = len(dims) - 2
    while i >= 0:
        if all(s[i] == s[i + 1] * dims[i + 1] for s in sts):
            dims[i] *= dims[i + 1]
            del dims[i + 1]
            for s in sts:
                s[i] = s[i + 1]
                del s[i + 1]
        i -= 1
    if not dims:
        return [1], [[0] for _ in sts]
    return dims, sts


def contiguous_strides(shape) -> list[int]:
    st, acc = [], 1
    for d in reversed(shape):
        st.append(acc)
        acc *= int(d)
    return list(reversed(st))


def copy_launch(nb: NodeBuilder, dst: int, dst_off: int, dst_strides, src: int, src_off: int, src_strides,
                dims, itemsize: int, extra_reads=()) -> None:
    """Y[dst_off + i.dst_strides] = X[src_off + i.src_strides] over the index space ``dims``."""
    dims, (ds, ss) = _merge(list(dims), list(dst_strides), list(src_strides))
    if len(dims) > 6:
        raise Unsupported(f"{nb.op}: copy over more than 6 independent axes")
    pad = 6 - len(dims)
    dims = [1] * pad + dims
    ds = [0] * pad + ds
    ss = [0] * pad + ss
    rows = prod(dims[:5])
    args = [BufRef(dst), dst_off, BufRef(src), src_off] + dims[1:] + ds + ss
    nb.launch("data.cl", "strided_copy", nb.base_defines() + [("ELEM", ELEM_BY_SIZE[itemsize])], (rows,), None,
              args, [src, *extra_reads], [dst])


def _itemsize(nb: NodeBuilder, i: int = 0) -> int:
    dt = nb.dev_dtype(nb.dtype(i))
    if dt.itemsize not in ELEM_BY_SIZE or dt.kind not in "fiub":
        raise Unsupported(f"{nb.op}: {nb.dtype(i)} not supported")
    return dt.itemsize


# ---- views ------------------------------------------------------------------------------------

@planner("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity")
def plan_view(nb: NodeBuilder) -> None:
    _itemsize(nb, 0)
    if prod(nb.shape(0)) != prod(nb.out_shape(0)):
        raise Unsupported(f"{nb.op}: element count changes")
    nb.alias(0, 0)
    nb.kind = "alias"


@planner("Dropout")
def plan_dropout(nb: NodeBuilder) -> None:
    if nb.has_output(1):
        raise Unsupported("Dropout: mask output not supported")
    training = nb.host(2) if nb.has_input(2) else None
    if nb.has_input(2) and (training is None or bool(np.asarray(training).ravel()[0])):
        raise Unsupported("Dropout: training mode not supported")
    _itemsize(nb, 0)
    nb.alias(0, 0)
    nb.kind = "alias"


# ---- strided copies ---------------------------------------------------------------------------

@planner("Transpose")
def plan_transpose(nb: NodeBuilder) -> None:
    size = _itemsize(nb)
    shape = nb.shape(0)
    r = len(shape)
    perm = [int(p) % max(r, 1) for p in (nb.attr("perm") or list(range(r))[::-1])]
    src_st = contiguous_strides(shape)
    out_shape = [shape[p] for p in perm]
    copy_launch(nb, nb.out_buf(0), 0, contiguous_strides(out_shape), nb.buf(0), 0, [src_st[p] for p in perm],
                out_shape, size)


def _slice_params(nb: NodeBuilder):
    shape = nb.shape(0)
    r = len(shape)
    if nb.opset < 10:
        starts, ends = list(nb.attr("starts")), list(nb.attr("ends"))
        axes = list(nb.attr("axes") or range(len(starts)))
        steps = [1] * len(starts)
    else:
        starts = nb.require_host(1, "starts").ravel().tolist()
        ends = nb.require_host(2, "ends").ravel().tolist()
        axes = nb.require_host(3, "axes").ravel().tolist() if nb.has_input(3) else list(range(len(starts)))
        steps = nb.require_host(4, "steps").ravel().tolist() if nb.has_input(4) else [1] * len(starts)
    begin = [0] * r
    step = [1] * r
    count = list(shape)
    for s, e, a, k in zip(starts, ends, axes, steps):
        a = int(a) % r
        k = int(k)
        if k == 0:
            raise Unsupported("Slice: step 0")
        big = 2**62
        s, e = max(min(int(s), big), -big), max(min(int(e), big), -big)
        rng = range(*slice(s, e, k).indices(shape[a]))
        begin[a], step[a], count[a] = (rng.start, k, len(rng))
    return begin, step, count


@planner("Slice")
def plan_slice(nb: NodeBuilder) -> None:
    size = _itemsize(nb)
    begin, step, count = _slice_params(nb)
    if list(count) != list(nb.out_shape(0)):
        raise Unsupported(f"Slice: computed shape {count} != inferred {list(nb.out_shape(0))}")
    st = contiguous_strides(nb.shape(0))
    off = sum(b * s for b, s in zip(begin, st))
    copy_launch(nb, nb.out_buf(0), 0, contiguous_strides(count), nb.buf(0), off,
                [k * s for k, s in zip(step, st)], count, size)


@planner("Expand")
def plan_expand(nb: NodeBuilder) -> None:
    size = _itemsize(nb)
    shape, out = nb.shape(0), nb.out_shape(0)
    r = len(out)
    s = (1,) * (r - len(shape)) + tuple(shape)
    src = contiguous_strides(s)
    src = [0 if (d == 1 and o != 1) else st for d, o, st in zip(s, out, src)]
    copy_launch(nb, nb.out_buf(0), 0, contiguous_strides(out), nb.buf(0), 0, src, out, size)


@planner("Tile")
def plan_tile(nb: NodeBuilder) -> None:
    size = _itemsize(nb)
    shape = nb.shape(0)
    reps = [int(x) for x in nb.require_host(1, "repeats").ravel()]
    # out[r_i, d_i] over interleaved (repeat, axis) pairs: the repeat axes have source stride 0
    dims, src, = [], []
    for d, st, rp in zip(shape, contiguous_strides(shape), reps):
        dims += [rp, d]
        src += [0, st]
    copy_launch(nb, nb.out_buf(0), 0, contiguous_strides(dims), nb.buf(0), 0, src, dims, size)


@planner("Concat")
def plan_concat(nb: NodeBuilder) -> None:
    out = nb.out_shape(0)
    r = len(out)
    axis = int(nb.attr("axis")) % r
    size = _itemsize(nb, 0)
    outer, inner = prod(out[:axis]), prod(out[axis + 1:])
    ybuf = nb.out_buf(0)
    pos = 0
    for i in range(nb.n_in):
        if not nb.has_input(i):
            continue
        if _itemsize(nb, i) != size or nb.dtype(i) != nb.dtype(0):
            raise Unsupported("Concat: mixed element types")
        n = nb.shape(i)[axis]
        if n:
            copy_launch(nb, ybuf, pos * inner, [out[axis] * inner, 1], nb.buf(i), 0, [n * inner, 1],
                        [outer, n * inner], size)
        pos += n


@planner("Split")
def plan_split(nb: NodeBuilder) -> None:
    shape = nb.shape(0)
    r = len(shape)
    axis = int(nb.attr("axis", 0)) % r
    size = _itemsize(nb)
    outer, inner = prod(shape[:axis]), prod(shape[axis + 1:])
    pos = 0
    for i, o in enumerate(nb.node.outputs):
        n = nb.out_shape(i)[axis]
        if o:
            copy_launch(nb, nb.out_buf(i), 0, [n * inner, 1], nb.buf(0), pos * inner, [shape[axis] * inner, 1],
                        [outer, n * inner], size)
        pos += n
    if pos != shape[axis]:
        raise Unsupported(f"Split: output sizes sum to {pos}, axis has {shape[axis]}")


def _space_depth(nb: NodeBuilder, to_space: bool) -> None:
    size = _itemsize(nb)
    N, C, H, W = nb.shape(0)
    b = int(nb.attr("blocksize"))
    mode = nb.attr("mode", "DCR")
    if isinstance(mode, bytes):
        mode = mode.decode()
    if mode not in ("DCR", "CRD"):
        raise Unsupported(f"{nb.op}: mode {mode!r} not supported")
    if to_space:
        Co = C // (b * b)
        # output index (n, c, h, bi, w, bj) -> input channel: DCR (bi, bj, c), CRD (c, bi, bj)
        dims = [N, Co, H, b, W, b]
        cs = H * W
        if mode == "DCR":
            src = [C * cs, cs, W, b * Co * cs, 1, Co * cs]
        else:
            src = [C * cs, b * b * cs, W, b * cs, 1, cs]
    else:
        Ho, Wo = H // b, W // b
        # output channel: DCR (bi, bj, c), CRD (c, bi, bj) <- input (n, c, h*b + bi, w*b + bj)
        if mode == "DCR":
            dims = [N, b, b, C, Ho, Wo]
            src = [C * H * W, W, 1, H * W, b * W, b]
        else:
            dims = [N, C, b, b, Ho, Wo]
            src = [C * H * W, H * W, W, 1, b * W, b]
    copy_launch(nb, nb.out_buf(0), 0, contiguous_strides(dims), nb.buf(0), 0, src, dims, size)


@planner("DepthToSpace")
def plan_d2s(nb: NodeBuilder) -> None:
    _space_depth(nb, True)


@planner("SpaceToDepth")
def plan_s2d(nb: NodeBuilder) -> None:
    _space_depth(nb, False)


# ---- Pad ----------------------------------------------------------------------------------------

@planner("Pad")
def plan_pad(nb: NodeBuilder) -> None:
    size = _itemsize(nb)
    shape, out = nb.shape(0), nb.out_shape(0)
    r = len(shape)
    if r > 6:
        raise Unsupported("Pad: rank above 6")
    mode = nb.attr("mode", "constant")
    if isinstance(mode, bytes):
        mode = mode.decode()
    modes = {"constant": 0, "reflect": 1, "edge": 2, "wrap": 3}
    if mode not in modes:
        raise Unsupported(f"Pad: mode {mode!r} not supported")
    if nb.opset < 11:
        pads = [int(p) for p in nb.attr("pads")]
        value = float(nb.attr("value", 0.0))
        axes = list(range(r))
    else:
        pads = [int(p) for p in nb.require_host(1, "pads").ravel()]
        cv = nb.host(2) if nb.has_input(2) else np.zeros(1, nb.dtype(0))
        if nb.has_input(2) and cv is None:
            raise Unsupported("Pad: constant_value must be a constant")
        value = np.asarray(cv).ravel()[0] if np.asarray(cv).size else 0
        axes = [int(a) % r for a in nb.require_host(3, "axes").ravel()] if nb.has_input(3) else list(range(r))
    begin = [0] * r
    for k, a in enumerate(axes):
        begin[a] = pads[k]
    for i in range(r):
        if out[i] <= 0:
            raise Unsupported("Pad: empty output")
    if mode != "constant" and any(d == 0 for d in shape):
        raise Unsupported("Pad: empty input")
    dt = nb.dev_dtype(nb.dtype(0))
    bits = np.asarray(value).astype(dt).reshape(1).view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[size])
    pad6 = 6 - r
    d = [1] * pad6 + list(out)
    e = [1] * pad6 + list(shape)
    b = [0] * pad6 + begin
    args = [BufRef(nb.out_buf(0)), 0, BufRef(nb.buf(0)), 0] + d + e + b + [modes[mode], U64(int(bits[0]))]
    nb.launch("data.cl", "pad", nb.base_defines() + [("ELEM", ELEM_BY_SIZE[size])], (prod(d[:5]),), None, args,
              [nb.buf(0)], [nb.out_buf(0)])


# ---- Gather -------------------------------------------------------------------------------------

@planner("Gather")
def plan_gather(nb: NodeBuilder) -> None:
    size = _itemsize(nb)
    shape = nb.shape(0)
    r = len(shape)
    axis = int(nb.attr("axis", 0)) % r
    idt = nb.dtype(1)
    if idt not in (np.dtype(np.int64), np.dtype(np.int32)):
        raise Unsupported(f"Gather: indices {idt} not supported")
    idx_shape = nb.shape(1)
    host = nb.host(1)
    if host is not None:
        h = host.astype(np.int64)
        if np.any((h < -shape[axis]) | (h >= shape[axis])):
            raise Unsupported("Gather: index out of range")
    nidx = prod(idx_shape) if idx_shape else 1
    outer, inner = prod(shape[:axis]), prod(shape[axis + 1:])
    args = [BufRef(nb.out_buf(0)), 0, BufRef(nb.buf(0)), 0, BufRef(nb.buf(1)), 0, shape[axis], nidx, inner]
    defines = nb.base_defines() + [("ELEM", ELEM_BY_SIZE[size]), ("IDX_T", "long" if idt == np.int64 else "int")]
    nb.launch("data.cl", "gather", defines, (nidx, outer), None, args, [nb.buf(0), nb.buf(1)], [nb.out_buf(0)])


# ---- Resize -------------------------------------------------------------------------------------

def _cubic(t: np.ndarray, A: float) -> np.ndarray:
    return np.stack([((A * (t + 1) - 5 * A) * (t + 1) + 8 * A) * (t + 1) - 4 * A,
                     ((A + 2) * t - (A + 3)) * t * t + 1,
                     ((A + 2) * (1 - t) - (A + 3)) * (1 - t) * (1 - t) + 1,
                     ((A * (2 - t) - 5 * A) * (2 - t) + 8 * A) * (2 - t) - 4 * A], axis=-1)


def _aa_coeffs(ratio: np.ndarray, scale: float, mode: str, A: float) -> np.ndarray:
    s = min(scale, 1.0)
    if mode == "linear":
        start = int(np.floor(-1 / s) + 1)
        k = np.arange(start, start + 2 - 2 * start)
        c = np.clip(1 - np.abs((k[None, :] - ratio[:, None]) * s), 0, 1)
    else:
        start = int(np.floor(-2 / s) + 1)
        k = np.arange(start, 2 - start)
        x = np.abs(s * (k[None, :] - ratio[:, None]))
        c = np.where(x <= 1, (A + 2) * x**3 - (A + 3) * x**2 + 1,
                     np.where(x < 2, A * x**3 - 5 * A * x**2 + 8 * A * x - 4 * A, 0.0))
    return c / c.sum(axis=1, keepdims=True)


def resize_taps(L: int, Lo: int, scale: float, mode: str, ctm: str, nearest_mode: str, A: float,
                exclude_outside: bool, roi: tuple[float, float] | None, antialias: bool):
    """(indices [Lo, n] with -1 for 'extrapolate', weights [Lo, n]) for one axis, as onnx specifies."""
    x = np.arange(Lo, dtype=np.float64)
    ow = scale * L
    if ctm == "align_corners":
        xo = np.zeros(Lo) if ow == 1 else x * (L - 1) / (ow - 1)
    elif ctm == "asymmetric":
        xo = x / scale
    elif ctm == "tf_crop_and_resize":
        r0, r1 = roi
        xo = (np.full(Lo, (r1 - r0) * (L - 1) / 2) if ow == 1 else x * (r1 - r0) * (L - 1) / (ow - 1)) + r0 * (L - 1)
    elif ctm == "pytorch_half_pixel":
        xo = np.full(Lo, -0.5) if ow == 1 else (x + 0.5) / scale - 0.5
    elif ctm == "half_pixel":
        xo = (x + 0.5) / scale - 0.5
    elif ctm == "half_pixel_symmetric":
        adj = Lo / ow
        xo = L / 2 * (1 - adj) + (x + 0.5) / scale - 0.5
    elif ctm == "tf_half_pixel_for_nn":
        xo = (x + 0.5) / scale
    else:
        raise Unsupported(f"Resize: coordinate_transformation_mode {ctm!r} not supported")
    fl = np.floor(xo)
    isint = xo == fl
    ratio = np.where(isint, 1.0, xo - fl)
    if mode == "nearest":
        if nearest_mode == "round_prefer_floor":
            c1 = ratio > 0.5
        elif nearest_mode == "round_prefer_ceil":
            c1 = ratio >= 0.5
        elif nearest_mode == "floor":
            c1 = np.zeros(Lo, bool)
        elif nearest_mode == "ceil":
            c1 = np.ones(Lo, bool)
        else:
            raise Unsupported(f"Resize: nearest_mode {nearest_mode!r} not supported")
        c1 = np.where(isint, True, c1)
        coeffs = np.stack([~c1, c1], axis=1).astype(np.float64)
    elif antialias and scale < 1:
        coeffs = _aa_coeffs(ratio, scale, mode, A)
    elif mode == "linear":
        coeffs = np.stack([1 - ratio, ratio], axis=1)
    elif mode == "cubic":
        coeffs = _cubic(ratio, A)
    else:
        raise Unsupported(f"Resize: mode {mode!r} not supported")
    n = coeffs.shape[1]
    pad = int(math.ceil(n / 2))
    # the n nearest padded positions to xo + pad, preferring the left one: they start at
    # floor(xo) - n/2 + 1 (ratio in (0, 1]), clipped to the padded range [0, L + 2 pad)
    base = np.where(isint, xo - 1, fl) + pad
    start = np.clip(base - (n // 2 - 1), 0, L + 2 * pad - n).astype(np.int64)
    pos = start[:, None] + np.arange(n)[None, :] - pad
    if exclude_outside:
        coeffs = np.where((pos < 0) | (pos >= L), 0.0, coeffs)
        coeffs = coeffs / coeffs.sum(axis=1, keepdims=True)
    idx = np.clip(pos, 0, L - 1)
    if ctm == "tf_crop_and_resize":
        outside = (xo < 0) | (xo > L - 1)
        idx = np.where(outside[:, None], -1, idx)
    return idx.astype(np.int32), coeffs.astype(np.float32)


def _s(v):
    return v.decode() if isinstance(v, bytes) else v


@planner("Resize", "Upsample")
def plan_resize(nb: NodeBuilder) -> None:
    dt = nb.require_float(0)
    shape, out = nb.shape(0), nb.out_shape(0)
    r = len(shape)
    if r > 4:
        raise Unsupported("Resize: rank above 4")
    mode = _s(nb.attr("mode", "nearest"))
    if nb.op == "Upsample" or nb.opset < 11:
        ctm = "asymmetric"
        if nb.op == "Upsample" and nb.opset < 9:
            scales = [float(s) for s in nb.attr("scales")]
        else:
            scales = nb.require_host(1, "scales").astype(np.float64).ravel().tolist()
        mode = {"bilinear": "linear"}.get(mode, mode)
        nearest_mode, A, excl, roi, aa, axes = "round_prefer_floor", -0.75, False, None, False, list(range(r))
        if mode == "nearest":
            nearest_mode = "floor"
    else:
        ctm = _s(nb.attr("coordinate_transformation_mode", "half_pixel"))
        nearest_mode = _s(nb.attr("nearest_mode", "round_prefer_floor"))
        A = float(nb.attr("cubic_coeff_a", -0.75))
        excl = bool(nb.attr("exclude_outside", 0))
        aa = bool(nb.attr("antialias", 0))
        axes = [int(a) % r for a in (nb.attr("axes") or range(r))]
        policy = _s(nb.attr("keep_aspect_ratio_policy", "stretch"))
        sc = nb.host(2) if nb.has_input(2) else None
        sz = nb.host(3) if nb.has_input(3) else None
        if (nb.has_input(2) and sc is None) or (nb.has_input(3) and sz is None):
            raise Unsupported("Resize: scales / sizes must be constants")
        if sc is not None and sc.size:
            given = sc.astype(np.float64).ravel().tolist()
        elif sz is not None and sz.size:
            sizes = sz.astype(np.int64).ravel().tolist()
            given = [s / shape[a] for s, a in zip(sizes, axes)]
            if policy in ("not_larger", "not_smaller"):
                f = min(given) if policy == "not_larger" else max(given)
                given = [f] * len(axes)
        else:
            raise Unsupported("Resize: neither scales nor sizes given")
        scales = [1.0] * r
        for a, s in zip(axes, given):
            scales[a] = s
        roi = None
        if ctm == "tf_crop_and_resize":
            rv = nb.require_host(1, "roi").astype(np.float64).ravel().tolist()
            k = len(rv) // 2
            starts, ends = [0.0] * r, [1.0] * r
            for j, a in enumerate(axes if k == len(axes) else range(r)):
                starts[a], ends[a] = rv[j], rv[k + j]
            roi = (starts, ends)
    if len(scales) != r:
        raise Unsupported(f"Resize: {len(scales)} scales for rank {r}")
    idx_parts, w_parts, offs, taps = [], [], [], []
    off = 0
    pad = 4 - r
    for a in range(r):
        L, Lo, s = shape[a], out[a], scales[a]
        if s <= 0:
            raise Unsupported("Resize: non-positive scale")
        if Lo == L and s == 1.0 and ctm != "tf_crop_and_resize":
            ix, w = np.arange(L, dtype=np.int32)[:, None], np.ones((L, 1), np.float32)
        else:
            ax_roi = (roi[0][a], roi[1][a]) if roi is not None else None
            ix, w = resize_taps(L, Lo, s, mode, ctm, nearest_mode, A, excl, ax_roi, aa)
        idx_parts.append(ix.ravel())
        w_parts.append(w.ravel())
        offs.append(off)
        taps.append(ix.shape[1])
        off += ix.size
    oshape4 = [1] * pad + list(out)
    xst = [0] * pad + [int(v) for v in np.cumprod([1] + list(shape[::-1]))[:-1][::-1]]
    offs4 = [0] * pad + offs
    taps4 = [1] * pad + taps
    # padded axes use table entry 0 of axis 0's table only through tap weight 1 at index 0: give them
    # their own one-entry table
    tidx = np.concatenate(idx_parts + [np.zeros(1, np.int32)])
    tw = np.concatenate(w_parts + [np.ones(1, np.float32)])
    offs4 = [len(tidx) - 1] * pad + offs
    ib = nb.upload(tidx.astype(np.int32), "resize_idx")
    wb = nb.upload(tw.astype(np.float32), "resize_w")
    extrap = float(nb.attr("extrapolation_value", 0.0))
    args = [BufRef(nb.out_buf(0)), 0, BufRef(nb.buf(0)), 0, BufRef(ib), BufRef(wb)] + oshape4[1:] + xst + offs4 + \
        taps4 + [extrap]
    nb.launch("data.cl", "resize", nb.float_defines(dt) + ["WITH_RESIZE"], (prod(oshape4[:3]),), None, args,
              [nb.buf(0), ib, wb], [nb.out_buf(0)])


@planner("GatherElements")
def plan_gather_elements(nb: NodeBuilder) -> None:
    size = _itemsize(nb)
    shape, ishape = nb.shape(0), nb.shape(1)
    r = len(shape)
    if r > 6 or len(ishape) != r:
        raise Unsupported(f"GatherElements: rank {r}")
    idt = nb.dtype(1)
    if idt not in (np.dtype(np.int64), np.dtype(np.int32)):
        raise Unsupported(f"GatherElements: indices {idt} not supported")
    axis = int(nb.attr("axis", 0)) % r
    pad = 6 - r
    dims = [1] * pad + list(ishape)
    xs = [0] * pad + contiguous_strides(shape)
    args = [BufRef(nb.out_buf(0)), 0, BufRef(nb.buf(0)), 0, BufRef(nb.buf(1)), 0] + dims[1:] + xs + \
        [axis + pad, shape[axis]]
    defines = nb.base_defines() + [("ELEM", ELEM_BY_SIZE[size]), ("IDX_T", "long" if idt == np.int64 else "int")]
    nb.launch("data.cl", "gather_elements", defines, (prod(dims[:5]),), None, args, [nb.buf(0), nb.buf(1)],
              [nb.out_buf(0)])


@planner("Trilu")
def plan_trilu(nb: NodeBuilder) -> None:
    size = _itemsize(nb)
    shape = nb.shape(0)
    if len(shape) < 2:
        raise Unsupported("Trilu: rank below 2")
    k = int(np.asarray(nb.require_host(1, "k")).ravel()[0]) if nb.has_input(1) else 0
    k = max(min(k, 2**31 - 1), -2**31 + 1)
    rows, cols = shape[-2], shape[-1]
    nb.launch("data.cl", "trilu", nb.base_defines() + [("ELEM", ELEM_BY_SIZE[size])], (rows, prod(shape[:-2])), None,
              [BufRef(nb.out_buf(0)), 0, BufRef(nb.buf(0)), 0, rows, cols, k, int(nb.attr("upper", 1))],
              [nb.buf(0)], [nb.out_buf(0)])


@planner("Shape", "Size")
def plan_shape(nb: NodeBuilder) -> None:
    # static shapes are answered on the host at plan time (plan.py); reaching here means they are not
    raise Unsupported(f"{nb.op}: input shape is not static")
