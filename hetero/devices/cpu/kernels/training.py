"""Optimizer ops of domain ai.onnx.preview.training: Adagrad, Adam, Momentum.

Inputs are (R, T, X_1..X_n, G_1..G_n, state_1..) as in the ONNX spec; each returns the updated
tensors followed by the updated optimizer states, in input dtype.
"""
from __future__ import annotations

import numpy as np

from ..registry import kernel

TRAIN = "ai.onnx.preview.training"


def _split(tensors, groups, op):
    if len(tensors) % groups:
        raise ValueError(f"{op}: {len(tensors)} tensor inputs cannot be split into {groups} equal groups")
    n = len(tensors) // groups
    return [list(tensors[i * n:(i + 1) * n]) for i in range(groups)]


def _scalar(v, what):
    a = np.asarray(v)
    if a.size != 1:
        raise ValueError(f"{what} must be a scalar, got shape {a.shape}")
    return a.reshape(-1)[0]


def _ret(outs):
    return outs[0] if len(outs) == 1 else tuple(outs)


@kernel("Adagrad", since=1, domain=TRAIN)
def adagrad(R, T, *inputs, decay_factor=0.0, epsilon=0.0, norm_coefficient=0.0):
    xs, gs, hs = _split(inputs, 3, "Adagrad")
    r = float(_scalar(R, "R")) / (1.0 + float(_scalar(T, "T")) * decay_factor)
    new_x, new_h = [], []
    for x, g, h in zip(xs, gs, hs):
        dt = np.asarray(x).dtype
        x64, g64, h64 = (np.asarray(a, dtype=np.float64) for a in (x, g, h))
        g_reg = norm_coefficient * x64 + g64
        h2 = h64 + g_reg * g_reg
        x2 = x64 - r * g_reg / (np.sqrt(h2) + epsilon)
        new_x.append(x2.astype(dt))
        new_h.append(h2.astype(np.asarray(h).dtype))
    return _ret(new_x + new_h)


@kernel("Adam", since=1, domain=TRAIN)
def adam(R, T, *inputs, alpha=0.9, beta=0.999, epsilon=0.0, norm_coefficient=0.0, norm_coefficient_post=0.0):
    xs, gs, vs, hs = _split(inputs, 4, "Adam")
    r = float(_scalar(R, "R"))
    t = float(_scalar(T, "T"))
    if t > 0:
        r = r * np.sqrt(1.0 - beta ** t) / (1.0 - alpha ** t)
    new_x, new_v, new_h = [], [], []
    for x, g, v, h in zip(xs, gs, vs, hs):
        x64, g64, v64, h64 = (np.asarray(a, dtype=np.float64) for a in (x, g, v, h))
        g_reg = norm_coefficient * x64 + g64
        v2 = alpha * v64 + (1.0 - alpha) * g_reg
        h2 = beta * h64 + (1.0 - beta) * g_reg * g_reg
        x2 = x64 - r * v2 / (np.sqrt(h2) + epsilon)
        x2 = (1.0 - norm_coefficient_post) * x2
        new_x.append(x2.astype(np.asarray(x).dtype))
        new_v.append(v2.astype(np.asarray(v).dtype))
        new_h.append(h2.astype(np.asarray(h).dtype))
    return _ret(new_x + new_v + new_h)


@kernel("Momentum", since=1, domain=TRAIN)
def momentum(R, T, *inputs, alpha=None, beta=None, mode=None, norm_coefficient=None):
    for name, val in (("alpha", alpha), ("beta", beta), ("mode", mode), ("norm_coefficient", norm_coefficient)):
        if val is None:
            raise ValueError(f"Momentum requires attribute {name}")
    if mode not in ("standard", "nesterov"):
        raise ValueError(f"Momentum mode must be 'standard' or 'nesterov', got {mode!r}")
    xs, gs, vs = _split(inputs, 3, "Momentum")
    r = float(_scalar(R, "R"))
    beta_adj = beta if float(_scalar(T, "T")) > 0 else 1.0
    new_x, new_v = [], []
    for x, g, v in zip(xs, gs, vs):
        x64, g64, v64 = (np.asarray(a, dtype=np.float64) for a in (x, g, v))
        g_reg = norm_coefficient * x64 + g64
        v2 = alpha * v64 + beta_adj * g_reg
        if mode == "standard":
            x2 = x64 - r * v2
        else:
            x2 = x64 - r * (g_reg + alpha * v2)
        new_x.append(x2.astype(np.asarray(x).dtype))
        new_v.append(v2.astype(np.asarray(v).dtype))
    return _ret(new_x + new_v)
