"""The CPU kernels' intra-op pool (hetero/devices/cpu/kernels/parallel.py): split GEMMs equal the plain
product, every task runs once, errors reach the caller, and a busy pool runs tasks inline."""
import threading

import numpy as np
import pytest

from hetero.devices.cpu.kernels import parallel as P


@pytest.fixture
def two_threads(monkeypatch):
    monkeypatch.setattr(P, "THREADS", 2)


@pytest.mark.parametrize("m,k,n", [(256, 64, 3136), (4096, 9216, 1), (1, 9216, 4096), (3, 4, 5)])
def test_matmul_split_matches_numpy(two_threads, m, k, n):
    r = np.random.default_rng(0)
    a = r.standard_normal((m, k), np.float32)
    b = r.standard_normal((k, n), np.float32)
    out = np.full((m, n), np.nan, np.float32)
    assert P.matmul(a, b, out) is out
    np.testing.assert_allclose(out, a @ b, rtol=1e-4, atol=1e-3)


def test_matmul_transposed_operand(two_threads):
    r = np.random.default_rng(1)
    a = r.standard_normal((1, 2048), np.float32)
    bt = r.standard_normal((4096, 2048), np.float32)  # Gemm transB=1: b is a transposed view
    out = np.empty((1, 4096), np.float32)
    np.testing.assert_allclose(P.matmul(a, bt.T, out), a @ bt.T, rtol=1e-4, atol=1e-3)


def test_run_every_task_once_on_two_threads(two_threads):
    seen = []
    lock = threading.Lock()

    def task(i):
        with lock:
            seen.append((i, threading.current_thread().name))

    P.run([lambda i=i: task(i) for i in range(5)])
    assert sorted(i for i, _ in seen) == [0, 1, 2, 3, 4]
    assert {name for _, name in seen} == {threading.current_thread().name, "hetero-cpu-kernel-0"}


def test_run_reraises_a_worker_error_and_stays_usable(two_threads):
    def boom():
        raise ValueError("worker failed")

    with pytest.raises(ValueError, match="worker failed"):
        P.run([lambda: None, boom])
    hits = []
    P.run([lambda: hits.append(1), lambda: hits.append(2)])
    assert sorted(hits) == [1, 2]


def test_busy_pool_runs_inline(two_threads):
    pool = P._get_pool()
    names = []
    with pool.busy:  # another stream holds the pool
        P.run([lambda: names.append(threading.current_thread().name)] * 2)
    assert names == [threading.current_thread().name] * 2


def test_split_ranges_cover_exactly():
    assert P.split(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert P.split(1, 4) == [(0, 1)]


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_forked_child_gets_a_fresh_pool(two_threads):
    import multiprocessing as mp

    P.run([lambda: None, lambda: None])  # the parent's pool exists
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:  # would hang on the parent's (absent) workers without the at-fork reset
        got = pool.apply_async(_split_matmul_in_child).get(timeout=60)
    assert got


def _split_matmul_in_child():
    P.THREADS = 2
    a = np.ones((64, 512), np.float32)
    b = np.ones((512, 1024), np.float32)
    out = np.empty((64, 1024), np.float32)
    P.matmul(a, b, out)
    return bool((out == 512).all())
