"""hetero vs ONNX Runtime vs OpenVINO on the nine light models (run by hand; prints Markdown).

For each model and engine column (hetero on each device of ``--devices``, ONNX Runtime CPU, OpenVINO CPU
in f32):

1. compile: wall time from the model file to a ready model (hetero ``compile_model(path, dev)``, ORT
   ``InferenceSession(path)``, OpenVINO ``compile_model(path, "CPU")``), LATENCY hint, after one
   throw-away compile per engine (so imports and plugin loading are not charged to the first model).
2. latency: median of ``--iters`` (>= 30) sync inferences after ``--warmup``. The engines take turns
   in three blocks each (hetero, ORT, OpenVINO, hetero, ...) so drift on a shared machine hits all
   alike; not run by run, because ONNX Runtime's threads spin for a while after each run and on a
   small machine that slows whichever engine runs next (SqueezeNet on hetero: 33 ms alone, 76 ms
   interleaved run by run with ORT). Each block starts after half a second of quiet (those spinning
   threads go idle) and with one untimed run.
3. throughput: requests/s with the requests in flight that the THROUGHPUT hint asks for: hetero and
   OpenVINO compile with ``PERFORMANCE_HINT=THROUGHPUT`` and keep OPTIMAL_NUMBER_OF_INFER_REQUESTS
   requests in an AsyncInferQueue; ONNX Runtime has no hint, so it gets the same shape by hand: one
   session with one intra-op thread per run and ``os.cpu_count()`` Python threads calling ``run``.
4. agreement: max |hetero - ORT| over the outputs, so a fast wrong answer shows.

Then geometric means of the per-model ratios (hetero / ORT latency: the target is <= 1.5), and, from
PERF_COUNT profiling of hetero's LATENCY model, the slowest node types per model.

    python benchmarks/compare_peers.py                                  # all nine, hetero CPU
    python benchmarks/compare_peers.py --models resnet50,squeezenet --iters 30
    python benchmarks/compare_peers.py --devices CPU GPU                # add a hetero GPU column
    python benchmarks/compare_peers.py --random-weights                 # weights as initializers

``--random-weights`` swaps the light models' ConstantOfShape weight fills for seeded random
initializers (as tests/test_light_models.py does): the way real models store weights.
"""
from __future__ import annotations

import argparse
import collections
import math
import os
import statistics
import sys
import tempfile
import threading
import time

import numpy as np
import onnx

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
import hetero  # noqa: E402

LIGHT_DIR = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
LIGHT = ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet",
         "squeezenet", "vgg19", "zfnet512"]


# ---- engines (each holds its compiled models: state, hence classes) -------------------------------------

class HeteroEngine:
    def __init__(self, device: str):
        self.device = device
        self.name = f"hetero {device}"

    def compile(self, path: str, hint: str, perf_count: bool = False):
        cfg = {"PERFORMANCE_HINT": hint}
        if perf_count:
            cfg["PERF_COUNT"] = True
        return hetero.compile_model(path, self.device, cfg)

    def runner(self, compiled, x):
        name = compiled.inputs[0].any_name
        req = compiled.create_infer_request()
        return lambda: req.infer({name: x}).to_tuple()

    def throughput(self, path: str, x, n: int) -> tuple[float, int]:
        cm = self.compile(path, "THROUGHPUT")
        queue = hetero.AsyncInferQueue(cm)  # jobs=0: OPTIMAL_NUMBER_OF_INFER_REQUESTS
        feeds = {cm.inputs[0].any_name: x}
        for _ in range(len(queue)):  # warm every request / stream
            queue.start_async(feeds)
        queue.wait_all()
        t0 = time.perf_counter()
        for _ in range(n):
            queue.start_async(feeds)
        queue.wait_all()
        return n / (time.perf_counter() - t0), len(queue)


class OrtEngine:
    name = "ORT CPU"

    def __init__(self):
        import onnxruntime as ort

        self.ort = ort

    def _session(self, path: str, threads: int = 0):
        so = self.ort.SessionOptions()
        so.log_severity_level = 3
        so.intra_op_num_threads = threads
        return self.ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])

    def compile(self, path: str, hint: str):
        return self._session(path)

    def runner(self, sess, x):
        name = sess.get_inputs()[0].name
        return lambda: tuple(sess.run(None, {name: x}))

    def throughput(self, path: str, x, n: int) -> tuple[float, int]:
        sess = self._session(path, threads=1)
        name = sess.get_inputs()[0].name
        workers = os.cpu_count() or 1
        counts = [n // workers + (i < n % workers) for i in range(workers)]
        for _ in range(workers):
            sess.run(None, {name: x})

        def work(k):
            for _ in range(k):
                sess.run(None, {name: x})

        pool = [threading.Thread(target=work, args=(k,)) for k in counts]
        t0 = time.perf_counter()
        for p in pool:
            p.start()
        for p in pool:
            p.join()
        return n / (time.perf_counter() - t0), workers


class OpenVinoEngine:
    name = "OV CPU"

    def __init__(self):
        import openvino as ov

        self.ov = ov
        self.core = ov.Core()

    def compile(self, path: str, hint: str):
        return self.core.compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": hint})

    def runner(self, compiled, x):
        req = compiled.create_infer_request()

        def run():
            req.infer({0: x})
            return tuple(req.get_output_tensor(i).data.copy() for i in range(len(compiled.outputs)))

        return run

    def throughput(self, path: str, x, n: int) -> tuple[float, int]:
        cm = self.compile(path, "THROUGHPUT")
        jobs = int(cm.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        queue = self.ov.AsyncInferQueue(cm, jobs)
        for _ in range(jobs):
            queue.start_async({0: x})
        queue.wait_all()
        t0 = time.perf_counter()
        for _ in range(n):
            queue.start_async({0: x})
        queue.wait_all()
        return n / (time.perf_counter() - t0), jobs


# ---- measuring ---------------------------------------------------------------------------------------------

def model_file(name: str, random_weights: bool, tmp: str) -> str:
    path = os.path.join(LIGHT_DIR, f"light_{name}.onnx")
    if not random_weights:
        return path
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from test_light_models import randomize_weights

    out = os.path.join(tmp, f"{name}_random.onnx")
    onnx.save(randomize_weights(onnx.load(path), seed=0), out)
    return out


def input_for(path: str) -> np.ndarray:
    m = onnx.load(path, load_external_data=False)
    inits = {t.name for t in m.graph.initializer}
    x = next(i for i in m.graph.input if i.name not in inits)
    shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in x.type.tensor_type.shape.dim)
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


#: seconds of quiet before each engine's latency block (see measure_model)
QUIET_S = 0.5


def measure_model(path: str, engines, iters: int, warmup: int, tput_requests: int) -> dict:
    """{engine name: {compile_ms, latency_ms, tput, nreq, outputs}} for one model."""
    x = input_for(path)
    res: dict[str, dict] = {}
    runners = {}
    for e in engines:  # 1. compile (LATENCY)
        t0 = time.perf_counter()
        compiled = e.compile(path, "LATENCY")
        res[e.name] = {"compile_ms": (time.perf_counter() - t0) * 1e3}
        runners[e.name] = e.runner(compiled, x)
    for e in engines:  # warm-up, and keep the outputs for the agreement check
        for _ in range(warmup):
            res[e.name]["outputs"] = runners[e.name]()
    times = collections.defaultdict(list)
    rounds = 3
    for r in range(rounds):  # 2. latency: engines take turns in blocks
        for e in engines:
            run = runners[e.name]
            # the previous engine's pool threads keep spinning for a while after its last run
            # (ONNX Runtime's intra-op pool, OpenVINO's TBB arena): let them go idle, so every
            # block starts on a quiet machine whichever engine ran before it
            time.sleep(QUIET_S)
            run()  # untimed
            for _ in range(iters // rounds + (r < iters % rounds)):
                t0 = time.perf_counter()
                run()
                times[e.name].append(time.perf_counter() - t0)
    for e in engines:
        res[e.name]["latency_ms"] = statistics.median(times[e.name]) * 1e3
    runners.clear()
    for e in engines:  # 3. throughput
        res[e.name]["tput"], res[e.name]["nreq"] = e.throughput(path, x, tput_requests)
    return res


def profile_hetero(engine: HeteroEngine, path: str, runs: int = 3) -> list[tuple[str, float, float]]:
    """[(node type, median ms per inference, share of the total)] from PERF_COUNT, slowest first."""
    cm = engine.compile(path, "LATENCY", perf_count=True)
    x = input_for(path)
    req = cm.create_infer_request()
    feeds = {cm.inputs[0].any_name: x}
    req.infer(feeds)
    per_type = collections.defaultdict(list)
    for _ in range(runs):
        req.infer(feeds)
        sums = collections.Counter()
        for p in req.get_profiling_info():
            if p.status == "EXECUTED":
                sums[p.node_type] += p.real_time.total_seconds() * 1e3
        for k, v in sums.items():
            per_type[k].append(v)
    med = {k: statistics.median(v) for k, v in per_type.items()}
    total = sum(med.values()) or 1.0
    return sorted(((k, v, v / total) for k, v in med.items()), key=lambda t: -t[1])


def geomean(values) -> float:
    values = [v for v in values if v and v > 0 and math.isfinite(v)]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


# ---- reporting ---------------------------------------------------------------------------------------------

def fmt(v: float, digits: int = 1) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    return f"{v:,.{digits}f}" if v < 1e5 else f"{v:.3g}"


def report(results: dict[str, dict], engines, ref: str | None) -> str:
    names = [e.name for e in engines]
    heteros = [e.name for e in engines if isinstance(e, HeteroEngine)]
    lines = []

    def table(title: str, key: str, digits: int, better: str):
        lines.append(f"\n**{title}** ({better} is better)\n")
        head = ["model"] + names
        if ref:
            head += [f"{h} / {ref}" for h in heteros]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        ratios = collections.defaultdict(list)
        for model, res in results.items():
            row = [model] + [fmt(res[n][key], digits) if n in res else "-" for n in names]
            if ref:
                for h in heteros:
                    r = res[h][key] / res[ref][key] if h in res and ref in res else float("nan")
                    ratios[h].append(r)
                    row.append(f"{r:.2f}x")
            lines.append("| " + " | ".join(row) + " |")
        if ref:
            gm = ["**geomean**"] + [""] * len(names) + [f"**{geomean(ratios[h]):.2f}x**" for h in heteros]
            lines.append("| " + " | ".join(gm) + " |")

    table("Compile time, ms (file to ready model)", "compile_ms", 0, "lower")
    table("Latency, ms (median of sync inferences, LATENCY hint)", "latency_ms", 1, "lower")
    table("Throughput, inferences/s (THROUGHPUT hint, requests in flight in the header notes)", "tput", 1,
          "higher")
    nreq = {n: sorted({res[n]["nreq"] for res in results.values() if n in res}) for n in names}
    lines.append("\nrequests in flight: " + ", ".join(f"{n}: {'/'.join(map(str, v))}" for n, v in nreq.items()))
    if ref:
        lines.append("\n**Agreement**: max |hetero - ORT| over all outputs (max |ORT output| in brackets)\n")
        lines.append("| model | " + " | ".join(heteros) + " |")
        lines.append("|---|" + "---|" * len(heteros))
        for model, res in results.items():
            cells = []
            for h in heteros:
                if h not in res or ref not in res:
                    cells.append("-")
                    continue
                diff = max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
                           for a, b in zip(res[h]["outputs"], res[ref]["outputs"]))
                scale = max(float(np.max(np.abs(b))) for b in res[ref]["outputs"])
                cells.append(f"{diff:.2e} ({scale:.3g})")
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(LIGHT), help="comma-separated light model names")
    ap.add_argument("--iters", type=int, default=30, help="sync inferences timed per engine (>= 30 advised)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--devices", nargs="+", default=["CPU"],
                    help="hetero devices, one column each: CPU GPU 'HETERO:GPU,CPU' (or CPU,GPU)")
    ap.add_argument("--peers", default="ort,ov", help="peer engines: ort, ov (comma-separated; '' for none)")
    ap.add_argument("--throughput-requests", type=int, default=0,
                    help="requests per throughput run (default: max(iters, 4 x requests in flight))")
    ap.add_argument("--random-weights", action="store_true", help="seeded random initializers as weights")
    ap.add_argument("--no-profile", action="store_true", help="skip the PERF_COUNT node-type profile")
    args = ap.parse_args(argv)

    devices = []
    for d in args.devices:
        devices += d.split(",") if ":" not in d else [d]
    engines: list = [HeteroEngine(d) for d in devices]
    peers = [p.strip().lower() for p in args.peers.split(",") if p.strip()]
    for p in peers:
        try:
            engines.append({"ort": OrtEngine, "ov": OpenVinoEngine}[p]())
        except ImportError as e:
            print(f"skipping {p}: {e}", file=sys.stderr)
    ref = OrtEngine.name if any(isinstance(e, OrtEngine) for e in engines) else None
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in LIGHT]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; choose from {LIGHT}")
    n_tput = args.throughput_requests or max(args.iters, 4 * (os.cpu_count() or 1))

    # one throw-away compile + run per engine first, so no model pays an engine's one-off start-up
    # (module imports, plugin loading) inside its compile time
    warm = os.path.join(LIGHT_DIR, "light_squeezenet.onnx")
    for e in engines:
        e.runner(e.compile(warm, "LATENCY"), input_for(warm))()

    results, profiles = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for m in models:
            path = model_file(m, args.random_weights, tmp)
            t0 = time.perf_counter()
            results[m] = measure_model(path, engines, args.iters, args.warmup, n_tput)
            if not args.no_profile:
                profiles[m] = {e.name: profile_hetero(e, path) for e in engines if isinstance(e, HeteroEngine)}
            print(f"  {m}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)

    cpu = (hetero.Core().get_property("CPU", "FULL_DEVICE_NAME"), os.cpu_count())
    print(f"## hetero vs peers ({'random' if args.random_weights else 'shipped'} weights; {cpu[0]}, "
          f"{cpu[1]} cores; {args.iters} timed runs; load average {os.getloadavg()[0]:.1f})")
    print(report(results, engines, ref))
    if profiles:
        print("\n**Slowest node types in hetero (PERF_COUNT, median ms per inference, share)**\n")
        for m, per_engine in profiles.items():
            for name, rows in per_engine.items():
                top = ", ".join(f"{t} {ms:.1f} ms ({share:.0%})" for t, ms, share in rows[:4])
                print(f"- {m} ({name}): {top}")


if __name__ == "__main__":
    main()
