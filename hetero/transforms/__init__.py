"""Compile-time graph passes: each a pure function Graph -> Graph.

``optimize(graph)`` runs, in order:

1. ``fold_constants``      constant subexpressions (and Shape of static shapes) -> initializers
2. ``remove_identity``     Identity / inference Dropout
3. ``fold_batchnorm``      BatchNormalization into the Conv / Gemm before it
4. ``fuse_activations``    Conv/Gemm/MatMul/BatchNormalization + activation, Conv + residual Add
                           [+ activation]
5. ``remove_dead_nodes``   nodes and initializers nothing reads

Every node a pass removes or absorbs is appended to ``Graph.optimized_out`` as ``(name, op_type)``
(profiling reports them as OPTIMIZED_OUT); a node that absorbed others lists them in ``Node.fused``.
Passes never rename graph inputs or outputs and leave If/Loop/Scan bodies untouched (values those
bodies read from the enclosing graph are never renamed or removed). The pipeline is idempotent:
``optimize(optimize(g))`` has the same nodes as ``optimize(g)``.

Traced example (ResNet-50 from onnx's light models, 415 nodes): 239 ConstantOfShape weights fold to
initializers; 53 BatchNormalizations fold into their Convs; 49 Relus and 16 residual Sums fuse into
FusedConv; 58 nodes remain.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Callable, Iterable

from ..ir import Graph
from ..log import debug_level
from .batchnorm import fold_batchnorm
from .cleanup import remove_dead_nodes, remove_identity
from .constant_folding import MAX_FOLD_BYTES, fold_constants
from .fusion import ACTIVATIONS, FUSED_OP, activation_params, fuse_activations

Pass = Callable[[Graph], Graph]

#: the standard pipeline, in order
PASSES: dict[str, Pass] = {
    "fold_constants": fold_constants,
    "remove_identity": remove_identity,
    "fold_batchnorm": fold_batchnorm,
    "fuse_activations": fuse_activations,
    "remove_dead_nodes": remove_dead_nodes,
}


def optimize(graph: Graph, *, passes: Iterable[str | Pass] | None = None) -> Graph:
    """Run ``passes`` (names from ``PASSES`` or functions; default: all of ``PASSES`` in order)."""
    chosen: list[Pass] = []
    for p in (PASSES if passes is None else passes):
        if isinstance(p, str):
            if p not in PASSES:
                raise ValueError(f"unknown graph pass {p!r}; known passes: {list(PASSES)}")
            p = PASSES[p]
        chosen.append(p)
    debug = debug_level() >= 1
    t0 = time.perf_counter()
    before = len(graph.nodes)
    for p in chosen:
        graph = p(graph)
    if debug:
        print(f"[hetero] transforms on {graph.name!r}: {before} -> {len(graph.nodes)} nodes, "
              f"{len(graph.optimized_out)} optimized out, {(time.perf_counter() - t0) * 1e3:.1f} ms",
              file=sys.stderr)
    return graph


__all__ = ["optimize", "PASSES", "fold_constants", "remove_identity", "fold_batchnorm", "fuse_activations",
           "remove_dead_nodes", "activation_params", "ACTIVATIONS", "FUSED_OP", "MAX_FOLD_BYTES"]
