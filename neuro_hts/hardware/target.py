"""Hardware targets as data: the integer arithmetic and limits of a chip, read from TOML.

A target file (``hardware/<name>.toml`` at the repository root) has a top-level ``name``
and ``description`` and five tables, every key required, no other key allowed::

    [decay]    bits, scale                      (scale == 2**bits; dt = decay / scale)
    [state]    bits, input_bits, input_shift
    [weights]  mantissa_bits, exponent_min, exponent_max, mixed_sign, even
    [spikes]   graded, payload_bits
    [limits]   cores, neurons_per_core, decay_profiles_per_core   (0: no limit known)
               max_fan_in (OPTIONAL, default 0: no limit known): the most synapses one
               neuron may receive (a conv unit's fan-in is C_in * k * k, a dense one's n_{l-1})

``load_target('loihi2')`` resolves a bare name to that directory; any path to a ``.toml``
file works too. Every problem is a :class:`TargetError` (a ``ConfigError``) whose message
is one line naming the file and the key. The keys of :data:`_OPTIONAL` may be left out
(their default applies; a target stored in a bundle before they existed reads the same).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "TargetError",
    "DecaySpec",
    "StateSpec",
    "WeightSpec",
    "SpikeSpec",
    "LimitSpec",
    "HardwareTarget",
    "HARDWARE_DIR",
    "available_targets",
    "load_target",
    "target_from_dict",
]

#: ``hardware/`` at the repository root (neuro_hts/hardware/target.py -> repo root).
HARDWARE_DIR = Path(__file__).resolve().parents[2] / "hardware"

# Upper bounds that keep every product of the fixed-point helpers inside int64:
# decay (<= 2**16) times a state difference (<= 2**33) stays far below 2**63.
_MAX_DECAY_BITS = 16
_MAX_WIDTH_BITS = 32
_MAX_MANTISSA_BITS = 16


class TargetError(ConfigError):
    """A hardware target file that is missing, malformed or describes impossible arithmetic."""


@dataclass(frozen=True)
class DecaySpec:
    """Decays are ``bits``-bit fractions of ``scale = 2**bits``: decay = round(dt * scale)."""

    bits: int
    scale: int


@dataclass(frozen=True)
class StateSpec:
    """Widths of state registers and synaptic input; input is shifted left by ``input_shift``."""

    bits: int
    input_bits: int
    input_shift: int

    @property
    def max_abs(self) -> int:
        """Largest magnitude a saturating state holds: 2**(bits-1) - 1 (symmetric, as Lava's LIF v)."""
        return (1 << (self.bits - 1)) - 1


@dataclass(frozen=True)
class WeightSpec:
    """Signed weight mantissas (``mantissa_bits`` magnitude bits plus sign) with a shared exponent.

    Integer weights lie in [-2**mantissa_bits, 2**mantissa_bits - 1]; with ``even`` only even
    values are kept (Lava's Dense with 8 bits and mixed sign: [-256, 254]).
    """

    mantissa_bits: int
    exponent_min: int
    exponent_max: int
    mixed_sign: bool
    even: bool

    @property
    def lsb(self) -> int:
        """Spacing of representable integer weights (2 when ``even``)."""
        return 2 if self.even else 1

    @property
    def max_int(self) -> int:
        """Largest representable integer weight (the quantizer uses +-max_int, symmetric)."""
        return (1 << self.mantissa_bits) - self.lsb

    @property
    def exponent_range(self) -> tuple[int, int]:
        return (self.exponent_min, self.exponent_max)


@dataclass(frozen=True)
class SpikeSpec:
    """Spike messages: binary (``graded=False``, payload 1 bit) or graded integer payloads."""

    graded: bool
    payload_bits: int


@dataclass(frozen=True)
class LimitSpec:
    """Per-chip / per-core limits; 0 means no limit is known (or stated)."""

    cores: int
    neurons_per_core: int
    decay_profiles_per_core: int
    #: synapses per neuron (0: no limit known); optional in a target file
    max_fan_in: int = 0


@dataclass(frozen=True)
class HardwareTarget:
    """A chip's integer arithmetic and limits, as read from ``hardware/<name>.toml``."""

    name: str
    description: str
    decay: DecaySpec
    state: StateSpec
    weights: WeightSpec
    spikes: SpikeSpec
    limits: LimitSpec
    source: str = ""


# (table, key) -> (type, lower bound, upper bound); a None table means a top-level key.
_INT = "int"
_BOOL = "bool"
_STR = "str"
_SCHEMA: dict[str | None, dict[str, tuple[str, int | None, int | None]]] = {
    None: {"name": (_STR, None, None), "description": (_STR, None, None)},
    "decay": {"bits": (_INT, 1, _MAX_DECAY_BITS), "scale": (_INT, 2, None)},
    "state": {
        "bits": (_INT, 2, _MAX_WIDTH_BITS),
        "input_bits": (_INT, 2, _MAX_WIDTH_BITS),
        "input_shift": (_INT, 0, _MAX_WIDTH_BITS - 1),
    },
    "weights": {
        "mantissa_bits": (_INT, 1, _MAX_MANTISSA_BITS),
        "exponent_min": (_INT, -64, 64),
        "exponent_max": (_INT, -64, 64),
        "mixed_sign": (_BOOL, None, None),
        "even": (_BOOL, None, None),
    },
    "spikes": {"graded": (_BOOL, None, None), "payload_bits": (_INT, 1, _MAX_WIDTH_BITS)},
    "limits": {
        "cores": (_INT, 0, None),
        "neurons_per_core": (_INT, 0, None),
        "decay_profiles_per_core": (_INT, 0, None),
        "max_fan_in": (_INT, 0, None),
    },
}
#: (table, key) -> default of the keys a target file may leave out
_OPTIONAL: dict[tuple[str, str], Any] = {("limits", "max_fan_in"): 0}


def _check_value(src: str, label: str, kind: str, lo: int | None, hi: int | None, value: Any) -> None:
    if kind == _STR:
        if not isinstance(value, str) or not value.strip():
            raise TargetError(f"{src}: {label} must be a non-empty string, got {value!r}")
        return
    if kind == _BOOL:
        if not isinstance(value, bool):
            raise TargetError(f"{src}: {label} must be true or false, got {value!r}")
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise TargetError(f"{src}: {label} must be an integer, got {value!r}")
    if lo is not None and value < lo:
        raise TargetError(f"{src}: {label} must be >= {lo}, got {value}")
    if hi is not None and value > hi:
        raise TargetError(f"{src}: {label} must be <= {hi}, got {value}")


def _check_keys(src: str, where: str, got: dict, expected, optional=()) -> None:
    unknown = sorted(set(got) - set(expected))
    if unknown:
        raise TargetError(f"{src}: unknown key {where}{unknown[0]!r} (expected one of {', '.join(sorted(expected))})")
    missing = [k for k in expected if k not in got and k not in optional]
    if missing:
        raise TargetError(f"{src}: missing key {where}{missing[0]!r}")


def target_from_dict(data: dict, source: str = "<dict>") -> HardwareTarget:
    """Validate a parsed target table and build the :class:`HardwareTarget` (see module doc)."""
    src = source
    tables = [k for k in _SCHEMA if k is not None]
    top_expected = list(_SCHEMA[None]) + tables
    _check_keys(src, "", data, top_expected)
    for key, (kind, lo, hi) in _SCHEMA[None].items():
        _check_value(src, key, kind, lo, hi, data[key])
    for table in tables:
        section = data[table]
        if not isinstance(section, dict):
            raise TargetError(f"{src}: [{table}] must be a table, got {section!r}")
        optional = {k: v for (t, k), v in _OPTIONAL.items() if t == table}
        _check_keys(src, f"[{table}] ", section, _SCHEMA[table], optional)
        section = {**optional, **section}
        data = {**data, table: section}
        for key, (kind, lo, hi) in _SCHEMA[table].items():
            _check_value(src, f"[{table}] {key}", kind, lo, hi, section[key])

    d, s, w, sp, lim = (data[t] for t in ("decay", "state", "weights", "spikes", "limits"))
    if d["scale"] != 2 ** d["bits"]:
        raise TargetError(f"{src}: [decay] scale must equal 2**bits = {2 ** d['bits']}, got {d['scale']}")
    if w["exponent_min"] > w["exponent_max"]:
        raise TargetError(
            f"{src}: [weights] exponent_min ({w['exponent_min']}) must be <= exponent_max ({w['exponent_max']})"
        )
    if s["input_shift"] >= s["bits"]:
        raise TargetError(f"{src}: [state] input_shift ({s['input_shift']}) must be < bits ({s['bits']})")
    if not sp["graded"] and sp["payload_bits"] != 1:
        raise TargetError(f"{src}: [spikes] payload_bits must be 1 for binary spikes (graded = false), got {sp['payload_bits']}")
    if sp["graded"] and sp["payload_bits"] < 2:
        raise TargetError(f"{src}: [spikes] payload_bits must be >= 2 for graded spikes, got {sp['payload_bits']}")
    if w["even"] and w["mantissa_bits"] < 2:
        raise TargetError(f"{src}: [weights] mantissa_bits must be >= 2 with even = true, got {w['mantissa_bits']}")

    return HardwareTarget(
        name=data["name"],
        description=data["description"],
        decay=DecaySpec(**d),
        state=StateSpec(**s),
        weights=WeightSpec(**w),
        spikes=SpikeSpec(**sp),
        limits=LimitSpec(**lim),
        source=src,
    )


def available_targets() -> tuple[str, ...]:
    """Names of the targets shipped in ``hardware/`` (empty if that directory is absent)."""
    if not HARDWARE_DIR.is_dir():
        return ()
    return tuple(sorted(p.stem for p in HARDWARE_DIR.glob("*.toml")))


def _resolve(path_or_name: str | os.PathLike) -> Path:
    text = os.fspath(path_or_name)
    looks_like_path = isinstance(path_or_name, os.PathLike) or text.endswith(".toml") or os.sep in text or "/" in text
    if looks_like_path:
        return Path(text)
    path = HARDWARE_DIR / f"{text}.toml"
    if not path.is_file():
        names = ", ".join(available_targets()) or "none found"
        raise TargetError(f"{path}: unknown hardware target {text!r} (available: {names})")
    return path


def load_target(path_or_name: str | os.PathLike) -> HardwareTarget:
    """Load and validate a hardware target.

    Parameters
    ----------
    path_or_name : str or path
        A bare name such as ``'loihi2'`` (resolved to ``hardware/loihi2.toml`` at the
        repository root) or a path to any ``.toml`` target file.

    Raises
    ------
    TargetError
        One line naming the file and the problem: unreadable file or TOML, unknown or
        missing keys, wrong types, impossible values.
    """
    path = _resolve(path_or_name)
    src = str(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise TargetError(f"{src}: no such hardware target file") from None
    except OSError as exc:
        raise TargetError(f"{src}: cannot read ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise TargetError(f"{src}: invalid TOML ({' '.join(str(exc).split())})") from None
    except UnicodeDecodeError:
        raise TargetError(f"{src}: not a text TOML file (binary or not UTF-8)") from None
    return target_from_dict(data, source=src)
