"""The EP weight update in fixed point, and training with it (``train.arith = "fixed"``).

The float estimate is :func:`neuro_hts.dynamics.ep_gradients`; this module computes the
same estimate, with the same sign convention and the same nudging kinds, from the INTEGER
states of :class:`~neuro_hts.hardware.fixed_sim.FixedPointSimulator`, and expresses the
resulting weight change on the target's weight grid.

Notation: ``S`` state fraction bits, ``F`` activation fraction bits, ``D`` decay bits
(the nudge strength is ``beta_int = rint(beta * 2**D)``, as the simulator uses it),
layer ``l`` has exponent ``e_l``, mantissa spacing ``lsb`` (2 on Loihi 2, whose weights
are even) and range ``[-max_int, max_int]``. ``(a, b)`` are the two phases of the
estimate: one-sided ``(s^beta, s^0)``, symmetric ``(s^+beta, s^-beta)``, random-sign
``(s^{+-beta}, s^0)``.

Equations (each in one function)
--------------------------------

* Traces (:func:`traces`): what a synapse sees of each layer, the graded-spike payloads
  ``r_0 = x_int = rint(x * 2**F)`` and ``r_l = a_int(s_l)`` (the simulator's own payload
  rule; identity when ``S == F``), all in units ``2**-F``.
* Integer contrast (:func:`ep_contrast`), summed over the batch, exact int64::

      C_l = sum_b ( r_l^a[b] r_{l-1}^a[b]^T - r_l^b[b] r_{l-1}^b[b]^T )    units 2**-2F
      c_l = sum_b ( r_l^a[b] - r_l^b[b] )                                  units 2**-F

* Contrast scale (:func:`contrast_scale`): the real value of one contrast unit in the EP
  estimate, ``2**D / ((beta_a_int - beta_b_int) * B) * 2**-(k F)`` with ``k = 2`` for
  weights, ``1`` for biases. The float-valued gradient (descent direction, like
  ``ep_gradients``) is ``g = -C * scale`` (:func:`fixed_ep_gradients`).
* Plain SGD step in grid units (:func:`update_multiplier`, :func:`round_shift`): the
  weight change ``lr * C * scale`` is expressed in units of the layer's weight LSB
  ``lsb * 2**e_l`` through a fixed-point multiplier ``M * 2**-K`` (``M`` a signed integer
  of at most :data:`MULTIPLIER_BITS` bits), then ``q = R(C * M / 2**K)`` with R nearest
  (:func:`~neuro_hts.hardware.fixed_point.shift_right_round_nearest`: ties toward plus
  infinity) or stochastic (``floor((C * M + U) / 2**K)``, ``U`` uniform integer in
  ``[0, 2**K)`` from an explicit ``numpy.random.Generator``: unbiased).
* Application with saturation (:func:`apply_weight_update`, :func:`apply_bias_update`):
  ``m <- clip(m + lsb * q, -max_int, max_int)``; ``bias <- saturate(bias + q_b, IB)``.
* One layer's step, :func:`layer_update` (multipliers, then rounding: the weights' draws,
  then the biases'), is what both the Numba engine (:func:`fixed_ep_update`, layer by
  layer) and the Lava connection model (:mod:`neuro_hts.lava.proc.ep`) call;
  :func:`skip_layer_draws` advances a Generator past another layer's draws.

Biases: a Loihi neuron's bias is a neuron parameter in STATE units ``2**-S`` (see
:mod:`.quantize`), not a synaptic weight, so the bias update is its own entry with its own
grid: ``lr * c * scale`` in units ``2**-S``, rounded the same way, saturated at the
``state.input_bits`` signed range. :func:`compare_updates` reports it as its own row
(``b1``, ``b2``, ...), next to the weight rows (``W1``, ``W2``, ...).

Training (:class:`~neuro_hts.hardware.fixed_engine.FixedEngine`): weights live on the grid ``m * 2**e_l`` with a
per-layer exponent fixed from the initial network (the smallest exponent in the target's
range that holds it, as :func:`~neuro_hts.hardware.fixed_point.quantize_weights` picks),
biases on the ``2**-S`` grid. Each batch quantizes the current network exactly (no
rounding: it is on the grid), relaxes it with the simulator, and updates it:

* optimizer ``sgd`` without momentum: the fully integer path above;
* ``adam`` (or SGD with momentum): the optimiser runs on the fixed-point EP gradient
  :func:`fixed_ep_gradients` (a host-side float optimiser state), and its proposed step is
  rounded onto the grid with :func:`round_to_grid` (stochastic by default).

Float network values stay exact: ``m * 2**e`` and ``bias * 2**-S`` are representable in
float32 for 8-bit mantissas and 24-bit biases. The integer products of the contrast go
through float64 BLAS when every partial sum is below 2**53 (exact), else int64 matmul.

Measured caveat (MNIST 784-512-10, Loihi 2, ``check-updates``): with ONE-SIDED nudging at
beta = 0.1 most hidden neurons' nudged state equals their free state in integers (the
leaky step's dead zone, :func:`~neuro_hts.hardware.fixed_point.leaky_decay_step`), so the
W1 update has cosine ~0.76 with the float one; the symmetric contrast ``s^+beta - s^-beta``
starts both phases from the same stalled free state and reaches ~0.96.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from ..algorithms import EP, Plan, run_phases
from ..errors import ConfigError
from ..network import Network
from .fixed_point import (
    dt_to_decay,
    quantize_weights,
    saturate,
    shift_right_round_nearest,
)
from .fixed_sim import FixedPointSimulator, _activations
from .quantize import (
    DeployBundle,
    LayerBundle,
    _frozen,
    activation_frac_bits,
    quantize_network,
    state_frac_bits,
)
from .target import HardwareTarget

__all__ = [
    "MULTIPLIER_BITS",
    "ROUNDINGS",
    "LayerGrid",
    "FixedUpdate",
    "UpdateComparison",
    "traces",
    "ep_contrast",
    "contrast_scale",
    "fixed_ep_gradients",
    "update_multiplier",
    "round_shift",
    "rounding_draws",
    "layer_multipliers",
    "layer_update",
    "skip_layer_draws",
    "round_to_grid",
    "apply_weight_update",
    "apply_bias_update",
    "fixed_relaxer",
    "float_relaxer",
    "fixed_ep_update",
    "float_sgd_update",
    "compare_updates",
    "check_updates",
    "format_update_table",
    "bundle_on_grid",
    "canonical_target",
    "evaluate_fixed",
]

logger = logging.getLogger(__name__)

#: Magnitude bits of the fixed-point learning-rate multiplier M (plus sign).
MULTIPLIER_BITS = 16
ROUNDINGS = ("nearest", "stochastic")


@dataclass(frozen=True)
class LayerGrid:
    """The weight grid of one layer: ``W = m * 2**exponent``, m a multiple of ``lsb`` in [-max_int, max_int]."""

    exponent: int
    lsb: int
    max_int: int

    @property
    def step(self) -> float:
        """Real value of one grid step, ``lsb * 2**exponent``."""
        return math.ldexp(self.lsb, self.exponent)


def _grids(bundle: DeployBundle) -> list[LayerGrid]:
    ws = bundle.target.weights
    return [LayerGrid(int(lb.weight_exponent), ws.lsb, ws.max_int) for lb in bundle.layers]


def _check_rounding(rounding: str, rng) -> None:
    if rounding not in ROUNDINGS:
        raise ConfigError(f"rounding must be 'nearest' or 'stochastic', got {rounding!r}")
    if rounding == "stochastic" and not isinstance(rng, np.random.Generator):
        raise ConfigError("stochastic rounding needs an explicit numpy.random.Generator (rng=...)")


# --------------------------------------------------------------------------- equations


def traces(sim: FixedPointSimulator, x, states) -> list[np.ndarray]:
    """Graded-spike payloads ``[x_int, a_int(s_1), ..., a_int(s_L)]``, int64, units ``2**-F``.

    Fixed-point LEARNING runs the leaky form with an MSE output only (the simulator also
    runs the energy form and the softmax readout's free phase, for inference): ConfigError.
    """
    if sim.form != "leaky" or sim.readout is not None:
        raise ConfigError(f"fixed-point EP updates need the leaky form with an MSE output, got "
                          f"{sim.bundle.form}/{sim.bundle.output}")
    out = [sim.quantize_input(x)]
    for s in states:
        s = np.ascontiguousarray(s, dtype=np.int64)
        a = np.empty_like(s)
        _activations(s, a, np.int64(sim.S - sim.F))
        out.append(a)
    return out


def _exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact int64 ``a @ b``: through float64 BLAS when every partial sum stays below 2**53."""
    bound = float(np.max(np.abs(a), initial=0)) * float(np.max(np.abs(b), initial=0)) * a.shape[1]
    if bound < 2.0**53:
        return (a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)
    return a @ b


def ep_contrast(ra: list[np.ndarray], rb: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Integer EP contrast per layer, summed over the batch (exact int64).

    ``C_l = sum_b (r_l^a r_{l-1}^a^T - r_l^b r_{l-1}^b^T)`` (n_l, n_{l-1}), units 2**-2F;
    ``c_l = sum_b (r_l^a - r_l^b)`` (n_l,), units 2**-F.
    """
    CW, cb = [], []
    for l in range(1, len(ra)):
        CW.append(_exact_matmul(ra[l].T, ra[l - 1]) - _exact_matmul(rb[l].T, rb[l - 1]))
        cb.append((ra[l] - rb[l]).sum(axis=0))
    return CW, cb


def contrast_scale(beta_a_int: int, beta_b_int: int, batch: int, frac_bits: int, decay_bits: int) -> float:
    """Real value of one contrast unit in the EP estimate: ``2**D / ((beta_a_int - beta_b_int) B) * 2**-frac_bits``.

    ``frac_bits`` is 2F for weights and F for biases.
    """
    denom = (int(beta_a_int) - int(beta_b_int)) * int(batch)
    if denom == 0:
        raise ConfigError("the two phases of the EP estimate have the same fixed-point beta")
    return math.ldexp(1.0, int(decay_bits) - int(frac_bits)) / denom


def fixed_ep_gradients(CW, cb, beta_a_int, beta_b_int, batch, F, D) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The EP gradient (descent direction, as ``dynamics.ep_gradients``) from integer contrasts: ``g = -C * scale``."""
    sw = contrast_scale(beta_a_int, beta_b_int, batch, 2 * F, D)
    sb = contrast_scale(beta_a_int, beta_b_int, batch, F, D)
    return [-(C.astype(np.float64) * sw) for C in CW], [-(c.astype(np.float64) * sb) for c in cb]


def update_multiplier(c: float, max_abs_contrast: int = 0, bits: int = MULTIPLIER_BITS) -> tuple[int, int]:
    """Fixed-point multiplier ``(M, K)`` with ``M * 2**-K ~= c``, ``|M| < 2**bits``, ``K >= 0``.

    ``M`` keeps ``bits`` significant bits (fewer if ``max_abs_contrast * |M|`` would leave
    int64, or where ``K`` would otherwise be negative); ``c == 0`` gives ``(0, 0)``.
    """
    if not math.isfinite(c):
        raise ConfigError(f"update multiplier must be finite, got {c}")
    if c == 0.0:
        return 0, 0
    room = 62 - max(int(max_abs_contrast), 1).bit_length()
    bits = max(1, min(int(bits), room))
    _, ex = math.frexp(abs(c))  # |c| = f * 2**ex, f in [0.5, 1)
    K = max(0, bits - ex)
    if K > 62:
        return 0, 0  # below 2**-62 of a grid step per contrast unit: nothing is representable
    M = round(abs(c) * 2.0**K)
    if abs(M) >= 1 << room:
        raise ConfigError(f"update multiplier {c:.3g} is too large for int64 arithmetic")
    return (M if c > 0 else -M), K


def round_shift(v: np.ndarray, K: int, rounding: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """``v / 2**K`` as int64: 'nearest' (ties toward +inf) or 'stochastic' (``floor((v + U) / 2**K)``, U ~ U{0..2**K-1})."""
    _check_rounding(rounding, rng)
    v = np.asarray(v, dtype=np.int64)
    if K == 0:
        return v.copy()
    if rounding == "nearest":
        return shift_right_round_nearest(v, np.int64(K))
    return (v + rounding_draws(v.shape, K, rng)) >> K


def rounding_draws(shape, K: int, rng: np.random.Generator) -> np.ndarray:
    """The uniform integers ``U ~ U{0..2**K-1}`` of stochastic :func:`round_shift` (the one place they are drawn)."""
    return rng.integers(0, 1 << K, size=shape, dtype=np.int64)


def round_to_grid(units: np.ndarray, rounding: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """Real-valued steps in grid units to int64: ``rint`` (nearest) or floor + Bernoulli(fraction) (stochastic)."""
    _check_rounding(rounding, rng)
    u = np.asarray(units, dtype=np.float64)
    if rounding == "nearest":
        return np.rint(u).astype(np.int64)
    low = np.floor(u)
    return (low + (rng.random(u.shape) < (u - low))).astype(np.int64)


def apply_weight_update(m: np.ndarray, q: np.ndarray, grid: LayerGrid) -> np.ndarray:
    """``clip(m + lsb * q, -max_int, max_int)`` (a new int64 array)."""
    return np.clip(np.asarray(m, dtype=np.int64) + grid.lsb * np.asarray(q, dtype=np.int64), -grid.max_int, grid.max_int)


def apply_bias_update(bias: np.ndarray, q: np.ndarray, input_bits: int) -> np.ndarray:
    """``saturate(bias + q, input_bits)`` (a new int64 array, state units)."""
    return saturate(np.asarray(bias, dtype=np.int64) + np.asarray(q, dtype=np.int64), np.int64(input_bits))


# --------------------------------------------------------------------------- phases


def fixed_relaxer(sim: FixedPointSimulator, x, y, status_tol: float = 1e-3):
    """``relax(phase, start, anchor) -> RelaxResult`` in the simulator's integers, for
    :func:`neuro_hts.algorithms.run_phases` (states and residual int64, units 2**-S; the
    status is judged against ``phase.tol`` or ``status_tol``, both in float units)."""
    from ..dynamics import RelaxResult

    def relax(ph, start, anchor):
        st, r, n = sim.relax(x, ph.steps, start, y, ph.beta, gamma=ph.gamma, clamp=ph.clamp, anchor=anchor,
                             coe=ph.coe, tol=ph.tol, return_steps=True)
        tol = ph.tol if ph.tol is not None else status_tol
        return RelaxResult(st, r, n, math.floor(tol * sim.one))

    return relax


def float_relaxer(net: Network, x, y):
    """The float64 counterpart of :func:`fixed_relaxer` (:func:`neuro_hts.dynamics.relax`)."""
    from .. import dynamics

    drive1 = dynamics.input_drive(net, x)

    def relax(ph, start, anchor):
        return dynamics.relax(net, x, ph.steps, start, y, ph.beta, drive1, gamma=ph.gamma, clamp=ph.clamp,
                              anchor=anchor, coe=ph.coe, tol=ph.tol)

    return relax


@dataclass
class FixedUpdate:
    """The quantized EP update of one batch: grid steps per layer and the exact integer contrast."""

    dq_weights: list[np.ndarray]  # int64, weight grid steps (mantissa change = lsb * dq)
    dq_biases: list[np.ndarray]  # int64, bias change in state units
    contrast_weights: list[np.ndarray]
    contrast_biases: list[np.ndarray]
    beta_a_int: int
    beta_b_int: int


def fixed_ep_update(
    bundle: DeployBundle, x, y, states_a, beta_a: float, states_b, beta_b: float, lrs, rounding: str = "stochastic",
    rng: np.random.Generator | None = None, sim: FixedPointSimulator | None = None,
) -> FixedUpdate:
    """The plain-SGD EP update ``lr_l * contrast * scale`` in grid steps, computed in integers.

    ``states_a``/``states_b``: integer states of the two phases (``beta_a``, ``beta_b`` as
    given to the simulator); ``lrs``: one learning rate per layer; ``y`` is not needed by
    the MSE estimate (kept for the signature of ``dynamics.ep_gradients``). The returned
    steps are not saturated: :func:`apply_weight_update` saturates the new mantissas.
    """
    _check_rounding(rounding, rng)
    sim = sim or FixedPointSimulator(bundle)
    D, F, S = sim.decay_bits, sim.F, sim.S
    ba, bb = (int(np.rint(float(b) * (1 << D))) for b in (beta_a, beta_b))
    B = int(np.asarray(x).shape[0])
    CW, cb = ep_contrast(traces(sim, x, states_a), traces(sim, x, states_b))
    grids = _grids(bundle)
    if len(lrs) != len(grids):
        raise ConfigError(f"expected {len(grids)} learning rates, got {len(lrs)}")
    dqw, dqb = [], []
    for C, c, grid, lr in zip(CW, cb, grids, lrs):
        qw, qb = layer_update(C, c, lr, ba, bb, B, F, D, S, grid, rounding, rng)
        dqw.append(qw)
        dqb.append(qb)
    return FixedUpdate(dqw, dqb, CW, cb, ba, bb)


def layer_multipliers(lr: float, beta_a_int: int, beta_b_int: int, batch: int, F: int, D: int, S: int, grid: LayerGrid,
                      max_cw: int = 0, max_cb: int = 0) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((M_w, K_w), (M_b, K_b))`` of one layer: :func:`update_multiplier` of
    ``lr * scale_w / (lsb 2**e)`` (weights, units 2**-2F to grid steps) and of
    ``lr * scale_b * 2**S`` (biases, units 2**-F to state units), ``scale`` from :func:`contrast_scale`.
    ``max_cw``/``max_cb``: the largest contrast magnitudes (they can only lower the multiplier's bits)."""
    cw_real = lr * contrast_scale(beta_a_int, beta_b_int, batch, 2 * F, D) / grid.step
    cb_real = lr * contrast_scale(beta_a_int, beta_b_int, batch, F, D) * 2.0**S
    return update_multiplier(cw_real, int(max_cw)), update_multiplier(cb_real, int(max_cb))


def layer_update(C, c, lr: float, beta_a_int: int, beta_b_int: int, batch: int, F: int, D: int, S: int, grid: LayerGrid,
                 rounding: str, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One layer's plain-SGD EP step in integers: ``q_W = R(C M_w / 2**K_w)``, ``q_b = R(c M_b / 2**K_b)``.

    The multipliers are :func:`layer_multipliers`, R is :func:`round_shift`; stochastic
    rounding draws the weights' integers, then the biases', from ``rng``. The Numba
    engine (:func:`fixed_ep_update`) and the Lava connection model both call this.
    """
    C = np.asarray(C, dtype=np.int64)
    c = np.asarray(c, dtype=np.int64)
    (Mw, Kw), (Mb, Kb) = layer_multipliers(lr, beta_a_int, beta_b_int, batch, F, D, S, grid,
                                           int(np.max(np.abs(C), initial=0)), int(np.max(np.abs(c), initial=0)))
    return round_shift(C * Mw, Kw, rounding, rng), round_shift(c * Mb, Kb, rounding, rng)


def skip_layer_draws(shape_w, shape_b, lr: float, beta_a_int: int, beta_b_int: int, batch: int, F: int, D: int, S: int,
                     grid: LayerGrid, rng: np.random.Generator) -> None:
    """Advance ``rng`` exactly as stochastic :func:`layer_update` of a layer of these shapes would.

    Valid when the contrast magnitudes do not lower the multipliers' bits, i.e. when
    :func:`layer_multipliers` with the worst-case magnitudes equals it with 0 (the Lava
    builder checks this): the shifts ``K`` are then those of the real update.
    """
    (_, Kw), (_, Kb) = layer_multipliers(lr, beta_a_int, beta_b_int, batch, F, D, S, grid)
    if Kw:
        rounding_draws(shape_w, Kw, rng)
    if Kb:
        rounding_draws(shape_b, Kb, rng)


def float_sgd_update(net: Network, x, y, plan: Plan, lrs):
    """The float reference: float64 relaxation of ``net`` through ``plan``'s phases and the plain SGD step ``-lr * g``."""
    from .. import dynamics

    net = net.astype(np.float64)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    res, c = run_phases(float_relaxer(net, x, y), plan)
    gW, gb = dynamics.ep_gradients(net, x, y, res[c.a].states, c.beta_a, res[c.b].states, c.beta_b)
    return [-lr * g for g, lr in zip(gW, lrs)], [-lr * g for g, lr in zip(gb, lrs)]


# --------------------------------------------------------------------------- comparison


@dataclass
class UpdateComparison:
    """Fixed-point vs float update of one parameter (``name``: 'W1', 'b1', ...)."""

    name: str
    rounding: str
    cosine: float  # nan when either update is all zero
    sign_agreement: float  # over entries where the float update is nonzero (nan if none)
    frac_lost: float  # nonzero float updates whose quantized update is 0
    norm_ratio: float  # ||fixed|| / ||float||
    grid_step: float  # real value of one grid step of this parameter
    float_max_steps: float  # max |float update| in grid steps (< 0.5: nearest rounding loses everything)


def _compare(name, rounding, fixed: np.ndarray, ref: np.ndarray, step: float) -> UpdateComparison:
    f, r = fixed.ravel().astype(np.float64), ref.ravel().astype(np.float64)
    nf, nr = float(np.linalg.norm(f)), float(np.linalg.norm(r))
    cos = float(f @ r / (nf * nr)) if nf > 0 and nr > 0 else float("nan")
    nz = r != 0
    sign = float(np.mean(np.sign(f[nz]) == np.sign(r[nz]))) if nz.any() else float("nan")
    lost = float(np.mean(f[nz] == 0)) if nz.any() else float("nan")
    ratio = nf / nr if nr > 0 else float("nan")
    return UpdateComparison(name, rounding, cos, sign, lost, ratio, step, float(np.max(np.abs(r), initial=0.0)) / step)


def compare_updates(
    net: Network, target: HardwareTarget, x, y, *, t1: int, t2: int, beta: float, nudging: str, lrs,
    roundings=ROUNDINGS, rng: np.random.Generator | None = None,
) -> list[UpdateComparison]:
    """Fixed-point vs float EP update (plain SGD step) of ``net`` on the SAME batch.

    The float update relaxes the float network in float64 (:func:`float_sgd_update`); the
    fixed one quantizes ``net`` for ``target`` (nearest), relaxes it with the simulator and
    rounds :func:`fixed_ep_update` with each of ``roundings`` (``rng`` is needed for
    'stochastic', and for random-sign nudging). Rows: W1, b1, W2, b2, ... per rounding.
    """
    for r in roundings:
        _check_rounding(r, rng)
    plan = Plan.of(EP(t1=t1, t2=t2, beta=beta, nudging=nudging), rng)  # one draw of the sign, for both
    bundle = quantize_network(net, target)
    sim = FixedPointSimulator(bundle)
    res, c = run_phases(fixed_relaxer(sim, x, y), plan)
    sa, sb, beta_a, beta_b = res[c.a].states, res[c.b].states, c.beta_a, c.beta_b
    fW, fb = float_sgd_update(net, x, y, plan, lrs)
    grids = _grids(bundle)
    bias_step = 2.0**-sim.S
    rows = []
    for rounding in roundings:
        up = fixed_ep_update(bundle, x, y, sa, beta_a, sb, beta_b, lrs, rounding, rng, sim=sim)
        for l, grid in enumerate(grids):
            rows.append(_compare(f"W{l + 1}", rounding, up.dq_weights[l] * grid.step, fW[l], grid.step))
            rows.append(_compare(f"b{l + 1}", rounding, up.dq_biases[l] * bias_step, fb[l], bias_step))
    return rows


def format_update_table(rows: list[UpdateComparison]) -> list[str]:
    """Lines of the per-layer table printed by ``neuro-hts check-updates``."""
    head = f"{'rounding':<10} {'param':<5} {'grid step':>10} {'cosine':>8} {'sign agree':>10} {'lost':>8} {'|fixed|/|float|':>15} {'max|float|/step':>15}"
    lines = [head]
    for r in rows:
        lines.append(
            f"{r.rounding:<10} {r.name:<5} {r.grid_step:>10.3e} {r.cosine:>8.4f} {r.sign_agreement:>10.4f} "
            f"{r.frac_lost:>8.4f} {r.norm_ratio:>15.4f} {r.float_max_steps:>15.3e}"
        )
    return lines + explain_nan_cosines(rows)


def explain_nan_cosines(rows: list[UpdateComparison]) -> list[str]:
    """One note per kind of undefined (NaN) cosine: why it is undefined and what changes it."""
    nan = [r for r in rows if math.isnan(r.cosine)]
    if not nan:
        return []
    zero_float = [r for r in nan if not (r.float_max_steps > 0)]
    lost = [r for r in nan if r.float_max_steps > 0]
    notes = []
    if len(nan) == len(rows):
        notes.append("note: every cosine is undefined (NaN): no row has both a nonzero fixed and a nonzero float update")
    if lost:
        worst = max(r.float_max_steps for r in lost)
        names = ", ".join(sorted({f"{r.rounding} {r.name}" for r in lost}))
        notes.append(f"note: NaN cosine where every fixed-point update rounded to 0 ({names}): the largest float update "
                     f"is {worst:.3g} grid steps, below the grid; a larger --lr (or a finer weight grid) makes updates visible")
    if zero_float:
        names = ", ".join(sorted({r.name for r in zero_float}))
        notes.append(f"note: NaN cosine where the float update itself is 0 ({names}): the free and nudged states agree "
                     f"on this batch (a larger beta, or another --seed for the batch)")
    return notes


def check_updates(run_path, target: str, *, batch_size: int = 50, lr: float | None = None, data_dir=None, seed: int = 0):
    """The ``check-updates`` command's logic: one training batch of a run, both roundings.

    Returns ``(rows, info)``: the :class:`UpdateComparison` rows and a dict describing the
    setup (run, target, dataset, batch size, learning rates, beta, nudging).
    """
    from ..data import load_recorded_dataset, one_hot
    from ..runfile import load_run
    from .target import load_target

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"--batch-size must be a positive integer, got {batch_size!r}")
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise ConfigError(f"--lr must be a positive finite number, got {lr!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"--seed must be a non-negative integer, got {seed!r}")
    tgt = load_target(target)
    state = load_run(run_path)
    cfg = state.config
    if cfg.model.form != "leaky" or cfg.model.output != "mse":
        raise ConfigError(f"check-updates needs a leaky-form MSE run (the fixed-point simulator), got {cfg.model.form}/{cfg.model.output}")
    data = load_recorded_dataset(cfg.data.dataset, cfg.data.data_dir, data_dir, n_train=cfg.data.n_train, n_test=1)
    n = data.x_train.shape[0]
    if data.x_train.shape[1] != state.network.arch[0] or data.n_classes != state.network.arch[-1]:
        raise ConfigError(f"run {run_path} does not fit dataset {cfg.data.dataset!r}")
    rng = np.random.default_rng(seed)
    idx = rng.permutation(n)[: min(batch_size, n)]
    x = np.asarray(data.x_train[idx], dtype=np.float64)
    y = one_hot(data.y_train[idx], data.n_classes, np.float64)
    n_layers = state.network.n_layers
    lrs = (float(lr),) * n_layers if lr is not None else cfg.train.layer_lrs(n_layers)
    tc = cfg.train
    rows = compare_updates(state.network, tgt, x, y, t1=tc.t1, t2=tc.t2, beta=tc.beta, nudging=tc.nudging, lrs=lrs, rng=rng)
    info = {"run": str(run_path), "target": tgt.name, "dataset": cfg.data.dataset, "batch_size": len(idx), "lrs": lrs,
            "beta": tc.beta, "nudging": tc.nudging, "t1": tc.t1, "t2": tc.t2}
    return rows, info


# --------------------------------------------------------------------------- training


def bundle_on_grid(net: Network, target: HardwareTarget, exponents) -> DeployBundle:
    """The bundle of a network whose parameters already lie on the grid (exact; refuses otherwise)."""
    S = state_frac_bits(target)
    layers = []
    for l, (w, b, dt, e) in enumerate(zip(net.weights, net.biases, net.dts, exponents), start=1):
        mf = np.asarray(w, dtype=np.float64) * 2.0 ** (-int(e))
        m = np.rint(mf)
        bf = np.asarray(b, dtype=np.float64) * 2.0**S
        bias = np.rint(bf)
        if not (np.array_equal(m, mf) and np.array_equal(bias, bf)):
            raise ConfigError(f"layer {l}: parameters are not on the fixed-point grid (exponent {e}, bias 2**-{S})")
        layers.append(LayerBundle(
            index=l,
            weight_mantissa=_frozen(m, np.int64),
            weight_exponent=int(e),
            bias=_frozen(bias, np.int64),
            decay=_frozen(dt_to_decay(dt, target.decay.bits), np.int64),
            dt=_frozen(dt, np.float64),
        ))
    return DeployBundle(
        target=target, layers=tuple(layers), form=net.form, activation=net.activation, output=net.output,
        activation_frac_bits=activation_frac_bits(target), state_frac_bits=S,
    )


def canonical_target(text: str) -> tuple[HardwareTarget, str]:
    """Load a target; returns it and the name to record: the bare name when ``hardware/<name>.toml``
    holds the same target (so a run file does not depend on the working directory), else ``text``."""
    import dataclasses

    from .target import TargetError, load_target

    target = load_target(text)
    try:
        builtin = load_target(target.name)
    except TargetError:
        return target, text
    same = dataclasses.replace(builtin, source="") == dataclasses.replace(target, source="")
    return target, (target.name if same else text)


def evaluate_fixed(net: Network, target: HardwareTarget, exponents, x, labels, t1: int, batch_size: int = 1000, progress=None,
                   *, gamma: float = 1.0, tol: float | None = None):
    """Fixed-point free phase on every sample (a :class:`~neuro_hts.engines.EvalResult`; residual in float units).

    ``exponents``: the run's fixed exponents, or None to quantize ``net`` (nearest) for ``target``;
    ``gamma`` and ``tol``: the free phase's feedback gain and early-stop tolerance.
    """
    from ..engines import evaluate_batches

    bundle = quantize_network(net.astype(np.float64), target) if exponents is None else bundle_on_grid(net, target, exponents)
    sim = FixedPointSimulator(bundle)

    def predict(xb):
        states, r = sim.relax(xb, t1, gamma=gamma, tol=tol)
        return np.argmax(states[-1], axis=1), r / float(sim.one)

    return evaluate_batches(predict, x, labels, batch_size, progress)
