"""Compiled inner loops (numba) for the CPU kernels where numpy cannot fuse the work.

Why: a window over kernel taps (depthwise conv, MaxPool, AveragePool) is, in numpy, one whole-array
pass per tap (multiply, add, or maximum) plus copies: 9 to 18 trips through memory for a 3x3 window,
each a separate call that takes the GIL. Compiled, the taps of one channel accumulate in a buffer
that stays in L1, in one call that releases the GIL. Measured on this project's 2-core machine,
alternating runs: depthwise 3x3 (+ bias, Relu) on 272x14x14, numpy 0.61 ms, compiled 0.35 ms; on
136x28x28 0.73 vs 0.41; strided 272x14x14 0.45 vs 0.33. ShuffleNet spent 40% of its time there.

More routines, each replacing several numpy passes by one: ``pool2d``, strided MaxPool /
AveragePool done separably (rows, then strided columns; the tap loop would need the input split
into stride phases first); ``epilogue``, a GEMM conv's bias + residual + activation over each
finished block (a (64, 3025) block with bias and Relu: 0.023 ms against 0.104 ms); ``affine``,
inference BatchNormalization with an optional fused activation; ``lrn``, LRN across channels.

Everything else (GEMM-shaped work) stays on numpy + BLAS. When numba is missing or fails to load,
or ``HETERO_JIT=0`` is set, ``kernels()`` returns None and the callers use their numpy paths, which
compute the same results (the tests run both).

How one windowed op runs (``window2d``):

1. ``pack`` copies the input (numpy bulk copies, per image and channel) into a flat buffer split
   into stride phases, pads included: phase (a, b) of a channel holds padded rows a, a + sh, ...
   and columns b, b + sw, ... (for stride 1 there is one phase: the padded plane itself). The
   padding is written only when the buffer's layout changed since the last pack on this thread.
2. Every tap (i, j) then reads ONE contiguous run of a channel's phases: output (oh, ow) reads padded
   (oh*sh + i*dh, ow*sw + j*dw), which is phase ((i*dh) % sh, (j*dw) % sw) at row oh + (i*dh)//sh,
   column ow + (j*dw)//sw. Over the "wide" output (rows of the phase pitch Wq; the columns past OW
   are garbage, never stored) that is the run starting at ``offs[t]`` = phase start +
   ((i*dh)//sh)*Wq + (j*dw)//sw, of length L = OH*Wq. So each tap is one vectorised loop over L.
3. The compiled ``window`` reduces the taps into ``acc`` (mode 0: weighted sum, the depthwise
   conv; 1: max; 2: sum) for each output channel of its block (blocks spread over the threads),
4. then stores the valid columns with the epilogue: bias, residual and activation for the conv,
   the divisor for AveragePool.

Traced example: 3x3 stride 2 pads 1 on a 5x5 plane (Hp = Wp = 7 -> Hq = Wq = 4, OH = OW = 3).
Tap (1, 2) reads padded (2*oh + 1, 2*ow + 2): phase (1, 0), rows oh + 0, columns ow + 1, so
offs = (1*2 + 0)*16 + 0*4 + 1 = 33, and output (2, 1) is element 33 + 2*4 + 1 of the channel's
phases: phase (1, 0) row 2 column 2, padded (5, 4) = 2*2 + 1, 1*2 + 2.
"""
from __future__ import annotations

import os
import threading
import warnings

import numpy as np

from . import parallel

#: activation codes the compiled epilogues apply themselves (others: the caller applies them after)
ACT_CODES = {"": 0, "Relu": 1, "Clip": 2, "LeakyRelu": 3}
#: elements of one wide run of the stride-1 pools' tap loop (channels per run: this // plane size;
#: 16 KB of float32, so the run's accumulator stays in L1)
POOL_BLOCK = 4096


def act_params(act, params):
    """(p0, p1) of activation ``act`` for the compiled epilogues: Clip's bounds (missing ones
    infinite), LeakyRelu's alpha (default 0.01)."""
    prm = list(params or [])
    if act == "Clip":
        return (-np.inf if len(prm) < 1 or prm[0] is None else float(prm[0]),
                np.inf if len(prm) < 2 or prm[1] is None else float(prm[1]))
    if act == "LeakyRelu":
        return (float(prm[0]) if prm else 0.01), 0.0
    return 0.0, 0.0
MODE_CONV, MODE_MAX, MODE_SUM = 0, 1, 2

_lock = threading.Lock()
_state: dict = {}
_tls = threading.local()


def enabled() -> bool:
    """True unless HETERO_JIT is set to 0 / false / off."""
    return os.environ.get("HETERO_JIT", "1").strip().lower() not in ("0", "false", "off", "no")


def kernels():
    """The compiled routines (an object with ``window``), or None when numba is unavailable or
    disabled. Built once per process on first use (numba itself is imported only then)."""
    if not enabled():
        return None
    k = _state.get("k", _state)
    if k is not _state:
        return k
    with _lock:
        if "k" not in _state:
            _state["k"] = _build()
    return _state["k"]


def unavailable_reason() -> str:
    """Why ``kernels()`` is None ('' when it is not)."""
    if not enabled():
        return "HETERO_JIT=0"
    kernels()
    return _state.get("why", "")


def _build():
    try:
        import numba  # noqa: F401
    except Exception as e:  # noqa: BLE001 - missing or broken install: numpy paths instead
        _state["why"] = f"numba not importable ({type(e).__name__}: {e})"
        warnings.warn(f"hetero: {_state['why']}; the CPU kernels use their numpy paths", RuntimeWarning,
                      stacklevel=3)
        return None
    try:
        return _compile(cache=True)
    except Exception:  # noqa: BLE001 - e.g. no writable cache directory: compile without caching
        try:
            return _compile(cache=False)
        except Exception as e:  # noqa: BLE001
            _state["why"] = f"numba failed ({type(e).__name__}: {e})"
            warnings.warn(f"hetero: compiled CPU kernels unavailable, using numpy paths: {e}", RuntimeWarning,
                          stacklevel=3)
            return None


def _compile(cache: bool):
    import numba as nb

    # no fastmath beyond contraction (a*b+c as one FMA): max must keep NaNs, sums keep their order
    opts = dict(nogil=True, cache=cache, boundscheck=False, error_model="numpy", fastmath={"contract"})

    @nb.njit(inline="always", **opts)
    def activate(v, act, p0, p1, zero):
        """Activation code ``act`` (ACT_CODES) on v: inlined into each variant, where ``act`` is a
        closure constant, so only its own branch is compiled. Relu keeps NaN, as np.maximum."""
        if act == 1:
            return zero if v < zero else v
        if act == 2:
            v = p0 if v < p0 else v
            return p1 if v > p1 else v
        if act == 3:
            return v * p0 if v < zero else v
        return v

    @nb.njit(inline="always", **opts)
    def nanmax(a, v):
        """max(a, v) where a NaN on either side wins, as np.maximum (MaxPool's semantics)."""
        return v if (v > a or v != v) else a

    def make_window(MODE, RES, ACT):
        """``window`` specialised for one mode (MODE_*), residual or not, activation code: closure
        constants, so each variant compiles to one tight loop per step. Measured on 272x14x14
        depthwise: with them as runtime flags the same work took 0.19 ms instead of 0.09."""

        @nb.njit(**opts)
        def window(xq, S, y3, w2, bias, res3, div2, offs, Wq, mult, consts, m0, m1):
            """Output channels [m0, m1) of y3 (M, OH, OW) from the packed input xq (flat: input
            channel c's phase planes at c*S, readable past the last one: see ``pack``).
            ``consts`` (y3's dtype, so no arithmetic is promoted to float64): the activation
            parameters p0, p1, and zero."""
            p0, p1, zero = consts[0], consts[1], consts[2]
            OH, OW = y3.shape[1], y3.shape[2]
            K = offs.size
            L = OH * Wq
            # pools run a block of channels as ONE wide run: channel c + 1's phase plane starts S
            # elements after channel c's, so the taps' runs over B channels are contiguous
            # (positions between two channels' outputs are computed and dropped). On small planes
            # that replaces a short loop per channel and tap with one long one (MaxPool 3x3 s1 on
            # 832x6x6, one thread: 0.15 -> 0.10 ms). The conv's weights change per channel: B = 1.
            B = 1 if MODE == 0 else max(1, POOL_BLOCK // S)
            acc = np.empty((min(B, max(1, m1 - m0)) - 1) * S + L, y3.dtype)
            has_bias = bias.size > 0
            for mb in range(m0, m1, B):
                nb = min(B, m1 - mb)
                Lt = (nb - 1) * S + L
                base = (mb // mult) * S  # mult output channels share an input channel (conv)
                # 2-3. each tap is one run xq[base + offs[t]:] over the wide output (a slice
                # indexed by the loop counter alone: no wraparound checks, so LLVM vectorises it)
                src = xq[base + offs[0]:]
                if MODE == 0:
                    wv = w2[mb, 0]
                    for p in range(Lt):
                        acc[p] = wv * src[p]
                    for t in range(1, K):
                        wv = w2[mb, t]
                        src = xq[base + offs[t]:]
                        for p in range(Lt):
                            acc[p] += wv * src[p]
                elif MODE == 1:
                    for p in range(Lt):
                        acc[p] = src[p]
                    for t in range(1, K):
                        src = xq[base + offs[t]:]
                        for p in range(Lt):
                            acc[p] = nanmax(acc[p], src[p])
                else:
                    for p in range(Lt):
                        acc[p] = src[p]
                    for t in range(1, K):
                        src = xq[base + offs[t]:]
                        for p in range(Lt):
                            acc[p] += src[p]
                # 4. store the valid columns of each wide row with the epilogue (one loop per
                # case: no branches on loop-invariant flags inside the element loops)
                for j in range(nb):
                    m = mb + j
                    ym = y3[m]
                    a0 = j * S
                    if MODE == 0:
                        bv = bias[m] if has_bias else zero
                        for oh in range(OH):
                            arow = acc[a0 + oh * Wq:a0 + oh * Wq + OW]
                            yrow = ym[oh]
                            rrow = res3[m, oh] if RES else arow
                            for ow in range(OW):
                                v = arow[ow] + bv
                                if RES:
                                    v += rrow[ow]
                                v = activate(v, ACT, p0, p1, zero)
                                yrow[ow] = v
                    elif MODE == 2:
                        for oh in range(OH):
                            arow = acc[a0 + oh * Wq:a0 + oh * Wq + OW]
                            yrow = ym[oh]
                            drow = div2[oh]
                            for ow in range(OW):
                                yrow[ow] = arow[ow] / drow[ow]
                    else:
                        for oh in range(OH):
                            arow = acc[a0 + oh * Wq:a0 + oh * Wq + OW]
                            yrow = ym[oh]
                            for ow in range(OW):
                                yrow[ow] = arow[ow]

        return window

    def make_pool(MODE, KW, SW):
        """``pool`` (MaxPool: MODE_MAX, AveragePool: MODE_SUM) specialised for kernel width KW and
        column stride SW when both are given (> 0; then the column dilation is 1), otherwise
        reading kw / sw from its arguments. With them constant the row pass is one loop that LLVM
        vectorises with interleaved loads (measured, MaxPool 3x3 s2 on 64x111x111: 0.49 ms against
        0.67 ms with SW alone constant and 1.35 ms with neither)."""

        @nb.njit(**opts)
        def pool(x3, y3, kh, kw_, sh, sw_, dh, dw, pt, pl, ident, div2, c0, c1):
            """Channels [c0, c1) of y3 (C, OH, OW) from x3 (C, H, W): see ``pool2d``."""
            kw = KW if KW > 0 else kw_
            sw = SW if SW > 0 else sw_
            H, W = x3.shape[1], x3.shape[2]
            OH, OW = y3.shape[1], y3.shape[2]
            Wp = max(W + pl, (OW - 1) * sw + (kw - 1) * dw + 1)
            tp = np.empty(Wp, y3.dtype)  # one padded row: [pl, pl + W) written per output row
            for w in range(Wp):
                tp[w] = ident
            row = tp[pl:pl + W]
            acc = np.empty(OW, y3.dtype)
            for c in range(c0, c1):
                for oh in range(OH):
                    # 1. the column pass: the window's input rows reduced into row (rows in the
                    # padding are skipped: they hold the identity)
                    r0 = oh * sh - pt
                    n = 0
                    for i in range(kh):
                        r = r0 + i * dh
                        if r < 0 or r >= H:
                            continue
                        src = x3[c, r]
                        if n == 0:
                            for w in range(W):
                                row[w] = src[w]
                        elif MODE == 1:
                            for w in range(W):
                                row[w] = nanmax(row[w], src[w])
                        else:
                            for w in range(W):
                                row[w] += src[w]
                        n += 1
                    if n == 0:
                        for w in range(W):
                            row[w] = ident
                    # 2. the row pass over the padded row: output ow reduces tp[ow*sw + j*dw]
                    if KW > 0:
                        for ow in range(OW):
                            b = ow * SW
                            a = tp[b]
                            for j in range(1, KW):
                                v = tp[b + j]
                                if MODE == 1:
                                    a = nanmax(a, v)
                                else:
                                    a += v
                            acc[ow] = a
                    else:
                        for ow in range(OW):
                            acc[ow] = tp[ow * sw]
                        for j in range(1, kw):
                            tj = tp[j * dw:]
                            for ow in range(OW):
                                v = tj[ow * sw]
                                if MODE == 1:
                                    acc[ow] = nanmax(acc[ow], v)
                                else:
                                    acc[ow] += v
                    # 3. store (AveragePool: divided by the window's element count)
                    yrow = y3[c, oh]
                    if MODE == 1:
                        for ow in range(OW):
                            yrow[ow] = acc[ow]
                    else:
                        drow = div2[oh]
                        for ow in range(OW):
                            yrow[ow] = acc[ow] / drow[ow]

        return pool

    def make_epilogue(BIAS, RES, ACT):
        """``epilogue`` with bias or not, residual or not and activation code ACT as constants."""

        @nb.njit(**opts)
        def epilogue(y3, bias, r3, consts, n, m0, m1, q0, q1):
            """In place on y3[n, m0:m1, q0:q1] (y3 (N, M, P)): add bias[m], add r3[n, m, q], apply
            the activation, in one pass over each row segment (numpy: one pass per step)."""
            p0, p1, zero = consts[0], consts[1], consts[2]
            for m in range(m0, m1):
                row = y3[n, m][q0:q1]
                rrow = r3[n, m][q0:q1] if RES else row
                bv = bias[m] if BIAS else zero
                for q in range(q1 - q0):
                    v = row[q]
                    if BIAS:
                        v += bv
                    if RES:
                        v += rrow[q]
                    v = activate(v, ACT, p0, p1, zero)
                    row[q] = v

        return epilogue

    def make_affine(ACT):
        """``affine`` with activation code ACT as a constant."""

        @nb.njit(**opts)
        def affine(x3, y3, a, b, consts, c0, c1):
            """y3[n, c] = act(x3[n, c] * a[c] + b[c]) for channels [c0, c1) of every image (x3, y3:
            (N, C, P); ``consts``: the activation parameters p0, p1, and zero)."""
            p0, p1, zero = consts[0], consts[1], consts[2]
            for n in range(x3.shape[0]):
                for c in range(c0, c1):
                    src, dst = x3[n, c], y3[n, c]
                    av, bv = a[c], b[c]
                    for q in range(src.size):
                        v = src[q] * av + bv
                        v = activate(v, ACT, p0, p1, zero)
                        dst[q] = v

        return affine

    def make_lrn(BETA):
        """``lrn`` with the exponent's fast form as a constant: 1 (beta 0.75: sqrt(d) * sqrt(sqrt(d)),
        vectorised square roots instead of a scalar powf per element), 2 (0.5), 3 (1.0), 0 (any
        beta: d ** beta)."""

        @nb.njit(**opts)
        def lrn(x3, y3, lo, hi, k, bias, beta, c0, c1):
            """y3[c] = x3[c] / (bias + k * sum of x3[j]^2 over j in [c - lo, c + hi]) ** beta for
            channels [c0, c1) of x3 (C, P) (k: alpha / size), one pass per output channel."""
            C = x3.shape[0]
            P = x3.shape[1]
            s = np.empty(P, y3.dtype)
            for c in range(c0, c1):
                j0 = max(0, c - lo)
                j1 = min(C - 1, c + hi)
                src = x3[j0]
                for q in range(P):
                    s[q] = src[q] * src[q]
                for j in range(j0 + 1, j1 + 1):
                    src = x3[j]
                    for q in range(P):
                        s[q] += src[q] * src[q]
                xc, yc = x3[c], y3[c]
                for q in range(P):
                    d = bias + k * s[q]
                    if BETA == 1:
                        r = np.sqrt(d)
                        d = r * np.sqrt(r)
                    elif BETA == 2:
                        d = np.sqrt(d)
                    elif BETA == 0:
                        d = d ** beta
                    yc[q] = xc[q] / d

        return lrn

    class Kernels:
        """The compiled routines: ``window(mode, residual, act)``, ``pool(mode, kw, sw)``,
        ``epilogue(bias, residual, act)``, ``affine(act)`` and ``lrn(beta)`` give that variant, built on first use (numba compiles each on its first call, or loads it from
        its on-disk cache)."""

        def __init__(self):
            self._variants = {}

        def _variant(self, make, key):
            fn = self._variants.get((make, key))
            if fn is None:
                with _lock:
                    fn = self._variants.get((make, key))
                    if fn is None:
                        try:
                            fn = make(*key)
                        except Exception:  # noqa: BLE001 - e.g. no writable cache directory
                            opts["cache"] = False  # (this and later variants: in memory only)
                            fn = make(*key)
                        self._variants[(make, key)] = fn
            return fn

        def window(self, mode, residual=False, act=0):
            return self._variant(make_window, (int(mode), bool(residual), int(act)))

        def pool(self, mode, kw=0, sw=0):
            return self._variant(make_pool, (int(mode), int(kw), int(sw)))

        def lrn(self, beta):
            return self._variant(make_lrn, ({0.75: 1, 0.5: 2, 1.0: 3}.get(float(beta), 0),))

        def affine(self, act=0):
            return self._variant(make_affine, (int(act),))

        def epilogue(self, bias, residual, act):
            return self._variant(make_epilogue, (bool(bias), bool(residual), int(act)))

    return Kernels()


# ---- the plan of one windowed op (pure geometry, cached) -------------------------------------------------

_plans: dict = {}


def plan(out_hw, k, strides, dilations):
    """(offs, Hq, Wq) for a 2-D window of kernel ``k`` with ``strides`` / ``dilations`` giving an
    (OH, OW) output: per-tap start offsets into the phase buffer (module doc, step 2). A phase needs
    OH + (kh-1)*dh // sh rows (the last output's farthest tap) and likewise for columns; rows and
    columns past the input are padding (``pack`` fills them)."""
    key = (tuple(out_hw), tuple(k), tuple(strides), tuple(dilations))
    hit = _plans.get(key)
    if hit is not None:
        return hit
    (OH, OW), (kh, kw), (sh, sw), (dh, dw) = out_hw, k, strides, dilations
    Hq, Wq = OH + (kh - 1) * dh // sh, OW + (kw - 1) * dw // sw
    plane = Hq * Wq
    offs = np.array([((i * dh) % sh * sw + (j * dw) % sw) * plane + (i * dh // sh) * Wq + (j * dw // sw)
                     for i in range(kh) for j in range(kw)], dtype=np.int64)
    res = (offs, int(Hq), int(Wq))
    if len(_plans) > 4096:
        _plans.clear()
    _plans[key] = res
    return res


_EMPTY: dict = {}


def empty(dtype, ndim):
    """A cached zero-size array standing for "none" (no bias / residual / divisor / weights)."""
    key = (np.dtype(dtype).str, ndim)
    e = _EMPTY.get(key)
    if e is None:
        e = _EMPTY[key] = np.empty((0,) * ndim, dtype)
    return e


def _span(pad, a, step, n_in, n_out):
    """Phase positions [lo, hi) that read input positions inside [0, n_in), and the first input
    position read: phase position r reads padded position r*step + a, i.e. input r*step + a - pad."""
    lo = max(0, -((a - pad) // step))  # ceil((pad - a) / step), at least 0
    top = n_in - 1 - a + pad
    hi = min(n_out, top // step + 1) if top >= 0 else 0
    lo = min(lo, hi)
    return lo, hi, lo * step + a - pad


def pack(x, k, strides, dilations, pb, out_hw, padval, copy=None, own=False):
    """Step 1 of the module doc for all of x (N, C, H, W) at once, in numpy bulk copies: returns
    (xq, S, offs, Wq) where xq is a flat workspace holding, for image n and channel c at
    (n*C + c)*S, the sh*sw phase planes (Hq, Wq) of the padded plane, followed by enough slack
    (``padval``) that every tap's wide run stays inside the buffer. Only the phases some tap reads
    are written (a strided 1x1 conv reads one of its sh*sw).

    ``copy(flat, segs)``, when given, copies the interior instead of numpy: ``segs`` lists per
    phase (offset in a channel's block, rows, columns, offset of its first input element in a
    channel's plane); row r of a phase reads input row h0 + r*sh, column j input column w0 + j*sw
    (``direct``'s compiled copy, parallel, and vectorised where numpy's strided copies are not).
    ``own``: pack into a new array instead of the thread's workspace (its padding then stays put
    for a caller that keeps it and later rewrites only the interior)."""
    from .conv import workspace

    N, C, H, W = x.shape
    sh, sw = strides
    offs, Hq, Wq = plan(out_hw, k, strides, dilations)
    S = sh * sw * Hq * Wq
    total = N * C * S
    slack = max(0, int(offs.max()) + out_hw[0] * Wq - S)
    flat = np.empty(total + slack, x.dtype) if own else workspace("jit_pack", total + slack, x.dtype)
    # the padding is where the last pack of this same layout into this same buffer left it (the
    # buffer is this thread's): then only the interior is copied
    key = None if own else (flat.ctypes.data, x.shape, x.dtype.str, tuple(strides), Hq, Wq, tuple(pb),
                            float(padval), slack, tuple(k), tuple(dilations))
    fill = own or getattr(_tls, "pack_key", None) != key
    if slack and fill:
        flat[total:] = padval
    q = flat[:total].reshape(N, C, sh, sw, Hq, Wq)
    used = {(i * dilations[0] % sh, j * dilations[1] % sw) for i in range(k[0]) for j in range(k[1])}
    segs = []
    for a in range(sh):
        r0, r1, h0 = _span(pb[0], a, sh, H, Hq)
        for b in range(sw):
            if (a, b) not in used:
                continue
            s0, s1, w0 = _span(pb[1], b, sw, W, Wq)
            ph = q[:, :, a, b]
            if r1 <= r0 or s1 <= s0:
                if fill:
                    ph[...] = padval
                continue
            if fill:
                ph[:, :, :r0] = padval
                ph[:, :, r1:] = padval
                ph[:, :, r0:r1, :s0] = padval
                ph[:, :, r0:r1, s1:] = padval
            if copy is None:
                ph[:, :, r0:r1, s0:s1] = x[:, :, h0:h0 + (r1 - r0 - 1) * sh + 1:sh, w0:w0 + (s1 - s0 - 1) * sw + 1:sw]
            else:
                segs.append(((a * sw + b) * Hq * Wq + r0 * Wq + s0, r1 - r0, s1 - s0, h0 * W + w0))
    if segs:
        copy(flat, segs)
    if not own:
        _tls.pack_key = key
    return flat, S, offs, Wq


#: below this many tap reads (channels x taps x wide output) a windowed op stays on one thread: the
#: hand-off to the pool (~30 us) costs more than the second core saves
MIN_PARALLEL_TAPS = 1 << 21


def window2d(x, y, *, k, strides, dilations, pb, mode, weights=None, bias=None, residual=None, divisor=None,
             act=0, p0=0.0, p1=0.0, padval=0.0, mult=1):
    """Run the compiled ``window`` over every image of x (N, C, H, W) into y (N, M, OH, OW), both
    C-contiguous of one float dtype, output channels cut into blocks spread over the threads.
    ``weights`` (M, kh*kw), ``bias`` (M,), ``residual`` (N, M, OH, OW): mode MODE_CONV; ``divisor``
    (OH, OW): MODE_SUM. Returns False (nothing done) when the compiled kernels are unavailable."""
    kern = kernels()
    if kern is None or min(pb) < 0:  # (negative pads: the callers crop the input first)
        return False
    N, M, OH, OW = y.shape
    C = x.shape[1]
    dt = y.dtype
    xq, S, offs, Wq = pack(x, k, strides, dilations, pb, (OH, OW), padval)
    w2 = empty(dt, 2) if weights is None else weights
    b1 = empty(dt, 1) if bias is None else bias
    dv = empty(dt, 2) if divisor is None else divisor
    work = M * offs.size * OH * Wq * N
    T = parallel.threads() if work >= MIN_PARALLEL_TAPS else 1
    units = [(n, m0, m1) for n in range(N) for m0, m1 in parallel.split(M, T)]
    consts = np.array([p0, p1, 0], dt)
    fn = kern.window(mode, residual is not None, act)

    def unit(u):
        n, m0, m1 = u
        r3 = empty(dt, 3) if residual is None else residual[n]
        fn(xq[n * C * S:], S, y[n], w2, b1, r3, dv, offs, Wq, int(mult), consts, m0, m1)

    parallel.each(units, unit)  # (one unit: run inline, no hand-off)
    return True


#: (kernel width, column stride) pairs with their own compiled pool variant (column dilation 1);
#: other geometries run the generic one
POOL_SPECIALISED = {(2, 2), (3, 2), (3, 1)}
#: below this many element reads (both passes) a pool stays on one thread (about 0.15 ms of work)
MIN_PARALLEL_POOL = 1 << 19


def pool2d(x, y, *, k, strides, dilations, pb, mode, divisor=None, padval=0.0):
    """MaxPool (``mode`` MODE_MAX, ``padval`` the dtype's lowest value) or AveragePool (MODE_SUM,
    ``divisor`` (OH, OW) the window element counts) of x (N, C, H, W) into y (N, C, OH, OW), both
    C-contiguous of one float dtype, channel blocks spread over the threads. Max and sum are
    separable: each output row first reduces its window's input rows into one row (contiguous,
    vectorised), then every output reduces kw neighbours of that row at stride sw. Padding costs
    nothing: rows outside the input are skipped and the row buffer's margins hold ``padval``.
    Returns False (nothing done) when the compiled kernels are unavailable or a left pad is
    negative.

    Traced example: MaxPool 3x3 s2 on a 5x5 plane, no pads -> 2x2. Output row 1 reduces input rows
    2, 3, 4 into r; output (1, 1) = max(r[2], r[3], r[4])."""
    kern = kernels()
    if kern is None or pb[1] < 0:
        return False
    N, C, H, W = x.shape
    OH, OW = y.shape[2:]
    (kh, kw), (sh, sw), (dh, dw) = k, strides, dilations
    spec = (kw, sw) in POOL_SPECIALISED and dw == 1
    fn = kern.pool(mode, kw if spec else 0, sw if spec else 0)
    x3, y3 = x.reshape(N * C, H, W), y.reshape(N * C, OH, OW)
    div = empty(y.dtype, 2) if divisor is None else divisor
    ident = y.dtype.type(padval)
    work = N * C * OH * (kh * W + kw * OW)
    T = parallel.threads() if work >= MIN_PARALLEL_POOL else 1

    def unit(u):
        fn(x3, y3, kh, kw, sh, sw, dh, dw, pb[0], pb[1], ident, div, u[0], u[1])

    parallel.each(parallel.split(N * C, T), unit)
    return True
