"""Optimisers and learning-rate schedules against textbook formulas."""

import math

import numpy as np
import pytest

from neuro_hts.config import TrainConfig
from neuro_hts.learning import SGD, Adam
from neuro_hts.network import Network


def _net(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    w = [rng.normal(size=(4, 3)), rng.normal(size=(2, 4))]
    b = [rng.normal(size=4), rng.normal(size=2)]
    d = [np.full(4, 0.3), np.full(2, 0.3)]
    return Network(w, b, d).astype(dtype)


def _grads(seed):
    rng = np.random.default_rng(100 + seed)
    return [rng.normal(size=(4, 3)), rng.normal(size=(2, 4))], [rng.normal(size=4), rng.normal(size=2)]


def test_adam_matches_textbook_formula_per_layer_lr():
    net = _net()
    ref = [a.copy() for a in net.weights + net.biases]
    lrs = (1e-2, 3e-3)
    opt = Adam(lrs, 0.9, 0.999, 1e-8)
    m = [np.zeros_like(p) for p in ref]
    v = [np.zeros_like(p) for p in ref]
    for t in range(1, 6):
        gW, gb = _grads(t)
        opt.step(net, gW, gb)
        for i, (g, lr) in enumerate(zip(gW + gb, lrs + lrs)):
            m[i] = 0.9 * m[i] + 0.1 * g
            v[i] = 0.999 * v[i] + 0.001 * g * g
            mhat, vhat = m[i] / (1 - 0.9**t), v[i] / (1 - 0.999**t)
            ref[i] = ref[i] - lr * mhat / (np.sqrt(vhat) + 1e-8)
    for p, r in zip(net.weights + net.biases, ref):
        np.testing.assert_allclose(p, r, rtol=1e-12, atol=1e-14)


def test_adam_first_step_moves_each_weight_by_lr():
    net = _net()
    before = net.weights[0].copy()
    gW, gb = _grads(0)
    Adam((0.01, 0.01)).step(net, gW, gb)
    np.testing.assert_allclose(np.abs(net.weights[0] - before), 0.01, rtol=1e-5)


def test_adam_state_roundtrip_continues_identically():
    a, b = _net(np.float32), _net(np.float32)
    oa = Adam((1e-2, 1e-2))
    for t in range(3):
        oa.step(a, *_grads(t))
    ob = Adam((1e-2, 1e-2))
    ob_state_source = Adam((1e-2, 1e-2))
    for t in range(3):
        ob_state_source.step(b, *_grads(t))
    ob.load_state_dict(ob_state_source.state_dict())
    assert "buf" not in ob_state_source.state_dict()
    oa.step(a, *_grads(9))
    ob.step(b, *_grads(9))
    for p, q in zip(a.weights + a.biases, b.weights + b.biases):
        np.testing.assert_array_equal(p, q)


def test_sgd_momentum_matches_formula():
    net = _net()
    w0 = net.weights[1].copy()
    opt = SGD((0.1, 0.2), momentum=0.5)
    g1, g2 = _grads(1), _grads(2)
    opt.step(net, *g1)
    opt.step(net, *g2)
    v1 = g1[0][1]
    v2 = 0.5 * v1 + g2[0][1]
    np.testing.assert_allclose(net.weights[1], w0 - 0.2 * v1 - 0.2 * v2, rtol=1e-12)


def test_cosine_schedule_starts_at_lr_ends_near_lr_min_and_decreases():
    tc = TrainConfig(epochs=10, lr=(1e-3, 5e-4), lr_schedule="cosine", lr_min=1e-5)
    lrs = [tc.layer_lrs(2, e) for e in range(10)]
    assert lrs[0] == pytest.approx((1e-3, 5e-4))
    assert all(a[0] > b[0] for a, b in zip(lrs, lrs[1:]))
    mid = tc.layer_lrs(2, 5)[0]
    assert mid == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5)
    assert lrs[-1][0] == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 9 / 10)))


def test_constant_schedule_ignores_epoch():
    tc = TrainConfig(epochs=10, lr=(1e-3,))
    assert tc.layer_lrs(3, 7) == (1e-3, 1e-3, 1e-3)
