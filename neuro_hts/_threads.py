"""BLAS thread control: :func:`blas_threads`, a context manager around threadpoolctl.

Why one thread is the right default on small machines
-----------------------------------------------------
The matrix products of EP training are small: at batch 50 the largest is the input
drive W_1 x of a 784-512-10 network (50 x 784 x 512, 40 MFLOP), the per-step products
are 50 x 512 x 10. OpenBLAS splits such a product between its threads and then waits
(spinning) for the slowest part, so a second thread only pays off while the second core
is free. Measured on a 2-vCPU VM (BENCHMARKS.md, "Speed-up of the Numba training step"):
the 50 x 784 x 512 sgemm alone takes 0.59 ms on one thread and 0.32 ms on two with both
cores idle, but with another process holding one core the two-thread product has a long
tail (90th percentile 2.4 ms, against 0.65 ms on one thread); in training, where NumPy's
and Numba's BLAS calls alternate with single-threaded kernels, the default two threads
lost 61 % of the Numba backend's throughput (NumPy float64: 57 %) when one core was
busy, and one thread lost none. The per-step kernels of the Numba backend are
single-threaded anyway. Parallelism on such machines is better spent on independent
runs (``neuro-hts sweep --workers``), each with one BLAS thread. On a large idle machine
with big layers more threads can pay off; measure.

Two BLAS libraries
------------------
NumPy and Numba's ``np.dot`` may call DIFFERENT OpenBLAS builds: NumPy's wheel bundles
one (``numpy.libs``), and Numba takes its BLAS from ``scipy.linalg.cython_blas``, i.e.
SciPy's bundled copy (``scipy.libs``). Each has its own thread pool and its own thread
count. ``threadpoolctl`` only sees libraries that are already loaded, so
:func:`blas_threads` loads SciPy's BLAS first (importing ``scipy.linalg.cython_blas``,
which Numba would import on its first ``np.dot`` anyway) and then limits every BLAS
library loaded in the process.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["blas_threads", "blas_thread_counts"]

log = logging.getLogger(__name__)


def _load_blas_libraries() -> None:
    """Load the BLAS libraries the package calls (NumPy's and SciPy's, the one Numba uses)."""
    import numpy  # noqa: F401  (NumPy's bundled BLAS is loaded with numpy itself)

    try:
        import scipy.linalg.cython_blas  # noqa: F401  (Numba's np.dot calls this one)
    except ImportError:  # pragma: no cover - scipy is a dependency
        log.debug("scipy.linalg.cython_blas not importable; only the BLAS loaded so far is limited")


def blas_thread_counts() -> dict[str, int]:
    """{library file path: thread count} of every BLAS library loaded in the process."""
    from threadpoolctl import threadpool_info

    return {info["filepath"]: int(info["num_threads"]) for info in threadpool_info() if info.get("user_api") == "blas"}


@contextmanager
def blas_threads(n: int | None) -> Iterator[None]:
    """Run the body with at most ``n`` threads in every BLAS library, then restore them.

    ``n`` None or 0: leave the thread counts as they are. ``n`` >= 1: load the BLAS
    libraries the package uses (NumPy's and SciPy's, which Numba's ``np.dot`` calls)
    and limit every BLAS library loaded in the process to ``n`` threads for the
    duration of the block; the previous counts are restored on exit, also after an
    exception. Libraries loaded for the first time inside the block are not limited
    (the package loads all of its own before limiting). Nested blocks work.

    Raises ValueError for a negative or non-integer ``n``. See the module docstring
    for why 1 is the right default on machines with few cores.
    """
    if n is None:
        yield
        return
    try:
        n = operator.index(n)
    except TypeError:
        raise ValueError(f"blas_threads needs an integer >= 0 or None, got {n!r}") from None
    if n < 0:
        raise ValueError(f"blas_threads needs an integer >= 0 or None, got {n}")
    if n == 0:
        yield
        return
    from threadpoolctl import threadpool_limits

    _load_blas_libraries()
    with threadpool_limits(limits=n, user_api="blas"):
        log.debug("BLAS threads limited to %d: %s", n, blas_thread_counts())
        yield
