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

Per epoch, each is the plain mean over the epoch's batches (every batch counts once).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["BatchDiagnostics", "Diagnostics", "EpochAccumulator", "state_gaps", "grad_abs_means", "diagnostic_names"]


@dataclass
class BatchDiagnostics:
    """One training batch's diagnostics: ``state_gap`` (n_layers,) and ``grad_abs`` (n_connections,), float64."""

    state_gap: np.ndarray
    grad_abs: np.ndarray


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

    def append(self, state_gap, grad_abs) -> None:
        """Add one epoch's row (arrays of n_layers and n_connections values)."""
        self.state_gap = np.vstack([self.state_gap, np.asarray(state_gap, dtype=np.float64)[None, :]])
        self.grad_abs = np.vstack([self.grad_abs, np.asarray(grad_abs, dtype=np.float64)[None, :]])

    def pad_to(self, epochs: int) -> None:
        """Prepend NaN rows so that there is one row per epoch up to ``epochs`` (a run resumed from a file without them)."""
        missing = epochs - self.n_epochs
        if missing > 0:
            self.state_gap = np.vstack([np.full((missing, len(self.layers)), np.nan), self.state_gap])
            self.grad_abs = np.vstack([np.full((missing, len(self.connections)), np.nan), self.grad_abs])


class EpochAccumulator:
    """Sums of the batches' diagnostics of one epoch (float64); :meth:`mean` is the epoch's row."""

    def __init__(self, n_layers: int, n_connections: int):
        self.gap = np.zeros(n_layers, dtype=np.float64)
        self.grad = np.zeros(n_connections, dtype=np.float64)
        self.n = 0

    def add(self, d: BatchDiagnostics | None) -> None:
        if d is None:
            return
        self.gap += d.state_gap
        self.grad += d.grad_abs
        self.n += 1

    def mean(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n == 0:
            return np.full_like(self.gap, np.nan), np.full_like(self.grad, np.nan)
        return self.gap / self.n, self.grad / self.n
