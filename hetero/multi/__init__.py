"""MULTI, AUTO and BATCH: virtual devices over several compiled models (DESIGN.md §6).

``hetero.runtime.core`` dispatches ``"MULTI:..."``, ``"AUTO..."`` and ``"BATCH:..."`` device strings to
:func:`compile_multi`, :func:`compile_auto` and :func:`compile_batch` (``(core, graph, parsed, config)
-> CompiledModel``).

- ``scheduler.py``: worker pools, DEVICE_PRIORITY / ROUND_ROBIN dispatch, queueing, runtime fallback;
- ``multi.py``: MULTI; ``auto.py``: AUTO's device selection, CPU helper and hot swap;
- ``batch.py`` + ``onnx_export.py``: BATCH (auto-batching) and the batch-dimension change it needs.
"""
from .batch import BatchCompiledModel, BatchedGraphs, batched_graphs, compile_batch
from .auto import AutoCompiledModel, AutoSelection, compile_auto, select_devices
from .multi import MultiCompiledModel, compile_multi
from .scheduler import Dispatch, Scheduler

__all__ = ["compile_multi", "compile_auto", "compile_batch", "MultiCompiledModel", "AutoCompiledModel",
           "BatchCompiledModel", "AutoSelection", "BatchedGraphs", "select_devices", "batched_graphs", "Scheduler",
           "Dispatch"]
