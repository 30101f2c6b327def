"""The Python API (issue 2, point 7): Core, CompiledModel, InferRequest, AsyncInferQueue, profiling,
input checking, and HETERO_DEBUG output. Results are checked against numpy formulas."""
from __future__ import annotations

import datetime
import threading

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T, helper as h, numpy_helper as nh

import hetero
from hetero.errors import DeviceError, InferError, PropertyError

RNG = np.random.default_rng(0)
W = RNG.standard_normal((8, 4)).astype(np.float32)


def two_out_model():
    """x[N,8] -> mm (MatMul W) -> add (+ b[4]) -> s -+-> relu -------------> y[N,4]
                                                     +-> ident (Identity) -> neg -> z[N,4]"""
    g = h.make_graph([h.make_node("MatMul", ["x", "W"], ["a"], name="mm"),
                      h.make_node("Add", ["a", "b"], ["s"], name="add"),
                      h.make_node("Relu", ["s"], ["y"], name="relu"),
                      h.make_node("Identity", ["s"], ["i"], name="ident"),
                      h.make_node("Neg", ["i"], ["z"], name="neg")],
                     "two_out", [h.make_tensor_value_info("x", T.FLOAT, ["N", 8]),
                                 h.make_tensor_value_info("b", T.FLOAT, [4])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["N", 4]), h.make_tensor_value_info("z", T.FLOAT, ["N", 4])],
                     [nh.from_array(W, "W")])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


MODEL = two_out_model()


def feeds(n=2, seed=1):
    r = np.random.default_rng(seed)
    return {"x": r.standard_normal((n, 8)).astype(np.float32), "b": r.standard_normal(4).astype(np.float32)}


def expected(f):
    s = f["x"] @ W + f["b"]
    return np.maximum(s, 0), -s


def check(results, f):
    y, z = expected(f)
    np.testing.assert_allclose(results["y"], y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(results["z"], z, rtol=1e-5, atol=1e-6)


@pytest.fixture
def core():
    """A Core; device settings are process-wide, so restore CPU and MOCK devices afterwards."""
    c = hetero.Core()
    cpu = c._registry.get("CPU")
    saved = dict(cpu._config)
    yield c
    cpu._config = saved
    from hetero.devices.mock import discover

    for d in discover():
        d.reset()


@pytest.fixture
def compiled(core):
    return core.compile_model(MODEL, "CPU")


# ---- Core --------------------------------------------------------------------------------------------

def test_core_devices_and_versions(core):
    devices = core.available_devices
    assert "CPU" in devices and not any(d.startswith("MOCK") for d in devices)
    v = core.get_versions("CPU")
    assert list(v) == ["CPU"] and v["CPU"].build_number == hetero.__version__
    assert "CPU" in v["CPU"].description
    with pytest.raises(DeviceError, match="NOPE.*available devices"):
        core.get_versions("NOPE")


def test_core_read_and_compile_and_module_level_compile(core, tmp_path):
    onnx.save(MODEL, tmp_path / "m.onnx")
    graph = core.read_model(tmp_path / "m.onnx")
    assert isinstance(graph, hetero.Graph) and [i.name for i in graph.inputs] == ["x", "b"]
    f = feeds()
    for cm in (core.compile_model(graph, "CPU"), core.compile_model(str(tmp_path / "m.onnx"), "CPU", {}),
               hetero.compile_model(MODEL, "CPU"), hetero.compile_model(MODEL.SerializeToString(), "CPU")):
        assert isinstance(cm, hetero.CompiledModel)
        check(cm(f), f)


def test_query_model_maps_nodes_to_the_device(core):
    q = core.query_model(MODEL, "CPU")
    # Identity is removed at compile time, so it runs nowhere and is not listed
    assert q == {"mm": "CPU", "add": "CPU", "relu": "CPU", "neg": "CPU"}
    core._registry.get("MOCK.1").set_property({"MOCK_SUPPORTED_OPS": "MatMul,Relu"})
    assert core.query_model(MODEL, "MOCK.1") == {"mm": "MOCK.1", "relu": "MOCK.1"}


def test_core_get_and_set_property(core):
    assert core.get_property("CPU", "PERFORMANCE_HINT") == "LATENCY"
    assert isinstance(core.get_property("CPU", "FULL_DEVICE_NAME"), str)
    assert "PERF_COUNT" in core.get_property("CPU", "SUPPORTED_PROPERTIES")
    core.set_property("CPU", {"PERF_COUNT": True, "PERFORMANCE_HINT": "throughput"})
    assert core.get_property("CPU", "PERF_COUNT") is True
    assert core.get_property("CPU", "PERFORMANCE_HINT") == "THROUGHPUT"  # normalised
    cm = core.compile_model(MODEL, "CPU")  # device settings are the compile defaults
    assert cm.get_property("PERF_COUNT") is True and cm.get_property("PERFORMANCE_HINT") == "THROUGHPUT"
    cm2 = core.compile_model(MODEL, "CPU", {"PERFORMANCE_HINT": "LATENCY"})  # config overrides them
    assert cm2.get_property("PERFORMANCE_HINT") == "LATENCY"


# ---- CompiledModel -------------------------------------------------------------------------------------

def test_compiled_model_ports(compiled):
    assert [p.any_name for p in compiled.inputs] == ["x", "b"]
    assert [p.any_name for p in compiled.outputs] == ["y", "z"]
    x, b = compiled.inputs
    assert x.shape == ("N", 8) and x.dtype == np.float32 and b.shape == (4,)
    assert compiled.outputs[1].shape == ("N", 4) and compiled.outputs[0].get_names() == {"y"}


def test_call_accepts_names_indices_ports_and_lists(compiled):
    f = feeds(3)
    for inputs in (f, {0: f["x"], 1: f["b"]}, {compiled.inputs[0]: f["x"], "b": f["b"]}, [f["x"], f["b"]]):
        check(compiled(inputs), f)
    r = compiled(f)
    y, z = expected(f)
    # results by output name, index and Port; as a tuple and a dict
    np.testing.assert_allclose(r[0], y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r[compiled.outputs[1]], z, rtol=1e-5, atol=1e-6)
    assert list(r) == ["y", "z"] and len(r) == 2
    assert r.to_tuple()[1] is r["z"] and set(r.to_dict()) == {"y", "z"}
    with pytest.raises(KeyError, match="no output named 'w'"):
        r["w"]


def test_compiled_model_properties(compiled):
    assert compiled.get_property("EXECUTION_DEVICES") == ["CPU"]
    assert compiled.get_property("MODEL_NAME") == "two_out"
    assert compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS") == 1  # LATENCY: one stream
    assert compiled.get_property("PERF_COUNT") is False
    assert {"NUM_STREAMS", "OPTIMAL_NUMBER_OF_INFER_REQUESTS"} <= set(compiled.get_property("SUPPORTED_PROPERTIES"))
    compiled.set_property({"PERF_COUNT": True})
    assert compiled.get_property("PERF_COUNT") is True
    with pytest.raises(PropertyError, match="NUM_STREAMS.*cannot be changed after compile.*PERF_COUNT"):
        compiled.set_property({"NUM_STREAMS": 2})
    with pytest.raises(PropertyError, match="COMPILE_TIME_MZ.*did you mean 'COMPILE_TIME_MS'"):
        compiled.get_property("COMPILE_TIME_MZ")


# ---- InferRequest ---------------------------------------------------------------------------------------

def test_infer_request_sync_and_tensors(compiled):
    req = compiled.create_infer_request()
    f = feeds(2)
    req.set_tensor("x", f["x"])
    req.set_tensor(1, f["b"])
    assert req.get_tensor("x") is not None and req.get_tensor(compiled.inputs[1]).shape == (4,)
    with pytest.raises(InferError, match="output 'y' is not available: run the request first"):
        req.get_tensor("y")
    res = req.infer()  # the inputs set above
    check(res, f)
    check({"y": req.get_tensor("y"), "z": req.get_tensor(compiled.outputs[1])}, f)
    assert req.latency > 0
    with pytest.raises(InferError, match="'z' is an output"):
        req.set_tensor("z", f["x"])
    f2 = feeds(5, seed=2)
    check(req.infer(f2), f2)  # new inputs (another batch size) replace the old ones


def test_results_of_earlier_infer_are_not_overwritten(compiled):
    req = compiled.create_infer_request()
    f1, f2 = feeds(2, 1), feeds(2, 2)
    r1 = req.infer(f1)
    y1 = r1["y"].copy()
    req.infer(f2)
    np.testing.assert_array_equal(r1["y"], y1)


def test_start_async_wait_and_callback(compiled):
    req = compiled.create_infer_request()
    seen = []
    req.set_callback(lambda userdata: seen.append((userdata, req.get_tensor("y").copy())), "from set_callback")
    f = feeds(4)
    req.start_async(f)
    req.wait()
    assert seen[0][0] == "from set_callback"
    np.testing.assert_allclose(seen[0][1], expected(f)[0], rtol=1e-5, atol=1e-6)
    req.start_async(f, userdata={"id": 7})  # userdata given to start_async wins
    assert req.wait_for(10_000) is True
    assert seen[1][0] == {"id": 7}
    check(req.results, f)


def test_wait_for_times_out_while_running(core):
    cm = core.compile_model(MODEL, "MOCK.0", {"MOCK_LATENCY_MS": 400})
    req = cm.create_infer_request()
    f = feeds()
    req.start_async(f)
    assert req.wait_for(1) is False  # still running after 1 ms
    with pytest.raises(InferError, match="busy"):
        req.start_async(f)  # a running request cannot be restarted
    assert req.wait_for(10_000) is True
    check(req.results, f)


def test_exception_in_callback_resurfaces_at_wait(compiled):
    req = compiled.create_infer_request()

    def boom(_):
        raise ValueError("callback failed")

    req.set_callback(boom)
    req.start_async(feeds())
    with pytest.raises(ValueError, match="callback failed"):
        req.wait()
    req.set_callback(lambda _: None)
    req.start_async(feeds())
    req.wait()  # the error was reported once, not again


def test_profiling_info(core):
    cm = core.compile_model(MODEL, "CPU", {"PERF_COUNT": True})
    req = cm.create_infer_request()
    req.infer(feeds())
    info = req.get_profiling_info()
    assert all(isinstance(p, hetero.ProfilingInfo) for p in info)
    executed = [p for p in info if p.status == "EXECUTED"]
    assert [(p.node_name, p.node_type) for p in executed] == \
        [(n.name, n.op_type) for n in cm.get_runtime_model().nodes]
    assert [(p.node_name, p.node_type) for p in executed] == [("mm", "MatMul"), ("add", "Add"), ("relu", "Relu"),
                                                              ("neg", "Neg")]
    for p in executed:
        assert isinstance(p.real_time, datetime.timedelta) and p.real_time >= datetime.timedelta(0)
        assert isinstance(p.cpu_time, datetime.timedelta) and p.exec_type
    out = [p for p in info if p.status == "OPTIMIZED_OUT"]
    assert [(p.node_name, p.node_type) for p in out] == [("ident", "Identity")]


def test_profiling_off_raises(compiled):
    req = compiled.create_infer_request()
    req.infer(feeds())
    with pytest.raises(InferError, match="PERF_COUNT"):
        req.get_profiling_info()
    compiled.set_property({"PERF_COUNT": True})  # switched on after compile
    req.infer(feeds())
    assert len(req.get_profiling_info()) == 5


# ---- input checking -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, fragments", [
    ({"xx": np.zeros((2, 8), np.float32)}, ["'xx'", "did you mean 'x'", "x: float32[N,8]"]),
    ({"x": np.zeros((2, 8), np.float64)}, ["input 'x'", "expected dtype float32", "got float64"]),
    ({"x": np.zeros((2, 7), np.float32)}, ["input 'x'", "expected shape [N,8]", "got [2, 7]", "dimension 1"]),
    ({"x": np.zeros(8, np.float32)}, ["input 'x'", "rank 2", "got [8] (rank 1)"]),
    ({"b": np.zeros((4, 1), np.float32)}, ["input 'b'", "expected shape [4]", "got [4, 1]"]),
    ({"b": np.zeros(4, np.int64)}, ["input 'b'", "expected dtype float32", "got int64"]),
    ({5: np.zeros(4, np.float32)}, ["input index 5", "0..1"]),
    ([np.zeros((1, 8), np.float32)] * 3, ["got 3 inputs", "takes 2"]),
    ({"y": np.zeros((2, 4), np.float32)}, ["'y'", "x: float32[N,8]"]),
], ids=["name", "dtype", "shape", "rank", "shape-b", "dtype-b", "index", "count", "output-name"])
def test_bad_inputs_raise_infer_error_naming_input_expected_and_got(compiled, bad, fragments):
    req = compiled.create_infer_request()
    with pytest.raises(InferError) as ei:
        req.infer(bad)
    for f in fragments:
        assert f in str(ei.value), f"{f!r} not in {str(ei.value)!r}"
    check(req.infer(feeds()), feeds())  # the request is still usable afterwards


def test_missing_input_is_named(compiled):
    req = compiled.create_infer_request()
    with pytest.raises(InferError, match=r"missing input\(s\) \['b'\].*b: float32\[4\].*got \['x'\]"):
        req.infer({"x": np.zeros((2, 8), np.float32)})


def test_symbolic_dims_must_agree_across_inputs():
    """x[N,4] -> add (+ w[N,4]) -> y[N,4]"""
    g = h.make_graph([h.make_node("Add", ["x", "w"], ["y"], name="add")], "sym",
                     [h.make_tensor_value_info("x", T.FLOAT, ["N", 4]), h.make_tensor_value_info("w", T.FLOAT, ["N", 4])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["N", 4])])
    cm = hetero.compile_model(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), "CPU")
    with pytest.raises(InferError, match=r"input 'w': dimension 'N' is 3, but input 'x' set it to 2"):
        cm({"x": np.zeros((2, 4), np.float32), "w": np.zeros((3, 4), np.float32)})


def test_python_lists_adopt_the_model_dtype(compiled):
    x = [[float(i + j) for j in range(8)] for i in range(2)]
    f = {"x": np.array(x, np.float32), "b": np.ones(4, np.float32)}
    check(compiled({"x": x, "b": [1.0, 1.0, 1.0, 1.0]}), f)


# ---- AsyncInferQueue -----------------------------------------------------------------------------------------

def test_async_infer_queue_runs_every_job_with_its_userdata(core):
    cm = core.compile_model(MODEL, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": 3})
    assert len(hetero.AsyncInferQueue(cm)) == cm.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS") == 3
    queue = hetero.AsyncInferQueue(cm, jobs=4)
    assert len(queue) == 4 and queue.is_ready()
    got, lock = {}, threading.Lock()

    def done(request, userdata):
        with lock:
            got[userdata] = (request.get_tensor("y").copy(), request.get_tensor("z").copy())

    queue.set_callback(done)
    jobs = {i: feeds(1 + i % 3, seed=i) for i in range(40)}
    for i, f in jobs.items():
        queue.start_async(f, userdata=i)
    queue.wait_all()
    assert sorted(got) == list(range(40))  # every job once, none lost
    for i, f in jobs.items():
        check({"y": got[i][0], "z": got[i][1]}, f)
    assert queue.is_ready() and all(isinstance(r, hetero.InferRequest) for r in queue)


def test_async_infer_queue_callback_exception_resurfaces_at_wait_all(compiled):
    queue = hetero.AsyncInferQueue(compiled, jobs=2)
    calls = []

    def cb(request, userdata):
        calls.append(userdata)
        if userdata == 3:
            raise RuntimeError("callback 3 failed")

    queue.set_callback(cb)
    for i in range(6):
        queue.start_async(feeds(), userdata=i)
    with pytest.raises(RuntimeError, match="callback 3 failed"):
        queue.wait_all()
    assert sorted(calls) == list(range(6))  # the failure stopped nothing else
    queue.start_async(feeds(), userdata=99)
    queue.wait_all()  # the error was reported once; the queue still works
    assert calls[-1] == 99


def test_async_infer_queue_bad_input_raises_at_start_and_keeps_the_slot(compiled):
    queue = hetero.AsyncInferQueue(compiled, jobs=1)
    with pytest.raises(InferError, match="input 'x'"):
        queue.start_async({"x": np.zeros((2, 3), np.float32), "b": np.zeros(4, np.float32)})
    assert queue.is_ready()
    queue.start_async(feeds())
    queue.wait_all()


# ---- HETERO_DEBUG ------------------------------------------------------------------------------------------------

def test_hetero_debug_1_prints_placements(core, monkeypatch, capfd):
    monkeypatch.setenv("HETERO_DEBUG", "1")
    core.compile_model(MODEL, "CPU")
    err = capfd.readouterr().err
    assert "[hetero] compiled 'two_out' on CPU" in err
    core._registry.get("MOCK.0").set_property({"MOCK_SUPPORTED_OPS": "Neg"})
    core.compile_model(MODEL, "HETERO:MOCK.0,CPU")
    err = capfd.readouterr().err
    assert "neg (Neg) -> MOCK.0" in err and "mm (MatMul) -> CPU" in err


def test_hetero_debug_2_prints_node_timings(compiled, monkeypatch, capfd):
    monkeypatch.setenv("HETERO_DEBUG", "2")
    cm = hetero.compile_model(MODEL, "CPU")
    capfd.readouterr()
    cm(feeds())
    lines = [ln for ln in capfd.readouterr().err.splitlines() if ln.startswith("[hetero] CPU ")]
    assert [ln.split()[2:4] for ln in lines] == [["mm", "(MatMul)"], ["add", "(Add)"], ["relu", "(Relu)"],
                                                  ["neg", "(Neg)"]]
    assert all(ln.endswith(" ms") for ln in lines)


@pytest.mark.parametrize("value", ["", "0"])
def test_hetero_debug_off_prints_nothing(monkeypatch, capfd, value):
    monkeypatch.setenv("HETERO_DEBUG", value)
    hetero.compile_model(MODEL, "CPU")(feeds())
    assert "[hetero]" not in capfd.readouterr().err
