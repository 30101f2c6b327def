"""The ``hetero`` command, in the spirit of OpenVINO's ``benchmark_app``:

    hetero devices                                   devices and their key properties
    hetero benchmark -m MODEL [-d DEVICE] ...        compile, run, report latency and throughput
    hetero query -m MODEL -d HETERO:GPU,CPU          which device runs each node, and why
    hetero dot -m MODEL -d HETERO:GPU,CPU -o DIR     affinity and subgraph dumps (rendered with Graphviz)
    hetero trace FILE                                a --trace file, summarised per device row
    hetero properties [--markdown]                   every property key, its type, default, who accepts it
    hetero demo                                      the bundled model on every device mode

A bad argument, model or device prints one clear line on stderr and exits non-zero (2); ``--verbose``
shows the traceback. ``main(argv)`` returns the exit code, so tests and docs run it in-process.
docs/cli.md documents every option and the ``--report`` JSON schema.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import DeviceError, HeteroError, InferError, ModelError, PropertyError, UnsupportedOpError

REPORT_SCHEMA = "hetero-benchmark-report/1"


def demo_model_path() -> Path:
    """The bundled demo model (package data, made by tools/make_demo_model.py)."""
    return Path(str(resources.files("hetero") / "data" / "demo_cnn.onnx"))


class UsageError(HeteroError):
    """A bad command-line argument (exit code 2, one line on stderr)."""


# ---- small helpers ---------------------------------------------------------------------------------

def _fmt(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    return str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], out=None) -> None:
    """A plain text table: columns padded to their widest cell, a rule under the header."""
    out = out or sys.stdout
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(cells[0], widths)).rstrip()
    print(line, file=out)
    print("-" * len(line), file=out)
    for r in cells[1:]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip(), file=out)


def _bytes(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _parse_value(text: str) -> Any:
    """A -p value: JSON when it parses (numbers, true/false, {...}), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _properties(pairs: Sequence[str] | None) -> dict[str, Any]:
    out = {}
    for p in pairs or ():
        key, sep, value = p.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"-p expects KEY=VALUE, got {p!r}")
        out[key.strip().upper()] = _parse_value(value.strip())
    return out


# ---- models and inputs ---------------------------------------------------------------------------

_SHAPE_ITEM = re.compile(r"\s*([^\[\],]*?)\s*\[([^\]]*)\]\s*(?:,|$)")


def parse_shapes(text: str) -> dict[str, tuple[int, ...]]:
    """``-shape`` syntax, as benchmark_app: ``input[1,3,224,224]``, ``a[1,8],b[1]`` or ``[1,3,224,224]``
    (no name: the model's only input). Returns {name ('' for unnamed): dims}."""
    out: dict[str, tuple[int, ...]] = {}
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _SHAPE_ITEM.match(text, pos)
        if not m or m.end() == pos:
            raise UsageError(f"-shape {text!r}: expected NAME[d0,d1,...] items separated by commas, e.g. "
                             "'input[1,3,224,224]'")
        name, dims = m.group(1), m.group(2)
        try:
            out[name] = tuple(int(d) for d in dims.replace(" ", "").split(",") if d != "")
        except ValueError:
            raise UsageError(f"-shape {text!r}: dimensions of {name or 'the input'!r} must be integers, "
                             f"got [{dims}]") from None
        if any(d < 0 for d in out[name]):
            raise UsageError(f"-shape {text!r}: negative dimension for {name or 'the input'!r}")
        pos = m.end()
    if not out:
        raise UsageError("-shape: empty")
    return out


def read_model(path: str, shapes: str | None = None):
    """Read ``path`` into a Graph; with ``shapes`` (``-shape``), fix the inputs' symbolic dimensions
    first, so shape inference gives every value a concrete shape."""
    from .onnx_import import _load_proto, graph_from_proto

    if shapes is None:
        from . import read_model as _read

        return _read(path)
    wanted = parse_shapes(shapes)
    proto, base_dir, where = _load_proto(path)
    inits = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    names = [i.name for i in inputs]
    if "" in wanted:
        if len(inputs) != 1 or len(wanted) != 1:
            raise UsageError(f"-shape {shapes!r}: name the input(s); the model takes {names}")
        wanted = {names[0]: wanted[""]}
    for name in wanted:
        if name not in names:
            from .errors import suggest

            raise UsageError(f"-shape: the model has no input " + suggest(name, names))
    for inp in inputs:
        if inp.name not in wanted:
            continue
        dims = wanted[inp.name]
        tt = inp.type.tensor_type
        if not inp.type.HasField("tensor_type"):
            raise UsageError(f"-shape: input {inp.name!r} is not a tensor")
        have = list(tt.shape.dim) if tt.HasField("shape") else None
        if have is not None and len(have) != len(dims):
            raise UsageError(f"-shape: input {inp.name!r} has rank {len(have)}, got {len(dims)} dimensions "
                             f"{list(dims)}")
        for i, d in enumerate(dims):
            if have is not None and have[i].HasField("dim_value") and have[i].dim_value != d:
                raise UsageError(f"-shape: input {inp.name!r} dimension {i} is fixed at {have[i].dim_value} "
                                 f"in the model, got {d}")
        tt.shape.ClearField("dim")
        for d in dims:
            tt.shape.dim.add().dim_value = d
    del proto.graph.value_info[:]  # inferred again from the concrete inputs
    return graph_from_proto(proto, base_dir=base_dir, where=where)


def _input_desc(info) -> str:
    shp = "?" if info.shape is None else "[" + ",".join("?" if d is None else str(d) for d in info.shape) + "]"
    return f"{info.name}: {'?' if info.dtype is None else info.dtype}{shp}"


def random_inputs(graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs of the right dtype and shape: floats ~ N(0,1), integers in [0, 8), booleans
    fair coins. Symbolic dimensions are an error naming the input and the -shape to give."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for info in graph.inputs:
        if info.kind != "tensor" or info.dtype is None:
            raise UsageError(f"input {info.name!r} is a {info.kind} of unknown element type; "
                             "benchmark makes random tensors only")
        if not info.is_static:
            example = ",".join(str(d) if isinstance(d, int) else "1" for d in (info.shape or ()))
            raise UsageError(f"input {_input_desc(info)} has symbolic dimensions: give concrete ones with "
                             f"-shape {info.name}[{example}]")
        dt, shape = np.dtype(info.dtype), tuple(info.shape)
        if dt.kind == "f":
            feeds[info.name] = rng.standard_normal(shape).astype(dt)
        elif dt.kind in "iu":
            feeds[info.name] = rng.integers(0, 8, shape).astype(dt)
        elif dt.kind == "b":
            feeds[info.name] = rng.random(shape) < 0.5
        else:
            raise UsageError(f"input {info.name!r}: cannot make random data of type {dt}")
    return feeds


def _core():
    import hetero

    return hetero.Core()


def _parse_device(text: str):
    from .devices.registry import parse

    return parse(text)


# ---- devices --------------------------------------------------------------------------------------

def cmd_devices(args) -> int:
    core = _core()
    names = core.available_devices
    if args.mock:
        from .devices.registry import registry

        names = registry().available(include_mock=True)
    rows = []
    for name in names:
        def prop(key, default="-"):
            try:
                v = core.get_property(name, key)
            except HeteroError:
                return default
            if key == "DEVICE_MEMORY_SIZE":
                return _bytes(int(v))
            if key == "RANGE_FOR_STREAMS":
                return f"{v[0]}-{v[1]}"
            return _fmt(v)

        rows.append((name, prop("DEVICE_TYPE"), prop("FULL_DEVICE_NAME"), prop("OPTIMIZATION_CAPABILITIES"),
                     prop("RANGE_FOR_STREAMS"), prop("COMPUTE_UNITS"), prop("DEVICE_MEMORY_SIZE")))
    _table(("device", "type", "full name", "precisions", "streams", "compute units", "memory"), rows)
    if args.all:
        for name in names:
            print(f"\n{name}")
            for key in core.get_property(name, "SUPPORTED_PROPERTIES"):
                if key == "SUPPORTED_PROPERTIES":
                    continue
                try:
                    print(f"    {key:32s} {_fmt(core.get_property(name, key))}")
                except HeteroError as e:
                    print(f"    {key:32s} ({e})")
    if not any(n.startswith("GPU") for n in names):
        print("\nno OpenCL GPU found (pip install pocl-binary-distribution gives a CPU OpenCL device)")
    return 0


# ---- benchmark -------------------------------------------------------------------------------------

def _progress(total: float | None, unit: str, enabled: bool):
    """A tqdm bar on a terminal; a do-nothing object otherwise (or when tqdm is missing)."""
    if enabled:
        try:
            from tqdm import tqdm

            kw = dict(total=total, unit=unit, dynamic_ncols=True, leave=False,
                      bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} {unit} [{elapsed}<{remaining}]")
            try:  # delay: short runs never draw a bar; long ones show it after a second
                return tqdm(delay=1.0, **kw)
            except TypeError:  # a tqdm without `delay`
                return tqdm(**kw)
        except ImportError:
            pass

    class _Off:
        n = 0

        def update(self, k=1):
            pass

        def close(self):
            pass

    return _Off()


def _latency_stats(lat_ms: Sequence[float]) -> dict[str, float]:
    a = np.asarray(lat_ms, dtype=np.float64)
    if a.size == 0:
        return {k: float("nan") for k in ("median", "average", "min", "max", "p90", "p99")}
    return {"median": float(np.median(a)), "average": float(a.mean()), "min": float(a.min()),
            "max": float(a.max()), "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99))}


def _perf_counters(requests) -> list[dict[str, Any]]:
    """Per-layer counters averaged over the requests' last inferences, slowest first. When the
    requests were served by different devices (MULTI, AUTO after a hot swap), each device's layers are
    kept apart, named "GPU.0: conv1"."""
    runs = []
    for r in requests:
        try:
            infos = r.get_profiling_info()
        except HeteroError:
            continue
        if infos:
            runs.append((r.served_by, infos))
    split = len({dev for dev, _ in runs}) > 1
    acc: dict[str, dict[str, Any]] = {}
    count: dict[str, int] = {}
    for dev, infos in runs:
        for p in infos:
            name = f"{dev}: {p.node_name}" if split else p.node_name
            row = acc.get(name)
            if row is None:
                row = acc[name] = {"node_name": name, "node_type": p.node_type, "exec_type": p.exec_type,
                                   "status": p.status, "real_time_ms": 0.0, "cpu_time_ms": 0.0,
                                   "bytes": int(getattr(p, "nbytes", 0) or 0)}
            count[name] = count.get(name, 0) + 1
            row["real_time_ms"] += p.real_time.total_seconds() * 1e3
            row["cpu_time_ms"] += p.cpu_time.total_seconds() * 1e3
    rows = list(acc.values())
    for row in rows:
        row["real_time_ms"] /= count[row["node_name"]]
        row["cpu_time_ms"] /= count[row["node_name"]]
    # subgraph totals are summaries, not layers: keep them out of the per-layer ranking
    rows.sort(key=lambda r: (r["node_type"] == "Subgraph", -r["real_time_ms"]))
    return rows


def _print_counters(rows: list[dict[str, Any]]) -> None:
    layers = [r for r in rows if r["node_type"] != "Subgraph"]
    total = sum(r["real_time_ms"] for r in layers) or 1.0
    print("\nPer-layer performance counters (average over requests, slowest first):")
    _table(("layer", "type", "exec type", "status", "time ms", "%", "bytes"),
           [(r["node_name"], r["node_type"], r["exec_type"], r["status"], f"{r['real_time_ms']:.3f}",
             f"{100 * r['real_time_ms'] / total:.1f}", r["bytes"] or "") for r in layers])
    subs = [r for r in rows if r["node_type"] == "Subgraph"]
    if subs:
        print("\nSubgraph totals (with their Reorders):")
        for r in subs:
            print(f"    {r['node_name']:<28s} {r['exec_type']:<10s} {r['real_time_ms']:9.3f} ms  "
                  f"{_bytes(r['bytes']) if r['bytes'] else ''}")
    print(f"Total: {total:.3f} ms over {len(layers)} layers "
          f"({sum(1 for r in layers if r['node_type'] == 'Reorder')} Reorders)")


def _dump_single(compiled, device: str, directory: Path) -> dict[str, Path]:
    """Dot dumps for a single-device model: every node on that device (same files HETERO writes)."""
    from .partition import split, write_dumps

    graph = compiled.get_runtime_model()
    plan = split(graph, {n.name: device for n in graph.nodes}, host_device="CPU" if device != "CPU" else device)
    return write_dumps(plan, directory, [device])


def _render(paths: Sequence[Path], fmt: str) -> tuple[list[Path], str | None]:
    """Render .dot files with Graphviz ``dot``; returns (rendered files, a note when it could not)."""
    if fmt == "dot":
        return [], None
    exe = shutil.which("dot")
    if exe is None:
        return [], "Graphviz 'dot' is not installed: wrote the .dot files only (apt-get install graphviz)"
    out = []
    for p in paths:
        target = p.with_suffix("." + fmt)
        r = subprocess.run([exe, f"-T{fmt}", str(p), "-o", str(target)], capture_output=True, text=True)
        if r.returncode != 0:
            raise HeteroError(f"dot -T{fmt} {p.name} failed: {r.stderr.strip().splitlines()[-1:]}")
        out.append(target)
    return out, None


def cmd_benchmark(args) -> int:
    from . import __version__
    from .runtime.request import AsyncInferQueue

    if args.niter is not None and args.niter < 1:
        raise UsageError(f"-niter must be >= 1, got {args.niter}")
    if args.time is not None and args.time <= 0:
        raise UsageError(f"-t must be > 0 seconds, got {args.time}")
    if args.nireq is not None and args.nireq < 1:
        raise UsageError(f"-nireq must be >= 1, got {args.nireq}")
    if args.nstreams is not None and args.nstreams < 1:
        raise UsageError(f"-nstreams must be >= 1, got {args.nstreams}")
    niter, seconds = args.niter, args.time
    if niter is None and seconds is None:
        seconds = 10.0
    parsed = _parse_device(args.device)
    config = _properties(args.property)
    core = _core()

    # 1. read the model (fixing symbolic input dims with -shape), make random inputs
    t0 = time.perf_counter()
    model = read_model(args.model, args.shape)
    t_read = (time.perf_counter() - t0) * 1e3
    feeds = random_inputs(model)

    # 2. compile with the hint, streams, counters, dumps, trace
    config["PERFORMANCE_HINT"] = args.hint.upper()
    if args.nstreams is not None:
        config["NUM_STREAMS"] = args.nstreams
    if args.pc:
        config["PERF_COUNT"] = True
    if args.trace:
        config["HETERO_TRACE_FILE"] = str(args.trace)
    dump_dir = Path(args.dump_dot) if args.dump_dot else None
    if dump_dir is not None and parsed.virtual == "HETERO":
        config["HETERO_DUMP_GRAPH_DOT"] = True
        config["HETERO_DUMP_DIR"] = str(dump_dir)
    t0 = time.perf_counter()
    compiled = core.compile_model(model, args.device, config)
    t_compile = (time.perf_counter() - t0) * 1e3
    exec_devices = list(compiled.get_property("EXECUTION_DEVICES"))
    streams = compiled.get_property("NUM_STREAMS")
    nireq = args.nireq or int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    dumps: list[Path] = []
    if dump_dir is not None:
        if parsed.virtual == "HETERO":
            dumps = [Path(p) for p in getattr(compiled, "dump_files", {}).values()]
        elif parsed.virtual is None:
            dumps = list(_dump_single(compiled, exec_devices[0], dump_dir).values())
        else:
            print(f"note: --dump-dot: {parsed.virtual} has no graph split to draw; nothing written",
                  file=sys.stderr)
    print(f"model:       {args.model} ({len(model.nodes)} nodes; inputs "
          f"{', '.join(_input_desc(i) for i in model.inputs)})")
    print(f"device:      {args.device} (executes on {', '.join(exec_devices)})")
    print(f"hint:        {config['PERFORMANCE_HINT']}, {streams} stream(s), {nireq} infer request(s)")
    print(f"Read model:         {t_read:10.2f} ms")
    print(f"Compile model:      {t_compile:10.2f} ms")

    try:
        # 3. first inference (includes lazy set-up: reported apart, not in the statistics)
        queue = AsyncInferQueue(compiled, nireq)
        for r in queue:  # every request gets the inputs once, not per run
            for name, value in feeds.items():
                r.set_tensor(name, value)
        t0 = time.perf_counter()
        queue[0].infer()
        t_first = (time.perf_counter() - t0) * 1e3
        print(f"First inference:    {t_first:10.2f} ms")

        # 4. the measured loop: keep nireq requests in flight until -niter runs or -t seconds
        latencies: list[float] = []
        served: Counter = Counter()

        def done(request, _userdata):
            latencies.append(request.latency)
            served[request.served_by or compiled._device_name] += 1

        queue.set_callback(done)
        bar = _progress(niter if niter else seconds, "it" if niter else "s",
                        enabled=not args.no_progress and sys.stdout.isatty())
        started = 0
        t_start = time.perf_counter()
        last = t_start
        while True:
            now = time.perf_counter()
            if (niter is not None and started >= niter) or (niter is None and now - t_start >= seconds):
                break
            queue.start_async()
            started += 1
            if niter is not None:
                bar.update(1)
            elif now - last >= 0.1:
                bar.update(now - last)
                last = now
        queue.wait_all()
        duration = time.perf_counter() - t_start
        bar.close()
    finally:
        compiled.release()  # stops the workers and writes the trace file
    stats = _latency_stats(latencies)
    fps = len(latencies) / duration if duration > 0 else float("nan")
    print(f"Count:              {len(latencies):10d} iterations")
    print(f"Duration:           {duration * 1e3:10.2f} ms")
    print("Latency:")
    for key, label in (("median", "Median"), ("average", "Average"), ("min", "Min"), ("max", "Max"),
                       ("p90", "P90"), ("p99", "P99")):
        print(f"    {label + ':':16s}{stats[key]:10.2f} ms")
    print(f"Throughput:         {fps:10.2f} FPS")
    if parsed.virtual in ("MULTI", "AUTO", "BATCH") or len(served) > 1:
        print("Served by:")
        for dev, n in sorted(served.items(), key=lambda kv: -kv[1]):
            print(f"    {dev + ':':16s}{n:10d} ({100 * n / max(len(latencies), 1):.1f}%)")
    counters = None
    if args.pc:
        counters = _perf_counters(list(queue))
        _print_counters(counters)
    rendered: list[Path] = []
    if dumps:
        rendered, note = _render([p for p in dumps if p.suffix == ".dot"], args.dot_format)
        print(f"dot files:   {', '.join(str(p) for p in dumps + rendered)}")
        if note:
            print(f"note: {note}", file=sys.stderr)
    if args.trace:
        print(f"trace:       {args.trace} (open in https://ui.perfetto.dev or chrome://tracing)")
    if args.report:
        report = {
            "schema": REPORT_SCHEMA,
            "hetero_version": __version__,
            "model": {"path": str(args.model), "name": model.name, "nodes": len(model.nodes),
                      "inputs": [{"name": i.name, "dtype": str(i.dtype), "shape": list(i.shape)}
                                 for i in model.inputs]},
            "device": args.device,
            "execution_devices": exec_devices,
            "hint": config["PERFORMANCE_HINT"],
            "config": {k: v for k, v in config.items()},
            "nstreams": int(streams),
            "nireq": int(nireq),
            "limit": {"niter": niter, "time_s": seconds},
            "timings_ms": {"read_model": t_read, "compile": t_compile, "first_inference": t_first},
            "count": len(latencies),
            "duration_ms": duration * 1e3,
            "latency_ms": stats,
            "throughput_fps": fps,
            "served_by": dict(served),
            "perf_counters": counters,
            "dot_files": [str(p) for p in dumps + rendered],
            "trace_file": str(args.trace) if args.trace else None,
        }
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"report:      {args.report}")
    return 0


# ---- query --------------------------------------------------------------------------------------

def _placement_config(args) -> dict[str, Any]:
    config = _properties(getattr(args, "property", None))
    if getattr(args, "rules", None):
        config["AFFINITY_RULES"] = args.rules
    if getattr(args, "policy", None):
        config["AFFINITY_POLICY"] = args.policy.upper()
    if getattr(args, "affinity", None):
        manual = {}
        for a in args.affinity:
            node, sep, dev = a.rpartition("=")
            if not sep or not node:
                raise UsageError(f"--affinity expects NODE=DEVICE, got {a!r}")
            manual[node] = dev
        config["AFFINITY"] = manual
    return config


def _hetero_device(text: str) -> str:
    """``query`` and ``dot`` work on a split: a single device D is read as HETERO:D."""
    parsed = _parse_device(text)
    if parsed.virtual is None:
        return "HETERO:" + parsed.text
    if parsed.virtual != "HETERO":
        raise UsageError(f"-d {text!r}: this command shows a HETERO split; give HETERO:DEV1,DEV2 or one device "
                         f"(query shows per-device support for MULTI/AUTO lists)")
    return text


def plan_of(graph, mapping: dict[str, str], host: str):
    """The split (subgraphs, boundaries) of an optimised graph under a {node: device} mapping."""
    from .partition import split

    return split(graph, {n.name: mapping[n.name] for n in graph.nodes}, host_device=host).check()


def cmd_query(args) -> int:
    from .runtime.core import prepare_graph

    core = _core()
    model = read_model(args.model, args.shape)
    config = _placement_config(args)
    parsed = _parse_device(args.device)
    if parsed.virtual in ("MULTI", "AUTO", "BATCH"):
        return _query_each(core, model, parsed, config)
    device = _hetero_device(args.device)
    q = core.query_model(model, device, config)
    optimized = prepare_graph(model)
    op_of = {n.name: n.op_type for n in model.nodes}
    op_of.update({n.name: n.op_type for n in optimized.nodes})
    reasons = getattr(q, "reasons", {})
    unsupported = getattr(q, "unsupported", {})
    rows = []
    for node, dev in q.items():
        why = reasons.get(node, "")
        if node in unsupported:
            why = "; ".join(f"{d}: {r}" for d, r in unsupported[node].items())
        rows.append((node, op_of.get(node, "?"), dev, why))
    _table(("node", "op", "device", "reason"), rows)
    gone = list(getattr(q, "optimized_out", []))
    if gone:
        print(f"optimized out (run nowhere): {', '.join(gone)}")
    counts = Counter(dev for dev in q.values())
    print(f"\nnodes: {len(q)}  " + "  ".join(f"{d}: {n}" for d, n in sorted(counts.items())))
    if unsupported:
        print(f"{len(unsupported)} node(s) no listed device can run; compile would fail", file=sys.stderr)
        return 1
    devs = [i.name for i in _parse_device(device).items]
    host = next((d for d in devs if d.startswith("CPU")), "CPU")
    mapping = {n.name: q[n.name] for n in optimized.nodes}
    plan = plan_of(optimized, mapping, host)
    inner = [b for b in plan.boundaries if b.src is not None and b.dst]
    io = [b for b in plan.boundaries if b not in inner]

    def total(bs):
        known = [b.nbytes for b in bs if b.nbytes is not None]
        return sum(known), len(bs) - len(known)

    nb_inner, unk_inner = total(inner)
    nb_io, unk_io = total(io)
    print(f"subgraphs: {len(plan.subgraphs)}  " + "  ".join(
        f"{s.label}={s.device}({len(s.nodes)})" for s in plan.subgraphs))
    print(f"boundaries: {len(inner)} between subgraphs, {nb_inner} bytes"
          + (f" (+{unk_inner} of unknown size)" if unk_inner else "")
          + f"; {len(io)} graph input/output transfers, {nb_io} bytes"
          + (f" (+{unk_io} of unknown size)" if unk_io else ""))
    return 0


def _query_each(core, model, parsed, config) -> int:
    """MULTI / AUTO: each device must run the whole model; show each one's per-node support."""
    devices = [i.name for i in parsed.items if not i.exclude]
    if not devices:
        excluded = {i.name for i in parsed.items if i.exclude}
        devices = [d for d in core.available_devices if d not in excluded]
    answers = {}
    for d in devices:
        q = core.query_model(model, "HETERO:" + d, config)
        answers[d] = (q, getattr(q, "unsupported", {}))
    from .runtime.core import prepare_graph

    names = list(next(iter(answers.values()))[0].keys()) if answers else []
    op_of = {n.name: n.op_type for n in model.nodes}
    op_of.update({n.name: n.op_type for n in prepare_graph(model).nodes})
    rows = []
    for n in names:
        row = [n, op_of.get(n, "?")]
        for d in devices:
            q, uns = answers[d]
            row.append("yes" if n not in uns else "no: " + "; ".join(uns[n].values()))
        rows.append(row)
    _table(["node", "op"] + devices, rows)
    can = [d for d in devices if not answers[d][1]]
    print(f"\ndevices that run the whole model: {', '.join(can) or 'none'}")
    cannot = [d for d in devices if answers[d][1]]
    if cannot:
        print(f"cannot: {', '.join(f'{d} ({len(answers[d][1])} node(s))' for d in cannot)}")
    return 0 if can else 1


# ---- dot ----------------------------------------------------------------------------------------

def cmd_dot(args) -> int:
    core = _core()
    model = read_model(args.model, args.shape)
    device = _hetero_device(args.device)
    config = _placement_config(args)
    out = Path(args.output)
    config.update({"HETERO_DUMP_GRAPH_DOT": True, "HETERO_DUMP_DIR": str(out)})
    compiled = core.compile_model(model, device, config)
    try:
        files = {k: Path(v) for k, v in getattr(compiled, "dump_files", {}).items()}
        plan = getattr(compiled, "plan", None)
    finally:
        compiled.release()
    if not files:
        raise HeteroError(f"{device} wrote no dump files")
    rendered, note = _render([p for p in files.values() if p.suffix == ".dot"], args.format)
    for p in list(files.values()) + rendered:
        print(p)
    if plan is not None:
        print(f"{len(plan.subgraphs)} subgraph(s), {len(plan.reorders)} Reorder(s) on "
              f"{', '.join(plan.devices)}", file=sys.stderr)
    if note:
        print(f"note: {note}", file=sys.stderr)
    return 0


# ---- trace --------------------------------------------------------------------------------------

def cmd_trace(args) -> int:
    """Summarise a trace file per row: what ran there, for how many requests, how busy it was."""
    from . import trace

    path = Path(args.file)
    if not path.exists():
        raise UsageError(f"trace file {str(path)!r} does not exist")
    try:
        rows = trace.summarize(path)
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{str(path)!r} is not a Chrome-trace JSON file ({type(e).__name__}: {e})") from None
    _table(("process", "row", "spans", "requests", "busy ms", "spans by name"),
           [(r["process"], r["lane"], r["spans"], r["requests"], f"{r['busy_ms']:.2f}",
             ", ".join(f"{n} x{c}" for n, c in sorted(r["names"].items(), key=lambda kv: -kv[1])))
            for r in rows])
    return 0


# ---- properties ------------------------------------------------------------------------------------

def property_acceptors() -> dict[str, list[str]]:
    """{key: [device kinds that accept it at compile / set_property]} from the plugins' own lists."""
    from . import properties as P
    from .devices.base import Device

    kinds: dict[str, tuple[str, ...]] = {}
    try:
        from .devices.cpu import CPUDevice

        kinds["CPU"] = tuple(CPUDevice.settable)
    except ImportError:  # pragma: no cover
        pass
    try:
        from .devices.opencl.device import OpenCLDevice

        kinds["GPU"] = tuple(OpenCLDevice.settable)
    except ImportError:
        kinds["GPU"] = tuple(Device.settable)
    from .devices.mock import MockDevice

    kinds["MOCK"] = tuple(MockDevice.settable)
    from .runtime import hetero as H

    kinds["HETERO"] = tuple(H.HETERO_KEYS) + tuple(H.FORWARD_KEYS)
    try:
        from .multi import common as M  # check_config accepts a virtual device's own keys + FORWARD_KEYS

        for v in ("MULTI", "AUTO", "BATCH"):
            kinds[v] = tuple(getattr(M, f"{v}_KEYS")) + tuple(H.FORWARD_KEYS)
    except (ImportError, AttributeError):
        pass
    out = {}
    for key, spec in P.SPECS.items():
        if spec.read_only:
            out[key] = ["read-only"]
        elif key == "HETERO_TRACE_FILE":  # taken by Core.compile_model for every device string
            out[key] = ["all"]
        else:
            out[key] = [k for k, keys in kinds.items() if key in keys]
    return out


def _type_name(spec) -> str:
    if spec.kind == "any" and spec.default is not None:  # e.g. MOCK_SPEED: a float kept as given
        return {float: "number", int: "integer", str: "string", bool: "boolean"}.get(type(spec.default), "any")
    return {"str": "string", "lowerstr": "string", "int": "integer", "bool": "boolean", "dict": "dict",
            "float": "float", "streams": "integer or AUTO", "any": "any", "ops": "string"}.get(spec.kind, spec.kind)


def properties_markdown() -> str:
    """The properties reference table of docs/properties.md, generated from hetero.properties.SPECS."""
    from . import properties as P

    acc = property_acceptors()
    lines = ["| key | type | default | accepted values | accepted by | meaning |",
             "|---|---|---|---|---|---|"]
    for key in sorted(P.SPECS):
        s = P.SPECS[key]
        default = "" if s.read_only else ("`" + json.dumps(s.default) + "`" if s.default is not None else "`None`")
        choices = ", ".join(f"`{c}`" for c in s.choices) if s.choices else ""
        if s.minimum is not None and not choices:
            choices = f">= {s.minimum}"
        lines.append(f"| `{key}` | {_type_name(s)} | {default} | {choices} | {', '.join(acc[key]) or '-'} "
                     f"| {s.doc} |")
    return "\n".join(lines) + "\n"


def cmd_properties(args) -> int:
    if args.markdown:
        sys.stdout.write(properties_markdown())
        return 0
    from . import properties as P

    acc = property_acceptors()
    _table(("key", "type", "default", "accepted by"),
           [(k, _type_name(P.SPECS[k]), "" if P.SPECS[k].read_only else json.dumps(P.SPECS[k].default),
             ", ".join(acc[k])) for k in sorted(P.SPECS)])
    return 0


# ---- demo ---------------------------------------------------------------------------------------

def _without_tail(path: Path, nodes) -> Any:
    """The model minus ``nodes`` when they only produce graph outputs (the demo's TopK head), as a
    ModelProto; None when removing them would cut the graph."""
    import onnx

    proto = onnx.load(str(path))
    g = proto.graph
    drop = [n for n in g.node if n.name in set(nodes)]
    outs = {o for n in drop for o in n.output}
    used = {i for n in g.node if n not in drop for i in n.input}
    if len(drop) != len(set(nodes)) or outs & used:
        return None
    for n in drop:
        g.node.remove(n)
    for o in [o for o in g.output if o.name in outs]:
        g.output.remove(o)
    return proto if len(g.output) else None


def _demo_run(core, model, mode: str, config: dict, x: np.ndarray, requests: int) -> dict[str, Any]:
    """Compile ``model`` for ``mode``; one inference, three timed ones, then ``requests`` async ones."""
    from .runtime.request import AsyncInferQueue

    t0 = time.perf_counter()
    compiled = core.compile_model(model, mode, config)
    t_compile = (time.perf_counter() - t0) * 1e3
    try:
        req = compiled.create_infer_request()
        res = req.infer({"input": x})
        t0 = time.perf_counter()
        for _ in range(3):
            res = req.infer({"input": x})
        lat = (time.perf_counter() - t0) / 3 * 1e3
        # a burst of async requests: MULTI spreads them over its devices, AUTO may hot-swap
        served: Counter = Counter()
        results: list[np.ndarray] = []
        queue = AsyncInferQueue(compiled, max(2, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))))
        queue.set_callback(lambda r, _u: (served.update([r.served_by or compiled._device_name]),
                                          results.append(r.get_tensor("probs").copy())))
        for _ in range(requests):
            queue.start_async({"input": x})
        queue.wait_all()
        return {"compile": t_compile, "latency": lat, "probs": res["probs"], "async": results, "served": served,
                "devices": ",".join(compiled.get_property("EXECUTION_DEVICES")),
                "plan": getattr(compiled, "plan", None), "dumps": dict(getattr(compiled, "dump_files", {}))}
    finally:
        compiled.release()


def cmd_demo(args) -> int:
    """Run the bundled model on every device mode that can run here; check the results agree."""
    core = _core()
    path = demo_model_path()
    model = core.read_model(path)
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    has_gpu = any(d.startswith("GPU") for d in core.available_devices)
    if has_gpu:
        modes = ["CPU", "GPU", "HETERO:GPU,CPU", "MULTI:GPU,CPU", "AUTO"]
    else:
        print("no OpenCL GPU found: HETERO and MULTI run with CPU only "
              "(pip install pocl-binary-distribution gives a CPU OpenCL device)")
        modes = ["CPU", "HETERO:CPU", "MULTI:CPU", "AUTO"]
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"model: {path.name} ({len(model.nodes)} nodes), input {list(x.shape)}; "
          f"{args.requests} async requests per mode")
    reference = None
    rows, ok, hetero_info = [], True, None
    for mode in modes:
        config: dict[str, Any] = {}
        if mode.startswith("HETERO"):
            config = {"HETERO_DUMP_GRAPH_DOT": True, "HETERO_DUMP_DIR": str(out_dir)}
            if args.trace:
                config["HETERO_TRACE_FILE"] = str(args.trace)
        note = ""
        try:
            try:
                r = _demo_run(core, model, mode, config, x, args.requests)
            except UnsupportedOpError as e:
                # GPU alone (and MULTI, where every device runs the whole model) cannot run the TopK --
                # the node HETERO exists for. Run the rest of the model there, compare the probabilities.
                variant = _without_tail(path, e.nodes) if e.nodes else None
                if variant is None or reference is None:
                    reasons = "; ".join(f"{n}: {r}" for n, per in e.nodes.items() for r in dict(per).values())
                    rows.append((mode, "-", "-", "-", "-", "-", f"cannot run the whole model: {reasons or e}"))
                    continue
                r = _demo_run(core, core.read_model(variant), mode, {}, x, args.requests)
                reasons = "; ".join(dict.fromkeys(r for per in e.nodes.values() for r in dict(per).values()))
                note = f" (without {', '.join(e.nodes)}: {reasons})"
        except HeteroError as e:
            rows.append((mode, "-", "-", "-", "-", "-", "FAILED: " + " ".join(str(e).split())))
            ok = False
            continue
        if mode.startswith("HETERO"):
            hetero_info = (mode, r["plan"], r["dumps"])
        probs = r["probs"]
        if reference is None:
            reference = probs
        agree = all(np.allclose(p, reference, rtol=1e-3, atol=1e-5) for p in [probs] + r["async"])
        ok &= bool(agree)
        top = np.argsort(-probs.ravel(), kind="stable")[:3].tolist()  # what the TopK head computes
        rows.append((mode, f"{r['compile']:.1f}", f"{r['latency']:.2f}", str(top), r["devices"],
                     " ".join(f"{d}:{n}" for d, n in sorted(r["served"].items())),
                     ("agrees" if agree else "DISAGREES with CPU") + note))
    _table(("mode", "compile ms", "latency ms", "top-3", "executes on", "served (async)", "result"), rows)
    if hetero_info is not None:
        mode, plan, files = hetero_info
        if plan is not None:
            print(f"\n{mode}: {len(plan.subgraphs)} subgraph(s), {len(plan.reorders)} Reorder(s)")
            for s in plan.subgraphs:
                names = ", ".join(s.nodes[:4]) + (", ..." if len(s.nodes) > 4 else "")
                print(f"    {s.label}  {s.device:6s} {len(s.nodes):3d} node(s): {names}")
        dots = [Path(p) for p in files.values() if str(p).endswith(".dot")]
        rendered, note = _render(dots, "svg") if dots else ([], None)
        if dots:
            print(f"dot files in {out_dir}: {', '.join(p.name for p in dots + rendered)}")
        if note:
            print(f"note: {note}")
    if args.trace:
        print(f"trace of {hetero_info[0] if hetero_info else 'HETERO'}: {args.trace}")
    ran = [r for r in rows if r[-1].startswith(("agrees", "DISAGREES"))]
    print(f"\n{len(ran)} mode(s) ran; " + ("all results agree" if ok else "results DISAGREE or a mode FAILED"))
    return 0 if ok else 1


# ---- entry point --------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr (no usage block) and an exception, so
    ``main`` returns 2 instead of exiting the process."""

    def error(self, message: str):
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="hetero", description="Run ONNX models across CPU and OpenCL GPU devices "
                                           "(HETERO split, MULTI load balancing, AUTO selection).")
    p.add_argument("--verbose", action="store_true", help="show tracebacks on errors")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")

    d = sub.add_parser("devices", help="list devices and their key properties")
    d.add_argument("--all", action="store_true", help="also print every readable property of each device")
    d.add_argument("--mock", action="store_true", help="include the MOCK test devices")
    d.set_defaults(fn=cmd_devices)

    def model_args(sp, device_default=None, device_help="device string"):
        sp.add_argument("-m", "--model", required=True, help="ONNX model file")
        if device_default is None:
            sp.add_argument("-d", "--device", required=True, help=device_help)
        else:
            sp.add_argument("-d", "--device", default=device_default, help=device_help + f" (default {device_default})")
        sp.add_argument("-shape", "--shape", default=None, metavar="NAME[dims]",
                        help="concrete input shapes for symbolic dims: input[1,3,224,224] or a[1,8],b[1]")
        sp.add_argument("-p", "--property", action="append", metavar="KEY=VALUE",
                        help="extra compile property (repeatable), e.g. -p INFERENCE_PRECISION_HINT=f16")

    b = sub.add_parser("benchmark", help="measure compile time, latency and throughput")
    model_args(b, "AUTO", "device string: CPU, GPU.1, HETERO:GPU,CPU, MULTI:GPU,CPU, AUTO")
    b.add_argument("-hint", "--hint", default="throughput",
                   choices=["latency", "throughput", "cumulative_throughput"], type=str.lower,
                   help="performance hint (default throughput)")
    lim = b.add_mutually_exclusive_group()
    lim.add_argument("-niter", "--niter", type=int, default=None, help="number of iterations")
    lim.add_argument("-t", "--time", type=float, default=None, help="seconds to run (default 10 without -niter)")
    b.add_argument("-nireq", "--nireq", type=int, default=None,
                   help="infer requests in flight (default: the model's OPTIMAL_NUMBER_OF_INFER_REQUESTS)")
    b.add_argument("-nstreams", "--nstreams", type=int, default=None, help="NUM_STREAMS")
    b.add_argument("-pc", "--pc", action="store_true", help="print per-layer performance counters")
    b.add_argument("--report", metavar="FILE.json", help="write the results as JSON (schema: docs/cli.md)")
    b.add_argument("--dump-dot", metavar="DIR", help="write the affinity/subgraph dot files to DIR")
    b.add_argument("--dot-format", default="svg", choices=["dot", "svg", "png"],
                   help="render --dump-dot files with Graphviz (default svg; 'dot' = no rendering)")
    b.add_argument("--trace", metavar="FILE.json", help="write a Chrome-trace JSON of the run (Perfetto)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar (it is off anyway when "
                                                                 "stdout is not a terminal)")
    b.set_defaults(fn=cmd_benchmark)

    def placement_args(sp):
        sp.add_argument("--rules", help="AFFINITY_RULES, e.g. 'TopK=CPU; conv*=GPU'")
        sp.add_argument("--policy", choices=["FALLBACK", "COST", "fallback", "cost"], help="AFFINITY_POLICY")
        sp.add_argument("--affinity", action="append", metavar="NODE=DEVICE", help="manual AFFINITY (repeatable)")

    q = sub.add_parser("query", help="per-node device table with reasons; subgraph and boundary summary")
    model_args(q, None, "HETERO:GPU,CPU (a single device D means HETERO:D; MULTI/AUTO lists: support per device)")
    placement_args(q)
    q.set_defaults(fn=cmd_query)

    dt = sub.add_parser("dot", help="write (and render) the HETERO affinity and subgraph dumps")
    model_args(dt, None, "HETERO:GPU,CPU (a single device D means HETERO:D)")
    placement_args(dt)
    dt.add_argument("-o", "--output", required=True, help="output folder")
    dt.add_argument("--format", default="svg", choices=["dot", "svg", "png"],
                    help="also render with Graphviz when installed (default svg)")
    dt.set_defaults(fn=cmd_dot)

    tr = sub.add_parser("trace", help="summarise a --trace file: per device row, spans, requests, busy time")
    tr.add_argument("file", help="a Chrome-trace JSON written by --trace / HETERO_TRACE_FILE")
    tr.set_defaults(fn=cmd_trace)

    pr = sub.add_parser("properties", help="every property key: type, default, which devices accept it")
    pr.add_argument("--markdown", action="store_true", help="as the Markdown table of docs/properties.md")
    pr.set_defaults(fn=cmd_properties)

    dm = sub.add_parser("demo", help="run the bundled model on CPU, GPU, HETERO, MULTI and AUTO")
    dm.add_argument("-o", "--output", default="hetero_demo", help="folder for the dot files (default hetero_demo)")
    dm.add_argument("--requests", type=int, default=8, help="async requests per mode (default 8)")
    dm.add_argument("--trace", metavar="FILE.json", help="write a Chrome trace of the HETERO run")
    dm.set_defaults(fn=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv
    try:
        args = parser.parse_args(argv)
        if args.version:
            from . import __version__

            print(f"hetero {__version__}")
            return 0
        if args.command is None:
            parser.print_help()
            return 2
        return int(args.fn(args) or 0)
    except SystemExit as e:  # --help
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    except KeyboardInterrupt:
        print("hetero: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `hetero query ... | head`
        return 0
    except (HeteroError, OSError, ValueError) as e:
        if verbose:
            raise
        cmd = next((a for a in argv if not a.startswith("-")), "")
        msg = " ".join(str(e).split())  # one line: multi-line messages are folded
        print(f"hetero{' ' + cmd if cmd else ''}: error: {msg}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug: still one line, with the way to see more
        if verbose:
            raise
        print(f"hetero: internal error: {type(e).__name__}: {e} (run with --verbose for the traceback)",
              file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
