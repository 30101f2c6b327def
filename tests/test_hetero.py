"""HETERO end to end on CPU and MOCK devices: device strings, properties, placement reasons,
query_model, profiling, dumps, sync concurrency and async pipelining, errors."""
from __future__ import annotations

import threading

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T, helper as h
from onnx.reference import ReferenceEvaluator

import hetero
from hetero.devices.base import Device, Executable
from hetero.devices.cpu import CPUExecutable
from hetero.devices.mock import discover as mock_devices
from hetero.devices.registry import parse
from hetero.errors import DeviceError, DeviceStringError, InferError, PropertyError, UnsupportedOpError
from hetero.runtime.hetero import compile_hetero


def tiny_model():
    """x -> mm (MatMul W) -> add (+B) -> tanh -+-> sq (c*c) -+-> sum -> sm (Softmax) -> y
                                                +-> neg ------+"""
    rng = np.random.default_rng(0)
    W = onnx.numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "W")
    B = onnx.numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "B")
    nodes = [h.make_node("MatMul", ["x", "W"], ["a"], name="mm"), h.make_node("Add", ["a", "B"], ["b"], name="add"),
             h.make_node("Tanh", ["b"], ["c"], name="tanh"), h.make_node("Mul", ["c", "c"], ["d"], name="sq"),
             h.make_node("Neg", ["c"], ["e"], name="neg"), h.make_node("Add", ["d", "e"], ["f"], name="sum"),
             h.make_node("Softmax", ["f"], ["y"], name="sm", axis=1)]
    g = h.make_graph(nodes, "tiny", [h.make_tensor_value_info("x", T.FLOAT, [2, 8])],
                     [h.make_tensor_value_info("y", T.FLOAT, [2, 8])], [W, B])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def branches_model():
    """x -+-> neg -> y1
          +-> abs -> y2"""
    g = h.make_graph([h.make_node("Neg", ["x"], ["y1"], name="neg"), h.make_node("Abs", ["x"], ["y2"], name="abs")],
                     "branches", [h.make_tensor_value_info("x", T.FLOAT, [2, 8])],
                     [h.make_tensor_value_info("y1", T.FLOAT, [2, 8]), h.make_tensor_value_info("y2", T.FLOAT, [2, 8])])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


MODEL = tiny_model()
X = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)
REF = ReferenceEvaluator(MODEL).run(None, {"x": X})[0]


@pytest.fixture
def core():
    yield hetero.Core()
    for d in mock_devices():
        d.reset()


def run(cm, x=X):
    return cm({"x": x})[0]


# ---- device strings and properties -------------------------------------------------------------------

@pytest.mark.parametrize("device, config, devices", [
    ("HETERO:MOCK.0,CPU", {}, ["MOCK.0", "CPU"]),
    ("HETERO", {"MULTI_DEVICE_PRIORITIES": "MOCK.0,CPU"}, ["MOCK.0", "CPU"]),
    ("HETERO:MOCK.0,CPU", {"MULTI_DEVICE_PRIORITIES": "MOCK.0,CPU"}, ["MOCK.0", "CPU"]),
    ("HETERO:MOCK.1,MOCK.0,CPU", {}, ["MOCK.1", "CPU"]),
    ("HETERO:CPU", {}, ["CPU"]),
])
def test_device_strings_compile_and_match_reference(core, device, config, devices):
    cm = core.compile_model(MODEL, device, {"AFFINITY_RULES": "Softmax=CPU", **config})
    np.testing.assert_allclose(run(cm), REF, rtol=1e-5, atol=1e-6)
    assert [s.device for s in cm.plan.subgraphs] == devices
    assert cm.get_property("EXECUTION_DEVICES") == devices


@pytest.mark.parametrize("device, config, token", [
    ("HETERO:FOO,CPU", {}, "'FOO'"),
    ("HETERO:MOCK.9,CPU", {}, "'MOCK.9'"),
    ("HETERO:GPU.7,CPU", {}, "'GPU.7'"),
    ("HETERO:", {}, "empty device list"),
    ("HETERO:CPU,,MOCK.0", {}, "empty device list"),
    ("HETERO:MULTI:CPU,MOCK.0", {}, "nested virtual device 'MULTI:CPU'"),
    ("HETERO:AUTO,CPU", {}, "nested virtual device 'AUTO'"),
    ("HETERO", {}, "HETERO needs a device list"),
    ("HETERO:CPU,MOCK.0", {"MULTI_DEVICE_PRIORITIES": "MOCK.0,CPU"}, "MULTI_DEVICE_PRIORITIES"),
    ("HETERO:CPU(2),MOCK.0", {}, "'CPU(2)'"),
])
def test_bad_device_strings(core, device, config, token):
    with pytest.raises(DeviceStringError, match=token.replace("(", r"\(").replace(")", r"\)")):
        core.compile_model(MODEL, device, config)


def test_device_properties_forwarded(core):
    cm = core.compile_model(MODEL, "HETERO:MOCK.0,CPU", {
        "AFFINITY_RULES": "Softmax=CPU", "PERFORMANCE_HINT": "THROUGHPUT",
        "DEVICE_PROPERTIES": {"MOCK.0": {"INFERENCE_PRECISION_HINT": "f16", "MOCK_OPTIMAL_REQUESTS": 3},
                              "CPU": {"NUM_STREAMS": 2}}})
    mock_exe, cpu_exe = (st.exe for st in cm._runner.stages)
    assert mock_exe.cfg["INFERENCE_PRECISION_HINT"] == "f16" and mock_exe.cfg["PERFORMANCE_HINT"] == "THROUGHPUT"
    assert cpu_exe.config["NUM_STREAMS"] == 2 and cpu_exe.config["INFERENCE_PRECISION_HINT"] == "f32"
    assert [st.workers._n for st in cm._runner.stages] == [3, 2]
    np.testing.assert_allclose(run(cm), REF, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("config, message", [
    ({"NOT_A_KEY": 1}, "unknown property for HETERO: 'NOT_A_KEY'"),
    ({"SCHEDULE_POLICY": "ROUND_ROBIN"}, "'SCHEDULE_POLICY' is not accepted by HETERO"),
    ({"AFFINITY_POLICY": "FASTEST"}, "AFFINITY_POLICY"),
    ({"DEVICE_PROPERTIES": {"MOCK.3": {"NUM_STREAMS": 2}}}, "device 'MOCK.3' is not in the HETERO device list"),
    ({"DEVICE_PROPERTIES": {"CPU": {"NUM_STREAMS": 0}}}, "NUM_STREAMS"),
    ({"AFFINITY": {"sm": "MOCK.2"}}, "AFFINITY\\['sm'\\]: device 'MOCK.2' is not in the HETERO device list"),
    ({"AFFINITY": {"smx": "CPU"}}, "unknown node: 'smx'.*did you mean 'sm'"),
    ({"AFFINITY_RULES": "Softmax"}, "malformed rule 'Softmax'"),
])
def test_bad_properties(core, config, message):
    with pytest.raises(PropertyError, match=message):
        core.compile_model(MODEL, "HETERO:MOCK.0,CPU", config)


# ---- placement ----------------------------------------------------------------------------------------

def test_manual_rules_fallback_and_why(core):
    mock0 = core._registry.get("MOCK.0")
    mock0.set_property({"MOCK_SUPPORTED_OPS": "MatMul,Add,Tanh,Mul,Softmax"})
    cm = core.compile_model(MODEL, "HETERO:MOCK.0,CPU", {"AFFINITY": {"sum": "CPU"},
                                                         "AFFINITY_RULES": "Softmax=CPU; t*=CPU"})
    assert dict(cm.assignment.device) == {"mm": "MOCK.0", "add": "MOCK.0", "tanh": "CPU", "sq": "MOCK.0",
                                          "neg": "CPU", "sum": "CPU", "sm": "CPU"}
    assert cm.why("sum") == "manual"
    assert cm.why("sm") == "rule 1 (Softmax=CPU)"
    assert cm.why("tanh") == "rule 2 (t*=CPU)"
    assert cm.why("neg") == "fallback to CPU: MOCK.0 cannot run it (Neg: not in MOCK.0's op set)"
    assert cm.why("mm") == "priority 1 (MOCK.0)"
    assert cm.placements()["sq"] == ("MOCK.0", "priority 1 (MOCK.0)")
    assert [(s.device, s.nodes) for s in cm.plan.subgraphs] == [
        ("MOCK.0", ("mm", "add")), ("CPU", ("tanh", "neg")), ("MOCK.0", ("sq",)), ("CPU", ("sum", "sm"))]
    np.testing.assert_allclose(run(cm), REF, rtol=1e-5, atol=1e-6)
    assert core.query_model(MODEL, "HETERO:MOCK.0,CPU", {"AFFINITY": {"sum": "CPU"},
                                                          "AFFINITY_RULES": "Softmax=CPU; t*=CPU"}) == dict(
        cm.assignment.device)


def test_rule_to_incapable_device(core):
    core._registry.get("MOCK.0").set_property({"MOCK_SUPPORTED_OPS": "MatMul,Add"})
    with pytest.raises(UnsupportedOpError, match="rule 1 \\(Softmax=MOCK.0\\) sends node 'sm' \\(Softmax\\) to MOCK.0"):
        core.compile_model(MODEL, "HETERO:MOCK.0,CPU", {"AFFINITY_RULES": "Softmax=MOCK.0"})


def test_unsupported_nodes_compile_raises_query_reports(core):
    core._registry.get("MOCK.0").set_property({"MOCK_SUPPORTED_OPS": "MatMul,Add,Tanh"})
    core._registry.get("MOCK.1").set_property({"MOCK_SUPPORTED_OPS": "Mul,Add"})
    with pytest.raises(UnsupportedOpError) as e:
        core.compile_model(MODEL, "HETERO:MOCK.0,MOCK.1")
    assert e.value.nodes == {
        "neg": {"MOCK.0": "Neg: not in MOCK.0's op set", "MOCK.1": "Neg: not in MOCK.1's op set"},
        "sm": {"MOCK.0": "Softmax: not in MOCK.0's op set", "MOCK.1": "Softmax: not in MOCK.1's op set"}}
    assert "neg (Neg)" in str(e.value) and "sm (Softmax)" in str(e.value)
    q = core.query_model(MODEL, "HETERO:MOCK.0,MOCK.1")
    assert q == {"mm": "MOCK.0", "add": "MOCK.0", "tanh": "MOCK.0", "sq": "MOCK.1", "neg": "UNSUPPORTED",
                 "sum": "MOCK.0", "sm": "UNSUPPORTED"}
    assert q.unsupported == e.value.nodes
    assert q.reasons["sq"] == "fallback to MOCK.1: MOCK.0 cannot run it (Mul: not in MOCK.0's op set)"


def test_cost_policy_prefers_the_faster_device(core):
    core._registry.get("MOCK.0").set_property({"MOCK_SPEED": 50.0})  # MOCK.0 is 50x slower than the CPU
    cm = core.compile_model(MODEL, "HETERO:MOCK.0,CPU", {"AFFINITY_POLICY": "COST"})
    assert set(cm.assignment.device.values()) == {"CPU"}
    # decided by the policy: by the cut ("cost: CPU ...") or, when timing noise tipped nodes the
    # other way, by island absorption back into the CPU or the whole-model check
    assert all(r.startswith(("cost: CPU", "cost: whole model on CPU")) or
               (r.startswith("cost: island") and r.split(" (")[0].endswith("into CPU"))
               for r in cm.assignment.reason.values()), cm.assignment.reason
    np.testing.assert_allclose(run(cm), REF, rtol=1e-5, atol=1e-6)
    # a rule still wins over the policy
    cm = core.compile_model(MODEL, "HETERO:MOCK.0,CPU", {"AFFINITY_POLICY": "COST", "AFFINITY_RULES": "Tanh=MOCK.0"})
    assert cm.assignment.device["tanh"] == "MOCK.0" and cm.why("tanh") == "rule 1 (Tanh=MOCK.0)"


# ---- profiling, dumps, debug -------------------------------------------------------------------------

def test_profiling_prefixes_reorders_and_totals(core):
    cm = core.compile_model(MODEL, "HETERO:MOCK.0,CPU", {"AFFINITY_RULES": "Softmax=CPU", "PERF_COUNT": True})
    req = cm.create_infer_request()
    req.infer({"x": X})
    rows = [(p.node_name, p.node_type, p.exec_type.split(":")[0], p.nbytes) for p in req.get_profiling_info()]
    assert rows == [
        ("subgraph0: Reorder_x_HOST_to_MOCK.0", "Reorder", "HOST->MOCK.0", 64),
        ("subgraph0: mm", "MatMul", "MOCK.0", 0), ("subgraph0: add", "Add", "MOCK.0", 0),
        ("subgraph0: tanh", "Tanh", "MOCK.0", 0), ("subgraph0: sq", "Mul", "MOCK.0", 0),
        ("subgraph0: neg", "Neg", "MOCK.0", 0), ("subgraph0: sum", "Add", "MOCK.0", 0),
        ("subgraph0: total", "Subgraph", "MOCK.0", 64),
        ("subgraph1: Reorder_f_MOCK.0_to_CPU", "Reorder", "MOCK.0->CPU", 64),
        ("subgraph1: sm", "Softmax", "CPU", 0), ("subgraph1: total", "Subgraph", "CPU", 64)]
    infos = req.get_profiling_info()
    total0 = infos[7].real_time.total_seconds()
    assert total0 >= sum(p.real_time.total_seconds() for p in infos[1:7])


def test_dumps_by_property_and_env(core, tmp_path, monkeypatch):
    graphviz = pytest.importorskip("graphviz")
    cm = core.compile_model(MODEL, "HETERO:MOCK.0,CPU", {"AFFINITY_RULES": "Softmax=CPU",
                                                         "HETERO_DUMP_GRAPH_DOT": True, "HETERO_DUMP_DIR": tmp_path})
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["hetero_affinity_tiny.dot", "hetero_plan_tiny.json", "hetero_subgraphs_tiny.dot"]
    first = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert 'label="subgraph 1: CPU (1 nodes)"' in first["hetero_subgraphs_tiny.dot"]
    assert '"node:sm" [label="sm\\nSoftmax\\nCPU\\nrule 1 (Softmax=CPU)", fillcolor="#9ecae1"];' \
        in first["hetero_affinity_tiny.dot"]
    graphviz.Source(first["hetero_subgraphs_tiny.dot"])
    # env var, default dir = the working directory; same model, same text
    other = tmp_path / "env"
    other.mkdir()
    monkeypatch.chdir(other)
    monkeypatch.setenv("HETERO_DUMP_GRAPH_DOT", "1")
    core.compile_model(MODEL, "HETERO:MOCK.0,CPU", {"AFFINITY_RULES": "Softmax=CPU"})
    assert {p.name: p.read_text() for p in other.iterdir()} == first
    assert cm.dump_files["json"].name == "hetero_plan_tiny.json"


def test_debug_prints_placements(core, monkeypatch, capsys):
    monkeypatch.setenv("HETERO_DEBUG", "1")
    core.compile_model(MODEL, "HETERO:MOCK.0,CPU", {"AFFINITY_RULES": "Softmax=CPU"})
    err = capsys.readouterr().err
    assert "sm (Softmax) -> CPU: rule 1 (Softmax=CPU) [subgraph1]" in err
    assert "mm (MatMul) -> MOCK.0: priority 1 (MOCK.0) [subgraph0]" in err


# ---- running: concurrency, pipelining, many requests, failures ---------------------------------------

class GateDevice(Device):
    """A test plugin running CPU kernels, calling ``hook(name)`` before every subgraph run."""

    family = "GATE"

    def __init__(self, index, hook):
        self.name = f"GATE.{index}"
        super().__init__()
        self.hook = hook

    def query(self, graph):
        return {n.name: True for n in graph.nodes}

    def compile(self, graph, config=None):
        return GateExe(self, CPUExecutable(graph, self.name))


class GateExe(Executable):
    def __init__(self, device, inner):
        self.device, self.inner, self.graph, self.device_name = device, inner, inner.graph, device.name

    def run(self, feeds, context=None, profile=None):
        self.device.hook(self.device.name)
        return self.inner.run(feeds, context, profile)


class GateCore:
    """Just enough of Core for compile_hetero: a registry with the two gate devices (or ``devs``)."""

    def __init__(self, hook=None, devs=None):
        devs = devs or [GateDevice(0, hook), GateDevice(1, hook)]

        class Reg:
            def get(self, spec, text=None):
                for d in devs:
                    if d.name == spec.name:
                        return d
                raise DeviceError(spec.name)

            def available(self, include_mock=False):
                return [d.name for d in devs]

        self._registry = Reg()


def test_sync_infer_runs_independent_subgraphs_concurrently():
    """Each branch's run waits at a 2-party barrier: only concurrent runs get through."""
    barrier = threading.Barrier(2, timeout=10)
    cm = compile_hetero(GateCore(lambda name: barrier.wait()), hetero.read_model(branches_model()),
                        parse("HETERO:GATE.0,GATE.1"), {"AFFINITY": {"abs": "GATE.1"}})
    assert [(s.device, s.nodes, s.deps) for s in cm.plan.subgraphs] == [("GATE.0", ("neg",), ()),
                                                                        ("GATE.1", ("abs",), ())]
    out = cm({"x": X})
    np.testing.assert_array_equal(out["y1"], -X)
    np.testing.assert_array_equal(out["y2"], np.abs(X))


def test_async_requests_pipeline_across_subgraphs():
    """Request 0's subgraph 1 (GATE.1) waits until request 1's subgraph 0 (GATE.0) has started: this
    completes only if the two requests are in different subgraphs at the same time."""
    second = threading.Event()
    calls = {"GATE.0": 0, "GATE.1": 0}
    lock = threading.Lock()

    def hook(name):
        with lock:
            calls[name] += 1
            n = calls[name]
        if name == "GATE.0" and n == 2:
            second.set()
        if name == "GATE.1" and n == 1 and not second.wait(10):
            raise RuntimeError("request 0 reached subgraph 1 but request 1 never entered subgraph 0")

    cm = compile_hetero(GateCore(hook), hetero.read_model(MODEL), parse("HETERO:GATE.0,GATE.1"),
                        {"AFFINITY_RULES": "sq=GATE.1; neg=GATE.1; sum=GATE.1; sm=GATE.1"})
    assert [s.device for s in cm.plan.subgraphs] == ["GATE.0", "GATE.1"]
    reqs = [cm.create_infer_request() for _ in range(2)]
    for r in reqs:
        r.start_async({"x": X})
    for r in reqs:
        r.wait()
        np.testing.assert_allclose(r.get_output_tensor(0), REF, rtol=1e-5, atol=1e-6)
    assert calls == {"GATE.0": 2, "GATE.1": 2}


def test_release_with_a_request_in_flight_fails_it_and_later_starts_raise():
    """release() while a request is inside subgraph 0: it fails naming the release (subgraph 1's
    workers are gone) instead of waiting forever; a request started after release raises at once."""
    entered, go, hold = threading.Event(), threading.Event(), {"on": False}

    def hook(name):
        if name == "GATE.0" and hold["on"]:
            entered.set()
            go.wait(10)

    cm = compile_hetero(GateCore(hook), hetero.read_model(MODEL), parse("HETERO:GATE.0,GATE.1"),
                        {"AFFINITY_RULES": "sq=GATE.1; neg=GATE.1; sum=GATE.1; sm=GATE.1"})
    r = cm.create_infer_request()
    r.start_async({"x": X})
    r.wait()  # both subgraphs' workers are running now
    hold["on"] = True
    r.start_async({"x": X})
    assert entered.wait(10)
    cm.release()
    go.set()
    with pytest.raises(DeviceError, match="GATE.1: the compiled model was released"):
        r.wait_for(10_000)
    with pytest.raises(DeviceError, match="HETERO:GATE.0,GATE.1: the compiled model was released"):
        cm.create_infer_request().start_async({"x": X})


def test_async_queue_completes_every_request_once(core):
    cm = core.compile_model(MODEL, "HETERO:MOCK.0,CPU,MOCK.1", {"AFFINITY_RULES": "Softmax=CPU; neg=MOCK.1"})
    assert len(cm.plan.subgraphs) == 4
    q = hetero.AsyncInferQueue(cm, 4)
    xs = [np.full((2, 8), i / 10, np.float32) for i in range(24)]
    refs = [ReferenceEvaluator(MODEL).run(None, {"x": x})[0] for x in xs]
    seen = []
    q.set_callback(lambda req, i: seen.append((i, req.get_output_tensor(0).copy())))
    for i, x in enumerate(xs):
        q.start_async({"x": x}, i)
    q.wait_all()
    assert sorted(i for i, _ in seen) == list(range(24))
    for i, out in seen:
        np.testing.assert_allclose(out, refs[i], rtol=1e-5, atol=1e-6)


def test_failing_subgraph_raises_and_nothing_hangs(core):
    cm = core.compile_model(MODEL, "HETERO:MOCK.0,CPU", {"AFFINITY_RULES": "Softmax=CPU"})
    core._registry.get("MOCK.0").set_property({"MOCK_FAIL_AFTER": 1})
    np.testing.assert_allclose(run(cm), REF, rtol=1e-5, atol=1e-6)
    with pytest.raises(DeviceError, match="MOCK.0: injected failure"):
        run(cm)
    req = cm.create_infer_request()
    req.start_async({"x": X})
    with pytest.raises(DeviceError, match="MOCK.0: injected failure"):
        req.wait_for(10000)  # done well within 10 s: raises the request's error


def test_bad_input_is_an_infer_error(core):
    cm = core.compile_model(MODEL, "HETERO:MOCK.0,CPU", {"AFFINITY_RULES": "Softmax=CPU"})
    with pytest.raises(InferError, match="expected shape"):
        cm({"x": np.zeros((3, 8), np.float32)})


# ---- GPU, when present ---------------------------------------------------------------------------------

def _gpu(core):
    gpus = [d for d in core.available_devices if d.startswith("GPU")]
    if not gpus:
        pytest.skip("no OpenCL GPU device available (hetero.devices.opencl found none)")
    return gpus[0]


def test_gpu_cpu_split_matches_reference(core):
    gpu = _gpu(core)
    cm = core.compile_model(MODEL, "HETERO:GPU,CPU", {"AFFINITY_RULES": "Softmax=CPU", "PERF_COUNT": True,
                                                      "DEVICE_PROPERTIES": {"GPU": {"INFERENCE_PRECISION_HINT": "f32"}}})
    assert cm.plan.subgraphs[-1].device == "CPU" and cm.plan.subgraphs[0].device == gpu
    req = cm.create_infer_request()
    np.testing.assert_allclose(req.infer({"x": X})[0], REF, rtol=1e-4, atol=1e-5)
    kinds = {p.node_type for p in req.get_profiling_info()}
    assert "Reorder" in kinds and "Subgraph" in kinds


def test_gpu_f16_outputs_converted_back(core):
    _gpu(core)
    cm = core.compile_model(MODEL, "HETERO:GPU,CPU", {"AFFINITY_RULES": "Softmax=CPU",
                                                      "DEVICE_PROPERTIES": {"GPU": {"INFERENCE_PRECISION_HINT": "f16"}}})
    out = run(cm)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, REF, rtol=2e-2, atol=2e-3)


def _reorder_rows(req):
    return [(p.node_name, p.exec_type, p.nbytes) for p in req.get_profiling_info() if p.node_type == "Reorder"]


@pytest.mark.parametrize("precision", ["f32", "f16"])
def test_gpu_reorders_do_the_real_transfers(core, precision):
    #   x (HOST) -[Reorder: upload (f32->f16)]-> mm..sum (GPU) -[Reorder: download (f16->f32)]-> sm (CPU) -> y
    gpu = _gpu(core)
    gpu_cfg = {"GPU": {"INFERENCE_PRECISION_HINT": precision}}
    cm = core.compile_model(MODEL, "HETERO:GPU,CPU", {"AFFINITY_RULES": "Softmax=CPU", "PERF_COUNT": True,
                                                      "DEVICE_PROPERTIES": gpu_cfg})
    assert [(s.device, len(s.nodes)) for s in cm.plan.subgraphs] == [(gpu, 6), ("CPU", 1)]
    req = cm.create_infer_request()
    out = req.infer({"x": X})[0]
    half = precision == "f16"
    # the GPU subgraph runs on device handles: the Reorders upload, download and convert, and say so
    assert _reorder_rows(req) == [
        (f"subgraph0: Reorder_x_HOST_to_{gpu}", f"HOST->{gpu}:" + ("float32->float16+" if half else "") + "upload",
         X.size * (2 if half else 4)),
        (f"subgraph1: Reorder_f_{gpu}_to_CPU", f"{gpu}->CPU:download" + ("+float16->float32" if half else ""),
         X.size * 4)]
    rows = req.get_profiling_info()
    assert all(p.real_time.total_seconds() > 0 for p in rows if p.node_type == "Reorder")
    total0 = next(p for p in rows if p.node_name == "subgraph0: total").real_time.total_seconds()
    assert total0 >= rows[0].real_time.total_seconds()  # the upload counts in its subgraph's total
    # the same numbers as the single devices: the GPU alone at its precision, the CPU alone
    alone = core.compile_model(MODEL, "GPU", {"INFERENCE_PRECISION_HINT": precision})({"x": X})[0]
    cpu = core.compile_model(MODEL, "CPU")({"x": X})[0]
    assert out.dtype == np.float32
    tol = dict(rtol=2e-2, atol=2e-3) if half else dict(rtol=1e-5, atol=1e-6)  # docs: f16 tolerance
    np.testing.assert_allclose(out, alone, **tol)  # (alone in f16, the GPU's Softmax ran in f16 too)
    np.testing.assert_allclose(out, cpu, **tol)
    np.testing.assert_allclose(out, REF, **tol)
    # a second request (its own stream context) gives the same result
    np.testing.assert_array_equal(cm({"x": X})[0], out)


def test_opencl_run_device_takes_and_returns_handles(core):
    # the plugin hook HETERO drives: device handles in (any precision; converted when it differs from
    # input_precision), fresh handles out in output_precision; the same numbers as run()
    gpu = _gpu(core)
    from hetero.devices.opencl.device import DeviceTensor

    dev = core._registry.get(gpu)
    exe = dev.compile(hetero.read_model(MODEL), {"INFERENCE_PRECISION_HINT": "f16"})
    assert exe.accepts_device_inputs and exe.input_precision == {"x": np.dtype(np.float16)}
    ref = exe.run({"x": X})["y"]
    ctx = exe.new_context()
    for feed in (dev.upload(X.astype(np.float16)), dev.upload(X), X):
        out = exe.run_device({"x": feed}, ctx)["y"]
        assert isinstance(out, DeviceTensor) and out.dtype == exe.output_precision["y"] and out.shape == (2, 8)
        np.testing.assert_array_equal(dev.download(out).astype(np.float32), ref)
    first = exe.run_device({"x": X}, ctx)["y"]
    exe.run_device({"x": -X}, ctx)  # a later run on the same stream must not overwrite a handed-out output
    np.testing.assert_array_equal(dev.download(first).astype(np.float32), ref)
    with pytest.raises(InferError, match="shape"):
        exe.run_device({"x": dev.upload(X[:1])}, ctx)


def test_gpu_output_also_read_by_cpu_is_downloaded_once(core):
    #   x -> mm..sum (GPU) -> f -+-> sm (CPU) -> y
    #                            +-> graph output f      one download of f serves the CPU and HOST
    gpu = _gpu(core)
    m = tiny_model()
    m.graph.output.append(h.make_tensor_value_info("f", T.FLOAT, [2, 8]))
    cm = core.compile_model(m, "HETERO:GPU,CPU", {"AFFINITY_RULES": "Softmax=CPU", "PERF_COUNT": True,
                                                  "DEVICE_PROPERTIES": {"GPU": {"INFERENCE_PRECISION_HINT": "f16"}}})
    assert [(r.name, r.transfer, r.destinations) for r in cm.plan.reorders] == [
        (f"Reorder_x_HOST_to_{gpu}", "upload", (gpu,)), (f"Reorder_f_{gpu}_to_CPU", "download", ("CPU", "HOST"))]
    req = cm.create_infer_request()
    res = req.infer({"x": X})
    y, f = res["y"], res["f"]
    assert _reorder_rows(req) == [
        (f"subgraph0: Reorder_x_HOST_to_{gpu}", f"HOST->{gpu}:float32->float16+upload", X.size * 2),
        (f"subgraph1: Reorder_f_{gpu}_to_CPU", f"{gpu}->CPU:download+float16->float32", X.size * 4)]
    ref_y, ref_f = ReferenceEvaluator(m).run(None, {"x": X})
    assert f.dtype == np.float32 and y.dtype == np.float32
    np.testing.assert_allclose(f, ref_f, rtol=2e-2, atol=2e-3)
    np.testing.assert_allclose(y, ref_y, rtol=2e-2, atol=2e-3)
    e = np.exp(f - f.max(axis=1, keepdims=True))  # the CPU's softmax read the same downloaded f
    np.testing.assert_allclose(y, e / e.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-6)


class PickyDevice(GateDevice):
    """Its query accepts every node, but its compile refuses Neg (as a plugin may, for a subgraph)."""

    def compile(self, graph, config=None):
        bad = {n.name: {self.name: "Neg: refused by compile"} for n in graph.nodes if n.op_type == "Neg"}
        if bad:
            raise UnsupportedOpError(f"{self.name} cannot run {list(bad)}", bad)
        return super().compile(graph, config)


def test_nodes_refused_at_compile_are_placed_again():
    core = GateCore(devs=[PickyDevice(0, lambda name: None), hetero.Core()._registry.get("CPU")])
    cm = compile_hetero(core, hetero.read_model(MODEL), parse("HETERO:GATE.0,CPU"), {})
    assert cm.assignment.device["neg"] == "CPU"
    assert cm.why("neg") == "fallback to CPU: GATE.0 cannot run it (Neg: refused by compile (refused at compile))"
    assert [(s.device, s.nodes) for s in cm.plan.subgraphs] == [
        ("GATE.0", ("mm", "add", "tanh", "sq")), ("CPU", ("neg",)), ("GATE.0", ("sum", "sm"))]
    np.testing.assert_allclose(run(cm), REF, rtol=1e-5, atol=1e-6)
