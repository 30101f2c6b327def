"""The GPU device family: every OpenCL device (through pyopencl) as ``GPU.0``, ``GPU.1``, ...

Only this package imports pyopencl, and only when :func:`discover` runs, so ``import hetero`` works on a
machine without OpenCL. Layout:

==================  ===================================================================================
``device.py``       the plugin: discovery (real GPUs first, then accelerators, then CPU OpenCL), properties,
                    query / compile / upload / download, streams
``plan.py``         graph -> the exact list of kernel launches (the same walk answers ``query``); host
                    evaluation of shape-like constants; launch-level constant folding
``ops/``            one planner per op family: ``elementwise`` (the table), ``gemm`` (Gemm, MatMul,
                    Conv, ConvTranspose, FusedConv/FusedGemm/FusedMatMul), ``pool``, ``norm``,
                    ``reduce``, ``data`` (views, copies, Pad, Gather, Resize, ...)
``cl/*.cl``         kernel sources, specialised by ``-D`` build options (``common.cl`` prepended)
``programs.py``     program cache: one build per (context, source, options); CACHE_DIR binaries
``memplan.py``      liveness-based sharing of intermediate device buffers
``precision.py``    f16 mode: calibrated mixed precision (float storage where half would overflow)
``icd.py``          registers pip-installed OpenCL runtimes the ICD loader would miss (intel-opencl-rt)
``executable.py``   compile (build, upload weights once, fold constants, plan memory) and run
                    (per-stream queue and buffers, one wait per inference)
==================  ===================================================================================

Environment knobs (tests and benchmarks): ``HETERO_DISABLE_OPENCL=1`` (no GPU family),
``HETERO_OCL_STYLE=gpu|cpu`` (kernel shapes), ``HETERO_OCL_GEMM=reg|local`` (GEMM kernel),
``HETERO_OCL_WARMUP=1`` (always run once at compile), ``HETERO_OCL_HALF_MATH=1|0`` (half arithmetic on
every cl_khr_fp16 device / on none; default: GPUs only), ``HETERO_OCL_PIP_RUNTIMES=0`` (no icd.py).
"""
from __future__ import annotations

#: The documented f16 tolerance (INFERENCE_PRECISION_HINT f16): weights and activations are stored
#: as half (11-bit mantissa, relative rounding 2^-11 per value); arithmetic runs in float, or in half
#: with bounded float-accumulated blocks where the device has it (HALF_MATH, see cl/common.cl); results agree
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
