"""The EP update in fixed point (neuro_hts.hardware.fixed_learning), check-updates, train --arith fixed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from neuro_hts import dynamics
from neuro_hts.algorithms import EP, run_phases
from neuro_hts.config import Config, TrainConfig
from neuro_hts.errors import ConfigError
from neuro_hts.hardware import fixed_learning as fl
from neuro_hts.hardware import load_target
from neuro_hts.hardware.fixed_sim import FixedPointSimulator
from neuro_hts.network import Network
from neuro_hts.runfile import HISTORY_KEYS, load_run
from neuro_hts.testing import random_problem

LOIHI2 = load_target("loihi2")


def assert_one_line_error(code, out, err, expected: str):
    assert code == 2, err
    assert "Traceback" not in err
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
    assert expected in err, err
    assert out == ""


def tiny_bundle(exponents=(-8, -8)):
    """A 2-2-1 network with zero weights/biases on the grid (only the update is looked at)."""
    net = Network([np.zeros((2, 2)), np.zeros((1, 2))], [np.zeros(2), np.zeros(1)], [np.full(2, 0.5), np.full(1, 0.5)],
                  activation="hard_sigmoid")
    return fl.bundle_on_grid(net, LOIHI2, exponents)


# Hand-derived case (S = F = D = 12 on Loihi 2; B = 1):
#   x = [1, 0.5] -> x_int = [4096, 2048]
#   nudged (a): s1 = [2048, 1024], s2 = [3072];  free (b): s1 = [2048, 0], s2 = [2048]
#   C1 = (s1a - s1b)^T x_int = [[0, 0], [1024 * 4096, 1024 * 2048]] = [[0, 0], [4194304, 2097152]]
#   C2 = s2a s1a - s2b s1b = [3072 * 2048 - 2048 * 2048, 3072 * 1024] = [2097152, 3145728]
#   c1 = [0, 1024], c2 = [1024]
#   beta = 0.25 -> beta_int = 1024; weight scale 2**12 / 1024 * 2**-24 = 2**-22; bias scale 2**-10
X = np.array([[1.0, 0.5]])
Y = np.array([[1.0]])
SA = [np.array([[2048, 1024]]), np.array([[3072]])]
SB = [np.array([[2048, 0]]), np.array([[2048]])]


def test_integer_contrast_golden_values():
    sim = FixedPointSimulator(tiny_bundle())
    ra, rb = fl.traces(sim, X, SA), fl.traces(sim, X, SB)
    assert ra[0].tolist() == [[4096, 2048]]
    CW, cb = fl.ep_contrast(ra, rb)
    assert CW[0].dtype == np.int64
    assert CW[0].tolist() == [[0, 0], [4194304, 2097152]]
    assert CW[1].tolist() == [[2097152, 3145728]]
    assert cb[0].tolist() == [0, 1024] and cb[1].tolist() == [1024]
    assert fl.contrast_scale(1024, 0, 1, 24, 12) == 2.0**-22
    assert fl.contrast_scale(1024, -1024, 1, 12, 12) == 2.0**-11  # symmetric: divisor 2 beta


def test_integer_update_golden_values_exact_case():
    # lr = 1/8, weight grid step 2 * 2**-8 = 2**-7: one contrast unit = 2**-3 * 2**-22 / 2**-7 = 2**-18 steps
    b = tiny_bundle()
    for rounding in ("nearest", "stochastic"):
        up = fl.fixed_ep_update(b, X, Y, SA, 0.25, SB, 0.0, (0.125, 0.125), rounding, np.random.default_rng(0))
        assert up.beta_a_int == 1024 and up.beta_b_int == 0
        assert up.dq_weights[0].tolist() == [[0, 0], [16, 8]]  # 4194304 / 2**18, 2097152 / 2**18
        assert up.dq_weights[1].tolist() == [[8, 12]]
        # biases: lr * 2**-10 * 2**S = 0.5 state units per contrast unit
        assert up.dq_biases[0].tolist() == [0, 512] and up.dq_biases[1].tolist() == [512]
    # the same in real units as docs/MODEL.md's dW = lr / beta * (s^b s^b - s^0 s^0): 0.5 * 0.25 * 1.0 = 0.125
    assert 16 * 2.0**-7 == 0.125


def test_integer_update_golden_values_rounded_case():
    # lr = 0.1: 0.8 of the lr = 1/8 figures -> 12.8, 6.4, 6.4, 9.6 weight steps and 409.6 bias units
    b = tiny_bundle()
    up = fl.fixed_ep_update(b, X, Y, SA, 0.25, SB, 0.0, (0.1, 0.1), "nearest")
    assert up.dq_weights[0].tolist() == [[0, 0], [13, 6]]
    assert up.dq_weights[1].tolist() == [[6, 10]]
    assert up.dq_biases[0].tolist() == [0, 410] and up.dq_biases[1].tolist() == [410]
    # stochastic: floor or ceil of the exact value, never anything else
    draws = [fl.fixed_ep_update(b, X, Y, SA, 0.25, SB, 0.0, (0.1, 0.1), "stochastic", np.random.default_rng(s)) for s in range(40)]
    w = np.array([d.dq_weights[0][1] for d in draws])
    assert set(w[:, 0]) <= {12, 13} and set(w[:, 1]) <= {6, 7}
    assert len(set(w[:, 0])) == 2  # both outcomes occur in 40 draws


def test_apply_update_saturates_at_the_mantissa_range():
    grid = fl.LayerGrid(exponent=-8, lsb=2, max_int=254)
    m = np.array([250, -250, 0, 100])
    out = fl.apply_weight_update(m, np.array([13, -13, 1, -1]), grid)
    assert out.tolist() == [254, -254, 2, 98]
    assert fl.apply_bias_update(np.array([2**23 - 10, 0]), np.array([100, -7]), 24).tolist() == [2**23 - 1, -7]


@pytest.mark.parametrize("nudging", ["one-sided", "symmetric"])
def test_fixed_gradient_is_ep_gradients_of_the_dequantized_states(nudging):
    """Same estimate and sign convention as dynamics.ep_gradients, given the same (dequantized) states."""
    net, x, y = random_problem((6, 5, 3), activation="sigmoid4", batch=4, seed=2)
    bundle = fl.quantize_network(net, LOIHI2)
    sim = FixedPointSimulator(bundle)
    res, c = run_phases(fl.fixed_relaxer(sim, x, y), EP(t1=30, t2=8, beta=0.3, nudging=nudging))
    sa, sb, beta_a, beta_b = res[c.a].states, res[c.b].states, c.beta_a, c.beta_b
    ba, bb = (int(np.rint(v * 4096)) for v in (beta_a, beta_b))
    CW, cb = fl.ep_contrast(fl.traces(sim, x, sa), fl.traces(sim, x, sb))
    gW, gb = fl.fixed_ep_gradients(CW, cb, ba, bb, 4, sim.F, sim.decay_bits)
    xq = sim.quantize_input(x) / 4096.0
    fa, fb = sim.dequantize_states(sa), sim.dequantize_states(sb)
    rW, rb = dynamics.ep_gradients(net, xq, y, fa, ba / 4096.0, fb, bb / 4096.0)
    for g, r in zip(gW + gb, rW + rb):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-15)
    assert any(np.abs(g).max() > 0 for g in gW)


def test_fixed_update_approaches_the_float_update():
    """On a small random problem with updates far above one grid step, cosine > 0.95 per parameter.

    Measured (seed 0, 20-16-5, sigmoid4, batch 32, beta 0.2, T1 60, T2 20, lr 100): cosine
    0.978 (W1), 0.976 (b1), 0.999 (W2), 0.999 (b2): the rest is the 8-bit weights' and the
    integer relaxation's own error, not the update's rounding.
    """
    net, x, y = random_problem((20, 16, 5), activation="sigmoid4", batch=32, seed=0)
    rows = fl.compare_updates(net, LOIHI2, x, y, t1=60, t2=20, beta=0.2, nudging="one-sided", lrs=(100.0, 100.0),
                              rng=np.random.default_rng(0))
    assert [(r.rounding, r.name) for r in rows] == [
        (ro, p) for ro in ("nearest", "stochastic") for p in ("W1", "b1", "W2", "b2")
    ]
    for r in rows:
        assert r.cosine > 0.95, r
        assert r.sign_agreement > 0.75, r  # measured >= 0.81 (b1: 13 of 16 neurons)
        assert r.frac_lost < 0.05, r
        assert 0.8 < r.norm_ratio < 1.1, r


def test_nearest_loses_small_updates_and_stochastic_is_unbiased():
    net, x, y = random_problem((20, 16, 5), activation="sigmoid4", batch=32, seed=0)
    bundle = fl.quantize_network(net, LOIHI2)
    sim = FixedPointSimulator(bundle)
    res, c = run_phases(fl.fixed_relaxer(sim, x, y), EP(t1=60, t2=20, beta=0.2))
    sa, sb = res[c.a].states, res[c.b].states
    lr = 0.1  # max |update| ~ 0.27 grid steps of W1: below half a step
    exact = fl.fixed_ep_update(bundle, x, y, sa, 0.2, sb, 0.0, (lr * 2**20, lr * 2**20), "nearest", sim=sim)
    target = exact.dq_weights[0] / 2.0**20  # the unrounded update in grid steps (to 2**-20)
    assert 0.1 < np.abs(target).max() < 0.5
    near = fl.fixed_ep_update(bundle, x, y, sa, 0.2, sb, 0.0, (lr, lr), "nearest", sim=sim)
    assert not near.dq_weights[0].any()  # every W1 update is lost
    rows = fl.compare_updates(net, LOIHI2, x, y, t1=60, t2=20, beta=0.2, nudging="one-sided", lrs=(lr, lr),
                              roundings=("nearest",))
    assert rows[0].name == "W1" and rows[0].frac_lost == 1.0 and math.isnan(rows[0].cosine)
    rng = np.random.default_rng(1)
    n = 400
    mean = sum(fl.fixed_ep_update(bundle, x, y, sa, 0.2, sb, 0.0, (lr, lr), "stochastic", rng, sim=sim).dq_weights[0]
               for _ in range(n)) / n
    # unbiased: the mean over draws approaches the exact update (std of the mean <= 0.5 / sqrt(n) = 0.025)
    assert np.abs(mean - target).max() < 0.11
    cos = float((mean * target).sum() / (np.linalg.norm(mean) * np.linalg.norm(target)))
    assert cos > 0.95


def test_rounding_helpers():
    assert fl.round_shift(np.array([3, 4, -4, -5, 12]), 3, "nearest").tolist() == [0, 1, 0, -1, 2]
    rng = np.random.default_rng(0)
    for v, exp in ((3, 0.375), (-5, -0.625)):
        out = fl.round_shift(np.full(200_000, v), 3, "stochastic", rng)
        assert set(np.unique(out)) == {math.floor(exp), math.ceil(exp)}
        assert abs(out.mean() - exp) < 0.006  # 5 standard deviations
    out = fl.round_to_grid(np.full(200_000, -0.3), "stochastic", rng)
    assert abs(out.mean() + 0.3) < 0.006
    assert fl.round_to_grid(np.array([0.4, -0.4, 0.6]), "nearest").tolist() == [0, 0, 1]
    with pytest.raises(ConfigError, match="Generator"):
        fl.round_shift(np.array([1]), 2, "stochastic")
    with pytest.raises(ConfigError, match="rounding"):
        fl.round_to_grid(np.array([1.0]), "up")
    M, K = fl.update_multiplier(0.8 * 2.0**-18)
    assert abs(M) < 2**16 and abs(M * 2.0**-K / (0.8 * 2.0**-18) - 1) < 2**-15
    assert fl.update_multiplier(0.0) == (0, 0)
    assert fl.update_multiplier(-3.0)[0] < 0


# --------------------------------------------------------------------------- CLI

SMALL = ["--dataset", "digits", "--arch", "64-32-10", "--n-train", "200", "--n-test", "60", "--t1", "20", "--t2", "6", "--batch-size", "20"]


@pytest.fixture(scope="module")
def float_run(tmp_path_factory):
    from neuro_hts import cli

    path = tmp_path_factory.mktemp("runs") / "float.h5"
    assert cli.main(["--no-progress", "train", *SMALL, "--epochs", "1", "--activation", "sigmoid4", "--out", str(path)]) == 0
    return path


def test_check_updates_prints_both_roundings(run_cli, float_run):
    code, out, err = run_cli(["check-updates", str(float_run), "--target", "loihi2", "--batch-size", "16", "--lr", "50"])
    assert code == 0, err
    lines = out.splitlines()
    assert "one digits batch of 16" in lines[0] and "SGD lr 50,50" in lines[0]
    assert lines[1].split()[:5] == ["rounding", "param", "grid", "step", "cosine"]
    rows = [ln.split() for ln in lines[2:]]
    assert [(r[0], r[1]) for r in rows] == [(ro, p) for ro in ("nearest", "stochastic") for p in ("W1", "b1", "W2", "b2")]
    for r in rows:
        cosine, sign, lost = float(r[3]), float(r[4]), float(r[5])
        assert cosine > 0.9 and sign > 0.8 and 0.0 <= lost < 0.2, r


@pytest.mark.parametrize("argv, expected", [
    (["--batch-size", "0"], "--batch-size must be a positive integer"),
    (["--lr", "-1"], "--lr must be a positive"),
    (["--target", "nochip"], "unknown hardware target"),
])
def test_check_updates_bad_input_exits_2(run_cli, float_run, argv, expected):
    base = ["check-updates", str(float_run), "--target", "loihi2"]
    assert_one_line_error(*run_cli([*base, *argv]), expected)


def test_check_updates_missing_run_and_energy_form(run_cli, tmp_path):
    assert_one_line_error(*run_cli(["check-updates", str(tmp_path / "nope.h5"), "--target", "loihi2"]), "not found")
    run = tmp_path / "energy.h5"
    assert run_cli(["train", *SMALL, "--epochs", "0", "--form", "energy", "--out", str(run)])[0] == 0
    assert_one_line_error(*run_cli(["check-updates", str(run), "--target", "loihi2"]), "leaky-form MSE")


def test_fixed_arith_needs_a_target_and_the_leaky_mse_model(run_cli, tmp_path):
    assert_one_line_error(*run_cli(["train", *SMALL, "--arith", "fixed", "--out", str(tmp_path / "a.h5")]), "needs a hardware target")
    assert_one_line_error(*run_cli(["train", *SMALL, "--arith", "fixed", "--target", "loihi2", "--form", "energy",
                                    "--out", str(tmp_path / "b.h5")]), "leaky form with an MSE output")
    with pytest.raises(ConfigError, match="update_rounding"):
        TrainConfig(update_rounding="up")
    # old run files (no arith keys) still load: defaults are float
    assert Config.from_dict({"train": {"epochs": 1}}).train.arith == "float"


DIGITS = ["--config", "models/digits.toml", "--n-train", "400", "--n-test", "200", "--arith", "fixed", "--target", "hardware/loihi2.toml"]


def test_train_fixed_learns_digits_and_eval_reports_fixed_point(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(fl.__file__.rsplit("/neuro_hts/", 1)[0])
    run = tmp_path / "fixed.h5"
    code, out, err = run_cli(["train", *DIGITS, "--epochs", "3", "--out", str(run)])
    assert code == 0, err
    state = load_run(run)
    assert state.config.train.arith == "fixed" and state.config.train.target == "loihi2"  # recorded by name
    acc = state.history["test_accuracy"][-1]
    assert acc > 0.85  # chance is 0.1; measured 0.775, 0.915, 0.925 over the 3 epochs
    exps = [int(e) for e in state.optimizer_state["weight_exponent"]]
    assert exps == [-8, -8]  # fixed from the initial network (clamped at the target's exponent_min)
    for w, b in zip(state.network.weights, state.network.biases):
        m = w.astype(np.float64) * 2.0**8
        assert np.array_equal(m, np.rint(m)) and (m % 2 == 0).all() and np.abs(m).max() <= 254
        bu = b.astype(np.float64) * 2.0**12
        assert np.array_equal(bu, np.rint(bu))
    code, out, err = run_cli(["eval", str(run)])
    assert code == 0, err
    assert f"test accuracy: {acc:.4f}" in out and "fixed point (loihi2)" in out


def test_train_fixed_resume_is_bit_identical(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(fl.__file__.rsplit("/neuro_hts/", 1)[0])
    common = ["train", *DIGITS, "--n-train", "200", "--t1", "30", "--seed", "5"]
    straight, part = tmp_path / "straight.h5", tmp_path / "part.h5"
    assert run_cli([*common, "--epochs", "3", "--out", str(straight)])[0] == 0
    assert run_cli([*common, "--epochs", "1", "--out", str(part)])[0] == 0
    after_one = load_run(part)
    code, _, err = run_cli(["train", "--resume", str(part), "--epochs", "3"])
    assert code == 0, err
    a, b = load_run(straight), load_run(part)
    assert a.config == b.config and b.epochs_completed == 3
    for x, y in zip(a.network.weights + a.network.biases, b.network.weights + b.network.biases, strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y)
    assert set(a.optimizer_state) == set(b.optimizer_state) >= {"weight_exponent", "m", "v", "t"}
    for k in a.optimizer_state:
        for x, y in zip(a.optimizer_state[k], b.optimizer_state[k], strict=True):
            assert np.array_equal(x, y), k
    for k in HISTORY_KEYS:
        if k != "epoch_seconds":
            assert a.history[k] == b.history[k], k
    assert not np.array_equal(after_one.network.weights[0], b.network.weights[0])
    assert_one_line_error(*run_cli(["train", "--resume", str(part), "--epochs", "4", "--update-rounding", "nearest"]),
                          "only --epochs may change")


def test_train_fixed_integer_sgd_path(tmp_path):
    """Plain SGD uses the all-integer update (fixed_ep_update); it learns too."""
    from neuro_hts.config import load_config
    from neuro_hts.training import train

    root = fl.__file__.rsplit("/neuro_hts/", 1)[0]
    cfg = load_config(f"{root}/models/digits.toml").replace(
        train={"epochs": 3, "optimizer": "sgd", "lr": [0.2], "arith": "fixed", "target": "loihi2"},
        data={"n_train": 400, "n_test": 200})
    state = train(cfg, tmp_path / "sgd.h5")
    assert state.history["test_accuracy"][-1] > 0.7  # chance 0.1; measured 0.36, 0.625, 0.845
    assert set(state.optimizer_state) == {"weight_exponent"}
