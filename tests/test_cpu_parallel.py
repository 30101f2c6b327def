"""The CPU kernels' intra-op pool (hetero/devices/cpu/kernels/parallel.py): split GEMMs equal the plain
product, every task runs once, errors reach the caller, and a busy pool runs tasks inline."""
import os
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
    worker_ran = threading.Event()
    main = threading.current_thread().name

    def task(i):
        with lock:
            seen.append((i, threading.current_thread().name))
        if threading.current_thread().name == main:
            worker_ran.wait(10)  # hold the caller inside a task until the worker has claimed one
        else:
            worker_ran.set()

    P.run([lambda i=i: task(i) for i in range(5)])
    assert sorted(i for i, _ in seen) == [0, 1, 2, 3, 4]
    assert {name for _, name in seen} == {main, "hetero-cpu-kernel-0"}


def test_run_does_not_wait_for_a_worker_that_has_not_started(two_threads):
    # the worker is stuck in an earlier job (as a descheduled vCPU would leave it): the caller
    # claims and runs every task itself and returns without waiting for it
    pool = P._get_pool()
    release = threading.Event()
    pool.mailboxes[0].put(P._Job([lambda: release.wait(10)]))
    names = []
    try:
        P.run([lambda: names.append(threading.current_thread().name)] * 3)
        assert names == [threading.current_thread().name] * 3
    finally:
        release.set()
    later = []
    P.run([lambda: later.append(1)] * 2)  # the worker is free again and the pool still works
    assert later == [1, 1]


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


# ---- kernels on their multi-threaded paths (thresholds forced to zero, so small arrays take them) ----

from onnx import TensorProto, helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

from hetero.devices.cpu.kernels import conv as CV  # noqa: E402
from hetero.devices.cpu.kernels import direct as DI  # noqa: E402
from hetero.devices.cpu.kernels import elementwise as EW  # noqa: E402
from hetero.devices.cpu.kernels import jit as JIT  # noqa: E402
from hetero.devices.cpu.kernels import nn as NN  # noqa: E402
from hetero.devices.cpu.kernels import pool as PL  # noqa: E402
from hetero.devices.cpu.kernels import shape as SH  # noqa: E402
from hetero.devices.cpu.kernels import vaffine as VA  # noqa: E402
from hetero.devices.cpu.kernels import vpool as VP  # noqa: E402
from op_cases import _lrn_ref  # noqa: E402


def _ref(op, inputs, **attrs):
    names = [f"i{k}" for k in range(len(inputs))]
    node = helper.make_node(op, names, ["o"], **attrs)
    ins = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
           for n, v in zip(names, inputs)]
    g = helper.make_graph([node], "g", ins, [helper.make_tensor_value_info("o", TensorProto.UNDEFINED, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 22)])
    return ReferenceEvaluator(m).run(None, dict(zip(names, inputs)))[0]


@pytest.fixture(params=["compiled", "numpy"])
def split_everything(request, pool_task_counts, monkeypatch):
    """Every kernel takes its multi-threaded path, once with the compiled kernels (depthwise
    conv, pools, conv epilogues: kernels/jit.py) and once with numpy only (HETERO_JIT=0);
    yields the list of task counts P.run was given (so a test can assert the split really happened)."""
    if request.param == "numpy":
        monkeypatch.setenv("HETERO_JIT", "0")
    elif JIT.kernels() is None:
        pytest.skip(f"compiled kernels unavailable: {JIT.unavailable_reason()}")
    monkeypatch.setattr(JIT, "MIN_PARALLEL_TAPS", 0)
    monkeypatch.setattr(JIT, "MIN_PARALLEL_POOL", 0)
    monkeypatch.setattr(VP, "MIN_PARALLEL_TAPS", 0)
    monkeypatch.setattr(VA, "MIN_PARALLEL_ELEMS", 0)
    monkeypatch.setattr(CV, "MIN_PARALLEL_MACS", 0)
    monkeypatch.setattr(P, "MIN_SPLIT_ELEMS", 0)
    monkeypatch.setattr(P, "MIN_CHANNEL_SPLIT_ELEMS", 0)
    return pool_task_counts


def _rand(*shape, seed=0):
    return np.random.default_rng(seed + len(shape)).standard_normal(shape).astype(np.float32)


# (x shape, w shape, attrs): one case per conv path of conv.py, each on two images
CONV_PATHS = {
    "1x1 by columns": ((2, 8, 9, 10), (6, 8, 1, 1), {}),
    "1x1 by channels": ((2, 8, 3, 2), (40, 8, 1, 1), {}),
    "1x1 grouped": ((2, 8, 5, 5), (12, 2, 1, 1), {"group": 4}),
    "depthwise wide": ((2, 6, 7, 8), (12, 1, 3, 3), {"group": 6, "pads": [1, 1, 1, 1]}),
    "depthwise strided": ((2, 6, 9, 9), (6, 1, 3, 3), {"group": 6, "pads": [1, 0, 1, 0], "strides": [2, 2]}),
    "im2col small plane": ((2, 5, 4, 4), (32, 5, 3, 3), {"pads": [1, 1, 1, 1]}),
    "im2col row bands": ((2, 3, 20, 18), (4, 3, 3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 1]}),
    "shifted GEMM": ((2, 16, 8, 7), (4, 16, 3, 3), {"pads": [1, 1, 1, 1]}),
    "winograd bands": ((2, 32, 20, 14), (32, 32, 3, 3), {"pads": [1, 1, 1, 1]}),
    "direct kernel": ((2, 5, 9, 11), (13, 5, 3, 3), {"pads": [1, 1, 1, 1]}),
}


@pytest.mark.parametrize("path", sorted(CONV_PATHS))
def test_conv_paths_split_over_threads_match_reference(split_everything, path, monkeypatch):
    if path == "direct kernel":
        if DI.engine() is None:
            pytest.skip("direct kernel unavailable (no llvmlite, or HETERO_JIT=0)")
        monkeypatch.setattr(DI, "MIN_PARALLEL_MACS", 0)
    else:  # the BLAS / numba paths named by the case
        monkeypatch.setenv("HETERO_DIRECT", "0")
    xs, ws, attrs = CONV_PATHS[path]
    x, w, b = _rand(*xs), _rand(*ws, seed=1) / 4, _rand(ws[0], seed=2)
    want = _ref("Conv", [x, w, b], kernel_shape=list(ws[2:]), **attrs)
    r = _rand(*want.shape, seed=3)
    out = np.empty(want.shape, np.float32)
    got = CV.fused_conv(x, w, b, r, kernel_shape=list(ws[2:]), activation="Relu", _out=out, **attrs)
    assert got is out
    assert split_everything and max(split_everything) >= 2, "the conv never used the second thread"
    np.testing.assert_allclose(got, np.maximum(want + r, 0), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("op,attrs", [
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2]}),
    ("MaxPool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("AveragePool", {"kernel_shape": [2, 2], "count_include_pad": 1, "pads": [0, 0, 1, 1]}),
])
def test_pools_split_by_channels_match_reference(split_everything, op, attrs):
    x = _rand(2, 5, 11, 9)
    fn = PL.max_pool if op == "MaxPool" else PL.average_pool
    got = fn(x, **attrs)
    # numpy path: one task per channel block; compiled (vpool): the 10 planes in four ranges per
    # thread
    assert split_everything == ([2] if os.environ.get("HETERO_JIT") == "0" else [8]), \
        "the pool never used the second thread"
    np.testing.assert_allclose(got, _ref(op, [x], **attrs), rtol=1e-5, atol=1e-6)


def test_batchnorm_relu_concat_split_match_reference(split_everything):
    x = _rand(2, 6, 5, 4)
    s, bias, mean = _rand(6, seed=1), _rand(6, seed=2), _rand(6, seed=3)
    var = np.abs(_rand(6, seed=4)) + 0.1
    out = np.empty_like(x)
    y = NN.batch_normalization(x, s, bias, mean, var, epsilon=1e-3, _out=out)
    assert y is out
    np.testing.assert_allclose(y, _ref("BatchNormalization", [x, s, bias, mean, var], epsilon=1e-3),
                               rtol=1e-5, atol=1e-5)
    r = np.empty_like(x)
    assert EW.relu(y, _out=r) is r
    np.testing.assert_array_equal(r, np.maximum(y, 0))
    parts = [_rand(2, 1, 5, 4, seed=5), _rand(2, 7, 5, 4, seed=6), _rand(2, 2, 5, 4, seed=7)]
    for axis in (1, 2):
        ps = parts if axis == 1 else [p.transpose(0, 2, 1, 3).copy() for p in parts]
        want = np.concatenate(ps, axis=axis)
        out = np.empty(want.shape, np.float32)
        assert SH.concat(*ps, axis=axis, _out=out) is out
        np.testing.assert_array_equal(out, want)
    # BN, Relu and both concats each cut in two; compiled, the BN is vaffine's: 12 planes in four
    # ranges per thread
    if os.environ.get("HETERO_JIT") == "0":
        assert split_everything.count(2) >= 4
    else:
        assert split_everything[0] == 8 and split_everything.count(2) >= 3


@pytest.mark.parametrize("shape,size,beta", [((1, 7, 9, 5), 5, 0.75), ((2, 6, 4, 3), 3, 0.5),
                                             ((1, 5, 8, 2, 3), 4, 1.0), ((1, 4, 6), 2, 0.6)])
def test_lrn_in_row_blocks_over_threads_matches_reference(split_everything, monkeypatch, shape, size, beta):
    monkeypatch.setattr(NN, "_LRN_BLOCK_BYTES", 1)  # one row per block: many blocks, both threads
    x = _rand(*shape)
    got = NN.lrn(x, size=size, alpha=0.02, beta=beta, bias=1.5)
    assert len(split_everything) == 1 and split_everything[0] >= 2  # one run, a task per row block
    # the spec's formula (onnx.reference's LRN is only right when N == C, see op_cases._lrn_ref)
    np.testing.assert_allclose(got, _lrn_ref(x, size, 0.02, beta, 1.5)[0], rtol=1e-5, atol=1e-6)



# ---- the native spin pool (kernels/native.py): compiled unit kernels claimed without the GIL ----

def _tid_kernel():
    """A compiled unit kernel for the pool: ``row[0] += 1``; ``row[1] = gettid()``; a unit on a
    thread other than ``hold[0]`` (the caller's tid) sets ``seen[0]``, and a unit on the caller
    spins until it is set, so the caller cannot finish the job alone. The spin gives up after
    3 * 10^10 TSC ticks (10 s and more: a count of pauses ended in well under a second on a
    loaded 2-core VM, before the worker got a core)."""
    from hetero.devices.cpu.kernels import native

    m = native.machine()
    if m is None or native.spin_pool() is None:
        pytest.skip("no native spin pool here (needs x86-64 and llvmlite)")
    import llvmlite.ir as ir

    i64, f32 = ir.IntType(64), ir.FloatType()
    lp, fp = i64.as_pointer(), f32.as_pointer()
    mod = ir.Module(name="t")
    fn = ir.Function(mod, ir.FunctionType(ir.VoidType(), [lp, fp, fp, fp, fp, fp, f32, f32]), name="unit")
    sysc = ir.Function(mod, ir.FunctionType(i64, [i64], var_arg=True), name="syscall")
    pause = ir.Function(mod, ir.FunctionType(ir.VoidType(), []), name="llvm.x86.sse2.pause")
    rdtsc = ir.Function(mod, ir.FunctionType(i64, []), name="llvm.readcyclecounter")
    row, hold_p, seen_p = fn.args[:3]
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    c = lambda v: ir.Constant(i64, v)  # noqa: E731
    b.store(b.add(b.load(row), c(1)), row)
    tid = b.call(sysc, [c(186)])  # SYS_gettid on x86-64
    b.store(tid, b.gep(row, [c(1)]))
    hold, seen = b.bitcast(hold_p, lp), b.bitcast(seen_p, lp)
    t0 = b.call(rdtsc, [])
    with b.if_else(b.icmp_signed("==", tid, b.load(hold))) as (mine, other):
        with mine:
            head, body, end = fn.append_basic_block(), fn.append_basic_block(), fn.append_basic_block()
            b.branch(head)
            b.position_at_end(head)
            done = b.or_(b.icmp_signed("!=", b.load_atomic(seen, "acquire", 8), c(0)),
                         b.icmp_signed(">", b.sub(b.call(rdtsc, []), t0), c(30_000_000_000)))
            b.cbranch(done, end, body)
            b.position_at_end(body)
            b.call(pause, [])
            b.branch(head)
            b.position_at_end(end)
        with other:
            b.store_atomic(c(1), seen, "release", 8)
    b.ret_void()
    at, = m.compile(str(mod), "unit")
    return at


def _native_job(at, n, hold, seen):
    rows = np.zeros((n, 2), np.int64)
    ran = P.run_native(at, rows.ctypes.data, rows.strides[0], n, (hold.ctypes.data, seen.ctypes.data, 0, 0, 0))
    return ran, rows


def test_run_native_every_unit_once_on_two_threads(two_threads):
    """50 jobs of 64 units, Python jobs in between (they ring the spinning worker's doorbell): every
    unit of every job ran exactly once, and the worker ran some of them."""
    import ctypes

    at = _tid_kernel()
    gettid = ctypes.CDLL(None).syscall
    hold = np.array([gettid(186)], np.int64)
    for k in range(50):
        seen = np.zeros(1, np.int64)
        ran, rows = _native_job(at, 64, hold, seen)
        assert ran
        assert rows[:, 0].tolist() == [1] * 64
        # the worker ran some (it may run all: a spinning worker can claim every unit before the
        # caller is back from publishing), and no third thread ran any
        tids = set(rows[:, 1].tolist())
        assert tids - {hold[0]} and len(tids) <= 2 and seen[0] == 1
        hits = []
        P.run([lambda: hits.append(1)] * 3)
        assert hits == [1, 1, 1]


def test_run_native_wakes_a_parked_worker(two_threads, monkeypatch):
    """With a short spin (~50 us) the worker has parked again before each job; the job wakes it."""
    import ctypes
    import time

    from hetero.devices.cpu.kernels import native

    at = _tid_kernel()
    pool = P._get_pool()
    monkeypatch.setattr(pool, "spin", 100_000)
    hold = np.array([ctypes.CDLL(None).syscall(186)], np.int64)
    for _ in range(5):
        time.sleep(0.02)
        assert pool.native.block[native.PARK] == 1  # parked
        seen = np.zeros(1, np.int64)
        ran, rows = _native_job(at, 4, hold, seen)
        assert ran and rows[:, 0].tolist() == [1] * 4 and seen[0] == 1


def test_run_native_declines_when_it_cannot_help(two_threads):
    """One thread, one unit, or the pool busy with another stream: False, nothing run (the caller
    runs its units itself)."""
    at = _tid_kernel()
    hold, seen = np.zeros(1, np.int64), np.ones(1, np.int64)
    with P.limit(1):
        assert _native_job(at, 8, hold, seen)[0] is False
    assert _native_job(at, 1, hold, seen)[0] is False
    with P._get_pool().busy:
        ran, rows = _native_job(at, 8, hold, seen)
        assert ran is False and not rows.any()
