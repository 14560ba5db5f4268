"""The network: weights, biases and per-neuron time steps of a layered HTS-EP model.

Layers s_0 = x (clamped input), s_1 ... s_L. ``weights[l-1]`` is W_l with shape
(n_l, n_{l-1}), ``biases[l-1]`` is b_l (n_l,), ``dts[l-1]`` is dt_l (n_l,), one time
step per neuron. With ``output='ce'`` layer L is a softmax readout of s_{L-1}: it is not
relaxed, and its dt is stored as 1 (unused).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .connections import Dense
from .costs import COSTS, Cost, SoftmaxReadout
from .distributions import sample_dt

__all__ = ["Network", "init_network", "sample_network_dts", "rng_streams"]


def rng_streams(seed: int, purpose: str, *extra: int) -> np.random.Generator:
    """Independent, reproducible random streams per purpose (init, dt, shuffle, nudge sign).

    Changing the dt distribution does not change the initial weights of a seed, so runs
    that differ only in dt law start from the same weights.
    """
    tags = {"init": 0, "dt": 1, "shuffle": 2, "nudge": 3}
    return np.random.default_rng([int(seed), tags[purpose], *map(int, extra)])


@dataclass
class Network:
    """Parameters of an HTS-EP network (arrays are updated in place by optimisers)."""

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    dts: list[np.ndarray]
    form: str = "leaky"
    activation: str = "hard_sigmoid"
    output: str = "mse"
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if not (len(self.weights) == len(self.biases) == len(self.dts) >= 1):
            raise ValueError("weights, biases and dts need one entry per layer")
        for l, (w, b, d) in enumerate(zip(self.weights, self.biases, self.dts), start=1):
            if w.ndim != 2 or b.shape != (w.shape[0],) or d.shape != (w.shape[0],):
                raise ValueError(f"layer {l}: weight {w.shape}, bias {b.shape}, dt {d.shape} do not fit")
            if l > 1 and w.shape[1] != self.weights[l - 2].shape[0]:
                raise ValueError(f"layer {l}: weight takes {w.shape[1]} inputs, layer {l-1} has {self.weights[l-2].shape[0]}")

    @property
    def arch(self) -> tuple[int, ...]:
        return (self.weights[0].shape[1],) + tuple(w.shape[0] for w in self.weights)

    @property
    def n_layers(self) -> int:
        """L: number of weight layers."""
        return len(self.weights)

    @property
    def n_dynamic(self) -> int:
        """Number of relaxed layers (L, or L-1 with a softmax readout)."""
        return self.n_layers - (1 if self.output == "ce" else 0)

    @property
    def dtype(self) -> np.dtype:
        return self.weights[0].dtype

    def astype(self, dtype) -> "Network":
        """A copy with all arrays in ``dtype`` (C-contiguous)."""
        conv = lambda arrs: [np.ascontiguousarray(a, dtype=dtype).copy() for a in arrs]  # noqa: E731
        return Network(conv(self.weights), conv(self.biases), conv(self.dts), self.form, self.activation, self.output, dict(self.meta))

    def copy(self) -> "Network":
        return self.astype(self.dtype)

    def connections(self) -> list[Dense]:
        """The dense connections between relaxed layers, W_1 ... W_{n_dynamic} (views of ``weights``)."""
        return [Dense(w) for w in self.weights[: self.n_dynamic]]

    def cost(self) -> Cost:
        """The cost on the top relaxed layer: MSE, or the softmax readout holding W_L and b_L (views)."""
        kind = COSTS.get(self.output)
        if kind is SoftmaxReadout:
            return SoftmaxReadout(self.weights[-1], self.biases[-1])
        return kind()

    def is_finite(self) -> bool:
        return all(np.isfinite(a).all() for a in (*self.weights, *self.biases))


def sample_network_dts(config, arch: tuple[int, ...], rng: np.random.Generator) -> list[np.ndarray]:
    """dt vectors for every layer: sampled for the heterogeneous layers, constant mean elsewhere."""
    dtc = config.dt
    n_layers = len(arch) - 1
    n_dyn = n_layers - (1 if config.model.output == "ce" else 0)
    het = set(dtc.heterogeneous_layers(n_dyn, n_layers))
    dts = []
    for l in range(1, n_layers + 1):
        n = arch[l]
        if l > n_dyn:
            dts.append(np.ones(n))
        elif l in het:
            dts.append(sample_dt(dtc.dist, n, rng, dtc.mean, dtc.std, dtc.dt_min, dtc.dt_max))
        else:
            dts.append(np.full(n, float(np.clip(dtc.mean, dtc.dt_min, dtc.dt_max))))
    return dts


def init_network(config, dtype=np.float64) -> Network:
    """Initialise weights and biases ~ U(-k, k), k = init_scale / sqrt(n_in), and sample dt.

    Randomness comes from ``config.train.seed`` only (see :func:`rng_streams`).
    """
    arch = config.model.arch
    seed = config.train.seed
    rng = rng_streams(seed, "init")
    weights, biases = [], []
    for n_in, n_out in zip(arch[:-1], arch[1:]):
        k = config.model.init_scale / np.sqrt(n_in)
        weights.append(rng.uniform(-k, k, (n_out, n_in)))
        biases.append(rng.uniform(-k, k, n_out))
    dts = sample_network_dts(config, arch, rng_streams(seed, "dt"))
    net = Network(weights, biases, dts, config.model.form, config.model.activation, config.model.output)
    return net.astype(dtype)
