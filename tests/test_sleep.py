"""Sleep-like replay consolidation (neuro_hts.sleep): the equations, the kernel against its reference."""

from __future__ import annotations

import numpy as np
import pytest

from neuro_hts.errors import ConfigError
from neuro_hts.sleep import (
    SleepConfig, _sleep_kernel, input_gains, membrane_update, poisson_rate, poisson_spikes, sleep, sleep_iterations,
    sleep_reference, stdp_factor, stdp_update, window_mask,
)


def test_poisson_rate_is_its_formula_and_the_spikes_follow_it():
    x = np.array([0.0, 0.1, 0.5, 1.0])
    p = poisson_rate(x, dt=0.001, max_rate=239.5)
    np.testing.assert_allclose(p, np.minimum(1.0, 2 * 0.001 * 239.5 * x))
    assert p[0] == 0.0 and p[3] == pytest.approx(0.479)
    assert poisson_rate(np.array([0.9]), 0.01, 100.0)[0] == 1.0  # capped at 1
    spikes = poisson_spikes(p, np.random.default_rng(0), 40_000)
    freq = spikes.mean(axis=0)
    # binomial standard error at n = 40000 is < 0.0025; 4 sigma
    np.testing.assert_allclose(freq, p, atol=0.01)
    assert freq[0] == 0.0


def test_window_mask_is_one_square_window_inside_the_image():
    m = window_mask((28, 28), 11, np.random.default_rng(1), 200).reshape(200, 28, 28)
    assert (m.sum(axis=(1, 2)) == 121).all()
    for mi in m[:20]:
        rows, cols = np.nonzero(mi)
        assert rows.max() - rows.min() == 10 and cols.max() - cols.min() == 10
    assert (window_mask((8, 8), 0, np.random.default_rng(1), 3) == 1).all()


def test_stdp_signs():
    w = np.full((3, 2), 0.2)
    pre = np.array([1, 0])
    post = np.array([1, 0, 1])
    new = stdp_update(w, pre, post, inc=0.1, dec=0.05, kind="sigmoid")
    g = 1 / (1 + np.exp(-0.2))
    assert new[0, 0] == pytest.approx(0.2 + 0.1 * g)  # pre and post spike: up
    assert new[0, 1] == pytest.approx(0.2 - 0.05 * g)  # post only: down
    assert (new[1] == w[1]).all()  # no post spike: no change
    assert new[2, 0] > 0.2 > new[2, 1]


def test_stdp_with_zero_rates_changes_nothing():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(5, 4))
    new = stdp_update(w, np.array([1, 0, 1, 0]), np.ones(5), inc=0.0, dec=0.0, kind="sigmoid")
    assert (new == w).all()
    # the whole sleep (kernel) with inc = dec = 0 leaves the weights bit for bit
    W = rng.normal(size=(6, 9))
    before = W.copy()
    spikes = (rng.random((50, 9)) < 0.5).astype(np.uint8)
    _sleep_kernel((W,), (np.zeros(6),), np.array([3.0]), np.array([0.5]), 0.999, 0.0, 0.0, 0, spikes,
                  (np.zeros(6),), (np.zeros(6, dtype=np.int64),))
    assert (W == before).all()


def test_stdp_factors():
    w = np.array([-1.0, 0.0, 1.0])
    np.testing.assert_allclose(stdp_factor(w, "sigmoid"), 1 / (1 + np.exp(-w)))
    np.testing.assert_allclose(stdp_factor(w, "matlab"), [2.0, 1.0, 0.0], atol=1e-12)
    assert (stdp_factor(w, "one") == 1).all()
    with pytest.raises(ConfigError):
        stdp_factor(w, "relu")


def test_membrane_decay_threshold_and_reset():
    v = np.array([0.0, 1.0, 2.0])
    new, s = membrane_update(v, np.array([0.5, 0.5, 0.5]), decay=0.5, threshold=1.5)
    # 0.5 v + impulse = [0.5, 1.0, 1.5]: only the last reaches the threshold, and is reset to 0
    np.testing.assert_allclose(new, [0.5, 1.0, 0.0])
    assert s.tolist() == [0, 0, 1]


def test_input_gain_on_a_hand_built_two_layer_net():
    W1 = np.array([[0.5, -1.0], [2.0, 0.1]])  # max positive weight 2
    W2 = np.array([[0.25, -3.0]])  # max positive weight 0.25
    a1 = np.array([[0.4, 4.0], [0.0, 1.0]])  # max activation 4 -> lambda_1 = 4
    a2 = np.array([[0.1], [0.2]])  # lambda_2 = max(0.25, 0.2) = 0.25
    alphas = input_gains([W1, W2], [a1, a2], alpha_scale=2.0)
    # f_1 = 4 / 1 = 4, f_2 = 0.25 / 4 = 1/16: alpha = 2 / f
    np.testing.assert_allclose(alphas, [0.5, 32.0])


def test_iteration_schedule():
    cfg = SleepConfig()
    assert [sleep_iterations(k, cfg) for k in (1, 2, 5)] == [15000, 20000, 35000]


def test_kernel_matches_the_reference():
    rng = np.random.default_rng(3)
    Ws = [rng.normal(0, 0.5, (7, 16)), rng.normal(0, 0.5, (4, 7))]
    bs = [rng.normal(0, 0.1, 7), rng.normal(0, 0.1, 4)]
    alphas, thr = np.array([1.5, 2.0]), np.array([0.8, 0.6])
    spikes = (rng.random((120, 16)) < 0.3).astype(np.uint8)
    for g, code in (("sigmoid", 0), ("matlab", 1), ("one", 2)):
        ref_W, ref_v, ref_c = sleep_reference(Ws, bs, alphas, thr, 0.99, 0.02, 0.01, g, spikes)
        kW = tuple(w.copy() for w in Ws)
        mems = (np.zeros(7), np.zeros(4))
        counts = (np.zeros(7, dtype=np.int64), np.zeros(4, dtype=np.int64))
        _sleep_kernel(kW, tuple(bs), alphas, thr, 0.99, 0.02, 0.01, code, spikes, mems, counts)
        for a, b in zip(kW, ref_W):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
        for a, b in zip(mems, ref_v):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
        assert [c.tolist() for c in counts] == [c.tolist() for c in ref_c]
        assert ref_c[0].sum() > 0 and ref_c[1].sum() > 0  # the test exercises spikes in both layers


def test_sleep_changes_weights_only_and_repeats_with_its_seed():
    from neuro_hts.network import Network

    rng = np.random.default_rng(4)
    net = Network([rng.normal(0, 0.3, (10, 16)), rng.normal(0, 0.3, (3, 10))], [np.zeros(10), np.zeros(3)],
                  [np.full(10, 0.3), np.full(3, 0.3)])
    x = rng.random((20, 16))
    acts = [np.abs(rng.normal(size=(20, 10))), np.abs(rng.normal(size=(20, 3)))]
    cfg = SleepConfig(thresholds=(1.0, 1.0), alpha_scale=2.0, mask_size=2, max_rate=200.0, inc=0.01, dec=0.005)
    nets = [net.copy(), net.copy()]
    res = [sleep(n, x, cfg, 300, np.random.default_rng(7), activations=acts, chunk=128) for n in nets]
    assert res[0].spikes_per_layer[0] > 0
    assert res[0].weight_change[0] > 0
    for a, b in zip(nets[0].weights, nets[1].weights):
        assert (a == b).all()
    assert all((a == b).all() for a, b in zip(nets[0].biases, net.biases))
    assert all((a == b).all() for a, b in zip(nets[0].dts, net.dts))


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="g must be"):
        SleepConfig(g="relu")
    with pytest.raises(ConfigError, match="thresholds"):
        SleepConfig(thresholds=(1.0, -2.0))
    with pytest.raises(ConfigError, match="2 weight layers"):
        SleepConfig(thresholds=(1.0,)).layer_thresholds(2)
