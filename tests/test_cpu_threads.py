"""INFERENCE_NUM_THREADS caps the threads the CPU kernels split work over, per inference."""
import os
import threading

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import hetero
from hetero.devices.cpu.kernels import parallel

#   a[256,512] --Gemm(W[512,512])--> y      (67M multiply-adds: big enough to be split)
W = np.random.default_rng(0).standard_normal((512, 512)).astype(np.float32)
MODEL = helper.make_model(helper.make_graph(
    [helper.make_node("Gemm", ["a", "w"], ["y"], name="gemm")], "gemm",
    [helper.make_tensor_value_info("a", TensorProto.FLOAT, [256, 512])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [256, 512])],
    [numpy_helper.from_array(W, "w")]), opset_imports=[helper.make_opsetid("", 17)])


def test_limit_runs_tasks_on_the_calling_thread():
    seen = []
    tasks = [lambda: seen.append(threading.get_ident()) for _ in range(4)]
    with parallel.limit(1):
        assert parallel.threads() == 1
        parallel.run(tasks)
    assert seen == [threading.get_ident()] * 4
    assert parallel.threads() == parallel.THREADS  # restored


@pytest.mark.parametrize("n, expected", [(0, parallel.THREADS), (1, 1)])
def test_inference_num_threads_reaches_the_kernels(monkeypatch, n, expected):
    widths = []
    real = parallel.matmul

    def spy(a, b, out):
        widths.append(parallel.threads())
        return real(a, b, out)

    monkeypatch.setattr(parallel, "matmul", spy)
    cm = hetero.compile_model(MODEL, "CPU", {"INFERENCE_NUM_THREADS": n})
    a = np.random.default_rng(1).standard_normal((256, 512)).astype(np.float32)
    y = cm({"a": a})[0]
    np.testing.assert_allclose(y, a @ W, rtol=1e-4, atol=1e-3)
    assert widths and set(widths) == {expected}


@pytest.mark.parametrize("config, expected", [
    ({"PERFORMANCE_HINT": "LATENCY"}, 0),                                     # one stream: every core
    ({"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": 2}, max(1, (os.cpu_count() or 1) // 2)),
    ({"NUM_STREAMS": 4}, max(1, (os.cpu_count() or 1) // 4)),
    ({"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": 2, "INFERENCE_NUM_THREADS": 2}, 2),  # explicit wins
])
def test_streams_share_the_cores(config, expected):
    # each of N streams gets cores // N threads per inference (OpenVINO's CPU plugin does the same)
    cm = hetero.compile_model(MODEL, "CPU", config)
    assert cm._runner.num_threads == expected
