"""EP learning through Lava's own learning engine: ``LearningDense`` with a three-factor rule (imports Lava).

The hardware-realistic counterpart of :mod:`neuro_hts.lava.proc.ep` (``train
--lava-learning learning-dense``; docs/LAVA_LEARNING.md). Two Processes, ``fixed_pt``:

* :class:`EPLearningDense`, a :class:`lava.proc.dense.process.LearningDense` (its
  ProcessModel derives from the classes of Lava's ``PyLearningDenseModelBitApproximate``,
  ``LearningConnectionModelBitApproximate`` and ``AbstractPyDenseModelBitAcc``: Lava's
  trace, product-series, accumulator and stochastic-rounding code runs unchanged) with a
  :class:`~lava.magma.core.learning.learning_rule.Loihi3FLearningRule`. It holds
  ``q_l`` = the layer's weights in GRID STEPS (mantissa ``m = lsb * q``) with
  ``weight_exp = k + log2(lsb)``, so that its forward product is the exact path's
  ``shift_k(m a)``. Added to LearningDense: ``post_in`` and ``b_out``, the top-down
  product ``shift(q^T a_post)`` read from the SAME weights (so W^T is the transpose of the
  learning W at every step), and ``w_hist`` (weights after every batch).
* :class:`EPLayerLD`, an :class:`~neuro_hts.lava.proc.ep.EPLayer` that holds and learns
  its bias (exact integer rule) and sends the post-synaptic traces of the three-factor
  rule: ``y1``, ``y2`` (its 7-bit activity trace at the two phase ends) and ``y3`` (the
  batch-end third factor).

The rule (``t_epoch = 1``: Lava's learning phase runs after every time step; every block
gets one trailing START step, the TRANSFER step, :func:`~neuro_hts.lava.learning._with_transfer_step`)::

    dt = m_t 2^-7 u0 x1 y1 - m_t 2^-7 u0 x1 y2 - 2^0 u0 t y3
    dw = m_w 2^e_w u0 t y3

Which EP quantity each term computes (``C = sum_b (a_post^a a_pre^a^T - a_post^b
a_pre^b^T)``, :func:`~neuro_hts.hardware.fixed_learning.ep_contrast`):

* ``x1``: ``a_pre`` as a 7-bit trace, Lava's graded-spike ``OVERWRITE`` (``x1 =
  round(q / 2)``, ``q`` the payload cut to 8 bits, :func:`~neuro_hts.lava.ld_rule.trace_payload`),
  multiplied by ``d = exp(-1 / x1_tau)`` (stochastically rounded) before the rule reads it.
  A payload below ``2**(F-8)`` does not overwrite it: a neuron that falls silent keeps its
  last trace, decaying by ``d`` per step;
* ``y1``: ``a_post`` at the end of the contrast's phase a (7 bits, sent by the post layer
  only at ``j_a``), ``y2``: ``a_post`` at the end of phase b (only at ``j_b``);
* the tag ``t`` (tag_1, a 9-bit signed synaptic variable): the batch's contrast ``C`` in
  tag units, ``+x1 y1`` at ``j_a``, ``-x1 y2`` at ``j_b``, each product floored after a
  3-bit shift into the 16-bit accumulator and the tag stochastically rounded to an integer;
* ``y3 = 32`` (the third factor) at the transfer step of a batch's last sample: ``dw``
  moves ``t m_w 2^e_w`` grid steps to the weight (rounded stochastically, once per batch),
  and ``-u0 t y3`` resets the tag exactly. ``m_t m_w 2^e_w`` is the learning rate per
  trace product (:func:`~neuro_hts.lava.ld_rule.rule_scale`, 3-bit mantissas, within 5 %).

So the weights change once per batch, as in the exact path, by the rounded, accumulated
contrast. What differs from the exact update: 7-bit traces (their decay and staleness),
the products' floor shift, the tag's integer rounding at every phase end and its
saturation at [-257, 255], ONE uniform number per step shared by every synapse for the
stochastic rounding (Lava's ``ConnVarRandom``, fixed seed), the rate's 3-bit mantissas,
a shorter last batch stepped with the full batch's scale, and saturation at Lava's 9-bit
weight (the result is clipped to the grid's ``max_int`` when read back).
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
    """:class:`~neuro_hts.lava.proc.ep.PyEPLayerFixed` plus the 3F rule's post traces and the exact integer bias update
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
