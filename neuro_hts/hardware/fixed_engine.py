"""The fixed engine: training in a hardware target's integer arithmetic (``train.arith = "fixed"``).

Registered as ``"fixed"`` in :data:`neuro_hts.engines.ENGINES`. Every batch quantizes the
current network exactly (it lies on the grid), runs the algorithm's phases
(:func:`neuro_hts.algorithms.run_phases`) in :class:`~.fixed_sim.FixedPointSimulator`'s
integers, forms the integer contrast of the algorithm's two phases and puts the update
on the weight grid (:mod:`.fixed_learning` holds the equations):

* optimizer ``sgd`` without momentum: the fully integer path
  (:func:`~.fixed_learning.fixed_ep_update`);
* ``adam`` (or SGD with momentum): the float optimiser runs on the fixed-point estimate
  (:func:`~.fixed_learning.fixed_ep_gradients`) and its proposed step is rounded onto the
  grid (:func:`~.fixed_learning.round_to_grid`, stochastic by default).

The same engine runs EP, CHL and adjusted adaptation: CHL's contrast (clamped vs free,
no 1/beta) is the ``beta_a - beta_b = 1`` case, whose integer divisor is ``2**D``.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

from ..algorithms import run_phases
from ..engines import BatchStats, EvalResult
from ..errors import ConfigError
from ..network import Network
from .fixed_learning import (
    ROUNDINGS,
    LayerGrid,
    apply_bias_update,
    apply_weight_update,
    bundle_on_grid,
    canonical_target,
    ep_contrast,
    evaluate_fixed,
    fixed_ep_gradients,
    fixed_ep_update,
    fixed_relaxer,
    round_to_grid,
    traces,
)
from .fixed_point import quantize_weights
from .fixed_sim import FixedPointSimulator
from .quantize import DeployBundle, state_frac_bits

__all__ = ["FixedEngine"]


class FixedEngine:
    """Training in the target's arithmetic; see the module docstring.

    Wraps the float optimiser of :func:`neuro_hts.learning.make_optimizer` (used for Adam
    and SGD with momentum). ``state_dict()`` holds the inner optimiser's state plus
    ``weight_exponent`` (one scalar int64 per layer), so a run file resumes on the same grid.
    The network's float values stay exact in the backend's dtype: ``m * 2**e`` and
    ``bias * 2**-S`` are representable in float32 for 8-bit mantissas and 24-bit biases.
    """

    name = "fixed"
    #: no per-layer training diagnostics (docs/FORMAT.md "/diagnostics"): its states are
    #: integers on the target's grid and its update is rounded there; runs have no group
    records_diagnostics = False

    def __init__(self, config, optimizer):
        from ..backends import get_backend

        tc = config.train
        if tc.update_rounding not in ROUNDINGS:
            raise ConfigError(f"[train] update_rounding must be one of {', '.join(ROUNDINGS)}")
        self.tc = tc
        self.inner = optimizer
        self.target, self.target_name = canonical_target(tc.target)
        self.exponents: tuple[int, ...] | None = None
        self.integer_sgd = optimizer.kind == "sgd" and not getattr(optimizer, "momentum", 0.0)
        self.dtype = get_backend(tc.backend).dtype
        self.status_tol = float(tc.residual_tol)

    # ------------------------------------------------------------------ engine interface
    @property
    def lrs(self):
        return self.inner.lrs

    @lrs.setter
    def lrs(self, value):
        self.inner.lrs = tuple(value)

    @property
    def S(self) -> int:
        return state_frac_bits(self.target)

    def canonical_config(self, config):
        """Record the target by its bare name when ``hardware/<name>.toml`` holds the same target."""
        if self.target_name != config.train.target:
            return config.replace(train={"target": self.target_name})
        return config

    def supports(self, net, algorithm) -> list[str]:
        reasons = list(algorithm.supports(net))
        if not getattr(net, "is_dense", True):
            reasons.append("arith 'fixed' runs dense chains of [n] layers only (conv2d and C x H x W layers: arith 'float' "
                           "with backend 'numpy')")
        if net.form != "leaky" or net.output != "mse":
            reasons.append(f"arith 'fixed' needs the leaky form with an MSE output, got {net.form}/{net.output}")
        return reasons

    def grids(self) -> list[LayerGrid]:
        ws = self.target.weights
        return [LayerGrid(int(e), ws.lsb, ws.max_int) for e in self.exponents]

    def prepare(self, net: Network) -> bool:
        """Fix the exponents from ``net`` (the initial network) and put it on the grid (nearest), in place."""
        from .drc import run_design_rules

        if not getattr(net, "is_dense", True):
            raise ConfigError("arith 'fixed' runs dense chains of [n] layers only (conv2d and C x H x W layers: arith "
                              "'float' with backend 'numpy')")
        if net.form != "leaky" or net.output != "mse":
            raise ConfigError(f"arith 'fixed' needs the leaky form with an MSE output, got {net.form}/{net.output}")
        violations = run_design_rules(net.astype(np.float64), self.target)
        if violations:
            raise ConfigError("design rules violated: " + "; ".join(map(str, violations)))
        ws = self.target.weights
        exps = []
        S = self.S
        lim = (1 << (self.target.state.input_bits - 1)) - 1
        for w, b in zip(net.weights, net.biases):
            q = quantize_weights(w, ws.mantissa_bits, ws.exponent_range, even=ws.even)
            exps.append(int(q.exponent))
            w[...] = q.mantissas * q.scale
            b[...] = np.clip(np.rint(np.asarray(b, dtype=np.float64) * 2.0**S), -lim, lim) * 2.0**-S
        self.exponents = tuple(exps)
        return True

    def bundle(self, net: Network) -> DeployBundle:
        return bundle_on_grid(net, self.target, self.exponents)

    def train_step(self, net: Network, x, y, algorithm, nudge_rng=None, round_rng=None) -> BatchStats:
        """One fixed-point update on a batch; returns the free phase's BatchStats (residual in float units)."""
        bundle = self.bundle(net)
        sim = FixedPointSimulator(bundle)
        res, c = run_phases(fixed_relaxer(sim, x, y, self.status_tol), algorithm, nudge_rng)
        free = res["free"]
        sa, sb, beta_a, beta_b = res[c.a].states, res[c.b].states, c.beta_a, c.beta_b
        out = free.states[-1] / float(sim.one)
        yf = np.asarray(y, dtype=np.float64)
        loss = float(0.5 * np.sum((out - yf) ** 2))
        correct = int((np.argmax(free.states[-1], axis=1) == yf.argmax(axis=1)).sum())
        grids = self.grids()
        rounding = self.tc.update_rounding
        if self.integer_sgd:
            up = fixed_ep_update(bundle, x, y, sa, beta_a, sb, beta_b, self.inner.lrs, rounding, round_rng, sim=sim)
            dqw, dqb = up.dq_weights, up.dq_biases
        else:
            ba, bb = sim.fraction(beta_a, "beta"), sim.fraction(beta_b, "beta")
            CW, cb = ep_contrast(traces(sim, x, sa), traces(sim, x, sb))
            gW, gb = fixed_ep_gradients(CW, cb, ba, bb, x.shape[0], sim.F, sim.decay_bits)
            proxy = SimpleNamespace(weights=[np.zeros_like(w) for w in net.weights], biases=[np.zeros_like(b) for b in net.biases])
            self.inner.step(proxy, gW, gb)  # the optimiser's proposed step, written into zeros
            dqw = [round_to_grid(d.astype(np.float64) / g.step, rounding, round_rng) for d, g in zip(proxy.weights, grids)]
            dqb = [round_to_grid(d.astype(np.float64) * 2.0**sim.S, rounding, round_rng) for d in proxy.biases]
        for l, grid in enumerate(grids):
            lb = bundle.layers[l]
            m = apply_weight_update(lb.weight_mantissa, dqw[l], grid)
            bias = apply_bias_update(lb.bias, dqb[l], sim.input_bits)
            net.weights[l][...] = m * math.ldexp(1.0, grid.exponent)
            net.biases[l][...] = bias * 2.0**-sim.S
        return BatchStats(loss, correct, x.shape[0], free.residual / float(sim.one), free.n_steps, free.status)

    def evaluate(self, net, x, labels, phase, batch_size: int = 1000, progress=None) -> EvalResult:
        """Fixed-point free phase (``phase``: steps, gamma, tol) on every sample, on the run's grid."""
        return evaluate_fixed(net, self.target, self.exponents, x, labels, phase.steps, batch_size, progress,
                              gamma=phase.gamma, tol=phase.tol)

    def state_dict(self) -> dict:
        d = self.inner.state_dict()
        d["weight_exponent"] = [np.array(e, dtype=np.int64) for e in self.exponents]
        return d

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        if "weight_exponent" not in state:
            raise ConfigError("the run's optimizer state has no weight_exponent: not a fixed-arith run")
        self.exponents = tuple(int(np.asarray(e)) for e in state.pop("weight_exponent"))
        self.inner.load_state_dict(state)
