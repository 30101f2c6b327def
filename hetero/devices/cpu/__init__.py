"""The CPU plugin: numpy kernels (BLAS for the heavy ones), streams as worker threads."""
from __future__ import annotations

import os
import platform
import time
from typing import Any, Mapping

import numpy as np

from ...errors import InferError, UnsupportedOpError
from ...ir import Graph, Node, node_value_inputs
from ...log import debug
from ..base import Device, Executable, ProfileRecord
from . import registry
from .memory import ALIGN, VIEW_OPS, MemoryPlan, plan as plan_memory


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _node_opset(graph: Graph, node: Node) -> int:
    if node.domain in ("", "ai.onnx"):
        return graph.opset
    return int(graph.opsets.get(node.domain, 1))


def unsupported_reason(graph: Graph, node: Node) -> str | None:
    """None if the CPU kernel table runs ``node``, else why not."""
    entry = registry.lookup(node.op_type, node.domain, _node_opset(graph, node))
    if entry is None:
        dom = f" (domain {node.domain})" if node.domain else ""
        return f"{node.op_type}{dom}: no CPU kernel"
    if entry.attrs is not None:
        extra = sorted(set(node.attrs) - entry.attrs)
        if extra:
            return f"{node.op_type}: attribute(s) {extra} not supported by the CPU kernel"
    return None


class CPUDevice(Device):
    family = "CPU"
    auto_priority = 0

    def __init__(self, name: str = "CPU"):
        self.name = name
        super().__init__()

    def read_only_property(self, key: str) -> Any:
        if key == "FULL_DEVICE_NAME":
            return _cpu_name()
        if key == "DEVICE_TYPE":
            return "cpu"
        if key == "OPTIMIZATION_CAPABILITIES":
            return ["FP32", "INT8", "BIN", "EXPORT_IMPORT"]
        if key == "RANGE_FOR_STREAMS":
            return (1, os.cpu_count() or 1)
        if key == "RANGE_FOR_ASYNC_INFER_REQUESTS":
            return (1, 64, 1)
        if key == "AVAILABLE_DEVICES":
            return [""]
        return super().read_only_property(key)

    def throughput_streams(self, config: Mapping[str, Any]) -> int:
        return os.cpu_count() or 1  # one stream per core

    def query(self, graph: Graph) -> dict[str, bool | str]:
        out: dict[str, bool | str] = {}
        for n in graph.nodes:
            r = unsupported_reason(graph, n)
            out[n.name] = True if r is None else r
        return out

    def compile(self, graph: Graph, config: Mapping[str, Any] | None = None) -> "CPUExecutable":
        t0 = time.perf_counter()
        cfg = self.config(config)
        exe = CPUExecutable(graph, self.name)
        exe.compile_time = time.perf_counter() - t0
        exe.config = cfg
        exe.num_threads = int(cfg.get("INFERENCE_NUM_THREADS", 0) or 0)
        streams = self.optimal_streams(cfg)
        if not exe.num_threads and streams > 1:
            # as OpenVINO's CPU plugin: the streams share the cores, each inference uses its share
            # (without this a stream that got the kernel pool ran 2 threads next to the other
            # stream's: 3 busy threads on 2 cores, and they wait on each other's GIL)
            exe.num_threads = max(1, (os.cpu_count() or 1) // streams)
        if exe.memory_plan is not None:
            debug(f"{self.name} {graph.name!r}: memory plan: {exe.memory_plan.describe()}")
        return exe


class _Step:
    """One node bound to its kernel, with everything the run loop needs precomputed."""

    __slots__ = ("node", "fn", "ins", "outs", "kw", "frees", "exec_type", "run_graph", "guard", "out_param")

    def __init__(self, node, fn, ins, outs, kw, exec_type, run_graph, out_param):
        self.node = node
        self.fn = fn
        self.ins = ins  # value slots of the inputs (slot 0 is always None: an omitted input)
        self.outs = outs  # value slots of the outputs (omitted outputs go to a scratch slot)
        self.kw = kw  # attributes plus the static context parameters, built once
        self.frees: tuple[int, ...] = ()
        self.exec_type = exec_type
        self.run_graph = run_graph  # the kernel takes _run_graph (bound per run)
        self.guard = False  # an input may live in the arena: results must not alias it (see _unalias)
        self.out_param = out_param  # the kernel takes _out


# how the run loop stores a step's result (the program's ``mode``)
_PLAIN, _PLANNED, _GUARDED, _GENERIC, _RUN_GRAPH = 0, 1, 2, 3, 4


class _StreamContext:
    """One stream's state (``CPUExecutable.new_context()``): its arena, allocated on the stream's
    first inference and reused by every later one, and the run program bound to it."""

    __slots__ = ("arena", "owner", "program")

    def __init__(self):
        self.arena: np.ndarray | None = None  # the plan's bytes (64-byte aligned)
        self.owner: np.ndarray | None = None  # the array owning them: every view's ``.base``
        self.program: list | None = None


def _unalias(x, owner: np.ndarray):
    """``x``, or a copy of it where it is a view into the arena (``owner``: the array owning the
    arena's memory, which numpy makes the ``.base`` of every view of it): a result the memory plan
    did not expect to share arena memory (a kernel returning its input or a view of it, outside the
    view ops) must not be overwritten when the arena bytes it came from are reused."""
    if type(x) is np.ndarray:
        b = x.base
        while b is not None:
            if b is owner:
                return x.copy()
            b = getattr(b, "base", None)  # as_strided views hang off a helper object
        return x
    if type(x) is list:  # a sequence may hold arena arrays
        return [_unalias(e, owner) for e in x]
    return x


class CPUExecutable(Executable):
    """Runs a graph's nodes in order with numpy kernels.

    Compile (``__init__``):

    1. bind each node to its kernel; give every value a slot in a flat list (the run's environment)
       and precompute each step's input/output slots and keyword arguments (attributes plus static
       context parameters), so the run loop does no name lookups and builds no dicts;
    2. liveness: each step frees the values whose last reader it is, so the peak of freshly allocated
       memory follows the live set rather than the whole graph;
    3. memory plan (:mod:`hetero.devices.cpu.memory`): values whose kernel writes into ``_out`` get a
       fixed place in an arena.

    Run: each stream context (``new_context()``) allocates its own arena once, on its first run, and
    binds one view of it per planned value into its program; every inference on that stream reuses
    them, and concurrent streams never share an arena. ``context=None`` (direct calls, subgraph bodies)
    runs without an arena: every kernel allocates its outputs. Graph outputs are never in the arena,
    so what a run returns survives the next run. A result that aliases the arena where the plan did
    not expect it (a kernel returning its input) is copied (:func:`_unalias`).
    """

    def __init__(self, graph: Graph, device_name: str = "CPU", memory_plan: bool = True):
        self.graph = graph
        self.device_name = device_name
        self.config: dict[str, Any] = {}
        self._sub_cache: dict[int, CPUExecutable] = {}
        missing = {}
        entries = []
        for n in graph.nodes:
            reason = unsupported_reason(graph, n)
            if reason is not None:
                missing[n.name] = {device_name: reason}
                continue
            entries.append((n, registry.lookup(n.op_type, n.domain, _node_opset(graph, n))))
        if missing:
            lines = "; ".join(f"{k} ({graph.node_by_name[k].op_type}): {v[device_name]}" for k, v in missing.items())
            raise UnsupportedOpError(f"{device_name} cannot run {len(missing)} node(s): {lines}", missing)
        # 1. value slots: 0 holds None (omitted inputs), 1 is scratch for omitted outputs
        index: dict[str, int] = {"": 0}
        scratch = 1

        def slot(v: str) -> int:
            if v not in index:
                index[v] = len(index) + 1
            return index[v]

        for v in list(graph.input_names) + sorted(graph.initializers) + sorted(graph.outer_scope):
            slot(v)
        steps = []
        for n, entry in entries:
            kw = dict(n.attrs)
            if "_num_outputs" in entry.context:
                kw["_num_outputs"] = len(n.outputs)
            if "_opset" in entry.context:
                kw["_opset"] = _node_opset(graph, n)
            if "_output_dtypes" in entry.context:
                kw["_output_dtypes"] = [graph.info(o).dtype if o else None for o in n.outputs]
            ins = tuple(slot(i) if i else 0 for i in n.inputs)
            for v in node_value_inputs(n):  # outer-scope names of subgraph bodies
                slot(v)
            outs = tuple(slot(o) if o else scratch for o in n.outputs)
            steps.append(_Step(n, entry.fn, ins, outs, kw, f"cpu_{entry.fn.__name__}",
                               "_run_graph" in entry.context, "_out" in entry.context))
        for v in graph.output_names:
            slot(v)
        self._index = index
        self._steps = steps
        self._template: list = [None] * (len(index) + 1)
        for k, a in graph.initializers.items():
            # read-only views: no kernel may write into the model's constants, and the kernels'
            # per-weight caches (Winograd / tap-major weights, BN's affine form) trust only
            # read-only arrays not to change between inferences
            if isinstance(a, np.ndarray) and a.flags.writeable:
                a = a.view()
                a.flags.writeable = False
            self._template[index[k]] = a
        produced = set(graph.input_names) | set(graph.initializers) | set(graph.outer_scope)
        produced.update(o for n in graph.nodes for o in n.outputs if o)
        self._unproduced = [o for o in graph.output_names if o not in produced]
        self._out_slots = tuple((o, index[o]) for o in graph.output_names)
        # 2. liveness: last step reading each value; graph outputs are never freed
        keep = set(graph.output_names)
        last: dict[str, int] = {}
        for idx, s in enumerate(steps):
            for v in node_value_inputs(s.node):
                last[v] = idx
        frees: dict[int, list[str]] = {}
        for v, idx in last.items():
            if v not in keep:
                frees.setdefault(idx, []).append(v)
        for idx, s in enumerate(steps):
            dead = [o for o in s.node.outputs if o and o not in last and o not in keep]
            s.frees = tuple(index[v] for v in frees.get(idx, []) + dead)
        # 3. memory plan; steps whose inputs may live in the arena check their results
        self.memory_plan: MemoryPlan | None = None
        if memory_plan:
            mp = plan_memory(graph, [s.node.name for s in steps if s.out_param])
            if mp.offsets:
                self.memory_plan = mp
                for s in steps:
                    s.guard = s.node.op_type not in VIEW_OPS and any(
                        v in mp.roots for v in node_value_inputs(s.node))
        self._plain_program = self._program(None)

    # ---- programs ------------------------------------------------------------------------------
    def _program(self, arena: np.ndarray | None) -> list[tuple]:
        """The run loop's steps as tuples ``(fn, nin, i0, i1, ins, kw, out, frees, mode, buf, step)``
        with the arena's buffers bound in (``arena`` None: no plan). ``nin`` (the input count, or
        minus it for a kernel without keyword arguments; 0: use ``ins``) picks a call form: one or
        two inputs are passed from slots ``i0``, ``i1`` directly, with no argument list built.
        ``buf``: the arena view of the planned first output (None: not planned), of which each run
        passes a new view object as ``_out``; ``mode`` says how the result is stored."""
        mp = self.memory_plan if arena is not None else None
        prog = []
        for s in self._steps:
            kw, buf = s.kw, None
            first = s.node.outputs[0] if s.node.outputs else ""
            if mp is not None and first in mp.offsets:
                buf = mp.buffer(arena, first, self.graph)  # the run loop passes a new view of it
            if s.run_graph:
                mode, out = _RUN_GRAPH, s.outs
            elif len(s.outs) != 1:
                mode, out = _GENERIC, s.outs
            else:
                out = s.outs[0]
                mode = _PLANNED if buf is not None else _GUARDED if (mp is not None and s.guard) else _PLAIN
            ins = s.ins
            nin = len(ins) if len(ins) in (1, 2) and not s.run_graph and buf is None else 0
            if nin and not kw:
                nin = -nin
            i0 = ins[0] if ins else 0
            i1 = ins[1] if len(ins) > 1 else 0
            prog.append((s.fn, nin, i0, i1, ins, kw, out, s.frees, mode, buf, s))
        return prog

    def new_context(self) -> _StreamContext | None:
        return _StreamContext() if self.memory_plan is not None else None

    def _bind(self, ctx: _StreamContext) -> list[tuple]:
        mp = self.memory_plan
        # 64-byte aligned start (numpy only promises 16): every offset in the plan is a multiple of 64
        raw = np.empty(mp.arena_bytes + ALIGN, np.uint8)
        skip = (-raw.ctypes.data) % ALIGN
        ctx.owner = raw
        ctx.arena = raw[skip:skip + mp.arena_bytes]
        ctx.program = self._program(ctx.arena)
        return ctx.program

    # ---- running -------------------------------------------------------------------------------
    #: INFERENCE_NUM_THREADS (0: every core); set by CPUDevice.compile
    num_threads = 0

    def run(self, feeds: Mapping[str, Any], context: Any = None,
            profile: list[ProfileRecord] | None = None) -> dict[str, Any]:
        if self.num_threads:
            from .kernels import parallel

            with parallel.limit(self.num_threads):
                return self._run(feeds, context, profile)
        return self._run(feeds, context, profile)

    def _run(self, feeds: Mapping[str, Any], context: Any, profile) -> dict[str, Any]:
        if self._unproduced:
            raise InferError(f"graph output {self._unproduced[0]!r} was not produced on {self.device_name}")
        env = self._template.copy()
        index = self._index
        for k, v in feeds.items():
            i = index.get(k)
            if i is not None:
                env[i] = v
        if type(context) is _StreamContext:
            prog = context.program
            if prog is None:
                prog = self._bind(context)
            owner = context.owner
            self._execute(env, prog, owner, profile)
            # belt and braces: the plan never puts outputs in the arena, so this never copies
            return {o: _unalias(env[i], owner) for o, i in self._out_slots}
        self._execute(env, self._plain_program, None, profile)
        return {o: env[i] for o, i in self._out_slots}

    def _execute(self, env: list, program: list[tuple], owner: np.ndarray | None, profile) -> None:
        """Run ``program`` over ``env``; ``owner``: the arena's owning array (None: no arena)."""
        if profile is not None:
            return self._execute_profiled(env, program, owner, profile)
        # the hot loop: per step one tuple unpack, one call, one store (see _program for the fields)
        for fn, nin, i0, i1, ins, kw, out, frees, mode, buf, s in program:
            try:
                if mode == _PLANNED:
                    # a new view object of the step's arena bytes each run: kernels may cache by an
                    # input's identity (weakref + ``is``, e.g. Winograd weights), and one object
                    # whose contents change between runs would defeat that
                    buf = buf.view()
                    res = fn(*[env[i] for i in ins], **kw, _out=buf)
                elif nin == -2:
                    res = fn(env[i0], env[i1])
                elif nin == 2:
                    res = fn(env[i0], env[i1], **kw)
                elif nin == -1:
                    res = fn(env[i0])
                elif nin == 1:
                    res = fn(env[i0], **kw)
                elif buf is None and mode != _RUN_GRAPH:
                    res = fn(*[env[i] for i in ins], **kw)
                else:  # several outputs, the first planned; or an If/Loop/Scan
                    extra = {}
                    if buf is not None:
                        extra["_out"] = buf = buf.view()
                    if mode == _RUN_GRAPH:
                        extra["_run_graph"] = self._make_runner(env)
                    res = fn(*[env[i] for i in ins], **kw, **extra)
            except KeyError:
                raise
            except Exception as e:
                raise InferError(self._describe_failure(s, [env[i] for i in ins], e)) from e
            if mode == _PLAIN:
                if type(res) is tuple:
                    res = res[0]
                env[out] = res
            elif mode == _PLANNED:
                if res is not buf:  # the kernel could not use the buffer
                    if type(res) is tuple:
                        res = res[0]
                    if res is not buf:
                        res = _unalias(res, owner)
                env[out] = res
            elif mode == _GUARDED:
                if type(res) is tuple:
                    res = res[0]
                env[out] = _unalias(res, owner)
            else:
                self._store_generic(env, out, res, buf, owner if s.guard or buf is not None else None)
            for i in frees:
                env[i] = None

    def _execute_profiled(self, env: list, program: list[tuple], owner: np.ndarray | None,
                          profile: list[ProfileRecord]) -> None:
        """_execute with one ProfileRecord per step (each step timed on its own, through the same
        result handling)."""
        perf = time.perf_counter
        for step in program:
            s = step[-1]
            t0 = perf()
            self._execute(env, [step], owner, None)
            dt = perf() - t0
            profile.append(ProfileRecord(s.node.name, s.node.op_type, s.exec_type, dt, dt))

    @staticmethod
    def _store_generic(env: list, outs: tuple, res, buf, owner) -> None:
        if len(outs) == 1:
            if type(res) is tuple:
                res = res[0]
            res = (res,)
        elif not isinstance(res, (tuple, list)):
            res = (res,)
        for k, (i, val) in enumerate(zip(outs, res)):
            if owner is not None and not (k == 0 and val is buf):
                val = _unalias(val, owner)
            env[i] = val
        for i in outs[len(res):]:
            env[i] = None

    def _describe_failure(self, s: _Step, args, e: Exception) -> str:
        def d(a):
            if a is None:
                return "None"
            if isinstance(a, np.ndarray):
                return f"{a.dtype}{list(a.shape)}"
            if isinstance(a, list):
                return f"sequence[{len(a)}]"
            return type(a).__name__
        got = ", ".join(d(a) for a in args)
        return (f"node {s.node.name!r} ({s.node.op_type}) on {self.device_name} failed: "
                f"{type(e).__name__}: {e} (inputs: {got})")

    def _make_runner(self, env: list):
        index = self._index

        def run_graph(graph: Graph, inputs: list) -> list:
            exe = self._sub_cache.get(id(graph))
            if exe is None:
                # a body runs many times per inference (Loop) and without a stream context: no plan
                exe = CPUExecutable(graph, self.device_name, memory_plan=False)
                self._sub_cache[id(graph)] = exe
            sub = exe._template.copy()
            sub_index = exe._index
            for k in graph.outer_scope:
                i = index.get(k)
                if i is not None and k not in graph.initializers:
                    sub[sub_index[k]] = env[i]
            for info, v in zip(graph.inputs, inputs):
                sub[sub_index[info.name]] = v
            exe._execute(sub, exe._plain_program, None, None)
            return [sub[i] for _, i in exe._out_slots]

        return run_graph
