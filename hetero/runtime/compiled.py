"""CompiledModel: a model bound to a device (or to HETERO / MULTI / AUTO), with its streams.

A compiled model wraps a *runner*: anything with ``new_context()`` and
``run(feeds, context, profile) -> {output: array}`` (a device Executable, or the HETERO plan
executor). Streams are per-stream runner contexts plus worker threads: a sync ``infer`` borrows a
free context in the caller's thread; ``start_async`` hands the request to a stream worker.
"""
from __future__ import annotations

import itertools
import os
import queue
import sys
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import DeviceError, InferError, PropertyError, suggest
from ..ir import Graph, TensorInfo
from .. import properties as P
from .. import trace as _trace
from .request import NO_CONTEXT, InferRequest, InferResults


@dataclass(frozen=True)
class Port:
    """A model input or output: name, element type, (partial) shape."""

    index: int
    info: TensorInfo
    is_input: bool

    @property
    def any_name(self) -> str:
        return self.info.name

    def get_any_name(self) -> str:
        return self.info.name

    @property
    def names(self) -> set[str]:
        return {self.info.name}

    def get_names(self) -> set[str]:
        return self.names

    @property
    def shape(self) -> tuple:
        return self.info.shape if self.info.shape is not None else ()

    @property
    def partial_shape(self) -> tuple:
        return self.shape

    def get_shape(self) -> tuple:
        return self.shape

    @property
    def element_type(self):
        return self.info.dtype

    @property
    def dtype(self):
        return self.info.dtype

    def describe(self) -> str:
        return f"{self.info.name}: {self.info.describe()}"

    def __repr__(self) -> str:
        return f"<{'Input' if self.is_input else 'Output'} {self.describe()}>"


class StreamPool:
    """``n`` streams: each a runner context, served by one worker thread for async jobs."""

    def __init__(self, n: int, make_context: Callable[[], Any], name: str):
        self.n = max(1, int(n))
        self._contexts: queue.Queue = queue.Queue()
        for _ in range(self.n):
            self._contexts.put(make_context())
        self._jobs: queue.Queue = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._name = name
        self._started = False
        self._closed = False
        self._lock = threading.Lock()

    def _start_locked(self) -> None:
        for i in range(self.n):
            t = threading.Thread(target=self._worker, name=f"{self._name}-stream{i}", daemon=True)
            t.start()
            self._threads.append(t)
        self._started = True

    def _worker(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            ctx = self._contexts.get()
            try:
                job(ctx)
            finally:
                self._contexts.put(ctx)

    def submit(self, job: Callable[[Any], None]) -> None:
        with self._lock:  # under the lock close() takes: no job can slip in behind the stop markers
            if self._closed:
                raise DeviceError(f"{self._name}: the compiled model was released; compile it again")
            if not self._started:
                self._start_locked()
            self._jobs.put(job)

    def borrow(self):
        if self._closed:
            raise DeviceError(f"{self._name}: the compiled model was released; compile it again")
        return self._contexts.get()

    def give_back(self, ctx) -> None:
        self._contexts.put(ctx)

    def close(self) -> None:
        """Stop the workers once the jobs already queued have run; later submits raise DeviceError."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for _ in self._threads:
                self._jobs.put(None)


from ..log import debug_level as _debug_level  # noqa: E402


class CompiledModel:
    """A model compiled for a device string. Create requests, or call it directly."""

    #: keys settable after compile
    _settable_after = ("PERF_COUNT",)

    def __init__(self, graph: Graph, runner: Any, device_name: str, config: Mapping[str, Any],
                 streams: int = 1, execution_devices: list[str] | None = None,
                 extra_properties: Mapping[str, Any] | None = None, original: Graph | None = None):
        self._graph = graph
        self._runner = runner
        self._device_name = device_name
        self._config = dict(config)
        self._streams = StreamPool(streams, getattr(runner, "new_context", lambda: None), device_name)
        self._execution_devices = execution_devices or [device_name]
        self._extra = dict(extra_properties or {})
        self._ids = itertools.count()
        self._perf_count = bool(self._config.get("PERF_COUNT", False)) or _debug_level() >= 2
        self._optimized_out = tuple(graph.optimized_out)
        self.inputs = [Port(i, t, True) for i, t in enumerate(graph.inputs)]
        self.outputs = [Port(i, t, False) for i, t in enumerate(graph.outputs)]
        self._default_request: InferRequest | None = None
        self._default_claimed = False
        self._default_lock = threading.Lock()
        self._tracer: Any = _trace.NULL_TRACER  # HETERO_TRACE_FILE: set_tracer (Core.compile_model)
        self._trace_seq = itertools.count()

    # ---- ports ----------------------------------------------------------------------------------
    @property
    def input(self) -> Port:
        if len(self.inputs) != 1:
            raise InferError(f"model has {len(self.inputs)} inputs; use inputs[i] or input(name)")
        return self.inputs[0]

    @property
    def output(self) -> Port:
        if len(self.outputs) != 1:
            raise InferError(f"model has {len(self.outputs)} outputs; use outputs[i]")
        return self.outputs[0]

    def _port(self, key, prefer: str | None = None) -> Port:
        if isinstance(key, Port):
            return key
        if isinstance(key, (int, np.integer)):
            ports = self.outputs if prefer == "output" else self.inputs
            if not 0 <= int(key) < len(ports):
                raise InferError(f"{'output' if prefer == 'output' else 'input'} index {key} out of range "
                                 f"0..{len(ports) - 1}")
            return ports[int(key)]
        if isinstance(key, str):
            for p in self.inputs + self.outputs:
                if key in p.names:
                    return p
            raise InferError("unknown tensor name: " + suggest(key, [p.any_name for p in self.inputs + self.outputs]))
        raise InferError(f"tensor key must be a name, an index or a Port, got {type(key).__name__}")

    # ---- input checking ----------------------------------------------------------------------------
    def _check_inputs(self, inputs, partial: bool = False) -> dict[str, Any]:
        """Normalise user inputs to {name: array} and check names, dtypes and shapes."""
        if isinstance(inputs, InferResults):
            inputs = inputs.to_dict()
        if isinstance(inputs, Mapping):
            items = list(inputs.items())
        elif isinstance(inputs, (list, tuple)) and not (len(self.inputs) == 1 and _looks_like_data(inputs)):
            if len(inputs) > len(self.inputs):
                raise InferError(f"got {len(inputs)} inputs, the model takes {len(self.inputs)}: "
                                 f"{[p.describe() for p in self.inputs]}")
            items = list(enumerate(inputs))
        else:
            items = [(0, inputs)]
        out: dict[str, Any] = {}
        for key, value in items:
            if isinstance(key, str) and not any(key in p.names for p in self.inputs):
                raise InferError(f"unknown input: {suggest(key, [p.any_name for p in self.inputs])} "
                                 f"(the model takes {', '.join(p.describe() for p in self.inputs)})")
            port = self._port(key, prefer="input")
            if not port.is_input:
                raise InferError(f"{port.any_name!r} is an output, not an input; inputs: "
                                 f"{[p.any_name for p in self.inputs]}")
            out[port.any_name] = self._check_value(port, value)
        return out

    def _check_value(self, port: Port, value: Any) -> Any:
        info = port.info
        if info.kind != "tensor":
            return value
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        if info.dtype is not None and arr.dtype != info.dtype:
            if not isinstance(value, np.ndarray) and np.can_cast(arr.dtype, info.dtype, "same_kind") and arr.dtype.kind == info.dtype.kind:
                arr = arr.astype(info.dtype)  # plain Python numbers / lists: adopt the model's type
            elif info.dtype == object and arr.dtype.kind == "U":
                arr = arr.astype(object)
            else:
                raise InferError(f"input {port.any_name!r}: expected dtype {info.dtype}, got {arr.dtype}")
        if info.shape is not None:
            if arr.ndim != len(info.shape):
                raise InferError(f"input {port.any_name!r}: expected shape {_fmt_shape(info.shape)} "
                                 f"(rank {len(info.shape)}), got {list(arr.shape)} (rank {arr.ndim})")
            for d, (want, got) in enumerate(zip(info.shape, arr.shape)):
                if isinstance(want, int) and want != got:
                    raise InferError(f"input {port.any_name!r}: expected shape {_fmt_shape(info.shape)}, "
                                     f"got {list(arr.shape)} (dimension {d}: expected {want}, got {got})")
        return arr

    def _check_consistent(self, feeds: Mapping[str, Any]) -> None:
        """The same symbolic dimension must have one size across all inputs."""
        bound: dict[str, tuple[int, str]] = {}
        for p in self.inputs:
            if p.info.shape is None or p.info.kind != "tensor":
                continue
            arr = feeds.get(p.any_name)
            if not isinstance(arr, np.ndarray):
                continue
            for want, got in zip(p.info.shape, arr.shape):
                if isinstance(want, str) and want:
                    if want in bound and bound[want][0] != got:
                        other = bound[want][1]
                        raise InferError(f"input {p.any_name!r}: dimension {want!r} is {got}, but input "
                                         f"{other!r} set it to {bound[want][0]}")
                    bound.setdefault(want, (got, p.any_name))

    # ---- execution -------------------------------------------------------------------------------
    def _next_request_id(self) -> int:
        return next(self._ids)

    def _execute(self, feeds, profile, context, request) -> tuple[dict[str, Any], str]:
        """Run the runner on checked feeds; returns (outputs, device that served)."""
        borrowed = context is NO_CONTEXT
        if borrowed:
            context = self._streams.borrow()
        try:
            tr = self._tracer
            if tr.enabled:  # a span per inference; the runner (HETERO) finds tracer and id via trace.current()
                # "#k": the model's k-th inference (a request object runs many), or the number a MULTI/AUTO
                # scheduler bound while it runs this device model for one of its own requests
                outer, outer_seq = _trace.current()
                seq = outer_seq if outer is tr and outer_seq is not None else next(self._trace_seq)
                with tr.span(self._device_name, "infer", seq, cat="request",
                             infer_request=getattr(request, "request_id", None)), _trace.bind(tr, seq):
                    outputs = self._runner.run(feeds, context, profile)
            else:
                outputs = self._runner.run(feeds, context, profile)
        finally:
            if borrowed:
                self._streams.give_back(context)
        if _debug_level() >= 2 and profile:
            for r in profile:
                print(f"[hetero] {self._device_name} {r.node_name} ({r.node_type}) {r.real_time * 1e3:.3f} ms",
                      file=sys.stderr)
        return outputs, self._device_name

    def _submit(self, request: InferRequest, body: Callable[[Any], None]) -> None:
        self._streams.submit(body)

    # ---- tracing ---------------------------------------------------------------------------------
    @property
    def tracer(self):
        """The model's :class:`hetero.trace.Tracer` (``NULL_TRACER`` when tracing is off)."""
        return self._tracer

    def set_tracer(self, tracer) -> None:
        """Record this model's execution in ``tracer`` (MULTI/AUTO pass it on to their device models)."""
        self._tracer = tracer if tracer is not None else _trace.NULL_TRACER
        if getattr(tracer, "path", None):
            self._extra["HETERO_TRACE_FILE"] = tracer.path

    # ---- API -------------------------------------------------------------------------------------
    def create_infer_request(self) -> InferRequest:
        return InferRequest(self)

    def __call__(self, inputs=None, share_inputs: bool = False) -> InferResults:
        # the default request is not re-entrant: a caller claims it under the lock, and concurrent
        # callers get a request of their own (checking ``_busy`` outside the lock raced: two threads
        # could both see it idle and one got "request is busy")
        with self._default_lock:
            if self._default_request is None:
                self._default_request = self.create_infer_request()
            req = self._default_request
            claimed = not self._default_claimed
            self._default_claimed = True
        if not claimed:
            return self.create_infer_request().infer(inputs)
        try:
            return req.infer(inputs)
        finally:
            with self._default_lock:
                self._default_claimed = False

    def infer_new_request(self, inputs=None) -> InferResults:
        return self.create_infer_request().infer(inputs)

    @property
    def model_name(self) -> str:
        return self._graph.name

    def get_runtime_model(self) -> Graph:
        return self._graph

    def get_property(self, key: str) -> Any:
        if key == "OPTIMAL_NUMBER_OF_INFER_REQUESTS":
            n = self._extra.get(key, self._streams.n)
            cap = int(self._config.get("PERFORMANCE_HINT_NUM_REQUESTS", 0) or 0)
            return min(n, cap) if cap else n
        if key == "NUM_STREAMS":
            return self._streams.n
        if key == "EXECUTION_DEVICES":
            return list(self._execution_devices)
        if key in ("MODEL_NAME", "NETWORK_NAME"):
            return self._graph.name
        if key == "SUPPORTED_PROPERTIES":
            return sorted(set(self._config) | set(self._extra) | {
                "OPTIMAL_NUMBER_OF_INFER_REQUESTS", "NUM_STREAMS", "EXECUTION_DEVICES", "MODEL_NAME",
                "NETWORK_NAME", "SUPPORTED_PROPERTIES", "LOADED_FROM_CACHE", "COMPILE_TIME_MS"})
        if key == "LOADED_FROM_CACHE":
            return bool(self._extra.get(key, getattr(self._runner, "loaded_from_cache", False)))
        if key == "PERF_COUNT":
            return self._perf_count
        if key in self._extra:
            return self._extra[key]
        if key in self._config:
            return self._config[key]
        raise PropertyError(f"compiled model on {self._device_name} has no property "
                            + suggest(key, self.get_property("SUPPORTED_PROPERTIES")))

    def set_property(self, props: Mapping[str, Any]) -> None:
        for k, v in props.items():
            if k not in self._settable_after:
                if k in P.SPECS:
                    raise PropertyError(f"property {k!r} cannot be changed after compile on "
                                        f"{self._device_name}; settable: {list(self._settable_after)}")
                raise PropertyError("unknown property " + suggest(k, self._settable_after))
            v = P.validate(k, v)
            self._config[k] = v
            if k == "PERF_COUNT":
                self._perf_count = bool(v)

    def release(self) -> None:
        self._streams.close()
        self._tracer.save()

    def __repr__(self) -> str:
        return f"<CompiledModel {self._graph.name!r} on {self._device_name}>"


def _fmt_shape(shape) -> str:
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


def _looks_like_data(x) -> bool:
    """A list given for a single-input model: nested numbers (data), not a list of arrays (inputs)."""
    return bool(x) and not isinstance(x[0], np.ndarray)
