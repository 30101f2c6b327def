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
``MOCK_OPTIMAL_REQUESTS``    its OPTIMAL_NUMBER_OF_INFER_REQUESTS (= streams)
``MOCK_DEVICE_TYPE``         what DEVICE_TYPE reports (default "mock"; "discrete" to act as a GPU)
===========================  ======================================================================

AUTO never picks a MOCK device unless it is named.
"""
from __future__ import annotations

import random
import threading
import time
from typing import Any, Mapping

from .. import properties as P
from ..errors import DeviceError, UnsupportedOpError
from ..ir import Graph
from .base import Device, Executable, ProfileRecord
from .cpu import CPUExecutable, unsupported_reason

N_MOCK = 4

MOCK_KEYS = ("MOCK_SUPPORTED_OPS", "MOCK_LATENCY_MS", "MOCK_SPEED", "MOCK_COMPILE_DELAY_MS", "MOCK_FAIL_AFTER",
             "MOCK_FAIL_PROBABILITY", "MOCK_FAIL_COMPILE", "MOCK_OPTIMAL_REQUESTS", "MOCK_DEVICE_TYPE", "MOCK_SEED")

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
]:
    P.SPECS.setdefault(_k, P.PropSpec(_k, _doc, _default, kind=_kind if _kind in ("int", "bool", "str") else "any"))


def _norm(key: str, value: Any) -> Any:
    if key == "MOCK_SUPPORTED_OPS":
        if isinstance(value, str):
            value = value.strip()
            return "*" if value == "*" else tuple(v.strip() for v in value.split(",") if v.strip())
        return tuple(value)
    if key in ("MOCK_LATENCY_MS", "MOCK_SPEED", "MOCK_COMPILE_DELAY_MS", "MOCK_FAIL_PROBABILITY"):
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise P.PropertyError(f"property {key}: expected a number, got {value!r}") from None
        if v < 0 or (key == "MOCK_FAIL_PROBABILITY" and v > 1):
            raise P.PropertyError(f"property {key}: expected a number in range, got {value!r}")
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

    def set_property(self, props: Mapping[str, Any]) -> None:
        mock = {k: _norm(k, v) for k, v in props.items() if k in MOCK_KEYS}
        rest = {k: v for k, v in props.items() if k not in MOCK_KEYS}
        super().set_property(rest)
        with self._lock:
            self._config.update(mock)
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
            self._count = 0
            self._rng = random.Random(0)

    def read_only_property(self, key: str) -> Any:
        if key == "FULL_DEVICE_NAME":
            return f"Mock device {self.index} (CPU kernels)"
        if key == "DEVICE_TYPE":
            return self._config["MOCK_DEVICE_TYPE"]
        if key == "OPTIMIZATION_CAPABILITIES":
            return ["FP32"]
        if key == "RANGE_FOR_STREAMS":
            return (1, 64)
        if key == "RANGE_FOR_ASYNC_INFER_REQUESTS":
            return (1, 64, 1)
        if key == "AVAILABLE_DEVICES":
            return [str(self.index)]
        return super().read_only_property(key)

    @property
    def auto_priority(self) -> int:  # type: ignore[override]
        return {"discrete": 30, "integrated": 20}.get(self._config["MOCK_DEVICE_TYPE"], 5)

    def optimal_streams(self, config: Mapping[str, Any]) -> int:
        n = config.get("NUM_STREAMS", "AUTO")
        return int(n) if n != "AUTO" else int(config.get("MOCK_OPTIMAL_REQUESTS", 1))

    def _op_reason(self, graph: Graph, node, ops) -> str | None:
        if ops != "*" and node.op_type not in ops:
            return f"{node.op_type}: not in {self.name}'s op set"
        return unsupported_reason(graph, node)

    def query(self, graph: Graph) -> dict[str, bool | str]:
        ops = self._config["MOCK_SUPPORTED_OPS"]
        return {n.name: (self._op_reason(graph, n, ops) or True) for n in graph.nodes}

    def compile(self, graph: Graph, config: Mapping[str, Any] | None = None) -> "MockExecutable":
        cfg = self.config(config)
        t0 = time.perf_counter()
        if cfg["MOCK_COMPILE_DELAY_MS"]:
            time.sleep(cfg["MOCK_COMPILE_DELAY_MS"] / 1e3)
        if cfg["MOCK_FAIL_COMPILE"]:
            raise DeviceError(f"{self.name}: compile failed (injected by MOCK_FAIL_COMPILE)")
        ops = cfg["MOCK_SUPPORTED_OPS"]
        bad = {n.name: {self.name: r} for n in graph.nodes if (r := self._op_reason(graph, n, ops))}
        if bad:
            lines = "; ".join(f"{k}: {v[self.name]}" for k, v in bad.items())
            raise UnsupportedOpError(f"{self.name} cannot run {len(bad)} node(s): {lines}", bad)
        exe = MockExecutable(self, CPUExecutable(graph, self.name), cfg)
        exe.compile_time = time.perf_counter() - t0
        return exe

    def _tick(self, cfg) -> None:
        """Count an inference; raise if failure injection says so."""
        with self._count_lock:
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
        self.device._tick(live)
        t0 = time.perf_counter()
        out = self.inner.run(feeds, context, profile)
        spent = time.perf_counter() - t0
        target = live["MOCK_LATENCY_MS"] / 1e3 if live["MOCK_LATENCY_MS"] else spent * live["MOCK_SPEED"]
        if target > spent:
            time.sleep(target - spent)  # releases the GIL
        return out


_DEVICES: list[MockDevice] | None = None


def discover() -> list[MockDevice]:
    global _DEVICES
    if _DEVICES is None:
        _DEVICES = [MockDevice(i) for i in range(N_MOCK)]
    return _DEVICES
