"""Simulation backends behind one interface.

A backend relaxes a :class:`~neuro_hts.network.Network` and computes EP gradients:

* ``numpy``: the readable float64 reference (:mod:`neuro_hts.dynamics`), the oracle.
* ``numba``: fused per-step kernels, BLAS matrix products, float32 by default; conv
  networks through :mod:`neuro_hts.backends.conv_kernels` (im2col + gemm).

Both return :class:`~neuro_hts.dynamics.RelaxResult` and lists of gradients with the
same shapes, and are tested against each other (tests/test_backends.py; conv networks:
tests/test_conv_fast.py).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..registry import Registry

__all__ = ["Backend", "BACKENDS", "get_backend", "BACKEND_NAMES"]

#: backend name -> class ``(dtype=None) -> Backend`` (imported on first use)
BACKENDS: Registry = Registry("backend")
BACKENDS.register_lazy("numba", "neuro_hts.backends.numba_backend:NumbaBackend",
                       "fused Numba kernels with BLAS products, float32 by default")
BACKENDS.register_lazy("numpy", "neuro_hts.backends.numpy_ref:NumpyBackend",
                       "the readable NumPy reference (neuro_hts.dynamics), float64 by default")
BACKENDS.register_lazy("lava", "neuro_hts.lava.learning:LavaBackend",
                       "fixed-point EP training inside Lava (arith 'fixed' only; docs/LAVA_LEARNING.md)")
BACKEND_NAMES = BACKENDS.names()

#: default dtype per backend
_DEFAULT_DTYPES = {"numba": np.float32, "numpy": np.float64, "lava": np.float32}


class Backend(Protocol):
    name: str
    dtype: np.dtype

    def input_drive(self, net, x): ...

    def relax(self, net, x, n_steps, states=None, y=None, beta=0.0, drive1=None, *, gamma=1.0, clamp="none",
              anchor=None, coe=0.0, tol=None, status_tol=1e-3): ...

    def ep_gradients(self, net, x, y, states_a, beta_a, states_b, beta_b): ...


def get_backend(name: str, dtype=None) -> Backend:
    """Return a backend instance by name (one of :data:`BACKENDS`)."""
    cls = BACKENDS.get(name)
    return cls(dtype or _DEFAULT_DTYPES.get(name, np.float64))
