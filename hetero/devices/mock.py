"""MOCK devices: real plugins for testing scheduling (like OpenVINO's MOCK, tinygrad's NULL).

``MOCK.0`` ... ``MOCK.3`` exist in every process. Each computes real results with the CPU kernels and
is shaped by properties:

===========================  ======================================================================
``MOCK_SUPPORTED_OPS``       ops it claims: "*" (all the CPU runs) or "Conv,Relu,..." ; others get a
                             reason in ``query`` ("TopK: not in MOCK.1's op set")
``MOCK_LATENCY_MS``          fixed time per inference, slept without holding the GIL
``MOCK_SPEED``               or a factor: an inference takes SPEED x the CPU time (1.0 = as fast)
``MOCK_COMPILE_DELAY_MS``    time ``compile`` takes
``MOCK_FAIL_AFTER``          raise DeviceError on every inference after the first N (-1: never)
``MOCK_FAIL_PROBABILITY``    or fail each inference with probability p (seeded by ``MOCK_SEED``)
``MOCK_FAIL_COMPILE``        ``compile`` raises DeviceError
``MOCK_OPTIMAL_REQUESTS``    its OPTIMAL_NUMBER_OF_INFER_REQUESTS (= streams) under the THROUGHPUT and
                             CUMULATIVE_THROUGHPUT hints; LATENCY gives 1; NUM_STREAMS=n gives n;
                             PERFORMANCE_HINT_NUM_REQUESTS caps it (as on CPU and GPU)
``MOCK_DEVICE_TYPE``         what DEVICE_TYPE reports (default "mock"; "discrete" / "integrated" to act
                             as a GPU in AUTO's order, "cpu" to act as AUTO's CPU helper)
``MOCK_CAPABILITIES``        what OPTIMIZATION_CAPABILITIES reports (default "FP32"; AUTO skips a device
                             lacking a precision the model needs)
===========================  ======================================================================

Any of them can also be given per compile (``DEVICE_PROPERTIES={"MOCK.0": {"MOCK_LATENCY_MS": 5}}``
under MULTI/AUTO/HETERO, or the compile config of ``MOCK.0``); a device-level value set with
``set_property`` is read live by running executables (so a test can break a device mid-run).

Deterministic scheduling tests use two gates (Python methods, not properties): ``pause()`` makes
every inference wait at its start until ``resume()``; ``pause_compile()`` makes ``compile`` wait until
``resume_compile()``. Both wait on an Event, without holding the GIL; ``reset()`` opens them.

With ``CACHE_DIR``, ``compile`` leaves a marker file for the graph there; a later compile of the same
graph finds it, skips ``MOCK_COMPILE_DELAY_MS`` and reports LOADED_FROM_CACHE. ``is_cached(graph,
config)`` answers whether it would (AUTO uses it to skip its CPU helper).

AUTO never picks a MOCK device unless it is named.
"""
from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from typing import Any, Mapping

import numpy as np

from .. import properties as P
from ..errors import DeviceError, UnsupportedOpError
from ..ir import Graph
from .base import Device, Executable, ProfileRecord
from .cpu import CPUExecutable, unsupported_reason

N_MOCK = 4

MOCK_KEYS = ("MOCK_SUPPORTED_OPS", "MOCK_LATENCY_MS", "MOCK_SPEED", "MOCK_COMPILE_DELAY_MS", "MOCK_FAIL_AFTER",
             "MOCK_FAIL_PROBABILITY", "MOCK_FAIL_COMPILE", "MOCK_OPTIMAL_REQUESTS", "MOCK_DEVICE_TYPE", "MOCK_SEED",
             "MOCK_CAPABILITIES")

for _k, _doc, _default, _kind in [
    ("MOCK_SUPPORTED_OPS", "MOCK: op types it runs ('*' = all)", "*", "ops"),
    ("MOCK_LATENCY_MS", "MOCK: fixed ms per inference", 0.0, "float"),
    ("MOCK_SPEED", "MOCK: inference time as a multiple of CPU time", 1.0, "float"),
    ("MOCK_COMPILE_DELAY_MS", "MOCK: ms compile takes", 0.0, "float"),
    ("MOCK_FAIL_AFTER", "MOCK: fail every inference after N (-1 never)", -1, "int"),
    ("MOCK_FAIL_PROBABILITY", "MOCK: probability an inference fails", 0.0, "float"),
    ("MOCK_FAIL_COMPILE", "MOCK: compile fails", False, "bool"),
    ("MOCK_OPTIMAL_REQUESTS", "MOCK: optimal number of requests", 1, "int"),
    ("MOCK_DEVICE_TYPE", "MOCK: reported DEVICE_TYPE", "mock", "str"),
    ("MOCK_SEED", "MOCK: seed for failure injection", 0, "int"),
    ("MOCK_CAPABILITIES", "MOCK: reported OPTIMIZATION_CAPABILITIES", "FP32", "str"),
]:
    P.SPECS.setdefault(_k, P.PropSpec(_k, _doc, _default, kind=_kind if _kind in ("int", "bool", "str") else "any"))


def _norm(key: str, value: Any) -> Any:
    if key == "MOCK_SUPPORTED_OPS":
        if isinstance(value, str):
            value = value.strip()
            return "*" if value == "*" else tuple(v.strip() for v in value.split(",") if v.strip())
        return tuple(value)
    if key == "MOCK_CAPABILITIES":
        items = value.split(",") if isinstance(value, str) else list(value)
        return ",".join(str(v).strip().upper() for v in items if str(v).strip())
    if key in ("MOCK_LATENCY_MS", "MOCK_SPEED", "MOCK_COMPILE_DELAY_MS", "MOCK_FAIL_PROBABILITY"):
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise P.PropertyError(f"property {key}: expected a number, got {value!r}") from None
        if v < 0 or (key == "MOCK_FAIL_PROBABILITY" and v > 1):
            rng = "in [0, 1]" if key == "MOCK_FAIL_PROBABILITY" else ">= 0"
            raise P.PropertyError(f"property {key}: expected a number {rng}, got {value!r}")
        return v
    return P.validate(key, value)


class MockDevice(Device):
    family = "MOCK"
    settable = Device.settable + MOCK_KEYS

    def __init__(self, index: int):
        self.name = f"MOCK.{index}"
        self.index = index
        super().__init__()
        self._config.update({k: P.SPECS[k].default for k in MOCK_KEYS})
        self._config["MOCK_SUPPORTED_OPS"] = "*"
        self._count = 0
        self._count_lock = threading.Lock()
        self._rng = random.Random(0)
        # gates for deterministic tests: set = open
        self._run_gate = threading.Event()
        self._run_gate.set()
        self._compile_gate = threading.Event()
        self._compile_gate.set()
        #: inferences started on this device since the last reset (tests count batched executions)
        self.inferences = 0

    # ---- test gates ------------------------------------------------------------------------------
    def pause(self) -> None:
        """Hold every inference at its start until :meth:`resume` (the device looks busy)."""
        self._run_gate.clear()

    def resume(self) -> None:
        self._run_gate.set()

    def pause_compile(self) -> None:
        """Hold ``compile`` (after its delay) until :meth:`resume_compile`."""
        self._compile_gate.clear()

    def resume_compile(self) -> None:
        self._compile_gate.set()

    def set_property(self, props: Mapping[str, Any]) -> None:
        mock = {k: _norm(k, v) for k, v in props.items() if k in MOCK_KEYS}
        rest = {k: v for k, v in props.items() if k not in MOCK_KEYS}
        super().set_property(rest)
        with self._lock:
            self._config.update(mock)
        with self._count_lock:  # the lock _tick counts and rolls under
            if "MOCK_SEED" in mock:
                self._rng = random.Random(mock["MOCK_SEED"])
            if "MOCK_FAIL_AFTER" in mock or "MOCK_FAIL_PROBABILITY" in mock:
                self._count = 0

    def config(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        overrides = dict(overrides or {})
        mock = {k: _norm(k, overrides.pop(k)) for k in list(overrides) if k in MOCK_KEYS}
        cfg = super().config(overrides)
        cfg.update(mock)
        return cfg

    def reset(self) -> None:
        """Back to defaults (tests call this between cases)."""
        with self._lock:
            self._config = P.defaults(Device.settable)
            self._config.update({k: P.SPECS[k].default for k in MOCK_KEYS})
            self._config["MOCK_SUPPORTED_OPS"] = "*"
        with self._count_lock:
            self._count = 0
            self._rng = random.Random(0)
            self.inferences = 0
        self._run_gate.set()
        self._compile_gate.set()

    def read_only_property(self, key: str) -> Any:
        if key == "FULL_DEVICE_NAME":
            return f"Mock device {self.index} (CPU kernels)"
        if key == "DEVICE_TYPE":
            return self._config["MOCK_DEVICE_TYPE"]
        if key == "OPTIMIZATION_CAPABILITIES":
            return [c for c in self._config["MOCK_CAPABILITIES"].split(",") if c]
        if key == "RANGE_FOR_STREAMS":
            return (1, 64)
        if key == "RANGE_FOR_ASYNC_INFER_REQUESTS":
            return (1, 64, 1)
        if key == "AVAILABLE_DEVICES":
            return [str(self.index)]
        return super().read_only_property(key)

    @property
    def auto_priority(self) -> int:  # type: ignore[override]
        """AUTO's order as for real devices of that DEVICE_TYPE; a plain "mock" ranks as "other"."""
        return {"discrete": 30, "integrated": 20, "cpu-opencl": 10, "cpu": 0}.get(self._config["MOCK_DEVICE_TYPE"], 5)

    def throughput_streams(self, config: Mapping[str, Any]) -> int:
        return int(config.get("MOCK_OPTIMAL_REQUESTS", 1))

    def _op_reason(self, graph: Graph, node, ops) -> str | None:
        if ops != "*" and node.op_type not in ops:
            return f"{node.op_type}: not in {self.name}'s op set"
        return unsupported_reason(graph, node)

    def query(self, graph: Graph) -> dict[str, bool | str]:
        ops = self._config["MOCK_SUPPORTED_OPS"]
        return {n.name: (self._op_reason(graph, n, ops) or True) for n in graph.nodes}

    def _cache_file(self, graph: Graph, cfg: Mapping[str, Any]) -> str | None:
        d = cfg.get("CACHE_DIR") or ""
        return os.path.join(d, f"hetero_mock{self.index}_{graph_fingerprint(graph)}.blob") if d else None

    def is_cached(self, graph: Graph, config: Mapping[str, Any] | None = None) -> bool:
        """True when CACHE_DIR holds this graph compiled for this device (compile would be quick)."""
        path = self._cache_file(graph, self.config(config))
        return bool(path and os.path.exists(path))

    def compile(self, graph: Graph, config: Mapping[str, Any] | None = None) -> "MockExecutable":
        cfg = self.config(config)
        t0 = time.perf_counter()
        cached = self._cache_file(graph, cfg)
        from_cache = bool(cached and os.path.exists(cached))
        if cfg["MOCK_COMPILE_DELAY_MS"] and not from_cache:
            time.sleep(cfg["MOCK_COMPILE_DELAY_MS"] / 1e3)
        self._compile_gate.wait()
        if cfg["MOCK_FAIL_COMPILE"]:
            raise DeviceError(f"{self.name}: compile failed (injected by MOCK_FAIL_COMPILE)")
        ops = cfg["MOCK_SUPPORTED_OPS"]
        bad = {n.name: {self.name: r} for n in graph.nodes if (r := self._op_reason(graph, n, ops))}
        if bad:
            lines = "; ".join(f"{k}: {v[self.name]}" for k, v in bad.items())
            raise UnsupportedOpError(f"{self.name} cannot run {len(bad)} node(s): {lines}", bad)
        exe = MockExecutable(self, CPUExecutable(graph, self.name), cfg)
        if cached and not from_cache:
            try:
                os.makedirs(os.path.dirname(cached), exist_ok=True)
                with open(cached, "w") as f:
                    f.write(f"{self.name} {graph.name}\n")
            except OSError:
                pass  # a cache that cannot be written is not an error (as on real devices)
        exe.loaded_from_cache = from_cache
        exe.compile_time = time.perf_counter() - t0
        return exe

    def _tick(self, cfg) -> None:
        """Count an inference; raise if failure injection says so."""
        with self._count_lock:
            self.inferences += 1
            self._count += 1
            n = self._count
            p = cfg["MOCK_FAIL_PROBABILITY"]
            roll = self._rng.random() if p else 1.0
        after = int(cfg["MOCK_FAIL_AFTER"])
        if after >= 0 and n > after:
            raise DeviceError(f"{self.name}: injected failure (inference {n} > MOCK_FAIL_AFTER={after})")
        if roll < p:
            raise DeviceError(f"{self.name}: injected failure (probability {p})")


class MockExecutable(Executable):
    def __init__(self, device: MockDevice, inner: CPUExecutable, cfg: dict[str, Any]):
        self.device = device
        self.inner = inner
        self.graph = inner.graph
        self.device_name = device.name
        self.cfg = cfg

    def run(self, feeds, context=None, profile: list[ProfileRecord] | None = None):
        # failure settings are read live from the device so tests can break it mid-run
        live = dict(self.cfg)
        for k in ("MOCK_FAIL_AFTER", "MOCK_FAIL_PROBABILITY", "MOCK_LATENCY_MS", "MOCK_SPEED"):
            if self.device._config.get(k) != P.SPECS[k].default:
                live[k] = self.device._config[k]
        self.device._run_gate.wait()
        self.device._tick(live)
        t0 = time.perf_counter()
        out = self.inner.run(feeds, context, profile)
        spent = time.perf_counter() - t0
        target = live["MOCK_LATENCY_MS"] / 1e3 if live["MOCK_LATENCY_MS"] else spent * live["MOCK_SPEED"]
        if target > spent:
            time.sleep(target - spent)  # releases the GIL
        return out


def _attr_key(v: Any) -> Any:
    """An attribute value as something with a stable repr (tensors by content, subgraphs by fingerprint)."""
    if isinstance(v, Graph):
        return graph_fingerprint(v)
    if isinstance(v, np.ndarray):
        return (str(v.dtype), v.shape, hashlib.sha256(v.tobytes()).hexdigest() if v.dtype != object else repr(v))
    if isinstance(v, (list, tuple)):
        return tuple(_attr_key(x) for x in v)
    return v


def graph_fingerprint(graph: Graph) -> str:
    """A short stable hash of a graph's structure and weights (the CACHE_DIR key)."""
    h = hashlib.sha256(graph.name.encode())
    for n in graph.nodes:
        attrs = sorted((k, _attr_key(v)) for k, v in n.attrs.items())  # values too: a different kernel
        h.update(repr((n.name, n.op_type, n.domain, n.inputs, n.outputs, attrs)).encode())  # size is another model
    for t in graph.inputs + graph.outputs:
        h.update(t.describe().encode() + t.name.encode())
    for k in sorted(graph.initializers):
        a = graph.initializers[k]
        h.update(f"{k}{a.dtype}{a.shape}".encode())
        if a.dtype != object:
            h.update(memoryview(a.tobytes()))
    return h.hexdigest()[:32]


_DEVICES: list[MockDevice] | None = None


def discover() -> list[MockDevice]:
    global _DEVICES
    if _DEVICES is None:
        _DEVICES = [MockDevice(i) for i in range(N_MOCK)]
    return _DEVICES
