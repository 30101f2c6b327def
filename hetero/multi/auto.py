"""AUTO: pick the best device for a model, serve from the CPU while it compiles, then hot-swap
(DESIGN.md §6).

Selection (:func:`select_devices`, a plain function returning :class:`AutoSelection`):

1. candidates: the explicit list (``AUTO:GPU,CPU`` or MULTI_DEVICE_PRIORITIES) in its order; else every
   real device present (``Core.available_devices``: MOCK devices only when named) minus the excluded
   ones (``AUTO:-CPU``), sorted by ``Device.auto_priority`` (discrete GPU 30 > integrated GPU 20 >
   cpu-opencl 10 > other > CPU 0; ties keep discovery order);
2. a candidate is skipped, with its reason, when it cannot run every node of the model (its
   ``query``) or lacks a precision the model needs (float16 / float64 tensors, or
   INFERENCE_PRECISION_HINT=f16, against its OPTIMIZATION_CAPABILITIES; the CPU computes every numpy
   dtype and is never skipped for precision);
3. none left: DeviceError listing every candidate's reason.

Startup (:func:`compile_auto`, hint LATENCY or THROUGHPUT):

1. the *accelerator* is the first candidate; the *helper* is the first candidate whose DEVICE_TYPE is
   "cpu" (the CPU; a MOCK with MOCK_DEVICE_TYPE="cpu" stands in for it in tests);
2. no helper needed (the accelerator is the CPU, no CPU candidate, ENABLE_STARTUP_FALLBACK=False, or
   CACHE_DIR already holds the accelerator's compiled model, so its compile is quick): compile the
   accelerator now and serve from it;
3. otherwise start compiling the accelerator in a background thread, compile the helper with the
   LATENCY hint in the caller's thread, and return: requests run on the helper (EXECUTION_DEVICES
   shows "(CPU)");
4. accelerator ready: the rotation becomes [accelerator] in one step, so every new (and every
   queued) request goes to it while the helper's in-flight requests finish; the last one to finish
   releases the helper's compiled model (``Scheduler.retire``);
5. the accelerator fails to compile: a warning, then the next candidate that is not the helper; none
   left: AUTO stays on the helper, which becomes the device.

CUMULATIVE_THROUGHPUT: MULTI over every selected candidate (SCHEDULE_POLICY applies).
Runtime fallback (ENABLE_RUNTIME_FALLBACK, default on): a device that fails while serving leaves the
rotation and its request re-runs on the next candidate, compiled on demand if need be.

Traced example: ``AUTO`` on a machine with CPU and a discrete GPU.0 that takes 2 s to compile ->
candidates [GPU.0, CPU]; t=0 GPU.0 starts compiling, CPU compiles in ~1 ms, compile_model returns;
requests 0..k run on CPU (served_by "CPU", EXECUTION_DEVICES ["(CPU)"]); t=2 s GPU.0 is ready: request
k+1 and later run on GPU.0, EXECUTION_DEVICES ["GPU.0"]; CPU's last in-flight request finishes, CPU's
model is released; ``events`` lists each step.
"""
from __future__ import annotations

import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..devices.base import Device
from ..devices.registry import DeviceSpec, ParsedDevice
from ..errors import DeviceError, HeteroError
from ..ir import Graph
from .common import (AUTO_KEYS, ScheduledCompiledModel, check_config, compile_device, contexts_of, debug,
                     device_config, device_items, resolve, worker_count)
from .multi import build_scheduled
from .scheduler import Scheduler

_PRECISION_CAPS = {np.dtype(np.float16): "FP16", np.dtype(np.float64): "FP64"}


@dataclass(frozen=True)
class AutoSelection:
    """AUTO's choice: usable ``candidates`` in order (first = the accelerator), ``skipped`` with reasons."""

    candidates: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    specs: tuple[DeviceSpec | None, ...]

    @property
    def device(self) -> str:
        return self.candidates[0]


def precision_reason(dev: Device, graph: Graph, cfg: Mapping[str, Any]) -> str | None:
    """Why ``dev`` cannot compute the model's precision, or None (step 2 of the selection)."""
    if dev.family == "CPU":
        return None
    try:
        caps = {str(c).upper() for c in dev.get_property("OPTIMIZATION_CAPABILITIES")}
    except HeteroError:
        return None
    need: dict[str, str] = {}
    infos = list(graph.inputs) + list(graph.outputs) + list(graph.value_info.values())
    for t in infos:
        cap = _PRECISION_CAPS.get(np.dtype(t.dtype)) if t.dtype is not None else None
        if cap is not None:
            need.setdefault(cap, f"{t.name!r} is {t.dtype}")
    for a in graph.initializers.values():
        cap = _PRECISION_CAPS.get(a.dtype)
        if cap is not None:
            need.setdefault(cap, f"a weight is {a.dtype}")
    if str(cfg.get("INFERENCE_PRECISION_HINT", "f32")).lower() == "f16":
        need.setdefault("FP16", "INFERENCE_PRECISION_HINT=f16")
    missing = [f"{c} ({why})" for c, why in need.items() if c not in caps]
    if missing:
        return f"lacks precision {', '.join(missing)}; it offers {sorted(caps)}"
    return None


def select_devices(core, graph: Graph, parsed: ParsedDevice, cfg: Mapping[str, Any]) -> AutoSelection:
    """AUTO's candidates for ``graph`` (already through the graph passes), best first."""
    items, _ = device_items(parsed, cfg, "AUTO")
    if items:
        resolved = resolve(core, items, parsed.text)
    else:
        # an exclusion must name a real device too ("-GPU" means GPU.0)
        excluded = {d.name for d, _ in resolve(core, [i for i in parsed.items if i.exclude], parsed.text)}
        devs = [core._registry.get(n) for n in core.available_devices]
        devs = [d for d in devs if d.name not in excluded]
        devs.sort(key=lambda d: -d.auto_priority)  # stable: discovery order among equals
        resolved = [(d, None) for d in devs]
    cands, specs, skipped = [], [], []
    for d, spec in resolved:
        answers = d.query(graph)
        bad = [(n, r) for n, r in answers.items() if r is not True]
        if bad:
            skipped.append((d.name, f"cannot run {len(bad)} node(s), e.g. {bad[0][0]}: {bad[0][1]}"))
            continue
        why = precision_reason(d, graph, device_config(d, cfg, [x.name for x, _ in resolved]))
        if why:
            skipped.append((d.name, why))
            continue
        cands.append(d.name)
        specs.append(spec)
    if not cands:
        detail = "; ".join(f"{n}: {r}" for n, r in skipped) or "no device to choose from"
        raise DeviceError(f"{parsed.text}: no device can run model {graph.name!r}: {detail}")
    return AutoSelection(tuple(cands), tuple(skipped), tuple(specs))


class AutoCompiledModel(ScheduledCompiledModel):
    """AUTO's compiled model. Beyond the CompiledModel surface: ``events`` (what happened when),
    ``wait_ready()`` (block until the startup phase is over), ``selection``."""

    def __init__(self, *args, selection: AutoSelection, helper: str | None, accelerator: str, **kw):
        super().__init__(*args, **kw)
        self.selection = selection
        self._helper = helper
        self._accelerator = accelerator
        self._helping = helper is not None
        self._ready = threading.Event()
        if helper is None:
            self._ready.set()
        self._t0 = time.perf_counter()
        self._events: list[tuple[float, str]] = []
        self._events_lock = threading.Lock()
        self._failed_compile: dict[str, BaseException] = {}
        self._compile_state: dict[str, Any] = {}
        self._swap_lock = threading.Lock()
        self._helper_gone = threading.Event()

    # ---- history --------------------------------------------------------------------------------
    def _event(self, text: str) -> None:
        with self._events_lock:
            self._events.append((round((time.perf_counter() - self._t0) * 1e3, 3), text))
        debug(f"{self._device_name}: {text}")
        if self._tracer.enabled:  # HETERO_TRACE_FILE: the startup / hot-swap timeline as instants
            self._tracer.instant(self._device_name, text, cat="auto")

    def set_tracer(self, tracer) -> None:
        super().set_tracer(tracer)
        if tracer is not None and tracer.enabled:  # what happened during compile, at the time it happened
            for ms, text in self.events:
                tracer.instant(self._device_name, text, cat="auto", ts_ns=int((self._t0 + ms / 1e3) * 1e9))

    @property
    def events(self) -> list[tuple[float, str]]:
        """(ms since compile began, what happened), in order."""
        with self._events_lock:
            return list(self._events)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the startup phase is over (accelerator serving, or AUTO settled on the helper)."""
        return self._ready.wait(timeout)

    @property
    def helper_released(self) -> bool:
        return self._helper is not None and self._sched.is_released(self._helper)

    def wait_helper_released(self, timeout: float | None = None) -> bool:
        """Block until the CPU helper's compiled model has been released (False on timeout)."""
        return self._helper_gone.wait(timeout)

    def _on_release(self, name: str) -> None:
        self._event(f"{name} released")
        if name == self._helper:
            self._helper_gone.set()

    def execution_devices(self) -> list[str]:
        pr = self._sched.priorities
        if self._helping:
            return [f"({n})" if n == self._helper else n for n in pr]
        return pr

    def get_property(self, key: str) -> Any:
        if key == "ENABLE_STARTUP_FALLBACK":
            return self._config.get(key, True)
        return super().get_property(key)


def compile_auto(core, graph: Graph, parsed: ParsedDevice, config: Mapping[str, Any]) -> ScheduledCompiledModel:
    from ..runtime.core import prepare_graph

    t0 = time.perf_counter()
    cfg = check_config(config, AUTO_KEYS, "AUTO")
    optimized = prepare_graph(graph)
    sel = select_devices(core, optimized, parsed, cfg)
    debug(f"{parsed.text}: candidates {list(sel.candidates)}, skipped {list(sel.skipped)}")
    by_name = {n: core._registry.get(n) for n in sel.candidates}
    names = list(sel.candidates)
    spec_of = dict(zip(sel.candidates, sel.specs))
    hint = cfg.get("PERFORMANCE_HINT", "LATENCY")
    if hint == "CUMULATIVE_THROUGHPUT":
        resolved = [(by_name[n], spec_of[n]) for n in names]
        cm = build_scheduled(_CumulativeAuto, optimized, graph, resolved, cfg, parsed.text, "THROUGHPUT",
                             "AUTO")
        cm.selection = sel
        return cm
    policy = cfg.get("SCHEDULE_POLICY", "DEVICE_PRIORITY")
    fallback = cfg.get("ENABLE_RUNTIME_FALLBACK", True)
    acfg = {n: device_config(by_name[n], cfg, names) for n in names}
    accel = names[0]
    helper = next((n for n in names if _device_type(by_name[n]) == "cpu"), None)
    cached = _is_cached(by_name[accel], optimized, acfg[accel])
    use_helper = (helper is not None and helper != accel and cfg.get("ENABLE_STARTUP_FALLBACK", True)
                  and not cached)

    holder: dict[str, AutoCompiledModel] = {}
    sched = Scheduler(parsed.text, policy=policy, runtime_fallback=fallback,
                      replenish=lambda s: _replenish(holder["cm"], s),
                      on_release=lambda name: holder["cm"]._on_release(name))

    def optimal() -> int:
        m = holder["cm"]
        target = m._accelerator
        n = spec_of[target].nreq if spec_of.get(target) is not None and spec_of[target].nreq else None
        return n or max(1, int(by_name[target].optimal_streams(acfg[target])))

    state = {"by_name": by_name, "acfg": acfg, "spec_of": spec_of, "optimized": optimized, "original": graph,
             "names": names}
    full_cfg = dict(cfg)
    full_cfg.setdefault("PERFORMANCE_HINT", hint)
    full_cfg.setdefault("ENABLE_STARTUP_FALLBACK", True)

    def make(helper_name: str | None, accel_name: str) -> AutoCompiledModel:
        m = AutoCompiledModel(optimized, parsed.text, full_cfg, sched, spec_of, optimal, selection=sel,
                              helper=helper_name, accelerator=accel_name)
        m._t0 = t0
        m._compile_state = state
        holder["cm"] = m
        return m

    if not use_helper:
        # 2. serve from the accelerator (or the next candidate that compiles) right away
        errors: dict[str, BaseException] = {}
        for n in names:
            try:
                dcm = compile_device(by_name[n], optimized, acfg[n], graph)
            except HeteroError as e:
                errors[n] = e
                _warn(parsed.text, n, e, "trying the next candidate")
                continue
            m = make(None, n)
            for k, e in errors.items():
                m._failed_compile[k] = e
                m._event(f"{k} failed to compile: {e}")
            w = worker_count(by_name[n], spec_of[n], acfg[n])
            sched.add_device(n, dcm, w, contexts=contexts_of(dcm, w))
            m._event(f"{n} compiled" + (" (from CACHE_DIR)" if dcm.get_property("LOADED_FROM_CACHE") else "")
                     + f"; serving from {n}")
            m._extra["LOADED_FROM_CACHE"] = bool(dcm.get_property("LOADED_FROM_CACHE"))
            return m
        detail = "; ".join(f"{k}: {type(e).__name__}: {e}" for k, e in errors.items())
        raise DeviceError(f"{parsed.text}: no candidate device compiled model {graph.name!r}: {detail}")

    # 3. the accelerator compiles in the background while the helper serves
    m = make(helper, accel)
    sched.expect(2)  # the accelerator and the helper: requests wait for whichever comes first
    hcfg = device_config(by_name[helper], cfg, names, {"PERFORMANCE_HINT": "LATENCY"})
    bg = threading.Thread(target=_compile_accelerator, args=(m, helper), name=f"{parsed.text}-compile", daemon=True)
    m._event(f"{accel} compiling in the background")
    bg.start()
    try:
        hcm = compile_device(by_name[helper], optimized, hcfg, graph)
    except HeteroError as e:  # no helper after all: wait for the accelerator
        m._event(f"helper {helper} failed to compile ({e}); waiting for {accel}")
        m._helping = False
        sched.expected_failed()
        bg.join()
        if not sched.priorities:
            detail = "; ".join(f"{k}: {type(x).__name__}: {x}" for k, x in m._failed_compile.items())
            raise DeviceError(f"{parsed.text}: neither {accel} nor the helper {helper} compiled model "
                              f"{graph.name!r}: {helper}: {type(e).__name__}: {e}; {detail}") from e
        return m
    except BaseException:  # a plugin crash: nobody will own the model, so the late accelerator is freed
        sched.close()
        raise
    w = worker_count(by_name[helper], None, hcfg)
    with m._swap_lock:  # atomic against the accelerator's arrival
        first = not sched.priorities
        sched.add_device(helper, hcm, w, active=first, contexts=contexts_of(hcm, w), expected=True)
        if first:
            m._event(f"helper {helper} compiled; serving from {helper}"
                     + (f" until {accel} is ready" if m._helping else ""))
        else:  # the accelerator beat the helper
            sched.retire(helper)
    return m


class _CumulativeAuto(ScheduledCompiledModel):
    """AUTO with CUMULATIVE_THROUGHPUT: MULTI over the selected devices."""

    selection: AutoSelection


def _device_type(dev: Device) -> str:
    try:
        return str(dev.get_property("DEVICE_TYPE")).lower()
    except HeteroError:
        return ""


def _is_cached(dev: Device, graph: Graph, dcfg: Mapping[str, Any]) -> bool:
    """The plugin's ``is_cached(graph, config)`` hook (a device without one never skips the helper)."""
    hook = getattr(dev, "is_cached", None)
    if not callable(hook) or not dcfg.get("CACHE_DIR"):
        return False
    try:
        return bool(hook(graph, dcfg))
    except HeteroError:
        return False


def _warn(who: str, dev: str, e: BaseException, then: str) -> None:
    warnings.warn(f"{who}: {dev} failed to compile ({type(e).__name__}: {e}); {then}", RuntimeWarning, stacklevel=3)


def _compile_accelerator(m: AutoCompiledModel, helper: str) -> None:
    """Background: compile the accelerator (else the next non-helper candidate) and swap to it (steps 4-5).
    The startup phase ends (``wait_ready``) whatever happens here."""
    try:
        _swap_to_accelerator(m, helper)
    finally:
        m._ready.set()


def _swap_to_accelerator(m: AutoCompiledModel, helper: str) -> None:
    st = m._compile_state
    sched = m._sched
    names = [n for n in st["names"] if n != helper]
    for n in names:
        dev = st["by_name"][n]
        try:
            dcm = compile_device(dev, st["optimized"], st["acfg"][n], st["original"])
        except BaseException as e:  # noqa: BLE001 - a crash in a plugin too must not leave requests waiting
            m._failed_compile[n] = e
            nxt = next((k for k in names[names.index(n) + 1:]), None)
            _warn(m._device_name, n, e, f"trying {nxt}" if nxt else f"staying on {helper}")
            m._event(f"{n} failed to compile: {e}")
            continue
        w = worker_count(dev, st["spec_of"][n], st["acfg"][n])
        with m._swap_lock:
            m._accelerator = n
            m._helping = False
            m._event(f"{n} ready; new requests go to {n}; {helper} finishes its in-flight requests")
            sched.arrived(n, dcm, w, [n], contexts=contexts_of(dcm, w))
            if helper in sched.devices:
                sched.retire(helper)
        return
    # 5. nothing compiled: the helper becomes the device
    m._accelerator = helper
    m._helping = False
    m._event(f"no accelerator compiled; staying on {helper}")
    sched.expected_failed()


def _replenish(m: AutoCompiledModel, sched: Scheduler) -> bool:
    """Runtime fallback with no device left in rotation: the next usable candidate, compiled on demand."""
    st = m._compile_state
    for n in st["names"]:
        if n in sched.devices:
            if sched.is_released(n) or sched.device_error(n) is not None:
                continue
            sched.set_priorities([n])
            m._event(f"runtime fallback: back to {n}")
            return True
        if n in m._failed_compile:
            continue
        dev = st["by_name"][n]
        try:
            dcm = compile_device(dev, st["optimized"], st["acfg"][n], st["original"])
        except HeteroError as e:
            m._failed_compile[n] = e
            continue
        w = worker_count(dev, st["spec_of"][n], st["acfg"][n])
        sched.add_device(n, dcm, w, contexts=contexts_of(dcm, w))
        m._accelerator = n
        m._event(f"runtime fallback: compiled {n}; serving from it")
        return True
    return False
