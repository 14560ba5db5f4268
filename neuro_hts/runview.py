"""One run file at a glance: ``neuro-hts show`` (text), ``plot`` (figures) and ``export`` (NPZ).

The library never prints: :func:`show_lines` returns lines, :func:`plot_run` and
:func:`export_npz` write files atomically and return their paths.
"""

from __future__ import annotations

import io
import json
import logging
import math
from pathlib import Path

import numpy as np

from ._atomic import atomic_path
from .diagnostics import ACTIVE_THRESHOLD
from .errors import ConfigError
from .runfile import RunState, RunSummary, status_line

__all__ = ["config_toml", "show_lines", "plot_run", "plot_diagnostics", "export_npz", "EXPORT_FORMAT"]

log = logging.getLogger(__name__)

EXPORT_FORMAT = "neuro-hts-export"


# --------------------------------------------------------------------------- TOML


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items() if x is not None) + "}"
    raise ConfigError(f"cannot write {v!r} as TOML")


def config_toml(config) -> str:
    """The full configuration as TOML text that :func:`neuro_hts.config.load_config` reads back.

    Keys without a value (None, e.g. ``data.n_train``) have no TOML form; they are written
    as comments, so loading the text gives them their default (None) again.
    """
    d = config.to_dict()
    lines = []
    for section, table in d.items():
        lines.append(f"[{section}]")
        for k, v in table.items():
            if isinstance(v, (list, tuple)) and not v and k in ("layers", "connections", "costs"):
                continue  # not declared: the parts come from arch/output
            if v is None:
                lines.append(f"# {k} = (not set)")
            else:
                lines.append(f"{k} = {_toml_value(v)}")
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- show


def show_lines(path, state: RunState | RunSummary) -> list[str]:
    """Config summary, status and a per-epoch table of a run (a :class:`RunSummary`: without the per-layer dt)."""
    cfg = state.config
    h = state.history
    arch = "-".join(map(str, cfg.model.arch))
    lines = [
        f"{path}: {cfg.data.dataset}, arch {arch}, {cfg.model.form}/{cfg.model.activation}/{cfg.model.output}, "
        f"algorithm {cfg.train.algorithm}, {cfg.train.arith} arithmetic" + (f" ({cfg.train.target})" if cfg.train.target else ""),
        f"dt: {cfg.dt.dist} mean {cfg.dt.mean:g} std {cfg.dt.std:g} in [{cfg.dt.dt_min:g}, {cfg.dt.dt_max:g}], "
        f"layers {cfg.dt.layers}; train: {cfg.train.optimizer} lr {','.join(f'{v:g}' for v in cfg.train.lr)}, "
        f"batch {cfg.train.batch_size}, T1 {cfg.train.t1}, T2 {cfg.train.t2}, beta {cfg.train.beta:g}, seed {cfg.train.seed}",
        status_line(state),
    ]
    if isinstance(state, RunSummary):
        lines.append("metrics only (a sweep cell restored from an archive): no weights or dt values in this file")
    else:
        for i, d in enumerate(state.network.dts, start=1):
            lines.append(f"layer {i}: {d.size} units, dt mean {float(d.mean()):.4f} std {float(d.std()):.4f} "
                         f"[{float(d.min()):.4f}, {float(d.max()):.4f}]")
    acc = h.get("test_accuracy", [])
    if not acc:
        lines.append("no completed epoch")
        return lines
    lines.append(f"{'epoch':>5} {'test acc':>8} {'train acc':>9} {'loss':>8} {'residual':>9} {'not conv.':>9} "
                 f"{'steps':>6} {'seconds':>8}")
    for k in range(len(acc)):
        g = lambda key: h.get(key, [math.nan] * len(acc))[k]  # noqa: E731
        lines.append(f"{k + 1:>5} {g('test_accuracy'):>8.4f} {g('train_accuracy'):>9.4f} {g('train_loss'):>8.4f} "
                     f"{g('free_residual_mean'):>9.2e} {g('frac_not_converged'):>9.3f} {g('free_steps_mean'):>6.1f} "
                     f"{g('epoch_seconds'):>8.1f}")
    best = int(np.nanargmax(acc))
    lines.append(f"final test accuracy {acc[-1]:.4f}, best {acc[best]:.4f} at epoch {best + 1}")
    return lines


# --------------------------------------------------------------------------- plot


def plot_run(state: RunState, out_path, *, title: str = "") -> Path:
    """Training curves (accuracy, loss), free-phase residual and per-layer dt / weight histograms."""
    from .plotting import _figure_class

    out_path = Path(out_path)
    fmt = out_path.suffix.lstrip(".").lower() or "png"
    if fmt not in ("png", "pdf", "svg"):
        raise ConfigError(f"figure format {fmt!r} not supported; use png, pdf or svg")
    Figure, FigureCanvasAgg = _figure_class()
    h = state.history
    L = state.network.n_layers
    fig = Figure(figsize=(12, 6.5), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(2, max(3, L))
    epochs = np.arange(1, len(h.get("test_accuracy", [])) + 1)
    ax = grid[0][0]
    ax.plot(epochs, h.get("test_accuracy", []), "o-", label="test")
    ax.plot(epochs, h.get("train_accuracy", []), "s--", label="train")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (fraction)")
    ax.set_title("accuracy")
    ax.legend(fontsize=8)
    ax = grid[0][1]
    ax.plot(epochs, h.get("train_loss", []), "o-")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean train cost per sample")
    ax.set_title("training loss")
    ax = grid[0][2]
    ax.semilogy(epochs, np.maximum(h.get("free_residual_mean", []), 1e-12), "o-", label="mean")
    ax.semilogy(epochs, np.maximum(h.get("free_residual_max", []), 1e-12), "s--", label="max")
    ax.axhline(state.config.train.residual_tol, color="k", linestyle=":", linewidth=1, label="residual_tol")
    ax.set_xlabel("epoch")
    ax.set_ylabel("max |s_t - s_{t-1}| at the last free step")
    ax.set_title("free-phase residual")
    ax.legend(fontsize=8)
    for ax in grid[0][3:]:
        ax.set_axis_off()
    for l in range(max(3, L)):
        ax = grid[1][l]
        if l >= L:
            ax.set_axis_off()
            continue
        w = np.asarray(state.network.weights[l], dtype=np.float64).ravel()
        d = np.asarray(state.network.dts[l], dtype=np.float64).ravel()
        ax.hist(w, bins=60, color="tab:blue")
        ax.set_xlabel(f"W_{l + 1} (weight value)")
        ax.set_ylabel("count")
        ax.set_title(f"layer {l + 1}: weights; dt mean {d.mean():.3f}, std {d.std():.3f}", fontsize=9)
    fig.suptitle(title or status_line(state), fontsize=10)
    with atomic_path(out_path, suffix=f".{fmt}") as tmp:
        fig.savefig(tmp, format=fmt, dpi=110)
    log.info("wrote %s", out_path)
    return out_path


def _positive(a: np.ndarray) -> np.ndarray:
    """Values a log axis can show: non-positive and non-finite ones become NaN (a gap in the line)."""
    a = np.asarray(a, dtype=np.float64)
    return np.where(np.isfinite(a) & (a > 0), a, np.nan)


def plot_diagnostics(runs, out_path) -> Path:
    """The deep-EP diagnostics of one or more runs: per-layer state gap and per-connection mean |g_W| by epoch.

    ``runs``: a list of ``(label, RunState)``; one column per run (titled by its label),
    two rows: the state gap of each relaxed layer and the mean |g_W| of each connection
    (neuro_hts.diagnostics), log y axes shared along each row, layers coloured from the
    input (dark) to the output (light); where recorded, three more rows of the free-phase
    activity per layer (mean |s|, active fraction, normalised entropy; linear axes). Raises ConfigError (one line) for a run without
    diagnostics or without a completed epoch; writes the figure atomically.
    """
    from .plotting import _figure_class

    out_path = Path(out_path)
    fmt = out_path.suffix.lstrip(".").lower() or "png"
    if fmt not in ("png", "pdf", "svg"):
        raise ConfigError(f"figure format {fmt!r} not supported; use png, pdf or svg")
    runs = list(runs)
    if not runs:
        raise ConfigError("plot diagnostics needs at least one run file")
    for label, state in runs:
        d = state.diagnostics
        if not d.recorded:
            why = ("a fixed-point engine does not record them" if state.config.train.arith == "fixed"
                   else "it was written before neuro-hts recorded them; train it again")
            raise ConfigError(f"{label} has no training diagnostics (/diagnostics): {why}")
        if d.n_epochs == 0 or not (np.isfinite(d.state_gap).any() or np.isfinite(d.grad_abs).any()):
            raise ConfigError(f"{label} has no completed epoch with diagnostics")
    Figure, FigureCanvasAgg = _figure_class()
    from matplotlib import colormaps
    from matplotlib.ticker import MaxNLocator

    cmap = colormaps["viridis"]
    n = len(runs)
    rows = [("state_gap", "layers", "state gap ||s^a - s^b|| per sample",
             "state gap per layer (scaled to one nudge beta)", None),
            ("grad_abs", "connections", "mean |dW| (EP gradient estimate)", "mean |dW| per connection", None)]
    # the free-phase activity rows (neuro_hts.diagnostics.activity_stats), where any run has them
    if any(np.isfinite(state.diagnostics.activity).any() for _, state in runs):
        rows += [("activity", "layers", "mean |s|", "free-phase mean |s| per layer", 0),
                 ("activity", "layers", f"fraction |s| > {ACTIVE_THRESHOLD:g}", "active units per layer", 1),
                 ("activity", "layers", "normalised entropy of |s|", "how distributed the activity is (1: uniform)", 2)]
    fig = Figure(figsize=(4.6 * n + 0.6, 3.5 * len(rows)), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(len(rows), n, squeeze=False, sharey="row")
    for col, (label, state) in enumerate(runs):
        d = state.diagnostics
        epochs = np.arange(1, d.n_epochs + 1)
        for row, (key, names_key, ylabel, title, stat) in enumerate(rows):
            ax = grid[row][col]
            values = getattr(d, key) if stat is None else d.activity[:, :, stat]
            names = getattr(d, names_key)
            shown = _positive if stat is None else (lambda a: np.asarray(a, dtype=np.float64))
            for j, name in enumerate(names):
                colour = cmap(0.9 * j / max(1, len(names) - 1))
                ax.plot(epochs, shown(values[:, j]), "o-", color=colour, label=name, markersize=3.5)
            if not np.isfinite(shown(values)).any():
                ax.text(0.5, 0.5, "not recorded\n(no nudged phase, e.g. trainer bptt)" if key == "state_gap"
                        else "not recorded", transform=ax.transAxes, ha="center", va="center", fontsize=9)
            elif stat is None:
                ax.set_yscale("log")
            else:
                ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if col == 0:
                ax.set_ylabel(ylabel)
            ax.set_title(f"{label}\n{title}" if row == 0 else title, fontsize=9)
            ax.legend(fontsize=7, title="input -> output", title_fontsize=7)
            ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("learning-signal diagnostics per layer (docs/FORMAT.md /diagnostics)", fontsize=10)
    with atomic_path(out_path, suffix=f".{fmt}") as tmp:
        fig.savefig(tmp, format=fmt, dpi=110)
    log.info("wrote %s (%d runs)", out_path, n)
    return out_path


# --------------------------------------------------------------------------- export


def export_npz(state: RunState, out_path, *, source: str = "") -> Path:
    """Weights, biases and dts of every layer plus a JSON header, as one NumPy ``.npz``.

    Arrays: ``weight_<i>``, ``bias_<i>``, ``dt_<i>`` (i = 1 ... L, shapes as in the run
    file) and ``header``, a 0-d string array holding JSON: ``format``
    (``"neuro-hts-export"``), ``version`` 1, ``source``, ``arch``, ``form``,
    ``activation``, ``output``, ``status``, ``epochs_completed``, ``config`` (the run's
    config as a JSON object) and ``arrays`` (name -> shape). Loadable with
    ``numpy.load(path)`` alone (no pickle).
    """
    net = state.network
    arrays = {}
    for i, (w, b, d) in enumerate(zip(net.weights, net.biases, net.dts), start=1):
        arrays[f"weight_{i}"] = np.asarray(w)
        arrays[f"bias_{i}"] = np.asarray(b)
        arrays[f"dt_{i}"] = np.asarray(d)
    header = {
        "format": EXPORT_FORMAT,
        "version": 1,
        "source": str(source),
        "arch": list(net.arch),
        "form": net.form,
        "activation": net.activation,
        "output": net.output,
        "status": state.status,
        "epochs_completed": state.epochs_completed,
        "config": json.loads(state.config.to_json()),
        "arrays": {k: list(v.shape) for k, v in arrays.items()},
    }
    buf = io.BytesIO()
    np.savez(buf, header=np.array(json.dumps(header, sort_keys=True)), **arrays)
    out_path = Path(out_path)
    with atomic_path(out_path, suffix=".npz.tmp") as tmp:
        with open(tmp, "wb") as fh:
            fh.write(buf.getvalue())
    log.info("exported %s", out_path)
    return out_path
