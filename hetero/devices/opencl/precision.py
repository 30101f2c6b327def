"""f16 mixed precision: which tensors keep float storage under INFERENCE_PRECISION_HINT f16.

In f16 mode tensors are stored as half (vload_half / vstore_half; arithmetic in float). Half holds
magnitudes up to 65504 only; a network whose activations grow past that would turn them into inf
and its outputs into NaN (onnx's light models do: ResNet-50's reach 1e10). So compile calibrates:

1. plan and compile the graph in f32 with every value kept readable (``probe``);
2. run it once on a calibration input -- uniform [0, 1) for float inputs (image-like data), zeros
   for integer ones -- and read every value back;
3. values that are not finite, or whose magnitude comes within 16x of the half range
   (> HALF_SAFE = 4096), and float32 constants that large, are *wide*: they keep float storage;
4. the f16 plan runs a node on half storage unless it touches a wide value; where a half node and a
   float node share a value, the consumer gets one converted copy (a conversion launch, like
   OpenVINO's Convert between precisions).

Traced example (light ResNet-50, f16): the stem and first blocks stay under 4096 and run in half;
from the point activations pass it, the remaining layers store float; the output is finite and
within the f16 tolerance. A network whose values stay in range runs entirely in half.

With a CACHE_DIR the result is stored (``hetero_ocl_wide_<hash>.json``, keyed by the graph, its
weights, the device and the calibration settings), so a cached compile skips the calibration run.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ...ir import Graph
from .plan import HALF_SAFE, DeviceCaps, build_plan  # noqa: F401  (HALF_SAFE: this module's bound)


def calibration_feeds(plan, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in plan.inputs:
        if np.dtype(spec.dtype).kind == "f":
            feeds[spec.name] = rng.random(spec.shape).astype(spec.dtype)
        else:
            feeds[spec.name] = np.zeros(spec.shape, spec.dtype)
    return feeds


def graph_key(graph: Graph, extra: str) -> str:
    """A digest of everything the calibration depends on."""
    h = hashlib.sha256(extra.encode())
    for n in graph.nodes:
        h.update(repr((n.name, n.op_type, n.domain, n.inputs, n.outputs, sorted(map(str, n.attrs.items())))).encode())
    for t in graph.inputs + graph.outputs:
        h.update(repr((t.name, str(t.dtype), t.shape)).encode())
    for name in sorted(graph.initializers):
        a = np.ascontiguousarray(graph.initializers[name])
        h.update(repr((name, str(a.dtype), a.shape)).encode())
        if a.dtype != object:
            h.update(a.view(np.uint8).data)
    return h.hexdigest()[:40]


def wide_values(device, graph: Graph, caps: DeviceCaps, config: Mapping[str, Any]) -> tuple[frozenset[str], bool]:
    """(values of ``graph`` that need float storage in f16 mode, whether that came from CACHE_DIR)."""
    cache_dir = str(config.get("CACHE_DIR", "") or "")
    path = None
    if cache_dir:
        from .programs import device_identity

        key = graph_key(graph, f"{device_identity(device.cl_device)}|{HALF_SAFE}|uniform01-seed0")
        path = Path(cache_dir) / f"hetero_ocl_wide_{key}.json"
        try:
            return frozenset(json.loads(path.read_text())["wide"]), True
        except (OSError, ValueError, KeyError):
            pass
    wide = _calibrate(device, graph, caps, config)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp_hetero_ocl_")
            with os.fdopen(fd, "w") as f:
                json.dump({"wide": sorted(wide)}, f)
            os.replace(tmp, path)
        except OSError:
            pass
    return wide, False


def _calibrate(device, graph: Graph, caps: DeviceCaps, config: Mapping[str, Any]) -> frozenset[str]:
    from .executable import OpenCLExecutable

    caps32 = dataclasses.replace(caps, half_mode=False, half_math=False)
    plan = build_plan(graph, caps32, lenient=True)
    if plan.reasons:
        return frozenset()
    wide = set()
    for name, a in graph.initializers.items():
        a = np.asarray(a)
        if a.dtype == np.float32 and a.size and (not np.all(np.isfinite(a)) or np.abs(a).max() > HALF_SAFE):
            wide.add(name)
    exe = OpenCLExecutable(device, graph, plan, caps32, config, probe=True)
    for name, a in exe.probe(calibration_feeds(plan)).items():
        if a.dtype.kind == "f" and a.size:
            with np.errstate(all="ignore"):
                if not np.all(np.isfinite(a)) or float(np.abs(a).max()) > HALF_SAFE:
                    wide.add(name)
    return frozenset(wide)
