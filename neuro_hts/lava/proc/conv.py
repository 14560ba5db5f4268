"""A Lava connection Process for conv2d layers in fixed point (imports Lava: load lazily).

:class:`HTSConvConnection` is ONE conv2d weight layer ``l`` used both ways, between two
:class:`~neuro_hts.lava.proc.hts.HTSLayer` processes (or the input source and layer 1),
exchanging graded spikes (int64 activations, ``F`` fraction bits) like Lava's ``Dense``::

    s_in    <- a_{l-1}   (the pre layer's a_out, or the clamped input)
    post_in <- a_l       (the post layer's a_out)
    a_out   -> layer l       shift_{k_l - log2 A}( P(Wm_l * a_{l-1}) )          (no bias)
    b_out   -> layer l - 1   shift_{k_l - log2 A}( Wm_l^T * P^T a_l )           (feedback)

computed by :func:`neuro_hts.hardware.fixed_sim.conv_up_int` /
:func:`~neuro_hts.hardware.fixed_sim.conv_down_int`: the Numba conv kernel's own
functions (integer cross-correlation accumulator; max pooling = the value at the first
maximum of each window, that position being the CONTEXT; avg pooling = the window sum
with ``log2(area)`` in the shift; the transposed convolution of ``P^T a_l`` for the
feedback, max pooling scattering through the context of the CURRENT pre activations).

Timing is Lava Dense's: at step ``t`` it sends what it computed at step ``t - 1`` from the
activations both layers sent at ``t - 1``, so the post layer steps with
``up(a_{l-1}(t-1))`` and the pre layer with the feedback of ``a_l(t-1)`` through the
context of ``a_{l-1}(t-1)``: the synchronous update of the simulator. The per-channel bias
is not here: it is the post layer's own per-unit bias (expanded by the builder), which
gives the same integer sum ``up + bias + down`` before the layer's saturation.

All arithmetic is int64 (the simulator's), with no 8-bit weight clipping and no int32
accumulator: this is a host-side (CPU) model of a conv connection, not Lava's ``Conv``
(whose ``fixed_pt`` model ignores ``weight_exp`` and has no pooling; docs/LAVA_BACKEND.md).
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

from neuro_hts.hardware.fixed_sim import conv_down_int, conv_up_int  # noqa: E402

__all__ = ["HTSConvConnection", "PyHTSConvConnectionFixed"]


class HTSConvConnection(AbstractProcess):
    """One conv2d weight layer, forward and feedback (module docstring).

    Parameters
    ----------
    weights : (C_out, C_in, k, k) int mantissas
    meta : the layer's row of :func:`neuro_hts.hardware.fixed_sim.conv_meta` (16 ints)
    n_pre, n_post : flat sizes of the pre and post layers
    shift : ``k_l = e_l - F + S``
    feedback : compute ``b_out`` (False for layer 1: nothing listens)
    """

    def __init__(self, *, weights, meta, n_pre: int, n_post: int, shift: int, feedback: bool = True, name=None):
        w = np.ascontiguousarray(weights, dtype=np.int64).reshape(-1)
        super().__init__(meta=[int(v) for v in np.asarray(meta).reshape(-1)], shift=int(shift),
                         feedback=bool(feedback), name=name)
        self.s_in = InPort(shape=(int(n_pre),))
        self.post_in = InPort(shape=(int(n_post),))
        self.a_out = OutPort(shape=(int(n_post),))
        self.b_out = OutPort(shape=(int(n_pre),))
        self.weights = Var(shape=w.shape, init=w)
        self.a_buff = Var(shape=(int(n_post),), init=0)
        self.b_buff = Var(shape=(int(n_pre),), init=0)
        self.context = Var(shape=(int(n_post),), init=0)


@implements(proc=HTSConvConnection, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyHTSConvConnectionFixed(PyLoihiProcessModel):
    """Integer conv connection: the Numba conv kernel's up / down functions, one step delay."""

    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64, precision=24)
    post_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64, precision=24)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int64, precision=24)
    b_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int64, precision=24)
    weights: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=9)
    a_buff: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=32)
    b_buff: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=32)
    context: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=32)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.meta = np.asarray(proc_params["meta"], dtype=np.int64)
        self.k = int(proc_params["shift"])
        self.feedback = bool(proc_params["feedback"])

    def run_spk(self):
        self.a_out.send(self.a_buff)
        self.b_out.send(self.b_buff)
        pre = np.asarray(self.s_in.recv(), dtype=np.int64)[None, :]
        post = np.asarray(self.post_in.recv(), dtype=np.int64)[None, :]
        up, ctx = conv_up_int(pre, self.weights, self.meta, self.k)
        self.a_buff = up[0]
        self.context = ctx[0]
        if self.feedback:
            self.b_buff = conv_down_int(post, self.weights, self.meta, self.k, ctx)[0]
