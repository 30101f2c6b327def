"""The GPU device family: every OpenCL device (through pyopencl) as ``GPU.0``, ``GPU.1``, ...

Only this package imports pyopencl, and only when :func:`discover` runs, so ``import hetero`` works on a
machine without OpenCL. Layout: ``device.py`` (plugin, properties, discovery), ``plan.py`` (graph ->
launches; the same walk answers query), ``ops/`` (one planner per op family), ``cl/`` (kernel
sources), ``programs.py`` (program cache, CACHE_DIR binaries), ``memplan.py`` (liveness memory plan),
``executable.py`` (compile, streams, run).
"""
from __future__ import annotations

#: The documented f16 tolerance (INFERENCE_PRECISION_HINT f16): weights and activations are stored
#: as half (11-bit mantissa, relative rounding 2^-11 per value), arithmetic runs in float; results agree
#: with f32 / CPU within |got - ref| <= F16_RTOL * |ref| + F16_ATOL_OF_MAX * max|ref|, elementwise.
F16_RTOL = 1e-2
F16_ATOL_OF_MAX = 1e-2


def f16_allclose(got, ref) -> bool:
    """True when ``got`` (an f16-precision result) is within the f16 tolerance of ``ref``."""
    import numpy as np

    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    if got.shape != ref.shape:
        return False
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    return bool(np.all(np.abs(got - ref) <= F16_RTOL * np.abs(ref) + F16_ATOL_OF_MAX * scale))


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


__all__ = ["discover", "f16_allclose", "F16_RTOL", "F16_ATOL_OF_MAX"]
