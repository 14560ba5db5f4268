"""Backpropagation through time of the free phase: the exact gradient EP approximates.

The GDU property (docs/MODEL.md): at a settled free phase and in the small-beta limit the EP
update equals the gradient that backpropagation through time (BPTT) computes on the
free-phase relaxation. :func:`bptt_gradients` is that gradient, written by hand (vector-
Jacobian products through :func:`neuro_hts.dynamics.relax_step`) so that the test of the
EP estimate does not depend on an autodiff library. It is a float64 test oracle, not a
training path.
"""

from __future__ import annotations

import numpy as np

from .activations import get_activation
from .connections import LinearConnection
from .dynamics import (as_input, cost, input_drive, layer_drive, local_cost, local_nudges, presynaptic, readout_logits,
                       relax_step, softmax, zero_states)
from .errors import ConfigError
from .network import Network, bias_grad

__all__ = ["bptt_gradients", "bptt_gradients_full"]


def _sigmoid4_second(u):
    """sigma''(u) for sigma(u) = 1 / (1 + exp(-(4u - 2))): 4 sigma'(u) (1 - 2 sigma(u))."""
    f, f_prime = get_activation("sigmoid4")
    return 4.0 * f_prime(u) * (1.0 - 2.0 * f(u))


def _hard_sigmoid_second(u):
    """sigma''(u) = 0 away from the kinks (the hard sigmoid is piecewise linear)."""
    return np.zeros_like(u)


#: rho'' for the energy form's term rho'(s_l) h_l; one entry per activation.
_SECOND_DERIVATIVES = {"hard_sigmoid": _hard_sigmoid_second, "sigmoid4": _sigmoid4_second}


def _presynaptic_vjp(net: Network, s: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Adjoint of s given the adjoint ``g`` of r = presynaptic(s): g (leaky) or g rho'(s) (energy)."""
    if net.form == "energy":
        return g * get_activation(net.activation)[1](s)
    return g


def _step_vjp(net: Network, states, drive1, r0, lam_next, gW, gb, gamma: float = 1.0) -> list[np.ndarray]:
    """Pull the adjoint of s^{t+1} back through one synchronous step taken from ``states`` = s^t.

    Accumulates the step's parameter gradients into ``gW``, ``gb`` (in place) and
    returns the adjoint of s^t.
    """
    L = net.n_dynamic
    f_prime = get_activation(net.activation)[1]
    conns = net.connections()
    r = [presynaptic(net, s) for s in states]
    lam_s = [np.zeros_like(s) for s in states]
    lam_r = [np.zeros_like(s) for s in states]
    for l in range(1, L + 1):
        s, dt, a = states[l - 1], net.dts[l - 1], lam_next[l - 1]
        h = layer_drive(net, l, r, drive1, gamma)
        if net.form == "leaky":
            lam_s[l - 1] += a * (1.0 - dt)
            delta = a * (dt * f_prime(h))
        else:
            rp = f_prime(s)
            u = s + dt * (rp * h - s)
            a = a * ((u > 0.0) & (u < 1.0))
            lam_s[l - 1] += a * (1.0 - dt + dt * _SECOND_DERIVATIVES[net.activation](s) * h)
            delta = a * (dt * rp)
        # h_l = A_l r_{l-1} + gamma A_{l+1}^T r_{l+1} + b_l, each A a connection's (piecewise)
        # linear map; a max-pooling A_l is fixed by the argmax of conv(r_{l-1}) (its derivative
        # through the argmax is zero almost everywhere)
        pre = r0 if l == 1 else r[l - 2]
        below = conns[l - 1]
        if below.post_bias:
            gb[l - 1] += bias_grad(delta)
        if isinstance(below, LinearConnection):
            ctx = below.context(pre)
            gW[l - 1] += below.outer(delta, pre, ctx)["weight"]
            if l > 1:
                lam_r[l - 2] += below.apply_T(delta, ctx)
        else:  # a nonlinear drive (dendritic branches): its vector-Jacobian product
            g_pre, g_par = below.vjp(pre, delta)
            gW[l - 1] += g_par["weight"]
            if l > 1:
                lam_r[l - 2] += g_pre
        if l < L and conns[l].symmetric:
            up = conns[l].context(r[l - 1])  # A_{l+1} is fixed by the argmax of conv(r_l)
            gW[l] += gamma * conns[l].outer(r[l], delta, up)["weight"]
            lam_r[l] += gamma * conns[l].apply(delta, up)
        elif l < L:  # own feedback weights (dendritic apical branches): h_l += gamma F(r_{l+1})
            g_post, g_self, g_par = conns[l].feedback_vjp(r[l], r[l - 1], gamma * delta)
            gW[l] += g_par["weight"]
            lam_r[l] += g_post
            lam_r[l - 1] += g_self
    return [ls + _presynaptic_vjp(net, s, lr) for ls, s, lr in zip(lam_s, states, lam_r)]


def bptt_gradients(net: Network, x: np.ndarray, y: np.ndarray, n_steps: int, gamma: float = 1.0):
    """Exact gradient of the free phase's mean objective, by backpropagation through time.

    :func:`bptt_gradients_full` without the gradients of local readouts: ``(gW, gb, loss)``.
    """
    gW, gb, _, loss = bptt_gradients_full(net, x, y, n_steps, gamma)
    return gW, gb, loss


def bptt_gradients_full(net: Network, x: np.ndarray, y: np.ndarray, n_steps: int, gamma: float = 1.0):
    """Exact gradient of the free phase's mean objective, by backpropagation through time.

    Forward: s^0 = 0 and s^{t+1} = F(s^t; theta) for t < T = ``n_steps``, the free phase
    (beta = 0) of :func:`neuro_hts.dynamics.relax`, every state stored. Loss:
    L = mean_batch [C(s^T) + sum_l C_l(s_l^T)] (:func:`neuro_hts.dynamics.cost`, plus the local
    error costs C_l = beta_l L(R_l r_l, y) of ``net.local``, :func:`neuro_hts.dynamics.local_cost`:
    the objective whose gradient EP's nudged phases estimate). Reverse, with lambda^t the
    adjoint dL/ds^t (per sample, already divided by the batch size B)::

        local: lambda_l^T   += -(local nudge of layer l) / B = beta_l rho'(s_l^T) R_l^T dL/dz_l / B
               dL/dR_l       = beta_l (dL/dz_l)^T r_l^T / B,   dL/dz_l = z_l - y (MSE), softmax(z_l) - y (CE)
        MSE:  lambda_L^T     = (s_L^T - y) / B
        CE:   lambda_{L-1}^T = (softmax(z) - y) W_L / B      (z = W_L r_{L-1}^T + b_L; times
                                                            rho'(s_{L-1}^T) in the energy form)
              dL/dW_L = (softmax(z) - y)^T r_{L-1}^T / B,   dL/db_L = sum_batch (softmax(z) - y) / B

    and for t = T-1 ... 0, each relaxed layer l, with h_l^t = W_l r_{l-1}^t
    + gamma W_{l+1}^T r_{l+1}^t + b_l and a_l = lambda_l^{t+1} (gamma: CHL's feedback gain,
    1 for EP)::

        leaky:   delta_l = a_l dt_l sigma'(h_l^t)
                 lambda_l^t  = a_l (1 - dt_l) + [dL/dr_l^t]
        energy:  a_l    <- a_l * 1[0 < u_l < 1],  u_l = s_l^t + dt_l (rho'(s_l^t) h_l^t - s_l^t)
                 delta_l = a_l dt_l rho'(s_l^t)
                 lambda_l^t  = a_l (1 - dt_l + dt_l rho''(s_l^t) h_l^t) + rho'(s_l^t) [dL/dr_l^t]

        dL/dr_l^t = delta_{l+1} W_{l+1} + gamma delta_{l-1} W_l^T   (terms that exist)
        dL/dW_l  += delta_l^T r_{l-1}^t + gamma (r_l^t)^T delta_{l-1}   (W_l acts bottom-up in
                                                                 h_l and top-down in h_{l-1})
        dL/db_l  += sum_batch delta_l                                (and over a channel's pixels)

    For a convolution read W_l v as A_l v = P(W_l * v) and W_l^T u as A_l^T u, with
    ``outer`` its weight gradient (:class:`neuro_hts.connections.Conv2d`); max pooling's
    A_l is the one fixed by the argmax of W_l * r_{l-1}^t at that step. For a dendritic
    connection (:mod:`neuro_hts.dendritic`) the bottom-up term is Basal_l(r_{l-1}) and the
    top-down one gamma a Apical(r_{l+1}) with its own weights: the products above become
    the connection's ``vjp`` and ``feedback_vjp`` (through each branch's ReLU), and a soma
    without bias gets no bias gradient.

    r = s (leaky) or rho(s) (energy), r_0 = x (rho(x) in the energy form). dt_l is the
    per-neuron time-step vector. At a settled, contracting relaxation the sum over t tends
    to the implicit (fixed-point) gradient, whatever the dt_l.

    Parameters
    ----------
    net : Network
        Any depth, ``leaky`` or ``energy`` form, ``hard_sigmoid`` or ``sigmoid4``,
        ``mse`` or ``ce`` output.
    x : ndarray (B, n_0) or (B, *shape_0)
    y : ndarray (B, n_L), one-hot targets
    n_steps : int
        Free-phase steps T >= 0.

    Returns
    -------
    gW, gb : lists of ndarrays, one per layer, shaped like ``net.weights`` / ``net.biases``
        (the same layout as :func:`neuro_hts.dynamics.ep_gradients`).
    gR : list of ndarrays, one per local readout (``net.local.weights``; empty without)
    loss : float
        mean_batch [C(s^T) + sum_l C_l(s_l^T)].
    """
    if not isinstance(n_steps, (int, np.integer)) or isinstance(n_steps, bool) or n_steps < 0:
        raise ConfigError(f"n_steps must be a non-negative integer, got {n_steps!r}")
    if net.form == "energy" and net.activation not in _SECOND_DERIVATIVES:
        raise ConfigError(f"bptt_gradients has no second derivative for activation {net.activation!r}")
    x = np.asarray(x, dtype=net.dtype)
    y = np.asarray(y, dtype=net.dtype)
    B = x.shape[0]

    x = as_input(net, x)
    drive1 = input_drive(net, x)
    trajectory = [zero_states(net, B, x.dtype)]
    for _ in range(int(n_steps)):
        trajectory.append(relax_step(net, trajectory[-1], drive1, gamma=gamma))
    final = trajectory[-1]
    loss = float((cost(net, final, y) + local_cost(net, final, y)).mean())

    gW = [np.zeros_like(w) for w in net.weights]
    gb = [np.zeros_like(b) for b in net.biases]
    lam = [np.zeros_like(s) for s in final]
    if net.output == "mse":
        lam[-1] = (final[-1] - y) / B
    else:
        r_top = presynaptic(net, final[-1])
        g_logits = (softmax(readout_logits(net, r_top)) - y) / B
        gW[-1] += g_logits.T @ r_top
        gb[-1] += g_logits.sum(axis=0)
        lam[-1] = _presynaptic_vjp(net, final[-1], g_logits @ net.weights[-1])
    gR = []
    for l, g in local_nudges(net, final, y).items():  # already through rho' (energy form)
        lam[l - 1] = lam[l - 1] - g / B
    if net.local is not None:
        for l, ro in net.local.readouts():
            r = presynaptic(net, final[l - 1])
            gR.append(ro.param_grad(r.reshape(B, -1), y)["weight"] / B)

    r0 = presynaptic(net, x)
    for t in range(int(n_steps) - 1, -1, -1):
        lam = _step_vjp(net, trajectory[t], drive1, r0, lam, gW, gb, gamma)
    return gW, gb, gR, loss
