"""Knowledge distillation into an EP network (docs/FAMILY.md section 5, form (ii); docs/ALGORITHMS.md).

A teacher is any run file of the same task (typically the same net trained by BPTT:
``neuro-hts teacher``, i.e. ``train.trainer = "bptt"``). Its scores on every training
image give soft targets with a temperature; the student is trained with its own cost
(MSE or the softmax readout's cross-entropy) toward a mix of those and the one-hot label,
so EP's nudged phase pulls the output toward what the teacher believes, not only toward
the label. This is the form named ``soft_targets`` (an INFERENCE, FAMILY.md): the paper's
body is not available, and it differs from Hinton et al.'s ``T**2 KL`` at the student's
temperature exactly when that temperature is not 1 (at T = 1 the cross-entropy toward
soft targets is the KL plus a constant).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ._atomic import file_sha256 as teacher_digest  # the teacher run file's digest: a resumed student checks it
from .errors import ConfigError

__all__ = ["soft_targets", "distill_targets", "teacher_scores", "teacher_digest"]

logger = logging.getLogger(__name__)


def soft_targets(scores, temperature: float) -> np.ndarray:
    """Teacher soft targets ``p_t = softmax(z_t / T)`` row by row (float64, rows sum to 1).

    ``z_t`` are the teacher's class scores: the readout's logits for a softmax-readout
    teacher, the output layer's states (in [0, 1]) for an MSE teacher, where a temperature
    well below 1 (e.g. 0.1-0.25) keeps the targets peaked.
    """
    if not (isinstance(temperature, (int, float)) and np.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"distillation temperature must be a positive number, got {temperature!r}")
    z = np.asarray(scores, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def distill_targets(y_onehot, scores, temperature: float, alpha: float) -> np.ndarray:
    """The student's training targets ``y' = (1 - alpha) y + alpha softmax(z_t / T)``.

    ``alpha = 0`` gives the labels unchanged (standard EP, bit for bit: the one-hot array
    is returned as is); ``alpha = 1`` trains on the teacher's soft targets alone.
    """
    if not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
        raise ConfigError(f"distillation alpha must lie in [0, 1], got {alpha!r}")
    y = np.asarray(y_onehot)
    if alpha == 0:
        return y
    p = soft_targets(scores, temperature)
    if p.shape != y.shape:
        raise ConfigError(f"teacher scores {p.shape} do not match the targets {y.shape}")
    return ((1.0 - alpha) * y.astype(np.float64) + alpha * p).astype(y.dtype)


def teacher_scores(path, x, n_classes: int, batch_size: int = 1000) -> np.ndarray:
    """The teacher run's class scores on ``x`` after its own free phase (``t1`` steps,
    its backend, float64): ``predict_scores`` of its states, (N, n_classes)."""
    from .backends import get_backend
    from .dynamics import predict_scores
    from .runfile import load_run

    path = Path(path)
    state = load_run(path)
    net = state.network.astype(np.float64)
    if state.status == "running":
        logger.warning("teacher %s is not finished (%d/%d epochs)", path, state.epochs_completed,
                       state.config.train.epochs)
    n_in = int(np.prod(x.shape[1:]))
    if net.arch[0] != n_in or net.arch[-1] != n_classes or (x.ndim == 4 and tuple(x.shape[1:]) != tuple(net.shapes[0])):
        raise ConfigError(f"teacher {path} ({'-'.join(map(str, net.arch))}) does not fit the student's data "
                          f"({n_in} inputs, {n_classes} classes)")
    backend = get_backend(state.config.train.backend, np.float64)
    t1 = int(state.config.train.t1)
    out = np.empty((x.shape[0], n_classes), dtype=np.float64)
    for start in range(0, x.shape[0], batch_size):
        xb = np.ascontiguousarray(x[start : start + batch_size], dtype=np.float64)
        res = backend.relax(net, xb, t1)
        out[start : start + len(xb)] = predict_scores(net, res.states)
    return out
