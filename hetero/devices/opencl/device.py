"""The GPU plugin: one ``GPU.N`` device per OpenCL device (pyopencl), real GPUs first."""
from __future__ import annotations

import os
from pathlib import Path
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ...errors import DeviceError, UnsupportedOpError
from ...ir import Graph
from ..base import Device
from .plan import DeviceCaps, build_plan

AUTO_PRIORITY = {"discrete": 30, "integrated": 20, "accelerator": 15, "cpu-opencl": 10}
_TYPE_ORDER = {"discrete": 0, "integrated": 1, "accelerator": 2, "cpu-opencl": 3}


def device_kind(cl_device) -> str:
    """discrete / integrated / accelerator / cpu-opencl."""
    import pyopencl as cl

    t = cl_device.type
    if t & cl.device_type.GPU:
        try:
            unified = bool(cl_device.host_unified_memory)
        except Exception:
            unified = False
        return "integrated" if unified else "discrete"
    if t & cl.device_type.CPU:
        return "cpu-opencl"
    return "accelerator"


@dataclass
class DeviceTensor:
    """A tensor in device memory (``upload`` / ``download``): the buffer holds ``dtype``'s bytes."""

    buffer: Any
    shape: tuple[int, ...]
    dtype: np.dtype


class OpenCLDevice(Device):
    family = "GPU"
    readable = Device.readable + ("DEVICE_MEMORY_SIZE", "COMPUTE_UNITS", "DEVICE_ARCHITECTURE")

    def __init__(self, name: str, cl_device):
        self.name = name
        self.cl_device = cl_device
        self.kind = device_kind(cl_device)
        self.auto_priority = AUTO_PRIORITY[self.kind]
        self._context = None
        self._ctx_lock = threading.Lock()
        self._queue = None
        super().__init__()

    @property
    def context(self):
        with self._ctx_lock:
            if self._context is None:
                import pyopencl as cl

                self._context = cl.Context([self.cl_device])
            return self._context

    # ---- properties -------------------------------------------------------------------------------
    @property
    def has_fp16(self) -> bool:
        return "cl_khr_fp16" in (self.cl_device.extensions or "")

    @property
    def half_math(self) -> bool:
        """Whether half storage computes in half (HALF_MATH kernels): on a GPU (or accelerator) with
        cl_khr_fp16. Not by default on CPU implementations of OpenCL, where it was measured slower than
        float arithmetic on half storage (Intel's CPU runtime 2026.2 on an AVX512-FP16 Xeon: f16
        Inception-v2 153 -> 350 ms, DenseNet-121 411 -> 658 ms). ``HETERO_OCL_HALF_MATH=1`` turns it on
        wherever cl_khr_fp16 is (the tests run the half kernels that way), ``=0`` off everywhere."""
        knob = os.environ.get("HETERO_OCL_HALF_MATH", "")
        if knob == "0" or not self.has_fp16:
            return False
        return knob == "1" or self.kind != "cpu-opencl"

    def read_only_property(self, key: str) -> Any:
        d = self.cl_device
        if key == "FULL_DEVICE_NAME":
            return f"{d.name.strip()} ({d.platform.name.strip()})"
        if key == "DEVICE_TYPE":
            return self.kind
        if key == "OPTIMIZATION_CAPABILITIES":
            # f16 storage needs only vload_half/vstore_half (core OpenCL): usable everywhere
            return ["FP32", "FP16"] + (["FP16_ARITHMETIC"] if self.half_math else [])
        if key == "DEVICE_MEMORY_SIZE":
            return int(d.global_mem_size)
        if key == "COMPUTE_UNITS":
            return int(d.max_compute_units)
        if key == "DEVICE_ARCHITECTURE":
            return f"{d.vendor.strip()} {d.version.strip()}"
        if key == "RANGE_FOR_STREAMS":
            return (1, 8)
        if key == "RANGE_FOR_ASYNC_INFER_REQUESTS":
            return (1, 64, 1)
        if key == "AVAILABLE_DEVICES":
            return [self.name.split(".")[-1]]
        return super().read_only_property(key)

    def throughput_streams(self, config: Mapping[str, Any]) -> int:
        # two queues: one computes while the host side of the other uploads, reads and launches
        return 2

    def caps(self, config: Mapping[str, Any] | None = None) -> DeviceCaps:
        cfg = config or {}
        d = self.cl_device
        # HETERO_OCL_STYLE=gpu|cpu overrides the kernel shapes (tests run the GPU-shaped kernels on
        # PoCL this way); HETERO_OCL_GEMM=reg|local picks the GEMM kernel
        style = os.environ.get("HETERO_OCL_STYLE", "")
        is_cpu = style == "cpu" or (style != "gpu" and self.kind == "cpu-opencl")
        gemm = os.environ.get("HETERO_OCL_GEMM", "") or ("reg" if is_cpu else "local")
        return DeviceCaps(is_cpu=is_cpu, fp16=self.has_fp16, half_math=self.half_math,
                          half_mode=str(cfg.get("INFERENCE_PRECISION_HINT", "f32")).lower() == "f16",
                          compute_units=int(d.max_compute_units), max_work_group=int(d.max_work_group_size),
                          local_mem=int(d.local_mem_size), gemm_kernel=gemm, max_alloc=int(d.max_mem_alloc_size))

    # ---- the plugin contract -----------------------------------------------------------------------
    def query(self, graph: Graph) -> dict[str, bool | str]:
        plan = build_plan(graph, self.caps(self._config), lenient=True)
        return {n.name: plan.reasons.get(n.name, True) for n in graph.nodes}

    def compile(self, graph: Graph, config: Mapping[str, Any] | None = None):
        from .executable import OpenCLExecutable

        t0 = time.perf_counter()
        cfg = self.config(config)
        caps = self.caps(cfg)
        plan = build_plan(graph, caps, lenient=True)
        calibration_cached = True
        if caps.half_mode and not plan.reasons:
            from .precision import wide_values

            wide, calibration_cached = wide_values(self, graph, caps, cfg)
            if wide:
                plan = build_plan(graph, caps, lenient=True, wide=wide)
        if plan.reasons:
            nodes = {k: {self.name: v} for k, v in plan.reasons.items()}
            lines = "; ".join(f"{k}: {v}" for k, v in list(plan.reasons.items())[:20])
            raise UnsupportedOpError(f"{self.name} cannot run {len(nodes)} node(s) of {graph.name!r}: {lines}", nodes)
        exe = OpenCLExecutable(self, graph, plan, caps, cfg)
        exe.loaded_from_cache = exe.loaded_from_cache and calibration_cached
        exe.compile_time = time.perf_counter() - t0
        return exe

    def is_cached(self, graph: Graph, config: Mapping[str, Any] | None = None) -> bool:
        """True when CACHE_DIR already holds everything ``compile(graph, config)`` would build (every
        program binary, and in f16 the precision calibration), so compiling is quick: AUTO then skips
        its CPU helper."""
        from .programs import cache_file

        cfg = self.config(config)
        cache_dir = str(cfg.get("CACHE_DIR", "") or "")
        if not cache_dir:
            return False
        caps = self.caps(cfg)
        plan = build_plan(graph, caps, lenient=True)
        if plan.reasons or not plan.programs:
            return False
        if caps.half_mode:
            import json

            from .precision import HALF_SAFE, graph_key
            from .programs import device_identity

            key = graph_key(graph, f"{device_identity(self.cl_device)}|{HALF_SAFE}|uniform01-seed0")
            try:
                wide = frozenset(json.loads((Path(cache_dir) / f"hetero_ocl_wide_{key}.json").read_text())["wide"])
            except (OSError, ValueError, KeyError):
                return False
            if wide:
                plan = build_plan(graph, caps, lenient=True, wide=wide)
        return all(cache_file(cache_dir, self.cl_device, k).exists() for k in plan.programs)

    def upload(self, array: np.ndarray) -> DeviceTensor:
        import pyopencl as cl

        from .plan import SLACK_BYTES

        a = np.ascontiguousarray(array)
        buf = cl.Buffer(self.context, cl.mem_flags.READ_WRITE, size=a.nbytes + SLACK_BYTES)
        with self._ctx_lock:
            if self._queue is None:
                self._queue = cl.CommandQueue(self._context, self.cl_device)
            q = self._queue
        if a.nbytes:
            cl.enqueue_copy(q, buf, a)
        return DeviceTensor(buf, tuple(a.shape), a.dtype)

    def download(self, handle: DeviceTensor) -> np.ndarray:
        import pyopencl as cl

        if not isinstance(handle, DeviceTensor):
            raise DeviceError(f"{self.name}: download expects a DeviceTensor from upload(), "
                              f"got {type(handle).__name__}")
        out = np.empty(handle.shape, handle.dtype)
        ctx = self.context  # (takes _ctx_lock itself: not inside it)
        with self._ctx_lock:
            if self._queue is None:
                self._queue = cl.CommandQueue(ctx, self.cl_device)
            q = self._queue
        if out.nbytes:
            cl.enqueue_copy(q, out, handle.buffer)
        return out


def discover() -> list[OpenCLDevice]:
    """Every OpenCL device as GPU.0, GPU.1, ...: discrete GPUs, then integrated, then accelerators, then
    CPU implementations; [] when pyopencl or an OpenCL platform is missing (never raises)."""
    if os.environ.get("HETERO_DISABLE_OPENCL", "") not in ("", "0"):
        return []
    try:
        import pyopencl as cl
    except Exception:
        return []
    from . import icd

    found = []
    try:
        platforms = icd.platforms()
    except Exception:
        return []
    for pi, p in enumerate(platforms):
        try:
            devs = p.get_devices()
        except Exception:
            continue
        for di, d in enumerate(devs):
            try:
                if not d.available:
                    continue
                # a runtime hetero registered itself (icd.py) comes after the loader's own of its kind
                found.append((_TYPE_ORDER[device_kind(d)], p.name in icd.REGISTERED, pi, di, d))
            except Exception:
                continue
    found.sort(key=lambda t: t[:4])
    return [OpenCLDevice(f"GPU.{i}", t[-1]) for i, t in enumerate(found)]
