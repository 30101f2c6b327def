"""The CPU plugin: numpy kernels (BLAS for the heavy ones), streams as worker threads."""
from __future__ import annotations

import os
import platform
import time
from typing import Any, Mapping

import numpy as np

from ...errors import InferError, UnsupportedOpError
from ...ir import Graph, Node, node_value_inputs
from ..base import Device, Executable, ProfileRecord
from . import registry


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

    def optimal_streams(self, config: Mapping[str, Any]) -> int:
        n = config.get("NUM_STREAMS", "AUTO")
        if n != "AUTO":
            return int(n)
        if config.get("PERFORMANCE_HINT", "LATENCY") in ("THROUGHPUT", "CUMULATIVE_THROUGHPUT"):
            cap = int(config.get("PERFORMANCE_HINT_NUM_REQUESTS", 0) or 0)
            n = max(1, os.cpu_count() or 1)
            return min(n, cap) if cap else n
        return 1

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
        return exe


class _Step:
    __slots__ = ("node", "fn", "inputs", "outputs", "attrs", "ctx", "free", "exec_type", "subgraphs")

    def __init__(self, node, fn, inputs, outputs, attrs, ctx, exec_type):
        self.node = node
        self.fn = fn
        self.inputs = inputs
        self.outputs = outputs
        self.attrs = attrs
        self.ctx = ctx
        self.free: tuple[str, ...] = ()
        self.exec_type = exec_type


class CPUExecutable(Executable):
    """Runs a graph's nodes in order with numpy kernels.

    Memory plan: a liveness pass computes, for each step, the values whose last reader it is; they are
    dropped right after it, so peak memory follows the live set rather than the whole graph.
    """

    def __init__(self, graph: Graph, device_name: str = "CPU"):
        self.graph = graph
        self.device_name = device_name
        self.config: dict[str, Any] = {}
        self._sub_cache: dict[int, CPUExecutable] = {}
        missing = {}
        steps = []
        for n in graph.nodes:
            reason = unsupported_reason(graph, n)
            if reason is not None:
                missing[n.name] = {device_name: reason}
                continue
            entry = registry.lookup(n.op_type, n.domain, _node_opset(graph, n))
            ctx = {}
            if "_num_outputs" in entry.context:
                ctx["_num_outputs"] = len(n.outputs)
            if "_opset" in entry.context:
                ctx["_opset"] = _node_opset(graph, n)
            if "_output_dtypes" in entry.context:
                ctx["_output_dtypes"] = [graph.info(o).dtype if o else None for o in n.outputs]
            steps.append(_Step(n, entry.fn, tuple(n.inputs), tuple(n.outputs), dict(n.attrs), ctx,
                               f"cpu_{entry.fn.__name__}"))
        if missing:
            lines = "; ".join(f"{k} ({graph.node_by_name[k].op_type}): {v[device_name]}" for k, v in missing.items())
            raise UnsupportedOpError(f"{device_name} cannot run {len(missing)} node(s): {lines}", missing)
        self._steps = steps
        self._needs_run_graph = [("_run_graph" in registry.lookup(s.node.op_type, s.node.domain,
                                                                   _node_opset(graph, s.node)).context)
                                 for s in steps]
        # liveness: last step reading each value; graph outputs are never freed
        keep = set(graph.output_names)
        last: dict[str, int] = {}
        for idx, s in enumerate(steps):
            for v in node_value_inputs(s.node):
                last[v] = idx
        frees: dict[int, list[str]] = {}
        for v, idx in last.items():
            if v not in keep and v not in graph.initializers:
                frees.setdefault(idx, []).append(v)
        for idx, s in enumerate(steps):
            s.free = tuple(frees.get(idx, ()))
        # values produced but never read (and not outputs): free right after their producer
        for s in steps:
            dead = tuple(o for o in s.outputs if o and o not in last and o not in keep)
            s.free = s.free + dead

    # ---- running -------------------------------------------------------------------------------
    def run(self, feeds: Mapping[str, Any], context: Any = None,
            profile: list[ProfileRecord] | None = None) -> dict[str, Any]:
        env: dict[str, Any] = dict(self.graph.initializers)
        env.update(feeds)
        self._execute(env, profile)
        try:
            return {o: env[o] for o in self.graph.output_names}
        except KeyError as e:
            raise InferError(f"graph output {e.args[0]!r} was not produced on {self.device_name}") from None

    def _execute(self, env: dict[str, Any], profile) -> None:
        perf = time.perf_counter
        for idx, s in enumerate(self._steps):
            args = [env[i] if i else None for i in s.inputs]
            kwargs = s.attrs
            if s.ctx or self._needs_run_graph[idx]:
                kwargs = dict(kwargs)
                kwargs.update(s.ctx)
                if self._needs_run_graph[idx]:
                    kwargs["_run_graph"] = self._make_runner(env)
            t0 = perf() if profile is not None else 0.0
            try:
                res = s.fn(*args, **kwargs)
            except KeyError:
                raise
            except Exception as e:
                raise InferError(self._describe_failure(s, args, e)) from e
            if profile is not None:
                dt = perf() - t0
                profile.append(ProfileRecord(s.node.name, s.node.op_type, s.exec_type, dt, dt))
            outs = s.outputs
            if len(outs) == 1:
                if isinstance(res, tuple):
                    res = res[0]
                if outs[0]:
                    env[outs[0]] = res
            else:
                if not isinstance(res, (tuple, list)):
                    res = (res,)
                for name, val in zip(outs, res):
                    if name:
                        env[name] = val
                if len(res) < sum(1 for o in outs if o):
                    for name in outs[len(res):]:
                        if name:
                            env[name] = None
            for v in s.free:
                env.pop(v, None)

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

    def _make_runner(self, env: dict[str, Any]):
        def run_graph(graph: Graph, inputs: list) -> list:
            exe = self._sub_cache.get(id(graph))
            if exe is None:
                exe = CPUExecutable(graph, self.device_name)
                self._sub_cache[id(graph)] = exe
            sub_env = {k: env[k] for k in graph.outer_scope if k in env}
            sub_env.update(graph.initializers)
            for info, v in zip(graph.inputs, inputs):
                sub_env[info.name] = v
            exe._execute(sub_env, None)
            return [sub_env[o] for o in graph.output_names]

        return run_graph
