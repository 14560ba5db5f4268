"""Simulation backends behind one interface.

A backend relaxes a :class:`~neuro_hts.network.Network` and computes EP gradients:

* ``numpy``: the readable float64 reference (:mod:`neuro_hts.dynamics`), the oracle.
* ``numba``: fused per-step kernels, BLAS matrix products, float32 by default.

Both return :class:`~neuro_hts.dynamics.RelaxResult` and lists of gradients with the
same shapes, and are tested against each other (tests/test_backends.py).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..errors import ConfigError

__all__ = ["Backend", "get_backend", "BACKEND_NAMES"]

BACKEND_NAMES = ("numba", "numpy")


class Backend(Protocol):
    name: str
    dtype: np.dtype

    def input_drive(self, net, x): ...

    def relax(self, net, x, n_steps, states=None, y=None, beta=0.0, drive1=None): ...

    def ep_gradients(self, net, x, y, states_a, beta_a, states_b, beta_b): ...


def get_backend(name: str, dtype=None) -> Backend:
    """Return a backend instance by name ('numba' or 'numpy')."""
    if name == "numpy":
        from .numpy_ref import NumpyBackend

        return NumpyBackend(dtype or np.float64)
    if name == "numba":
        from .numba_backend import NumbaBackend

        return NumbaBackend(dtype or np.float32)
    raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
