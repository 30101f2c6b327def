"""The device plugin interface.

A plugin is synchronous: it answers ``query(graph)``, compiles a (sub)graph into an
:class:`Executable`, and moves arrays to and from its memory. Async requests, pools, streams and
scheduling live above it, in ``hetero.runtime`` and ``hetero.multi``.
"""
from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ..errors import PropertyError
from ..ir import Graph
from .. import properties as P


@dataclass
class ProfileRecord:
    """One per-layer counter (mirrors OpenVINO's ProfilingInfo)."""

    node_name: str
    node_type: str
    exec_type: str
    real_time: float = 0.0  # seconds
    cpu_time: float = 0.0
    status: str = "EXECUTED"  # EXECUTED | NOT_RUN | OPTIMIZED_OUT
    nbytes: int = 0


class Executable(ABC):
    """A compiled (sub)graph bound to one device.

    ``run`` may be called concurrently from several threads, each with its own ``context``
    (from ``new_context()``): per-request state such as scratch buffers lives in the context.
    """

    device_name: str
    graph: Graph
    # wall time spent compiling, seconds
    compile_time: float = 0.0
    loaded_from_cache: bool = False

    def new_context(self) -> Any:
        return None

    @abstractmethod
    def run(self, feeds: Mapping[str, Any], context: Any = None,
            profile: list[ProfileRecord] | None = None) -> dict[str, Any]:
        """Run on host arrays ``feeds`` (graph input name -> array); return graph output name -> array.
        When ``profile`` is a list, append one ProfileRecord per node."""

    def optimal_streams(self, hint: str) -> int:
        return 1


class Device(ABC):
    """A device plugin instance, e.g. ``CPU`` or ``GPU.0``."""

    #: full name, e.g. "GPU.0"
    name: str
    #: family, e.g. "GPU"
    family: str
    #: keys ``set_property`` accepts (validated through hetero.properties)
    settable: tuple[str, ...] = ("PERFORMANCE_HINT", "PERFORMANCE_HINT_NUM_REQUESTS", "NUM_STREAMS",
                                 "INFERENCE_NUM_THREADS", "INFERENCE_PRECISION_HINT", "PERF_COUNT",
                                 "CACHE_DIR", "LOG_LEVEL", "MODEL_PRIORITY")
    readable: tuple[str, ...] = ("FULL_DEVICE_NAME", "DEVICE_TYPE", "OPTIMIZATION_CAPABILITIES",
                                 "SUPPORTED_PROPERTIES", "RANGE_FOR_STREAMS",
                                 "RANGE_FOR_ASYNC_INFER_REQUESTS", "AVAILABLE_DEVICES")
    #: AUTO's preference: larger is preferred (discrete GPU 30, integrated 20, other 10, CPU 0)
    auto_priority: int = 0

    def __init__(self) -> None:
        self._config: dict[str, Any] = P.defaults(self.settable)
        self._lock = threading.Lock()

    # ---- properties ------------------------------------------------------------------------
    def set_property(self, props: Mapping[str, Any]) -> None:
        clean = {k: P.validate(k, v, self.settable, where=self.name) for k, v in props.items()}
        with self._lock:
            self._config.update(clean)

    def get_property(self, key: str) -> Any:
        if key in self._config:
            return self._config[key]
        if key == "SUPPORTED_PROPERTIES":
            return list(self.settable) + list(self.readable)
        if key in self.readable:
            return self.read_only_property(key)
        raise PropertyError(f"unknown property for {self.name}: "
                            + P.suggest(key, list(self.settable) + list(self.readable)))

    def read_only_property(self, key: str) -> Any:
        raise PropertyError(f"{self.name} does not report {key}")

    def config(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Device defaults merged with validated per-compile overrides."""
        cfg = dict(self._config)
        for k, v in (overrides or {}).items():
            cfg[k] = P.validate(k, v, self.settable, where=self.name)
        return cfg

    # ---- the plugin contract -----------------------------------------------------------------
    @abstractmethod
    def query(self, graph: Graph) -> dict[str, bool | str]:
        """node name -> True if this device runs it, else a reason string."""

    @abstractmethod
    def compile(self, graph: Graph, config: Mapping[str, Any] | None = None) -> Executable:
        """Compile ``graph`` (already transformed) for this device."""

    def upload(self, array: np.ndarray) -> Any:
        return array

    def download(self, handle: Any) -> np.ndarray:
        return np.asarray(handle)

    def optimal_streams(self, config: Mapping[str, Any]) -> int:
        """Streams this device uses under ``config``: NUM_STREAMS when given; else 1 for LATENCY and
        ``throughput_streams(config)`` for the throughput hints, capped by PERFORMANCE_HINT_NUM_REQUESTS."""
        n = config.get("NUM_STREAMS", "AUTO")
        if n != "AUTO":
            return int(n)
        if config.get("PERFORMANCE_HINT", "LATENCY") not in ("THROUGHPUT", "CUMULATIVE_THROUGHPUT"):
            return 1
        n = max(1, int(self.throughput_streams(config)))
        cap = int(config.get("PERFORMANCE_HINT_NUM_REQUESTS", 0) or 0)
        return min(n, cap) if cap else n

    def throughput_streams(self, config: Mapping[str, Any]) -> int:
        """Streams that keep this device busy under the THROUGHPUT hint (before the request cap)."""
        return 1

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def timed(fn, *a, **kw):
    t0 = time.perf_counter()
    r = fn(*a, **kw)
    return r, time.perf_counter() - t0
