"""Sequence and Optional ops. A sequence is a Python list of numpy arrays; an absent optional is None."""
from __future__ import annotations

import numpy as np

from ..registry import kernel


def _ret(outs):
    outs = list(outs)
    return outs[0] if len(outs) == 1 else tuple(outs)


def _as_seq(s, what="input_sequence") -> list:
    if s is None:
        raise ValueError(f"{what} is absent (None); a sequence is required")
    if isinstance(s, (list, tuple)):
        return list(s)
    raise ValueError(f"{what} must be a sequence (list of tensors), got {type(s).__name__}")


def _pos(p, what="position") -> int:
    a = np.asarray(p)
    if a.size != 1:
        raise ValueError(f"{what} must be a scalar, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{what} must be int32/int64, got {a.dtype}")
    return int(a.reshape(-1)[0])


def _check_index(i: int, n: int, *, allow_end: bool, what="position") -> int:
    hi = n if allow_end else n - 1
    if not -n <= i <= hi:
        rng = f"[{-n}, {hi}]"
        raise ValueError(f"{what} {i} out of range {rng} for a sequence of length {n}")
    return i + n if i < 0 else i


@kernel("SequenceConstruct", since=11)
def sequence_construct(*inputs):
    if not inputs:
        raise ValueError("SequenceConstruct needs at least one input")
    dts = {np.asarray(x).dtype for x in inputs}
    if len(dts) > 1:
        raise ValueError(f"SequenceConstruct inputs must share one element type, got {sorted(map(str, dts))}")
    return [np.asarray(x) for x in inputs]


@kernel("SequenceEmpty", since=11)
def sequence_empty(*, dtype=1):
    return []


@kernel("SequenceAt", since=11)
def sequence_at(input_sequence, position):
    seq = _as_seq(input_sequence)
    i = _check_index(_pos(position), len(seq), allow_end=False)
    return seq[i]


@kernel("SequenceInsert", since=11)
def sequence_insert(input_sequence, tensor, position=None):
    seq = _as_seq(input_sequence)
    if tensor is None:
        raise ValueError("SequenceInsert needs a tensor to insert")
    tensor = np.asarray(tensor)
    if seq and seq[0].dtype != tensor.dtype:
        raise ValueError(f"SequenceInsert: tensor dtype {tensor.dtype} differs from the sequence's {seq[0].dtype}")
    if position is None:
        seq.append(tensor)
    else:
        i = _check_index(_pos(position), len(seq), allow_end=True)
        seq.insert(i, tensor)
    return seq


@kernel("SequenceErase", since=11)
def sequence_erase(input_sequence, position=None):
    seq = _as_seq(input_sequence)
    if not seq:
        raise ValueError("SequenceErase on an empty sequence")
    if position is None:
        seq.pop()
    else:
        i = _check_index(_pos(position), len(seq), allow_end=False)
        del seq[i]
    return seq


@kernel("SequenceLength", since=11)
def sequence_length(input_sequence):
    return np.array(len(_as_seq(input_sequence)), dtype=np.int64)


@kernel("SplitToSequence", since=11)
def split_to_sequence(input, split=None, *, axis=0, keepdims=1):
    x = np.asarray(input)
    r = x.ndim
    if not -r <= axis < r:
        raise ValueError(f"SplitToSequence axis {axis} out of range for rank {r}")
    ax = axis + r if axis < 0 else axis
    n = x.shape[ax]
    if split is None:
        parts = [np.take(x, [i], axis=ax) for i in range(n)]
        if not keepdims:
            parts = [np.squeeze(p, axis=ax) for p in parts]
        return parts
    s = np.asarray(split)
    if not np.issubdtype(s.dtype, np.integer):
        raise ValueError(f"SplitToSequence split must be int32/int64, got {s.dtype}")
    if s.ndim == 0:
        chunk = int(s)
        if chunk <= 0:
            raise ValueError(f"SplitToSequence split must be positive, got {chunk}")
        sizes = [chunk] * (n // chunk) + ([n % chunk] if n % chunk else [])
    else:
        sizes = [int(v) for v in s.reshape(-1)]
        if any(v < 0 for v in sizes) or sum(sizes) != n:
            raise ValueError(f"SplitToSequence split {sizes} must be non-negative and sum to the axis length {n}")
    bounds = np.cumsum([0] + sizes)
    idx = [slice(None)] * r
    out = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        idx[ax] = slice(int(a), int(b))
        out.append(x[tuple(idx)])
    return out


@kernel("ConcatFromSequence", since=11)
def concat_from_sequence(input_sequence, *, axis=None, new_axis=0):
    seq = [np.asarray(t) for t in _as_seq(input_sequence)]
    if axis is None:
        raise ValueError("ConcatFromSequence requires the axis attribute")
    if not seq:
        raise ValueError("ConcatFromSequence on an empty sequence")
    r = seq[0].ndim
    if new_axis:
        if not -r - 1 <= axis <= r:
            raise ValueError(f"ConcatFromSequence axis {axis} out of range [{-r - 1}, {r}] with new_axis=1")
        return np.stack(seq, axis=axis)
    if not -r <= axis < r:
        raise ValueError(f"ConcatFromSequence axis {axis} out of range for rank {r}")
    return np.concatenate(seq, axis=axis)


@kernel("SequenceMap", since=17)
def sequence_map(input_sequence, *additional_inputs, body=None, _run_graph):
    if body is None:
        raise ValueError("SequenceMap needs a body graph attribute")
    seq = _as_seq(input_sequence)
    n = len(seq)
    extras = list(additional_inputs)
    for j, e in enumerate(extras):
        if isinstance(e, (list, tuple)) and len(e) != n:
            raise ValueError(f"SequenceMap: additional sequence input {j} has length {len(e)}, expected {n}")
    n_out = len(body.outputs)
    outs: list[list] = [[] for _ in range(n_out)]
    for i in range(n):
        args = [seq[i]] + [e[i] if isinstance(e, (list, tuple)) else e for e in extras]
        res = _run_graph(body, args)
        for k in range(n_out):
            outs[k].append(np.asarray(res[k]))
    return _ret(outs)


# ---- Optional --------------------------------------------------------------------------------

@kernel("Optional", since=15)
def optional(input=None, *, type=None):
    return input


@kernel("OptionalHasElement", since=15)
def optional_has_element(input=None):
    return np.array(input is not None, dtype=np.bool_)


@kernel("OptionalGetElement", since=15)
def optional_get_element(input):
    if input is None:
        raise ValueError("OptionalGetElement on an empty optional")
    return input
