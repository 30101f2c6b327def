"""The GPU device family: every OpenCL device (through pyopencl) as ``GPU.0``, ``GPU.1``, ...

Only this package imports pyopencl, and only when :func:`discover` runs, so ``import hetero`` works on a
machine without OpenCL. Layout: ``device.py`` (plugin, properties, discovery), ``plan.py`` (graph ->
launches; the same walk answers query), ``ops/`` (one planner per op family), ``cl/`` (kernel
sources), ``programs.py`` (program cache, CACHE_DIR binaries), ``memplan.py`` (liveness memory plan),
``executable.py`` (compile, streams, run).
"""
from __future__ import annotations


def discover() -> list:
    """GPU.N devices, real GPUs before CPU implementations of OpenCL; [] without pyopencl or a platform."""
    try:
        from .device import discover as _discover
    except Exception:
        return []
    try:
        return _discover()
    except Exception:
        return []


__all__ = ["discover"]
