"""Intra-op parallelism for the CPU kernels: BLAS runs single-threaded, kernels split work themselves.

Why not let OpenBLAS thread its GEMMs: its worker threads busy-wait between calls and each GEMM
waits for its slowest thread. On a loaded machine (more runnable threads than cores) a descheduled
worker stalls every GEMM for a scheduler time slice; measured on this 2-core machine at load ~8,
SqueezeNet took 872 ms with 2 BLAS threads and 123 ms with 1, VGG-19 5950 ms vs 1050 ms. So on import
this module sets OpenBLAS to one thread (``set_blas_threads``; best effort through ctypes, the way
threadpoolctl does it) and kernels split big work over a small persistent pool of ``THREADS``
Python threads that *block* (no spinning) while idle: numpy releases the GIL inside BLAS calls and
inside ufunc loops / copies on large arrays, so the halves really run at once.

``run(tasks)`` runs zero-argument callables, the first on the calling thread and the others on the
pool, and returns when all are done (re-raising the first exception). The pool is shared by every
caller; when another inference stream is using it (THROUGHPUT: streams already fill the cores) the
tasks simply run one after another on the caller, so streams never oversubscribe the cores.

``HETERO_CPU_THREADS=n`` overrides ``THREADS`` (1 disables the pool).

Traced example: a 1x1 Conv W (256, 64) @ X (64, 3136) is 51 MFLOP (over ``MIN_SPLIT_FLOPS``):
``matmul`` splits the 3136 columns into [0, 1568) and [1568, 3136); the caller computes the first
half while the pool thread computes the second, both writing straight into the output.
"""
from __future__ import annotations

import ctypes
import glob
import os
import threading

import numpy as np

#: threads one kernel may use (the caller plus THREADS - 1 pool threads)
THREADS = max(1, int(os.environ.get("HETERO_CPU_THREADS", "0") or 0) or (os.cpu_count() or 1))
#: below this many multiply-adds a GEMM is not split (the hand-off costs ~20-50 us)
MIN_SPLIT_FLOPS = 16_000_000
#: below this many elements an elementwise pass is not split
MIN_SPLIT_ELEMS = 1 << 16
#: below this many input elements ``channels`` runs an op on one thread
MIN_CHANNEL_SPLIT_ELEMS = 1 << 19


# ---- BLAS threads -------------------------------------------------------------------------------------

def _blas_setters():
    """ctypes functions that set OpenBLAS's thread count, for the OpenBLAS numpy was built with."""
    libs = []
    here = os.path.dirname(np.__file__)
    for pat in ("../numpy.libs/*openblas*", ".libs/*openblas*", "../scipy_openblas*/lib/*.so*"):
        libs += glob.glob(os.path.join(here, pat))
    try:  # a system OpenBLAS numpy links against dynamically
        with open("/proc/self/maps") as f:
            libs += sorted({ln.split()[-1] for ln in f if "openblas" in ln and ".so" in ln})
    except OSError:
        pass
    found = []
    for lib in dict.fromkeys(libs):
        try:
            handle = ctypes.CDLL(lib)
        except OSError:
            continue
        for sym in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                    "openblas_set_num_threads64_", "openblas_set_num_threads"):
            fn = getattr(handle, sym, None)
            if fn is not None:
                found.append(fn)
                break
    return found


_SETTERS = _blas_setters()


def set_blas_threads(n: int) -> bool:
    """Set OpenBLAS's thread count; False when no OpenBLAS was found (nothing changed)."""
    for fn in _SETTERS:
        fn(int(n))
    return bool(_SETTERS)


BLAS_SINGLE = set_blas_threads(1) if THREADS >= 1 else False


# ---- per-inference limit ------------------------------------------------------------------------------

_local = threading.local()


def threads() -> int:
    """Threads a kernel may use on the calling thread: THREADS, or fewer inside ``limit(n)``
    (the CPU plugin sets it from INFERENCE_NUM_THREADS for each inference), and 1 while the pool
    is busy (another stream holds it, or this is one of its tasks): ``run`` would then run the
    tasks one after another anyway, so kernels should not cut their work for threads."""
    if _pool is not None and _pool.busy.locked():
        return 1
    return min(THREADS, getattr(_local, "limit", THREADS))


class limit:
    """``with limit(n):`` kernels called on this thread use at most ``n`` threads (n >= 1)."""

    def __init__(self, n: int):
        self.n = max(1, int(n))

    def __enter__(self):
        self.prev = getattr(_local, "limit", THREADS)
        _local.limit = self.n

    def __exit__(self, *exc):
        _local.limit = self.prev


# ---- the pool --------------------------------------------------------------------------------------------

class _Pool:
    """THREADS - 1 daemon workers, each blocking on its own start lock; one user at a time (``busy``).

    Hand-off is two raw ``_thread`` locks per worker (``go`` released by the caller, ``done`` by the
    worker): a wake-up costs ~16 us here against ~50 us through ``queue.SimpleQueue`` plus
    ``threading.Semaphore`` (whose acquire/release run Python code under the GIL).
    """

    def __init__(self, n: int):
        import _thread

        self.busy = threading.Lock()
        self.workers = []
        for i in range(n):
            go, done = _thread.allocate_lock(), _thread.allocate_lock()
            go.acquire()
            done.acquire()
            slot = [go, done, None, None]  # go, done, task, error
            threading.Thread(target=self._work, args=(slot,), name=f"hetero-cpu-kernel-{i}", daemon=True).start()
            self.workers.append(slot)

    @staticmethod
    def _work(slot):
        go, done = slot[0], slot[1]
        while True:
            go.acquire()
            try:
                slot[2]()
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                slot[3] = e
            slot[2] = None
            done.release()


_pool: _Pool | None = None
_pool_lock = threading.Lock()


def _get_pool() -> _Pool | None:
    global _pool
    if THREADS <= 1:
        return None
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = _Pool(THREADS - 1)
    return _pool


def _reset_after_fork() -> None:
    """A forked child has none of the parent's pool threads: start a fresh pool on first use."""
    global _pool, _pool_lock
    _pool = None
    _pool_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def run(tasks) -> None:
    """Run the callables in ``tasks`` (at most THREADS of them at once) and wait for all."""
    tasks = list(tasks)
    width = threads()
    if len(tasks) <= 1 or width <= 1:
        for t in tasks:
            t()
        return
    pool = _get_pool()
    if pool is None or not pool.busy.acquire(blocking=False):
        for t in tasks:
            t()
        return
    try:
        for i in range(0, len(tasks), width):
            batch = tasks[i:i + width]
            used = pool.workers[:len(batch) - 1]
            for slot, t in zip(used, batch[1:]):
                slot[2], slot[3] = t, None
                slot[0].release()
            err = None
            try:
                batch[0]()
            except BaseException as e:  # noqa: BLE001 - still wait for the workers
                err = e
            for slot in used:
                slot[1].acquire()
                if err is None and slot[3] is not None:
                    err = slot[3]
                slot[3] = None
            if err is not None:
                raise err
    finally:
        pool.busy.release()


def split(n: int, parts: int | None = None) -> list[tuple[int, int]]:
    """[lo, hi) ranges cutting range(n) into ``parts`` (default THREADS) near-equal pieces."""
    parts = max(1, min(n, parts or threads()))
    return [(n * i // parts, n * (i + 1) // parts) for i in range(parts)]


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``np.matmul(a, b, out=out)`` for 2-D ``a`` (M, K), ``b`` (K, N): split over the longer of M and
    N when the product is big enough to pay for the hand-off."""
    M, K = a.shape
    N = b.shape[1]
    if threads() <= 1 or M * K * N < MIN_SPLIT_FLOPS:
        return np.matmul(a, b, out=out)
    if N >= M:
        parts = split(N)
        run([(lambda lo=lo, hi=hi: np.matmul(a, b[:, lo:hi], out=out[:, lo:hi])) for lo, hi in parts])
    else:
        parts = split(M)
        run([(lambda lo=lo, hi=hi: np.matmul(a[lo:hi], b, out=out[lo:hi])) for lo, hi in parts])
    return out


def batched(n: int, fn, work: int) -> None:
    """Call ``fn(lo, hi)`` over range(n) split across the pool when ``work`` (a rough count of
    elements touched) is at least MIN_SPLIT_ELEMS, else once as ``fn(0, n)``."""
    if threads() <= 1 or n < 2 or work < MIN_SPLIT_ELEMS:
        fn(0, n)
        return
    run([(lambda lo=lo, hi=hi: fn(lo, hi)) for lo, hi in split(n)])


def channels(x: np.ndarray, fn):
    """Run a per-channel-independent op over x (N, C, ...) in channel blocks across the threads.

    ``fn(xs) -> ys`` maps a channel block ``x[:, lo:hi]`` to its result block (same N, that block
    of C); the blocks' results are concatenated along axis 1.
    Below MIN_CHANNEL_SPLIT_ELEMS elements (or one thread, or fewer than 2 channels) it is simply
    ``fn(x)``: ops made of many small numpy calls (a pool is ~10 per block) hold the GIL between
    calls, and below that size two threads mostly wait for each other (measured, AveragePool 3x3 s2
    on 24x56x56: 0.195 ms on one thread, 0.415 ms split; MaxPool on 64x111x111: 1.17 -> 0.81 ms).

    Traced example, MaxPool on (1, 64, 111, 111) with 2 threads: channels [0, 32) pooled on the
    caller, [32, 64) on the pool thread, the two (1, 32, 55, 55) halves joined into (1, 64, 55, 55).
    """
    C = x.shape[1] if x.ndim >= 2 else 0
    if threads() <= 1 or C < 2 or x.size < MIN_CHANNEL_SPLIT_ELEMS:
        return fn(x)
    parts = split(C)
    res: list = [None] * len(parts)

    def task(i, lo, hi):
        res[i] = fn(x[:, lo:hi])

    run([(lambda i=i, lo=lo, hi=hi: task(i, lo, hi)) for i, (lo, hi) in enumerate(parts)])
    return np.concatenate(res, axis=1)
