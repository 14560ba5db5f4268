"""EP learning through Lava's own learning engine: ``LearningDense`` with a three-factor rule (imports Lava).

The hardware-realistic counterpart of :mod:`neuro_hts.lava.proc.ep` (``train
--lava-learning learning-dense``; docs/LAVA_LEARNING.md). Two Processes, ``fixed_pt``:

* :class:`EPLearningDense`, a :class:`lava.proc.dense.process.LearningDense` (its
  ProcessModel is a subclass of Lava's ``PyLearningDenseModelBitApproximate``: Lava's
  trace, product-series, accumulator and stochastic-rounding code runs unchanged) with a
  :class:`~lava.magma.core.learning.learning_rule.Loihi3FLearningRule`. It holds
  ``q_l`` = the layer's weights in GRID STEPS (mantissa ``m = lsb * q``) with
  ``weight_exp = k + log2(lsb)``, so that its forward product is the exact path's
  ``shift_k(m a)``. Added to LearningDense: ``post_in`` and ``b_out``, the top-down
  product ``shift(q^T a_post)`` read from the SAME weights (so W^T is the transpose of the
  learning W at every step), and ``w_hist`` (weights after every batch).
* :class:`EPLayerLD`, an :class:`~neuro_hts.lava.proc.ep.EPLayer` that holds and learns
  its bias (exact integer rule) and sends the post-synaptic traces of the three-factor
  rule: ``y1`` (7-bit activity trace), ``y2`` and ``y3`` (the phase gates).

The rule (``t_epoch = 1``: the learning engine runs after every time step)::

    dw = m_s 2^e_s u0 x1 y1 y2  -  m_s 2^e_s u0 x1 y1 y3

* ``x1``: the pre trace, Lava's graded-spike ``OVERWRITE`` mode (``x1 = round(q_pre / 2)``
  with ``q_pre`` the payload cut to 8 bits, :func:`trace_payload`), decayed once per step
  with ``x1_tau`` (stochastically rounded; a zero payload does not overwrite it, so a
  neuron that falls silent keeps a decaying stale trace);
* ``y1``: the post trace, the same 7-bit mapping of the post layer's payload, sent by the
  layer every step (the 3F rule's y traces come from the post neuron; y tau 65535);
* ``y2 = g`` at the end of the contrast's phase a (``j_a``), ``y3 = g`` at the end of
  phase b (``j_b``), 0 otherwise: the third factor carries the phase sign and, through
  ``g`` (7 bits), the learning-rate scale (:func:`rule_scale`).

So at ``j_a`` each synapse adds ``+lr' x1 y1`` (``a_post^a a_pre^a``), at ``j_b``
``-lr' x1 y1``: the terms of the EP contrast, with ``lr'`` the rate per contrast unit.
What differs from the exact update: 7-bit traces (and the x trace's decay and staleness),
the product series' right shift by 10 bits (floor, before the scale's exponent), the
16-bit accumulator, ONE uniform number per step shared by every synapse for the
stochastic rounding to an integer weight (Lava's ``ConnVarRandom``, fixed seed), rounding
at each phase end instead of once per batch, weights changing in the middle of a sample
(the second phase runs with the first phase end's term applied), and saturation at
Lava's 9-bit signed weight instead of the grid's ``max_int``.
"""

from __future__ import annotations

import math

import numpy as np

from neuro_hts import lava_compat

lava_compat.install()

from lava.magma.core.decorator import implements, requires, tag  # noqa: E402
from lava.magma.core.model.py.ports import PyInPort, PyOutPort  # noqa: E402
from lava.magma.core.model.py.type import LavaPyType  # noqa: E402
from lava.magma.core.process.ports.ports import InPort, OutPort  # noqa: E402
from lava.magma.core.process.variable import Var  # noqa: E402
from lava.magma.core.resources import CPU  # noqa: E402
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol  # noqa: E402
from lava.magma.core.learning.constants import GradedSpikeCfg  # noqa: E402
from lava.magma.core.learning.learning_rule import Loihi3FLearningRule  # noqa: E402
from lava.magma.core.model.py.connection import LearningConnectionModelBitApproximate  # noqa: E402
from lava.proc.dense.models import AbstractPyDenseModelBitAcc  # noqa: E402
from lava.proc.dense.process import LearningDense  # noqa: E402
from lava.utils.weightutils import SignMode  # noqa: E402

from neuro_hts.hardware.fixed_learning import apply_bias_update, layer_multipliers, round_shift  # noqa: E402
from neuro_hts.lava.proc.ep import EPLayer, PyEPLayerFixed, _EPLayerSchedule, shift_k  # noqa: E402
from neuro_hts.lava.proc.hts import _PyHTSLayerFixed  # noqa: E402
from neuro_hts.lava.ld_rule import TRANSFER_GATE, trace7, trace_payload  # noqa: E402

__all__ = ["EPLearningDense", "EPLayerLD", "ep_rule"]


def ep_rule(mt: int, mw: int, ew: int, x1_tau: float, rng_seed: int) -> Loihi3FLearningRule:
    """The three-factor EP rule (t_epoch 1), with the scale of :func:`~neuro_hts.lava.ld_rule.rule_scale`::

        dt = mt 2^-7 u0 x1 y1 - mt 2^-7 u0 x1 y2 - 2^0 u0 t y3     (the tag: the batch's contrast)
        dw = mw 2^ew u0 t y3                                         (moved to the weight at the batch's end)

    ``mt = 0`` gives no learning (``dw = dt = 0 * u0``: Lava needs a rule).
    """
    if mt == 0:
        return Loihi3FLearningRule(dw="0 * u0", dt="0 * u0", x1_impulse=0, x1_tau=float(x1_tau), t_epoch=1,
                                   rng_seed=int(rng_seed))
    st = f"{int(mt)} * 2^-7"
    dt = f"{st} * u0 * x1 * y1 - {st} * u0 * x1 * y2 - u0 * t * y3"
    dw = f"{int(mw)} * 2^{int(ew)} * u0 * t * y3"
    return Loihi3FLearningRule(dw=dw, dt=dt, x1_impulse=0, x1_tau=float(x1_tau), t_epoch=1, rng_seed=int(rng_seed))


class EPLearningDense(LearningDense):
    """Lava's ``LearningDense`` (weights in grid steps, graded input) plus the top-down product from the same weights.

    ``weights``: (n_out, n_in) integer grid steps; ``weight_exp``: ``k + log2(lsb)``;
    ``F``: activation fraction bits (the trace mapping); ``block``, ``batches``: for
    ``w_hist`` (``record``).
    """

    def __init__(self, *, weights, weight_exp: int, learning_rule, F: int, block: int, batches, record: bool = False,
                 name=None):
        w = np.asarray(weights)
        n_out, n_in = w.shape
        batches = [int(v) for v in batches]
        super().__init__(weights=w, weight_exp=int(weight_exp), num_message_bits=24, learning_rule=learning_rule,
                         graded_spike_cfg=GradedSpikeCfg.OVERWRITE, sign_mode=SignMode.MIXED, name=name,
                         F=int(F), block=int(block), batches=batches, record=bool(record))
        nb = len(batches) - 1 if record else 1
        self.post_in = InPort(shape=(n_out,))
        self.b_out = OutPort(shape=(n_in,))
        self.b_buff = Var(shape=(n_in,), init=0)
        self.w_hist = Var(shape=(nb, n_out * n_in if record else 1), init=0)


@implements(proc=EPLearningDense, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyEPLearningDenseModel(LearningConnectionModelBitApproximate, AbstractPyDenseModelBitAcc):
    """Lava's bit-approximate LearningDense model: forward ``shift(q a_pre)``, back ``shift(q^T a_post)`` (one step
    late, as Dense), pre traces from the 8-bit cut of the payload; the learning phase is Lava's own ``run_lrn``."""

    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64, precision=24)
    post_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64, precision=24)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int64, precision=24)
    b_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int64, precision=24)
    a_buff: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=32)
    b_buff: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=32)
    weights: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=9)
    w_hist: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=9)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.weights_set = True  # the builder gives in-range integers: no first-step truncation to Dense's 8 bits
        self.k = int(proc_params["weight_exp"])
        self.F = int(proc_params["F"])
        self.block = int(proc_params["block"])
        self.record = bool(proc_params["record"])
        starts = list(proc_params["batches"])
        self.batch_end = {(starts[b + 1] - 1) * self.block + self.block: b for b in range(len(starts) - 1)}

    def run_spk(self):
        self.a_out.send(self.a_buff)
        self.b_out.send(self.b_buff)
        pre = np.asarray(self.s_in.recv(), dtype=np.int64)
        post = np.asarray(self.post_in.recv(), dtype=np.int64)
        w = np.asarray(self.weights, dtype=np.int64)
        self.a_buff = shift_k(w @ pre, self.k)
        self.b_buff = shift_k(w.T @ post, self.k)
        self.recv_traces(trace_payload(pre, self.F))

    def run_lrn(self):
        super().run_lrn()
        b = self.batch_end.get(int(self.time_step))
        if self.record and b is not None:
            self.w_hist[b, :] = np.ravel(self.weights)


class EPLayerLD(EPLayer):
    """An :class:`EPLayer` with its bias (learned in the layer) and the 3F rule's post traces ``y1``, ``y2``, ``y3``.

    ``bias``: (n,) state units; ``learn``: ``F``, ``learn_w`` (send the batch-end gate),
    ``j_a``, ``j_b``, ``batches``, and the bias update's ``lr``, ``beta_a``, ``beta_b``,
    ``D``, ``S``, ``input_bits``, ``grid``, ``rounding``, ``rng`` (``(name, state)`` or None);
    ``record``: ``b_hist`` after every batch.
    """

    def __init__(self, *, bias, learn: dict, record: bool = False, **kwargs):
        super().__init__(**kwargs)
        n = self.s.shape[0]
        starts = [int(v) for v in learn["batches"]]
        self.proc_params.overwrite("learn", dict(learn))
        self.proc_params.overwrite("record", bool(record))
        self.bias = Var(shape=(n,), init=np.asarray(bias, dtype=np.int64))
        self.y1_out = OutPort(shape=(n,))
        self.y2_out = OutPort(shape=(n,))
        self.y3_out = OutPort(shape=(n,))
        nb = len(starts) - 1 if record else 1
        self.b_hist = Var(shape=(nb, n if record else 1), init=0)


@implements(proc=EPLayerLD, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyEPLayerLDFixed(_EPLayerSchedule, _PyHTSLayerFixed):
    """:class:`~neuro_hts.lava.proc.ep.PyEPLayerFixed` plus the post traces of the 3F rule and the exact integer bias update
    (:func:`~neuro_hts.hardware.fixed_learning.layer_multipliers`, :func:`round_shift`, over the batch)."""

    y1_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=7)
    y2_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=7)
    y3_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=7)
    b_hist: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)
    d_in = PyEPLayerFixed.d_in
    y_in = PyEPLayerFixed.y_in
    saved = PyEPLayerFixed.saved
    resid = PyEPLayerFixed.resid
    _feedback = PyEPLayerFixed._feedback
    _mix = PyEPLayerFixed._mix

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._init_schedule(proc_params)
        L = proc_params["learn"]
        self.lrn = L
        self.record = bool(proc_params["record"])
        self.starts = list(L["batches"])
        self.batch_of = {self.starts[b + 1] - 1: b for b in range(len(self.starts) - 1)}
        self.c = None
        self.rng = None
        if L["rounding"] == "stochastic":
            kind, state = L["rng"]
            self.rng = np.random.Generator(getattr(np.random, kind)())
            self.rng.bit_generator.state = state

    def run_spk(self):
        super().run_spk()
        t = int(self.time_step) - 1
        k, j = divmod(t, self.block)
        L = self.lrn
        p = np.asarray(self._send(self.s), dtype=np.int64)
        n = p.shape[0]
        live = k < self.starts[-1]
        zero = np.zeros(n, dtype=np.int32)
        tr = trace7(p, int(L["F"])).astype(np.int32)
        self.y1_out.send(tr if (live and j == L["j_a"]) else zero)
        self.y2_out.send(tr if (live and j == L["j_b"]) else zero)
        last = live and j == self.block - 1 and k in self.batch_of
        self.y3_out.send(np.full(n, TRANSFER_GATE, dtype=np.int32) if (last and L["learn_w"]) else zero)
        if not live:
            return
        if self.c is None:
            self.c = np.zeros(n, dtype=np.int64)
        if j == L["j_a"]:
            self.c += p
        if j == L["j_b"]:
            self.c -= p
        if j == self.block - 1 and k in self.batch_of:
            b = self.batch_of[k]
            B = self.starts[b + 1] - self.starts[b]
            _, (Mb, Kb) = layer_multipliers(L["lr"], L["beta_a"], L["beta_b"], B, L["F"], L["D"], L["S"], L["grid"],
                                            0, int(np.max(np.abs(self.c), initial=0)))
            self.bias = apply_bias_update(self.bias, round_shift(self.c * Mb, Kb, L["rounding"], self.rng),
                                          L["input_bits"])
            if self.record:
                self.b_hist[b, :] = self.bias
            self.c = None


def log2_lsb(lsb: int) -> int:
    """``log2(lsb)`` of a power-of-two mantissa spacing."""
    e = int(round(math.log2(int(lsb))))
    if 1 << e != int(lsb):
        raise ValueError(f"lsb {lsb} is not a power of two")
    return e
