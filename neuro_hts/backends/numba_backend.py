"""Numba backend: the equations of :mod:`neuro_hts.dynamics`, one compiled kernel per phase.

Same interface and semantics as :class:`~neuro_hts.backends.numpy_ref.NumpyBackend`
(tested against it in tests/test_backends.py), float32 by default. What makes it fast:

* one ``@njit`` call per phase: the loop over the T steps runs inside the kernel;
* the constant input drive W_1 x + b_1 is computed once per phase (or reused when the
  caller passes ``drive1``, as :func:`neuro_hts.learning.ep_phases` does);
* each step is two kinds of work: the matrix products between relaxed layers (``np.dot``
  into preallocated outputs, i.e. BLAS gemm; register-blocked vectorised dot products,
  two samples by four rows per pass, for the bottom-up drive of a layer of <= 12
  neurons such as a 10-class output, where they beat a gemm call) and one fused
  elementwise loop per layer (drive + top-down + nudge + activation + leaky/energy
  update), compiled branch-free per form and activation; the residual is computed after
  the last step only (a vectorised integer max over the bit patterns);
* sparse inputs: the input drive and the layer-1 weight gradient can be formed from the
  nonzero entries of r_0 only, which is taken automatically for inputs sparse enough to
  gain from it (see "sparse input" below and ``NumbaBackend(input_sparsity=...)``);
* ``ep_gradients`` forms every weight gradient with one gemm:
  r_l^a r_{l-1}^a^T - r_l^b r_{l-1}^b^T = [r_l^a - r_l^b ; r_l^b]^T [r_{l-1}^a ; r_{l-1}^a - r_{l-1}^b]
  (rows stacked over the batch), which for layer 1, where r_0 = x (or rho(x)) is the same
  in both phases, is the single product (r_1^a - r_1^b)^T r_0. Subtracting the two
  equilibria before the product also avoids the cancellation of two nearly equal
  products in float32.

BLAS threads: all kernels are single-threaded except the BLAS calls; one BLAS thread is
the right setting on small machines (:mod:`neuro_hts._threads`).

Private kernels take arrays only (tuples of arrays for the layers, so any depth works);
:class:`NumbaBackend` validates and converts. Network arrays that already have the
backend's dtype and are C-contiguous are used without copying, so in-place optimiser
updates are always seen; others are converted on every call (store the network in the
backend's dtype to avoid that).
"""

from __future__ import annotations

import logging
import threading

import numpy as np
from numba import njit

from ..dynamics import RelaxResult
from ..errors import ConfigError

__all__ = ["NumbaBackend"]

log = logging.getLogger(__name__)

_FORMS = ("leaky", "energy")
_ACTIVATIONS = ("hard_sigmoid", "sigmoid4")  # kernel codes 0, 1
_OUTPUTS = ("mse", "ce")
# output-layer modes of a phase (algorithms.CLAMPS), kernel codes 0, 1, 2
_CLAMPS = ("none", "target", "hold")

# nudge modes of the top relaxed layer (the _OUT ones: outside sigma, leaky form)
_NUDGE_NONE, _NUDGE_MSE, _NUDGE_CE, _NUDGE_MSE_OUT, _NUDGE_CE_OUT = 0, 1, 2, 3, 4

# a = s W^T into a layer of at most this many neurons uses plain dot products instead of
# gemm (faster for a 10-class output layer at batch 50; see scripts/bench_train.py)
_SMALL_ROWS = 12
# fast-math flags that let LLVM vectorise sum reductions (reassociation and FMA
# contraction; no nnan/ninf, so NaN and inf still propagate and divergence stays visible)
_REASSOC = {"reassoc", "contract", "nsz", "arcp"}


# --------------------------------------------------------------------------------------
# scalar helpers (inlined into the loops). ``one`` carries the dtype, so float32 stays
# float32 (no silent promotion to float64 in the vector loops).


@njit(cache=True, inline="always")
def _clip01(u, one):
    """clip(u, 0, 1), NaN-propagating like np.clip."""
    zero = one - one
    return zero if u < zero else (one if u > one else u)


@njit(cache=True, inline="always")
def _act(u, act, one):
    """sigma(u): hard sigmoid clip(u, 0, 1) (act 0) or 1 / (1 + exp(-(4u - 2))) (act 1)."""
    if act == 0:
        return _clip01(u, one)
    return one / (one + np.exp(-(4 * one * u - 2 * one)))


@njit(cache=True, inline="always")
def _act_prime(u, act, one):
    """sigma'(u): 1 on the closed interval 0 <= u <= 1 else 0 (act 0, as
    activations.hard_sigmoid_prime), or 4 sigma(u) (1 - sigma(u)) (act 1)."""
    zero = one - one
    if act == 0:
        return one if (u >= zero and u <= one) else zero
    s = one / (one + np.exp(-(4 * one * u - 2 * one)))
    return 4 * one * s * (one - s)


# --------------------------------------------------------------------------------------
# array kernels


@njit(cache=True)
def _act_into(s, act, out):
    """out = sigma(s) elementwise (presynaptic values of the energy form)."""
    one = s.dtype.type(1.0)
    B, n = s.shape
    for b in range(B):
        for j in range(n):
            out[b, j] = _act(s[b, j], act, one)


@njit(cache=True)
def _softmax_rows(z):
    """z <- softmax(z) row by row, in place (max subtracted first, as dynamics.softmax)."""
    B, n = z.shape
    for b in range(B):
        m = z[b, 0]
        for j in range(1, n):
            if z[b, j] > m:
                m = z[b, j]
        tot = z.dtype.type(0.0)
        for j in range(n):
            e = np.exp(z[b, j] - m)
            z[b, j] = e
            tot += e
        for j in range(n):
            z[b, j] = z[b, j] / tot


# --------------------------------------------------------------------------------------
# sparse input: the input drive W_1 r_0 and the layer-1 weight gradient from the nonzero
# entries of r_0 only (MNIST: ~19 % of the pixels per image, ~61 % of the columns of a
# batch of 50; too dense to gain inside the training loop on the benchmark machine, see
# the cost constants). Both products are computed in the transposed layout, where each input k
# is a contiguous row W_1[:, k] of length n_1:
#
# * drive: T[u] = W_1[:, k_u] for the inputs k_u that are nonzero anywhere in the batch
#   (a gathered transpose, ``_gather_transposed``), then per sample
#   out[b] = b_1 + sum over its nonzero inputs of r_0[b, k] T[u(k)] (``_sparse_rows_axpy``);
# * gradient: T[u] = sum over the samples with r_0[b, k_u] != 0 of r_0[b, k_u] A[b]
#   (``_sparse_cols_accumulate``), then dW_1[:, k_u] = T[u] and 0 in the other columns
#   (``_scatter_transposed``).
#
# The dense path (one BLAS gemm) is kept and chosen when it is cheaper (see
# _use_sparse), when a weight or coefficient is not finite (0 * inf and 0 * NaN are NaN
# in the dense product, and the sparse path never forms them), and for small problems.

#: cost of the sparse paths in units of one dense multiply-add: sparse if
#: a * nnz + b * U < B * n_0, with nnz the nonzero entries of r_0 and U its nonzero
#: columns. Measured on the benchmark machine (BENCHMARKS.md, "Speed-up of the Numba
#: training step"): alone, with warm caches, the sparse drive of an MNIST batch of 50
#: (nnz ~ 7,500, U ~ 475 of 784) took 0.26-0.44 ms against 0.49-0.59 ms for the gemm,
#: and on random inputs of density 5 % / 10 % / 20 % / 30 % 0.25 / 0.28 / 0.39 / 0.60 ms
#: against 0.49-0.57 ms. Inside the training loop, where W_1 has just been rewritten by
#: the optimiser and the caches are cold, the MNIST drive was 0.60-0.65 against
#: 0.68-0.75 ms with the second core idle but 0.77 against 0.70 ms with another process
#: on it (the sparse loops are bound by cache bandwidth, the gemm by arithmetic), and the
#: sparse gradient was slower in both cases (0.69 against 0.63 ms). The constants below
#: therefore keep MNIST densities on the gemm and take the sparse paths for inputs of
#: about 10 % density or less, where they are about twice as fast.
_SPARSE_DRIVE_COST = (4.0, 25.0)
_SPARSE_GRAD_COST = (5.0, 40.0)
#: below this many dense multiply-adds (B n_0 n_1) the dense path is always taken
_SPARSE_MIN_MACS = 1 << 20
# input-sparsity modes of the kernels
_SPARSE_AUTO, _SPARSE_NEVER, _SPARSE_ALWAYS = 0, 1, 2
_SPARSE_MODES = {"auto": _SPARSE_AUTO, "dense": _SPARSE_NEVER, "sparse": _SPARSE_ALWAYS}


@njit(cache=True)
def _use_sparse(mode, nnz, U, B, n0, n, cost_nnz, cost_cols):
    """Whether to take the sparse path (mode: _SPARSE_AUTO / _NEVER / _ALWAYS)."""
    if mode == _SPARSE_ALWAYS:
        return True
    if mode == _SPARSE_NEVER or B * n0 * n < _SPARSE_MIN_MACS:
        return False
    return cost_nnz * nnz + cost_cols * U < B * n0


@njit(cache=True)
def _may_use_sparse(mode, r0, n, cost_nnz, cost_cols, used):
    """A cheap first look before the structure is built (vectorised counts of the
    nonzero entries and columns; ``used`` is uint8 scratch of n_0 entries): whether the
    sparse path is worth building (:func:`_use_sparse` with the real nnz and U)."""
    if mode == _SPARSE_ALWAYS:
        return True
    B, n0 = r0.shape
    if mode == _SPARSE_NEVER or B * n0 * n < _SPARSE_MIN_MACS:
        return False
    for k in range(n0):
        used[k] = 0
    nnz = 0
    for b in range(B):
        row = r0[b]
        for k in range(n0):
            nz = row[k] != 0
            nnz += nz
            used[k] |= nz
    U = 0
    for k in range(n0):
        U += used[k]
    return _use_sparse(mode, nnz, U, B, n0, n, cost_nnz, cost_cols)


@njit(cache=True, fastmath={"reassoc"})
def _all_finite(a):
    """No inf or NaN in the 2-D array ``a`` (sum of a - a: 0 if all finite, NaN otherwise)."""
    acc = a.dtype.type(0.0)
    for i in range(a.shape[0]):
        row = a[i]
        for j in range(a.shape[1]):
            acc += row[j] - row[j]
    return acc == 0


@njit(cache=True)
def _sparse_structure(r0, used, uidx, upos, ptr, cols, vals):
    """The nonzero entries of r0 (NaN counts as nonzero), in one pass over r0 by rows.

    Union of the nonzero columns: uidx[:U] (ascending), upos[k] = position of column k
    in it (-1 if all-zero). Per sample b: its nonzero entries at p in ptr[b]:ptr[b+1],
    cols[p] = the union position of the column, vals[p] = the value. Returns (U, nnz).
    """
    B, n0 = r0.shape
    for k in range(n0):
        used[k] = 0
    c = 0
    ptr[0] = 0
    for b in range(B):
        row = r0[b]
        for k in range(n0):
            v = row[k]
            if v != 0:
                cols[c] = k
                vals[c] = v
                used[k] = 1
                c += 1
        ptr[b + 1] = c
    U = 0
    for k in range(n0):
        if used[k]:
            uidx[U] = k
            upos[k] = U
            U += 1
        else:
            upos[k] = -1
    for p in range(c):
        cols[p] = upos[cols[p]]
    return U, c


@njit(cache=True)
def _csc_from_csr(ptr, cols, vals, U, cptr, crow, cval):
    """The same entries by union column: samples crow[cptr[u]:cptr[u+1]] (ascending) and values."""
    B = ptr.shape[0] - 1
    for u in range(U + 1):
        cptr[u] = 0
    for p in range(ptr[B]):
        cptr[cols[p] + 1] += 1
    for u in range(U):
        cptr[u + 1] += cptr[u]
    # fill by advancing a cursor per column; cptr[u] ends at the start of column u + 1
    for b in range(B):
        for p in range(ptr[b], ptr[b + 1]):
            u = cols[p]
            q = cptr[u]
            crow[q] = b
            cval[q] = vals[p]
            cptr[u] = q + 1
    for u in range(U, 0, -1):
        cptr[u] = cptr[u - 1]
    cptr[0] = 0


@njit(cache=True)
def _gather_transposed(W, uidx, U, T):
    """T[u, j] = W[j, uidx[u]] for u < U (16 rows of W at a time: one cache line of T per u)."""
    n = W.shape[0]
    nb = n - n % 16
    for j0 in range(0, nb, 16):
        for u in range(U):
            k = uidx[u]
            row = T[u]
            for jj in range(16):
                row[j0 + jj] = W[j0 + jj, k]
    for j in range(nb, n):
        for u in range(U):
            T[u, j] = W[j, uidx[u]]


@njit(cache=True)
def _scatter_transposed(T, uidx, U, out):
    """out[j, uidx[u]] = T[u, j] for u < U, out = 0 in the other columns."""
    n, n0 = out.shape
    nb = n - n % 16
    zero = out.dtype.type(0.0)
    for j0 in range(0, nb, 16):
        for jj in range(16):
            r = out[j0 + jj]
            for k in range(n0):
                r[k] = zero
        for u in range(U):
            k = uidx[u]
            src = T[u]
            for jj in range(16):
                out[j0 + jj, k] = src[j0 + jj]
    for j in range(nb, n):
        for k in range(n0):
            out[j, k] = zero
        for u in range(U):
            out[j, uidx[u]] = T[u, j]


@njit(cache=True, fastmath=_REASSOC, inline="always")
def _accumulate_rows(acc, M, idx, vals, p, e):
    """acc += sum_q vals[q] M[idx[q]] over q in p:e, eight (then four, then one) rows of M per pass
    (the loop is bound by loads and stores, not FMAs)."""
    n = acc.shape[0]
    while p + 7 < e:
        m0, m1, m2, m3 = M[idx[p]], M[idx[p + 1]], M[idx[p + 2]], M[idx[p + 3]]
        m4, m5, m6, m7 = M[idx[p + 4]], M[idx[p + 5]], M[idx[p + 6]], M[idx[p + 7]]
        v0, v1, v2, v3 = vals[p], vals[p + 1], vals[p + 2], vals[p + 3]
        v4, v5, v6, v7 = vals[p + 4], vals[p + 5], vals[p + 6], vals[p + 7]
        for j in range(n):
            acc[j] += ((v0 * m0[j] + v1 * m1[j]) + (v2 * m2[j] + v3 * m3[j])) + (
                (v4 * m4[j] + v5 * m5[j]) + (v6 * m6[j] + v7 * m7[j])
            )
        p += 8
    while p + 3 < e:
        m0, m1, m2, m3 = M[idx[p]], M[idx[p + 1]], M[idx[p + 2]], M[idx[p + 3]]
        v0, v1, v2, v3 = vals[p], vals[p + 1], vals[p + 2], vals[p + 3]
        for j in range(n):
            acc[j] += (v0 * m0[j] + v1 * m1[j]) + (v2 * m2[j] + v3 * m3[j])
        p += 4
    while p < e:
        m0, v0 = M[idx[p]], vals[p]
        for j in range(n):
            acc[j] += v0 * m0[j]
        p += 1


@njit(cache=True, fastmath=_REASSOC)
def _sparse_rows_axpy(ptr, cols, vals, T, bias, out):
    """out[b] = bias + sum_p vals[p] T[cols[p]] over p in ptr[b]:ptr[b+1].

    Eight (then four, then one) rows of T per pass over out[b], so that out[b] is loaded
    and stored once per eight rows (the loop is bound by loads and stores, not FMAs)."""
    B = out.shape[0]
    n = T.shape[1]
    for b in range(B):
        ob = out[b]
        for j in range(n):
            ob[j] = bias[j]
        _accumulate_rows(ob, T, cols, vals, ptr[b], ptr[b + 1])


@njit(cache=True, fastmath=_REASSOC)
def _sparse_cols_accumulate(A, U, cptr, crow, cval, T):
    """T[u] = sum_p cval[p] A[crow[p]] over p in cptr[u]:cptr[u+1], for u < U (eight rows of A per pass)."""
    n = A.shape[1]
    zero = T.dtype.type(0.0)
    for u in range(U):
        g = T[u]
        for j in range(n):
            g[j] = zero
        _accumulate_rows(g, A, crow, cval, cptr[u], cptr[u + 1])


@njit(cache=True)
def _drive_from(r0, W1, b1, mode, sp, out):
    """out = r0 W_1^T + b_1, sparse or dense (see above); returns True if sparse.

    ``sp`` is the scratch tuple (used, uidx, upos, ptr, cols, vals, cptr, crow, cval, T)
    of :meth:`NumbaBackend._sparse_scratch`."""
    used, uidx, upos, ptr, cols, vals, cptr, crow, cval, T = sp
    B, n0 = r0.shape
    n = W1.shape[0]
    U = 0
    c0, c1 = _SPARSE_DRIVE_COST
    sparse = _may_use_sparse(mode, r0, n, c0, c1, used)
    if sparse:
        U, nnz = _sparse_structure(r0, used, uidx, upos, ptr, cols, vals)
        sparse = _use_sparse(mode, nnz, U, B, n0, n, c0, c1) and _all_finite(W1)
    if sparse:
        _gather_transposed(W1, uidx, U, T)
        _sparse_rows_axpy(ptr, cols, vals, T, b1, out)
    else:
        np.dot(r0, W1.T, out)
        for b in range(B):
            for j in range(n):
                out[b, j] += b1[j]
    return sparse


@njit(cache=True)
def _input_drive_kernel(x, rx, W1, b1, energy, act, mode, sp, out):
    """out = W_1 r_0 + b_1 with r_0 = x (leaky) or rho(x) (energy; written to ``rx``);
    returns True if the sparse path was taken."""
    if energy:
        _act_into(x, act, rx)
        return _drive_from(rx, W1, b1, mode, sp, out)
    return _drive_from(x, W1, b1, mode, sp, out)


@njit(cache=True)
def _layer1_gradient(A, r0, mode, sp, out):
    """out = A^T r0 (the layer-1 weight gradient), sparse or dense; returns True if sparse."""
    used, uidx, upos, ptr, cols, vals, cptr, crow, cval, T = sp
    B, n0 = r0.shape
    n = A.shape[1]
    U = 0
    c0, c1 = _SPARSE_GRAD_COST
    sparse = _may_use_sparse(mode, r0, n, c0, c1, used)
    if sparse:
        U, nnz = _sparse_structure(r0, used, uidx, upos, ptr, cols, vals)
        sparse = _use_sparse(mode, nnz, U, B, n0, n, c0, c1) and _all_finite(A)
    if sparse:
        _csc_from_csr(ptr, cols, vals, U, cptr, crow, cval)
        _sparse_cols_accumulate(A, U, cptr, crow, cval, T)
        _scatter_transposed(T, uidx, U, out)
    else:
        np.dot(A.T, r0, out)
    return sparse


@njit(cache=True, fastmath=_REASSOC)
def _dot_nt_small(a, W, out):
    """out = a @ W.T by dot products (for a small number of rows of W).

    Register-blocked: two samples times four rows of W per pass over the inputs, so each
    loaded W element serves two products and each loaded input four (eight independent
    vectorised sums; the reassociation flags let LLVM vectorise them). About twice as
    fast as one dot product at a time for a 50 x 512 input and a 10-row W.
    """
    B, m = a.shape
    n = W.shape[0]
    zero = out.dtype.type(0.0)
    B2 = B - B % 2
    n4 = n - n % 4
    for b in range(0, B2, 2):
        a0 = a[b]
        a1 = a[b + 1]
        for i in range(0, n4, 4):
            w0, w1, w2, w3 = W[i], W[i + 1], W[i + 2], W[i + 3]
            s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = zero
            for j in range(m):
                x0 = a0[j]
                x1 = a1[j]
                s00 += x0 * w0[j]
                s01 += x0 * w1[j]
                s02 += x0 * w2[j]
                s03 += x0 * w3[j]
                s10 += x1 * w0[j]
                s11 += x1 * w1[j]
                s12 += x1 * w2[j]
                s13 += x1 * w3[j]
            out[b, i], out[b, i + 1], out[b, i + 2], out[b, i + 3] = s00, s01, s02, s03
            out[b + 1, i], out[b + 1, i + 1], out[b + 1, i + 2], out[b + 1, i + 3] = s10, s11, s12, s13
        for i in range(n4, n):
            wi = W[i]
            s0 = s1 = zero
            for j in range(m):
                s0 += a0[j] * wi[j]
                s1 += a1[j] * wi[j]
            out[b, i] = s0
            out[b + 1, i] = s1
    for b in range(B2, B):
        ab = a[b]
        for i in range(n):
            wi = W[i]
            acc = zero
            for j in range(m):
                acc += ab[j] * wi[j]
            out[b, i] = acc


@njit(cache=True)
def _dot_nt(a, W, out):
    """out = a @ W.T: gemm, or plain dot products when W has few rows (a layer of
    <= _SMALL_ROWS neurons, e.g. a 10-class output layer), where the loops beat BLAS."""
    if W.shape[0] <= _SMALL_ROWS:
        _dot_nt_small(a, W, out)
    else:
        np.dot(a, W.T, out)


@njit(cache=True, inline="always")
def _update_rows(s, base, bias, add_bias, td, has_td, nudge_mode, ny, beta, dt, energy, act, out):
    """The fused elementwise loop of :func:`_update_layer` (inlined there with constant
    ``energy`` and ``act``, so that each copy compiles to a branch-free vector loop)."""
    one = s.dtype.type(1.0)
    B, n = s.shape
    for b in range(B):
        for j in range(n):
            sj = s[b, j]
            h = base[b, j]
            if add_bias:
                h += bias[j]
            if has_td:
                h += td[b, j]
            if energy:
                rp = _act_prime(sj, act, one)
                u = rp * h - sj
                if nudge_mode == 1 or nudge_mode == 3:
                    u += beta * (ny[b, j] - sj)
                elif nudge_mode == 2 or nudge_mode == 4:
                    u += beta * (ny[b, j] * rp)
                out[b, j] = _clip01(sj + dt[j] * u, one)
            else:
                nu = s.dtype.type(0.0)
                if nudge_mode == 1:
                    h += beta * (ny[b, j] - sj)
                elif nudge_mode == 2:
                    h += beta * ny[b, j]
                elif nudge_mode == 3:
                    nu = beta * (ny[b, j] - sj)
                elif nudge_mode == 4:
                    nu = beta * ny[b, j]
                out[b, j] = sj + dt[j] * (_act(h, act, one) - sj + nu)


@njit(cache=True)
def _update_layer(s, base, bias, add_bias, td, has_td, nudge_mode, ny, beta, dt, energy, act, out):
    """One layer's synchronous update: out = the new s, from the drive and the nudge.

    h = base (+ bias) (+ td). Nudge mode 1 (MSE): beta (y - s) with ``ny`` = y; mode 2
    (softmax readout): beta * ny with ``ny`` = (y - softmax) W_L, times rho'(s) in the
    energy form. Leaky: s + dt (sigma(h + nudge) - s); modes 3 and 4 are modes 1 and 2
    placed outside sigma, s + dt (sigma(h) - s + nudge) (``nudge = "outside"``). Energy:
    clip(s + dt (rho'(s) h - s + nudge), 0, 1).
    """
    # each call below is a separate inlined copy with constant flags; nudge_mode 0 (every
    # layer but the top one) gets its own copies
    if nudge_mode == _NUDGE_NONE:
        if energy:
            if act == 0:
                _update_rows(s, base, bias, add_bias, td, has_td, 0, ny, beta, dt, True, 0, out)
            else:
                _update_rows(s, base, bias, add_bias, td, has_td, 0, ny, beta, dt, True, 1, out)
        elif act == 0:
            _update_rows(s, base, bias, add_bias, td, has_td, 0, ny, beta, dt, False, 0, out)
        else:
            _update_rows(s, base, bias, add_bias, td, has_td, 0, ny, beta, dt, False, 1, out)
    elif energy:
        if act == 0:
            _update_rows(s, base, bias, add_bias, td, has_td, nudge_mode, ny, beta, dt, True, 0, out)
        else:
            _update_rows(s, base, bias, add_bias, td, has_td, nudge_mode, ny, beta, dt, True, 1, out)
    elif act == 0:
        _update_rows(s, base, bias, add_bias, td, has_td, nudge_mode, ny, beta, dt, False, 0, out)
    else:
        _update_rows(s, base, bias, add_bias, td, has_td, nudge_mode, ny, beta, dt, False, 1, out)


@njit(cache=True)
def _residual_into(new, old, residual, fbuf, ibuf):
    """residual[b] <- max(residual[b], max_j |new[b, j] - old[b, j]|); NaN sticks (as np.max).

    ``fbuf`` is a float scratch row (>= n entries) and ``ibuf`` the same memory viewed as
    signed integers of the same width. The maximum is taken over the bit patterns: for
    values >= 0 (|d| has its sign bit clear) they order as the floats do, with +inf
    above every finite value and any NaN above +inf, so one integer max (which LLVM
    vectorises, unlike a NaN-aware float max) finds the largest |d| or a NaN.
    """
    B, n = new.shape
    if n == 0:
        return
    for b in range(B):
        for j in range(n):
            fbuf[j] = abs(new[b, j] - old[b, j])
        top = ibuf[0]
        for j in range(1, n):
            top = max(top, ibuf[j])
        ibuf[0] = top
        d = fbuf[0]
        res = residual[b]
        if d != d or res != res:
            res = np.nan
        elif d > res:
            res = d
        residual[b] = res


@njit(cache=True)
def _scale_into(a, c):
    """a <- c * a elementwise."""
    B, n = a.shape
    for b in range(B):
        for j in range(n):
            a[b, j] = c * a[b, j]


@njit(cache=True)
def _mix_into(s, anchor, coe):
    """s <- (1 - c) s + c anchor   (adjusted adaptation; c = 1 gives the anchor exactly)."""
    one = s.dtype.type(1.0)
    keep = one - coe
    B, n = s.shape
    for b in range(B):
        for j in range(n):
            s[b, j] = keep * s[b, j] + coe * anchor[b, j]


@njit(cache=True)
def _relax_kernel(Ws, bs, dts, drive1, s_init, buf0, buf1, rbuf, y, beta, n_steps, energy, act, ce, residual,
                  fbuf, ibuf, gamma, top_mode, anchor, has_anchor, coe, tol, outside, lR, lbeta, lce, has_local):
    """Run up to ``n_steps`` >= 1 synchronous steps from ``s_init``; returns the number of steps taken.

    Step t reads the states of step t-1 (``s_init``, then alternately ``buf0``/``buf1``)
    and writes the other buffer (the result is in ``buf0`` after an odd number of steps,
    in ``buf1`` after an even one); ``s_init`` is never written. ``rbuf`` holds rho(s) in
    the energy form. ``residual`` (zeros on entry) receives the last step's
    max_l max_j |s_t - s_{t-1}| per sample (``fbuf``/``ibuf``: scratch of
    :func:`_residual_into`, as wide as the widest relaxed layer). ``gamma`` scales every
    top-down product; ``top_mode`` 1 holds the output layer at ``y`` (clamp), 2 at its
    current value; with ``has_anchor`` every layer is then mixed toward ``anchor`` with
    ``coe``. With ``tol`` > 0 the residual is formed every step and the loop ends at the
    first step where every sample's residual is <= tol. With ``outside`` the nudge enters
    the leaky update outside sigma (``nudge = "outside"``).

    Local error costs (``has_local``, nudged phases only): ``lR[i]`` is the readout R of
    relaxed layer i+1 (a (0, 0) array for a layer without one), ``lbeta`` beta_l and
    ``lce`` the loss (CE: softmax). Each step such a layer's drive gets
    beta * beta_l (y - z) R with z = r R^T (softmax(r R^T) for CE), i.e. beta times
    :meth:`neuro_hts.costs.LocalReadout.nudge`, added where the output's nudge goes (the
    softmax readout's nudge mode: inside sigma, or outside; times rho'(s) in the energy form).
    """
    n_dyn = len(s_init)
    top = n_dyn - 1
    B = drive1.shape[0]
    dtype = drive1.dtype
    # scratch: bottom-up products (layers >= 2), top-down products (layers < top) and,
    # for the softmax readout, the readout's logits and the nudge (y - p) W_L
    bu = [np.empty((B, Ws[i].shape[0]), dtype=dtype) for i in range(n_dyn)]
    td = [np.empty((B, Ws[i].shape[0]), dtype=dtype) for i in range(n_dyn)]
    W_L = Ws[len(Ws) - 1]
    b_L = bs[len(bs) - 1]
    n_out = W_L.shape[0]
    logits = np.empty((B, n_out), dtype=dtype)
    nudge_mode = _NUDGE_NONE
    if beta != 0:
        nudge_mode = _NUDGE_CE if ce else _NUDGE_MSE
        if outside:
            nudge_mode += _NUDGE_MSE_OUT - _NUDGE_MSE
    ny = y if (nudge_mode == _NUDGE_MSE or nudge_mode == _NUDGE_MSE_OUT) else td[top]
    # local error costs: the readout's output z (B, classes) and the nudge (B, n) per layer
    local_on = has_local and nudge_mode != _NUDGE_NONE
    local_mode = _NUDGE_CE_OUT if outside else _NUDGE_CE
    lz = [np.empty((B, lR[i].shape[0]) if local_on else (0, 0), dtype=dtype) for i in range(n_dyn)]
    lny = [np.empty((B, Ws[i].shape[0]) if (local_on and lR[i].shape[0] > 0) else (0, 0), dtype=dtype)
           for i in range(n_dyn)]
    scale_td = gamma != 1
    check = tol > 0
    cur = s_init
    taken = 0
    for t in range(n_steps):
        nxt = buf0 if t % 2 == 0 else buf1
        r = cur
        if energy:
            for i in range(n_dyn):
                _act_into(cur[i], act, rbuf[i])
            r = rbuf
        for i in range(1, n_dyn):
            _dot_nt(r[i - 1], Ws[i], bu[i])
        for i in range(n_dyn - 1):
            np.dot(r[i + 1], Ws[i + 1], td[i])
            if scale_td:
                _scale_into(td[i], gamma)
        if nudge_mode == _NUDGE_CE or nudge_mode == _NUDGE_CE_OUT:
            _dot_nt(r[top], W_L, logits)
            for b in range(B):
                for k in range(n_out):
                    logits[b, k] += b_L[k]
            _softmax_rows(logits)
            for b in range(B):
                for k in range(n_out):
                    logits[b, k] = y[b, k] - logits[b, k]
            np.dot(logits, W_L, td[top])
        if local_on:
            for i in range(top):
                R = lR[i]
                if R.shape[0] == 0:
                    continue
                z = lz[i]
                _dot_nt(r[i], R, z)
                if lce:
                    _softmax_rows(z)
                for b in range(B):
                    for k in range(R.shape[0]):
                        z[b, k] = y[b, k] - z[b, k]
                np.dot(z, R, lny[i])
                _scale_into(lny[i], lbeta)
        for i in range(n_dyn):
            if i == top and top_mode != 0:
                src = y if top_mode == 1 else cur[i]
                nxt[i][:, :] = src
                continue
            base = drive1 if i == 0 else bu[i]
            if i == top:
                _update_layer(cur[i], base, bs[i], i > 0, td[i], i < top, nudge_mode, ny, beta, dts[i], energy, act,
                              nxt[i])
            elif local_on and lR[i].shape[0] > 0:
                _update_layer(cur[i], base, bs[i], i > 0, td[i], True, local_mode, lny[i], beta, dts[i], energy, act,
                              nxt[i])
            else:
                _update_layer(cur[i], base, bs[i], i > 0, td[i], i < top, _NUDGE_NONE, ny, beta, dts[i], energy, act,
                              nxt[i])
        if has_anchor:
            for i in range(n_dyn):
                _mix_into(nxt[i], anchor[i], coe)
        taken += 1
        if check or t == n_steps - 1:
            for b in range(B):
                residual[b] = 0
            for i in range(n_dyn):
                _residual_into(nxt[i], cur[i], residual, fbuf, ibuf)
        cur = nxt
        if check:
            settled = True
            for b in range(B):
                if not residual[b] <= tol:  # NaN counts as unsettled
                    settled = False
                    break
            if settled:
                break
    return taken


@njit(cache=True)
def _presynaptic_list(states, energy, act):
    """[r_1, r_2, ...]: the states themselves (leaky form) or rho of them (energy form)."""
    out = []
    for i in range(len(states)):
        if energy:
            r = np.empty_like(states[i])
            _act_into(states[i], act, r)
            out.append(r)
        else:
            out.append(states[i])
    return out


@njit(cache=True)
def _ep_gradients_kernel(x, y, Ws, bs, states_a, states_b, beta_a, beta_b, energy, act, ce, mode, sp, gWs, gbs):
    """EP gradients (see dynamics.ep_gradients) into ``gWs``/``gbs``, one gemm per layer.

    -(r_l^a r_{l-1}^a^T - r_l^b r_{l-1}^b^T) / (denom B) as
    c [r_l^a - r_l^b ; r_l^b]^T [r_{l-1}^a ; r_{l-1}^a - r_{l-1}^b], c = -1 / (denom B);
    layer 1 only needs the first half, (r_1^a - r_1^b)^T r_0, since r_0 = x (or rho(x))
    is the same in both phases. ``beta_a``, ``beta_b`` are float64 (the coefficients are
    formed in float64, then rounded once). ``x`` may be read-only; it is only read.
    The layer-1 product may take the sparse path (``mode``, ``sp``: see _layer1_gradient).
    """
    dtype = gWs[0].dtype
    B = x.shape[0]
    n_dyn = len(states_a)
    denom = beta_a - beta_b
    c = dtype.type(-1.0 / (denom * B))
    ra = _presynaptic_list(states_a, energy, act)  # ra[i] = r_{i+1}
    rb = _presynaptic_list(states_b, energy, act)
    for i in range(n_dyn):
        a, bb = ra[i], rb[i]
        n = a.shape[1]
        if i == 0:
            A = np.empty((B, n), dtype=dtype)
            for s in range(B):
                for j in range(n):
                    A[s, j] = c * (a[s, j] - bb[s, j])
            if energy:
                rx = np.empty((B, x.shape[1]), dtype=dtype)
                _act_into(x, act, rx)
                _layer1_gradient(A, rx, mode, sp, gWs[0])
            else:
                _layer1_gradient(A, x, mode, sp, gWs[0])
        else:
            a0, b0 = ra[i - 1], rb[i - 1]
            m = a0.shape[1]
            A = np.empty((2 * B, n), dtype=dtype)
            P = np.empty((2 * B, m), dtype=dtype)
            for s in range(B):
                for j in range(n):
                    A[s, j] = c * (a[s, j] - bb[s, j])
                    A[B + s, j] = c * bb[s, j]
                for k in range(m):
                    P[s, k] = a0[s, k]
                    P[B + s, k] = a0[s, k] - b0[s, k]
            np.dot(A.T, P, gWs[i])
        gb = gbs[i]
        for j in range(n):
            gb[j] = 0
        for s in range(B):
            for j in range(n):
                gb[j] += A[s, j]
    if ce:
        # softmax readout: (beta_a dC/dW(a) - beta_b dC/dW(b)) / (denom B), dC/dlogits = p - y
        W_L, b_L = Ws[len(Ws) - 1], bs[len(bs) - 1]
        n_out = W_L.shape[0]
        top_a, top_b = ra[n_dyn - 1], rb[n_dyn - 1]
        m = top_a.shape[1]
        la = np.empty((B, n_out), dtype=dtype)
        lb = np.empty((B, n_out), dtype=dtype)
        np.dot(top_a, W_L.T, la)
        np.dot(top_b, W_L.T, lb)
        for s in range(B):
            for k in range(n_out):
                la[s, k] += b_L[k]
                lb[s, k] += b_L[k]
        _softmax_rows(la)
        _softmax_rows(lb)
        ca = dtype.type(beta_a / (denom * B))
        cb = dtype.type(-beta_b / (denom * B))
        A = np.empty((2 * B, n_out), dtype=dtype)
        P = np.empty((2 * B, m), dtype=dtype)
        for s in range(B):
            for k in range(n_out):
                A[s, k] = ca * (la[s, k] - y[s, k])
                A[B + s, k] = cb * (lb[s, k] - y[s, k])
            for j in range(m):
                P[s, j] = top_a[s, j]
                P[B + s, j] = top_b[s, j]
        np.dot(A.T, P, gWs[len(gWs) - 1])
        gb = gbs[len(gbs) - 1]
        for k in range(n_out):
            gb[k] = 0
        for s in range(2 * B):
            for k in range(n_out):
                gb[k] += A[s, k]


# --------------------------------------------------------------------------------------
# public wrapper


def _dendritic(net):
    """The dendritic path's module when ``net`` has dendritic connections (neuro_hts.backends.numba_dendritic), else None."""
    from . import numba_dendritic

    return numba_dendritic if numba_dendritic.handles(net) else None


class NumbaBackend:
    """Fused Numba kernels with BLAS matrix products; float32 (default) or float64.

    Methods and results as :class:`~neuro_hts.backends.numpy_ref.NumpyBackend`:
    ``input_drive``, ``relax`` (a :class:`~neuro_hts.dynamics.RelaxResult`) and
    ``ep_gradients``. Inputs are converted to C-contiguous arrays of ``dtype``; arrays
    that already are (the network's, the states this backend returned) are not copied.
    States passed in are never modified.

    ``input_sparsity`` decides how the two products with the input, the input drive
    W_1 r_0 and the layer-1 weight gradient, are formed: ``"auto"`` (default) from the
    nonzero entries of r_0 when the input is sparse enough for that to be cheaper (about
    10 % nonzero or less; MNIST's ~19 % stays on the gemm, see _SPARSE_DRIVE_COST) and
    by one dense gemm otherwise; ``"dense"`` always by gemm; ``"sparse"`` always from
    the nonzero entries (except with non-finite weights, where only the dense product
    propagates 0 * inf as NaN). The results agree to rounding. Scratch buffers of the
    sparse path are kept per thread and reused from call to call.

    A network that is not a dense chain (conv2d connections, C x H x W layers) runs through
    :class:`~neuro_hts.backends.conv_kernels.ConvChain` (im2col + gemm convolutions,
    docs/CONV.md "The fast path") with the same methods and results.
    """

    name = "numba"

    def __init__(self, dtype=np.float32, input_sparsity: str = "auto"):
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ConfigError(f"the numba backend runs in float32 or float64, not {self.dtype}")
        if input_sparsity not in _SPARSE_MODES:
            raise ConfigError(f"input_sparsity must be one of {', '.join(_SPARSE_MODES)}, not {input_sparsity!r}")
        self.input_sparsity = input_sparsity
        self._logged_conversion = False
        self._tls = threading.local()

    def _sparse_scratch(self, B: int, n0: int, n: int) -> tuple:
        """Scratch of the sparse input path for a (B, n0) input and n_1 = n, reused per thread."""
        key = (B, n0, n)
        cached = getattr(self._tls, "sparse", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        if _SPARSE_MODES[self.input_sparsity] == _SPARSE_NEVER:
            i0, f0 = np.zeros(0, np.int32), np.zeros(0, self.dtype)
            sp = (np.zeros(0, np.uint8), i0, i0, i0, i0, f0, i0, i0, f0, np.zeros((0, 0), self.dtype))
        else:
            nnz_max = B * n0
            sp = (
                np.zeros(n0, np.uint8),  # used
                np.zeros(n0, np.int32),  # uidx
                np.zeros(n0, np.int32),  # upos
                np.zeros(B + 1, np.int32),  # ptr
                np.zeros(nnz_max, np.int32),  # cols
                np.zeros(nnz_max, self.dtype),  # vals
                np.zeros(n0 + 1, np.int32),  # cptr
                np.zeros(nnz_max, np.int32),  # crow
                np.zeros(nnz_max, self.dtype),  # cval
                np.zeros((n0, n), self.dtype),  # T: gathered W_1^T or the transposed gradient
            )
        self._tls.sparse = (key, sp)
        return sp

    # --- validation and conversion ----------------------------------------------------
    def _as(self, a, shape=None, what="array", read_only_ok=False) -> np.ndarray:
        if not (
            type(a) is np.ndarray and a.dtype == self.dtype and a.flags.c_contiguous and (read_only_ok or a.flags.writeable)
        ):
            a = np.ascontiguousarray(a, dtype=self.dtype)
        if not (read_only_ok or a.flags.writeable):
            a = a.copy()  # the kernels mix these with their own buffers, which are writable
        if shape is not None and a.shape != shape:
            raise ValueError(f"{what} has shape {a.shape}, expected {shape}")
        return a

    def _local(self, net, beta) -> tuple:
        """(lR, lbeta, lce, has_local) of :func:`_relax_kernel`: the local readouts per relaxed layer."""
        local = getattr(net, "local", None)
        n_dyn = net.n_dynamic
        empty = np.zeros((0, 0), dtype=self.dtype)
        if local is None:
            return tuple(empty for _ in range(n_dyn)), self.dtype.type(0.0), False, False
        by_layer = dict(zip(local.layers, local.weights))
        lR = tuple(self._as(by_layer[l]) if l in by_layer else empty for l in range(1, n_dyn + 1))
        return lR, self.dtype.type(local.beta), local.loss == "ce", beta != 0.0

    def supports(self, net) -> list[str]:
        """Why the backend cannot run ``net`` (empty: it can): dense chains run in the fused kernels,
        chains of conv2d and dense connections in the conv path (:mod:`neuro_hts.backends.conv_kernels`),
        dendritic ones in :mod:`neuro_hts.backends.numba_dendritic`; each takes local error costs."""
        if getattr(net, "is_dense", True):
            return []
        from . import numba_dendritic

        if numba_dendritic.handles(net):  # dendritic connections: their own kernels
            return numba_dendritic.reasons(net)
        from .conv_kernels import ConvChain

        return ConvChain.reasons(net)

    def _check_network(self, net) -> None:
        """One-line ConfigErrors for what no kernel runs (the form, activation, output, no relaxed layer)."""
        reasons = self.supports(net)
        if reasons:
            raise ConfigError(reasons[0])
        if net.form not in _FORMS:
            raise ConfigError(f"unknown dynamics form {net.form!r}; choose one of {', '.join(_FORMS)}")
        if net.activation not in _ACTIVATIONS:
            raise ConfigError(f"unknown activation {net.activation!r}; choose one of {', '.join(_ACTIVATIONS)}")
        if net.output not in _OUTPUTS:
            raise ConfigError(f"unknown output {net.output!r}; choose one of {', '.join(_OUTPUTS)}")
        if net.n_dynamic < 1:
            raise ConfigError("the network has no relaxed layer")

    def _chain(self, net):
        """The conv path for a network that is not a dense chain (None for a dense chain)."""
        if getattr(net, "is_dense", True) or _dendritic(net):
            return None
        from .conv_kernels import ConvChain

        self._check_network(net)
        return ConvChain(net, self.dtype, self._as)

    def _network(self, net):
        """(energy, act, ce, weights, biases, dts of the relaxed layers) as kernel arguments."""
        self._check_network(net)
        if not self._logged_conversion and any(
            a.dtype != self.dtype or not a.flags.c_contiguous for a in (*net.weights, *net.biases, *net.dts)
        ):
            log.debug("network arrays are not C-contiguous %s: converting them on every call", self.dtype)
            self._logged_conversion = True
        Ws = tuple(self._as(w) for w in net.weights)
        bs = tuple(self._as(b) for b in net.biases)
        dts = tuple(self._as(d) for d in net.dts[: net.n_dynamic])
        return net.form == "energy", _ACTIVATIONS.index(net.activation), net.output == "ce", Ws, bs, dts

    def _x(self, net, x) -> np.ndarray:
        x = self._as(x, read_only_ok=True)  # only read, by gemm (e.g. a read-only dataset)
        if x.ndim != 2 or x.shape[1] != net.arch[0]:
            raise ValueError(f"x has shape {x.shape}, expected (batch, {net.arch[0]})")
        return x

    # --- the interface ----------------------------------------------------------------
    def input_drive(self, net, x) -> np.ndarray:
        """W_1 r_0 + b_1, (B, n_1), with r_0 = x (leaky) or rho(x) (energy)."""
        if not getattr(net, "is_dense", True) and _dendritic(net):
            return _dendritic(net).input_drive(self, net, x)
        chain = self._chain(net)
        if chain is not None:
            return chain.input_drive(x)
        energy, act, _, Ws, bs, _ = self._network(net)
        x = self._x(net, x)
        B, n0 = x.shape
        n = Ws[0].shape[0]
        out = np.empty((B, n), dtype=self.dtype)
        rx = np.empty(x.shape if energy else (0, 0), dtype=self.dtype)
        sp = self._sparse_scratch(B, n0, n)
        _input_drive_kernel(x, rx, Ws[0], bs[0], energy, act, _SPARSE_MODES[self.input_sparsity], sp, out)
        return out

    def relax(self, net, x, n_steps, states=None, y=None, beta=0.0, drive1=None, *, gamma=1.0, clamp="none",
              anchor=None, coe=0.0, tol=None, status_tol=1e-3) -> RelaxResult:
        """Up to ``n_steps`` synchronous steps from ``states`` (zeros if None); see dynamics.relax."""
        if not getattr(net, "is_dense", True) and _dendritic(net):
            return _dendritic(net).relax(self, net, x, n_steps, states, y, beta, drive1, gamma=gamma, clamp=clamp,
                                         anchor=anchor, coe=coe, tol=tol, status_tol=status_tol)
        chain = self._chain(net)
        if chain is not None:
            return self._relax_chain(chain, net, x, n_steps, states, y, beta, drive1, gamma, clamp, anchor, coe, tol,
                                     status_tol)
        energy, act, ce, Ws, bs, dts = self._network(net)
        x = self._x(net, x)
        B = x.shape[0]
        n_steps = int(n_steps)
        if n_steps < 0:
            raise ValueError(f"n_steps must be >= 0, got {n_steps}")
        sizes = net.arch[1 : net.n_dynamic + 1]
        if states is None:
            s_init = tuple(np.zeros((B, n), dtype=self.dtype) for n in sizes)
        else:
            s_init = self._image_states(net, states, B, "states")
        beta = float(beta)
        top_mode = _CLAMPS.index(clamp) if clamp in _CLAMPS else -1
        if top_mode < 0:
            raise ValueError(f"clamp must be one of {', '.join(_CLAMPS)}, got {clamp!r}")
        if beta != 0.0 or top_mode == 1:
            if y is None:
                raise ValueError("a nudged phase (beta != 0) or a clamped one needs targets y")
            y = self._as(y, (B, net.arch[-1]), "y")
        else:
            y = np.zeros((0, 0), dtype=self.dtype)
        if drive1 is None:
            drive1 = self.input_drive(net, x)
        else:
            drive1 = self._as(drive1, (B, sizes[0]), "drive1")
        has_anchor = anchor is not None
        anchor_t = self._image_states(net, anchor, B, "anchor") if has_anchor else s_init
        judged = float(tol) if tol is not None else float(status_tol)
        residual = np.zeros(B, dtype=self.dtype)
        if n_steps == 0:
            return RelaxResult([s.copy() for s in s_init], residual, 0, judged)
        buf0 = tuple(np.empty((B, n), dtype=self.dtype) for n in sizes)
        buf1 = tuple(np.empty((B, n), dtype=self.dtype) for n in sizes)
        rbuf = tuple(np.empty((B, n), dtype=self.dtype) for n in sizes) if energy else buf1
        fbuf = np.empty(max(sizes), dtype=self.dtype)
        ibuf = fbuf.view(np.int32 if self.dtype == np.float32 else np.int64)
        taken = _relax_kernel(
            Ws, bs, dts, drive1, s_init, buf0, buf1, rbuf, y, self.dtype.type(beta), n_steps, energy, act, ce, residual,
            fbuf, ibuf, self.dtype.type(gamma), top_mode, anchor_t, has_anchor, self.dtype.type(coe),
            self.dtype.type(tol if tol is not None else 0.0), net.nudge == "outside" and not energy, *self._local(net, beta),
        )
        return RelaxResult(list(buf0 if taken % 2 else buf1), residual, int(taken), judged)

    def ep_gradients(self, net, x, y, states_a, beta_a, states_b, beta_b):
        """EP estimate of the loss gradient from two equilibria; see dynamics.ep_gradients."""
        if not getattr(net, "is_dense", True) and _dendritic(net):
            return _dendritic(net).ep_gradients(self, net, x, y, states_a, beta_a, states_b, beta_b)
        chain = self._chain(net)
        if chain is not None:
            beta_a, beta_b = float(beta_a), float(beta_b)
            if beta_a == beta_b:
                raise ValueError("ep_gradients needs two different beta values")
            B = np.shape(x)[0]
            sa = self._image_states(net, states_a, B, "states_a")
            sb = self._image_states(net, states_b, B, "states_b")
            y = self._as(y, (B, net.arch[-1]), "y") if net.output == "ce" else None
            return chain.ep_gradients(x, y, sa, beta_a, sb, beta_b)
        energy, act, ce, Ws, bs, _ = self._network(net)
        x = self._x(net, x)
        B = x.shape[0]
        beta_a, beta_b = float(beta_a), float(beta_b)
        if beta_a == beta_b:
            raise ValueError("ep_gradients needs two different beta values")
        sa = self._image_states(net, states_a, B, "states_a")
        sb = self._image_states(net, states_b, B, "states_b")
        if ce:
            y = self._as(y, (B, net.arch[-1]), "y")
        else:
            y = np.zeros((0, 0), dtype=self.dtype)
        gW = [np.empty(w.shape, dtype=self.dtype) for w in Ws]
        gb = [np.empty(b.shape, dtype=self.dtype) for b in bs]
        sp = self._sparse_scratch(B, x.shape[1], Ws[0].shape[0])
        _ep_gradients_kernel(
            x, y, Ws, bs, sa, sb, beta_a, beta_b, energy, act, ce, _SPARSE_MODES[self.input_sparsity], sp,
            tuple(gW), tuple(gb),
        )
        return gW, gb

    # --- the conv path ----------------------------------------------------------------
    def _image_states(self, net, states, batch: int, what: str) -> tuple:
        """``states`` of the relaxed layers as kernel arrays (B, *shape): (B, n) in a dense chain, (B, C, H, W) in a conv layer."""
        shapes = net.shapes[1 : net.n_dynamic + 1]
        if len(states) != len(shapes):
            raise ValueError(f"{what}: {len(states)} arrays for {len(shapes)} relaxed layers")
        return tuple(self._as(s, (batch, *sh), f"{what}[{i}]") for i, (s, sh) in enumerate(zip(states, shapes)))

    def _relax_chain(self, chain, net, x, n_steps, states, y, beta, drive1, gamma, clamp, anchor, coe, tol, status_tol):
        """:meth:`relax` of a conv network through :class:`~neuro_hts.backends.conv_kernels.ConvChain`."""
        x = chain.x(x)
        B = x.shape[0]
        n_steps = int(n_steps)
        if n_steps < 0:
            raise ValueError(f"n_steps must be >= 0, got {n_steps}")
        shapes = net.shapes[1 : net.n_dynamic + 1]
        if states is None:
            s_init = tuple(np.zeros((B, *sh), dtype=self.dtype) for sh in shapes)
        else:
            s_init = self._image_states(net, states, B, "states")
        beta = float(beta)
        if clamp not in _CLAMPS:
            raise ValueError(f"clamp must be one of {', '.join(_CLAMPS)}, got {clamp!r}")
        if beta != 0.0 or clamp == "target":
            if y is None:
                raise ValueError("a nudged phase (beta != 0) or a clamped one needs targets y")
            y = self._as(y, (B, net.arch[-1]), "y")
        drive1 = chain.input_drive(x) if drive1 is None else self._as(drive1, (B, *shapes[0]), "drive1")
        anchor_t = self._image_states(net, anchor, B, "anchor") if anchor is not None else None
        judged = float(tol) if tol is not None else float(status_tol)
        if n_steps == 0:
            return RelaxResult([s.copy() for s in s_init], np.zeros(B, dtype=self.dtype), 0, judged)
        return chain.relax(x, n_steps, s_init, y, beta, drive1, gamma, clamp, anchor_t, coe,
                           float(tol) if tol is not None else None, judged)
