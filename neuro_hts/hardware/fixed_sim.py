"""Numba fixed-point relaxation of a :class:`~neuro_hts.hardware.quantize.DeployBundle`.

The integer counterpart of :func:`neuro_hts.dynamics.relax` for the LEAKY form with an MSE
output (free phase and nudged phase). It is the bit-exact oracle the Lava ``fixed_pt``
process models are compared against, so every shift, rounding and saturation below goes
through the shared helpers of :mod:`neuro_hts.hardware.fixed_point`.

Notation: ``S = bundle.state_frac_bits``, ``F = bundle.activation_frac_bits``, layer ``l``
(1-based) has mantissas ``Wm_l`` (n_l, n_{l-1}), exponent ``e_l``, bias ``bias_l`` (in
state units ``2**-S``) and per-neuron ``decay_l``; ``D = target.decay.bits``,
``IB = target.state.input_bits``, ``SB = target.state.bits``.

Integer semantics (all int64)
-----------------------------

* Input, once per call: ``x_int = rint(x * 2**F)`` (NumPy ``rint``: nearest, ties to even);
  no clipping (inputs are expected in [0, 1]).
* States ``s_int`` of every relaxed layer, units ``2**-S``, in [0, 2**S] (1.0 -> 2**S).
  Zeros by default; given states must be integers in that range.
* Activation sent to neighbours (graded spike payload, ``F`` fraction bits)::

      a_int = shift_right_round_nearest(s_int, S - F)     if S >= F (identity when S == F)
      a_int = s_int << (F - S)                            if S <  F (exact)

* Synaptic input of layer ``l``: each weight layer's contribution is brought to state
  units with ITS OWN shift ``k_l = e_l - F + S`` (a left shift ``<< k_l`` when
  ``k_l >= 0``, else ``shift_right_floor(., -k_l)``, the arithmetic shift Lava's Dense
  applies for a negative ``weight_exp``)::

      up_l   = shift_k_l(     Wm_l     @ a_{l-1} )     (a_0 = x_int; computed once per phase
                                                    for l = 1)
      down_l = shift_k_{l+1}( Wm_{l+1}^T @ a_{l+1} )   (0 for the top layer L)
      h_l    = saturate(up_l + down_l + bias_l, IB)    (units 2**-S)

  This is what Lava computes: each Dense connection shifts its own accumulator by its
  ``weight_exp`` (= ``k``), the neuron's input port sums the connections, and the neuron
  adds its bias (Loihi's bias is a neuron parameter in state units).
* Nudge (top layer only, when ``beta != 0``): ``beta_int = rint(beta * 2**D)`` (a
  ``D``-bit fixed-point fraction, D = 12 on Loihi; ``beta`` must satisfy
  ``|beta_int| < 2**(2 D)``), ``y_int = rint(y * 2**S)`` and::

      h_L = saturate(h_L + shift_right_round_toward_zero(beta_int * (y_int - s_L), D), IB)

  (toward-zero rounding makes +beta and -beta nudges mirror images).
* Activation ``sig_int`` in [0, 2**S]:

  - ``hard_sigmoid``: ``clip(h_l, 0, 2**S)``;
  - ``sigmoid4``: a lookup table with ONE ENTRY PER STATE LSB over
    ``h in [-3 * 2**S, 4 * 2**S]``: ``table[h + 3 * 2**S] = rint(2**S * sigmoid4(h / 2**S))``.
    Inputs below / above that range saturate to the first / last entry, which are exactly
    0 and 2**S (sigmoid4(-3) * 2**S and 2**S * (1 - sigmoid4(4)) are < 0.004 for S <= 12),
    so ``sig_int == rint(2**S * sigmoid4(h / 2**S))`` for EVERY h.
* Update (synchronous: every layer from the previous step's states)::

      s_l <- saturate(leaky_decay_step(s_l, sig_int, decay_l, D), SB)

  (the saturation never acts for states in range: the step stays between s and sig_int).
* Residual: per sample, ``max_l max_i |s_t - s_{t-1}|`` of the last step (int64, units
  2**-S; zeros after 0 steps).

Phase options (the algorithms of :mod:`neuro_hts.algorithms`; all off by default):

* feedback gain ``gamma_int = rint(gamma * 2**D)``: when it is not ``2**D`` every
  top-down input becomes ``shift_right_round_toward_zero(gamma_int * down_l, D)``;
* clamp: the top layer is held at ``y_int`` (``"target"``) or at its state (``"hold"``)
  instead of being stepped;
* adaptation toward anchor states with ``coe_int = rint(c * 2**D)``, after every step::

      s_l <- leaky_decay_step(s_l, s_l^anchor, coe_int, D)      (= (1 - c) s_l + c s_l^anchor)

  so ``c = 1`` gives the anchor exactly and ``c = 0`` leaves the step alone;
* ``tol``: the phase ends at the first step whose residual is <= ``floor(tol * 2**S)``
  for every sample.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..errors import ConfigError
from .fixed_point import (
    leaky_decay_step,
    neuron_step,
    shift_right_floor,
    shift_right_round_nearest,
    shift_right_round_toward_zero,
)
from .quantize import DeployBundle

__all__ = ["SIGMOID4_HI", "SIGMOID4_LO", "FixedPointSimulator", "sigmoid4_table"]

_ACT_HARD, _ACT_SIG4 = 0, 1
#: output-layer modes of a phase (neuro_hts.algorithms.CLAMPS), kernel codes 0, 1, 2
_CLAMPS = ("none", "target", "hold")
_ACTIVATIONS = {"hard_sigmoid": _ACT_HARD, "sigmoid4": _ACT_SIG4}

#: sigmoid4 table range in units of 1.0: h in [SIGMOID4_LO, SIGMOID4_HI] * 2**S
SIGMOID4_LO = -3
SIGMOID4_HI = 4


def sigmoid4_table(state_frac_bits: int) -> np.ndarray:
    """int64 table ``rint(2**S * sigmoid4(h / 2**S))`` for h = -3 * 2**S ... 4 * 2**S."""
    one = 1 << int(state_frac_bits)
    h = np.arange(SIGMOID4_LO * one, SIGMOID4_HI * one + 1, dtype=np.int64)
    u = h / float(one)
    table = np.rint(one / (1.0 + np.exp(-(4.0 * u - 2.0)))).astype(np.int64)
    # the ends are the saturation values for out-of-range h (checked, not assumed)
    if table[0] != 0 or table[-1] != one:
        raise ConfigError(f"sigmoid4 table does not saturate at its ends for S = {state_frac_bits}")
    return table


# --------------------------------------------------------------------------- kernels


@njit(cache=True)
def _to_state_units(v, k):
    """v * 2**k: left shift for k >= 0, else arithmetic (floor) right shift."""
    if k >= 0:
        return v << k
    return shift_right_floor(v, -k)


@njit(cache=True)
def _activations(s, out, s_minus_f):
    """a_int from s_int: round-nearest right shift (S >= F) or exact left shift (S < F)."""
    B, n = s.shape
    for b in range(B):
        for i in range(n):
            if s_minus_f >= 0:
                out[b, i] = shift_right_round_nearest(s[b, i], s_minus_f)
            else:
                out[b, i] = s[b, i] << (-s_minus_f)


@njit(cache=True)
def _bottom_up(a_prev, w, bias, k, out):
    """out[b, i] = shift_k( sum_j w[i, j] a_prev[b, j] ) + bias[i]."""
    B = a_prev.shape[0]
    n_out, n_in = w.shape
    for b in range(B):
        for i in range(n_out):
            acc = 0
            for j in range(n_in):
                acc += w[i, j] * a_prev[b, j]
            out[b, i] = _to_state_units(acc, k) + bias[i]


@njit(cache=True)
def _top_down(a_next, w_next, k, acc, out):
    """out[b, i] = shift_k( sum_j w_next[j, i] a_next[b, j] ); ``acc`` is (n_i,) scratch."""
    B = a_next.shape[0]
    n_up, n_here = w_next.shape
    for b in range(B):
        for i in range(n_here):
            acc[i] = 0
        for j in range(n_up):
            aj = a_next[b, j]
            if aj != 0:
                for i in range(n_here):
                    acc[i] += w_next[j, i] * aj
        for i in range(n_here):
            out[b, i] = _to_state_units(acc[i], k)


@njit(cache=True)
def _relax_kernel(x_int, states, weights, biases, decays, shifts, y_int, beta_int, n_steps,
                  s_minus_f, one, input_bits, state_bits, decay_bits, act, table, table_lo,
                  gamma_int, top_mode, anchor, has_anchor, coe_int, tol_int):
    """Run up to ``n_steps`` synchronous integer steps in place on ``states``; returns (residual, steps taken).

    ``gamma_int`` (units 2**-D) scales every top-down input when it is not 2**D;
    ``top_mode`` 1 holds the top layer at ``y_int``, 2 at its current state; with
    ``has_anchor`` every new state is mixed toward ``anchor`` with ``coe_int`` (units
    2**-D); with ``tol_int`` >= 0 the loop ends at the first step whose residual is
    <= tol_int for every sample.
    """
    L = len(states)
    B = x_int.shape[0]
    up1 = np.empty_like(states[0])
    _bottom_up(x_int, weights[0], biases[0], shifts[0], up1)
    acts = [np.empty_like(s) for s in states]
    news = [np.empty_like(s) for s in states]
    tmp_up = [np.empty_like(s) for s in states]
    tmp_down = [np.empty_like(s) for s in states]
    scratch = [np.empty(s.shape[1], dtype=np.int64) for s in states]
    residual = np.zeros(B, dtype=np.int64)
    nudge = beta_int != 0
    one_d = np.int64(1) << decay_bits
    scale_down = gamma_int != one_d
    check = tol_int >= 0
    taken = 0
    for t in range(n_steps):
        for l in range(L):
            _activations(states[l], acts[l], s_minus_f)
        for l in range(L):
            s = states[l]
            new = news[l]
            top = l == L - 1
            if top and top_mode != 0:
                for b in range(B):
                    for i in range(s.shape[1]):
                        new[b, i] = y_int[b, i] if top_mode == 1 else s[b, i]
                continue
            up = up1
            if l > 0:
                up = tmp_up[l]
                _bottom_up(acts[l - 1], weights[l], biases[l], shifts[l], up)
            down = tmp_down[l]
            has_down = l < L - 1
            if has_down:
                _top_down(acts[l + 1], weights[l + 1], shifts[l + 1], scratch[l], down)
            dec = decays[l]
            b_int = beta_int if (top and nudge) else 0
            for b in range(B):
                for i in range(s.shape[1]):
                    h = up[b, i]
                    if has_down:
                        d = down[b, i]
                        if scale_down:
                            d = shift_right_round_toward_zero(gamma_int * d, decay_bits)
                        h += d
                    yv = y_int[b, i] if top else 0
                    new[b, i] = neuron_step(s[b, i], h, yv, b_int, dec[i], decay_bits, input_bits, state_bits, one,
                                            act, table, table_lo)
        if has_anchor:
            for l in range(L):
                new = news[l]
                a = anchor[l]
                for b in range(B):
                    for i in range(new.shape[1]):
                        # s <- (1 - c) s + c s^anchor: a leaky step of rate c toward the anchor
                        new[b, i] = leaky_decay_step(new[b, i], a[b, i], coe_int, decay_bits)
        taken += 1
        last = check or t == n_steps - 1
        if last:
            for b in range(B):
                residual[b] = 0
        for l in range(L):
            s = states[l]
            new = news[l]
            for b in range(B):
                for i in range(s.shape[1]):
                    if last:
                        residual[b] = max(residual[b], abs(new[b, i] - s[b, i]))
                    s[b, i] = new[b, i]
        if check:
            settled = True
            for b in range(B):
                if residual[b] > tol_int:
                    settled = False
                    break
            if settled:
                break
    return residual, taken


# --------------------------------------------------------------------------- public class


class FixedPointSimulator:
    """Integer relaxation of a leaky-form, MSE-output :class:`DeployBundle` (see module doc).

    The bundle's arrays are copied at construction and never modified; inputs are never
    modified either.
    """

    def __init__(self, bundle: DeployBundle):
        if not isinstance(bundle, DeployBundle):
            raise ConfigError(f"FixedPointSimulator needs a DeployBundle, got {type(bundle).__name__}")
        if bundle.form != "leaky":
            raise ConfigError(f"fixed-point simulation supports the leaky form only, got form={bundle.form!r}")
        if bundle.output != "mse":
            raise ConfigError(f"fixed-point simulation supports output='mse' only, got {bundle.output!r}")
        if bundle.activation not in _ACTIVATIONS:
            raise ConfigError(f"unsupported activation {bundle.activation!r}")
        self.bundle = bundle
        t = bundle.target
        self.S = int(bundle.state_frac_bits)
        self.F = int(bundle.activation_frac_bits)
        self.one = 1 << self.S
        self.decay_bits = int(t.decay.bits)
        self.input_bits = int(t.state.input_bits)
        self.state_bits = int(t.state.bits)
        self._weights = tuple(np.array(lb.weight_mantissa, dtype=np.int64, order="C", copy=True) for lb in bundle.layers)
        self._biases = tuple(np.array(lb.bias, dtype=np.int64, copy=True) for lb in bundle.layers)
        self._decays = tuple(np.array(lb.decay, dtype=np.int64, copy=True) for lb in bundle.layers)
        #: per weight layer, the shift k_l = e_l - F + S from accumulator to state units
        self.shifts = np.array([int(lb.weight_exponent) - self.F + self.S for lb in bundle.layers], dtype=np.int64)
        self._act = _ACTIVATIONS[bundle.activation]
        if self._act == _ACT_SIG4:
            self._table = sigmoid4_table(self.S)
            self._table_lo = SIGMOID4_LO * self.one
        else:
            self._table = np.zeros(1, dtype=np.int64)
            self._table_lo = 0
        self.sizes = tuple(w.shape[0] for w in self._weights)
        self.n_inputs = self._weights[0].shape[1]

    # ----------------------------------------------------------------------- helpers

    def quantize_input(self, x) -> np.ndarray:
        """``rint(x * 2**F)`` as int64 (B, n_0): a new array."""
        xf = np.asarray(x, dtype=np.float64)
        if xf.ndim != 2 or xf.shape[1] != self.n_inputs:
            raise ConfigError(f"x must have shape (B, {self.n_inputs}), got {xf.shape}")
        if not np.isfinite(xf).all():
            raise ConfigError("x contains NaN or infinity")
        return np.rint(xf * math.ldexp(1.0, self.F)).astype(np.int64)

    def zero_states(self, batch: int) -> list[np.ndarray]:
        return [np.zeros((batch, n), dtype=np.int64) for n in self.sizes]

    def dequantize_states(self, states) -> list[np.ndarray]:
        """Float values ``s_int / 2**S`` (float64, exact)."""
        return [np.asarray(s, dtype=np.int64) / float(self.one) for s in states]

    def _check_states(self, states, batch: int) -> list[np.ndarray]:
        if len(states) != len(self.sizes):
            raise ConfigError(f"expected {len(self.sizes)} state arrays, got {len(states)}")
        out = []
        for l, (s, n) in enumerate(zip(states, self.sizes), start=1):
            a = np.asarray(s)
            if a.shape != (batch, n):
                raise ConfigError(f"state of layer {l} must have shape ({batch}, {n}), got {a.shape}")
            if not np.issubdtype(a.dtype, np.integer):
                raise ConfigError(f"state of layer {l} must be integers (units 2**-{self.S}), got {a.dtype}")
            a = np.array(a, dtype=np.int64, copy=True)
            if a.size and (a.min() < 0 or a.max() > self.one):
                raise ConfigError(f"state of layer {l} must lie in [0, {self.one}]")
            out.append(a)
        return out

    # ----------------------------------------------------------------------- phases

    def relax(self, x, n_steps: int, states=None, y=None, beta: float = 0.0, *, gamma: float = 1.0,
              clamp: str = "none", anchor=None, coe: float = 0.0, tol: float | None = None, return_steps: bool = False):
        """Run up to ``n_steps`` integer steps from ``states`` (zeros if None).

        Free phase: ``beta = 0``. Nudged phase: ``beta != 0`` and one-hot targets ``y``
        (B, n_L) in [0, 1]. ``gamma`` (feedback gain), ``coe`` (mixing toward the integer
        ``anchor`` states) are rounded to ``D``-bit fractions; ``clamp`` ``"target"``
        holds the top layer at ``y_int``, ``"hold"`` at its current state; ``tol`` (float
        units) ends the phase once every sample's residual is <= ``floor(tol * 2**S)``.
        Returns ``(states, residual)`` (plus the steps taken with ``return_steps``): new
        int64 arrays (B, n_l) per relaxed layer and the int64 per-sample residual (B,) of
        the last step.
        """
        if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 0:
            raise ConfigError(f"n_steps must be a non-negative integer, got {n_steps!r}")
        x_int = self.quantize_input(x)
        B = x_int.shape[0]
        st = self.zero_states(B) if states is None else self._check_states(states, B)
        beta_int = self.fraction(beta, "beta")
        if clamp not in _CLAMPS:
            raise ConfigError(f"clamp must be one of {', '.join(_CLAMPS)}, got {clamp!r}")
        if beta_int != 0 or clamp == "target":
            if y is None:
                raise ConfigError("a nudged (beta != 0) or clamped phase needs targets y")
            yf = np.asarray(y, dtype=np.float64)
            if yf.shape != (B, self.sizes[-1]) or not np.isfinite(yf).all():
                raise ConfigError(f"y must be finite with shape ({B}, {self.sizes[-1]}), got {yf.shape}")
            y_int = np.rint(yf * self.one).astype(np.int64)
        else:
            y_int = np.zeros((B, self.sizes[-1]), dtype=np.int64)
        has_anchor = anchor is not None
        anchor_t = tuple(self._check_states(anchor, B)) if has_anchor else tuple(st)
        tol_int = -1 if tol is None else int(math.floor(float(tol) * self.one))
        residual, taken = _relax_kernel(
            x_int, tuple(st), self._weights, self._biases, self._decays, self.shifts, y_int,
            np.int64(beta_int), np.int64(n_steps), np.int64(self.S - self.F), np.int64(self.one),
            np.int64(self.input_bits), np.int64(self.state_bits), np.int64(self.decay_bits),
            np.int64(self._act), self._table, np.int64(self._table_lo),
            np.int64(self.fraction(gamma, "gamma")), np.int64(_CLAMPS.index(clamp)), anchor_t, has_anchor,
            np.int64(self.fraction(coe, "coe")), np.int64(tol_int),
        )
        return (st, residual, int(taken)) if return_steps else (st, residual)

    def fraction(self, value: float, what: str) -> int:
        """``rint(value * 2**D)``: a nudge strength, gain or mixing coefficient as a D-bit fraction."""
        v = int(np.rint(float(value) * (1 << self.decay_bits)))
        if abs(v) >= 1 << (2 * self.decay_bits):
            raise ConfigError(f"{what} = {value!r} is too large for the fixed-point arithmetic")
        return v

    def predict(self, x, n_steps: int) -> np.ndarray:
        """Predicted classes: argmax of the top layer after a free phase (first index on ties)."""
        states, _ = self.relax(x, n_steps)
        return np.argmax(states[-1], axis=1)
