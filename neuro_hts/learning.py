"""EP learning: the three phases of one batch, and optimisers with per-layer rates.

Phases (MODEL.md): free phase (beta = 0, T1 steps from s = 0) -> s^0; nudged phase
(beta, T2 steps from s^0) -> s^beta; optionally -beta from s^0 (symmetric nudging).
The update is the EP estimate of the loss gradient (:func:`neuro_hts.dynamics.ep_gradients`)
fed to SGD (optional momentum) or Adam, which *descend* it, i.e.
W_l += (lr_l / beta) * mean(s_l^b s_{l-1}^b^T - s_l^0 s_{l-1}^0^T) for plain SGD.
"""

from __future__ import annotations

import numpy as np

from .algorithms import EP
from .engines import BatchStats, FloatEngine
from .registry import Registry

__all__ = ["SGD", "Adam", "OPTIMIZERS", "make_optimizer", "BatchStats", "ep_phases", "ep_train_step"]


class SGD:
    """theta <- theta - lr_l * v,  v <- momentum * v + g  (plain SGD when momentum = 0)."""

    kind = "sgd"

    def __init__(self, lrs, momentum: float = 0.0):
        self.lrs = tuple(float(v) for v in lrs)
        self.momentum = float(momentum)
        self.state: dict[str, list[np.ndarray]] = {}

    def step(self, net, gW, gb) -> None:
        params = list(net.weights) + list(net.biases)
        grads = list(gW) + list(gb)
        lrs = self.lrs + self.lrs
        if self.momentum:
            if "v" not in self.state:
                self.state["v"] = [np.zeros_like(p) for p in params]
            for v, g in zip(self.state["v"], grads):
                v *= self.momentum
                v += g
            grads = self.state["v"]
        for p, g, lr in zip(params, grads, lrs):
            p -= p.dtype.type(lr) * g.astype(p.dtype, copy=False)

    def state_dict(self) -> dict:
        return {k: [a.copy() for a in v] for k, v in self.state.items()}

    def load_state_dict(self, state: dict) -> None:
        self.state = {k: [np.array(a) for a in v] for k, v in state.items()}


class Adam:
    """Adam (Kingma & Ba) with per-layer learning rates and bias correction."""

    kind = "adam"

    def __init__(self, lrs, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        self.lrs = tuple(float(v) for v in lrs)
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)
        self.t = 0
        self.state: dict[str, list[np.ndarray]] = {}

    def step(self, net, gW, gb) -> None:
        params = list(net.weights) + list(net.biases)
        grads = list(gW) + list(gb)
        lrs = self.lrs + self.lrs
        if "m" not in self.state:
            self.state["m"] = [np.zeros_like(p) for p in params]
            self.state["v"] = [np.zeros_like(p) for p in params]
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        c1 = 1.0 - b1**self.t
        c2 = 1.0 - b2**self.t
        if "buf" not in self.state:
            self.state["buf"] = [np.empty_like(p) for p in params]
        # In place, no temporaries: large per-step allocations were returned to the OS
        # and faulted back in every step (half the training speed on MNIST).
        for p, g, m, v, buf, lr in zip(params, grads, self.state["m"], self.state["v"], self.state["buf"], lrs):
            dt = p.dtype.type
            m *= dt(b1)
            np.multiply(g, dt(1.0 - b1), out=buf, casting="unsafe")
            m += buf
            v *= dt(b2)
            np.multiply(g, g, out=buf, casting="unsafe")
            buf *= dt(1.0 - b2)
            v += buf
            # p -= (lr / c1) * m / (sqrt(v / c2) + eps)
            np.multiply(v, dt(1.0 / c2), out=buf)
            np.sqrt(buf, out=buf)
            buf += dt(self.eps)
            np.divide(m, buf, out=buf)
            buf *= dt(lr / c1)
            p -= buf

    def state_dict(self) -> dict:
        d = {k: [a.copy() for a in v] for k, v in self.state.items() if k != "buf"}
        d["t"] = [np.array(self.t)]
        return d

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        t = state.pop("t", [np.array(0)])
        self.t = int(np.asarray(t[0]))
        self.state = {k: [np.array(a) for a in v] for k, v in state.items()}


#: optimizer name -> class ``(lrs, ...)``
OPTIMIZERS: Registry = Registry("optimizer")
OPTIMIZERS.register("sgd", SGD)
OPTIMIZERS.register("adam", Adam)


def make_optimizer(train, n_layers: int):
    """The optimiser of a ``[train]`` section (``optimizer``, ``lr``, ``momentum``, ``adam_*``)."""
    lrs = train.layer_lrs(n_layers)
    kind = OPTIMIZERS.get(train.optimizer)
    if kind is SGD:
        return SGD(lrs, train.momentum)
    return Adam(lrs, train.adam_beta1, train.adam_beta2, train.adam_eps)


def _ep(train) -> EP:
    return EP(t1=train.t1, t2=train.t2, beta=train.beta, nudging=train.nudging, t1_tol=getattr(train, "t1_tol", None))


def ep_phases(backend, net, x, y, train, rng: np.random.Generator | None = None):
    """EP's phases on one batch through ``backend``; returns (free RelaxResult, gW, gb).

    A convenience for scripts: :class:`~neuro_hts.engines.FloatEngine` with the
    :class:`~neuro_hts.algorithms.EP` of ``train`` (t1, t2, beta, nudging).
    """
    engine = FloatEngine(None, backend=backend)
    return engine.gradients(net, x, y, _ep(train), rng)


def ep_train_step(backend, net, optimizer, x, y, train, rng=None) -> BatchStats:
    """One EP update on a batch (x, one-hot y); returns free-phase statistics."""
    engine = FloatEngine(None, optimizer=optimizer, backend=backend)
    return engine.train_step(net, x, y, _ep(train), rng)
