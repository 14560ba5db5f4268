"""Slow, obviously correct references the engines are tested against (STUMPY's pattern).

Plain Python: loops over samples and neurons, Python ints for the fixed-point
arithmetic, written from docs/MODEL.md and the module docstring of
neuro_hts/hardware/fixed_sim.py without calling the package's kernels or helpers.
"""

from __future__ import annotations

import math

import numpy as np


# ------------------------------------------------------------------ integer arithmetic
def tz(v: int, n: int) -> int:
    """v / 2**n rounded toward zero."""
    return -((-v) >> n) if v < 0 else v >> n


def sat(v: int, bits: int) -> int:
    lim = (1 << (bits - 1)) - 1
    return max(-lim, min(lim, v))


def shift(v: int, k: int) -> int:
    """v * 2**k: left shift, or Python's floor shift for k < 0 (Lava Dense's weight_exp)."""
    return v << k if k >= 0 else v >> (-k)


def fixed_step(bundle, x_int, states, y_int, beta_int, *, gamma_int=None, clamp="none", anchor=None, coe_int=0):
    """One synchronous integer step in plain Python ints (fixed_sim's module doc); returns int64 arrays.

    ``gamma_int``: feedback gain in units 2**-D (None: 2**D, no scaling); ``clamp``
    ``"target"``/``"hold"`` for the top layer; ``anchor`` states and ``coe_int`` (units
    2**-D) for adjusted adaptation, s <- s + tz(c (s_anchor - s), D).
    """
    S, F = bundle.state_frac_bits, bundle.activation_frac_bits
    D, IB, SB = bundle.target.decay.bits, bundle.target.state.input_bits, bundle.target.state.bits
    one = 1 << S
    g = (1 << D) if gamma_int is None else int(gamma_int)

    def act(s):
        if S >= F:
            n = S - F
            return s if n == 0 else (s + (1 << (n - 1))) >> n
        return s << (F - S)

    L = len(bundle.layers)
    B = len(x_int)
    a = [[int(v) for v in row] for row in x_int]
    acts = [a] + [[[act(int(v)) for v in row] for row in s] for s in states]
    new = []
    for l in range(L):
        lb = bundle.layers[l]
        W = lb.weight_mantissa.tolist()
        k = lb.weight_exponent - F + S
        out = []
        for b in range(B):
            row = []
            for i in range(len(W)):
                s = int(states[l][b][i])
                if l == L - 1 and clamp != "none":
                    v = int(y_int[b][i]) if clamp == "target" else s
                else:
                    h = shift(sum(W[i][j] * acts[l][b][j] for j in range(len(W[i]))), k) + int(lb.bias[i])
                    if l < L - 1:
                        nb = bundle.layers[l + 1]
                        Wn = nb.weight_mantissa.tolist()
                        kn = nb.weight_exponent - F + S
                        down = shift(sum(Wn[j][i] * acts[l + 2][b][j] for j in range(len(Wn))), kn)
                        if g != 1 << D:
                            down = tz(g * down, D)
                        h += down
                    h = sat(h, IB)
                    if l == L - 1 and beta_int != 0:
                        h = sat(h + tz(beta_int * (int(y_int[b][i]) - s), D), IB)
                    if bundle.activation == "hard_sigmoid":
                        sig = max(0, min(one, h))
                    else:
                        sig = int(np.rint(one / (1.0 + math.exp(-(4.0 * h / one - 2.0)))))
                    v = sat(s + tz(int(lb.decay[i]) * (sig - s), D), SB)
                if anchor is not None:
                    v = v + tz(int(coe_int) * (int(anchor[l][b][i]) - v), D)
                row.append(v)
            out.append(row)
        new.append(np.array(out, dtype=np.int64).reshape(B, len(W)))
    return new


def fixed_relax(bundle, x, n_steps, states=None, y=None, beta=0.0, *, gamma=1.0, clamp="none", anchor=None, coe=0.0,
                tol=None):
    """Up to ``n_steps`` steps of :func:`fixed_step` from float inputs; returns (states, residual, steps taken)."""
    S, F, D = bundle.state_frac_bits, bundle.activation_frac_bits, bundle.target.decay.bits
    one = 1 << S
    B = len(x)
    x_int = np.rint(np.asarray(x, dtype=np.float64) * 2.0**F).astype(np.int64)
    y_int = None if y is None else np.rint(np.asarray(y, dtype=np.float64) * one).astype(np.int64)
    frac = lambda v: int(np.rint(float(v) * (1 << D)))  # noqa: E731
    st = [np.zeros((B, lb.weight_mantissa.shape[0]), dtype=np.int64) for lb in bundle.layers] if states is None \
        else [np.asarray(s, dtype=np.int64) for s in states]
    residual = np.zeros(B, dtype=np.int64)
    taken = 0
    for _ in range(n_steps):
        new = fixed_step(bundle, x_int, st, y_int, frac(beta), gamma_int=frac(gamma), clamp=clamp, anchor=anchor,
                         coe_int=frac(coe))
        residual = np.max([np.abs(a - b).max(axis=1) for a, b in zip(new, st)], axis=0)
        st = new
        taken += 1
        if tol is not None and residual.max() <= int(math.floor(tol * one)):
            break
    return st, residual, taken


# ------------------------------------------------------------------ float reference
def float_relax(net, x, n_steps, states=None, y=None, beta=0.0, *, gamma=1.0, clamp="none", anchor=None, coe=0.0):
    """Leaky-form, MSE, hard- or sigmoid4 relaxation written out per neuron (float64)."""
    from neuro_hts.activations import get_activation

    sigma = get_activation(net.activation)[0]
    L = net.n_layers
    B = x.shape[0]
    st = [np.zeros((B, w.shape[0])) for w in net.weights] if states is None else [np.array(s, dtype=float) for s in states]
    for _ in range(n_steps):
        new = []
        for l in range(L):
            out = np.empty_like(st[l])
            for b in range(B):
                for i in range(st[l].shape[1]):
                    if l == L - 1 and clamp != "none":
                        v = y[b, i] if clamp == "target" else st[l][b, i]
                    else:
                        pre = x[b] if l == 0 else st[l - 1][b]
                        h = sum(net.weights[l][i, j] * pre[j] for j in range(pre.shape[0])) + net.biases[l][i]
                        if l < L - 1:
                            h += gamma * sum(net.weights[l + 1][j, i] * st[l + 1][b, j] for j in range(st[l + 1].shape[1]))
                        if l == L - 1 and beta:
                            h += beta * (y[b, i] - st[l][b, i])
                        v = st[l][b, i] + net.dts[l][i] * (float(sigma(h)) - st[l][b, i])
                    if anchor is not None:
                        v = (1 - coe) * v + coe * anchor[l][b, i]
                    out[b, i] = v
            new.append(out)
        st = new
    return st


# ------------------------------------------------------------------ connection kinds
def dense_apply(W, v):
    """(W v)_bi = sum_j W_ij v_bj, by loops."""
    B, (n_out, n_in) = v.shape[0], W.shape
    out = np.zeros((B, n_out))
    for b in range(B):
        for i in range(n_out):
            out[b, i] = sum(W[i, j] * v[b, j] for j in range(n_in))
    return out


def dense_apply_T(W, u):
    """(W^T u)_bj = sum_i W_ij u_bi, by loops."""
    B, (n_out, n_in) = u.shape[0], W.shape
    out = np.zeros((B, n_in))
    for b in range(B):
        for j in range(n_in):
            out[b, j] = sum(W[i, j] * u[b, i] for i in range(n_out))
    return out
