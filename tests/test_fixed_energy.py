"""The energy form and the softmax readout in fixed point (issue 15 item 4): the Numba
simulator against the plain-Python integer reference of tests/naive.py (bit for bit),
hand-derived golden values, closeness to the float dynamics, the integer rho' bound,
bundles and `compare`."""

from __future__ import annotations

import dataclasses
import math

import naive
import numpy as np
import pytest
import test_fixed_sim

from neuro_hts import dynamics
from neuro_hts.activations import sigmoid4_prime
from neuro_hts.config import Config
from neuro_hts.errors import ConfigError
from neuro_hts.hardware import load_target
from neuro_hts.hardware.bundle import load_bundle, save_bundle
from neuro_hts.hardware.compare import compare_network
from neuro_hts.hardware.drc import check_deployable
from neuro_hts.hardware.fixed_point import activation_int, activation_prime_int
from neuro_hts.hardware.fixed_sim import SIGMOID4_LO, FixedPointSimulator, sigmoid4_table
from neuro_hts.hardware.quantize import quantize_network
from neuro_hts.network import Network, init_network

LOIHI2 = load_target("loihi2")


def make_bundle(mantissas, exponents, biases, decays, *, form="energy", **kw):
    """test_fixed_sim's bundle builder, the energy form by default."""
    return test_fixed_sim.make_bundle(mantissas, exponents, biases, decays, form=form, **kw)


def random_bundle(seed, arch, F, S, activation, input_bits=24, k_range=(-9, 3), *, form="energy", **kw):
    """test_fixed_sim's random bundle, the energy form by default."""
    return test_fixed_sim.random_bundle(seed, arch, F, S, activation, input_bits, k_range, form=form, **kw)


# --------------------------------------------------------------------------- golden


def test_energy_hard_sigmoid_clips_the_state_not_the_target():
    # weight 0, bias 6000 > one: the leaky neuron steps toward clip(6000) = 4096, the
    # energy neuron toward 6000 itself and clips the new state: 0 -> 3000 -> 4096 (dt = 1/2)
    x = np.zeros((1, 1))
    energy = FixedPointSimulator(make_bundle([[[0]]], [0], [[6000]], [[2048]]))
    leaky = FixedPointSimulator(make_bundle([[[0]]], [0], [[6000]], [[2048]], form="leaky"))
    assert [energy.relax(x, n)[0][0].tolist() for n in (1, 2, 3)] == [[[3000]], [[4096]], [[4096]]]
    assert [leaky.relax(x, n)[0][0].tolist() for n in (1, 2, 3)] == [[[2048]], [[3072]], [[3584]]]
    # a negative drive: 3000 + tz(2048 * (-1000 - 3000) / 4096) = 1000, then tz(-2048 * 2000/4096) -> 0
    neg = FixedPointSimulator(make_bundle([[[0]]], [0], [[-1000]], [[2048]]))
    st, _ = neg.relax(x, 1, states=[np.array([[3000]])])
    assert st[0].tolist() == [[1000]]
    assert neg.relax(x, 1, states=st)[0][0].tolist() == [[0]]


def test_energy_sigmoid4_golden_step_and_mse_nudge():
    # s = 0: rho(0) = rint(4096 / (1 + e^2)) = 488; rho'(0) = (4 * 488 * 3608) >> 12 = 1719
    # (float: 4096 * sigmoid4'(0) = 1720.3); bias 4096 (h = 1.0), dt = 1: s <- 1719
    b = make_bundle([[[0]]], [0], [[4096]], [[4096]], activation="sigmoid4")
    assert FixedPointSimulator(b).relax(np.zeros((1, 1)), 1)[0][0].tolist() == [[1719]]
    # nudge outside rho': beta = 0.5 toward y = 1 from s = 0 adds tz(2048 * 4096 / 4096) = 2048
    st, _ = FixedPointSimulator(b).relax(np.zeros((1, 1)), 1, y=np.ones((1, 1)), beta=0.5)
    assert st[0].tolist() == [[1719 + 2048]]


def test_energy_input_is_rho_of_x_and_the_payload_rho_of_s():
    # sigmoid4 energy form: layer 1 sees rint(sigmoid4(x) 2**F), not rint(x 2**F)
    b = make_bundle([[[2]], [[2]]], [-1, -1], [[0], [0]], [[4096], [4096]], activation="sigmoid4")
    sim = FixedPointSimulator(b)
    x = np.array([[0.25]])
    assert sim.quantize_input(x).tolist() == [[round(4096 / (1 + math.exp(1.0)))]]
    leaky = FixedPointSimulator(dataclasses.replace(b, form="leaky"))
    assert leaky.quantize_input(x).tolist() == [[1024]]


# --------------------------------------------------------------------------- oracle


@pytest.mark.parametrize("seed,arch,F,S,activation,input_bits", [
    (0, (5, 4, 3), 12, 12, "hard_sigmoid", 24),
    (1, (6, 5, 4, 3), 8, 12, "sigmoid4", 24),
    (2, (4, 7, 2), 12, 10, "hard_sigmoid", 16),
    (3, (3, 3, 3, 3, 2), 6, 12, "sigmoid4", 14),
])
def test_energy_kernel_matches_python_integer_oracle(seed, arch, F, S, activation, input_bits):
    bundle, rng = random_bundle(seed, arch, F, S, activation, input_bits)
    sim = FixedPointSimulator(bundle)
    one = 1 << S
    B = 4
    x = rng.random((B, arch[0]))
    y = np.eye(arch[-1])[rng.integers(0, arch[-1], size=B)]
    states = [rng.integers(0, one + 1, size=(B, n)) for n in arch[1:]]
    for beta in (0.0, 0.37, -0.8):
        got, res = sim.relax(x, 4, states=states, y=y, beta=beta)
        ref, rres, _ = naive.fixed_relax(bundle, x, 4, states=states, y=y, beta=beta)
        for a, r in zip(got, ref):
            assert np.array_equal(a, r)
            assert a.min() >= 0 and a.max() <= one  # the energy form's clip
        assert np.array_equal(res, rres)
        assert any(not np.array_equal(a, s) for a, s in zip(got, states))  # not vacuous
    # the dense and conv kernels agree on a dense chain
    conv = FixedPointSimulator(bundle, kernel="conv")
    for a, c in zip(sim.relax(x, 4, states=states, y=y, beta=0.37)[0], conv.relax(x, 4, states=states, y=y, beta=0.37)[0]):
        assert np.array_equal(a, c)
    # the form changes the integers
    leaky, _ = FixedPointSimulator(dataclasses.replace(bundle, form="leaky")).relax(x, 4, states=states)
    assert any(not np.array_equal(a, c) for a, c in zip(sim.relax(x, 4, states=states)[0], leaky))


def test_sigmoid4_integer_rho_prime_within_three_lsb_of_float():
    S = 12
    one = 1 << S
    table = sigmoid4_table(S)
    lo = SIGMOID4_LO * one
    s = np.arange(0, one + 1)
    r = np.array([activation_int(int(v), one, 1, table, lo) for v in s])
    rp = np.array([activation_prime_int(int(v), int(q), S, 1) for v, q in zip(s, r)])
    err = np.abs(rp / one - sigmoid4_prime(s / one))
    assert err.max() < 3.0 / one  # the bound in activation_prime_int's docstring
    assert rp.max() == one  # 4 r (1 - r) reaches 1 at r = 1/2 (s = 1/2)
    hard = [activation_prime_int(v, 0, S, 0) for v in (-1, 0, 1, one, one + 1)]
    assert hard == [0, one, one, one, 0]  # the closed-interval indicator


@pytest.mark.parametrize("activation", ["hard_sigmoid", "sigmoid4"])
def test_energy_fixed_point_tracks_float_dynamics(activation):
    cfg = Config().replace(model={"arch": [30, 24, 10], "activation": activation, "form": "energy"},
                           train={"seed": 5})
    net = init_network(cfg)  # its free phase settles (residual 1e-3 to 2e-3 at T = 40); with 3x the
    bundle = quantize_network(net, LOIHI2)  # weights it does not, and the state error grows to 0.02
    assert bundle.form == "energy"
    sim = FixedPointSimulator(bundle)
    x = np.random.default_rng(1).random((40, 30))
    T = 40
    fixed = sim.dequantize_states(sim.relax(x, T)[0])
    deq = Network([lb.weights_float() for lb in bundle.layers], [lb.bias / 4096.0 for lb in bundle.layers],
                  [lb.decay / 4096.0 for lb in bundle.layers], form="energy", activation=activation, output="mse")
    ref_q = dynamics.relax(deq, x, T).states
    err_q = max(np.abs(a - b).max() for a, b in zip(fixed, ref_q))
    assert err_q < 5e-3, err_q  # only the integer arithmetic differs (measured 2.5e-3 and 3.0e-3)
    assert max(float(np.abs(a).max()) for a in ref_q) > 0.1  # not vacuous
    ref = dynamics.relax(net, x, T).states
    assert max(np.abs(a - b).max() for a, b in zip(fixed, ref)) < 0.05


# --------------------------------------------------------------------------- softmax readout


@pytest.mark.parametrize("form,activation", [("leaky", "hard_sigmoid"), ("energy", "sigmoid4"),
                                             ("energy", "hard_sigmoid"), ("leaky", "sigmoid4")])
def test_readout_logits_match_oracle_and_argmax_predicts(form, activation):
    bundle, rng = random_bundle(7, (6, 5, 4, 3), 12, 12, activation, form=form, output="ce")
    sim = FixedPointSimulator(bundle)
    assert sim.n_dynamic == 2 and sim.sizes == (5, 4)
    x = rng.random((5, 6))
    st, res = sim.relax(x, 6)
    ref, rres, _ = naive.fixed_relax(bundle, x, 6)
    assert [s.shape for s in st] == [(5, 5), (5, 4)]
    for a, r in zip(st, ref):
        assert np.array_equal(a, r)
    assert np.array_equal(res, rres)
    logits = sim.logits(st)
    assert logits.shape == (5, 3) and np.array_equal(logits, naive.fixed_logits(bundle, ref))
    assert np.array_equal(sim.predict(x, 6), np.argmax(logits, axis=1))
    # the top relaxed layer has no top-down input in the free phase: its mse twin (the
    # readout dropped) relaxes to the same integers
    mse = dataclasses.replace(bundle, output="mse", layers=bundle.layers[:-1])
    for a, b in zip(st, FixedPointSimulator(mse).relax(x, 6)[0]):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("form,activation", [("leaky", "hard_sigmoid"), ("energy", "sigmoid4"),
                                             ("energy", "hard_sigmoid"), ("leaky", "sigmoid4")])
def test_readout_nudged_phase_matches_oracle(form, activation):
    bundle, rng = random_bundle(9, (6, 5, 4, 3), 12, 12, activation, k_range=(-11, -8), form=form, output="ce")
    sim = FixedPointSimulator(bundle)
    x = rng.random((4, 6))
    y = np.eye(3)[rng.integers(0, 3, 4)]
    free, _ = sim.relax(x, 6)
    for beta in (0.5, -0.3):
        got, res = sim.relax(x, 5, states=free, y=y, beta=beta)
        ref, rres, _ = naive.fixed_relax(bundle, x, 5, states=free, y=y, beta=beta)
        for a, r in zip(got, ref):
            assert np.array_equal(a, r)
        assert np.array_equal(res, rres)
        assert not np.array_equal(got[-1], sim.relax(x, 5, states=free)[0][-1])  # the nudge acts


def test_integer_softmax_within_its_stated_bound():
    from neuro_hts.costs import softmax
    from neuro_hts.hardware.fixed_point import SOFTMAX_INT_REL_ERR, exp2_table, softmax_int

    S = 12
    table = exp2_table()
    assert table[0] == 1 << 20 and table.shape == (1024,)
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(3000):
        n = int(rng.integers(2, 12))
        z = np.rint(rng.normal(0, rng.choice([0.05, 1.0, 4.0, 30.0]), n) * (1 << S)).astype(np.int64)
        out = np.empty_like(z)
        softmax_int(z, S, table, out)
        assert out.min() >= 0 and out.sum() <= 1 << S and out.sum() >= (1 << S) - n  # floors: at most one unit each
        assert np.array_equal(out, naive.softmax_int(z.tolist(), S))
        worst = max(worst, float(np.abs(out / (1 << S) - softmax(z / (1 << S))).max()))
    assert worst <= 2.0**-S + SOFTMAX_INT_REL_ERR  # the docstring's bound (measured 4.0e-4)
    assert worst > 2.0**-S / 4  # and the comparison is not of equal arrays


def test_readout_nudged_phase_tracks_float_and_refusals():
    cfg = Config().replace(model={"arch": [20, 16, 5], "output": "ce", "form": "energy"}, train={"seed": 6})
    net = init_network(cfg)
    bundle = quantize_network(net, LOIHI2)
    sim = FixedPointSimulator(bundle)
    rng = np.random.default_rng(1)
    x, y = rng.random((50, 20)), np.eye(5)[rng.integers(0, 5, 50)]
    free, _ = sim.relax(x, 30)
    nudged, _ = sim.relax(x, 10, states=free, y=y, beta=1.0)
    deq = Network([lb.weights_float() for lb in bundle.layers], [lb.bias / 4096.0 for lb in bundle.layers],
                  [lb.decay / 4096.0 for lb in bundle.layers], form="energy", activation="hard_sigmoid", output="ce")
    rf = dynamics.relax(deq, x, 30).states
    rn = dynamics.relax(deq, x, 10, states=rf, y=y, beta=1.0).states
    move_f = rn[0] - rf[0]
    move_q = (nudged[0] - free[0]) / 4096.0
    assert np.abs(move_f).max() > 0.01  # the float nudge moves the layer
    assert np.abs(move_q - move_f).max() < 0.1 * np.abs(move_f).max()
    x1, y1 = np.zeros((1, 20)), np.eye(5)[[0]]
    with pytest.raises(ConfigError, match="readout_clamp"):
        sim.relax(x1, 2, y=y1, clamp="target")
    with pytest.raises(ConfigError, match="dense kernel"):
        FixedPointSimulator(bundle, kernel="conv").relax(x1, 2, y=y1, beta=0.5)
    with pytest.raises(ConfigError, match=r"y must be finite with shape \(1, 5\)"):
        sim.relax(x1, 2, y=np.zeros((1, 16)), beta=0.5)
    with pytest.raises(ConfigError, match="MSE output"):
        FixedPointSimulator(dataclasses.replace(bundle, output="mse", layers=bundle.layers[:-1])).logits(free)


def test_readout_float_network_quantizes_and_agrees_with_float():
    cfg = Config().replace(model={"arch": [20, 16, 5], "output": "ce", "activation": "sigmoid4"}, train={"seed": 2})
    net = init_network(cfg)
    net.weights = [3.0 * w for w in net.weights]
    assert check_deployable(net, LOIHI2) == []
    bundle = quantize_network(net, LOIHI2)
    assert len(bundle.layers) == 2 and bundle.output == "ce"
    sim = FixedPointSimulator(bundle)
    x = np.random.default_rng(3).random((200, 20))
    st, _ = sim.relax(x, 30)
    rf = dynamics.relax(net, x, 30).states
    float_logits = dynamics.predict_scores(net, rf)
    assert np.abs(sim.logits(st) / 4096.0 - float_logits).max() < 0.05
    agree = np.mean(sim.predict(x, 30) == np.argmax(float_logits, axis=1))
    assert agree >= 0.95, agree


# --------------------------------------------------------------------------- bundles and compare


@pytest.mark.parametrize("model", [{"form": "energy"}, {"output": "ce"}, {"form": "energy", "output": "ce"}])
def test_bundle_records_form_and_output_and_round_trips(tmp_path, model):
    cfg = Config().replace(model={"arch": [8, 6, 4], **model}, train={"seed": 1})
    net = init_network(cfg)
    b = quantize_network(net, LOIHI2)
    path = save_bundle(tmp_path / "b.h5", b)
    back = load_bundle(path)
    assert (back.form, back.output) == (net.form, net.output)
    assert len(back.layers) == 2
    x = np.random.default_rng(0).random((3, 8))
    s1, s2 = FixedPointSimulator(b), FixedPointSimulator(back)
    assert np.array_equal(s1.scores(s1.relax(x, 5)[0]), s2.scores(s2.relax(x, 5)[0]))


@pytest.mark.parametrize("model", [{"form": "energy", "activation": "sigmoid4"}, {"output": "ce"}])
def test_compare_runs_on_energy_and_readout_networks(model):
    cfg = Config().replace(model={"arch": [20, 16, 5], **model}, train={"seed": 4})
    net = init_network(cfg)
    rng = np.random.default_rng(5)
    x = rng.random((60, 20))
    y = rng.integers(0, 5, 60)
    calls = []

    def fake_lava(bundle, xs, steps, arith):  # the Numba simulator standing in for Lava
        sim = FixedPointSimulator(bundle)
        calls.append(bundle.form + "/" + bundle.output)
        st, _ = sim.relax(xs, steps)
        sc = sim.scores(st)
        return type("R", (), {"predictions": np.argmax(sc, axis=1), "top_states": sc, "steps_per_second": 1.0})()

    res = compare_network(net, LOIHI2, x, y, 15, weight_bits=(4, 8), lava_samples=10, lava_runner=fake_lava)
    assert calls == [f"{net.form}/{net.output}"]
    assert res.lava_top_state_match == 1.0
    assert 0.9 <= res.agreement["float~fixed"] <= 1.0
    assert len(res.state_errors["fixed"]) == net.n_dynamic
    assert set(res.sweep) == {4, 8} and all(0.0 <= v <= 1.0 for v in res.sweep.values())


@pytest.mark.parametrize("model", [{"output": "ce"}, {"form": "energy", "output": "ce", "activation": "sigmoid4"}])
def test_deploy_predicts_a_readout_run_by_its_logits(tmp_path, model):
    from neuro_hts.data import load_dataset
    from neuro_hts.deploy import deploy
    from neuro_hts.runfile import RunState, save_run

    cfg = Config().replace(model={"arch": [64, 16, 10], **model}, train={"t1": 10, "seed": 3},
                           data={"dataset": "digits", "n_test": 40})
    net = init_network(cfg)
    run = save_run(tmp_path / "run.h5", RunState(cfg, net))
    x = load_dataset("digits", n_test=40).x_test.astype(np.float64)
    want = np.argmax(dynamics.predict_scores(net, dynamics.relax(net, x, 10).states), axis=1)
    assert not np.array_equal(want, np.argmax(dynamics.relax(net, x, 10).states[-1], axis=1))  # logits != states
    got = deploy(run, backend="numba", arith="float", n_samples=40)
    assert np.array_equal(got.predictions, want)
    b = save_bundle(tmp_path / "b.h5", quantize_network(net, LOIHI2))
    fixed = deploy(b, backend="numba", arith="fixed", n_samples=40, steps=10, dataset="digits")
    assert np.array_equal(fixed.predictions, FixedPointSimulator(load_bundle(b)).predict(x, 10))
