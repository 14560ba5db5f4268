"""Hardware layer: target descriptions (data) and the shared fixed-point arithmetic.

``load_target('loihi2')`` reads ``hardware/loihi2.toml``; :mod:`.fixed_point` holds the
integer helpers that the Numba fixed-point kernels and the Lava fixed_pt models share.
Lava itself is never imported here.
"""

from __future__ import annotations

from .fixed_point import (
    QuantizedWeights,
    decay_to_dt,
    dequantize,
    dt_to_decay,
    leaky_decay_step,
    multiplicative_decay,
    quantize_weights,
    saturate,
    shift_right_floor,
    shift_right_round_nearest,
    shift_right_round_toward_zero,
    wrap,
)
from .target import (
    HardwareTarget,
    TargetError,
    available_targets,
    load_target,
)

__all__ = [
    "HardwareTarget",
    "TargetError",
    "available_targets",
    "load_target",
    "QuantizedWeights",
    "decay_to_dt",
    "dequantize",
    "dt_to_decay",
    "leaky_decay_step",
    "multiplicative_decay",
    "quantize_weights",
    "saturate",
    "shift_right_floor",
    "shift_right_round_nearest",
    "shift_right_round_toward_zero",
    "wrap",
]
