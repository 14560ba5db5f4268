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

from neuro_hts.connections import CONNECTIONS, Conv2d, Dense, LinearConnection
from neuro_hts.costs import COSTS, MSE, SoftmaxReadout
from neuro_hts.dendritic import Dendritic

EPS = 1e-6


def _dense(rng):
    return Dense.init(5, 4, rng=rng, scale=2.0), (5,), (4,)


def _dense_from_image(rng):
    """A flatten: a dense connection reading a (2, 3, 3) layer as 18 values."""
    return Dense(rng.uniform(-0.5, 0.5, (4, 18)), (2, 3, 3)), (2, 3, 3), (4,)


def _conv(pre, c_out, k, **opts):
    def make(rng):
        w = rng.normal(0.0, 0.5, (c_out, pre[0], k, k))
        conn = Conv2d(w, pre, **opts)
        return conn, pre, conn.post_shape
    return make


def _dendritic(**opts):
    def make(rng):
        pre, post = (5,), (4,)
        o = Dendritic.check({"basal_branches": 3, "apical_branches": 2, "branch_sparsity": 0.6, **opts}, pre, post, "t")
        o = Dendritic.place(o, False, "t")
        bufs = Dendritic.draw_buffers(pre, post, rng, **o)
        return Dendritic.build(Dendritic.init_weight(pre, post, bufs, rng, 2.0, **o), pre, post, buffers=bufs, **o), pre, post
    return make


#: case -> factory(rng) -> (connection, pre shape, post shape); every kind needs at least one
EXAMPLES = {
    "dense": _dense,
    "dense-from-image": _dense_from_image,
    "conv2d-none-pad1": _conv((2, 5, 5), 3, 3, padding=1),
    "conv2d-stride2": _conv((2, 6, 6), 2, 2, stride=2),
    "conv2d-avg": _conv((2, 6, 6), 3, 3, pool="avg", pool_size=2),
    "conv2d-max": _conv((2, 6, 6), 3, 3, pool="max", pool_size=2),
    "conv2d-max-overlap-pad1": _conv((1, 6, 6), 2, 3, padding=1, pool="max", pool_size=3, pool_stride=2),
    "dendritic": _dendritic(),
    "dendritic-dense-apical": _dendritic(apical_dense=True, apical_scale=0.7),
    "dendritic-no-apical": _dendritic(apical=False),
}
CASES = list(EXAMPLES)


def _naive_conv(c, fn, *args):
    return fn(c.weight, *args, stride=c.stride, padding=c.padding, pool=c.pool, pool_size=c.pool_size,
              pool_stride=c.pool_stride)


#: naive products per kind: (apply(conn, v), apply_T(conn, u, r_pre)); apply_T takes the
#: pre state that fixes max pooling's argmax
NAIVE = {
    "dense": (lambda c, v: naive.dense_apply(c.weight, v.reshape(len(v), -1)),
              lambda c, u, r: naive.dense_apply_T(c.weight, u).reshape(len(u), *c.pre_shape)),
    "conv2d": (lambda c, v: _naive_conv(c, naive.conv2d_apply, v),
               lambda c, u, r: _naive_conv(c, naive.conv2d_apply_T, u, r)),
    # dendritic: basal branches of post, and the feedback: apical branches of pre (zeros without them)
    "dendritic": (lambda c, v: naive.dendritic_branches(c.basal_weight, c.basal_mask, c.basal_bias, v, c.kb),
                  lambda c, u, r: (naive.dendritic_branches(c.apical_weight, c.apical_mask, None, u, c.ka, c.scale)
                                   if c.apical else np.zeros((len(u), c.n_in)))),
}


def _argmax_margin(conn, r_pre) -> float:
    """Smallest gap between the largest and second largest value of a max-pooling window of
    conv(r_pre) (inf without max pooling): finite differences of step eps are exact only if
    no perturbation of size ~eps can move an argmax."""
    if getattr(conn, "pool", None) != "max":
        return np.inf
    z = conn.conv(r_pre)
    win = np.lib.stride_tricks.sliding_window_view(z, (conn.pool_size,) * 2, axis=(2, 3))
    win = win[:, :, ::conn.pool_stride, ::conn.pool_stride].reshape(*win.shape[:2], -1, conn.pool_size ** 2)
    top2 = np.sort(win, axis=-1)[..., -2:]
    return float((top2[..., 1] - top2[..., 0]).min())

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
    kinds = {EXAMPLES[c](np.random.default_rng(0))[0].kind for c in CASES}
    assert set(CONNECTIONS.names()) == kinds == set(NAIVE)
    pools = {EXAMPLES[c](np.random.default_rng(0))[0].pool for c in CASES if c.startswith("conv2d")}
    assert pools == {"none", "avg", "max"}
    assert set(COSTS.names()) == set(COST_EXAMPLES)


@pytest.mark.parametrize("case", CASES)
def test_drives_and_param_grads_are_finite_differences_of_phi(case):
    rng = np.random.default_rng(0)
    conn, pre, post = EXAMPLES[case](rng)
    r_pre, r_post = rng.uniform(0, 1, (3, *pre)), rng.uniform(0, 1, (3, *post))
    assert _argmax_margin(conn, r_pre) > 1e-4  # away from argmax ties
    total = lambda: float(conn.phi(r_pre, r_post).sum())  # noqa: E731
    assert conn.phi(r_pre, r_post).shape == (3,)
    # each layer's drive is d / d r of its own primitive's term (symmetric: phi_post = phi_pre = phi)
    post_term = lambda: float(conn.phi_post(r_pre, r_post).sum())  # noqa: E731
    pre_term = lambda: float(conn.phi_pre(r_pre, r_post).sum())  # noqa: E731
    np.testing.assert_allclose(conn.drive_post(r_pre), _fd(post_term, r_post), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(conn.feedback(r_post, r_pre), _fd(pre_term, r_pre), rtol=1e-7, atol=1e-8)
    if conn.symmetric:
        np.testing.assert_allclose(conn.drive_pre(r_post, r_pre), _fd(total, r_pre), rtol=1e-7, atol=1e-8)
    else:
        np.testing.assert_allclose(conn.phi(r_pre, r_post), conn.phi_post(r_pre, r_post) + conn.phi_pre(r_pre, r_post))
    grads = conn.param_grad(r_pre, r_post)
    assert set(grads) == set(conn.params())
    for name, p in conn.params().items():
        np.testing.assert_allclose(grads[name], _fd(total, p), rtol=1e-7, atol=1e-8)
        assert np.abs(grads[name]).max() > 1e-3  # not vacuous


@pytest.mark.parametrize("case", CASES)
def test_vjp_is_the_finite_difference_of_the_drive(case):
    rng = np.random.default_rng(1)
    conn, pre, post = EXAMPLES[case](rng)
    r_pre, g = rng.uniform(0, 1, (3, *pre)), rng.normal(size=(3, *post))
    assert _argmax_margin(conn, r_pre) > 1e-4  # away from argmax ties
    total = lambda: float(np.sum(g * conn.drive_post(r_pre)))  # noqa: E731
    g_pre, g_params = conn.vjp(r_pre, g)
    np.testing.assert_allclose(g_pre, _fd(total, r_pre), rtol=1e-7, atol=1e-8)
    for name, p in conn.params().items():
        np.testing.assert_allclose(g_params[name], _fd(total, p), rtol=1e-7, atol=1e-8)
    if not conn.symmetric:  # own feedback weights: the vjp of the feedback too
        r_post, g_fb = rng.uniform(0, 1, (3, *post)), rng.normal(size=(3, *pre))
        fb_total = lambda: float(np.sum(g_fb * conn.feedback(r_post, r_pre)))  # noqa: E731
        g_v, g_u, g_par = conn.feedback_vjp(r_post, r_pre, g_fb)
        np.testing.assert_allclose(g_v, _fd(fb_total, r_post), rtol=1e-7, atol=1e-8)
        np.testing.assert_allclose(g_u, _fd(fb_total, r_pre), rtol=1e-7, atol=1e-8)
        for name, p in conn.params().items():
            np.testing.assert_allclose(g_par[name], _fd(fb_total, p), rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("case", CASES)
def test_products_equal_the_naive_loops(case):
    rng = np.random.default_rng(2)
    conn, pre, post = EXAMPLES[case](rng)
    v, u, r = rng.normal(size=(3, *pre)), rng.normal(size=(3, *post)), rng.uniform(0, 1, (3, *pre))
    apply, apply_T = NAIVE[conn.kind]
    np.testing.assert_allclose(conn.drive_post(v), apply(conn, v), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conn.feedback(u, r), apply_T(conn, u, r), rtol=1e-12, atol=1e-12)
    if not isinstance(conn, LinearConnection):  # branch ReLUs: no linear map, no adjoint identity
        assert np.abs(conn.drive_post(v)).max() > 1e-2
        assert np.abs(conn.feedback(u, r)).max() > 1e-2 or not conn.apical
        return
    np.testing.assert_allclose(conn.drive_pre(u, r), apply_T(conn, u, r), rtol=1e-12, atol=1e-12)
    # the adjoint identity <u, A(r) v> = <A(r)^T u, v> with one context for both sides
    ctx = conn.context(r)
    assert np.sum(u * conn.apply(v, ctx)) == pytest.approx(np.sum(conn.apply_T(u, ctx) * v), rel=1e-12)
    assert np.abs(conn.drive_post(v)).max() > 1e-2 and np.abs(conn.drive_pre(u, r)).max() > 1e-2


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


def test_conv2d_golden_values_and_max_pooling_routes_feedback_to_the_argmax():
    # a 1x1 kernel of 2 on a 1 x 2 x 2 image, then max pooling of the single 2 x 2 window
    conv = Conv2d(np.full((1, 1, 1, 1), 2.0), (1, 2, 2), pool="max", pool_size=2)
    v = np.array([[[[0.1, 0.7], [0.3, 0.2]]]])
    assert conv.post_shape == (1, 1, 1)
    assert conv.drive_post(v).tolist() == [[[[1.4]]]]
    # the feedback of the post unit lands on the argmax pixel (0, 1) of the current pre state only
    assert conv.drive_pre(np.ones((1, 1, 1, 1)), v).tolist() == [[[[0.0, 2.0], [0.0, 0.0]]]]
    moved = np.array([[[[0.1, 0.7], [0.9, 0.2]]]])
    assert conv.drive_pre(np.ones((1, 1, 1, 1)), moved).tolist() == [[[[0.0, 0.0], [2.0, 0.0]]]]
    avg = Conv2d(np.full((1, 1, 1, 1), 2.0), (1, 2, 2), pool="avg", pool_size=2)
    assert avg.drive_post(v) == pytest.approx(np.array([[[[0.65]]]]))
    assert avg.drive_pre(np.ones((1, 1, 1, 1)), v).tolist() == [[[[0.5, 0.5], [0.5, 0.5]]]]
    with pytest.raises(ValueError, match="needs the context of the pre state"):
        conv.apply_T(np.ones((1, 1, 1, 1)))
    # a 3 x 3 kernel with padding 1 keeps the size; its weight gradient is the correlation
    k = Conv2d(np.zeros((1, 1, 3, 3)), (1, 4, 4), padding=1)
    assert k.post_shape == (1, 4, 4)
    g = k.param_grad(np.ones((1, 1, 4, 4)), np.ones((1, 1, 4, 4)))["weight"][0, 0]
    assert g.tolist() == [[9.0, 12.0, 9.0], [12.0, 16.0, 12.0], [9.0, 12.0, 9.0]]  # pixels each tap sees
