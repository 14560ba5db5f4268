"""Float vs fixed-point comparison: neuro_hts.hardware.compare and ``neuro-hts compare``."""

from __future__ import annotations

import csv
import math
import re
import shutil
import struct
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from neuro_hts import dynamics, training
from neuro_hts.config import Config
from neuro_hts.data import load_dataset
from neuro_hts.errors import ConfigError
from neuro_hts.hardware import load_target
from neuro_hts.hardware.compare import (
    CSV_COLUMNS,
    HIST_EDGES,
    _min_bits_within,
    compare_network,
    format_table,
    parse_weight_bits,
    profile_variant,
    weight_bits_variant,
    write_csv,
)
from neuro_hts.hardware.fixed_sim import FixedPointSimulator
from neuro_hts.hardware.quantize import quantize_network
from neuro_hts.runfile import load_run

N_TEST = 200
T1 = 20


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 64-32-10 sigmoid4 net trained for 3 epochs on digits (~93 % test accuracy)."""
    path = tmp_path_factory.mktemp("cmp") / "tiny.h5"
    cfg = Config().replace(
        model={"arch": [64, 32, 10], "activation": "sigmoid4"},
        dt={"dist": "uniform", "mean": 0.3, "std": 0.1, "dt_min": 0.05, "dt_max": 0.6},
        train={"epochs": 3, "lr": [2e-3], "batch_size": 20, "seed": 1, "t1": T1, "t2": 6, "beta": 0.5,
               "nudging": "symmetric"},
        data={"dataset": "digits", "n_train": 600, "n_test": N_TEST},
    )
    training.train(cfg, path)
    return path


@pytest.fixture(scope="module")
def tiny(tiny_run):
    net = load_run(tiny_run).network
    data = load_dataset("digits", n_test=N_TEST)
    return net, data.x_test, data.y_test


def read_rows(path):
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        return list(reader)


def pick(rows, metric, variant, weight_bits="", layer=""):
    got = [r for r in rows if r["metric"] == metric and r["variant"] == variant
           and r["weight_bits"] == str(weight_bits) and r["layer"] == str(layer)]
    assert len(got) == 1, (metric, variant, weight_bits, layer, got)
    return float(got[0]["value"])


def independent_fixed_predictions(net, x, bits=None):
    target = load_target("loihi2")
    if bits is not None:
        target = weight_bits_variant(target, bits)
    return FixedPointSimulator(quantize_network(net, target)).predict(x, T1)


class FakeLava:
    """Stands in for neuro_hts.lava.run_inference: the Numba fixed-point simulator."""

    def __init__(self, flip_first=False):
        self.calls = []
        self.flip_first = flip_first

    def __call__(self, bundle, x, n_steps, *, arith="fixed"):
        self.calls.append((x.shape, n_steps, arith))
        states, _ = FixedPointSimulator(bundle).relax(x, n_steps)
        top = states[-1].copy()
        if self.flip_first:
            top[0] = 0
            top[0, 0] = 1  # sample 0 now predicts class 0 with different states
        return SimpleNamespace(predictions=np.argmax(top, axis=1), top_states=top, steps_per_second=1234.5)


# --------------------------------------------------------------------------- library


def test_accuracies_match_independent_simulations(tiny):
    net, x, y = tiny
    res = compare_network(net, load_target("loihi2"), x, y, T1, weight_bits=(2, 8), batch_size=64)
    fixed_acc = float(np.mean(independent_fixed_predictions(net, x) == y))
    assert res.accuracy["fixed"] == fixed_acc
    assert res.sweep[8] == fixed_acc  # the target's own width is the main bundle
    assert res.sweep[2] == float(np.mean(independent_fixed_predictions(net, x, bits=2) == y))
    ref = dynamics.relax(net.astype(np.float64), x.astype(np.float64), T1).states[-1].argmax(axis=1)
    assert abs(res.accuracy["float"] - float(np.mean(ref == y))) <= 1.0 / len(y)
    assert res.accuracy["float"] > 0.8  # a trained net, else the sweep says nothing
    assert res.sweep[2] < res.sweep[8] - 0.2  # 2-bit weights break it
    assert 0.0 <= res.agreement["float~fixed"] <= 1.0 and res.agreement["float~fixed"] >= 0.95
    assert res.n_samples == N_TEST and res.weight_bits == 8 and res.arch == (64, 32, 10)


def test_state_error_statistics_are_consistent(tiny):
    net, x, y = tiny
    res = compare_network(net, load_target("loihi2"), x, y, T1, weight_bits=(8,))
    assert list(res.state_errors) == ["fixed"]
    for l, (st, counts) in enumerate(zip(res.state_errors["fixed"], res.histograms["fixed"]), start=1):
        assert 0.0 <= st["p50"] <= st["p90"] <= st["p99"] <= st["max"] < 1.0
        assert 0.0 < st["mean"] <= st["max"]
        assert counts.shape == (HIST_EDGES.size - 1,) and counts.sum() == N_TEST * net.arch[l]
    # the largest error of layer 1 is what an independent relaxation gives
    xf = x.astype(np.float64)
    sf = dynamics.relax(net.astype(np.float64), xf, T1).states
    sim = FixedPointSimulator(quantize_network(net, load_target("loihi2")))
    sq = sim.dequantize_states(sim.relax(xf, T1)[0])
    assert res.state_errors["fixed"][0]["max"] == pytest.approx(float(np.abs(sf[0] - sq[0]).max()), rel=1e-6, abs=1e-9)


def test_profile_binning_rows(tiny, tmp_path):
    net, x, y = tiny
    loihi2 = load_target("loihi2")
    plain = compare_network(net, loihi2, x, y, T1, weight_bits=(8,))
    assert "fixed_binned" not in plain.accuracy and plain.max_dt_change is None

    res = compare_network(net, loihi2, x, y, T1, weight_bits=(8,), profile_levels=2)
    assert res.profile_levels == 2
    assert res.max_dt_change[0] > 0.0  # 32 uniform dt squeezed into 2 levels
    assert res.max_dt_change[1] == 0.0  # constant output-layer dt: nothing to bin
    binned = FixedPointSimulator(quantize_network(net, profile_variant(loihi2, 2), profile_mode=True)).predict(x, T1)
    assert res.accuracy["fixed_binned"] == float(np.mean(binned == y))
    fixed = independent_fixed_predictions(net, x)
    assert res.agreement["fixed~fixed_binned"] == float(np.mean(binned == fixed))
    assert res.state_errors["fixed_binned"][0]["mean"] > res.state_errors["fixed"][0]["mean"]

    rows = read_rows(write_csv(res, tmp_path / "c.csv"))
    assert pick(rows, "accuracy", "fixed_binned", 8) == res.accuracy["fixed_binned"]
    assert pick(rows, "max_dt_change", "fixed_binned", 8, 1) == res.max_dt_change[0]
    drop = pick(rows, "accuracy_drop", "fixed_binned", 8)
    assert drop == pytest.approx((res.accuracy["float"] - res.accuracy["fixed_binned"]) * 100)

    # a target that limits decay profiles itself gets the binned variant without asking
    limited = compare_network(net, profile_variant(loihi2, 3), x, y, T1, weight_bits=(8,))
    assert limited.profile_levels == 3 and "fixed_binned" in limited.accuracy


def test_fake_lava_runner(tiny, tmp_path):
    net, x, y = tiny
    fake = FakeLava()
    res = compare_network(net, load_target("loihi2"), x, y, T1, weight_bits=(8,), lava_samples=15, lava_runner=fake)
    assert fake.calls == [((15, 64), T1, "fixed")]
    fixed = independent_fixed_predictions(net, x)
    assert res.lava_samples == 15
    assert res.accuracy["lava"] == float(np.mean(fixed[:15] == y[:15]))
    assert res.agreement["fixed~lava"] == 1.0 and res.lava_top_state_match == 1.0
    assert res.lava_steps_per_second == 1234.5
    rows = read_rows(write_csv(res, tmp_path / "c.csv"))
    assert [r["n_samples"] for r in rows if r["metric"] == "accuracy" and r["variant"] == "lava"] == ["15"]
    assert pick(rows, "top_state_match", "fixed~lava", 8) == 1.0
    assert pick(rows, "accuracy", "fixed@lava_samples", 8) == res.accuracy["lava"]

    table = format_table(res)
    assert "Lava (first 15)" in table and "top states bit-exact on 100.00 % of samples" in table

    # a runner that is not bit-exact shows up in the state match
    res = compare_network(net, load_target("loihi2"), x, y, T1, weight_bits=(8,), lava_samples=4,
                          lava_runner=FakeLava(flip_first=True))
    assert res.lava_top_state_match == 0.75

    # more samples than the test set: clamped
    fake = FakeLava()
    res = compare_network(net, load_target("loihi2"), x[:5], y[:5], T1, weight_bits=(8,), lava_samples=50, lava_runner=fake)
    assert fake.calls[0][0] == (5, 64) and res.lava_samples == 5


def test_lava_is_imported_only_when_asked(tiny, monkeypatch):
    net, x, y = tiny
    monkeypatch.setitem(sys.modules, "neuro_hts.lava", None)  # any import of it now fails
    res = compare_network(net, load_target("loihi2"), x[:10], y[:10], T1, weight_bits=(8,))
    assert "lava" not in res.accuracy and res.lava_samples == 0
    with pytest.raises(ConfigError, match="Lava"):
        compare_network(net, load_target("loihi2"), x[:10], y[:10], T1, weight_bits=(8,), lava_samples=2)


def test_parse_weight_bits_and_variants():
    assert parse_weight_bits("8,2, 4,4") == (2, 4, 8)
    assert parse_weight_bits([3, 5]) == (3, 5)
    for bad in ("", "2,,4", "2,x", "0", "17", "4.5"):
        with pytest.raises(ConfigError):
            parse_weight_bits(bad)
    t = load_target("loihi2")
    v = weight_bits_variant(t, 4)
    assert v.weights.mantissa_bits == 4 and v.weights.exponent_range == t.weights.exponent_range
    assert v.weights.even == t.weights.even and v.state == t.state and t.weights.mantissa_bits == 8
    with pytest.raises(ConfigError):
        weight_bits_variant(t, 1)  # even weights need 2 bits
    assert profile_variant(t, 5).limits.decay_profiles_per_core == 5
    with pytest.raises(ConfigError):
        profile_variant(t, 0)


def test_min_bits_within_needs_every_wider_width():
    sweep = {2: 0.90, 3: 0.50, 4: 0.898, 6: 0.899, 8: 0.90}
    assert _min_bits_within(sweep, 0.90, 0.5) == 4  # 2 bits is lucky but 3 bits breaks
    assert _min_bits_within({8: 0.80}, 0.90, 0.5) is None
    assert _min_bits_within({4: math.nan, 8: 0.90}, 0.90, 0.5) == 8


# --------------------------------------------------------------------------- CLI


def png_size(path):
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR"
    return struct.unpack(">II", raw[16:24])


def test_cli_compare_writes_csv_png_and_table(tiny_run, tiny, tmp_path, run_cli):
    net, x, y = tiny
    run = tmp_path / "mine.h5"
    shutil.copy(tiny_run, run)
    code, out, err = run_cli(["compare", str(run), "--target", "loihi2", "--weight-bits", "2,4,8", "--profile-levels", "2"])
    assert code == 0, err
    out_dir = tmp_path / "mine_compare"  # default: next to the run
    rows = read_rows(out_dir / "compare.csv")
    fixed_acc = float(np.mean(independent_fixed_predictions(net, x) == y))
    assert pick(rows, "accuracy", "fixed", 8) == fixed_acc
    assert pick(rows, "accuracy", "sweep", 8) == fixed_acc
    assert pick(rows, "accuracy", "sweep", 2) < pick(rows, "accuracy", "sweep", 8)
    for r in rows:
        if r["metric"] == "agreement":
            assert 0.0 <= float(r["value"]) <= 1.0
    assert {r["weight_bits"] for r in rows if r["variant"] == "sweep" and r["metric"] == "accuracy"} == {"2", "4", "8"}
    assert {r["layer"] for r in rows if r["metric"] == "state_err_p99"} == {"1", "2"}
    assert {r["n_samples"] for r in rows if r["metric"] == "accuracy"} == {str(N_TEST)}
    assert pick(rows, "tolerance_points", "sweep") == 0.5
    min_bits = pick(rows, "min_bits_within_tol", "sweep")
    assert min_bits in (4.0, 8.0)
    assert "fixed_binned" in {r["variant"] for r in rows}

    w, h = png_size(out_dir / "compare.png")
    assert w > 600 and h > 200
    m = re.search(r"^fixed \(8-bit weights\)\s+(\d+\.\d\d) %\s+(\d+\.\d\d) %$", out, re.MULTILINE)
    assert m, out
    assert float(m.group(1)) == pytest.approx(fixed_acc * 100, abs=0.005)
    assert "weight-bits sweep" in out and "binning cost" in out
    assert str(out_dir / "compare.csv") in out


def test_cli_compare_out_dir_and_n_test(tiny_run, tmp_path, run_cli):
    code, out, err = run_cli(["compare", str(tiny_run), "--target", "hardware/loihi2.toml", "--n-test", "30",
                              "--weight-bits", "8", "--steps", "5", "--out-dir", str(tmp_path / "o")])
    assert code == 0, err
    rows = read_rows(tmp_path / "o" / "compare.csv")
    assert {r["n_samples"] for r in rows if r["metric"] == "accuracy"} == {"30"}
    assert "T = 5, 30 test samples of digits" in out


@pytest.mark.parametrize("argv, needle", [
    (lambda run, tmp: ["compare", str(tmp / "nope.h5"), "--target", "loihi2"], "nope.h5"),
    (lambda run, tmp: ["compare", str(run), "--target", "loihi2", "--weight-bits", "2,x"], "--weight-bits"),
    (lambda run, tmp: ["compare", str(run), "--target", "loihi2", "--weight-bits", "0,8"], "weight bits"),
    (lambda run, tmp: ["compare", str(run), "--target", "loihi9"], "unknown hardware target"),
    (lambda run, tmp: ["compare", str(run), "--target", "loihi2", "--steps", "0"], "steps"),
    (lambda run, tmp: ["compare", str(run), "--target", "loihi2", "--lava-samples", "-1"], "lava samples"),
    (lambda run, tmp: ["compare", str(run), "--target", "loihi2", "--profile-levels", "0"], "profile levels"),
    (lambda run, tmp: ["compare", str(run)], "--target"),
], ids=["missing-run", "malformed-bits", "zero-bits", "unknown-target", "zero-steps", "negative-lava",
        "zero-levels", "no-target"])
def test_cli_compare_bad_input(tiny_run, tmp_path, run_cli, argv, needle):
    code, out, err = run_cli(argv(tiny_run, tmp_path))
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0] and needle in lines[0], err
    assert not (tmp_path / "nope_compare").exists()
