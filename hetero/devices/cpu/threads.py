"""How many threads BLAS may use: streams share the cores, they don't each take all of them.

OpenBLAS (numpy's BLAS) starts one thread per core and spin-waits between calls. Two streams each
running a 2-thread GEMM on 2 cores oversubscribe them, and spinning threads that lose their core make
a GEMM many times slower (seen here: SqueezeNet 64 ms with 1 BLAS thread vs 500+ ms with 2 when the
cores were busy). So, as OpenVINO's CPU plugin splits cores between streams, a compile sets the
process's BLAS threads to ``max(1, threads // streams)`` where ``threads`` is INFERENCE_NUM_THREADS
(0: every core). A LATENCY model (one stream) gets every core; THROUGHPUT with as many streams as
cores gets one BLAS thread per stream. The setting is process-wide (BLAS has one pool), so the last
CPU compile decides. A user who sets OPENBLAS_NUM_THREADS / OMP_NUM_THREADS keeps their choice.

threadpoolctl (from the scikit-learn project) finds and drives whichever BLAS numpy loaded.
"""
from __future__ import annotations

import os
import threading

_lock = threading.Lock()
_current: int | None = None
_controller = None


def _user_pinned() -> bool:
    return any(os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                           "HETERO_BLAS_THREADS"))


def blas_threads_for(streams: int, inference_threads: int = 0) -> int:
    """BLAS threads per stream: the thread budget split between streams (>= 1).

    >>> blas_threads_for(1, 0) == (os.cpu_count() or 1)
    True
    >>> blas_threads_for(2, 4), blas_threads_for(8, 4), blas_threads_for(1, 3)
    (2, 1, 3)
    """
    total = int(inference_threads) if inference_threads else (os.cpu_count() or 1)
    return max(1, total // max(1, int(streams)))


def apply(streams: int, inference_threads: int = 0) -> int | None:
    """Set BLAS's thread count for a model compiled with ``streams`` streams; returns what was set."""
    global _current, _controller
    if _user_pinned():
        return None
    n = blas_threads_for(streams, inference_threads)
    with _lock:
        if n == _current:
            return n
        try:
            if _controller is None:
                from threadpoolctl import ThreadpoolController

                _controller = ThreadpoolController()
            _controller.limit(limits=n, user_api="blas")
        except Exception:  # no threadpoolctl or an unknown BLAS: leave BLAS as it is
            return None
        _current = n
        return n
