"""MULTI: one model compiled on several devices, requests load-balanced across them (DESIGN.md §6).

``compile_multi`` runs:

1. the device list: ``MULTI:GPU,CPU``, ``MULTI:GPU(4),CPU(2)``, or MULTI_DEVICE_PRIORITIES (fastest
   first); an unknown or repeated device is a DeviceStringError naming it;
2. the properties: MULTI's own (SCHEDULE_POLICY, ENABLE_RUNTIME_FALLBACK, DEVICE_PROPERTIES, ...)
   plus the keys forwarded to each device. PERFORMANCE_HINT defaults to THROUGHPUT here (MULTI exists
   for throughput); CUMULATIVE_THROUGHPUT reaches each device as THROUGHPUT;
3. the graph passes, once; then every device compiles the optimized graph at the same time (threads);
   a device that fails to compile fails the compile, naming it;
4. the Scheduler gets each device's compiled model with a pool of workers: the "(n)" of the device
   string, else the device's optimal number of requests under its hint. MULTI's
   OPTIMAL_NUMBER_OF_INFER_REQUESTS is the sum over the devices in rotation (capped by
   PERFORMANCE_HINT_NUM_REQUESTS).

Example: ``MULTI:MOCK.0(2),MOCK.1`` with MOCK_OPTIMAL_REQUESTS=3 on MOCK.1 -> workers {MOCK.0: 2,
MOCK.1: 3}, OPTIMAL_NUMBER_OF_INFER_REQUESTS 5, EXECUTION_DEVICES [MOCK.0, MOCK.1].
"""
from __future__ import annotations

from typing import Any, Mapping

from ..devices.registry import ParsedDevice
from ..errors import DeviceStringError
from ..ir import Graph
from .common import (MULTI_KEYS, ScheduledCompiledModel, check_config, compile_device, compile_parallel,
                     contexts_of, debug, device_config, device_items, resolve, with_context, worker_count)
from .scheduler import Scheduler


class MultiCompiledModel(ScheduledCompiledModel):
    """MULTI's compiled model: the CompiledModel surface over a Scheduler (see ScheduledCompiledModel)."""


def compile_devices(optimized: Graph, original: Graph, resolved, cfg: Mapping[str, Any], who: str,
                    hint_default: str) -> tuple[dict[str, Any], dict[str, int]]:
    """Compile ``optimized`` on every (device, spec) at once: ({name: CompiledModel}, {name: workers})."""
    names = [d.name for d, _ in resolved]
    cfg = dict(cfg)
    cfg.setdefault("PERFORMANCE_HINT", hint_default)
    dcfgs = {d.name: device_config(d, cfg, names) for d, _ in resolved}
    results = compile_parallel([(d.name, (lambda d=d: compile_device(d, optimized, dcfgs[d.name], original)))
                                for d, _ in resolved])
    for name in names:
        r = results[name]
        if isinstance(r, BaseException):
            for other in results.values():  # free what did compile
                if not isinstance(other, BaseException):
                    other.release()
            raise with_context(r, f"{who}: compiling on {name} failed: ")
    workers = {d.name: worker_count(d, spec, dcfgs[d.name]) for d, spec in resolved}
    return results, workers


def build_scheduled(cls, optimized: Graph, original: Graph, resolved, cfg: Mapping[str, Any], name: str,
                    hint_default: str, who: str) -> ScheduledCompiledModel:
    compiled, workers = compile_devices(optimized, original, resolved, cfg, who, hint_default)
    sched = Scheduler(name, policy=cfg.get("SCHEDULE_POLICY", "DEVICE_PRIORITY"),
                      runtime_fallback=cfg.get("ENABLE_RUNTIME_FALLBACK", True))
    for d, _ in resolved:
        cm = compiled[d.name]
        sched.add_device(d.name, cm, workers[d.name], contexts=contexts_of(cm, workers[d.name]))

    def optimal() -> int:
        w = sched.workers()
        return sum(w[n] for n in sched.priorities) or 1

    full_cfg = dict(cfg)
    full_cfg.setdefault("PERFORMANCE_HINT", hint_default)
    full_cfg["MULTI_DEVICE_PRIORITIES"] = ",".join(d.name for d, _ in resolved)
    cm = cls(optimized, name, full_cfg, sched, {d.name: s for d, s in resolved}, optimal)
    cm._extra["LOADED_FROM_CACHE"] = all(c.get_property("LOADED_FROM_CACHE") for c in compiled.values())
    debug(f"{name}: workers {workers}, policy {sched.policy}")
    return cm


def compile_multi(core, graph: Graph, parsed: ParsedDevice, config: Mapping[str, Any]) -> MultiCompiledModel:
    from ..runtime.core import prepare_graph

    cfg = check_config(config, MULTI_KEYS, "MULTI")
    items, _ = device_items(parsed, cfg, "MULTI")
    if not items:
        raise DeviceStringError(f"device string {parsed.text!r}: MULTI needs a device list, e.g. 'MULTI:GPU,CPU' "
                                "or the MULTI_DEVICE_PRIORITIES property")
    resolved = resolve(core, items, parsed.text)
    optimized = prepare_graph(graph)
    return build_scheduled(MultiCompiledModel, optimized, graph, resolved, cfg, parsed.text, "THROUGHPUT",
                           "MULTI")
