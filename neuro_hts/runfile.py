"""Run files: HDF5 checkpoints of a training run (layout in docs/FORMAT.md).

Every write replaces the whole file atomically (temporary file + rename), so a crash or
``kill -9`` leaves either the previous checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._atomic import atomic_path
from ._h5 import open_checked
from .config import Config
from .costs import LocalCosts
from .diagnostics import ACTIVITY_STATS, Diagnostics
from .errors import ConfigError, RunFileError
from .network import Network, network_spec
from .stability import run_metrics

__all__ = ["SCHEMA_VERSION", "FORMAT_NAME", "HISTORY_KEYS", "STATUSES", "RunState", "RunSummary", "save_run", "load_run",
           "load_summary", "save_summary", "status_line", "check_values"]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
#: versions load_run reads: 1 (neuro-hts before the EP-family engine; migrated on load)
READ_VERSIONS = (1, 2)
FORMAT_NAME = "neuro-hts-run"

#: Per-epoch series in /history (one entry per completed epoch).
HISTORY_KEYS = (
    "test_accuracy",
    "train_accuracy",
    "train_loss",
    "free_residual_mean",
    "free_residual_max",
    "frac_not_converged",
    "epoch_seconds",
    "free_steps_mean",
)


#: values of the ``status`` attribute
STATUSES = ("running", "complete", "diverged")


@dataclass
class RunState:
    """Everything needed to evaluate a run or resume it exactly."""

    config: Config
    network: Network
    epochs_completed: int = 0
    history: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in HISTORY_KEYS})
    optimizer_state: dict[str, list[np.ndarray]] = field(default_factory=dict)
    status: str = "running"  # running | complete | diverged
    message: str = ""
    #: per-epoch learning-signal diagnostics (/diagnostics; empty when not recorded)
    diagnostics: Diagnostics = field(default_factory=Diagnostics)


@dataclass
class RunSummary:
    """How a run went, without its weights: what sweeps, reports and sweep archives read.

    ``metrics_only`` marks a file written by :func:`save_summary` (a sweep cell restored
    from an archive, docs/FORMAT.md "Metrics-only run files"): it has no ``/layers`` and
    cannot be evaluated or resumed.
    """

    config: Config
    epochs_completed: int
    history: dict[str, list[float]]
    status: str
    message: str = ""
    metrics_only: bool = False


def _version() -> str:
    from . import __version__

    return __version__


def _write_progress(f, config: Config, epochs_completed: int, status: str, message: str, history) -> None:
    """The root attributes, ``/history`` and ``/stability`` (derived from the history and status, for readers)."""
    f.attrs["format"] = FORMAT_NAME
    f.attrs["schema_version"] = np.int64(SCHEMA_VERSION)
    f.attrs["config"] = config.to_json()
    f.attrs["neuro_hts_version"] = _version()
    f.attrs["epochs_completed"] = np.int64(epochs_completed)
    f.attrs["status"] = status
    f.attrs["message"] = message
    hist = f.create_group("history")
    for k in HISTORY_KEYS:
        hist.create_dataset(k, data=np.asarray(history.get(k, []), dtype=np.float64))
    stab = f.create_group("stability")
    for k, v in run_metrics(history, status, int(config.model.arch[-1])).items():
        stab.attrs[k] = np.float64(v)


def save_run(path: str | Path, state: RunState) -> Path:
    """Write ``state`` to ``path`` atomically; returns the path."""
    import h5py

    path = Path(path)
    with atomic_path(path, suffix=".h5.tmp") as tmp:
        with h5py.File(tmp, "w") as f:
            _write_progress(f, state.config, state.epochs_completed, state.status, state.message, state.history)
            net = state.network
            layers = f.create_group("layers")
            layers.attrs["form"] = net.form
            layers.attrs["activation"] = net.activation
            layers.attrs["output"] = net.output
            for i, (w, b, d) in enumerate(zip(net.weights, net.biases, net.dts), start=1):
                g = layers.create_group(str(i))
                g.create_dataset("weight", data=w)
                g.create_dataset("bias", data=b)
                g.create_dataset("dt", data=d)
                if net.buffers[i - 1]:  # fixed, untrained arrays of the connection (dendritic masks)
                    gb = g.create_group("buffers")
                    for k, a in net.buffers[i - 1].items():
                        gb.create_dataset(k, data=a)
            if net.local is not None:  # local error costs' readouts (docs/FORMAT.md "/local")
                loc = f.create_group("local")
                loc.attrs["beta"] = np.float64(net.local.beta)
                loc.attrs["loss"] = net.local.loss
                loc.attrs["readout"] = "learned" if net.local.learned else "fixed"
                loc.attrs["layers"] = np.asarray(net.local.layers, dtype=np.int64)
                for l, w in zip(net.local.layers, net.local.weights):
                    loc.create_group(str(l)).create_dataset("weight", data=w)
            diag = state.diagnostics
            if diag.recorded:  # a separate group: /history and HISTORY_KEYS stay as they are
                g = f.create_group("diagnostics")
                g.create_dataset("state_gap", data=np.asarray(diag.state_gap, dtype=np.float64))
                g.create_dataset("grad_abs", data=np.asarray(diag.grad_abs, dtype=np.float64))
                g.create_dataset("activity", data=np.asarray(diag.activity, dtype=np.float64))
                g.attrs["activity_stats"] = json.dumps(list(ACTIVITY_STATS))
                g.attrs["layers"] = json.dumps(list(diag.layers))
                g.attrs["connections"] = json.dumps(list(diag.connections))
            opt = f.create_group("optimizer")
            for k, arrs in state.optimizer_state.items():
                g = opt.create_group(k)
                for j, a in enumerate(arrs):
                    g.create_dataset(str(j), data=np.asarray(a))
    logger.debug("saved run %s (epoch %d)", path, state.epochs_completed)
    return path


def _read_config(f, path: Path) -> Config:
    try:
        return Config.from_json(str(f.attrs["config"]))
    except ConfigError as exc:
        raise RunFileError(f"{path}: invalid stored config: {exc}") from None


def _read_history(f, version: int, config: Config) -> dict[str, list[float]]:
    history = {k: [float(v) for v in np.array(f["history"][k])] for k in HISTORY_KEYS if k in f["history"]}
    if version == 1:  # schema 1 had no early-stopping free phase: every epoch ran t1 steps
        history["free_steps_mean"] = [float(config.train.t1)] * len(history.get("test_accuracy", []))
    return history


def load_summary(path: str | Path) -> RunSummary:
    """Read a run file's config, status and history, not its weights (any run file,
    metrics-only ones included); one-line RunFileError if it is not a valid one."""
    path = Path(path)
    with open_checked(path, FORMAT_NAME, READ_VERSIONS, "run") as f:
        version = int(f.attrs["schema_version"])
        config = _read_config(f, path)
        summary = RunSummary(config=config, epochs_completed=int(f.attrs["epochs_completed"]),
                             history=_read_history(f, version, config),
                             status=str(f.attrs.get("status", "running")), message=str(f.attrs.get("message", "")),
                             metrics_only=bool(f.attrs.get("metrics_only", False)))
    _check_progress(summary.status, summary.epochs_completed, summary.history, path)
    return summary


def save_summary(path: str | Path, summary: RunSummary) -> Path:
    """Write a metrics-only run file (config, status, history, stability; no weights), atomically."""
    import h5py

    path = Path(path)
    _check_progress(summary.status, summary.epochs_completed, summary.history, path)
    with atomic_path(path, suffix=".h5.tmp") as tmp:
        with h5py.File(tmp, "w") as f:
            _write_progress(f, summary.config, summary.epochs_completed, summary.status, summary.message,
                            summary.history)
            f.attrs["metrics_only"] = np.int64(1)
    return path


def load_run(path: str | Path) -> RunState:
    """Read a run file; raise RunFileError with one clear line if it is not a valid one."""
    path = Path(path)
    with open_checked(path, FORMAT_NAME, READ_VERSIONS, "run") as f:
        version = int(f.attrs["schema_version"])
        if f.attrs.get("metrics_only", False):
            raise RunFileError(f"{path} is a metrics-only run file (a sweep cell restored from an archive): "
                               f"it holds the history but no weights")
        config = _read_config(f, path)
        L = len(config.model.arch) - 1
        weights, biases, dts, buffers = [], [], [], []
        for i in range(1, L + 1):
            g = f["layers"][str(i)]
            weights.append(np.array(g["weight"]))
            biases.append(np.array(g["bias"]))
            dts.append(np.array(g["dt"]))
            buffers.append({k: np.array(v) for k, v in g["buffers"].items()} if "buffers" in g else {})
        la = f["layers"].attrs
        try:
            net = Network(weights, biases, dts, str(la["form"]), str(la["activation"]), str(la["output"]),
                          spec=network_spec(config), buffers=buffers, nudge=config.model.nudge)
        except ValueError as exc:
            raise RunFileError(f"{path}: inconsistent layers: {exc}") from None
        if net.arch != config.model.arch:
            raise RunFileError(f"{path}: layer shapes {net.arch} do not match the stored config {config.model.arch}")
        net.local = _load_local(f, config, net, path)
        history = _read_history(f, version, config)
        diagnostics = _read_diagnostics(f, path)
        opt_state = {}
        for k, g in f.get("optimizer", {}).items():
            opt_state[k] = [np.array(g[str(j)]) for j in range(len(g))]
        state = RunState(
            config=config,
            network=net,
            epochs_completed=int(f.attrs["epochs_completed"]),
            history=history,
            optimizer_state=opt_state,
            status=str(f.attrs.get("status", "running")),
            message=str(f.attrs.get("message", "")),
            diagnostics=diagnostics,
        )
    check_values(state, path)
    return state


def _load_local(f, config, net: Network, path) -> LocalCosts | None:
    """The readouts in ``/local``, checked against the stored config's ``[local]`` (None without local costs)."""
    lc = config.local
    if not lc.active:
        if "local" in f:
            raise RunFileError(f"{path}: holds /local readouts but its config has no local costs ([local] beta = 0)")
        return None
    if "local" not in f:
        raise RunFileError(f"{path}: its config has local costs ([local] beta = {lc.beta:g}) but the file has no /local "
                           f"readouts")
    g = f["local"]
    try:
        layers = lc.layer_indices(net.n_dynamic)
    except ConfigError as exc:
        raise RunFileError(f"{path}: invalid stored [local]: {exc}") from None
    stored = tuple(int(v) for v in np.atleast_1d(np.array(g.attrs.get("layers", []))))
    if stored != layers or any(str(l) not in g for l in layers):
        raise RunFileError(f"{path}: /local holds readouts of layers {stored}, its config names layers {layers}")
    try:
        local = LocalCosts(layers, [np.array(g[str(l)]["weight"]) for l in layers], lc.beta, config.model.output,
                           lc.readout == "learned")
        net.local = local
        net._check_local()
    except (ValueError, KeyError) as exc:
        raise RunFileError(f"{path}: inconsistent /local readouts: {exc}") from None
    return local


def _read_diagnostics(f, path) -> Diagnostics:
    """``/diagnostics`` of an open run file; an empty :class:`Diagnostics` for files without the group."""
    if "diagnostics" not in f:
        return Diagnostics()
    g = f["diagnostics"]
    try:
        layers, conns = json.loads(str(g.attrs["layers"])), json.loads(str(g.attrs["connections"]))
    except json.JSONDecodeError as exc:
        raise RunFileError(f"{path}: /diagnostics names are not JSON ({exc})") from None
    gap, grad = np.array(g["state_gap"], dtype=np.float64), np.array(g["grad_abs"], dtype=np.float64)
    if gap.ndim != 2 or grad.ndim != 2 or gap.shape != (gap.shape[0], len(layers)) \
            or grad.shape != (gap.shape[0], len(conns)):
        raise RunFileError(f"{path}: /diagnostics shapes {gap.shape} and {grad.shape} do not fit "
                           f"{len(layers)} layers and {len(conns)} connections with one row per epoch")
    activity = None  # files from before the activity statistics: NaN (Diagnostics fills it)
    if "activity" in g:
        activity = np.array(g["activity"], dtype=np.float64)
        if activity.shape != (gap.shape[0], len(layers), len(ACTIVITY_STATS)):
            raise RunFileError(f"{path}: /diagnostics/activity has shape {activity.shape}, expected "
                               f"{(gap.shape[0], len(layers), len(ACTIVITY_STATS))}")
    return Diagnostics(tuple(map(str, layers)), tuple(map(str, conns)), gap, grad, activity)


def _count_bad(a: np.ndarray) -> int:
    return int(np.size(a) - np.count_nonzero(np.isfinite(a)))


def check_values(state: RunState, path: str | Path = "run") -> None:
    """Refuse a run whose values (not only shapes) are impossible, with one line naming the first.

    Weights, biases and optimiser arrays must be finite; every dt must lie in (0, 1]; masks
    (connection buffers named ``*mask*``, e.g. dendritic branches) hold only 0 and 1;
    ``epochs_completed`` must be >= 0 and no ``/history`` series longer; ``status``
    one of :data:`STATUSES` (docs/FORMAT.md, "Validation on load").
    """
    net = state.network
    for name, arrs in (("weight", net.weights), ("bias", net.biases), ("dt", net.dts)):
        for i, a in enumerate(arrs, start=1):
            if not np.issubdtype(np.asarray(a).dtype, np.floating):
                raise RunFileError(f"{path}: layer {i} {name} has dtype {np.asarray(a).dtype}, expected floats")
            bad = _count_bad(a)
            if bad:
                raise RunFileError(f"{path}: layer {i} {name} holds {bad} NaN or infinite value(s); "
                                   f"the file is damaged or was edited")
    for l, w in zip(net.local.layers, net.local.weights) if getattr(net, "local", None) is not None else ():
        if not np.issubdtype(np.asarray(w).dtype, np.floating) or _count_bad(w):
            raise RunFileError(f"{path}: /local readout of layer {l} is not all finite floats; the file is damaged or "
                               f"was edited")
    for i, d in enumerate(net.dts, start=1):
        out = (d <= 0) | (d > 1)
        if out.any():
            j = int(np.flatnonzero(out.ravel())[0])
            raise RunFileError(f"{path}: layer {i} dt[{j}] = {float(d.ravel()[j]):.6g} lies outside (0, 1] "
                               f"({int(out.sum())} value(s)); every time step must be in (0, 1]")
    for i, bufs in enumerate(getattr(net, "buffers", None) or (), start=1):
        for k, a in (bufs or {}).items():
            a = np.asarray(a)
            if "mask" in k and a.size and not np.isin(a, (0, 1)).all():
                raise RunFileError(f"{path}: layer {i} {k} holds values other than 0 and 1; "
                                   f"the file is damaged or was edited")
    for k, arrs in state.optimizer_state.items():
        for j, a in enumerate(arrs):
            a = np.asarray(a)
            if np.issubdtype(a.dtype, np.floating) and _count_bad(a):
                raise RunFileError(f"{path}: optimizer state {k}[{j}] holds NaN or infinite values")
    _check_progress(state.status, state.epochs_completed, state.history, path)
    if state.diagnostics.n_epochs > state.epochs_completed:
        raise RunFileError(f"{path}: /diagnostics has {state.diagnostics.n_epochs} rows for "
                           f"{state.epochs_completed} completed epochs")


def _check_progress(status: str, e: int, history: dict, path) -> None:
    if status not in STATUSES:
        raise RunFileError(f"{path}: status {status!r} is not one of {', '.join(STATUSES)}")
    if e < 0:
        raise RunFileError(f"{path}: epochs_completed = {e} is negative")
    for k, v in history.items():
        if len(v) > e:
            raise RunFileError(f"{path}: history/{k} has {len(v)} entries for {e} completed epochs")


def status_line(state: RunState | RunSummary) -> str:
    """One line on how a run ended: complete, interrupted (resumable) or diverged (with the reason)."""
    e, total = state.epochs_completed, state.config.train.epochs
    if state.status == "diverged":
        return f"run status: DIVERGED after {e}/{total} epochs ({state.message or 'no reason recorded'}); " \
               f"these are the weights of the last good epoch"
    if state.status == "running":
        return f"run status: incomplete, {e}/{total} epochs (interrupted or in progress; resumable with --resume)"
    return f"run status: complete, {e}/{total} epochs"

