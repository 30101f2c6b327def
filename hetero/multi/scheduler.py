"""Worker pools and dispatch for MULTI and AUTO (DESIGN.md §6).

One :class:`Scheduler` serves one MULTI/AUTO compiled model. It holds, per device, the device's
compiled model and a pool of worker threads (one runner context each). A user request becomes a
:class:`Job`; the scheduler hands each job to exactly one worker:

1. ``submit(job)``: under the lock, pick an idle worker of an *active* device (the devices in the
   current priority list) by the schedule policy; none idle: append the job to the pending queue.
   - ``DEVICE_PRIORITY``: the first device in priority order with an idle worker;
   - ``ROUND_ROBIN``: starting after the device that got the previous job, the next one with an
     idle worker.
2. A worker that finishes a job takes the head of the pending queue itself (the next worker to
   finish takes the next waiting request), provided its device is still active; else it goes idle.
3. A device fault (DeviceError, or an exception that is no HeteroError) takes the device out of
   rotation, records its error, and re-submits the job elsewhere (runtime fallback). An InferError
   is the request's own fault (bad data fails on every device alike): it fails that request only.
4. No active device left: ``replenish`` (AUTO: compile the next candidate) may add one; devices
   still compiling (``expect``) keep jobs waiting; otherwise every waiting job fails with every
   device's error combined. So every job finishes exactly once: with outputs or with an error.
5. ``set_priorities`` changes the rotation while serving: new jobs follow the new order, a removed
   device gets no new job and finishes the ones it has. A device out of rotation with nothing in
   flight can be released (AUTO's CPU helper, :meth:`retire`).

Traced example (DEVICE_PRIORITY, ``MULTI:MOCK.0(1),MOCK.1(1)``, 3 async requests, devices busy):
``submit(r0)`` -> MOCK.0 worker idle -> r0 on MOCK.0; ``submit(r1)`` -> MOCK.0 busy, MOCK.1 idle ->
r1 on MOCK.1; ``submit(r2)`` -> none idle -> pending [r2]; MOCK.1 finishes r1 first -> it takes r2.
Dispatch log: [(0, MOCK.0), (1, MOCK.1), (2, MOCK.1)]. With ROUND_ROBIN and sync requests one at a
time: MOCK.0, MOCK.1, MOCK.0, ...

Worker threads block on their inbox queue and the scheduler lock; nothing polls. A job goes into a
worker's inbox under the lock, in the same step that assigns it, so a device released meanwhile
(``close``) finds it ahead of its stop marker: the worker runs it (or fails it) before it stops.
"""
from __future__ import annotations

import collections
import itertools
import queue
import threading
from typing import Any, Callable, NamedTuple

from .. import trace
from ..errors import DeviceError, HeteroError, InferError

DEVICE_PRIORITY = "DEVICE_PRIORITY"
ROUND_ROBIN = "ROUND_ROBIN"
_STOP = object()


def is_device_fault(e: BaseException) -> bool:
    """A failure of the device rather than of the request's data (see step 3 above)."""
    if isinstance(e, DeviceError):
        return True
    if isinstance(e, InferError):
        return False
    return not isinstance(e, HeteroError) and isinstance(e, Exception)


class Dispatch(NamedTuple):
    """One hand-off: job ``seq`` went to ``device`` (``retry``: after a device failed on it)."""

    seq: int
    device: str
    retry: bool = False


class Job:
    """One request's work: feeds in; outputs, the serving device, or an error out; ``done`` once."""

    __slots__ = ("seq", "feeds", "profile", "outputs", "served_by", "error", "tried", "_done", "_held", "trace_id")

    def __init__(self, feeds, profile: list | None, done: Callable[["Job"], None] | None = None, seq: int = -1):
        self.seq = seq
        self.feeds = feeds
        self.profile = profile
        self.outputs: dict[str, Any] | None = None
        self.served_by: str | None = None
        self.error: BaseException | None = None
        self.tried: dict[str, BaseException] = {}
        self._done = done
        # a sync job's waiter blocks on a lock held until finish (a bare lock costs far less than an Event)
        self._held = None
        if done is None:
            self._held = threading.Lock()
            self._held.acquire()
        self.trace_id: int | None = None  # "#k" in an execution trace: unique per inference

    def finish(self, outputs=None, served_by: str | None = None, error: BaseException | None = None) -> None:
        self.outputs, self.served_by, self.error = outputs, served_by, error
        if self._held is not None:
            self._held.release()
        else:
            self._done(self)

    def wait(self) -> None:
        self._held.acquire()
        self._held.release()


class _Worker:
    def __init__(self, sched: "Scheduler", device: "_DeviceState", index: int, context: Any):
        self.sched = sched
        self.device = device
        self.index = index
        self.context = context
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, name=f"{sched.name}-{device.name}-w{index}", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        job = self.inbox.get()
        while job is not _STOP:
            nxt = self.sched._run(self, job)
            job = nxt if nxt is not None else self.inbox.get()


class _DeviceState:
    def __init__(self, name: str, compiled, nworkers: int):
        self.name = name
        self.compiled = compiled
        self.nworkers = nworkers
        self.workers: list[_Worker] = []
        self.idle: collections.deque[_Worker] = collections.deque()
        self.in_flight = 0
        self.served = 0
        self.failures = 0
        self.error: BaseException | None = None
        self.released = False
        self.release_when_idle = False


class Scheduler:
    """Dispatch of jobs to per-device worker pools (see the module docstring)."""

    def __init__(self, name: str, policy: str = DEVICE_PRIORITY, runtime_fallback: bool = True,
                 replenish: Callable[["Scheduler"], bool] | None = None,
                 on_release: Callable[[str], None] | None = None, log_size: int = 4096):
        self.name = name
        self.policy = policy
        self.runtime_fallback = runtime_fallback
        self._replenish = replenish
        self._on_release = on_release
        self._lock = threading.Lock()
        self._devices: dict[str, _DeviceState] = {}
        self._priorities: list[str] = []
        self._pending: collections.deque[Job] = collections.deque()
        self._rr = 0
        self._expected = 0  # devices still compiling that will be added
        self._replenishing = False
        self._seq = itertools.count()
        self._trace_ids = itertools.count()
        self._closed = False
        #: recent dispatches in order (bounded); tests read exact sequences from it
        self.log: collections.deque[Dispatch] = collections.deque(maxlen=log_size)
        #: a hetero.trace Tracer (HETERO_TRACE_FILE): dispatch instants, passed on to device models
        self.tracer: Any = None

    # ---- devices ---------------------------------------------------------------------------------
    def add_device(self, name: str, compiled, nworkers: int, active: bool = True, contexts: list | None = None,
                   expected: bool = False) -> None:
        """Add a compiled device with ``nworkers`` workers (appended to the rotation if ``active``);
        ``expected``: it is one announced by :meth:`expect`."""
        d = _DeviceState(name, compiled, max(1, int(nworkers)))
        contexts = list(contexts or [])
        make = getattr(getattr(compiled, "_runner", None), "new_context", lambda: None)
        for i in range(d.nworkers):
            ctx = contexts[i] if i < len(contexts) else make()
            w = _Worker(self, d, i, ctx)
            d.workers.append(w)
            d.idle.append(w)
        if self.tracer is not None and hasattr(compiled, "set_tracer"):
            compiled.set_tracer(self.tracer)
        with self._lock:
            closed = self._closed
            if not closed:
                self._devices[name] = d
                if expected:
                    self._expected -= 1
                if active:
                    self._priorities.append(name)
                    self._pump_locked()
        if closed:  # released while this device compiled (AUTO's background compile): stop, free
            for w in d.workers:
                w.inbox.put(_STOP)
            rel = getattr(compiled, "release", None)
            if callable(rel):
                rel()

    def expect(self, n: int = 1) -> None:
        """``n`` more devices are compiling: waiting jobs stay queued for them."""
        with self._lock:
            self._expected += n

    def expected_failed(self) -> None:
        """A device announced by :meth:`expect` will not come."""
        with self._lock:
            self._expected -= 1
        self._check_exhausted()

    def arrived(self, name: str, compiled, nworkers: int, priorities: list[str], contexts: list | None = None) -> None:
        """An expected device is compiled: add it and switch the rotation to ``priorities`` at once."""
        self.add_device(name, compiled, nworkers, active=False, contexts=contexts)
        if name in self._devices:  # (not when the model was released meanwhile)
            self.set_priorities(priorities, _arrived=True)

    @property
    def devices(self) -> list[str]:
        with self._lock:  # (AUTO adds devices from its compile thread)
            return list(self._devices)

    @property
    def priorities(self) -> list[str]:
        with self._lock:
            return list(self._priorities)

    def device_error(self, name: str) -> BaseException | None:
        return self._devices[name].error

    def set_priorities(self, names: list[str], _arrived: bool = False) -> None:
        """New rotation order; removed devices finish what they have and get nothing new."""
        with self._lock:
            if _arrived:
                self._expected -= 1
                if self._closed:  # released while the device compiled: nothing to switch to
                    return
            for n in names:
                d = self._devices[n]
                if d.released:
                    raise DeviceError(f"{self.name}: {n} was released (its compiled model is gone); it cannot be "
                                      f"put back in the rotation; devices still compiled: "
                                      f"{[k for k, v in self._devices.items() if not v.released]}")
                d.error = None  # naming a failed device again brings it back
            self._priorities = list(names)
            self._rr = 0
            self._pump_locked()
            retire = [d for d in self._devices.values()
                      if d.release_when_idle and d.name not in self._priorities and d.in_flight == 0 and not d.released]
        for d in retire:
            self._release(d)
        self._check_exhausted()

    def retire(self, name: str) -> None:
        """Release ``name`` (stop its workers, release its compiled model) once it is out of rotation
        and has nothing in flight: now if that is already so, else when its last job finishes."""
        with self._lock:
            d = self._devices[name]
            d.release_when_idle = True
            now = d.name not in self._priorities and d.in_flight == 0 and not d.released
        if now:
            self._release(d)

    def _release(self, d: _DeviceState) -> None:
        with self._lock:
            if d.released:
                return
            d.released = True
            d.idle.clear()
            for w in d.workers:  # under the lock: behind every job already assigned to it
                w.inbox.put(_STOP)
        self._free_if_done(d)
        if self._on_release is not None:
            self._on_release(d.name)

    def _free_if_done(self, d: _DeviceState) -> None:
        """Release a released device's compiled model once no job runs on it (close() with work in
        flight: the last of those jobs does it, so none runs on a released model)."""
        with self._lock:
            if not d.released or d.in_flight or d.compiled is None:
                return
            compiled, d.compiled = d.compiled, None
        rel = getattr(compiled, "release", None)
        if callable(rel):
            rel()

    def is_released(self, name: str) -> bool:
        return self._devices[name].released

    def served(self) -> dict[str, int]:
        with self._lock:
            return {n: d.served for n, d in self._devices.items()}

    def in_flight(self) -> dict[str, int]:
        with self._lock:
            return {n: d.in_flight for n, d in self._devices.items()}

    def workers(self) -> dict[str, int]:
        with self._lock:
            return {n: d.nworkers for n, d in self._devices.items()}

    # ---- dispatch --------------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        """Hand ``job`` to an idle worker or queue it; it finishes exactly once either way."""
        with self._lock:
            if job.seq < 0:
                job.seq = next(self._seq)
            if job.trace_id is None and self.tracer is not None and self.tracer.enabled:
                job.trace_id = next(self._trace_ids)
            if self._closed:
                abort = DeviceError(f"{self.name}: the compiled model was released")
            elif not self._priorities and not self._expected and not self._replenishing:
                abort = self._no_device_error(job)
            else:
                abort = None
                w = self._pick()
                if w is None:
                    self._pending.append(job)
                else:
                    self._assign(w, job)
        if abort is not None:
            job.finish(error=abort)

    def run_here(self, job: Job) -> None:
        """A sync request: like :meth:`submit`, but when a worker is idle its device runs the job in
        the *calling* thread (with that worker's context, the worker held busy meanwhile), saving two
        thread hand-offs; returns when the job has finished."""
        with self._lock:
            if job.seq < 0:
                job.seq = next(self._seq)
            if job.trace_id is None and self.tracer is not None and self.tracer.enabled:
                job.trace_id = next(self._trace_ids)
            w = None
            if self._priorities and not self._closed:
                w = self._pick()
                if w is not None:
                    self._assign(w, job, hand_off=False)  # this thread runs it
        if w is None:
            self.submit(job)
        else:
            self._run(w, job, in_worker=False)
        job.wait()

    def _pick(self) -> _Worker | None:
        pr = self._priorities
        if self.policy == ROUND_ROBIN:
            n = len(pr)
            for i in range(n):
                d = self._devices[pr[(self._rr + i) % n]]
                if d.idle:
                    self._rr = (self._rr + i + 1) % n
                    return d.idle.popleft()
            return None
        for name in pr:
            d = self._devices[name]
            if d.idle:
                return d.idle.popleft()
        return None

    def _assign(self, w: _Worker, job: Job, hand_off: bool = True) -> None:
        """(Under the lock.) ``job`` goes to ``w``: counted, logged, and put in its inbox (``hand_off``)."""
        w.device.in_flight += 1
        self.log.append(Dispatch(job.seq, w.device.name, bool(job.tried)))
        tr = self.tracer
        if tr is not None and tr.enabled:
            tr.instant(self.name, f"dispatch -> {w.device.name}", job.trace_id, cat="dispatch",
                       retry=bool(job.tried), infer_request=job.seq)
        if hand_off:
            w.inbox.put(job)

    def set_tracer(self, tracer) -> None:
        self.tracer = tracer
        for d in list(self._devices.values()):
            if d.compiled is not None and hasattr(d.compiled, "set_tracer"):
                d.compiled.set_tracer(tracer)

    def _pump_locked(self) -> None:
        """Give waiting jobs to idle workers of active devices (after the rotation changed)."""
        while self._pending:
            w = self._pick()
            if w is None:
                break
            self._assign(w, self._pending.popleft())

    def _run(self, w: _Worker, job: Job, in_worker: bool = True) -> Job | None:
        """Run ``job`` on ``w``; return the worker's next job (the head of the queue) or None (idle).
        Not ``in_worker`` (:meth:`run_here`): a next job goes to the worker's own thread instead.

        The worker's bookkeeping (idle again, or its next job) is done *before* the job is finished,
        so a caller that starts its next request as soon as this one returns finds the worker idle."""
        d = w.device
        if job.profile is not None:
            job.profile.clear()
        try:
            tr = self.tracer
            if tr is not None and tr.enabled:  # the device model's span carries this job's number
                with trace.bind(tr, job.trace_id):
                    outputs, _ = d.compiled._execute(job.feeds, job.profile, w.context, None)
            else:
                outputs, _ = d.compiled._execute(job.feeds, job.profile, w.context, None)
        except BaseException as e:  # noqa: BLE001 - every outcome must reach the job
            if is_device_fault(e) and self.runtime_fallback:
                job.tried[d.name] = e
                self._fail(d, e)
                nxt, retire = self._next_for(w, in_worker=in_worker)
                self.submit(job)  # runtime fallback: the job runs elsewhere (or fails with every error)
            else:
                with self._lock:
                    d.failures += 1
                nxt, retire = self._next_for(w, in_worker=in_worker)
                job.finish(error=e)
        else:
            nxt, retire = self._next_for(w, served=True, in_worker=in_worker)
            job.finish(outputs=outputs, served_by=d.name)
        if retire:
            self._release(d)
        elif d.released:  # released while this job ran
            self._free_if_done(d)
        return nxt

    def _next_for(self, w: _Worker, served: bool = False, in_worker: bool = True) -> tuple[Job | None, bool]:
        """After a job: (the worker's next job or None, whether its device is now to be released).
        Not ``in_worker``: the next job is put in the worker's inbox (under the lock) instead."""
        d = w.device
        with self._lock:
            d.in_flight -= 1
            if served:
                d.served += 1
            if d.name in self._priorities and self._pending and not d.released:
                job = self._pending.popleft()
                self._assign(w, job, hand_off=not in_worker)
                return (job if in_worker else None), False
            d.idle.append(w)
            return None, (d.release_when_idle and d.name not in self._priorities and d.in_flight == 0
                          and not d.released)

    def _fail(self, d: _DeviceState, e: BaseException) -> None:
        with self._lock:
            d.failures += 1
            if d.error is None:
                d.error = e
            if d.name in self._priorities:
                self._priorities.remove(d.name)
                self._rr = 0
        self._check_exhausted()

    def _check_exhausted(self) -> None:
        """No active device: replenish (AUTO), wait for expected devices, or fail every waiting job."""
        with self._lock:
            if self._priorities or self._expected or self._replenishing or self._closed:
                return
            if self._replenish is not None:
                self._replenishing = True
            else:
                waiting, self._pending = list(self._pending), collections.deque()
        if self._replenish is not None:
            try:
                added = self._replenish(self)
            finally:
                with self._lock:
                    self._replenishing = False
            if added:
                with self._lock:
                    self._pump_locked()
                return
            with self._lock:
                if self._priorities or self._expected:
                    return
                waiting, self._pending = list(self._pending), collections.deque()
        for job in waiting:
            job.finish(error=self._no_device_error(job))

    def _no_device_error(self, job: Job) -> DeviceError:
        errs = {n: d.error for n, d in self._devices.items() if d.error is not None}
        errs.update(job.tried)
        if not errs:
            return DeviceError(f"{self.name}: no device is in rotation (MULTI_DEVICE_PRIORITIES is empty)")
        parts = "; ".join(f"{n}: {type(e).__name__}: {e}" for n, e in errs.items())
        return DeviceError(f"{self.name}: request {job.seq} failed on every device ({len(errs)}): {parts}")

    # ---- lifetime --------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop every worker; jobs still waiting fail (none is dropped silently)."""
        with self._lock:
            self._closed = True
            waiting, self._pending = list(self._pending), collections.deque()
            devices = list(self._devices.values())
        for job in waiting:
            job.finish(error=DeviceError(f"{self.name}: the compiled model was released"))
        for d in devices:
            self._release(d)
