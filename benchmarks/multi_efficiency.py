"""MULTI / AUTO / BATCH speed, measured (run by hand; prints tables).

1. MULTI efficiency = throughput(MULTI:A,B) / (throughput(A) + throughput(B)) on MOCK devices whose
   per-inference latencies stand in the ratios 1:1, 1:3 and 1:10 (target >= 0.95 each), and on the
   real CPU + GPU.0 (the OpenCL device; on a machine whose GPU.0 is PoCL both share the same cores).
   Throughput: requests/s with four times the model's optimal number of requests in flight (each restarted
   by its callback, so a worker that finishes always finds the next request waiting), for ``--seconds``.
2. AUTO time to first result vs the accelerator's compile time: a MOCK accelerator with a known
   compile delay, and the real GPU.0 on squeezenet and a small MLP, each measured cold in a fresh
   process (no CACHE_DIR, PoCL's own kernel cache off: its OpenCL programs are built from source);
   next to it the same with ENABLE_STARTUP_FALLBACK=False (waits for the compile).
3. Scheduler overhead per request on a tiny model: requests/s through MULTI:CPU vs CPU alone, sync
   (back to back) and async (AsyncInferQueue), and the per-request cost that adds.
4. BATCH:CPU(n) vs CPU one by one on a small MLP: requests/s (async).

    python benchmarks/multi_efficiency.py                 # everything
    python benchmarks/multi_efficiency.py --only mock --seconds 3
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import onnx
from onnx import TensorProto as T, helper as h

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import hetero  # noqa: E402

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def mlp(width: int = 256, layers: int = 3, batch=1):
    """x[batch,width] -> (MatMul + Add -> Softmax-free Tanh-free chain) x layers -> Softmax."""
    rng = np.random.default_rng(0)
    nodes, inits, v = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        b = rng.standard_normal(width).astype(np.float32) * 0.1
        inits += [h.make_tensor(f"W{i}", T.FLOAT, w.shape, w.ravel().tolist()),
                  h.make_tensor(f"B{i}", T.FLOAT, b.shape, b.tolist())]
        nodes += [h.make_node("MatMul", [v, f"W{i}"], [f"m{i}"], name=f"mm{i}"),
                  h.make_node("Add", [f"m{i}", f"B{i}"], [f"a{i}"], name=f"add{i}")]
        v = f"a{i}"
    nodes.append(h.make_node("Softmax", [v], ["y"], name="sm"))
    g = h.make_graph(nodes, "mlp", [h.make_tensor_value_info("x", T.FLOAT, [batch, width])],
                     [h.make_tensor_value_info("y", T.FLOAT, [batch, width])], inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def tiny():
    g = h.make_graph([h.make_node("Softmax", ["x"], ["y"], name="sm")], "tiny",
                     [h.make_tensor_value_info("x", T.FLOAT, [1, 16])], [h.make_tensor_value_info("y", T.FLOAT, [1, 16])])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def feeds(cm):
    rng = np.random.default_rng(1)
    return {p.any_name: rng.standard_normal(p.shape).astype(p.dtype) for p in cm.inputs}


def throughput(cm, seconds: float, jobs: int | None = None) -> float:
    """Requests/s with ``jobs`` requests in flight (default 4 x optimal): each request's callback hands
    it back to this loop, which restarts it at once (in completion order, so a slow device holding
    a request never stalls the restart of the others)."""
    import queue

    jobs = jobs or 4 * int(cm.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    done: queue.SimpleQueue = queue.SimpleQueue()
    reqs = [cm.create_infer_request() for _ in range(jobs)]
    x = feeds(cm)
    for r in reqs:
        r.set_callback(done.put, r)
    for r in reqs:  # warm up
        r.start_async(x)
    for _ in reqs:
        done.get()
    started = finished = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    for r in reqs:
        r.wait()
        r.start_async(x)
        started += 1
    while finished < started:
        r = done.get()
        finished += 1
        r.wait()  # its flags are cleared right after the callback
        if time.perf_counter() < end:
            r.start_async(x)
            started += 1
    return finished / (time.perf_counter() - t0)


def sync_rate(cm, seconds: float) -> float:
    x = feeds(cm)
    r = cm.create_infer_request()
    r.infer(x)
    n = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while time.perf_counter() < end:
        r.infer(x)
        n += 1
    return n / (time.perf_counter() - t0)


# ---- 1. MULTI efficiency ------------------------------------------------------------------------------

def mock_efficiency(core, seconds: float, base_ms: float, workers: int, rounds: int) -> None:
    print(f"\n## MULTI efficiency on MOCK devices (A: {base_ms} ms per inference, {workers} worker(s) each; "
          f"median of {rounds} interleaved rounds)\n")
    print("| ratio A:B | A req/s | B req/s | A+B | MULTI:A,B req/s | served A / B | efficiency | MULTI / ideal A+B |")
    print("|---|---|---|---|---|---|---|---|")
    model = tiny()
    for ratio in (1, 3, 10):
        lat = {"MOCK.0": base_ms, "MOCK.1": base_ms * ratio}
        props = {n: {"MOCK_LATENCY_MS": v, "NUM_STREAMS": workers} for n, v in lat.items()}
        singles = {n: core.compile_model(model, n, props[n]) for n in lat}
        multi = core.compile_model(model, f"MULTI:MOCK.0({workers}),MOCK.1({workers})", {"DEVICE_PROPERTIES": props})
        rows = []
        for _ in range(rounds):  # A, B, MULTI in turn: drift on a shared machine hits all three alike
            a, b = throughput(singles["MOCK.0"], seconds), throughput(singles["MOCK.1"], seconds)
            before = multi.get_property("MULTI_SERVED_REQUESTS")
            m = throughput(multi, seconds)
            after = multi.get_property("MULTI_SERVED_REQUESTS")
            rows.append((m / (a + b), a, b, m, {k: after[k] - before[k] for k in after}))
        for cm in list(singles.values()) + [multi]:
            cm.release()
        eff, a, b, m, served = sorted(rows, key=lambda r: r[0])[len(rows) // 2]
        ideal = sum(workers * 1e3 / v for v in lat.values())  # every worker busy, zero overhead
        print(f"| 1:{ratio} | {a:.0f} | {b:.0f} | {a + b:.0f} | {m:.0f} | {served['MOCK.0']} / {served['MOCK.1']} | "
              f"{eff:.3f} (rounds: {', '.join(f'{r[0]:.3f}' for r in rows)}) | {m / ideal:.3f} |")


def real_efficiency(core, seconds: float) -> None:
    if not any(n.startswith("GPU") for n in core.available_devices):
        print("\n(no GPU device: real CPU+GPU efficiency skipped)")
        return
    gpu_name = core.get_property("GPU", "FULL_DEVICE_NAME")
    print(f"\n## MULTI efficiency on the real CPU + GPU.0 ({gpu_name}; {os.cpu_count()} cores)\n")
    print("| model | CPU req/s | GPU.0 req/s | CPU+GPU | MULTI:GPU,CPU req/s | served GPU / CPU | efficiency |")
    print("|---|---|---|---|---|---|---|")
    for name, model in (("mlp 256x3", mlp(256, 3)), ("mlp 1024x3", mlp(1024, 3))):
        cfg = {"PERFORMANCE_HINT": "THROUGHPUT"}
        cpu = core.compile_model(model, "CPU", cfg)
        gpu = core.compile_model(model, "GPU", cfg)
        t_cpu, t_gpu = throughput(cpu, seconds), throughput(gpu, seconds)
        cpu.release()
        gpu.release()
        cm = core.compile_model(model, "MULTI:GPU,CPU", cfg)
        t_multi = throughput(cm, seconds)
        served = cm.get_property("MULTI_SERVED_REQUESTS")
        cm.release()
        s = t_cpu + t_gpu
        print(f"| {name} | {t_cpu:.0f} | {t_gpu:.0f} | {s:.0f} | {t_multi:.0f} | {served['GPU.0']} / {served['CPU']} "
              f"| {t_multi / s:.3f} |")


# ---- 2. AUTO time to first result -------------------------------------------------------------------------

def first_result(core, model, device, config) -> tuple[float, str, object]:
    t0 = time.perf_counter()
    cm = core.compile_model(model, device, config)
    r = cm.create_infer_request()
    r.infer(feeds(cm))
    return time.perf_counter() - t0, r.served_by, cm


def auto_startup(core) -> None:
    print("\n## AUTO: time to first result vs the accelerator's compile time\n")
    print("| accelerator | its compile | AUTO first result (served by) | fallback off: first result (served by) | "
          "AUTO: accelerator serving after |")
    print("|---|---|---|---|---|")
    model = mlp(256, 3)
    core.compile_model(model, "CPU")(feeds(core.compile_model(model, "CPU")))  # warm: kernel table, imports
    core.compile_model(model, "AUTO:MOCK.0,CPU").wait_ready()
    for delay in (500, 2000):
        props = {"DEVICE_PROPERTIES": {"MOCK.0": {"MOCK_COMPILE_DELAY_MS": delay}}}
        t_auto, by_auto, cm = first_result(core, model, "AUTO:MOCK.0,CPU", props)
        t_ready0 = time.perf_counter()
        cm.wait_ready()
        ready = t_auto + (time.perf_counter() - t_ready0)
        cm.release()
        t_off, by_off, cm = first_result(core, model, "AUTO:MOCK.0,CPU", dict(props, ENABLE_STARTUP_FALLBACK=False))
        cm.release()
        print(f"| MOCK.0 | {delay} ms (MOCK_COMPILE_DELAY_MS) | {t_auto * 1e3:.0f} ms ({by_auto}) | "
              f"{t_off * 1e3:.0f} ms ({by_off}) | {ready * 1e3:.0f} ms |")
    if not any(n.startswith("GPU") for n in core.available_devices):
        return
    # the GPU's compile is cold only in a fresh process with PoCL's own kernel cache off: one child each
    for label in ("squeezenet", "mlp256"):
        r = {mode: _child(mode, label) for mode in ("gpu", "auto", "off")}
        if any(v is None for v in r.values()):
            print(f"| GPU.0 ({label}) | (failed: {r}) | | | |")
            continue
        print(f"| GPU.0 ({label}) | {r['gpu']['first'] * 1e3:.0f} ms (compile_model on GPU) | "
              f"{r['auto']['first'] * 1e3:.0f} ms ({r['auto']['by']}) | {r['off']['first'] * 1e3:.0f} ms "
              f"({r['off']['by']}) | {r['auto']['ready'] * 1e3:.0f} ms |")


def _model(label):
    return os.path.join(LIGHT, "light_squeezenet.onnx") if label == "squeezenet" else mlp(256, 3)


def _child(mode: str, label: str):
    import json
    import subprocess

    env = dict(os.environ, POCL_KERNEL_CACHE="0")
    out = subprocess.run([sys.executable, __file__, "--child", mode, label], env=env, capture_output=True, text=True,
                         timeout=600)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except Exception:
        sys.stderr.write(out.stderr[-2000:])
        return None


def child(mode: str, label: str) -> None:
    """One cold measurement (a fresh process): 'gpu' compile_model on GPU; 'auto' AUTO:GPU,CPU; 'off' the
    same with ENABLE_STARTUP_FALLBACK=False. Prints JSON: seconds to the first result, its device."""
    import json

    core = hetero.Core()
    model = _model(label)
    warm = core.compile_model(model, "CPU")  # imports and the CPU kernel table: not what is measured
    warm(feeds(warm))
    core.compile_model(tiny(), "AUTO:CPU")
    device, cfg = {"gpu": ("GPU", {}), "auto": ("AUTO:GPU,CPU", {}),
                   "off": ("AUTO:GPU,CPU", {"ENABLE_STARTUP_FALLBACK": False})}[mode]
    t, by, cm = first_result(core, model, device, cfg)
    t1 = time.perf_counter()
    if hasattr(cm, "wait_ready"):
        cm.wait_ready()
    print(json.dumps({"first": t, "by": by, "ready": t + time.perf_counter() - t1}))


# ---- 3. scheduler overhead ----------------------------------------------------------------------------------

def overhead(core, seconds: float) -> None:
    print("\n## Scheduler overhead per request (tiny model: one Softmax on [1,16])\n")
    print("| mode | CPU alone req/s | MULTI:CPU req/s | added per request |")
    print("|---|---|---|---|")
    model = tiny()
    for mode in ("sync", "async"):
        rates = {"CPU": [], "MULTI:CPU": []}
        for _ in range(3):  # interleaved, median: drift on a shared machine hits both alike
            for dev in rates:
                cm = core.compile_model(model, dev, {"PERFORMANCE_HINT": "LATENCY"} if dev == "CPU" else
                                        {"PERFORMANCE_HINT": "LATENCY"})
                rates[dev].append(sync_rate(cm, seconds / 3) if mode == "sync" else throughput(cm, seconds / 3, 4))
                cm.release()
        a, b = statistics.median(rates["CPU"]), statistics.median(rates["MULTI:CPU"])
        print(f"| {mode} | {a:.0f} | {b:.0f} | {(1 / b - 1 / a) * 1e6:+.1f} us |")


# ---- 4. BATCH ---------------------------------------------------------------------------------------------

def batching(core, seconds: float) -> None:
    print("\n## BATCH:CPU(n) vs CPU one request at a time (mlp 256x3, async, 2n requests in flight)\n")
    print("| device | req/s | batches run (sizes) |")
    print("|---|---|---|")
    model = mlp(256, 3)
    cm = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY"})
    print(f"| CPU | {throughput(cm, seconds, 8):.0f} | - |")
    cm.release()
    for n in (4, 16):
        cm = core.compile_model(model, f"BATCH:CPU({n})", {"AUTO_BATCH_TIMEOUT": 50})
        t = throughput(cm, seconds, 2 * n)
        log = cm.batch_log
        cm.release()
        print(f"| BATCH:CPU({n}) | {t:.0f} | {len(log)} (mean {statistics.mean(log):.1f}) |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="measuring time per throughput figure")
    ap.add_argument("--only", choices=["mock", "real", "auto", "overhead", "batch"], action="append")
    ap.add_argument("--base-ms", type=float, default=2.0, help="MOCK device A's latency")
    ap.add_argument("--workers", type=int, default=2, help="MOCK workers per device")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (the median is reported)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(*a.child)
        return
    core = hetero.Core()
    for d in core._registry.family("MOCK"):
        d.reset()
    only = set(a.only or ["mock", "real", "auto", "overhead", "batch"])
    print(f"# hetero MULTI/AUTO/BATCH benchmark ({os.cpu_count()} cores, devices {core.available_devices})")
    if "mock" in only:
        mock_efficiency(core, a.seconds, a.base_ms, a.workers, a.rounds)
    if "real" in only:
        real_efficiency(core, a.seconds)
    if "auto" in only:
        auto_startup(core)
    if "overhead" in only:
        overhead(core, a.seconds)
    if "batch" in only:
        batching(core, a.seconds)


if __name__ == "__main__":
    main()
