"""Helpers for testing backends and learning rules against the reference.

Useful to anyone adding a backend: the same small random problems the package's own
suite uses.
"""

from __future__ import annotations

import numpy as np

from .config import Config, DtConfig, ModelConfig, TrainConfig
from .network import Network, init_network

__all__ = ["random_problem"]


def random_problem(
    arch,
    form: str = "leaky",
    activation: str = "hard_sigmoid",
    output: str = "mse",
    seed: int = 0,
    batch: int = 8,
    init_scale: float = 1.0,
    data_seed: int | None = None,
) -> tuple[Network, np.ndarray, np.ndarray]:
    """A float64 network from the package's initialiser (lognormal dt in every relaxed
    layer), inputs x ~ U(0, 1) of shape (batch, arch[0]) and one-hot targets y.

    ``data_seed`` (default ``1000 + seed``) seeds x and y independently of the weights.
    """
    cfg = Config(
        model=ModelConfig(arch=arch, form=form, activation=activation, output=output, init_scale=init_scale),
        dt=DtConfig(dist="lognormal", layers="all"),
        train=TrainConfig(seed=seed),
    )
    net = init_network(cfg, dtype=np.float64)
    rng = np.random.default_rng(1000 + seed if data_seed is None else data_seed)
    x = rng.uniform(0.0, 1.0, (batch, arch[0]))
    y = np.eye(arch[-1])[rng.integers(0, arch[-1], batch)]
    return net, x, y
