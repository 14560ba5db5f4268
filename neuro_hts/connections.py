"""Connection kinds: what a connection adds to the primitive Phi, and everything derived from it.

A connection links a ``pre`` layer to a ``post`` layer. Its term of the primitive is THE
definition (Laborieux et al.'s ``Phi``, checked here by finite differences instead of
trusted to autograd)::

    phi(r_pre, r_post) = < r_post, A r_pre >        per sample, A the connection's linear map

and the rest follows from it: the drive it adds to ``post`` (d phi / d r_post), the
feedback it sends to ``pre`` (d phi / d r_pre; symmetric connections only), its
parameters' gradient (the EP contrast's input) and the vector-Jacobian product BPTT
needs. Biases belong to layers, not connections (a layer's term ``r . b``).

:class:`LinearConnection` derives all of that from three methods, ``apply(v) = A v``,
``apply_T(u) = A^T u`` and ``outer(u, v) = d <u, A v> / d params``: a dense matrix, a
convolution with pooling or a masked matrix only implement those. A connection whose
feedback is not the transpose of its forward map (dendritic EP's apical branches) sets
``symmetric = False`` and does not provide ``drive_pre``.

Registered kinds (:data:`CONNECTIONS`; ``neuro-hts list``): ``dense``.
Tests: tests/test_connections.py checks every registered kind against finite
differences of ``phi`` and against the slow loops of tests/naive.py.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from .errors import ConfigError
from .registry import Registry

__all__ = ["Connection", "LinearConnection", "Dense", "CONNECTIONS"]


class Connection:
    """Interface of a connection kind (shapes: batch B first)."""

    kind: ClassVar[str] = ""
    #: whether the feedback to ``pre`` is d phi / d r_pre (so EP's energy picture holds)
    symmetric: ClassVar[bool] = True

    def params(self) -> dict[str, np.ndarray]:
        """The learned arrays, by name (views: optimisers update them in place)."""
        raise NotImplementedError

    def drive_post(self, r_pre: np.ndarray) -> np.ndarray:
        """What the connection adds to ``post``'s drive: d phi / d r_post, (B, *post_shape)."""
        raise NotImplementedError

    def drive_pre(self, r_post: np.ndarray) -> np.ndarray:
        """Feedback to ``pre``: d phi / d r_pre, (B, *pre_shape) (symmetric connections)."""
        raise NotImplementedError

    def phi(self, r_pre: np.ndarray, r_post: np.ndarray) -> np.ndarray:
        """The connection's term of the primitive, per sample (B,)."""
        raise NotImplementedError

    def param_grad(self, r_pre: np.ndarray, r_post: np.ndarray) -> dict[str, np.ndarray]:
        """d (sum_batch phi) / d params, by name."""
        raise NotImplementedError

    def vjp(self, r_pre: np.ndarray, g_post: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Given the adjoint ``g_post`` of ``drive_post(r_pre)``: (adjoint of r_pre, adjoints of the params)."""
        raise NotImplementedError


class LinearConnection(Connection):
    """A connection whose drive is linear in ``r_pre``: phi = <r_post, A r_pre>.

    Subclasses implement :meth:`apply`, :meth:`apply_T` and :meth:`outer`; the rest is
    derived here once.
    """

    def apply(self, v: np.ndarray) -> np.ndarray:
        """A v for a batch of pre states v."""
        raise NotImplementedError

    def apply_T(self, u: np.ndarray) -> np.ndarray:
        """A^T u for a batch of post-shaped u."""
        raise NotImplementedError

    def outer(self, u: np.ndarray, v: np.ndarray) -> dict[str, np.ndarray]:
        """d (sum_batch <u, A v>) / d params."""
        raise NotImplementedError

    def drive_post(self, r_pre):
        return self.apply(r_pre)

    def drive_pre(self, r_post):
        return self.apply_T(r_post)

    def phi(self, r_pre, r_post):
        h = self.apply(r_pre)
        return np.sum((r_post * h).reshape(h.shape[0], -1), axis=1)

    def param_grad(self, r_pre, r_post):
        return self.outer(r_post, r_pre)

    def vjp(self, r_pre, g_post):
        return self.apply_T(g_post), self.outer(g_post, r_pre)


#: connection kind -> class
CONNECTIONS: Registry = Registry("connection kind")


@CONNECTIONS.register("dense")
class Dense(LinearConnection):
    """Dense matrix W (n_post, n_pre): A v = W v, symmetric feedback W^T."""

    kind = "dense"
    symmetric = True

    def __init__(self, weight: np.ndarray):
        if np.ndim(weight) != 2:
            raise ConfigError(f"a dense connection needs a 2-D weight, got shape {np.shape(weight)}")
        self.weight = weight

    @classmethod
    def init(cls, n_pre: int, n_post: int, *, rng: np.random.Generator, scale: float = 1.0) -> "Dense":
        """W ~ U(-k, k), k = scale / sqrt(n_pre) (randomness explicit and keyword-only)."""
        k = scale / np.sqrt(n_pre)
        return cls(rng.uniform(-k, k, (n_post, n_pre)))

    def params(self):
        return {"weight": self.weight}

    def apply(self, v):
        """W v: (B, n_pre) -> (B, n_post)."""
        return v @ self.weight.T

    def apply_T(self, u):
        """W^T u: (B, n_post) -> (B, n_pre)."""
        return u @ self.weight

    def outer(self, u, v):
        """sum_b u_b v_b^T: (n_post, n_pre)."""
        return {"weight": u.T @ v}
