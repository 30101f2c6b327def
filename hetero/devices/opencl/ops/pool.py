"""Pooling (cl/pool.cl): MaxPool / AveragePool / LpPool over 1-D and 2-D windows, and the global pools
(through the reduction kernel: one row of H*W per (image, channel))."""
from __future__ import annotations

from ..plan import BufRef, NodeBuilder, Unsupported, ceil_div, planner, prod
from .reduce import reduce_launch


def pool_geometry(nb: NodeBuilder, in_sp, out_sp, ks):
    nd = len(in_sp)
    strides = [int(s) for s in (nb.attr("strides") or [1] * nd)]
    dil = [int(d) for d in (nb.attr("dilations") or [1] * nd)]
    ceil_mode = int(nb.attr("ceil_mode", 0))
    auto_pad = nb.attr("auto_pad", "NOTSET") or "NOTSET"
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    if auto_pad == "NOTSET":
        pads = [int(p) for p in (nb.attr("pads") or [0] * (2 * nd))]
        pb, pe = pads[:nd], pads[nd:]
    elif auto_pad == "VALID":
        pb, pe = [0] * nd, [0] * nd
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pb, pe = [], []
        for i in range(nd):
            total = max(0, (out_sp[i] - 1) * strides[i] + (ks[i] - 1) * dil[i] + 1 - in_sp[i])
            small, big = total // 2, total - total // 2
            pb.append(small if auto_pad == "SAME_UPPER" else big)
            pe.append(big if auto_pad == "SAME_UPPER" else small)
    else:
        raise Unsupported(f"{nb.op}: auto_pad {auto_pad!r} not supported")
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
    nb.launch("pool.cl", "pool2d", nb.float_defines(dt), (OH, planes), None, args, [nb.buf(0)], [nb.out_buf(0)])


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
