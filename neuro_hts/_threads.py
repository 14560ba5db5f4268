"""BLAS threads while training: a context manager over threadpoolctl.

On a small machine (2 cores) one BLAS thread is the fastest choice for EP's products at
batch 50 and the only one robust to a busy core (BENCHMARKS.md): a two-thread gemm waits
for its slowest thread. NumPy and Numba's ``np.dot`` may go through different BLAS
libraries; :func:`blas_threads` limits every one that is loaded.
"""

from __future__ import annotations

import contextlib

__all__ = ["blas_threads"]


@contextlib.contextmanager
def blas_threads(n: int | None):
    """Limit every loaded BLAS library to ``n`` threads inside the block (None or 0: leave them)."""
    if not n:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=int(n), user_api="blas"):
        yield
