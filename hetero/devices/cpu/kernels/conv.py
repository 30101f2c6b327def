"""CPU kernels: Conv (N-d, groups, dilations, auto_pad), ConvTranspose, ConvInteger, QLinearConv,
DeformConv, Col2Im and the ``hetero`` domain's FusedConv.

How a float Conv runs (NCHW, float32 throughout):

* 2-D float32 convs (depthwise, grouped and 1x1 included) other than wide 3x3 layers on large
  maps (``_use_direct``): the direct kernel of ``direct.py`` (LLVM IR, register-blocked, epilogue
  fused); the paths below run where it is unavailable (no llvmlite, ``HETERO_DIRECT=0``) or does
  not apply.
* 1x1 kernels without padding: a plain GEMM ``W (M, C) @ X (C, H*W)`` on the (strided-sliced) input;
  grouped ones as one batched matmul over groups.
* depthwise (``group == C``, one input channel per group): 2-D ones through the compiled tap loop
  of ``jit.py`` (numba), epilogue fused; otherwise (or with HETERO_JIT=0) the taps gathered into
  columns and reduced by one batched matmul.
* everything else: im2col + GEMM.  The padded input lives in a per-thread workspace; an
  ``as_strided`` view exposes every (channel, tap, output position) triple without copying, and it
  is copied chunk by chunk (a band of output rows at a time, sized to stay in cache) into a
  per-thread column buffer, then one BLAS matmul per chunk writes straight into the output
  (``out=`` a view of the NCHW result), grouped convs as a batched matmul over groups.
"""
from __future__ import annotations

import functools
import math
import threading

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..registry import kernel
from . import direct, jit, parallel
from .nn import apply_activation, per_weight

# --------------------------------------------------------------------------------------------
# per-thread workspaces (intermediate buffers only; never returned to callers)
# --------------------------------------------------------------------------------------------

_tls = threading.local()
_WS_CACHE_LIMIT = 64 << 20  # bytes; larger scratch buffers are allocated per call
_COLS_CHUNK_BYTES = 1 << 20  # target size of one im2col chunk (fits L2 next to the GEMM's panels)
_MIN_CHUNK_COLS = 384  # ... but never fewer GEMM columns than this per chunk


def workspace(slot: str, n: int, dtype) -> np.ndarray:
    """A flat scratch array of ``n`` elements, reused across calls on the same thread."""
    dtype = np.dtype(dtype)
    nbytes = n * dtype.itemsize
    if nbytes > _WS_CACHE_LIMIT:
        return np.empty(n, dtype)
    cache = getattr(_tls, "ws", None)
    if cache is None:
        cache = _tls.ws = {}
    key = (slot, dtype.str)
    buf = cache.get(key)
    if buf is None or buf.size < n:
        buf = np.empty(max(n, 1), dtype)
        cache[key] = buf
    return buf[:n]


# --------------------------------------------------------------------------------------------
# geometry helpers
# --------------------------------------------------------------------------------------------


def _ints(v, n, default, what):
    if v is None or (hasattr(v, "__len__") and len(v) == 0):
        return [default] * n
    v = [int(a) for a in v]
    if len(v) != n:
        raise ValueError(f"{what} has {len(v)} entries, expected {n}")
    return v


def conv_geometry(in_sp, k, strides, dilations, pads, auto_pad):
    """(pads_begin, pads_end, out_spatial) for a Conv-style sliding window."""
    n = len(in_sp)
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else (auto_pad or "NOTSET")
    ext = [(k[i] - 1) * dilations[i] + 1 for i in range(n)]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = [-(-in_sp[i] // strides[i]) for i in range(n)]
        pb, pe = [], []
        for i in range(n):
            total = max(0, (out[i] - 1) * strides[i] + ext[i] - in_sp[i])
            small, big = total // 2, total - total // 2
            if auto_pad == "SAME_UPPER":
                pb.append(small)
                pe.append(big)
            else:
                pb.append(big)
                pe.append(small)
    elif auto_pad == "VALID":
        pb, pe = [0] * n, [0] * n
        out = [max(0, (in_sp[i] - ext[i]) // strides[i] + 1) for i in range(n)]
    elif auto_pad == "NOTSET":
        p = _ints(pads, 2 * n, 0, "pads")
        pb, pe = p[:n], p[n:]
        out = [max(0, (in_sp[i] + pb[i] + pe[i] - ext[i]) // strides[i] + 1) for i in range(n)]
    else:
        raise ValueError(f"unknown auto_pad {auto_pad!r}")
    return pb, pe, out


def pad_input(x, pb, pe, value=0, slot="pad", slack=0):
    """x (N, C, *sp) padded by pb/pe on the spatial axes, in a per-thread workspace.

    Negative pads crop. Returns x itself when there is nothing to pad (and no ``slack`` is asked
    for: ``slack`` extra readable elements after the padded array's end)."""
    nsp = x.ndim - 2
    if any(p < 0 for p in pb) or any(p < 0 for p in pe):
        sl = (slice(None), slice(None)) + tuple(
            slice(max(0, -pb[i]), x.shape[2 + i] - max(0, -pe[i])) for i in range(nsp))
        x = x[sl]
        pb = [max(0, p) for p in pb]
        pe = [max(0, p) for p in pe]
    if not any(pb) and not any(pe) and not slack:
        return x
    shape = x.shape[:2] + tuple(x.shape[2 + i] + pb[i] + pe[i] for i in range(nsp))
    n = math.prod(shape)
    flat = workspace(slot, n + slack, x.dtype)
    if slack:
        flat[n:] = value
    buf = flat[:n].reshape(shape)
    full = slice(None)
    for i in range(nsp):
        lead = (full,) * (2 + i)
        if pb[i]:
            buf[lead + (slice(0, pb[i]),)] = value
        if pe[i]:
            buf[lead + (slice(shape[2 + i] - pe[i], shape[2 + i]),)] = value
    inner = (full, full) + tuple(slice(pb[i], pb[i] + x.shape[2 + i]) for i in range(nsp))
    buf[inner] = x
    return buf


_F32 = np.dtype(np.float32)


def _compute_dtype(dt):
    dt = np.dtype(dt)
    if dt in (np.float32, np.float64):
        return dt
    return np.dtype(np.float32)  # half types, bfloat16: compute in float32


# --------------------------------------------------------------------------------------------
# the float convolution core
# --------------------------------------------------------------------------------------------


class _Epilogue:
    """What a conv does to each finished block of its output, while the block is still in cache:
    add the bias, add the residual (FusedConv), apply the activation. A block is
    ``y2[n, m0:m1, p0:p1]`` of the output viewed as (N, M, P) (P: the flattened output plane).

    Applying it block by block inside the worker that computed the block (instead of as whole-array
    passes at the end) saves two or three trips through memory per conv and spreads the work over
    the threads."""

    __slots__ = ("y2", "b", "bias", "res2", "act", "params", "compiled")

    def __init__(self, y, b, residual, activation, params):
        N, M = y.shape[:2]
        self.y2 = y.reshape(N, M, -1)
        self.b = b  # as given: the per-weight caches key on its identity
        self.bias = None if b is None else np.asarray(b, dtype=y.dtype).reshape(M, 1)
        self.res2 = None if residual is None else residual.reshape(N, M, -1)
        self.act = activation or ""
        self.params = params
        self.compiled = False  # built on the first block (the direct conv never asks for it)

    def _compiled(self):
        """The compiled one-pass epilogue (``jit.epilogue``) bound to this conv's arrays, or None
        where it does not apply: numba unavailable, nothing to do, an activation it does not know,
        a dtype or a residual layout it does not take. Measured on a (64, 3025) block with bias and
        Relu: 0.023 ms against numpy's 0.104 ms for its two passes."""
        y2, act = self.y2, jit.ACT_CODES.get(self.act)
        if (act is None or (self.bias is None and self.res2 is None and not act)
                or y2.dtype not in (np.float32, np.float64) or not y2.flags.c_contiguous
                or (self.res2 is not None and (self.res2.dtype != y2.dtype or not self.res2.flags.c_contiguous))):
            return None
        kern = jit.kernels()
        if kern is None:
            return None
        fn = kern.epilogue(self.bias is not None, self.res2 is not None, act)
        b1 = jit.empty(y2.dtype, 1) if self.bias is None else np.ascontiguousarray(self.bias.reshape(-1))
        r3 = jit.empty(y2.dtype, 3) if self.res2 is None else self.res2
        consts = np.array(jit.act_params(self.act, self.params) + (0,), y2.dtype)
        return lambda n, m0, m1, p0, p1: fn(y2, b1, r3, consts, n, m0, m1, p0, p1)

    def fused(self, y):
        """(act, p0, p1, residual) for a compiled kernel that applies the epilogue as it stores
        (depthwise ``jit.window2d``, ``direct.conv2d``): the activation's code (None: one the
        kernels do not know, ``finish`` applies it) and parameters, the residual in y's shape and
        dtype, C-contiguous (None: none)."""
        act = jit.ACT_CODES.get(self.act)
        p0, p1 = jit.act_params(self.act, self.params)
        res = None if self.res2 is None else np.ascontiguousarray(self.res2, dtype=y.dtype).reshape(y.shape)
        return act, p0, p1, res

    def finish(self, y, act):
        """After a kernel that ran with ``fused``'s arguments: the activation it could not apply."""
        if act is None:
            apply_activation(y, self.act, self.params)

    def __call__(self, n, m0, m1, p0, p1):
        if self.compiled is False:
            self.compiled = self._compiled()
        if self.compiled is not None:
            self.compiled(n, m0, m1, p0, p1)
            return
        o = self.y2[n, m0:m1, p0:p1]
        if self.bias is not None:
            o += self.bias[m0:m1]
        if self.res2 is not None:
            np.add(o, self.res2[n, m0:m1, p0:p1], out=o, casting="unsafe")
        if self.act:
            apply_activation(o, self.act, self.params)


#: below this many multiply-adds a conv runs on the calling thread only: a hand-off costs ~30 us,
#: and two threads running short numpy calls wait on each other for the GIL (measured: 1x1 convs
#: of 1.6-3.1 M multiply-adds took 0.15-0.33 ms split over 2 threads against 0.08-0.24 ms on one)
MIN_PARALLEL_MACS = 4_000_000


def _threads_for(work):
    """Threads a conv of ``work`` multiply-adds is cut for: 1 below MIN_PARALLEL_MACS (cutting a
    small conv into blocks run one after another only adds calls)."""
    return parallel.threads() if work >= MIN_PARALLEL_MACS else 1


def _spread(units, fn, work):
    """Run ``fn(unit)`` for every unit: each unit is one task of ``parallel.run``, claimed by
    whichever thread is free next (so a late or slow thread only takes fewer units), or all on the
    caller when ``work``, in multiply-adds, does not pay for the hand-off."""
    if work < MIN_PARALLEL_MACS:
        for u in units:
            fn(u)
        return
    parallel.each(units, fn)


def conv_core(x, w, b, group, strides, dilations, pb, pe, out_sp, dtype, *, y=None, residual=None,
              activation="", activation_params=()):
    """Convolution of float arrays (already in ``dtype``) -> (N, M, *out_sp) array in ``dtype``,
    written into ``y`` when given (it must have that shape and dtype). ``residual`` (same shape as
    the output) is added after the bias, then ``activation`` is applied (FusedConv's epilogue)."""
    N, C = x.shape[:2]
    nsp = x.ndim - 2
    M = w.shape[0]
    k = tuple(w.shape[2:])
    g = int(group)
    if g <= 0 or C % g or M % g:
        raise ValueError(f"group={g} must divide input channels {C} and output channels {M}")
    Cg = C // g
    if w.shape[1] != Cg:
        raise ValueError(f"weight shape {w.shape} does not match input channels {C} / group {g}")
    out_sp = tuple(map(int, out_sp))
    if min(pb) < 0 or min(pe) < 0:  # negative pads crop the input
        x = x[(slice(None), slice(None)) + tuple(slice(max(0, -pb[i]), x.shape[2 + i] - max(0, -pe[i]))
                                                 for i in range(nsp))]
        pb = [max(0, p) for p in pb]
        pe = [max(0, p) for p in pe]
    if y is None:
        y = np.empty((N, M) + out_sp, dtype)
    P = math.prod(out_sp)
    K = math.prod(k)
    if y.size == 0:
        return y
    if (Cg * K and _use_direct(w.shape, g, tuple(strides), tuple(dilations), out_sp)
            and _conv_direct(x, w, y, g, strides, dilations, pb, b, residual, activation, activation_params)):
        return y
    epi = _Epilogue(y, b, residual, activation, activation_params)
    if Cg * K == 0:
        y[...] = 0
        for n in range(N):
            epi(n, 0, M, 0, P)
    elif K == 1 and not any(pb) and not any(pe):
        _conv_1x1(x, w, y, g, strides, out_sp, P, epi)
    elif Cg == 1 and g > 1:
        if not (nsp == 2 and _conv_depthwise_jit(x, w, y, strides, dilations, pb, k, epi)):
            _conv_depthwise(x, w, y, g, strides, dilations, pb, pe, out_sp, k, epi)
    elif _use_shifted(x, w, g, strides, out_sp, k):
        _conv_shifted(x, w, y, dilations, pb, pe, out_sp, k, epi)
    elif _use_winograd(x, w, g, strides, dilations, out_sp, k):
        _conv_winograd(x, w, y, pb, pe, out_sp, epi)
    else:
        _conv_im2col(x, w, y, g, strides, dilations, pb, pe, out_sp, k, epi)
    return y


def _conv_1x1(x, w, y, g, strides, out_sp, P, epi):
    """1x1 conv: W (M, C) @ X (C, P) per image (per group: a batched matmul), in blocks of output
    columns (or of output channels when the plane is small), each block's epilogue right after it."""
    N, C = x.shape[:2]
    M = w.shape[0]
    sl = (slice(None), slice(None)) + tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(out_sp, strides))
    xs = x[sl]
    if not xs.flags.c_contiguous:
        xs = np.ascontiguousarray(xs)
    work = M * (C // g) * P * N
    T = _threads_for(work)
    if g == 1:
        wm, xv, yv = w.reshape(M, C), xs.reshape(N, C, P), y.reshape(N, M, P)
        # one block per thread per image (measured: cutting finer, so each block's epilogue finds
        # it in cache, costs more in smaller GEMMs than it saves)
        if P >= M:  # blocks of columns (multiples of 16 for aligned GEMM panels)
            step = -(-P // T)
            step = -(-step // 16) * 16
            units = [(n, 0, M, p0, min(P, p0 + step)) for n in range(N) for p0 in range(0, P, step)]
        else:  # blocks of output channels
            units = [(n, m0, m1, 0, P) for n in range(N) for m0, m1 in parallel.split(M, T)]

        def unit(u):
            n, m0, m1, p0, p1 = u
            np.matmul(wm[m0:m1], xv[n, :, p0:p1], out=yv[n, m0:m1, p0:p1])
            epi(n, m0, m1, p0, p1)
    else:
        Mg, Cg = M // g, C // g
        w3 = w.reshape(g, Mg, Cg)
        x4 = xs.reshape(N, g, Cg, P)
        y4 = y.reshape(N, g, Mg, P)
        units = [(n, g0, g1) for n in range(N) for g0, g1 in parallel.split(g, T)]

        def unit(u):
            n, g0, g1 = u
            np.matmul(w3[g0:g1], x4[n, g0:g1], out=y4[n, g0:g1])
            epi(n, g0 * Mg, g1 * Mg, 0, P)
    _spread(units, unit, work)



@functools.lru_cache(maxsize=4096)
def _use_direct(ws, g, strides, dilations, out_sp):
    """Which convs the direct kernel takes (by shapes and geometry; cached: asked on every call).

    Every 2-D one: depthwise and grouped too (a unit of work runs many groups; ShuffleNet's
    shapes, one thread: depthwise 136 x 28x28 0.18 -> 0.11 ms, 544 x 7x7 0.30 -> 0.09 ms; grouped
    1x1 24 -> 112 on 56x56 in 4 groups 0.22 -> 0.10 ms), and 1x1 on many channels (in a model,
    where weights and input come from memory rather than cache, the chunked order streams each
    once; in-model, 2 threads: ResNet-50's 512 -> 2048 on 7x7 1.9 -> 1.4 ms and 256 -> 64 on 56x56
    1.8 -> 1.3 ms, DenseNet-121 12% faster in all, Inception-v2 13%).

    But wide 3x3 layers over large maps (``_WINO_OVER_DIRECT``: at least c channels in and out
    on at least s x s), where Winograd's 2.25x fewer multiply-adds win. In-model, 2 threads:
    VGG-19's 128 -> 256 on 56x56 11.0 (Winograd) vs 13.7 ms (direct), 128 -> 128 on 112x112 24.8
    vs 26.9, 256 -> 256 on 56x56 18 vs 26, 512 -> 512 on 28x28 19 vs 31; but ResNet-50's
    128 -> 128 on 28x28 2.5 vs 1.9 and 512 -> 512 on 14x14 11 vs 7.8."""
    if len(ws) != 4:
        return False
    if not _winograd_shape(ws, g, strides, dilations, out_sp):
        return True
    c, s = min(ws[:2]), min(out_sp)
    return not any(c >= cmin and s >= smin for cmin, smin in _WINO_OVER_DIRECT)


#: (channels, size): Winograd rather than direct for 3x3 layers with at least this many
#: channels in and out on maps at least this large (``_use_direct``)
_WINO_OVER_DIRECT = ((256, 28), (128, 56))


def _conv_direct(x, w, y, g, strides, dilations, pb, b, residual, activation, params):
    """2-D float32 conv through the compiled direct kernel (``direct.conv2d``), bias, residual
    and activation fused into its stores (an activation it does not know runs after, in place).
    False when the kernel is unavailable or the arrays are not float32 / C-contiguous (another
    path runs instead). No ``_Epilogue``: this is every conv's first try, and its path is kept
    short (a conv's Python costs add up over a model's 50-120 convs)."""
    if not (x.dtype == w.dtype == y.dtype == np.float32 and y.flags.c_contiguous):
        return False
    act, a0, a1 = _fused_act(activation, tuple(params or ()))
    if residual is not None:
        residual = np.ascontiguousarray(residual, dtype=np.float32).reshape(y.shape)
    # the bias as given (a new view per call would miss the per-(weight, bias) packing cache)
    done = direct.conv2d(np.ascontiguousarray(x), np.ascontiguousarray(w), y, g, strides, dilations, pb,
                         b, residual, act or 0, a0, a1)
    if done and act is None:
        apply_activation(y, activation, params)
    return done


@functools.lru_cache(maxsize=256)
def _fused_act(activation, params):
    """(code, p0, p1) of an activation for the compiled kernels (``jit.ACT_CODES``; None: one they
    do not know, applied after)."""
    return (jit.ACT_CODES.get(activation or ""),) + jit.act_params(activation, params)


def _tap_slices(k, dilations, strides, out_sp):
    """For each kernel tap (in C order): the spatial slices of the padded input it reads."""
    res = []
    for idx in np.ndindex(*k):
        res.append(tuple(slice(i * d, i * d + (o - 1) * s + 1, s)
                         for i, d, s, o in zip(idx, dilations, strides, out_sp)))
    return res


def _conv_depthwise_jit(x, w, y, strides, dilations, pb, k, epi):
    """2-D depthwise conv through the compiled tap loop (``jit.window2d``), bias, residual and
    Relu / Clip / LeakyRelu fused into its store (another activation runs after, in place).
    False when the compiled kernels are unavailable (the numpy path runs instead)."""
    N, M = y.shape[:2]
    act, p0, p1, res = epi.fused(y)
    done = jit.window2d(np.ascontiguousarray(x), y, k=k, strides=strides, dilations=dilations, pb=pb,
                        mode=jit.MODE_CONV, weights=np.ascontiguousarray(w.reshape(M, -1)),
                        bias=None if epi.bias is None else np.ascontiguousarray(epi.bias.reshape(M)),
                        residual=res, act=act or 0, p0=p0, p1=p1, mult=M // x.shape[1])
    if done:
        epi.finish(y, act)
    return done


def _conv_depthwise(x, w, y, g, strides, dilations, pb, pe, out_sp, k, epi):
    """Depthwise conv (one input channel per group, ``mult`` outputs per channel).

    numpy's broadcasting multiply (a per-channel weight times a plane) runs far below its
    contiguous speed, so instead of per-tap multiply-adds the taps are gathered once into
    (C, K, P) columns and reduced by one batched matmul (C, mult, K) @ (C, K, P).
    With unit strides the gather is "wide": on the flattened padded plane every tap is one
    contiguous run (rows of the full padded pitch, a few garbage columns cropped at the end), so
    the copy moves long rows instead of one short row per output line. Channels are cut into
    blocks spread over the threads, each with its own column buffer."""
    N, C = x.shape[:2]
    M = w.shape[0]
    mult = M // C
    nsp = x.ndim - 2
    K = math.prod(k)
    P = math.prod(out_sp)
    wk = w.reshape(C, mult, K)
    work = M * K * P * N * 8  # memory-bound: count it as more than its multiply-adds
    T = _threads_for(work)
    units = [(n, c0, c1) for n in range(N) for c0, c1 in parallel.split(C, T)]
    if all(s == 1 for s in strides) and nsp >= 2:
        padded = [x.shape[2 + i] + pb[i] + pe[i] for i in range(nsp)]
        pitch = [math.prod(padded[i + 1:]) for i in range(nsp)]
        Lw = out_sp[0] * pitch[0]
        plane = math.prod(padded)
        max_off = sum((k[i] - 1) * dilations[i] * pitch[i] for i in range(nsp))
        slack = max(0, max_off + Lw - plane)
        xp = pad_input(x, pb, pe, slack=slack)
        if not xp.flags.c_contiguous:  # (no padding and no slack needed: x itself, maybe a view)
            xp = np.ascontiguousarray(xp)
        it = xp.itemsize
        view = as_strided(xp, (N, C) + tuple(k) + (Lw,),
                          xp.strides[:2] + tuple(dilations[i] * pitch[i] * it for i in range(nsp)) + (it,),
                          writeable=False)
        crop = (slice(None), slice(None)) + tuple(slice(0, o) for o in out_sp[1:])

        def unit(u):
            n, c0, c1 = u
            nc = c1 - c0
            cols = workspace("cols", nc * K * Lw, y.dtype).reshape((nc,) + tuple(k) + (Lw,))
            yw = workspace("dw_out", nc * mult * Lw, y.dtype).reshape(nc, mult, Lw)
            np.copyto(cols, view[n, c0:c1])
            np.matmul(wk[c0:c1], cols.reshape(nc, K, Lw), out=yw)
            np.copyto(y[n, c0 * mult:c1 * mult], yw.reshape((nc * mult, out_sp[0]) + tuple(padded[1:]))[crop])
            epi(n, c0 * mult, c1 * mult, 0, P)
    else:
        xp = pad_input(x, pb, pe)
        s_n, s_c = xp.strides[:2]
        s_sp = xp.strides[2:]
        view = as_strided(
            xp, (N, C) + tuple(k) + tuple(out_sp),
            (s_n, s_c) + tuple(d * s for d, s in zip(dilations, s_sp)) + tuple(st * s for st, s in zip(strides, s_sp)),
            writeable=False)
        yv = y.reshape(N, C, mult, P)

        def unit(u):
            n, c0, c1 = u
            nc = c1 - c0
            cols = workspace("cols", nc * K * P, y.dtype).reshape((nc,) + tuple(k) + tuple(out_sp))
            np.copyto(cols, view[n, c0:c1])
            np.matmul(wk[c0:c1], cols.reshape(nc, K, P), out=yv[n, c0:c1])
            epi(n, c0 * mult, c1 * mult, 0, P)
    _spread(units, unit, work)


def _use_shifted(x, w, g, strides, out_sp, k):
    """Stride-1 2-D convs with fewer output than input channels (DenseNet's 128 -> 32 3x3) are
    cheaper as "GEMM first, shift after" than im2col: see ``_conv_shifted``."""
    return (g == 1 and len(k) == 2 and tuple(strides) == (1, 1) and math.prod(k) > 1
            and w.shape[0] * _SHIFT_RATIO <= x.shape[1])


#: ``_conv_shifted`` when output channels * this <= input channels
_SHIFT_RATIO = 2


def _conv_shifted(x, w, y, dilations, pb, pe, out_sp, k, epi):
    """Conv as one GEMM over the padded input, then a shifted sum (no im2col copy).

    Every tap t = (i, j) of the kernel is a GEMM ``W[:, :, i, j] (M, C) @ Xp (C, Hp*Wp)`` over the
    padded input's flattened planes; stacking the taps gives ONE GEMM ``Wt (K*M, C) @ Xp`` whose
    output Z holds every tap's contribution at every padded position. Output pixel (h, w') is the sum
    over taps of Z[t, :, (h + i*dh) * Wp + w' + j*dw]: on the "wide" output (rows of the padded pitch
    Wp, cropped at the end) tap t is the window of Z[t] starting at offset i*dh*Wp + j*dw, and the
    windows of all taps are ONE ``as_strided`` view (kh, kw, M, OH*Wp) of Z, summed over its first two
    axes. Data moved: the K*M*Hp*Wp GEMM output instead of im2col's K*C*OH*OW columns, so this wins
    when M is well below C. Output channels are cut into blocks spread over the threads.

    Traced example, 3x3 pads 1 on 4x4 (Hp = Wp = 6, wide output 4 rows x 6): output (0, 0) sums
    Z[(0,0)][0] + Z[(0,1)][1] + Z[(0,2)][2] + Z[(1,0)][6] + ... + Z[(2,2)][14]."""
    N, C = x.shape[:2]
    M = w.shape[0]
    kh, kw = k
    dh, dw = dilations
    OH, OW = out_sp
    Hp, Wp = x.shape[2] + pb[0] + pe[0], x.shape[3] + pb[1] + pe[1]
    L = OH * Wp
    max_off = (kh - 1) * dh * Wp + (kw - 1) * dw
    plane = Hp * Wp
    cols = max(plane, max_off + L)  # Z columns every window can read
    # the windows read up to cols - plane elements past the last plane: pad_input's slack
    xp = pad_input(x, pb, pe, slack=cols - plane)
    if not xp.flags.c_contiguous:  # (no padding and no slack needed: x itself, maybe a view)
        xp = np.ascontiguousarray(xp)
    K = kh * kw
    wt = _tap_major_weights(w)  # (M * K, C): row m * K + t is tap t of output channel m
    dt = y.dtype
    it = dt.itemsize
    T = _threads_for(M * C * kh * kw * OH * OW * N)
    units = [(n, m0, m1) for n in range(N) for m0, m1 in parallel.split(M, T)]

    def unit(u):
        n, m0, m1 = u
        mb = m1 - m0
        xn = as_strided(xp[n], (C, cols), (plane * it, it), writeable=False)
        Z = workspace("shift_z", K * mb * cols, dt).reshape(mb * K, cols)
        np.matmul(wt[m0 * K:m1 * K], xn, out=Z)
        win = as_strided(Z, (kh, kw, mb, L), (kw * cols * it + dh * Wp * it, cols * it + dw * it,
                                              K * cols * it, it), writeable=False)
        yw = workspace("shift_y", mb * L, dt).reshape(mb, L)
        np.sum(win, axis=(0, 1), out=yw)
        np.copyto(y[n, m0:m1], yw.reshape(mb, OH, Wp)[:, :, :OW])
        epi(n, m0, m1, 0, OH * OW)
    _spread(units, unit, M * C * kh * kw * OH * OW * N)


def _tap_major_weights(w):
    """w (M, C, kh, kw) -> (M*kh*kw, C) contiguous (row m*K + t: tap t of output m), cached per
    weight array (``nn.per_weight``)."""
    return per_weight("tap_major", w, lambda: np.ascontiguousarray(
        w.reshape(w.shape[0], w.shape[1], -1).transpose(0, 2, 1)).reshape(-1, w.shape[1]))


def _conv_im2col(x, w, y, g, strides, dilations, pb, pe, out_sp, k, epi):
    """im2col + GEMM. The padded input is exposed as an ``as_strided`` (C, taps, out rows, out cols)
    view; a band of output rows at a time is copied into a per-thread column buffer and multiplied
    straight into the output, the bands spread over the threads. When the whole column matrix is
    small (late layers: 7x7 planes) it is built once and the GEMM is cut by output channels."""
    N, C = x.shape[:2]
    M = w.shape[0]
    nsp = x.ndim - 2
    Cg, Mg = C // g, M // g
    K = math.prod(k)
    CK = Cg * K
    dt = y.dtype
    P = math.prod(out_sp)
    T = _threads_for(M * CK * P * N)
    xp = pad_input(x, pb, pe)
    s_n, s_c = xp.strides[:2]
    s_sp = xp.strides[2:]
    view = as_strided(
        xp, (N, C) + k + tuple(out_sp),
        (s_n, s_c) + tuple(d * s for d, s in zip(dilations, s_sp)) + tuple(st * s for st, s in zip(strides, s_sp)),
        writeable=False)
    wm = w.reshape(g, Mg, CK)
    if not wm.flags.c_contiguous:
        wm = np.ascontiguousarray(wm)
    O0 = out_sp[0]
    rest = math.prod(out_sp[1:])
    row_bytes = C * K * rest * dt.itemsize
    work = M * CK * P * N
    yv = y.reshape(N, g, Mg, O0, rest)
    lead = (slice(None),) * (1 + nsp)
    if g == 1 and T > 1 and (O0 < 2 * T or row_bytes * O0 <= _COLS_CHUNK_BYTES) and M >= 8 * T:
        # small plane: one column matrix, GEMM blocks by output channels
        cb = workspace("cols", C * K * P, dt).reshape((C,) + k + tuple(out_sp))
        y3 = y.reshape(N, M, P)
        for n in range(N):
            np.copyto(cb, view[n])
            cm = cb.reshape(CK, P)

            def unit(u, n=n, cm=cm):
                m0, m1 = u
                np.matmul(wm[0, m0:m1], cm, out=y3[n, m0:m1])
                epi(n, m0, m1, 0, P)
            _spread(parallel.split(M, T), unit, work // N)
        return
    rows = max(1, _COLS_CHUNK_BYTES // max(1, row_bytes), -(-_MIN_CHUNK_COLS // max(1, rest)))
    rows = min(O0, rows, max(1, -(-O0 // T)) if work >= MIN_PARALLEL_MACS else O0)
    nchunks = -(-O0 // rows)  # keep the chunks roughly even so the last one is not tiny
    rows = -(-O0 // nchunks)
    units = [(n, r0, min(O0, r0 + rows)) for n in range(N) for r0 in range(0, O0, rows)]

    def unit(u):
        n, r0, r1 = u
        nr = r1 - r0
        cbuf = workspace("cols", C * K * nr * rest, dt)
        cb = cbuf.reshape((C,) + k + (nr,) + tuple(out_sp[1:]))
        np.copyto(cb, view[n][lead + (slice(r0, r1),)])
        cm = cb.reshape(g, CK, nr * rest)
        o = yv[n, :, :, r0:r1, :].reshape(g, Mg, nr * rest, copy=False)
        np.matmul(wm, cm, out=o)
        epi(n, 0, M, r0 * rest, r1 * rest)
    _spread(units, unit, work)


# --------------------------------------------------------------------------------------------
# Winograd F(4x4, 3x3) for 3x3 / stride 1 / dilation 1 convolutions
# --------------------------------------------------------------------------------------------
#
# Y = A^T [ (G w G^T) . (B^T d B) ] A on 6x6 input tiles d giving 4x4 output tiles: 36 GEMMs of
# (M, C) @ (C, tiles) replace the (M, 9C) @ (9C, H*W) im2col GEMM, 2.25x fewer multiply-adds.
# All transforms are small BLAS matmuls over whole tile sets (no per-tile Python work); the
# transformed weights are cached per weight array (weights are constants across inferences).

_WINO_BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                     [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float64)
_WINO_G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                    [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float64)
_WINO_AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                     [0, 1, -1, 8, -8, 1]], np.float64)
_WINO_MIN_CHANNELS = 32
_WINO_MIN_SIZE = 14


def _use_winograd(x, w, g, strides, dilations, out_sp, k):
    return (x.dtype == np.float32 and w.dtype == np.float32
            and _winograd_shape(w.shape, g, tuple(strides), tuple(dilations), tuple(out_sp)))


def _winograd_shape(ws, g, strides, dilations, out_sp):
    """Winograd F(4x4, 3x3)'s geometry: ungrouped 3x3, stride 1, no dilation, enough channels
    and a large enough output."""
    return (g == 1 and tuple(ws[2:]) == (3, 3) and tuple(strides) == (1, 1) and tuple(dilations) == (1, 1)
            and ws[0] >= _WINO_MIN_CHANNELS and ws[1] >= _WINO_MIN_CHANNELS and min(out_sp) >= _WINO_MIN_SIZE)


def _winograd_weights(w):
    """U[(r, s), M, C] = (G w G^T)[r, s], cached per weight array (``nn.per_weight``)."""
    def make():
        U = np.einsum("ri,mcij,sj->rsmc", _WINO_G, w.astype(np.float64), _WINO_G, optimize=True)
        return np.ascontiguousarray(U.reshape(36, w.shape[0], w.shape[1]), dtype=np.float32)
    return per_weight("winograd", w, make)


_BT32 = _WINO_BT.astype(np.float32)
_AT32 = _WINO_AT.astype(np.float32)
_ATT32 = np.ascontiguousarray(_AT32.T)


def _conv_winograd(x, w, y, pb, pe, out_sp, epi):
    """Winograd F(4x4, 3x3) in bands of tile rows; the bands are spread over the threads (each
    with its own transform buffers) when there are enough of them, otherwise the 36 GEMMs of the
    single band are."""
    N, C = x.shape[:2]
    M = w.shape[0]
    H, W = x.shape[2:]
    OH, OW = out_sp
    m, a = 4, 6
    U = _winograd_weights(w)
    TH, TW = -(-OH // m), -(-OW // m)
    # pad so every 6x6 tile of the (TH x TW) grid is inside the buffer
    eh = TH * m + 2 - (H + pb[0] + pe[0])
    ew = TW * m + 2 - (W + pb[1] + pe[1])
    xp = pad_input(x, pb, [pe[0] + max(0, eh), pe[1] + max(0, ew)])
    s_n, s_c, s_h, s_w = xp.strides
    dt = np.float32
    T = _threads_for(M * C * N * OH * OW * 4)
    per_row = a * a * max(C, M) * N * TW * 4  # bytes of one tile row in the largest buffer
    rows = max(1, min(TH, _COLS_CHUNK_BYTES * 2 // max(1, per_row)))
    if T > 1 and TH >= 2 * T:
        rows = min(rows, -(-TH // T))
    nch = -(-TH // rows)
    rows = -(-TH // nch)
    bands = [(r0, min(TH, r0 + rows)) for r0 in range(0, TH, rows)]
    inner_parallel = len(bands) < T  # one band: let its 36 GEMMs use the threads instead

    def band(u):
        r0, r1 = u
        nr = r1 - r0
        Tn = N * nr * TW
        tiles = as_strided(xp[:, :, r0 * m:], (a, a, C, N, nr, TW), (s_h, s_w, s_c, s_n, m * s_h, m * s_w),
                           writeable=False)
        D = workspace("wino_d", a * a * C * Tn, dt).reshape(a, a, C, N, nr, TW)
        np.copyto(D, tiles)
        D1 = workspace("wino_d1", a * a * C * Tn, dt).reshape(a, a * C * Tn)
        np.matmul(_BT32, D.reshape(a, a * C * Tn), out=D1)           # rows:    B^T d
        V = D.reshape(a, a, C * Tn)
        np.matmul(_BT32, D1.reshape(a, a, C * Tn), out=V)            # columns: (B^T d) B
        Y = workspace("wino_y", a * a * M * Tn, dt).reshape(a * a, M, Tn)
        Vb = V.reshape(a * a, C, Tn)                                 # 36 GEMMs (M, C) @ (C, Tn)
        if inner_parallel:
            parallel.batched(a * a, lambda lo, hi: np.matmul(U[lo:hi], Vb[lo:hi], out=Y[lo:hi]),
                             M * C * Tn * 4)
        else:
            np.matmul(U, Vb, out=Y)
        Z1 = workspace("wino_z1", m * a * M * Tn, dt).reshape(m, a * M * Tn)
        np.matmul(_AT32, Y.reshape(a, a * M * Tn), out=Z1)           # rows:    A^T Y
        Z2 = workspace("wino_z2", m * M * Tn * m, dt).reshape(m, M * Tn, m)
        np.matmul(Z1.reshape(m, a, M * Tn).transpose(0, 2, 1), _ATT32, out=Z2)  # columns, j innermost
        # Z2[i, M, n, th, tw, j] -> y[n, M, th*4 + i, tw*4 + j]
        Z = Z2.reshape(m, M, N, nr, TW * m)
        h0, h1 = r0 * m, min(OH, r1 * m)
        full = nr * m
        src = Z[..., :OW].transpose(2, 1, 3, 0, 4)                  # (N, M, th, i, cols)
        if h1 - h0 == full:
            np.copyto(y[:, :, h0:h1, :].reshape(N, M, nr, m, OW, copy=False), src)
        else:
            tmp = workspace("wino_tail", N * M * full * OW, dt).reshape(N, M, nr, m, OW)
            np.copyto(tmp, src)
            y[:, :, h0:h1, :] = tmp.reshape(N, M, full, OW)[:, :, :h1 - h0]
        for n in range(N):
            epi(n, 0, M, h0 * OW, h1 * OW)

    _spread(bands, band, M * C * N * OH * OW * 4 if not inner_parallel else 0)


def _prepare_conv(x, w, kernel_shape, strides, dilations, pads, auto_pad):
    if x.ndim < 3:
        raise ValueError(f"Conv input must have rank >= 3 (N, C, spatial...), got shape {x.shape}")
    if w.ndim != x.ndim:
        raise ValueError(f"Conv weight rank {w.ndim} does not match input rank {x.ndim}")
    nsp = x.ndim - 2
    k = tuple(w.shape[2:])
    if kernel_shape is not None and len(kernel_shape) and tuple(int(a) for a in kernel_shape) != k:
        raise ValueError(f"kernel_shape {list(kernel_shape)} does not match weight shape {w.shape}")
    st = _ints(strides, nsp, 1, "strides")
    dl = _ints(dilations, nsp, 1, "dilations")
    pb, pe, out = conv_geometry(x.shape[2:], k, st, dl, pads, auto_pad)
    return st, dl, pb, pe, out


_geom_cache: dict = {}


def _t(v):
    return None if v is None else tuple(v) if not isinstance(v, (str, bytes)) else v


def conv_float(x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
               pads=None, strides=None, residual=None, activation="", activation_params=(), out=None):
    """Float Conv (+ FusedConv's residual and activation); writes into ``out`` when it has the
    result's shape and dtype (the memory plan's buffer), else returns a new array."""
    # geometry per (shapes, attributes): the same node sees the same key on every inference
    key = (x.shape, w.shape, _t(kernel_shape), _t(strides), _t(dilations), _t(pads), auto_pad)
    geo = _geom_cache.get(key)
    if geo is None:
        geo = _prepare_conv(x, w, kernel_shape, strides, dilations, pads, auto_pad)
        if len(_geom_cache) > 4096:
            _geom_cache.clear()
        _geom_cache[key] = geo
    st, dl, pb, pe, osp = geo
    odt = x.dtype
    if odt == w.dtype == _F32:  # (the common case, without np.result_type's dispatch)
        cdt, xc, wc = odt, x, w
    else:
        odt = np.result_type(x.dtype, w.dtype)
        cdt = _compute_dtype(odt)
        xc = x.astype(cdt, copy=False)
        wc = w.astype(cdt, copy=False)
    shape = (x.shape[0], w.shape[0]) + tuple(osp)
    late = None  # a residual that only broadcasts to the output: added after the conv
    if residual is not None:
        r = np.asarray(residual)
        if r.shape != shape:
            if np.broadcast_shapes(shape, r.shape) != shape:
                raise ValueError(f"FusedConv residual of shape {r.shape} does not match output {shape}")
            late, r = r, None
        residual = r
    y = out if (out is not None and odt == cdt and out.shape == shape and out.dtype == cdt
                and out.flags.c_contiguous) else None
    if late is None:
        y = conv_core(xc, wc, b, group, st, dl, pb, pe, osp, cdt, y=y, residual=residual,
                      activation=activation, activation_params=activation_params)
        return y if y.dtype == odt else y.astype(odt)
    y = conv_core(xc, wc, b, group, st, dl, pb, pe, osp, cdt, y=y)
    if y.dtype != odt:
        y = y.astype(odt)
    np.add(y, late, out=y, casting="unsafe")
    if activation:
        apply_activation(y, activation, activation_params)
    return y


@kernel("Conv", since=1)
def conv(X, W, B=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None,
         strides=None, _out=None):
    return conv_float(X, W, B, auto_pad=auto_pad, dilations=dilations, group=group,
                      kernel_shape=kernel_shape, pads=pads, strides=strides, out=_out)


@kernel("FusedConv", domain="hetero")
def fused_conv(X, W, B=None, residual=None, *, auto_pad="NOTSET", dilations=None, group=1,
               kernel_shape=None, pads=None, strides=None, activation="", activation_params=(), _out=None):
    return conv_float(X, W, B, auto_pad=auto_pad, dilations=dilations, group=group,
                      kernel_shape=kernel_shape, pads=pads, strides=strides, residual=residual,
                      activation=activation, activation_params=activation_params, out=_out)


# --------------------------------------------------------------------------------------------
# integer / quantised convolutions (exact integer sums via float64 BLAS)
# --------------------------------------------------------------------------------------------


def _centered(v, zp, per_channel_axis0=False):
    out = v.astype(np.float64)
    if zp is not None:
        z = np.asarray(zp).astype(np.float64)
        if per_channel_axis0 and z.ndim == 1 and z.size > 1:
            z = z.reshape((-1,) + (1,) * (v.ndim - 1))
        out -= z
    return out


def _conv_int_acc(x, w, x_zero_point, w_zero_point, B, auto_pad, dilations, group, kernel_shape, pads,
                  strides):
    xf = _centered(x, x_zero_point)
    wf = _centered(w, w_zero_point, per_channel_axis0=True)
    st, dl, pb, pe, out = _prepare_conv(xf, wf, kernel_shape, strides, dilations, pads, auto_pad)
    bias = None if B is None else np.asarray(B).astype(np.float64)
    return conv_core(xf, wf, bias, group, st, dl, pb, pe, out, np.dtype(np.float64))


@kernel("ConvInteger", since=10)
def conv_integer(x, w, x_zero_point=None, w_zero_point=None, *, auto_pad="NOTSET", dilations=None,
                 group=1, kernel_shape=None, pads=None, strides=None):
    acc = _conv_int_acc(x, w, x_zero_point, w_zero_point, None, auto_pad, dilations, group,
                        kernel_shape, pads, strides)
    return np.rint(acc).astype(np.int32)


@kernel("QLinearConv", since=10)
def qlinear_conv(x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, B=None, *,
                 auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None, strides=None):
    acc = _conv_int_acc(x, w, x_zero_point, w_zero_point, B, auto_pad, dilations, group,
                        kernel_shape, pads, strides)
    ws = np.asarray(w_scale)
    if ws.ndim == 1 and ws.size > 1:
        if ws.size != w.shape[0]:
            raise ValueError(f"w_scale has {ws.size} elements, expected {w.shape[0]} (output channels)")
        ws = ws.reshape((1, -1) + (1,) * (x.ndim - 2))
    scale = (np.asarray(x_scale) * ws / np.asarray(y_scale)).astype(np.float64)
    acc *= scale
    out_dtype = np.asarray(y_zero_point).dtype if y_zero_point is not None else x.dtype
    info = np.iinfo(out_dtype)
    np.rint(acc, out=acc)
    if y_zero_point is not None:
        acc += np.asarray(y_zero_point).astype(np.float64)
    np.clip(acc, info.min, info.max, out=acc)
    return acc.astype(out_dtype)


# --------------------------------------------------------------------------------------------
# ConvTranspose and Col2Im (GEMM + scatter-add over kernel taps)
# --------------------------------------------------------------------------------------------


def _col2im_add(buf, cols, k, dilations, strides, in_sp):
    """buf (N, C, *full) += scatter of cols (N, C, K, *in_sp) over the kernel taps."""
    lead = (slice(None), slice(None))
    for t, sl in enumerate(_tap_slices(k, dilations, strides, in_sp)):
        buf[lead + sl] += cols[:, :, t]


@kernel("ConvTranspose", since=1)
def conv_transpose(X, W, B=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
                   output_padding=None, output_shape=None, pads=None, strides=None):
    if X.ndim < 3 or W.ndim != X.ndim:
        raise ValueError(f"ConvTranspose: bad shapes X {X.shape}, W {W.shape}")
    nsp = X.ndim - 2
    N, C = X.shape[:2]
    in_sp = X.shape[2:]
    g = int(group)
    if g <= 0 or C % g or W.shape[0] != C:
        raise ValueError(f"ConvTranspose: weight {W.shape} / group {g} do not match input channels {C}")
    k = tuple(W.shape[2:])
    if kernel_shape is not None and len(kernel_shape) and tuple(int(a) for a in kernel_shape) != k:
        raise ValueError(f"kernel_shape {list(kernel_shape)} does not match weight shape {W.shape}")
    Mg = W.shape[1]
    M = Mg * g
    Cg = C // g
    st = _ints(strides, nsp, 1, "strides")
    dl = _ints(dilations, nsp, 1, "dilations")
    op = _ints(output_padding, nsp, 0, "output_padding")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else (auto_pad or "NOTSET")
    ext = [(k[i] - 1) * dl[i] + 1 for i in range(nsp)]
    natural = [st[i] * (in_sp[i] - 1) + op[i] + ext[i] for i in range(nsp)]
    if output_shape is not None and len(output_shape):
        out = [int(a) for a in output_shape][-nsp:]
        if pads is not None and len(pads) and auto_pad == "NOTSET":
            pb = _ints(pads, 2 * nsp, 0, "pads")[:nsp]
        else:
            total = [natural[i] - out[i] for i in range(nsp)]
            pb = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total]
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = [in_sp[i] * st[i] for i in range(nsp)]
        total = [natural[i] - out[i] for i in range(nsp)]
        pb = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total]
    elif auto_pad in ("NOTSET", "VALID"):
        p = _ints(pads, 2 * nsp, 0, "pads") if auto_pad == "NOTSET" else [0] * (2 * nsp)
        pb = p[:nsp]
        out = [natural[i] - p[i] - p[nsp + i] for i in range(nsp)]
    else:
        raise ValueError(f"unknown auto_pad {auto_pad!r}")
    odt = np.result_type(X.dtype, W.dtype)
    cdt = _compute_dtype(odt)
    x = X.astype(cdt, copy=False)
    w = W.astype(cdt, copy=False)
    K = math.prod(k)
    Pin = math.prod(in_sp)
    full = [st[i] * (in_sp[i] - 1) + ext[i] for i in range(nsp)]
    y = np.zeros((N, M) + tuple(max(0, o) for o in out), cdt)
    if y.size and Pin and K and Cg:
        # cols[n, g, (mg, tap), p] = sum_c W[g*Cg + c, mg, tap] * x[n, g*Cg + c, p]
        wt = np.ascontiguousarray(w.reshape(g, Cg, Mg * K).transpose(0, 2, 1))
        xm = x.reshape(N, g, Cg, Pin)
        cols = np.matmul(wt, xm)  # (N, g, Mg*K, Pin)
        cols = cols.reshape((N, M, K) + tuple(in_sp))
        buf = np.zeros((N, M) + tuple(full), cdt)
        _col2im_add(buf, cols, k, dl, st, in_sp)
        # copy the window [pb, pb + out) of buf into y (zeros where it falls outside buf)
        src, dst = [], []
        for i in range(nsp):
            lo, hi = pb[i], pb[i] + out[i]
            a, bnd = max(lo, 0), min(hi, full[i])
            if bnd <= a:
                src = None
                break
            src.append(slice(a, bnd))
            dst.append(slice(a - lo, bnd - lo))
        if src is not None:
            y[(slice(None), slice(None)) + tuple(dst)] = buf[(slice(None), slice(None)) + tuple(src)]
    if B is not None and y.size:
        y += np.asarray(B, dtype=cdt).reshape((1, M) + (1,) * nsp)
    return y if y.dtype == odt else y.astype(odt)


@kernel("Col2Im", since=18)
def col2im(input, image_shape, block_shape, *, dilations=None, pads=None, strides=None):
    img = [int(a) for a in np.asarray(image_shape).reshape(-1)]
    blk = [int(a) for a in np.asarray(block_shape).reshape(-1)]
    nsp = len(img)
    if len(blk) != nsp:
        raise ValueError(f"Col2Im: image_shape {img} and block_shape {blk} differ in rank")
    st = _ints(strides, nsp, 1, "strides")
    dl = _ints(dilations, nsp, 1, "dilations")
    p = _ints(pads, 2 * nsp, 0, "pads")
    pb, pe = p[:nsp], p[nsp:]
    K = math.prod(blk)
    N, CK, L = input.shape
    if CK % K:
        raise ValueError(f"Col2Im: input dim 1 ({CK}) is not a multiple of prod(block_shape) ({K})")
    C = CK // K
    nb = [(img[i] + pb[i] + pe[i] - ((blk[i] - 1) * dl[i] + 1)) // st[i] + 1 for i in range(nsp)]
    if math.prod(nb) != L:
        raise ValueError(f"Col2Im: input has {L} blocks, geometry gives {nb} = {math.prod(nb)}")
    full = [img[i] + pb[i] + pe[i] for i in range(nsp)]
    buf = np.zeros((N, C) + tuple(full), input.dtype)
    cols = input.reshape((N, C, K) + tuple(nb))
    _col2im_add(buf, cols, tuple(blk), dl, st, nb)
    sl = (slice(None), slice(None)) + tuple(slice(pb[i], pb[i] + img[i]) for i in range(nsp))
    return np.ascontiguousarray(buf[sl])


# --------------------------------------------------------------------------------------------
# DeformConv (bilinear sampling into im2col columns, then GEMM)
# --------------------------------------------------------------------------------------------


@kernel("DeformConv", since=19)
def deform_conv(X, W, offset, B=None, mask=None, *, dilations=None, group=1, kernel_shape=None,
                offset_group=1, pads=None, strides=None):
    if X.ndim < 3:
        raise ValueError(f"DeformConv input must have rank >= 3, got {X.shape}")
    nsp = X.ndim - 2
    N, C = X.shape[:2]
    in_sp = X.shape[2:]
    M = W.shape[0]
    k = tuple(W.shape[2:])
    K = math.prod(k)
    st = _ints(strides, nsp, 1, "strides")
    dl = _ints(dilations, nsp, 1, "dilations")
    pb, pe, out = conv_geometry(in_sp, k, st, dl, pads, "NOTSET")
    G = int(group)
    OG = int(offset_group)
    if C % OG or C % G or M % G or W.shape[1] * G != C:
        raise ValueError(f"DeformConv: input channels {C} / weight {W.shape} do not fit group {G} "
                         f"and offset_group {OG}")
    odt = np.result_type(X.dtype, W.dtype)
    cdt = _compute_dtype(odt)
    x = X.astype(cdt, copy=False)
    P = math.prod(out)
    off = np.asarray(offset, dtype=cdt).reshape((N, OG, K, nsp, P))
    # base sampling coordinates per (tap, output position) on every spatial axis
    coords = []
    for ax in range(nsp):
        tap_pos = np.array([idx[ax] for idx in np.ndindex(*k)], dtype=cdt) * dl[ax]  # (K,)
        o_shape = [1] * nsp
        o_shape[ax] = out[ax]
        opos = (np.arange(out[ax], dtype=cdt) * st[ax] - pb[ax]).reshape(o_shape)
        opos = np.broadcast_to(opos, out).reshape(-1)  # (P,)
        base = tap_pos[:, None] + opos[None, :]  # (K, P)
        coords.append(base[None, None] + off[:, :, :, ax, :])  # (N, OG, K, P)
    # multilinear interpolation with zero outside the input
    Cog = C // OG
    xg = x.reshape(N, OG, Cog, math.prod(in_sp))
    cols = np.zeros((N, OG, Cog, K * P), cdt)
    floors = [np.floor(c) for c in coords]
    fracs = [c - f for c, f in zip(coords, floors)]
    floors = [f.astype(np.int64) for f in floors]
    for corner in np.ndindex(*([2] * nsp)):
        wgt = np.ones((N, OG, K, P), cdt)
        flat = np.zeros((N, OG, K, P), np.int64)
        valid = np.ones((N, OG, K, P), bool)
        for ax in range(nsp):
            pos = floors[ax] + corner[ax]
            wgt *= fracs[ax] if corner[ax] else (1 - fracs[ax])
            valid &= (pos >= 0) & (pos < in_sp[ax])
            flat = flat * in_sp[ax] + np.clip(pos, 0, in_sp[ax] - 1)
        wgt *= valid
        vals = np.take_along_axis(xg, flat.reshape(N, OG, 1, K * P), axis=3)  # (N, OG, Cog, K*P)
        vals *= wgt.reshape(N, OG, 1, K * P)
        cols += vals
    if mask is not None:
        cols *= np.asarray(mask, dtype=cdt).reshape(N, OG, 1, K * P)
    cols = cols.reshape(N, G, (C // G) * K, P)
    wm = W.astype(cdt, copy=False).reshape(G, M // G, (C // G) * K)
    y = np.matmul(wm, cols).reshape((N, M) + tuple(out))
    if B is not None:
        y += np.asarray(B, dtype=cdt).reshape((1, M) + (1,) * nsp)
    return y if y.dtype == odt else y.astype(odt)
