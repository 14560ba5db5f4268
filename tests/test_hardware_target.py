"""Hardware targets as data: the shipped TOML files load with the documented facts
(docs/LAVA.md), and every malformed variant is refused with one line naming file and key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from neuro_hts.errors import ConfigError
from neuro_hts.hardware import HardwareTarget, TargetError, available_targets, load_target
from neuro_hts.hardware.target import HARDWARE_DIR


def test_shipped_targets_are_found():
    assert {"loihi1", "loihi2", "generic8"} <= set(available_targets())
    assert HARDWARE_DIR == Path(__file__).resolve().parents[1] / "hardware"


def test_loihi2_values():
    t = load_target("loihi2")
    assert isinstance(t, HardwareTarget)
    assert t.name == "loihi2"
    assert (t.decay.bits, t.decay.scale) == (12, 4096)
    assert (t.state.bits, t.state.input_bits, t.state.input_shift) == (24, 24, 6)
    assert t.state.max_abs == 2**23 - 1
    w = t.weights
    assert (w.mantissa_bits, w.mixed_sign, w.even) == (8, True, True)
    assert w.exponent_min <= w.exponent_max
    assert (w.lsb, w.max_int) == (2, 254)  # Lava's Dense: even values up to 254
    assert (t.spikes.graded, t.spikes.payload_bits) == (True, 24)
    assert t.limits.neurons_per_core == 8192
    assert t.limits.decay_profiles_per_core == 0  # no public limit
    assert t.source.endswith("loihi2.toml")


def test_loihi1_values():
    t = load_target("loihi1")
    assert (t.decay.bits, t.decay.scale, t.state.bits, t.state.input_bits) == (12, 4096, 24, 24)
    assert (t.weights.mantissa_bits, t.weights.even, t.weights.max_int) == (8, True, 254)
    assert (t.spikes.graded, t.spikes.payload_bits) == (False, 1)  # binary spikes only
    assert (t.limits.cores, t.limits.neurons_per_core, t.limits.decay_profiles_per_core) == (128, 1024, 32)


def test_generic8_values():
    t = load_target("generic8")
    assert (t.weights.mantissa_bits, t.weights.even, t.weights.lsb, t.weights.max_int) == (7, False, 1, 127)
    assert (t.spikes.graded, t.spikes.payload_bits) == (True, 8)
    assert (t.limits.cores, t.limits.neurons_per_core, t.limits.decay_profiles_per_core) == (0, 0, 0)


def test_targets_are_frozen():
    t = load_target("loihi2")
    with pytest.raises(AttributeError):
        t.name = "x"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        t.weights.even = False  # type: ignore[misc]


def test_load_by_path_str_and_pathlike_equal_by_name():
    by_name = load_target("loihi1")
    path = HARDWARE_DIR / "loihi1.toml"
    assert load_target(path) == by_name
    assert load_target(str(path)) == by_name


def test_unknown_name_lists_available():
    with pytest.raises(TargetError) as ei:
        load_target("loihi9")
    msg = str(ei.value)
    assert "'loihi9'" in msg and "loihi2" in msg and "\n" not in msg
    assert isinstance(ei.value, ConfigError)


def test_missing_file(tmp_path):
    p = tmp_path / "nope.toml"
    with pytest.raises(TargetError, match="no such hardware target file") as ei:
        load_target(p)
    assert str(p) in str(ei.value)


# ----------------------------------------------------------------------- malformed files

SHIPPED = (HARDWARE_DIR / "loihi2.toml").read_text()


def _edit(table: str | None, key: str, new: str | None, text: str = SHIPPED) -> str:
    """Replace (or with new=None delete) the line ``key = ...`` of ``[table]``."""
    out, current, done = [], None, False
    for line in text.splitlines():
        m = re.match(r"\s*\[(\w+)\]", line)
        if m:
            current = m.group(1)
        elif current == table and re.match(rf"\s*{key}\s*=", line):
            done = True
            if new is not None:
                out.append(new)
            continue
        out.append(line)
    assert done, (table, key)
    return "\n".join(out) + "\n"


def _add(table: str, line: str) -> str:
    return SHIPPED.replace(f"[{table}]\n", f"[{table}]\n{line}\n", 1)


MALFORMED = {
    "unknown key": (_add("weights", "mantisa_bits = 8"), "[weights] 'mantisa_bits'"),
    "unknown top-level key": ("colour = 'blue'\n" + SHIPPED, "'colour'"),
    "missing key": (_edit("spikes", "payload_bits", None), "[spikes] 'payload_bits'"),
    "missing top-level key": (_edit(None, "name", None), "'name'"),
    "missing table": (SHIPPED.split("[limits]")[0], "'limits'"),
    "float bit width": (_edit("decay", "bits", "bits = 12.0"), "[decay] bits must be an integer"),
    "string bit width": (_edit("state", "bits", 'bits = "24"'), "[state] bits must be an integer"),
    "bool bit width": (_edit("weights", "mantissa_bits", "mantissa_bits = true"), "[weights] mantissa_bits must be an integer"),
    "zero bits": (_edit("weights", "mantissa_bits", "mantissa_bits = 0"), "[weights] mantissa_bits must be >= 1"),
    "negative bits": (_edit("state", "input_bits", "input_bits = -24"), "[state] input_bits must be >= 2"),
    "too many bits": (_edit("decay", "bits", "bits = 40"), "[decay] bits must be <= 16"),
    "exponent order": (_edit("weights", "exponent_min", "exponent_min = 8"), "[weights] exponent_min (8) must be <= exponent_max (7)"),
    "decay scale": (_edit("decay", "scale", "scale = 4000"), "[decay] scale must equal 2**bits = 4096"),
    "non-bool flag": (_edit("weights", "even", "even = 1"), "[weights] even must be true or false"),
    "binary spikes with payload": (_edit("spikes", "graded", "graded = false"), "[spikes] payload_bits must be 1"),
    "graded with 1 bit": (_edit("spikes", "payload_bits", "payload_bits = 1"), "[spikes] payload_bits must be >= 2"),
    "input shift too large": (_edit("state", "input_shift", "input_shift = 24"), "[state] input_shift (24) must be < bits (24)"),
    "negative limit": (_edit("limits", "cores", "cores = -1"), "[limits] cores must be >= 0"),
    "table not a table": ("limits = 3\n" + SHIPPED.split("[limits]")[0], "[limits] must be a table"),
    "empty name": (_edit(None, "name", 'name = ""'), "name must be a non-empty string"),
    "invalid toml": (SHIPPED + "[decay\n", "invalid TOML"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_target_raises_one_line_naming_file_and_key(case, tmp_path):
    text, expected = MALFORMED[case]
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(TargetError) as ei:
        load_target(path)
    msg = str(ei.value)
    assert isinstance(ei.value, ConfigError)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: "), msg
    assert expected in msg, msg


def test_edit_helper_leaves_valid_file_valid(tmp_path):
    # the unmodified text written elsewhere loads: the malformed cases fail for their edit
    path = tmp_path / "copy.toml"
    path.write_text(_edit("limits", "cores", "cores = 0"))
    assert load_target(path).weights == load_target("loihi2").weights
