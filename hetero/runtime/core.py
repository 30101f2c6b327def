"""Core: the entry point (devices, reading and compiling models), as in OpenVINO's ``ov.Core``."""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import onnx

from ..devices.registry import ParsedDevice, parse, registry
from ..errors import DeviceError, DeviceStringError, PropertyError, UnsupportedOpError
from ..ir import Graph
from ..onnx_import import read_model as _read_model
from .. import properties as P
from .. import trace
from .compiled import CompiledModel


@dataclass(frozen=True)
class Version:
    description: str
    build_number: str


def as_graph(model: Any) -> Graph:
    """A Graph from a Graph, path, bytes or ModelProto."""
    if isinstance(model, Graph):
        return model
    return _read_model(model)


class Core:
    """Devices, models and compilation."""

    def __init__(self) -> None:
        self._registry = registry()
        self._global: dict[str, Any] = {}

    # ---- devices -----------------------------------------------------------------------------
    @property
    def available_devices(self) -> list[str]:
        """Real devices present: "CPU", "GPU.0", ... (MOCK devices are listed only once configured)."""
        return self._registry.available()

    def get_versions(self, device_name: str) -> dict[str, Version]:
        from .. import __version__

        parsed = parse(device_name)
        names = [i.name for i in parsed.items] if parsed.virtual is None else [parsed.virtual]
        out = {}
        for n in names:
            if parsed.virtual is None:
                self._registry.get(n)
            out[n] = Version(f"hetero {n} plugin", __version__)
        return out

    def get_property(self, device_name: str, key: str) -> Any:
        parsed = parse(device_name)
        if parsed.virtual is not None:
            if key == "SUPPORTED_PROPERTIES":
                return sorted(k for k, s in P.SPECS.items())
            if key == "FULL_DEVICE_NAME":
                return parsed.virtual
            if key in self._global.get(parsed.virtual, {}):
                return self._global[parsed.virtual][key]
            if key in P.SPECS and not P.SPECS[key].read_only:
                return P.SPECS[key].default
            raise PropertyError(f"{parsed.virtual} has no readable property " + P.suggest(key, P.SPECS))
        return self._registry.get(parsed.items[0], device_name).get_property(key)

    def set_property(self, device_name: Any = None, properties: Mapping[str, Any] | None = None) -> None:
        """``set_property("CPU", {...})`` for one device, or ``set_property({...})`` for every device."""
        if isinstance(device_name, Mapping) and properties is None:
            properties, device_name = device_name, None
        props = dict(properties or {})
        if device_name is None:
            for d in [self._registry.get(n) for n in self._registry.available()]:
                d.set_property({k: v for k, v in props.items() if k in d.settable})
            unknown = [k for k in props if k not in P.SPECS]
            if unknown:
                raise PropertyError("unknown property " + P.suggest(unknown[0], P.SPECS))
            return
        parsed = parse(device_name)
        if parsed.virtual is not None:
            clean = {k: P.validate(k, v) for k, v in props.items()}
            self._global.setdefault(parsed.virtual, {}).update(clean)
            return
        self._registry.get(parsed.items[0], device_name).set_property(props)

    # ---- models ------------------------------------------------------------------------------
    def read_model(self, model: Any, weights: Any = None) -> Graph:
        """Read an ONNX model from a path, bytes or ``onnx.ModelProto``."""
        return _read_model(model)

    def compile_model(self, model: Any, device_name: str | None = None,
                      config: Mapping[str, Any] | None = None) -> CompiledModel:
        """Compile ``model`` for ``device_name`` ("CPU", "GPU.1", "HETERO:GPU,CPU", "MULTI:...", "AUTO")."""
        if isinstance(device_name, Mapping) and config is None:
            device_name, config = None, device_name
        device_name = device_name or "AUTO"
        parsed = parse(device_name)
        config = dict(config or {})
        for k, v in self._global.get(parsed.virtual or "", {}).items():
            config.setdefault(k, v)
        graph = as_graph(model)
        # HETERO_TRACE_FILE belongs to the runtime, not to a device plugin: every device string accepts it,
        # and it is taken out here so that MULTI/AUTO's per-device compiles do not each open the file
        trace_file = P.validate("HETERO_TRACE_FILE", config.pop("HETERO_TRACE_FILE", ""))
        tracer = trace.tracer_for(trace_file)
        t0 = time.perf_counter_ns()
        compiled = self._compile(graph, parsed, config)
        compiled._extra.setdefault("COMPILE_TIME_MS", (time.perf_counter_ns() - t0) / 1e6)
        if tracer.enabled:
            tracer.complete(compiled._device_name, "compile_model", t0, time.perf_counter_ns(), cat="compile")
            compiled.set_tracer(tracer)
        return compiled

    def _compile(self, graph: Graph, parsed: ParsedDevice, config: dict[str, Any]) -> CompiledModel:
        if parsed.virtual is None:
            return compile_single(self, graph, parsed, config)
        if parsed.virtual == "HETERO":
            from .hetero import compile_hetero

            return compile_hetero(self, graph, parsed, config)
        try:
            from .. import multi
        except ImportError:
            multi = None
        if parsed.virtual == "AUTO" and (multi is None or not hasattr(multi, "compile_auto")):
            # until AUTO lands: the best single device, in AUTO's order
            return compile_single(self, graph, parse(self._auto_fallback(parsed)), config)
        if multi is None or not hasattr(multi, f"compile_{parsed.virtual.lower()}"):
            raise DeviceError(f"{parsed.virtual} is not available in this build")
        return getattr(multi, f"compile_{parsed.virtual.lower()}")(self, graph, parsed, config)

    def _auto_fallback(self, parsed: ParsedDevice) -> str:
        excluded = {i.name for i in parsed.items if i.exclude}
        listed = [i.name for i in parsed.items if not i.exclude]
        cands = listed or [n for n in self.available_devices if n not in excluded]
        devs = [self._registry.get(n) for n in cands]
        devs.sort(key=lambda d: -d.auto_priority)
        if not devs:
            raise DeviceError(f"AUTO: no device left to choose from; available: {self.available_devices}")
        return devs[0].name

    def query_model(self, model: Any, device_name: str, config: Mapping[str, Any] | None = None) -> dict[str, str]:
        """{node name: device} for the nodes ``device_name`` can run (HETERO: the full assignment)."""
        graph = prepare_graph(as_graph(model))
        parsed = parse(device_name)
        if parsed.virtual == "HETERO":
            from .hetero import query_hetero

            return query_hetero(self, graph, parsed, dict(config or {}))
        if parsed.virtual is None:
            dev = self._registry.get(parsed.items[0], device_name)
            devs, target = [dev], dev.name
        else:  # MULTI / AUTO: nodes every listed device supports
            devs = [self._registry.get(i, device_name) for i in parsed.items if not i.exclude]
            if not devs:
                devs = [self._registry.get(self._auto_fallback(parsed))]
            target = device_name
        answers = [d.query(graph) for d in devs]
        out: dict[str, str] = {}
        for n in graph.nodes:  # graph order; originals fused into a node follow it (as HETERO's query)
            if all(a.get(n.name) is True for a in answers):
                out[n.name] = target
                out.update((f, target) for f in n.fused)
        return out


def prepare_graph(graph: Graph) -> Graph:
    """The compile-time graph passes (constant folding, fusion, ...)."""
    try:
        from ..transforms import optimize
    except ImportError:
        return graph
    return optimize(graph)


def compile_single(core: Core, graph: Graph, parsed: ParsedDevice, config: dict[str, Any]) -> CompiledModel:
    spec = parsed.items[0]
    dev = core._registry.get(spec, parsed.text)
    cfg = dev.config({k: v for k, v in config.items() if k in dev.settable})
    for k in config:
        if k not in dev.settable:
            P.validate(k, config[k], dev.settable, where=dev.name)  # read-only / unknown, with a suggestion
    optimized = prepare_graph(graph)
    exe = dev.compile(optimized, cfg)
    streams = dev.optimal_streams(cfg)
    if spec.nreq is not None:
        streams = max(streams, 1)
    extra = {"COMPILE_TIME_MS": exe.compile_time * 1e3, "LOADED_FROM_CACHE": exe.loaded_from_cache}
    if spec.nreq is not None:
        extra["OPTIMAL_NUMBER_OF_INFER_REQUESTS"] = spec.nreq
    cm = CompiledModel(optimized, exe, dev.name, cfg, streams=streams, execution_devices=[dev.name],
                       extra_properties=extra, original=graph)
    if os.environ.get("HETERO_DEBUG", "0") not in ("", "0"):  # HETERO_DEBUG=0 means off
        print(f"[hetero] compiled {graph.name!r} on {dev.name}: {len(optimized.nodes)} nodes, "
              f"{streams} stream(s), {exe.compile_time * 1e3:.1f} ms", file=sys.stderr)
    return cm


_DEFAULT_CORE: Core | None = None


def default_core() -> Core:
    global _DEFAULT_CORE
    if _DEFAULT_CORE is None:
        _DEFAULT_CORE = Core()
    return _DEFAULT_CORE


def compile_model(model: Any, device_name: str | None = None, config: Mapping[str, Any] | None = None) -> CompiledModel:
    """Module-level shortcut: ``hetero.compile_model(model, "CPU")``."""
    return default_core().compile_model(model, device_name, config)
