"""CPU executor: per-node overhead, the memory plan's arena size, latency with and without the arena.

Run by hand (prints tables; no assertions):

1. Per-node overhead: a chain of N tiny Adds ([1,8] float32) through ``CPUExecutable.run``, in us per
   node, next to the same kernel called N times in a bare Python loop (the difference is what the
   executor adds per node).
2. Adds on bigger tensors, with the arena (a stream context) and without (``context=None``): where
   reusing buffers starts to pay (memory.MIN_BYTES).
3. Plans of the light models: arena bytes vs the sum of all intermediate tensors, with today's kernels
   (only those declaring ``_out`` get a buffer) and as if every kernel wrote into ``_out``.
4. Latency of light models with and without the arena, measured interleaved (A, B, A, B, ...) so that
   drift on a shared machine hits both alike; medians. On a loaded machine run it with
   OPENBLAS_NUM_THREADS=1: BLAS threads spinning against other processes swamp everything else.

    python benchmarks/cpu_memory_plan.py
    python benchmarks/cpu_memory_plan.py --models squeezenet,resnet50 --iters 15
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import onnx
from onnx import TensorProto as T, helper as h, numpy_helper as nh

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import hetero  # noqa: E402
from hetero.devices.cpu import CPUExecutable, memory  # noqa: E402

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def add_chain(n: int, shape: list[int]):
    nodes, prev = [], "x"
    for i in range(n):
        nodes.append(h.make_node("Add", [prev, "c"], [f"v{i}"], name=f"add{i}"))
        prev = f"v{i}"
    g = h.make_graph(nodes, "chain", [h.make_tensor_value_info("x", T.FLOAT, shape)],
                     [h.make_tensor_value_info(prev, T.FLOAT, shape)],
                     [nh.from_array(np.ones(shape, np.float32), "c")])
    return hetero.read_model(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]))


def interleaved(fns, iters, warmup=2):
    """Median seconds of each fn, run in rotation."""
    for f in fns:
        for _ in range(warmup):
            f()
    times = [[] for _ in fns]
    for _ in range(iters):
        for i, f in enumerate(fns):
            t0 = time.perf_counter()
            f()
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def overhead(n: int, iters: int) -> None:
    g = add_chain(n, [1, 8])
    exe = CPUExecutable(g)
    x = np.zeros((1, 8), np.float32)
    c = np.ones((1, 8), np.float32)
    fn = exe._steps[0].fn

    def bare():
        for _ in range(n):
            fn(x, c)

    t_exe, t_bare = interleaved([lambda: exe.run({"x": x}, exe.new_context()), bare], iters)
    print(f"1. chain of {n} Add [1,8]: executor {t_exe / n * 1e6:.2f} us/node, kernel alone "
          f"{t_bare / n * 1e6:.2f} us/node -> executor overhead {(t_exe - t_bare) / n * 1e6:.2f} us/node")


def big_adds(iters: int) -> None:
    print("2. chain of 20 Adds, with / without the arena (memory.MIN_BYTES set to 0: every value planned)")
    old = memory.MIN_BYTES
    memory.MIN_BYTES = 0
    try:
        for cols in (1024, 16384, 32768, 65536, 262144):
            g = add_chain(20, [1, cols])
            exe = CPUExecutable(g)
            ctx = exe.new_context()
            x = np.zeros((1, cols), np.float32)
            t_plan, t_none = interleaved([lambda: exe.run({"x": x}, ctx), lambda: exe.run({"x": x})], iters)
            print(f"   {cols * 4 // 1024:5d} KiB per value: arena {t_plan / 20 * 1e6:8.1f} us/node, "
                  f"fresh arrays {t_none / 20 * 1e6:8.1f} us/node ({t_none / t_plan:.2f}x)")
    finally:
        memory.MIN_BYTES = old


def mib(b: int) -> str:
    return f"{b / 2**20:7.1f} MiB"


def plans(models: list[str]) -> None:
    print("3. plans (compiled graphs, after transforms): arena vs intermediates")
    for name in models:
        cm = hetero.compile_model(os.path.join(LIGHT, f"light_{name}.onnx"), "CPU")
        exe = cm._runner
        g = exe.graph
        now = exe.memory_plan or memory.MemoryPlan()
        full = memory.plan(g, [n.name for n in g.nodes])
        print(f"   {name:12s} intermediates {mib(full.intermediate_bytes)} | today's kernels: "
              f"{len(now.offsets):3d} planned ({mib(now.planned_bytes)}) in an arena of {mib(now.arena_bytes)} | "
              f"every kernel writing _out: {len(full.offsets):3d} planned ({mib(full.planned_bytes)}) "
              f"in {mib(full.arena_bytes)} = {full.arena_bytes / max(full.intermediate_bytes, 1):.1%} "
              f"of the intermediates")


def latency(models: list[str], iters: int) -> None:
    print(f"4. latency, median of {iters} interleaved runs: with the stream's arena / without (context None)")
    for name in models:
        cm = hetero.compile_model(os.path.join(LIGHT, f"light_{name}.onnx"), "CPU")
        exe = cm._runner
        p = cm.inputs[0]
        feeds = {p.any_name: np.random.default_rng(0).random(p.shape, dtype=np.float32)}
        ctx = exe.new_context()
        t_plan, t_none = interleaved([lambda: exe.run(feeds, ctx), lambda: exe.run(feeds)], iters)
        note = "" if ctx is not None else "   (nothing planned: both are the same code path, i.e. the noise)"
        print(f"   {name:12s} arena {t_plan * 1e3:8.1f} ms   no arena {t_none * 1e3:8.1f} ms   "
              f"arena/no arena {t_plan / t_none:.3f}{note}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="squeezenet,resnet50")
    ap.add_argument("--plan-models", default="resnet50,densenet121,squeezenet,inception_v1")
    ap.add_argument("--iters", type=int, default=11)
    ap.add_argument("--nodes", type=int, default=300)
    a = ap.parse_args()
    overhead(a.nodes, max(a.iters, 50))
    big_adds(max(a.iters, 20))
    plans(a.plan_models.split(","))
    latency(a.models.split(","), a.iters)


if __name__ == "__main__":
    main()
