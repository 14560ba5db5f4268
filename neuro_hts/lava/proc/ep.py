"""Lava Processes that LEARN: EP training inside the Lava graph (imports Lava: load lazily).

Two Processes, each with a ``fixed_pt`` and a ``floating_pt`` ProcessModel (Loihi
protocol, CPU):

* :class:`EPLayer`: an :class:`~neuro_hts.lava.proc.hts.HTSLayer` that runs the phases of
  one learning step in every block (a SCHEDULE, built on the host from the algorithm's
  phases by :func:`neuro_hts.lava.schedule.lava_schedule`) and records the free phase's
  last-step residual. Bottom-up input arrives on ``a_in``, top-down on ``d_in`` (so that
  CHL's feedback gain can scale it alone). Its bias is 0: the layer's bias lives in its
  :class:`EPConnection` (``h = shift(W a) + b + shift(W'^T a')`` is the same integer sum).
* :class:`EPConnection`: ONE weight matrix ``W_l`` (and bias ``b_l``) used both ways, so
  the feedback stays the transpose of the forward weights while they learn::

      a_out = shift_k(W_l a_pre) + b_l       -> layer l       (forward, a_in)
      b_out = shift_k(W_l^T a_post)          -> layer l - 1   (feedback, d_in; unused for l = 1)

  with ``shift_k`` the left shift (k >= 0) or FLOOR right shift (k < 0) of Lava's
  ``PyDenseModelBitAcc`` (``weight_exp = k = e - F + S``) and its one-step delay (what
  is received at step t is sent at step t + 1). It receives ``a_pre`` (the activation of
  layer l - 1, or the clamped input) and ``a_post`` (that of layer l) at the end of the two
  phases of the contrast, accumulates the integer contrast of
  :func:`neuro_hts.hardware.fixed_learning.ep_contrast` over the batch and, at the last
  step of the batch's last sample, applies
  :func:`neuro_hts.hardware.fixed_learning.layer_update` (the Numba engine's own update)
  with :func:`~neuro_hts.hardware.fixed_learning.apply_weight_update` /
  :func:`~neuro_hts.hardware.fixed_learning.apply_bias_update`.

Schedule (per block step ``j``; see :func:`neuro_hts.lava.schedule.lava_schedule`): a
START step sets the state (to 0, or RESTORES a saved phase's final state) without an
update and sends it, so that the next step's inputs are those of that state (block step 0
is the first phase's start step, the LOAD step of the inference graph); an UPDATE step
runs one synchronous step with its phase's nudge ``beta``, output ``clamp`` (target or
hold), feedback gain ``gamma`` and mixing toward a saved ``anchor`` state with ``coe``, as
:class:`~neuro_hts.hardware.fixed_sim.FixedPointSimulator` does. A phase that starts from
the phase just before it continues without a start step.

Stochastic rounding: every connection holds a Generator in the state the engine's
``round_rng`` had at the start, and at every update draws the SAME numbers as
:func:`~neuro_hts.hardware.fixed_learning.fixed_ep_update` does for all layers, in its
order (``W_1, b_1, W_2, b_2, ...``), keeping its own layer's: the other layers' draws are
replayed by :func:`~neuro_hts.hardware.fixed_learning.skip_layer_draws` (their shifts do
not depend on their contrasts, which the builder checks).

``floating_pt``: the same schedule in float64 (:func:`neuro_hts.dynamics.leaky_update`,
:func:`~neuro_hts.dynamics.adapt_mix`) with the plain SGD step of
:func:`neuro_hts.dynamics.ep_gradients`, ``W += lr C / ((beta_a - beta_b) B)``.
"""

from __future__ import annotations

import numpy as np

from neuro_hts import lava_compat

lava_compat.install()

from lava.magma.core.decorator import implements, requires, tag  # noqa: E402
from lava.magma.core.model.py.model import PyLoihiProcessModel  # noqa: E402
from lava.magma.core.model.py.ports import PyInPort, PyOutPort  # noqa: E402
from lava.magma.core.model.py.type import LavaPyType  # noqa: E402
from lava.magma.core.process.ports.ports import InPort, OutPort  # noqa: E402
from lava.magma.core.process.process import AbstractProcess  # noqa: E402
from lava.magma.core.process.variable import Var  # noqa: E402
from lava.magma.core.resources import CPU  # noqa: E402
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol  # noqa: E402

from neuro_hts.dynamics import adapt_mix  # noqa: E402
from neuro_hts.hardware.fixed_learning import (  # noqa: E402
    apply_bias_update,
    apply_weight_update,
    layer_update,
    skip_layer_draws,
)
from neuro_hts.hardware.fixed_point import (  # noqa: E402
    leaky_decay_step,
    shift_right_floor,
    shift_right_round_toward_zero,
)
from neuro_hts.lava.proc.hts import _PyHTSLayerFixed, _PyHTSLayerFloat  # noqa: E402
from neuro_hts.lava.schedule import CLAMP_CODES, START_RESTORE, START_ZERO  # noqa: E402

__all__ = ["EPLayer", "EPConnection", "shift_k"]

CLAMP_NONE, CLAMP_TARGET, CLAMP_HOLD = (CLAMP_CODES[c] for c in ("none", "target", "hold"))


def shift_k(v: np.ndarray, k: int) -> np.ndarray:
    """``v * 2**k`` as Lava's ``PyDenseModelBitAcc`` applies ``weight_exp = k``: left shift, or floor right shift."""
    v = np.asarray(v, dtype=np.int64)
    return np.left_shift(v, k) if k >= 0 else shift_right_floor(v, np.int64(-k))


# --------------------------------------------------------------------------- Processes


class EPLayer(AbstractProcess):
    """A relaxed layer running a learning schedule (module docstring); its bias is 0.

    ``schedule``: the dict of :func:`neuro_hts.lava.schedule.lava_schedule` (per block
    step: kind, restore slot, beta, clamp, gamma, anchor slot, coe, slots to save; and the
    block length, the number of slots and the free phase's last step). ``top``: the output
    layer (nudged, clamped). ``n_samples``: the length of the residual record.
    """

    def __init__(self, *, dt, decay, schedule: dict, n_samples: int, top: bool = False,
                 activation: str = "hard_sigmoid", fixed: dict | None = None, name=None):
        n = int(np.asarray(dt).shape[0])
        sched = dict(schedule)
        super().__init__(shape=(n,), t_free=int(sched["free_end"]), t_nudge=0, schedule=sched, nudged=bool(top),
                         activation=str(activation), fixed=dict(fixed or {}), name=name)
        self.a_in = InPort(shape=(n,))
        self.d_in = InPort(shape=(n,))
        self.y_in = InPort(shape=(n,))
        self.a_out = OutPort(shape=(n,))
        self.s_out = OutPort(shape=(n,))
        self.s = Var(shape=(n,), init=0)
        self.saved = Var(shape=(max(1, int(sched["n_slots"])), n), init=0)
        self.dt = Var(shape=(n,), init=np.asarray(dt))
        self.decay = Var(shape=(n,), init=np.asarray(decay))
        self.bias = Var(shape=(n,), init=0)
        self.resid = Var(shape=(int(n_samples),), init=0)


class EPConnection(AbstractProcess):
    """One learning weight layer used forward and backward (module docstring).

    Parameters
    ----------
    weights : (n_out, n_in) mantissas (int, ``fixed_pt``) or float weights (``floating_pt``)
    bias : (n_out,) the post layer's bias (state units for ``fixed_pt``)
    shift : ``k = e - F + S`` (``fixed_pt``)
    block, j_a, j_b : block length and the block steps where the contrast's phases end
    batches : (n_batches + 1,) sample index where each batch starts, then N
    learn : dict of the update's constants: ``lr``, ``beta_a``, ``beta_b`` (integers for
        ``fixed_pt``), and for ``fixed_pt`` ``F``, ``D``, ``S``, ``input_bits``, ``grid``
        (:class:`~neuro_hts.hardware.fixed_learning.LayerGrid`), ``rounding``, ``rng``
        (``(bit generator name, state)`` or None), ``index`` (this layer, 0-based) and
        ``layers`` (``(shape_w, shape_b, lr, grid)`` of every layer, for the draw replay)
    record : keep the weights and bias after every batch in ``w_hist`` / ``b_hist``
    """

    def __init__(self, *, weights, bias, shift: int = 0, block: int, j_a: int, j_b: int, batches, learn: dict,
                 record: bool = False, name=None):
        w = np.asarray(weights)
        n_out, n_in = w.shape
        batches = [int(v) for v in batches]
        super().__init__(shape=w.shape, shift=int(shift), block=int(block), j_a=int(j_a), j_b=int(j_b),
                         batches=batches, learn=dict(learn), record=bool(record), name=name)
        nb = len(batches) - 1 if record else 1
        self.s_in = InPort(shape=(n_in,))
        self.post_in = InPort(shape=(n_out,))
        self.a_out = OutPort(shape=(n_out,))
        self.b_out = OutPort(shape=(n_in,))
        self.weights = Var(shape=w.shape, init=w)
        self.bias = Var(shape=(n_out,), init=np.asarray(bias))
        self.a_buff = Var(shape=(n_out,), init=0)
        self.b_buff = Var(shape=(n_in,), init=0)
        self.w_hist = Var(shape=(nb, n_out * n_in if record else 1), init=0)
        self.b_hist = Var(shape=(nb, n_out if record else 1), init=0)


# --------------------------------------------------------------------------- EPLayer models


class _EPLayerSchedule:
    """The schedule on top of an HTS layer model (``_zero``, ``_update``, ``_send``); subclasses
    define ``_feedback(d, gamma)`` and ``_mix(new, anchor, coe)``."""

    def _init_schedule(self, proc_params):
        self.sched = proc_params["schedule"]
        self.block = int(self.sched["block"])
        self.free_end = int(self.sched["free_end"])

    def run_spk(self):
        a_in = self.a_in.recv()
        d_in = self.d_in.recv()
        y = self.y_in.recv()
        t = int(self.time_step) - 1
        k, j = divmod(t, self.block)
        sc = self.sched
        kind = sc["kind"][j]
        if kind == START_ZERO:
            self.s = self._zero()
        elif kind == START_RESTORE:
            self.s = self.saved[sc["src"][j]].copy()
        else:
            clamp = sc["clamp"][j] if self.nudged else CLAMP_NONE
            if clamp == CLAMP_TARGET:
                new = np.array(y, dtype=self.s.dtype, copy=True)
            elif clamp == CLAMP_HOLD:
                new = self.s.copy()
            else:
                h = a_in + self._feedback(d_in, sc["gamma"][j])
                beta = sc["beta"][j]
                new = self._update(h, y if (self.nudged and beta != 0) else None, beta)
            if sc["anchor"][j] >= 0:
                new = self._mix(new, self.saved[sc["anchor"][j]], sc["coe"][j])
            if j == self.free_end and k < self.resid.shape[0]:
                self.resid[k] = np.max(np.abs(new - self.s), initial=0)
            self.s = new
        for slot in sc["save"][j]:
            self.saved[slot] = self.s
        self.a_out.send(self._send(self.s))
        self.s_out.send(self.s)


@implements(proc=EPLayer, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyEPLayerFixed(_EPLayerSchedule, _PyHTSLayerFixed):
    """Integer layer: :func:`neuro_hts.hardware.fixed_point.neuron_update` in the schedule.

    Feedback gain ``h += tz(gamma_int d / 2**D)`` (when ``gamma_int != 2**D``), mixing
    :func:`~neuro_hts.hardware.fixed_point.leaky_decay_step` toward the anchor with rate
    ``coe_int``: the simulator's integer forms.
    """

    d_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64, precision=24)
    y_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64, precision=24)
    saved: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)
    resid: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._init_schedule(proc_params)

    def _feedback(self, d, gamma):
        d = np.asarray(d, dtype=np.int64)
        if int(gamma) == 1 << self.D:
            return d
        return shift_right_round_toward_zero(np.int64(gamma) * d, np.int64(self.D))

    def _mix(self, new, anchor, coe):
        return leaky_decay_step(np.asarray(new, dtype=np.int64), np.asarray(anchor, dtype=np.int64), np.int64(coe),
                                np.int64(self.D))


@implements(proc=EPLayer, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyEPLayerFloat(_EPLayerSchedule, _PyHTSLayerFloat):
    """Float64 layer: :func:`neuro_hts.dynamics.leaky_update` in the schedule, ``gamma d``, :func:`adapt_mix`."""

    d_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    y_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    saved: np.ndarray = LavaPyType(np.ndarray, float)
    resid: np.ndarray = LavaPyType(np.ndarray, float)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._init_schedule(proc_params)

    def _feedback(self, d, gamma):
        d = np.asarray(d, dtype=np.float64)
        return d if float(gamma) == 1.0 else float(gamma) * d

    def _mix(self, new, anchor, coe):
        return adapt_mix(new, np.asarray(anchor, dtype=np.float64), float(coe))


# --------------------------------------------------------------------------- EPConnection models


class _PyEPConnectionBase(PyLoihiProcessModel):
    """Delay, phase-end accumulation and the batch update; subclasses define the arithmetic."""

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.k = int(proc_params["shift"])
        self.block = int(proc_params["block"])
        self.j_a, self.j_b = int(proc_params["j_a"]), int(proc_params["j_b"])
        self.starts = list(proc_params["batches"])
        self.batch_of = {}
        for b in range(len(self.starts) - 1):
            self.batch_of[self.starts[b + 1] - 1] = b  # last sample of batch b
        self.learn = proc_params["learn"]
        self.record = bool(proc_params["record"])
        self.C = None
        self.c = None

    def run_spk(self):
        self.a_out.send(self.a_buff)
        self.b_out.send(self.b_buff)
        pre = self.s_in.recv()
        post = self.post_in.recv()
        t = int(self.time_step) - 1
        k, j = divmod(t, self.block)
        if k < self.starts[-1]:
            if self.C is None:
                self.C, self.c = self._zero_contrast()
            if j == self.j_a:
                self.C += np.outer(post, pre)
                self.c += post
            if j == self.j_b:
                self.C -= np.outer(post, pre)
                self.c -= post
            if j == self.block - 1 and k in self.batch_of:
                b = self.batch_of[k]
                self._update(self.starts[b + 1] - self.starts[b])
                if self.record:
                    self.w_hist[b, :] = np.ravel(self.weights)
                    self.b_hist[b, :] = self.bias
                self.C, self.c = None, None
        self.a_buff = self._forward(pre)
        self.b_buff = self._backward(post)


@implements(proc=EPConnection, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyEPConnectionFixed(_PyEPConnectionBase):
    """Integer connection: ``shift_k`` products, exact int64 contrast, the fixed_learning update."""

    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64, precision=24)
    post_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64, precision=24)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int64, precision=24)
    b_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int64, precision=24)
    weights: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=9)
    bias: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)
    a_buff: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=32)
    b_buff: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=32)
    w_hist: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=9)
    b_hist: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        L = self.learn
        self.rng = None
        if L["rounding"] == "stochastic":
            kind, state = L["rng"]
            self.rng = np.random.Generator(getattr(np.random, kind)())
            self.rng.bit_generator.state = state

    def _zero_contrast(self):
        n_out, n_in = self.weights.shape
        return np.zeros((n_out, n_in), dtype=np.int64), np.zeros(n_out, dtype=np.int64)

    def _forward(self, pre):
        return shift_k(np.asarray(self.weights, dtype=np.int64) @ np.asarray(pre, dtype=np.int64), self.k) + self.bias

    def _backward(self, post):
        return shift_k(np.asarray(self.weights, dtype=np.int64).T @ np.asarray(post, dtype=np.int64), self.k)

    def _update(self, batch: int):
        """:func:`~neuro_hts.hardware.fixed_learning.layer_update` with the engine's draw order over all layers."""
        L = self.learn
        consts = (L["beta_a"], L["beta_b"], batch, L["F"], L["D"], L["S"])
        me = int(L["index"])
        if self.rng is not None:
            for shape_w, shape_b, lr, grid in L["layers"][:me]:
                skip_layer_draws(shape_w, shape_b, lr, *consts, grid, self.rng)
        qw, qb = layer_update(self.C, self.c, L["lr"], *consts, L["grid"], L["rounding"], self.rng)
        if self.rng is not None:
            for shape_w, shape_b, lr, grid in L["layers"][me + 1:]:
                skip_layer_draws(shape_w, shape_b, lr, *consts, grid, self.rng)
        self.weights = apply_weight_update(self.weights, qw, L["grid"])
        self.bias = apply_bias_update(self.bias, qb, L["input_bits"])


@implements(proc=EPConnection, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyEPConnectionFloat(_PyEPConnectionBase):
    """Float64 connection: ``W a + b`` forward, ``W^T a`` back (one step late), SGD step ``lr C / ((beta_a - beta_b) B)``."""

    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    post_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    b_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    weights: np.ndarray = LavaPyType(np.ndarray, float)
    bias: np.ndarray = LavaPyType(np.ndarray, float)
    a_buff: np.ndarray = LavaPyType(np.ndarray, float)
    b_buff: np.ndarray = LavaPyType(np.ndarray, float)
    w_hist: np.ndarray = LavaPyType(np.ndarray, float)
    b_hist: np.ndarray = LavaPyType(np.ndarray, float)

    def _zero_contrast(self):
        n_out, n_in = self.weights.shape
        return np.zeros((n_out, n_in)), np.zeros(n_out)

    def _forward(self, pre):
        return self.weights @ np.asarray(pre, dtype=np.float64) + self.bias

    def _backward(self, post):
        return self.weights.T @ np.asarray(post, dtype=np.float64)

    def _update(self, batch: int):
        """Plain SGD on the EP estimate: ``W += lr C / ((beta_a - beta_b) B)``, ``b += lr c / ((beta_a - beta_b) B)``."""
        L = self.learn
        scale = float(L["lr"]) / ((float(L["beta_a"]) - float(L["beta_b"])) * batch)
        self.weights = self.weights + scale * self.C
        self.bias = self.bias + scale * self.c
