"""Control flow: If, Loop, Scan.

These ops carry GRAPH attributes (:class:`hetero.ir.Graph`) and run them through the executor's
``_run_graph(graph, inputs) -> outputs`` context callback (enclosing-scope values are visible there).
"""
from __future__ import annotations

import numpy as np

from ..registry import kernel


def _ret(outs):
    """One output -> the value itself; several -> a tuple (a list would read as a sequence)."""
    outs = list(outs)
    return outs[0] if len(outs) == 1 else tuple(outs)


def _scalar_bool(v, what: str) -> bool:
    a = np.asarray(v)
    if a.size != 1:
        raise ValueError(f"{what} must hold exactly one element, got shape {a.shape}")
    return bool(a.reshape(-1)[0])


# ---- If --------------------------------------------------------------------------------------

@kernel("If", since=1)
def if_(cond, *, then_branch=None, else_branch=None, _run_graph, _num_outputs=None):
    if then_branch is None or else_branch is None:
        raise ValueError("If needs both then_branch and else_branch graph attributes")
    branch = then_branch if _scalar_bool(cond, "If condition") else else_branch
    outs = _run_graph(branch, [])
    if _num_outputs is not None and len(outs) != _num_outputs:
        raise ValueError(f"If branch {branch.name!r} returned {len(outs)} outputs, the node has {_num_outputs}")
    return _ret(outs)


# ---- Loop ------------------------------------------------------------------------------------

def _empty_scan(info, dtype):
    """A zero-iteration scan output: shape (0, *per-iteration shape) where the body declares it."""
    if info is not None and info.dtype is not None:
        dtype = info.dtype
    shape = (0,)
    if info is not None and info.shape is not None and all(isinstance(d, int) for d in info.shape):
        shape = (0,) + tuple(info.shape)
    return np.empty(shape, dtype=dtype if dtype is not None else np.float32)


def _stack_scan(values, dtype, info=None, axis=0):
    if values:
        return np.stack([np.asarray(v) for v in values], axis=axis)
    return _empty_scan(info, dtype)


@kernel("Loop", since=1)
def loop(M=None, cond=None, *v_initial, body=None, _run_graph, _num_outputs=None, _output_dtypes=None):
    if body is None:
        raise ValueError("Loop needs a body graph attribute")
    n_carried = len(v_initial)
    n_body_in = len(body.inputs)
    if n_body_in != n_carried + 2:
        raise ValueError(f"Loop body takes {n_body_in} inputs, expected 2 + {n_carried} loop-carried values")
    n_body_out = len(body.outputs)
    n_scan = n_body_out - 1 - n_carried
    if n_scan < 0:
        raise ValueError(f"Loop body returns {n_body_out} outputs, expected at least 1 + {n_carried}")

    trip = None
    if M is not None:
        m = np.asarray(M)
        if m.size != 1:
            raise ValueError(f"Loop trip count M must be a scalar, got shape {m.shape}")
        trip = int(m.reshape(-1)[0])
    keep_going = True if cond is None else _scalar_bool(cond, "Loop condition")
    cond_val = np.array(keep_going, dtype=np.bool_)

    carried = list(v_initial)
    scans: list[list] = [[] for _ in range(n_scan)]
    it = 0
    while keep_going and (trip is None or it < trip):
        outs = _run_graph(body, [np.array(it, dtype=np.int64), cond_val] + carried)
        if len(outs) != n_body_out:
            raise ValueError(f"Loop body returned {len(outs)} values, expected {n_body_out}")
        cond_val = np.asarray(outs[0], dtype=np.bool_)
        keep_going = _scalar_bool(cond_val, "Loop body condition output")
        carried = list(outs[1:1 + n_carried])
        for k in range(n_scan):
            scans[k].append(outs[1 + n_carried + k])
        it += 1

    results = list(carried)
    for k in range(n_scan):
        dt = None
        if _output_dtypes is not None and n_carried + k < len(_output_dtypes):
            dt = _output_dtypes[n_carried + k]
        results.append(_stack_scan(scans[k], dt, body.outputs[1 + n_carried + k]))
    if _num_outputs is not None:
        results = results[:_num_outputs]
    return _ret(results)


# ---- Scan ------------------------------------------------------------------------------------

def _run_scan(states, scan_inputs, body, run_graph, in_dirs, out_dirs, in_axes, out_axes, output_dtypes):
    """Scan without a batch axis (opset 9+ semantics). Returns final states + scan outputs."""
    n_state = len(states)
    n_in = len(scan_inputs)
    n_body_out = len(body.outputs)
    n_out = n_body_out - n_state
    if len(body.inputs) != n_state + n_in:
        raise ValueError(f"Scan body takes {len(body.inputs)} inputs, expected {n_state} states + {n_in} scan inputs")
    if n_out < 0:
        raise ValueError(f"Scan body returns {n_body_out} outputs, fewer than its {n_state} states")

    xs = []
    seq_len = None
    for i, x in enumerate(scan_inputs):
        x = np.asarray(x)
        ax = in_axes[i] if i < len(in_axes) else 0
        if ax < 0:
            ax += x.ndim
        if not 0 <= ax < max(x.ndim, 1):
            raise ValueError(f"Scan input {i}: axis {in_axes[i]} out of range for rank {x.ndim}")
        x = np.moveaxis(x, ax, 0)
        if i < len(in_dirs) and in_dirs[i]:
            x = x[::-1]
        if seq_len is None:
            seq_len = x.shape[0]
        elif x.shape[0] != seq_len:
            raise ValueError(f"Scan inputs disagree on sequence length: {seq_len} vs {x.shape[0]}")
        xs.append(x)
    if seq_len is None:
        raise ValueError("Scan needs at least one scan input")

    states = list(states)
    collected: list[list] = [[] for _ in range(n_out)]
    for t in range(seq_len):
        outs = run_graph(body, states + [x[t] for x in xs])
        if len(outs) != n_body_out:
            raise ValueError(f"Scan body returned {len(outs)} values, expected {n_body_out}")
        states = list(outs[:n_state])
        for k in range(n_out):
            collected[k].append(np.asarray(outs[n_state + k]))

    results = list(states)
    for k in range(n_out):
        if collected[k]:
            y = np.stack(collected[k], axis=0)
        else:
            dt = None
            if output_dtypes is not None and n_state + k < len(output_dtypes):
                dt = output_dtypes[n_state + k]
            y = _empty_scan(body.outputs[n_state + k], dt)
        if k < len(out_dirs) and out_dirs[k]:
            y = y[::-1]
        ax = out_axes[k] if k < len(out_axes) else 0
        if ax < 0:
            ax += y.ndim
        if not 0 <= ax < y.ndim:
            raise ValueError(f"Scan output {k}: axis {out_axes[k]} out of range for rank {y.ndim}")
        if ax != 0:
            y = np.moveaxis(y, 0, ax)
        results.append(np.ascontiguousarray(y))
    return results


@kernel("Scan", since=8)
def scan8(sequence_lens=None, *initial_state_and_scan_inputs, body=None, num_scan_inputs=None,
          directions=None, _run_graph, _output_dtypes=None):
    """Opset 8: a leading batch axis on every state/input/output; the sequence axis is 1."""
    if body is None or num_scan_inputs is None:
        raise ValueError("Scan needs body and num_scan_inputs attributes")
    args = list(initial_state_and_scan_inputs)
    n_in = int(num_scan_inputs)
    n_state = len(args) - n_in
    if n_state < 0:
        raise ValueError(f"Scan has {len(args)} inputs but num_scan_inputs={n_in}")
    states, scan_in = args[:n_state], args[n_state:]
    batch = np.asarray(scan_in[0]).shape[0]
    max_len = np.asarray(scan_in[0]).shape[1]
    lens = None if sequence_lens is None else np.asarray(sequence_lens).reshape(-1)
    dirs = list(directions) if directions else [0] * n_in
    per_batch = []
    for b in range(batch):
        L = max_len if lens is None else int(lens[b])
        ins_b = [np.asarray(x)[b, :L] for x in scan_in]
        st_b = [np.asarray(s)[b] for s in states]
        per_batch.append(_run_scan(st_b, ins_b, body, _run_graph, dirs, [], [], [], None))
    n_out = len(per_batch[0]) if per_batch else len(body.outputs)
    results = []
    for k in range(n_out):
        vals = [r[k] for r in per_batch]
        if k >= n_state and lens is not None:
            # pad shorter sequences with zeros up to max_len
            padded = []
            for v in vals:
                if v.shape[0] < max_len:
                    pad = np.zeros((max_len - v.shape[0],) + v.shape[1:], dtype=v.dtype)
                    v = np.concatenate([v, pad], axis=0)
                padded.append(v)
            vals = padded
        results.append(np.stack(vals, axis=0))
    return _ret(results)


@kernel("Scan", since=9)
def scan(*initial_state_and_scan_inputs, body=None, num_scan_inputs=None, scan_input_axes=None,
         scan_input_directions=None, scan_output_axes=None, scan_output_directions=None,
         _run_graph, _output_dtypes=None):
    if body is None or num_scan_inputs is None:
        raise ValueError("Scan needs body and num_scan_inputs attributes")
    args = list(initial_state_and_scan_inputs)
    n_in = int(num_scan_inputs)
    n_state = len(args) - n_in
    if n_state < 0:
        raise ValueError(f"Scan has {len(args)} inputs but num_scan_inputs={n_in}")
    res = _run_scan(args[:n_state], args[n_state:], body, _run_graph,
                    list(scan_input_directions or []), list(scan_output_directions or []),
                    list(scan_input_axes or []), list(scan_output_axes or []), _output_dtypes)
    return _ret(res)
