"""Builder: a deploy bundle (``fixed_pt``) or a float network (``floating_pt``) as a Lava graph.

Graph for layers ``1..L`` (sizes ``n_l``; ``x`` has ``n_0`` features)::

    GradedSource(x) --Dense(W_1)--> HTSLayer_1 --Dense(W_2)--> ... --> HTSLayer_L (output)
                                    HTSLayer_l <--Dense(W_{l+1}^T)-- HTSLayer_{l+1}
    GradedSource(y) --------------------------------------------------> HTSOutputLayer.y_in
    HTSLayer_l.s_out --> StateRecorder (what the caller asked to record)

With a softmax readout (``output = "ce"``) the top relaxed layer feeds
``Dense(W_L) --> HTSReadout --> StateRecorder (logits)``, and in a nudged phase
``GradedSource(y) --> HTSReadout.y_in``, ``HTSReadout.b_out --> HTSOutputLayer.y_in``
(its feedback ``W_L^T (y - softmax)``). Leaky and energy form alike.

Conv2d layers (bundles only, ``fixed_pt``): a layer without max pooling whose unrolled
matrix Lava's Sparse keeps exactly becomes two ``Sparse`` connections (``W_u``,
``W_u^T``); any other conv layer becomes ONE
:class:`~neuro_hts.lava.proc.conv.HTSConvConnection` (forward drive and feedback, the
Numba conv kernel's functions); see :func:`lava_connections` and docs/LAVA_BACKEND.md
("Conv layers"). A conv layer's per-channel bias is its HTSLayer's per-unit bias.

Every sample takes one block of ``1 + t_free + t_nudge`` Lava steps (a load step, then the
phases; see :mod:`neuro_hts.lava.processes`), so N samples are one ``run()`` of
``N * block`` steps with no host round trips; only the recorders are read afterwards.

Fixed point: the Dense connections get the bundle's mantissas in the form Lava's
``PyDenseModelBitAcc`` keeps (its first step clips to 8 bits and truncates; mixed-sign
matrices keep only EVEN values): each layer's mantissas are scaled by the smallest
``2**p`` that Lava leaves unchanged, with ``weight_exp = e - F + S - p`` so the product is
the same integer. The builder checks with Lava's own ``clip_weights``/``truncate_weights``
that the weights survive unchanged, and that no accumulator can leave Lava's 32-bit
``a_buff`` (int32); either failure is a :class:`~neuro_hts.errors.ConfigError`.

Lava's runtime is always stopped (``try/finally``), also on errors and ``KeyboardInterrupt``;
if this process is killed outright (SIGKILL), its forked processes die with it
(:mod:`neuro_hts.lava._lifeline`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass

import numpy as np

from neuro_hts.errors import ConfigError
from neuro_hts.hardware.quantize import DeployBundle
from neuro_hts.network import Network

__all__ = ["CONV_ROUTES", "LavaRun", "LavaConnection", "LavaConvConnection", "lava_connections", "run_lava",
           "run_inference"]

logger = logging.getLogger(__name__)

#: Lava's Dense keeps its activation buffer and output in int32
LAVA_ACCUMULATOR_BITS = 32
#: Lava's Dense clips weights to this many bits before truncating (weightutils.clip_weights)
LAVA_WEIGHT_BITS = 8
#: graded payload width declared on the Dense connections (any value > 0 selects ``W @ s``)
MESSAGE_BITS = 24


@dataclass(frozen=True)
class LavaConnection:
    """The integer weights and shift one Lava Dense (or Sparse) connection gets (``fixed_pt``).

    ``kind``: ``'dense'`` (Lava's ``Dense``: a dense layer) or ``'sparse'`` (Lava's
    ``Sparse`` holding the unrolled matrix of a conv2d layer without max pooling).
    """

    weights: np.ndarray  # int64, the form Lava keeps
    weight_exp: int
    scale_shift: int  # p: weights = mantissas << p
    kind: str = "dense"


@dataclass(frozen=True)
class LavaConvConnection:
    """A conv2d layer as ONE :class:`~neuro_hts.lava.proc.conv.HTSConvConnection` (forward and feedback)."""

    weights: np.ndarray  # int64 (C_out, C_in, k, k) mantissas
    meta: np.ndarray  # int64 (16,), the layer's row of fixed_sim.conv_meta
    shift: int  # k_l = e_l - F + S
    n_pre: int
    n_post: int
    pool: str
    kind: str = "conv"


#: how conv2d layers reach Lava: 'auto' (Sparse when exact, else the conv process), 'process', 'sparse'
CONV_ROUTES = ("auto", "process", "sparse")


@dataclass(frozen=True)
class LavaRun:
    """What a Lava run returns.

    ``states``: per relaxed layer, (N, n_l) after the last step of each sample (``record =
    'final'``: the top layer only), or (N, block, n_l) after every step of each block
    (``record = 'steps'``, ``block = 1 + t_free + t_nudge``, plus the hold step before a
    softmax readout; block step 0 is the load step, so index ``j`` is the state after ``j``
    relaxation steps). int64 in state units for ``fixed_pt``, float64 for ``floating_pt``.
    """

    states: tuple[np.ndarray, ...]
    n_steps: int
    seconds: float  # wall time of the run() calls (excluding build and stop)
    #: a softmax readout's logits (N, classes) at the last step of each block (None: MSE output)
    logits: np.ndarray | None = None

    @property
    def steps_per_second(self) -> float:
        return self.n_steps / self.seconds if self.seconds > 0 else math.inf


@dataclass(frozen=True)
class InferenceResult:
    predictions: np.ndarray  # (N,) int64
    top_states: np.ndarray  # (N, n_L)
    steps_per_second: float
    seconds: float
    n_steps: int


def _lava_keeps(weights: np.ndarray) -> np.ndarray:
    """What Lava's PyDenseModelBitAcc makes of ``weights`` on its first step."""
    from neuro_hts.lava.proc.hts import lava_weight_form

    return lava_weight_form(weights)


def _fit_lava(m: np.ndarray, k: int, F: int, index: int, kind: str) -> tuple[LavaConnection, LavaConnection]:
    """Forward ``m`` and feedback ``m^T`` in the form Lava's Dense/Sparse keep, ``weight_exp = k - p``.

    ConfigError when Lava would change the weights or its int32 accumulator could overflow.
    """
    a_max = 1 << F
    lim = (1 << (LAVA_ACCUMULATOR_BITS - 1)) - 1
    for p in range(LAVA_WEIGHT_BITS + 1):
        cand = m << p
        if np.array_equal(_lava_keeps(cand), cand):
            break
    else:
        raise ConfigError(
            f"layer {index}: Lava's {kind.capitalize()} cannot hold these {'unrolled conv weights' if kind == 'sparse' else 'mantissas'} "
            f"exactly (range {m.min()}..{m.max()})"
        )
    conns = []
    for w in (cand, cand.T):
        bound = int(np.abs(w).sum(axis=1).max(initial=0)) * a_max
        shifted = bound << max(k - p, 0)
        if bound > lim or shifted > lim:
            raise ConfigError(
                f"layer {index}: Lava's int32 accumulator could overflow "
                f"(worst case {max(bound, shifted)} > {lim})"
            )
        conns.append(LavaConnection(weights=np.ascontiguousarray(w), weight_exp=k - p, scale_shift=p, kind=kind))
    return tuple(conns)


def lava_connections(bundle: DeployBundle, *, conv_route: str = "auto") -> list[tuple]:
    """Per weight layer, its forward and feedback connection parameters (``fixed_pt``).

    A dense layer: two :class:`LavaConnection` for Lava's Dense (``W_l``, ``W_l^T``). A
    conv2d layer: with ``conv_route='auto'``, two ``'sparse'`` :class:`LavaConnection`
    (the unrolled matrix of :func:`~neuro_hts.hardware.fixed_sim.conv_unrolled` and its
    transpose, ``weight_exp`` lowered by ``log2(area)``) when the pooling is linear (avg,
    none) and Lava's Sparse keeps that matrix exactly, else the same
    :class:`LavaConvConnection` twice (one :class:`~neuro_hts.lava.proc.conv.HTSConvConnection`
    does both directions); ``'process'`` always takes the conv process, ``'sparse'``
    refuses (ConfigError) a layer Sparse cannot hold.

    Raises ConfigError when Lava would change a Dense/Sparse layer's weights or its 32-bit
    accumulator could overflow (``sum_j |w_ij| * 2**F`` shifted, for inputs and
    activations in [0, 1]).
    """
    if conv_route not in CONV_ROUTES:
        raise ConfigError(f"conv_route must be one of {', '.join(CONV_ROUTES)}, got {conv_route!r}")
    from neuro_hts.hardware.fixed_sim import _M_LOG2AREA, conv_meta, conv_unrolled

    F, S = int(bundle.activation_frac_bits), int(bundle.state_frac_bits)
    meta = None if bundle.is_dense else conv_meta(bundle)
    sizes = [int(n) for n in bundle.arch]
    out = []
    for l, (lb, (kind, opts)) in enumerate(zip(bundle.layers, bundle.connection_options())):
        m = np.asarray(lb.weight_mantissa, dtype=np.int64)
        k = int(lb.weight_exponent) - F + S
        if kind != "conv2d":
            out.append(_fit_lava(m, k, F, lb.index, "dense"))
            continue
        row = meta[l]
        conv = LavaConvConnection(weights=m, meta=row, shift=k, n_pre=sizes[l], n_post=sizes[l + 1],
                                  pool=str(opts["pool"]))
        if conv_route == "process" or (conv_route == "auto" and conv.pool == "max"):
            out.append((conv, conv))
            continue
        if conv.pool == "max":
            raise ConfigError(f"layer {lb.index}: max pooling is not a fixed linear map: Lava's Sparse cannot "
                              "express it (conv_route 'auto' or 'process')")
        try:
            out.append(_fit_lava(conv_unrolled(m, row), k - int(row[_M_LOG2AREA]), F, lb.index, "sparse"))
        except ConfigError as exc:
            if conv_route == "sparse":
                raise
            logger.info("%s: conv layer %d through the conv connection process", exc, lb.index)
            out.append((conv, conv))
    return out


def _warm_conv(conns) -> None:
    """JIT-compile the conv functions here once, so that Lava's forked processes inherit them compiled."""
    convs = [c[0] for c in conns if c[0].kind == "conv"]
    if convs:
        from neuro_hts.hardware.fixed_sim import conv_down_int, conv_up_int

        c = convs[0]
        _, ctx = conv_up_int(np.zeros((1, c.n_pre), dtype=np.int64), c.weights, c.meta, c.shift)
        conv_down_int(np.zeros((1, c.n_post), dtype=np.int64), c.weights, c.meta, c.shift, ctx)


@contextlib.contextmanager
def _deferred_interrupts():
    """Turn SIGINT/SIGTERM into a flag while Lava runs (yields a function reading it).

    A KeyboardInterrupt raised inside Lava's ``run()`` leaves its runtime hung with the
    forked processes alive; with the flag, the current ``run()`` call finishes, the caller
    stops the runtime and then raises KeyboardInterrupt. The forked processes inherit the
    handler, so a Ctrl-C sent to the whole process group does not kill them mid-step.
    Outside the main thread signals cannot be handled and nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    flag = []

    def handler(signum, frame):
        flag.append(signum)

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: bool(flag)
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def _check_source(source, arith: str):
    if arith not in ("fixed", "float"):
        raise ConfigError(f"arith must be 'fixed' or 'float', got {arith!r}")
    if arith == "fixed" and not isinstance(source, DeployBundle):
        raise ConfigError("fixed-point Lava runs need a DeployBundle (neuro-hts quantize)")
    if arith == "float" and not isinstance(source, Network):
        raise ConfigError("floating-point Lava runs need a float Network")
    if source.form not in ("leaky", "energy") or source.output not in ("mse", "ce"):
        raise ConfigError(f"the Lava path runs the leaky and energy forms with an MSE output or a softmax readout, "
                          f"got {source.form}/{source.output}")
    if source.output == "ce" and not source.is_dense:
        raise ConfigError("the Lava path runs a softmax readout after dense chains only")
    if source.activation not in ("hard_sigmoid", "sigmoid4"):
        raise ConfigError(f"unsupported activation {source.activation!r}")
    if arith == "float" and not source.is_dense:
        raise ConfigError("floating-point Lava runs take dense chains only: a network with conv2d layers deploys "
                          "through Lava in fixed point (a bundle, --arith fixed)")
    if arith == "fixed" and not source.is_dense:
        kinds = {kind for kind, _ in source.connection_options()}
        if not kinds <= {"conv2d", "dense"}:
            raise ConfigError(f"the Lava path runs conv2d and dense connections only, got {sorted(kinds)}")


def run_lava(source, x, *, t_free: int, t_nudge: int = 0, y=None, beta: float = 0.0, arith: str = "fixed",
             record: str = "final", chunk: int | None = None, progress=None, conv_route: str = "auto") -> LavaRun:
    """Relax ``x`` (N, n_0) through Lava, one block per sample; see :class:`LavaRun`.

    ``source``: a :class:`DeployBundle` (``arith='fixed'``, Lava ``fixed_pt`` models) or a
    :class:`Network` (``arith='float'``, ``floating_pt``); leaky or energy form. With
    ``t_nudge > 0`` the output layer is nudged toward ``y`` (N, n_L) with ``beta`` for the
    last ``t_nudge`` steps of every block. With a softmax readout (``output = "ce"``) ``y``
    is (N, classes), the :class:`HTSReadout` sends the top relaxed layer its feedback
    ``W_L^T (y - softmax(z))`` (integers: ``fixed_point.softmax_int``) which that layer
    applies as its nudge; the block gets one hold step (``1 + t_free + t_nudge + 1``
    steps) so that the readout sees the last relaxed state, and :attr:`LavaRun.logits`
    holds its output at the block's last step. ``chunk`` samples per ``run()`` call (default: all at once); ``progress``
    is called with the number of samples done after each call. A bundle with conv2d
    layers (``fixed`` only) may take ``x`` in the input's image shape (N, C, H, W);
    ``conv_route`` says how its conv layers reach Lava (:func:`lava_connections`).
    """
    _check_source(source, arith)
    if conv_route not in CONV_ROUTES:
        raise ConfigError(f"conv_route must be one of {', '.join(CONV_ROUTES)}, got {conv_route!r}")
    for name, v in (("t_free", t_free), ("t_nudge", t_nudge)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ConfigError(f"{name} must be a non-negative integer, got {v!r}")
    if t_free + t_nudge < 1:
        raise ConfigError("t_free + t_nudge must be at least 1")
    if record not in ("final", "steps"):
        raise ConfigError(f"record must be 'final' or 'steps', got {record!r}")
    readout = source.output == "ce"
    n_dyn = len(source.weights if isinstance(source, Network) else source.layers) - (1 if readout else 0)
    xf = np.asarray(x, dtype=np.float64)
    fixed = arith == "fixed"
    if fixed:
        weights_float = None
        sizes = [int(n) for n in source.arch[1:n_dyn + 1]]
        n_in = int(source.arch[0])
        if xf.ndim > 2 and xf.shape[1:] == tuple(source.shapes[0]):
            xf = xf.reshape(xf.shape[0], -1)
    else:
        weights_float = [np.asarray(w, dtype=np.float64) for w in source.weights]
        sizes = [w.shape[0] for w in weights_float[:n_dyn]]
        n_in = weights_float[0].shape[1]
    if xf.ndim != 2 or xf.shape[1] != n_in or xf.shape[0] < 1:
        raise ConfigError(f"x must have shape (N >= 1, {n_in}), got {xf.shape}")
    if not np.isfinite(xf).all():
        raise ConfigError("x contains NaN or infinity")
    N = xf.shape[0]
    if t_nudge > 0:
        if y is None:
            raise ConfigError("a nudged phase (t_nudge > 0) needs targets y")
        yf = np.asarray(y, dtype=np.float64)
        n_y = int(source.arch[-1]) if readout else sizes[-1]
        if yf.shape != (N, n_y) or not np.isfinite(yf).all():
            raise ConfigError(f"y must be finite with shape ({N}, {n_y}), got {yf.shape}")
    t_hold = 1 if readout else 0
    block = 1 + t_free + t_nudge + t_hold
    chunk = N if chunk is None else max(1, int(chunk))

    from neuro_hts.lava.proc import hts as P  # imports Lava (sets multiprocessing's start method to fork)
    from neuro_hts.lava._lifeline import install as _install_lifeline
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense
    from lava.proc.sparse.process import Sparse

    if fixed and not source.is_dense:
        from neuro_hts.lava.proc import conv as PC

    if fixed:
        F, S = source.activation_frac_bits, source.state_frac_bits
        D = int(source.target.decay.bits)
        widths = dict(state_frac_bits=S, activation_frac_bits=F, decay_bits=D,
                      input_bits=int(source.target.state.input_bits), state_bits=int(source.target.state.bits))
        conns = lava_connections(source, conv_route=conv_route)
        _warm_conv(conns)
        from neuro_hts.hardware.fixed_sim import input_payload

        x_data = input_payload(xf, source.form, source.activation, F).T.copy()
        beta_v = int(np.rint(float(beta) * (1 << D)))
        if abs(beta_v) >= 1 << (2 * D):
            raise ConfigError(f"beta = {beta!r} is too large for the fixed-point nudge")
        y_data = None if t_nudge == 0 else np.rint(yf * (1 << S)).astype(np.int64).T.copy()
        layer_args = []
        for lb, (kind, _), shape in zip(source.layers[:n_dyn], source.connection_options(), source.shapes[1:]):
            bias = np.asarray(lb.bias, dtype=np.int64)
            if kind == "conv2d":  # one bias per channel -> one per unit of the C x H x W layer
                bias = np.repeat(bias, int(np.prod(shape[1:])))
            layer_args.append(dict(dt=np.broadcast_to(np.asarray(lb.dt, dtype=np.float64).reshape(-1), bias.shape).copy(),
                                   decay=np.asarray(lb.decay, dtype=np.int64).reshape(-1), bias=bias))
    else:
        widths = {}
        from neuro_hts.dynamics import presynaptic

        x_data = presynaptic(source, xf).T.copy()  # rho(x) in the energy form (dynamics.input_drive)
        beta_v = float(beta)
        y_data = None if t_nudge == 0 else yf.T.copy()
        layer_args = [dict(dt=np.asarray(dt, dtype=np.float64), decay=np.zeros(len(dt), dtype=np.int64),
                           bias=np.asarray(b, dtype=np.float64))
                      for dt, b in zip(source.dts[:n_dyn], source.biases[:n_dyn])]

    L = len(sizes)
    inp = P.GradedSource(data=x_data, steps_per_sample=block, name="x")
    layers = []
    for l in range(L):
        common = dict(t_free=t_free, t_nudge=t_nudge, t_hold=t_hold, activation=source.activation, form=source.form,
                      fixed=widths, name=f"layer{l + 1}", **layer_args[l])
        if l == L - 1 and t_nudge > 0:
            layers.append(P.HTSOutputLayer(beta=beta_v, cost="ce" if readout else "mse", **common))
        else:
            layers.append(P.HTSLayer(**common))
    procs = [inp, *layers]
    for l in range(L):
        pre = inp if l == 0 else layers[l - 1]
        pre_out = inp.s_out if l == 0 else layers[l - 1].a_out
        if fixed and conns[l][0].kind == "conv":
            c = conns[l][0]
            cp = PC.HTSConvConnection(weights=c.weights, meta=c.meta, n_pre=c.n_pre, n_post=c.n_post, shift=c.shift,
                                      feedback=l > 0, name=f"W{l + 1}conv")
            pre_out.connect(cp.s_in)
            cp.a_out.connect(layers[l].a_in)
            layers[l].a_out.connect(cp.post_in)
            if l > 0:
                cp.b_out.connect(layers[l - 1].a_in)
            procs.append(cp)
            continue
        if fixed:
            fwd, bwd = conns[l]
            Conn = Sparse if fwd.kind == "sparse" else Dense
            d_up = Conn(weights=fwd.weights, weight_exp=fwd.weight_exp, num_message_bits=MESSAGE_BITS,
                        name=f"W{l + 1}")
        else:
            d_up = Dense(weights=weights_float[l], num_message_bits=MESSAGE_BITS, name=f"W{l + 1}")
        pre.s_out.connect(d_up.s_in) if l == 0 else pre.a_out.connect(d_up.s_in)
        d_up.a_out.connect(layers[l].a_in)
        procs.append(d_up)
        if l > 0:
            if fixed:
                d_down = Conn(weights=bwd.weights, weight_exp=bwd.weight_exp, num_message_bits=MESSAGE_BITS,
                              name=f"W{l + 1}T")
            else:
                d_down = Dense(weights=np.ascontiguousarray(weights_float[l].T), num_message_bits=MESSAGE_BITS,
                               name=f"W{l + 1}T")
            layers[l].a_out.connect(d_down.s_in)
            d_down.a_out.connect(layers[l - 1].a_in)
            procs.append(d_down)
    ro = None
    if readout:  # Dense(W_L) from the top relaxed layer's payload into the readout (bias added there)
        nudged = t_nudge > 0
        if fixed:
            fwd = conns[n_dyn][0]
            lb = source.layers[-1]
            d_ro = Dense(weights=fwd.weights, weight_exp=fwd.weight_exp, num_message_bits=MESSAGE_BITS, name="WL")
            ro = P.HTSReadout(bias=np.asarray(lb.bias, dtype=np.int64), weights=np.asarray(lb.weight_mantissa),
                              shift=int(lb.weight_exponent) - F + S, nudged=nudged, fixed=widths, name="readout")
        else:
            d_ro = Dense(weights=weights_float[-1], num_message_bits=MESSAGE_BITS, name="WL")
            ro = P.HTSReadout(bias=np.asarray(source.biases[-1], dtype=np.float64), weights=weights_float[-1],
                              nudged=nudged, name="readout")
        layers[-1].a_out.connect(d_ro.s_in)
        d_ro.a_out.connect(ro.a_in)
        procs += [d_ro, ro]
    if t_nudge > 0:
        ysrc = P.GradedSource(data=y_data, steps_per_sample=block, name="y")
        if ro is not None:  # the readout turns the targets into the top layer's feedback
            ysrc.s_out.connect(ro.y_in)
            ro.b_out.connect(layers[-1].y_in)
        else:
            ysrc.s_out.connect(layers[-1].y_in)
        procs.append(ysrc)
    if record == "final":
        recs = [P.StateRecorder(shape=sizes[-1], n_records=N, steps_per_sample=block, record_step=block - 1,
                                name="record_top")]
        layers[-1].s_out.connect(recs[0].a_in)
    else:
        recs = []
        for l in range(L):
            r = P.StateRecorder(shape=sizes[l], n_records=N * block, steps_per_sample=1, record_step=0,
                                name=f"record{l + 1}")
            layers[l].s_out.connect(r.a_in)
            recs.append(r)
    if ro is not None:  # the logits at the block's last step (one Dense delay after the last free step)
        rl = P.StateRecorder(shape=int(source.arch[-1]), n_records=N, steps_per_sample=block, record_step=block - 1,
                             name="record_logits")
        ro.s_out.connect(rl.a_in)
        recs.append(rl)

    run_cfg = Loihi2SimCfg(select_tag="fixed_pt" if fixed else "floating_pt")
    _install_lifeline()  # the runtime's forked processes die with this one, also on kill -9
    seconds = 0.0
    with _deferred_interrupts() as interrupted:
        try:
            done = 0
            while done < N:
                n = min(chunk, N - done)
                t0 = time.perf_counter()
                inp.run(condition=RunSteps(num_steps=n * block), run_cfg=run_cfg)
                seconds += time.perf_counter() - t0
                done += n
                if progress is not None:
                    progress(done)
                if interrupted():
                    break
            raw = None if interrupted() else [np.asarray(r.data.get()) for r in recs]
        finally:
            if inp.runtime is not None:
                inp.stop()
    if raw is None:
        logger.info("Lava run interrupted after %d of %d samples; runtime stopped", done, N)
        raise KeyboardInterrupt
    dtype = np.int64 if fixed else np.float64
    logits = None
    if ro is not None:
        logits = raw.pop().T.astype(dtype)
    if record == "final":
        states = (raw[0].T.astype(dtype),)
    else:
        states = tuple(r.T.reshape(N, block, -1).astype(dtype) for r in raw)
    logger.info("Lava %s run: %d samples, %d steps in %.3f s (%.0f steps/s)", arith, N, N * block, seconds,
                N * block / seconds if seconds else math.inf)
    return LavaRun(states=states, n_steps=N * block, seconds=seconds, logits=logits)


def run_inference(bundle, x, n_steps: int, *, arith: str = "fixed", chunk: int | None = None,
                  progress=None, conv_route: str = "auto") -> InferenceResult:
    """Free phase of ``n_steps`` for every row of ``x`` through Lava; argmax of the scores.

    The scores (``top_states``) are the top layer's states, or a softmax readout's logits.
    """
    r = run_lava(bundle, x, t_free=n_steps, arith=arith, record="final", chunk=chunk, progress=progress,
                 conv_route=conv_route)
    top = r.states[0] if r.logits is None else r.logits
    return InferenceResult(predictions=np.argmax(top, axis=1), top_states=top,
                           steps_per_second=r.steps_per_second, seconds=r.seconds, n_steps=r.n_steps)
