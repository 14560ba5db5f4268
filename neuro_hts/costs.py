"""Costs attached to a layer: their value, the nudge they exert, their scores and parameters.

A cost C(s, y) sits on one layer. Nudging adds ``beta * nudge`` with
``nudge = -dC/ds`` to that layer's drive (docs/MODEL.md); EP's primitive carries ``-beta C``,
so a cost with parameters (a readout) contributes ``beta dC/dtheta`` to the estimate.

Registered kinds (:data:`COSTS`; ``neuro-hts list``, ``model.output`` names one):

* ``mse`` -- :class:`MSE`, ``C = 1/2 ||s - y||^2`` on a relaxed output layer.
* ``ce`` -- :class:`SoftmaxReadout`, cross-entropy of ``softmax(W r + b)`` read out of a
  relaxed layer (Laborieux et al.): W and b are the cost's parameters, not a relaxed
  layer's, so nothing else has to special-case them.

Tests: tests/test_connections.py checks ``nudge`` and ``param_grad`` of every registered
cost against finite differences of ``value``.
"""

from __future__ import annotations

import numpy as np

from .registry import Registry

__all__ = ["Cost", "MSE", "SoftmaxReadout", "COSTS", "softmax"]


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax, the maximum subtracted first."""
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class Cost:
    """Interface of a cost on layer ``s`` (B, n) with one-hot targets ``y``."""

    kind = ""

    def params(self) -> dict[str, np.ndarray]:
        return {}

    def value(self, s: np.ndarray, y: np.ndarray) -> np.ndarray:
        """C per sample (B,)."""
        raise NotImplementedError

    def nudge(self, s: np.ndarray, y: np.ndarray) -> np.ndarray:
        """-dC/ds (B, n): what beta multiplies in the nudged drive."""
        raise NotImplementedError

    def scores(self, s: np.ndarray) -> np.ndarray:
        """Class scores (argmax = prediction)."""
        raise NotImplementedError

    def param_grad(self, s: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """d (sum_batch C) / d params, by name (empty without parameters)."""
        return {}


#: cost kind -> class
COSTS: Registry = Registry("cost")


@COSTS.register("mse")
class MSE(Cost):
    """C = 1/2 ||s - y||^2 on a relaxed output layer; the nudge is y - s."""

    kind = "mse"

    def value(self, s, y):
        """C = 1/2 ||s - y||^2 per sample."""
        return 0.5 * np.sum((s - y) ** 2, axis=-1)

    def nudge(self, s, y):
        """-dC/ds = y - s."""
        return y - s

    def scores(self, s):
        return s


@COSTS.register("ce")
class SoftmaxReadout(Cost):
    """Cross-entropy of a softmax readout softmax(W r + b) of a relaxed layer (W, b learned)."""

    kind = "ce"

    def __init__(self, weight: np.ndarray, bias: np.ndarray):
        self.weight = weight
        self.bias = bias

    def params(self):
        return {"weight": self.weight, "bias": self.bias}

    def logits(self, r):
        """z = W r + b."""
        return r @ self.weight.T + self.bias

    def value(self, r, y):
        """C = -sum y log softmax(W r + b) per sample."""
        z = self.logits(r)
        z = z - z.max(axis=-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
        return -np.sum(y * logp, axis=-1)

    def nudge(self, r, y):
        """-dC/dr = W^T (y - softmax(W r + b))."""
        return (y - softmax(self.logits(r))) @ self.weight

    def scores(self, r):
        return self.logits(r)

    def param_grad(self, r, y):
        """dC/dW = (p - y)^T r, dC/db = sum (p - y), p = softmax(W r + b)."""
        d = softmax(self.logits(r)) - y
        return {"weight": d.T @ r, "bias": d.sum(axis=0)}
