"""Losses: NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss."""
from __future__ import annotations

import numpy as np

from ..registry import kernel

_REDUCTIONS = ("none", "sum", "mean")


def _nll(logp, target, weight, ignore_index, reduction):
    """logp: [N, C, d1..dk]; target: [N, d1..dk] ints; weight: [C] or None."""
    logp = np.asarray(logp)
    target = np.asarray(target)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if logp.ndim < 2:
        raise ValueError(f"input must be at least rank 2 [N, C, ...], got shape {logp.shape}")
    if not np.issubdtype(target.dtype, np.integer):
        raise ValueError(f"target must be an integer tensor, got {target.dtype}")
    N, C = logp.shape[:2]
    if target.shape != (N,) + logp.shape[2:]:
        raise ValueError(f"target shape {target.shape} does not match input shape {logp.shape} (expected "
                         f"{(N,) + logp.shape[2:]})")
    dt = logp.dtype
    calc = np.float32 if dt == np.float16 else dt
    t = target.astype(np.int64)
    valid = np.ones(t.shape, dtype=bool) if ignore_index is None else (t != ignore_index)
    bad = valid & ((t < 0) | (t >= C))
    if bad.any():
        raise ValueError(f"target values must lie in [0, {C}) (or equal ignore_index), got {t[bad].reshape(-1)[0]}")
    safe_t = np.where(valid, t, 0)
    picked = np.take_along_axis(logp, safe_t[:, None], axis=1)[:, 0].astype(calc)
    if weight is None:
        w = valid.astype(calc)
    else:
        weight = np.asarray(weight, dtype=calc)
        if weight.shape != (C,):
            raise ValueError(f"weight must have shape ({C},), got {weight.shape}")
        w = np.where(valid, weight[safe_t], 0).astype(calc)
    loss = -picked * w
    if reduction == "none":
        return loss.astype(dt)
    if reduction == "sum":
        return np.asarray(loss.sum(), dtype=dt)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(loss.sum() / w.sum(), dtype=dt)


@kernel("NegativeLogLikelihoodLoss", since=12)
def negative_log_likelihood_loss(input, target, weight=None, *, ignore_index=None, reduction="mean"):
    return _nll(input, target, weight, ignore_index, reduction)


def _log_softmax(x, axis):
    m = np.max(x, axis=axis, keepdims=True)
    s = x - m
    return s - np.log(np.sum(np.exp(s), axis=axis, keepdims=True))


@kernel("SoftmaxCrossEntropyLoss", since=12)
def softmax_cross_entropy_loss(scores, labels, weights=None, *, ignore_index=None, reduction="mean",
                               _num_outputs=None):
    scores = np.asarray(scores)
    if scores.ndim < 2:
        raise ValueError(f"scores must be at least rank 2 [N, C, ...], got shape {scores.shape}")
    dt = scores.dtype
    calc = np.float32 if dt == np.float16 else dt
    logp = _log_softmax(scores.astype(calc), axis=1)
    loss = _nll(logp, labels, weights, ignore_index, reduction).astype(dt)
    if _num_outputs is not None and _num_outputs >= 2:
        return loss, logp.astype(dt)
    return loss
