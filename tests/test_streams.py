"""Streams and performance hints on CPU (issue 2, point 8).

LATENCY runs one stream (one request at a time gets every core); THROUGHPUT runs several streams that
serve requests in parallel; NUM_STREAMS overrides the hint; OPTIMAL_NUMBER_OF_INFER_REQUESTS matches
the streams. Parallelism is shown without timing: callbacks run on the stream workers, and a barrier
that only N requests running at once can pass proves N streams really run together.
Then many threads push many requests through every entry point and every result is checked.
"""
from __future__ import annotations

import os
import sys
import threading

import numpy as np
import pytest
from onnx import TensorProto as T, helper as h, numpy_helper as nh

import hetero
from hetero.errors import PropertyError

RNG = np.random.default_rng(0)
W1 = RNG.standard_normal((16, 32)).astype(np.float32)
W2 = RNG.standard_normal((32, 8)).astype(np.float32)
CORES = os.cpu_count() or 1


def mlp():
    """x[N,16] -> mm1 (MatMul W1) -> relu -> mm2 (MatMul W2) -> sm (Softmax) -> y[N,8]"""
    g = h.make_graph([h.make_node("MatMul", ["x", "W1"], ["a"], name="mm1"), h.make_node("Relu", ["a"], ["r"], name="relu"),
                      h.make_node("MatMul", ["r", "W2"], ["l"], name="mm2"),
                      h.make_node("Softmax", ["l"], ["y"], name="sm", axis=-1)],
                     "mlp", [h.make_tensor_value_info("x", T.FLOAT, ["N", 16])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["N", 8])], [nh.from_array(W1, "W1"), nh.from_array(W2, "W2")])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


MODEL = mlp()


def reference(x):
    logits = (np.maximum(x @ W1, 0) @ W2).astype(np.float64)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def job(seed: int) -> np.ndarray:
    r = np.random.default_rng(seed)
    return r.standard_normal((1 + seed % 4, 16)).astype(np.float32)


def assert_correct(y, seed):
    np.testing.assert_allclose(y, reference(job(seed)), rtol=1e-5, atol=1e-6, err_msg=f"job {seed}")


@pytest.fixture(scope="module")
def core():
    return hetero.Core()


# ---- hints and stream counts ------------------------------------------------------------------------

def test_latency_hint_is_one_stream(core):
    cm = core.compile_model(MODEL, "CPU", {"PERFORMANCE_HINT": "LATENCY"})
    assert cm.get_property("NUM_STREAMS") == 1
    assert cm.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS") == 1
    assert cm.get_property("PERFORMANCE_HINT") == "LATENCY"
    assert core.compile_model(MODEL, "CPU").get_property("NUM_STREAMS") == 1  # LATENCY is the default


def test_throughput_hint_uses_a_stream_per_core(core):
    cm = core.compile_model(MODEL, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT"})
    assert cm.get_property("NUM_STREAMS") == CORES
    assert cm.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS") == CORES


@pytest.mark.parametrize("cap", [1, 2])
def test_throughput_streams_capped_by_num_requests(core, cap):
    cm = core.compile_model(MODEL, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT", "PERFORMANCE_HINT_NUM_REQUESTS": cap})
    assert cm.get_property("NUM_STREAMS") == min(cap, CORES)
    assert cm.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS") == min(cap, CORES)


@pytest.mark.parametrize("hint", ["LATENCY", "THROUGHPUT"])
@pytest.mark.parametrize("streams", [1, 3, 5])
def test_num_streams_overrides_the_hint(core, hint, streams):
    cm = core.compile_model(MODEL, "CPU", {"PERFORMANCE_HINT": hint, "NUM_STREAMS": streams})
    assert cm.get_property("NUM_STREAMS") == streams
    assert cm.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS") == streams
    assert len(hetero.AsyncInferQueue(cm)) == streams  # jobs=0 takes the optimal number


def test_num_streams_auto_follows_the_hint(core):
    cm = core.compile_model(MODEL, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": "AUTO"})
    assert cm.get_property("NUM_STREAMS") == CORES


@pytest.mark.parametrize("bad", [0, -2, "many", 1.5j])
def test_bad_num_streams(core, bad):
    with pytest.raises(PropertyError, match=r"NUM_STREAMS: expected an integer >= 1 or 'AUTO'"):
        core.compile_model(MODEL, "CPU", {"NUM_STREAMS": bad})


# ---- parallelism, shown without timing ------------------------------------------------------------------

def run_queue_recording_threads(cm, jobs: int, barrier: threading.Barrier | None = None) -> dict[int, str]:
    """Run ``jobs`` requests through an AsyncInferQueue; {job: name of the thread its callback ran on}."""
    queue = hetero.AsyncInferQueue(cm, jobs=max(jobs, 1))
    where, lock = {}, threading.Lock()

    def done(request, seed):
        assert_correct(request.get_tensor("y"), seed)
        with lock:
            where[seed] = threading.current_thread().name
        if barrier is not None:
            barrier.wait()  # passes only once barrier.parties callbacks run at the same time

    queue.set_callback(done)
    for seed in range(jobs):
        queue.start_async({"x": job(seed)}, userdata=seed)
    queue.wait_all()
    return where


def test_throughput_streams_run_requests_at_the_same_time(core):
    n = 4
    cm = core.compile_model(MODEL, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": n})
    # every one of the n callbacks blocks until all n are inside: only n concurrent streams get through
    where = run_queue_recording_threads(cm, n, threading.Barrier(n, timeout=30))
    assert sorted(where) == list(range(n))
    assert sorted(set(where.values())) == [f"CPU-stream{i}" for i in range(n)]


def test_latency_serves_one_request_at_a_time(core):
    cm = core.compile_model(MODEL, "CPU", {"PERFORMANCE_HINT": "LATENCY"})
    where = run_queue_recording_threads(cm, 8)
    assert sorted(where) == list(range(8))
    assert set(where.values()) == {"CPU-stream0"}  # one stream: one worker, requests in turn


# ---- many requests from many threads --------------------------------------------------------------------

@pytest.fixture
def fast_thread_switching():
    """Switch threads every 1 us instead of 5 ms, so races in the request plumbing get a chance to show."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


@pytest.mark.parametrize("config", [{"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": 3},
                                    {"PERFORMANCE_HINT": "LATENCY"}], ids=["throughput", "latency"])
def test_many_threads_many_requests_all_correct(core, fast_thread_switching, config):
    cm = core.compile_model(MODEL, "CPU", config)
    threads, per_thread = 8, 30
    errors, checked, lock = [], [], threading.Lock()
    queue = hetero.AsyncInferQueue(cm, jobs=4)
    queued = {}

    def on_done(request, seed):
        queued[seed] = request.get_tensor("y").copy()

    queue.set_callback(on_done)

    def worker(t: int):
        own = cm.create_infer_request()
        try:
            for i in range(per_thread):
                seed = t * 1000 + i
                x = job(seed)
                way = i % 4
                if way == 0:  # the compiled model's own request, shared by every thread
                    y = cm({"x": x})["y"]
                elif way == 1:  # this thread's request, sync
                    y = own.infer({"x": x})["y"].copy()
                elif way == 2:  # this thread's request, async
                    own.start_async({"x": x})
                    own.wait()
                    y = own.get_tensor("y").copy()
                else:  # the shared queue, fed from every thread at once
                    queue.start_async({"x": x}, userdata=seed)
                    continue
                assert_correct(y, seed)
                with lock:
                    checked.append(seed)
        except BaseException as e:  # collected and re-raised by the main thread
            with lock:
                errors.append(e)

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for p in pool:
        p.start()
    for p in pool:
        p.join(timeout=120)
    assert not any(p.is_alive() for p in pool), "a worker hung"
    queue.wait_all()
    assert not errors, errors[:3]
    in_queue = [t * 1000 + i for t in range(threads) for i in range(per_thread) if i % 4 == 3]
    assert sorted(queued) == sorted(in_queue)  # no queued request lost or run twice
    for seed in in_queue:
        assert_correct(queued[seed], seed)
    assert len(checked) + len(queued) == threads * per_thread


def test_compiled_model_call_from_many_threads(core, fast_thread_switching):
    # compiled(...) shares one default request: concurrent callers must each get a correct answer,
    # never "request is busy" and never another caller's result
    cm = core.compile_model(MODEL, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT"})
    errors, lock = [], threading.Lock()

    def worker(t: int):
        try:
            for i in range(60):
                seed = t * 1000 + i
                assert_correct(cm({"x": job(seed)})["y"], seed)
        except BaseException as e:
            with lock:
                errors.append(e)

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for p in pool:
        p.start()
    for p in pool:
        p.join(timeout=120)
    assert not errors, errors[:3]
