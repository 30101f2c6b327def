"""CPU kernels: normalisations, LRN, Gemm/MatMul (+ integer and quantised forms), Dropout, and the
fused Gemm/MatMul + activation kernels of the ``hetero`` domain.

Everything stays in the input's float dtype (float32 in -> float32 math, no float64 temporaries);
matrix products go through ``np.matmul`` on float arrays so BLAS does the work.
"""
from __future__ import annotations

import threading
import weakref

import numpy as np

from ..registry import kernel
from . import jit, parallel, vaffine

# --------------------------------------------------------------------------------------------
# shared helpers (also used by conv.py / pool.py)
# --------------------------------------------------------------------------------------------

ACTIVATIONS = ("", "Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSwish", "HardSigmoid", "Tanh")


def apply_activation(y: np.ndarray, activation: str, params=None) -> np.ndarray:
    """Apply ``activation`` to ``y`` IN PLACE (``y`` must be a buffer the caller owns)."""
    if not activation:
        return y
    params = list(params or [])
    if activation == "Relu":
        np.maximum(y, 0, out=y)
    elif activation == "Clip":
        lo = params[0] if len(params) > 0 else None
        hi = params[1] if len(params) > 1 else None
        if lo is not None:
            np.maximum(y, np.asarray(lo, dtype=y.dtype), out=y)
        if hi is not None:
            np.minimum(y, np.asarray(hi, dtype=y.dtype), out=y)
    elif activation == "LeakyRelu":
        alpha = np.asarray(params[0] if params else 0.01, dtype=y.dtype)
        np.multiply(y, alpha, out=y, where=y < 0)
    elif activation == "Sigmoid":
        with np.errstate(over="ignore"):
            np.negative(y, out=y)
            np.exp(y, out=y)
            y += 1
            np.reciprocal(y, out=y)
    elif activation == "HardSigmoid":
        alpha = params[0] if len(params) > 0 else 0.2
        beta = params[1] if len(params) > 1 else 0.5
        y *= np.asarray(alpha, dtype=y.dtype)
        y += np.asarray(beta, dtype=y.dtype)
        np.clip(y, 0, 1, out=y)
    elif activation == "HardSwish":
        t = y * np.asarray(1.0 / 6.0, dtype=y.dtype)
        t += np.asarray(0.5, dtype=y.dtype)
        np.clip(t, 0, 1, out=t)
        y *= t
    elif activation == "Tanh":
        np.tanh(y, out=y)
    else:
        raise ValueError(f"unsupported fused activation {activation!r}; expected one of {ACTIVATIONS}")
    return y


def _norm_axis(axis: int, rank: int, what: str = "axis") -> int:
    if not -rank <= axis < max(rank, 1):
        raise ValueError(f"{what}={axis} out of range for rank {rank}")
    return axis % rank if rank else 0


def _float_compute_dtype(dtype, stash_type: int = 1):
    """dtype used for statistics: float32 for stash_type 1 (upcasting half types), else the input dtype."""
    dtype = np.dtype(dtype)
    if stash_type == 1:
        return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)
    return dtype


def _scalar_f(v, dtype):
    return np.asarray(v, dtype=dtype)


_weight_cache: dict = {}
_weight_lock = threading.Lock()


def per_weight(kind, arrays, make):
    """``make()``, a transform of constant arrays (one array or a tuple of them: Winograd weights,
    BN's affine form), cached per (kind, arrays): weights are the same constant arrays on every
    inference. Only read-only arrays are cached (the CPU plugin passes initializers as read-only
    views; a writeable array, such as a weight fed as a graph input, may change between calls).
    Keyed by identity and checked through weakrefs (an id can be reused once an array is gone)."""
    arrays = arrays if type(arrays) is tuple else (arrays,)
    key = (kind, *map(id, arrays))
    hit = _weight_cache.get(key)
    if hit is not None:  # (asked on every conv: a plain loop, no generator)
        refs, shapes, val = hit
        for r, s, a in zip(refs, shapes, arrays):
            if r() is not a or s != a.shape or a.flags.writeable:
                break
        else:
            return val
    if not all(isinstance(a, np.ndarray) and not a.flags.writeable for a in arrays):
        return make()
    val = make()
    refs = tuple(weakref.ref(a) for a in arrays)
    with _weight_lock:
        if len(_weight_cache) > 1024:  # drop dead entries
            for kk in [kk for kk, v in _weight_cache.items() if any(r() is None for r in v[0])]:
                del _weight_cache[kk]
        _weight_cache[key] = (refs, tuple(a.shape for a in arrays), val)
    return val


# --------------------------------------------------------------------------------------------
# BatchNormalization
# --------------------------------------------------------------------------------------------


def _bn_param(p: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Broadcast a BN parameter against x (N, C, ...): per-channel (C,) or per-activation (C, D1..)."""
    p = np.asarray(p)
    C = x.shape[1] if x.ndim > 1 else 1
    if p.ndim <= 1 and p.size == C:
        return p.reshape((1, C) + (1,) * (x.ndim - 2))
    return p.reshape((1,) + p.shape)


def _bn_affine(x, scale, B, mean, var, eps):
    """Inference BN as ``x * a + b`` (a, b broadcastable to x, in x's dtype), cached per parameter
    arrays (``per_weight``): computing a, b is ten small numpy calls (about 30 us; DenseNet-121
    runs 121 BNs)."""
    dt = x.dtype

    def make():
        m = _bn_param(mean, x).astype(dt, copy=False)
        v = _bn_param(var, x).astype(dt, copy=False)
        a = _bn_param(scale, x).astype(dt, copy=False) / np.sqrt(v + _scalar_f(eps, dt))
        return a, _bn_param(B, x).astype(dt, copy=False) - m * a
    return per_weight(("bn", float(eps), dt.str, x.ndim, x.shape[1] if x.ndim > 1 else 1),
                      (scale, B, mean, var), make)


def _bn_inference(x, scale, B, mean, var, eps, out, act, act_params):
    """Inference BN, written into ``out`` when it fits -> (y, activation applied?). The activation
    (FusedBatchNormalization's) is applied in the same compiled pass when it is one of
    ``jit.ACT_CODES``; otherwise the caller applies it."""
    dt = x.dtype
    a, b = _bn_affine(x, scale, B, mean, var, eps)
    if not (x.ndim >= 2 and a.shape == b.shape == (1, x.shape[1]) + (1,) * (x.ndim - 2)):
        y = x * a
        y += b
        return y, False
    # per-channel: scale and shift each channel block on its own thread, into the plan's buffer
    y = out if (out is not None and out.shape == x.shape and out.dtype == dt) else np.empty(x.shape, dt)
    code = jit.ACT_CODES.get(act)
    if dt == np.float32 and code is not None and x.flags.c_contiguous and y.flags.c_contiguous:
        # vector code on the native pool (``vaffine``)
        p0, p1 = jit.act_params(act, act_params)
        if vaffine.affine(x, y, a.reshape(-1), b.reshape(-1), code, p0, p1):
            return y, True
    kern = jit.kernels() if dt in (np.float32, np.float64) and x.flags.c_contiguous and code is not None else None
    if kern is not None:  # one compiled pass (numpy: a multiply pass, an add pass, the activation's)
        N, C = x.shape[:2]
        x3, y3 = x.reshape(N, C, -1), y.reshape(N, C, -1)
        a1, b1 = a.reshape(C), b.reshape(C)
        consts = np.array(jit.act_params(act, act_params) + (0,), dt)
        fn = kern.affine(code)
        parallel.batched(C, lambda lo, hi: fn(x3, y3, a1, b1, consts, lo, hi), x.size)
        return y, True

    def block(lo, hi):
        ys = y[:, lo:hi]
        np.multiply(x[:, lo:hi], a[:, lo:hi], out=ys)
        ys += b[:, lo:hi]
    parallel.batched(x.shape[1], block, x.size)
    return y, False


@kernel("FusedBatchNormalization", domain="hetero")
def fused_batch_normalization(x, scale, B, input_mean, input_var, *, epsilon=1e-5, momentum=0.9,
                              training_mode=0, is_test=0, spatial=1, consumed_inputs=None, activation="",
                              activation_params=(), _out=None):
    """act(BatchNormalization(x)) at inference (the fusion pass never fuses a training-mode BN)."""
    if int(training_mode):
        raise ValueError("FusedBatchNormalization: training_mode=1 is not fusable")
    y, done = _bn_inference(x, scale, B, input_mean, input_var, float(epsilon), _out, activation or "",
                            activation_params)
    if activation and not done:
        apply_activation(y, activation, activation_params)
    return y


@kernel("BatchNormalization", since=1)
def batch_normalization(x, scale, B, input_mean, input_var, *, epsilon=1e-5, momentum=0.9,
                        training_mode=0, is_test=0, spatial=1, consumed_inputs=None,
                        _num_outputs=1, _opset=None, _out=None):
    dt = x.dtype
    training = bool(training_mode) or (_opset is not None and _opset < 14 and _num_outputs > 1 and not is_test)
    eps = float(epsilon)
    if not training:
        return _bn_inference(x, scale, B, input_mean, input_var, eps, _out, "", ())[0]
    axes = (0,) + tuple(range(2, x.ndim))
    cdt = _float_compute_dtype(dt)
    xc = x.astype(cdt, copy=False)
    bmean = xc.mean(axis=axes, keepdims=True)
    d = xc - bmean
    bvar = np.mean(d * d, axis=axes, keepdims=True)
    inv = 1.0 / np.sqrt(bvar + _scalar_f(eps, cdt))
    d *= inv
    d *= _bn_param(scale, x).astype(cdt, copy=False)
    d += _bn_param(B, x).astype(cdt, copy=False)
    y = d.astype(dt, copy=False)
    m = np.asarray(momentum, dtype=cdt)
    sm = bmean.reshape(-1)
    sv = bvar.reshape(-1)
    run_mean = (np.asarray(input_mean, dtype=cdt).reshape(-1) * m + sm * (1 - m)).astype(dt)
    run_var = (np.asarray(input_var, dtype=cdt).reshape(-1) * m + sv * (1 - m)).astype(dt)
    run_mean = run_mean.reshape(np.shape(input_mean))
    run_var = run_var.reshape(np.shape(input_var))
    if _opset is not None and _opset >= 14:
        res = (y, run_mean, run_var)
    else:
        res = (y, run_mean, run_var, sm.astype(dt), sv.astype(dt))
    return res[:max(1, _num_outputs)]


# --------------------------------------------------------------------------------------------
# Instance / Layer / Group / RMS / MeanVariance normalisation, LRN
# --------------------------------------------------------------------------------------------


def _normalize(x, axes, eps, cdt):
    """(x - mean) / sqrt(var + eps) over ``axes`` in dtype cdt; returns (normed, mean, inv_std)."""
    xc = x.astype(cdt, copy=True) if x.dtype != cdt else x.copy()
    mean = xc.mean(axis=axes, keepdims=True, dtype=cdt)
    xc -= mean
    var = np.mean(np.square(xc), axis=axes, keepdims=True, dtype=cdt)
    var += _scalar_f(eps, cdt)
    inv = np.sqrt(var, out=var)
    np.reciprocal(inv, out=inv)
    xc *= inv
    return xc, mean, inv


@kernel("InstanceNormalization", since=1)
def instance_normalization(x, scale, B, *, epsilon=1e-5, consumed_inputs=None):
    if x.ndim < 2:
        raise ValueError("InstanceNormalization expects input of rank >= 2")
    dt = x.dtype
    cdt = _float_compute_dtype(dt)
    axes = tuple(range(2, x.ndim))
    if not axes:
        y = np.zeros_like(x, dtype=cdt)
    else:
        y, _, _ = _normalize(x, axes, epsilon, cdt)
    shp = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    y *= np.asarray(scale, dtype=cdt).reshape(shp)
    y += np.asarray(B, dtype=cdt).reshape(shp)
    return y.astype(dt, copy=False)


@kernel("LayerNormalization", since=17)
def layer_normalization(x, scale, B=None, *, axis=-1, epsilon=1e-5, stash_type=1, _num_outputs=1):
    dt = x.dtype
    rank = x.ndim
    ax = _norm_axis(axis, rank)
    cdt = _float_compute_dtype(dt, stash_type)
    axes = tuple(range(ax, rank))
    y, mean, inv = _normalize(x, axes, epsilon, cdt)
    y *= np.asarray(scale, dtype=cdt)
    if B is not None:
        y += np.asarray(B, dtype=cdt)
    y = y.astype(dt, copy=False)
    if _num_outputs <= 1:
        return y
    return (y, mean, inv)[:_num_outputs]


@kernel("RMSNormalization", since=23)
def rms_normalization(x, scale, *, axis=-1, epsilon=1e-5, stash_type=1):
    dt = x.dtype
    ax = _norm_axis(axis, x.ndim)
    cdt = _float_compute_dtype(dt, stash_type)
    axes = tuple(range(ax, x.ndim))
    xc = x.astype(cdt, copy=False)
    ms = np.mean(np.square(xc), axis=axes, keepdims=True, dtype=cdt)
    ms += _scalar_f(epsilon, cdt)
    np.sqrt(ms, out=ms)
    np.reciprocal(ms, out=ms)
    y = xc * ms
    y *= np.asarray(scale, dtype=cdt)
    return y.astype(dt, copy=False)


@kernel("GroupNormalization", since=18)
def group_normalization(x, scale, bias, *, num_groups, epsilon=1e-5, stash_type=1):
    dt = x.dtype
    N, C = x.shape[0], x.shape[1]
    G = int(num_groups)
    if G <= 0 or C % G:
        raise ValueError(f"GroupNormalization: channels {C} not divisible by num_groups {G}")
    cdt = _float_compute_dtype(dt, stash_type)
    xg = x.reshape(N, G, -1)
    y, _, _ = _normalize(xg, (2,), epsilon, cdt)
    y = y.reshape(x.shape)
    scale = np.asarray(scale, dtype=cdt).reshape(-1)
    bias = np.asarray(bias, dtype=cdt).reshape(-1)
    if scale.size == G and G != C:  # opset-18 form: one scale/bias per group
        scale = np.repeat(scale, C // G)
    if bias.size == G and G != C:
        bias = np.repeat(bias, C // G)
    shp = (1, C) + (1,) * (x.ndim - 2)
    y *= scale.reshape(shp)
    y += bias.reshape(shp)
    return y.astype(dt, copy=False)


@kernel("MeanVarianceNormalization", since=9)
def mean_variance_normalization(x, *, axes=(0, 2, 3)):
    dt = x.dtype
    cdt = _float_compute_dtype(dt)
    axes = tuple(sorted({_norm_axis(a, x.ndim, "axes") for a in axes}))
    xc = x.astype(cdt, copy=True)
    mean = xc.mean(axis=axes, keepdims=True)
    xc -= mean
    std = np.sqrt(np.mean(np.square(xc), axis=axes, keepdims=True))
    std += _scalar_f(1e-9, cdt)
    xc /= std
    return xc.astype(dt, copy=False)


#: bytes of one LRN block (input rows of all channels): the block and its two temporaries stay in
#: L2 through the dozen passes (measured, ZFNet's first LRN 96x110x110: 12.5 ms whole-tensor on
#: one thread, 3.1 ms in blocks on two; 256x26x26, one block: 0.61 -> 0.57 ms)
_LRN_BLOCK_BYTES = 1 << 20


def _lrn_block(xb, yb, size, alpha, beta, bias, cdt):
    """LRN of one block xb (C, ...) into yb: ~10 elementwise passes over a block sized to stay in
    cache (the whole-tensor version moved ~110 MB through memory for ZFNet's first LRN)."""
    from .conv import workspace  # (conv imports this module: a late import breaks the cycle)

    C = xb.shape[0]
    sq = workspace("lrn_sq", xb.size, cdt).reshape(xb.shape)
    sm = workspace("lrn_sum", xb.size, cdt).reshape(xb.shape)
    np.square(xb, out=sq)
    np.copyto(sm, sq)
    lo = (size - 1) // 2
    hi = size - 1 - lo  # ceil((size-1)/2)
    for off in range(1, lo + 1):  # channels c - off
        if off < C:
            sm[off:] += sq[:C - off]
    for off in range(1, hi + 1):  # channels c + off
        if off < C:
            sm[:C - off] += sq[off:]
    sm *= _scalar_f(alpha / size, cdt)
    sm += _scalar_f(bias, cdt)
    if beta == 0.75:
        np.sqrt(sm, out=sq)       # s^0.5
        np.sqrt(sq, out=sm)       # s^0.25
        sm *= sq                  # s^0.75
    elif beta == 0.5:
        np.sqrt(sm, out=sm)
    elif beta != 1.0:
        np.power(sm, _scalar_f(beta, cdt), out=sm)
    np.divide(xb, sm, out=yb, casting="unsafe")


@kernel("LRN", since=1)
def lrn(x, *, size, alpha=0.0001, beta=0.75, bias=1.0, _out=None):
    """Local response normalisation across channels. Compiled (``jit.lrn``): one pass per output
    channel summing its window's squares, blocks of channels over the threads (192x55x55, beta
    0.75: 0.66 ms against 1.76 ms for the numpy path). numpy: in blocks of rows (all channels of a
    few rows of one image) spread over the threads: channels are the window's axis, rows are free."""
    dt = x.dtype
    cdt = _float_compute_dtype(dt)
    size = int(size)
    if x.ndim < 2 or x.size == 0:
        raise ValueError(f"LRN needs an (N, C, ...) input with elements, got shape {x.shape}")
    N, C = x.shape[:2]
    xc = x.astype(cdt, copy=False)
    y = _out if (_out is not None and _out.shape == x.shape and _out.dtype == dt) else np.empty(x.shape, dt)
    # threads only for big inputs: a numpy block is ~10 short numpy calls, and below that size the
    # two threads mostly wait for each other's GIL (as for the pools, parallel.channels)
    T = parallel.threads() if x.size >= parallel.MIN_CHANNEL_SPLIT_ELEMS else 1
    alpha, beta, bias = float(alpha), float(beta), float(bias)
    kern = jit.kernels() if cdt == dt and x.flags.c_contiguous else None
    if kern is not None:  # compiled: one pass per channel, channel blocks over the threads
        fn = kern.lrn(beta)
        x3, y3 = xc.reshape(N, C, -1), y.reshape(N, C, -1)
        lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
        k, b, e = (dt.type(v) for v in (alpha / size, bias, beta))
        parallel.each([(n, c0, c1) for n in range(N) for c0, c1 in parallel.split(C, T)],
                      lambda u: fn(x3[u[0]], y3[u[0]], lo, hi, k, b, e, u[1], u[2]))
        return y
    R = x.shape[2] if x.ndim > 2 else 1
    rest = int(np.prod(x.shape[3:], dtype=np.int64)) if x.ndim > 3 else 1
    x4 = xc.reshape(N, C, R, rest)
    y4 = y.reshape(N, C, R, rest)
    rows = max(1, min(R, _LRN_BLOCK_BYTES // max(1, C * rest * np.dtype(cdt).itemsize)))
    nblk = -(-R // rows)
    nblk = -(-nblk // T) * T if N == 1 else nblk  # whole rounds of blocks: every thread as busy
    rows = -(-R // nblk)
    units = [(n, r0, min(R, r0 + rows)) for n in range(N) for r0 in range(0, R, rows)]

    def unit(u):
        n, r0, r1 = u
        _lrn_block(x4[n, :, r0:r1], y4[n, :, r0:r1], size, alpha, beta, bias, cdt)
    if T > 1:
        parallel.each(units, unit)
    else:
        for u in units:
            unit(u)
    return y


# --------------------------------------------------------------------------------------------
# Gemm / MatMul
# --------------------------------------------------------------------------------------------


def _gemm(A, B, C, alpha, beta, transA, transB):
    a = A.T if transA else A
    b = B.T if transB else B
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"Gemm expects 2-D A and B, got {A.shape} and {B.shape}")
    dt = np.result_type(A.dtype, B.dtype)
    if a.dtype == b.dtype and a.dtype.kind == "f" and a.dtype.itemsize >= 4:
        y = parallel.matmul(a, b, np.empty((a.shape[0], b.shape[1]), a.dtype))
    else:
        y = np.matmul(a, b)
    if y.dtype != dt:
        y = y.astype(dt)
    if alpha != 1.0:
        y *= np.asarray(alpha, dtype=dt)
    if C is not None and beta != 0.0:
        c = np.asarray(C)
        if beta != 1.0:
            c = c * np.asarray(beta, dtype=c.dtype)
        if c.dtype != dt:
            c = c.astype(dt)
        try:
            np.add(y, c, out=y)
        except ValueError:
            raise ValueError(f"Gemm: C of shape {np.shape(C)} does not broadcast to {y.shape}") from None
    return y


@kernel("Gemm", since=1)
def gemm(A, B, C=None, *, alpha=1.0, beta=1.0, transA=0, transB=0, broadcast=0):
    return _gemm(A, B, C, alpha, beta, transA, transB)


def _matmul(A, B):
    if A.ndim == 0 or B.ndim == 0:
        raise ValueError("MatMul does not accept scalars")
    dt = np.result_type(A.dtype, B.dtype)
    if dt.kind == "f" and dt.itemsize < 4 or dt.kind == "V":
        # half / bfloat16: accumulate in float32 (BLAS), round once at the end
        y = np.matmul(A.astype(np.float32), B.astype(np.float32))
    else:
        y = np.matmul(A, B)
    return y if y.dtype == dt else y.astype(dt)


@kernel("MatMul", since=1)
def matmul(A, B):
    return _matmul(A, B)


@kernel("MatMulInteger", since=10)
def matmul_integer(A, B, a_zero_point=None, b_zero_point=None):
    a = A.astype(np.float64)
    if a_zero_point is not None:
        az = np.asarray(a_zero_point).astype(np.float64)
        if az.ndim >= 1 and az.size > 1 and a.ndim >= 1:
            # per-row zero point: shape (M,) or (..., M, 1)
            az = az.reshape(az.shape + (1,)) if az.shape[-1] != 1 else az
        a -= az
    b = B.astype(np.float64)
    if b_zero_point is not None:
        b -= np.asarray(b_zero_point).astype(np.float64)
    return np.matmul(a, b).astype(np.int32)


def _requantize(acc, scale, y_zero_point, out_dtype):
    """Round half-to-even, add zero point, saturate to the integer output type."""
    info = np.iinfo(out_dtype)
    acc = np.rint(acc)
    if y_zero_point is not None:
        acc += np.asarray(y_zero_point).astype(acc.dtype)
    np.clip(acc, info.min, info.max, out=acc)
    return acc.astype(out_dtype)


@kernel("QLinearMatMul", since=10)
def qlinear_matmul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point):
    a_ = a.astype(np.float64)
    if a_zero_point is not None:
        az = np.asarray(a_zero_point).astype(np.float64)
        a_ -= az[..., None] if az.ndim >= 1 and az.size > 1 else az
    b_ = b.astype(np.float64)
    if b_zero_point is not None:
        b_ -= np.asarray(b_zero_point).astype(np.float64)
    acc = np.matmul(a_, b_)  # exact integer products/sums
    a_s = np.asarray(a_scale)
    if a_s.ndim >= 1 and a_s.size > 1:
        a_s = a_s[..., None]
    scale = a_s * np.asarray(b_scale) / np.asarray(y_scale)
    acc *= scale.astype(np.float64)
    out_dtype = np.asarray(y_zero_point).dtype if y_zero_point is not None else a.dtype
    return _requantize(acc, None, y_zero_point, out_dtype)


# --------------------------------------------------------------------------------------------
# Dropout
# --------------------------------------------------------------------------------------------


@kernel("Dropout", since=1)
def dropout(data, ratio=None, training_mode=None, *, seed=None, is_test=0, consumed_inputs=None,
            _num_outputs=1, _opset=None):
    if isinstance(ratio, np.ndarray) or ratio is None:
        r = 0.5 if ratio is None else float(np.asarray(ratio).reshape(-1)[0])
    else:
        r = float(ratio)
    training = bool(np.asarray(training_mode).reshape(-1)[0]) if training_mode is not None else False
    op = _opset or 22
    mask_dtype = data.dtype if op < 10 else np.bool_
    if not training or r == 0.0:
        y = data
        if _num_outputs <= 1:
            return y
        return y, np.ones(data.shape, dtype=mask_dtype)
    if not 0.0 <= r < 1.0:
        raise ValueError(f"Dropout ratio must be in [0, 1), got {r}")
    # a seeded MT19937 stream (numpy's legacy RandomState), so a given seed is reproducible
    rng = np.random.RandomState(None if seed is None else int(seed) & 0xFFFFFFFF)
    keep = rng.uniform(0.0, 1.0, data.shape) >= r
    scale = np.asarray(1.0 / (1.0 - r), dtype=data.dtype)
    y = data * scale
    y *= keep
    if _num_outputs <= 1:
        return y
    return y, keep.astype(mask_dtype)


# --------------------------------------------------------------------------------------------
# hetero-domain fused kernels
# --------------------------------------------------------------------------------------------


@kernel("FusedGemm", domain="hetero")
def fused_gemm(A, B, C=None, *, alpha=1.0, beta=1.0, transA=0, transB=0, activation="",
               activation_params=()):
    y = _gemm(A, B, C, alpha, beta, transA, transB)
    if activation:
        if not y.flags.writeable or y.base is not None and not y.flags.owndata:
            y = y.copy()
        apply_activation(y, activation, activation_params)
    return y


@kernel("FusedMatMul", domain="hetero")
def fused_matmul(A, B, *, activation="", activation_params=()):
    y = _matmul(A, B)
    if activation:
        if not y.flags.owndata:
            y = y.copy()
        apply_activation(y, activation, activation_params)
    return y
