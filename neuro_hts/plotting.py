"""Figures. Matplotlib is imported lazily, inside the functions that draw.

Figures are drawn on matplotlib's Agg canvas without pyplot, so the library neither
changes the user's backend nor leaves figures open; files are written atomically.
"""

from __future__ import annotations

import logging
import math
import os
import zlib
from pathlib import Path

import numpy as np

from ._atomic import atomic_path
from .distributions import DT_MAX, DT_MEAN, DT_MIN, DT_STD, HEAVY_TAILED, HOMOGENEOUS, available_distributions, sample_dt
from .errors import ConfigError, NeuroHTSError

__all__ = ["PlottingUnavailableError", "dt_summary", "plot_dt_distributions"]

log = logging.getLogger(__name__)

_FORMATS = ("png", "pdf", "svg")


class PlottingUnavailableError(NeuroHTSError, ImportError):
    """matplotlib is not installed in this environment."""


def _figure_class():
    """matplotlib's Figure and Agg canvas, or a one-line error if matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlottingUnavailableError("plotting needs matplotlib: pip install 'matplotlib>=3.8'") from exc
    return Figure, FigureCanvasAgg


def _law_rng(seed: int, dist: str) -> np.random.Generator:
    """One generator per law, keyed by (seed, name): adding a law changes no other law's samples."""
    return np.random.default_rng([int(seed), zlib.crc32(dist.encode())])


def _draw_all(mu, sigma, dt_min, dt_max, n, seed, distributions) -> dict[str, np.ndarray]:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"n must be a positive integer, got {n!r}")
    # by default every law but the layer-size-dependent homogeneous ones (lognormal_min's value is
    # the minimum of n draws: of the figure's 100,000 samples it says nothing about a layer)
    names = (tuple(d for d in available_distributions() if d == "constant" or d not in HOMOGENEOUS)
             if distributions is None else tuple(distributions))
    if not names:
        raise ConfigError("no distributions to draw")
    return {d: sample_dt(d, int(n), _law_rng(seed, d), mu, sigma, dt_min, dt_max) for d in names}


def _stats(dt: np.ndarray, dt_min: float, dt_max: float) -> dict[str, float]:
    return {
        "mean": float(dt.mean()),
        "std": float(dt.std()),
        "median": float(np.median(dt)),
        "frac_at_min": float(np.mean(dt <= dt_min)),
        "frac_at_max": float(np.mean(dt >= dt_max)),
    }


def dt_summary(
    mu: float = DT_MEAN,
    sigma: float = DT_STD,
    dt_min: float = DT_MIN,
    dt_max: float = DT_MAX,
    n: int = 100_000,
    seed: int = 0,
    distributions=None,
) -> dict[str, dict[str, float]]:
    """Statistics of ``n`` clipped samples dt_i per law (the samples of the Figure 1 plot).

    Returns
    -------
    dict
        ``{law: {"mean", "std", "median", "frac_at_min", "frac_at_max"}}`` in registry
        order; ``frac_at_min`` / ``frac_at_max`` are the fractions of samples clipped to
        (equal to) ``dt_min`` / ``dt_max``. Same seed, same samples as
        :func:`plot_dt_distributions`.
    """
    samples = _draw_all(mu, sigma, dt_min, dt_max, n, seed, distributions)
    return {d: _stats(dt, dt_min, dt_max) for d, dt in samples.items()}


def plot_dt_distributions(
    out_path: str | os.PathLike,
    mu: float = DT_MEAN,
    sigma: float = DT_STD,
    dt_min: float = DT_MIN,
    dt_max: float = DT_MAX,
    n: int = 100_000,
    seed: int = 0,
    distributions=None,
) -> Path:
    """Draw the paper's Figure 1: a histogram of clipped dt_i for each law.

    One panel per law (all registered laws by default), the same 50 bins over
    [0, dt_max] in every panel, y axis the fraction of the ``n`` samples per bin. The
    bins holding samples clipped to dt_max / dt_min are drawn in red, dt_max is marked
    by a dashed line, and each panel states the fractions piled up at either bound.
    The format follows the suffix of ``out_path`` (png, pdf or svg; png if none).

    Returns the path written.
    """
    out_path = Path(out_path)
    fmt = out_path.suffix.lstrip(".").lower() or "png"
    if fmt not in _FORMATS:
        raise ConfigError(f"figure format {fmt!r} not supported; use one of {', '.join(_FORMATS)}")
    samples = _draw_all(mu, sigma, dt_min, dt_max, n, seed, distributions)
    Figure, FigureCanvasAgg = _figure_class()

    names = list(samples)
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.0 * nrows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, sharex=True, squeeze=False)
    edges = np.linspace(0.0, dt_max, 51)
    width = edges[1] - edges[0]

    for k, name in enumerate(names):
        ax = axes[k // ncols][k % ncols]
        dt = samples[name]
        stats = _stats(dt, dt_min, dt_max)
        interior = dt[(dt > dt_min) & (dt < dt_max)]
        frac = np.histogram(interior, bins=edges)[0] / dt.size
        # samples clipped to a bound: stacked in red on the bin holding that bound
        clipped = np.zeros_like(frac)
        clipped[-1] += stats["frac_at_max"]
        clipped[min(np.searchsorted(edges, dt_min, side="right") - 1, len(frac) - 1)] += stats["frac_at_min"]
        ax.bar(edges[:-1], frac, width=width, align="edge", color="tab:blue", edgecolor="none")
        ax.bar(edges[:-1], clipped, width=width, align="edge", bottom=frac, color="tab:red", edgecolor="none")
        frac = frac + clipped
        ax.axvline(dt_max, color="k", linestyle="--", linewidth=1.0)
        ax.axvline(mu, color="0.5", linestyle=":", linewidth=1.0)
        top = float(frac.max()) if frac.size else 1.0
        ax.set_ylim(0.0, 1.45 * top if top > 0 else 1.0)
        ax.set_xlim(-0.02 * dt_max, 1.04 * dt_max)
        heavy = " (heavy-tailed)" if name in HEAVY_TAILED else ""
        ax.set_title(f"{name}{heavy}", fontsize=11)
        ax.text(
            0.03,
            0.96,
            f"at dt_max: {100 * stats['frac_at_max']:.1f}%\nat dt_min: {100 * stats['frac_at_min']:.1f}%\n"
            f"mean {stats['mean']:.3f}, std {stats['std']:.3f}",
            transform=ax.transAxes,
            va="top",
            ha="left",
            fontsize=8,
            bbox={"boxstyle": "round,pad=0.25", "facecolor": "white", "edgecolor": "0.8", "alpha": 0.9},
        )
        ax.tick_params(labelsize=8)
        if k % ncols == 0:
            ax.set_ylabel("fraction of neurons", fontsize=9)
        if k // ncols == nrows - 1 or k + ncols >= len(names):
            ax.set_xlabel("dt_i", fontsize=9)
            ax.tick_params(labelbottom=True)
    for k in range(len(names), nrows * ncols):  # empty slots of the grid
        axes[k // ncols][k % ncols].set_axis_off()

    fig.suptitle(
        f"Heterogeneous time steps dt_i: mu = {mu:g}, sigma = {sigma:g}, clipped to [{dt_min:g}, {dt_max:g}]"
        f"\n(n = {n:,} per law; dashed: dt_max, dotted: mu, red: clipped samples)",
        fontsize=11,
    )
    with atomic_path(out_path, suffix=f".{fmt}") as tmp:
        fig.savefig(tmp, format=fmt, dpi=120)
    log.info("wrote %s (%d laws)", out_path, len(names))
    return out_path
