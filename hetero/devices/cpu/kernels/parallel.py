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
#: below this many elements an elementwise pass is not split: a Python task handed to a worker
#: costs a GIL hand-off (in a model, ShuffleNet's Relu over 136 x 28x28 took 0.24 ms split in two
#: against 0.10 ms on one thread; Inception-v2's 0.3 ms Concats 0.13 ms)
MIN_SPLIT_ELEMS = 1 << 20
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

class _Local(threading.local):
    """Per-thread state; ``limit`` None: no ``limit`` in force. (A class default, not getattr with
    a default: a missing attribute raises inside getattr, about 1 us on every kernel call.)"""

    limit = None


_local = _Local()


def threads() -> int:
    """Threads a kernel may use on the calling thread: THREADS, or fewer inside ``limit(n)``
    (the CPU plugin sets it from INFERENCE_NUM_THREADS for each inference), and 1 while the pool
    is busy (another stream holds it, or this is one of its tasks): ``run`` would then run the
    tasks one after another anyway, so kernels should not cut their work for threads."""
    if _pool is not None and _pool.busy.locked():
        return 1
    n = _local.limit
    return THREADS if n is None or n > THREADS else n


class limit:
    """``with limit(n):`` kernels called on this thread use at most ``n`` threads (n >= 1)."""

    def __init__(self, n: int):
        self.n = max(1, int(n))

    def __enter__(self):
        self.prev = _local.limit
        _local.limit = self.n

    def __exit__(self, *exc):
        _local.limit = self.prev


# ---- the pool --------------------------------------------------------------------------------------------

class _Job:
    """One ``run`` call's tasks, claimed one at a time by whichever thread asks next (the caller
    and the workers it woke); ``done`` is released by the thread that finishes the last task.

    Why claim instead of assign: a woken worker may start late (tens of microseconds on a quiet
    machine, but milliseconds when the VM's host is contended and a halted vCPU waits to be
    rescheduled). With assigned tasks the caller then sat idle waiting for it (measured: ResNet-50
    at 1.2-1.3 s per inference on 2 threads vs 0.14-0.17 s on one, at 10-15% steal time). With
    claiming, the caller runs whatever the worker has not started, so a late worker costs at most
    the parallelism, never a wait; a worker that wakes after the job is done finds nothing left."""

    __slots__ = ("tasks", "next", "left", "lock", "done", "error")

    def __init__(self, tasks):
        import _thread

        self.tasks = tasks
        self.next = 0
        self.left = len(tasks)
        self.lock = _thread.allocate_lock()
        self.done = _thread.allocate_lock()
        self.done.acquire()
        self.error: BaseException | None = None

    def work(self) -> None:
        """Claim and run tasks until none is left unclaimed."""
        tasks, lock = self.tasks, self.lock
        while True:
            with lock:
                i = self.next
                if i >= len(tasks):
                    return
                self.next = i + 1
            try:
                tasks[i]()
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                with lock:
                    if self.error is None:
                        self.error = e
            with lock:
                self.left -= 1
                last = self.left == 0
            if last:
                self.done.release()


class _Pool:
    """THREADS - 1 daemon workers, each blocking on its own mailbox (a C-level SimpleQueue) while
    parked; one user at a time (``busy``). A ``run`` posts its _Job to as many workers as can help
    and works on it too.

    With a native spin pool (``native.SpinPool``, x86-64 with llvmlite) a worker that finished a job
    does not park at once: it spins in compiled code, GIL released, for ``native.SPIN_TICKS``,
    claiming the units of any ``run_native`` job itself; a Python job rings its doorbell to call it
    back. Only a worker that found nothing for that long parks on its queue again."""

    def __init__(self, n: int):
        import queue

        from . import native

        self.busy = threading.Lock()
        self.native = native.spin_pool() if n <= native.MAX_WORKERS else None
        self.spin = native.SPIN_TICKS
        self.mailboxes = []
        for i in range(n):
            q: queue.SimpleQueue = queue.SimpleQueue()
            self.mailboxes.append(q)
            threading.Thread(target=self._work, args=(i,), name=f"hetero-cpu-kernel-{i}", daemon=True).start()

    def _work(self, k: int) -> None:
        import queue

        q, sp = self.mailboxes[k], self.native
        while True:
            job = q.get()  # parked (a None: a native job's publish found this worker parked)
            while True:
                if job is not None:
                    job.work()
                if sp is None or sp.worker(sp.at, k, self.spin) == 0:
                    break  # nothing for a while: parked (the flag in the state block says so)
                try:  # the doorbell rang: a Python job is (or was) in the queue
                    job = q.get_nowait()
                except queue.Empty:
                    job = None

    def post(self, job, helpers: int) -> None:
        """Hand the _Job to workers 0..helpers-1: a parked one wakes on its queue, a spinning one
        is called back by its doorbell."""
        sp = self.native
        for k in range(helpers):
            self.mailboxes[k].put(job)
            if sp is not None:
                sp.ring(k)


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
    """Run the callables in ``tasks`` on the calling thread and up to THREADS - 1 pool workers,
    each claiming the next unstarted task (see _Job), and return when all are done (re-raising the
    first exception). Inline, one after another, when the pool is busy or threads() is 1."""
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
        job = _Job(tasks)
        pool.post(job, min(width, len(tasks)) - 1)
        job.work()
        job.done.acquire()  # the last task's finisher released it (maybe this thread)
        if job.error is not None:
            raise job.error
    finally:
        pool.busy.release()


def run_native(fn_at: int, base: int, stride: int, n: int, ptrs, a0: float = 0.0, a1: float = 0.0) -> bool:
    """Run a compiled unit kernel (``native`` module doc: ``fn(row, p1..p5, a0, a1)``, unit i's row at
    ``base + i * stride``) over n units on the calling thread and the spinning pool workers, without
    the GIL. False, nothing run, when that cannot help (one thread or unit, the pool busy with
    another stream, or no native pool): the caller then runs the units itself."""
    width = threads()
    if n <= 1 or width <= 1:
        return False
    pool = _get_pool()
    if pool is None or pool.native is None or not pool.busy.acquire(blocking=False):
        return False
    try:
        helpers = min(width, n) - 1
        sp = pool.native
        parked = sp.publish(sp.at, fn_at, base, stride, n, helpers, *ptrs, a0, a1)
        for k in range(helpers):
            if parked >> k & 1:
                pool.mailboxes[k].put(None)
        sp.finish(sp.at)
    finally:
        pool.busy.release()
    return True


class UnitRows:
    """The units of a compiled job: one int64 row of integers per unit (``prm``, kept alive here)
    and each row's address (``at``); ``run`` runs a unit kernel over them."""

    __slots__ = ("prm", "at")

    def __init__(self, rows):
        self.prm = np.array(rows, np.int64)
        self.at = [self.prm.ctypes.data + i * self.prm.strides[0] for i in range(len(self.prm))]

    def run(self, fn, fn_at: int, ptrs, a0: float = 0.0, a1: float = 0.0) -> None:
        """``fn`` (a ctypes unit kernel at ``fn_at``) over every row: on the native pool
        (``run_native``), else one after another on this thread."""
        if not run_native(fn_at, self.at[0], self.prm.strides[0], len(self.at), ptrs, a0, a1):
            for a in self.at:
                fn(a, *ptrs, a0, a1)


def per_thread(tls, name: str, key, build, limit: int = 512):
    """``build()`` cached per calling thread under ``key`` in the dict ``tls.<name>`` (a kernel's
    plans: built once per geometry and thread, never shared between streams); the dict is
    cleared once it holds ``limit`` entries."""
    cache = getattr(tls, name, None)
    if cache is None:
        cache = {}
        setattr(tls, name, cache)
    hit = cache.get(key)
    if hit is None:
        if len(cache) >= limit:
            cache.clear()
        hit = cache[key] = build()
    return hit


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


def each(units, fn) -> None:
    """``fn(unit)`` for every unit, each unit one task of ``run``: claimed by whichever thread is
    free next, so a late or slowed thread just takes fewer of them."""
    run([(lambda u=u: fn(u)) for u in units])


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
