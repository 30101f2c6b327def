"""Property keys: their types, defaults, accepted values, and validation.

Keys are OpenVINO's where one exists (``PERFORMANCE_HINT``, ``NUM_STREAMS``, ...) plus hetero's own.
``validate(key, value, accepted_keys)`` returns the normalised value or raises PropertyError naming the
key and what it accepts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .errors import PropertyError, suggest


@dataclass(frozen=True)
class PropSpec:
    key: str
    doc: str
    default: Any = None
    choices: tuple | None = None  # accepted values (normalised, upper-case strings)
    kind: str = "str"  # str | int | bool | dict | float | any
    read_only: bool = False
    minimum: int | None = None


def _spec(*args, **kw) -> tuple[str, PropSpec]:
    s = PropSpec(*args, **kw)
    return s.key, s


SPECS: dict[str, PropSpec] = dict([
    _spec("PERFORMANCE_HINT", "latency vs throughput trade-off", "LATENCY",
          ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")),
    _spec("PERFORMANCE_HINT_NUM_REQUESTS", "cap on requests the app keeps in flight (0: no cap)", 0, kind="int",
          minimum=0),
    _spec("NUM_STREAMS", "parallel execution streams (int >= 1 or AUTO)", "AUTO", kind="streams"),
    _spec("INFERENCE_NUM_THREADS", "threads for one inference (0: all cores)", 0, kind="int", minimum=0),
    _spec("INFERENCE_PRECISION_HINT", "compute precision", "f32", ("F32", "F16"), kind="lowerstr"),
    _spec("PERF_COUNT", "collect per-layer profiling counters", False, kind="bool"),
    _spec("CACHE_DIR", "folder for compiled-model cache ('' disables)", "", kind="str"),
    _spec("DEVICE_ID", "device index", "0", kind="str"),
    _spec("DEVICE_PROPERTIES", "per-device settings {device: {key: value}}", None, kind="dict"),
    _spec("MULTI_DEVICE_PRIORITIES", "device list, fastest first", "", kind="str"),
    _spec("SCHEDULE_POLICY", "MULTI dispatch policy", "DEVICE_PRIORITY", ("DEVICE_PRIORITY", "ROUND_ROBIN")),
    _spec("ENABLE_STARTUP_FALLBACK", "AUTO serves from CPU while the accelerator compiles", True, kind="bool"),
    _spec("ENABLE_RUNTIME_FALLBACK", "re-run a failed request on another device", True, kind="bool"),
    _spec("AUTO_BATCH_TIMEOUT", "ms BATCH waits to fill a batch", 1000, kind="int", minimum=0),
    _spec("AFFINITY", "manual per-node affinity {node_name: device}", None, kind="dict"),
    _spec("AFFINITY_RULES", "ordered rules 'OpType=DEV; name_glob*=DEV'", "", kind="str"),
    _spec("AFFINITY_POLICY", "how HETERO assigns the rest", "FALLBACK", ("FALLBACK", "COST")),
    _spec("HETERO_DUMP_GRAPH_DOT", "write affinity/subgraph .dot files at compile", False, kind="bool"),
    _spec("HETERO_DUMP_DIR", "folder for .dot dumps", ".", kind="str"),
    _spec("HETERO_TRACE_FILE", "write a Chrome-trace JSON of execution", "", kind="str"),
    _spec("MODEL_PRIORITY", "relative priority of this model", "MEDIUM", ("LOW", "MEDIUM", "HIGH")),
    _spec("LOG_LEVEL", "logging verbosity", "LOG_NONE",
          ("LOG_NONE", "LOG_ERROR", "LOG_WARNING", "LOG_INFO", "LOG_DEBUG", "LOG_TRACE")),
    # read-only
    _spec("AVAILABLE_DEVICES", "devices of this plugin", read_only=True, kind="any"),
    _spec("FULL_DEVICE_NAME", "human-readable device name", read_only=True),
    _spec("DEVICE_TYPE", "discrete / integrated / cpu / cpu-opencl / mock", read_only=True),
    _spec("OPTIMIZATION_CAPABILITIES", "precisions and features", read_only=True, kind="any"),
    _spec("SUPPORTED_PROPERTIES", "keys this object accepts", read_only=True, kind="any"),
    _spec("RANGE_FOR_STREAMS", "min/max streams", read_only=True, kind="any"),
    _spec("RANGE_FOR_ASYNC_INFER_REQUESTS", "min/max/step requests", read_only=True, kind="any"),
    _spec("OPTIMAL_NUMBER_OF_INFER_REQUESTS", "requests to keep in flight", read_only=True, kind="int"),
    _spec("EXECUTION_DEVICES", "devices executing the compiled model", read_only=True, kind="any"),
    _spec("MODEL_NAME", "name of the compiled model", read_only=True),
    _spec("NETWORK_NAME", "name of the compiled model (alias)", read_only=True),
    _spec("LOADED_FROM_CACHE", "compiled model came from CACHE_DIR", read_only=True, kind="bool"),
    _spec("DEVICE_MEMORY_SIZE", "bytes of device memory", read_only=True, kind="int"),
    _spec("COMPUTE_UNITS", "compute units / cores", read_only=True, kind="int"),
    _spec("DEVICE_ARCHITECTURE", "architecture string", read_only=True),
    _spec("COMPILE_TIME_MS", "wall time of compile_model", read_only=True, kind="any"),
    _spec("MULTI_SERVED_REQUESTS", "MULTI/AUTO: {device: requests it served}", read_only=True, kind="dict"),
])

_TRUE = {"TRUE", "YES", "1", "ON"}
_FALSE = {"FALSE", "NO", "0", "OFF"}


def validate(key: str, value: Any, accepted: tuple[str, ...] | frozenset[str] | None = None,
             where: str = "") -> Any:
    """Check a (key, value) pair; return the normalised value or raise PropertyError."""
    spec = SPECS.get(key)
    if spec is not None and spec.read_only:  # say so, rather than "unknown" because no device accepts it
        raise PropertyError(f"property {key!r} is read-only{' on ' + where if where else ''}")
    if spec is None or (accepted is not None and key not in accepted):
        scope = f" for {where}" if where else ""
        raise PropertyError(f"unknown property{scope}: "
                            + suggest(key, accepted if accepted is not None else SPECS))
    return _normalise(spec, value)


def _bad(spec: PropSpec, value: Any, expected: str) -> PropertyError:
    return PropertyError(f"property {spec.key}: expected {expected}, got {value!r}")


def _normalise(spec: PropSpec, value: Any) -> Any:
    k = spec.kind
    if k == "bool":
        if isinstance(value, bool):
            return value
        s = str(value).upper()
        if s in _TRUE:
            return True
        if s in _FALSE:
            return False
        raise _bad(spec, value, "a boolean (True/False, YES/NO)")
    if k == "int":
        try:
            v = int(value)
            if isinstance(value, float) and v != value:
                raise ValueError
        except (TypeError, ValueError):
            raise _bad(spec, value, "an integer") from None
        if spec.minimum is not None and v < spec.minimum:
            raise _bad(spec, value, f"an integer >= {spec.minimum}")
        return v
    if k == "streams":
        if isinstance(value, str) and value.upper() in ("AUTO", "NUMA"):
            return "AUTO"
        try:
            v = int(value)
        except (TypeError, ValueError):
            raise _bad(spec, value, "an integer >= 1 or 'AUTO'") from None
        if v < 1:
            raise _bad(spec, value, "an integer >= 1 or 'AUTO'")
        return v
    if k == "dict":
        if value is None or isinstance(value, dict):
            return dict(value or {})
        raise _bad(spec, value, "a dict")
    if k in ("str", "lowerstr"):
        if hasattr(value, "value") and not isinstance(value, str):  # enum-like
            value = value.value
        if not isinstance(value, str):
            if spec.choices is None and spec.key in ("CACHE_DIR", "HETERO_DUMP_DIR", "HETERO_TRACE_FILE"):
                import os

                if isinstance(value, os.PathLike):
                    return str(value)
            if spec.choices is None and not isinstance(value, (str, bytes)):
                raise _bad(spec, value, "a string")
        s = str(value)
        if spec.choices is not None:
            if s.upper() not in spec.choices:
                raise _bad(spec, value, "one of " + ", ".join(c if k == "str" else c.lower() for c in spec.choices))
            return s.upper() if k == "str" else s.lower()
        return s
    return value


def defaults(keys) -> dict[str, Any]:
    return {k: SPECS[k].default for k in keys if k in SPECS and not SPECS[k].read_only}


Validator = Callable[[str, Any], Any]
