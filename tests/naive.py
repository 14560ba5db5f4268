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
    2**-D) for adjusted adaptation, s <- s + tz(c (s_anchor - s), D). A dense chain is the
    all-dense case of :func:`fixed_step_chain`, whose loops it runs.
    """
    return fixed_step_chain(bundle, x_int, states, y_int, beta_int, gamma_int=gamma_int, clamp=clamp, anchor=anchor,
                            coe_int=coe_int)


def fixed_relax(bundle, x, n_steps, states=None, y=None, beta=0.0, *, gamma=1.0, clamp="none", anchor=None, coe=0.0,
                tol=None):
    """Up to ``n_steps`` steps of :func:`fixed_step` from float inputs; returns (states, residual, steps taken)."""
    return fixed_relax_chain(bundle, x, n_steps, states, y, beta, gamma=gamma, clamp=clamp, anchor=anchor, coe=coe,
                             tol=tol)


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


def _conv_loops(W, v, stride, padding):
    """(W * v)[b, o, y, x] = sum_{c,i,j} W[o,c,i,j] v[b, c, y*stride + i - padding, x*stride + j - padding] (zeros outside)."""
    B, C, H, Wd = v.shape
    O, _, k, _ = W.shape
    ho, wo = (H + 2 * padding - k) // stride + 1, (Wd + 2 * padding - k) // stride + 1
    out = np.zeros((B, O, ho, wo))
    for b in range(B):
        for o in range(O):
            for y in range(ho):
                for x in range(wo):
                    acc = 0.0
                    for c in range(C):
                        for i in range(k):
                            for j in range(k):
                                yy, xx = y * stride + i - padding, x * stride + j - padding
                                if 0 <= yy < H and 0 <= xx < Wd:
                                    acc += W[o, c, i, j] * v[b, c, yy, xx]
                    out[b, o, y, x] = acc
    return out


def _pool_windows(shape, size, stride):
    """(y, x) -> list of (yy, xx) pixels of each pooling window of a (.., H, W) map."""
    H, Wd = shape[-2:]
    hp, wp = (H - size) // stride + 1, (Wd - size) // stride + 1
    return {(y, x): [(y * stride + i, x * stride + j) for i in range(size) for j in range(size)]
            for y in range(hp) for x in range(wp)}, hp, wp


def _argmax_loops(z, size, stride):
    """Position of the first maximum of each pooling window: dict (b, c, y, x) -> (yy, xx)."""
    wins, _, _ = _pool_windows(z.shape, size, stride)
    arg = {}
    for b in range(z.shape[0]):
        for c in range(z.shape[1]):
            for (y, x), pix in wins.items():
                best = pix[0]
                for p in pix[1:]:
                    if z[b, c, p[0], p[1]] > z[b, c, best[0], best[1]]:
                        best = p
                arg[b, c, y, x] = best
    return arg


def conv2d_apply(W, v, stride=1, padding=0, pool="none", pool_size=2, pool_stride=None):
    """P(W * v) by loops: pool 'none', 'avg' (window mean) or 'max' (window maximum)."""
    z = _conv_loops(W, v, stride, padding)
    if pool == "none":
        return z
    pool_stride = pool_stride or pool_size
    wins, hp, wp = _pool_windows(z.shape, pool_size, pool_stride)
    out = np.zeros(z.shape[:2] + (hp, wp))
    for b in range(z.shape[0]):
        for c in range(z.shape[1]):
            for (y, x), pix in wins.items():
                vals = [z[b, c, p[0], p[1]] for p in pix]
                out[b, c, y, x] = sum(vals) / len(vals) if pool == "avg" else max(vals)
    return out


def conv2d_apply_T(W, u, r_pre, stride=1, padding=0, pool="none", pool_size=2, pool_stride=None):
    """A(r_pre)^T u by loops: unpool u (spread evenly, or put at the argmax of W * r_pre), then
    the transposed convolution g[b,c,yy,xx] = sum W[o,c,i,j] z_u[b,o,y,x] over yy = y*stride + i - padding."""
    B, C, H, Wd = r_pre.shape
    O, _, k, _ = W.shape
    ho, wo = (H + 2 * padding - k) // stride + 1, (Wd + 2 * padding - k) // stride + 1
    if pool == "none":
        zu = np.array(u, dtype=float)
    else:
        pool_stride = pool_stride or pool_size
        wins, _, _ = _pool_windows((ho, wo), pool_size, pool_stride)
        arg = _argmax_loops(_conv_loops(W, r_pre, stride, padding), pool_size, pool_stride) if pool == "max" else None
        zu = np.zeros((B, O, ho, wo))
        for b in range(B):
            for o in range(O):
                for (y, x), pix in wins.items():
                    if pool == "avg":
                        for p in pix:
                            zu[b, o, p[0], p[1]] += u[b, o, y, x] / len(pix)
                    else:
                        p = arg[b, o, y, x]
                        zu[b, o, p[0], p[1]] += u[b, o, y, x]
    out = np.zeros((B, C, H, Wd))
    for b in range(B):
        for o in range(O):
            for y in range(ho):
                for x in range(wo):
                    for c in range(C):
                        for i in range(k):
                            for j in range(k):
                                yy, xx = y * stride + i - padding, x * stride + j - padding
                                if 0 <= yy < H and 0 <= xx < Wd:
                                    out[b, c, yy, xx] += W[o, c, i, j] * zu[b, o, y, x]
    return out


def dendritic_branches(W, M, c, v, n_branches, scale=1.0):
    """scale * (1/K) sum_b max(0, sum_k W[j K + b, k] M[j K + b, k] v[k] + c[j K + b]), by loops (c None: no bias)."""
    B, (rows, n_in) = v.shape[0], W.shape
    n_soma = rows // n_branches
    out = np.zeros((B, n_soma))
    for s in range(B):
        for j in range(n_soma):
            tot = 0.0
            for b in range(n_branches):
                r = j * n_branches + b
                p = sum(W[r, k] * (1.0 if M is None else M[r, k]) * v[s, k] for k in range(n_in))
                p += 0.0 if c is None else c[r]
                tot += max(0.0, p)
            out[s, j] = scale * tot / n_branches
    return out


# ------------------------------------------------------------------ fixed point with conv2d layers
def _int_conv(W, a, stride, padding):
    """(Wm * a)[o, y, x] = sum_{c,i,j} Wm[o,c,i,j] a[c, y*stride + i - padding, x*stride + j - padding] (Python ints)."""
    C, H, Wd = a.shape
    O, _, k, _ = W.shape
    ho, wo = (H + 2 * padding - k) // stride + 1, (Wd + 2 * padding - k) // stride + 1
    z = np.zeros((O, ho, wo), dtype=object)
    for o in range(O):
        for y in range(ho):
            for x in range(wo):
                acc = 0
                for c in range(C):
                    for i in range(k):
                        for j in range(k):
                            yy, xx = y * stride + i - padding, x * stride + j - padding
                            if 0 <= yy < H and 0 <= xx < Wd:
                                acc += int(W[o, c, i, j]) * int(a[c, yy, xx])
                z[o, y, x] = acc
    return z


def _int_pool(z, pool, size, stride):
    """(pooled, argmax) of an integer map (O, H, W): the window's first maximum (max), its SUM (avg), z (none)."""
    if pool == "none":
        return z, None
    wins, hp, wp = _pool_windows(z.shape, size, stride)
    out = np.zeros((z.shape[0], hp, wp), dtype=object)
    arg = {}
    for c in range(z.shape[0]):
        for (y, x), pix in wins.items():
            vals = [z[c, p[0], p[1]] for p in pix]
            if pool == "avg":
                out[c, y, x] = sum(vals)
            else:
                best = 0
                for q in range(1, len(vals)):
                    if vals[q] > vals[best]:
                        best = q
                out[c, y, x] = vals[best]
                arg[c, y, x] = pix[best]
    return out, arg


def _int_conv_T(W, u, arg, pre_shape, stride, padding, pool, size, pool_stride):
    """Wm^T * P^T u (Python ints): u at the window's argmax (max) or on all its pixels (avg), then the transposed conv."""
    C, H, Wd = pre_shape
    O, _, k, _ = W.shape
    ho, wo = (H + 2 * padding - k) // stride + 1, (Wd + 2 * padding - k) // stride + 1
    if pool == "none":
        g = u
    else:
        g = np.zeros((O, ho, wo), dtype=object)
        wins, _, _ = _pool_windows((ho, wo), size, pool_stride)
        for o in range(O):
            for (y, x), pix in wins.items():
                for p in ([arg[o, y, x]] if pool == "max" else pix):
                    g[o, p[0], p[1]] += u[o, y, x]
    out = np.zeros((C, H, Wd), dtype=object)
    for o in range(O):
        for y in range(ho):
            for x in range(wo):
                for c in range(C):
                    for i in range(k):
                        for j in range(k):
                            yy, xx = y * stride + i - padding, x * stride + j - padding
                            if 0 <= yy < H and 0 <= xx < Wd:
                                out[c, yy, xx] += int(W[o, c, i, j]) * g[o, y, x]
    return out


def fixed_step_chain(bundle, x_int, states, y_int, beta_int, *, gamma_int=None, clamp="none", anchor=None, coe_int=0):
    """:func:`fixed_step` for a chain of conv2d and dense layers (fixed_sim's module doc, "Conv layers").

    ``x_int`` and ``states`` flat (B, n_l) in C order; returns flat int64 arrays.
    """
    S, F = bundle.state_frac_bits, bundle.activation_frac_bits
    D, IB, SB = bundle.target.decay.bits, bundle.target.state.input_bits, bundle.target.state.bits
    one = 1 << S
    g = (1 << D) if gamma_int is None else int(gamma_int)
    shapes = bundle.shapes
    conns = bundle.connection_options()

    energy = bundle.form == "energy"

    def rho(u):
        """The integer activation: clip, or rint(one * sigmoid4(u / one)) (the table's entries)."""
        if bundle.activation == "hard_sigmoid":
            return max(0, min(one, u))
        u = max(-3 * one, min(4 * one, u))  # beyond, the value is already 0 / one (and exp would overflow)
        return int(np.rint(one / (1.0 + math.exp(-(4.0 * u / one - 2.0)))))

    def rho_prime(s):
        """rho'(s) in units 2**-S: the closed-interval indicator, or floor(4 r (one - r) / one)."""
        if bundle.activation == "hard_sigmoid":
            return one if 0 <= s <= one else 0
        r = rho(s)
        return (4 * r * (one - r)) // one

    def act(s):
        if energy:  # the energy form sends rho(s)
            s = rho(s)
        if S >= F:
            n = S - F
            return s if n == 0 else (s + (1 << (n - 1))) >> n
        return s << (F - S)

    L = len(states)  # relaxed layers (a softmax readout's layer is not one)
    B = len(x_int)
    new = [np.zeros((B, int(np.prod(shapes[l + 1]))), dtype=np.int64) for l in range(L)]
    for b in range(B):
        a = [np.array([int(v) for v in x_int[b]], dtype=object)]
        a += [np.array([act(int(v)) for v in s[b]], dtype=object) for s in states]
        up, ctx = [], []
        for l in range(L):  # bottom-up input of every layer and its context
            lb, (kind, o) = bundle.layers[l], conns[l]
            k = lb.weight_exponent - F + S
            if kind == "conv2d":
                z = _int_conv(lb.weight_mantissa, a[l].reshape(shapes[l]), o["stride"], o["padding"])
                p, arg = _int_pool(z, o["pool"], o["pool_size"], o["pool_stride"])
                sh = k - ((o["pool_size"] ** 2).bit_length() - 1 if o["pool"] == "avg" else 0)
                u = [shift(int(p[c, y, x]), sh) + int(lb.bias[c]) for c in range(p.shape[0])
                     for y in range(p.shape[1]) for x in range(p.shape[2])]
                ctx.append((arg, sh))
            else:
                W = lb.weight_mantissa
                u = [shift(sum(int(W[i, j]) * a[l][j] for j in range(W.shape[1])), k) + int(lb.bias[i])
                     for i in range(W.shape[0])]
                ctx.append((None, k))
            up.append(u)
        y_top = y_int[b] if y_int is not None else None
        if bundle.output == "ce" and beta_int != 0:
            y_top = _readout_target(bundle, a[L], states[L - 1][b], y_int[b], rho, rho_prime)
        for l in range(L):
            lb = bundle.layers[l]
            down = None
            if l < L - 1:  # top-down input from layer l + 1
                nb, (kind, o) = bundle.layers[l + 1], conns[l + 1]
                arg, sh = ctx[l + 1]
                if kind == "conv2d":
                    d = _int_conv_T(nb.weight_mantissa, a[l + 2].reshape(shapes[l + 2]), arg, shapes[l + 1],
                                    o["stride"], o["padding"], o["pool"], o["pool_size"], o["pool_stride"])
                    down = [shift(int(v), sh) for v in d.reshape(-1)]
                else:
                    Wn = nb.weight_mantissa
                    down = [shift(sum(int(Wn[j, i]) * a[l + 2][j] for j in range(Wn.shape[0])), sh)
                            for i in range(Wn.shape[1])]
            for i in range(new[l].shape[1]):
                s = int(states[l][b][i])
                if l == L - 1 and clamp != "none":
                    v = int(y_top[i]) if clamp == "target" else s
                else:
                    h = up[l][i]
                    if down is not None:
                        h += down[i] if g == 1 << D else tz(g * down[i], D)
                    h = sat(h, IB)
                    if energy:  # s <- clip(s + dt (rho'(s) h + beta (y - s) - s), 0, 1)
                        drive = tz(rho_prime(s) * h, S)
                        if l == L - 1 and beta_int != 0:
                            drive += tz(beta_int * (int(y_top[i]) - s), D)
                        drive = sat(drive, IB)
                        v = max(0, min(one, s + tz(int(lb.decay[i]) * (drive - s), D)))
                    else:
                        if l == L - 1 and beta_int != 0:
                            h = sat(h + tz(beta_int * (int(y_top[i]) - s), D), IB)
                        sig = rho(h)
                        v = sat(s + tz(int(lb.decay[i]) * (sig - s), D), SB)
                if anchor is not None:
                    v = v + tz(int(coe_int) * (int(anchor[l][b][i]) - v), D)
                new[l][b, i] = v
    return new


def softmax_int(z, S):
    """Integer softmax (units 2**-S) of integer logits, as fixed_point.softmax_int's docstring states it."""
    table = [int(v) for v in np.rint(np.exp2(20 - np.arange(1024) / 1024.0))]
    zmax = max(z)
    e = []
    for zi in z:
        v = (zmax - zi) * 94548  # rint(log2(e) * 2**16)
        n = v >> (S + 16)
        e.append(0 if n > 20 else table[(v >> (S + 6)) & 1023] >> n)
    total = sum(e)
    return [(ei << S) // total for ei in e]


def _readout_target(bundle, a_top, s_top, y_cls, rho, rho_prime):
    """The top layer's target y' = s + -dC/ds of a softmax readout (fixed_sim's module doc), Python ints."""
    S, F, IB = bundle.state_frac_bits, bundle.activation_frac_bits, bundle.target.state.input_bits
    lb = bundle.layers[-1]
    W, k = lb.weight_mantissa, lb.weight_exponent - F + S
    C, n = W.shape
    z = [sat(shift(sum(int(W[c, j]) * int(a_top[j]) for j in range(n)), k) + int(lb.bias[c]), IB) for c in range(C)]
    p = softmax_int(z, S)

    def payload(v):
        return v if S == F else ((v + (1 << (S - F - 1))) >> (S - F) if S > F else v << (F - S))

    err = [payload(int(y_cls[c]) - p[c]) for c in range(C)]
    out = []
    for i in range(n):
        fb = shift(sum(int(W[c, i]) * err[c] for c in range(C)), k)
        s = int(s_top[i])
        out.append(s + fb if bundle.form == "leaky" else s + tz(rho_prime(s) * fb, S))
    return out


def fixed_relax_chain(bundle, x, n_steps, states=None, y=None, beta=0.0, *, gamma=1.0, clamp="none", anchor=None,
                      coe=0.0, tol=None):
    """Up to ``n_steps`` steps of :func:`fixed_step_chain` from float inputs (flat or images); (flat states, residual, steps)."""
    S, F, D = bundle.state_frac_bits, bundle.activation_frac_bits, bundle.target.decay.bits
    one = 1 << S
    B = len(x)
    xf = np.asarray(x, dtype=np.float64).reshape(B, -1)
    if bundle.form == "energy":  # layer 1 sees rho(x), quantized on the host
        xf = np.clip(xf, 0.0, 1.0) if bundle.activation == "hard_sigmoid" else 1.0 / (1.0 + np.exp(-(4.0 * xf - 2.0)))
    x_int = np.rint(xf * 2.0**F).astype(np.int64)
    y_int = None if y is None else np.rint(np.asarray(y, dtype=np.float64) * one).astype(np.int64)
    frac = lambda v: int(np.rint(float(v) * (1 << D)))  # noqa: E731
    n_dyn = len(bundle.layers) - (1 if bundle.output == "ce" else 0)
    sizes = [int(np.prod(sh)) for sh in bundle.shapes[1:n_dyn + 1]]
    st = [np.zeros((B, n), dtype=np.int64) for n in sizes] if states is None \
        else [np.asarray(s, dtype=np.int64).reshape(B, -1) for s in states]
    anchor = None if anchor is None else [np.asarray(s, dtype=np.int64).reshape(B, -1) for s in anchor]
    residual = np.zeros(B, dtype=np.int64)
    taken = 0
    for _ in range(n_steps):
        new = fixed_step_chain(bundle, x_int, st, y_int, frac(beta), gamma_int=frac(gamma), clamp=clamp,
                               anchor=anchor, coe_int=frac(coe))
        residual = np.max([np.abs(a - b).max(axis=1) for a, b in zip(new, st)], axis=0)
        st = new
        taken += 1
        if tol is not None and residual.max() <= int(math.floor(tol * one)):
            break
    return st, residual, taken


def fixed_logits(bundle, states):
    """The softmax readout's integer logits (B, classes) in Python ints: sat(shift_k(Wm_L a_{L-1}) + b_L, IB).

    ``a_{L-1}`` is what the top relaxed layer sends (fixed_sim's module doc); no softmax
    (the prediction is the argmax of the logits).
    """
    S, F, IB = bundle.state_frac_bits, bundle.activation_frac_bits, bundle.target.state.input_bits
    one = 1 << S
    lb = bundle.layers[-1]
    W, k = lb.weight_mantissa, lb.weight_exponent - F + S
    top = np.asarray(states[-1], dtype=np.int64).reshape(len(states[-1]), -1)
    out = np.zeros((top.shape[0], W.shape[0]), dtype=np.int64)
    for b in range(top.shape[0]):
        a = []
        for v in top[b]:
            v = int(v)
            if bundle.form == "energy":
                v = max(0, min(one, v)) if bundle.activation == "hard_sigmoid" else \
                    int(np.rint(one / (1.0 + math.exp(-(4.0 * v / one - 2.0)))))
            a.append(v if S == F else ((v + (1 << (S - F - 1))) >> (S - F) if S > F else v << (F - S)))
        for i in range(W.shape[0]):
            out[b, i] = sat(shift(sum(int(W[i, j]) * a[j] for j in range(W.shape[1])), k) + int(lb.bias[i]), IB)
    return out
