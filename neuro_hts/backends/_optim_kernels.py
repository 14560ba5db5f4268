"""Fused optimiser updates: one compiled loop per parameter array (used by neuro_hts.learning).

Each kernel reads the gradient, the optimiser state and the parameter once and writes
the state and the parameter once, instead of the five to nine passes (and the scratch
buffer) of the NumPy formulation. For a 784 x 512 float32 weight that is about 0.15 ms
instead of 0.6-1 ms per Adam step on the 2-vCPU benchmark machine (BENCHMARKS.md).

The arithmetic is the NumPy formulation's, operation for operation, so the results are
bit-identical to it (tests/test_optim_kernels.py checks that with assert_array_equal):

* no fast-math flags: no reassociation and no FMA contraction (each product and sum is
  rounded to the array's dtype, as NumPy's elementwise ufuncs do), and NaN / inf
  propagate exactly as in NumPy;
* ``error_model="numpy"``: a division by zero gives inf/NaN as in NumPy instead of
  raising, which is also what lets LLVM vectorise the loop with the division in it;
* every scalar coefficient arrives already rounded to the array's dtype, as the NumPy
  code rounds it (``dtype.type(lr / c1)`` and so on), so float32 stays float32.

Arguments are 1-D C-contiguous arrays of one dtype (the callers pass ``a.reshape(-1)``
views of C-contiguous parameters and check the dtypes); the kernels do not check.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["adam_update", "sgd_update", "momentum_update"]

_JIT = dict(cache=True, error_model="numpy")


@njit(**_JIT)
def adam_update(p, g, m, v, b1, omb1, b2, omb2, inv_c2, eps, step):
    """In place: m <- m b1 + g omb1; v <- v b2 + (g g) omb2;
    p <- p - (m / (sqrt(v inv_c2) + eps)) step.

    With omb1 = 1 - b1, omb2 = 1 - b2, inv_c2 = 1 / (1 - b2^t) and step = lr / (1 - b1^t)
    this is Adam with bias correction, p -= lr m_hat / (sqrt(v_hat) + eps).
    """
    for i in range(p.size):
        gi = g[i]
        mi = m[i] * b1 + gi * omb1
        vi = v[i] * b2 + (gi * gi) * omb2
        m[i] = mi
        v[i] = vi
        p[i] = p[i] - (mi / (np.sqrt(vi * inv_c2) + eps)) * step


@njit(**_JIT)
def sgd_update(p, g, lr):
    """In place: p <- p - lr g."""
    for i in range(p.size):
        p[i] = p[i] - lr * g[i]


@njit(**_JIT)
def momentum_update(p, g, v, mu, lr):
    """In place: v <- v mu + g; p <- p - lr v."""
    for i in range(p.size):
        vi = v[i] * mu + g[i]
        v[i] = vi
        p[i] = p[i] - lr * vi

