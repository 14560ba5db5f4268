"""The numbers of the three-factor EP rule on Lava's learning engine (no Lava import).

Used by :func:`neuro_hts.lava.learning.train_lava_ld` and the Processes of
:mod:`neuro_hts.lava.proc.ep_ld` (docs/LAVA_LEARNING.md, "LearningDense variant").
Notation as in :mod:`neuro_hts.hardware.fixed_learning`: payloads ``p`` in units
``2**-F``, weights in grid steps ``q`` (mantissa ``m = lsb * q``).
"""

from __future__ import annotations

import math

import numpy as np

from neuro_hts.errors import ConfigError

__all__ = ["LAVA_LEARNING", "TRACE_BITS", "trace_payload", "trace7", "trace_decay", "rule_scale"]

#: ``train.lava_learning``: the exact integer EP update, or Lava's LearningDense with the 3F rule
LAVA_LEARNING = ("exact", "learning-dense")
#: Lava's trace width (``lava.magma.core.learning.constants.W_TRACE``)
TRACE_BITS = 7
#: the weight and tag accumulators' fraction bits (16-bit accumulator, 9-bit signed weight and tag)
ACCUMULATOR_FRAC = 7
#: relative error of the rule's scale accepted before a smaller tag mantissa is tried
SCALE_TOLERANCE = 0.05
#: the third factor at a batch's end: with scale -1 * 2^0, ``floor(-t * 32 / 2**5) = -t`` resets the tag exactly
TRANSFER_GATE = 32


def trace_payload(p, F: int) -> np.ndarray:
    """The graded payload the learning engine's trace sees: ``q = floor(p * 2**(8 - F))`` (8 bits for p <= 2**F)."""
    p = np.asarray(p, dtype=np.int64)
    return np.left_shift(p, 8 - F) if F <= 8 else np.right_shift(p, F - 8)


def trace7(p, F: int) -> np.ndarray:
    """The 7-bit trace of a payload, as Lava's graded ``OVERWRITE`` sets x1: ``min(round_half_even(q / 2), 127)``."""
    q = trace_payload(p, F)
    return np.minimum(np.round(q / 2).astype(np.int64), (1 << TRACE_BITS) - 1)


def trace_decay(tau: float) -> float:
    """Factor one learning step applies to the pre trace before the rule reads it: ``d = exp(-1 / tau)``."""
    return math.exp(-1.0 / float(tau))


def rule_scale(cw_real: float, F: int, x1_tau: float) -> tuple[int, int, int]:
    """``(m_t, m_w, e_w)`` of the tag rule (exponent of the tag term fixed at -7) with ``rho ~= m_t m_w 2**(e_w - 10)``.

    A phase end adds ``floor(m_t x1 y / 2**3) 2**-7`` tag units (product widths 7 + 7 + 4
    above the 15-bit accumulator: a shift of 3; scale ``m_t 2^-7``: the finest the
    accumulator holds); a batch's end moves ``floor(t g m_w / 2**5) 2**e_w = t m_w 2**e_w``
    grid steps to the weight (``g = TRANSFER_GATE``; widths 9 + 7 + 4). With ``x1 ~= d
    p_pre 2**(7-F)``, ``y ~= p_post 2**(7-F)`` the exact step per trace product is::

        rho = cw_real 2**(2F - 14) / d       (grid steps per unit of x1 y)

    (``cw_real``: grid steps per contrast unit, as
    :func:`~neuro_hts.hardware.fixed_learning.layer_multipliers`; ``d``:
    :func:`trace_decay`). Lava admits mantissas in [1, 7] and exponents in [-7, 8]; the
    largest ``m_t`` (the tag then keeps the most bits) whose nearest ``m_t m_w 2**e_w`` is
    within :data:`SCALE_TOLERANCE` of ``rho 2**10``, else the nearest overall. ``rho = 0``
    gives ``(0, 0, 0)`` (no learning). Raises ConfigError
    when rho is outside the representable range.
    """
    rho = float(cw_real) * 2.0 ** (2 * F - 2 * TRACE_BITS) / trace_decay(x1_tau)
    if not math.isfinite(rho) or rho < 0:
        raise ConfigError(f"learning-dense: the rule's scale must be finite and >= 0, got {rho}")
    if rho == 0.0:
        return 0, 0, 0
    target = rho * 2.0**10
    best = None
    for mt in range(7, 0, -1):
        err, mw, ew = min((abs(mt * mw * 2.0**ew - target) / target, mw, ew)
                          for mw in range(1, 8) for ew in range(-7, 9))
        if best is None or err < best[0]:
            best = (err, mt, mw, ew)
        if err <= SCALE_TOLERANCE:
            best = (err, mt, mw, ew)
            break
    err, mt, mw, ew = best
    if err > 0.5:
        raise ConfigError(f"learning-dense: the learning rate is outside what Lava's learning engine represents "
                          f"(scale {rho:.3g} per trace product, {mt} * {mw} * 2**{ew} * 2**-10 is {err:.0%} off)")
    return mt, mw, ew
