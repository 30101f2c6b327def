"""The CPU kernel table: op -> numpy kernel, picked by opset version.

A kernel is a plain function ``fn(*inputs, **attrs) -> ndarray | tuple``:

* positional inputs in ONNX order, one per node input; an omitted optional input arrives as ``None``;
* ONNX attributes as keyword arguments with their ONNX defaults in the signature
  (INT -> int, FLOAT -> float, STRING -> str, INTS/FLOATS/STRINGS -> list, TENSOR -> ndarray,
  GRAPH -> hetero.ir.Graph);
* keyword-only *context* parameters, passed only when the signature declares them:
  ``_num_outputs`` (how many outputs the node has), ``_opset`` (the model's default opset),
  ``_run_graph`` (``_run_graph(graph, inputs: list) -> list`` runs a subgraph of If/Loop/Scan with
  the enclosing scope visible), ``_output_dtypes`` (list of the outputs' inferred numpy dtypes or None),
  ``_out`` (a preallocated array of exactly the first output's inferred shape and dtype, from the
  executor's memory plan (``hetero.devices.cpu.memory``), or None: the kernel writes its first
  output into it and returns that same array. It checks first that the shape and dtype it computes
  are ``_out``'s (shape inference can be wrong); when they are not, or in a case it does not
  handle, it ignores ``_out`` and returns a fresh array, and the executor uses what it got.
  ``_out`` never overlaps an input the kernel reads. Declare it ``*, _out=None``);
* returns one array, or a tuple with one entry per output (sequences are Python lists; an absent
  optional is None). Kernels never modify their inputs in place; outputs keep ONNX's dtypes exactly.

Register with ``@kernel("Clip", since=11)``: the kernel serves opset versions >= since, until a
kernel with a larger ``since`` for the same op takes over.
"""
from __future__ import annotations

import bisect
import inspect
import threading
from dataclasses import dataclass
from typing import Callable

CONTEXT_PARAMS = ("_num_outputs", "_opset", "_run_graph", "_output_dtypes", "_out")


@dataclass(frozen=True)
class KernelEntry:
    op_type: str
    domain: str
    since: int
    fn: Callable
    context: tuple[str, ...]  # which context params the kernel declares
    attrs: frozenset[str] | None  # keyword names it accepts (None: **kwargs)


_TABLE: dict[tuple[str, str], list[KernelEntry]] = {}


def kernel(op_type: str, *, since: int = 1, domain: str = ""):
    """Decorator registering ``fn`` as the CPU kernel of ``op_type`` from opset ``since`` on."""

    def deco(fn):
        sig = inspect.signature(fn)
        ctx = tuple(p for p in CONTEXT_PARAMS if p in sig.parameters)
        if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            attrs = None
        else:
            attrs = frozenset(n for n, p in sig.parameters.items()
                              if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and n not in CONTEXT_PARAMS)
        entry = KernelEntry(op_type, domain, since, fn, ctx, attrs)
        lst = _TABLE.setdefault((domain, op_type), [])
        lst[:] = [e for e in lst if e.since != since]
        bisect.insort(lst, entry, key=lambda e: e.since)
        return fn

    return deco


def lookup(op_type: str, domain: str = "", opset: int = 10**6) -> KernelEntry | None:
    """The kernel serving ``op_type`` at ``opset`` (domain-specific opset), or None."""
    _ensure_loaded()
    lst = _TABLE.get(("" if domain == "ai.onnx" else domain, op_type))
    if not lst:
        return None
    best = None
    for e in lst:
        if e.since <= opset:
            best = e
    return best if best is not None else lst[0]


def supported_ops() -> list[tuple[str, str]]:
    _ensure_loaded()
    return sorted(_TABLE)


_loaded = False
_load_lock = threading.RLock()
_loading = threading.local()


def _ensure_loaded() -> None:
    # Threads compile at once (MULTI, AUTO): a second thread must wait until the table is complete,
    # not see it half-filled; the loading thread itself (a kernel module calling lookup) passes.
    global _loaded
    if _loaded or getattr(_loading, "active", False):
        return
    with _load_lock:
        if _loaded:
            return
        _loading.active = True
        try:
            import importlib
            import pkgutil

            from . import kernels

            for m in pkgutil.iter_modules(kernels.__path__):
                importlib.import_module(f"{kernels.__name__}.{m.name}")
        finally:
            _loading.active = False
        _loaded = True
