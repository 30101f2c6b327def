"""The CPU memory plan: which intermediate tensors live in one preallocated arena, and where.

A kernel that accepts the ``_out`` context parameter can write its (first) output into a buffer the
executor hands it. :func:`plan` decides, once per compiled graph, which values get such a buffer and
at which byte offset of one arena; every stream context allocates that arena once and every inference
on the stream reuses it, so steady-state inference allocates no large intermediate arrays.

1. **Steps and readers.** Step ``i`` is ``graph.nodes[i]`` (the executor runs them in this order).
   A value's readers are the steps listing it among their inputs, including outer-scope references
   from the bodies of If/Loop/Scan (:func:`hetero.ir.node_value_inputs`).
2. **Candidates.** A value is planned when its producer's kernel writes into ``_out`` (it is that
   node's first output), shape inference gave it a static shape and a plain numeric/bool dtype, and
   it has at least ``min_bytes`` (:data:`MIN_BYTES`): smaller arrays come from numpy's and malloc's
   free lists at almost no cost, and passing ``_out`` costs a little more than that; from about
   glibc's mmap threshold (128 KiB) on, each fresh array maps and faults in new pages, and reusing a
   buffer makes e.g. an Add of 128 KiB about twice as fast and of 1 MiB up to four times
   (benchmarks/cpu_memory_plan.py).
3. **Aliases.** View ops (:data:`VIEW_OPS`: Reshape, Transpose, Slice, Split, ...) may return views of
   their inputs, so their outputs share their inputs' memory. ``roots[v]`` is the set of planned
   values whose buffer ``v`` may live in: a planned value is its own root, a view op's outputs
   inherit the roots of all its inputs, anything else is fresh memory (the executor checks that at
   run time and copies a result that aliases the arena anyway, see ``CPUExecutable``).
4. **Lifetimes.** A planned value lives over ``[producer step, last step reading it or any value
   aliasing it]`` (both ends inclusive, so a kernel's output never shares memory with an input it
   is still reading). A planned value is dropped from the plan when a graph output or a value read
   by a subgraph may alias it: graph outputs are handed to the user and must survive the next
   inference, so they are always freshly allocated (this costs nothing extra: an output is
   written once either way, where copying it out of the arena would write it twice).
5. **Concat in place.** A Concat input can be written straight into its slice of the Concat's
   output (:func:`_concat_slices` says when: both planned, the slice one contiguous run, ...); the
   slice is then no buffer of its own but part of the outermost such Concat's, which lives from
   the first producer of any of its slices to the last reader of any of them, and the Concat
   kernel skips the inputs already in place. DenseNet: every dense layer writes its new channels
   into its block's last Concat buffer (Concat time per inference 11 ms -> 3 ms).
6. **Placement: greedy by size** (as TFLite's and ONNX Runtime's arena planners). Values in order of
   decreasing size (then first step, then name); each goes into the smallest gap between the
   already-placed values whose lifetimes overlap its own, or above the highest of them when no gap
   fits. Offsets and sizes are rounded up to :data:`ALIGN` bytes (cache lines, SIMD loads).

Traced example (a chain, sizes in bytes after alignment)::

    x ─Relu─▶ a(256) ─Relu─▶ b(512) ─Relu─▶ c(256) ─Relu─▶ d(128) ─Relu─▶ y (graph output)
    step 0          1              2              3              4

    value  size  lifetime   overlapping placed values        gaps that fit   offset
    b      512   [1, 2]     -                                -               0
    a      256   [0, 1]     b [0, 512)                       -               512 (above b)
    c      256   [2, 3]     b [0, 512)                       -               512 (above b)
    d      128   [3, 4]     c [512, 768)                     [0, 512)        0

    arena = 768 bytes = max over steps of the live bytes (a+b, b+c), the optimum here;
    without sharing: 256+512+256+128 = 1152 bytes. y is an output: never in the arena.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Collection, Mapping

import numpy as np

from ...ir import Graph, node_value_inputs, subgraphs_of

#: offsets and sizes are multiples of this many bytes
ALIGN = 64
#: a step index later than every step: graph outputs are read after the last step
INF = 1 << 60
#: values smaller than this are not planned (see step 2)
MIN_BYTES = 128 * 1024
#: ops whose kernels may return a view of an input (their outputs share the input's buffer)
VIEW_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Slice", "Split",
                      "Identity", "Dropout", "Expand"})
#: dtype kinds an arena buffer can hold (no object/string arrays, no ml_dtypes' void-kind floats)
_PLAIN_KINDS = "biufc"


@dataclass(frozen=True)
class MemoryPlan:
    """Where each planned value lives in the arena.

    ``offsets[v]`` / ``sizes[v]``: byte offset and aligned size of planned value ``v``;
    ``lifetimes[v]``: its (first, last) step, both inclusive, aliases included;
    ``roots[v]``: planned values whose buffer any value ``v`` may share (views), only where not empty;
    ``arena_bytes``: the arena's size; ``planned_bytes``: the planned values' sizes summed (the
    memory they would take without sharing); ``intermediate_bytes``: every statically sized value a
    node produces that is not a graph output, summed (planned or not);
    ``excluded[v]``: why a static candidate was left out (read by the user or a subgraph);
    ``parents[v]``: the Concat output whose buffer planned value ``v`` is a slice of (step 5);
    slices are in ``offsets``/``sizes``/``lifetimes`` too, but not in ``planned_bytes``.
    """

    offsets: Mapping[str, int] = field(default_factory=dict)
    sizes: Mapping[str, int] = field(default_factory=dict)
    lifetimes: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    roots: Mapping[str, frozenset[str]] = field(default_factory=dict)
    arena_bytes: int = 0
    planned_bytes: int = 0
    intermediate_bytes: int = 0
    excluded: Mapping[str, str] = field(default_factory=dict)
    parents: Mapping[str, str] = field(default_factory=dict)

    def buffer(self, arena: np.ndarray, value: str, graph: Graph) -> np.ndarray:
        """The view of ``arena`` (uint8, ``arena_bytes`` long) holding ``value``."""
        info = graph.info(value)
        off = self.offsets[value]
        n = info.nbytes
        return arena[off:off + n].view(info.dtype).reshape(info.shape)

    def describe(self) -> str:
        saved = 1 - self.arena_bytes / self.planned_bytes if self.planned_bytes else 0.0
        return (f"{len(self.offsets)} planned values, arena {self.arena_bytes} B for {self.planned_bytes} B "
                f"({saved:.0%} saved); intermediates {self.intermediate_bytes} B")


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _nbytes(info) -> int:
    """Bytes of a statically shaped tensor value, else 0."""
    if info.kind != "tensor" or info.dtype is None or info.shape is None:
        return 0
    if not all(type(d) is int for d in info.shape):
        return 0
    return math.prod(info.shape) * info.dtype.itemsize


def _plannable(info) -> bool:
    return info.dtype is not None and info.dtype.kind in _PLAIN_KINDS and info.dtype.isnative


def plan(graph: Graph, writes_out: Collection[str], *, views: Collection[str] = VIEW_OPS,
         min_bytes: int | None = None) -> MemoryPlan:
    """Plan the arena for ``graph`` run node by node in order (see the module doc for the steps).

    ``writes_out``: names of the nodes whose kernel accepts ``_out`` for its first output;
    ``views``: op types whose outputs may be views of their inputs; ``min_bytes``: the smallest
    value planned (None: :data:`MIN_BYTES`, read at call time)."""
    if min_bytes is None:
        min_bytes = MIN_BYTES
    nodes = graph.nodes
    outputs = set(graph.output_names)
    # 1. readers: the last step reading each value; values read by subgraph bodies
    last: dict[str, int] = {}
    sub_read: set[str] = set()
    for i, n in enumerate(nodes):
        for v in node_value_inputs(n):
            last[v] = i
        for g in subgraphs_of(n):
            sub_read |= g.outer_scope
    produced_at: dict[str, int] = {}
    inter = 0
    # 2. candidates, 3. roots
    roots: dict[str, frozenset[str]] = {}
    cand: dict[str, int] = {}
    nbytes: dict[str, int] = {}
    for i, n in enumerate(nodes):
        for o in n.outputs:
            if o:
                produced_at[o] = i
                nbytes[o] = _nbytes(graph.info(o))
                if o not in outputs:
                    inter += nbytes[o]
        if n.op_type in views and not n.domain:
            r: frozenset[str] = frozenset()
            for v in n.inputs:
                if v in roots:
                    r |= roots[v]
            if r:
                for o in n.outputs:
                    if o:
                        roots[o] = r
            continue
        o = n.outputs[0] if n.outputs else ""
        if o and n.name in writes_out and nbytes[o] and nbytes[o] >= min_bytes and _plannable(graph.info(o)):
            cand[o] = i
            roots[o] = frozenset((o,))
    # 4. lifetimes, extended over aliases; exclusions
    end = dict(cand)
    excluded: dict[str, str] = {}
    for v, rs in roots.items():
        if v in outputs:
            why, stop = f"aliased by graph output {v!r}" if v not in cand else "graph output", INF
        elif v in sub_read:
            why, stop = f"read by a subgraph (via {v!r})" if v not in cand else "read by a subgraph", INF
        else:
            why, stop = None, max(last.get(v, -1), produced_at[v])
        for c in rs:
            if why is not None:
                excluded.setdefault(c, why)
            end[c] = max(end[c], stop)
    # 5. Concat in place: inputs written straight into their slice of the Concat's output
    rel = _concat_slices(graph, {c: p for c, p in cand.items() if c not in excluded}, roots)
    top: dict[str, str] = {}
    for c in rel:  # the outermost Concat holding c (DenseNet: one buffer per dense block)
        t = c
        while t in rel:
            t = rel[t][0]
        top[c] = t
    first = {c: p for c, p in cand.items() if c not in excluded}
    for c, t in top.items():  # the group's buffer lives from its first producer to its last reader
        first[t] = min(first[t], first[c])
        end[t] = max(end[t], end[c])
    items = sorted(((c, _aligned(nbytes[c]), first[c], end[c]) for c in first if c not in top),
                   key=lambda t: (-t[1], t[2], t[0]))
    # 6. greedy by size: placed values as parallel arrays, searched vectorised per item
    offsets: dict[str, int] = {}
    p_off = np.zeros(len(items), np.int64)
    p_size = np.zeros(len(items), np.int64)
    p_first = np.zeros(len(items), np.int64)
    p_last = np.zeros(len(items), np.int64)
    for k, (v, size, first, stop) in enumerate(items):
        live = (p_first[:k] <= stop) & (p_last[:k] >= first)
        off = 0
        if live.any():
            o_off, o_end = p_off[:k][live], p_off[:k][live] + p_size[:k][live]
            order = np.argsort(o_off, kind="stable")
            o_off, o_end = o_off[order], o_end[order]
            # gap before each placed value: from the highest end below it to its offset
            lo = np.concatenate(([0], np.maximum.accumulate(o_end)[:-1]))
            gap = o_off - lo
            fits = np.flatnonzero(gap >= size)
            if fits.size:
                best = fits[np.argmin(gap[fits])]  # smallest fitting gap; argmin keeps the lowest
                off = int(lo[best])
            else:
                off = int(o_end.max())
        offsets[v] = off
        p_off[k], p_size[k], p_first[k], p_last[k] = off, size, first, stop
    arena = int((p_off + p_size).max()) if items else 0
    sizes = {v: size for v, size, _, _ in items}
    lifetimes = {v: (first, stop) for v, _, first, stop in items}

    def place(c):  # a slice: its parent's offset plus its own
        if c not in offsets:
            par, off = rel[c]
            offsets[c] = place(par) + off
        return offsets[c]
    for c in rel:
        place(c)
        sizes[c] = nbytes[c]
        lifetimes[c] = (cand[c], max(end[c], cand[c]))
    return MemoryPlan(
        offsets=offsets, sizes=sizes,
        lifetimes=lifetimes,
        roots={v: frozenset(c for c in rs if c in offsets) for v, rs in roots.items()
               if any(c in offsets for c in rs)},
        arena_bytes=arena, planned_bytes=sum(v for c, v in sizes.items() if c not in rel),
        intermediate_bytes=inter, excluded=excluded, parents={c: r[0] for c, r in rel.items()})


def _concat_slices(graph: Graph, planned: Mapping[str, int], roots) -> dict[str, tuple[str, int]]:
    """{input value: (Concat output, byte offset in it)} for the Concat inputs that can be written in
    place: the Concat's output and the input are both planned, the input is its own buffer (not a
    view) and appears once in that Concat and in no other such Concat, dtypes match, and every axis
    before the concat axis has length 1, so the input's slice of the output is one contiguous run.

    Traced example (DenseNet, one dense block): c1 = Concat(x0, n1), c2 = Concat(c1, n2), ...;
    c1 -> (c2, 0), n2 -> (c2, |c1|), n1 -> (c1, |x0|): every layer writes its new channels into
    the block's last Concat buffer and the Concats copy nothing but x0 (a MaxPool output, not
    written in place)."""
    rel: dict[str, tuple[str, int]] = {}
    for n in graph.nodes:
        if n.op_type != "Concat" or n.domain or not n.outputs or n.outputs[0] not in planned:
            continue
        o = n.outputs[0]
        info = graph.info(o)
        ins = list(n.inputs)
        if not ins or len(set(ins)) != len(ins) or "" in ins:
            continue
        rank = len(info.shape)
        ax = int(n.attrs.get("axis", 0 if rank else 0))
        if not -rank <= ax < rank:
            continue
        ax %= rank
        if any(d != 1 for d in info.shape[:ax]):
            continue
        inner = math.prod(info.shape[ax + 1:]) * info.dtype.itemsize
        off = 0
        for v in ins:
            vi = graph.info(v)
            if vi.shape is None or len(vi.shape) != rank or type(vi.shape[ax]) is not int:
                break  # shapes not static: leave the rest of this Concat alone
            if (v in planned and v not in rel and roots.get(v) == frozenset((v,))
                    and vi.dtype == info.dtype and planned[v] < planned[o]):
                rel[v] = (o, off)
            off += vi.shape[ax] * inner
    return rel
