"""Contract of every registered connection kind and cost (parametrised over the registries).

A kind is tested the moment it registers: its drives, parameter gradients and
vector-Jacobian products must equal central finite differences of its primitive term
``phi`` (costs: of ``value``), and its products must equal the slow loops of
tests/naive.py. Every registered kind needs an entry in EXAMPLES below (a test fails
otherwise).
"""

from __future__ import annotations

import naive
import numpy as np
import pytest

from neuro_hts.connections import CONNECTIONS, Dense
from neuro_hts.costs import COSTS, MSE, SoftmaxReadout

EPS = 1e-6


def _dense(rng):
    return Dense.init(5, 4, rng=rng, scale=2.0), (5,), (4,)


#: kind -> factory(rng) -> (connection, pre shape, post shape)
EXAMPLES = {"dense": _dense}
#: naive products per kind: (apply, apply_T) taking (connection, array)
NAIVE = {"dense": (lambda c, v: naive.dense_apply(c.weight, v), lambda c, u: naive.dense_apply_T(c.weight, u))}

COST_EXAMPLES = {
    "mse": lambda rng: (MSE(), 4),
    "ce": lambda rng: (SoftmaxReadout(rng.normal(size=(3, 4)), rng.normal(size=3)), 4),
}


def _fd(f, a):
    """Central differences of the scalar f() with respect to every entry of ``a`` (in place, restored)."""
    g = np.zeros_like(a)
    it = np.nditer(a, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = a[i]
        a[i] = old + EPS
        hi = f()
        a[i] = old - EPS
        lo = f()
        a[i] = old
        g[i] = (hi - lo) / (2 * EPS)
    return g


def test_every_registered_kind_has_an_example():
    assert set(CONNECTIONS.names()) == set(EXAMPLES) == set(NAIVE)
    assert set(COSTS.names()) == set(COST_EXAMPLES)


@pytest.mark.parametrize("kind", CONNECTIONS.names())
def test_drives_and_param_grads_are_finite_differences_of_phi(kind):
    rng = np.random.default_rng(0)
    conn, pre, post = EXAMPLES[kind](rng)
    r_pre, r_post = rng.uniform(0, 1, (3, *pre)), rng.uniform(0, 1, (3, *post))
    total = lambda: float(conn.phi(r_pre, r_post).sum())  # noqa: E731
    assert conn.phi(r_pre, r_post).shape == (3,)
    np.testing.assert_allclose(conn.drive_post(r_pre), _fd(total, r_post), rtol=1e-7, atol=1e-8)
    if conn.symmetric:
        np.testing.assert_allclose(conn.drive_pre(r_post), _fd(total, r_pre), rtol=1e-7, atol=1e-8)
    grads = conn.param_grad(r_pre, r_post)
    assert set(grads) == set(conn.params())
    for name, p in conn.params().items():
        np.testing.assert_allclose(grads[name], _fd(total, p), rtol=1e-7, atol=1e-8)
        assert np.abs(grads[name]).max() > 1e-3  # not vacuous


@pytest.mark.parametrize("kind", CONNECTIONS.names())
def test_vjp_is_the_finite_difference_of_the_drive(kind):
    rng = np.random.default_rng(1)
    conn, pre, post = EXAMPLES[kind](rng)
    r_pre, g = rng.uniform(0, 1, (3, *pre)), rng.normal(size=(3, *post))
    total = lambda: float(np.sum(g * conn.drive_post(r_pre)))  # noqa: E731
    g_pre, g_params = conn.vjp(r_pre, g)
    np.testing.assert_allclose(g_pre, _fd(total, r_pre), rtol=1e-7, atol=1e-8)
    for name, p in conn.params().items():
        np.testing.assert_allclose(g_params[name], _fd(total, p), rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("kind", CONNECTIONS.names())
def test_products_equal_the_naive_loops(kind):
    rng = np.random.default_rng(2)
    conn, pre, post = EXAMPLES[kind](rng)
    v, u = rng.normal(size=(3, *pre)), rng.normal(size=(3, *post))
    apply, apply_T = NAIVE[kind]
    np.testing.assert_allclose(conn.drive_post(v), apply(conn, v), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conn.drive_pre(u), apply_T(conn, u), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", COSTS.names())
def test_cost_nudge_and_param_grads_are_finite_differences_of_the_value(kind):
    rng = np.random.default_rng(3)
    cost, n = COST_EXAMPLES[kind](rng)
    s = rng.uniform(0, 1, (4, n))
    n_cls = cost.scores(s).shape[1]
    y = np.eye(n_cls)[rng.integers(0, n_cls, 4)]
    total = lambda: float(cost.value(s, y).sum())  # noqa: E731
    assert cost.value(s, y).shape == (4,)
    np.testing.assert_allclose(cost.nudge(s, y), -_fd(total, s), rtol=1e-7, atol=1e-8)
    grads = cost.param_grad(s, y)
    assert set(grads) == set(cost.params())
    for name, p in cost.params().items():
        np.testing.assert_allclose(grads[name], _fd(total, p), rtol=1e-7, atol=1e-8)


def test_golden_values():
    d = Dense(np.array([[1.0, 2.0], [3.0, -1.0]]))
    v = np.array([[1.0, 0.5]])
    assert d.drive_post(v).tolist() == [[2.0, 2.5]]
    assert d.phi(v, np.array([[1.0, 2.0]])).tolist() == [7.0]
    assert MSE().value(np.array([[0.5, 1.0]]), np.array([[1.0, 0.0]])).tolist() == [0.625]
    ro = SoftmaxReadout(np.zeros((2, 3)), np.zeros(2))
    assert ro.value(np.ones((1, 3)), np.array([[1.0, 0.0]])) == pytest.approx([np.log(2.0)])
