"""Recurrent nets: RNN, GRU, LSTM (all directions, activations, clip, sequence_lens, layouts).

The loop runs over time steps; each step is vectorised over batch and hidden units.
"""
from __future__ import annotations

import numpy as np

from ..registry import kernel

# ---- activations -----------------------------------------------------------------------------
# name -> (function(x, alpha, beta), default alpha, default beta, how many of alpha/beta it takes)


def _sigmoid(x):
    # numerically stable logistic
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


_ACTS = {
    "relu": (lambda x, a, b: np.maximum(x, 0), None, None, 0),
    "tanh": (lambda x, a, b: np.tanh(x), None, None, 0),
    "sigmoid": (lambda x, a, b: _sigmoid(x), None, None, 0),
    "affine": (lambda x, a, b: a * x + b, 1.0, 0.0, 2),
    "leakyrelu": (lambda x, a, b: np.where(x >= 0, x, a * x), 0.01, None, 1),
    "thresholdedrelu": (lambda x, a, b: np.where(x > a, x, 0), 1.0, None, 1),
    "scaledtanh": (lambda x, a, b: a * np.tanh(b * x), 1.0, 1.0, 2),
    "hardsigmoid": (lambda x, a, b: np.clip(a * x + b, 0, 1), 0.2, 0.5, 2),
    "elu": (lambda x, a, b: np.where(x >= 0, x, a * (np.exp(np.minimum(x, 0)) - 1)), 1.0, None, 1),
    "softsign": (lambda x, a, b: x / (1 + np.abs(x)), None, None, 0),
    "softplus": (lambda x, a, b: np.logaddexp(x, 0), None, None, 0),
}


def _activations(names, alphas, betas, defaults, num_dir):
    """Resolve the activation list into callables, one group of len(defaults) per direction."""
    per_dir = len(defaults)
    names = list(names) if names else []
    if not names:
        names = list(defaults) * num_dir
    elif len(names) == per_dir and num_dir == 2:
        names = names * 2
    if len(names) != per_dir * num_dir:
        raise ValueError(f"expected {per_dir * num_dir} activations for {num_dir} direction(s), got {len(names)}")
    alphas = list(alphas or [])
    betas = list(betas or [])
    ai = bi = 0
    fns = []
    for nm in names:
        key = nm.lower()
        if key not in _ACTS:
            raise ValueError(f"unsupported activation function {nm!r}")
        f, da, db, nparams = _ACTS[key]
        a, b = da, db
        if nparams >= 1:
            if ai < len(alphas):
                a = alphas[ai]
                ai += 1
        if nparams >= 2:
            if bi < len(betas):
                b = betas[bi]
                bi += 1
        fns.append(lambda x, f=f, a=a, b=b: f(x, a, b))
    return [fns[d * per_dir:(d + 1) * per_dir] for d in range(num_dir)]


# ---- shared plumbing -------------------------------------------------------------------------

def _num_dirs(direction):
    if direction in ("forward", "reverse"):
        return 1
    if direction == "bidirectional":
        return 2
    raise ValueError(f"direction must be forward, reverse or bidirectional, got {direction!r}")


def _prepare(X, W, initial_states, sequence_lens, layout, hidden_size, gates, num_dir):
    """Normalise inputs to layout 0 and compute dtype / shapes."""
    X = np.asarray(X)
    W = np.asarray(W)
    if X.ndim != 3:
        raise ValueError(f"X must be rank 3, got shape {X.shape}")
    if layout not in (0, 1):
        raise ValueError(f"layout must be 0 or 1, got {layout}")
    if layout == 1:
        X = X.transpose(1, 0, 2)
    seq_len, batch, _ = X.shape
    if W.shape[0] != num_dir:
        raise ValueError(f"W has {W.shape[0]} directions, direction attribute implies {num_dir}")
    H = W.shape[1] // gates
    if hidden_size is not None and hidden_size != H:
        raise ValueError(f"hidden_size={hidden_size} but W implies {H}")
    out_dt = X.dtype
    cdt = np.float32 if out_dt == np.float16 else (out_dt if np.issubdtype(out_dt, np.floating) else np.float32)
    states = []
    for s in initial_states:
        if s is None:
            states.append(np.zeros((num_dir, batch, H), dtype=cdt))
        else:
            s = np.asarray(s, dtype=cdt)
            if layout == 1:
                s = s.transpose(1, 0, 2)
            states.append(s)
    if sequence_lens is None:
        lens = np.full(batch, seq_len, dtype=np.int64)
    else:
        lens = np.asarray(sequence_lens).astype(np.int64).reshape(-1)
        if lens.shape[0] != batch:
            raise ValueError(f"sequence_lens has {lens.shape[0]} entries, batch is {batch}")
    return X.astype(cdt, copy=False), H, out_dt, cdt, states, lens


def _time_order(seq_len, reverse):
    return range(seq_len - 1, -1, -1) if reverse else range(seq_len)


def _finish(Y, finals, layout, out_dt, num_outputs):
    """Y: [seq, num_dir, batch, H]; finals: list of [num_dir, batch, H]."""
    if layout == 1:
        Y = Y.transpose(2, 0, 1, 3)
        finals = [f.transpose(1, 0, 2) for f in finals]
    outs = [np.ascontiguousarray(Y, dtype=out_dt)] + [np.ascontiguousarray(f, dtype=out_dt) for f in finals]
    n = len(outs) if num_outputs is None else num_outputs
    outs = outs[:n]
    return outs[0] if len(outs) == 1 else tuple(outs)


def _clip(x, clip):
    return x if clip is None else np.clip(x, -clip, clip)


def _dirs(direction):
    return [False] if direction == "forward" else [True] if direction == "reverse" else [False, True]


# ---- RNN -------------------------------------------------------------------------------------

@kernel("RNN", since=7)
def rnn(X, W, R, B=None, sequence_lens=None, initial_h=None, *, activation_alpha=None, activation_beta=None,
        activations=None, clip=None, direction="forward", hidden_size=None, layout=0, _num_outputs=None):
    nd = _num_dirs(direction)
    X, H, out_dt, cdt, (h0,), lens = _prepare(X, W, [initial_h], sequence_lens, layout, hidden_size, 1, nd)
    acts = _activations(activations, activation_alpha, activation_beta, ["Tanh"], nd)
    W = np.asarray(W, dtype=cdt)
    R = np.asarray(R, dtype=cdt)
    B = np.zeros((nd, 2 * H), dtype=cdt) if B is None else np.asarray(B, dtype=cdt)
    T, batch = X.shape[0], X.shape[1]
    Y = np.zeros((T, nd, batch, H), dtype=cdt)
    finals = np.empty((nd, batch, H), dtype=cdt)
    for d, rev in enumerate(_dirs(direction)):
        f = acts[d][0]
        xw = X @ W[d].T + (B[d, :H] + B[d, H:])  # [T, batch, H]
        h = h0[d].copy()
        Rt = R[d].T
        for t in _time_order(T, rev):
            h_new = f(_clip(xw[t] + h @ Rt, clip))
            m = (t < lens)[:, None]
            h = np.where(m, h_new, h)
            Y[t, d] = np.where(m, h_new, 0)
        finals[d] = h
    return _finish(Y, [finals], layout, out_dt, _num_outputs)


# ---- GRU -------------------------------------------------------------------------------------

@kernel("GRU", since=7)
def gru(X, W, R, B=None, sequence_lens=None, initial_h=None, *, activation_alpha=None, activation_beta=None,
        activations=None, clip=None, direction="forward", hidden_size=None, layout=0, linear_before_reset=0,
        _num_outputs=None):
    nd = _num_dirs(direction)
    X, H, out_dt, cdt, (h0,), lens = _prepare(X, W, [initial_h], sequence_lens, layout, hidden_size, 3, nd)
    acts = _activations(activations, activation_alpha, activation_beta, ["Sigmoid", "Tanh"], nd)
    W = np.asarray(W, dtype=cdt)
    R = np.asarray(R, dtype=cdt)
    B = np.zeros((nd, 6 * H), dtype=cdt) if B is None else np.asarray(B, dtype=cdt)
    T, batch = X.shape[0], X.shape[1]
    Y = np.zeros((T, nd, batch, H), dtype=cdt)
    finals = np.empty((nd, batch, H), dtype=cdt)
    for d, rev in enumerate(_dirs(direction)):
        f, g = acts[d]
        wb, rb = B[d, :3 * H], B[d, 3 * H:]
        xw = X @ W[d].T + wb  # [T, batch, 3H] in z, r, h order
        Rz, Rr, Rh = R[d, :H].T, R[d, H:2 * H].T, R[d, 2 * H:].T
        rbz, rbr, rbh = rb[:H], rb[H:2 * H], rb[2 * H:]
        h = h0[d].copy()
        for t in _time_order(T, rev):
            xt = xw[t]
            z = f(_clip(xt[:, :H] + h @ Rz + rbz, clip))
            r = f(_clip(xt[:, H:2 * H] + h @ Rr + rbr, clip))
            if linear_before_reset:
                hh = g(_clip(xt[:, 2 * H:] + r * (h @ Rh + rbh), clip))
            else:
                hh = g(_clip(xt[:, 2 * H:] + (r * h) @ Rh + rbh, clip))
            h_new = (1 - z) * hh + z * h
            m = (t < lens)[:, None]
            h = np.where(m, h_new, h)
            Y[t, d] = np.where(m, h_new, 0)
        finals[d] = h
    return _finish(Y, [finals], layout, out_dt, _num_outputs)


# ---- LSTM ------------------------------------------------------------------------------------

@kernel("LSTM", since=7)
def lstm(X, W, R, B=None, sequence_lens=None, initial_h=None, initial_c=None, P=None, *, activation_alpha=None,
         activation_beta=None, activations=None, clip=None, direction="forward", hidden_size=None,
         input_forget=0, layout=0, _num_outputs=None):
    nd = _num_dirs(direction)
    X, H, out_dt, cdt, (h0, c0), lens = _prepare(X, W, [initial_h, initial_c], sequence_lens, layout,
                                                 hidden_size, 4, nd)
    acts = _activations(activations, activation_alpha, activation_beta, ["Sigmoid", "Tanh", "Tanh"], nd)
    W = np.asarray(W, dtype=cdt)
    R = np.asarray(R, dtype=cdt)
    B = np.zeros((nd, 8 * H), dtype=cdt) if B is None else np.asarray(B, dtype=cdt)
    P = np.zeros((nd, 3 * H), dtype=cdt) if P is None else np.asarray(P, dtype=cdt)
    T, batch = X.shape[0], X.shape[1]
    Y = np.zeros((T, nd, batch, H), dtype=cdt)
    fin_h = np.empty((nd, batch, H), dtype=cdt)
    fin_c = np.empty((nd, batch, H), dtype=cdt)
    for d, rev in enumerate(_dirs(direction)):
        f, g, hf = acts[d]
        xw = X @ W[d].T + (B[d, :4 * H] + B[d, 4 * H:])  # [T, batch, 4H] in i, o, f, c order
        Rt = R[d].T
        pi, po, pf = P[d, :H], P[d, H:2 * H], P[d, 2 * H:]
        h = h0[d].copy()
        c = c0[d].copy()
        for t in _time_order(T, rev):
            gates = xw[t] + h @ Rt
            i = f(_clip(gates[:, :H] + pi * c, clip))
            if input_forget:
                fg = 1 - i
            else:
                fg = f(_clip(gates[:, 2 * H:3 * H] + pf * c, clip))
            ct = g(_clip(gates[:, 3 * H:], clip))
            c_new = fg * c + i * ct
            o = f(_clip(gates[:, H:2 * H] + po * c_new, clip))
            h_new = o * hf(c_new)
            m = (t < lens)[:, None]
            h = np.where(m, h_new, h)
            c = np.where(m, c_new, c)
            Y[t, d] = np.where(m, h_new, 0)
        fin_h[d] = h
        fin_c[d] = c
    return _finish(Y, [fin_h, fin_c], layout, out_dt, _num_outputs)
