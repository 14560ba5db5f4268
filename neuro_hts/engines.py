"""Engines: the arithmetic a network is trained and evaluated in, behind one interface.

``train()`` asks an engine to run an algorithm's phases and apply the update; it never
branches on the arithmetic. Registered engines (:data:`ENGINES`, chosen by
``train.arith``):

* ``float`` -- :class:`FloatEngine`, a float backend (NumPy reference or Numba) plus a
  float optimiser.
* ``fixed`` -- :class:`neuro_hts.hardware.fixed_engine.FixedEngine`, a hardware target's
  integer arithmetic (registered lazily by name: this module does not import the
  hardware layer).

The interface (:class:`Engine`)::

    supports(net, algorithm) -> list[str]     reasons it cannot run them (empty: it can)
    canonical_config(config) -> config        what the run file records (e.g. a target's name)
    prepare(net) -> bool                       e.g. put a new network on the weight grid (True:
                                               the engine's state must be saved)
    train_step(net, x, y, algorithm, nudge_rng, round_rng) -> BatchStats
    records_diagnostics                        True: its BatchStats carry diagnostics
    evaluate(net, x, labels, phase, ...) -> EvalResult
    lrs (settable), state_dict(), load_state_dict(state)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .algorithms import Phase, run_phases
from .diagnostics import BatchDiagnostics, activity_stats, grad_abs_means, state_gaps
from .dynamics import RelaxStatus, cost, local_gradients, predict_scores
from .errors import ConfigError
from .registry import Registry

__all__ = ["BatchStats", "EvalResult", "Engine", "FloatEngine", "ENGINES", "FIXED_ENGINES", "make_engine", "check_supported", "batch_scores",
           "evaluate_batches"]


@dataclass
class BatchStats:
    """Per-batch figures from the free phase (before the update)."""

    loss_sum: float
    n_correct: int
    n: int
    residual: np.ndarray  # (B,) free-phase residual at the last step
    free_steps: int = 0  # steps the free phase took (< t1 when it stopped at t1_tol)
    status: RelaxStatus = RelaxStatus.MAX_STEPS  # of the free phase
    #: per-layer state gap and per-connection mean |g_W| of the batch (neuro_hts.diagnostics);
    #: None from an engine that does not record them (the fixed-point engines)
    diagnostics: BatchDiagnostics | None = None


@dataclass
class EvalResult:
    accuracy: float
    predictions: np.ndarray  # (N,) predicted class
    residual: np.ndarray  # (N,) free-phase residual at the last step

    def frac_not_converged(self, tol: float) -> float:
        return float(np.mean(self.residual > tol)) if self.residual.size else 0.0


class Engine(Protocol):
    name: str
    dtype: np.dtype

    def canonical_config(self, config): ...

    def supports(self, net, algorithm) -> list[str]: ...

    def prepare(self, net) -> bool: ...

    def train_step(self, net, x, y, algorithm, nudge_rng=None, round_rng=None) -> BatchStats: ...

    def evaluate(self, net, x, labels, phase: Phase, batch_size: int = 1000, progress=None) -> EvalResult: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def evaluate_batches(predict, x, labels, batch_size: int = 1000, progress=None) -> EvalResult:
    """Accuracy of ``predict(x_batch) -> (classes, residuals in float units)`` over ``x`` in batches."""
    n = x.shape[0]
    preds = np.empty(n, dtype=np.int64)
    resid = np.empty(n, dtype=np.float64)
    bar = progress((n + batch_size - 1) // batch_size, "eval") if progress else None
    try:
        for start in range(0, n, batch_size):
            p, r = predict(x[start : start + batch_size])
            preds[start : start + len(p)] = p
            resid[start : start + len(p)] = r
            if bar:
                bar.update(1)
    finally:
        if bar:
            bar.close()
    acc = float(np.mean(preds == labels)) if n else float("nan")
    return EvalResult(acc, preds, resid)


def batch_scores(net, free_states, y) -> tuple[float, int]:
    """(summed cost, number correct) of a batch at its free-phase states."""
    scores = predict_scores(net, free_states)
    loss = float(cost(net, free_states, y).sum())
    correct = int((scores.argmax(axis=1) == y.argmax(axis=1)).sum())
    return loss, correct


class FloatEngine:
    """Float arithmetic: a backend (``train.backend``) and a float optimiser."""

    name = "float"
    #: train_step's BatchStats carry the batch's diagnostics (neuro_hts.diagnostics)
    records_diagnostics = True

    def __init__(self, config, optimizer=None, backend=None):
        from .backends import get_backend

        self.backend = backend if backend is not None else get_backend(config.train.backend)
        self.dtype = self.backend.dtype
        self.optimizer = optimizer
        self.status_tol = float(config.train.residual_tol) if config is not None else 1e-3
        self.trainer = config.train.trainer if config is not None else "ep"
        # learned local readouts (config.local): their own optimiser of the same kind, R_l at layer l's rate
        self.local_layers: tuple[int, ...] = ()
        self.local_optimizer = None
        lc = getattr(config, "local", None) if config is not None else None
        if lc is not None and lc.active and lc.readout == "learned" and optimizer is not None:
            n_dyn = len(config.model.arch) - 1 - (1 if config.model.output == "ce" else 0)
            self.local_layers = lc.layer_indices(n_dyn)
            self.local_optimizer = optimizer.like(self._local_lrs(optimizer.lrs))

    def _local_lrs(self, lrs) -> tuple[float, ...]:
        """The readouts' rates: R_l learns at layer l's rate."""
        return tuple(float(lrs[l - 1]) for l in self.local_layers)

    @property
    def lrs(self):
        return self.optimizer.lrs

    @lrs.setter
    def lrs(self, value):
        self.optimizer.lrs = tuple(value)
        if self.local_optimizer is not None:
            self.local_optimizer.lrs = self._local_lrs(value)

    def canonical_config(self, config):
        """The config to record in the run file (unchanged for float arithmetic)."""
        return config

    def supports(self, net, algorithm) -> list[str]:
        """The algorithm's reasons and the backend's (e.g. numba runs dense chains only)."""
        backend = getattr(self.backend, "supports", None)
        return list(algorithm.supports(net)) + (list(backend(net)) if backend is not None else [])

    def prepare(self, net) -> bool:
        """Nothing to do before the first batch in float arithmetic (returns False: no state to save)."""
        return False

    def _relax(self, net, x, y, drive1):
        def relax(ph: Phase, start, anchor):
            return self.backend.relax(net, x, ph.steps, start, y, ph.beta, drive1=drive1, gamma=ph.gamma,
                                      clamp=ph.clamp, anchor=anchor, coe=ph.coe, tol=ph.tol, status_tol=self.status_tol)

        return relax

    def phases(self, net, x, y, algorithm, rng=None):
        """Run the algorithm's phases on one batch: ``(results by phase name, contrast)``."""
        return run_phases(self._relax(net, x, y, self.backend.input_drive(net, x)), algorithm, rng)

    def gradients(self, net, x, y, algorithm, rng=None):
        """``(free RelaxResult, gW, gb)``: the algorithm's estimate (descent direction) on one batch.

        With ``train.trainer = "bptt"`` the estimate is the exact gradient of the mean cost
        after the free phase's ``t1`` steps, by backpropagation through time
        (:func:`neuro_hts.bptt.bptt_gradients`, NumPy, in the network's dtype); the free
        phase is also run on the backend for the batch's statistics.
        """
        free, gW, gb, _, _ = self._estimate(net, x, y, algorithm, rng)
        return free, gW, gb

    def gradients_full(self, net, x, y, algorithm, rng=None):
        """``(free RelaxResult, gW, gb, gR)``: :meth:`gradients` and those of the local readouts.

        ``gR`` has one entry per readout of ``net.local`` (empty without local costs): EP's
        estimate :func:`neuro_hts.dynamics.local_gradients` from the contrast's two phases,
        or BPTT's exact gradient (:func:`neuro_hts.bptt.bptt_gradients_full`).
        """
        free, gW, gb, gR, _ = self._estimate(net, x, y, algorithm, rng)
        return free, gW, gb, gR

    def _estimate(self, net, x, y, algorithm, rng=None):
        """:meth:`gradients_full` plus the batch's :class:`~neuro_hts.diagnostics.BatchDiagnostics`
        (from the contrast's two states and gW; BPTT has no nudged phase: NaN state gaps)."""
        if self.trainer == "bptt":
            from .bptt import bptt_gradients_full

            phase = algorithm.free_phase()
            free = self.backend.relax(net, x, phase.steps, status_tol=self.status_tol)
            gW, gb, gR, _ = bptt_gradients_full(net, np.asarray(x, dtype=net.dtype), np.asarray(y, dtype=net.dtype),
                                                phase.steps)
            gaps = np.full(net.n_dynamic, np.nan)
            return free, gW, gb, gR, BatchDiagnostics(gaps, grad_abs_means(gW), activity_stats(free.states))
        res, c = self.phases(net, x, y, algorithm, rng)
        sa, sb = res[c.a].states, res[c.b].states
        gW, gb = self.backend.ep_gradients(net, x, y, sa, c.beta_a, sb, c.beta_b)
        gR = local_gradients(net, np.asarray(y, dtype=net.dtype), sa, c.beta_a, sb, c.beta_b) \
            if getattr(net, "local", None) is not None and net.local.learned else []
        return res["free"], gW, gb, gR, BatchDiagnostics(state_gaps(sa, sb, c.beta_a, c.beta_b), grad_abs_means(gW),
                                                         activity_stats(res["free"].states))

    def train_step(self, net, x, y, algorithm, nudge_rng=None, round_rng=None) -> BatchStats:
        free, gW, gb, gR, diag = self._estimate(net, x, y, algorithm, nudge_rng)
        loss, correct = batch_scores(net, free.states, y)
        self.optimizer.step(net, gW, gb)
        if gR and net.local.learned:
            if self.local_optimizer is None:
                raise ConfigError("learned local readouts need the engine built from their config ([local] readout = "
                                  "'learned')")
            self.local_optimizer.update(list(net.local.weights), [g.astype(net.dtype, copy=False) for g in gR],
                                        self.local_optimizer.lrs)
        return BatchStats(loss, correct, x.shape[0], free.residual, free.n_steps, free.status, diag)

    def evaluate(self, net, x, labels, phase: Phase, batch_size: int = 1000, progress=None) -> EvalResult:
        """Free phase (``phase``: steps, gamma, tol) on every sample; accuracy of the argmax of the scores."""
        def predict(xb):
            free = self.backend.relax(net, np.ascontiguousarray(xb, dtype=self.dtype), phase.steps, gamma=phase.gamma,
                                      tol=phase.tol, status_tol=self.status_tol)
            return predict_scores(net, free.states).argmax(axis=1), free.residual

        return evaluate_batches(predict, x, labels, batch_size, progress)

    def state_dict(self) -> dict:
        """The optimiser's state; a learned readouts' optimiser's under keys ``local_<key>``."""
        d = self.optimizer.state_dict()
        if self.local_optimizer is not None:
            d.update({_LOCAL_PREFIX + k: v for k, v in self.local_optimizer.state_dict().items()})
        return d

    def load_state_dict(self, state: dict) -> None:
        main = {k: v for k, v in state.items() if not k.startswith(_LOCAL_PREFIX)}
        self.optimizer.load_state_dict(main)
        if self.local_optimizer is not None:
            self.local_optimizer.load_state_dict({k[len(_LOCAL_PREFIX):]: v for k, v in state.items()
                                                  if k.startswith(_LOCAL_PREFIX)})


#: prefix of the learned local readouts' optimiser state in :meth:`FloatEngine.state_dict`
_LOCAL_PREFIX = "local_"

#: ``train.arith`` -> engine class ``(config, optimizer) -> Engine``
#: ``train.trainer``: the algorithm's estimate, or backpropagation through the free phase
TRAINERS = ("ep", "bptt")

ENGINES: Registry = Registry("engine")
ENGINES.register("float", FloatEngine)
ENGINES.register_lazy("fixed", "neuro_hts.hardware.fixed_engine:FixedEngine",
                      "a hardware target's integer arithmetic (train.target), updates rounded onto its weight grid")


#: ``train.backend`` -> engine class for ``train.arith = 'fixed'`` on that backend (default: ``fixed``)
FIXED_ENGINES: Registry = Registry("fixed-point training backend")
FIXED_ENGINES.register_lazy("lava", "neuro_hts.lava.learning:LavaFixedEngine",
                            "EP / CHL training inside Lava, bit-exact with the fixed engine (docs/LAVA_LEARNING.md)")


def make_engine(config, optimizer) -> Engine:
    """The engine of ``config.train.arith`` around ``optimizer`` (fixed arith on a backend of :data:`FIXED_ENGINES`: that one)."""
    tc = config.train
    if tc.arith == "fixed" and tc.backend in FIXED_ENGINES.names():
        return FIXED_ENGINES.get(tc.backend)(config, optimizer)
    return ENGINES.get(tc.arith)(config, optimizer)


def check_supported(engine, net, algorithm) -> None:
    """Raise one ConfigError naming every reason ``engine`` cannot run ``net`` with ``algorithm``."""
    reasons = engine.supports(net, algorithm)
    if reasons:
        raise ConfigError(f"engine {engine.name!r} cannot run this network with {algorithm.name}: " + "; ".join(reasons))
