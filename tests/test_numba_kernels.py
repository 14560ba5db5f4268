"""Kernels of the Numba backend added for speed, each against a slow obvious NumPy version:
the sparse input path (drive W_1 r_0 + b_1 and the layer-1 weight gradient from the
nonzero inputs only), its decision rule, the register-blocked small dot products and the
residual. The end-to-end agreement with the float64 reference is in tests/test_backends.py;
here both input paths are forced (``input_sparsity="sparse"`` / ``"dense"``) and compared.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from neuro_hts.backends import numba_backend as nb
from neuro_hts.backends.numba_backend import NumbaBackend
from neuro_hts.backends.numpy_ref import NumpyBackend
from neuro_hts.errors import ConfigError
from neuro_hts.testing import random_problem

REF = NumpyBackend(np.float64)
F64_REL = 1e-12
F32_REL = 2e-6


def _sparse_x(rng, shape, density, dtype=np.float64):
    """Entries U(0, 1) with probability ``density``, else exactly 0."""
    x = rng.uniform(0.0, 1.0, shape) * (rng.random(shape) < density)
    return x.astype(dtype)


def _mnist_like(rng, batch, side=28, dtype=np.float64):
    """Images with a blob of ink in the middle and zero borders (like MNIST: ~20 % nonzero)."""
    x = np.zeros((batch, side, side))
    for b in range(batch):
        r0, c0 = rng.integers(5, 12, 2)
        h, w = rng.integers(6, 11, 2)
        x[b, r0 : r0 + h, c0 : c0 + w] = rng.uniform(0.05, 1.0, (h, w)) * (rng.random((h, w)) < 0.7)
    return x.reshape(batch, side * side).astype(dtype)


def _inputs(rng, batch, n0, dtype):
    yield "all-zero", np.zeros((batch, n0), dtype)
    one = np.zeros((batch, n0), dtype)
    one[batch // 2, n0 // 3] = 0.5
    yield "one-entry", one
    rows = _sparse_x(rng, (batch, n0), 0.1, dtype)
    rows[::3] = 0  # whole samples without input
    yield "empty-rows", rows
    for d in (0.05, 0.2, 0.5, 1.0):
        yield f"density-{d}", _sparse_x(rng, (batch, n0), d, dtype)
    neg = _sparse_x(rng, (batch, n0), 0.2, dtype)
    neg[::2] *= -1.0  # negative inputs are nonzero too
    yield "signed", neg


def _close(got, want, dtype):
    scale = max(float(np.abs(want).max()), 1.0)
    rel = F64_REL if dtype == np.float64 else F32_REL
    assert float(np.abs(np.asarray(got, np.float64) - want).max()) <= rel * scale * 10


# --------------------------------------------------------------------------- input drive
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("arch", [(784, 512, 10), (37, 21, 5)])
def test_sparse_and_dense_drive_match_the_obvious_product(dtype, arch):
    rng = np.random.default_rng(0)
    net, _, _ = random_problem(arch, batch=2)
    net = net.astype(dtype)
    W, b = net.weights[0].astype(np.float64), net.biases[0].astype(np.float64)
    for name, x in _inputs(rng, 13, arch[0], dtype):
        want = x.astype(np.float64) @ W.T + b  # the slow obvious version, in float64
        for mode in ("sparse", "dense", "auto"):
            got = NumbaBackend(dtype, mode).input_drive(net, x)
            assert got.dtype == np.dtype(dtype) and got.shape == want.shape, (name, mode)
            _close(got, want, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sparse_drive_on_very_sparse_images_takes_the_sparse_path(dtype):
    rng = np.random.default_rng(1)
    net, _, _ = random_problem((784, 64, 10), batch=2)
    net = net.astype(dtype)
    x = _mnist_like(rng, 50, dtype=dtype)
    x[:, 392:] = 0.0  # ~5 % nonzero: sparser than MNIST
    be = NumbaBackend(dtype)
    sp = be._sparse_scratch(50, 784, 64)
    out = np.empty((50, 64), dtype)
    # with 50 x 784 x 64 the dense product is big enough for the automatic choice to look
    assert nb._drive_from(x, net.weights[0], net.biases[0], nb._SPARSE_AUTO, sp, out)
    _close(out, x.astype(np.float64) @ net.weights[0].astype(np.float64).T + net.biases[0], dtype)
    # a dense input takes the dense path
    assert not nb._drive_from(rng.random((50, 784)).astype(dtype), net.weights[0], net.biases[0], nb._SPARSE_AUTO, sp, out)


@pytest.mark.parametrize("activation", ["hard_sigmoid", "sigmoid4"])
def test_energy_form_drive_uses_rho_of_x(activation):
    """r_0 = rho(x): hard sigmoid keeps the zeros (sparse), sigmoid4 does not (dense rho)."""
    rng = np.random.default_rng(2)
    net, _, _ = random_problem((100, 30, 4), form="energy", activation=activation, batch=2)
    x = _sparse_x(rng, (9, 100), 0.15)
    x[0, :5] = [-0.5, 1.5, 2.0, -3.0, 0.25]  # clipped by the hard sigmoid
    want = REF.input_drive(net, x)
    for mode in ("sparse", "dense", "auto"):
        np.testing.assert_allclose(NumbaBackend(np.float64, mode).input_drive(net, x), want, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- layer-1 gradient
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sparse_and_dense_layer1_gradient_match_the_obvious_product(dtype):
    rng = np.random.default_rng(3)
    n0, n = 200, 48
    sp = NumbaBackend(dtype)._sparse_scratch(11, n0, n)
    A = rng.normal(size=(11, n)).astype(dtype)
    for name, x in _inputs(rng, 11, n0, dtype):
        want = A.astype(np.float64).T @ x.astype(np.float64)
        for mode, sparse in ((nb._SPARSE_ALWAYS, True), (nb._SPARSE_NEVER, False)):
            out = np.full((n, n0), np.nan, dtype)  # every entry must be written, zeros included
            assert nb._layer1_gradient(A, x, mode, sp, out) == sparse
            _close(out, want, dtype)


@pytest.mark.parametrize("form", ["leaky", "energy"])
@pytest.mark.parametrize("output", ["mse", "ce"])
@pytest.mark.parametrize("nudging", ["one-sided", "symmetric"])
def test_ep_gradients_with_sparse_inputs_match_the_reference(form, output, nudging):
    rng = np.random.default_rng(4)
    net, _, y = random_problem((120, 40, 16, 5), form=form, output=output, batch=12, seed=5)
    x = _sparse_x(rng, (12, 120), 0.15)
    free = REF.relax(net, x, 30)
    plus = REF.relax(net, x, 10, free.states, y, 0.1)
    if nudging == "one-sided":
        args = (plus.states, 0.1, free.states, 0.0)
    else:
        args = (plus.states, 0.1, REF.relax(net, x, 10, free.states, y, -0.1).states, -0.1)
    gW_ref, gb_ref = REF.ep_gradients(net, x, y, *args)
    for mode in ("sparse", "dense"):
        gW, gb = NumbaBackend(np.float64, mode).ep_gradients(net, x, y, *args)
        for g, g_ref in zip(gW + gb, gW_ref + gb_ref):
            assert float(np.abs(g - g_ref).max()) <= 1e-10 * float(np.abs(g_ref).max())
    # the inputs that are zero in the whole batch have exactly zero gradient columns
    dead = ~(x != 0).any(axis=0)
    assert dead.any()
    gW, _ = NumbaBackend(np.float64, "sparse").ep_gradients(net, x, y, *args)
    assert not gW[0][:, dead].any()


def test_training_step_is_the_same_with_either_path():
    """A float32 784-512-10 network on MNIST-like images: phases and gradients agree."""
    rng = np.random.default_rng(6)
    net, _, y = random_problem((784, 512, 10), batch=50, seed=7)
    net = net.astype(np.float32)
    x = _mnist_like(rng, 50, dtype=np.float32)
    y = y.astype(np.float32)
    results = {}
    for mode in ("sparse", "dense"):
        be = NumbaBackend(np.float32, mode)
        d1 = be.input_drive(net, x)
        free = be.relax(net, x, 30, drive1=d1)
        nudged = be.relax(net, x, 10, free.states, y, 0.1, drive1=d1)
        results[mode] = (free.states, be.ep_gradients(net, x, y, nudged.states, 0.1, free.states, 0.0))
    (s_sp, (gW_sp, gb_sp)), (s_de, (gW_de, gb_de)) = results["sparse"], results["dense"]
    for a, b in zip(s_sp, s_de):
        assert float(np.abs(a - b).max()) <= 3e-6
    for a, b in zip(gW_sp + gb_sp, gW_de + gb_de):
        assert float(np.abs(a - b).max()) <= 1e-5


# --------------------------------------------------------------------------- non-finite values
@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_non_finite_first_layer_weights_propagate_like_the_dense_product():
    """0 * inf is NaN in the dense product (and in the reference); the sparse path never
    forms it, so it must not be taken: the NaN pattern is the reference's."""
    rng = np.random.default_rng(8)
    net, _, _ = random_problem((60, 20, 4), batch=2)
    net.weights[0][3, 7] = np.inf
    net.weights[0][5, 11] = np.nan
    x = _sparse_x(rng, (6, 60), 0.2)
    x[:, 7] = 0.0  # nobody uses input 7: only 0 * inf reaches neuron 3
    ref = REF.input_drive(net, x)
    assert np.isnan(ref[:, 3]).all() and np.isnan(ref[:, 5]).all()
    got = NumbaBackend(np.float64, "sparse").input_drive(net, x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got[np.isfinite(ref)], ref[np.isfinite(ref)], rtol=1e-12)


def test_non_finite_inputs_and_coefficients_propagate_like_the_reference():
    rng = np.random.default_rng(9)
    n0, n = 50, 16
    x = _sparse_x(rng, (5, n0), 0.2)
    x[1, 4] = np.nan
    x[2, 9] = np.inf
    W = rng.normal(size=(n, n0))
    W[:, 9] = np.where(np.arange(n) % 2, W[:, 9], 0.0)  # inf * 0 = NaN
    sp = NumbaBackend(np.float64)._sparse_scratch(5, n0, n)
    out = np.empty((5, n))
    assert nb._drive_from(x, W, np.zeros(n), nb._SPARSE_ALWAYS, sp, out)
    with np.errstate(invalid="ignore"):
        ref = x @ W.T
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(out), np.isinf(ref))
    # a NaN coefficient (A = r^a - r^b) reaches every column in the dense product
    A = rng.normal(size=(5, n))
    A[3, 2] = np.nan
    g = np.empty((n, n0))
    assert not nb._layer1_gradient(A, _sparse_x(rng, (5, n0), 0.2), nb._SPARSE_ALWAYS, sp, g)
    assert np.isnan(g[2]).all()


# --------------------------------------------------------------------------- pieces and choice
def test_sparse_structure_lists_every_nonzero_entry():
    rng = np.random.default_rng(10)
    x = _sparse_x(rng, (9, 40), 0.2)
    x[4] = 0.0
    x[:, 0] = 0.0
    x[2, 3] = np.nan  # NaN is nonzero
    sp = NumbaBackend(np.float64)._sparse_scratch(9, 40, 8)
    used, uidx, upos, ptr, cols, vals, cptr, crow, cval, T = sp
    U, nnz = nb._sparse_structure(x, used, uidx, upos, ptr, cols, vals)
    nz = x != 0
    union = np.flatnonzero(nz.any(axis=0))
    assert (U, nnz) == (union.size, int(nz.sum()))
    np.testing.assert_array_equal(uidx[:U], union)
    assert (upos[union] == np.arange(U)).all() and (upos[np.setdiff1d(np.arange(40), union)] == -1).all()
    for b in range(9):
        ks = union[cols[ptr[b] : ptr[b + 1]]]
        np.testing.assert_array_equal(ks, np.flatnonzero(nz[b]))
        np.testing.assert_array_equal(vals[ptr[b] : ptr[b + 1]], x[b, ks])
    nb._csc_from_csr(ptr, cols, vals, U, cptr, crow, cval)
    for u, k in enumerate(union):
        rows = crow[cptr[u] : cptr[u + 1]]
        np.testing.assert_array_equal(rows, np.flatnonzero(nz[:, k]))
        np.testing.assert_array_equal(cval[cptr[u] : cptr[u + 1]], x[rows, k])
    # the transposed gather and scatter
    W = rng.normal(size=(19, 40))
    Tg = np.empty((40, 19))
    nb._gather_transposed(W, uidx, U, Tg)
    np.testing.assert_array_equal(Tg[:U], W[:, union].T)
    out = np.full((19, 40), np.nan)
    nb._scatter_transposed(Tg, uidx, U, out)
    want = np.zeros((19, 40))
    want[:, union] = W[:, union]
    np.testing.assert_array_equal(out, want)


def test_the_automatic_choice():
    auto, never, always = nb._SPARSE_AUTO, nb._SPARSE_NEVER, nb._SPARSE_ALWAYS
    (a, c), (ga, gc) = nb._SPARSE_DRIVE_COST, nb._SPARSE_GRAD_COST
    # MNIST, batch 50, 512 hidden: 7,500 nonzero pixels in 475 columns -> the gemm for
    # both (what measured faster or as fast inside the training loop, see the constants)
    assert not nb._use_sparse(auto, 7500, 475, 50, 784, 512, a, c)
    assert not nb._use_sparse(auto, 7500, 475, 50, 784, 512, ga, gc)
    # sparser inputs (5 %: 1,960 entries in 720 columns; 2 %: 784 in 600) -> sparse
    assert nb._use_sparse(auto, 1960, 720, 50, 784, 512, a, c)
    assert nb._use_sparse(auto, 784, 600, 50, 784, 512, ga, gc)
    # dense inputs -> dense; a small problem -> dense; the forced modes
    assert not nb._use_sparse(auto, 50 * 784, 784, 50, 784, 512, a, c)
    assert not nb._use_sparse(auto, 10, 10, 8, 24, 20, a, c)
    assert nb._use_sparse(always, 50 * 784, 784, 50, 784, 512, a, c)
    assert not nb._use_sparse(never, 0, 0, 50, 784, 512, a, c)
    # the cheap first look (counts only) decides before any structure is built
    rng = np.random.default_rng(14)
    dense, mnist = rng.random((50, 784)), _mnist_like(rng, 50)
    used = np.zeros(784, np.uint8)
    assert not nb._may_use_sparse(auto, dense, 512, a, c, used)
    assert nb._may_use_sparse(auto, mnist, 512, a, c, used) and nb._may_use_sparse(auto, mnist, 512, ga, gc, used)
    nz = mnist != 0
    assert int(used.sum()) == int(nz.any(axis=0).sum())
    for cost in ((a, c), (ga, gc)):
        assert nb._may_use_sparse(auto, mnist, 512, *cost, used) == nb._use_sparse(
            auto, int(nz.sum()), int(nz.any(axis=0).sum()), 50, 784, 512, *cost
        )
    assert nb._may_use_sparse(always, dense, 512, a, c, used)
    assert not nb._may_use_sparse(never, mnist, 512, a, c, used)
    assert not nb._may_use_sparse(auto, mnist[:2, :24], 20, a, c, used)  # small


def test_input_sparsity_is_validated():
    with pytest.raises(ConfigError, match="input_sparsity"):
        NumbaBackend(np.float32, "sometimes")
    assert NumbaBackend().input_sparsity == "auto"


def test_scratch_is_per_thread_and_per_shape():
    rng = np.random.default_rng(11)
    net, _, _ = random_problem((90, 30, 4), batch=2)
    be = NumbaBackend(np.float64, "sparse")
    results = {}

    def work(tag, batch):
        x = _sparse_x(rng, (batch, 90), 0.2)
        for _ in range(3):
            got = be.input_drive(net, x)
            np.testing.assert_allclose(got, REF.input_drive(net, x), rtol=1e-12)
        results[tag] = be._tls.sparse

    work("main", 7)
    t = threading.Thread(target=work, args=("thread", 5))
    t.start()
    t.join()
    assert results["main"][0] == (7, 90, 30) and results["thread"][0] == (5, 90, 30)
    assert results["main"][1][-1] is not results["thread"][1][-1]
    work("main again", 9)  # another batch size: new scratch, still right
    assert be._tls.sparse[0] == (9, 90, 30)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B,m,n", [(50, 512, 10), (7, 33, 5), (1, 3, 1), (6, 20, 12), (9, 17, 3)])
def test_small_dot_products_match_numpy(dtype, B, m, n):
    """out = a @ W.T with 2 samples x 4 rows per pass, and every remainder case."""
    rng = np.random.default_rng(B * 100 + m + n)
    a, W = rng.normal(size=(B, m)).astype(dtype), rng.normal(size=(n, m)).astype(dtype)
    out = np.full((B, n), np.nan, dtype)
    nb._dot_nt_small(a, W, out)
    want = a.astype(np.float64) @ W.astype(np.float64).T
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(out, want, rtol=tol, atol=tol * m)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_residual_is_the_largest_change_and_nan_sticks(dtype):
    rng = np.random.default_rng(12)
    new, old = rng.normal(size=(6, 37)).astype(dtype), rng.normal(size=(6, 37)).astype(dtype)
    new[1, 5] = np.nan
    new[2, 36] = np.inf
    old[3] = new[3]  # no change: residual 0
    fbuf = np.empty(37, dtype)
    ibuf = fbuf.view(np.int32 if dtype == np.float32 else np.int64)
    residual = np.zeros(6, dtype)
    residual[4] = 1e6  # a larger value from another layer is kept
    residual[5] = np.nan  # and so is a NaN from another layer
    with np.errstate(invalid="ignore"):
        want = np.abs(new - old).max(axis=1)
    want[4] = max(want[4], 1e6)
    want[5] = np.nan
    nb._residual_into(new, old, residual, fbuf, ibuf)
    np.testing.assert_array_equal(residual, want.astype(dtype))
    assert np.isnan(residual[1]) and np.isinf(residual[2]) and residual[3] == 0
