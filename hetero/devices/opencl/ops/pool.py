"""Pooling (cl/pool.cl): MaxPool / AveragePool / LpPool over 1-D and 2-D windows, and the global pools
(through the reduction kernel: one row of H*W per (image, channel))."""
from __future__ import annotations

from ..plan import BufRef, NodeBuilder, Unsupported, ceil_div, planner, prod
from .gemm import window_pads
from .reduce import reduce_launch


def pool_geometry(nb: NodeBuilder, in_sp, out_sp, ks):
    nd = len(in_sp)
    strides = [int(s) for s in (nb.attr("strides") or [1] * nd)]
    dil = [int(d) for d in (nb.attr("dilations") or [1] * nd)]
    ceil_mode = int(nb.attr("ceil_mode", 0))
    pb, pe, auto_pad = window_pads(nb, in_sp, out_sp, ks, strides, dil)
    for i in range(nd):
        ext = (ks[i] - 1) * dil[i] + 1
        span = in_sp[i] + pb[i] + pe[i] - ext
        want = (ceil_div(span, strides[i]) if ceil_mode else span // strides[i]) + 1
        if ceil_mode and (want - 1) * strides[i] >= in_sp[i] + pb[i]:
            want -= 1  # the last window must start inside the input or the begin padding
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            want = out_sp[i]
        if want != out_sp[i]:
            raise Unsupported(f"{nb.op}: output size {out_sp[i]} on spatial axis {i} does not match the "
                              f"attributes (expected {want})")
    return strides, dil, pb, pe


def _plan_pool(nb: NodeBuilder, mode: int, p: float = 2.0) -> None:
    dt = nb.require_float(0)
    if nb.has_output(1):
        raise Unsupported(f"{nb.op}: Indices output not supported")
    xs, ys = nb.shape(0), nb.out_shape(0)
    if len(xs) not in (3, 4):
        raise Unsupported(f"{nb.op}: {len(xs) - 2}-D pooling not supported (1-D and 2-D are)")
    ks = [int(k) for k in nb.attr("kernel_shape")]
    strides, dil, pb, pe = pool_geometry(nb, xs[2:], ys[2:], ks)
    if len(xs) == 3:
        H, W, KH, KW, OH, OW, SH, SW, DH, DW, PH, PW, PHE, PWE = \
            1, xs[2], 1, ks[0], 1, ys[2], 1, strides[0], 1, dil[0], 0, pb[0], 0, pe[0]
    else:
        H, W, KH, KW, OH, OW = xs[2], xs[3], ks[0], ks[1], ys[2], ys[3]
        (SH, SW), (DH, DW), (PH, PW), (PHE, PWE) = strides, dil, pb, pe
    planes = xs[0] * xs[1]
    args = [BufRef(nb.buf(0)), 0, BufRef(nb.out_buf(0)), 0, H, W, KH, KW, SH, SW, PH, PW, PHE, PWE, DH, DW,
            OH, OW, mode, float(p)]
    nb.launch("pool.cl", "pool2d", nb.float_defines(dt, half_math=True), (OH, planes), None, args, [nb.buf(0)], [nb.out_buf(0)])


@planner("MaxPool")
def plan_maxpool(nb: NodeBuilder) -> None:
    if int(nb.attr("storage_order", 0)) != 0 and nb.has_output(1):
        raise Unsupported("MaxPool: storage_order 1 not supported")
    _plan_pool(nb, 0)


@planner("AveragePool")
def plan_avgpool(nb: NodeBuilder) -> None:
    _plan_pool(nb, 1 if int(nb.attr("count_include_pad", 0)) else 2)


@planner("LpPool")
def plan_lppool(nb: NodeBuilder) -> None:
    _plan_pool(nb, 3, float(nb.attr("p", 2)))


@planner("GlobalAveragePool", "GlobalMaxPool")
def plan_global_pool(nb: NodeBuilder) -> None:
    dt = nb.require_float(0)
    xs = nb.shape(0)
    if len(xs) < 2:
        raise Unsupported(f"{nb.op}: rank {len(xs)}")
    reduce_launch(nb, dt, nb.buf(0), nb.out_buf(0), prod(xs[:2]), prod(xs[2:]), 1,
                  1 if nb.op == "GlobalAveragePool" else 2)
