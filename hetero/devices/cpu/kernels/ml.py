"""Traditional ML: LabelEncoder, TreeEnsemble, ArrayFeatureExtractor (domain ai.onnx.ml) and
TfIdfVectorizer (default domain)."""
from __future__ import annotations

import numpy as np

from ..registry import kernel

ML = "ai.onnx.ml"


def _is_str_dtype(dt) -> bool:
    return np.dtype(dt).kind in ("O", "U", "S")


def _s(v):
    return v.decode("utf-8") if isinstance(v, bytes) else v


# ---- ArrayFeatureExtractor -------------------------------------------------------------------

@kernel("ArrayFeatureExtractor", since=1, domain=ML)
def array_feature_extractor(X, Y):
    x = np.asarray(X)
    idx = np.asarray(Y)
    if not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"ArrayFeatureExtractor indices must be int64, got {idx.dtype}")
    idx = idx.reshape(-1).astype(np.int64)
    if x.ndim == 0:
        raise ValueError("ArrayFeatureExtractor input must have rank >= 1")
    n = x.shape[-1]
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise ValueError(f"ArrayFeatureExtractor index out of range for last dimension {n}: {idx.tolist()}")
    out = np.take(x, idx, axis=-1)
    if x.ndim == 1:
        out = out.reshape(1, -1)
    return out


# ---- LabelEncoder ----------------------------------------------------------------------------

def _lookup_numeric(x, keys, values, default):
    """Vectorised key -> value lookup for numeric keys (NaN keys match NaN inputs)."""
    keys = np.asarray(keys)
    out = np.empty(x.shape, dtype=values.dtype)
    out[...] = default
    if keys.size == 0:
        return out
    flat = x.reshape(-1)
    res = out.reshape(-1)
    nan_keys = np.isnan(keys) if keys.dtype.kind == "f" else np.zeros(keys.shape, bool)
    ok = ~nan_keys
    k, v = keys[ok], values[ok]
    order = np.argsort(k, kind="stable")
    ks, vs = k[order], v[order]
    if ks.size:
        pos = np.searchsorted(ks, flat)
        posc = np.minimum(pos, ks.size - 1)
        hit = (pos < ks.size) & (ks[posc] == flat)
        res[hit] = vs[posc[hit]]
    if nan_keys.any() and flat.dtype.kind == "f":
        res[np.isnan(flat)] = values[np.argmax(nan_keys)]
    return res.reshape(x.shape)


@kernel("LabelEncoder", since=1, domain=ML)
def label_encoder(X, *, classes_strings=None, default_float=-0.0, default_int64=-1, default_string="_Unused",
                  default_tensor=None, keys_floats=None, keys_int64s=None, keys_strings=None, keys_tensor=None,
                  values_floats=None, values_int64s=None, values_strings=None, values_tensor=None):
    x = np.asarray(X)
    x_is_str = _is_str_dtype(x.dtype)
    if classes_strings is not None and keys_strings is None and keys_int64s is None:
        # opset 1: string <-> int64 through the class index
        classes = [_s(c) for c in classes_strings]
        if x_is_str:
            keys_strings, values_int64s = classes, list(range(len(classes)))
        else:
            keys_int64s, values_strings = list(range(len(classes))), classes
    # keys
    if keys_tensor is not None:
        keys = np.asarray(keys_tensor).reshape(-1)
    elif keys_strings is not None:
        keys = np.array([_s(k) for k in keys_strings], dtype=object)
    elif keys_int64s is not None:
        keys = np.array(keys_int64s, dtype=np.int64)
    elif keys_floats is not None:
        keys = np.array(keys_floats, dtype=np.float32)
    else:
        raise ValueError("LabelEncoder needs one of keys_strings / keys_int64s / keys_floats / keys_tensor")
    # values and default
    if values_tensor is not None:
        values = np.asarray(values_tensor).reshape(-1)
        if values.dtype.kind == "U":
            values = values.astype(object)
        if default_tensor is not None:
            default = np.asarray(default_tensor).reshape(-1)[0]
        elif _is_str_dtype(values.dtype):
            default = "_Unused"
        elif values.dtype.kind == "f":
            default = -0.0
        else:
            default = -1
    elif values_strings is not None:
        values, default = np.array([_s(v) for v in values_strings], dtype=object), default_string
    elif values_int64s is not None:
        values, default = np.array(values_int64s, dtype=np.int64), default_int64
    elif values_floats is not None:
        values, default = np.array(values_floats, dtype=np.float32), default_float
    else:
        raise ValueError("LabelEncoder needs one of values_strings / values_int64s / values_floats / values_tensor")
    if keys.shape[0] != values.shape[0]:
        raise ValueError(f"LabelEncoder has {keys.shape[0]} keys but {values.shape[0]} values")

    if x_is_str or _is_str_dtype(keys.dtype):
        if x_is_str != _is_str_dtype(keys.dtype):
            raise ValueError(f"LabelEncoder input dtype {x.dtype} does not match key type {keys.dtype}")
        table = {_s(k): v for k, v in zip(keys.tolist(), values.tolist())}
        flat = [table.get(_s(v), default) for v in x.reshape(-1)]
        out = np.empty(len(flat), dtype=values.dtype)
        out[:] = flat
        return out.reshape(x.shape)
    return _lookup_numeric(x, keys.astype(x.dtype) if keys.dtype != x.dtype else keys, values, default)


# ---- TreeEnsemble ----------------------------------------------------------------------------

def _erfinv(y):
    """Inverse error function (Giles' single-precision approximation, refined by Newton steps)."""
    y = np.asarray(y, dtype=np.float64)
    w = -np.log((1.0 - y) * (1.0 + y))
    small = w < 5.0
    ws = w - 2.5
    p1 = 2.81022636e-08
    for c in (3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087, -0.00125372503,
              -0.00417768164, 0.246640727, 1.50140941):
        p1 = c + p1 * ws
    wl = np.sqrt(np.maximum(w, 5.0)) - 3.0
    p2 = -0.000200214257
    for c in (0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773, -0.0076224613,
              0.00943887047, 1.00167406, 2.83297682):
        p2 = c + p2 * wl
    return np.where(small, p1, p2) * y


def _post_transform(scores, pt):
    pt = {0: "NONE", 1: "SOFTMAX", 2: "LOGISTIC", 3: "SOFTMAX_ZERO", 4: "PROBIT"}.get(pt, pt)
    if pt == "NONE":
        return scores
    if pt == "LOGISTIC":
        return 0.5 * (np.tanh(0.5 * scores) + 1.0)
    if pt == "SOFTMAX":
        e = np.exp(scores - scores.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if pt == "SOFTMAX_ZERO":
        nz = scores != 0
        m = np.where(nz, scores, -np.inf).max(axis=1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0)
        e = np.where(nz, np.exp(scores - m), 0)
        s = e.sum(axis=1, keepdims=True)
        return np.where(s > 0, e / np.where(s > 0, s, 1), 0)
    if pt == "PROBIT":
        return np.sqrt(2.0) * _erfinv(2.0 * scores - 1.0)
    raise ValueError(f"unsupported post_transform {pt!r}")


@kernel("TreeEnsemble", since=5, domain=ML)
def tree_ensemble(X, *, aggregate_function=1, leaf_targetids=None, leaf_weights=None, membership_values=None,
                  n_targets=None, nodes_falseleafs=None, nodes_falsenodeids=None, nodes_featureids=None,
                  nodes_hitrates=None, nodes_missing_value_tracks_true=None, nodes_modes=None, nodes_splits=None,
                  nodes_trueleafs=None, nodes_truenodeids=None, post_transform=0, tree_roots=None):
    x = np.asarray(X)
    if x.ndim == 1:
        x = x.reshape(1, -1)
    if x.ndim != 2:
        raise ValueError(f"TreeEnsemble input must be [N, F], got shape {x.shape}")
    required = dict(leaf_targetids=leaf_targetids, leaf_weights=leaf_weights, n_targets=n_targets,
                    nodes_falseleafs=nodes_falseleafs, nodes_falsenodeids=nodes_falsenodeids,
                    nodes_featureids=nodes_featureids, nodes_modes=nodes_modes, nodes_splits=nodes_splits,
                    nodes_trueleafs=nodes_trueleafs, nodes_truenodeids=nodes_truenodeids, tree_roots=tree_roots)
    missing = [k for k, v in required.items() if v is None]
    if missing:
        raise ValueError(f"TreeEnsemble is missing attributes {missing}")
    feat = np.asarray(nodes_featureids, dtype=np.int64)
    n_nodes = feat.shape[0]
    modes = np.asarray(nodes_modes).reshape(-1).astype(np.int64)
    splits = np.asarray(nodes_splits, dtype=np.float64).reshape(-1)
    t_ids = np.asarray(nodes_truenodeids, dtype=np.int64)
    f_ids = np.asarray(nodes_falsenodeids, dtype=np.int64)
    t_leaf = np.asarray(nodes_trueleafs, dtype=bool)
    f_leaf = np.asarray(nodes_falseleafs, dtype=bool)
    track = (np.zeros(n_nodes, bool) if nodes_missing_value_tracks_true is None
             else np.asarray(nodes_missing_value_tracks_true, dtype=bool))
    l_tid = np.asarray(leaf_targetids, dtype=np.int64)
    l_w = np.asarray(leaf_weights, dtype=np.float64).reshape(-1)
    roots = np.asarray(tree_roots, dtype=np.int64)
    for name, arr in (("nodes_modes", modes), ("nodes_splits", splits), ("nodes_truenodeids", t_ids),
                      ("nodes_falsenodeids", f_ids), ("nodes_trueleafs", t_leaf), ("nodes_falseleafs", f_leaf),
                      ("nodes_missing_value_tracks_true", track)):
        if arr.shape[0] != n_nodes:
            raise ValueError(f"TreeEnsemble {name} has {arr.shape[0]} entries, nodes_featureids has {n_nodes}")
    if l_tid.shape[0] != l_w.shape[0]:
        raise ValueError("TreeEnsemble leaf_targetids and leaf_weights differ in length")
    if feat.size and (feat.max() >= x.shape[1] or feat.min() < 0):
        raise ValueError(f"TreeEnsemble feature id out of range for {x.shape[1]} features")
    if l_tid.size and (l_tid.min() < 0 or l_tid.max() >= n_targets):
        raise ValueError(f"TreeEnsemble leaf target id out of range [0, {n_targets})")

    # set-membership nodes: a padded [n_sets, width] matrix of members (NaN padding)
    set_of = np.full(n_nodes, -1, dtype=np.int64)
    member_nodes = np.nonzero(modes == 6)[0]
    members = np.full((1, 1), np.nan)
    if member_nodes.size:
        if membership_values is None:
            raise ValueError("TreeEnsemble has BRANCH_MEMBER nodes but no membership_values")
        mv = np.asarray(membership_values, dtype=np.float64).reshape(-1)
        sets, cur = [], []
        for v in mv.tolist():
            if np.isnan(v):
                sets.append(cur)
                cur = []
            else:
                cur.append(v)
        if cur:
            sets.append(cur)
        if len(sets) < member_nodes.size:
            raise ValueError(f"TreeEnsemble needs {member_nodes.size} membership sets, membership_values has {len(sets)}")
        width = max(1, max(len(s) for s in sets))
        members = np.full((len(sets), width), np.nan)
        for i, s in enumerate(sets):
            members[i, :len(s)] = s
        set_of[member_nodes] = np.arange(member_nodes.size)

    N, T = x.shape[0], roots.shape[0]
    xf = x.astype(np.float64)
    rows = np.broadcast_to(np.arange(N)[:, None], (N, T))
    cur = np.broadcast_to(roots[None, :], (N, T)).copy()
    leaf = np.zeros((N, T), dtype=np.int64)
    done = np.zeros((N, T), dtype=bool)
    for _ in range(n_nodes + 1):
        if done.all():
            break
        nd = np.where(done, 0, cur)
        v = xf[rows, feat[nd]]
        s = splits[nd]
        m = modes[nd]
        with np.errstate(invalid="ignore"):
            cond = np.select(
                [m == 0, m == 1, m == 2, m == 3, m == 4, m == 5],
                [v <= s, v < s, v >= s, v > s, v == s, v != s],
                default=False)
            if member_nodes.size:
                is_mem = m == 6
                si = np.where(is_mem, set_of[nd], 0)
                in_set = (v[..., None] == members[si]).any(axis=-1)
                cond = np.where(is_mem, in_set, cond)
        cond = cond | (np.isnan(v) & track[nd])
        nxt = np.where(cond, t_ids[nd], f_ids[nd])
        to_leaf = np.where(cond, t_leaf[nd], f_leaf[nd]) & ~done
        leaf = np.where(to_leaf, nxt, leaf)
        cur = np.where(done | to_leaf, cur, nxt)
        done = done | to_leaf
        if (cur < 0).any() or (cur >= n_nodes).any():
            raise ValueError("TreeEnsemble node id out of range")
    else:
        if not done.all():
            raise ValueError("TreeEnsemble trees contain a cycle")
    if leaf.size and (leaf.min() < 0 or leaf.max() >= l_w.shape[0]):
        raise ValueError("TreeEnsemble leaf id out of range")

    tgt = l_tid[leaf]
    w = l_w[leaf]
    agg = {0: "AVERAGE", 1: "SUM", 2: "MIN", 3: "MAX"}.get(aggregate_function, aggregate_function)
    out = np.zeros((N, n_targets), dtype=np.float64)
    if agg in ("SUM", "AVERAGE"):
        np.add.at(out, (rows, tgt), w)
        if agg == "AVERAGE" and T:
            out /= T
    elif agg in ("MIN", "MAX"):
        fill = np.inf if agg == "MIN" else -np.inf
        acc = np.full((N, n_targets), fill)
        (np.minimum if agg == "MIN" else np.maximum).at(acc, (rows, tgt), w)
        out = np.where(np.isfinite(acc) | (acc != fill), acc, 0.0)
    else:
        raise ValueError(f"unsupported aggregate_function {aggregate_function!r}")
    out = _post_transform(out, post_transform)
    return out.astype(x.dtype if x.dtype.kind == "f" else np.float32)


# ---- TfIdfVectorizer -------------------------------------------------------------------------

@kernel("TfIdfVectorizer", since=9)
def tfidf_vectorizer(X, *, max_gram_length=None, max_skip_count=None, min_gram_length=None, mode=None,
                     ngram_counts=None, ngram_indexes=None, pool_int64s=None, pool_strings=None, weights=None):
    for name, v in (("max_gram_length", max_gram_length), ("max_skip_count", max_skip_count),
                    ("min_gram_length", min_gram_length), ("mode", mode), ("ngram_counts", ngram_counts),
                    ("ngram_indexes", ngram_indexes)):
        if v is None:
            raise ValueError(f"TfIdfVectorizer requires attribute {name}")
    if (pool_int64s is None) == (pool_strings is None):
        raise ValueError("TfIdfVectorizer needs exactly one of pool_int64s / pool_strings")
    if mode not in ("TF", "IDF", "TFIDF"):
        raise ValueError(f"TfIdfVectorizer mode must be TF, IDF or TFIDF, got {mode!r}")
    x = np.asarray(X)
    if x.ndim not in (1, 2):
        raise ValueError(f"TfIdfVectorizer input must be [C] or [N, C], got shape {x.shape}")
    x2 = x.reshape(1, -1) if x.ndim == 1 else x

    # map tokens to integer ids (pool strings by position; unknown tokens to -1)
    if pool_strings is not None:
        pool_tokens = [_s(p) for p in pool_strings]
        vocab: dict = {}
        for tok in pool_tokens:
            vocab.setdefault(tok, len(vocab))
        pool = np.array([vocab[t] for t in pool_tokens], dtype=np.int64)
        ids = np.array([vocab.get(_s(t), -1) for t in x2.reshape(-1)], dtype=np.int64).reshape(x2.shape)
    else:
        pool = np.asarray(pool_int64s, dtype=np.int64)
        if _is_str_dtype(x2.dtype):
            raise ValueError("TfIdfVectorizer with pool_int64s needs an integer input")
        ids = x2.astype(np.int64)

    counts_at = list(ngram_counts) + [pool.shape[0]]
    idx_out = np.asarray(ngram_indexes, dtype=np.int64)
    n_out = int(idx_out.max()) + 1 if idx_out.size else 0
    n_pool_grams = idx_out.shape[0]
    w = np.ones(n_pool_grams) if not weights else np.asarray(weights, dtype=np.float64)
    B, C = ids.shape
    gram_counts = np.zeros((B, n_pool_grams), dtype=np.float64)
    gram_base = 0
    for n in range(1, len(ngram_counts) + 1):
        start, stop = int(counts_at[n - 1]), int(counts_at[n])
        k = (stop - start) // n  # number of n-grams of this length in the pool
        if n >= min_gram_length and n <= max_gram_length and k > 0:
            grams = pool[start:start + k * n].reshape(k, n)
            skips = [0] if n == 1 else range(max_skip_count + 1)
            for s in skips:
                span = (n - 1) * (s + 1) + 1
                n_pos = C - span + 1
                if n_pos <= 0:
                    continue
                pos = np.arange(n_pos)[:, None] + np.arange(n)[None, :] * (s + 1)  # [P, n]
                windows = ids[:, pos]  # [B, P, n]
                match = (windows[:, :, None, :] == grams[None, None, :, :]).all(axis=-1)  # [B, P, k]
                gram_counts[:, gram_base:gram_base + k] += match.sum(axis=1)
        gram_base += k
    if mode == "TF":
        vals = gram_counts
    elif mode == "IDF":
        vals = np.minimum(gram_counts, 1) * w
    else:
        vals = gram_counts * w
    out = np.zeros((B, n_out), dtype=np.float32)
    out[:, idx_out[:gram_base]] = vals[:, :gram_base]
    return out.reshape(-1) if x.ndim == 1 else out
