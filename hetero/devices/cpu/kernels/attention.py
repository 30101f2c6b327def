"""Transformer-block CPU kernels: Attention, RotaryEmbedding, SwiGLU, LinearAttention,
CausalConvWithState and (ai.onnx.preview) FlexAttention.

Attention follows the operator's pattern: ``Q*sqrt(scale) @ (K*sqrt(scale))^T`` -> softcap ->
+ bias (attn_mask, causal frontier, sliding window, nonpad padding) -> softmax -> ``@ V``. The
arithmetic runs in the inputs' dtype (bfloat16 through float32 where numpy has no kernel), the
softmax in ``softmax_precision`` when given. A fully-masked query row (its additive bias is all
``-inf``) yields zeros, never NaN.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np
from onnx import helper

from ..registry import kernel

_BF16 = np.dtype(ml_dtypes.bfloat16)


def _np_dtype(onnx_type: int) -> np.dtype:
    return np.dtype(helper.tensor_dtype_to_np_dtype(int(onnx_type)))


def _work_dtype(dt: np.dtype) -> np.dtype:
    """A dtype numpy can do matmul/exp in: float16/32/64 as is, ml_dtypes floats -> float32."""
    return dt if dt.kind == "f" else np.dtype(np.float32)


def _round_to(a: np.ndarray, dt: np.dtype) -> np.ndarray:
    """``a`` rounded to ``dt`` (ml_dtypes types stay ml_dtypes arrays; their ufuncs round)."""
    return a if a.dtype == dt else a.astype(dt)


def _matmul(a: np.ndarray, b: np.ndarray, dt: np.dtype) -> np.ndarray:
    """a @ b with results rounded to ``dt`` (float16 matmul accumulates in float32)."""
    if dt == np.float16:
        return np.matmul(a.astype(np.float32), b.astype(np.float32)).astype(np.float16)
    return _round_to(np.matmul(a, b), dt)


def _softmax_guarded(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis; rows that are entirely -inf give zeros instead of NaN."""
    m = np.max(x, axis=-1, keepdims=True, initial=-np.inf)
    m = np.where(np.isneginf(m), np.zeros((), dtype=x.dtype), m)
    e = np.exp(x - m)
    s = np.sum(e, axis=-1, keepdims=True)
    s = np.where(s == 0, np.ones((), dtype=x.dtype), s)
    return e / s


def _split_heads(x: np.ndarray, num_heads: int, what: str) -> np.ndarray:
    """(B, S, H*D) -> (B, H, S, D)."""
    b, s, hd = x.shape
    if num_heads <= 0 or hd % num_heads:
        raise ValueError(f"{what}: hidden size {hd} is not divisible by num_heads={num_heads}")
    return x.reshape(b, s, num_heads, hd // num_heads).transpose(0, 2, 1, 3)


@kernel("Attention", since=23)
def attention(Q, K, V, attn_mask=None, past_key=None, past_value=None, nonpad_kv_seqlen=None, *,
              is_causal=0, kv_num_heads=None, q_num_heads=None, qk_matmul_output_mode=0,
              scale=None, softcap=0.0, softmax_precision=None, left_window_size=-1,
              right_window_size=-1, _num_outputs=1):
    Q, K, V = np.asarray(Q), np.asarray(K), np.asarray(V)
    if not (Q.ndim == K.ndim == V.ndim) or Q.ndim not in (3, 4):
        raise ValueError(f"Attention: Q, K, V must all be 3-D or all 4-D, got shapes "
                         f"{Q.shape}, {K.shape}, {V.shape}")
    if (past_key is None) != (past_value is None):
        raise ValueError("Attention: past_key and past_value must be given together")
    if nonpad_kv_seqlen is not None and past_key is not None:
        raise ValueError("Attention: nonpad_kv_seqlen cannot be combined with past_key/past_value")
    if left_window_size < -1 or right_window_size < -1:
        raise ValueError("Attention: window sizes must be -1 or nonnegative")
    in_dt = Q.dtype
    # bfloat16 runs natively through ml_dtypes' ufuncs (each op rounded to bfloat16), which is
    # what the operator's definition computes; float16 matmuls accumulate in float32.
    wdt = in_dt if in_dt.kind in "fV" else np.dtype(np.float32)
    rank3 = Q.ndim == 3
    if rank3:
        if q_num_heads is None or kv_num_heads is None:
            raise ValueError("Attention: 3-D inputs need the q_num_heads and kv_num_heads attributes")
        Q = _split_heads(Q, q_num_heads, "Q")
        K = _split_heads(K, kv_num_heads, "K")
        V = _split_heads(V, kv_num_heads, "V")
    batch, hq, q_len, head = Q.shape
    if past_key is not None:
        K = np.concatenate([np.asarray(past_key), K], axis=2)
        V = np.concatenate([np.asarray(past_value), V], axis=2)
    present_key, present_value = K, V
    hkv, kv_len = K.shape[1], K.shape[2]
    if V.shape[1] != hkv or V.shape[2] != kv_len:
        raise ValueError(f"Attention: K {K.shape} and V {V.shape} disagree on heads/sequence")
    if hq != hkv:
        if hkv == 0 or hq % hkv:
            raise ValueError(f"Attention: q heads {hq} not a multiple of kv heads {hkv}")
        K = np.repeat(K, hq // hkv, axis=1)
        V = np.repeat(V, hq // hkv, axis=1)

    # ---- additive bias, broadcastable to (B, Hq, L, S) --------------------------------------
    neg_inf = np.array(-np.inf, dtype=wdt)
    zero = np.zeros((), dtype=wdt)
    bias = np.zeros((q_len, kv_len), dtype=wdt)
    if attn_mask is not None:
        m = np.asarray(attn_mask)
        pad = kv_len - m.shape[-1]
        if pad > 0:
            fill = False if m.dtype == np.bool_ else -np.inf
            m = np.pad(m, [(0, 0)] * (m.ndim - 1) + [(0, pad)], constant_values=fill)
        elif pad < 0:
            raise ValueError(f"Attention: attn_mask last dim {m.shape[-1]} > total kv length {kv_len}")
        if m.dtype == np.bool_:
            m = np.where(m, zero, neg_inf)
        else:
            m = _round_to(m.astype(wdt) if m.dtype != wdt else m, in_dt)
        bias = bias + m
    if past_key is not None:
        offset = np.asarray(past_key).shape[2]
    elif nonpad_kv_seqlen is not None:
        offset = np.asarray(nonpad_kv_seqlen).astype(np.int64).reshape(-1, 1, 1, 1) - q_len
    else:
        offset = 0
    i_idx = np.arange(q_len).reshape(q_len, 1)
    j_idx = np.arange(kv_len).reshape(1, kv_len)
    pos = i_idx + offset  # absolute query position; (L,1) or (B,1,L,1)
    allowed = None
    if is_causal:
        allowed = j_idx <= pos
    if left_window_size >= 0:
        a = j_idx >= pos - left_window_size
        allowed = a if allowed is None else allowed & a
    if right_window_size >= 0:
        a = j_idx <= pos + right_window_size
        allowed = a if allowed is None else allowed & a
    if allowed is not None:
        bias = bias + np.where(allowed, zero, neg_inf)
    if nonpad_kv_seqlen is not None:
        lens = np.asarray(nonpad_kv_seqlen).astype(np.int64).reshape(-1, 1, 1, 1)
        bias = bias + np.where(j_idx < lens, zero, neg_inf)

    # ---- scores -----------------------------------------------------------------------------
    if scale is None:
        scale = 1.0 / np.sqrt(head)
    s = np.asarray(np.sqrt(scale), dtype=in_dt).astype(wdt)
    Qw = _round_to(Q.astype(wdt) * s, in_dt)
    Kw = _round_to(K.astype(wdt) * s, in_dt)
    qk = _matmul(Qw, np.swapaxes(Kw, -1, -2), in_dt)
    raw_qk = qk
    if softcap and softcap > 0:
        c = np.asarray(softcap, dtype=in_dt).astype(wdt)
        qk = _round_to(c * np.tanh(_round_to(qk / c, in_dt)), in_dt)
    capped = qk
    scores = _round_to(qk + bias.astype(wdt), in_dt)
    with_bias = scores
    if softmax_precision:
        sdt = _np_dtype(softmax_precision)
        probs = _softmax_guarded(_round_to(scores, sdt).astype(_work_dtype(sdt)))
        probs = _round_to(probs, sdt)
    else:
        probs = _round_to(_softmax_guarded(scores), in_dt)
    row_masked = np.isneginf(np.max(bias, axis=-1, keepdims=True, initial=-np.inf))
    probs = np.where(row_masked, np.zeros((), dtype=probs.dtype), probs)
    probs = _round_to(probs.astype(wdt), in_dt)
    Y = _matmul(probs, V.astype(wdt), in_dt)
    if rank3:
        Y = Y.transpose(0, 2, 1, 3).reshape(batch, q_len, -1)
    outs = [Y.astype(in_dt)]
    if _num_outputs > 1:
        outs += [present_key, present_value]
    if _num_outputs > 3:
        mode = qk_matmul_output_mode
        sel = {0: raw_qk, 1: capped, 2: with_bias, 3: probs}
        if mode not in sel:
            raise ValueError(f"Attention: unsupported qk_matmul_output_mode {mode}")
        outs.append(np.broadcast_to(sel[mode], (batch, hq, q_len, kv_len)).astype(in_dt))
    return tuple(outs[:_num_outputs]) if _num_outputs > 1 else outs[0]


@kernel("RotaryEmbedding", since=23)
def rotary_embedding(X, cos_cache, sin_cache, position_ids=None, *, interleaved=0, num_heads=0,
                     rotary_embedding_dim=0):
    X = np.asarray(X)
    in_shape = X.shape
    if X.ndim == 4:  # (B, H, S, D) -> (B, S, H, D)
        x = X.transpose(0, 2, 1, 3)
    elif X.ndim == 3:
        if not num_heads:
            raise ValueError("RotaryEmbedding: 3-D input needs the num_heads attribute")
        b, s, hid = X.shape
        if hid % num_heads:
            raise ValueError(f"RotaryEmbedding: hidden size {hid} not divisible by num_heads {num_heads}")
        x = X.reshape(b, s, num_heads, hid // num_heads)
    else:
        raise ValueError(f"RotaryEmbedding: input must be 3-D or 4-D, got {X.shape}")
    head = x.shape[3]
    rd = rotary_embedding_dim or head
    if rd > head or rd % 2:
        raise ValueError(f"RotaryEmbedding: rotary_embedding_dim {rd} invalid for head size {head}")
    cos, sin = np.asarray(cos_cache), np.asarray(sin_cache)
    if position_ids is not None:
        pid = np.asarray(position_ids).astype(np.int64)
        cos, sin = cos[pid], sin[pid]
    half = rd // 2
    if cos.shape[-1] != half or sin.shape[-1] != half:
        raise ValueError(f"RotaryEmbedding: cache last dim {cos.shape[-1]} != rotary_dim/2 {half}")
    wdt = _work_dtype(X.dtype)
    cos = cos[:, :, None, :].astype(wdt)
    sin = sin[:, :, None, :].astype(wdt)
    xr = x[..., :rd].astype(wdt)
    if interleaved:
        x1, x2 = xr[..., 0::2], xr[..., 1::2]
    else:
        x1, x2 = xr[..., :half], xr[..., half:]
    real = cos * x1 - sin * x2
    imag = sin * x1 + cos * x2
    if interleaved:
        rot = np.stack([real, imag], axis=-1).reshape(xr.shape)
    else:
        rot = np.concatenate([real, imag], axis=-1)
    out = np.concatenate([rot.astype(X.dtype), x[..., rd:]], axis=-1)
    if X.ndim == 3:
        return out.reshape(in_shape)
    return np.ascontiguousarray(out.transpose(0, 2, 1, 3))


@kernel("SwiGLU", since=28)
def swiglu(A, B, *, alpha=1.0):
    A, B = np.asarray(A), np.asarray(B)
    if A.shape != B.shape:
        raise ValueError(f"SwiGLU: A {A.shape} and B {B.shape} must have identical shapes")
    wdt = _work_dtype(A.dtype)
    a = A.astype(wdt)
    sig = _round_to(1 / (1 + np.exp(-np.asarray(alpha, dtype=wdt) * a)), A.dtype)
    sw = _round_to(a * sig, A.dtype)
    return (sw * B.astype(wdt)).astype(A.dtype)


@kernel("CausalConvWithState", since=27)
def causal_conv_with_state(input, weight, bias=None, past_state=None, *, activation="none"):
    x = np.asarray(input)
    w = np.asarray(weight)
    if activation not in ("none", "silu", "swish"):
        raise ValueError(f"CausalConvWithState: unsupported activation {activation!r}")
    if x.ndim != 3 or w.ndim != 3:
        raise ValueError(f"CausalConvWithState: input {x.shape} and weight {w.shape} must be rank 3")
    b, c, length = x.shape
    k = w.shape[2]
    if w.shape[0] != c:
        raise ValueError(f"CausalConvWithState: weight channels {w.shape[0]} != input channels {c}")
    if past_state is None:
        pad = np.zeros((b, c, k - 1), dtype=x.dtype)
    else:
        pad = np.asarray(past_state)
        if pad.shape != (b, c, k - 1):
            raise ValueError(f"CausalConvWithState: past_state shape {pad.shape} != {(b, c, k - 1)}")
    padded = np.concatenate([pad, x], axis=2)
    cdt = np.float64 if x.dtype == np.float64 else np.float32
    win = np.lib.stride_tricks.sliding_window_view(padded.astype(cdt), k, axis=2)  # (B,C,L,k)
    y = np.einsum("bclk,ck->bcl", win, w[:, 0, :].astype(cdt))
    if bias is not None:
        y = y + np.asarray(bias).astype(cdt)[None, :, None]
    y = y.astype(x.dtype)
    if activation in ("silu", "swish"):
        yf = y.astype(cdt)
        y = (yf / (1 + np.exp(-yf))).astype(x.dtype)
    present = padded[:, :, padded.shape[2] - (k - 1):]
    return y, np.ascontiguousarray(present)


@kernel("LinearAttention", since=27)
def linear_attention(query, key, value, past_state=None, decay=None, beta=None, *, chunk_size=64,
                     kv_num_heads=None, q_num_heads=None, scale=0.0, update_rule="gated_delta"):
    if update_rule not in ("linear", "gated", "delta", "gated_delta"):
        raise ValueError(f"LinearAttention: unsupported update_rule {update_rule!r}")
    if not q_num_heads or not kv_num_heads:
        raise ValueError("LinearAttention: q_num_heads and kv_num_heads are required")
    if q_num_heads % kv_num_heads:
        raise ValueError(f"LinearAttention: q_num_heads {q_num_heads} not a multiple of "
                         f"kv_num_heads {kv_num_heads}")
    gated = update_rule in ("gated", "gated_delta")
    delta = update_rule in ("delta", "gated_delta")
    if gated and decay is None:
        raise ValueError(f"LinearAttention: update_rule {update_rule!r} needs the decay input")
    if delta and beta is None:
        raise ValueError(f"LinearAttention: update_rule {update_rule!r} needs the beta input")
    query, key, value = np.asarray(query), np.asarray(key), np.asarray(value)
    for nm, a in (("query", query), ("key", key), ("value", value)):
        if a.ndim != 3:
            raise ValueError(f"LinearAttention: {nm} must be rank 3, got {a.shape}")
    out_dt = query.dtype
    b, t, _ = query.shape
    f32 = np.float32
    q = _split_heads(query, q_num_heads, "query").astype(f32)
    k = _split_heads(key, kv_num_heads, "key").astype(f32)
    v = _split_heads(value, kv_num_heads, "value").astype(f32)
    dk, dv = q.shape[3], v.shape[3]
    if k.shape[3] != dk:
        raise ValueError(f"LinearAttention: key head size {k.shape[3]} != query head size {dk}")
    g = None
    if gated:
        decay = np.asarray(decay)
        last = decay.shape[-1]
        if last == kv_num_heads:
            g = decay.reshape(b, t, kv_num_heads, 1).transpose(0, 2, 1, 3).astype(f32)
        elif last == kv_num_heads * dk:
            g = _split_heads(decay, kv_num_heads, "decay").astype(f32)
        else:
            raise ValueError(f"LinearAttention: decay last dim {last} must be kv_num_heads or "
                             "kv_num_heads*d_k")
    be = None
    if delta:
        beta = np.asarray(beta)
        last = beta.shape[-1]
        if last not in (kv_num_heads, 1):
            raise ValueError(f"LinearAttention: beta last dim {last} must be kv_num_heads or 1")
        be = beta.reshape(b, t, last, 1).transpose(0, 2, 1, 3).astype(f32)
    if past_state is not None:
        past_state = np.asarray(past_state)
        if past_state.shape != (b, kv_num_heads, dk, dv):
            raise ValueError(f"LinearAttention: past_state shape {past_state.shape} != "
                             f"{(b, kv_num_heads, dk, dv)}")
        state_dt = past_state.dtype
        S = past_state.astype(f32)
    else:
        state_dt = out_dt
        S = np.zeros((b, kv_num_heads, dk, dv), dtype=f32)
    sc = f32(scale) if scale else f32(1.0 / np.sqrt(dk))
    grp = q_num_heads // kv_num_heads
    qg = q.reshape(b, kv_num_heads, grp, t, dk)
    out = np.empty((b, kv_num_heads, grp, t, dv), dtype=f32)
    for i in range(t):  # the recurrence, one sequence step at a time
        kt, vt = k[:, :, i, :], v[:, :, i, :]
        if gated:
            S = S * np.exp(g[:, :, i, :])[..., None]
        if delta:
            retrieved = np.einsum("bhdm,bhd->bhm", S, kt)
            vt = be[:, :, i, :] * (vt - retrieved)
        S = S + kt[..., :, None] * vt[..., None, :]
        out[:, :, :, i, :] = sc * np.einsum("bhgd,bhdm->bhgm", qg[:, :, :, i, :], S)
    y = out.reshape(b, q_num_heads, t, dv).transpose(0, 2, 1, 3).reshape(b, t, q_num_heads * dv)
    return y.astype(out_dt), S.astype(state_dt)


@kernel("FlexAttention", since=1, domain="ai.onnx.preview")
def flex_attention(Q, K, V, *, scale=None, score_mod=None, prob_mod=None, softmax_precision=None,
                   _run_graph=None):
    Q, K, V = np.asarray(Q), np.asarray(K), np.asarray(V)
    if Q.ndim != 4 or K.ndim != 4 or V.ndim != 4:
        raise ValueError(f"FlexAttention: inputs must be rank 4, got {Q.shape}, {K.shape}, {V.shape}")
    hq, e = Q.shape[1], Q.shape[3]
    hkv = K.shape[1]
    if V.shape[1] != hkv or V.shape[2] != K.shape[2] or K.shape[3] != e:
        raise ValueError(f"FlexAttention: incompatible shapes Q {Q.shape}, K {K.shape}, V {V.shape}")
    if hq != hkv:
        if hkv == 0 or hq % hkv:
            raise ValueError(f"FlexAttention: q heads {hq} not a multiple of kv heads {hkv}")
        K = np.repeat(K, hq // hkv, axis=1)
        V = np.repeat(V, hq // hkv, axis=1)
    if scale is None:
        scale = 1.0 / np.sqrt(e)
    in_dt = Q.dtype
    wdt = _work_dtype(in_dt)
    s = np.asarray(np.sqrt(np.float32(scale)), dtype=in_dt).astype(wdt)
    scores = _matmul(_round_to(Q.astype(wdt) * s, in_dt),
                     np.swapaxes(_round_to(K.astype(wdt) * s, in_dt), -1, -2), in_dt)
    if softmax_precision:
        cdt = _np_dtype(softmax_precision)
    elif in_dt == np.float64:
        cdt = np.dtype(np.float64)
    else:
        cdt = np.dtype(np.float32)
    scores = scores.astype(cdt)

    def _mod(graph, x):
        if _run_graph is None:
            raise ValueError("FlexAttention: modifier subgraphs need a graph runner")
        res = _run_graph(graph, [x])
        if len(res) != 1:
            raise ValueError("FlexAttention: modifier subgraph must have exactly one output")
        return np.asarray(res[0]).astype(cdt)

    if score_mod is not None:
        scores = _mod(score_mod, scores)
    sw = scores.astype(_work_dtype(cdt))
    m = np.max(sw, axis=-1, keepdims=True)
    ex = np.exp(sw - m)
    probs = (ex / np.sum(ex, axis=-1, keepdims=True)).astype(cdt)
    if prob_mod is not None:
        probs = _mod(prob_mod, probs)
    wc = _work_dtype(cdt)
    out = np.matmul(probs.astype(wc), V.astype(cdt).astype(wc))
    return out.astype(V.dtype)
