"""The fused optimiser kernels (neuro_hts.backends._optim_kernels) behind SGD and Adam.

The fused loops do the NumPy formulation's arithmetic operation for operation, so they
are compared with it bit for bit (assert_array_equal, which treats NaN as equal to NaN),
over several steps, in float32 and float64, including NaN and inf gradients.
"""

from __future__ import annotations

import numpy as np
import pytest

from neuro_hts.backends import _optim_kernels as K
from neuro_hts.learning import SGD, Adam
from neuro_hts.network import Network

SHAPES = [(6, 5), (3, 6), (6,), (3,)]  # two layers: weights then biases, as Network holds them


def _net(dtype, seed=0):
    rng = np.random.default_rng(seed)
    w = [rng.normal(size=SHAPES[0]), rng.normal(size=SHAPES[1])]
    b = [rng.normal(size=SHAPES[2]), rng.normal(size=SHAPES[3])]
    d = [np.full(6, 0.3), np.full(3, 0.3)]
    return Network(w, b, d).astype(dtype)


def _grads(seed, dtype, special=False):
    rng = np.random.default_rng(100 + seed)
    g = [(rng.normal(size=s) * 10.0 ** rng.integers(-6, 2, size=s)).astype(dtype) for s in SHAPES]
    if special:
        g[0][0, 0], g[0][1, 1], g[2][0], g[1][2, 3] = np.nan, np.inf, -np.inf, 0.0
    return g[:2], g[2:]


def _numpy_adam(params, grads, m, v, t, lrs, b1=0.9, b2=0.999, eps=1e-8):
    """The NumPy formulation (as in learning.Adam before the fused kernel), in place."""
    c1, c2 = 1.0 - b1**t, 1.0 - b2**t
    with np.errstate(invalid="ignore"):  # inf / inf with the nan-inf gradients
        _numpy_adam_steps(params, grads, m, v, lrs, b1, b2, eps, c1, c2)


def _numpy_adam_steps(params, grads, m, v, lrs, b1, b2, eps, c1, c2):
    for p, g, mm, vv, lr in zip(params, grads, m, v, lrs + lrs):
        dt = p.dtype.type
        buf = np.empty_like(p)
        mm *= dt(b1)
        np.multiply(g, dt(1.0 - b1), out=buf, casting="unsafe")
        mm += buf
        vv *= dt(b2)
        np.multiply(g, g, out=buf, casting="unsafe")
        buf *= dt(1.0 - b2)
        vv += buf
        np.multiply(vv, dt(1.0 / c2), out=buf)
        np.sqrt(buf, out=buf)
        buf += dt(eps)
        np.divide(mm, buf, out=buf)
        buf *= dt(lr / c1)
        p -= buf


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("special", [False, True], ids=["finite", "nan-inf"])
def test_adam_is_bit_identical_to_the_numpy_formula_over_steps(dtype, special):
    net = _net(dtype)
    lrs = (1e-2, 3e-3)
    opt = Adam(lrs)
    ref = [a.copy() for a in net.weights + net.biases]
    m = [np.zeros_like(a) for a in ref]
    v = [np.zeros_like(a) for a in ref]
    for t in range(1, 8):
        gW, gb = _grads(t, dtype, special and t == 4)
        opt.step(net, gW, gb)
        _numpy_adam(ref, gW + gb, m, v, t, lrs)
        for got, want in zip(net.weights + net.biases, ref):
            assert got.dtype == np.dtype(dtype)
            np.testing.assert_array_equal(got, want)
        for got, want in zip(opt.state["m"] + opt.state["v"], m + v):
            np.testing.assert_array_equal(got, want)
    assert "buf" not in opt.state  # the fused path ran (the NumPy one needs the scratch buffers)
    if special:
        assert np.isnan(net.weights[0][0, 0]) and np.isnan(net.weights[0][1, 1])
        assert np.isnan(net.biases[0][0])
        assert np.isfinite(net.weights[1]).all()  # a zero gradient entry: no NaN from 0/0 with eps > 0


def test_adam_kernel_alone_matches_the_textbook_formula():
    """One call of the kernel on 1-D arrays against Kingma & Ba in float64 (tolerance)."""
    rng = np.random.default_rng(1)
    n = 1000
    p, g = rng.normal(size=n), rng.normal(size=n)
    m, v = rng.normal(size=n) * 0.1, rng.random(n) * 0.01
    t, lr, b1, b2, eps = 5, 1e-3, 0.9, 0.999, 1e-8
    m_ref = b1 * m + (1 - b1) * g
    v_ref = b2 * v + (1 - b2) * g * g
    p_ref = p - lr * (m_ref / (1 - b1**t)) / (np.sqrt(v_ref / (1 - b2**t)) + eps)
    K.adam_update(p, g, m, v, b1, 1 - b1, b2, 1 - b2, 1 / (1 - b2**t), eps, lr / (1 - b1**t))
    np.testing.assert_allclose(m, m_ref, rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(v, v_ref, rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(p, p_ref, rtol=1e-12, atol=1e-14)


def test_adam_float32_stays_float32():
    """The float32 kernel rounds every operation to float32, like NumPy's float32 ufuncs:
    its result differs from a float64 computation rounded at the end."""
    rng = np.random.default_rng(2)
    n = 4096
    p, g = rng.normal(size=n).astype(np.float32), rng.normal(size=n).astype(np.float32)
    m, v = np.zeros(n, np.float32), np.zeros(n, np.float32)
    f = np.float32
    K.adam_update(p, g, m, v, f(0.9), f(0.1), f(0.999), f(0.001), f(1 / 0.001), f(1e-8), f(1e-3 / 0.1))
    assert p.dtype == m.dtype == v.dtype == np.float32
    # the float32 product g*g*0.001 equals NumPy's float32 computation exactly
    np.testing.assert_array_equal(v, (g * g) * f(0.001))


def test_adam_mixed_dtypes_take_the_numpy_path_and_match_it():
    """float64 gradients for float32 parameters: NumPy formulation (casts), same results."""
    net = _net(np.float32)
    opt = Adam((1e-2, 1e-2))
    ref = [a.copy() for a in net.weights + net.biases]
    m = [np.zeros_like(a) for a in ref]
    v = [np.zeros_like(a) for a in ref]
    for t in range(1, 4):
        gW, gb = _grads(t, np.float64)
        opt.step(net, gW, gb)
        _numpy_adam(ref, gW + gb, m, v, t, (1e-2, 1e-2))
    assert "buf" in opt.state
    for got, want in zip(net.weights + net.biases, ref):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)


def test_adam_non_contiguous_parameters_take_the_numpy_path():
    base = np.zeros((6, 10))
    p = base[:, ::2]  # a strided view, updated in place
    net = Network([p, np.zeros((3, 6))], [np.zeros(6), np.zeros(3)], [np.full(6, 0.3), np.full(3, 0.3)])
    rng = np.random.default_rng(3)
    gW, gb = [rng.normal(size=(6, 5)), rng.normal(size=(3, 6))], [rng.normal(size=6), rng.normal(size=3)]
    opt = Adam((0.01, 0.01))
    opt.step(net, gW, gb)
    assert "buf" in opt.state
    np.testing.assert_allclose(base[:, ::2], -0.01 * np.sign(gW[0]), rtol=1e-6)  # first step: lr sign(g)
    assert not base[:, 1::2].any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_resume_from_state_dict_is_bit_identical(dtype):
    lrs = (1e-2, 5e-3)
    straight, resumed = _net(dtype), _net(dtype)
    o1 = Adam(lrs)
    for t in range(6):
        o1.step(straight, *_grads(t, dtype))
    o2 = Adam(lrs)
    for t in range(3):
        o2.step(resumed, *_grads(t, dtype))
    o3 = Adam(lrs)
    o3.load_state_dict(o2.state_dict())
    for t in range(3, 6):
        o3.step(resumed, *_grads(t, dtype))
    for p, q in zip(straight.weights + straight.biases, resumed.weights + resumed.biases):
        np.testing.assert_array_equal(p, q)
    assert o3.t == o1.t == 6


def _numpy_sgd(params, grads, lrs, state_v=None, momentum=0.0):
    """The NumPy formulation of SGD (as in learning.SGD before the fused kernels), in place."""
    if momentum:
        for v, g in zip(state_v, grads):
            v *= momentum
            v += g
        grads = state_v
    for p, g, lr in zip(params, grads, lrs + lrs):
        p -= p.dtype.type(lr) * g.astype(p.dtype, copy=False)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("special", [False, True], ids=["finite", "nan-inf"])
def test_sgd_is_bit_identical_to_the_numpy_formula_over_steps(dtype, momentum, special):
    net = _net(dtype)
    lrs = (0.1, 0.03)
    opt = SGD(lrs, momentum)
    ref = [a.copy() for a in net.weights + net.biases]
    vs = [np.zeros_like(a) for a in ref]
    for t in range(1, 6):
        gW, gb = _grads(t, dtype, special and t == 2)
        opt.step(net, gW, gb)
        _numpy_sgd(ref, gW + gb, lrs, vs, momentum)
        for got, want in zip(net.weights + net.biases, ref):
            assert got.dtype == np.dtype(dtype)
            np.testing.assert_array_equal(got, want)
        if momentum:
            for got, want in zip(opt.state["v"], vs):
                np.testing.assert_array_equal(got, want)
    if special:
        assert np.isnan(net.weights[0][0, 0]) and not np.isfinite(net.weights[0][1, 1])


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_sgd_mixed_dtypes_match_the_numpy_formula(momentum):
    net = _net(np.float32)
    opt = SGD((0.1, 0.1), momentum)
    ref = [a.copy() for a in net.weights + net.biases]
    vs = [np.zeros_like(a) for a in ref]
    for t in range(3):
        gW, gb = _grads(t, np.float64)
        opt.step(net, gW, gb)
        _numpy_sgd(ref, gW + gb, (0.1, 0.1), vs, momentum)
    for got, want in zip(net.weights + net.biases, ref):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)


def test_sgd_momentum_resume_from_state_dict_is_bit_identical():
    lrs = (0.05, 0.05)
    straight, resumed = _net(np.float32), _net(np.float32)
    o1 = SGD(lrs, 0.9)
    for t in range(5):
        o1.step(straight, *_grads(t, np.float32))
    o2 = SGD(lrs, 0.9)
    for t in range(2):
        o2.step(resumed, *_grads(t, np.float32))
    o3 = SGD(lrs, 0.9)
    o3.load_state_dict(o2.state_dict())
    for t in range(2, 5):
        o3.step(resumed, *_grads(t, np.float32))
    for p, q in zip(straight.weights + straight.biases, resumed.weights + resumed.biases):
        np.testing.assert_array_equal(p, q)
