"""InferRequest, AsyncInferQueue, results and profiling records (OpenVINO-style)."""
from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from ..errors import HeteroError, InferError

NO_CONTEXT = object()  # "borrow a free stream context" (None is a valid runner context)

if TYPE_CHECKING:
    from .compiled import CompiledModel, Port


@dataclass(frozen=True)
class ProfilingInfo:
    """One per-layer counter, as OpenVINO's ``ProfilingInfo``."""

    node_name: str
    node_type: str
    exec_type: str
    real_time: datetime.timedelta
    cpu_time: datetime.timedelta
    status: str  # EXECUTED | NOT_RUN | OPTIMIZED_OUT
    nbytes: int = 0  # bytes moved (HETERO Reorders); 0 where not measured


class InferResults(Mapping):
    """Outputs addressable by output name, index or Port; iterates over output names."""

    def __init__(self, ports: list["Port"], values: dict[str, Any]):
        self._ports = ports
        self._values = values

    def _key(self, key) -> str:
        if isinstance(key, str):
            if key in self._values:
                return key
            for p in self._ports:
                if key in p.names:
                    return p.any_name
            raise KeyError(f"no output named {key!r}; outputs: {[p.any_name for p in self._ports]}")
        if isinstance(key, (int, np.integer)):
            if not -len(self._ports) <= int(key) < len(self._ports):
                raise KeyError(f"output index {key} out of range 0..{len(self._ports) - 1}")
            return self._ports[int(key)].any_name
        if hasattr(key, "any_name"):
            return key.any_name
        raise KeyError(key)

    def __getitem__(self, key):
        return self._values[self._key(key)]

    def __iter__(self) -> Iterator[str]:
        return iter(p.any_name for p in self._ports)

    def __len__(self) -> int:
        return len(self._ports)

    def to_tuple(self) -> tuple:
        return tuple(self._values[p.any_name] for p in self._ports)

    def to_dict(self) -> dict[str, Any]:
        return {p.any_name: self._values[p.any_name] for p in self._ports}

    def __repr__(self) -> str:
        return "InferResults(" + ", ".join(
            f"{k}: {getattr(v, 'dtype', type(v).__name__)}{list(getattr(v, 'shape', ()))}"
            for k, v in self.to_dict().items()) + ")"


class InferRequest:
    """One inference request of a compiled model: sync ``infer`` or ``start_async`` + ``wait``."""

    def __init__(self, compiled: "CompiledModel"):
        self._compiled = compiled
        self._inputs: dict[str, Any] = {}
        self._outputs: dict[str, Any] = {}
        self._done = threading.Event()
        self._done.set()
        self._busy = False
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._callback: Callable | None = None
        self._userdata: Any = None
        self._profile: list = []
        self._latency_ms = 0.0
        self._last_failure: str | None = None
        self.request_id = compiled._next_request_id()
        self._finish_hooks: list[Callable[[], None]] = []
        self.userdata: Any = None
        #: device name that served the last inference (set by MULTI/AUTO; the device otherwise)
        self.served_by: str | None = None

    # ---- inputs / outputs ---------------------------------------------------------------------
    @property
    def model_inputs(self):
        return self._compiled.inputs

    @property
    def model_outputs(self):
        return self._compiled.outputs

    def _set_inputs(self, inputs) -> None:
        if inputs is None:
            return
        self._inputs.update(self._compiled._check_inputs(inputs, partial=True))

    def set_tensor(self, key, value) -> None:
        port = self._compiled._port(key, prefer="input")
        if port.is_input:
            self._inputs.update(self._compiled._check_inputs({port.any_name: value}, partial=True))
        else:
            raise InferError(f"set_tensor: {port.any_name!r} is an output; set_tensor takes inputs")

    def set_input_tensor(self, *args) -> None:
        if len(args) == 1:
            self.set_tensor(0, args[0])
        else:
            self.set_tensor(args[0], args[1])

    def get_tensor(self, key) -> Any:
        port = self._compiled._port(key)
        if port.is_input:
            if port.any_name not in self._inputs:
                raise InferError(f"input {port.any_name!r} has not been set")
            return self._inputs[port.any_name]
        if port.any_name not in self._outputs:
            if self._last_failure:
                raise InferError(f"output {port.any_name!r} is not available: the last inference failed "
                                 f"({self._last_failure})")
            raise InferError(f"output {port.any_name!r} is not available: run the request first")
        return self._outputs[port.any_name]

    def get_input_tensor(self, index: int = 0):
        return self.get_tensor(self._compiled.inputs[index])

    def get_output_tensor(self, index: int = 0):
        return self.get_tensor(self._compiled.outputs[index])

    @property
    def input_tensors(self) -> list:
        return [self._inputs.get(p.any_name) for p in self._compiled.inputs]

    @property
    def output_tensors(self) -> list:
        return [self._outputs.get(p.any_name) for p in self._compiled.outputs]

    @property
    def results(self) -> InferResults:
        return InferResults(self._compiled.outputs, self._outputs)

    # ---- running ------------------------------------------------------------------------------
    def infer(self, inputs=None, share_inputs: bool = False) -> InferResults:
        """Run synchronously; return results addressable by output name or index."""
        self._begin(inputs)
        try:
            self._run_now()
            # take the outcome while still busy: once the flags clear, another thread may rerun us
            err, self._error = self._error, None
            results = self.results
        finally:
            self._finish_flags()
        if err is not None:
            raise err
        return results

    def start_async(self, inputs=None, userdata: Any = None, share_inputs: bool = False) -> None:
        """Start running in the background; ``wait()`` or the callback tells when it is done."""
        self._begin(inputs)
        self._userdata = userdata
        try:
            self._compiled._submit(self, self._async_body)
        except BaseException:
            self._finish_flags()
            raise

    def _begin(self, inputs) -> None:
        with self._lock:
            if self._busy:
                raise InferError(f"infer request {self.request_id} is busy: wait() for it before starting it again")
            self._busy = True
            self._done.clear()
        try:
            self._error = None
            self._set_inputs(inputs)
            missing = [p.any_name for p in self._compiled.inputs if p.any_name not in self._inputs]
            if missing:
                raise InferError(f"missing input(s) {missing}; the model takes "
                                 f"{[p.describe() for p in self._compiled.inputs]}, got {sorted(self._inputs)}")
            self._compiled._check_consistent(self._inputs)
        except BaseException:
            self._finish_flags()
            raise

    def _finish_flags(self) -> None:
        with self._lock:
            self._busy = False
        self._done.set()
        for hook in self._finish_hooks:  # e.g. AsyncInferQueue marking this request idle
            hook()

    def _run_now(self, context=NO_CONTEXT) -> None:
        """Execute with the current inputs (sync path: borrows a stream context)."""
        # async runs count from submission (MULTI/AUTO/BATCH contexts carry it), not from hand-back
        t0 = getattr(context, "submitted_at", None) or time.perf_counter()
        prof = [] if self._compiled._perf_count else None
        try:
            outputs, served = self._compiled._execute(self._inputs, prof, context, self)
            self._outputs = outputs
            self.served_by = served
            self._profile = prof or []
            self._last_failure = None
        except HeteroError as e:
            self._error = e
        except Exception as e:  # a device crashed in an unexpected way: wrap, name the device
            self._error = InferError(f"inference failed on {self._compiled._device_name}: "
                                     f"{type(e).__name__}: {e}")
            self._error.__cause__ = e
        if self._error is not None:  # never leave the previous run's outputs readable as this run's
            self._outputs = {}
            self._last_failure = f"{type(self._error).__name__}: {self._error}"
        self._latency_ms = (time.perf_counter() - t0) * 1e3

    def _async_body(self, context) -> None:
        try:
            self._run_now(context)
            cb = self._callback
            if cb is not None:
                try:
                    cb(self._userdata if self._userdata is not None else self.userdata)
                except BaseException as e:  # resurfaces at wait()
                    if self._error is None:
                        self._error = e
        finally:
            self._finish_flags()

    def wait(self) -> None:
        """Block until the request is done; raise its error if it failed."""
        self._done.wait()
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def wait_for(self, timeout_ms: int) -> bool:
        """Wait up to ``timeout_ms``; True when done (raising its error if it failed)."""
        if timeout_ms is None or timeout_ms < 0:
            self.wait()
            return True
        if not self._done.wait(timeout_ms / 1000.0):
            return False
        self.wait()
        return True

    def set_callback(self, callback: Callable, userdata: Any = None) -> None:
        """``callback(userdata)`` runs when an async run finishes (before ``wait`` returns)."""
        self._callback = callback
        self.userdata = userdata

    def cancel(self) -> None:  # requests already running finish; nothing queued is dropped silently
        pass

    @property
    def latency(self) -> float:
        """Wall time of the last inference, in milliseconds."""
        return self._latency_ms

    def get_profiling_info(self) -> list[ProfilingInfo]:
        """Per-layer counters of the last inference (PERF_COUNT must be on)."""
        if not self._compiled._perf_count:
            raise InferError("profiling is off: compile with {'PERF_COUNT': True} to collect counters")
        out = [ProfilingInfo(r.node_name, r.node_type, r.exec_type,
                             datetime.timedelta(seconds=r.real_time), datetime.timedelta(seconds=r.cpu_time),
                             r.status, getattr(r, "nbytes", 0)) for r in self._profile]
        for name, op in self._compiled._optimized_out:
            out.append(ProfilingInfo(name, op, "undef", datetime.timedelta(0), datetime.timedelta(0),
                                     "OPTIMIZED_OUT"))
        return out

    @property
    def profiling_info(self) -> list[ProfilingInfo]:
        return self.get_profiling_info()

    def get_compiled_model(self) -> "CompiledModel":
        return self._compiled


class AsyncInferQueue:
    """A pool of infer requests: ``start_async`` takes an idle one (waiting for one if none is)."""

    def __init__(self, compiled: "CompiledModel", jobs: int = 0):
        n = int(jobs) or int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self._requests = [compiled.create_infer_request() for _ in range(max(1, n))]
        self._idle: list[int] = list(range(len(self._requests)))
        self._cv = threading.Condition()
        self._callback: Callable | None = None
        self._errors: list[BaseException] = []
        self.userdata: list[Any] = [None] * len(self._requests)
        for i, r in enumerate(self._requests):
            r.set_callback(self._make_callback(i))
            r._finish_hooks.append(self._make_finished(i))

    def _make_callback(self, i: int):
        def done(userdata):
            if self._callback is not None:
                try:
                    self._callback(self._requests[i], userdata)
                except BaseException as e:  # resurfaces at wait_all
                    with self._cv:
                        self._errors.append(e)

        return done

    def _make_finished(self, i: int):
        def finished():
            r = self._requests[i]
            with self._cv:
                if r._error is not None:
                    self._errors.append(r._error)
                    r._error = None
                if i not in self._idle:
                    self._idle.append(i)
                self._cv.notify_all()

        return finished

    def set_callback(self, callback: Callable) -> None:
        """``callback(request, userdata)`` runs when each job finishes."""
        self._callback = callback

    def get_idle_request_id(self) -> int:
        with self._cv:
            self._cv.wait_for(lambda: bool(self._idle))
            return self._idle[0]

    def is_ready(self) -> bool:
        with self._cv:
            return bool(self._idle)

    def start_async(self, inputs=None, userdata: Any = None, share_inputs: bool = False) -> None:
        with self._cv:
            self._cv.wait_for(lambda: bool(self._idle))
            i = self._idle.pop(0)
        self.userdata[i] = userdata
        try:
            self._requests[i].start_async(inputs, userdata)
        except BaseException:
            with self._cv:
                if i not in self._idle:
                    self._idle.insert(0, i)
                self._cv.notify_all()
            raise

    def wait_all(self) -> None:
        """Wait for every job; re-raise the first error from a job or a callback."""
        with self._cv:
            self._cv.wait_for(lambda: len(self._idle) == len(self._requests))
            errors, self._errors = self._errors, []
        if errors:
            raise errors[0]

    def __len__(self) -> int:
        return len(self._requests)

    def __iter__(self):
        return iter(self._requests)

    def __getitem__(self, i: int) -> InferRequest:
        return self._requests[i]
