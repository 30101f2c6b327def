"""MaxPool / AveragePool over 2-D planes of float32, compiled to vector code (LLVM IR through
llvmlite, ``direct.engine()``'s target machine) and run on the native pool (``parallel.run_native``).

Why: the numba kernels (``jit.window2d`` / ``jit.pool2d``) loop over scalars and hand units to
Python threads. On GoogLeNet's inception pools (3x3, stride 1, pads 1 on 256 x 27x27) MaxPool took
0.96 ms against ONNX Runtime's 0.07; all pools were 6.2 of GoogLeNet's 40 ms.

How one plane (channel) is pooled, per output row ``oh`` (max and sum are separable):

1. the column pass: the window's input rows ``oh*sh - pt + i*dh`` (those inside the plane) are
   reduced lane-wise, VW columns at a time (the last vector masked), into a row buffer at offset
   ``pl``; the buffer's other cells hold the identity (-inf for max, 0 for sums), written once per
   unit, so padding costs nothing;
2. the row pass: output ``ow`` reduces the buffer at ``ow*sw + j*dw`` for the kw taps j: for stride
   1 one unaligned vector load per tap, for stride s one load of s*VW floats and a shuffle taking
   every s-th lane; AveragePool then multiplies by 1 / the window's element count (``div``, per
   output);
3. the VW outputs are stored through a lane mask (the row's last vector).

Max is NaN-propagating, as ``np.maximum``: ``v`` replaces the running max when ``v > acc`` or ``v``
is NaN, so a NaN, once in, stays.

Traced example: 3x3, stride 1, pads 1, a 4x4 plane. The buffer is [id, r0, r1, r2, r3, id, ...]
(pl = 1). Output row 0 reduces input rows -1 (skipped), 0 and 1 into r0..r3; output (0, 0) is
max(id, r0, r1), output (0, 3) max(r2, r3, id).

The units: planes cut into ranges, about four per thread; one ``prm`` row per unit (``PRM``).
"""
from __future__ import annotations

import math
import threading

import numpy as np

from . import direct, native, parallel

#: the integers of one unit, in the order of its ``prm`` row
PRM = ("c0", "c1", "H", "W", "OH", "OW", "kh", "kw", "sh", "dh", "dw", "pt", "pl", "Wt", "RB")
MODE_MAX, MODE_SUM = 1, 2
#: row buffers longer than this many floats (kept on the kernel's stack) take the numba path
MAX_ROW = 1 << 16
#: the row buffers of a block of output rows hold at most this many floats (on the kernel's stack)
BUF_FLOATS = 8192
#: below this many outputs times taps a pool runs on the calling thread only
MIN_PARALLEL_TAPS = 200_000
#: windows up to this size get their own compiled variant (tap loops unrolled)
MAX_UNROLL = 7


def _build_ir(mode: int, SW: int, KH: int, KW: int, VW: int) -> str:
    """The IR module of ``pool(i64 *prm, float *x, float *y, float *div, float *, float *, float
    ident, float)`` for one mode and column stride SW (module doc; ``prm``: ``PRM``). KH, KW > 0
    fix the window's size (its tap loops unrolled, rows outside the plane masked off instead of
    branched around); 0 reads it from ``prm``. Only a row's last vector is masked."""
    u = native.UnitIR("pool", VW, len(PRM), noalias=(1, 2, 3))
    b, c, ir = u.b, u.c, u.ir
    f32, vt, it = u.f32, u.vt, u.it
    wt = ir.VectorType(f32, SW * VW)
    x0, y0, d0 = u.ptrs[:3]
    c0, c1, H, W, OH, OW, kh, kw, sh, dh, dw, pt, pl, Wt, RB = u.prm
    idv = native.ir_splat(b, u.a0, vt)
    one = ir.Constant(vt, [1.0] * VW)
    pick = ir.Constant(it, [lane * SW for lane in range(VW)])
    vptr, load, store = u.vptr, u.load, u.store

    def loop(lo, hi, body, step=1):
        native.ir_loop(b, lo, hi, body, step)

    def vectors(n, body):
        """body(at, mask) for the whole vectors of [0, n) (mask None), then its tail, masked."""
        full = b.sdiv(n, c(VW))
        loop(c(0), full, lambda v: body(b.mul(v, c(VW)), None))
        at = b.mul(full, c(VW))
        with b.if_then(b.icmp_signed("<", at, n)):
            body(at, u.lanes_below(b.trunc(b.sub(n, at), u.i32)))

    def op(acc, v):
        if mode == MODE_SUM:
            return b.fadd(acc, v)
        take = b.or_(b.fcmp_ordered(">", v, acc), b.fcmp_unordered("uno", v, v))
        return b.select(take, v, acc)

    acc = b.alloca(vt)  # (mem2reg makes it a register)
    # RB row buffers (module doc, step 1) of Wt floats (a multiple of VW), then one more that
    # stays all identity: the column pass reads it for a window row outside the plane
    buf = b.alloca(f32, b.mul(b.add(RB, c(1)), Wt))
    loop(c(0), b.mul(b.add(RB, c(1)), Wt), lambda k: b.store(idv, vptr(buf, k), align=4), VW)
    idrow = b.gep(buf, [b.mul(RB, Wt)])

    def plane(ch):
        xc = b.gep(x0, [b.mul(ch, b.mul(H, W))])
        yc = b.gep(y0, [b.mul(ch, b.mul(OH, OW))])

        def col_row(oh, row):
            r0 = b.sub(b.mul(oh, sh), pt)

            # 1. the column pass into row[pl : pl + W)
            if KH:
                # each window row's start, or the identity row for one outside the plane (plain
                # loads: masked ones, even with every lane on, ran at half speed here)
                starts = []
                for i in range(KH):
                    r = b.add(r0, b.mul(c(i), dh))
                    inside = b.and_(b.icmp_signed(">=", r, c(0)), b.icmp_signed("<", r, H))
                    starts.append(b.select(inside, b.gep(xc, [b.mul(r, W)]), idrow))

                def col(at, m):
                    a = idv
                    for st in starts:
                        a = op(a, load(st, at, m, idv))
                    store(a, row, b.add(pl, at), m)
            else:
                # the window's rows inside the plane: i in [i_lo, i_hi)
                i_lo = b.select(b.icmp_signed("<", r0, c(0)), b.sdiv(b.sub(b.add(dh, c(-1)), r0), dh), c(0))
                i_hi = b.sdiv(b.sub(b.sub(H, c(1)), r0), dh)
                i_hi = b.select(b.icmp_signed("<", r0, H), b.add(i_hi, c(1)), c(0))
                i_hi = b.select(b.icmp_signed("<", kh, i_hi), kh, i_hi)

                def col(at, m):
                    b.store(idv, acc)

                    def tap(i):
                        v = load(xc, b.add(b.mul(b.add(r0, b.mul(i, dh)), W), at), m, idv)
                        b.store(op(b.load(acc), v), acc)
                    loop(i_lo, i_hi, tap)
                    store(b.load(acc), row, b.add(pl, at), m)
            vectors(W, col)

        def out_row(oh, row):

            # 2. the row pass, 3. the store
            def out_vec(at, m):
                def tap(j, a):
                    base = b.add(b.mul(at, c(SW)), j if isinstance(j, ir.Value) else b.mul(c(j), dw))
                    if SW == 1:
                        v = b.load(vptr(row, base), align=4)
                    else:
                        wide = b.load(b.bitcast(b.gep(row, [base]), wt.as_pointer()), align=4)
                        v = b.shuffle_vector(wide, ir.Constant(wt, ir.Undefined), pick)
                    return op(a, v)
                if KW:
                    a = idv
                    for j in range(KW):
                        a = tap(j, a)
                else:
                    b.store(idv, acc)
                    loop(c(0), kw, lambda j: b.store(tap(b.mul(j, dw), b.load(acc)), acc))
                    a = b.load(acc)
                at_y = b.add(b.mul(oh, OW), at)
                if mode == MODE_SUM:
                    a = b.fmul(a, load(d0, at_y, m, one))
                store(a, yc, at_y, m)
            vectors(OW, out_vec)

        # blocks of RB rows: their column passes, then their row passes (a row pass right after its
        # own column pass would load what was just stored, unaligned: the store-to-load
        # forwarding stalls cost about half the time)
        def block(r):
            hi = b.add(r, RB)
            hi = b.select(b.icmp_signed("<", OH, hi), OH, hi)
            rows = b.sub(hi, r)
            loop(c(0), rows, lambda k: col_row(b.add(r, k), b.gep(buf, [b.mul(k, Wt)])))
            loop(c(0), rows, lambda k: out_row(b.add(r, k), b.gep(buf, [b.mul(k, Wt)])))
        loop(c(0), OH, block, RB)
    loop(c0, c1, plane)
    return u.text()


def _build_planes_ir(mode: int, VW: int) -> str:
    """The IR module of ``planes(i64 *prm, float *x, float *y, ..., float ident, float scale)``:
    y[c] = max, or scale * sum, of plane c (S contiguous floats) for c in [c0, c1) (``prm``: c0,
    c1, S). Lane-wise over whole vectors, the last masked, then across the lanes in four halving
    shuffles (with the same NaN-propagating max)."""
    u = native.UnitIR("planes", VW, 3)
    b, c, ir = u.b, u.c, u.ir
    c0, c1, S = u.prm
    x0, y0 = u.ptrs[:2]
    ident, scale = u.a0, u.a1
    idv = native.ir_splat(b, ident, u.vt)
    acc = b.alloca(u.vt)
    full = b.sdiv(S, c(VW))
    tail = u.lanes_below(b.trunc(b.sub(S, b.mul(full, c(VW))), u.i32))

    def op(a, v):
        if mode == MODE_SUM:
            return b.fadd(a, v)
        return b.select(b.or_(b.fcmp_ordered(">", v, a), b.fcmp_unordered("uno", v, v)), v, a)

    def plane(ch):
        xc = b.gep(x0, [b.mul(ch, S)])
        b.store(idv, acc)
        native.ir_loop(b, c(0), full, lambda v: b.store(op(b.load(acc), u.load(xc, b.mul(v, c(VW)))), acc))
        a = op(b.load(acc), u.load(xc, b.mul(full, c(VW)), tail, idv))
        n = VW
        while n > 1:  # lanes [n/2, n) onto [0, n/2)
            n //= 2
            a = op(a, b.shuffle_vector(a, ir.Constant(u.vt, ir.Undefined),
                                       ir.Constant(u.it, [n + i if i < n else i for i in range(VW)])))
        r = b.extract_element(a, ir.Constant(u.i32, 0))
        b.store(b.fmul(r, scale) if mode == MODE_SUM else r, b.gep(y0, [ch]))
    native.ir_loop(b, c0, c1, plane)
    return u.text()


def planes(x, y, mode) -> bool:
    """The global pools: y (N, C, 1, 1) = the max (MODE_MAX) or mean (MODE_SUM) of each plane of
    x (N, C, H, W), both float32 C-contiguous, on the native pool. False (nothing written) without
    the compiler. numpy reduces short rows slowly: the mean of 1000 x 13x13 took 88 us, the max
    of 2048 x 7x7 170 us."""
    eng = direct.engine()
    if eng is None:
        return False
    NC, S = x.shape[0] * x.shape[1], x.shape[2] * x.shape[3]
    T = parallel.threads() if NC * S >= MIN_PARALLEL_TAPS else 1

    def build():
        rows = parallel.UnitRows([[c0, c1, S] for c0, c1 in parallel.split(NC, 4 * T if T > 1 else 1)])
        return rows, eng.variant(("planes", mode), lambda: _build_planes_ir(mode, eng.VW), "planes")
    rows, (fn, fn_at) = parallel.per_thread(_tls, "planes", (mode, NC, S, T), build)
    ident, scale = (-math.inf, 1.0) if mode == MODE_MAX else (0.0, 1.0 / S)
    rows.run(fn, fn_at, (native.address(x), native.address(y), 0, 0, 0), ident, scale)
    return True


class _Plan:
    """The unit rows of one geometry and thread count (their array stays alive here)."""

    __slots__ = ("rows", "fn", "fn_at", "recip")

    def __init__(self, eng, mode, xs, k, st, dl, pb, out, T):
        N, C, H, W = xs
        (kh, kw), (sh, sw), (dh, dw), (pt, pl), (OH, OW) = k, st, dl, pb, out
        VW = eng.VW
        nvy = -(-OW // VW)
        Wt = max(pl + W, nvy * VW * sw + (kw - 1) * dw)
        Wt = -(-Wt // VW) * VW
        RB = max(1, min(OH, BUF_FLOATS // Wt))
        self.rows = parallel.UnitRows([[c0, c1, H, W, OH, OW, kh, kw, sh, dh, dw, pt, pl, Wt, RB]
                                       for c0, c1 in parallel.split(N * C, 4 * T if T > 1 else 1)])
        KH, KW = (kh, kw) if max(kh, kw) <= MAX_UNROLL else (0, 0)
        self.recip = None  # (divisor, its reciprocals) of the last AveragePool call
        self.fn, self.fn_at = eng.variant(("pool", mode, sw, KH, KW), lambda: _build_ir(mode, sw, KH, KW, VW), "pool")


_tls = threading.local()


def pool2d(x, y, *, k, strides, dilations, pb, mode, divisor=None) -> bool:
    """MaxPool (``mode`` MODE_MAX) or AveragePool (MODE_SUM, ``divisor`` (OH, OW) float32 element
    counts) of x (N, C, H, W) into y (N, C, OH, OW), both float32 C-contiguous. False (nothing
    written) when it does not apply: no compiler, negative pads, a column stride over 4, or a row
    buffer over ``MAX_ROW`` floats."""
    eng = direct.engine()
    if eng is None or min(pb) < 0 or strides[1] > 4:
        return False
    OH, OW = y.shape[2:]
    if OW * strides[1] + (k[1] - 1) * dilations[1] + x.shape[3] + pb[1] > MAX_ROW:
        return False
    taps = y.size * (k[0] + k[1])
    T = parallel.threads() if taps >= MIN_PARALLEL_TAPS else 1
    key = (mode, x.shape, tuple(k), tuple(strides), tuple(dilations), tuple(pb), (OH, OW), T)
    p = parallel.per_thread(_tls, "plans", key,
                            lambda: _Plan(eng, mode, x.shape, k, strides, dilations, pb, (OH, OW), T))
    ident = -math.inf if mode == MODE_MAX else 0.0
    xa, ya = native.address(x), native.address(y)
    da = ya
    if divisor is not None:
        # (a multiply by the reciprocal: one vdivps per vector made AveragePool 20-40% slower than
        # MaxPool; the divisor is the same array on every call of a geometry, ``pool._divisor``)
        if p.recip is None or p.recip[0] is not divisor:
            with np.errstate(divide="ignore"):
                p.recip = (divisor, np.ascontiguousarray(1.0 / divisor, dtype=np.float32))
        da = native.address(p.recip[1])
    p.rows.run(p.fn, p.fn_at, (xa, ya, da, 0, 0), ident)
    return True
