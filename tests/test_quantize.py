"""Quantizing a trained run for a hardware target: neuro_hts.hardware.quantize, the bundle
file (neuro_hts.hardware.bundle) and ``neuro-hts quantize``."""

from __future__ import annotations

import dataclasses
import json

import h5py
import numpy as np
import pytest

from neuro_hts import training
from neuro_hts.config import Config
from neuro_hts.errors import ConfigError, RunFileError
from neuro_hts.hardware import load_target
from neuro_hts.hardware.bundle import file_sha256, load_bundle, save_bundle
from neuro_hts.hardware.quantize import bin_decays, quantize_network
from neuro_hts.network import Network
from neuro_hts.runfile import RunState, load_run, save_run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("qrun") / "run.h5"
    cfg = Config().replace(
        model={"arch": [64, 16, 10]},
        dt={"dist": "uniform", "mean": 0.3, "std": 0.1, "dt_min": 0.05, "dt_max": 0.6},
        train={"epochs": 1, "batch_size": 20, "seed": 2, "t1": 10, "t2": 4},
        data={"dataset": "digits", "n_train": 200, "n_test": 40},
    )
    training.train(cfg, path)
    return path


def snapshot(net):
    return [a.copy() for a in (*net.weights, *net.biases, *net.dts)]


def test_quantize_trained_run_loihi2(tiny_run):
    net = load_run(tiny_run).network
    before = snapshot(net)
    target = load_target("loihi2")
    b = quantize_network(net, target)
    # the input network is untouched
    for x, y in zip(before, snapshot(net)):
        assert x.dtype == y.dtype and np.array_equal(x, y)
    assert b.activation_frac_bits == 12 and b.state_frac_bits == 12
    assert len(b.layers) == 2 and [lb.index for lb in b.layers] == [1, 2]
    for lb, w, bias, dt in zip(b.layers, net.weights, net.biases, net.dts):
        assert lb.weight_mantissa.dtype == np.int64 and lb.weight_mantissa.shape == w.shape
        assert np.all(lb.weight_mantissa % 2 == 0) and np.abs(lb.weight_mantissa).max() <= 254
        # dequantized weights within half an LSB (lsb = 2 * 2**e with even weights)
        half_lsb = 0.5 * 2 * 2.0 ** lb.weight_exponent
        assert np.max(np.abs(lb.weights_float() - w.astype(np.float64))) <= half_lsb
        # the exponent is the smallest that holds max|w|: one less would not
        assert np.abs(w).max() > 254 * 2.0 ** (lb.weight_exponent - 1) or lb.weight_exponent == -8
        # decays: round(dt * 4096); dt kept
        assert np.array_equal(lb.decay, np.rint(dt.astype(np.float64) * 4096).astype(np.int64))
        assert lb.decay_unbinned is None and np.array_equal(lb.dt, dt.astype(np.float64))
        # bias in state units 2**-12, within half a unit
        unit = 2.0**-12
        assert np.max(np.abs(lb.bias * unit - bias.astype(np.float64))) <= unit / 2
        assert not lb.weight_mantissa.flags.writeable


def test_generic8_payload_sets_activation_fraction_bits(tiny_run):
    b = quantize_network(load_run(tiny_run).network, load_target("generic8"))
    assert b.activation_frac_bits == 6  # 8-bit payload: 1.0 = 64 plus sign fits
    assert all(np.abs(lb.weight_mantissa).max() <= 127 for lb in b.layers)


def test_bundle_round_trip_is_exact(tiny_run, tmp_path):
    net = load_run(tiny_run).network
    source = {"run_path": str(tiny_run), "run_sha256": file_sha256(tiny_run), "run_config": "{}", "epochs_completed": 1}
    b = quantize_network(net, load_target("loihi2"), source=source)
    path = save_bundle(tmp_path / "sub" / "net.h5", b)
    c = load_bundle(path)
    assert c.target == dataclasses.replace(b.target, source=c.target.source)
    assert c.source == source and len(c.source["run_sha256"]) == 64
    for f in ("form", "activation", "output", "activation_frac_bits", "state_frac_bits", "profile_mode", "rounding"):
        assert getattr(c, f) == getattr(b, f), f
    for x, y in zip(b.layers, c.layers, strict=True):
        assert x.weight_exponent == y.weight_exponent and x.index == y.index
        for f in ("weight_mantissa", "bias", "decay", "dt"):
            assert getattr(x, f).dtype == getattr(y, f).dtype and np.array_equal(getattr(x, f), getattr(y, f)), f
        assert y.decay_unbinned is None
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == "neuro-hts-bundle" and f.attrs["target_name"] == "loihi2"
        assert json.loads(f.attrs["target"])["decay"] == {"bits": 12, "scale": 4096}


def test_load_bundle_refuses_foreign_and_truncated(tiny_run, tmp_path):
    with pytest.raises(RunFileError, match="not a neuro-hts bundle file"):
        load_bundle(tiny_run)  # a run file, not a bundle
    b = quantize_network(load_run(tiny_run).network, load_target("loihi2"))
    path = save_bundle(tmp_path / "net.h5", b)
    data = path.read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(RunFileError) as exc:
        load_bundle(tmp_path / "cut.h5")
    assert "\n" not in str(exc.value)
    with pytest.raises(RunFileError, match="bundle file not found"):
        load_bundle(tmp_path / "missing.h5")


def wide_net(n=2500, seed=0):
    rng = np.random.default_rng(seed)
    return Network(
        [rng.normal(0, 0.1, (n, 8)), rng.normal(0, 0.1, (10, n))],
        [rng.normal(0, 0.1, n), np.zeros(10)],
        [rng.uniform(0.01, 0.9, n), np.full(10, 0.5)],
    )


def test_profile_mode_loihi1_bins_each_core_to_32_decays():
    net = wide_net()
    before = snapshot(net)
    target = load_target("loihi1")
    # Loihi 1's binary spikes break a design rule; the binning itself can still be inspected
    with pytest.raises(ConfigError, match="graded_spikes"):
        quantize_network(net, target, profile_mode=True)
    b = quantize_network(net, target, profile_mode=True, check_rules=False)
    lb = b.layers[0]
    exact = np.rint(net.dts[0] * 4096).astype(np.int64)
    assert np.array_equal(lb.decay_unbinned, exact)
    for start in range(0, 2500, 1024):
        core = slice(start, start + 1024)
        assert np.unique(exact[core]).size > 32  # binning was needed
        assert np.unique(lb.decay[core]).size <= 32
    assert np.all((lb.decay >= 1) & (lb.decay <= 4096))
    change = b.max_dt_change(lb)
    assert change == np.abs(lb.decay - exact).max() / 4096 and 0 < change < 0.03
    assert b.layers[1].decay_unbinned is not None and b.max_dt_change(b.layers[1]) == 0.0
    for x, y in zip(before, snapshot(net)):
        assert np.array_equal(x, y)
    # deterministic
    again = quantize_network(net, target, profile_mode=True, check_rules=False)
    assert np.array_equal(again.layers[0].decay, lb.decay)


def test_bin_decays_keeps_few_levels_and_never_mutates():
    d = np.array([5, 5, 9, 100], dtype=np.int64)
    out = bin_decays(d, 3)
    assert np.array_equal(out, d) and out is not d
    d = np.arange(1, 101, dtype=np.int64)
    out = bin_decays(d, 4)
    assert np.unique(out).size <= 4 and np.array_equal(d, np.arange(1, 101))
    assert np.abs(out - d).max() <= 13  # 4 levels over 100 values: bins of ~25


def test_quantize_refuses_unrepresentable(tiny_run):
    net = load_run(tiny_run).network
    net.dts[0][0] = 1e-4
    with pytest.raises(ConfigError, match="decay_range: layer 1"):
        quantize_network(net, load_target("loihi2"))
    with pytest.raises(ConfigError, match="explicit numpy.random.Generator"):
        quantize_network(net, load_target("loihi2"), rounding="stochastic")


def test_stochastic_rounding_is_reproducible(tiny_run):
    net = load_run(tiny_run).network
    t = load_target("loihi2")
    a = quantize_network(net, t, rounding="stochastic", rng=np.random.default_rng(5))
    b = quantize_network(net, t, rounding="stochastic", rng=np.random.default_rng(5))
    assert all(np.array_equal(x.weight_mantissa, y.weight_mantissa) for x, y in zip(a.layers, b.layers))


# --------------------------------------------------------------------------- CLI


def test_cli_quantize_happy_path(tiny_run, tmp_path, run_cli):
    out_path = tmp_path / "net.h5"
    code, out, err = run_cli(["quantize", str(tiny_run), "--target", "hardware/loihi2.toml", "--out", str(out_path)])
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"quantized {tiny_run} for loihi2 (64-16-10")
    assert lines[1].split() == ["layer", "exponent", "max|err|/max|w|", "decays"]
    b = load_bundle(out_path)
    net = load_run(tiny_run).network
    for lb, w, line in zip(b.layers, net.weights, lines[2:4]):
        fields = line.split()
        assert int(fields[0]) == lb.index and int(fields[1]) == lb.weight_exponent
        rel = np.abs(lb.weights_float() - w).max() / np.abs(w).max()
        assert fields[2] == f"{rel:.3e}" and 0 < rel <= 2.0 ** lb.weight_exponent / np.abs(w).max()
        assert int(fields[3]) == np.unique(lb.decay).size  # 16 uniform dts in layer 1, constant in layer 2
    assert lines[-1] == f"bundle: {out_path}"
    assert b.source["run_sha256"] == file_sha256(tiny_run) and b.source["epochs_completed"] == 1
    assert json.loads(b.source["run_config"])["model"]["arch"] == [64, 16, 10]

    # existing --out without --force: one line, exit 2, file untouched
    before = out_path.read_bytes()
    code, out, err = run_cli(["quantize", str(tiny_run), "--target", "loihi2", "--out", str(out_path)])
    assert code == 2 and out == "" and err.count("\n") == 1 and "--force" in err
    assert out_path.read_bytes() == before
    code, out, err = run_cli(["quantize", str(tiny_run), "--target", "loihi2", "--out", str(out_path), "--force", "--profile-mode"])
    assert code == 0, err
    assert "max|d dt|" in out.splitlines()[1]  # loihi2 has no profile limit: nothing binned
    assert all(line.split()[-1] == "0.000e+00" for line in out.splitlines()[2:4])


def test_cli_reports_every_violation_and_writes_nothing(tiny_run, tmp_path, run_cli):
    state = load_run(tiny_run)
    state.network.dts[0][3] = 1e-4
    state.network.weights[1][0, 0] = 1e6
    bad = save_run(tmp_path / "bad.h5", RunState(config=state.config, network=state.network, epochs_completed=1))
    out_path = tmp_path / "net.h5"
    code, out, err = run_cli(["quantize", str(bad), "--target", "hardware/loihi2.toml", "--out", str(out_path)])
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith("neuro-hts: error: decay_range: layer 1:")
    assert lines[1].startswith("neuro-hts: error: weight_range: layer 2:")
    assert not out_path.exists()


def test_cli_unknown_target_is_one_line(tiny_run, tmp_path, run_cli):
    code, out, err = run_cli(["quantize", str(tiny_run), "--target", "nosuchchip", "--out", str(tmp_path / "n.h5")])
    assert code == 2 and out == "" and err.count("\n") == 1 and "unknown hardware target" in err
