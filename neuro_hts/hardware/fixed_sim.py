"""Numba fixed-point relaxation of a :class:`~neuro_hts.hardware.quantize.DeployBundle`.

The integer counterpart of :func:`neuro_hts.dynamics.relax` for the leaky and the energy
form with an MSE output (free phase and nudged phase) or a softmax readout (free phase),
for dense chains and for chains of conv2d and dense connections ("Conv layers" below;
"Energy form and softmax readout" for what differs from the leaky MSE case). It is the bit-exact oracle the Lava ``fixed_pt``
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

Energy form and softmax readout (docs/HARDWARE.md, issue 15 item 4)
--------------------------------------------------------------------

* Energy form (``bundle.form == "energy"``): the input is ``rint(rho(x) * 2**F)``
  (:func:`input_payload`, rho the model's float activation, on the host); a layer sends
  ``a_int`` of ``rho_int(s)`` instead of ``s`` (``fixed_point.presynaptic_step``; rho_int is
  the activation above, applied to the state); the update is
  ``fixed_point.energy_neuron_step``: ``g = tz(rho'_int(s) h, S)`` plus the output nudge
  ``tz(beta_int (y - s), D)`` OUTSIDE rho', ``s <- clip(leaky_decay_step(s, saturate(g,
  IB), decay, D), 0, 2**S)``; rho'_int is the closed-interval indicator (hard_sigmoid) or
  ``(4 r (2**S - r)) >> S``, ``r = rho_int(s)`` (sigmoid4). Gain, clamp, adaptation and tol
  act as in the leaky form.
* Softmax readout (``bundle.output == "ce"``, dense chains): the last layer is not
  relaxed (the top relaxed layer gets no top-down input); :meth:`FixedPointSimulator.logits`
  gives ``z = saturate(shift_k_L(Wm_L @ a_{L-1}) + bias_L, IB)`` and the prediction is
  their argmax. In a nudged phase (dense kernel) every step computes, from the step's
  payloads, ``p = fixed_point.softmax_int(z)`` and ``fb = shift_k_L(Wm_L^T payload(y_int -
  p))`` (``_readout_feedback``), and the top layer is nudged toward
  ``fixed_point.readout_nudge_target(s, fb)``; ``y`` is then (B, classes). Clamping the
  (hidden) top layer is refused (design rule :data:`READOUT_CLAMP_RULE`).

Conv layers (docs/CONV.md; the conv kernel ``_relax_conv_kernel``)
-----------------------------------------------------------------

A chain of ``conv2d`` connections between C x H x W layers, then ``dense`` ones (the
bundle's ``network`` says which). States, activations and inputs of an image layer are
flat rows in C order (``c, y, x``); a dense connection from an image layer reads that row.
A conv layer ``l`` (pre ``l-1``, post ``l``) has mantissas ``Wm_l`` (C_out, C_in, k, k)
with ONE shared exponent ``e_l`` (as a dense matrix), a per-CHANNEL bias ``bias_l[c]`` in
state units and per-unit decays (C*H*W,). With ``s`` the stride, ``p`` the padding and
``k_l = e_l - F + S`` as above, all in int64:

* accumulator (``_conv_accumulate``), zero padding::

      acc[o, y, x] = sum_{c,i,j} Wm_l[o, c, i, j] a_{l-1}[c, y s + i - p, x s + j - p]

* pooling on the accumulator over ``pool_size`` windows every ``pool_stride`` pixels
  (``_pool_accumulator``): ``max``: the value at the FIRST maximum of each window (C order
  in the window); that position is the window's **context**, recomputed every step from
  the current ``a_{l-1}`` (layer 1: once per phase) and also used by the feedback;
  ``avg``: the SUM of the window, its area ``A = pool_size**2`` being divided in the
  shift, so only powers of two are allowed (the ``pool_area`` design rule); ``none``:
  the accumulator itself. ``log2(A) = 0`` for max and none;
* bottom-up input (``_conv_up``)::

      up_l[c, y, x] = shift_{k_l - log2(A)}( P(acc)[c, y, x] ) + bias_l[c]

* feedback to layer ``l-1`` (``_unpool``, ``_conv_transpose``, ``_conv_down``)::

      down_{l-1} = shift_{k_l - log2(A)}( Wm_l^T * (P^T a_l) )

  where ``P^T`` puts ``a_l[c, y, x]`` at its window's argmax (max: the context of the
  current pre state ``a_{l-1}``), adds it to every position of its window (avg; the
  division by A is in the shift), or is the identity (none); positions in several
  (overlapping) windows add up. ``Wm^T *`` is the transposed convolution
  ``acc'[c, y', x'] = sum Wm[o, c, i, j] g[o, y, x]`` over ``y' = y s + i - p``,
  ``x' = x s + j - p`` inside the layer;
* a dense layer after image layers (``_dense_up``, ``_dense_down``) is the dense rule
  above on the flat row;
* then the same neuron step, saturations, nudge on the top layer, residual and phase
  options (gamma, clamp, anchor/adaptation, tol) as the dense kernel.

``shift_k`` is the dense one (``<< k`` for ``k >= 0``, else ``shift_right_floor``). On a
dense chain the conv kernel gives the dense kernel's states bit for bit
(``FixedPointSimulator(bundle, kernel="conv")``); tests/naive.py ``fixed_relax_chain`` is
its plain-Python reference.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..errors import ConfigError
from .fixed_point import (
    FORM_ENERGY,
    FORM_LEAKY,
    energy_neuron_step,
    exp2_table,
    leaky_decay_step,
    neuron_step,
    payload_step,
    presynaptic_step,
    readout_nudge_target,
    saturate,
    softmax_int,
    shift_right_floor,
    shift_right_round_nearest,
    shift_right_round_toward_zero,
)
from .quantize import DeployBundle

__all__ = ["SIGMOID4_HI", "SIGMOID4_LO", "READOUT_CLAMP_RULE", "FixedPointSimulator", "conv_down_int", "conv_meta",
           "conv_unrolled", "conv_up_int", "input_payload", "sigmoid4_table"]

_ACT_HARD, _ACT_SIG4 = 0, 1
#: output-layer modes of a phase (neuro_hts.algorithms.CLAMPS), kernel codes 0, 1, 2
_CLAMPS = ("none", "target", "hold")
_ACTIVATIONS = {"hard_sigmoid": _ACT_HARD, "sigmoid4": _ACT_SIG4}
#: dynamics forms the integer kernels run (fixed_point.FORM_*)
_FORMS = {"leaky": FORM_LEAKY, "energy": FORM_ENERGY}
#: outputs: the MSE cost on the top relaxed layer, or the softmax readout (free phase only)
_OUTPUTS = ("mse", "ce")
#: design rule refusing what a softmax readout cannot do in fixed point (clamping its hidden top layer;
#: a nudged phase on the conv kernel or in Lava learning)
READOUT_CLAMP_RULE = "readout_clamp"
_NO_W = np.zeros((1, 1), dtype=np.int64)
_NO_B = np.zeros(1, dtype=np.int64)

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
def _presynaptic(s, out, s_minus_f, form, one, act, table, table_lo):
    """a_int of every unit: :func:`~.fixed_point.presynaptic_step` (the state, or rho(s) in the energy form)."""
    B, n = s.shape
    for b in range(B):
        for i in range(n):
            out[b, i] = presynaptic_step(s[b, i], s_minus_f, form, one, act, table, table_lo)


@njit(cache=True)
def _readout_feedback(a_top, s_top, w, bias, k, y_cls, exp_tab, s_minus_f, input_bits, form, state_frac_bits, act,
                      table, table_lo, z, p, err, y_eff):
    """The softmax readout's nudge as the top layer's target ``y'`` (module doc, "Energy form and softmax readout")::

        z    = saturate(shift_k(Wm_L a_top) + b_L, IB)           logits, units 2**-S
        p    = softmax_int(z)                                     units 2**-S
        fb   = shift_k(Wm_L^T payload(y - p))                     -dC/da_top, units 2**-S
        y'   = readout_nudge_target(s_top, fb)                    so that tz(beta (y' - s), D) is the nudge
    """
    B = a_top.shape[0]
    C, n = w.shape
    for b in range(B):
        for c in range(C):
            acc = 0
            for j in range(n):
                acc += w[c, j] * a_top[b, j]
            z[c] = saturate(_to_state_units(acc, k) + bias[c], input_bits)
        softmax_int(z, state_frac_bits, exp_tab, p)
        for c in range(C):
            err[c] = payload_step(y_cls[b, c] - p[c], s_minus_f)
        for i in range(n):
            acc = 0
            for c in range(C):
                acc += w[c, i] * err[c]
            y_eff[b, i] = readout_nudge_target(s_top[b, i], _to_state_units(acc, k), form, state_frac_bits, act,
                                               table, table_lo)


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
def _neuron_rows(s, up, down, has_down, scale_down, gamma_int, y_int, top, b_int, dec, decay_bits, input_bits,
                 state_bits, one, act, table, table_lo, form, state_frac_bits, new):
    """``new = neuron_step(s, up + gamma * down, ...)`` for every unit of one layer (module doc, "Update");
    :func:`~.fixed_point.energy_neuron_step` in the energy form."""
    B, n = s.shape
    for b in range(B):
        for i in range(n):
            h = up[b, i]
            if has_down:
                d = down[b, i]
                if scale_down:
                    d = shift_right_round_toward_zero(gamma_int * d, decay_bits)
                h += d
            yv = y_int[b, i] if top else 0
            if form == FORM_ENERGY:
                new[b, i] = energy_neuron_step(s[b, i], h, yv, b_int, dec[i], decay_bits, input_bits, state_frac_bits,
                                               act, table, table_lo)
            else:
                new[b, i] = neuron_step(s[b, i], h, yv, b_int, dec[i], decay_bits, input_bits, state_bits, one,
                                        act, table, table_lo)


@njit(cache=True)
def _mix_toward(news, anchor, coe_int, decay_bits):
    """s <- (1 - c) s + c s^anchor for every layer: a leaky step of rate ``coe_int`` toward the anchor."""
    for l in range(len(news)):
        new = news[l]
        a = anchor[l]
        for b in range(new.shape[0]):
            for i in range(new.shape[1]):
                new[b, i] = leaky_decay_step(new[b, i], a[b, i], coe_int, decay_bits)


@njit(cache=True)
def _commit(states, news, residual, last):
    """states <- news; with ``last``, ``residual[b] = max_l max_i |new - old|`` of this step."""
    if last:
        for b in range(residual.shape[0]):
            residual[b] = 0
    for l in range(len(states)):
        s = states[l]
        new = news[l]
        for b in range(s.shape[0]):
            for i in range(s.shape[1]):
                if last:
                    residual[b] = max(residual[b], abs(new[b, i] - s[b, i]))
                s[b, i] = new[b, i]


@njit(cache=True)
def _settled(residual, tol_int):
    """Whether every sample's residual is <= tol_int."""
    for b in range(residual.shape[0]):
        if residual[b] > tol_int:
            return False
    return True


@njit(cache=True)
def _relax_kernel(x_int, states, weights, biases, decays, shifts, y_int, beta_int, n_steps,
                  s_minus_f, one, input_bits, state_bits, decay_bits, act, table, table_lo, form, state_frac_bits,
                  gamma_int, top_mode, anchor, has_anchor, coe_int, tol_int, ce_nudge, ro_w, ro_b, ro_k, exp_tab):
    """Run up to ``n_steps`` synchronous integer steps in place on ``states``; returns (residual, steps taken).

    With ``ce_nudge`` (a softmax readout ``ro_w``, ``ro_b``, shift ``ro_k`` in a nudged
    phase) ``y_int`` holds the one-hot classes and the top layer is nudged toward
    :func:`_readout_feedback`'s target each step (``exp_tab``: ``fixed_point.exp2_table``).
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
    n_cls = ro_w.shape[0]
    z, p, err = np.empty(n_cls, np.int64), np.empty(n_cls, np.int64), np.empty(n_cls, np.int64)
    y_top = np.empty_like(states[L - 1]) if ce_nudge else y_int
    taken = 0
    for t in range(n_steps):
        for l in range(L):
            _presynaptic(states[l], acts[l], s_minus_f, form, one, act, table, table_lo)
        if ce_nudge:
            _readout_feedback(acts[L - 1], states[L - 1], ro_w, ro_b, ro_k, y_int, exp_tab, s_minus_f, input_bits,
                              form, state_frac_bits, act, table, table_lo, z, p, err, y_top)
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
            _neuron_rows(s, up, down, has_down, scale_down, gamma_int, y_top, top, beta_int if (top and nudge) else 0,
                         decays[l], decay_bits, input_bits, state_bits, one, act, table, table_lo, form, state_frac_bits,
                         new)
        if has_anchor:
            _mix_toward(news, anchor, coe_int, decay_bits)
        taken += 1
        _commit(states, news, residual, check or t == n_steps - 1)
        if check and _settled(residual, tol_int):
            break
    return residual, taken


# --------------------------------------------------------------------------- conv kernels
#
# A chain with conv2d layers: states, activations and accumulators are flat int64 rows
# (one per sample) in C order; each weight layer's mantissas are a flat C-order row too,
# described by one row of ``meta`` (_M_* columns below).

_M_KIND, _M_CIN, _M_HIN, _M_WIN, _M_COUT, _M_HC, _M_WC, _M_K, _M_STRIDE, _M_PAD, _M_POOL, _M_PS, _M_PST, \
    _M_HP, _M_WP, _M_LOG2AREA = range(16)
_KIND_DENSE, _KIND_CONV = 0, 1
_POOL_NONE, _POOL_AVG, _POOL_MAX = 0, 1, 2
_POOLS = {"none": _POOL_NONE, "avg": _POOL_AVG, "max": _POOL_MAX}


@njit(cache=True)
def _conv_accumulate(a, w, m, acc):
    """acc[o, y, x] = sum_{c,i,j} Wm[o, c, i, j] a_pad[c, y s + i, x s + j]  (integer cross-correlation, zero padding)."""
    cin, hin, win = m[_M_CIN], m[_M_HIN], m[_M_WIN]
    cout, hc, wc, k, s, p = m[_M_COUT], m[_M_HC], m[_M_WC], m[_M_K], m[_M_STRIDE], m[_M_PAD]
    for o in range(cout):
        for y in range(hc):
            for x in range(wc):
                v = 0
                for c in range(cin):
                    for i in range(k):
                        yy = y * s + i - p
                        if yy < 0 or yy >= hin:
                            continue
                        for j in range(k):
                            xx = x * s + j - p
                            if xx < 0 or xx >= win:
                                continue
                            v += w[((o * cin + c) * k + i) * k + j] * a[(c * hin + yy) * win + xx]
                acc[(o * hc + y) * wc + x] = v


@njit(cache=True)
def _pool_accumulator(acc, m, pooled, arg):
    """Pooling on the accumulator: max: acc at the first maximum of each window (``arg``: that position,
    the context); avg: the SUM of each window (its area is divided in the shift); none: acc itself."""
    pool = m[_M_POOL]
    cout, hc, wc = m[_M_COUT], m[_M_HC], m[_M_WC]
    if pool == _POOL_NONE:
        for q in range(cout * hc * wc):
            pooled[q] = acc[q]
        return
    ps, pst, hp, wp = m[_M_PS], m[_M_PST], m[_M_HP], m[_M_WP]
    for c in range(cout):
        for y in range(hp):
            for x in range(wp):
                best = 0
                best_at = -1
                total = 0
                for i in range(ps):
                    for j in range(ps):
                        q = (c * hc + y * pst + i) * wc + x * pst + j
                        v = acc[q]
                        total += v
                        if best_at < 0 or v > best:
                            best, best_at = v, q
                r = (c * hp + y) * wp + x
                if pool == _POOL_MAX:
                    pooled[r] = best
                    arg[r] = best_at
                else:
                    pooled[r] = total


@njit(cache=True)
def _conv_up(a_prev, w, m, k, bias, acc, pooled, arg, out):
    """up[b, c, y, x] = shift_{k_l - log2(area)}( P(Wm_l * a_{l-1})[b, c, y, x] ) + bias_l[c]  (per row b of ``a_prev``)."""
    n_map = m[_M_HP] * m[_M_WP]
    kk = k - m[_M_LOG2AREA]
    for b in range(a_prev.shape[0]):
        _conv_accumulate(a_prev[b], w, m, acc)
        _pool_accumulator(acc, m, pooled, arg[b])
        for r in range(out.shape[1]):
            out[b, r] = _to_state_units(pooled[r], kk) + bias[r // n_map]


@njit(cache=True)
def _dense_up(a_prev, w, m, k, bias, out):
    """up[b, i] = shift_{k_l}( sum_j Wm_l[i, j] a_{l-1}[b, j] ) + bias_l[i]  (a C x H x W pre layer read in C order)."""
    n_out, n_in = m[_M_COUT], m[_M_CIN] * m[_M_HIN] * m[_M_WIN]
    for b in range(a_prev.shape[0]):
        for i in range(n_out):
            v = 0
            for j in range(n_in):
                v += w[i * n_in + j] * a_prev[b, j]
            out[b, i] = _to_state_units(v, k) + bias[i]


@njit(cache=True)
def _unpool(a_post, m, arg, g):
    """g = P^T a_l: a_l at each window's argmax ``arg`` (max), copied to every position of its window (avg;
    the area is divided in the shift), a_l itself (none); positions in several windows add up."""
    pool = m[_M_POOL]
    cout, hc, wc = m[_M_COUT], m[_M_HC], m[_M_WC]
    if pool == _POOL_NONE:
        for q in range(cout * hc * wc):
            g[q] = a_post[q]
        return
    for q in range(cout * hc * wc):
        g[q] = 0
    ps, pst, hp, wp = m[_M_PS], m[_M_PST], m[_M_HP], m[_M_WP]
    for c in range(cout):
        for y in range(hp):
            for x in range(wp):
                r = (c * hp + y) * wp + x
                v = a_post[r]
                if v == 0:
                    continue
                if pool == _POOL_MAX:
                    g[arg[r]] += v
                else:
                    for i in range(ps):
                        for j in range(ps):
                            g[(c * hc + y * pst + i) * wc + x * pst + j] += v


@njit(cache=True)
def _conv_transpose(g, w, m, acc):
    """acc[c, y', x'] = sum_{o,y,x,i,j: y s + i - p = y', x s + j - p = x'} Wm[o, c, i, j] g[o, y, x]  (W^T * g)."""
    cin, hin, win = m[_M_CIN], m[_M_HIN], m[_M_WIN]
    cout, hc, wc, k, s, p = m[_M_COUT], m[_M_HC], m[_M_WC], m[_M_K], m[_M_STRIDE], m[_M_PAD]
    for q in range(cin * hin * win):
        acc[q] = 0
    for o in range(cout):
        for y in range(hc):
            for x in range(wc):
                v = g[(o * hc + y) * wc + x]
                if v == 0:
                    continue
                for c in range(cin):
                    for i in range(k):
                        yy = y * s + i - p
                        if yy < 0 or yy >= hin:
                            continue
                        for j in range(k):
                            xx = x * s + j - p
                            if xx < 0 or xx >= win:
                                continue
                            acc[(c * hin + yy) * win + xx] += w[((o * cin + c) * k + i) * k + j] * v


@njit(cache=True)
def _conv_down(a_post, w, m, k, arg, g, acc, out):
    """down[b] = shift_{k_l - log2(area)}( Wm_l^T * P^T a_l[b] ), P^T at the context ``arg`` of the current pre state."""
    kk = k - m[_M_LOG2AREA]
    for b in range(a_post.shape[0]):
        _unpool(a_post[b], m, arg[b], g)
        _conv_transpose(g, w, m, acc)
        for q in range(out.shape[1]):
            out[b, q] = _to_state_units(acc[q], kk)


@njit(cache=True)
def _dense_down(a_post, w, m, k, acc, out):
    """down[b, j] = shift_{k_l}( sum_i Wm_l[i, j] a_l[b, i] ) (to a C x H x W pre layer in C order)."""
    n_out, n_in = m[_M_COUT], m[_M_CIN] * m[_M_HIN] * m[_M_WIN]
    for b in range(a_post.shape[0]):
        for j in range(n_in):
            acc[j] = 0
        for i in range(n_out):
            ai = a_post[b, i]
            if ai != 0:
                for j in range(n_in):
                    acc[j] += w[i * n_in + j] * ai
        for j in range(n_in):
            out[b, j] = _to_state_units(acc[j], k)


@njit(cache=True)
def _layer_up(l, a_prev, weights, meta, biases, shifts, accs, pooled, args, out):
    m = meta[l]
    if m[_M_KIND] == _KIND_CONV:
        _conv_up(a_prev, weights[l], m, shifts[l], biases[l], accs[l], pooled[l], args[l], out)
    else:
        _dense_up(a_prev, weights[l], m, shifts[l], biases[l], out)


@njit(cache=True)
def _relax_conv_kernel(x_int, states, weights, meta, biases, decays, shifts, y_int, beta_int, n_steps,
                       s_minus_f, one, input_bits, state_bits, decay_bits, act, table, table_lo, form,
                       state_frac_bits, gamma_int, top_mode, anchor, has_anchor, coe_int, tol_int):
    """:func:`_relax_kernel` for a chain of conv2d and dense layers (flat C-order rows, ``meta`` per weight layer).

    Per step, from the previous step's activations: every layer's bottom-up input and, for
    a max-pooling conv layer, the context (the argmax of each window of Wm_l * a_{l-1});
    then every layer's top-down input through the context of its own current state; then
    the neuron step. Layer 1's input and context are computed once per phase.
    """
    L = len(states)
    B = x_int.shape[0]
    accs = [np.zeros(meta[l, _M_COUT] * meta[l, _M_HC] * meta[l, _M_WC], dtype=np.int64) for l in range(L)]
    pooled = [np.zeros(states[l].shape[1], dtype=np.int64) for l in range(L)]
    args = [np.zeros((B, states[l].shape[1]), dtype=np.int64) for l in range(L)]
    down_acc = [np.zeros(states[l].shape[1], dtype=np.int64) for l in range(L)]
    up1 = np.empty_like(states[0])
    _layer_up(0, x_int, weights, meta, biases, shifts, accs, pooled, args, up1)
    acts = [np.empty_like(s) for s in states]
    news = [np.empty_like(s) for s in states]
    tmp_up = [np.empty_like(s) for s in states]
    tmp_down = [np.empty_like(s) for s in states]
    residual = np.zeros(B, dtype=np.int64)
    nudge = beta_int != 0
    one_d = np.int64(1) << decay_bits
    scale_down = gamma_int != one_d
    check = tol_int >= 0
    taken = 0
    for t in range(n_steps):
        for l in range(L):
            _presynaptic(states[l], acts[l], s_minus_f, form, one, act, table, table_lo)
        for l in range(1, L):  # bottom-up inputs and contexts first: the feedback reads the contexts
            _layer_up(l, acts[l - 1], weights, meta, biases, shifts, accs, pooled, args, tmp_up[l])
        for l in range(L):
            s = states[l]
            new = news[l]
            top = l == L - 1
            if top and top_mode != 0:
                for b in range(B):
                    for i in range(s.shape[1]):
                        new[b, i] = y_int[b, i] if top_mode == 1 else s[b, i]
                continue
            up = up1 if l == 0 else tmp_up[l]
            down = tmp_down[l]
            has_down = l < L - 1
            if has_down:
                m = meta[l + 1]
                if m[_M_KIND] == _KIND_CONV:
                    _conv_down(acts[l + 1], weights[l + 1], m, shifts[l + 1], args[l + 1], accs[l + 1],
                               down_acc[l], down)
                else:
                    _dense_down(acts[l + 1], weights[l + 1], m, shifts[l + 1], down_acc[l], down)
            _neuron_rows(s, up, down, has_down, scale_down, gamma_int, y_int, top, beta_int if (top and nudge) else 0,
                         decays[l], decay_bits, input_bits, state_bits, one, act, table, table_lo, form, state_frac_bits,
                         new)
        if has_anchor:
            _mix_toward(news, anchor, coe_int, decay_bits)
        taken += 1
        _commit(states, news, residual, check or t == n_steps - 1)
        if check and _settled(residual, tol_int):
            break
    return residual, taken


# --------------------------------------------------------------------------- public class


class FixedPointSimulator:
    """Integer relaxation of a :class:`DeployBundle`, leaky or energy form, MSE or softmax readout (module doc).

    The bundle's arrays are copied at construction and never modified; inputs are never
    modified either. A dense chain runs on the dense kernel, a chain with conv2d layers on
    the conv kernel (``kernel='conv'`` also runs a dense chain on it: the two agree bit for
    bit). Inputs may be flat (B, n_0) or in the input layer's shape (B, C, H, W); states
    come back in each layer's shape, (B, n) or (B, C, H, W).
    """

    def __init__(self, bundle: DeployBundle, *, kernel: str = "auto"):
        if not isinstance(bundle, DeployBundle):
            raise ConfigError(f"FixedPointSimulator needs a DeployBundle, got {type(bundle).__name__}")
        if bundle.form not in _FORMS:
            raise ConfigError(f"fixed-point simulation runs the {' and '.join(_FORMS)} forms, got form={bundle.form!r}")
        if bundle.output not in _OUTPUTS:
            raise ConfigError(f"fixed-point simulation runs outputs {', '.join(_OUTPUTS)}, got {bundle.output!r}")
        if bundle.activation not in _ACTIVATIONS:
            raise ConfigError(f"unsupported activation {bundle.activation!r}")
        if bundle.output == "ce" and not bundle.is_dense:
            raise ConfigError("fixed-point simulation runs a softmax readout after dense chains only")
        self.bundle = bundle
        self.form = bundle.form
        self._form = _FORMS[bundle.form]
        #: relaxed layers (all, or all but the softmax readout)
        self.n_dynamic = len(bundle.layers) - (1 if bundle.output == "ce" else 0)
        t = bundle.target
        self.S = int(bundle.state_frac_bits)
        self.F = int(bundle.activation_frac_bits)
        self.one = 1 << self.S
        self.decay_bits = int(t.decay.bits)
        self.input_bits = int(t.state.input_bits)
        self.state_bits = int(t.state.bits)
        relaxed = bundle.layers[: self.n_dynamic]
        self._weights = tuple(np.array(lb.weight_mantissa, dtype=np.int64, order="C", copy=True) for lb in relaxed)
        self._biases = tuple(np.array(lb.bias, dtype=np.int64, copy=True) for lb in relaxed)
        self._decays = tuple(np.array(lb.decay, dtype=np.int64, copy=True) for lb in relaxed)
        #: per relaxed layer's weight layer, the shift k_l = e_l - F + S from accumulator to state units
        self.shifts = np.array([int(lb.weight_exponent) - self.F + self.S for lb in relaxed], dtype=np.int64)
        #: the softmax readout (output 'ce'): mantissas, bias (state units) and shift k_L; None for MSE
        self.readout = None
        self._exp_table = exp2_table() if bundle.output == "ce" else _NO_B
        if bundle.output == "ce":
            lb = bundle.layers[-1]
            self.readout = (np.array(lb.weight_mantissa, dtype=np.int64, order="C", copy=True),
                            np.array(lb.bias, dtype=np.int64, copy=True),
                            int(lb.weight_exponent) - self.F + self.S)
        self._act = _ACTIVATIONS[bundle.activation]
        if self._act == _ACT_SIG4:
            self._table = sigmoid4_table(self.S)
            self._table_lo = SIGMOID4_LO * self.one
        else:
            self._table = np.zeros(1, dtype=np.int64)
            self._table_lo = 0
        #: shapes of the input and of every relaxed layer, without the batch ((n,) or (C, H, W))
        self.shapes = tuple(bundle.shapes)[: self.n_dynamic + 1]
        self.sizes = tuple(int(np.prod(sh)) for sh in self.shapes[1:])
        self.n_inputs = int(np.prod(self.shapes[0]))
        if kernel not in ("auto", "dense", "conv"):
            raise ConfigError(f"kernel must be 'auto', 'dense' or 'conv', got {kernel!r}")
        if kernel == "dense" and not bundle.is_dense:
            raise ConfigError("the dense kernel runs dense chains only")
        #: which Numba kernel relaxes the bundle: 'dense' (a dense chain) or 'conv' (any chain)
        self.kernel = ("dense" if bundle.is_dense else "conv") if kernel == "auto" else kernel
        if self.kernel == "conv":
            self._meta = conv_meta(bundle)
            self._flat_weights = tuple(np.ascontiguousarray(w).reshape(-1) for w in self._weights)

    # ----------------------------------------------------------------------- helpers

    def quantize_input(self, x) -> np.ndarray:
        """:func:`input_payload` as int64 (B, n_0), images flattened in C order: a new array."""
        xf = np.asarray(x, dtype=np.float64)
        if xf.ndim >= 2 and xf.shape[1:] == self.shapes[0]:
            xf = xf.reshape(xf.shape[0], -1)
        if xf.ndim != 2 or xf.shape[1] != self.n_inputs:
            raise ConfigError(f"x must have shape (B, {self.n_inputs})"
                              + (f" or (B, {', '.join(map(str, self.shapes[0]))})" if len(self.shapes[0]) > 1 else "")
                              + f", got {xf.shape}")
        if not np.isfinite(xf).all():
            raise ConfigError("x contains NaN or infinity")
        return input_payload(xf, self.form, self.bundle.activation, self.F)

    def zero_states(self, batch: int) -> list[np.ndarray]:
        """Zero states (B, n_l) per relaxed layer (flat: what the kernels step)."""
        return [np.zeros((batch, n), dtype=np.int64) for n in self.sizes]

    def dequantize_states(self, states) -> list[np.ndarray]:
        """Float values ``s_int / 2**S`` (float64, exact), in the shapes given."""
        return [np.asarray(s, dtype=np.int64) / float(self.one) for s in states]

    def _shaped(self, states) -> list[np.ndarray]:
        """Flat (B, n_l) states viewed in each layer's shape."""
        return [s.reshape(s.shape[0], *sh) for s, sh in zip(states, self.shapes[1:])]

    def _check_states(self, states, batch: int) -> list[np.ndarray]:
        if len(states) != len(self.sizes):
            raise ConfigError(f"expected {len(self.sizes)} state arrays, got {len(states)}")
        out = []
        for l, (s, n, sh) in enumerate(zip(states, self.sizes, self.shapes[1:]), start=1):
            a = np.asarray(s)
            if a.ndim >= 2 and a.shape == (batch, *sh):
                a = a.reshape(batch, n)
            if a.shape != (batch, n):
                raise ConfigError(f"state of layer {l} must have shape ({batch}, {', '.join(map(str, sh))})"
                                  + (f" or ({batch}, {n})" if len(sh) > 1 else "") + f", got {a.shape}")
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
        ce_nudge = self.readout is not None and beta_int != 0
        if self.readout is not None and clamp != "none":
            raise ConfigError(f"design rule {READOUT_CLAMP_RULE}: a softmax readout's top relaxed layer is hidden; "
                              "it cannot be clamped to the targets")
        if ce_nudge and self.kernel != "dense":
            raise ConfigError("a softmax readout's nudged phase runs on the dense kernel only")
        if beta_int != 0 or clamp == "target":
            if y is None:
                raise ConfigError("a nudged (beta != 0) or clamped phase needs targets y")
            yf = np.asarray(y, dtype=np.float64)
            n_y = self.n_classes
            if yf.shape != (B, n_y) or not np.isfinite(yf).all():
                raise ConfigError(f"y must be finite with shape ({B}, {n_y}), got {yf.shape}")
            y_int = np.rint(yf * self.one).astype(np.int64)
        else:
            y_int = np.zeros((B, self.sizes[-1]), dtype=np.int64)
        has_anchor = anchor is not None
        anchor_t = tuple(self._check_states(anchor, B)) if has_anchor else tuple(st)
        tol_int = -1 if tol is None else int(math.floor(float(tol) * self.one))
        common = (
            y_int, np.int64(beta_int), np.int64(n_steps), np.int64(self.S - self.F), np.int64(self.one),
            np.int64(self.input_bits), np.int64(self.state_bits), np.int64(self.decay_bits),
            np.int64(self._act), self._table, np.int64(self._table_lo), np.int64(self._form), np.int64(self.S),
            np.int64(self.fraction(gamma, "gamma")), np.int64(_CLAMPS.index(clamp)), anchor_t, has_anchor,
            np.int64(self.fraction(coe, "coe")), np.int64(tol_int),
        )
        if self.kernel == "dense":
            ro_w, ro_b, ro_k = self.readout if self.readout is not None else (_NO_W, _NO_B, 0)
            residual, taken = _relax_kernel(x_int, tuple(st), self._weights, self._biases, self._decays, self.shifts,
                                            *common, ce_nudge, ro_w, ro_b, np.int64(ro_k), self._exp_table)
        else:
            residual, taken = _relax_conv_kernel(x_int, tuple(st), self._flat_weights, self._meta, self._biases,
                                                 self._decays, self.shifts, *common)
        st = self._shaped(st)
        return (st, residual, int(taken)) if return_steps else (st, residual)

    def fraction(self, value: float, what: str) -> int:
        """``rint(value * 2**D)``: a nudge strength, gain or mixing coefficient as a D-bit fraction."""
        v = int(np.rint(float(value) * (1 << self.decay_bits)))
        if abs(v) >= 1 << (2 * self.decay_bits):
            raise ConfigError(f"{what} = {value!r} is too large for the fixed-point arithmetic")
        return v

    @property
    def n_classes(self) -> int:
        """Entries of a target ``y``: the top layer's units (MSE) or the readout's classes."""
        return int(self.readout[0].shape[0]) if self.readout is not None else self.sizes[-1]

    def logits(self, states) -> np.ndarray:
        """The softmax readout's integer logits (B, classes), units 2**-S (output 'ce' only)::

            logits = saturate(shift_k_L(Wm_L @ a_{L-1}) + bias_L, IB)

        ``a_{L-1}`` is what the top relaxed layer sends (its state, or rho(s) in the energy
        form); ``shift_k`` as for every weight layer. No softmax: its argmax is the
        logits' argmax, and the free phase never needs the probabilities.
        """
        if self.readout is None:
            raise ConfigError("logits: the bundle has an MSE output (its scores are the top states)")
        top = np.ascontiguousarray(states[-1], dtype=np.int64).reshape(len(states[-1]), -1)
        a = np.empty_like(top)
        _presynaptic(top, a, np.int64(self.S - self.F), np.int64(self._form), np.int64(self.one), np.int64(self._act),
                     self._table, np.int64(self._table_lo))
        w, bias, k = self.readout
        out = np.empty((a.shape[0], w.shape[0]), dtype=np.int64)
        _bottom_up(a, w, bias, np.int64(k), out)
        return saturate(out, self.input_bits)

    def scores(self, states) -> np.ndarray:
        """Integer class scores (B, classes): the top states (MSE) or :meth:`logits` (softmax readout)."""
        if self.readout is not None:
            return self.logits(states)
        return np.asarray(states[-1]).reshape(len(states[-1]), -1)

    def predict(self, x, n_steps: int) -> np.ndarray:
        """Predicted classes: argmax of :meth:`scores` after a free phase (first index on ties)."""
        states, _ = self.relax(x, n_steps)
        return np.argmax(self.scores(states), axis=1)


def input_payload(x, form: str, activation: str, frac_bits: int) -> np.ndarray:
    """The clamped input as graded payloads (host side, once per sample): int64 (B, n_0).

    ``rint(x * 2**F)`` in the leaky form; ``rint(rho(x) * 2**F)`` in the energy form, where
    layer 1's drive is ``W_1 rho(x)`` (dynamics.input_drive) and ``rho`` is the model's own
    float activation (for hard_sigmoid and inputs in [0, 1] the two are the same). NumPy
    ``rint``: nearest, ties to even. The Numba simulator and the Lava builder both call it.
    """
    xf = np.asarray(x, dtype=np.float64)
    if form == "energy":
        from ..activations import get_activation

        xf = get_activation(activation)[0](xf)
    return np.rint(xf * math.ldexp(1.0, int(frac_bits))).astype(np.int64)


def conv_meta(bundle: DeployBundle) -> np.ndarray:
    """int64 (L, 16): per weight layer the geometry the conv kernel reads (the ``_M_*`` columns)."""
    shapes = bundle.shapes
    rows = []
    for l, (kind, o) in enumerate(bundle.connection_options()):
        pre, post = shapes[l], shapes[l + 1]
        cin, hin, win = (tuple(pre) if len(pre) == 3 else (int(np.prod(pre)), 1, 1))
        m = [0] * 16
        m[_M_CIN], m[_M_HIN], m[_M_WIN] = cin, hin, win
        if kind == "conv2d":
            k, s, p = o["kernel"], o["stride"], o["padding"]
            hc, wc = (hin + 2 * p - k) // s + 1, (win + 2 * p - k) // s + 1
            area = o["pool_size"] ** 2 if o["pool"] == "avg" else 1
            if area & (area - 1):
                raise ConfigError(f"layer {l + 1}: avg pooling over {area} pixels: the area must be a power of two")
            m[_M_KIND] = _KIND_CONV
            m[_M_COUT], m[_M_HC], m[_M_WC] = post[0], hc, wc
            m[_M_K], m[_M_STRIDE], m[_M_PAD] = k, s, p
            m[_M_POOL], m[_M_PS], m[_M_PST] = _POOLS[o["pool"]], o["pool_size"], o["pool_stride"]
            m[_M_HP], m[_M_WP] = post[1], post[2]
            m[_M_LOG2AREA] = area.bit_length() - 1
        elif kind == "dense":
            m[_M_KIND] = _KIND_DENSE
            m[_M_COUT], m[_M_HC], m[_M_WC], m[_M_HP], m[_M_WP] = int(np.prod(post)), 1, 1, 1, 1
        else:
            raise ConfigError(f"layer {l + 1}: connection kind {kind!r} has no fixed-point kernel")
        rows.append(m)
    return np.array(rows, dtype=np.int64)


# --------------------------------------------------------------------------- one conv connection
#
# The conv kernel's own pieces, for one conv2d weight layer at a time: what a Lava
# connection process (neuro_hts.lava.proc.conv) computes each step, so that it cannot
# drift from the simulator.


def _conv_row(meta_row) -> np.ndarray:
    m = np.ascontiguousarray(meta_row, dtype=np.int64).reshape(-1)
    if m.shape != (16,) or m[_M_KIND] != _KIND_CONV:
        raise ConfigError("expected one conv2d row of conv_meta")
    return m


def _conv_sizes(m) -> tuple[int, int, int]:
    """(pre units, conv accumulator units, post units) of a conv meta row."""
    return (int(m[_M_CIN] * m[_M_HIN] * m[_M_WIN]), int(m[_M_COUT] * m[_M_HC] * m[_M_WC]),
            int(m[_M_COUT] * m[_M_HP] * m[_M_WP]))


def conv_up_int(a_pre, weights, meta_row, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Bottom-up drive of one conv2d layer WITHOUT its bias, and the max-pooling context.

    ``a_pre`` (B, n_pre) int64 activations, ``weights`` the mantissas (any shape, C
    order), ``meta_row`` the layer's row of :func:`conv_meta`, ``shift`` ``k_l = e_l - F
    + S``. Returns ``(up, context)``, both (B, n_post) int64: ``up = shift_{k_l -
    log2(A)}(P(Wm_l * a_pre))`` (module doc, "Conv layers") and, for max pooling, the
    flat accumulator position of each window's first maximum (zeros otherwise).
    """
    m = _conv_row(meta_row)
    n_pre, n_acc, n_post = _conv_sizes(m)
    a = np.ascontiguousarray(a_pre, dtype=np.int64)
    if a.ndim != 2 or a.shape[1] != n_pre:
        raise ConfigError(f"a_pre must have shape (B, {n_pre}), got {a.shape}")
    w = np.ascontiguousarray(weights, dtype=np.int64).reshape(-1)
    up = np.empty((a.shape[0], n_post), dtype=np.int64)
    arg = np.zeros((a.shape[0], n_post), dtype=np.int64)
    _conv_up(a, w, m, np.int64(shift), np.zeros(int(m[_M_COUT]), dtype=np.int64), np.zeros(n_acc, dtype=np.int64),
             np.zeros(n_post, dtype=np.int64), arg, up)
    return up, arg


def conv_down_int(a_post, weights, meta_row, shift: int, context) -> np.ndarray:
    """Feedback of one conv2d layer to its pre layer: ``shift_{k_l - log2(A)}(Wm_l^T * P^T a_post)``.

    ``context`` (B, n_post): :func:`conv_up_int`'s context of the CURRENT pre activations
    (used by max pooling only). Returns (B, n_pre) int64.
    """
    m = _conv_row(meta_row)
    n_pre, n_acc, n_post = _conv_sizes(m)
    a = np.ascontiguousarray(a_post, dtype=np.int64)
    arg = np.ascontiguousarray(context, dtype=np.int64)
    if a.ndim != 2 or a.shape[1] != n_post or arg.shape != a.shape:
        raise ConfigError(f"a_post and context must have shape (B, {n_post}), got {a.shape} / {arg.shape}")
    w = np.ascontiguousarray(weights, dtype=np.int64).reshape(-1)
    out = np.empty((a.shape[0], n_pre), dtype=np.int64)
    _conv_down(a, w, m, np.int64(shift), arg, np.zeros(n_acc, dtype=np.int64), np.zeros(n_pre, dtype=np.int64), out)
    return out


def conv_unrolled(weights, meta_row) -> np.ndarray:
    """The (n_post, n_pre) int64 matrix of a LINEAR conv2d connection (pool 'avg' or 'none').

    ``P(Wm * a) == conv_unrolled(Wm, m) @ a`` for every ``a``: avg pooling's window SUM
    (its area is divided in the shift, ``k_l - log2(A)``), so an entry is a sum of up to
    A mantissas. Max pooling is not linear: ConfigError.
    """
    m = _conv_row(meta_row)
    if m[_M_POOL] == _POOL_MAX:
        raise ConfigError("max pooling is not a fixed linear map: no unrolled matrix")
    n_pre = _conv_sizes(m)[0]
    # shift log2(A) cancels the kernel's k - log2(A): the exact pooled accumulator of each unit input
    cols, _ = conv_up_int(np.eye(n_pre, dtype=np.int64), weights, m, int(m[_M_LOG2AREA]))
    return np.ascontiguousarray(cols.T)
