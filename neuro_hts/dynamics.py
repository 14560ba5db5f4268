"""The equations of HTS-EP (docs/MODEL.md), each in one function, in plain NumPy.

This module is the readable reference (the oracle the fast backends are tested
against). Shapes: a batch of B samples; ``x`` is (B, *shape_0) (a flat (B, C*H*W) input
of an image layer is viewed as (B, C, H, W)); ``states[i]`` is s_{i+1}, (B, *shape_{i+1}),
for the relaxed layers ((n,) or (C, H, W), :attr:`Network.shapes`); targets ``y`` are
one-hot (B, n_L). Every product goes through the network's connections
(:mod:`neuro_hts.connections`: dense matrices, convolutions with pooling), so the
equations below read W_l s as "connection l's drive" and W_l^T s as its feedback.

Two dynamics forms:

* ``leaky`` (prototypical, Ernoult et al. 2019 with per-neuron dt)::

      h_l = W_l s_{l-1} + W_{l+1}^T s_{l+1} + b_l          (no top-down term for l = L)
      s_l <- s_l + dt_l * (sigma(h_l) - s_l)

  Nudging adds -beta dC/ds_L to h_L (inside sigma, as in Laborieux et al.'s
  s <- sigma(dPhi_beta/ds)); with dt = 1 this is exactly their discrete-time EP. With
  the network's ``nudge = "outside"`` it is added to the update outside sigma instead,
  s_L <- s_L + dt_L * (sigma(h_L) - s_L - beta dC/ds_L) (Ernoult et al.'s leaky form).

  Local error costs (``net.local``, docs/ALGORITHMS.md "Local error costs"): in a nudged
  phase a hidden layer l with a readout R_l also gets -beta dC_l/ds_l, C_l = beta_l
  L(R_l r_l, y), in the same place (inside sigma, or outside with ``nudge = "outside"``),
  so the nudged phase relaxes toward the minimum of E + beta (C + sum_l C_l).

* ``energy`` (Scellier & Bengio), states are membrane potentials, rho = activation::

      s_l <- clip(s_l + dt_l * (rho'(s_l) * (W_l rho(s_{l-1}) + W_{l+1}^T rho(s_{l+1}) + b_l) - s_l), 0, 1)

  Nudging adds -beta dC/ds_L inside the bracket.

All layers are updated synchronously from the previous step's states.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from .activations import get_activation
from .costs import COSTS, MSE
from .costs import softmax as _softmax
from .network import NUDGE_PLACEMENTS, Network, bias_grad
from .registry import Registry

__all__ = [
    "FORMS",
    "NUDGE_PLACEMENTS",
    "OUTPUTS",
    "RelaxStatus",
    "RelaxResult",
    "relax_status",
    "adapt_mix",
    "presynaptic",
    "as_input",
    "input_drive",
    "layer_drive",
    "leaky_update",
    "energy_update",
    "mse_cost",
    "mse_nudge",
    "softmax",
    "ce_cost",
    "readout_logits",
    "output_nudge",
    "local_nudges",
    "local_cost",
    "local_gradients",
    "primitive",
    "energy",
    "zero_states",
    "relax_step",
    "relax",
    "predict_scores",
    "cost",
    "ep_gradients",
]


class RelaxStatus(str, Enum):
    """How a relaxation ended (as Diffrax's ``RESULTS``): training reads this, not ad-hoc checks."""

    SETTLED = "settled"  #: every sample's last-step residual <= the tolerance
    MAX_STEPS = "max_steps"  #: the step budget ran out with some sample above the tolerance
    DIVERGED = "diverged"  #: a state became non-finite


@dataclass
class RelaxResult:
    """States after a phase, the last step's residual max_l |s_t - s_{t-1}| per sample, and the status.

    ``n_steps`` is the number of steps actually taken (fewer than asked when the phase
    stopped early at ``tol``); ``tol`` is the tolerance the status was judged against.
    """

    states: list[np.ndarray]
    residual: np.ndarray  # (B,)
    n_steps: int
    tol: float = 1e-3

    @property
    def max_residual(self) -> float:
        return float(self.residual.max()) if self.residual.size else 0.0

    @property
    def status(self) -> RelaxStatus:
        """DIVERGED if a residual is non-finite, SETTLED if every residual <= tol, else MAX_STEPS."""
        return relax_status(self.residual, self.tol)


def relax_status(residual: np.ndarray, tol: float) -> RelaxStatus:
    """Status of a relaxation from its per-sample last-step residual (NaN/inf: diverged)."""
    r = np.asarray(residual, dtype=np.float64)
    if not np.isfinite(r).all():
        return RelaxStatus.DIVERGED
    return RelaxStatus.SETTLED if (r.size == 0 or r.max() <= tol) else RelaxStatus.MAX_STEPS


def presynaptic(net: Network, s: np.ndarray) -> np.ndarray:
    """What a layer sends to its neighbours: s itself (leaky form) or rho(s) (energy form)."""
    if net.form == "energy":
        return get_activation(net.activation)[0](s)
    return s


def as_input(net: Network, x: np.ndarray) -> np.ndarray:
    """``x`` in the input layer's shape (B, *shape_0): a flat (B, C*H*W) batch of images is viewed as (B, C, H, W)."""
    shape = net.shapes[0]
    if x.shape[1:] == shape:
        return x
    if x.ndim == 2 and x.shape[1] == int(np.prod(shape)):
        return x.reshape(x.shape[0], *shape)
    raise ValueError(f"x has shape {x.shape}, the input layer has shape {list(shape)}")


def input_drive(net: Network, x: np.ndarray) -> np.ndarray:
    """Bottom-up drive of layer 1, W_1 x + b_1 (rho(x) in the energy form).

    Constant during a phase: compute once per phase, not once per step.
    """
    return net.connections()[0].drive_post(presynaptic(net, as_input(net, x))) + net.bias_drive(1)


def layer_drive(net: Network, l: int, r: list[np.ndarray], drive1: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """h_l = W_l r_{l-1} + gamma W_{l+1}^T r_{l+1} + b_l for relaxed layer ``l`` (1-based).

    ``r[i]`` is the presynaptic value of layer i+1 (see :func:`presynaptic`); ``drive1``
    is :func:`input_drive`. Each term is a connection's d phi / d r
    (:mod:`neuro_hts.connections`); the feedback W_{l+1}^T r_{l+1} of a max-pooling
    convolution goes to the argmax of each window of conv(r_l), layer l's own current
    state. Layer n_dynamic gets no top-down term (with a softmax readout the readout's
    influence enters only through nudging). ``gamma`` is CHL's feedback gain (1: EP's
    symmetric feedback). The top-down term is connection l+1's ``feedback``: W_{l+1}^T r_{l+1}
    for a symmetric one, the apical branches a Apical_l(r_{l+1}) with their own weights for a
    dendritic one (docs/DENDRITIC.md).
    """
    conns = net.connections()
    h = drive1 if l == 1 else conns[l - 1].drive_post(r[l - 2]) + net.bias_drive(l)
    if l < net.n_dynamic:
        td = conns[l].feedback(r[l], r[l - 1])
        h = h + (td if gamma == 1.0 else gamma * td)
    return h


def leaky_update(s: np.ndarray, h: np.ndarray, dt: np.ndarray, sigma, nudge=0.0) -> np.ndarray:
    """s <- s + dt * (sigma(h) - s + nudge)   (per-neuron dt).

    ``nudge`` is the outside-sigma nudge -beta dC/ds of ``nudge = "outside"`` (0 elsewhere;
    the inside nudge is part of ``h``). Its fixed point s* = sigma(h) - beta dC/ds moves
    the state by ds*/dbeta = -(I - D W)^-1 dC/ds (D = diag sigma'(h)), without the factor D
    that the inside placement carries and that EP's exactness argument needs, so EP's
    estimate with it is a descent direction, not the gradient (the test measures how far).
    """
    return s + dt * (sigma(h) - s + nudge)


def energy_update(s: np.ndarray, h: np.ndarray, dt: np.ndarray, rho_prime, nudge=0.0) -> np.ndarray:
    """s <- clip(s + dt * (rho'(s) * h - s + nudge), 0, 1)."""
    return np.clip(s + dt * (rho_prime(s) * h - s + nudge), 0.0, 1.0)


def mse_cost(s_out: np.ndarray, y: np.ndarray) -> np.ndarray:
    """C = 1/2 ||s_L - y||^2 per sample (:class:`neuro_hts.costs.MSE`)."""
    return MSE().value(s_out, y)


def mse_nudge(s_out: np.ndarray, y: np.ndarray) -> np.ndarray:
    """-dC/ds_L = y - s_L for the MSE cost (:class:`neuro_hts.costs.MSE`)."""
    return MSE().nudge(s_out, y)


softmax = _softmax


def readout_logits(net: Network, r_last: np.ndarray) -> np.ndarray:
    """Softmax readout's logits W_L r_{L-1} + b_L (``output='ce'``)."""
    return net.cost().logits(r_last)


def ce_cost(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Cross-entropy -sum y log softmax(logits) per sample (an identity readout's cost)."""
    z = logits - logits.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return -np.sum(y * logp, axis=-1)


def _cost_input(net: Network, top: np.ndarray) -> np.ndarray:
    """What the cost sees of the top relaxed layer: s itself (MSE) or r = presynaptic(s) (readout)."""
    return top if net.output == "mse" else presynaptic(net, top)


def output_nudge(net: Network, states: list[np.ndarray], y: np.ndarray) -> np.ndarray:
    """-dC/ds for the top relaxed layer (what beta multiplies): the cost's nudge.

    MSE: y - s_L. Cross-entropy readout: W_L^T (y - softmax(W_L r_{L-1} + b_L)), times
    rho'(s_{L-1}) in the energy form (the chain rule through r = rho(s)).
    """
    top = states[-1]
    g = net.cost().nudge(_cost_input(net, top), y)
    if net.output != "mse" and net.form == "energy":
        g = g * get_activation(net.activation)[1](top)
    return g


def _flat(a: np.ndarray) -> np.ndarray:
    """(B, ...) -> (B, n): a layer's values as rows (what a local readout reads)."""
    return a.reshape(a.shape[0], -1)


def local_nudges(net: Network, states: list[np.ndarray], y: np.ndarray) -> dict[int, np.ndarray]:
    """-dC_l/ds_l for every hidden layer l with a local cost (what beta multiplies), by layer.

    C_l = beta_l L(R_l r_l, y) (:class:`neuro_hts.costs.LocalReadout`), r_l = presynaptic(s_l):
    -dC_l/ds_l = beta_l R_l^T (y - R_l r_l) (MSE; y - softmax(R_l r_l) for CE), times
    rho'(s_l) in the energy form. Empty without local costs.
    """
    if net.local is None:
        return {}
    out = {}
    for l, ro in net.local.readouts():
        s = states[l - 1]
        g = ro.nudge(_flat(presynaptic(net, s)), y).reshape(s.shape)
        if net.form == "energy":
            g = g * get_activation(net.activation)[1](s)
        out[l] = g
    return out


def local_cost(net: Network, states: list[np.ndarray], y: np.ndarray) -> np.ndarray:
    """sum_l C_l = sum_l beta_l L(R_l r_l, y) per sample (zeros without local costs)."""
    total = np.zeros(states[0].shape[0], dtype=states[0].dtype)
    if net.local is not None:
        for l, ro in net.local.readouts():
            total = total + ro.value(_flat(presynaptic(net, states[l - 1])), y)
    return total


def local_gradients(net: Network, y, states_a, beta_a: float, states_b, beta_b: float) -> list[np.ndarray]:
    """EP estimate of d(mean sum_l C_l)/dR_l for learned readouts, batch mean; one entry per local layer.

    The primitive carries -beta C_l, so as for the softmax readout
    g_R_l = (beta_a dC_l/dR_l(a) - beta_b dC_l/dR_l(b)) / ((beta_a - beta_b) B), with
    dC_l/dR_l = beta_l (dL/dz)^T r_l (:meth:`neuro_hts.costs.LocalReadout.param_grad`):
    one-sided, the local cost's gradient at the nudged states; symmetric, the mean of the
    two nudged ones. Empty without local costs (also for fixed readouts: callers skip them).
    """
    if net.local is None:
        return []
    B = y.shape[0]
    denom = beta_a - beta_b
    out = []
    for l, ro in net.local.readouts():
        ga = ro.param_grad(_flat(presynaptic(net, states_a[l - 1])), y)["weight"]
        gb = ro.param_grad(_flat(presynaptic(net, states_b[l - 1])), y)["weight"]
        out.append((beta_a * ga - beta_b * gb) / (denom * B))
    return out


def cost(net: Network, states: list[np.ndarray], y: np.ndarray) -> np.ndarray:
    """The output cost C per sample at ``states``."""
    return net.cost().value(_cost_input(net, states[-1]), y)


def predict_scores(net: Network, states: list[np.ndarray]) -> np.ndarray:
    """Class scores: s_L (MSE) or the readout's logits (cross-entropy)."""
    return net.cost().scores(_cost_input(net, states[-1]))


def primitive(net: Network, x: np.ndarray, states: list[np.ndarray]) -> np.ndarray:
    """Phi = sum_l [ phi_l(r_{l-1}, r_l) + r_l^T b_l ] over relaxed layers, per sample (r = s or rho(s)).

    ``phi_l`` is connection l's term (:meth:`neuro_hts.connections.Connection.phi`:
    r_l^T W_l r_{l-1} for a dense one, <r_l, P(W_l * r_{l-1})> for a convolution); the
    bias term sums over a layer's units (a conv layer's b[c] over its feature map c).
    """
    r = [presynaptic(net, as_input(net, x))] + [presynaptic(net, s) for s in states]
    phi = 0.0
    for l, conn in enumerate(net.connections(), start=1):
        phi = phi + conn.phi(r[l - 1], r[l]) + _per_sample(r[l] * net.bias_drive(l))
    return phi


def _per_sample(a: np.ndarray) -> np.ndarray:
    """Sum over everything but the batch axis: (B, ...) -> (B,)."""
    return a.reshape(a.shape[0], -1).sum(axis=1)


def energy(net: Network, x: np.ndarray, states: list[np.ndarray]) -> np.ndarray:
    """E = 1/2 sum_l ||s_l||^2 - Phi(rho(s)), per sample (energy form)."""
    return 0.5 * sum(_per_sample(s**2) for s in states) - primitive(net, x, states)


def zero_states(net: Network, batch: int, dtype=None) -> list[np.ndarray]:
    dtype = dtype or net.dtype
    return [np.zeros((batch, *shape), dtype=dtype) for shape in net.shapes[1:]]


def adapt_mix(s_step: np.ndarray, s_anchor: np.ndarray, coe: float) -> np.ndarray:
    """s <- (1 - c) step(s) + c s^anchor   (adjusted adaptation, docs/FAMILY.md section 2).

    Written as two products so that c = 1 gives s^anchor exactly (and c = 0 the step).
    """
    return (1.0 - coe) * s_step + coe * s_anchor


def relax_step(net: Network, states, drive1, y=None, beta: float = 0.0, *, gamma: float = 1.0, clamp: str = "none",
               anchor=None, coe: float = 0.0):
    """One synchronous step of every relaxed layer; returns the new list of states.

    ``clamp`` (the output layer): ``"none"`` steps it, ``"target"`` holds it at ``y``
    (CHL), ``"hold"`` keeps its current value. With ``anchor`` (a list of states) every
    layer is then mixed toward it with :func:`adapt_mix`.
    """
    sigma, sigma_prime = get_activation(net.activation)
    r = [presynaptic(net, s) for s in states]
    nudge = beta * output_nudge(net, states, y) if beta != 0.0 else None
    # local error costs: nudged phases only (the free phase, beta = 0, never feels them)
    local = {l: beta * g for l, g in local_nudges(net, states, y).items()} if beta != 0.0 else {}
    new = []
    for l in range(1, net.n_dynamic + 1):
        s, dt = states[l - 1], net.dts[l - 1]
        top = l == net.n_dynamic
        if top and clamp != "none":
            new.append(np.array(y if clamp == "target" else s, dtype=s.dtype, copy=True))
            continue
        h = layer_drive(net, l, r, drive1, gamma)
        g = nudge if top else local.get(l)
        if net.form == "leaky":
            if g is not None and net.nudge == "outside":
                new.append(leaky_update(s, h, dt, sigma, g))
                continue
            if g is not None:
                h = h + g
            new.append(leaky_update(s, h, dt, sigma))
        else:
            new.append(energy_update(s, h, dt, sigma_prime, g if g is not None else 0.0))
    if anchor is not None:
        new = [adapt_mix(n, a, coe) for n, a in zip(new, anchor)]
    return new


def relax(net: Network, x, n_steps: int, states=None, y=None, beta: float = 0.0, drive1=None, *, gamma: float = 1.0,
          clamp: str = "none", anchor=None, coe: float = 0.0, tol: float | None = None,
          status_tol: float = 1e-3) -> RelaxResult:
    """Run ``n_steps`` synchronous steps from ``states`` (zeros if None).

    Free phase: beta = 0. Nudged phase: beta != 0 and one-hot targets ``y``. ``gamma``,
    ``clamp``, ``anchor`` and ``coe`` as in :func:`relax_step`. With ``tol`` the phase
    stops after the first step at which every sample's residual is <= tol (at most
    ``n_steps``); the status is judged against ``tol`` if given, else ``status_tol``.
    """
    if states is None:
        states = zero_states(net, x.shape[0], x.dtype)
    if drive1 is None:
        drive1 = input_drive(net, x)
    if clamp == "target" and y is None:
        raise ValueError("clamp='target' needs targets y")
    residual = np.zeros(x.shape[0], dtype=x.dtype)
    taken = 0
    for _ in range(n_steps):
        new = relax_step(net, states, drive1, y, beta, gamma=gamma, clamp=clamp, anchor=anchor, coe=coe)
        residual = np.max(np.stack([np.abs(a - b).reshape(len(a), -1).max(axis=1) for a, b in zip(new, states)]), axis=0)
        states = new
        taken += 1
        if tol is not None and residual.max() <= tol:
            break
    return RelaxResult(states, residual, taken, tol if tol is not None else status_tol)


def ep_gradients(net: Network, x, y, states_a, beta_a: float, states_b, beta_b: float):
    """EP estimate of dL/dtheta from two equilibria (a: beta_a, b: beta_b), batch mean.

    For relaxed layers (gradient *descent* direction, i.e. minus the update of docs/MODEL.md
    without lr; the products are each connection's ``param_grad``)::

        g_W_l = -( r_l^a (r_{l-1}^a)^T - r_l^b (r_{l-1}^b)^T ) / (beta_a - beta_b)
        g_b_l = -( r_l^a - r_l^b ) / (beta_a - beta_b)

    One-sided: (a, b) = (s^beta, s^0), beta_b = 0. Symmetric: (s^+beta, s^-beta), so the
    divisor is 2 beta. CHL: (s^clamped, s^free) with beta_a - beta_b = 1 (no 1/beta). For a
    softmax readout W_L the primitive carries -beta C, giving
    g = (beta_a dC/dW(a) - beta_b dC/dW(b)) / (beta_a - beta_b).
    A dendritic connection's ``param_grad`` is the derivative of its terms in two layers'
    primitives (docs/DENDRITIC.md), and its soma has no bias (a zero bias update).
    Returns lists (gW, gb) with one entry per layer.
    """
    B = x.shape[0]
    denom = beta_a - beta_b
    r0 = presynaptic(net, as_input(net, x))
    ra = [r0] + [presynaptic(net, s) for s in states_a]
    rb = [r0] + [presynaptic(net, s) for s in states_b]
    gW, gb = [], []
    for l, conn in enumerate(net.connections(), start=1):
        gW.append(-conn.param_grad_contrast(ra[l - 1], ra[l], rb[l - 1], rb[l])["weight"] / (denom * B))
        g_bias = -bias_grad(ra[l] - rb[l]) / (denom * B)
        gb.append(g_bias if conn.post_bias else np.zeros_like(g_bias))  # a dendritic soma has no bias
    readout = net.cost()
    if readout.params():  # a cost with parameters: the primitive carries -beta C
        pa, pb = readout.param_grad(ra[-1], y), readout.param_grad(rb[-1], y)
        gW.append((beta_a * pa["weight"] - beta_b * pb["weight"]) / (denom * B))
        gb.append((beta_a * pa["bias"] - beta_b * pb["bias"]) / (denom * B))
    return gW, gb


#: dynamics forms -> their update rule (docs/MODEL.md "Dynamics")
FORMS: Registry = Registry("dynamics form")
FORMS.register("leaky", leaky_update)
FORMS.register("energy", energy_update)

#: output costs (``model.output``): the cost registry, :data:`neuro_hts.costs.COSTS`
OUTPUTS: Registry = COSTS
