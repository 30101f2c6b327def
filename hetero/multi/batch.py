"""BATCH: automatic batching. ``BATCH:GPU(4)`` gathers single-sample requests into one execution of a
batch-4 version of the model on GPU (DESIGN.md §6; OpenVINO's Automatic Batching).

Compile (:func:`batched_graphs`, then :func:`compile_batch`):

1. every model input must be a tensor whose dimension 0 is 1 or symbolic (one sample per request),
   else ModelError naming the input;
2. the batch dimension is changed by writing the graph back to ONNX with inputs ``[b, ...]`` and
   re-running ONNX shape inference (strict). This is done for b = n and b = n + 1: every output must
   come out with dimension 0 = b both times, else the model fixes its batch somewhere (a Reshape to a
   constant [1, 784], a Flatten(axis=0), ...) and compile raises ModelError naming the output and the
   node that pins it. Two sizes catch a constant that happens to equal n;
3. if the device runs the model with a *symbolic* batch dimension (its ``query`` accepts the graph
   with inputs ``["batch", ...]``: the CPU and MOCK do), one executable serves every batch size;
   otherwise (static-shape devices such as the OpenCL GPU) the batch-n graph is compiled and a
   partial batch is padded to n with copies of its last sample (outputs of the padding are dropped).

Running: a request's inputs join the current gather; a gather of n is handed to a batch worker at
once; otherwise the batcher thread waits until AUTO_BATCH_TIMEOUT (ms) after the gather's first request
and then hands over what it has, as one smaller batch. A batch worker concatenates the samples along
dimension 0, runs the one compiled model, and gives each request its row of every output. An error
fails every request of that batch. ``batch_log`` lists the batch sizes executed, in order. ``release``
fails the requests still gathering; batches already handed over still run, and the last batch worker
to stop releases the device's compiled model (so it is never released under a running batch).

Traced example: ``BATCH:CPU(4)``, AUTO_BATCH_TIMEOUT=100, 6 async requests at once -> rows 0-3 run as
one batch of 4 immediately; rows 4-5 wait 100 ms, then run as one batch of 2; batch_log [4, 2].
"""
from __future__ import annotations

import collections
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import onnx

from .. import properties as P
from ..devices.registry import ParsedDevice
from ..errors import DeviceStringError, HeteroError, InferError, ModelError
from ..ir import Graph, TensorInfo
from ..onnx_import import graph_from_proto
from ..runtime.compiled import CompiledModel, Port
from .common import BATCH_KEYS, _Done, async_job, capped_requests, check_config, compile_device, contexts_of, debug, \
    device_config, job_result, resolve, with_context
from .onnx_export import to_onnx
from .scheduler import Job

DEFAULT_BATCH = 4
BATCH_DIM = "batch"


@dataclass(frozen=True)
class BatchedGraphs:
    """The model with dimension 0 of its inputs set to ``size`` (static) and to "batch" (symbolic)."""

    size: int
    static: Graph
    dynamic: Graph


def _with_batch(graph: Graph, b) -> list[TensorInfo]:
    return [TensorInfo(t.name, t.dtype, (b,) + tuple(t.shape[1:]), t.kind) for t in graph.inputs]


def _infer(graph: Graph, b, where: str) -> onnx.ModelProto:
    proto = to_onnx(graph, _with_batch(graph, b))
    try:
        return onnx.shape_inference.infer_shapes(proto, check_type=False, strict_mode=True, data_prop=True)
    except Exception as e:  # inference proves the batched graph inconsistent
        msg = " ".join(str(e).split())[:600]
        raise ModelError(f"{where}: cannot change the batch dimension of model {graph.name!r} to {b}: "
                         f"shape inference fails: {msg}") from None


def _pinning_node(graph: Graph, out: str, dims: dict[str, Any], b: int) -> str:
    """Walk back from output ``out`` to the first node whose output loses the batch size ``b``
    while one of its inputs still has it (the node that pins the batch), for the error message."""
    prod = graph.producer
    v = out
    seen = set()
    while v in prod and v not in seen:
        seen.add(v)
        n = prod[v]
        batched_in = [i for i in n.inputs if i and dims.get(i) == b]
        if batched_in:
            return f"node {n.name!r} ({n.op_type}) turns {batched_in[0]!r} (dimension 0 = {b}) into {v!r} " \
                   f"(dimension 0 = {dims.get(v, '?')})"
        nxt = [i for i in n.inputs if i and i in prod]
        if not nxt:
            break
        v = nxt[0]
    return "the batch dimension does not reach it"


def batched_graphs(graph: Graph, n: int, where: str = "BATCH") -> BatchedGraphs:
    """Steps 1-2 of the module docstring: the batch-n and symbolic-batch versions of ``graph``."""
    for t in graph.inputs:  # 1.
        if t.kind != "tensor" or t.shape is None or len(t.shape) == 0:
            raise ModelError(f"{where}: input {t.name!r} ({t.describe()}) has no batch dimension; BATCH needs "
                             "tensor inputs of rank >= 1 whose dimension 0 is the batch")
        d0 = t.shape[0]
        if isinstance(d0, int) and d0 != 1:
            raise ModelError(f"{where}: input {t.name!r} has shape {t.describe()}: dimension 0 is {d0}; BATCH "
                             "needs models taking one sample per request (dimension 0 = 1 or symbolic)")
    static = None
    for b in (n, n + 1):  # 2.
        inferred = _infer(graph, b, where)
        g = graph_from_proto(inferred, where=where, check=False)
        dims = {k: (v.shape[0] if v.shape else None) for k, v in g.value_info.items()}
        for o in g.outputs:
            d0 = o.shape[0] if o.shape else None
            if d0 != b:
                raise ModelError(f"{where}: cannot change the batch dimension of model {graph.name!r}: with "
                                 f"inputs of batch {b}, output {o.name!r} has shape {o.describe()} (expected "
                                 f"dimension 0 = {b}); {_pinning_node(g, o.name, dims, b)}")
        if b == n:
            static = g
    dynamic = graph_from_proto(to_onnx(graph, _with_batch(graph, BATCH_DIM)), where=where, check=False)
    return BatchedGraphs(n, static, dynamic)


class _Batcher:
    """Gathers jobs into batches (the batcher thread) and runs them (batch workers)."""

    def __init__(self, name: str, cm: CompiledModel, n: int, timeout_ms: int, dynamic: bool, workers: int,
                 input_names: list[str], output_names: list[str]):
        self.name = name
        self.cm = cm
        self.n = n
        self.timeout_ms = timeout_ms
        self.dynamic = dynamic
        self.inputs = input_names
        self.outputs = output_names
        self._cv = threading.Condition()
        self._gather: list[Job] = []
        self._first_at = 0.0
        self._closed = False
        self._batches: queue.SimpleQueue = queue.SimpleQueue()
        self.log: collections.deque[int] = collections.deque(maxlen=4096)
        self._thread = threading.Thread(target=self._gatherer, name=f"{name}-batcher", daemon=True)
        self._thread.start()
        ctxs = contexts_of(cm, workers)
        make = getattr(cm._runner, "new_context", lambda: None)
        self._workers = []
        self._live = workers  # batch workers not yet stopped: the last one releases ``cm``
        for i in range(workers):
            ctx = ctxs[i] if i < len(ctxs) else make()
            t = threading.Thread(target=self._worker, args=(ctx,), name=f"{name}-w{i}", daemon=True)
            t.start()
            self._workers.append(t)

    def submit(self, job: Job) -> None:
        with self._cv:
            if self._closed:
                closed = True
            else:
                closed = False
                if not self._gather:
                    self._first_at = time.monotonic()
                self._gather.append(job)
                if len(self._gather) >= self.n:  # full: hand over now, no wait for the batcher thread
                    batch, self._gather = self._gather[:self.n], self._gather[self.n:]
                    self._first_at = time.monotonic()
                    self._batches.put(batch)
                self._cv.notify()
        if closed:
            job.finish(error=InferError(f"{self.name}: the compiled model was released"))

    def _gatherer(self) -> None:
        with self._cv:
            while True:
                while not self._gather and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                left = self._first_at + self.timeout_ms / 1e3 - time.monotonic()
                if left > 0:
                    self._cv.wait(left)
                    continue  # re-check: a full batch may have left, or more arrived
                batch, self._gather = self._gather[:self.n], self._gather[self.n:]
                self._first_at = time.monotonic()
                self._batches.put(batch)

    def _worker(self, ctx) -> None:
        while True:
            batch = self._batches.get()
            if batch is None:
                break
            self._run(batch, ctx)
        with self._cv:
            self._live -= 1
            last = self._live == 0
        if last:  # every batch handed over has run: nothing uses the device's model any more
            self.cm.release()

    def _run(self, batch: list[Job], ctx) -> None:
        k = len(batch)
        try:
            feeds = {}
            for name in self.inputs:
                rows = [j.feeds[name] for j in batch]
                if not self.dynamic and k < self.n:  # static-shape device: pad with the last sample
                    rows += [rows[-1]] * (self.n - k)
                feeds[name] = np.concatenate(rows, axis=0)
            prof = [] if batch[0].profile is not None else None
            outputs, served = self.cm._execute(feeds, prof, ctx, None)
        except BaseException as e:  # noqa: BLE001 - every request of the batch gets it
            for j in batch:
                j.finish(error=e)
            return
        self.log.append(k)
        for i, j in enumerate(batch):
            if j.profile is not None and prof:
                j.profile.extend(prof)
            j.finish(outputs={o: np.array(outputs[o][i:i + 1]) for o in self.outputs}, served_by=served)

    def close(self) -> None:
        """Fail the gathering requests, stop the threads; the last batch worker releases ``cm``."""
        with self._cv:
            self._closed = True
            waiting, self._gather = self._gather, []
            self._cv.notify_all()
        for j in waiting:
            j.finish(error=InferError(f"{self.name}: the compiled model was released"))
        for _ in self._workers:
            self._batches.put(None)


class BatchCompiledModel(CompiledModel):
    """BATCH's compiled model: single-sample ports over a batch-n model; ``batch_log`` lists executed
    batch sizes; AUTO_BATCH_TIMEOUT can be changed while it serves."""

    _settable_after = ("PERF_COUNT", "AUTO_BATCH_TIMEOUT")

    def __init__(self, original: Graph, device_cm: CompiledModel, name: str, config: Mapping[str, Any],
                 batcher: _Batcher, workers: int):
        super().__init__(device_cm._graph, None, name, config, streams=1,
                         execution_devices=[device_cm._device_name])
        one = [TensorInfo(t.name, t.dtype, (1,) + tuple(t.shape[1:]), t.kind) for t in original.inputs]
        outs = [TensorInfo(t.name, t.dtype, ((1,) + tuple(t.shape[1:])) if t.shape else t.shape, t.kind)
                for t in original.outputs]
        self.inputs = [Port(i, t, True) for i, t in enumerate(one)]
        self.outputs = [Port(i, t, False) for i, t in enumerate(outs)]
        self._device_cm = device_cm
        self._batcher = batcher
        self._nworkers = workers

    def _execute(self, feeds, profile, context, request):
        if isinstance(context, _Done):
            return job_result(context.job, profile)
        job = Job(dict(feeds), profile)
        self._batcher.submit(job)
        job.wait()
        return job_result(job)

    def _submit(self, request, body) -> None:
        self._batcher.submit(async_job(request, body, self._perf_count))

    def set_tracer(self, tracer) -> None:
        super().set_tracer(tracer)
        self._device_cm.set_tracer(tracer)

    @property
    def batch_log(self) -> list[int]:
        """Sizes of the batches executed, oldest first (bounded)."""
        return list(self._batcher.log)

    @property
    def batch_size(self) -> int:
        return self._batcher.n

    def get_property(self, key: str) -> Any:
        if key == "OPTIMAL_NUMBER_OF_INFER_REQUESTS":
            # enough requests in flight to fill a batch for every batch worker
            return capped_requests(self._batcher.n * self._nworkers, self._config)
        if key == "AUTO_BATCH_TIMEOUT":
            return self._batcher.timeout_ms
        if key == "SUPPORTED_PROPERTIES":
            return sorted(set(super().get_property(key)) | {"AUTO_BATCH_TIMEOUT"})
        return super().get_property(key)

    def set_property(self, props: Mapping[str, Any]) -> None:
        props = dict(props)
        if "AUTO_BATCH_TIMEOUT" in props:
            v = P.validate("AUTO_BATCH_TIMEOUT", props.pop("AUTO_BATCH_TIMEOUT"))
            with self._batcher._cv:
                self._batcher.timeout_ms = v
                self._batcher._cv.notify_all()
            self._config["AUTO_BATCH_TIMEOUT"] = v
        if props:
            super().set_property(props)

    def release(self) -> None:
        self._batcher.close()  # (its last worker releases the device's compiled model)
        super().release()


def compile_batch(core, graph: Graph, parsed: ParsedDevice, config: Mapping[str, Any]) -> BatchCompiledModel:
    from ..runtime.core import prepare_graph

    cfg = check_config(config, BATCH_KEYS, "BATCH")
    if len(parsed.items) != 1:
        raise DeviceStringError(f"device string {parsed.text!r}: BATCH takes exactly one device, e.g. "
                                f"'BATCH:GPU(4)'; got {[str(i) for i in parsed.items]}")
    (dev, spec), = resolve(core, parsed.items, parsed.text)
    n = spec.nreq or DEFAULT_BATCH
    where = parsed.text
    graphs = batched_graphs(graph, n, where)
    dcfg = device_config(dev, cfg, [dev.name])
    # 3. one executable for every batch size where the device takes a symbolic batch dimension
    dyn = prepare_graph(graphs.dynamic)
    dynamic = all(r is True for r in dev.query(dyn).values())
    target = dyn if dynamic else prepare_graph(graphs.static)
    try:
        dcm = compile_device(dev, target, dcfg, graph)
    except HeteroError as e:
        raise with_context(e, f"{where}: compiling the batch-{n} model on {dev.name} failed: ") from e
    workers = max(1, int(dev.optimal_streams(dcfg)))
    timeout = int(cfg.get("AUTO_BATCH_TIMEOUT", P.SPECS["AUTO_BATCH_TIMEOUT"].default))
    batcher = _Batcher(where, dcm, n, timeout, dynamic, workers, [t.name for t in graph.inputs],
                       [t.name for t in graph.outputs])
    full = dict(cfg)
    full["AUTO_BATCH_TIMEOUT"] = timeout
    debug(f"{where}: batch {n} on {dev.name} ({'symbolic' if dynamic else 'static, padded'} batch), "
          f"{workers} batch worker(s), timeout {timeout} ms")
    return BatchCompiledModel(graph, dcm, where, full, batcher, workers)
