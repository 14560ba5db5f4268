"""neuro-hts: Equilibrium Propagation with heterogeneous per-neuron time steps (HTS-EP).

Layers, lower never importing higher: equations (``dynamics``, ``activations``,
``distributions``) -> backends (``backends.numpy_ref``, ``backends.numba_backend``) ->
learning and training (``learning``, ``training``) -> storage (``runfile``) -> CLI.
Lava is imported lazily and only through :mod:`neuro_hts.lava_compat`.
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

from .config import Config, DataConfig, DtConfig, ModelConfig, TrainConfig, load_config, parse_arch  # noqa: E402
from .distributions import available_distributions, register_distribution, sample_dt  # noqa: E402
from .errors import ConfigError, DataError, DivergenceError, NeuroHTSError, RunFileError  # noqa: E402
from .network import Network, init_network  # noqa: E402

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "__version__",
    "Config",
    "ModelConfig",
    "DtConfig",
    "TrainConfig",
    "DataConfig",
    "load_config",
    "parse_arch",
    "available_distributions",
    "register_distribution",
    "sample_dt",
    "Network",
    "init_network",
    "NeuroHTSError",
    "ConfigError",
    "DataError",
    "RunFileError",
    "DivergenceError",
]
