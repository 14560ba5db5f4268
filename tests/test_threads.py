"""neuro_hts._threads.blas_threads: sets and restores the thread count of every BLAS library."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from numba import njit
from threadpoolctl import threadpool_info, threadpool_limits

from neuro_hts._threads import blas_thread_counts, blas_threads


@njit(cache=False)
def _numba_dot(a, b, out):
    np.dot(a, b, out)


def _compile_numba_dot():
    """Make Numba load its BLAS (SciPy's) by compiling and running an np.dot kernel."""
    a = np.ones((4, 4), dtype=np.float32)
    out = np.empty_like(a)
    _numba_dot(a, a, out)
    assert out[0, 0] == 4.0


def _blas_counts():
    return {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


def test_limits_every_loaded_blas_and_restores_it():
    _compile_numba_dot()
    with threadpool_limits(limits=2, user_api="blas"):  # a known starting point
        before = _blas_counts()
        assert before and set(before.values()) == {2}
        with blas_threads(1):
            inside = _blas_counts()
            assert inside.keys() == before.keys()
            assert set(inside.values()) == {1}
            assert blas_thread_counts() == inside
        assert _blas_counts() == before


def test_restores_after_an_exception_and_nests():
    _compile_numba_dot()
    with threadpool_limits(limits=2, user_api="blas"):
        before = _blas_counts()
        with pytest.raises(RuntimeError):
            with blas_threads(1):
                raise RuntimeError("boom")
        assert _blas_counts() == before
        with blas_threads(1):
            with blas_threads(2):
                assert set(_blas_counts().values()) == {2}
            assert set(_blas_counts().values()) == {1}
        assert _blas_counts() == before


@pytest.mark.parametrize("n", [None, 0])
def test_none_and_zero_leave_the_counts_alone(n):
    _compile_numba_dot()
    with threadpool_limits(limits=2, user_api="blas"):
        before = _blas_counts()
        with blas_threads(n):
            assert _blas_counts() == before
        assert _blas_counts() == before


@pytest.mark.parametrize("bad", [-1, 1.5, "1"])
def test_bad_counts_are_refused(bad):
    with pytest.raises(ValueError, match="blas_threads"):
        with blas_threads(bad):
            pass


def test_numbas_blas_is_limited_even_before_numba_loaded_it():
    """In a fresh interpreter, SciPy's BLAS (Numba's) is not loaded yet when the block
    starts; blas_threads loads it first, so Numba's np.dot runs on one thread too."""
    code = textwrap.dedent(
        """
        import numpy as np
        from threadpoolctl import threadpool_info, threadpool_limits
        from neuro_hts._threads import blas_threads
        counts = lambda: {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
        n_before = len(counts())
        with blas_threads(1):
            from numba import njit

            @njit
            def f(a, b, out):
                np.dot(a, b, out)

            a = np.ones((4, 4), dtype=np.float32)
            f(a, a, np.empty_like(a))
            inside = counts()
        print(n_before, len(inside), sorted(set(inside.values())))
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    n_before, n_inside, values = r.stdout.strip().split(" ", 2)
    assert int(n_inside) >= int(n_before) >= 1
    assert values == "[1]"
