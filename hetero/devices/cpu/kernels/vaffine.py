"""Inference BatchNormalization's per-channel affine (+ activation) over float32 planes, compiled
to vector code (LLVM IR, ``direct.engine()``'s target machine) and run on the native pool.

Why: ``jit.affine`` (numba) is one scalar loop per plane, and split over threads through the
Python pool it pays a GIL hand-off per task; DenseNet-121's 58 BatchNormalization + Relu over its
growing concat buffers took 11 ms of its 80 (ONNX Runtime: 6 ms for its Add + Relu).

``y[n, c] = act(x[n, c] * a[c] + b[c])`` for every plane (n, c): whole vectors, the last masked;
the activations of ``jit.ACT_CODES`` with ``jit.activate``'s NaN rules (Relu, Clip and LeakyRelu
keep a NaN). Units: ranges of planes, four per thread.
"""
from __future__ import annotations

import threading

from . import native, parallel

#: below this many elements the affine runs on the calling thread only
MIN_PARALLEL_ELEMS = 1 << 17

_tls = threading.local()


def _build_ir(act: int, VW: int) -> str:
    """``affine(i64 *prm, float *x, float *y, float *a, float *b, float *, float p0, float p1)``
    over planes [c0, c1) of P floats, plane i using a[i % C] and b[i % C] (``prm``: c0, c1, P, C)."""
    u = native.UnitIR("affine", VW, 4, noalias=(1, 2))
    b, c = u.b, u.c
    c0, c1, P, C = u.prm
    x0, y0, a0, b0 = u.ptrs[:4]
    zero = u.ir.Constant(u.vt, [0.0] * VW)
    P0, P1 = native.ir_splat(b, u.a0, u.vt), native.ir_splat(b, u.a1, u.vt)
    full = b.sdiv(P, c(VW))
    tail = u.lanes_below(b.trunc(b.sub(P, b.mul(full, c(VW))), u.i32))

    def activate(v):
        if act == 1:  # Relu (NaN stays NaN: not < 0)
            return b.select(b.fcmp_ordered("<", v, zero), zero, v)
        if act == 2:  # Clip(p0, p1)
            v = b.select(b.fcmp_ordered("<", v, P0), P0, v)
            return b.select(b.fcmp_ordered(">", v, P1), P1, v)
        if act == 3:  # LeakyRelu(alpha = p0)
            return b.select(b.fcmp_ordered("<", v, zero), b.fmul(v, P0), v)
        return v

    def plane(i):
        ch = b.srem(i, C)
        av = native.ir_splat(b, b.load(b.gep(a0, [ch])), u.vt)
        bv = native.ir_splat(b, b.load(b.gep(b0, [ch])), u.vt)
        xc, yc = b.gep(x0, [b.mul(i, P)]), b.gep(y0, [b.mul(i, P)])

        def vec(at, m):
            u.store(activate(b.fadd(b.fmul(u.load(xc, at, m, zero), av), bv)), yc, at, m)
        native.ir_loop(b, c(0), full, lambda v: vec(b.mul(v, c(VW)), None))
        vec(b.mul(full, c(VW)), tail)
    native.ir_loop(b, c0, c1, plane)
    return u.text()


def affine(x, y, a, b, act: int, p0: float, p1: float) -> bool:
    """y = act(x * a[c] + b[c]) for x, y (N, C, ...) float32 C-contiguous, a and b (C,) float32
    contiguous; ``act`` a ``jit.ACT_CODES`` code with its parameters p0, p1. False (nothing
    written) without the compiler."""
    from . import direct  # (here: direct imports nn, which imports this module)

    eng = direct.engine()
    if eng is None:
        return False
    N, C = x.shape[:2]
    P = x.size // (N * C) if N * C else 0
    if P == 0:
        return True
    T = parallel.threads() if x.size >= MIN_PARALLEL_ELEMS else 1

    def build():
        rows = parallel.UnitRows([[c0, c1, P, C] for c0, c1 in parallel.split(N * C, 4 * T if T > 1 else 1)])
        return rows, eng.variant(("affine", act), lambda: _build_ir(act, eng.VW), "affine")
    rows, (fn, fn_at) = parallel.per_thread(_tls, "plans", (act, N * C, P, C, T), build)
    rows.run(fn, fn_at, (native.address(x), native.address(y), native.address(a), native.address(b), 0), p0, p1)
    return True
