"""Run files: HDF5 checkpoints of a training run (layout in docs/FORMAT.md).

Every write replaces the whole file atomically (temporary file + rename), so a crash or
``kill -9`` leaves either the previous checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._atomic import atomic_path
from ._h5 import open_checked
from .config import Config
from .errors import ConfigError, RunFileError
from .network import Network, network_spec
from .stability import run_metrics

__all__ = ["SCHEMA_VERSION", "FORMAT_NAME", "HISTORY_KEYS", "RunState", "save_run", "load_run"]

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


def _version() -> str:
    from . import __version__

    return __version__


def save_run(path: str | Path, state: RunState) -> Path:
    """Write ``state`` to ``path`` atomically; returns the path."""
    import h5py

    path = Path(path)
    with atomic_path(path, suffix=".h5.tmp") as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT_NAME
            f.attrs["schema_version"] = np.int64(SCHEMA_VERSION)
            f.attrs["config"] = state.config.to_json()
            f.attrs["neuro_hts_version"] = _version()
            f.attrs["epochs_completed"] = np.int64(state.epochs_completed)
            f.attrs["status"] = state.status
            f.attrs["message"] = state.message
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
            hist = f.create_group("history")
            for k in HISTORY_KEYS:
                hist.create_dataset(k, data=np.asarray(state.history.get(k, []), dtype=np.float64))
            stab = f.create_group("stability")  # derived from /history and status, for readers
            for k, v in run_metrics(state.history, state.status, int(state.config.model.arch[-1])).items():
                stab.attrs[k] = np.float64(v)
            opt = f.create_group("optimizer")
            for k, arrs in state.optimizer_state.items():
                g = opt.create_group(k)
                for j, a in enumerate(arrs):
                    g.create_dataset(str(j), data=np.asarray(a))
    logger.debug("saved run %s (epoch %d)", path, state.epochs_completed)
    return path


def load_run(path: str | Path) -> RunState:
    """Read a run file; raise RunFileError with one clear line if it is not a valid one."""
    path = Path(path)
    with open_checked(path, FORMAT_NAME, READ_VERSIONS, "run") as f:
        version = int(f.attrs["schema_version"])
        try:
            config = Config.from_json(str(f.attrs["config"]))
        except ConfigError as exc:
            raise RunFileError(f"{path}: invalid stored config: {exc}") from None
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
                          spec=network_spec(config), buffers=buffers)
        except ValueError as exc:
            raise RunFileError(f"{path}: inconsistent layers: {exc}") from None
        if net.arch != config.model.arch:
            raise RunFileError(f"{path}: layer shapes {net.arch} do not match the stored config {config.model.arch}")
        history = {k: [float(v) for v in np.array(f["history"][k])] for k in HISTORY_KEYS if k in f["history"]}
        if version == 1:  # schema 1 had no early-stopping free phase: every epoch ran t1 steps
            history["free_steps_mean"] = [float(config.train.t1)] * len(history.get("test_accuracy", []))
        opt_state = {}
        for k, g in f.get("optimizer", {}).items():
            opt_state[k] = [np.array(g[str(j)]) for j in range(len(g))]
        return RunState(
            config=config,
            network=net,
            epochs_completed=int(f.attrs["epochs_completed"]),
            history=history,
            optimizer_state=opt_state,
            status=str(f.attrs.get("status", "running")),
            message=str(f.attrs.get("message", "")),
        )

