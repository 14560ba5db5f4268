"""Numba fixed-point relaxation (neuro_hts.hardware.fixed_sim): hand-derived golden cases,
bit-exact agreement with a slow pure-Python integer oracle, closeness to the float
dynamics, and no mutation of bundle or inputs."""

from __future__ import annotations

import dataclasses
import itertools
import math

import naive
import numpy as np
import pytest

from neuro_hts import dynamics
from neuro_hts.config import Config
from neuro_hts.errors import ConfigError
from neuro_hts.hardware import load_target
from neuro_hts.hardware.fixed_sim import FixedPointSimulator
from neuro_hts.hardware.quantize import DeployBundle, LayerBundle, quantize_network
from neuro_hts.network import Network, init_network

LOIHI2 = load_target("loihi2")


def make_bundle(mantissas, exponents, biases, decays, activation="hard_sigmoid", F=12, S=12, target=LOIHI2, *,
                form="leaky", output="mse"):
    layers = tuple(
        LayerBundle(
            index=i,
            weight_mantissa=np.asarray(w, dtype=np.int64),
            weight_exponent=int(e),
            bias=np.asarray(b, dtype=np.int64),
            decay=np.asarray(d, dtype=np.int64),
            dt=np.asarray(d, dtype=np.int64) / 4096.0,
        )
        for i, (w, e, b, d) in enumerate(zip(mantissas, exponents, biases, decays), start=1)
    )
    return DeployBundle(target=target, layers=layers, form=form, activation=activation, output=output,
                        activation_frac_bits=F, state_frac_bits=S)


def random_bundle(seed, arch, F, S, activation, input_bits=24, k_range=(-9, 3), **kw):
    """A random integer bundle (even mantissas, exponents giving shifts k in k_range, both shift
    kinds by default) and the generator, for the kernel-vs-reference tests; ``kw`` to make_bundle."""
    rng = np.random.default_rng(seed)
    target = dataclasses.replace(LOIHI2, state=dataclasses.replace(LOIHI2.state, input_bits=input_bits))
    one = 1 << S
    mant, exps, biases, decays = [], [], [], []
    for n_in, n_out in itertools.pairwise(arch):
        mant.append(2 * rng.integers(-127, 128, size=(n_out, n_in)))
        exps.append(int(rng.integers(F - S + k_range[0], F - S + k_range[1])))
        biases.append(rng.integers(-3 * one, 3 * one, size=n_out))
        decays.append(rng.integers(1, 4097, size=n_out))
    return make_bundle(mant, exps, biases, decays, activation=activation, F=F, S=S, target=target, **kw), rng


# --------------------------------------------------------------------------- (a) golden


def test_one_neuron_halves_distance_with_toward_zero_rounding():
    # weight 0, e = 0 so k = e - F + S = 0: the bias 1000 is h in state units; sigma = 1000
    sim = FixedPointSimulator(make_bundle([[[0]]], [0], [[1000]], [[2048]]))
    x = np.zeros((1, 1))
    expected = [500, 750, 875, 937, 968, 984, 992, 996, 998, 999, 999, 999]
    states = None
    for want in expected:
        states, res = sim.relax(x, 1, states=states)
        assert states[0].tolist() == [[want]]
    # dead zone: 2048 * 1 < 4096, the state stalls one unit short and the residual is 0
    assert res.tolist() == [0]
    st, res = sim.relax(x, 4)
    assert st[0].tolist() == [[937]] and res.tolist() == [937 - 875]


def test_weight_exponent_shifts_floor_and_left():
    # x = 0.5 -> x_int = 2048; mantissa 2, e = -1 (k = -1): acc = 4096 -> 2048; decay 4096 jumps
    sim = FixedPointSimulator(make_bundle([[[2]]], [-1], [[0]], [[4096]]))
    assert sim.relax(np.array([[0.5]]), 1)[0][0].tolist() == [[2048]]
    # negative accumulators shift with floor: x = 3/4096, mantissa -1 at k = -1: -3 -> -2
    # (toward zero would be -1)
    sim = FixedPointSimulator(make_bundle([[[-1]]], [-1], [[0]], [[4096]], activation="sigmoid4"))
    h = -2
    want = round(4096 / (1 + math.exp(-(4 * h / 4096 - 2))))
    assert sim.relax(np.array([[3 / 4096]]), 1)[0][0].tolist() == [[want]]
    # e = 1 (k = +1): x = 5/4096, mantissa 1 -> 5 << 1 = 10; the bias 7 is added after the shift
    sim = FixedPointSimulator(make_bundle([[[1]]], [1], [[7]], [[4096]]))
    assert sim.relax(np.array([[5 / 4096]]), 1)[0][0].tolist() == [[17]]


def test_sigmoid4_table_values_and_saturation():
    # h = 0: 4096 / (1 + e^2) = 488.25 -> 488; far out of range saturates to 0 / 4096
    for bias, want in [(0, 488), (-10**6, 0), (10**6, 4096), (4096, round(4096 / (1 + math.exp(-2))))]:
        sim = FixedPointSimulator(make_bundle([[[0]]], [0], [[bias]], [[4096]], activation="sigmoid4"))
        assert sim.relax(np.zeros((1, 1)), 1)[0][0].tolist() == [[want]]


def test_mse_nudge_golden():
    # h = 0, hard sigmoid, decay 4096, beta = 0.5 (beta_int 2048), y = 1 (4096):
    # s: 0 -> tz(2048 * 4096 / 4096) = 2048 -> tz(2048 * 2048 / 4096) = 1024 -> 1536
    sim = FixedPointSimulator(make_bundle([[[0]]], [0], [[0]], [[4096]]))
    x, y = np.zeros((1, 1)), np.ones((1, 1))
    got = []
    states = None
    for _ in range(3):
        states, _ = sim.relax(x, 1, states=states, y=y, beta=0.5)
        got.append(int(states[0][0, 0]))
    assert got == [2048, 1024, 1536]
    # -beta mirrors: from s = 4096 with y = 0, h = 4096 - 2048 = 2048 ... toward-zero rounding
    states, _ = sim.relax(x, 1, states=[np.array([[4096]])], y=np.zeros((1, 1)), beta=-0.5)
    assert states[0].tolist() == [[2048]]  # tz(-2048 * (0 - 4096) / 4096) = +2048, decay 4096


# --------------------------------------------------------------------------- (b) oracle


reference_step = naive.fixed_step


@pytest.mark.parametrize("seed,arch,F,S,activation,input_bits", [
    (0, (5, 4, 3), 12, 12, "hard_sigmoid", 24),
    (1, (6, 5, 4, 3), 8, 12, "sigmoid4", 24),
    (2, (4, 7, 2), 12, 10, "hard_sigmoid", 16),
    (3, (3, 3, 3, 3, 2), 6, 12, "sigmoid4", 14),
    (4, (8, 6), 12, 12, "sigmoid4", 24),
])
def test_kernel_matches_python_integer_oracle(seed, arch, F, S, activation, input_bits):
    bundle, rng = random_bundle(seed, arch, F, S, activation, input_bits)  # k from -9 to +2: both shift kinds
    one = 1 << S
    sim = FixedPointSimulator(bundle)
    B = 4
    x = rng.random((B, arch[0]))
    x_int = np.rint(x * 2.0**F).astype(np.int64)
    y = np.eye(arch[-1])[rng.integers(0, arch[-1], size=B)]
    y_int = (y * one).astype(np.int64)
    states = [rng.integers(0, one + 1, size=(B, n)) for n in arch[1:]]
    for beta in (0.0, 0.37, -0.8):
        beta_int = int(np.rint(beta * 4096))
        ref = [s.copy() for s in states]
        got = states
        for _ in range(3):
            ref_new = reference_step(bundle, x_int, ref, y_int, beta_int)
            got_new, res = sim.relax(x, 1, states=got, y=y, beta=beta)
            for a, b in zip(got_new, ref_new):
                assert np.array_equal(a, b)
            want_res = np.max([np.abs(a - b).max(axis=1) for a, b in zip(ref_new, ref)], axis=0)
            assert np.array_equal(res, want_res)
            ref, got = ref_new, got_new
        # several steps inside one kernel call == the same number of single steps
        multi, _ = sim.relax(x, 3, states=states, y=y, beta=beta)
        for a, b in zip(multi, ref):
            assert np.array_equal(a, b)


# --------------------------------------------------------------------------- (c) float


@pytest.mark.parametrize("activation", ["hard_sigmoid", "sigmoid4"])
def test_fixed_point_tracks_float_dynamics(activation):
    cfg = Config().replace(model={"arch": [30, 24, 10], "activation": activation}, train={"seed": 5})
    net = init_network(cfg)
    bundle = quantize_network(net, LOIHI2)
    sim = FixedPointSimulator(bundle)
    x = np.random.default_rng(1).random((40, 30))
    T = 40
    fixed = sim.dequantize_states(sim.relax(x, T)[0])
    # 1) against the float dynamics of the DEQUANTIZED parameters: only the integer
    #    arithmetic differs (measured max error 2.7e-3, mostly the decay dead zone; bound 5e-3)
    deq = Network(
        [lb.weights_float() for lb in bundle.layers],
        [lb.bias / 2.0**bundle.state_frac_bits for lb in bundle.layers],
        [lb.decay / 4096.0 for lb in bundle.layers],
        form="leaky", activation=activation, output="mse",
    )
    ref_q = dynamics.relax(deq, x, T).states
    err_q = max(np.abs(a - b).max() for a, b in zip(fixed, ref_q))
    assert err_q < 5e-3
    # 2) against the original float network (adds weight quantisation; measured 0.024 and 0.015)
    ref = dynamics.relax(net, x, T).states
    err = max(np.abs(a - b).max() for a, b in zip(fixed, ref))
    assert err < 0.05
    agree = np.mean(np.argmax(fixed[-1], axis=1) == np.argmax(ref_q[-1], axis=1))
    assert agree >= 0.9
    assert np.array_equal(sim.predict(x, T), np.argmax(sim.relax(x, T)[0][-1], axis=1))


# --------------------------------------------------------------------------- (d) purity


def test_no_mutation_of_bundle_or_inputs():
    rng = np.random.default_rng(7)
    bundle = make_bundle([2 * rng.integers(-100, 100, (4, 3)), 2 * rng.integers(-100, 100, (2, 4))],
                         [-3, -2], [rng.integers(-500, 500, 4), rng.integers(-500, 500, 2)],
                         [rng.integers(1, 4097, 4), rng.integers(1, 4097, 2)])
    before = [(lb.weight_mantissa.copy(), lb.bias.copy(), lb.decay.copy()) for lb in bundle.layers]
    sim = FixedPointSimulator(bundle)
    x = rng.random((3, 3))
    y = np.eye(2)[[0, 1, 0]]
    states = [rng.integers(0, 4097, (3, 4)), rng.integers(0, 4097, (3, 2))]
    x0, y0, s0 = x.copy(), y.copy(), [s.copy() for s in states]
    out, _ = sim.relax(x, 5, states=states, y=y, beta=0.5)
    sim.predict(x, 5)
    assert np.array_equal(x, x0) and np.array_equal(y, y0)
    assert all(np.array_equal(a, b) for a, b in zip(states, s0))
    assert all(o is not s for o, s in zip(out, states))
    for lb, (w, b, d) in zip(bundle.layers, before):
        assert np.array_equal(lb.weight_mantissa, w) and np.array_equal(lb.bias, b) and np.array_equal(lb.decay, d)


def test_rejects_unsupported_bundles_and_bad_states():
    b = make_bundle([[[0]]], [0], [[0]], [[4096]])
    with pytest.raises(ConfigError, match="form='hopfield'"):
        FixedPointSimulator(dataclasses.replace(b, form="hopfield"))
    with pytest.raises(ConfigError, match="'softmax'"):
        FixedPointSimulator(dataclasses.replace(b, output="softmax"))
    sim = FixedPointSimulator(b)
    with pytest.raises(ConfigError):
        sim.relax(np.zeros((1, 1)), 1, states=[np.array([[5000]])])
    with pytest.raises(ConfigError):
        sim.relax(np.zeros((1, 1)), 1, beta=0.5)  # nudging without targets
