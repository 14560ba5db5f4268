"""Sleep-like replay consolidation (SRC): a spiking, STDP-driven replay run on a trained net.

The algorithm of Tadros, Krishnan, Ramyaa and Bazhenov (Nature Communications 13, 2022)
as given step by step in docs/FAMILY.md section 4, applied to an EP network:

1. the trained weights W_1 ... W_L drive a spiking copy of the net without biases
   (``SleepConfig.use_biases``: with them);
2. per-layer input gains alpha_l from data-based normalisation (:func:`input_gains`) on
   the layer activations of the data seen so far (:func:`layer_activations`);
3. integrate-and-fire neurons with decay, a threshold beta_l per layer and reset to 0 on a
   spike (:func:`membrane_update`);
4. input: Poisson spikes (:func:`poisson_rate`) from the mean image of the seen tasks
   (``SleepConfig.input = "seen"``; ``"current"``: of the task just learned, as the Python
   replica does), masked to a random square window every iteration (:func:`window_mask`);
5. STDP on every post spike (:func:`stdp_update`) with the weight-dependent factor g
   (:func:`stdp_factor`);
6. iterations after task k: ``iterations_first + iterations_per_task (k - 1)``
   (:func:`sleep_iterations`).

INFERENCE (docs/FAMILY.md), named options here: the sleep runs on the forward weights
W_l, which in a symmetric EP net are also the feedback W_l^T, so both directions change
together; alpha from the free-phase steady states (``alpha_source = "free"``; or
``"feedforward"``: s_l = sigma(W_l s_{l-1} + b_l) without feedback); biases off.

The spiking loop is one Numba kernel per chunk of iterations (:func:`_sleep_kernel`), fed
with random numbers drawn outside it (input spikes and window positions from an explicit
``np.random.Generator``), and tested against the NumPy reference :func:`sleep_reference`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from .errors import ConfigError

__all__ = [
    "SleepConfig", "G_FUNCTIONS", "ALPHA_SOURCES", "SLEEP_INPUTS", "poisson_rate", "poisson_spikes", "window_mask", "stdp_factor",
    "stdp_update", "membrane_update", "input_gains", "layer_activations", "sleep_iterations", "sleep_reference",
    "sleep", "SleepResult",
]

logger = logging.getLogger(__name__)

#: the weight-dependent STDP factor g(W): "sigmoid" (the Python replica), "matlab"
#: (2 (1 - 1 / (1 + exp(-W / 0.001))), the MATLAB code), "one" (g = 1, additive STDP)
G_FUNCTIONS = ("sigmoid", "matlab", "one")
_G_CODES = {name: i for i, name in enumerate(G_FUNCTIONS)}
#: where the layer activations for the input gains come from
ALPHA_SOURCES = ("free", "feedforward")
#: whose mean image drives the sleep after task k: the tasks seen so far (the MATLAB code,
#: ``utils/create_masked_input`` called on tasks 1..k) or the current task only (the
#: Python replica, which calls it on task k's training images)
SLEEP_INPUTS = ("seen", "current")


@dataclass(frozen=True)
class SleepConfig:
    """Sleep parameters (``[sleep]`` of a continual config). Defaults: the published MNIST values.

    ``thresholds``: beta_l, one per weight layer (a longer list is cut to the net's depth;
    the published three are for 784-1200-1200-10). ``mask_size``: side of the square
    input window in pixels (0: the whole image). ``dt`` in seconds, ``max_rate`` in Hz.
    """

    max_rate: float = 239.5
    inc: float = 0.0321
    dec: float = 0.00334
    thresholds: tuple[float, ...] = (14.55, 44.56, 38.05)
    alpha_scale: float = 55.88
    decay: float = 0.999
    dt: float = 0.001
    mask_size: int = 11
    g: str = "sigmoid"
    iterations_first: int = 15000
    iterations_per_task: int = 5000
    use_biases: bool = False
    alpha_source: str = "free"
    input: str = "seen"

    def __post_init__(self):
        th = self.thresholds if isinstance(self.thresholds, (list, tuple)) else (self.thresholds,)
        object.__setattr__(self, "thresholds", tuple(float(v) for v in th))
        for f in ("max_rate", "inc", "dec", "alpha_scale", "decay", "dt"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"[sleep] {f} must be a finite number, got {v!r}")
        if self.max_rate < 0 or self.inc < 0 or self.dec < 0 or self.dt <= 0 or self.alpha_scale <= 0:
            raise ConfigError("[sleep] max_rate, inc, dec >= 0 and dt, alpha_scale > 0 are required")
        if not 0.0 <= self.decay <= 1.0:
            raise ConfigError(f"[sleep] decay must be in [0, 1], got {self.decay}")
        if not self.thresholds or any(not (math.isfinite(v) and v > 0) for v in self.thresholds):
            raise ConfigError(f"[sleep] thresholds must be positive numbers, got {self.thresholds}")
        for f in ("mask_size", "iterations_first", "iterations_per_task"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"[sleep] {f} must be a non-negative integer, got {v!r}")
        if self.g not in G_FUNCTIONS:
            raise ConfigError(f"[sleep] g must be one of {', '.join(G_FUNCTIONS)}, got {self.g!r}")
        if self.alpha_source not in ALPHA_SOURCES:
            raise ConfigError(f"[sleep] alpha_source must be one of {', '.join(ALPHA_SOURCES)}, got {self.alpha_source!r}")
        if self.input not in SLEEP_INPUTS:
            raise ConfigError(f"[sleep] input must be one of {', '.join(SLEEP_INPUTS)}, got {self.input!r}")
        if not isinstance(self.use_biases, bool):
            raise ConfigError(f"[sleep] use_biases must be true or false, got {self.use_biases!r}")

    def layer_thresholds(self, n_layers: int) -> np.ndarray:
        """beta_1 ... beta_L for a net of ``n_layers`` weight layers."""
        if len(self.thresholds) < n_layers:
            raise ConfigError(f"[sleep] thresholds has {len(self.thresholds)} values for {n_layers} weight layers")
        return np.array(self.thresholds[:n_layers], dtype=np.float64)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["thresholds"] = list(self.thresholds)
        return d


# ----------------------------------------------------------------------------- equations


def poisson_rate(x: np.ndarray, dt: float, max_rate: float) -> np.ndarray:
    """Spike probability per iteration of an input of intensity x in [0, 1]: p = min(1, 2 dt max_rate x).

    (The original draws u ~ U[0, 1) times 1 / (2 dt max_rate) and spikes where that is <= x.)
    """
    return np.minimum(1.0, 2.0 * dt * max_rate * np.asarray(x, dtype=np.float64))


def poisson_spikes(rate: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` iterations of independent Bernoulli(rate_i) spikes, (n, D) uint8: 1 where u < p."""
    return (rng.random((n, rate.shape[0])) < rate).astype(np.uint8)


def window_mask(image_shape: tuple[int, int], size: int, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` masks (n, H*W) uint8, each 1 on a random size x size window (top-left uniform on 0..H-size).

    ``size = 0`` or ``size >= min(H, W)``: the whole image.
    """
    h, w = image_shape
    if size == 0 or size >= min(h, w):
        return np.ones((n, h * w), dtype=np.uint8)
    rows = rng.integers(0, h - size + 1, n)
    cols = rng.integers(0, w - size + 1, n)
    m = np.zeros((n, h, w), dtype=np.uint8)
    for i, (r, c) in enumerate(zip(rows, cols)):
        m[i, r : r + size, c : c + size] = 1
    return m.reshape(n, h * w)


def stdp_factor(w: np.ndarray, kind: str) -> np.ndarray:
    """g(W): "sigmoid" 1 / (1 + exp(-W)); "matlab" 2 (1 - 1 / (1 + exp(-W / 0.001))); "one" 1."""
    w = np.asarray(w, dtype=np.float64)
    if kind == "sigmoid":
        return 1.0 / (1.0 + np.exp(-w))
    if kind == "matlab":
        return 2.0 * (1.0 - 1.0 / (1.0 + np.exp(np.clip(-w / 0.001, -700.0, 700.0))))
    if kind == "one":
        return np.ones_like(w)
    raise ConfigError(f"unknown STDP factor g {kind!r}; choose one of {', '.join(G_FUNCTIONS)}")


def stdp_update(w: np.ndarray, pre: np.ndarray, post: np.ndarray, inc: float, dec: float, kind: str) -> np.ndarray:
    """STDP on every post spike: W_ij += inc g(W_ij) if pre_j spiked, W_ij -= dec g(W_ij) if not.

    Rows of neurons i that did not spike are unchanged. ``pre`` (n_in,), ``post`` (n_out,)
    0/1; returns the new W (n_out, n_in).
    """
    g = stdp_factor(w, kind)
    post = np.asarray(post, dtype=bool)[:, None]
    pre = np.asarray(pre, dtype=bool)[None, :]
    dw = np.where(pre, inc * g, -dec * g)
    return np.where(post, w + dw, w)


def membrane_update(v: np.ndarray, impulse: np.ndarray, decay: float, threshold: float):
    """v <- decay v + impulse; spike where v >= threshold; then v <- 0 where it spiked.

    Returns (v after reset, spikes 0/1). The impulse of layer l is alpha_l W_l s_{l-1}
    (+ alpha_l b_l with biases), s_{l-1} the spikes of the layer below at this iteration.
    """
    v = decay * v + impulse
    spikes = (v >= threshold).astype(np.uint8)
    return np.where(spikes.astype(bool), 0.0, v), spikes


def input_gains(weights: list[np.ndarray], activations: list[np.ndarray], alpha_scale: float) -> np.ndarray:
    """Data-based normalisation: alpha_l = alpha_scale / f_l.

    lambda_l = max(max(0, W_l), max(0, a_l)) with a_l the activations of layer l on the seen
    data; f_0 = 1, f_l = lambda_l / f_{l-1}.
    """
    if len(weights) != len(activations):
        raise ValueError(f"{len(weights)} weight layers but {len(activations)} activation arrays")
    f_prev = 1.0
    alphas = []
    for w, a in zip(weights, activations):
        lam = max(float(np.max(np.maximum(0.0, w))), float(np.max(np.maximum(0.0, a))) if a.size else 0.0)
        if lam <= 0:
            raise ConfigError("input gains: a layer has no positive weight and no positive activation")
        f = lam / f_prev
        alphas.append(alpha_scale / f)
        f_prev = f
    return np.array(alphas, dtype=np.float64)


def sleep_iterations(task: int, cfg: SleepConfig) -> int:
    """Iterations of the sleep after task ``task`` (1-based): iterations_first + iterations_per_task (task - 1)."""
    if task < 1:
        raise ValueError(f"task numbers start at 1, got {task}")
    return cfg.iterations_first + cfg.iterations_per_task * (task - 1)


def layer_activations(backend, net, x: np.ndarray, t1: int, source: str = "free", batch_size: int = 1000) -> list[np.ndarray]:
    """Activations a_1 ... a_L of every weight layer on ``x`` for :func:`input_gains`.

    ``"free"``: the free-phase states after ``t1`` steps (with a softmax readout its
    logits last); ``"feedforward"``: s_l = sigma(W_l s_{l-1} + b_l), no feedback. Returns
    one (N, n_l) array per weight layer.
    """
    from .activations import get_activation
    from .dynamics import predict_scores

    if source == "feedforward":
        sigma = get_activation(net.activation)[0]
        s = np.asarray(x, dtype=np.float64).reshape(x.shape[0], -1)
        out = []
        for l, (w, b) in enumerate(zip(net.weights, net.biases), start=1):
            h = s @ np.asarray(w, np.float64).T + b
            s = h if (net.output == "ce" and l == net.n_layers) else sigma(h)
            out.append(s)
        return out
    parts: list[list[np.ndarray]] = [[] for _ in range(net.n_layers)]
    for start in range(0, x.shape[0], batch_size):
        xb = np.ascontiguousarray(x[start : start + batch_size], dtype=net.dtype)
        res = backend.relax(net, xb, t1)
        for l, s in enumerate(res.states):
            parts[l].append(np.asarray(s, np.float64).reshape(len(xb), -1))
        if net.output == "ce":
            parts[-1].append(np.asarray(predict_scores(net, res.states), np.float64))
    return [np.concatenate(p) for p in parts]


# ----------------------------------------------------------------------------- kernel


@njit(cache=True, inline="always")
def _g(w, kind):
    if kind == 0:
        return 1.0 / (1.0 + math.exp(-w))
    if kind == 1:
        return 2.0 * (1.0 - 1.0 / (1.0 + math.exp(-w / 0.001)))
    return 1.0


@njit(cache=True)
def _sleep_kernel(Ws, bs, alphas, thresholds, decay, inc, dec, g_kind, in_spikes, mems, spike_counts):
    """Run ``in_spikes.shape[0]`` iterations in place on ``Ws`` and ``mems`` (see :func:`sleep_reference`).

    Ws: tuple of (n_l, n_{l-1}) float64; bs: tuple of (n_l,) (zeros without biases);
    in_spikes: (T, n_0) uint8; mems: tuple of (n_l,) float64 membranes; spike_counts:
    tuple of (n_l,) int64, incremented by every spike.
    """
    T = in_spikes.shape[0]
    L = len(Ws)
    n_max = in_spikes.shape[1]
    for l in range(L):
        if Ws[l].shape[0] > n_max:
            n_max = Ws[l].shape[0]
    pre_idx = np.empty(n_max, dtype=np.int64)
    post_idx = np.empty(n_max, dtype=np.int64)
    pre_flag = np.zeros(n_max, dtype=np.uint8)
    for t in range(T):
        n_pre = 0
        for j in range(in_spikes.shape[1]):
            if in_spikes[t, j]:
                pre_idx[n_pre] = j
                n_pre += 1
        for l in range(L):
            W = Ws[l]
            n_out, n_in = W.shape
            v = mems[l]
            a = alphas[l]
            thr = thresholds[l]
            b = bs[l]
            for j in range(n_in):
                pre_flag[j] = 0
            for k in range(n_pre):
                pre_flag[pre_idx[k]] = 1
            n_post = 0
            for i in range(n_out):
                acc = b[i]
                for k in range(n_pre):
                    acc += W[i, pre_idx[k]]
                v[i] = decay * v[i] + a * acc
                if v[i] >= thr:
                    post_idx[n_post] = i
                    n_post += 1
            for k in range(n_post):
                i = post_idx[k]
                for j in range(n_in):
                    w = W[i, j]
                    if pre_flag[j]:
                        W[i, j] = w + inc * _g(w, g_kind)
                    else:
                        W[i, j] = w - dec * _g(w, g_kind)
                v[i] = 0.0
                spike_counts[l][i] += 1
            for k in range(n_post):
                pre_idx[k] = post_idx[k]
            n_pre = n_post


def sleep_reference(weights, biases, alphas, thresholds, decay, inc, dec, g, in_spikes, mems=None):
    """The spiking sleep in NumPy, iteration by iteration (the oracle of the Numba kernel).

    For each iteration t and layer l = 1 ... L, with s_0 = ``in_spikes[t]``:
    impulse = alpha_l (W_l s_{l-1} + b_l); :func:`membrane_update`; :func:`stdp_update`
    on the post spikes s_l (before the reset; W_l changes before layer l+1 is driven).
    Returns (weights, membranes, spike counts) as new lists.
    """
    Ws = [np.array(w, dtype=np.float64) for w in weights]
    bs = [np.array(b, dtype=np.float64) for b in biases]
    vs = [np.zeros(w.shape[0]) for w in Ws] if mems is None else [np.array(v, dtype=np.float64) for v in mems]
    counts = [np.zeros(w.shape[0], dtype=np.int64) for w in Ws]
    for t in range(in_spikes.shape[0]):
        pre = in_spikes[t].astype(np.uint8)
        for l in range(len(Ws)):
            impulse = alphas[l] * (Ws[l] @ pre + bs[l])
            vs[l], post = membrane_update(vs[l], impulse, decay, thresholds[l])
            Ws[l] = stdp_update(Ws[l], pre, post, inc, dec, g)
            counts[l] += post
            pre = post
    return Ws, vs, counts


# ----------------------------------------------------------------------------- public


@dataclass
class SleepResult:
    """What a sleep did: iterations, input gains, spikes per layer (total) and the weight change norm."""

    iterations: int
    alphas: list[float]
    spikes_per_layer: list[int]
    weight_change: list[float]  # ||W_after - W_before||_F per layer
    seconds: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _image_shape(n_in: int) -> tuple[int, int]:
    side = int(round(math.sqrt(n_in)))
    if side * side != n_in:
        raise ConfigError(f"sleep needs square input images for its window mask; {n_in} inputs is not square")
    return side, side


def sleep(net, x_seen: np.ndarray, cfg: SleepConfig, n_iterations: int, rng: np.random.Generator, *,
          activations: list[np.ndarray], chunk: int = 1000) -> SleepResult:
    """Run SRC on ``net`` in place: its weights change, nothing else.

    Parameters
    ----------
    net : Network (dense)
    x_seen : (N, D) the training inputs whose mean image drives the sleep (run_protocol passes the tasks seen so far,
        or with ``cfg.input = "current"`` the task just learned)
    cfg : SleepConfig
    n_iterations : number of iterations (:func:`sleep_iterations`)
    rng : the only source of randomness (input spikes, window positions)
    activations : per weight layer (N', n_l), for :func:`input_gains` (:func:`layer_activations`)
    """
    import time

    if not net.is_dense:
        raise ConfigError("sleep runs dense networks only")
    t0 = time.perf_counter()
    L = net.n_layers
    thresholds = cfg.layer_thresholds(L)
    W64 = [np.ascontiguousarray(w, dtype=np.float64) for w in net.weights]
    before = [w.copy() for w in W64]
    alphas = input_gains(W64, activations, cfg.alpha_scale)
    bs = tuple(np.ascontiguousarray(b, dtype=np.float64) if cfg.use_biases else np.zeros(b.shape[0]) for b in net.biases)
    x2 = np.asarray(x_seen, dtype=np.float64).reshape(x_seen.shape[0], -1)
    rate = poisson_rate(x2.mean(axis=0), cfg.dt, cfg.max_rate)
    shape = _image_shape(x2.shape[1])
    mems = tuple(np.zeros(w.shape[0]) for w in W64)
    counts = tuple(np.zeros(w.shape[0], dtype=np.int64) for w in W64)
    Ws = tuple(W64)
    done = 0
    while done < n_iterations:
        n = min(chunk, n_iterations - done)
        mask = window_mask(shape, cfg.mask_size, rng, n)
        spikes = (rng.random((n, rate.shape[0])) < rate).astype(np.uint8) * mask
        _sleep_kernel(Ws, bs, alphas, thresholds, float(cfg.decay), float(cfg.inc), float(cfg.dec), _G_CODES[cfg.g],
                      np.ascontiguousarray(spikes), mems, counts)
        done += n
    for w, new in zip(net.weights, Ws):
        w[...] = new.astype(w.dtype)
    res = SleepResult(int(n_iterations), [float(a) for a in alphas], [int(c.sum()) for c in counts],
                      [float(np.linalg.norm(a - b)) for a, b in zip(Ws, before)], time.perf_counter() - t0)
    logger.info("sleep: %d iterations, alphas %s, spikes per layer %s, |dW| %s (%.1f s)", res.iterations,
                ", ".join(f"{a:.3g}" for a in res.alphas), res.spikes_per_layer,
                ", ".join(f"{d:.3g}" for d in res.weight_change), res.seconds)
    return res
