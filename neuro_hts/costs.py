"""Costs attached to a layer: their value, the nudge they exert, their scores and parameters.

A cost C(s, y) sits on one layer. Nudging adds ``beta * nudge`` with
``nudge = -dC/ds`` to that layer's drive (docs/MODEL.md); EP's primitive carries ``-beta C``,
so a cost with parameters (a readout) contributes ``beta dC/dtheta`` to the estimate.

Registered kinds (:data:`COSTS`; ``neuro-hts list``, ``model.output`` names one):

* ``mse`` -- :class:`MSE`, ``C = 1/2 ||s - y||^2`` on a relaxed output layer.
* ``ce`` -- :class:`SoftmaxReadout`, cross-entropy of ``softmax(W r + b)`` read out of a
  relaxed layer (Laborieux et al.): W and b are the cost's parameters, not a relaxed
  layer's, so nothing else has to special-case them.

Not registered (not an output cost): :class:`LocalReadout`, the layer-wise ("local") error
cost ``beta_l L(R_l r_l, y)`` of a hidden layer (docs/FAMILY.md section 5, form (i)), and
:class:`LocalCosts`, a network's set of them (``[local]`` in a config, docs/ALGORITHMS.md
"Local error costs").

Tests: tests/test_connections.py checks ``nudge`` and ``param_grad`` of every registered
cost against finite differences of ``value``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .registry import Registry

__all__ = ["Cost", "MSE", "SoftmaxReadout", "LocalReadout", "LocalCosts", "LOCAL_LOSSES", "READOUT_KINDS", "COSTS",
           "softmax"]


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


#: loss kinds of a local readout (the output cost's kind: MSE or cross-entropy)
LOCAL_LOSSES = ("mse", "ce")
#: local readouts: a fixed random matrix, or one learned with the network
READOUT_KINDS = ("fixed", "learned")


class LocalReadout(Cost):
    """Layer-wise ("local") error cost of hidden layer l (docs/FAMILY.md section 5 form (i), INFERENCE)::

        C_l = beta_l L(z_l, y),   z_l = R_l r_l       (R_l: n_classes x n_l, no bias)

    with r_l the layer's presynaptic value (s_l in the leaky form, rho(s_l) in the energy
    form; a C x H x W layer is flattened) and L the output cost's loss: ``mse``
    L = 1/2 ||z - y||^2, ``ce`` L = -sum y log softmax(z). Its nudge (what beta multiplies
    in the drive of s_l in a nudged phase, as for the output cost) is
    -dC_l/dr_l = beta_l R_l^T (y - z) (MSE) or beta_l R_l^T (y - softmax(z)) (CE); the free
    phase never feels it. EP's primitive carries -beta C_l, so a learned R_l gets
    beta_l dL/dR_l at the nudged / free states (:meth:`param_grad`).
    """

    kind = "local"

    def __init__(self, weight: np.ndarray, beta: float, loss: str = "mse"):
        if loss not in LOCAL_LOSSES:
            raise ValueError(f"local loss must be one of {', '.join(LOCAL_LOSSES)}, got {loss!r}")
        self.weight = weight
        self.beta = float(beta)
        self.loss = loss

    def params(self):
        return {"weight": self.weight}

    def logits(self, r):
        """z = R r (rows of ``r`` flattened: (B, n_l))."""
        return r @ self.weight.T

    def error(self, r, y):
        """dL/dz: z - y (MSE) or softmax(z) - y (CE)."""
        z = self.logits(r)
        return (z - y) if self.loss == "mse" else (softmax(z) - y)

    def value(self, r, y):
        """C_l = beta_l * 1/2 ||R r - y||^2 (MSE) or beta_l * -sum y log softmax(R r) (CE), per sample."""
        z = self.logits(r)
        if self.loss == "mse":
            return self.beta * 0.5 * np.sum((z - y) ** 2, axis=-1)
        z = z - z.max(axis=-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
        return -self.beta * np.sum(y * logp, axis=-1)

    def nudge(self, r, y):
        """-dC_l/dr = beta_l R^T (y - R r) (MSE) or beta_l R^T (y - softmax(R r)) (CE)."""
        return self.beta * (-self.error(r, y) @ self.weight)

    def scores(self, r):
        return self.logits(r)

    def param_grad(self, r, y):
        """d (sum_batch C_l) / dR = beta_l (dL/dz)^T r, dL/dz = R r - y (MSE) or softmax(R r) - y (CE)."""
        return {"weight": self.beta * (self.error(r, y).T @ r)}


@dataclass
class LocalCosts:
    """A network's local error costs: one readout R_l per hidden layer in ``layers`` (1-based).

    ``weights[i]`` is R_{layers[i]} (n_classes x n_l); ``beta`` is beta_l (the same for
    every layer); ``loss`` the output cost's kind; ``learned``: whether training updates
    the readouts (a fixed readout never changes). Arrays are updated in place.
    """

    layers: tuple[int, ...]
    weights: list[np.ndarray]
    beta: float
    loss: str = "mse"
    learned: bool = False

    def __post_init__(self):
        self.layers = tuple(int(l) for l in self.layers)
        if len(self.layers) != len(self.weights) or not self.layers:
            raise ValueError(f"{len(self.weights)} readouts for layers {self.layers}")
        if len(set(self.layers)) != len(self.layers) or list(self.layers) != sorted(self.layers):
            raise ValueError(f"local layers must be increasing and distinct, got {self.layers}")
        if not (np.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"local beta must be a finite number >= 0, got {self.beta}")
        if self.loss not in LOCAL_LOSSES:
            raise ValueError(f"local loss must be one of {', '.join(LOCAL_LOSSES)}, got {self.loss!r}")
        for l, w in zip(self.layers, self.weights):
            if np.ndim(w) != 2:
                raise ValueError(f"local readout of layer {l} has shape {np.shape(w)}, expected (n_classes, n_{l})")

    def readouts(self) -> list[tuple[int, LocalReadout]]:
        """(layer, its :class:`LocalReadout`) for every local layer (views of ``weights``)."""
        return [(l, LocalReadout(w, self.beta, self.loss)) for l, w in zip(self.layers, self.weights)]

    def astype(self, dtype) -> "LocalCosts":
        """A copy with the readouts in ``dtype`` (C-contiguous)."""
        return LocalCosts(self.layers, [np.ascontiguousarray(w, dtype=dtype).copy() for w in self.weights], self.beta,
                          self.loss, self.learned)
