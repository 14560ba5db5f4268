"""The one shared set of Loihi-style integer arithmetic helpers.

The Numba fixed-point kernels and the Lava ``fixed_pt`` ProcessModels must agree bit for
bit (docs/MODEL.md, "Loihi-style fixed point"), so both call these helpers and nothing else
for shifts, rounding, saturation, wrapping and decays.

The element-wise helpers are Numba ``@vectorize`` ufuncs with the single signature
``int64(int64, ...)``:

* from Python they take ints or integer arrays of any width that casts safely to int64
  (int8..int64, uint8..uint32), broadcast like NumPy ufuncs and return int64; floats and
  uint64 are refused with a ``TypeError`` (no silent float arithmetic);
* from inside an ``@njit`` function they are called the same way, on scalars or arrays,
  and compile to the same loop body, so a Numba kernel and a NumPy-based Lava model get
  identical results.

All arithmetic is in int64. Shift counts must lie in [0, 62]; bit widths in [1, 62]
(targets are validated to far less: see :mod:`neuro_hts.hardware.target`).

Host-side helpers (``dt_to_decay``, ``decay_to_dt``, ``quantize_weights``,
``dequantize``) are plain NumPy functions: they validate and raise ``ConfigError``, and
run once at deployment, not inside kernels.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit, vectorize

from ..errors import ConfigError

__all__ = [
    "shift_right_round_toward_zero",
    "shift_right_floor",
    "shift_right_round_nearest",
    "saturate",
    "wrap",
    "leaky_decay_step",
    "ACT_HARD_SIGMOID",
    "ACT_SIGMOID4",
    "FORM_LEAKY",
    "FORM_ENERGY",
    "activation_int",
    "activation_prime_int",
    "payload_step",
    "presynaptic_step",
    "presynaptic_update",
    "neuron_step",
    "neuron_update",
    "energy_neuron_step",
    "energy_neuron_update",
    "LOG2E_FRAC_BITS",
    "EXP2_INDEX_BITS",
    "EXP2_PRECISION_BITS",
    "SOFTMAX_INT_REL_ERR",
    "exp2_table",
    "softmax_int",
    "readout_nudge_target",
    "readout_nudge_targets",
    "multiplicative_decay",
    "dt_to_decay",
    "decay_to_dt",
    "QuantizedWeights",
    "EXPONENT_RULES",
    "choose_exponent",
    "quantize_weights",
    "dequantize",
]

_I2 = ["int64(int64, int64)"]
_I3 = ["int64(int64, int64, int64)"]
_I4 = ["int64(int64, int64, int64, int64)"]


# --------------------------------------------------------------------------- shifts


@vectorize(_I2, nopython=True, cache=True)
def shift_right_round_toward_zero(x, n):
    """x / 2**n rounded toward zero: ``sign(x) * (|x| >> n)``.

    Hardware quirk: Lava's LIF ``fixed_pt`` model (``lava/proc/lif/models.py``,
    ``AbstractPyLifModelFixed.subthr_dynamics``) shifts its decay products right by 12 as
    ``np.sign(p) * np.right_shift(np.abs(p), 12)``, i.e. toward zero. NumPy's (and C's)
    ``>>`` on a negative integer is an arithmetic shift that rounds toward minus infinity:
    ``-5 >> 1 == -3`` but ``shift_right_round_toward_zero(-5, 1) == -2``. Positive values
    agree with ``>>``.
    """
    if x < 0:
        return -((-x) >> n)
    return x >> n


@vectorize(_I2, nopython=True, cache=True)
def shift_right_floor(x, n):
    """x / 2**n rounded toward minus infinity: the plain arithmetic shift ``x >> n``.

    Hardware quirk: this is what Lava's Dense ``fixed_pt`` model does to the accumulated
    synaptic input with a negative ``weight_exp`` (``np.right_shift(a_accum, -weight_exp)``
    in ``lava/proc/dense/models.py``): ``-5 >> 1 == -3``.
    """
    return x >> n


@vectorize(_I2, nopython=True, cache=True)
def shift_right_round_nearest(x, n):
    """x / 2**n rounded to nearest, ties toward plus infinity: ``(x + 2**(n-1)) >> n``.

    The usual hardware rounding (add half an LSB, then arithmetic shift): -5/2 -> -2,
    5/2 -> 3, -7/2 -> -3, 7/2 -> 4. ``n == 0`` returns ``x``. Not used by Lava's stock
    models; provided for our own kernels where nearest rounding is wanted.
    """
    if n <= 0:
        return x
    return (x + (np.int64(1) << (n - 1))) >> n


# --------------------------------------------------------------------------- ranges


@vectorize(_I2, nopython=True, cache=True)
def saturate(x, bits):
    """Clip to the SYMMETRIC signed range [-(2**(bits-1) - 1), 2**(bits-1) - 1].

    Hardware quirk: Lava's LIF ``fixed_pt`` voltage uses exactly these limits for its
    24-bit state (``neg_voltage_limit = -max_uv_val + 1``, ``pos_voltage_limit =
    max_uv_val - 1`` with ``max_uv_val = 2**23``, then ``np.clip``): +-8,388,607. The
    two's-complement minimum -2**(bits-1) is never produced.
    """
    lim = (np.int64(1) << (bits - 1)) - 1
    if x > lim:
        return lim
    if x < -lim:
        return -lim
    return x


@vectorize(_I2, nopython=True, cache=True)
def wrap(x, bits):
    """Two's-complement wrap-around into [-2**(bits-1), 2**(bits-1) - 1] (a bits-wide register).

    Hardware quirk: Loihi's 24-bit current ``u`` overflows instead of saturating. Lava's
    LIF ``fixed_pt`` model approximates this with two ``np.where`` steps (``x > 2**23 ->
    x - 2**24``, then ``<= -2**23 -> + 2**24``), which differs from a true register in
    two places: it keeps ``+2**23`` itself (not representable in 24 bits) and maps
    ``-2**23`` to ``+2**23``, and it only corrects overflows of less than one period.
    We implement the register (any x, exact modulo 2**bits); inside (-2**23, 2**23) and
    for single overflows other than those two points the results are the same.
    """
    half = np.int64(1) << (bits - 1)
    mask = (np.int64(1) << bits) - 1
    return ((x + half) & mask) - half


# --------------------------------------------------------------------------- decays


@vectorize(_I4, nopython=True, cache=True)
def leaky_decay_step(s, target_drive, decay, decay_bits):
    """One integer leaky step toward a target: ``s + tz((decay * (a - s)) / 2**decay_bits)``.

    The integer form of the float update ``s <- s + dt (a - s)`` with
    ``dt = decay / 2**decay_bits`` (12 bits on Loihi: ``decay = round(dt * 4096)``, see
    :func:`dt_to_decay`), where ``tz`` is :func:`shift_right_round_toward_zero`::

        step  = shift_right_round_toward_zero(decay * (a - s), decay_bits)   # int64 product
        s_new = s + step

    Properties (for 0 <= decay <= 2**decay_bits, which :func:`dt_to_decay` guarantees):

    * ``s_new`` lies between ``s`` and ``a`` (inclusive): the step is rounded toward zero,
      so it never overshoots, and no saturation is needed when ``s`` and ``a`` are in range;
    * the rule is odd-symmetric: moving toward ``a`` from ``s`` mirrors moving toward
      ``-a`` from ``-s`` (floor rounding would not be);
    * decay = 2**decay_bits (dt = 1) jumps to ``a`` exactly; decay 2048 (dt = 0.5) halves
      the distance each step, rounding the step toward zero (1000 -> 500 -> 250 -> 125 ->
      62 -> 31 from distance 1000: 0, 500, 750, 875, 937, 968, ...);
    * DEAD ZONE: the state stops moving once ``decay * |a - s| < 2**decay_bits``, i.e. it
      settles up to ``ceil(2**decay_bits / decay) - 1`` units short of ``a``. With decay 1
      (dt = 1/4096) a state closer than 4096 units to its target never moves at all.
      Small dt therefore needs wide states (24 bits) so that 4096 units are a small
      fraction of the signal range.

    Overflow: the product must fit int64 (|a - s| < 2**(62 - decay_bits)); 24-bit states
    and 12-bit decays use at most 2**37.
    """
    p = decay * (target_drive - s)
    if p < 0:
        return s - ((-p) >> decay_bits)
    return s + (p >> decay_bits)


#: activation codes of the integer kernels (fixed_sim._ACTIVATIONS)
ACT_HARD_SIGMOID, ACT_SIGMOID4 = 0, 1
#: dynamics form codes of the integer kernels (fixed_sim._FORMS)
FORM_LEAKY, FORM_ENERGY = 0, 1


@njit(cache=True, inline="always")
def activation_int(u, one, act, table, table_lo):
    """The integer activation sigma (leaky form) / rho (energy form), written once::

        act 0 (hard_sigmoid): clip(u, 0, one)
        act 1 (sigmoid4):     table[clip(u - table_lo, 0, len(table) - 1)]

    ``u`` in state units 2**-S, ``one = 2**S``; ``table``, ``table_lo``:
    ``fixed_sim.sigmoid4_table`` and its first input (unused for act 0). The result lies in
    [0, one].
    """
    if act == ACT_HARD_SIGMOID:
        return min(max(u, 0), one)
    idx = u - table_lo
    if idx < 0:
        idx = 0
    elif idx >= table.shape[0]:
        idx = table.shape[0] - 1
    return table[idx]


@njit(cache=True, inline="always")
def activation_prime_int(s, r, state_frac_bits, act):
    """The integer derivative rho'(s) of the energy form, units 2**-S, in [0, 2**S]::

        act 0 (hard_sigmoid): 2**S if 0 <= s <= 2**S else 0       (the closed-interval indicator
                                                                   of activations.hard_sigmoid_prime)
        act 1 (sigmoid4):     (4 r (2**S - r)) >> S,  r = activation_int(s)   (rho' = 4 rho (1 - rho))

    ``r`` is the integer activation of ``s`` (:func:`activation_int`). For sigmoid4 the
    product is exact and the shift floors a non-negative value, so the result is within
    one LSB below 2**S * 4 r (1 - r) of the table's rho, itself within half an LSB of
    sigmoid4: |rho'_int / 2**S - sigmoid4'(s / 2**S)| < 3 * 2**-S.
    """
    one = np.int64(1) << state_frac_bits
    if act == ACT_HARD_SIGMOID:
        return one if (s >= 0 and s <= one) else 0
    return (4 * r * (one - r)) >> state_frac_bits


@njit(cache=True, inline="always")
def presynaptic_step(s, s_minus_f, form, one, act, table, table_lo):
    """What a layer sends (graded payload, F fraction bits) from its state ``s`` (units 2**-S)::

        v = s                        (leaky form: the state itself)
        v = activation_int(s)        (energy form: rho(s))
        a = shift_right_round_nearest(v, S - F)   if S >= F,   else  v << (F - S)
    """
    v = s if form == FORM_LEAKY else activation_int(s, one, act, table, table_lo)
    return payload_step(v, s_minus_f)


@njit(cache=True, inline="always")
def payload_step(v, s_minus_f):
    """A value in state units 2**-S as a graded payload (F fraction bits): round-nearest right
    shift by ``S - F`` (identity when S == F), or the exact left shift when S < F."""
    if s_minus_f >= 0:
        return shift_right_round_nearest(v, s_minus_f)
    return v << (-s_minus_f)


@njit(cache=True)
def presynaptic_update(s, s_minus_f, form, one, act, table, table_lo):
    """:func:`presynaptic_step` over a 1-D int64 array (one layer of one sample); returns the payloads."""
    out = np.empty_like(s)
    for i in range(s.shape[0]):
        out[i] = presynaptic_step(s[i], s_minus_f, form, one, act, table, table_lo)
    return out


@njit(cache=True, inline="always")
def neuron_step(s, h, y, beta_int, decay, decay_bits, input_bits, state_bits, one, act, table, table_lo):
    """The one integer HTS neuron update (every int64 scalar; Numba kernels and Lava models call it)::

        h   <- saturate(h, IB)                                           synaptic input + bias
        h   <- saturate(h + tz(beta_int * (y - s), D), IB)               nudge (beta_int != 0)
        sig  = clip(h, 0, 2**S)  (act 0)  |  table[clip(h - table_lo)]   (act 1, sigmoid4 table)
        s   <- saturate(leaky_decay_step(s, sig, decay, D), SB)

    ``tz`` is :func:`shift_right_round_toward_zero` (toward zero, so +beta and -beta nudges
    mirror each other); ``table`` and ``table_lo`` are ``fixed_sim.sigmoid4_table`` and its
    first input (unused for act 0); ``one = 2**S``.
    """
    h = saturate(h, input_bits)
    if beta_int != 0:
        h = saturate(h + shift_right_round_toward_zero(beta_int * (y - s), decay_bits), input_bits)
    sig = activation_int(h, one, act, table, table_lo)
    return saturate(leaky_decay_step(s, sig, decay, decay_bits), state_bits)


@njit(cache=True)
def neuron_update(s, h, y, beta_int, decay, decay_bits, input_bits, state_bits, one, act, table, table_lo):
    """:func:`neuron_step` over 1-D int64 arrays (one layer of one sample); returns the new states."""
    out = np.empty_like(s)
    for i in range(s.shape[0]):
        out[i] = neuron_step(s[i], h[i], y[i], beta_int, decay[i], decay_bits, input_bits, state_bits, one, act,
                             table, table_lo)
    return out


@njit(cache=True, inline="always")
def energy_neuron_step(s, h, y, beta_int, decay, decay_bits, input_bits, state_frac_bits, act, table, table_lo):
    """The one integer update of the ENERGY form (every int64 scalar; Numba kernels and Lava models call it).

    The integer form of ``s <- clip(s + dt (rho'(s) h - s + beta (y - s)), 0, 1)``
    (docs/MODEL.md, dynamics.energy_update), with ``S = state_frac_bits``, ``one = 2**S``::

        h   <- saturate(h, IB)                                        synaptic input + bias
        r    = activation_int(s)                                      rho(s)
        g    = tz(activation_prime_int(s, r) * h, S)                  rho'(s) h   (units 2**-S)
        g   <- g + tz(beta_int * (y - s), D)                          nudge (beta_int != 0), outside rho'
        g   <- saturate(g, IB)
        s   <- clip(leaky_decay_step(s, g, decay, D), 0, one)

    ``tz`` is :func:`shift_right_round_toward_zero`. For hard_sigmoid rho'(s) = 2**S on
    [0, one], where the states live, so ``g = h`` exactly; the only difference from the
    leaky neuron is then WHERE the clip acts (on the new state instead of on the target).
    Products fit int64: |rho' h| <= 2**S * 2**(IB-1), |decay (g - s)| <= 2**D * 2**IB.
    """
    h = saturate(h, input_bits)
    r = activation_int(s, np.int64(1) << state_frac_bits, act, table, table_lo)
    g = shift_right_round_toward_zero(activation_prime_int(s, r, state_frac_bits, act) * h, state_frac_bits)
    if beta_int != 0:
        g = g + shift_right_round_toward_zero(beta_int * (y - s), decay_bits)
    g = saturate(g, input_bits)
    new = leaky_decay_step(s, g, decay, decay_bits)
    one = np.int64(1) << state_frac_bits
    return min(max(new, 0), one)


@njit(cache=True)
def energy_neuron_update(s, h, y, beta_int, decay, decay_bits, input_bits, state_frac_bits, act, table, table_lo):
    """:func:`energy_neuron_step` over 1-D int64 arrays (one layer of one sample); returns the new states."""
    out = np.empty_like(s)
    for i in range(s.shape[0]):
        out[i] = energy_neuron_step(s[i], h[i], y[i], beta_int, decay[i], decay_bits, input_bits, state_frac_bits,
                                    act, table, table_lo)
    return out


#: integer softmax: log2(e) with LOG2E_FRAC_BITS fraction bits, and 2**(-f / 2**EXP2_INDEX_BITS) for
#: f = 0 .. 2**EXP2_INDEX_BITS - 1 with EXP2_PRECISION_BITS fraction bits (exp2_table)
LOG2E_FRAC_BITS = 16
EXP2_INDEX_BITS = 10
EXP2_PRECISION_BITS = 20
#: stated bound of |softmax_int / 2**S - softmax|, every entry (tested): 2**-S + SOFTMAX_INT_REL_ERR
SOFTMAX_INT_REL_ERR = 1.5e-3


def exp2_table() -> np.ndarray:
    """int64 ``rint(2**P * 2**(-f / 2**I))`` for f = 0 .. 2**I - 1 (P = 20, I = 10: 1024 entries)."""
    f = np.arange(1 << EXP2_INDEX_BITS, dtype=np.float64)
    return np.rint(np.exp2(EXP2_PRECISION_BITS - f / float(1 << EXP2_INDEX_BITS))).astype(np.int64)


@njit(cache=True)
def softmax_int(z, state_frac_bits, table, out):
    """Softmax of integer logits ``z`` (1-D, units 2**-S) in integers: ``out`` in units 2**-S.

    Shift-based exp with a small lookup table (no float, no exp)::

        d_i = z_i - max(z) <= 0                                        units 2**-S
        v_i = -d_i * L2E,  L2E = rint(log2(e) * 2**16) = 94548         units 2**-(S+16), >= 0
        n_i = v_i >> (S + 16)                                          integer part of -d_i log2(e)
        f_i = (v_i >> (S + 16 - 10)) & 1023                            10-bit fraction, truncated
        e_i = table[f_i] >> n_i      (0 once n_i > 20)                 ~ 2**20 exp(d_i)
        out_i = (e_i << S) // sum_j e_j                                floor

    ``table`` is :func:`exp2_table`. The maximum gets ``e = 2**20`` exactly. Error: the
    truncated fraction overestimates each exp by at most ``2**(2**-10) - 1 = 6.8e-4``
    (relative), the table and L2E roundings add < 1e-5, the shifts and the division lose
    less than one unit each, so ``|out_i / 2**S - softmax(z / 2**S)_i| <= 2**-S +
    SOFTMAX_INT_REL_ERR`` (1.5e-3; measured on random logits: tests/test_fixed_energy.py).
    """
    n = z.shape[0]
    zmax = z[0]
    for i in range(1, n):
        if z[i] > zmax:
            zmax = z[i]
    shift_all = state_frac_bits + LOG2E_FRAC_BITS
    l2e = np.int64(94548)  # rint(log2(e) * 2**16)
    total = np.int64(0)
    for i in range(n):
        v = (zmax - z[i]) * l2e
        k = v >> shift_all
        if k > EXP2_PRECISION_BITS:
            out[i] = 0
            continue
        f = (v >> (shift_all - EXP2_INDEX_BITS)) & ((np.int64(1) << EXP2_INDEX_BITS) - 1)
        out[i] = table[f] >> k
        total += out[i]
    for i in range(n):
        out[i] = (out[i] << state_frac_bits) // total


@njit(cache=True, inline="always")
def readout_nudge_target(s, fb, form, state_frac_bits, act, table, table_lo):
    """The integer target ``y'`` whose MSE nudge is the softmax readout's: ``y' - s = -dC/ds``.

    ``fb = shift_k_L(Wm_L^T a(y - p))`` (units 2**-S) is the readout's feedback
    (``p = softmax_int(logits)``). The neuron's own nudge ``tz(beta_int (y' - s), D)``
    then is ``tz(beta_int fb, D)`` (leaky: inside sigma, as the MSE nudge) or
    ``tz(beta_int tz(rho'(s) fb, S), D)`` (energy: the chain rule through r = rho(s),
    dynamics.output_nudge), so both forms keep their one neuron function::

        y' = s + fb                                  (leaky)
        y' = s + tz(activation_prime_int(s) fb, S)   (energy)
    """
    if form == FORM_LEAKY:
        return s + fb
    one = np.int64(1) << state_frac_bits
    r = activation_int(s, one, act, table, table_lo)
    return s + shift_right_round_toward_zero(activation_prime_int(s, r, state_frac_bits, act) * fb, state_frac_bits)


@njit(cache=True)
def readout_nudge_targets(s, fb, form, state_frac_bits, act, table, table_lo):
    """:func:`readout_nudge_target` over 1-D int64 arrays (the top relaxed layer of one sample)."""
    out = np.empty_like(s)
    for i in range(s.shape[0]):
        out[i] = readout_nudge_target(s[i], fb[i], form, state_frac_bits, act, table, table_lo)
    return out


@vectorize(_I3, nopython=True, cache=True)
def multiplicative_decay(x, decay, decay_bits):
    """Lava LIF's decay of a state toward zero: ``tz(x * (2**decay_bits - decay) / 2**decay_bits)``.

    Exactly ``np.sign(p) * np.right_shift(np.abs(p), 12)`` with ``p = x * (4096 - d)`` from
    ``lava/proc/lif/models.py`` (``d = du + 1`` for the current, ``d = dv`` for the
    voltage). Note the rounding differs from :func:`leaky_decay_step` with ``a = 0``: here
    the RETAINED part is rounded toward zero (the state loses the remainder, so it reaches
    0), there the STEP is (the state keeps it and stalls in the dead zone).
    """
    p = x * ((np.int64(1) << decay_bits) - decay)
    if p < 0:
        return -((-p) >> decay_bits)
    return p >> decay_bits


def dt_to_decay(dt, decay_bits: int = 12) -> np.ndarray:
    """Per-neuron time steps to integer decays: ``decay = round(dt * 2**decay_bits)``.

    Rounding is NumPy's ``rint`` (nearest, ties to even). A decay must lie in
    [1, 2**decay_bits]: 0 would freeze the neuron, and more than 2**decay_bits (dt > 1)
    makes the leaky step overshoot. 2**decay_bits itself is allowed (dt = 1); Loihi stores
    it as a 12-bit ``du = decay - 1`` plus the 1-bit offset that Lava's LIF adds to the
    current decay (``ds_offset = 1``).

    Parameters
    ----------
    dt : float or array of floats, any shape
    decay_bits : int, 12 on Loihi

    Returns
    -------
    int64 array of the shape of ``dt``.

    Raises
    ------
    ConfigError
        Naming the first offending neuron index and its dt (non-finite, or rounding to a
        decay outside [1, 2**decay_bits]).
    """
    if isinstance(decay_bits, bool) or not isinstance(decay_bits, (int, np.integer)) or not 1 <= decay_bits <= 30:
        raise ConfigError(f"decay_bits must be an integer in [1, 30], got {decay_bits!r}")
    arr = np.asarray(dt, dtype=np.float64)
    scale = float(1 << int(decay_bits))
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = np.rint(arr * scale)
        bad = ~np.isfinite(scaled) | (scaled < 1) | (scaled > scale)
    if bad.any():
        flat = int(np.flatnonzero(bad.ravel())[0])
        idx = np.unravel_index(flat, arr.shape) if arr.ndim else ()
        where = "dt" if arr.ndim == 0 else f"dt[{', '.join(map(str, idx))}]"
        value = float(arr[idx] if arr.ndim else arr[()])
        lo, hi = 0.5 / scale, 1.0 + 0.5 / scale
        raise ConfigError(
            f"neuron {where} = {value!r} is not representable as a {decay_bits}-bit decay: "
            f"round(dt * {int(scale)}) must lie in [1, {int(scale)}] (dt in about [{lo:.3g}, {hi:.6g}])"
        )
    return scaled.astype(np.int64)


def decay_to_dt(decay, decay_bits: int = 12) -> np.ndarray:
    """Inverse of :func:`dt_to_decay`: ``dt = decay / 2**decay_bits`` (float64, exact)."""
    return np.asarray(decay, dtype=np.int64) / float(1 << int(decay_bits))


# --------------------------------------------------------------------------- weights


class QuantizedWeights(NamedTuple):
    """Integer weights with a shared power-of-two exponent: ``w ~= mantissas * scale``.

    ``mantissas``: int64 array, the integers the hardware stores (even values when the
    target's weights are ``even``); ``exponent``: the shared exponent; ``scale``:
    ``2.0 ** exponent``, the real value of one integer unit.
    """

    mantissas: np.ndarray
    exponent: int
    scale: float


#: how :func:`choose_exponent` picks a layer's shared exponent
EXPONENT_RULES = ("max", "percentile", "mse")
#: exponents below the max rule's that the ``mse`` rule tries
MSE_SEARCH_DEPTH = 8


def _smallest_exponent_holding(value: float, max_int: int, e_min: int, e_max: int) -> int | None:
    for e in range(e_min, e_max + 1):
        if value <= math.ldexp(max_int, e):
            return e
    return None


def _saturated_grid(arr: np.ndarray, e: int, max_int: int, lsb: int) -> np.ndarray:
    """Nearest-rounded grid values of ``arr`` at exponent ``e``, saturated at +-max_int."""
    step = math.ldexp(float(lsb), e)
    limit = max_int // lsb
    return np.clip(np.rint(arr / step), -limit, limit) * step


def choose_exponent(arr, max_int: int, lsb: int, exponent_range: tuple[int, int], rule: str = "max",
                    percentile: float = 99.9) -> int:
    """The shared exponent ``e`` of one weight matrix, by ``rule``.

    * ``max``: the smallest ``e`` with ``max|w| <= max_int * 2**e``: nothing saturates, but
      one large weight coarsens the grid of all the others;
    * ``percentile``: the smallest ``e`` with ``P_q(|w|) <= max_int * 2**e`` (``q`` =
      ``percentile``); the weights above saturate at ``+-max_int * 2**e``;
    * ``mse``: among the max rule's exponent and the :data:`MSE_SEARCH_DEPTH` below it, the
      one minimising the squared error of nearest rounding with saturation,
      ``sum_ij (w_ij - 2**e * lsb * clip(rint(w_ij / (lsb 2**e)), -max_int/lsb, max_int/lsb))**2``
      (ties: the larger exponent, which saturates less).

    Raises ConfigError when no exponent of ``exponent_range`` holds the largest weight the
    rule keeps unsaturated (max rule) or the percentile.
    """
    if rule not in EXPONENT_RULES:
        raise ConfigError(f"exponent rule must be one of {', '.join(EXPONENT_RULES)}, got {rule!r}")
    if not (isinstance(percentile, (int, float)) and 0 < percentile <= 100):
        raise ConfigError(f"percentile must lie in (0, 100], got {percentile!r}")
    e_min, e_max = exponent_range
    a = np.abs(np.asarray(arr, dtype=np.float64))
    max_abs = float(a.max()) if a.size else 0.0
    if rule == "percentile":
        value = float(np.percentile(a, percentile)) if a.size else 0.0
        e = _smallest_exponent_holding(value, max_int, e_min, e_max)
        if e is None:
            raise ConfigError(f"the {percentile:g}th percentile of |w| ({value:.6g}) exceeds the largest "
                              f"representable {max_int} * 2**{e_max} = {math.ldexp(max_int, e_max):.6g}")
        return e
    e = _smallest_exponent_holding(max_abs, max_int, e_min, e_max)
    if e is None:
        raise ConfigError(
            f"weights up to |w| = {max_abs:.6g} exceed the largest representable "
            f"{max_int} * 2**{e_max} = {math.ldexp(max_int, e_max):.6g}"
        )
    if rule == "max" or a.size == 0:
        return e
    best, best_err = e, math.inf
    for cand in range(e, max(e_min, e - MSE_SEARCH_DEPTH) - 1, -1):  # larger exponents first: ties keep them
        err = float(np.sum((a - np.abs(_saturated_grid(a, cand, max_int, lsb))) ** 2))
        if err < best_err:
            best, best_err = cand, err
    return best


def quantize_weights(
    w,
    mantissa_bits: int,
    exponent_range: tuple[int, int],
    even: bool = False,
    rounding: str = "nearest",
    rng: np.random.Generator | None = None,
    exponent_rule: str = "max",
    percentile: float = 99.9,
) -> QuantizedWeights:
    """Quantize float weights to signed integer mantissas with one shared exponent.

    Representable integers are the multiples of ``lsb`` (2 if ``even`` else 1) in
    [-max_int, max_int] with ``max_int = 2**mantissa_bits - lsb``: ``mantissa_bits``
    counts magnitude bits, the sign is one more (Loihi: "8-bit weights plus sign").
    Hardware quirk: with ``even`` (Lava's Dense, 8 bits, mixed sign) the effective weights
    are EVEN values in [-256, 254]; the hardware's extra value -256 is never produced, so
    the range is symmetric.

    The exponent ``e`` is chosen by ``exponent_rule`` (:func:`choose_exponent`; ``max``,
    the default: the smallest in ``exponent_range`` (inclusive) with ``max|w| <= max_int *
    2**e``); then ``mantissas = lsb * R(clip(w / (lsb * 2**e), -max_int/lsb, max_int/lsb))``
    where R is ``rint`` (nearest, ties to even; error <= lsb * 2**e / 2) or stochastic
    rounding (floor, plus 1 with probability equal to the fraction: unbiased, error < one
    LSB). Neither rounding can leave the range, since max_int is itself a multiple of lsb;
    the clip saturates only under the ``percentile`` and ``mse`` rules.

    Parameters
    ----------
    w : array_like of floats, any shape; never modified.
    mantissa_bits : int >= 1 (>= 2 with ``even``)
    exponent_range : (exponent_min, exponent_max)
    even : bool
    rounding : 'nearest' or 'stochastic'
    rng : np.random.Generator, required for 'stochastic'

    Returns
    -------
    QuantizedWeights(mantissas int64 array of w's shape, exponent, scale = 2.0**exponent)

    Raises
    ------
    ConfigError
        Non-finite weights, weights too large for ``max_int * 2**exponent_max``, bad
        arguments, or stochastic rounding without a Generator.
    """
    if isinstance(mantissa_bits, bool) or not isinstance(mantissa_bits, (int, np.integer)):
        raise ConfigError(f"mantissa_bits must be an integer, got {mantissa_bits!r}")
    lsb = 2 if even else 1
    if not 1 <= mantissa_bits <= 30 or (even and mantissa_bits < 2):
        raise ConfigError(f"mantissa_bits must lie in [{lsb}, 30], got {mantissa_bits}")
    try:
        e_min, e_max = (int(v) for v in exponent_range)
    except (TypeError, ValueError):
        raise ConfigError(f"exponent_range must be (min, max) integers, got {exponent_range!r}") from None
    if e_min > e_max:
        raise ConfigError(f"exponent_range min ({e_min}) must be <= max ({e_max})")
    if rounding not in ("nearest", "stochastic"):
        raise ConfigError(f"rounding must be 'nearest' or 'stochastic', got {rounding!r}")
    if rounding == "stochastic" and not isinstance(rng, np.random.Generator):
        raise ConfigError("stochastic rounding needs an explicit numpy.random.Generator (rng=...)")

    arr = np.asarray(w, dtype=np.float64)  # may alias w: only read below
    if not np.isfinite(arr).all():
        raise ConfigError("weights contain NaN or infinity; cannot quantize")
    max_int = (1 << int(mantissa_bits)) - lsb
    exponent = choose_exponent(arr, max_int, lsb, (e_min, e_max), exponent_rule, percentile)
    scale = math.ldexp(1.0, exponent)
    units = arr / (scale * lsb)  # a new array; exact (power-of-two division)
    if exponent_rule != "max":
        np.clip(units, -(max_int // lsb), max_int // lsb, out=units)
    if rounding == "nearest":
        q = np.rint(units)
    else:
        low = np.floor(units)
        q = low + (rng.random(arr.shape) < (units - low))
    mantissas = q.astype(np.int64) * lsb
    return QuantizedWeights(mantissas, exponent, scale)


def dequantize(mantissas, exponent: int) -> np.ndarray:
    """Float values of integer weights: ``mantissas * 2.0**exponent`` (float64, exact)."""
    return np.asarray(mantissas, dtype=np.int64) * math.ldexp(1.0, int(exponent))
