"""Normalisations (cl/norm.cl): BatchNormalization (inference; FusedBatchNormalization with its
activation), LRN, LayerNormalization,
InstanceNormalization. (The transforms usually fold BatchNormalization into the Conv before it; the
kernel serves the BatchNorms that remain, e.g. after a Concat.)"""
from __future__ import annotations

from ..plan import BufRef, NodeBuilder, Unsupported, chunks_for, planner, prod
from .gemm import activation_of


@planner("BatchNormalization")
def plan_batchnorm(nb: NodeBuilder) -> None:
    _plan_batchnorm(nb, (0, 0.0, 0.0))


@planner("FusedBatchNormalization", domain="hetero")
def plan_fused_batchnorm(nb: NodeBuilder) -> None:
    """BatchNormalization + activation (the transforms' fusion): the kernel applies it as it stores."""
    _plan_batchnorm(nb, activation_of(nb))


def _plan_batchnorm(nb: NodeBuilder, act) -> None:
    dt = nb.require_float(0, 1, 2, 3, 4)
    if int(nb.attr("training_mode", 0)) or any(nb.has_output(i) for i in range(1, 5)):
        raise Unsupported("BatchNormalization: training mode not supported")
    if nb.opset < 7 and int(nb.attr("spatial", 1)) != 1:
        raise Unsupported("BatchNormalization: spatial=0 not supported")
    xs = nb.shape(0)
    if len(xs) < 2:
        raise Unsupported(f"BatchNormalization: rank {len(xs)}")
    C = xs[1]
    for i in range(1, 5):
        if tuple(nb.shape(i)) != (C,):
            raise Unsupported(f"BatchNormalization: parameter {i} shape {list(nb.shape(i))} != [{C}]")
    inner = prod(xs[2:])
    chunks = chunks_for(prod(xs), nb.caps) // max(1, xs[0] * C) if nb.caps.is_cpu else 256
    chunks = max(1, min(chunks, inner))
    args = [BufRef(nb.buf(0)), 0, BufRef(nb.out_buf(0)), 0] + \
        sum([[BufRef(nb.buf(i)), 0] for i in range(1, 5)], []) + \
        [C, inner, float(nb.attr("epsilon", 1e-5))] + list(act)
    nb.launch("norm.cl", "batchnorm", nb.float_defines(dt, half_math=True), (chunks, C, xs[0]), None, args,
              [nb.buf(i) for i in range(5)], [nb.out_buf(0)])


@planner("LRN")
def plan_lrn(nb: NodeBuilder) -> None:
    dt = nb.require_float(0)
    xs = nb.shape(0)
    if len(xs) < 3:
        raise Unsupported(f"LRN: rank {len(xs)}")
    C, inner = xs[1], prod(xs[2:])
    chunks = max(1, min(inner, chunks_for(prod(xs), nb.caps) // max(1, xs[0] * C))) if nb.caps.is_cpu else 256
    args = [BufRef(nb.buf(0)), 0, BufRef(nb.out_buf(0)), 0, C, inner, int(nb.attr("size")),
            float(nb.attr("alpha", 1e-4)), float(nb.attr("beta", 0.75)), float(nb.attr("bias", 1.0))]
    nb.launch("norm.cl", "lrn", nb.float_defines(dt), (chunks, C, xs[0]), None, args, [nb.buf(0)], [nb.out_buf(0)])


def _param_stride(nb: NodeBuilder, i: int, norm_shape) -> int:
    s = tuple(nb.shape(i))
    R = prod(norm_shape)
    if prod(s) == R and (len(s) <= len(norm_shape)) and tuple(norm_shape[len(norm_shape) - len(s):]) == s \
            and prod(norm_shape[:len(norm_shape) - len(s)]) == 1:
        return 1
    if prod(s) == 1:
        return 0
    if s == tuple(norm_shape):
        return 1
    raise Unsupported(f"{nb.op}: parameter shape {list(s)} does not match normalized shape {list(norm_shape)}")


@planner("LayerNormalization")
def plan_layernorm(nb: NodeBuilder) -> None:
    dt = nb.require_float(0, 1, 2, outputs=(0, 1, 2))
    xs = nb.shape(0)
    axis = int(nb.attr("axis", -1)) % len(xs)
    norm_shape = xs[axis:]
    s_stride = _param_stride(nb, 1, norm_shape)
    has_b = nb.has_input(2)
    b_stride = _param_stride(nb, 2, norm_shape) if has_b else 0
    outer, R = prod(xs[:axis]), prod(norm_shape)
    flags = (1 if has_b else 0) | (2 if nb.has_output(1) else 0) | (4 if nb.has_output(2) else 0)
    y = nb.out_buf(0)
    mean = nb.out_buf(1) if nb.has_output(1) else y
    inv = nb.out_buf(2) if nb.has_output(2) else y
    args = [BufRef(nb.buf(0)), 0, BufRef(y), 0, BufRef(nb.buf(1)), 0, s_stride,
            BufRef(nb.buf(2) if has_b else nb.buf(1)), 0, b_stride, R, 0, float(nb.attr("epsilon", 1e-5)),
            flags, BufRef(mean), BufRef(inv)]
    reads = [nb.buf(0), nb.buf(1)] + ([nb.buf(2)] if has_b else [])
    nb.launch("norm.cl", "rownorm", nb.float_defines(dt), (outer,), None, args, reads, sorted({y, mean, inv}))


@planner("InstanceNormalization")
def plan_instancenorm(nb: NodeBuilder) -> None:
    dt = nb.require_float(0, 1, 2)
    xs = nb.shape(0)
    if len(xs) < 3:
        raise Unsupported(f"InstanceNormalization: rank {len(xs)}")
    C = xs[1]
    for i in (1, 2):
        if tuple(nb.shape(i)) != (C,):
            raise Unsupported(f"InstanceNormalization: parameter shape {list(nb.shape(i))} != [{C}]")
    args = [BufRef(nb.buf(0)), 0, BufRef(nb.out_buf(0)), 0, BufRef(nb.buf(1)), 0, 0, BufRef(nb.buf(2)), 0, 0,
            prod(xs[2:]), C, float(nb.attr("epsilon", 1e-5)), 1, BufRef(nb.out_buf(0)), BufRef(nb.out_buf(0))]
    nb.launch("norm.cl", "rownorm", nb.float_defines(dt), (xs[0] * C,), None, args,
              [nb.buf(0), nb.buf(1), nb.buf(2)], [nb.out_buf(0)])
