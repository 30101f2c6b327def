"""Reductions and row-wise ops (cl/reduce.cl): Reduce*, ArgMax/ArgMin, Softmax/LogSoftmax/Hardmax.

Every reduction runs over the middle axis of an (outer, R, inner) view. Reduced axes that are not
one contiguous block are first moved to the end by a strided copy (traced: ReduceSum over axes (0, 2)
of [2,3,4] -> copy to [3, 2, 4] ordering (1, 0, 2) -> reduce outer 3, R 8, inner 1).
"""
from __future__ import annotations

import numpy as np

from ..plan import BufRef, NodeBuilder, Unsupported, planner, prod
from .data import contiguous_strides, copy_launch

REDUCE_OPS = {"ReduceSum": 0, "ReduceMean": 1, "ReduceMax": 2, "ReduceMin": 3, "ReduceProd": 4,
              "ReduceSumSquare": 5, "ReduceL1": 6, "ReduceL2": 7, "ReduceLogSum": 8, "ReduceLogSumExp": 9,
              "ArgMax": 10, "ArgMin": 11}
# opset where `axes` moved from attribute to input
_AXES_INPUT_SINCE = {"ReduceSum": 13}


def reduce_launch(nb: NodeBuilder, dt, xbuf: int, ybuf: int, outer: int, R: int, inner: int, op: int,
                  select_last: int = 0, index_out: bool = False) -> None:
    if index_out:
        args = [BufRef(xbuf), 0, BufRef(xbuf), 0, BufRef(ybuf), 0, R, inner, op, select_last]
    else:
        args = [BufRef(xbuf), 0, BufRef(ybuf), 0, BufRef(ybuf), 0, R, inner, op, select_last]
    nb.launch("reduce.cl", "reduce", nb.float_defines(dt), (inner, outer), None, args, [xbuf], [ybuf])


def _axes(nb: NodeBuilder, r: int) -> list[int] | None:
    since = _AXES_INPUT_SINCE.get(nb.op, 18)
    if nb.opset >= since:
        if not nb.has_input(1):
            return None
        a = nb.require_host(1, "axes").ravel().tolist()
        return None if len(a) == 0 else [int(x) % r for x in a]
    a = nb.attr("axes")
    return None if a is None else [int(x) % r for x in a]


def _to_block(nb: NodeBuilder, dt, shape, axes) -> tuple[int, int, int, int]:
    """(buf, outer, R, inner) with the reduced axes as one contiguous block (copying if needed)."""
    xbuf = nb.buf(0)
    r = len(shape)
    red = sorted(set(axes))
    nontrivial = [a for a in red if shape[a] != 1]
    if not nontrivial:
        return xbuf, prod(shape), 1, 1
    lo, hi = nontrivial[0], nontrivial[-1]
    if all(a in red or shape[a] == 1 for a in range(lo, hi + 1)):
        return xbuf, prod(shape[:lo]), prod(shape[lo:hi + 1]), prod(shape[hi + 1:])
    keep = [a for a in range(r) if a not in red]
    order = keep + red
    dims = [shape[a] for a in order]
    st = contiguous_strides(shape)
    ddt = nb.dev_dtype(dt)
    tmp = nb.scratch(prod(shape), ddt, "reduce_transpose")
    copy_launch(nb, tmp, 0, contiguous_strides(dims), xbuf, 0, [st[a] for a in order], dims, ddt.itemsize)
    return tmp, prod([shape[a] for a in keep]), prod([shape[a] for a in red]), 1


@planner(*[k for k in REDUCE_OPS if k.startswith("Reduce")])
def plan_reduce(nb: NodeBuilder) -> None:
    dt = nb.dtype(0)
    if dt not in (np.dtype(np.float32), np.dtype(np.float16)):
        raise Unsupported(f"{nb.op}: {dt} not supported")
    shape = nb.shape(0)
    r = len(shape)
    axes = _axes(nb, r)
    if axes is None:
        if int(nb.attr("noop_with_empty_axes", 0)):
            nb.alias(0, 0)
            nb.kind = "alias"
            return
        axes = list(range(r))
    if prod(nb.out_shape(0)) != prod([d for a, d in enumerate(shape) if a not in axes]):
        raise Unsupported(f"{nb.op}: output shape {list(nb.out_shape(0))} inconsistent")
    buf, outer, R, inner = _to_block(nb, dt, shape, axes)
    reduce_launch(nb, dt, buf, nb.out_buf(0), outer, R, inner, REDUCE_OPS[nb.op])


@planner("ArgMax", "ArgMin")
def plan_argmax(nb: NodeBuilder) -> None:
    dt = nb.dtype(0)
    if dt not in (np.dtype(np.float32), np.dtype(np.float16)):
        raise Unsupported(f"{nb.op}: {dt} not supported")
    shape = nb.shape(0)
    axis = int(nb.attr("axis", 0)) % len(shape)
    reduce_launch(nb, dt, nb.buf(0), nb.out_buf(0), prod(shape[:axis]), shape[axis], prod(shape[axis + 1:]),
                  REDUCE_OPS[nb.op], int(nb.attr("select_last_index", 0)), index_out=True)


@planner("Softmax", "LogSoftmax", "Hardmax")
def plan_softmax(nb: NodeBuilder) -> None:
    dt = nb.require_float(0)
    shape = nb.shape(0)
    r = len(shape)
    if nb.opset < 13:
        axis = int(nb.attr("axis", 1)) % max(r, 1)
        outer, R, inner = prod(shape[:axis]), prod(shape[axis:]), 1
    else:
        axis = int(nb.attr("axis", -1)) % max(r, 1)
        outer, R, inner = prod(shape[:axis]), shape[axis], prod(shape[axis + 1:])
    mode = {"Softmax": 0, "LogSoftmax": 1, "Hardmax": 2}[nb.op]
    nb.launch("reduce.cl", "softmax", nb.float_defines(dt), (inner, outer), None,
              [BufRef(nb.buf(0)), 0, BufRef(nb.out_buf(0)), 0, R, inner, mode], [nb.buf(0)], [nb.out_buf(0)])


@planner("CumSum")
def plan_cumsum(nb: NodeBuilder) -> None:
    dt = nb.require_float(0)
    shape = nb.shape(0)
    axis = int(np.asarray(nb.require_host(1, "axis")).ravel()[0]) % len(shape)
    nb.launch("reduce.cl", "cumsum", nb.float_defines(dt), (prod(shape[axis + 1:]), prod(shape[:axis])), None,
              [BufRef(nb.buf(0)), 0, BufRef(nb.out_buf(0)), 0, shape[axis], prod(shape[axis + 1:]),
               int(nb.attr("exclusive", 0)), int(nb.attr("reverse", 0))], [nb.buf(0)], [nb.out_buf(0)])
