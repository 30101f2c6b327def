"""HETERO: one model split across devices (DESIGN.md §5).

``compile_hetero`` runs the whole flow:

1. resolve the device list (device string or MULTI_DEVICE_PRIORITIES) to plugins; an unknown device,
   an empty list or a nested virtual device is a DeviceStringError naming the token;
2. validate the properties; split them into HETERO's own and the per-device ones (generic keys every
   device accepts, plus DEVICE_PROPERTIES={device: {...}});
3. run the graph passes, ask each device which nodes it runs (``query``);
4. ``affinity.assign``: AFFINITY, AFFINITY_RULES, then FALLBACK priorities or the COST policy;
5. ``partition.split`` + ``Plan.check`` + ``partition.reorder``;
6. compile each subgraph with its device's plugin;
7. wrap the :class:`PlanRunner` in a :class:`HeteroCompiledModel`; write the dot dumps if asked
   (HETERO_DUMP_GRAPH_DOT); HETERO_DEBUG=1 prints each placement.

Running: a sync ``infer`` runs the subgraphs in the caller's thread in plan order, handing any other
subgraph that is ready at the same time to that subgraph's worker thread (so independent subgraphs
on different devices overlap). Async requests go through per-subgraph worker queues: request k+1
can run subgraph 0 on one device while request k runs subgraph 1 on another.
"""
from __future__ import annotations

import os
import queue
import sys
import threading
import time
from typing import Any, Callable, Mapping

import numpy as np

from .. import properties as P
from .. import trace
from ..affinity import Assignment, Costs, DeviceProfile, assign, estimate_costs, parse_rules
from ..affinity.assign import fused_originals
from ..affinity.rules import Rule
from ..devices.base import Device, ProfileRecord
from ..devices.registry import DeviceSpec, ParsedDevice, parse, parse_single
from ..log import debug_level
from ..errors import DeviceError, DeviceStringError, HeteroError, InferError, PropertyError, \
    UnsupportedOpError, suggest
from ..ir import Graph
from ..partition import HOST, Plan, Reorder, reorder, split, write_dumps
from .compiled import CompiledModel

#: properties HETERO itself reads
HETERO_KEYS = ("AFFINITY", "AFFINITY_RULES", "AFFINITY_POLICY", "HETERO_DUMP_GRAPH_DOT", "HETERO_DUMP_DIR",
               "MULTI_DEVICE_PRIORITIES", "DEVICE_PROPERTIES")
#: properties forwarded to every device that accepts them
FORWARD_KEYS = ("PERFORMANCE_HINT", "PERFORMANCE_HINT_NUM_REQUESTS", "NUM_STREAMS", "INFERENCE_NUM_THREADS",
                "INFERENCE_PRECISION_HINT", "PERF_COUNT", "CACHE_DIR", "LOG_LEVEL", "MODEL_PRIORITY")
_TRUE = ("1", "TRUE", "YES", "ON")


class QueryResult(dict):
    """``query_model`` for HETERO: {node: device} for every node that runs, with ``UNSUPPORTED`` for
    nodes no listed device can run (query_model never raises for those; compile does). Nodes the
    graph passes fused into another (the Relu of a FusedConv) are listed with that node's device.
    ``reasons`` says why each node went where; ``unsupported`` gives, for each unsupported node,
    every device's reason; ``optimized_out`` lists the nodes the passes removed (Identity, Dropout,
    constant subexpressions), which run on no device."""

    reasons: dict[str, str]
    unsupported: dict[str, dict[str, str]]
    optimized_out: list[str]


# ---- 1-2. devices and properties (the generic pieces are shared with MULTI, AUTO and BATCH) ----------

def check_config(config: Mapping[str, Any], own: tuple[str, ...], who: str) -> dict[str, Any]:
    """Validate ``config`` for a virtual device ``who`` accepting ``own`` + FORWARD_KEYS."""
    accepted = own + FORWARD_KEYS
    out = {}
    for k, v in config.items():
        if k not in P.SPECS:
            raise PropertyError(f"unknown property for {who}: " + suggest(k, accepted))
        if k not in accepted:
            raise PropertyError(f"property {k!r} is not accepted by {who}; it accepts {sorted(accepted)} "
                                "(device-specific keys go in DEVICE_PROPERTIES={device: {...}})")
        out[k] = P.validate(k, v)
    return out


def resolve(core, items, text: str) -> list[tuple[Device, DeviceSpec]]:
    """Plugins for the device-string ``items`` of ``text``; an unknown device or one listed twice is a
    DeviceStringError naming it."""
    out: list[tuple[Device, DeviceSpec]] = []
    for it in items:
        try:
            dev = core._registry.get(it, text)
        except DeviceStringError:
            raise
        except DeviceError:
            avail = core._registry.available(include_mock=True)
            raise DeviceStringError(f"device string {text!r}: unknown device {str(it)!r}; available devices: "
                                    f"{avail}") from None
        if any(d.name == dev.name for d, _ in out):
            raise DeviceStringError(f"device string {text!r}: {str(it)!r} names {dev.name}, which is already "
                                    "in the list")
        out.append((dev, it))
    return out


def canon(token: Any, names: list[str], where: str, who: str = "") -> str:
    """A user's device token ("GPU", "gpu.0") as one of the listed ``names`` ("GPU.0"); ``who``
    ("HETERO") names the list in the error."""
    listed = f"the {who + ' ' if who else ''}device list {names}"
    try:
        spec = parse_single(str(token), str(token))
    except DeviceStringError:
        raise PropertyError(f"{where}: {token!r} is not a device name; {listed}") from None
    for n in names:
        fam, _, idx = n.partition(".")
        if n == spec.name or (spec.index is None and fam == spec.family and idx in ("", "0")):
            return n
    raise PropertyError(f"{where}: device {token!r} is not in {listed}")


def device_config(dev: Device, cfg: Mapping[str, Any], names: list[str], overrides: Mapping[str, Any] | None = None,
                  who: str = "", hint: Callable[[str], str] | None = None) -> dict[str, Any]:
    """The config ``dev`` (one of the listed ``names``) compiles with: the forwarded keys it accepts
    (PERFORMANCE_HINT through ``hint`` if given), then DEVICE_PROPERTIES[dev], then ``overrides``."""
    base = {k: v for k, v in cfg.items() if k in FORWARD_KEYS and k in dev.settable}
    if hint is not None and "PERFORMANCE_HINT" in base:
        base["PERFORMANCE_HINT"] = hint(base["PERFORMANCE_HINT"])
    for token, props in (cfg.get("DEVICE_PROPERTIES") or {}).items():
        if canon(token, names, "DEVICE_PROPERTIES", who) == dev.name:
            if not isinstance(props, Mapping):
                raise PropertyError(f"DEVICE_PROPERTIES[{token!r}]: expected a dict of properties, got {props!r}")
            base.update(props)
    base.update(overrides or {})
    return dev.config(base)


def device_items(parsed: ParsedDevice, cfg: Mapping[str, Any], who: str) -> tuple[tuple[DeviceSpec, ...], str]:
    """The device list of virtual device ``who`` from the device string or MULTI_DEVICE_PRIORITIES
    (they must agree if both), exclusions ("-CPU", AUTO) left out; and the text it came from."""
    items, text = tuple(i for i in parsed.items if not i.exclude), parsed.text
    prop = cfg.get("MULTI_DEVICE_PRIORITIES")
    if prop:
        listed = parse(f"{who}:{prop}")
        if items and [i.name for i in items] != [i.name for i in listed.items]:
            raise DeviceStringError(f"device string {text!r} lists {[str(i) for i in items]} but "
                                    f"MULTI_DEVICE_PRIORITIES says {prop!r}; give one or make them agree")
        items, text = tuple(i for i in listed.items if not i.exclude), f"{who}:{prop}"
    return items, text


def _resolve_devices(core, parsed: ParsedDevice, cfg: Mapping[str, Any]) -> list[Device]:
    items, text = device_items(parsed, cfg, "HETERO")
    if not items:
        raise DeviceStringError(f"device string {text!r}: HETERO needs a device list, e.g. 'HETERO:GPU,CPU' "
                                "or the MULTI_DEVICE_PRIORITIES property")
    for it in items:
        if it.nreq is not None:
            raise DeviceStringError(f"device string {text!r}: {str(it)!r}: a request count means nothing "
                                    "inside HETERO (it is for MULTI)")
    return [d for d, _ in resolve(core, items, text)]


def _canon(token: Any, devices: list[Device], where: str) -> str:
    return canon(token, [d.name for d in devices], where, "HETERO")


def _placement_inputs(cfg: Mapping[str, Any], devices: list[Device]) -> tuple[dict[str, str], tuple[Rule, ...]]:
    manual = {str(n): _canon(d, devices, f"AFFINITY[{n!r}]") for n, d in (cfg.get("AFFINITY") or {}).items()}
    rules = tuple(Rule(r.index, r.pattern, _canon(r.device, devices, f"AFFINITY_RULES {r.describe()}"), r.kind)
                  for r in parse_rules(cfg.get("AFFINITY_RULES") or ""))
    return manual, rules


# ---- cost profiles (AFFINITY_POLICY=COST) ----------------------------------------------------------

def _host_memory(dev: Device) -> bool:
    """The device computes in host memory: its upload is the base class's identity."""
    return type(dev).upload is Device.upload


_PROFILES: dict[tuple[str, str], DeviceProfile] = {}
_PROFILES_LOCK = threading.Lock()


def _calib_graph(name: str, nodes: list, shapes: dict, inits: dict | None = None,
                 inputs: tuple = ("x",), outputs: tuple = ("y",)) -> Graph:
    from ..ir import Node, TensorInfo

    info = {v: TensorInfo(v, np.dtype(np.float32), tuple(shp)) for v, shp in shapes.items()}
    return Graph(name, tuple(Node(*n) for n in nodes), tuple(info[v] for v in inputs),
                 tuple(info[v] for v in outputs), dict(inits or {}), info, {"": 17})


def _time_graph(dev: Device, graph: Graph, cfg: Mapping[str, Any], reps: int = 5) -> float | None:
    """Fastest of ``reps`` runs of ``graph`` on ``dev``, seconds (None if the device cannot run it)."""
    try:
        if any(v is not True for v in dev.query(graph).values()):
            return None
        exe = dev.compile(graph, cfg)
        ctx = exe.new_context()
        feeds = {i.name: np.full(i.shape, 0.5, np.float32) for i in graph.inputs}
        exe.run(feeds, ctx)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            exe.run(feeds, ctx)
            times.append(time.perf_counter() - t0)
        return min(times)
    except HeteroError:
        return None


def measure_profile(dev: Device, cfg: Mapping[str, Any]) -> DeviceProfile:
    """Calibrate ``dev`` through its plugin (~0.1-2 s): a 3x3 Conv (FLOP rate), a 4 MB Add (bandwidth),
    Relu chains of 1 and 5 nodes (per-subgraph and per-node overhead), upload/download (link)."""
    c, hw = 32, 28
    rng = np.random.default_rng(0)
    conv = _calib_graph("calib_conv", [("conv", "Conv", ("x", "w"), ("y",), {"pads": [1, 1, 1, 1]})],
                        {"x": (1, c, hw, hw), "w": (c, c, 3, 3), "y": (1, c, hw, hw)},
                        {"w": rng.standard_normal((c, c, 3, 3)).astype(np.float32)})
    n = 1 << 20
    add = _calib_graph("calib_add", [("add", "Add", ("x", "z"), ("y",))], {"x": (n,), "z": (n,), "y": (n,)},
                       inputs=("x", "z"))

    def relus(k):
        names = ["x"] + [f"r{i}" for i in range(k - 1)] + ["y"]
        return _calib_graph(f"calib_relu{k}", [(f"relu{i}", "Relu", (names[i],), (names[i + 1],)) for i in range(k)],
                            {v: (1, 16) for v in names})

    t_conv, t_add = _time_graph(dev, conv, cfg), _time_graph(dev, add, cfg)
    t1, t5 = _time_graph(dev, relus(1), cfg), _time_graph(dev, relus(5), cfg)
    per_node = max(((t5 - t1) / 4) if (t1 is not None and t5 is not None) else 5e-6, 1e-6)
    per_subgraph = max((t1 - per_node) if t1 is not None else 20e-6, 1e-6)
    flops = 2.0 * c * hw * hw * c * 9 / max((t_conv or 1e-3) - per_subgraph, 1e-6)
    bw = 3.0 * 4 * n / max((t_add or 2e-3) - per_subgraph, 1e-6)
    host = _host_memory(dev)
    link_bw, link_lat = float("inf"), 5e-6
    if not host:
        try:
            big, small = np.ones(n, np.float32), np.ones(1, np.float32)
            dev.download(dev.upload(small))
            t0 = time.perf_counter()
            dev.download(dev.upload(small))
            link_lat = (time.perf_counter() - t0) / 2
            t0 = time.perf_counter()
            dev.download(dev.upload(big))
            link_bw = 2 * big.nbytes / max(time.perf_counter() - t0 - 2 * link_lat, 1e-6)
        except Exception:  # a plugin without real transfers: keep the hand-off figures
            pass
    return DeviceProfile(flops, bw, node_overhead_s=per_node, host_memory=host, link_bytes_per_s=link_bw,
                         link_latency_s=link_lat, subgraph_overhead_s=per_subgraph)


def device_profile(dev: Device, cfg: Mapping[str, Any]) -> DeviceProfile:
    """The plugin's own ``cost_profile(config)`` when it has one, else a calibration through the plugin
    (cached per device and configuration for the life of the process)."""
    hook = getattr(dev, "cost_profile", None)
    if callable(hook):
        p = hook(cfg)
        if isinstance(p, DeviceProfile):
            return p
        if isinstance(p, Mapping):
            return DeviceProfile(**p)
    key = (dev.name, repr(sorted((k, repr(v)) for k, v in cfg.items())))
    with _PROFILES_LOCK:
        if key not in _PROFILES:
            _PROFILES[key] = measure_profile(dev, cfg)
        return _PROFILES[key]


_NODE_TIMES: dict[tuple, float | None] = {}
#: at most this many distinct nodes are timed per compile; the rest use the profile's estimate
MAX_TIMED_NODES = 128


def _node_signature(graph: Graph, node) -> tuple | None:
    """What a node's time depends on: op, attributes, input/output shapes and dtypes (None when a
    shape is not static, so it cannot be timed alone)."""
    parts = []
    for v in list(node.inputs) + list(node.outputs):
        if not v:
            parts.append(None)
            continue
        i = graph.info(v)
        if not i.is_static or i.dtype is None or i.kind != "tensor":
            return None
        parts.append((tuple(i.shape), str(i.dtype), v in graph.initializers))
    try:
        attrs = repr(sorted((k, v.tolist() if isinstance(v, np.ndarray) else v) for k, v in node.attrs.items()))
    except Exception:
        return None
    return (node.op_type, node.domain, attrs, tuple(parts))


def _node_runner(dev: Device, cfg: Mapping[str, Any], graph: Graph, node):
    """A callable running ``node`` alone on ``dev`` (a one-node graph, its constants copied in), or
    None if it cannot run alone (e.g. it needs a real shape tensor at run time)."""
    rng = np.random.default_rng(0)
    ins = [v for v in dict.fromkeys(node.inputs) if v and v not in graph.initializers]
    one = Graph(f"time_{node.name}", (node,), tuple(graph.info(v) for v in ins),
                tuple(graph.info(v) for v in node.outputs if v),
                {v: graph.initializers[v] for v in node.inputs if v in graph.initializers},
                {v: graph.info(v) for v in list(node.inputs) + list(node.outputs) if v}, dict(graph.opsets))
    try:
        if dev.query(one).get(node.name) is not True:
            return None
        exe = dev.compile(one, cfg)
        ctx = exe.new_context()
        feeds = {}
        for v in ins:
            i = graph.info(v)
            feeds[v] = (rng.standard_normal(i.shape).astype(i.dtype) if i.dtype.kind == "f"
                        else np.zeros(i.shape, i.dtype))
        exe.run(feeds, ctx)
    except Exception:
        return None
    return lambda: exe.run(feeds, ctx)


def _time_node(runners: Mapping[str, Any], graph: Graph, node, profiles: Mapping[str, DeviceProfile],
               estimate: Mapping[str, float] | None = None, reps: int = 5) -> dict[str, float]:
    """Seconds ``node`` takes on each device of ``runners``: runs interleaved across devices (so a
    burst of other load hits all of them alike), the fastest kept, minus the subgraph's fixed
    overhead and, for devices with their own memory, the node's input/output transfers.

    The result is never below ``estimate[device]`` (the node's time from the device's calibrated FLOP
    rate and bandwidth): a difference of two noisy timings that falls under what the device's own
    rates allow is noise. (Seen: a device 50x slower than the CPU, whose per-run overhead dwarfs a
    tiny node, measured at 1 us per node and won every node.)"""
    best = {d: float("inf") for d in runners}
    for _ in range(reps):
        for d, run in runners.items():
            t0 = time.perf_counter()
            try:
                run()
            except Exception:
                best[d] = float("nan")
                continue
            best[d] = min(best[d], time.perf_counter() - t0)
    out = {}
    moved = [v for v in dict.fromkeys(node.inputs) if v and v not in graph.initializers] + \
        [o for o in node.outputs if o]
    for d, t in best.items():
        if t != t:  # failed
            continue
        prof = profiles[d]
        t -= prof.subgraph_overhead_s
        if not prof.host_memory:
            for v in moved:
                t -= prof.link_latency_s + (graph.info(v).nbytes or 0) / prof.link_bytes_per_s
        out[d] = max(t, prof.node_overhead_s, (estimate or {}).get(d, 0.0))
    return out


def measured_costs(graph: Graph, devices: list[Device], dev_cfgs: Mapping[str, Mapping[str, Any]],
                   supported: Mapping[str, Mapping[str, object]]) -> Costs:
    """Costs for AFFINITY_POLICY=COST: each device's profile (calibrated through its plugin) gives
    transfer times, overheads and a shape-based estimate for every node; then the distinct nodes
    (by op, attributes and shapes; at most MAX_TIMED_NODES) are timed alone on every device that can
    run them, interleaved across devices, and those times replace the estimates. Timings are cached
    for the process."""
    profiles = {d.name: device_profile(d, dev_cfgs[d.name]) for d in devices}
    base = estimate_costs(graph, profiles, supported)
    node_time = {d: dict(m) for d, m in base.node_time.items()}
    groups: dict[tuple, list[str]] = {}
    for n in graph.nodes:
        sig = _node_signature(graph, n)
        if sig is not None:
            groups.setdefault(sig, []).append(n.name)
    by_name = graph.node_by_name
    cfg_key = {d.name: repr(sorted((k, repr(v)) for k, v in dev_cfgs[d.name].items())) for d in devices}
    for sig, names in list(groups.items())[:MAX_TIMED_NODES]:
        node = by_name[names[0]]
        todo = [d for d in devices if supported.get(d.name, {}).get(node.name) is True
                and (d.name, cfg_key[d.name], sig) not in _NODE_TIMES]
        if todo:
            runners = {d.name: r for d in todo if (r := _node_runner(d, dev_cfgs[d.name], graph, node)) is not None}
            got = _time_node(runners, graph, node, profiles,
                             {d: base.node_time.get(d, {}).get(node.name, 0.0) for d in runners})
            for d in todo:
                _NODE_TIMES[(d.name, cfg_key[d.name], sig)] = got.get(d.name)
        for d in devices:
            t = _NODE_TIMES.get((d.name, cfg_key[d.name], sig))
            if t is not None:
                for n in names:
                    node_time[d.name][n] = t
    return Costs(node_time, base.transfer_time, base.io_time, base.subgraph_overhead, base.device_overhead)


# ---- 3-4. placement ------------------------------------------------------------------------------

def _place(core, graph: Graph, parsed: ParsedDevice, config: Mapping[str, Any], strict: bool,
           refused: Mapping[str, Mapping[str, str]] | None = None):
    """Validate, resolve devices, query them and assign. ``refused``: {device: {node: reason}} for
    nodes a device's compile turned down although its query accepted them."""
    cfg = check_config(config, HETERO_KEYS, "HETERO")
    devices = _resolve_devices(core, parsed, cfg)
    names = [d.name for d in devices]
    dev_cfgs = {d.name: device_config(d, cfg, names, who="HETERO") for d in devices}
    manual, rules = _placement_inputs(cfg, devices)
    supported = {d.name: dict(d.query(graph)) for d in devices}
    for dev, nodes in (refused or {}).items():
        supported.setdefault(dev, {}).update(nodes)
    policy = cfg.get("AFFINITY_POLICY", "FALLBACK")
    costs = None
    if policy == "COST":
        costs = measured_costs(graph, devices, dev_cfgs, supported)
    assignment = assign(graph, supported, [d.name for d in devices], rules, policy, manual=manual, costs=costs,
                        strict=strict)
    return cfg, devices, dev_cfgs, assignment


def query_hetero(core, graph: Graph, parsed: ParsedDevice, config: Mapping[str, Any]) -> QueryResult:
    """{node: device} for every node ("UNSUPPORTED" where no listed device can run it; never raises
    for those), with ``.reasons`` and ``.unsupported``."""
    _, _, _, a = _place(core, graph, parsed, config, strict=False)
    placed = a.as_dict()
    out, reasons = QueryResult(), {}
    fused = fused_originals(graph)  # (once: it walks every node)
    for n in graph.nodes:  # graph order; originals fused into a node follow it, on its device
        out[n.name], reasons[n.name] = placed[n.name], a.why(n.name)
        for f, _op in fused.get(n.name, ()):
            out[f], reasons[f] = placed[n.name], f"fused into {n.name}: {a.why(n.name)}"
    out.reasons = reasons
    out.unsupported = {n: dict(v) for n, v in a.unsupported.items()}
    out.optimized_out = [name for name, _op in graph.optimized_out if name not in out]
    return out


# ---- 5-7. compile ---------------------------------------------------------------------------------

def compile_hetero(core, graph: Graph, parsed: ParsedDevice, config: Mapping[str, Any]) -> "HeteroCompiledModel":
    from .core import prepare_graph

    t0 = time.perf_counter()
    optimized = prepare_graph(graph)
    refused: dict[str, dict[str, str]] = {}
    for _attempt in range(len(optimized.nodes) + 1):
        cfg, devices, dev_cfgs, assignment = _place(core, optimized, parsed, config, strict=True, refused=refused)
        by_name = {d.name: d for d in devices}
        host = next((d.name for d in devices if d.family == "CPU"), "CPU")
        plan = split(optimized, assignment, host_device=host).check()
        traits = {d.name: {"memory": "host" if _host_memory(d) else "device",
                           "precision": "f32" if _host_memory(d) else
                           str(dev_cfgs[d.name].get("INFERENCE_PRECISION_HINT", "f32")),
                           "layout": str(getattr(d, "layout", "plain"))} for d in devices}
        plan = reorder(plan, traits).check()
        try:
            exes = [by_name[s.device].compile(plan.subgraph_graph(s.id), dev_cfgs[s.device])
                    for s in plan.subgraphs]
            break
        except UnsupportedOpError as e:
            # A device's query accepted nodes its compile of this subgraph refuses (e.g. an input that
            # was a constant in the whole graph is a runtime value here): place them again without it.
            new = {n: why.get(d, "") for n, why in e.nodes.items() for d in why
                   if d in by_name and assignment.device.get(n) == d and n not in refused.get(d, {})}
            if not new:
                raise
            for n, why in e.nodes.items():
                for d, r in why.items():
                    if assignment.device.get(n) == d:
                        refused.setdefault(d, {})[n] = f"{r} (refused at compile)"
    runner = PlanRunner(plan, exes, by_name, dev_cfgs)
    streams = max([by_name[d].optimal_streams(dev_cfgs[d]) for d in plan.devices] or [1])
    used = list(plan.devices)
    extra = {
        "COMPILE_TIME_MS": (time.perf_counter() - t0) * 1e3,
        "LOADED_FROM_CACHE": False,
        "OPTIMAL_NUMBER_OF_INFER_REQUESTS": max(streams, len(plan.subgraphs), 1),
        "AFFINITY": dict(assignment.device),
        "MULTI_DEVICE_PRIORITIES": ",".join(d.name for d in devices),
    }
    name = "HETERO:" + ",".join(d.name for d in devices)
    cm = HeteroCompiledModel(optimized, runner, name, cfg, streams=streams, execution_devices=used,
                             extra_properties=extra, original=graph, plan=plan, assignment=assignment)
    env_dump = os.environ.get("HETERO_DUMP_GRAPH_DOT", "").strip().upper() in _TRUE
    if cfg.get("HETERO_DUMP_GRAPH_DOT") or env_dump:
        where = cfg.get("HETERO_DUMP_DIR") or os.environ.get("HETERO_DUMP_DIR") or "."
        cm.dump_files = write_dumps(plan, where, [d.name for d in devices])
    if debug_level() >= 1:
        print(f"[hetero] {name}: {optimized.name!r} -> {len(plan.subgraphs)} subgraph(s), "
              f"{len(plan.reorders)} Reorder(s)", file=sys.stderr)
        for n in optimized.nodes:
            print(f"[hetero]   {n.name} ({n.op_type}) -> {assignment[n.name]}: {assignment.reason[n.name]} "
                  f"[subgraph{plan.subgraph_of(n.name)}]", file=sys.stderr)
    return cm


# ---- the plan executor ----------------------------------------------------------------------------

class _Pipeline:
    """The context async requests run under: every subgraph goes through its worker queue."""


PIPELINE = _Pipeline()


class _RunContext:
    """A sync request's context: one device context per subgraph executable."""

    __slots__ = ("sub",)

    def __init__(self, sub: list):
        self.sub = sub


class _ReorderExec:
    """Runs one Reorder: download from device memory, precision/layout conversion, upload.

    ``up_dtype``: the dtype the destination executable's device buffers hold (its
    ``input_precision``, float16 for an f16 GPU subgraph) when it takes device handles; the value
    is converted to it on the host before the upload. Otherwise the destination gets a host array
    in the model's dtype (``r.dst_dtype``)."""

    def __init__(self, r: Reorder, devices: Mapping[str, Device], dst_takes_handles: bool,
                 up_dtype: np.dtype | None = None):
        self.r = r
        self.key = (r.value, r.dst_device)
        self.src = devices.get(r.src_device)
        self.dst = devices.get(r.dst_device)
        self.upload = r.transfer in ("upload", "device-to-device") and dst_takes_handles
        want = np.dtype(r.dst_dtype) if r.dst_dtype else None
        if self.upload and up_dtype is not None:
            want = np.dtype(up_dtype)
        self.want = want
        self.layout = r.src_layout != r.dst_layout
        self.label = f"{r.src_device}->{r.dst_device}:"
        self.src_device_memory = self.src is not None and not _host_memory(self.src)
        self.trivial = not (self.src_device_memory or self.layout or self.upload)

    def move(self, x: Any) -> Any:
        """``apply`` without the bookkeeping (no profiling asked)."""
        return self.apply(x)[0]

    def apply(self, x: Any) -> tuple[Any, str, int]:
        """Move ``x``; return (moved value, what was done for profiling, bytes the destination gets:
        uploaded for an upload, else the host array after conversion)."""
        done = []
        if self.src_device_memory and x is not None and not isinstance(x, (np.ndarray, list, tuple, np.generic)):
            x = self.src.download(x)  # a device handle the source executable kept in its memory
            done.append("download")
        if self.layout:
            conv = getattr(self.src, "to_plain", None)
            if conv is not None:
                x = conv(x)
                done.append(f"{self.r.src_layout}->{self.r.dst_layout}")
        want = self.want
        if want is not None and type(x) is np.ndarray and x.dtype != want and x.dtype.kind == "f" \
                and want.kind == "f":
            done.append(f"{x.dtype.name}->{want.name}")
            x = x.astype(want)
        nbytes = int(x.nbytes) if isinstance(x, np.ndarray) else int(self.r.nbytes or 0)
        if self.upload:
            x = self.dst.upload(np.asarray(x))
            done.append("upload")
        return x, self.label + ("+".join(done) or "handoff"), nbytes


class _StageWorkers:
    """Worker threads of one subgraph, each with its own executable context (started lazily)."""

    def __init__(self, runner: "PlanRunner", k: int, n: int, name: str):
        self._runner, self._k, self._n, self._name = runner, k, max(1, n), name
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, job) -> None:
        # under the lock, so a job is either ahead of close()'s stop markers or answered here
        with self._lock:
            if not self._closed:
                if len(self._threads) < self._n:
                    t = threading.Thread(target=self._loop, name=f"{self._name}-w{len(self._threads)}", daemon=True)
                    self._threads.append(t)
                    t.start()
                self._q.put(job)
                return
        job[1].put((self._k, None, DeviceError(f"{self._name}: the compiled model was released")))

    def _loop(self) -> None:
        ctx = self._runner.stages[self._k].exe.new_context()
        while True:
            job = self._q.get()
            if job is None:
                return
            feeds, done_q, want_profile, tr, rid = job
            try:
                res = self._runner._run_stage(self._k, feeds, ctx, want_profile, tr, rid)
                done_q.put((self._k, res, None))
            except BaseException as e:  # reported to the coordinator, never lost
                done_q.put((self._k, None, e))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for _ in self._threads:
                self._q.put(None)


class _Stage:
    __slots__ = ("sg", "exe", "call", "device", "feeds", "out_reorders", "users", "workers")


class PlanRunner:
    """Runs a Plan: subgraph executables plus Reorders. ``new_context()`` / ``run(feeds, context,
    profile)`` like a device Executable, so CompiledModel can wrap it."""

    def __init__(self, plan: Plan, exes: list, devices: Mapping[str, Device], dev_cfgs: Mapping[str, Mapping]):
        self.plan = plan
        self.devices = dict(devices)
        sgs = plan.subgraphs
        # a plugin hook: an executable with accepts_device_inputs and run_device(feeds, ctx, profile)
        # takes device handles (Device.upload) and hands its outputs out as handles, so the
        # Reorders around it do the real uploads, downloads and f32 <-> f16 conversions
        takes_handles = {s.id: bool(getattr(exes[s.id], "accepts_device_inputs", False))
                         and callable(getattr(exes[s.id], "run_device", None)) for s in sgs}
        self.reorders = []
        for r in plan.reorders:
            dst_ok = bool(r.dst_subgraphs) and all(takes_handles[k] for k in r.dst_subgraphs)
            up = None
            if dst_ok:  # every consumer subgraph must want the same device dtype, else host arrays
                kinds = {str(getattr(exes[k], "input_precision", {}).get(r.value, "")) for k in r.dst_subgraphs}
                dst_ok = len(kinds) == 1
                up = np.dtype(kinds.pop()) if dst_ok and "" not in kinds else None
            self.reorders.append(_ReorderExec(r, devices, dst_ok, up))
        moved = {ro.key for ro in self.reorders}
        self.input_reorders = [ro for ro in self.reorders if ro.r.src_subgraph is None]
        self.stages: list[_Stage] = []
        for s in sgs:
            st = _Stage()
            st.sg, st.exe, st.device = s, exes[s.id], s.device
            st.call = st.exe.run_device if takes_handles[s.id] else st.exe.run
            # where each input comes from: a Reorder's result or the value as produced
            st.feeds = tuple((v, (v, s.device) if (v, s.device) in moved else None) for v in s.inputs)
            st.out_reorders = tuple(ro for ro in self.reorders if ro.r.src_subgraph == s.id)
            st.users = tuple(t.id for t in sgs if s.id in t.deps)
            n = devices[s.device].optimal_streams(dev_cfgs.get(s.device, {})) if s.device in devices else 1
            st.workers = _StageWorkers(self, s.id, n, f"hetero-{s.label}-{s.device}")
            self.stages.append(st)
        # a chain: every subgraph needs the one before, so nothing can ever run side by side
        self._chain = all(k - 1 in st.sg.deps for k, st in enumerate(self.stages) if k > 0)
        g = plan.graph
        # a graph output reaches the host through its own Reorder or one it shares with the CPU
        to_host = {(r.value, d): (r.value, r.dst_device) for r in plan.reorders for d in r.destinations}
        self.outputs = tuple((v, to_host.get((v, HOST))) for v in g.output_names)
        self.constants = g.initializers
        self.loaded_from_cache = False

    def new_context(self) -> _RunContext:
        return _RunContext([st.exe.new_context() for st in self.stages])

    def close(self) -> None:
        for st in self.stages:
            st.workers.close()

    # ---- one subgraph (any thread) --------------------------------------------------------------
    def _run_stage(self, k: int, feeds: dict, ctx: Any, want_profile: bool, tr=trace.NULL_TRACER, rid=None):
        st = self.stages[k]
        recs = [] if want_profile else None
        perf = time.perf_counter
        t0 = perf()
        try:
            if tr.enabled:  # execution trace: one span per subgraph run, on its device's row
                with tr.span(st.device, st.sg.label, rid, cat="subgraph", nodes=len(st.sg.nodes)):
                    out = st.call(feeds, ctx, recs)
            else:
                out = st.call(feeds, ctx, recs)
        except HeteroError:
            raise
        except Exception as e:
            raise InferError(f"{st.sg.label} on {st.device} failed: {type(e).__name__}: {e}") from e
        t_run = perf() - t0
        moved: dict = {}
        rrecs: list | None = [] if want_profile else None
        for ro in st.out_reorders:
            self._move(ro, out[ro.r.value], moved, rrecs, ro.r.dst_device == HOST, tr, rid, st.device)
        return out, moved, recs, rrecs or (), t_run

    # ---- the coordinator ---------------------------------------------------------------------------
    def _move(self, ro: _ReorderExec, x: Any, moved: dict, rrecs: list | None, to_host: bool,
              tr=trace.NULL_TRACER, rid=None, where: str | None = None) -> None:
        if tr.enabled:  # execution trace: the Reorder as a span on the row of the thread doing it
            with tr.span(where or ro.r.dst_device, f"Reorder {ro.r.value} {ro.r.src_device}->{ro.r.dst_device}", rid,
                         cat="reorder") as span:
                recs = [] if rrecs is None else rrecs
                self._move(ro, x, moved, recs, to_host)
                span.set(bytes=recs[-1][2].nbytes, kind=recs[-1][2].exec_type)
            return
        if rrecs is None:
            if ro.trivial and type(x) is np.ndarray and x.dtype == ro.want:
                moved[ro.key] = x  # a hand-off in host memory: nothing to convert, nothing to time
            else:
                moved[ro.key] = ro.move(x)
            return
        t1 = time.perf_counter()
        y, kind, nb = ro.apply(x)
        dt = time.perf_counter() - t1
        moved[ro.key] = y
        rrecs.append((ro.r.subgraph, to_host, ProfileRecord(f"subgraph{ro.r.subgraph}: {ro.r.name}", "Reorder", kind,
                                                            dt, dt, nbytes=nb)))

    def run(self, feeds: Mapping[str, Any], context: Any = None, profile: list | None = None) -> dict[str, Any]:
        """Run the plan on host arrays ``feeds``; return the graph outputs on the host.

        1. graph inputs go through their Reorders to their devices;
        2. subgraphs run as their inputs become ready: a chain plan (each subgraph needs the one
           before) runs straight through in this thread; otherwise this thread runs the first ready
           subgraph and hands the others to their workers; under PIPELINE (async) every subgraph goes
           to its worker queue, so different requests occupy different subgraphs at once;
        3. outputs are gathered (through their Reorders to the host) and profiling assembled."""
        pipeline = context is PIPELINE
        sub_ctx = context.sub if isinstance(context, _RunContext) else None
        want = profile is not None
        env: dict[str, Any] = dict(feeds)
        moved: dict[tuple, Any] = {}
        rrecs: list | None = [] if want else None
        tr, rid = trace.current()  # bound by CompiledModel when HETERO_TRACE_FILE is set
        # 1.
        for ro in self.input_reorders:
            self._move(ro, env[ro.r.value], moved, rrecs, False, tr, rid)
        # 2.
        results: dict[int, tuple] = {}
        stages = self.stages

        def feeds_of(k: int) -> dict:
            return {v: (moved[key] if key is not None else env[v]) for v, key in stages[k].feeds}

        if self._chain and not pipeline and sub_ctx is not None:
            for k, st in enumerate(stages):
                res = self._run_stage(k, feeds_of(k), sub_ctx[k], want, tr, rid)
                results[k] = res
                out = res[0]
                for v in st.sg.outputs:
                    env[v] = out[v]
                moved.update(res[1])
        else:
            self._schedule(env, moved, results, feeds_of, pipeline, sub_ctx, want, tr, rid)
        # 3.
        outputs = {}
        for v, key in self.outputs:
            if key is not None:
                outputs[v] = moved[key]
            elif v in env:
                outputs[v] = env[v]
            else:
                outputs[v] = self.constants[v]
        if want:
            profile.extend(self._profile(results, rrecs))
        return outputs

    def _schedule(self, env, moved, results, feeds_of, pipeline: bool, sub_ctx, want: bool,
                  tr=trace.NULL_TRACER, rid=None) -> None:
        n = len(self.stages)
        remaining = [len(st.sg.deps) for st in self.stages]
        ready = [k for k in range(n) if remaining[k] == 0]
        done_q: queue.SimpleQueue = queue.SimpleQueue()
        inflight = 0
        error: BaseException | None = None

        def complete(k: int, res) -> None:
            results[k] = res
            out = res[0]
            for v in self.stages[k].sg.outputs:
                env[v] = out[v]
            moved.update(res[1])
            for u in self.stages[k].users:
                remaining[u] -= 1
                if remaining[u] == 0:
                    ready.append(u)

        while len(results) < n:
            if error is None and ready:
                ready.sort()
                if pipeline or sub_ctx is None:
                    batch, inline = ready[:], None
                else:
                    inline, batch = ready[0], ready[1:]
                ready.clear()
                for k in batch:
                    self.stages[k].workers.submit((feeds_of(k), done_q, want, tr, rid))
                    inflight += 1
                if inline is not None:
                    try:
                        complete(inline, self._run_stage(inline, feeds_of(inline), sub_ctx[inline], want, tr, rid))
                    except BaseException as e:  # let the others finish before raising
                        error = e
                    continue
            if inflight == 0:
                break
            k, res, exc = done_q.get()
            inflight -= 1
            if exc is not None:
                error = error or exc
            elif error is None:
                complete(k, res)
        if error is not None:
            raise error
        if len(results) < n:  # cannot happen for a checked plan
            raise InferError(f"HETERO plan of {self.plan.graph.name!r}: subgraphs "
                             f"{[k for k in range(n) if k not in results]} never became ready")

    def _profile(self, results: dict[int, tuple], input_rrecs: list) -> list[ProfileRecord]:
        """Records in subgraph order: incoming Reorders, nodes, outgoing-to-host Reorders, the total."""
        by_sg: dict[int, list[tuple[bool, ProfileRecord]]] = {}
        for k, to_host, rec in input_rrecs or ():
            by_sg.setdefault(k, []).append((to_host, rec))
        for k in sorted(results):
            for tgt, to_host, rec in results[k][3]:
                by_sg.setdefault(tgt, []).append((to_host, rec))
        out: list[ProfileRecord] = []
        for k in sorted(results):
            st = self.stages[k]
            _out, _mv, recs, _rr, t_run = results[k]
            mine = [rec for _h, rec in by_sg.get(k, [])]
            incoming = [rec for h, rec in by_sg.get(k, []) if not h]
            outgoing = [rec for h, rec in by_sg.get(k, []) if h]
            out.extend(incoming)
            for r in recs or ():
                et = r.exec_type if str(r.exec_type).startswith(st.device) else f"{st.device}:{r.exec_type}"
                out.append(ProfileRecord(f"{st.sg.label}: {r.node_name}", r.node_type, et, r.real_time, r.cpu_time,
                                         r.status, r.nbytes))
            out.extend(outgoing)
            moved_t = sum(r.real_time for r in mine)
            out.append(ProfileRecord(f"{st.sg.label}: total", "Subgraph", st.device, t_run + moved_t,
                                     t_run + moved_t, "EXECUTED", sum(r.nbytes for r in mine)))
        return out


class _Drivers:
    """Threads that drive async requests through the plan; one more starts only when all are busy.
    After :meth:`close` a submit raises (no thread is left to run it: it would never finish)."""

    def __init__(self, name: str):
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._idle = 0
        self._n = 0
        self._lock = threading.Lock()
        self._name = name
        self._closed = False

    def submit(self, fn, arg) -> None:
        with self._lock:
            if self._closed:
                raise DeviceError(f"{self._name}: the compiled model was released")
            if self._idle > 0:
                self._idle -= 1
            else:
                self._n += 1
                threading.Thread(target=self._loop, name=f"{self._name}-driver{self._n}", daemon=True).start()
            self._q.put((fn, arg))  # (under the lock: ahead of close()'s stop markers)

    def _loop(self) -> None:
        while True:
            job = self._q.get()
            if job is None:
                return
            fn, arg = job
            try:
                fn(arg)
            except BaseException:
                # (the request body catches its own errors; this is a finish hook's) this thread ends
                # with the error printed by threading; it must not be counted idle, or a later
                # request would be queued for a thread that is gone
                with self._lock:
                    self._n -= 1
                raise
            with self._lock:
                self._idle += 1

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for _ in range(self._n):
                self._q.put(None)


class HeteroCompiledModel(CompiledModel):
    """A CompiledModel over a PlanRunner: async requests pipeline through per-subgraph workers.

    ``plan``: the Plan; ``assignment``: the affinity Assignment; ``why(node)``: the reason a node
    went where it did; ``placements()``: {node: (device, reason)}."""

    def __init__(self, *args, plan: Plan, assignment: Assignment, **kw):
        super().__init__(*args, **kw)
        self.plan = plan
        self.assignment = assignment
        self.dump_files: dict = {}
        self._drivers = _Drivers(self._device_name)

    def _submit(self, request, body) -> None:
        self._drivers.submit(body, PIPELINE)

    def why(self, node: str) -> str:
        if node not in self.assignment.device:
            raise KeyError(f"no node {node!r} in {self._graph.name!r}: " + suggest(node, self.assignment.device))
        return self.assignment.reason[node]

    def placements(self) -> dict[str, tuple[str, str]]:
        return {n: (d, self.assignment.reason[n]) for n, d in self.assignment.device.items()}

    def release(self) -> None:
        super().release()
        self._runner.close()
        self._drivers.close()
