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
#: the product series' factor widths x1, y1, y2 (7 each) + the scale mantissa (4) above the 15-bit accumulator
PRODUCT_SHIFT = 3 * TRACE_BITS + 4 - 15
#: the weight accumulator's fraction bits (16-bit accumulator, 9-bit signed weight)
ACCUMULATOR_FRAC = 7


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
    """``(m, e, g)``: scale mantissa, exponent and third factor with ``g m 2**e ~= R``.

    The per-product change is ``floor(x1 y1 g m / 2**PRODUCT_SHIFT) 2**e`` grid steps with
    ``x1 ~= d p_pre 2**(7-F)`` (``d``: :func:`trace_decay`), ``y1 ~= p_post 2**(7-F)``; the
    exact step is ``cw_real p_pre p_post`` grid steps (``cw_real``: grid steps per contrast
    unit, as :func:`~neuro_hts.hardware.fixed_learning.layer_multipliers` uses), so::

        g m 2**e = R = cw_real 2**(2F - 14 + PRODUCT_SHIFT) / d

    Lava admits ``m in [1, 7]`` (4-bit signed mantissa), ``e in [-7, 8]``, and ``g in [1,
    127]`` (a 7-bit trace). The smallest ``e`` with ``R / 2**e <= 7 * 127`` keeps the most
    bits in the product; there the ``(m, g)`` nearest to R. ``R = 0`` gives ``(0, 0, 0)``.
    Raises ConfigError when R is out of the representable range.
    """
    R = float(cw_real) * 2.0 ** (2 * F - 2 * TRACE_BITS + PRODUCT_SHIFT) / trace_decay(x1_tau)
    if not math.isfinite(R) or R < 0:
        raise ConfigError(f"learning-dense: the rule's scale must be finite and >= 0, got {R}")
    if R == 0.0:
        return 0, 0, 0
    gmax = (1 << TRACE_BITS) - 1
    for e in range(-7, 9):
        if R / 2.0**e > 7 * gmax + 0.5:
            continue
        best = None
        for m in range(7, 0, -1):
            g = min(gmax, round(R / (m * 2.0**e)))
            if g >= 1:
                err = abs(g * m * 2.0**e - R)
                if best is None or err < best[0]:
                    best = (err, m, g)
        if best is None:
            raise ConfigError(f"learning-dense: the learning rate is below what Lava's learning engine represents "
                              f"(scale {R:.3g} < 2**-8 per product); raise lr or lower the batch size")
        return best[1], e, best[2]
    raise ConfigError(f"learning-dense: the learning rate is above what Lava's learning engine represents "
                      f"(scale {R:.3g} > 127 * 7 * 2**8)")
