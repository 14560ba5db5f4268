"""NumPy reference backend: a thin wrapper over :mod:`neuro_hts.dynamics` (float64 oracle)."""

from __future__ import annotations

import numpy as np

from .. import dynamics

__all__ = ["NumpyBackend"]


class NumpyBackend:
    name = "numpy"

    def __init__(self, dtype=np.float64):
        self.dtype = np.dtype(dtype)

    def supports(self, net) -> list[str]:
        """The reference runs every network the package can describe (dense and conv2d chains)."""
        return []

    def input_drive(self, net, x):
        return dynamics.input_drive(net, np.asarray(x, dtype=self.dtype))

    def relax(self, net, x, n_steps, states=None, y=None, beta=0.0, drive1=None, **phase_options):
        """:func:`neuro_hts.dynamics.relax` (``phase_options``: gamma, clamp, anchor, coe, tol, status_tol)."""
        x = np.asarray(x, dtype=self.dtype)
        return dynamics.relax(net, x, n_steps, states=states, y=y, beta=beta, drive1=drive1, **phase_options)

    def ep_gradients(self, net, x, y, states_a, beta_a, states_b, beta_b):
        return dynamics.ep_gradients(net, np.asarray(x, dtype=self.dtype), y, states_a, beta_a, states_b, beta_b)
