"""Numba path for dendritic networks (docs/DENDRITIC.md): the reference's equations in float32.

:class:`~neuro_hts.backends.numba_backend.NumbaBackend` hands a network with ``dendritic``
connections (layers of shape [n], MSE output, leaky form) to :func:`relax`,
:func:`input_drive` and :func:`ep_gradients` here. Each step is, per relaxed layer, BLAS
products into preallocated buffers (the branch potentials ``r W^T`` of the basal branches
and ``r A^T`` of the apical ones, with the masked weights formed once per phase) and one
fused compiled loop (:func:`_branch_mean_into`: ReLU, mean over each unit's branches,
scale, accumulate) plus a fused leaky update with the nudge (:func:`_leaky_into`; a hidden
layer with a local error cost gets its drive there, :func:`_local_nudges`). The
first layer's basal drive, which sees only the clamped input, is computed once per batch
and reused by every phase. The EP contrast is :func:`neuro_hts.dynamics.ep_gradients` in
the backend's dtype (once per batch). Tested against the NumPy reference in
tests/test_dendritic.py (float32: states within 1e-5, updates within 1e-4 relative).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .. import dynamics
from ..dynamics import RelaxResult
from ..errors import ConfigError
__all__ = ["handles", "reasons", "input_drive", "relax", "ep_gradients"]

_ACTS = ("hard_sigmoid", "sigmoid4")


@njit(cache=True, inline="always")
def _act(u, act, one):
    """sigma(u): clip(u, 0, 1) (act 0) or 1 / (1 + exp(-(4u - 2))) (act 1), as numba_backend._act
    (not imported from it: numba_backend delegates to this module, and the import graph has no cycles)."""
    zero = one - one
    if act == 0:
        return zero if u < zero else (one if u > one else u)
    return one / (one + np.exp(-(4 * one * u - 2 * one)))


@njit(cache=True)
def _branch_mean_into(P, bias, has_bias, K, scale, out, accumulate):
    """out[b, j] (+)= scale / K sum_k max(0, P[b, j K + k] + bias[j K + k])."""
    B, n = out.shape
    zero = P.dtype.type(0.0)
    c = P.dtype.type(scale / K)
    for b in range(B):
        for j in range(n):
            tot = zero
            for k in range(K):
                v = P[b, j * K + k]
                if has_bias:
                    v += bias[j * K + k]
                if v > zero:
                    tot += v
            if accumulate:
                out[b, j] += c * tot
            else:
                out[b, j] = c * tot


@njit(cache=True)
def _leaky_into(s, h, bias, has_bias, dt, nudge, has_nudge, beta, act, out, outside):
    """out = s + dt (sigma(h + b + beta nudge) - s), per unit; with ``outside``
    (``nudge = "outside"``) out = s + dt (sigma(h + b) - s + beta nudge)."""
    one = s.dtype.type(1.0)
    B, n = s.shape
    for b in range(B):
        for j in range(n):
            u = h[b, j]
            if has_bias:
                u += bias[j]
            nu = one - one
            if has_nudge:
                if outside:
                    nu = beta * nudge[b, j]
                else:
                    u += beta * nudge[b, j]
            out[b, j] = s[b, j] + dt[j] * (_act(u, act, one) - s[b, j] + nu)


def reasons(net) -> list[str]:
    """Why this path cannot run ``net`` (empty: it can)."""
    out = []
    if net.spec is None or any(len(l.shape) != 1 for l in net.spec.layers):
        out.append("the dendritic Numba path runs layers of shape [n] only")
    elif any(c.kind not in ("dendritic", "dense") for c in net.spec.connections):
        out.append("the dendritic Numba path runs dendritic and dense connections only")
    if net.form != "leaky" or net.output != "mse" or net.activation not in _ACTS:
        out.append("the dendritic Numba path runs the leaky form with an MSE output (energy form or a readout: "
                   "backend 'numpy')")
    return out


def handles(net) -> bool:
    """Whether ``net`` has a dendritic connection (then this module, not the dense kernels, runs it)."""
    return net.spec is not None and any(c.kind == "dendritic" for c in net.spec.connections)


class _Layer:
    """One connection's arrays in the backend's dtype: masked weights (formed once per phase) and buffers."""

    def __init__(self, conn, dtype, B):
        from ..dendritic import Dendritic

        self.dendritic = isinstance(conn, Dendritic)
        if self.dendritic:
            self.W = np.ascontiguousarray(conn.basal_weight * conn.basal_mask, dtype=dtype)
            self.c = np.ascontiguousarray(conn.basal_bias, dtype=dtype)
            self.kb, self.ka, self.scale, self.apical = conn.kb, conn.ka, conn.scale, conn.apical
            self.P = np.empty((B, self.W.shape[0]), dtype=dtype)
            if conn.apical:
                self.A = np.ascontiguousarray(conn._apical_masked(), dtype=dtype)
                self.Q = np.empty((B, self.A.shape[0]), dtype=dtype)
        else:  # a dense connection in the chain: W v and symmetric feedback W^T u
            self.W = np.ascontiguousarray(conn.weight, dtype=dtype)
            self.apical = True
        self.post_bias = conn.post_bias

    def drive(self, r_pre, out):
        """out = Basal(r_pre) (dendritic) or W r_pre (dense)."""
        if self.dendritic:
            np.dot(r_pre, self.W.T, out=self.P)
            _branch_mean_into(self.P, self.c, True, self.kb, 1.0, out, False)
        else:
            np.dot(r_pre, self.W.T, out=out)

    def feedback_add(self, r_post, gamma, out, tmp):
        """out += gamma a Apical(r_post) (dendritic) or gamma W^T r_post (dense)."""
        if self.dendritic:
            if self.apical:
                np.dot(r_post, self.A.T, out=self.Q)
                _branch_mean_into(self.Q, self.Q[0], False, self.ka, gamma * self.scale, out, True)
        else:
            np.dot(r_post, self.W, out=tmp)
            out += tmp if gamma == 1.0 else gamma * tmp


def input_drive(backend, net, x):
    """Basal_1(x) (+ b_1 with a soma bias), (B, n_1), in the backend's dtype."""
    x = np.ascontiguousarray(x, dtype=backend.dtype)
    layer = _Layer(net.connections()[0], backend.dtype, x.shape[0])
    out = np.empty((x.shape[0], net.shapes[1][0]), dtype=backend.dtype)
    layer.drive(x, out)
    if layer.post_bias:
        out += net.biases[0].astype(backend.dtype)
    return out


def relax(backend, net, x, n_steps, states=None, y=None, beta=0.0, drive1=None, *, gamma=1.0, clamp="none",
          anchor=None, coe=0.0, tol=None, status_tol=1e-3) -> RelaxResult:
    """Up to ``n_steps`` synchronous steps (see :func:`neuro_hts.dynamics.relax`), float32 by default."""
    why = reasons(net)
    if why:
        raise ConfigError("backend 'numba' cannot run this network: " + "; ".join(why))
    dtype = backend.dtype
    x = np.ascontiguousarray(x, dtype=dtype)
    B = x.shape[0]
    sizes = [s[0] for s in net.shapes[1:]]
    L = len(sizes)
    cur = [np.zeros((B, n), dtype) for n in sizes] if states is None else [np.array(s, dtype=dtype) for s in states]
    if clamp not in ("none", "target", "hold"):
        raise ValueError(f"clamp must be one of none, target, hold, got {clamp!r}")
    if (beta != 0.0 or clamp == "target") and y is None:
        raise ValueError("a nudged phase (beta != 0) or a clamped one needs targets y")
    y = np.ascontiguousarray(y, dtype=dtype) if y is not None else None
    d1 = input_drive(backend, net, x) if drive1 is None else np.ascontiguousarray(drive1, dtype=dtype)
    judged = float(tol) if tol is not None else float(status_tol)
    residual = np.zeros(B, dtype=dtype)
    if n_steps == 0:
        return RelaxResult([c.copy() for c in cur], residual, 0, judged)
    layers = [_Layer(c, dtype, B) for c in net.connections()]
    biases = [np.ascontiguousarray(b, dtype=dtype) for b in net.biases]
    dts = [np.ascontiguousarray(d, dtype=dtype) for d in net.dts]
    anchor = [np.ascontiguousarray(a, dtype=dtype) for a in anchor] if anchor is not None else None
    act = _ACTS.index(net.activation)
    h = [np.empty((B, n), dtype) for n in sizes]
    tmp = [np.empty((B, n), dtype) for n in sizes]
    nxt = [np.empty((B, n), dtype) for n in sizes]
    nudge = np.empty((B, sizes[-1]), dtype)
    local = _local_readouts(net, dtype, L)
    taken = 0
    for _ in range(int(n_steps)):
        for l in range(L):
            if l == 0:
                h[0][...] = d1
            else:
                layers[l].drive(cur[l - 1], h[l])
            if l + 1 < L:
                layers[l + 1].feedback_add(cur[l + 1], gamma, h[l], tmp[l])
        # local error costs (nudged phases only): -dC_l/ds_l of each hidden layer with a readout
        lnudge = _local_nudges(local, cur, y) if (local[0] and beta != 0.0) else {}
        for l in range(L):
            top = l == L - 1
            if top and clamp != "none":
                nxt[l][...] = y if clamp == "target" else cur[l]
                continue
            g = nudge if top else lnudge.get(l)
            has_nudge = (beta != 0.0) if top else (g is not None)
            if top and has_nudge:
                np.subtract(y, cur[l], out=nudge)  # MSE: -dC/ds = y - s
            add_bias = layers[l].post_bias and l > 0  # layer 1's bias is in d1
            _leaky_into(cur[l], h[l], biases[l], add_bias, dts[l], g if has_nudge else nudge, has_nudge,
                        dtype.type(beta), act, nxt[l], net.nudge == "outside")
        if anchor is not None:
            for l in range(L):
                nxt[l] *= dtype.type(1.0 - coe)
                nxt[l] += dtype.type(coe) * anchor[l]
        taken += 1
        residual = np.max(np.stack([np.abs(a - b).max(axis=1) for a, b in zip(nxt, cur)]), axis=0)
        cur, nxt = nxt, cur
        if tol is not None and residual.max() <= tol:
            break
    return RelaxResult([c.copy() for c in cur], residual.astype(dtype), taken, judged)


def _local_readouts(net, dtype, L) -> tuple:
    """(readouts, beta_l, ce) of ``net.local``: readouts a list of (0-based layer, R_l in ``dtype``) for the
    hidden layers (empty without local costs)."""
    local = getattr(net, "local", None)
    if local is None:
        return [], 0.0, False
    ros = [(l - 1, np.ascontiguousarray(w, dtype=dtype)) for l, w in zip(local.layers, local.weights) if l < L]
    return ros, float(local.beta), local.loss == "ce"


def _local_nudges(local, cur, y) -> dict:
    """-dC_l/ds_l = beta_l (y - z) R_l, z = R_l s_l (softmax of it for CE), per hidden layer with a readout
    (:func:`neuro_hts.dynamics.local_nudges`, leaky form: r = s), by 0-based layer."""
    ros, lbeta, ce = local
    out = {}
    for i, R in ros:
        z = cur[i] @ R.T
        if ce:
            z = dynamics.softmax(z)
        out[i] = np.ascontiguousarray(lbeta * ((y - z) @ R), dtype=cur[i].dtype)
    return out


def ep_gradients(backend, net, x, y, states_a, beta_a, states_b, beta_b):
    """The EP contrast (:func:`neuro_hts.dynamics.ep_gradients`) in the backend's dtype."""
    dtype = backend.dtype
    x = np.ascontiguousarray(x, dtype=dtype)
    sa = [np.asarray(s, dtype=dtype) for s in states_a]
    sb = [np.asarray(s, dtype=dtype) for s in states_b]
    gW, gb = dynamics.ep_gradients(net, x, y, sa, beta_a, sb, beta_b)
    return [g.astype(dtype, copy=False) for g in gW], [g.astype(dtype, copy=False) for g in gb]
