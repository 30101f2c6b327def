"""Matrix products: Gemm, MatMul, Conv, and the fused forms the transforms produce
(domain "hetero": FusedConv, FusedGemm, FusedMatMul = the op + activation ``activation`` with
``activation_params``; FusedConv's optional 4th input ``residual`` is added before the activation).

Everything lowers to one GEMM kernel (cl/gemm.cl) with a strided A, a unit-column-stride B, a
broadcastable bias, a residual and an activation epilogue:

* Gemm: transA is a stride swap; transB needs B^T -- done once on the host when B is a constant,
  else a transpose launch (const-folded at compile when B is computed from constants).
* MatMul: batch axes are broadcast with per-operand strides; when B has no batch axes and A is
  contiguous the batch folds into M (one large GEMM instead of many small ones).
* Conv (1-D / 2-D, any groups, dilations, strides, pads, auto_pad):
    1x1, stride 1, no pad -> GEMM directly on X (W[M,C] . X[n][C, H*W]), per group;
    depthwise (group == C, one input channel per group) -> the direct dwconv kernel;
    otherwise -> im2col into a scratch buffer, then GEMM batched over (image, group).
"""
from __future__ import annotations

import numpy as np

from ..plan import HALF_SAFE, KB_HALF, BufRef, NodeBuilder, Unsupported, ceil_div, half_sums_ok, planner, prod
from .data import _merge, copy_launch

ACTIVATIONS = {"": 0, "Relu": 1, "Clip": 2, "LeakyRelu": 3, "Sigmoid": 4, "HardSwish": 5, "HardSigmoid": 6,
               "Tanh": 7}
_ACT_DEFAULTS = {"Clip": (-np.inf, np.inf), "LeakyRelu": (0.01, 0.0), "HardSigmoid": (0.2, 0.5)}

# register tile of gemm_reg: RM rows x (RN * NV) columns per work-item
RM, RN, NV = 8, 16, 2
# work-group of gemm_reg: LX x LY tiles (PoCL runs a work-group's items in one loop on one thread, so
# several tiles per group amortise the per-group scheduling cost)
LX, LY = 8, 1
IM2COL_LIMIT = 64 * 1024 * 1024  # elements of im2col scratch before the batch is split


def activation_of(nb: NodeBuilder) -> tuple[int, float, float]:
    name = nb.attr("activation", "") or ""
    if isinstance(name, bytes):
        name = name.decode()
    if name not in ACTIVATIONS:
        raise Unsupported(f"{nb.op}: activation {name!r} not supported (one of {sorted(ACTIVATIONS)})")
    params = [float(v) for v in (nb.attr("activation_params", None) or [])]
    d = list(_ACT_DEFAULTS.get(name, (0.0, 0.0)))
    for i, v in enumerate(params[:2]):
        d[i] = v
    p0, p1 = np.float32(d[0]), np.float32(d[1])
    return ACTIVATIONS[name], float(p0), float(p1)


class Operand:
    """A strided matrix view: buf, element offset, row stride, column stride, 2 batch strides; ``ps``
    is the panel stride of a B packed in panels of RN*NV columns (None: not packed)."""

    def __init__(self, buf: int, off: int = 0, rs: int = 0, cs: int = 1, sb0: int = 0, sb1: int = 0,
                 ps: int | None = None):
        self.buf, self.off, self.rs, self.cs, self.sb0, self.sb1, self.ps = buf, off, rs, cs, sb0, sb1, ps


PACK_MIN_N = 512  # pack a runtime B wider than this (rows further apart than 2 KiB: a page per k)


def packs(nb: NodeBuilder) -> bool:
    return not (nb.caps.gemm_kernel == "local" and nb.caps.max_work_group >= 256)


def pack_host_b(nb: NodeBuilder, b: np.ndarray, K: int, N: int) -> Operand:
    """A constant [K, N] B packed on the host into panels of RN*NV columns, uploaded once."""
    W = RN * NV
    npan = ceil_div(N, W)
    p = np.zeros((npan * W, K), dtype=nb.dev_dtype(b.dtype))
    p[:N] = b.reshape(K, N).T
    packed = np.ascontiguousarray(p.reshape(npan, W, K).transpose(0, 2, 1))
    return Operand(nb.upload(packed, "B packed"), 0, W, 1, ps=K * W)


def pack_device_b(nb: NodeBuilder, dtype, B: Operand, K: int, N: int, nbatch: int = 1,
                  batch_stride: int = 0) -> Operand:
    """A runtime B (unit column stride) packed by a launch into scratch (per batch item)."""
    W = RN * NV
    npan = ceil_div(N, W)
    dst = nb.scratch(nbatch * npan * K * W, nb.dev_dtype(dtype), "B packed")
    nb.launch("gemm.cl", "pack_b", nb.float_defines(dtype, half_math=True), (npan, K, nbatch), None,
              [BufRef(B.buf), B.off, B.rs, batch_stride, BufRef(dst), 0, N, K, W], [B.buf], [dst])
    return Operand(dst, 0, W, 1, npan * K * W, 0, ps=K * W)


def gemm_launch(nb: NodeBuilder, dtype, A: Operand, B: Operand, C: Operand, M: int, N: int, K: int,
                nb0: int = 1, nb1: int = 1, bias: Operand | None = None, beta: float = 1.0,
                residual: Operand | None = None, alpha: float = 1.0, act: tuple = (0, 0.0, 0.0),
                weights: np.ndarray | None = None) -> None:
    """C[b0,b1] = act(alpha * A.B + beta * bias + residual) (B.cs must be 1). ``weights``: the
    constant operand as [rows, K] (the GEMM sums in half only where ``half_sums_ok`` allows)."""
    assert B.cs == 1
    local = nb.caps.gemm_kernel == "local" and nb.caps.max_work_group >= 256
    assert not (local and B.ps is not None), "packed B is for gemm_reg"
    flags = (1 if bias is not None else 0) | (2 if residual is not None else 0)
    bz = bias or Operand(C.buf)
    rz = residual or Operand(C.buf)
    args = [BufRef(A.buf), A.off, A.rs, A.cs, A.sb0, A.sb1,
            BufRef(B.buf), B.off, B.rs, RN * NV if B.ps is None else B.ps, B.sb0, B.sb1,
            BufRef(C.buf), C.off, C.rs, C.sb0, C.sb1,
            BufRef(bz.buf), bz.off, bz.rs, bz.cs, bz.sb0, bz.sb1,
            BufRef(rz.buf), rz.off,
            M, N, K, nb1, float(alpha), float(beta), flags, int(act[0]), float(act[1]), float(act[2])]
    reads = [A.buf, B.buf] + ([bias.buf] if bias is not None else []) + ([residual.buf] if residual is not None else [])
    defines = nb.float_defines(dtype, half_math=nb.caps.half_math and half_sums_ok(weights, KB_HALF))
    if "HALF_MATH" in defines and KB_HALF != 32:
        defines.append(("KB_HALF", KB_HALF))
    caps = nb.caps
    if local:
        gs = (ceil_div(N, 64) * 16, ceil_div(M, 64) * 16, nb0 * nb1)
        nb.launch("gemm.cl", "gemm_local", defines, gs, (16, 16, 1), args, reads, [C.buf])
    else:
        defines += [("RM", RM), ("RN", RN), ("NV", NV)]
        gx, gy = ceil_div(M, RM), ceil_div(N, RN * NV)
        lx, ly = min(LX, gx), min(LY, gy)
        gs = (ceil_div(gx, lx) * lx, ceil_div(gy, ly) * ly, nb0 * nb1)
        nb.launch("gemm.cl", "gemm_reg", defines, gs, (lx, ly, 1), args, reads, [C.buf])


def _bias2d(nb: NodeBuilder, i: int, M: int, N: int) -> Operand:
    s = nb.shape(i)
    if len(s) > 2:
        raise Unsupported(f"{nb.op}: bias of rank {len(s)}")
    s2 = (1,) * (2 - len(s)) + tuple(s)
    for d, full in zip(s2, (M, N)):
        if d not in (1, full):
            raise Unsupported(f"{nb.op}: bias shape {list(s)} does not broadcast to [{M},{N}]")
    return Operand(nb.buf(i), 0, 0 if s2[0] == 1 else s2[1], 0 if s2[1] == 1 else 1)


def _b_rowmajor(nb: NodeBuilder, i: int, transposed: bool, K: int, N: int, dtype, M: int = 0) -> Operand:
    """Operand for B as a row-major [K, N] matrix (transposing B [N, K] once when needed); packed in
    panels for gemm_reg when B is a constant, or wide and reused by enough rows."""
    host = nb.host(i)
    if host is not None and packs(nb):
        return pack_host_b(nb, host.reshape(N, K).T if transposed else host, K, N)
    if not transposed:
        B = Operand(nb.buf(i), 0, N, 1)
        if packs(nb) and N > PACK_MIN_N and M > RM:
            return pack_device_b(nb, dtype, B, K, N)
        return B
    if host is not None:
        bt = np.ascontiguousarray(host.reshape(N, K).T).astype(nb.dev_dtype(host.dtype))
        return Operand(nb.upload(bt, "B^T"), 0, N, 1)
    dt = nb.dev_dtype(dtype)
    tmp = nb.scratch(K * N, dt, "B^T")
    copy_launch(nb, tmp, 0, [N, 1], nb.buf(i), 0, [1, K], [K, N], dt.itemsize)
    B = Operand(tmp, 0, N, 1)
    if packs(nb) and N > PACK_MIN_N and M > RM:
        return pack_device_b(nb, dtype, B, K, N)
    return B


# ---- Gemm -------------------------------------------------------------------------------------

def _plan_gemm(nb: NodeBuilder, act) -> None:
    dt = nb.require_float(0, 1, 2)
    sa, sb = nb.shape(0), nb.shape(1)
    if len(sa) != 2 or len(sb) != 2:
        raise Unsupported(f"{nb.op}: inputs must be 2-D, got {list(sa)} and {list(sb)}")
    ta, tb = int(nb.attr("transA", 0)), int(nb.attr("transB", 0))
    M, K = (sa[1], sa[0]) if ta else sa
    K2, N = (sb[1], sb[0]) if tb else sb
    if K != K2:
        raise Unsupported(f"{nb.op}: inner dimensions differ ({K} vs {K2})")
    A = Operand(nb.buf(0), 0, 1, M) if ta else Operand(nb.buf(0), 0, K, 1)
    B = _b_rowmajor(nb, 1, bool(tb), K, N, dt, M)
    bias = _bias2d(nb, 2, M, N) if nb.has_input(2) else None
    alpha, beta = float(nb.attr("alpha", 1.0)), float(nb.attr("beta", 1.0))
    C = Operand(nb.out_buf(0), 0, N, 1)
    wb, wa = nb.host(1), nb.host(0)
    # the constant operand as [rows, K]: B^T, or else A
    weights = (wb if tb else wb.T) if wb is not None else None if wa is None else (wa.T if ta else wa)
    gemm_launch(nb, dt, A, B, C, M, N, K, bias=bias, beta=beta, alpha=alpha, act=act, weights=weights)


@planner("Gemm")
def plan_gemm(nb: NodeBuilder) -> None:
    _plan_gemm(nb, (0, 0.0, 0.0))


@planner("FusedGemm", domain="hetero")
def plan_fused_gemm(nb: NodeBuilder) -> None:
    _plan_gemm(nb, activation_of(nb))


# ---- MatMul -----------------------------------------------------------------------------------

def _plan_matmul(nb: NodeBuilder, act) -> None:
    dt = nb.require_float(0, 1)
    sa, sb, so = nb.shape(0), nb.shape(1), nb.out_shape(0)
    if len(sa) == 0 or len(sb) == 0:
        raise Unsupported(f"{nb.op}: scalar operands")
    a2 = (1,) + tuple(sa) if len(sa) == 1 else tuple(sa)
    b2 = tuple(sb) + (1,) if len(sb) == 1 else tuple(sb)
    M, K = a2[-2], a2[-1]
    K2, N = b2[-2], b2[-1]
    if K != K2:
        raise Unsupported(f"{nb.op}: inner dimensions differ ({K} vs {K2})")
    ba, bb = a2[:-2], b2[:-2]
    rank = max(len(ba), len(bb))
    ba = (1,) * (rank - len(ba)) + ba
    bb = (1,) * (rank - len(bb)) + bb
    bo = tuple(max(x, y) for x, y in zip(ba, bb))
    for x, y in zip(ba, bb):
        if x != y and 1 not in (x, y):
            raise Unsupported(f"{nb.op}: batch shapes {list(ba)} and {list(bb)} do not broadcast")
    abuf, bbuf, cbuf = nb.buf(0), nb.buf(1), nb.out_buf(0)
    nbatch = prod(bo)
    if prod(so) != nbatch * M * N:
        raise Unsupported(f"{nb.op}: output shape {list(so)} inconsistent")
    # 1. B shared by every batch and A contiguous: fold the batch into M
    if all(d == 1 for d in bb):
        Mt = nbatch * M if all(x == y for x, y in zip(ba, bo)) else None
        if Mt is not None:
            B = _b_rowmajor(nb, 1, False, K, N, dt, Mt) if len(sb) >= 2 else Operand(bbuf, 0, N, 1)
            wb, wa = nb.host(1), nb.host(0)
            weights = wb.reshape(K, N).T if wb is not None else None if wa is None else wa.reshape(-1, K)
            gemm_launch(nb, dt, Operand(abuf, 0, K, 1), B, Operand(cbuf, 0, N, 1), Mt, N, K, act=act,
                        weights=weights)
            return
    # 2. batch strides per operand over the broadcast batch axes, merged where contiguous
    def strides(shape, per):
        st, acc = [], per
        for d, o in zip(reversed(shape), reversed(bo)):
            st.append(acc if d == o and d != 1 else 0)
            acc *= d
        return list(reversed(st))

    sa_, sb_, sc_ = strides(ba, M * K), strides(bb, K * N), strides(bo, M * N)
    dims, sts = _merge(bo, sa_, sb_, sc_)
    # the last two batch axes go to the kernel; any others become separate launches
    lead = dims[:-2]
    d0, d1 = ([1] + dims[-1:]) if len(dims) == 1 else dims[-2:]
    s_last = [([0] + s[-1:]) if len(s) == 1 else s[-2:] for s in sts]
    for idx in np.ndindex(*lead) if lead else [()]:
        offs = [sum(int(i_) * s[k] for k, i_ in enumerate(idx)) for s in sts]
        gemm_launch(nb, dt, Operand(abuf, offs[0], K, 1, *s_last[0]), Operand(bbuf, offs[1], N, 1, *s_last[1]),
                    Operand(cbuf, offs[2], N, 1, *s_last[2]), M, N, K, d0, d1, act=act)


@planner("MatMul")
def plan_matmul(nb: NodeBuilder) -> None:
    _plan_matmul(nb, (0, 0.0, 0.0))


@planner("FusedMatMul", domain="hetero")
def plan_fused_matmul(nb: NodeBuilder) -> None:
    _plan_matmul(nb, activation_of(nb))


# ---- Conv -------------------------------------------------------------------------------------

def window_pads(nb: NodeBuilder, in_sp, out_sp, ks, strides, dil):
    """(pads_begin, pads_end, auto_pad) of a Conv/pool window from ``pads`` / ``auto_pad``; SAME_*
    pads are those that give ``out_sp`` outputs."""
    nd = len(in_sp)
    auto_pad = nb.attr("auto_pad", "NOTSET") or "NOTSET"
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    if auto_pad == "NOTSET":
        pads = [int(p) for p in (nb.attr("pads") or [0] * (2 * nd))]
        return pads[:nd], pads[nd:], auto_pad
    if auto_pad == "VALID":
        return [0] * nd, [0] * nd, auto_pad
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pb, pe = [], []
        for i in range(nd):
            total = max(0, (out_sp[i] - 1) * strides[i] + (ks[i] - 1) * dil[i] + 1 - in_sp[i])
            small, big = total // 2, total - total // 2
            pb.append(small if auto_pad == "SAME_UPPER" else big)
            pe.append(big if auto_pad == "SAME_UPPER" else small)
        return pb, pe, auto_pad
    raise Unsupported(f"{nb.op}: auto_pad {auto_pad!r} not supported")


def conv_geometry(nb: NodeBuilder, xshape, kspatial, in_spatial, out_spatial):
    """(strides, dilations, pads_begin, pads_end) checked against the inferred output shape."""
    nd = len(in_spatial)
    strides = [int(s) for s in (nb.attr("strides") or [1] * nd)]
    dil = [int(d) for d in (nb.attr("dilations") or [1] * nd)]
    same_out = [ceil_div(in_spatial[i], strides[i]) for i in range(nd)]
    pb, pe, _ = window_pads(nb, in_spatial, same_out, kspatial, strides, dil)
    for i in range(nd):
        ext = (kspatial[i] - 1) * dil[i] + 1
        want = (in_spatial[i] + pb[i] + pe[i] - ext) // strides[i] + 1
        if want != out_spatial[i]:
            raise Unsupported(f"{nb.op}: output size {out_spatial[i]} on spatial axis {i} does not match "
                              f"the attributes (expected {want})")
    return strides, dil, pb, pe


def _plan_conv(nb: NodeBuilder, act, residual_input: int | None) -> None:
    dt = nb.require_float(0, 1, 2)
    xs, ws, ys = nb.shape(0), nb.shape(1), nb.out_shape(0)
    if len(xs) not in (3, 4):
        raise Unsupported(f"{nb.op}: {len(xs) - 2}-D convolution not supported (1-D and 2-D are)")
    if len(ws) != len(xs):
        raise Unsupported(f"{nb.op}: weight rank {len(ws)} != input rank {len(xs)}")
    G = int(nb.attr("group", 1))
    Nb, C = xs[0], xs[1]
    M, Cg = ws[0], ws[1]
    if C != Cg * G or M % G:
        raise Unsupported(f"{nb.op}: channels {C} / weight {list(ws)} / group {G} are inconsistent")
    ks = nb.attr("kernel_shape")
    if ks is not None and [int(k) for k in ks] != list(ws[2:]):
        raise Unsupported(f"{nb.op}: kernel_shape {list(ks)} != weight shape {list(ws[2:])}")
    strides, dil, pb, pe = conv_geometry(nb, xs, ws[2:], xs[2:], ys[2:])
    # 1-D as 2-D with height 1
    if len(xs) == 3:
        H, W, KH, KW, OH, OW = 1, xs[2], 1, ws[2], 1, ys[2]
        SH, SW, DH, DW, PH, PW = 1, strides[0], 1, dil[0], 0, pb[0]
    else:
        H, W, KH, KW, OH, OW = xs[2], xs[3], ws[2], ws[3], ys[2], ys[3]
        SH, SW = strides
        DH, DW = dil
        PH, PW = pb
    HW, OHW = H * W, OH * OW
    has_bias = nb.has_input(2)
    if has_bias and tuple(nb.shape(2)) != (M,):
        raise Unsupported(f"{nb.op}: bias shape {list(nb.shape(2))} != [{M}]")
    res = None
    if residual_input is not None and nb.has_input(residual_input):
        if tuple(nb.shape(residual_input)) != tuple(ys):
            raise Unsupported(f"{nb.op}: residual shape {list(nb.shape(residual_input))} != output {list(ys)}")
        if nb.dtype(residual_input) != dt:
            raise Unsupported(f"{nb.op}: residual type {nb.dtype(residual_input)}")
        res = nb.buf(residual_input)
    xbuf, wbuf, ybuf = nb.buf(0), nb.buf(1), nb.out_buf(0)
    bbuf = nb.buf(2) if has_bias else None

    # 1. depthwise: direct kernel
    if G == C and Cg == 1 and G > 1:
        flags = (1 if has_bias else 0) | (2 if res is not None else 0)
        args = [BufRef(xbuf), 0, BufRef(wbuf), 0, BufRef(bbuf if has_bias else wbuf), 0,
                BufRef(res if res is not None else xbuf), 0, BufRef(ybuf), 0,
                C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, M // C, flags, act[0], act[1], act[2]]
        reads = [xbuf, wbuf] + ([bbuf] if has_bias else []) + ([res] if res is not None else [])
        # the taps (and the bias) of an output channel are one half sum
        wh = nb.host(1)
        taps = None if wh is None else wh.reshape(M, KH * KW)
        if taps is not None and has_bias:
            bh = nb.host(2)
            taps = None if bh is None else np.concatenate([taps, bh.reshape(M, 1) / np.float32(HALF_SAFE)], axis=1)
        hm = nb.caps.half_math and half_sums_ok(taps, KH * KW + 1)
        nb.launch("conv.cl", "dwconv", nb.float_defines(dt, half_math=hm), (OH, M, Nb), None, args, reads, [ybuf])
        return
    Mg, Kg = M // G, Cg * KH * KW
    bias = Operand(bbuf, 0, 1, 0, 0, Mg) if has_bias else None
    wh = nb.host(1)
    wrows = None if wh is None else wh.reshape(M, Kg)  # every group's rows: one bound for all
    # 2. pointwise (any group count): GEMM straight on X, group g reading rows [g*Cg, (g+1)*Cg)
    if KH == KW == 1 and SH == SW == 1 and PH == PW == 0 and pe == [0] * len(pe):
        B = Operand(xbuf, 0, HW, 1, C * HW, Cg * HW)
        if packs(nb) and HW > PACK_MIN_N and Mg > RM:
            B = pack_device_b(nb, dt, Operand(xbuf, 0, HW, 1), C, HW, Nb, C * HW)
            B.sb1 = Cg * RN * NV  # a group's rows inside each packed panel
        gemm_launch(nb, dt, Operand(wbuf, 0, Cg, 1, 0, Mg * Cg), B,
                    Operand(ybuf, 0, OHW, 1, M * OHW, Mg * OHW), Mg, OHW, Cg, Nb, G, bias=bias,
                    residual=Operand(res) if res is not None else None, act=act, weights=wrows)
        return
    # 3. im2col + GEMM over (image, group); split the batch when the scratch would be too large
    rows = C * KH * KW
    Wp = RN * NV if packs(nb) else 0  # gemm_reg reads im2col packed in panels
    cols = ceil_div(OHW, Wp) * Wp if Wp else OHW
    per_image = rows * cols
    step = max(1, min(Nb, IM2COL_LIMIT // max(per_image, 1)))
    col = nb.scratch(step * per_image, nb.dev_dtype(dt), "im2col")
    if Wp:
        Bop = Operand(col, 0, Wp, 1, per_image, Kg * Wp, ps=rows * Wp)
    else:
        Bop = Operand(col, 0, OHW, 1, per_image, Kg * OHW)
    for n0 in range(0, Nb, step):
        cnt = min(step, Nb - n0)
        nb.launch("conv.cl", "im2col", nb.float_defines(dt, half_math=True), (OH, rows, cnt), None,
                  [BufRef(xbuf), n0 * C * HW, BufRef(col), 0, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, Wp],
                  [xbuf], [col])
        yoff = n0 * M * OHW
        gemm_launch(nb, dt, Operand(wbuf, 0, Kg, 1, 0, Mg * Kg), Bop,
                    Operand(ybuf, yoff, OHW, 1, M * OHW, Mg * OHW), Mg, OHW, Kg, cnt, G, bias=bias,
                    residual=Operand(res, yoff) if res is not None else None, act=act, weights=wrows)


@planner("Conv")
def plan_conv(nb: NodeBuilder) -> None:
    _plan_conv(nb, (0, 0.0, 0.0), None)


@planner("FusedConv", domain="hetero")
def plan_fused_conv(nb: NodeBuilder) -> None:
    _plan_conv(nb, activation_of(nb), 3)


# ---- ConvTranspose ------------------------------------------------------------------------------

@planner("ConvTranspose")
def plan_conv_transpose(nb: NodeBuilder) -> None:
    """Col = W^T . X (one GEMM per image and group), then a col2im gather adds the taps and the bias.

    Traced: X [1, 2, 3, 3], W [2, 4, 3, 3], stride 2 -> Col [1, 4*3*3, 9]; Y [1, 4, 7, 7] where
    Y[0, m, oy, ox] sums Col[(m, kh, kw), iy*3 + ix] over taps with oy = 2*iy + kh (and ox alike)."""
    dt = nb.require_float(0, 1, 2)
    xs, ws, ys = nb.shape(0), nb.shape(1), nb.out_shape(0)
    if len(xs) not in (3, 4) or len(ws) != len(xs):
        raise Unsupported(f"ConvTranspose: {len(xs) - 2}-D not supported (1-D and 2-D are)")
    G = int(nb.attr("group", 1))
    Nb, C = xs[0], xs[1]
    Cg, Mg = C // G, ws[1]
    M = Mg * G
    if ws[0] != C or C % G or ys[1] != M:
        raise Unsupported(f"ConvTranspose: channels {C} / weight {list(ws)} / group {G} are inconsistent")
    nd = len(xs) - 2
    ks = list(ws[2:])
    strides = [int(v) for v in (nb.attr("strides") or [1] * nd)]
    dil = [int(v) for v in (nb.attr("dilations") or [1] * nd)]
    opad = [int(v) for v in (nb.attr("output_padding") or [0] * nd)]
    auto_pad = nb.attr("auto_pad", "NOTSET") or "NOTSET"
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    out_sp = list(ys[2:])
    full = [strides[i] * (xs[2 + i] - 1) + opad[i] + (ks[i] - 1) * dil[i] + 1 for i in range(nd)]
    if nb.attr("output_shape") is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        total = [full[i] - out_sp[i] for i in range(nd)]
        if auto_pad == "SAME_UPPER":
            pb = [t // 2 for t in total]
        else:
            pb = [t - t // 2 for t in total]
        pe = [t - b for t, b in zip(total, pb)]
    elif auto_pad == "VALID":
        pb, pe = [0] * nd, [0] * nd
    else:
        pads = [int(v) for v in (nb.attr("pads") or [0] * (2 * nd))]
        pb, pe = pads[:nd], pads[nd:]
    for i in range(nd):
        if full[i] - pb[i] - pe[i] != out_sp[i]:
            raise Unsupported(f"ConvTranspose: output size {out_sp[i]} on spatial axis {i} does not match the "
                              f"attributes (expected {full[i] - pb[i] - pe[i]})")
    if nd == 1:
        H, W, KH, KW, OH, OW, SH, SW, DH, DW, PH, PW = 1, xs[2], 1, ks[0], 1, ys[2], 1, strides[0], 1, dil[0], 0, pb[0]
    else:
        H, W, KH, KW, OH, OW = xs[2], xs[3], ks[0], ks[1], ys[2], ys[3]
        (SH, SW), (DH, DW), (PH, PW) = strides, dil, pb
    if nb.has_input(2) and tuple(nb.shape(2)) != (M,):
        raise Unsupported(f"ConvTranspose: bias shape {list(nb.shape(2))} != [{M}]")
    HW, R = H * W, Mg * KH * KW
    xbuf, wbuf, ybuf = nb.buf(0), nb.buf(1), nb.out_buf(0)
    col = nb.scratch(Nb * G * R * HW, nb.dev_dtype(dt), "col")
    gemm_launch(nb, dt, Operand(wbuf, 0, 1, R, 0, Cg * R), Operand(xbuf, 0, HW, 1, C * HW, Cg * HW),
                Operand(col, 0, HW, 1, G * R * HW, R * HW), R, HW, Cg, Nb, G)
    has_b = nb.has_input(2)
    bbuf = nb.buf(2) if has_b else col
    nb.launch("conv.cl", "col2im", nb.float_defines(dt), (OH, M, Nb), None,
              [BufRef(col), 0, BufRef(bbuf), 0, BufRef(ybuf), 0, M, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW,
               1 if has_b else 0], [col] + ([bbuf] if has_b else []), [ybuf])
