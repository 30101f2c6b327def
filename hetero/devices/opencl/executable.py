"""The compiled form of a (sub)graph on one OpenCL device.

Compile (``OpenCLExecutable.__init__``), in order:
  1. build (or load from the program cache / CACHE_DIR) every program the plan needs, in parallel;
  2. upload the weights once (host constants, converted to the device precision);
  3. run the *const* launches once (outputs depending only on constants) and keep their results;
  4. plan intermediate memory by liveness (memplan.py);
  5. with a CACHE_DIR whose binaries were not all there: warm up -- one run on zeros through a fresh
     stream context, so lazy device compilation (PoCL builds each kernel's work-group function at its
     first launch) happens now -- then store the program binaries, which then include that code.
     Otherwise the lazy part (if any) happens at the first inference (HETERO_OCL_WARMUP=1: always
     warm up).

Run (per stream context: its own command queue, buffers and bound kernels): enqueue the input uploads
(non-blocking), every kernel, and non-blocking output reads on the in-order queue, then wait once for
the read events -- no finish() between kernels; only inputs and outputs cross to the host.
"""
from __future__ import annotations

import dataclasses
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping

import numpy as np

from ...errors import DeviceError, InferError
from ...ir import Graph
from ..base import Executable, ProfileRecord
from .memplan import MemoryPlan, lifetimes, plan_memory
from .plan import SLACK_BYTES, BufRef, DeviceCaps, Plan
from .programs import PROGRAMS, ProgramKey


class StreamContext:
    """One stream: a command queue, the intermediate buffers of the memory plan, bound kernels."""

    def __init__(self, exe: "OpenCLExecutable"):
        import pyopencl as cl

        self.lock = threading.Lock()
        dev = exe._device
        self.queue = cl.CommandQueue(dev.context, dev.cl_device,
                                     properties=cl.command_queue_properties.PROFILING_ENABLE)
        mf = cl.mem_flags
        self.slots = [cl.Buffer(dev.context, mf.READ_WRITE, size=int(n) + SLACK_BYTES) for n in exe.memory.slot_bytes]
        self.bufs: dict[int, Any] = dict(exe._const_bufs)
        for b, s in exe.memory.slot_of.items():
            self.bufs[b] = self.slots[s]
        self.kernels = []
        for li in exe.plan.run_launches:
            launch = exe.plan.launches[li]
            k = cl.Kernel(exe._programs[launch.program], launch.kernel)
            for i, a in enumerate(launch.args):
                k.set_arg(i, self.bufs[a.id] if isinstance(a, BufRef) else a)
            self.kernels.append((k, launch.gsize, launch.lsize))


class OpenCLExecutable(Executable):
    def __init__(self, device, graph: Graph, plan: Plan, caps: DeviceCaps, config: Mapping[str, Any],
                 probe: bool = False):
        import pyopencl as cl

        t0 = time.perf_counter()
        self.graph = graph
        self.plan = plan
        self.caps = caps
        self.config = dict(config)
        self.device_name = device.name
        self._device = device
        cache_dir = str(self.config.get("CACHE_DIR", "") or "")
        ctx, cdev = device.context, device.cl_device
        # 1. programs
        keys = sorted(plan.programs, key=lambda k: (k.source, k.defines))
        self._programs: dict[ProgramKey, Any] = {}
        found = []
        workers = max(1, min(len(keys), os.cpu_count() or 1, 4))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for key, (prg, on_disk) in zip(keys, pool.map(lambda k: PROGRAMS.get(ctx, cdev, k, cache_dir), keys)):
                self._programs[key] = prg
                found.append(on_disk)
        self.loaded_from_cache = bool(cache_dir) and bool(keys) and all(found)
        self.program_count = len(keys)
        # 2. weights
        queue = cl.CommandQueue(ctx, cdev)
        mf = cl.mem_flags
        self._const_bufs: dict[int, Any] = {}
        for b, arr in plan.uploads.items():
            buf = cl.Buffer(ctx, mf.READ_WRITE, size=arr.nbytes + SLACK_BYTES)
            if arr.nbytes:
                cl.enqueue_copy(queue, buf, arr)
            self._const_bufs[b] = buf
        # 3. const launches: every buffer they touch gets its own allocation
        temp = {}
        for li in plan.const_launches:
            launch = plan.launches[li]
            for a in launch.args:
                if isinstance(a, BufRef) and a.id not in self._const_bufs and a.id not in temp:
                    temp[a.id] = cl.Buffer(ctx, mf.READ_WRITE, size=plan.bufs[a.id].nbytes + SLACK_BYTES)
            k = cl.Kernel(self._programs[launch.program], launch.kernel)
            for i, a in enumerate(launch.args):
                if isinstance(a, BufRef):
                    k.set_arg(i, self._const_bufs[a.id] if a.id in self._const_bufs else temp[a.id])
                else:
                    k.set_arg(i, a)
            cl.enqueue_nd_range_kernel(queue, k, launch.gsize, launch.lsize)
        queue.finish()
        # the host copies of the weights are not needed any more (the graph keeps the originals)
        self.plan = plan = dataclasses.replace(plan, uploads={b: a.reshape(-1)[:0] for b, a in plan.uploads.items()})
        needed = set()
        for li in plan.run_launches:
            needed |= {a.id for a in plan.launches[li].args if isinstance(a, BufRef)}
        needed |= {o.buf for o in plan.outputs if o.buf is not None}
        keep_live = {o.buf for o in plan.outputs if o.buf is not None}
        if probe:  # calibration (precision.py): every value stays readable after the run
            keep_live |= {b for b in plan.value_bufs.values() if b not in plan.uploads}
            needed |= keep_live
        for b, buf in temp.items():
            if b in needed:
                self._const_bufs[b] = buf  # a folded constant the per-inference launches read
        # 4. memory plan over the per-inference buffers
        run_io = [(plan.launches[i].reads, plan.launches[i].writes) for i in plan.run_launches]
        const = set(self._const_bufs)
        sizes = {b: plan.bufs[b].nbytes for b in needed | {i.buf for i in plan.inputs} if b not in const}
        lts = lifetimes(run_io, sizes, frozenset(i.buf for i in plan.inputs), frozenset(keep_live))
        self.memory: MemoryPlan = plan_memory(lts)
        self.weight_bytes = sum(plan.bufs[b].nbytes for b in self._const_bufs)
        # 5. warm-up through a fresh context, then keep the binaries
        self._default: StreamContext | None = None
        self._default_lock = threading.Lock()
        if probe:  # the calibration run itself warms up; precision.py stores the binaries after it
            self.compile_time = time.perf_counter() - t0
            self._cache_dir, self._keys = cache_dir, keys
            return
        warmup = os.environ.get("HETERO_OCL_WARMUP", "") not in ("", "0")
        if warmup or (cache_dir and not self.loaded_from_cache):
            warm = self.new_context()
            self.run({i.name: np.zeros(i.shape, i.dtype) for i in plan.inputs}, warm)
            self._default = warm
        if cache_dir and not self.loaded_from_cache:
            for key in keys:
                PROGRAMS.store(cdev, key, self._programs[key], cache_dir)
        self.compile_time = time.perf_counter() - t0

    def probe(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run once and read back every runtime value (executables built with probe=True)."""
        import pyopencl as cl

        ctx = self.new_context()
        self.run(feeds, ctx)
        if self._cache_dir and not self.loaded_from_cache:
            for key in self._keys:
                PROGRAMS.store(self._device.cl_device, key, self._programs[key], self._cache_dir)
        out = {}
        for name, b in self.plan.value_bufs.items():
            if b not in ctx.bufs:
                continue
            info = self.plan.bufs[b]
            a = np.empty(info.nbytes // info.dtype.itemsize, info.dtype)
            if a.nbytes:
                cl.enqueue_copy(ctx.queue, a, ctx.bufs[b])
            out[name] = a
        return out

    # ---- Executable ---------------------------------------------------------------------------
    def new_context(self) -> StreamContext:
        try:
            return StreamContext(self)
        except Exception as e:  # out of device memory and friends
            raise DeviceError(f"{self.device_name}: cannot create a stream context "
                              f"({self.memory.total_bytes} bytes of buffers): {e}") from e

    def optimal_streams(self, hint: str) -> int:
        return self._device.optimal_streams({"PERFORMANCE_HINT": hint})

    def _context(self, context: Any) -> Any:
        """The given stream context, or this executable's default one (made on first use)."""
        if context is None:
            with self._default_lock:
                if self._default is None:
                    self._default = self.new_context()
            return self._default
        return context

    @staticmethod
    def _enqueue_kernels(q, context, keep_events: bool) -> list:
        """Queue every kernel of the plan in order (one in-order queue: no per-kernel finish);
        return their events when profiling needs them."""
        import pyopencl as cl

        events = []
        for k, g, l in context.kernels:
            ev = cl.enqueue_nd_range_kernel(q, k, g, l)
            if keep_events:
                events.append(ev)
        return events

    def _feed(self, feeds: Mapping[str, Any], spec) -> Any:
        """The fed value of input ``spec``, or InferError naming it."""
        if spec.name not in feeds:
            raise InferError(f"{self.device_name}: missing input {spec.name!r}")
        return feeds[spec.name]

    def _upload(self, q, context, spec, x, keep: list) -> None:
        """Check host array ``x`` against input ``spec`` and queue its copy into the input's buffer,
        converted to the device dtype; ``keep`` holds the host copy until the queue has read it."""
        import pyopencl as cl

        arr = np.asarray(x)
        if tuple(arr.shape) != tuple(spec.shape):
            raise InferError(f"{self.device_name}: input {spec.name!r} has shape {list(arr.shape)}, "
                             f"compiled for {list(spec.shape)}")
        arr = np.ascontiguousarray(arr, dtype=spec.dev_dtype)
        keep.append(arr)
        if arr.nbytes:
            cl.enqueue_copy(q, context.bufs[spec.buf], arr, is_blocking=False)

    def run(self, feeds: Mapping[str, Any], context: Any = None,
            profile: list[ProfileRecord] | None = None) -> dict[str, Any]:
        import pyopencl as cl

        context = self._context(context)
        plan = self.plan
        with context.lock:
            q = context.queue
            keep = []
            try:
                for spec in plan.inputs:
                    self._upload(q, context, spec, self._feed(feeds, spec), keep)
                events = self._enqueue_kernels(q, context, profile is not None)
                outs: dict[str, Any] = {}
                reads = []
                for spec in plan.outputs:
                    if spec.buf is None:
                        outs[spec.name] = spec.host.copy()
                        continue
                    h = np.empty(spec.shape, spec.dev_dtype)
                    if h.nbytes:
                        reads.append(cl.enqueue_copy(q, h, context.bufs[spec.buf], is_blocking=False))
                    outs[spec.name] = h
                if reads:
                    cl.wait_for_events(reads)
                else:
                    q.finish()
            except cl.Error as e:
                raise InferError(f"{self.device_name}: OpenCL error while running {self.graph.name!r}: {e}") from e
            for spec in plan.outputs:
                if spec.buf is not None and spec.dev_dtype != spec.dtype:
                    outs[spec.name] = outs[spec.name].astype(spec.dtype)
            if profile is not None:
                self._profile(events, profile)
        return outs

    # ---- device level (HETERO's Reorders do the transfers and the f16 <-> f32 conversion) ------
    # With run_device a HETERO plan moves a GPU subgraph's inputs and outputs in its own Reorder
    # nodes (upload / download, timed there); run() above keeps doing all of it internally.
    accepts_device_inputs = True

    @property
    def input_precision(self) -> dict[str, np.dtype]:
        """{input: the dtype its device buffer holds} (float16 for an f16 subgraph's float inputs)."""
        return {s.name: np.dtype(s.dev_dtype) for s in self.plan.inputs}

    @property
    def output_precision(self) -> dict[str, np.dtype]:
        """{output: the dtype run_device hands it out in}."""
        return {s.name: np.dtype(s.dev_dtype) if s.buf is not None else np.asarray(s.host).dtype
                for s in self.plan.outputs}

    def run_device(self, feeds: Mapping[str, Any], context: Any = None,
                   profile: list[ProfileRecord] | None = None) -> dict[str, Any]:
        """run() without the host crossings: a feed is a DeviceTensor of this device (``upload``;
        copied buffer to buffer on the device, and it must already be in ``input_precision``) or a
        host array (uploaded and converted here, as run() does); every output is a fresh DeviceTensor
        in ``output_precision`` (a compile-time constant output is a host array). Returns once the
        outputs are complete on the device."""
        import pyopencl as cl

        from .device import DeviceTensor
        from .plan import SLACK_BYTES as slack

        context = self._context(context)
        plan = self.plan
        dev = self._device
        with context.lock:
            q = context.queue
            keep = []
            try:
                for spec in plan.inputs:
                    x = self._feed(feeds, spec)
                    want = np.dtype(spec.dev_dtype)
                    if isinstance(x, DeviceTensor):
                        if tuple(x.shape) != tuple(spec.shape):
                            raise InferError(f"{self.device_name}: device input {spec.name!r} has shape "
                                             f"{list(x.shape)}, compiled for {list(spec.shape)}")
                        if x.buffer.context != dev.context:
                            raise InferError(f"{self.device_name}: device input {spec.name!r} lives in another "
                                             f"OpenCL context (download it and feed the host array)")
                        if np.dtype(x.dtype) == want:
                            n = int(np.prod(spec.shape, dtype=np.int64)) * want.itemsize
                            if n:
                                cl.enqueue_copy(q, context.bufs[spec.buf], x.buffer, byte_count=n)
                            continue
                        # another precision (e.g. an f32 value of a subgraph that kept it wide): the
                        # conversion goes through the host, as run() does it
                        x = dev.download(x)
                    self._upload(q, context, spec, x, keep)
                events = self._enqueue_kernels(q, context, profile is not None)
                outs: dict[str, Any] = {}
                for spec in plan.outputs:
                    if spec.buf is None:
                        outs[spec.name] = spec.host.copy()
                        continue
                    # a fresh buffer: the context's own is reused by the next run on this stream
                    dt = np.dtype(spec.dev_dtype)
                    n = int(np.prod(spec.shape, dtype=np.int64)) * dt.itemsize
                    buf = cl.Buffer(dev.context, cl.mem_flags.READ_WRITE, size=n + slack)
                    if n:
                        cl.enqueue_copy(q, buf, context.bufs[spec.buf], byte_count=n)
                    outs[spec.name] = DeviceTensor(buf, tuple(spec.shape), dt)
                q.finish()
            except cl.Error as e:
                raise InferError(f"{self.device_name}: OpenCL error while running {self.graph.name!r}: {e}") from e
            if profile is not None:
                self._profile(events, profile)
        return outs

    def _profile(self, events, profile: list[ProfileRecord]) -> None:
        per_node: dict[str, list] = {}
        for li, ev in zip(self.plan.run_launches, events):
            launch = self.plan.launches[li]
            try:
                dt = (ev.profile.end - ev.profile.start) * 1e-9
            except Exception:
                dt = 0.0
            rec = per_node.setdefault(launch.node, [0.0, []])
            rec[0] += dt
            if launch.kernel not in rec[1]:
                rec[1].append(launch.kernel)
        for node in self.graph.nodes:
            kind = self.plan.node_kind.get(node.name, "kernel")
            if node.name in per_node:
                t, ks = per_node[node.name]
                profile.append(ProfileRecord(node.name, node.op_type, "ocl_" + "+".join(ks), t, t))
            elif kind == "alias":
                profile.append(ProfileRecord(node.name, node.op_type, "ocl_view", 0.0, 0.0, "NOT_RUN"))
            else:  # evaluated at compile time (host constant or const-folded launch)
                profile.append(ProfileRecord(node.name, node.op_type, "ocl_const", 0.0, 0.0, "OPTIMIZED_OUT"))
