"""The conv fast path of the ``numba`` backend: im2col + BLAS gemm convolutions, Numba kernels.

:class:`ConvChain` runs a chain of ``conv2d`` and ``dense`` connections (C x H x W and
[n] layers, docs/CONV.md) with the semantics of :mod:`neuro_hts.dynamics` -- the same
relaxation (both forms, clamps, gamma, anchor, tol) and the same EP gradients -- in float32
or float64. :class:`~neuro_hts.backends.numba_backend.NumbaBackend` hands it every network
that is not a dense chain. Tests: tests/test_conv_fast.py (equal to the NumPy reference
within a stated tolerance).

Layout. States are kept as the reference keeps them, (B, C, H, W) in C order. A convolution
``W * v`` is one gemm over the whole batch::

    cols[(c, i, j), (b, y, x)] = v_pad[b, c, y s + i, x s + j]           (im2col, _im2col)
    z = W2 @ cols,   W2 = W reshaped (C_out, C_in k k)                   (z laid out (C_out, B, H_conv, W_conv))

the pooling kernel (``_pool_forward``) reads z in that layout and writes the pooled drive
in (B, C_out, H_pool, W_pool), recording each window's argmax (max pooling); the feedback
is the reverse: ``_pool_backward`` scatters the post state to (C_out, B, H_conv, W_conv)
(P^T), one gemm ``W2^T @ g`` gives the columns, ``_col2im`` adds them back to the pre
layer's pixels. The weight gradient is ``g @ cols^T``. Dense connections are one gemm
each way, as in the dense kernels. The elementwise work of a layer (bias + feedback +
nudge + activation + leaky or energy update + the residual) is one fused loop
(``_layer_update``). Local error costs (``net.local``) put each hidden layer's drive
beta * (-dC_l/ds_l) in that loop's nudge slot in the nudged phases (:meth:`ConvChain.local_nudges`,
two small gemms per layer and step; tests/test_local_fast.py).

Per step and conv connection between relaxed layers: one im2col, two gemms, one col2im
and the two pooling passes; the input connection's drive (W_1 * x pooled, + b_1) is
computed once per phase. The step loop runs in Python: at the sizes where convolutions
cost anything (models/bench_cnn_laborieux.toml: ~0.3 G multiply-adds per gemm) the call
overhead is well below 1 %.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..connections import Dense
from ..costs import MSE, SoftmaxReadout
from ..costs import softmax as _softmax
from ..dynamics import RelaxResult, as_input
from ..activations import get_activation

__all__ = ["ConvChain", "POOL_CODES"]

#: pooling -> kernel code
POOL_CODES = {"none": 0, "avg": 1, "max": 2}
#: im2col entries per chunk of samples (a convolution is one im2col + gemm per chunk; 0: the
#: whole batch at once). 2^18 floats = 1 MiB in float32: measured in BENCHMARKS.md.
CHUNK_ELEMENTS = 1 << 18


# --------------------------------------------------------------------------------------
# kernels


@njit(cache=True, inline="always")
def _act(u, act, one):
    """sigma(u), as numba_backend._act (not imported: numba_backend hands conv nets to this module)."""
    zero = one - one
    if act == 0:
        return zero if u < zero else (one if u > one else u)
    return one / (one + np.exp(-(4 * one * u - 2 * one)))


@njit(cache=True, inline="always")
def _act_prime(u, act, one):
    """sigma'(u), as numba_backend._act_prime: 1 on 0 <= u <= 1 else 0 (act 0), 4 s (1 - s) (act 1)."""
    zero = one - one
    if act == 0:
        return one if (u >= zero and u <= one) else zero
    s = one / (one + np.exp(-(4 * one * u - 2 * one)))
    return 4 * one * s * (one - s)


@njit(cache=True, inline="always")
def _valid_x(j, stride, pad, W, Wo):
    """The output columns x whose input column x stride + j - pad lies in [0, W): [lo, hi)."""
    lo = 0
    while lo < Wo and lo * stride + j - pad < 0:
        lo += 1
    hi = Wo
    while hi > lo and (hi - 1) * stride + j - pad >= W:
        hi -= 1
    return lo, hi


@njit(cache=True)
def _im2col(v, k, stride, pad, Ho, Wo, cols):
    """cols[(c k + i) k + j, (b Ho + y) Wo + x] = v[b, c, y stride + i - pad, x stride + j - pad] (0 outside).

    Row by row of ``cols``, each written once front to back; plain indices (no array views
    in the loops: making one per input row cost as much as the copy).
    """
    B, C, H, W = v.shape
    zero = cols.dtype.type(0.0)
    n = Ho * Wo
    for c in range(C):
        for i in range(k):
            for j in range(k):
                r = (c * k + i) * k + j
                lo, hi = _valid_x(j, stride, pad, W, Wo)
                off = j - pad
                for b in range(B):
                    for y in range(Ho):
                        yy = y * stride + i - pad
                        base = b * n + y * Wo
                        if yy < 0 or yy >= H:
                            for x in range(Wo):
                                cols[r, base + x] = zero
                            continue
                        for x in range(lo):
                            cols[r, base + x] = zero
                        if stride == 1:
                            for x in range(lo, hi):
                                cols[r, base + x] = v[b, c, yy, x + off]
                        else:
                            for x in range(lo, hi):
                                cols[r, base + x] = v[b, c, yy, x * stride + off]
                        for x in range(hi, Wo):
                            cols[r, base + x] = zero


@njit(cache=True)
def _col2im(cols, k, stride, pad, Ho, Wo, out):
    """The adjoint of :func:`_im2col`: out[b, c, y s + i - p, x s + j - p] += cols[(c k + i) k + j, (b Ho + y) Wo + x]."""
    B, C, H, W = out.shape
    out[...] = out.dtype.type(0.0)
    n = Ho * Wo
    for c in range(C):
        for i in range(k):
            for j in range(k):
                r = (c * k + i) * k + j
                lo, hi = _valid_x(j, stride, pad, W, Wo)
                off = j - pad
                for b in range(B):
                    for y in range(Ho):
                        yy = y * stride + i - pad
                        if yy < 0 or yy >= H:
                            continue
                        base = b * n + y * Wo
                        if stride == 1:
                            for x in range(lo, hi):
                                out[b, c, yy, x + off] += cols[r, base + x]
                        else:
                            for x in range(lo, hi):
                                out[b, c, yy, x * stride + off] += cols[r, base + x]


@njit(cache=True)
def _pool_forward(z, mode, ps, pst, out, arg):
    """(P z)[b, o, y, x] from z laid out (C_out, B, H_conv, W_conv) into ``out`` (B, C_out, H_pool, W_pool).

    mode 0 (none): z itself; 1 (avg): the window's mean; 2 (max): its maximum, the first one
    in C order on a tie, its flat position y_c W_conv + x_c in the conv map stored in ``arg``.
    """
    O, B, Hc, Wc = z.shape
    _, _, Hp, Wp = out.shape
    inv = out.dtype.type(1.0 / (ps * ps))
    zero = out.dtype.type(0.0)
    for o in range(O):
        for b in range(B):
            zz = z[o, b]
            if mode == 0:
                for y in range(Hp):
                    for x in range(Wp):
                        out[b, o, y, x] = zz[y, x]
            elif mode == 1:
                for y in range(Hp):
                    for x in range(Wp):
                        acc = zero
                        for i in range(ps):
                            for j in range(ps):
                                acc += zz[y * pst + i, x * pst + j]
                        out[b, o, y, x] = acc * inv
            else:
                for y in range(Hp):
                    for x in range(Wp):
                        y0, x0 = y * pst, x * pst
                        m = zz[y0, x0]
                        best = y0 * Wc + x0
                        for i in range(ps):
                            for j in range(ps):
                                v = zz[y0 + i, x0 + j]
                                if v > m:
                                    m = v
                                    best = (y0 + i) * Wc + x0 + j
                        out[b, o, y, x] = m
                        arg[b, o, y, x] = best


@njit(cache=True)
def _pool_backward(u, mode, ps, pst, arg, g):
    """P^T u from ``u`` (B, C_out, H_pool, W_pool) into ``g`` laid out (C_out, B, H_conv, W_conv).

    mode 0: u itself; 1 (avg): each window's value / ps^2 added to its every pixel; 2 (max):
    added at the window's argmax ``arg`` (the context of the pre state).
    """
    O, B, Hc, Wc = g.shape
    _, _, Hp, Wp = u.shape
    zero = g.dtype.type(0.0)
    inv = g.dtype.type(1.0 / (ps * ps))
    for o in range(O):
        for b in range(B):
            gg = g[o, b]
            if mode == 0:
                for y in range(Hp):
                    for x in range(Wp):
                        gg[y, x] = u[b, o, y, x]
                continue
            for y in range(Hc):
                for x in range(Wc):
                    gg[y, x] = zero
            if mode == 1:
                for y in range(Hp):
                    for x in range(Wp):
                        v = u[b, o, y, x] * inv
                        for i in range(ps):
                            for j in range(ps):
                                gg[y * pst + i, x * pst + j] += v
            else:
                for y in range(Hp):
                    for x in range(Wp):
                        a = arg[b, o, y, x]
                        gg[a // Wc, a % Wc] += u[b, o, y, x]


@njit(cache=True)
def _layer_update(s, h, bvec, td, has_td, gamma, nudge, has_nudge, dt, energy, act, out, res, outside):
    """One relaxed layer's step on (B, n) views, and the running residual max_j |out - s| per sample.

    h' = h + b + gamma td (+ nudge, leaky form); leaky: out = s + dt (sigma(h') - s), or
    with ``outside`` (``nudge = "outside"``) out = s + dt (sigma(h + b + gamma td) - s + nudge);
    energy: out = clip(s + dt (rho'(s) h' - s + nudge), 0, 1) (dynamics.leaky_update /
    dynamics.energy_update). ``bvec`` is the bias per unit (zeros when h already holds it).
    """
    one = s.dtype.type(1.0)
    zero = one - one
    B, n = s.shape
    for b in range(B):
        m = res[b]
        for j in range(n):
            hh = h[b, j] + bvec[j]
            if has_td:
                hh = hh + gamma * td[b, j]
            sv = s[b, j]
            if energy:
                nu = nudge[b, j] if has_nudge else zero
                v = sv + dt[j] * (_act_prime(sv, act, one) * hh - sv + nu)
                v = zero if v < zero else (one if v > one else v)
            else:
                nu = zero
                if has_nudge:
                    if outside:
                        nu = nudge[b, j]
                    else:
                        hh = hh + nudge[b, j]
                v = sv + dt[j] * (_act(hh, act, one) - sv + nu)
            out[b, j] = v
            d = abs(v - sv)
            if d > m or d != d:
                m = d
        res[b] = m


@njit(cache=True)
def _act_flat(s, act, out):
    """out = rho(s) elementwise on flat arrays (presynaptic values of the energy form)."""
    one = s.dtype.type(1.0)
    for i in range(s.size):
        out[i] = _act(s[i], act, one)


# --------------------------------------------------------------------------------------
# one connection


class _Conn:
    """A connection of the chain with its weight in the backend's dtype and its per-batch buffers."""

    def __init__(self, conn, weight: np.ndarray):
        self.dense = isinstance(conn, Dense)
        self.weight = weight
        self.pre_shape = tuple(conn.pre_shape)
        if self.dense:
            self.post_shape = (weight.shape[0],)
            return
        self.k = weight.shape[2]
        self.stride, self.padding = conn.stride, conn.padding
        self.mode = POOL_CODES[conn.pool]
        self.ps, self.pst = conn.pool_size, conn.pool_stride
        self.conv_shape, self.post_shape = conn.conv_shape, conn.post_shape
        self.W2 = weight.reshape(weight.shape[0], -1)
        self._B = -1

    def chunk(self, B: int) -> int:
        """Samples per gemm: enough to fill about :data:`CHUNK_ELEMENTS` im2col entries (at least 1)."""
        per_sample = self.W2.shape[1] * self.conv_shape[1] * self.conv_shape[2]
        return max(1, min(B, CHUNK_ELEMENTS // per_sample)) if CHUNK_ELEMENTS > 0 else B

    def buffers(self, B: int):
        """(cols, z, arg, chunk): scratch for one chunk of samples and the argmax of the whole batch."""
        if self._B != B:
            O, Hc, Wc = self.conv_shape
            dt = self.weight.dtype
            self._chunk = cb = self.chunk(B)
            self.cols = np.empty((self.W2.shape[1], cb * Hc * Wc), dtype=dt)
            self.z = np.empty((O, cb * Hc * Wc), dtype=dt)
            self.arg = np.zeros((B, *self.post_shape), dtype=np.int64)
            self._B = B
        return self.cols, self.z, self.arg, self._chunk

    def im2col(self, v: np.ndarray, cols: np.ndarray) -> None:
        _, Hc, Wc = self.conv_shape
        _im2col(v, self.k, self.stride, self.padding, Hc, Wc, cols)

    def z4(self, z: np.ndarray, B: int) -> np.ndarray:
        return z.reshape(self.conv_shape[0], B, *self.conv_shape[1:])

    def forward(self, r_pre: np.ndarray, out: np.ndarray) -> np.ndarray:
        """out = A r_pre (the drive from below), (B, *post_shape); max pooling records its context in ``arg``.

        A convolution goes chunk by chunk of samples, so that each chunk's im2col columns stay
        in cache between the copy and the gemm.
        """
        B = r_pre.shape[0]
        if self.dense:
            np.dot(r_pre.reshape(B, -1), self.weight.T, out=out.reshape(B, -1))
            return out
        cols, z, arg, cb = self.buffers(B)
        n = self.conv_shape[1] * self.conv_shape[2]
        for b0 in range(0, B, cb):
            b1 = min(B, b0 + cb)
            m = b1 - b0  # contiguous (rows, m n) views of the scratch, also for a last, shorter chunk
            c = cols.reshape(-1)[: cols.shape[0] * m * n].reshape(cols.shape[0], m * n)
            zz = z.reshape(-1)[: z.shape[0] * m * n].reshape(z.shape[0], m * n)
            self.im2col(r_pre[b0:b1], c)
            np.dot(self.W2, c, out=zz)
            _pool_forward(self.z4(zz, m), self.mode, self.ps, self.pst, out[b0:b1], arg[b0:b1])
        return out

    def unpool(self, u: np.ndarray, arg: np.ndarray, g: np.ndarray) -> np.ndarray:
        """g = P^T u laid out (C_out, B * H_conv * W_conv), max pooling at ``arg``."""
        B = u.shape[0]
        _pool_backward(u, self.mode, self.ps, self.pst, arg, self.z4(g, B))
        return g

    def backward(self, r_post: np.ndarray, out: np.ndarray) -> np.ndarray:
        """out = A^T r_post (the feedback to pre), A fixed by the context of the last :meth:`forward`; by chunks."""
        B = r_post.shape[0]
        if self.dense:
            np.dot(r_post, self.weight, out=out.reshape(B, -1))
            return out
        cols, z, arg, cb = self.buffers(B)
        _, Hc, Wc = self.conv_shape
        n = Hc * Wc
        for b0 in range(0, B, cb):
            b1 = min(B, b0 + cb)
            m = b1 - b0
            c = cols.reshape(-1)[: cols.shape[0] * m * n].reshape(cols.shape[0], m * n)
            zz = z.reshape(-1)[: z.shape[0] * m * n].reshape(z.shape[0], m * n)
            self.unpool(r_post[b0:b1], arg[b0:b1], zz)
            np.dot(self.W2.T, zz, out=c)
            _col2im(c, self.k, self.stride, self.padding, Hc, Wc, out[b0:b1])
        return out


# --------------------------------------------------------------------------------------
# the chain


class ConvChain:
    """A conv / dense chain in the backend's dtype: ``input_drive``, ``relax``, ``ep_gradients``.

    Built per call from the network (weights that already have the dtype and are
    C-contiguous are views, so optimiser updates are seen). Semantics: those of
    :mod:`neuro_hts.dynamics`, which the tests compare against.
    """

    KINDS = ("conv2d", "dense")

    def __init__(self, net, dtype, convert):
        self.net = net
        self.dtype = np.dtype(dtype)
        self.energy = net.form == "energy"
        self.outside = net.nudge == "outside" and not self.energy
        self.act = ("hard_sigmoid", "sigmoid4").index(net.activation)
        self.ce = net.output == "ce"
        conns = net.connections()
        Ws = [convert(w) for w in net.weights]
        self.conns = [_Conn(c, w) for c, w in zip(conns, Ws)]
        self.shapes = tuple(net.shapes)
        n_dyn = net.n_dynamic
        self.n_dyn = n_dyn
        self.biases = [convert(b) for b in net.biases]
        self.dts = [convert(d).reshape(-1) for d in net.dts[:n_dyn]]
        # the bias per unit of layers 2..n_dyn (layer 1's is inside the input drive)
        self.bvecs = [np.zeros(int(np.prod(self.shapes[1])), self.dtype)]
        for l in range(2, n_dyn + 1):
            b, shape = self.biases[l - 1], self.shapes[l]
            self.bvecs.append(np.ascontiguousarray(np.repeat(b, int(np.prod(shape[1:]))) if len(shape) == 3 else b))
        self.readout = SoftmaxReadout(Ws[-1], self.biases[-1]) if self.ce else None
        # local error costs (net.local, docs/ALGORITHMS.md "Local error costs"): (layer l, R_l) per
        # hidden layer with a readout, R_l (n_classes, n_l) reading the layer flattened in C order
        local = getattr(net, "local", None)
        self.local = [] if local is None else [(l, convert(w)) for l, w in zip(local.layers, local.weights)
                                               if l < n_dyn]
        self.local_beta = float(local.beta) if local is not None else 0.0
        self.local_ce = local is not None and local.loss == "ce"

    @staticmethod
    def reasons(net) -> list[str]:
        """Why the chain cannot run ``net`` (empty: it can)."""
        if net.spec is None:
            return []
        other = sorted({c.kind for c in net.spec.connections} - set(ConvChain.KINDS))
        if other:
            return [f"backend 'numba' runs conv2d and dense connections, not {', '.join(other)}"]
        return []

    # ------------------------------------------------------------------ presynaptic
    def presynaptic(self, s: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """r = s (leaky) or rho(s) (energy)."""
        if not self.energy:
            return s
        out = np.empty_like(s) if out is None else out
        _act_flat(s.reshape(-1), self.act, out.reshape(-1))
        return out

    def x(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(as_input(self.net, x), dtype=self.dtype)

    # ------------------------------------------------------------------ the interface
    def input_drive(self, x: np.ndarray) -> np.ndarray:
        """A_1 r_0 + b_1, (B, *shape_1), r_0 = x or rho(x)."""
        x = self.x(x)
        B = x.shape[0]
        out = np.empty((B, *self.shapes[1]), dtype=self.dtype)
        self.conns[0].forward(self.presynaptic(x), out)
        b = self.biases[0]
        out += b.reshape(-1, 1, 1) if out.ndim == 4 else b
        return out

    def nudge(self, top: np.ndarray, y: np.ndarray) -> np.ndarray:
        """-dC/ds of the top relaxed layer (dynamics.output_nudge), (B, n)."""
        if not self.ce:
            return MSE().nudge(top, y)
        r = self.presynaptic(top).reshape(top.shape[0], -1)
        g = self.readout.nudge(r, y)
        if self.energy:  # the chain rule through r = rho(s)
            g = g * get_activation(self.net.activation)[1](top).reshape(g.shape)
        return np.ascontiguousarray(g, dtype=self.dtype)

    def local_nudges(self, cur, r, y, beta) -> dict[int, np.ndarray]:
        """beta * (-dC_l/ds_l) per hidden layer l with a local cost (beta * dynamics.local_nudges), (B, n_l) rows.

        C_l = beta_l L(R_l r_l, y): -dC_l/ds_l = beta_l (y - z) R_l, z = R_l r_l (softmax of it for
        CE), times rho'(s_l) in the energy form; ``r`` are the presynaptic values of ``cur``.
        Two small gemms per layer, (B, n_l) (n_l, classes) and (B, classes) (classes, n_l).
        """
        out = {}
        for l, R in self.local:
            s = cur[l - 1]
            B = s.shape[0]
            z = r[l - 1].reshape(B, -1) @ R.T
            if self.local_ce:
                z = _softmax(z)
            g = self.local_beta * ((y - z) @ R)
            if self.energy:  # the chain rule through r = rho(s)
                g = g * get_activation(self.net.activation)[1](s.reshape(B, -1))
            out[l] = np.ascontiguousarray(beta * g, dtype=self.dtype)
        return out

    def relax(self, x, n_steps, states, y, beta, drive1, gamma, clamp, anchor, coe, tol, judged) -> RelaxResult:
        """Up to ``n_steps`` synchronous steps (dynamics.relax); ``states``: a tuple of (B, *shape) arrays."""
        B = drive1.shape[0]
        n_dyn = self.n_dyn
        shapes = self.shapes[1:]
        cur = [s for s in states]
        nxt = [np.empty((B, *sh), dtype=self.dtype) for sh in shapes]
        h = [drive1] + [np.empty((B, *sh), dtype=self.dtype) for sh in shapes[1:]]
        td = [np.empty((B, *sh), dtype=self.dtype) for sh in shapes[:-1]]
        rbuf = [np.empty((B, *sh), dtype=self.dtype) for sh in shapes] if self.energy else None
        res = np.zeros(B, dtype=self.dtype)
        gamma = self.dtype.type(gamma)
        empty = np.zeros((0, 0), dtype=self.dtype)
        taken = 0
        for _ in range(n_steps):
            r = [self.presynaptic(s, rbuf[i] if rbuf else None) for i, s in enumerate(cur)]
            for l in range(2, n_dyn + 1):  # connection l: drive of layer l, feedback to layer l-1
                c = self.conns[l - 1]
                c.forward(r[l - 2], h[l - 1])
                c.backward(r[l - 1], td[l - 2])
            nudge = None
            local = {}
            if beta != 0.0:
                nudge = self.dtype.type(beta) * self.nudge(cur[-1], y)
                if self.local:  # local error costs: nudged phases only
                    local = self.local_nudges(cur, r, y, self.dtype.type(beta))
            res[:] = 0
            for l in range(1, n_dyn + 1):
                s, o = cur[l - 1], nxt[l - 1]
                top = l == n_dyn
                if top and clamp != "none":
                    o[...] = y.reshape(o.shape) if clamp == "target" else s
                    np.maximum(res, np.abs(o - s).reshape(B, -1).max(axis=1), out=res)  # NaN propagates
                    continue
                has_td = l < n_dyn
                g = nudge if top else local.get(l)
                has_nudge = g is not None
                _layer_update(s.reshape(B, -1), h[l - 1].reshape(B, -1), self.bvecs[l - 1],
                              td[l - 1].reshape(B, -1) if has_td else empty, has_td, gamma,
                              g.reshape(B, -1) if has_nudge else empty, has_nudge, self.dts[l - 1],
                              self.energy, self.act, o.reshape(B, -1), res, self.outside)
            if anchor is not None:
                c = self.dtype.type(coe)
                for i, o in enumerate(nxt):
                    o[...] = (1 - c) * o + c * anchor[i]
                res = np.max(np.stack([np.abs(a - b).reshape(B, -1).max(axis=1) for a, b in zip(nxt, cur)]), axis=0)
            if taken == 0:  # never write into the caller's states
                cur = [np.empty_like(o) for o in nxt]
            cur, nxt = nxt, cur
            taken += 1
            if tol is not None and res.max() <= tol:
                break
        return RelaxResult(cur, res.astype(self.dtype, copy=False), taken, judged)

    def ep_gradients(self, x, y, states_a, beta_a: float, states_b, beta_b: float):
        """The EP estimate of dynamics.ep_gradients, each contrast formed before its gemm.

        For connection l with pre r_{l-1} and unpooled post g_l = P^T r_l (at the context of
        its own pre state), r^a g^a^T - r^b g^b^T = (g^a - g^b) c(r^a)^T + g^b (c(r^a) - c(r^b))^T
        with c the im2col columns (the layer-1 pre state is x in both phases: one gemm).
        """
        x = self.x(x)
        B = x.shape[0]
        denom = beta_a - beta_b
        coef = self.dtype.type(-1.0 / (denom * B))
        r0 = self.presynaptic(x)
        ra = [r0] + [self.presynaptic(s) for s in states_a]
        rb = [r0] + [self.presynaptic(s) for s in states_b]
        gW, gb = [], []
        for l, c in enumerate(self.conns[: self.n_dyn], start=1):
            a, b = ra[l], rb[l]
            if c.dense:
                A = (a - b).reshape(B, -1)
                P = ra[l - 1].reshape(B, -1)
                g = A.T @ P
                if l > 1:
                    g += b.reshape(B, -1).T @ (P - rb[l - 1].reshape(B, -1))
            else:
                O = c.conv_shape[0]
                n_cols = B * c.conv_shape[1] * c.conv_shape[2]
                tmp = np.empty((B, *c.post_shape), dtype=self.dtype)
                ga, gbb = (np.empty((O, n_cols), dtype=self.dtype) for _ in range(2))
                cols_a = np.empty((c.W2.shape[1], n_cols), dtype=self.dtype)
                c.forward(ra[l - 1], tmp)  # the context of r_{l-1}^a
                c.unpool(a, c.arg, ga)
                c.im2col(ra[l - 1], cols_a)
                if l == 1:
                    c.unpool(b, c.arg, gbb)
                    g = (ga - gbb) @ cols_a.T
                else:
                    cols_b = np.empty_like(cols_a)
                    c.forward(rb[l - 1], tmp)  # the context of r_{l-1}^b
                    c.unpool(b, c.arg, gbb)
                    c.im2col(rb[l - 1], cols_b)
                    np.subtract(cols_a, cols_b, out=cols_b)
                    g = (ga - gbb) @ cols_a.T + gbb @ cols_b.T
                g = g.reshape(c.weight.shape)
            gW.append(coef * g)
            d = a - b
            gb.append(coef * (d.sum(axis=(0, 2, 3)) if d.ndim == 4 else d.sum(axis=0)))
        if self.ce:
            ta, tb = ra[-1].reshape(B, -1), rb[-1].reshape(B, -1)
            pa, pb = self.readout.param_grad(ta, y), self.readout.param_grad(tb, y)
            gW.append(((beta_a * pa["weight"] - beta_b * pb["weight"]) / (denom * B)).astype(self.dtype))
            gb.append(((beta_a * pa["bias"] - beta_b * pb["bias"]) / (denom * B)).astype(self.dtype))
        return gW, gb
