"""Lava Processes and ProcessModels of an HTS-EP network (imports Lava: load lazily).

Three Processes, each with a ``floating_pt`` and a ``fixed_pt`` ProcessModel (Loihi
protocol, CPU), run by Lava's ``Loihi2SimCfg``:

* :class:`HTSLayer`: one relaxed layer of the leaky form with a PER-NEURON decay vector
  (Lava's stock LIF has one decay per population), its state ``s``, bias, an input port
  ``a_in`` (Lava sums every connection into it: bottom-up ``W`` and top-down ``W^T`` Dense
  outputs arrive summed), a graded output ``a_out`` (the activation its neighbours see)
  and ``s_out`` (the raw state, for recording). With ``nudged=True`` the layer is an
  output layer: it also has ``y_in`` (the target) and a ``beta`` Var, and applies the MSE
  nudge in its nudged steps.
* :class:`HTSReadout`: the softmax readout of the top relaxed layer (``output = "ce"``):
  not a relaxed layer; it adds its bias to what its Dense connection ``W_L`` delivers and
  sends the logits ``W_L a_{L-1} + b_L`` (integers: saturated to the input width) to a
  recorder. With ``nudged=True`` it also receives the targets and sends the top layer
  (an :class:`HTSOutputLayer` with ``cost="ce"``) its feedback ``W_L^T (y - softmax(z))``
  in the same step (integers: ``fixed_point.softmax_int``), which that layer applies as its
  nudge in the nudged steps.
* :class:`GradedSource`: a clamped input (or the nudging targets) holding one column per
  sample and sending sample ``k`` during the whole of block ``k``.
* :class:`StateRecorder`: stores the vector it receives at chosen steps into a Var.

Phase schedule (per sample, driven by the time step, no host intervention): a block of
``1 + t_free + t_nudge (+ t_hold)`` steps. Block step 0 is a LOAD step: every layer resets ``s`` to 0
and sends the activation of 0 while the sources put the new sample on the wires. Lava's
Dense delivers at step t what it received at step t-1, so block steps ``1..t_free`` see
exactly the synchronous update ``s_l(t) = f(s_l(t-1), W_l a_{l-1}(t-1) + W_{l+1}^T
a_{l+1}(t-1))`` of :func:`neuro_hts.dynamics.relax` / :class:`FixedPointSimulator`, with
the input clamped; block steps ``t_free+1 .. t_free+t_nudge`` are the nudged phase
(``beta`` applied by output layers), continuing from the free state. ``t_hold`` further
steps (1 with a softmax readout, else 0) keep every state as it is: the readout, one Dense
delay behind the top layer, sees the last relaxed state in the block's last step.

Both forms of docs/MODEL.md: in the leaky form a layer sends its state, in the energy form
rho(s) (``form = "energy"``; the integer models call
:func:`~neuro_hts.hardware.fixed_point.presynaptic_update` and
:func:`~neuro_hts.hardware.fixed_point.energy_neuron_update`, the simulator's own
functions; the float models :func:`neuro_hts.dynamics.energy_update`).

The ``fixed_pt`` models implement :mod:`neuro_hts.hardware.fixed_sim`'s integer semantics
by calling the SAME neuron update, :func:`neuro_hts.hardware.fixed_point.neuron_update`
(saturate, nudge, activation, leaky decay step, saturate: written once); the Dense
connections carry the shifts (``weight_exp``). The ``floating_pt`` models implement
:func:`neuro_hts.dynamics.leaky_update` with :func:`neuro_hts.dynamics.mse_nudge` inside
sigma (or :func:`neuro_hts.dynamics.energy_update` with the nudge outside rho'), in float64.
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

from neuro_hts.activations import get_activation  # noqa: E402
from neuro_hts.costs import softmax  # noqa: E402
from neuro_hts.dynamics import energy_update, leaky_update, mse_nudge  # noqa: E402
from neuro_hts.hardware.fixed_point import (  # noqa: E402
    FORM_ENERGY,
    FORM_LEAKY,
    energy_neuron_update,
    exp2_table,
    neuron_update,
    payload_step,
    presynaptic_update,
    readout_nudge_targets,
    saturate,
    shift_right_floor,
    softmax_int,
)
from neuro_hts.hardware.fixed_sim import SIGMOID4_LO, sigmoid4_table  # noqa: E402

__all__ = [
    "HTSLayer",
    "HTSOutputLayer",
    "HTSReadout",
    "GradedSource",
    "StateRecorder",
    "PyHTSLayerFloat",
    "PyHTSLayerFixed",
    "PyGradedSourceFloat",
    "PyGradedSourceFixed",
    "PyStateRecorderFloat",
    "PyStateRecorderFixed",
]


# --------------------------------------------------------------------------- Processes


class HTSLayer(AbstractProcess):
    """A relaxed HTS-EP layer (leaky form) with per-neuron time constants.

    Parameters
    ----------
    dt : (n,) float, the per-neuron time steps (used by ``floating_pt``)
    decay : (n,) int, the per-neuron integer decays ``round(dt * 2**decay_bits)`` (``fixed_pt``)
    bias : (n,) biases: floats (``floating_pt``) or integers in state units
        ``2**-state_frac_bits`` (``fixed_pt``)
    t_free, t_nudge : steps of the free and nudged phase in each block
    t_hold : steps after them that keep the state (1 before a softmax readout)
    activation : 'hard_sigmoid' or 'sigmoid4'
    form : 'leaky' (sends s) or 'energy' (sends rho(s); docs/MODEL.md)
    fixed : the integer widths ``fixed_pt`` needs: ``state_frac_bits``,
        ``activation_frac_bits``, ``decay_bits``, ``input_bits``, ``state_bits``
    """

    def __init__(self, *, dt, decay, bias, t_free: int, t_nudge: int = 0, t_hold: int = 0,
                 activation: str = "hard_sigmoid", form: str = "leaky", fixed: dict | None = None, name=None,
                 **params):
        n = int(np.asarray(bias).shape[0])
        params.setdefault("nudged", False)
        super().__init__(shape=(n,), t_free=int(t_free), t_nudge=int(t_nudge), t_hold=int(t_hold),
                         activation=str(activation), form=str(form), fixed=dict(fixed or {}), name=name, **params)
        self.a_in = InPort(shape=(n,))
        self.a_out = OutPort(shape=(n,))
        self.s_out = OutPort(shape=(n,))
        self.s = Var(shape=(n,), init=0)
        self.dt = Var(shape=(n,), init=np.asarray(dt))
        self.decay = Var(shape=(n,), init=np.asarray(decay))
        self.bias = Var(shape=(n,), init=np.asarray(bias))


class HTSOutputLayer(HTSLayer):
    """The output layer: an :class:`HTSLayer` that is nudged toward ``y_in`` (MSE cost).

    ``beta``: float (``floating_pt``) or its integer form ``rint(beta * 2**decay_bits)``
    (``fixed_pt``); applied only in the nudged steps of each block. With ``cost="ce"`` it
    is the top relaxed layer below a softmax readout and ``y_in`` carries the readout's
    feedback ``fb`` (-dC/da, state units): the nudge is ``beta fb`` (times rho'(s) in the
    energy form; ``fixed_point.readout_nudge_targets``).
    """

    def __init__(self, *, beta=0, cost: str = "mse", **kwargs):
        super().__init__(nudged=True, cost=str(cost), **kwargs)
        n = self.s.shape[0]
        self.y_in = InPort(shape=(n,))
        self.beta = Var(shape=(1,), init=np.array([beta]))


class HTSReadout(AbstractProcess):
    """The softmax readout (``output = "ce"``): ``logits = a_in + bias`` sent on ``s_out``.

    ``a_in`` is the Dense ``W_L`` output (the top relaxed layer's payload, shifted to state
    units in ``fixed_pt``); ``bias``: floats, or integers in state units. ``fixed_pt``
    saturates the sum to ``input_bits`` as every synaptic input
    (:meth:`~neuro_hts.hardware.fixed_sim.FixedPointSimulator.logits`). No softmax: the
    prediction is the argmax of the logits.
    """

    def __init__(self, *, bias, weights=None, shift: int = 0, nudged: bool = False, fixed: dict | None = None,
                 name=None):
        n = int(np.asarray(bias).shape[0])
        w = np.zeros((n, 1)) if weights is None else np.asarray(weights)
        super().__init__(shape=(n,), shift=int(shift), nudged=bool(nudged), fixed=dict(fixed or {}), name=name)
        self.a_in = InPort(shape=(n,))
        self.y_in = InPort(shape=(n,))
        self.s_out = OutPort(shape=(n,))
        self.b_out = OutPort(shape=(w.shape[1],))
        self.bias = Var(shape=(n,), init=np.asarray(bias))
        self.weights = Var(shape=w.shape, init=w)


class GradedSource(AbstractProcess):
    """Clamped graded values: sends column ``k`` of ``data`` (n, N) during block ``k``.

    ``steps_per_sample`` is the block length; after the last column it keeps sending it.
    """

    def __init__(self, *, data, steps_per_sample: int, name=None):
        data = np.asarray(data)
        super().__init__(steps_per_sample=int(steps_per_sample), name=name)
        self.data = Var(shape=data.shape, init=data)
        self.s_out = OutPort(shape=data.shape[:1])


class StateRecorder(AbstractProcess):
    """Stores what arrives on ``a_in`` at block step ``record_step`` of every block.

    ``data[:, k]`` holds the value received in block ``k`` (blocks of ``steps_per_sample``
    steps; with ``steps_per_sample = 1`` and ``record_step = 0`` every step is recorded).
    """

    def __init__(self, *, shape: int, n_records: int, steps_per_sample: int, record_step: int, name=None):
        super().__init__(steps_per_sample=int(steps_per_sample), record_step=int(record_step), name=name)
        self.a_in = InPort(shape=(int(shape),))
        self.data = Var(shape=(int(shape), int(n_records)), init=0)


# --------------------------------------------------------------------------- helpers


def _block_step(time_step: int, steps_per_sample: int) -> int:
    """Position of Lava's 1-based ``time_step`` inside its block (0 = first step)."""
    return (int(time_step) - 1) % int(steps_per_sample)


# --------------------------------------------------------------------------- HTSLayer models


class _PyHTSLayerBase(PyLoihiProcessModel):
    """Phase schedule shared by both arithmetics; subclasses define ``_zero``, ``_update``."""

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.t_free = int(proc_params["t_free"])
        self.t_nudge = int(proc_params["t_nudge"])
        self.t_hold = int(proc_params.get("t_hold", 0))
        self.block = 1 + self.t_free + self.t_nudge + self.t_hold
        self.nudged = bool(proc_params["nudged"])
        self.activation = proc_params["activation"]
        self.form = proc_params.get("form", "leaky")
        if self.form not in ("leaky", "energy"):
            raise ValueError(f"unsupported form {self.form!r}")
        self.cost = proc_params.get("cost", "mse")

    def run_spk(self):
        a_in = self.a_in.recv()
        y = self.y_in.recv() if self.nudged else None
        j = _block_step(self.time_step, self.block)
        if j == 0:
            self.s = self._zero()
        elif j <= self.t_free + self.t_nudge:
            nudge = self.nudged and j > self.t_free
            self.s = self._update(a_in, y if nudge else None)
        # hold steps (j > t_free + t_nudge) keep s
        self.a_out.send(self._send(self.s))
        self.s_out.send(self.s)


class _PyHTSLayerFloat(_PyHTSLayerBase):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    s: np.ndarray = LavaPyType(np.ndarray, float)
    dt: np.ndarray = LavaPyType(np.ndarray, float)
    decay: np.ndarray = LavaPyType(np.ndarray, int)
    bias: np.ndarray = LavaPyType(np.ndarray, float)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.sigma, self.sigma_prime = get_activation(self.activation)

    def _zero(self):
        return np.zeros(self.s.shape, dtype=np.float64)

    def _send(self, s):
        """Leaky form: the state itself; energy form: rho(s) (dynamics.presynaptic)."""
        return self.sigma(s) if self.form == "energy" else s

    def _update(self, a_in, y, beta=None):
        h = np.asarray(a_in, dtype=np.float64) + self.bias
        nudge = 0.0
        if y is not None:
            b = float(self.beta[0]) if beta is None else float(beta)
            if self.cost == "ce":  # y carries the readout's -dC/dr; the chain rule through r = rho(s)
                g = np.asarray(y, dtype=np.float64)
                nudge = b * (g * self.sigma_prime(self.s) if self.form == "energy" else g)
            else:
                nudge = b * mse_nudge(self.s, np.asarray(y, dtype=np.float64))
        if self.form == "energy":  # the nudge enters outside rho'
            return energy_update(self.s, h, self.dt, self.sigma_prime, nudge)
        return leaky_update(self.s, h + nudge, self.dt, self.sigma)


class _PyHTSLayerFixed(_PyHTSLayerBase):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64, precision=24)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int64, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int64, precision=24)
    s: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)
    dt: np.ndarray = LavaPyType(np.ndarray, float)
    decay: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=13)
    bias: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        fx = proc_params["fixed"]
        self.S = int(fx["state_frac_bits"])
        self.F = int(fx["activation_frac_bits"])
        self.D = int(fx["decay_bits"])
        self.IB = int(fx["input_bits"])
        self.SB = int(fx["state_bits"])
        self.one = 1 << self.S
        if self.activation == "sigmoid4":
            self.table = sigmoid4_table(self.S)
            self.table_lo = SIGMOID4_LO * self.one
        elif self.activation == "hard_sigmoid":
            self.table, self.table_lo = np.zeros(1, dtype=np.int64), 0
        else:
            raise ValueError(f"unsupported activation {self.activation!r}")

    def _zero(self):
        return np.zeros(self.s.shape, dtype=np.int64)

    def _send(self, s):
        """:func:`neuro_hts.hardware.fixed_point.presynaptic_update`: the payload of s (leaky) or of rho(s) (energy)."""
        return presynaptic_update(np.ascontiguousarray(s, dtype=np.int64), np.int64(self.S - self.F),
                                  np.int64(FORM_ENERGY if self.form == "energy" else FORM_LEAKY), np.int64(self.one),
                                  np.int64(0 if self.activation == "hard_sigmoid" else 1), self.table,
                                  np.int64(self.table_lo))

    def _update(self, a_in, y, beta=None):
        """:func:`neuro_hts.hardware.fixed_point.neuron_update` (leaky) or
        :func:`~neuro_hts.hardware.fixed_point.energy_neuron_update` (energy): what the Numba simulator runs.

        ``y``: the target in nudged steps (None: no nudge); ``beta``: the nudge, default the ``beta`` Var.
        """
        s = np.ascontiguousarray(self.s, dtype=np.int64)
        h = np.asarray(a_in, dtype=np.int64) + self.bias
        beta = 0 if y is None else (int(self.beta[0]) if beta is None else int(beta))
        yv = np.asarray(y, dtype=np.int64) if y is not None else np.zeros_like(s)
        act = np.int64(0 if self.activation == "hard_sigmoid" else 1)
        if y is not None and self.cost == "ce":  # y carries the readout's feedback: nudge toward s + -dC/ds
            yv = readout_nudge_targets(s, yv, np.int64(FORM_ENERGY if self.form == "energy" else FORM_LEAKY),
                                       np.int64(self.S), act, self.table, np.int64(self.table_lo))
        if self.form == "energy":
            return energy_neuron_update(s, h, yv, np.int64(beta), np.ascontiguousarray(self.decay, dtype=np.int64),
                                        np.int64(self.D), np.int64(self.IB), np.int64(self.S),
                                        np.int64(0 if self.activation == "hard_sigmoid" else 1), self.table,
                                        np.int64(self.table_lo))
        return neuron_update(s, h, yv, np.int64(beta), np.ascontiguousarray(self.decay, dtype=np.int64),
                             np.int64(self.D), np.int64(self.IB), np.int64(self.SB), np.int64(self.one),
                             np.int64(0 if self.activation == "hard_sigmoid" else 1), self.table, np.int64(self.table_lo))


@implements(proc=HTSLayer, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyHTSLayerFloat(_PyHTSLayerFloat):
    """Float64 leaky update ``s += dt * (sigma(h) - s)``."""


@implements(proc=HTSLayer, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyHTSLayerFixed(_PyHTSLayerFixed):
    """Integer leaky update, bit-exact with :class:`FixedPointSimulator`."""


class _NudgedFloatPorts(_PyHTSLayerFloat):
    y_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    beta: np.ndarray = LavaPyType(np.ndarray, float)


class _NudgedFixedPorts(_PyHTSLayerFixed):
    y_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64, precision=24)
    beta: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)


@implements(proc=HTSOutputLayer, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyHTSOutputLayerFloat(_NudgedFloatPorts):
    """Float output layer: ``h += beta * (y - s)`` in nudged steps."""


@implements(proc=HTSOutputLayer, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyHTSOutputLayerFixed(_NudgedFixedPorts):
    """Integer output layer: ``h += tz(beta_int * (y_int - s) / 2**D)`` in nudged steps."""


# --------------------------------------------------------------------------- readout


@implements(proc=HTSReadout, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyHTSReadoutFloat(PyLoihiProcessModel):
    """Float logits ``W_L r_{L-1} + b_L`` (dynamics.readout_logits)."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    y_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    b_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    bias: np.ndarray = LavaPyType(np.ndarray, float)
    weights: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self):
        z = np.asarray(self.a_in.recv(), dtype=np.float64) + self.bias
        self.s_out.send(z)
        if self.proc_params["nudged"]:  # -dC/dr = W^T (y - softmax(z)) (costs.SoftmaxReadout.nudge)
            y = np.asarray(self.y_in.recv(), dtype=np.float64)
            self.b_out.send((y - softmax(z)) @ self.weights)


@implements(proc=HTSReadout, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyHTSReadoutFixed(PyLoihiProcessModel):
    """Integer logits ``saturate(shift_k(Wm_L a) + bias_L, IB)`` (FixedPointSimulator.logits)."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64, precision=24)
    y_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int64, precision=24)
    b_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int64, precision=24)
    bias: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)
    weights: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        fx = proc_params["fixed"]
        self.IB = int(fx["input_bits"])
        self.S = int(fx["state_frac_bits"])
        self.s_minus_f = self.S - int(fx["activation_frac_bits"])
        self.k = int(proc_params["shift"])
        self.table = exp2_table()

    def run_spk(self):
        """Logits ``saturate(a_in + bias, IB)``; nudged: the feedback of FixedPointSimulator's ``_readout_feedback``::

            p = softmax_int(z),  fb = shift_k(Wm_L^T payload(y - p))   (int64 on the host CPU, as HTSConvConnection)
        """
        a = np.asarray(self.a_in.recv(), dtype=np.int64)
        z = saturate(a + np.asarray(self.bias, dtype=np.int64), self.IB)
        self.s_out.send(z)
        if self.proc_params["nudged"]:
            y = np.asarray(self.y_in.recv(), dtype=np.int64)
            p = np.empty_like(z)
            softmax_int(np.ascontiguousarray(z), np.int64(self.S), self.table, p)
            err = payload_step(y - p, np.int64(self.s_minus_f))
            acc = np.asarray(self.weights, dtype=np.int64).T @ err  # exact int64
            self.b_out.send(np.left_shift(acc, self.k) if self.k >= 0 else shift_right_floor(acc, -self.k))


# --------------------------------------------------------------------------- sources


class _PyGradedSourceBase(PyLoihiProcessModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.block = int(proc_params["steps_per_sample"])

    def run_spk(self):
        k = min((int(self.time_step) - 1) // self.block, self.data.shape[1] - 1)
        self.s_out.send(self.data[:, k])


@implements(proc=GradedSource, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyGradedSourceFloat(_PyGradedSourceBase):
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    data: np.ndarray = LavaPyType(np.ndarray, float)


@implements(proc=GradedSource, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyGradedSourceFixed(_PyGradedSourceBase):
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int64, precision=24)
    data: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)


# --------------------------------------------------------------------------- recorder


class _PyStateRecorderBase(PyLoihiProcessModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.block = int(proc_params["steps_per_sample"])
        self.record_step = int(proc_params["record_step"])

    def run_spk(self):
        v = self.a_in.recv()
        t = int(self.time_step) - 1
        if t % self.block == self.record_step:
            k = t // self.block
            if k < self.data.shape[1]:
                self.data[:, k] = v


@implements(proc=StateRecorder, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyStateRecorderFloat(_PyStateRecorderBase):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    data: np.ndarray = LavaPyType(np.ndarray, float)


@implements(proc=StateRecorder, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyStateRecorderFixed(_PyStateRecorderBase):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64, precision=24)
    data: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)


# --------------------------------------------------------------------------- Dense weights


def lava_weight_form(weights) -> np.ndarray:
    """What Lava's ``PyDenseModelBitAcc`` makes of integer ``weights`` on its first step.

    It clips to 8 bits and truncates to ``num_weight_bits = 8`` for the sign mode it
    detects (mixed-sign matrices lose their least significant bit: even values only).
    Calls Lava's own ``weightutils``, so a change there shows up here.
    """
    from lava.utils.weightutils import clip_weights, determine_sign_mode, truncate_weights

    w = np.asarray(weights)
    mode = determine_sign_mode(w)
    return truncate_weights(clip_weights(w, mode, num_bits=8), mode, 8).astype(np.int64)
