"""Learning-signal diagnostics per layer (docs/FAMILY.md section 5, docs/FORMAT.md "/diagnostics").

The deep-EP papers' two measures of how far the learning signal reaches down a network,
computed from arrays a training step already has (no extra relaxation):

* **state gap** of relaxed layer l: the batch mean of the per-sample L2 norm of the
  contrast's state difference, scaled to one nudge of strength beta::

      gap_l = mean_b || s_l^a[b] - s_l^b[b] ||_2 * max(|beta_a|, |beta_b|) / |beta_a - beta_b|

  One-sided (and random-sign) EP: ``s^beta - s^0``; symmetric EP: ``(s^+beta - s^-beta) / 2``;
  CHL (divisor 1): ``s^clamped - s^free``. The norm runs over every unit of the layer
  (C x H x W for an image layer), so a wider layer of the same per-unit gap has a larger
  norm (by sqrt(n)).
* **gradient size** of connection l: the mean over the weight's entries of ``|g_W_l|``,
  the engine's estimate of the gradient (the descent direction, batch mean, BEFORE the
  optimiser: no learning rate, no Adam scaling). A dendritic connection's flat weight
  vector (basal W, branch biases c, apical A) is averaged as one; biases are not included.

* **hidden-state activity** of relaxed layer l at the free phase's end (the dendritic-EP
  paper's analysis of how distributed the representation is; :func:`activity_stats`):
  ``mean_abs`` = mean over samples and units of ``|s|``; ``active_frac`` = fraction of
  (sample, unit) pairs with ``|s| > ACTIVE_THRESHOLD`` (0.01, 1 % of a unit's [0, 1]
  range: a leaky unit driven below zero decays toward 0 but never reaches it exactly);
  ``entropy`` = batch mean of the normalised entropy of each sample's activity
  distribution ``p_i = |s_i| / sum_j |s_j|``, ``-sum_i p_i log p_i / log n`` in [0, 1]
  (1: every unit equally active; 0: one unit carries it all; NaN for an all-zero sample
  is left out of the mean).

Per epoch, each is the plain mean over the epoch's batches (every batch counts once).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["ACTIVITY_STATS", "ACTIVE_THRESHOLD", "BatchDiagnostics", "Diagnostics", "EpochAccumulator", "state_gaps",
           "grad_abs_means", "activity_stats", "diagnostic_names"]

#: the columns of :func:`activity_stats`, in order
ACTIVITY_STATS = ("mean_abs", "active_frac", "entropy")
#: |s| above which a unit counts as active
ACTIVE_THRESHOLD = 0.01


@dataclass
class BatchDiagnostics:
    """One training batch's diagnostics: ``state_gap`` (n_layers,) and ``grad_abs`` (n_connections,), float64."""

    state_gap: np.ndarray
    grad_abs: np.ndarray
    #: (n_layers, len(ACTIVITY_STATS)) free-phase activity; None when not computed
    activity: np.ndarray | None = None


def state_gaps(states_a, states_b, beta_a: float, beta_b: float) -> np.ndarray:
    """Per relaxed layer, mean over the batch of ||s^a - s^b||_2 (per sample) times max(|beta_a|, |beta_b|) / |beta_a - beta_b|.

    The difference and the squares are formed in the states' dtype, the sums in float64.
    """
    scale = max(abs(float(beta_a)), abs(float(beta_b))) / abs(float(beta_a) - float(beta_b))
    out = np.empty(len(states_a), dtype=np.float64)
    for l, (a, b) in enumerate(zip(states_a, states_b)):
        d = np.subtract(a, b)
        B = d.shape[0]
        d = d.reshape(B, -1)
        out[l] = float(np.sqrt(np.einsum("ij,ij->i", d, d, dtype=np.float64)).sum()) / B * scale if B else np.nan
    return out


def activity_stats(states) -> np.ndarray:
    """(n_layers, 3) float64: mean |s|, active fraction (|s| > ACTIVE_THRESHOLD) and the batch mean
    of the normalised activity entropy ``-sum_i p_i log p_i / log n`` (``p_i = |s_i| / sum_j |s_j|``)
    of each relaxed layer's free-phase states (module docstring)."""
    out = np.empty((len(states), len(ACTIVITY_STATS)), dtype=np.float64)
    for l, s in enumerate(states):
        a = np.abs(np.asarray(s, dtype=np.float64).reshape(len(s), -1))
        n = a.shape[1]
        out[l, 0] = float(a.mean()) if a.size else np.nan
        out[l, 1] = float(np.mean(a > ACTIVE_THRESHOLD)) if a.size else np.nan
        tot = a.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = a / tot
            h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1) / np.log(n) if n > 1 else np.full(len(a), np.nan)
        h = h[tot[:, 0] > 0]
        out[l, 2] = float(h.mean()) if h.size else np.nan
    return out


def grad_abs_means(gW) -> np.ndarray:
    """Per connection, the mean of |g_W| over the weight's entries (summed in float64)."""
    return np.array([float(np.abs(g).sum(dtype=np.float64)) / g.size if np.size(g) else np.nan for g in gW],
                    dtype=np.float64)


def diagnostic_names(spec) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(relaxed layer names, connection names) of a :class:`~neuro_hts.spec.NetworkSpec`, input to output.

    Connections are named ``pre->post``; a cost with parameters (the softmax readout of
    ``output = "ce"``) adds ``<layer>->readout`` as the last connection.
    """
    layers = tuple(ly.name for ly in spec.layers[1:])
    conns = [f"{c.pre}->{c.post}" for c in spec.connections]
    for c in spec.costs:
        if c.kind == "ce":
            conns.append(f"{c.layer}->readout")
    return layers, tuple(conns)


@dataclass
class Diagnostics:
    """The per-epoch series of a run (``/diagnostics`` of the run file); empty when not recorded.

    ``state_gap`` (epochs, n_layers) and ``grad_abs`` (epochs, n_connections), float64;
    row k belongs to epoch k + 1 (NaN rows: epochs trained before diagnostics were recorded,
    e.g. by an older neuro-hts the run was resumed from). ``layers`` / ``connections`` name
    the columns, input to output; both empty when the run has no diagnostics.
    """

    layers: tuple[str, ...] = ()
    connections: tuple[str, ...] = ()
    state_gap: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    grad_abs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    #: (epochs, n_layers, len(ACTIVITY_STATS)); NaN where not recorded (older files)
    activity: np.ndarray | None = None

    def __post_init__(self):
        if self.activity is None:
            self.activity = np.full((self.state_gap.shape[0], len(self.layers), len(ACTIVITY_STATS)), np.nan)

    @classmethod
    def start(cls, layers, connections) -> "Diagnostics":
        """No epoch yet, columns named."""
        return cls(tuple(layers), tuple(connections), np.zeros((0, len(layers))), np.zeros((0, len(connections))))

    @property
    def recorded(self) -> bool:
        """Whether the run records diagnostics at all (its columns are named)."""
        return bool(self.layers or self.connections)

    @property
    def n_epochs(self) -> int:
        return int(self.state_gap.shape[0])

    def append(self, state_gap, grad_abs, activity=None) -> None:
        """Add one epoch's row (arrays of n_layers and n_connections values; ``activity`` (n_layers, 3) or None)."""
        self.state_gap = np.vstack([self.state_gap, np.asarray(state_gap, dtype=np.float64)[None, :]])
        self.grad_abs = np.vstack([self.grad_abs, np.asarray(grad_abs, dtype=np.float64)[None, :]])
        act = np.full((len(self.layers), len(ACTIVITY_STATS)), np.nan) if activity is None else activity
        self.activity = np.concatenate([self.activity, np.asarray(act, dtype=np.float64)[None]], axis=0)

    def pad_to(self, epochs: int) -> None:
        """Prepend NaN rows so that there is one row per epoch up to ``epochs`` (a run resumed from a file without them)."""
        missing = epochs - self.n_epochs
        if missing > 0:
            self.state_gap = np.vstack([np.full((missing, len(self.layers)), np.nan), self.state_gap])
            self.grad_abs = np.vstack([np.full((missing, len(self.connections)), np.nan), self.grad_abs])
            self.activity = np.concatenate([np.full((missing, len(self.layers), len(ACTIVITY_STATS)), np.nan),
                                            self.activity], axis=0)


class EpochAccumulator:
    """Sums of the batches' diagnostics of one epoch (float64); :meth:`mean` is the epoch's row."""

    def __init__(self, n_layers: int, n_connections: int):
        self.gap = np.zeros(n_layers, dtype=np.float64)
        self.grad = np.zeros(n_connections, dtype=np.float64)
        self.act = np.zeros((n_layers, len(ACTIVITY_STATS)), dtype=np.float64)
        self.n = 0
        self.n_act = 0

    def add(self, d: BatchDiagnostics | None) -> None:
        if d is None:
            return
        self.gap += d.state_gap
        self.grad += d.grad_abs
        self.n += 1
        if d.activity is not None:
            self.act += d.activity
            self.n_act += 1

    def mean(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(state gap, grad abs, activity) means of the epoch (NaN where nothing was added)."""
        act = self.act / self.n_act if self.n_act else np.full_like(self.act, np.nan)
        if self.n == 0:
            return np.full_like(self.gap, np.nan), np.full_like(self.grad, np.nan), act
        return self.gap / self.n, self.grad / self.n, act
