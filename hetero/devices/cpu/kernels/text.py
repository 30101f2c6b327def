"""String ops: StringNormalizer, StringConcat, StringSplit, RegexFullMatch.

String tensors are numpy object arrays of Python ``str``; loops run over strings (there is no
vectorised string arithmetic in numpy for object arrays).
"""
from __future__ import annotations

import re

import numpy as np

from ..registry import kernel


def _str_array(x, what="X"):
    a = np.asarray(x)
    if a.dtype.kind not in ("O", "U", "S"):
        raise ValueError(f"{what} must be a string tensor, got {a.dtype}")
    if a.dtype.kind == "S":
        a = np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(a) if a.size else a.astype(object)
    elif a.dtype.kind == "U":
        a = a.astype(object)
    return a


def _s(v):
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


@kernel("StringNormalizer", since=10)
def string_normalizer(X, *, case_change_action="NONE", is_case_sensitive=0, locale="", stopwords=None):
    x = _str_array(X)
    action = (case_change_action or "NONE").upper()
    if action not in ("NONE", "LOWER", "UPPER"):
        raise ValueError(f"case_change_action must be NONE, LOWER or UPPER, got {case_change_action!r}")
    if x.ndim == 2 and x.shape[0] != 1:
        raise ValueError(f"StringNormalizer input must be [C] or [1, C], got shape {x.shape}")
    if x.ndim not in (1, 2):
        raise ValueError(f"StringNormalizer input must be [C] or [1, C], got shape {x.shape}")
    flat = [_s(v) for v in x.reshape(-1)]
    if stopwords:
        if is_case_sensitive:
            stops = set(stopwords)
            flat = [v for v in flat if v not in stops]
        else:
            stops = {w.casefold() for w in stopwords}
            flat = [v for v in flat if v.casefold() not in stops]
    if action == "LOWER":
        flat = [v.lower() for v in flat]
    elif action == "UPPER":
        flat = [v.upper() for v in flat]
    if not flat:
        flat = [""]
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape((1, -1) if x.ndim == 2 else (-1,))


_concat = np.frompyfunc(lambda a, b: _s(a) + _s(b), 2, 1)


@kernel("StringConcat", since=20)
def string_concat(X, Y):
    x = _str_array(X, "X")
    y = _str_array(Y, "Y")
    out = _concat(x, y)
    return np.asarray(out, dtype=object).reshape(np.broadcast_shapes(x.shape, y.shape))


@kernel("StringSplit", since=20)
def string_split(X, *, delimiter=None, maxsplit=None):
    x = _str_array(X)
    flat = [_s(v) for v in x.reshape(-1)]
    limit = -1 if maxsplit is None else int(maxsplit)
    if maxsplit is not None and limit < 0:
        raise ValueError(f"maxsplit must be non-negative, got {maxsplit}")
    pieces = []
    for s in flat:
        if not delimiter:
            pieces.append(s.split(None, limit))
        else:
            pieces.append(s.split(delimiter, limit))
    width = max((len(p) for p in pieces), default=0)
    out = np.empty((len(flat), width), dtype=object)
    out[:] = ""
    for i, p in enumerate(pieces):
        out[i, :len(p)] = p
    counts = np.array([len(p) for p in pieces], dtype=np.int64)
    return out.reshape(x.shape + (width,)), counts.reshape(x.shape)


@kernel("RegexFullMatch", since=20)
def regex_full_match(X, *, pattern=None):
    if pattern is None:
        raise ValueError("RegexFullMatch requires the pattern attribute")
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise ValueError(f"invalid regex pattern {pattern!r}: {e}") from None
    x = _str_array(X)
    flat = [rx.fullmatch(_s(v)) is not None for v in x.reshape(-1)]
    return np.array(flat, dtype=np.bool_).reshape(x.shape)
