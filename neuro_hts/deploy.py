"""Inference with a deployed network: Lava (``fixed_pt`` / ``floating_pt``) or Numba.

``neuro-hts deploy NET.h5`` runs the free phase of a deploy bundle (fixed point) or a run
file (float) on the first ``n_samples`` test samples of the dataset the network was
trained on, and reports accuracy and speed:

* ``backend='lava'``: :func:`neuro_hts.lava.run_inference` (Lava's ``Loihi2SimCfg``, one
  block of ``1 + steps`` Lava steps per sample);
* ``backend='numba'``: :class:`~neuro_hts.hardware.fixed_sim.FixedPointSimulator`
  (``arith='fixed'``) or the run's float backend (``arith='float'``).

``arith='fixed'`` needs a bundle (``neuro-hts quantize``); ``arith='float'`` takes a run
file, or a bundle whose dequantized parameters are then run in float. A bundle with conv2d
layers runs on every backend in fixed point (Lava: docs/LAVA_BACKEND.md, "Conv layers"),
and in float on Numba; Lava ``floating_pt`` runs dense chains only.

``predictions``: a ``.npy`` path that receives the predicted classes (int64, shape (N,)),
written atomically (:mod:`neuro_hts._atomic`) after the run; the path is checked BEFORE
the run (it must end in ``.npy``, lie in an existing writable directory and not be the
deployed file), so a typo never costs a run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import Config
from .errors import ConfigError, RunFileError
from .network import Network

__all__ = ["DeployResult", "load_deployable", "bundle_as_network", "check_predictions_path", "deploy",
           "save_predictions"]

logger = logging.getLogger(__name__)

BACKENDS = ("lava", "numba")
ARITHS = ("fixed", "float")


@dataclass(frozen=True)
class DeployResult:
    backend: str
    arith: str
    n_samples: int
    n_steps: int  # relaxation steps per sample
    accuracy: float
    predictions: np.ndarray
    seconds: float  # wall time of the relaxation itself
    lava_steps_per_second: float | None  # Lava time steps (incl. one load step per sample) per second
    #: one line on the source run's status (complete / incomplete / DIVERGED), "" if unknown
    source_status: str = ""
    #: seconds of one-time set-up before the timed relaxation (Numba's JIT compile on a warm-up sample)
    compile_seconds: float = 0.0
    #: where the predictions were saved (None: not asked for)
    predictions_path: str | None = None

    @property
    def samples_per_second(self) -> float:
        return self.n_samples / self.seconds if self.seconds > 0 else math.inf


def _file_format(path: Path) -> str:
    import h5py

    if not path.exists():
        raise RunFileError(f"file not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            fmt = f.attrs.get("format")
    except OSError:
        raise RunFileError(f"{path} is not a readable HDF5 file (truncated or not HDF5)") from None
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    return str(fmt) if fmt is not None else ""


def load_deployable(path):
    """(bundle or None, float network or None, Config or None) from a bundle or a run file."""
    from .hardware.bundle import BUNDLE_FORMAT, load_bundle
    from .runfile import FORMAT_NAME, load_run

    path = Path(path)
    fmt = _file_format(path)
    if fmt == BUNDLE_FORMAT:
        bundle = load_bundle(path)
        cfg_json = (bundle.source or {}).get("run_config")
        cfg = Config.from_json(cfg_json) if cfg_json else None
        return bundle, None, cfg
    if fmt == FORMAT_NAME:
        from .runfile import status_line

        state = load_run(path)
        state.network.meta["status_line"] = status_line(state)
        state.network.meta["status"] = state.status
        return None, state.network, state.config
    raise RunFileError(f"{path} is neither a neuro-hts deploy bundle nor a run file")


def bundle_as_network(bundle) -> Network:
    """The float network a bundle's integers stand for (dequantized weights, biases, dts; a conv bundle's parts)."""
    S = bundle.state_frac_bits
    shapes = bundle.shapes[1:]
    return Network(
        [lb.weights_float() for lb in bundle.layers],
        [np.asarray(lb.bias, dtype=np.float64) / 2.0**S for lb in bundle.layers],
        [(np.asarray(lb.decay, dtype=np.float64) / bundle.target.decay.scale).reshape(sh)
         for lb, sh in zip(bundle.layers, shapes)],
        form=bundle.form, activation=bundle.activation, output=bundle.output, spec=bundle.network,
    )


def _same_file(a, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def check_predictions_path(dest, *inputs) -> Path:
    """The predictions path, checked before any work: ConfigError (one line) if it cannot be written.

    It must end in ``.npy``, not be a directory, lie in an existing writable directory and
    not be one of ``inputs`` (the deployed file).
    """
    p = Path(dest)
    if p.suffix != ".npy":
        raise ConfigError(f"--predictions {dest}: the file must end in .npy")
    if p.is_dir():
        raise ConfigError(f"--predictions {dest} is a directory")
    for inp in inputs:
        if inp is not None and p.exists() and _same_file(p, inp):
            raise ConfigError(f"--predictions {dest} is the input {inp}: writing it would destroy the input")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError(f"--predictions {dest}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--predictions {dest}: directory {parent} is not writable")
    return p


def save_predictions(dest, predictions) -> Path:
    """Write ``predictions`` as an int64 (N,) ``.npy`` atomically (a reader never sees half a file)."""
    from ._atomic import atomic_path

    arr = np.asarray(predictions).astype(np.int64).reshape(-1)
    with atomic_path(dest, suffix=".npy.tmp") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, arr)
    return Path(dest)


def deploy(path, *, backend: str = "lava", arith: str = "fixed", n_samples: int | None = 100,
           steps: int | None = None, dataset: str | None = None, data_dir=None, chunk: int | None = None,
           progress=None, predictions=None) -> DeployResult:
    """Free-phase inference of ``path`` on the first ``n_samples`` test samples (see module doc).

    ``steps``: free-phase steps (default: the source run's ``t1``); ``progress(done)`` is
    called with the number of samples done; ``predictions``: a ``.npy`` path for the
    predicted classes (module doc).
    """
    from .data import load_recorded_dataset

    if predictions is not None:
        check_predictions_path(predictions, path)
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if arith not in ARITHS:
        raise ConfigError(f"arith must be one of {', '.join(ARITHS)}, got {arith!r}")
    if n_samples is not None and n_samples < 1:
        raise ConfigError(f"n_samples must be >= 1, got {n_samples}")
    bundle, net, cfg = load_deployable(path)
    status = _bundle_status(bundle) if bundle is not None else net.meta.get("status_line", "")
    if arith == "fixed" and bundle is None:
        raise ConfigError(f"{path} is a run file: fixed-point deployment needs a bundle (neuro-hts quantize)")
    if arith == "float" and net is None:
        net = bundle_as_network(bundle)
    if net is not None and not net.is_dense:
        from .hardware.drc import check_branch_dendrites, check_chain

        refused = check_branch_dendrites(net) or check_chain(net)
        if refused:
            raise ConfigError(f"{path}: design rule violated: {refused[0]}")
    conv = (bundle is not None and not bundle.is_dense) or (net is not None and not net.is_dense)
    if conv and backend == "lava" and arith == "float":
        raise ConfigError(f"{path}: Lava floating_pt runs dense chains only (a network with conv2d layers: "
                          "--arith fixed on a bundle, or --backend numba)")
    if steps is None:
        if cfg is None:
            raise ConfigError(f"{path} does not record its training config: pass --steps")
        steps = cfg.train.t1
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ConfigError(f"steps must be an integer >= 1, got {steps!r}")
    name = dataset or (cfg.data.dataset if cfg is not None else None)
    if name is None:
        raise ConfigError(f"{path} does not record its dataset: pass --dataset")
    if cfg is not None and cfg.data.normalize is not None:
        raise ConfigError(f"{path}: the run normalises its inputs ([data] normalize); deploy feeds inputs in [0, 1]")
    recorded = cfg.data.data_dir if cfg is not None and name == cfg.data.dataset else None
    data = load_recorded_dataset(name, recorded, data_dir, n_test=n_samples)
    x = np.asarray(data.x_test, dtype=np.float64)
    labels = np.asarray(data.y_test)
    n_in = int(bundle.arch[0] if bundle is not None else net.arch[0])
    if x.shape[1] != n_in:
        raise ConfigError(f"{name} has {x.shape[1]} features but the network expects {n_in}")
    N = x.shape[0]

    lava_sps = None
    compile_seconds = 0.0
    if backend == "lava":
        from .lava import run_inference

        source = bundle if arith == "fixed" else net
        r = run_inference(source, x, steps, arith=arith, chunk=chunk, progress=progress)
        pred, seconds, lava_sps = r.predictions, r.seconds, r.steps_per_second
    else:
        if arith == "fixed":
            from .hardware.fixed_sim import FixedPointSimulator

            sim = FixedPointSimulator(bundle)
            run = lambda xs: sim.predict(xs, steps)  # noqa: E731
        else:
            from .backends import get_backend

            be = get_backend("numba")
            from .dynamics import predict_scores

            run = lambda xs: np.argmax(predict_scores(net, be.relax(net, xs, steps).states), axis=1)  # noqa: E731
        t0 = time.perf_counter()
        run(x[:1])  # warm-up: the first call JIT-compiles, which is not throughput
        compile_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        pred = run(x)
        seconds = time.perf_counter() - t0
        if progress is not None:
            progress(N)
    pred = np.asarray(pred).astype(np.int64).reshape(-1)
    acc = float(np.mean(pred == labels))
    logger.info("deploy %s/%s: %d samples, accuracy %.4f, %.3f s", backend, arith, N, acc, seconds)
    saved = None
    if predictions is not None:
        saved = str(save_predictions(predictions, pred))
        logger.info("predictions of %d samples written to %s", N, saved)
    return DeployResult(backend=backend, arith=arith, n_samples=N, n_steps=int(steps), accuracy=acc,
                        predictions=pred, seconds=seconds, lava_steps_per_second=lava_sps,
                        source_status=status, compile_seconds=compile_seconds, predictions_path=saved)


def _bundle_status(bundle) -> str:
    """The source run's status as recorded at quantize time ("" for bundles without it)."""
    src = bundle.source or {}
    st, msg, e = src.get("run_status", ""), src.get("run_message", ""), src.get("epochs_completed", -1)
    if not st:
        return f"source run: {e} epochs (status not recorded)" if e >= 0 else ""
    if st == "diverged":
        return f"source run status: DIVERGED after {e} epochs ({msg or 'no reason recorded'})"
    if st == "running":
        return f"source run status: incomplete, {e} epochs (interrupted or in progress)"
    return f"source run status: {st}, {e} epochs"


def _json_default(o):  # pragma: no cover - only for debugging output
    return o.tolist() if isinstance(o, np.ndarray) else str(o)


def result_json(r: DeployResult) -> str:
    """A one-line JSON summary (without predictions)."""
    return json.dumps({"backend": r.backend, "arith": r.arith, "n_samples": r.n_samples, "steps": r.n_steps,
                       "accuracy": r.accuracy, "seconds": r.seconds, "samples_per_second": r.samples_per_second,
                       "lava_steps_per_second": r.lava_steps_per_second}, default=_json_default)
