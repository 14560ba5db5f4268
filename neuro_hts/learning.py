"""EP learning: the three phases of one batch, and optimisers with per-layer rates.

Phases (docs/MODEL.md): free phase (beta = 0, T1 steps from s = 0) -> s^0; nudged phase
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


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _kernels():
    """The fused update kernels (imported on first use: importing Numba takes a while)."""
    from .backends import _optim_kernels

    return _optim_kernels


def _fusable(p, *others) -> bool:
    """Whether the fused kernels can update ``p`` with ``others`` (gradient, state):
    float32 or float64 arrays of one dtype and shape, all C-contiguous, ``p`` and the
    state writable. Anything else takes the NumPy formulation (same formula; it also
    casts a gradient of another dtype)."""
    return (
        isinstance(p, np.ndarray)
        and p.dtype in _FLOATS
        and p.flags.c_contiguous
        and p.flags.writeable
        and all(
            isinstance(a, np.ndarray) and a.dtype == p.dtype and a.shape == p.shape and a.flags.c_contiguous
            for a in others
        )
    )


class SGD:
    """theta <- theta - lr_l * v,  v <- momentum * v + g  (plain SGD when momentum = 0).

    Float32/float64 parameters whose gradients have the same dtype are updated by one
    fused compiled loop per array (:mod:`neuro_hts.backends._optim_kernels`), with the
    same roundings as the NumPy formulation (bit-identical results); others by NumPy.
    """

    kind = "sgd"

    def __init__(self, lrs, momentum: float = 0.0):
        self.lrs = tuple(float(v) for v in lrs)
        self.momentum = float(momentum)
        self.state: dict[str, list[np.ndarray]] = {}

    def like(self, lrs) -> "SGD":
        """A fresh SGD with the same momentum and rates ``lrs`` (e.g. for local readouts)."""
        return SGD(lrs, self.momentum)

    def step(self, net, gW, gb) -> None:
        """Update the network's weights and biases (layer l's at lr_l)."""
        self.update(list(net.weights) + list(net.biases), list(gW) + list(gb), self.lrs + self.lrs)

    def update(self, params, grads, lrs) -> None:
        """theta <- theta - lr v, v <- momentum v + g for each (parameter, gradient, rate), in place."""
        if self.momentum:
            if "v" not in self.state:
                self.state["v"] = [np.zeros_like(p) for p in params]
            for p, g, v, lr in zip(params, grads, self.state["v"], lrs):
                if _fusable(p, g) and _fusable(v, g):
                    dt = p.dtype.type
                    _kernels().momentum_update(p.reshape(-1), g.reshape(-1), v.reshape(-1), dt(self.momentum), dt(lr))
                else:
                    v *= self.momentum
                    v += g
                    p -= p.dtype.type(lr) * v.astype(p.dtype, copy=False)
            return
        for p, g, lr in zip(params, grads, lrs):
            if _fusable(p, g):
                _kernels().sgd_update(p.reshape(-1), g.reshape(-1), p.dtype.type(lr))
            else:
                p -= p.dtype.type(lr) * g.astype(p.dtype, copy=False)

    def state_dict(self) -> dict:
        return {k: [a.copy() for a in v] for k, v in self.state.items()}

    def load_state_dict(self, state: dict) -> None:
        self.state = {k: [np.array(a) for a in v] for k, v in state.items()}


class Adam:
    """Adam (Kingma & Ba) with per-layer learning rates and bias correction.

    p -= (lr / c1) * m / (sqrt(v / c2) + eps), c1 = 1 - beta1^t, c2 = 1 - beta2^t, in the
    parameters' dtype. Float32/float64 parameters whose gradients have the same dtype are
    updated by one fused compiled loop per array (reads g, m, v, p once, writes m, v, p;
    :mod:`neuro_hts.backends._optim_kernels`), with the same roundings as the NumPy
    formulation below it, so both give bit-identical results; others (e.g. float64
    gradients for float32 parameters) take the NumPy formulation.
    """

    kind = "adam"

    def __init__(self, lrs, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        self.lrs = tuple(float(v) for v in lrs)
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)
        self.t = 0
        self.state: dict[str, list[np.ndarray]] = {}

    def like(self, lrs) -> "Adam":
        """A fresh Adam with the same betas and eps and rates ``lrs`` (e.g. for local readouts)."""
        return Adam(lrs, self.beta1, self.beta2, self.eps)

    def step(self, net, gW, gb) -> None:
        """Update the network's weights and biases (layer l's at lr_l)."""
        self.update(list(net.weights) + list(net.biases), list(gW) + list(gb), self.lrs + self.lrs)

    def update(self, params, grads, lrs) -> None:
        """One Adam step of each (parameter, gradient, rate), in place (the state follows ``params``' order)."""
        if "m" not in self.state:
            self.state["m"] = [np.zeros_like(p) for p in params]
            self.state["v"] = [np.zeros_like(p) for p in params]
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        c1 = 1.0 - b1**self.t
        c2 = 1.0 - b2**self.t
        for i, (p, g, m, v, lr) in enumerate(zip(params, grads, self.state["m"], self.state["v"], lrs)):
            dt = p.dtype.type
            if _fusable(p, g) and _fusable(m, g) and _fusable(v, g):
                _kernels().adam_update(
                    p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1),
                    dt(b1), dt(1.0 - b1), dt(b2), dt(1.0 - b2), dt(1.0 / c2), dt(self.eps), dt(lr / c1),
                )
                continue
            if "buf" not in self.state:
                self.state["buf"] = [np.empty_like(q) for q in params]
            buf = self.state["buf"][i]
            # In place, no temporaries: large per-step allocations were returned to the OS
            # and faulted back in every step (half the training speed on MNIST).
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
