"""Activation functions sigma (prototypical form) / rho (energy form) and derivatives.

``hard_sigmoid``: clip(u, 0, 1), the default. ``sigmoid4``: Laborieux et al.'s
1 / (1 + exp(-(4u - 2))). Each entry of :data:`ACTIVATIONS` is (f, f_prime).
"""

from __future__ import annotations

import numpy as np

from .registry import Registry

__all__ = ["hard_sigmoid", "hard_sigmoid_prime", "sigmoid4", "sigmoid4_prime", "ACTIVATIONS", "get_activation"]


def hard_sigmoid(u):
    """sigma(u) = clip(u, 0, 1)."""
    return np.clip(u, 0.0, 1.0)


def hard_sigmoid_prime(u):
    """sigma'(u) = 1 on the closed interval 0 <= u <= 1, else 0.

    The kinks take the one-sided value 1: the energy form keeps its states in the box
    [0, 1], where rho is the identity, and starts the free phase at s = 0. With 0 at the
    kinks a state at 0 would never move (rho'(0) h = 0) and one at 1 would be pulled to
    1 - dt every other step.
    """
    return ((u >= 0.0) & (u <= 1.0)).astype(np.asarray(u).dtype)


def sigmoid4(u):
    """sigma(u) = 1 / (1 + exp(-(4u - 2)))  (Laborieux et al. 2021)."""
    return 1.0 / (1.0 + np.exp(-(4.0 * u - 2.0)))


def sigmoid4_prime(u):
    """sigma'(u) = 4 sigma(u) (1 - sigma(u))."""
    s = sigmoid4(u)
    return 4.0 * s * (1.0 - s)


ACTIVATIONS: Registry = Registry("activation", describe=lambda pair: (pair[0].__doc__ or "").strip().splitlines()[0])
ACTIVATIONS.register("hard_sigmoid", (hard_sigmoid, hard_sigmoid_prime))
ACTIVATIONS.register("sigmoid4", (sigmoid4, sigmoid4_prime))


def get_activation(name: str):
    """Return (f, f_prime) for an activation name, or raise ConfigError."""
    return ACTIVATIONS.get(name)
