"""HETERO overhead and split costs, measured (run by hand; prints a table).

1. HETERO over a single device vs that device alone: median sync latency, measured interleaved
   (A, B, A, B, ...) so that drift on a shared machine hits both alike. Target: at most 3% more.
2. HETERO:GPU,CPU with Softmax and Gemm ruled to the CPU: subgraph count, Reorders, their bytes and
   their share of the time (from PERF_COUNT profiling), and latency next to GPU and CPU alone.
   Without a GPU, MOCK.0 stands in for it (said so in the output).
3. Async: requests/s through AsyncInferQueue (pipelined across subgraphs) vs back-to-back sync infer.
4. Pipelining with simulated devices (MOCK.0, MOCK.1 sleeping 20 ms per subgraph): sync vs async.
5. AFFINITY_POLICY=COST vs each device alone.

    python benchmarks/hetero_overhead.py                      # squeezenet, resnet50; CPU and GPU.0
    python benchmarks/hetero_overhead.py --models resnet50 --iters 30
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import onnx

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import hetero  # noqa: E402
from onnx import TensorProto as T, helper as h  # noqa: E402

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def tiny_model():
    g = h.make_graph([h.make_node("Relu", ["x"], ["a"], name="relu"), h.make_node("Softmax", ["a"], ["y"], name="sm")],
                     "tiny", [h.make_tensor_value_info("x", T.FLOAT, [1, 64])],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, 64])])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def load(name):
    if name == "tiny":
        return hetero.read_model(tiny_model())
    return hetero.read_model(os.path.join(LIGHT, f"light_{name}.onnx"))


def feeds_for(g):
    rng = np.random.default_rng(0)
    return {i.name: rng.standard_normal(i.shape).astype(i.dtype) for i in g.inputs}


def interleaved(fns, iters, warmup=2, cpu=False):
    """Median seconds of each fn, run in rotation (wall time; with ``cpu`` also process CPU time and
    the minimum). The rotation starts one later each round: whatever runs second after another model
    is measurably slower here (caches, frequency), so every fn takes every position equally often."""
    for f in fns:
        for _ in range(warmup):
            f()
    wall = [[] for _ in fns]
    proc = [[] for _ in fns]
    k = len(fns)
    for it in range(-(-iters // k) * k):  # a multiple of k rounds
        for j in range(k):
            i = (it + j) % k
            f = fns[i]
            c0 = time.process_time()
            t0 = time.perf_counter()
            f()
            wall[i].append(time.perf_counter() - t0)
            proc[i].append(time.process_time() - c0)
    med = [statistics.median(t) for t in wall]
    if cpu:
        return med, [statistics.median(t) for t in proc], [min(t) for t in wall]
    return med


def overhead(core, models, devices, iters):
    print("\n## 1. HETERO over one device vs the device alone (median per sync inference)\n")
    print("wall: elapsed time; cpu: process CPU time (all threads), steadier on a shared machine.")
    print("min: the fastest of the runs (least disturbed by other jobs).")
    print(f"{'model':<12} {'device':<8} {'alone ms':>9} {'HETERO ms':>10} {'wall +':>8} {'alone cpu':>10} "
          f"{'HETERO cpu':>11} {'cpu +':>8} {'alone min':>10} {'HETERO min':>11} {'min +':>8}")
    for name in models:
        g = load(name)
        f = feeds_for(g)
        for dev in devices:
            a = core.compile_model(g, dev)
            b = core.compile_model(g, f"HETERO:{dev}")
            assert len(b.plan.subgraphs) == 1
            ra, rb = a.create_infer_request(), b.create_infer_request()
            n = iters * (200 if name == "tiny" else 1)
            (ta, tb), (ca, cb), (ma, mb) = interleaved([lambda: ra.infer(f), lambda: rb.infer(f)], n, cpu=True)
            print(f"{name:<12} {dev:<8} {ta * 1e3:9.3f} {tb * 1e3:10.3f} {100 * (tb / ta - 1):+7.2f}% "
                  f"{ca * 1e3:10.3f} {cb * 1e3:11.3f} {100 * (cb / ca - 1):+7.2f}% "
                  f"{ma * 1e3:10.3f} {mb * 1e3:11.3f} {100 * (mb / ma - 1):+7.2f}%")


def split_costs(core, models, gpu, iters):
    stand_in = gpu.startswith("MOCK")
    print(f"\n## 2. HETERO:{gpu},CPU with Softmax and Gemm ruled to the CPU"
          + (" (no GPU here: MOCK.0 stands in)" if stand_in else "") + "\n")
    print(f"{'model':<12} {'subgraphs':>9} {'reorders':>8} {'bytes':>9} {'reorder ms':>10} {'share':>7} "
          f"{'HETERO ms':>10} {gpu + ' ms':>10} {'CPU ms':>8}")
    cfg = {"AFFINITY_RULES": "Softmax=CPU; Gemm=CPU", "PERF_COUNT": True}
    for name in models:
        g = load(name)
        f = feeds_for(g)
        het = core.compile_model(g, f"HETERO:{gpu},CPU", cfg)
        alone = core.compile_model(g, gpu)
        cpu = core.compile_model(g, "CPU")
        req = het.create_infer_request()
        req.infer(f)
        shares, moved, rt = [], 0, 0.0
        for _ in range(max(3, iters // 2)):
            req.infer(f)
            prof = req.get_profiling_info()
            re = [p for p in prof if p.node_type == "Reorder"]
            tot = sum(p.real_time.total_seconds() for p in prof if p.node_type == "Subgraph")
            rt = sum(p.real_time.total_seconds() for p in re)
            moved = sum(p.nbytes for p in re)
            shares.append(rt / tot if tot else 0.0)
        t_het, t_gpu, t_cpu = interleaved([lambda: het(f), lambda: alone(f), lambda: cpu(f)], iters)
        print(f"{name:<12} {len(het.plan.subgraphs):9d} {len(het.plan.reorders):8d} {moved:9d} {rt * 1e3:10.3f} "
              f"{100 * statistics.median(shares):6.2f}% {t_het * 1e3:10.3f} {t_gpu * 1e3:10.3f} {t_cpu * 1e3:8.3f}")
        for r in het.plan.reorders:
            print(f"{'':<12}   {r.name}: {r.transfer}, {r.src_dtype}->{r.dst_dtype}, {r.nbytes} B")
        # A GPU subgraph runs on device handles (OpenCLExecutable.run_device), so the Reorders above
        # are the real uploads/downloads; cross-check: the same bytes through the device directly.
        dev = core._registry.get(gpu)
        arrays = [np.ones(r.shape, r.dst_dtype) for r in het.plan.reorders if r.transfer != "handoff"
                  and r.shape is not None and all(isinstance(d, int) for d in r.shape)]
        if arrays and not stand_in:
            def copies():
                for a in arrays:
                    dev.download(dev.upload(a))
            (tc,) = interleaved([copies], iters)
            print(f"{'':<12}   the same bytes through {gpu} upload+download: {tc * 1e3:.3f} ms = "
                  f"{100 * tc / t_het:.2f}% of the HETERO latency")


def async_throughput(core, models, gpu, iters):
    print(f"\n## 3. Async: HETERO:{gpu},CPU (Softmax, Gemm on CPU), requests/s\n")
    print(f"{'model':<12} {'sync loop':>10} {'async x4':>10} {'speed-up':>9}")
    for name in models:
        g = load(name)
        f = feeds_for(g)
        het = core.compile_model(g, f"HETERO:{gpu},CPU", {"AFFINITY_RULES": "Softmax=CPU; Gemm=CPU"})
        het(f)
        n = max(8, iters)
        sync_rps, async_rps = sync_and_async_rps(het, f, n)
        print(f"{name:<12} {sync_rps:10.2f} {async_rps:10.2f} {async_rps / sync_rps:8.2f}x")


def sync_and_async_rps(compiled, feeds, n: int) -> tuple[float, float]:
    """Requests/s for n sync calls, then for n requests through an AsyncInferQueue of 4."""
    t0 = time.perf_counter()
    for _ in range(n):
        compiled(feeds)
    sync_rps = n / (time.perf_counter() - t0)
    q = hetero.AsyncInferQueue(compiled, 4)
    t0 = time.perf_counter()
    for _ in range(n):
        q.start_async(feeds)
    q.wait_all()
    return sync_rps, n / (time.perf_counter() - t0)


def pipelining(core, iters):
    print("\n## 4. Pipelining across subgraphs, simulated: HETERO:MOCK.0,MOCK.1, each subgraph sleeps 20 ms\n")
    g = hetero.read_model(tiny_model())
    f = feeds_for(g)
    for m, ms in (("MOCK.0", 20), ("MOCK.1", 20)):
        core._registry.get(m).set_property({"MOCK_LATENCY_MS": ms})
    try:
        het = core.compile_model(g, "HETERO:MOCK.0,MOCK.1", {"AFFINITY_RULES": "Softmax=MOCK.1"})
        n = max(10, iters)
        sync_rps, async_rps = sync_and_async_rps(het, f, n)
        print(f"{len(het.plan.subgraphs)} subgraphs: sync {sync_rps:.1f} req/s (one request at a time: ~25/s), "
              f"async x4 {async_rps:.1f} req/s (two requests in flight, one per subgraph: ~50/s), "
              f"{async_rps / sync_rps:.2f}x")
    finally:
        for m in ("MOCK.0", "MOCK.1"):
            core._registry.get(m).reset()


def cost_policy(core, models, gpu, iters):
    print(f"\n## 5. AFFINITY_POLICY=COST on HETERO:{gpu},CPU vs each device alone (median latency, ms)\n")
    print(f"{'model':<12} {'compile s':>9} {'subgraphs':>9} {'on ' + gpu:>9} {'on CPU':>7} {'COST':>9} "
          f"{gpu:>9} {'CPU':>9}")
    for name in models:
        g = load(name)
        f = feeds_for(g)
        t0 = time.perf_counter()
        het = core.compile_model(g, f"HETERO:{gpu},CPU", {"AFFINITY_POLICY": "COST"})
        t_c = time.perf_counter() - t0
        alone, cpu = core.compile_model(g, gpu), core.compile_model(g, "CPU")
        on = list(het.assignment.device.values())
        t_het, t_gpu, t_cpu = interleaved([lambda: het(f), lambda: alone(f), lambda: cpu(f)], iters)
        print(f"{name:<12} {t_c:9.2f} {len(het.plan.subgraphs):9d} {on.count(gpu):9d} {on.count('CPU'):7d} "
              f"{t_het * 1e3:9.1f} {t_gpu * 1e3:9.1f} {t_cpu * 1e3:9.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny,squeezenet,resnet50")
    ap.add_argument("--iters", type=int, default=15)
    ap.add_argument("--devices", default="", help="devices for part 1 (default: CPU and the first GPU)")
    args = ap.parse_args()
    core = hetero.Core()
    gpus = [d for d in core.available_devices if d.startswith("GPU")]
    devices = args.devices.split(",") if args.devices else ["CPU"] + gpus[:1]
    models = args.models.split(",")
    print(f"devices: {core.available_devices}; models: {models}; iters: {args.iters}")
    for d in devices:
        try:
            print(f"  {d}: {core.get_property(d, 'FULL_DEVICE_NAME')}")
        except Exception:
            pass
    overhead(core, models, devices, args.iters)
    gpu = gpus[0] if gpus else "MOCK.0"
    real = [m for m in models if m != "tiny"]
    split_costs(core, real, gpu, args.iters)
    async_throughput(core, real, gpu, args.iters)
    pipelining(core, args.iters)
    cost_policy(core, real, gpu, args.iters)


if __name__ == "__main__":
    main()
