"""EP training inside Lava: the learning graph, and the engine behind ``train --arith fixed --backend lava``.

Graph for layers ``1..L`` (:mod:`neuro_hts.lava.proc.ep`)::

    GradedSource(x) -> EPConnection_1 -> EPLayer_1 -> EPConnection_2 -> ... -> EPLayer_L (output)
                       EPConnection_l.b_out (W_l^T a_l) -> EPLayer_{l-1}
                       EPLayer_l.a_out -> EPConnection_l.post_in (what the update sees)
    GradedSource(y) -> EPLayer_L.y_in;  EPLayer_L.s_out -> StateRecorder (free-phase output)

One ``run()`` trains on N samples (one epoch) with no host round trip: every sample is one
block of the EP schedule, every connection updates its own integer weights after the last
sample of each batch (driven by the time step), and the host reads the weights once at the
end (``Var.get`` costs ~12 us per element: docs/LAVA.md). The integer update is
:func:`neuro_hts.hardware.fixed_learning.layer_update`, the one the Numba engine
(:class:`~neuro_hts.hardware.fixed_engine.FixedEngine`) runs, so after every batch the
weights are those of ``train --arith fixed --backend numba`` with the same flags, bit for
bit (tests/test_lava_learning.py).

``train.lava_learning = 'learning-dense'`` (:func:`train_lava_ld`): the weights learn
through Lava's own learning engine instead (``LearningDense``, a three-factor rule:
:mod:`neuro_hts.lava.proc.ep_ld`), not bit-exact; :func:`compare_ld_updates` measures it
against the exact update.

Supported: EP with one-sided or symmetric nudging, plain SGD (``optimizer = 'sgd'``, no
momentum), nearest or stochastic rounding, leaky form, MSE output, no early stop
(``t1_tol``). Evaluation after each epoch runs in the Numba simulator (the same integers
as Lava inference: tests/test_lava_hts.py).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from neuro_hts.dynamics import relax_status
from neuro_hts.engines import BatchStats
from neuro_hts.errors import ConfigError
from neuro_hts.hardware.fixed_engine import FixedEngine
from neuro_hts.hardware.fixed_learning import ROUNDINGS, LayerGrid, contrast_scale, layer_multipliers
from neuro_hts.hardware.quantize import DeployBundle
from neuro_hts.lava.network import LAVA_ACCUMULATOR_BITS, _deferred_interrupts
from neuro_hts.lava.schedule import START_ZERO, lava_schedule

__all__ = ["LavaTrainResult", "train_lava", "train_lava_ld", "train_lava_float", "update_cosine",
           "compare_ld_updates", "LavaFixedEngine", "LavaBackend"]

logger = logging.getLogger(__name__)

#: the learning-dense variant's pre-trace decay constant (one step multiplies the trace by exp(-1/tau))
DEFAULT_X1_TAU = 1.0

@dataclass(frozen=True)
class LavaTrainResult:
    """What :func:`train_lava` returns (int64 unless said otherwise).

    ``weights``/``biases``: per layer after the last batch (integer mantissas and state-unit
    biases for ``fixed_pt``, float64 for ``floating_pt``); ``weight_history`` /
    ``bias_history``: per layer (n_batches, n_out, n_in) / (n_batches, n_out) after every
    batch (``record_weights=True``, else None); ``top_free``: (N, n_L) output states at the
    end of every sample's free phase; ``residual``: (N,) the free phase's last-step residual
    (max over layers and neurons, state units).
    """

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    weight_history: tuple[np.ndarray, ...] | None
    bias_history: tuple[np.ndarray, ...] | None
    top_free: np.ndarray
    residual: np.ndarray
    n_steps: int
    seconds: float

    @property
    def samples_per_second(self) -> float:
        return self.top_free.shape[0] / self.seconds if self.seconds > 0 else math.inf


def _phases(algorithm):
    """``(phases, contrast)`` of an algorithm whose phases do not depend on a random draw."""
    try:
        return algorithm.phases(None)
    except ConfigError as exc:
        raise ConfigError(f"the Lava schedule is fixed for the whole run: {exc}") from None


def _grids(bundle: DeployBundle) -> list[LayerGrid]:
    ws = bundle.target.weights
    return [LayerGrid(int(lb.weight_exponent), ws.lsb, ws.max_int) for lb in bundle.layers]


def _check_int32(bundle: DeployBundle, x_max: int) -> None:
    """Refuse a layer whose worst case (weights anywhere in their range) leaves Lava Dense's int32 accumulator."""
    F, S = bundle.activation_frac_bits, bundle.state_frac_bits
    lim = (1 << (LAVA_ACCUMULATOR_BITS - 1)) - 1
    max_int = bundle.target.weights.max_int
    for l, lb in enumerate(bundle.layers):
        n_out, n_in = lb.weight_mantissa.shape
        k = int(lb.weight_exponent) - F + S
        for fan_in, a_max in ((n_in, x_max if l == 0 else 1 << F), (n_out, 1 << F)):
            bound = fan_in * max_int * a_max
            if max(bound, bound << max(k, 0)) > lim:
                raise ConfigError(f"layer {lb.index}: a learning connection's accumulator could leave Lava's int32 "
                                  f"(worst case {max(bound, bound << max(k, 0))} > {lim})")


def _training_inputs(bundle, x, y, *, batch_size, lrs, rounding, rng):
    """The checks both Lava training paths make before building anything; returns the
    simulator (which validates the activation), the learning rates as floats, the quantized
    input and the float targets."""
    from neuro_hts.hardware.fixed_sim import FixedPointSimulator

    if not isinstance(bundle, DeployBundle):
        raise ConfigError("Lava training needs a DeployBundle")
    if bundle.form != "leaky" or bundle.output != "mse":
        raise ConfigError(f"Lava training needs the leaky form with an MSE output, got {bundle.form}/{bundle.output}")
    sim = FixedPointSimulator(bundle)
    if rounding not in ROUNDINGS:
        raise ConfigError(f"rounding must be one of {', '.join(ROUNDINGS)}, got {rounding!r}")
    if rounding == "stochastic" and not isinstance(rng, np.random.Generator):
        raise ConfigError("stochastic rounding needs an explicit numpy.random.Generator (rng=...)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    lrs = tuple(float(v) for v in lrs)
    if len(lrs) != len(bundle.layers):
        raise ConfigError(f"expected {len(bundle.layers)} learning rates, got {len(lrs)}")
    x_int = sim.quantize_input(x)
    N = x_int.shape[0]
    yf = np.asarray(y, dtype=np.float64)
    if yf.shape != (N, sim.sizes[-1]) or not np.isfinite(yf).all():
        raise ConfigError(f"y must be finite with shape ({N}, {sim.sizes[-1]}), got {yf.shape}")
    return sim, lrs, x_int, yf


def _graph_common(sim, bundle, sched, lrs, grids, rounding, rng, x_int):
    """What both Lava training graphs start from: the block length, the integer widths the
    layers take, the rounding generator's state (None for nearest), each layer's (weight
    shape, bias shape, lr, grid) and the input source."""
    from neuro_hts.lava.proc import hts as P

    block = sched["block"]
    widths = dict(state_frac_bits=sim.S, activation_frac_bits=sim.F, decay_bits=sim.decay_bits,
                  input_bits=sim.input_bits, state_bits=sim.state_bits)
    rng_param = None if rounding == "nearest" else (type(rng.bit_generator).__name__, rng.bit_generator.state)
    shapes = [(tuple(lb.weight_mantissa.shape), (lb.weight_mantissa.shape[0],), lr, g)
              for lb, lr, g in zip(bundle.layers, lrs, grids)]
    inp = P.GradedSource(data=x_int.T.copy(), steps_per_sample=block, name="x")
    return block, widths, rng_param, shapes, inp


def train_lava(bundle: DeployBundle, x, y, *, batch_size: int, algorithm, lrs, rounding: str = "nearest",
               rng: np.random.Generator | None = None, record_weights: bool = False, chunk: int | None = None,
               progress=None) -> LavaTrainResult:
    """Train ``bundle`` in Lava (``fixed_pt``) on the rows of ``x`` in order, batches of ``batch_size``.

    ``algorithm``: an :mod:`neuro_hts.algorithms` algorithm (EP one-sided or symmetric,
    CHL, either adapted) or a Plan: its phases become the block schedule
    (:func:`~neuro_hts.lava.schedule.lava_schedule`). ``y``: (N, n_L) targets; ``lrs``:
    one learning rate per layer; ``rng``: the Generator whose draws stochastic rounding
    uses, in the state the Numba engine's would be in (``rng`` itself is not advanced).
    ``chunk``: batches per ``run()`` call (progress is called with the samples done after
    each). Ctrl-C (SIGINT/SIGTERM) finishes the current chunk, stops the runtime and raises
    KeyboardInterrupt.
    """
    sim, lrs, x_int, yf = _training_inputs(bundle, x, y, batch_size=batch_size, lrs=lrs, rounding=rounding, rng=rng)
    phases, contrast = _phases(algorithm)
    sched = lava_schedule(phases, contrast, lambda v: sim.fraction(v, "a phase parameter"))
    L, N = len(bundle.layers), x_int.shape[0]
    D, F, S = sim.decay_bits, sim.F, sim.S
    ba, bb = sched["beta_a"], sched["beta_b"]
    x_max = int(np.max(np.abs(x_int), initial=0))
    _check_int32(bundle, x_max)
    grids = _grids(bundle)
    starts = list(range(0, N, int(batch_size))) + [N]
    if rounding == "stochastic":
        # the replayed draws of other layers need shifts that do not depend on the contrasts
        for l, (grid, lr) in enumerate(zip(grids, lrs)):
            a_pre = x_max if l == 0 else 1 << F
            for B in sorted({starts[i + 1] - starts[i] for i in range(len(starts) - 1)}):
                worst = layer_multipliers(lr, ba, bb, B, F, D, S, grid, B * a_pre * (1 << F), B * (1 << F))
                if worst != layer_multipliers(lr, ba, bb, B, F, D, S, grid):
                    raise ConfigError(f"layer {l + 1}: the update multiplier would depend on the contrast's size "
                                      f"(batch {B}); stochastic Lava training cannot replay the draws")
    from neuro_hts.lava.proc import ep as E
    from neuro_hts.lava.proc import hts as P

    block, widths, rng_param, shapes, inp = _graph_common(sim, bundle, sched, lrs, grids, rounding, rng, x_int)
    layers, conns = [], []
    for l, lb in enumerate(bundle.layers):
        layers.append(E.EPLayer(dt=np.asarray(lb.dt, dtype=np.float64), decay=np.asarray(lb.decay, dtype=np.int64),
                                schedule=sched, n_samples=N, top=l == L - 1, activation=bundle.activation,
                                fixed=widths, name=f"layer{l + 1}"))
        learn = dict(lr=lrs[l], beta_a=ba, beta_b=bb, F=F, D=D, S=S, input_bits=sim.input_bits, grid=grids[l],
                     rounding=rounding, rng=rng_param, index=l, layers=shapes)
        conns.append(E.EPConnection(weights=np.asarray(lb.weight_mantissa, dtype=np.int64),
                                    bias=np.asarray(lb.bias, dtype=np.int64), shift=int(sim.shifts[l]), block=block,
                                    j_a=sched["j_a"], j_b=sched["j_b"], batches=starts, learn=learn,
                                    record=record_weights, name=f"W{l + 1}"))
    ysrc = P.GradedSource(data=np.rint(yf * sim.one).astype(np.int64).T.copy(), steps_per_sample=block, name="y")
    return _run_training(inp, ysrc, layers, conns, P, sched, starts, shapes, record_weights, chunk, progress,
                         "fixed_pt")


def _with_transfer_step(sched: dict, gamma_one) -> dict:
    """The schedule plus one trailing START step per block (state 0, no update): the step at which the learning-dense
    rule moves the batch's tag to the weights and resets it, after both phase ends of the last sample."""
    out = {k: (list(v) if isinstance(v, list) else v) for k, v in sched.items()}
    for k, v in (("kind", START_ZERO), ("src", -1), ("beta", 0), ("clamp", 0), ("gamma", gamma_one), ("anchor", -1),
                 ("coe", 0), ("save", [])):
        out[k].append(v)
    out["block"] = sched["block"] + 1
    return out


def train_lava_ld(bundle, x, y, *, batch_size: int, algorithm, lrs, rounding: str = "nearest",
                  rng: np.random.Generator | None = None, x1_tau: float = DEFAULT_X1_TAU, rng_seed: int = 0,
                  record_weights: bool = False, chunk: int | None = None, progress=None) -> LavaTrainResult:
    """Train ``bundle`` in Lava through Lava's own learning engine (``LearningDense``, the three-factor EP rule of
    :mod:`neuro_hts.lava.proc.ep_ld`): ``train --lava-learning learning-dense``.

    Arguments as :func:`train_lava`; ``rounding``/``rng``: the BIAS update's rounding (the
    biases learn in the layers with the exact integer rule; the weights are rounded by
    Lava's learning engine, stochastically, with its own fixed-seed generator);
    ``x1_tau``: the pre trace's decay constant (> 0); ``rng_seed``: the seed of Lava's
    trace generators. Returns weights as mantissas on the bundle's grid (Lava's learning
    weights, in grid steps, times ``lsb``, clipped to ``max_int``) and the biases.
    """
    from neuro_hts.lava.ld_rule import rule_scale

    sim, lrs, x_int, yf = _training_inputs(bundle, x, y, batch_size=batch_size, lrs=lrs, rounding=rounding, rng=rng)
    if isinstance(x1_tau, bool) or not isinstance(x1_tau, (int, float)) or not x1_tau > 0 or not math.isfinite(x1_tau):
        raise ConfigError(f"x1_tau must be a finite number > 0, got {x1_tau!r}")
    phases, contrast = _phases(algorithm)
    sched = _with_transfer_step(lava_schedule(phases, contrast, lambda v: sim.fraction(v, "a phase parameter")),
                                sim.fraction(1.0, "gamma"))
    L, N = len(bundle.layers), x_int.shape[0]
    D, F, S = sim.decay_bits, sim.F, sim.S
    ba, bb = sched["beta_a"], sched["beta_b"]
    x_max = int(np.max(np.abs(x_int), initial=0))
    if x_max > 1 << F or int(np.min(x_int, initial=0)) < 0:
        raise ConfigError("learning-dense: Lava's traces need inputs in [0, 1] (non-negative 8-bit trace payloads)")
    _check_int32(bundle, x_max)
    grids = _grids(bundle)
    starts = list(range(0, N, int(batch_size))) + [N]
    B = starts[1] - starts[0]  # the rule's constants hold this batch size (a shorter last batch: the same scale)
    from neuro_hts.lava.proc import ep_ld as LD
    from neuro_hts.lava.proc import hts as P

    block, widths, rng_param, shapes, inp = _graph_common(sim, bundle, sched, lrs, grids, rounding, rng, x_int)
    layers, conns, scales = [], [], []
    for l, lb in enumerate(bundle.layers):
        grid = grids[l]
        cw_real = lrs[l] * contrast_scale(ba, bb, B, 2 * F, D) / grid.step
        mt, mw, ew = rule_scale(cw_real, F, x1_tau)
        scales.append((mt, mw, ew))
        learn = dict(F=F, learn_w=mt > 0, j_a=sched["j_a"], j_b=sched["j_b"], batches=starts, lr=lrs[l], beta_a=ba,
                     beta_b=bb, D=D, S=S, input_bits=sim.input_bits, grid=grid, rounding=rounding, rng=rng_param)
        layers.append(LD.EPLayerLD(bias=np.asarray(lb.bias, dtype=np.int64), learn=learn, record=record_weights,
                                   dt=np.asarray(lb.dt, dtype=np.float64), decay=np.asarray(lb.decay, dtype=np.int64),
                                   schedule=sched, n_samples=N, top=l == L - 1, activation=bundle.activation,
                                   fixed=widths, name=f"layer{l + 1}"))
        mant = np.asarray(lb.weight_mantissa, dtype=np.int64)
        if np.any(mant % grid.lsb):
            raise ConfigError(f"layer {l + 1}: mantissas off the grid's lsb {grid.lsb}")
        rule = LD.ep_rule(mt, mw, ew, x1_tau, rng_seed + 4 * l)
        conns.append(LD.EPLearningDense(weights=mant // grid.lsb, weight_exp=int(sim.shifts[l]) + LD.log2_lsb(grid.lsb),
                                        learning_rule=rule, F=F, block=block, batches=starts, record=record_weights,
                                        name=f"W{l + 1}"))
    for l in range(L):
        layers[l].y1_out.connect(conns[l].s_in_y1)
        layers[l].y2_out.connect(conns[l].s_in_y2)
        layers[l].y3_out.connect(conns[l].s_in_y3)
    logger.info("learning-dense rule per layer (m_t, m_w, e_w): %s, x1_tau %g", scales, x1_tau)
    ysrc = P.GradedSource(data=np.rint(yf * sim.one).astype(np.int64).T.copy(), steps_per_sample=block, name="y")
    r = _run_training(inp, ysrc, layers, conns, P, sched, starts, shapes, record_weights, chunk, progress,
                      "fixed_pt", bias_procs=layers)

    def to_grid(q, grid):
        return np.clip(np.asarray(q, dtype=np.int64) * grid.lsb, -grid.max_int, grid.max_int)

    w = tuple(to_grid(q, g) for q, g in zip(r.weights, grids))
    hist = None if r.weight_history is None else tuple(to_grid(h, g) for h, g in zip(r.weight_history, grids))
    return LavaTrainResult(w, r.biases, hist, r.bias_history, r.top_free, r.residual, r.n_steps, r.seconds)


def update_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """``cos(a, b) = <a, b> / (|a| |b|)`` of two weight changes (NaN when either is zero)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(a @ b) / (na * nb) if na > 0 and nb > 0 else math.nan


def compare_ld_updates(engine: FixedEngine, net, x, y, algorithm, *, x1_tau: float = DEFAULT_X1_TAU,
                       rng_seed: int = 0, ld: LavaTrainResult | None = None) -> dict:
    """Per batch and layer, the learning-dense weight change against the exact integer EP update on the same batch.

    One :func:`train_lava_ld` run over ``x`` (batches of ``engine``'s batch size, nearest
    bias rounding, from ``engine.bundle(net)``) unless ``ld`` is given. For every batch b,
    from the learning-dense weights and biases at the start of b, the simulator's phases
    give the exact update before rounding, ``dm = lsb C M_w / 2**K_w`` mantissa units
    (:func:`~neuro_hts.hardware.fixed_learning.fixed_ep_update`: C the exact int64
    contrast, ``(M_w, K_w)`` its multiplier). Returns ``cos`` (n_batches, L):
    :func:`update_cosine` of the learning-dense mantissa change with ``dm``;
    ``norm_ratio`` ``|dW_ld| / |dm|``; ``mean``/``min`` of ``cos`` over batches; ``ld``;
    ``cos_sr``/``mean_sr``: the same cosine for the exact path's own stochastically rounded
    step (``round_shift``, a Generator seeded ``[rng_seed, 11]``), the baseline; ``cum`` /
    ``cum_sr``: per layer, the cosine of the changes summed over all batches with the
    summed exact steps (rounding noise averages out).
    """
    from neuro_hts.algorithms import run_phases
    from neuro_hts.hardware.fixed_learning import fixed_ep_update, fixed_relaxer
    from neuro_hts.hardware.fixed_sim import FixedPointSimulator

    B = engine.tc.batch_size
    start = engine.bundle(net)
    if ld is None:
        ld = train_lava_ld(start, x, y, batch_size=B, algorithm=algorithm, lrs=engine.inner.lrs, rounding="nearest",
                           x1_tau=x1_tau, rng_seed=rng_seed, record_weights=True)
    grids = engine.grids()
    S = start.state_frac_bits
    prev_w = [np.asarray(lb.weight_mantissa, dtype=np.int64) for lb in start.layers]
    prev_b = [np.asarray(lb.bias, dtype=np.int64) for lb in start.layers]
    cos, ratio, cos_sr, sums = [], [], [], []
    sr_rng = np.random.default_rng([rng_seed, 11])
    work = net.astype(np.float32) if hasattr(net, "astype") else net
    for bi, s in enumerate(range(0, x.shape[0], B)):
        for l, grid in enumerate(grids):
            work.weights[l][...] = prev_w[l] * math.ldexp(1.0, grid.exponent)
            work.biases[l][...] = prev_b[l] * 2.0**-S
        bundle = engine.bundle(work)
        sim = FixedPointSimulator(bundle)
        xb, yb = x[s:s + B], y[s:s + B]
        res, c = run_phases(fixed_relaxer(sim, xb, yb), algorithm, None)
        up = fixed_ep_update(bundle, xb, yb, res[c.a].states, c.beta_a, res[c.b].states, c.beta_b, engine.inner.lrs,
                             "nearest", sim=sim)
        n = xb.shape[0]
        ex = []
        for C, grid, lr in zip(up.contrast_weights, grids, engine.inner.lrs):
            (Mw, Kw), _ = layer_multipliers(lr, up.beta_a_int, up.beta_b_int, n, sim.F, sim.decay_bits, sim.S, grid)
            ex.append(grid.lsb * C.astype(np.float64) * math.ldexp(Mw, -Kw))
        got = [ld.weight_history[l][bi] - prev_w[l] for l in range(len(grids))]
        cos.append([update_cosine(g, e) for g, e in zip(got, ex)])
        sr = fixed_ep_update(bundle, xb, yb, res[c.a].states, c.beta_a, res[c.b].states, c.beta_b, engine.inner.lrs,
                             "stochastic", sr_rng, sim=sim)
        cos_sr.append([update_cosine(grid.lsb * q, e) for q, grid, e in zip(sr.dq_weights, grids, ex)])
        step_sr = [grid.lsb * q.astype(np.float64) for q, grid in zip(sr.dq_weights, grids)]
        if not sums:
            sums = [(np.zeros_like(e), np.zeros_like(e), np.zeros_like(e)) for e in ex]
        sums = [(sg + g, se + e, ss + q) for (sg, se, ss), g, e, q in zip(sums, got, ex, step_sr)]
        ratio.append([float(np.linalg.norm(g) / np.linalg.norm(e)) if np.any(e) else math.nan for g, e in zip(got, ex)])
        prev_w = [ld.weight_history[l][bi] for l in range(len(grids))]
        prev_b = [ld.bias_history[l][bi] for l in range(len(grids))]
    cos, ratio, cos_sr = np.asarray(cos), np.asarray(ratio), np.asarray(cos_sr)
    return dict(cos=cos, norm_ratio=ratio, mean=np.nanmean(cos, axis=0), min=np.nanmin(cos, axis=0), ld=ld,
                cos_sr=cos_sr, mean_sr=np.nanmean(cos_sr, axis=0),
                cum=np.array([update_cosine(g, e) for g, e, _ in sums]),
                cum_sr=np.array([update_cosine(q, e) for _, e, q in sums]))


def train_lava_float(net, x, y, *, batch_size: int, algorithm, lrs, record_weights: bool = False,
                     chunk: int | None = None, progress=None) -> LavaTrainResult:
    """The ``floating_pt`` counterpart of :func:`train_lava`: a float :class:`~neuro_hts.network.Network`
    (leaky form, MSE output, dense) trained in Lava with the plain SGD step on the EP estimate
    (float64; ``train --arith float --optimizer sgd --backend numpy`` to rounding)."""
    from neuro_hts.network import Network

    if not isinstance(net, Network) or net.form != "leaky" or net.output != "mse" or not getattr(net, "is_dense", True):
        raise ConfigError("floating-point Lava training needs a dense leaky-form Network with an MSE output")
    if net.activation not in ("hard_sigmoid", "sigmoid4"):
        raise ConfigError(f"unsupported activation {net.activation!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    phases, contrast = _phases(algorithm)
    sched = lava_schedule(phases, contrast, float)
    weights = [np.asarray(w, dtype=np.float64) for w in net.weights]
    L = len(weights)
    lrs = tuple(float(v) for v in lrs)
    if len(lrs) != L:
        raise ConfigError(f"expected {L} learning rates, got {len(lrs)}")
    xf = np.asarray(x, dtype=np.float64)
    yf = np.asarray(y, dtype=np.float64)
    N = xf.shape[0]
    if xf.shape != (N, weights[0].shape[1]) or yf.shape != (N, weights[-1].shape[0]):
        raise ConfigError(f"x, y must have shapes (N, {weights[0].shape[1]}), (N, {weights[-1].shape[0]})")
    if not (np.isfinite(xf).all() and np.isfinite(yf).all()):
        raise ConfigError("x or y contains NaN or infinity")
    from neuro_hts.lava.proc import ep as E
    from neuro_hts.lava.proc import hts as P

    block = sched["block"]
    starts = list(range(0, N, int(batch_size))) + [N]
    shapes = [(w.shape, (w.shape[0],), lr, None) for w, lr in zip(weights, lrs)]
    inp = P.GradedSource(data=xf.T.copy(), steps_per_sample=block, name="x")
    layers, conns = [], []
    for l, (w, b, dt) in enumerate(zip(weights, net.biases, net.dts)):
        layers.append(E.EPLayer(dt=np.asarray(dt, dtype=np.float64), decay=np.zeros(len(dt), dtype=np.int64),
                                schedule=sched, n_samples=N, top=l == L - 1, activation=net.activation,
                                name=f"layer{l + 1}"))
        conns.append(E.EPConnection(weights=w, bias=np.asarray(b, dtype=np.float64), block=block, j_a=sched["j_a"],
                                    j_b=sched["j_b"], batches=starts,
                                    learn=dict(lr=lrs[l], beta_a=sched["beta_a"], beta_b=sched["beta_b"]),
                                    record=record_weights, name=f"W{l + 1}"))
    ysrc = P.GradedSource(data=yf.T.copy(), steps_per_sample=block, name="y")
    return _run_training(inp, ysrc, layers, conns, P, sched, starts, shapes, record_weights, chunk, progress,
                         "floating_pt")


def _run_training(inp, ysrc, layers, conns, P, sched, starts, shapes, record_weights, chunk, progress, tag,
                  bias_procs=None):
    """Wire the learning graph, run it in chunks of batches, read the results back, always stop it.

    ``bias_procs``: the processes whose ``bias`` / ``b_hist`` Vars hold the biases (default the connections)."""
    bias_procs = conns if bias_procs is None else bias_procs
    from neuro_hts.lava._lifeline import install as _install_lifeline
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg

    L = len(layers)
    for l in range(L):
        pre = inp.s_out if l == 0 else layers[l - 1].a_out
        pre.connect(conns[l].s_in)
        conns[l].a_out.connect(layers[l].a_in)
        layers[l].a_out.connect(conns[l].post_in)
        if l > 0:
            conns[l].b_out.connect(layers[l - 1].d_in)
    ysrc.s_out.connect(layers[-1].y_in)
    N, block = starts[-1], sched["block"]
    rec = P.StateRecorder(shape=conns[-1].weights.shape[0], n_records=N, steps_per_sample=block,
                          record_step=sched["free_end"], name="free_top")
    layers[-1].s_out.connect(rec.a_in)
    dtype = np.int64 if tag == "fixed_pt" else np.float64
    run_cfg = Loihi2SimCfg(select_tag=tag)
    _install_lifeline()
    n_batches = len(starts) - 1
    chunk = n_batches if chunk is None else max(1, int(chunk))
    seconds = 0.0
    with _deferred_interrupts() as interrupted:
        try:
            done = 0
            while done < n_batches:
                nb = min(chunk, n_batches - done)
                n_samples = starts[done + nb] - starts[done]
                t0 = time.perf_counter()
                inp.run(condition=RunSteps(num_steps=n_samples * block), run_cfg=run_cfg)
                seconds += time.perf_counter() - t0
                done += nb
                if progress is not None:
                    progress(starts[done])
                if interrupted():
                    break
            if interrupted():
                raw = None
            else:
                w = tuple(np.asarray(c.weights.get(), dtype=dtype) for c in conns)
                bias = tuple(np.asarray(c.bias.get(), dtype=dtype) for c in bias_procs)
                top = np.asarray(rec.data.get(), dtype=dtype).T
                resid = np.max(np.stack([np.asarray(ly.resid.get(), dtype=dtype) for ly in layers]), axis=0)
                hist_w = hist_b = None
                if record_weights:
                    hist_w = tuple(np.asarray(c.w_hist.get(), dtype=dtype).reshape(n_batches, *shapes[l][0])
                                   for l, c in enumerate(conns))
                    hist_b = tuple(np.asarray(c.b_hist.get(), dtype=dtype) for c in bias_procs)
                raw = (w, bias, top, resid, hist_w, hist_b)
        finally:
            if inp.runtime is not None:
                inp.stop()
    if raw is None:
        logger.info("Lava training interrupted after %d of %d batches; runtime stopped", done, n_batches)
        raise KeyboardInterrupt
    w, bias, top, resid, hist_w, hist_b = raw
    logger.info("Lava training (%s): %d samples (%d batches), %d steps in %.3f s (%.1f samples/s)", tag, N, n_batches,
                N * block, seconds, N / seconds if seconds else math.inf)
    return LavaTrainResult(w, bias, hist_w, hist_b, top, resid, N * block, seconds)


# --------------------------------------------------------------------------- engine


class LavaFixedEngine(FixedEngine):
    """``train.arith = 'fixed'`` with ``train.backend = 'lava'``: each epoch is one Lava run of :func:`train_lava`.

    The grid, the run file's state and the evaluation are :class:`FixedEngine`'s; the
    training loop calls :meth:`train_epoch` instead of ``train_step`` (one Lava run per
    epoch, BatchStats per batch from the recorded free phases).
    """

    name = "fixed"

    def __init__(self, config, optimizer):
        super().__init__(config, optimizer)
        if not self.integer_sgd:
            raise ConfigError("--backend lava trains with the integer SGD update: use --optimizer sgd (no momentum)")

    @staticmethod
    def _import_lava() -> None:
        """Import Lava now: it fixes multiprocessing's start method on import and refuses if
        something else (a tqdm bar) fixed it first, so before the training loop's progress bars."""
        from neuro_hts.lava import import_lava
        from neuro_hts.lava.proc import ep  # noqa: F401

        import_lava()

    def supports(self, net, algorithm) -> list[str]:
        reasons = super().supports(net, algorithm)
        try:
            phases, contrast = _phases(algorithm)
            lava_schedule(phases, contrast)
        except ConfigError as exc:
            reasons.append(f"backend 'lava': {exc}")
        return reasons

    def train_step(self, net, x, y, algorithm, nudge_rng=None, round_rng=None) -> BatchStats:
        raise ConfigError("backend 'lava' trains whole epochs (train_epoch), not single batches")

    def train_epoch(self, net, x, y, batches, algorithm, nudge_rng=None, round_rng=None):
        """Train on ``batches`` (index arrays into ``x``, ``y``) in one Lava run: an iterator of each batch's BatchStats.

        Imports Lava at once (call it before creating progress bars); the run happens on the
        first ``next()``, which updates the network's weights and biases in place.
        """
        self._import_lava()
        return self._epoch(net, x, y, batches, algorithm, round_rng)

    def _epoch(self, net, x, y, batches, algorithm, round_rng):
        bundle = self.bundle(net)
        idx = np.concatenate([np.asarray(b, dtype=np.int64) for b in batches])
        sizes = [len(b) for b in batches]
        if any(s != self.tc.batch_size for s in sizes[:-1]):
            raise ConfigError("backend 'lava' needs batches of train.batch_size samples (the last may be smaller)")
        yb = np.asarray(y, dtype=np.float64)[idx]
        xb = np.asarray(x, dtype=np.float64)[idx]
        if getattr(self.tc, "lava_learning", "exact") == "learning-dense":
            if self.tc.update_rounding == "stochastic" and not isinstance(round_rng, np.random.Generator):
                raise ConfigError("stochastic rounding needs the epoch's round_rng")
            seed = int(round_rng.integers(0, 2**31)) if isinstance(round_rng, np.random.Generator) else self.tc.seed
            r = train_lava_ld(bundle, xb, yb, batch_size=self.tc.batch_size, algorithm=algorithm, lrs=self.inner.lrs,
                              rounding=self.tc.update_rounding, rng=round_rng, rng_seed=seed, chunk=1)
        else:
            r = train_lava(bundle, xb, yb, batch_size=self.tc.batch_size, algorithm=algorithm, lrs=self.inner.lrs,
                           rounding=self.tc.update_rounding, rng=round_rng,
                           chunk=1)  # one batch per run() call: Ctrl-C is honoured after the current batch
        free_steps = algorithm.free_phase().steps
        S = bundle.state_frac_bits
        for l, grid in enumerate(self.grids()):
            net.weights[l][...] = r.weights[l] * math.ldexp(1.0, grid.exponent)
            net.biases[l][...] = r.biases[l] * 2.0**-S
        one = float(1 << S)
        tol_int = math.floor(self.status_tol * (1 << S))
        start = 0
        for n in sizes:
            top = r.top_free[start:start + n]
            yf = yb[start:start + n]
            res = r.residual[start:start + n]
            loss = float(0.5 * np.sum((top / one - yf) ** 2))
            correct = int((np.argmax(top, axis=1) == yf.argmax(axis=1)).sum())
            yield BatchStats(loss, correct, n, res / one, free_steps, relax_status(res, tol_int))
            start += n


class LavaBackend:
    """``train.backend = 'lava'``: valid only with ``train.arith = 'fixed'`` (:class:`LavaFixedEngine`).

    As a float backend it refuses every network (``supports``), so ``--arith float
    --backend lava`` is a one-line error.
    """

    name = "lava"

    def __init__(self, dtype=np.float32):
        self.dtype = np.dtype(dtype)

    def supports(self, net) -> list[str]:
        return ["backend 'lava' trains in fixed point only: use --arith fixed --target loihi2"]

    def input_drive(self, net, x):
        raise ConfigError(self.supports(net)[0])

    def relax(self, net, x, n_steps, *args, **kwargs):
        raise ConfigError(self.supports(net)[0])

    def ep_gradients(self, *args, **kwargs):
        raise ConfigError(self.supports(None)[0])
