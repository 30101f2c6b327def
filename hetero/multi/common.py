"""What MULTI, AUTO and BATCH share: device lists, property checks, per-device configs, compiling on
one device, and :class:`ScheduledCompiledModel` (a CompiledModel whose requests run on a
:class:`~hetero.multi.scheduler.Scheduler`)."""
from __future__ import annotations

import copy
import sys
import threading
import time
from typing import Any, Callable, Mapping

from .. import properties as P
from ..devices.base import Device
from ..devices.registry import DeviceSpec, parse
from ..errors import DeviceStringError, HeteroError, PropertyError
from ..ir import Graph
from ..log import debug_level
from ..runtime.compiled import CompiledModel
# shared with HETERO: the properties forwarded to every device, config checks, device lookup, names
from ..runtime.hetero import FORWARD_KEYS, canon, check_config, device_items, resolve  # noqa: F401 - re-exported
from ..runtime.hetero import device_config as _device_config
from .scheduler import Job, Scheduler

MULTI_KEYS = ("MULTI_DEVICE_PRIORITIES", "SCHEDULE_POLICY", "ENABLE_RUNTIME_FALLBACK", "DEVICE_PROPERTIES")
AUTO_KEYS = MULTI_KEYS + ("ENABLE_STARTUP_FALLBACK",)
BATCH_KEYS = ("AUTO_BATCH_TIMEOUT", "DEVICE_PROPERTIES")


def debug(msg: str) -> None:
    if debug_level() >= 1:
        print(f"[hetero] {msg}", file=sys.stderr)


def capped_requests(n: int, cfg: Mapping[str, Any]) -> int:
    """OPTIMAL_NUMBER_OF_INFER_REQUESTS ``n``, capped by PERFORMANCE_HINT_NUM_REQUESTS when that is set."""
    cap = int(cfg.get("PERFORMANCE_HINT_NUM_REQUESTS", 0) or 0)
    return min(n, cap) if cap else n


def device_hint(hint: str) -> str:
    """What a device behind MULTI/AUTO is given: CUMULATIVE_THROUGHPUT is a THROUGHPUT per device."""
    return "THROUGHPUT" if hint == "CUMULATIVE_THROUGHPUT" else hint


def device_config(dev: Device, cfg: Mapping[str, Any], names: list[str],
                  overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The config ``dev`` compiles with behind MULTI/AUTO/BATCH: HETERO's rule (forwarded keys, then
    DEVICE_PROPERTIES[dev], then ``overrides``), with CUMULATIVE_THROUGHPUT given as THROUGHPUT."""
    return _device_config(dev, cfg, names, overrides, hint=device_hint)


def compile_device(dev: Device, graph: Graph, dcfg: Mapping[str, Any], original: Graph | None = None) -> CompiledModel:
    """``graph`` (already through the graph passes) compiled on ``dev`` as a plain CompiledModel."""
    exe = dev.compile(graph, dcfg)
    streams = dev.optimal_streams(dcfg)
    extra = {"COMPILE_TIME_MS": exe.compile_time * 1e3, "LOADED_FROM_CACHE": exe.loaded_from_cache}
    cm = CompiledModel(graph, exe, dev.name, dcfg, streams=streams, execution_devices=[dev.name],
                       extra_properties=extra, original=original)
    debug(f"compiled {graph.name!r} on {dev.name}: {streams} stream(s), {exe.compile_time * 1e3:.1f} ms"
          + (" (from cache)" if exe.loaded_from_cache else ""))
    return cm


def worker_count(dev: Device, spec: DeviceSpec | None, dcfg: Mapping[str, Any]) -> int:
    """A device's pool size: the "(n)" of the device string, else its optimal number of requests."""
    if spec is not None and spec.nreq is not None:
        return spec.nreq
    return max(1, int(dev.optimal_streams(dcfg)))


def contexts_of(cm: CompiledModel, n: int) -> list:
    """Up to ``n`` runner contexts the device's compiled model already made (its streams)."""
    k = min(n, cm._streams.n)
    return [cm._streams.borrow() for _ in range(k)]


def compile_parallel(jobs: list[tuple[str, Callable[[], Any]]]) -> dict[str, Any]:
    """Run the compile callables in threads at once (compile delays overlap); name -> result or exception."""
    results: dict[str, Any] = {}

    def run(name, fn):
        try:
            results[name] = fn()
        except BaseException as e:  # noqa: BLE001 - reported by the caller
            results[name] = e

    threads = [threading.Thread(target=run, args=j, name=f"compile-{j[0]}", daemon=True) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def with_context(e: BaseException, prefix: str) -> BaseException:
    """``e`` (a HeteroError) with ``prefix`` before its message, keeping its type and fields."""
    if not isinstance(e, HeteroError):
        return e
    c = copy.copy(e)
    c.args = (prefix + str(e),) + tuple(e.args[1:])
    c.__cause__ = e
    return c


class _Done:
    """The context an async request's body gets once its job has finished on a worker
    (``submitted_at``: perf_counter when the request was started, for its latency)."""

    __slots__ = ("job", "submitted_at")

    def __init__(self, job: Job, submitted_at: float | None = None):
        self.job = job
        self.submitted_at = submitted_at


def async_job(request, body: Callable[[Any], None], perf_count: bool, seq: int = -1) -> Job:
    """``request``'s inputs as a job whose completion runs the request's ``body`` (its latency counted
    from now): what ``_submit`` hands to a Scheduler or a batcher."""
    t0 = time.perf_counter()
    return Job(dict(request._inputs), [] if perf_count else None, done=lambda job: body(_Done(job, t0)), seq=seq)


def job_result(job: Job, profile: list | None = None) -> tuple[dict[str, Any], str]:
    """(outputs, served_by) of a finished ``job``, raising its error; its profile records go on
    ``profile`` (an async job's own list; a sync job's list is the caller's already)."""
    if job.error is not None:
        raise job.error
    if profile is not None and job.profile:
        profile.extend(job.profile)
    return job.outputs, job.served_by


class ScheduledCompiledModel(CompiledModel):
    """A CompiledModel whose inferences are jobs on a Scheduler (MULTI, AUTO).

    ``InferRequest`` works unchanged: a sync ``infer`` calls :meth:`_execute`, which submits a job and
    waits for it; ``start_async`` calls :meth:`_submit`, which submits a job whose completion runs the
    request's body (in the worker thread that finished it), so the request's ``served_by``, outputs,
    callback and ``wait()`` behave as on a single device.
    """

    _settable_after = ("PERF_COUNT", "MULTI_DEVICE_PRIORITIES", "SCHEDULE_POLICY", "ENABLE_RUNTIME_FALLBACK")

    def __init__(self, graph: Graph, device_name: str, config: Mapping[str, Any], scheduler: Scheduler,
                 specs: Mapping[str, DeviceSpec | None], optimal: Callable[[], int]):
        super().__init__(graph, None, device_name, config, streams=1, execution_devices=[])
        self._sched = scheduler
        self._specs = dict(specs)
        self._optimal = optimal

    # ---- execution -------------------------------------------------------------------------------
    def _execute(self, feeds, profile, context, request):
        if isinstance(context, _Done):
            return job_result(context.job, profile)
        job = Job(dict(feeds), profile, seq=request.request_id if request is not None else -1)
        self._sched.run_here(job)
        return job_result(job)

    def _submit(self, request, body) -> None:
        self._sched.submit(async_job(request, body, self._perf_count, request.request_id))

    def set_tracer(self, tracer) -> None:
        """HETERO_TRACE_FILE: dispatch instants on this model's track; device models trace their runs."""
        super().set_tracer(tracer)
        self._sched.set_tracer(tracer)

    # ---- properties ------------------------------------------------------------------------------
    def execution_devices(self) -> list[str]:
        return self._sched.priorities

    def get_property(self, key: str) -> Any:
        if key == "OPTIMAL_NUMBER_OF_INFER_REQUESTS":
            return capped_requests(self._optimal(), self._config)
        if key == "EXECUTION_DEVICES":
            return self.execution_devices()
        if key == "MULTI_DEVICE_PRIORITIES":
            return ",".join(self._sched.priorities)
        if key == "MULTI_SERVED_REQUESTS":
            return self._sched.served()
        if key == "NUM_STREAMS":
            w = self._sched.workers()
            return sum(w[n] for n in self._sched.priorities if n in w)
        if key == "SCHEDULE_POLICY":
            return self._sched.policy
        if key == "ENABLE_RUNTIME_FALLBACK":
            return self._sched.runtime_fallback
        if key == "SUPPORTED_PROPERTIES":
            return sorted(set(super().get_property("SUPPORTED_PROPERTIES")) | {
                "MULTI_DEVICE_PRIORITIES", "MULTI_SERVED_REQUESTS", "SCHEDULE_POLICY", "ENABLE_RUNTIME_FALLBACK",
                "PERFORMANCE_HINT"})
        if key == "PERFORMANCE_HINT":
            return self._config.get("PERFORMANCE_HINT", P.SPECS["PERFORMANCE_HINT"].default)
        if key == "LOADED_FROM_CACHE":
            return bool(self._extra.get(key, False))
        return super().get_property(key)

    def set_property(self, props: Mapping[str, Any]) -> None:
        rest = {}
        for k, v in props.items():
            if k == "MULTI_DEVICE_PRIORITIES":
                self._set_priorities(v)
            elif k == "SCHEDULE_POLICY":
                self._sched.policy = P.validate(k, v)
                self._config[k] = self._sched.policy
            elif k == "ENABLE_RUNTIME_FALLBACK":
                self._sched.runtime_fallback = P.validate(k, v)
                self._config[k] = self._sched.runtime_fallback
            else:
                rest[k] = v
        if rest:
            super().set_property(rest)

    def _set_priorities(self, value: Any) -> None:
        """A new order (a subset of the compiled devices) while serving (step 5 of the scheduler)."""
        text = P.validate("MULTI_DEVICE_PRIORITIES", value)
        compiled = [n for n in self._sched.devices if not self._sched.is_released(n)]
        try:
            parsed = parse(f"MULTI:{text}")
        except DeviceStringError as e:
            raise PropertyError(f"MULTI_DEVICE_PRIORITIES={text!r}: {e}") from None
        names = []
        for it in parsed.items:
            name = canon(str(DeviceSpec(it.family, it.index)), compiled, "MULTI_DEVICE_PRIORITIES")
            if it.nreq is not None and self._sched.workers()[name] != it.nreq:
                raise PropertyError(f"MULTI_DEVICE_PRIORITIES={text!r}: {name} was compiled with "
                                    f"{self._sched.workers()[name]} worker request(s); its count cannot change "
                                    f"after compile (got {str(it)!r})")
            names.append(name)
        self._sched.set_priorities(names)
        self._config["MULTI_DEVICE_PRIORITIES"] = ",".join(names)

    # ---- introspection -----------------------------------------------------------------------------
    @property
    def dispatch_log(self) -> list:
        """Recent dispatches, oldest first: :class:`~hetero.multi.scheduler.Dispatch` (seq, device, retry)."""
        return list(self._sched.log)

    def release(self) -> None:
        self._sched.close()
        super().release()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._graph.name!r} on {self._device_name}: {self._sched.priorities}>"
