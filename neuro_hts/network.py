"""The network: weights, biases and per-neuron time steps of a layered HTS-EP model.

Layers s_0 = x (clamped input), s_1 ... s_L. ``weights[l-1]`` is W_l with shape
(n_l, n_{l-1}), ``biases[l-1]`` is b_l (n_l,), ``dts[l-1]`` is dt_l (n_l,), one time
step per neuron. With ``output='ce'`` layer L is a softmax readout of s_{L-1}: it is not
relaxed, and its dt is stored as 1 (unused).

A convolutional network carries its typed parts (``spec``, a
:class:`~neuro_hts.spec.NetworkSpec`): layer l may have shape (C, H, W), W_l is then the
kernel of a conv2d connection (C_l, C_{l-1}, k, k), b_l is one bias per channel (C_l,)
(the layer's term of the primitive is sum_{c,y,x} r[c,y,x] b[c], :func:`bias_drive`), and
dt_l has the layer's shape (C_l, H_l, W_l): one time step per unit (a per-channel law
repeats one value over each feature map). Without ``spec`` the network is the dense MLP
of its weights, as before.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from .connections import CONNECTIONS, Dense
from .costs import COSTS, Cost, LocalCosts, SoftmaxReadout
from .distributions import HOMOGENEOUS, sample_dt
from .errors import ConfigError
from .spec import NetworkSpec

__all__ = ["Network", "init_network", "sample_network_dts", "rng_streams", "bias_shape", "bias_drive", "bias_grad",
           "network_spec", "CLIP_WARN_FRACTION"]

logger = logging.getLogger(__name__)


def bias_shape(layer_shape: tuple[int, ...]) -> tuple[int, ...]:
    """A layer's bias: one per neuron (n,) for a layer (n,), one per channel (C,) for (C, H, W)."""
    return (layer_shape[0],)


def bias_drive(b: np.ndarray, layer_shape: tuple[int, ...]) -> np.ndarray:
    """The bias term of the drive, d (r . b) / dr: b itself, or b[c] broadcast over each feature map."""
    return b.reshape(b.shape[0], 1, 1) if len(layer_shape) == 3 else b


def bias_grad(g: np.ndarray) -> np.ndarray:
    """d sum_batch (g . b) / db for g (B, *layer_shape): sum over the batch (and the pixels of a channel)."""
    return g.sum(axis=(0, 2, 3)) if g.ndim == 4 else g.sum(axis=0)


def network_spec(config) -> NetworkSpec | None:
    """The typed parts a Network must carry: the declared ones unless they are a plain dense chain (None)."""
    spec = config.model.spec
    return None if spec.is_dense else spec


def rng_streams(seed: int, purpose: str, *extra: int) -> np.random.Generator:
    """Independent, reproducible random streams per purpose (init, dt, shuffle, nudge sign).

    Changing the dt distribution does not change the initial weights of a seed, so runs
    that differ only in dt law start from the same weights.
    """
    tags = {"init": 0, "dt": 1, "shuffle": 2, "nudge": 3, "mask": 4, "local": 5}
    return np.random.default_rng([int(seed), tags[purpose], *map(int, extra)])


#: where the top layer's nudge enters the leaky form (Network.nudge, [model] nudge)
NUDGE_PLACEMENTS = ("inside", "outside")


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
    #: the typed parts of a network with image layers or conv2d connections (None: dense MLP)
    spec: NetworkSpec | None = None
    #: per layer, the connection's fixed arrays that are not trained (a dendritic
    #: connection's masks), by name; empty dicts for dense and conv2d layers
    buffers: list[dict[str, np.ndarray]] | None = None
    #: where the top layer's nudge enters the leaky form: "inside" sigma or "outside" it
    #: (:func:`neuro_hts.dynamics.leaky_update`); inference does not depend on it
    nudge: str = "inside"
    #: layer-wise ("local") error costs of hidden layers, felt in the nudged phases only
    #: (:class:`neuro_hts.costs.LocalCosts`, ``[local]``); None: none (standard EP)
    local: LocalCosts | None = None

    def __post_init__(self):
        if self.nudge not in NUDGE_PLACEMENTS:
            raise ValueError(f"nudge must be one of {', '.join(NUDGE_PLACEMENTS)}, got {self.nudge!r}")
        if not (len(self.weights) == len(self.biases) == len(self.dts) >= 1):
            raise ValueError("weights, biases and dts need one entry per layer")
        if self.buffers is None:
            self.buffers = [{} for _ in self.weights]
        if len(self.buffers) != len(self.weights):
            raise ValueError(f"{len(self.buffers)} buffer tables for {len(self.weights)} layers")
        if self.spec is not None:
            self._check_parts()
        else:
            self._check_dense()
        if self.local is not None:
            self._check_local()

    def _check_local(self):
        top = self.n_dynamic
        n_classes = self.arch[-1]
        for l, w in zip(self.local.layers, self.local.weights):
            if not 1 <= l < top:
                raise ValueError(f"local readout on layer {l}: local costs go on hidden layers 1..{top - 1} "
                                 f"(layer {top} carries the output cost)")
            n = int(np.prod(self.shapes[l]))
            if w.shape != (n_classes, n):
                raise ValueError(f"local readout of layer {l} has shape {w.shape}, expected {(n_classes, n)}")

    def _check_dense(self):
        for l, (w, b, d) in enumerate(zip(self.weights, self.biases, self.dts), start=1):
            if w.ndim != 2 or b.shape != (w.shape[0],) or d.shape != (w.shape[0],):
                raise ValueError(f"layer {l}: weight {w.shape}, bias {b.shape}, dt {d.shape} do not fit")
            if l > 1 and w.shape[1] != self.weights[l - 2].shape[0]:
                raise ValueError(f"layer {l}: weight takes {w.shape[1]} inputs, layer {l-1} has {self.weights[l-2].shape[0]}")

    def _check_parts(self):
        spec = self.spec
        n_dyn = len(spec.layers) - 1
        want = n_dyn + (1 if self.output == "ce" else 0)
        if len(self.weights) != want:
            raise ValueError(f"{len(self.weights)} weight layers for the {want} of the network's parts")
        for l, c in enumerate(spec.connections, start=1):
            pre, post = spec.layer(c.pre).shape, spec.layer(c.post).shape
            shapes = CONNECTIONS.get(c.kind).param_shapes(pre, post, **spec.options(c))
            w, b, d = self.weights[l - 1], self.biases[l - 1], self.dts[l - 1]
            if w.shape != shapes["weight"] or b.shape != bias_shape(post) or d.shape != post:
                raise ValueError(f"layer {l} ({c.kind}): weight {w.shape}, bias {b.shape}, dt {d.shape} do not fit "
                                 f"{shapes['weight']}, {bias_shape(post)}, {post}")
            kind = CONNECTIONS.get(c.kind)
            want_buf = kind.buffer_shapes(pre, post, **spec.options(c)) if hasattr(kind, "buffer_shapes") else {}
            got_buf = {k: tuple(np.shape(v)) for k, v in self.buffers[l - 1].items()}
            if got_buf != want_buf:
                raise ValueError(f"layer {l} ({c.kind}): buffers {got_buf} do not fit {want_buf}")
        if self.output == "ce":
            w, b = self.weights[-1], self.biases[-1]
            n = spec.layers[-1].size
            if w.ndim != 2 or w.shape[1] != n or b.shape != (w.shape[0],) or self.dts[-1].shape != (w.shape[0],):
                raise ValueError(f"readout: weight {w.shape}, bias {b.shape} do not fit a layer of {n}")

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        """Shapes of s_0 (the input) ... s_{n_dynamic} (the relaxed layers), without the batch."""
        if self.spec is not None:
            return tuple(layer.shape for layer in self.spec.layers)
        return tuple((n,) for n in self.arch[: self.n_dynamic + 1])

    @property
    def is_dense(self) -> bool:
        """A chain of dense connections between layers of shape [n] (what the fast paths run)."""
        return self.spec is None or self.spec.is_dense

    @property
    def arch(self) -> tuple[int, ...]:
        """Layer sizes n_0 ... n_L (C*H*W for an image layer; the classes last with a readout)."""
        if self.spec is not None:
            sizes = tuple(layer.size for layer in self.spec.layers)
            return sizes + ((self.weights[-1].shape[0],) if self.output == "ce" else ())
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
        return Network(conv(self.weights), conv(self.biases), conv(self.dts), self.form, self.activation, self.output,
                       dict(self.meta), self.spec, [{k: v.copy() for k, v in b.items()} for b in self.buffers],
                       self.nudge, self.local.astype(dtype) if self.local is not None else None)

    def copy(self) -> "Network":
        return self.astype(self.dtype)

    def connections(self) -> list:
        """The connections into the relaxed layers, W_1 ... W_{n_dynamic} (views of ``weights``)."""
        if self.spec is None:
            return [Dense(w) for w in self.weights[: self.n_dynamic]]
        spec = self.spec
        out = []
        for c, w, bufs in zip(spec.connections, self.weights, self.buffers):
            extra = {"buffers": bufs} if bufs else {}
            out.append(CONNECTIONS.get(c.kind).build(w, spec.layer(c.pre).shape, spec.layer(c.post).shape, **extra,
                                                     **spec.options(c)))
        return out

    def bias_drive(self, l: int) -> np.ndarray:
        """b_l shaped to add to the drive of relaxed layer ``l`` (1-based), :func:`bias_drive`."""
        return bias_drive(self.biases[l - 1], self.shapes[l])

    def cost(self) -> Cost:
        """The cost on the top relaxed layer: MSE, or the softmax readout holding W_L and b_L (views)."""
        kind = COSTS.get(self.output)
        if kind is SoftmaxReadout:
            return SoftmaxReadout(self.weights[-1], self.biases[-1])
        return kind()

    def is_finite(self) -> bool:
        return all(np.isfinite(a).all() for a in (*self.weights, *self.biases))


def _layer_shapes(config, arch) -> list[tuple[int, ...]]:
    """Shapes of layers 1 ... L (the readout's (classes,) last with output 'ce')."""
    spec = config.model.spec
    if spec.is_dense:
        return [(n,) for n in arch[1:]]
    shapes = [layer.shape for layer in spec.layers[1:]]
    return shapes + ([(arch[-1],)] if config.model.output == "ce" else [])


def _sample_layer_dt(dtc, shape, rng) -> np.ndarray:
    """dt for every unit of a layer of ``shape``; ``per_channel``: one per feature map of a (C, H, W) layer."""
    if len(shape) == 3 and dtc.per_channel:
        d = sample_dt(dtc.dist, shape[0], rng, dtc.mean, dtc.std, dtc.dt_min, dtc.dt_max)
        return np.ascontiguousarray(np.broadcast_to(d[:, None, None], shape))
    n = int(np.prod(shape))
    return sample_dt(dtc.dist, n, rng, dtc.mean, dtc.std, dtc.dt_min, dtc.dt_max).reshape(shape)


#: warn when more than this fraction of a heterogeneous layer's dt sits at dt_min or dt_max
CLIP_WARN_FRACTION = 0.10


def _check_spread(dtc, l: int, d: np.ndarray, warn: bool) -> None:
    """Refuse a law that clipping turned into one value; warn when much of it was clipped."""
    if dtc.dist in HOMOGENEOUS or d.size < 2:
        return
    law = f"dt law {dtc.dist!r} (mean {dtc.mean:g}, std {dtc.std:g}) clipped to [{dtc.dt_min:g}, {dtc.dt_max:g}]"
    if np.all(d == d.flat[0]):
        raise ConfigError(f"[dt] {law} gives every neuron of layer {l} the same dt {float(d.flat[0]):g}: "
                          f"a homogeneous network, not a {dtc.dist} one; put the mean inside the range or widen it")
    frac = float(np.mean((d == dtc.dt_min) | (d == dtc.dt_max)))
    if warn and frac > CLIP_WARN_FRACTION:
        logger.warning("%s: %.1f%% of layer %d's time steps sit at a bound (clipped); the law is not what its "
                       "parameters say", law, 100 * frac, l)


def sample_network_dts(config, arch: tuple[int, ...], rng: np.random.Generator, *, warn: bool = True) -> list[np.ndarray]:
    """dt arrays for every layer: sampled for the heterogeneous layers, constant mean elsewhere.

    Each has its layer's shape ((n,) or (C, H, W)); see :func:`_sample_layer_dt`. A
    heterogeneous layer whose clipped law leaves one value is refused (ConfigError); more
    than :data:`CLIP_WARN_FRACTION` of its values at a bound is logged as a warning.
    """
    dtc = config.dt
    n_layers = len(arch) - 1
    n_dyn = n_layers - (1 if config.model.output == "ce" else 0)
    het = set(dtc.heterogeneous_layers(n_dyn, n_layers))
    dts = []
    for l, shape in enumerate(_layer_shapes(config, arch), start=1):
        if l > n_dyn:
            dts.append(np.ones(shape))
        elif l in het:
            d = _sample_layer_dt(dtc, shape, rng)
            _check_spread(dtc, l, d, warn)
            dts.append(d)
        else:
            dts.append(np.full(shape, float(np.clip(dtc.mean, dtc.dt_min, dtc.dt_max))))
    return dts


def init_network(config, dtype=np.float64) -> Network:
    """Initialise weights and biases ~ U(-k, k), k = init_scale / sqrt(fan_in), and sample dt.

    fan_in: n_{l-1} for a dense connection, C_{l-1} k^2 for a conv2d kernel; a conv layer
    has one bias per channel. Randomness comes from ``config.train.seed`` only (see
    :func:`rng_streams`).
    """
    arch = config.model.arch
    seed = config.train.seed
    rng = rng_streams(seed, "init")
    spec = network_spec(config)
    if spec is None:
        layers = [((n_out, n_in), (n_out,), n_in) for n_in, n_out in zip(arch[:-1], arch[1:])]
    else:
        layers = []
        for c in spec.connections:
            pre, post = spec.layer(c.pre).shape, spec.layer(c.post).shape
            kind, opts = CONNECTIONS.get(c.kind), spec.options(c)
            layers.append((kind.param_shapes(pre, post, **opts)["weight"], bias_shape(post), kind.fan_in(pre, post, **opts)))
        if config.model.output == "ce":
            layers.append(((arch[-1], arch[-2]), (arch[-1],), arch[-2]))
    weights, biases, buffers = [], [], []
    for l, (w_shape, b_shape, fan_in) in enumerate(layers, start=1):
        k = config.model.init_scale / np.sqrt(fan_in)
        kind = CONNECTIONS.get(spec.connections[l - 1].kind) if spec is not None and l <= len(spec.connections) else None
        if kind is not None and hasattr(kind, "draw_buffers"):  # masks from their own stream, then the kind's own init
            c = spec.connections[l - 1]
            pre, post, opts = spec.layer(c.pre).shape, spec.layer(c.post).shape, spec.options(c)
            bufs = kind.draw_buffers(pre, post, rng_streams(seed, "mask", l), **opts)
            weights.append(kind.init_weight(pre, post, bufs, rng, config.model.init_scale, **opts))
            bias = rng.uniform(-k, k, b_shape)
            biases.append(bias if opts.get("soma_bias", True) else np.zeros(b_shape))
            buffers.append(bufs)
            continue
        weights.append(rng.uniform(-k, k, w_shape))
        biases.append(rng.uniform(-k, k, b_shape))
        buffers.append({})
    dts = sample_network_dts(config, arch, rng_streams(seed, "dt"))
    net = Network(weights, biases, dts, config.model.form, config.model.activation, config.model.output, spec=spec,
                  buffers=buffers, nudge=config.model.nudge)
    net.local = init_local(config, net)
    if net.local is not None:
        net._check_local()
    return net.astype(dtype)


def init_local(config, net: Network) -> LocalCosts | None:
    """The local readouts of ``config.local`` for ``net`` (None when it has no local costs).

    R_l ~ U(-k, k), k = local.init_scale / sqrt(n_l), from its own stream
    ``rng_streams(seed, "local", l)``, so the network's weights and dts do not depend on it.
    """
    lc = getattr(config, "local", None)
    if lc is None or not lc.active:
        return None
    layers = lc.layer_indices(net.n_dynamic)
    weights = []
    for l in layers:
        n = int(np.prod(net.shapes[l]))
        k = lc.init_scale / np.sqrt(n)
        weights.append(rng_streams(config.train.seed, "local", l).uniform(-k, k, (net.arch[-1], n)))
    return LocalCosts(layers, weights, lc.beta, config.model.output, lc.readout == "learned")
