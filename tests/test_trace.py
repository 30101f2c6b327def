"""Execution traces (hetero/trace.py): the tracer itself, and the spans compiled models record
(HETERO_TRACE_FILE) for requests, HETERO subgraphs and Reorders, MULTI dispatch."""
from __future__ import annotations

import json
import threading
from collections import Counter, defaultdict

import numpy as np
import pytest

import hetero
from hetero import trace
from hetero.errors import PropertyError

from fixture_models import chain_model


MODEL = chain_model(batch=2)
X = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)


def laminar(events) -> bool:
    """Complete events on one row must nest or be disjoint (what chrome://tracing can draw)."""
    rows = defaultdict(list)
    for e in events:
        if e["ph"] == "X":
            rows[(e["pid"], e["tid"])].append((e["ts"], e["ts"] + e["dur"]))
    for spans in rows.values():
        spans.sort(key=lambda s: (s[0], -s[1]))
        stack: list[float] = []
        for t0, t1 in spans:
            while stack and stack[-1] <= t0 + 1e-3:
                stack.pop()
            if stack and t1 > stack[-1] + 1e-3:
                return False
            stack.append(t1)
    return True


# ---- the tracer -------------------------------------------------------------------------------------

def test_null_tracer_records_nothing_and_shares_one_span():
    tr = trace.NULL_TRACER
    assert not tr.enabled
    s1, s2 = tr.span("CPU", "a", 1, x=1), tr.span("GPU.0", "b")
    assert s1 is s2
    with s1 as s:
        s.set(bytes=3)
    tr.instant("CPU", "e")
    assert tr.save() is None
    assert trace.tracer_for("") is trace.NULL_TRACER and trace.tracer_for(None) is trace.NULL_TRACER


def test_spans_tracks_names_and_metadata(tmp_path):
    tr = trace.Tracer(tmp_path / "t.json")
    with tr.span("CPU", "infer", 3, cat="request"):
        with tr.span("CPU", "inner", 3, cat="subgraph", nodes=2) as s:
            s.set(bytes=64)
    with tr.span("GPU.0/queue", "queued", 4):
        pass
    tr.instant("MULTI:GPU.0,CPU", "dispatch -> GPU.0", 4, cat="dispatch")
    with pytest.raises(ValueError):
        with tr.span("CPU", "fails"):
            raise ValueError("boom")
    path = tr.save()
    raw = json.loads(path.read_text())
    assert raw["displayTimeUnit"] == "ms" and raw["otherData"]["dropped_events"] == 0
    loaded = trace.load(path)
    ev = {e["name"]: e for e in loaded["events"]}
    assert set(ev) == {"infer #3", "inner #3", "queued #4", "dispatch -> GPU.0 #4", "fails"}
    assert ev["inner #3"]["args"] == {"nodes": 2, "bytes": 64, "request_id": 3}
    assert ev["inner #3"]["cat"] == "subgraph" and ev["infer #3"]["args"] == {"request_id": 3}
    assert ev["fails"]["args"] == {"error": "ValueError: boom"}
    assert ev["dispatch -> GPU.0 #4"]["ph"] == "i"
    # the inner span lies inside the outer one, on the same row
    o, i = ev["infer #3"], ev["inner #3"]
    assert (o["pid"], o["tid"]) == (i["pid"], i["tid"])
    assert o["ts"] <= i["ts"] and i["ts"] + i["dur"] <= o["ts"] + o["dur"]
    me = threading.current_thread().name
    assert loaded["tracks"] == {("CPU", me), ("GPU.0", "queue"), ("MULTI:GPU.0,CPU", me)}
    # processes numbered in order of first appearance, each named once
    names = [e["args"]["name"] for e in raw["traceEvents"] if e["ph"] == "M" and e["name"] == "process_name"]
    assert names == ["CPU", "GPU.0", "MULTI:GPU.0,CPU"]


def test_threads_get_their_own_rows_and_rows_nest():
    tr = trace.Tracer()

    def work(k):
        for j in range(20):
            with tr.span("CPU", "req", k * 100 + j):
                with tr.span("CPU", "step", k * 100 + j):
                    pass

    threads = [threading.Thread(target=work, args=(k,), name=f"CPU-stream{k}") for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    d = tr.to_dict()
    lanes = {e["args"]["name"] for e in d["traceEvents"] if e["ph"] == "M" and e["name"] == "thread_name"}
    assert lanes == {"stream0", "stream1", "stream2", "stream3"}  # the "CPU-" prefix is dropped
    spans = [e for e in d["traceEvents"] if e["ph"] == "X"]
    assert len(spans) == 160 and laminar(spans)
    assert sorted(Counter(e["args"]["request_id"] for e in spans).values()) == [2] * 80


def test_event_cap_counts_dropped():
    tr = trace.Tracer(max_events=5)
    for i in range(8):
        tr.instant("CPU", "e", i)
    assert len(tr) == 5 and tr.dropped == 3
    assert tr.to_dict()["otherData"]["dropped_events"] == 3


def test_bind_is_per_thread_and_nests():
    a, b = trace.Tracer(), trace.Tracer()
    assert trace.current() == (trace.NULL_TRACER, None)
    seen = []
    with trace.bind(a, 1):
        with trace.bind(b, 2):
            assert trace.current() == (b, 2)
            t = threading.Thread(target=lambda: seen.append(trace.current()))
            t.start()
            t.join()
        assert trace.current() == (a, 1)
    assert trace.current() == (trace.NULL_TRACER, None)
    assert seen == [(trace.NULL_TRACER, None)]


# ---- compiled models ----------------------------------------------------------------------------------

def requests_of(events, process):
    return [e for e in events if e["process"] == process and e.get("cat") == "request"]


def test_cpu_requests_sync_and_async_on_stream_rows(tmp_path):
    path = tmp_path / "cpu.json"
    core = hetero.Core()
    cm = core.compile_model(MODEL, "CPU", {"HETERO_TRACE_FILE": path, "NUM_STREAMS": 2})
    assert cm.get_property("HETERO_TRACE_FILE") == str(path) and cm.tracer.enabled
    cm({"x": X})
    q = hetero.AsyncInferQueue(cm, 3)
    for _ in range(6):
        q.start_async({"x": X})
    q.wait_all()
    ids = [r.request_id for r in q] + [cm._default_request.request_id]
    cm.release()
    t = trace.load(path)
    reqs = requests_of(t["events"], "CPU")
    # one span per inference, numbered in the order they started, each naming its InferRequest
    assert sorted(e["args"]["request_id"] for e in reqs) == list(range(7))
    assert {e["args"]["infer_request"] for e in reqs} <= set(ids) and ids[-1] in {e["args"]["infer_request"] for e in reqs}
    lanes = {lane for proc, lane in t["tracks"] if proc == "CPU"}
    assert threading.current_thread().name in lanes  # the sync call ran in this thread
    assert lanes - {threading.current_thread().name} <= {"stream0", "stream1"} and len(lanes) >= 2
    compile_spans = [e for e in t["events"] if e.get("cat") == "compile"]
    assert [e["name"] for e in compile_spans] == ["compile_model"] and compile_spans[0]["process"] == "CPU"
    assert laminar(t["raw"]["traceEvents"])


def test_tracing_off_by_default_and_bad_value():
    core = hetero.Core()
    cm = core.compile_model(MODEL, "CPU")
    assert cm.tracer is trace.NULL_TRACER
    with pytest.raises(PropertyError, match="HETERO_TRACE_FILE"):
        core.compile_model(MODEL, "CPU", {"HETERO_TRACE_FILE": 3})


def hetero_trace(tmp_path, device, config):
    path = tmp_path / "hetero.json"
    core = hetero.Core()
    cm = core.compile_model(MODEL, device, {"HETERO_TRACE_FILE": str(path), **config})
    want = cm({"x": X})["values"]
    q = hetero.AsyncInferQueue(cm, 4)
    for _ in range(8):
        q.start_async({"x": X})
    q.wait_all()
    for r in q:
        np.testing.assert_allclose(r.get_tensor("values"), want, rtol=1e-5)
    name = cm._device_name
    cm.release()
    return name, trace.load(path)


@pytest.mark.parametrize("device, config", [
    ("HETERO:MOCK.0,CPU", {"AFFINITY_RULES": "TopK=CPU"}),
    pytest.param("HETERO:GPU,CPU", {}, marks=pytest.mark.opencl),
])
def test_hetero_subgraph_and_reorder_spans(tmp_path, device, config):
    if device.startswith("HETERO:GPU") and not any(d.startswith("GPU") for d in hetero.Core().available_devices):
        pytest.skip("no OpenCL device")
    name, t = hetero_trace(tmp_path, device, config)
    accel = "MOCK.0" if "MOCK" in device else "GPU.0"
    events = t["events"]
    reqs = requests_of(events, name)
    assert len(reqs) == 9
    rids = {e["args"]["request_id"] for e in reqs}
    subs = [e for e in events if e.get("cat") == "subgraph"]
    # every request ran subgraph0 on the accelerator and subgraph1 (the TopK) on the CPU
    assert Counter((e["process"], e["name"].split(" #")[0]) for e in subs) == Counter(
        {(accel, "subgraph0"): 9, ("CPU", "subgraph1"): 9})
    assert {e["args"]["request_id"] for e in subs} == rids
    reorders = [e for e in events if e.get("cat") == "reorder"]
    assert reorders and {e["args"]["request_id"] for e in reorders} == rids
    assert all(e["args"]["bytes"] > 0 for e in reorders)
    # the softmax output goes accelerator -> CPU once per request
    assert Counter(e["name"].split(" #")[0] for e in reorders)[f"Reorder p {accel}->CPU"] == 9
    # per request: subgraph0 ends before subgraph1 starts
    by = {(e["args"]["request_id"], e["name"].split(" #")[0]): e for e in subs}
    for rid in rids:
        s0, s1 = by[(rid, "subgraph0")], by[(rid, "subgraph1")]
        assert s0["ts"] + s0["dur"] <= s1["ts"] + 1e-3
    assert laminar(t["raw"]["traceEvents"])


@pytest.fixture
def mocks():
    from hetero.devices.mock import discover

    yield hetero.Core()
    for d in discover():
        d.reset()


def test_multi_dispatch_instants_match_device_spans(tmp_path, mocks):
    path = tmp_path / "multi.json"
    cm = mocks.compile_model(MODEL, "MULTI:MOCK.0(2),CPU(2)", {"HETERO_TRACE_FILE": str(path)})
    q = hetero.AsyncInferQueue(cm, 4)
    for _ in range(10):
        q.start_async({"x": X})
    q.wait_all()
    served, name = cm.get_property("MULTI_SERVED_REQUESTS"), cm._device_name
    cm.release()
    events = trace.load(path)["events"]
    dispatch = {e["args"]["request_id"]: e["name"].split(" -> ")[1].split(" #")[0]
                for e in events if e.get("cat") == "dispatch"}
    runs = {e["args"]["request_id"]: e["process"] for e in events if e.get("cat") == "request"}
    assert sorted(dispatch) == list(range(10)) and runs == dispatch  # each inference ran where it was sent
    assert Counter(runs.values()) == Counter({k: v for k, v in served.items() if v})
    assert {e["process"] for e in events if e.get("cat") == "dispatch"} == {name}
    assert laminar(trace.load(path)["raw"]["traceEvents"])


def test_auto_hot_swap_timeline(tmp_path, mocks):
    mocks._registry.get("MOCK.0").set_property({"MOCK_COMPILE_DELAY_MS": 400})
    path = tmp_path / "auto.json"
    cm = mocks.compile_model(MODEL, "AUTO:MOCK.0,CPU", {"HETERO_TRACE_FILE": str(path)})
    cm({"x": X})  # served by the CPU helper while MOCK.0 compiles (or by MOCK.0 if it won the race)
    assert cm.wait_ready(10)
    for _ in range(3):
        cm({"x": X})
    cm.release()
    events = trace.load(path)["events"]
    auto = [e["name"] for e in sorted(events, key=lambda e: e["ts"]) if e.get("cat") == "auto"]
    # the startup timeline, in order: accelerator compiling, CPU helper serving, then the swap
    assert auto[0] == "MOCK.0 compiling in the background" and auto[1].startswith("helper CPU compiled")
    assert any(a.startswith("MOCK.0 ready") for a in auto[2:])
    ready_ts = next(e["ts"] for e in events if e.get("cat") == "auto" and e["name"].startswith("MOCK.0 ready"))
    later = [e for e in events if e.get("cat") == "dispatch" and e["ts"] > ready_ts]
    assert len(later) >= 3 and all("-> MOCK.0" in e["name"] for e in later)
