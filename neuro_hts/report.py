"""Report of a sweep directory: tables (markdown + CSV) and figures (PNG).

``neuro-hts report DIR --out REPORT_DIR`` reads ``DIR/sweep.json`` and every cell's run
file, groups the cells by (distribution, swept settings) across seeds and writes:

* ``summary.csv``: one row per group: ``dist``, one column per swept setting, ``n_seeds``,
  ``n_runs_found``, then for every metric of :mod:`neuro_hts.stability` its
  ``_mean/_std/_min/_max`` across seeds, ``final_accuracy_spread`` and
  ``divergence_rate``;
* ``runs.csv``: one row per cell: its settings, seed, status, epochs and the per-run
  metrics;
* ``report.md``: the summary as a markdown table (accuracy as mean +- std in %), plus
  the figures;
* ``fig1_dt_distributions.png``: the paper's Figure 1 for the sweep's dt parameters;
* ``accuracy_curves.png``: test accuracy per epoch, one line per distribution (mean over
  seeds) with a band (min..max over seeds), one panel per combination of swept settings;
* ``stability_map.png`` (only when settings are swept): one panel per distribution; rows
  and columns are the first two swept settings (further settings are folded into the
  rows), the colour is the divergence rate over seeds and the text in each cell the mean
  final accuracy (%) and the largest single-epoch drop (points);
* ``setting_curve.png`` (only when exactly one swept setting takes several values, e.g.
  ``dt.mean``; others may be fixed with a one-value ``--set``): final
  accuracy (mean, band min..max over seeds) and divergence rate against that setting, one
  line per distribution.

When ``constant`` is among several distributions, ``comparisons.csv`` and a section of
``report.md`` compare each law's final accuracy with it per setting combination: difference
of means, seed spread, 95 % bootstrap interval, permutation p-value, Holm-adjusted over
the report's comparisons, and a verdict (:mod:`neuro_hts.stats`). When settings are swept
and ``constant`` is among several distributions, ``report.md`` also has a side-by-side table (one row per setting combination, one column per
distribution) and a tally, per heterogeneous law, of the combinations where it diverged in
fewer, as many or more seeds than the constant baseline (:func:`divergence_tally`).

Cells whose run file is missing, or whose run has not finished (status ``running``: still
training, or interrupted), are counted (``n_runs_found`` < ``n_seeds``; ``n_runs_found``
counts finished runs) and left out of the statistics and curves; ``runs.csv`` still lists
unfinished runs with their epochs so far, and the report says how many were left out.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path

import numpy as np

from ._atomic import atomic_path
from .errors import ConfigError
from .stability import RUN_METRICS, run_metrics, seed_summary

__all__ = ["collect", "divergence_tally", "write_report"]

logger = logging.getLogger(__name__)


def _setting_keys(cells) -> list[str]:
    keys: list[str] = []
    for c in cells:
        for k in c.get("settings", {}):
            if k not in keys:
                keys.append(k)
    return keys


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list):
        return ",".join(_fmt(x) for x in v)
    return str(v)


def collect(sweep_dir) -> dict:
    """Load a sweep: {'base', 'keys', 'runs': [per-cell dict], 'groups': [per-group dict]}."""
    from .runfile import load_summary
    from .sweep import load_manifest

    sweep_dir = Path(sweep_dir)
    base, cells = load_manifest(sweep_dir)
    keys = _setting_keys(cells)
    runs = []
    for c in cells:
        path = sweep_dir / f"{c['name']}.h5"
        row = {"name": c["name"], "dist": c["dist"], "seed": int(c["seed"]),
               "settings": tuple(_fmt(c["settings"].get(k, "")) for k in keys), "raw_settings": c["settings"],
               "found": False}
        if path.exists():
            st = load_summary(path)
            n_classes = int(st.config.model.arch[-1])
            row.update(status=st.status, epochs=st.epochs_completed, history=st.history,
                       metrics=run_metrics(st.history, st.status, n_classes))
            # A run still training (interrupted, or another worker's) would bias every mean
            # towards its early epochs: it is listed in runs.csv but left out of the statistics.
            row["found"] = st.status != "running"
        runs.append(row)
    groups: dict[tuple, dict] = {}
    for r in runs:
        g = groups.setdefault((r["dist"], r["settings"]), {"dist": r["dist"], "settings": r["settings"], "runs": []})
        g["runs"].append(r)
    for g in groups.values():
        found = [r for r in g["runs"] if r["found"]]
        g["n_seeds"] = len(g["runs"])
        g["n_found"] = len(found)
        g["summary"] = seed_summary([r["metrics"] for r in found]) if found else {}
    # laws in the manifest's order, each law's settings in increasing order (cells added later,
    # e.g. by resolve-seeds, would otherwise move their settings to the front)
    law_rank = {d: i for i, d in enumerate(dict.fromkeys(r["dist"] for r in runs))}
    ordered = sorted(groups.values(), key=lambda g: (law_rank[g["dist"]],
                                                     _settings_key(g["runs"][0]["raw_settings"], keys)))
    return {"base": base, "keys": keys, "runs": runs, "groups": ordered}


def _settings_key(raw: dict, keys) -> tuple:
    """Sort key of a cell's settings: numbers by value (a one-element list as its element), the rest as text."""
    out = []
    for k in keys:
        v = raw.get(k, "")
        if isinstance(v, (list, tuple)) and len(v) == 1:
            v = v[0]
        try:
            out.append((0, float(v), ""))
        except (TypeError, ValueError):
            out.append((1, 0.0, str(v)))
    return tuple(out)


def _csv_text(header, rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def _summary_columns():
    cols = []
    for m in RUN_METRICS:
        cols += [f"{m}_{s}" for s in ("mean", "std", "min", "max")]
    return cols + ["final_accuracy_spread", "divergence_rate"]


def _num(v) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.6g}"


def _n_diverged(g) -> int:
    s = g["summary"]
    return int(round(s["divergence_rate"] * g["n_found"])) if s else 0


def _by_setting(data) -> dict:
    """{settings: {dist: group}} in grid order."""
    table: dict[tuple, dict] = {}
    for g in data["groups"]:
        table.setdefault(g["settings"], {})[g["dist"]] = g
    return table


def divergence_tally(data, baseline: str = "constant") -> dict:
    """Per heterogeneous law, over the setting combinations where both have runs:
    ``{dist: {'fewer': n, 'same': n, 'more': n, 'baseline_unstable': n, 'fewer_where_unstable': n,
    'diverged': runs, 'runs': runs}}`` comparing its diverged seeds with the baseline's.
    ``baseline_unstable`` counts the combinations where the baseline diverged in at least one
    seed; ``fewer_where_unstable`` those of them where the law diverged in fewer seeds."""
    out: dict[str, dict] = {}
    for combo in _by_setting(data).values():
        b = combo.get(baseline)
        if b is None or not b["n_found"]:
            continue
        nb = _n_diverged(b) / b["n_found"]
        for dist, g in combo.items():
            if dist == baseline or not g["n_found"]:
                continue
            t = out.setdefault(dist, {"fewer": 0, "same": 0, "more": 0, "baseline_unstable": 0,
                                      "fewer_where_unstable": 0, "diverged": 0, "runs": 0})
            nd = _n_diverged(g) / g["n_found"]
            t["fewer" if nd < nb else "more" if nd > nb else "same"] += 1
            t["diverged"] += _n_diverged(g)
            t["runs"] += g["n_found"]
            if nb > 0:
                t["baseline_unstable"] += 1
                t["fewer_where_unstable"] += nd < nb
    return out


def _side_by_side(data) -> list[str]:
    keys = data["keys"]
    dists = list(dict.fromkeys(g["dist"] for g in data["groups"]))
    if not keys or "constant" not in dists or len(dists) < 2:
        return []
    lines = ["## Side by side", "",
             "Each entry: mean final accuracy (%), diverged seeds / runs (of which 'coll.' learned and then "
             "collapsed to chance, 'never' never reached twice chance), and the largest single-epoch drop of any "
             "seed (points). Bold: at least one seed diverged.", "",
             "| " + " | ".join([*keys, *dists]) + " |", "|" + "---|" * (len(keys) + len(dists))]
    for combo, row in _by_setting(data).items():
        cells = []
        for d in dists:
            g = row.get(d)
            if g is None or not g["n_found"]:
                cells.append("")
                continue
            s = g["summary"]
            acc = "n/a" if math.isnan(s["final_accuracy_mean"]) else f"{100 * s['final_accuracy_mean']:.1f}"
            drop = "" if math.isnan(s["largest_drop_max"]) else f", drop {100 * s['largest_drop_max']:.1f}"
            div = f"{_n_diverged(g)}/{g['n_found']}"
            n_coll = int(round(s["collapsed_mean"] * g["n_found"])) if not math.isnan(s["collapsed_mean"]) else 0
            n_never = int(round(s["never_learned_mean"] * g["n_found"])) if not math.isnan(s["never_learned_mean"]) else 0
            kinds = [f"{n_coll} coll."] * bool(n_coll) + [f"{n_never} never"] * bool(n_never)
            div += (": " + " ".join(kinds)) if kinds else ""
            cells.append(f"**{acc} ({div}{drop})**" if _n_diverged(g) else f"{acc} ({div}{drop})")
        lines.append("| " + " | ".join([*combo, *cells]) + " |")
    tally = divergence_tally(data)
    n_combos = len(_by_setting(data))
    base_runs = sum(g["n_found"] for g in data["groups"] if g["dist"] == "constant")
    base_div = sum(_n_diverged(g) for g in data["groups"] if g["dist"] == "constant")
    lines += ["", f"Tally over {n_combos} setting combinations (constant: {base_div}/{base_runs} runs diverged):", ""]
    for d, t in tally.items():
        lines.append(f"- {d}: {t['diverged']}/{t['runs']} runs diverged; fewer diverged seeds than constant in "
                     f"{t['fewer']}, as many in {t['same']}, more in {t['more']} combinations; where constant "
                     f"diverged at all ({t['baseline_unstable']} combinations) fewer in {t['fewer_where_unstable']}.")
    return lines + [""]


def _comparison_lines(rows, keys) -> list[str]:
    """The law-vs-constant section of report.md (:func:`neuro_hts.stats.law_comparisons`)."""
    if not rows:
        return []
    n_unres = sum(r["verdict"] == "unresolved" for r in rows)

    def pts(v):
        return "n/a" if math.isnan(v) else f"{100 * v:+.2f}"

    lines = ["## Each law against constant", "",
             f"Final accuracy, law minus constant, in points: difference of the seed means, seed spread (the larger "
             f"std), 95 % bootstrap interval, two-sided permutation p and Holm's adjustment over the {len(rows)} "
             f"comparisons of this report (not across reports: reading several reports together makes more "
             f"comparisons than any one corrects for). Verdict: higher/lower at Holm p < 0.05; 'unresolved' where "
             f"the difference is below the spread and a law has fewer than 20 seeds ({n_unres} such comparisons).",
             "", "| law | " + " | ".join(keys) + (" | " if keys else "") + "seeds | diff | spread | 95 % CI | p | Holm p | verdict |",
             "|" + "---|" * (len(keys) + 8)]
    for r in rows:
        ci = "n/a" if math.isnan(r["ci_low"]) else f"[{pts(r['ci_low'])}, {pts(r['ci_high'])}]"
        p = "n/a" if math.isnan(r["p"]) else f"{r['p']:.3g}"
        ph = "n/a" if math.isnan(r["p_holm"]) else f"{r['p_holm']:.3g}"
        spread = "n/a" if math.isnan(r["spread"]) else f"{100 * r['spread']:.2f}"
        lines.append("| " + " | ".join([r["dist"], *r["settings"], f"{r['n']}/{r['n_baseline']}", pts(r["diff"]),
                                         spread, ci, p, ph, r["verdict"]]) + " |")
    return lines + [""]


def _markdown(data, sweep_dir) -> str:
    keys = data["keys"]
    head = ["dist", *keys, "seeds", "final acc. (%)", "best (%)", "diverged", "volatility (pts)",
            "largest drop (pts)", "spread (pts)", "residual", "not conv."]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in data["groups"]:
        s = g["summary"]
        if not s:
            lines.append("| " + " | ".join([g["dist"], *g["settings"], f"0/{g['n_seeds']}"] + [""] * (len(head) - 3 - len(keys))) + " |")
            continue

        def pct(k, sd=None):
            v = s[k]
            if math.isnan(v):
                return "n/a"
            return f"{100 * v:.2f}" + (f" +- {100 * s[sd]:.2f}" if sd else "")

        lines.append("| " + " | ".join([
            g["dist"], *g["settings"], f"{g['n_found']}/{g['n_seeds']}",
            pct("final_accuracy_mean", "final_accuracy_std"), pct("best_accuracy_mean"),
            f"{int(round(s['divergence_rate'] * g['n_found']))}/{g['n_found']}",
            pct("volatility_mean"), pct("largest_drop_max"), pct("final_accuracy_spread"),
            "n/a" if math.isnan(s["residual_mean_mean"]) else f"{s['residual_mean_mean']:.2e}",
            "n/a" if math.isnan(s["frac_not_converged_mean"]) else f"{s['frac_not_converged_mean']:.3f}",
        ]) + " |")
    unfinished = sum(1 for r in data["runs"] if r.get("status") == "running")
    missing = sum(1 for r in data["runs"] if "status" not in r)
    left_out = ", ".join([f"{unfinished} unfinished"] * bool(unfinished) + [f"{missing} missing"] * bool(missing))
    b = data["base"]
    text = [
        f"# Sweep report: {sweep_dir}",
        "",
        f"Base config: {'-'.join(map(str, b.model.arch))} {b.model.form}/{b.model.activation}/{b.model.output}, "
        f"{b.data.dataset}, {b.train.epochs} epochs, T1={b.train.t1}, T2={b.train.t2}, beta={b.train.beta:g} "
        f"({b.train.nudging}), dt mean {b.dt.mean:g}, std {b.dt.std:g}, clipped to [{b.dt.dt_min:g}, {b.dt.dt_max:g}].",
        f"Runs: {len(data['runs']) - missing - unfinished} of {len(data['runs'])} finished"
        + (f" ({left_out}; left out)" if left_out else "") + ".",
        "",
        "Columns: final/best test accuracy mean +- std over seeds; diverged = runs with non-finite values, a "
        "collapse to chance after learning, or ending at chance; volatility = mean over seeds of the std of "
        "epoch-to-epoch accuracy changes (second half of training); "
        "largest drop = the largest single-epoch accuracy drop of any seed; spread = max - min final accuracy; "
        "residual = mean last-step free-phase residual max|s_t - s_{t-1}| (last epoch); not conv. = fraction "
        "of samples above the residual tolerance. Definitions: neuro_hts/stability.py.",
        "",
        *lines,
        "",
        *_side_by_side(data),
        *_comparison_lines(data["comparisons"], data["keys"]),
        "![Figure 1](fig1_dt_distributions.png)",
        "",
        "![accuracy curves](accuracy_curves.png)",
    ]
    if data["keys"]:
        text += ["", "![stability map](stability_map.png)"]
    if _curve_key(data) is not None:
        text += ["", "![final accuracy against the swept setting](setting_curve.png)"]
    return "\n".join(text) + "\n"


def _style_accuracy_axes(ax, title: str, legend_title: str, legend_size: int) -> None:
    """Title, labels, grid and integer epoch ticks of a test-accuracy-per-epoch panel."""
    from matplotlib.ticker import MaxNLocator

    ax.set_title(title, fontsize=10)
    ax.set_xlabel("epoch", fontsize=9)
    ax.set_ylabel("test accuracy (%)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(labelsize=8)
    if ax.get_lines():
        ax.legend(fontsize=legend_size, loc="lower right", title=legend_title, title_fontsize=legend_size)


def _stack(curves) -> tuple[np.ndarray, np.ndarray]:
    """Epochs 1..E and the (runs, E) matrix of per-epoch values, NaN past a run's last epoch."""
    E = max(c.size for c in curves)
    M = np.full((len(curves), E), np.nan)
    for i, c in enumerate(curves):
        M[i, : c.size] = c
    return np.arange(1, E + 1), M


def _plot_curves(data, path: Path) -> None:
    from .plotting import _figure_class

    Figure, Canvas = _figure_class()
    combos = list(dict.fromkeys(g["settings"] for g in data["groups"]))  # grid order
    n = len(combos)
    ncols = min(3 if n <= 9 else 4, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(5.0 * ncols, 3.6 * nrows + 0.4), layout="constrained")
    Canvas(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    dists = list(dict.fromkeys(g["dist"] for g in data["groups"]))
    colors = {d: f"C{i % 10}" for i, d in enumerate(dists)}
    for k, combo in enumerate(combos):
        ax = axes[k // ncols][k % ncols]
        for g in data["groups"]:
            if g["settings"] != combo:
                continue
            curves = [np.asarray(r["history"]["test_accuracy"], dtype=float) for r in g["runs"] if r["found"]]
            curves = [c for c in curves if c.size]
            if not curves:
                continue
            ep, M = _stack(curves)
            with np.errstate(all="ignore"):
                mean = np.nanmean(M, axis=0)
            ax.plot(ep, 100 * mean, color=colors[g["dist"]], label=f"{g['dist']} ({len(curves)})", linewidth=1.4)
            ax.fill_between(ep, 100 * np.nanmin(M, axis=0), 100 * np.nanmax(M, axis=0), color=colors[g["dist"]],
                            alpha=0.18, linewidth=0)
        title = ", ".join(f"{key.rsplit('.', 1)[-1]}={v}" for key, v in zip(data["keys"], combo)) or "all cells"
        _style_accuracy_axes(ax, title, "dist (seeds)", 7)
    for k in range(n, nrows * ncols):
        axes[k // ncols][k % ncols].set_axis_off()
    fig.suptitle("Test accuracy per epoch: mean over seeds, band = min..max", fontsize=11)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def _plot_stability_map(data, path: Path) -> None:
    from .plotting import _figure_class

    Figure, Canvas = _figure_class()
    keys = data["keys"]
    col_keys = keys[1:2]
    dists = list(dict.fromkeys(g["dist"] for g in data["groups"]))

    def short(key):  # "train.t1" -> "t1"
        return key.rsplit(".", 1)[-1]

    def row_label(settings):
        parts = [settings[0]] + list(settings[2:])
        return ", ".join(f"{short(k)}={v}" for k, v in zip([keys[0], *keys[2:]], parts))

    rows = list(dict.fromkeys(row_label(g["settings"]) for g in data["groups"]))
    cols = list(dict.fromkeys(g["settings"][1] for g in data["groups"])) if col_keys else [""]
    ncols = min(3, len(dists))
    nrows = math.ceil(len(dists) / ncols)
    fig = Figure(figsize=(max(4.5, 1.25 * len(cols) + 2.8) * ncols, (0.5 * len(rows) + 1.6) * nrows + 0.5),
                 layout="constrained")
    Canvas(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    im = None
    for k, dist in enumerate(dists):
        ax = axes[k // ncols][k % ncols]
        rate = np.full((len(rows), len(cols)), np.nan)
        for g in data["groups"]:
            if g["dist"] != dist or not g["summary"]:
                continue
            i = rows.index(row_label(g["settings"]))
            j = cols.index(g["settings"][1]) if col_keys else 0
            s = g["summary"]
            rate[i, j] = s["divergence_rate"]
            acc, drop = s["final_accuracy_mean"], s["largest_drop_max"]
            txt = ("n/a" if math.isnan(acc) else f"{100 * acc:.1f}") + ("" if math.isnan(drop) else f"\n\u2193{100 * drop:.1f}")
            ax.text(j, i, txt, ha="center", va="center", fontsize=7,
                    color="white" if s["divergence_rate"] > 0.5 else "black")
        im = ax.imshow(rate, vmin=0.0, vmax=1.0, cmap="Reds", aspect="auto")
        ax.set_xticks(range(len(cols)), [str(c) for c in cols], fontsize=8)
        ax.set_yticks(range(len(rows)), rows, fontsize=7)
        ax.set_xlabel(short(col_keys[0]) if col_keys else "", fontsize=9)
        ax.set_title(dist, fontsize=10)
    for k in range(len(dists), nrows * ncols):
        axes[k // ncols][k % ncols].set_axis_off()
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.8, label="divergence rate over seeds")
    fig.suptitle("Stability map: colour = fraction of seeds that diverged; text = mean final accuracy (%)"
                 "\nand, after \u2193, the largest single-epoch accuracy drop of any seed (points)", fontsize=10)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def _curve_key(data) -> int | None:
    """Index of the one swept setting that takes several values (None if not exactly one)."""
    varying = [i for i in range(len(data["keys"])) if len({g["settings"][i] for g in data["groups"]}) > 1]
    return varying[0] if len(varying) == 1 else None


def _plot_setting_curve(data, path: Path) -> None:
    from .plotting import _figure_class

    Figure, Canvas = _figure_class()
    k = _curve_key(data)
    key = data["keys"][k]
    values = list(dict.fromkeys(g["settings"][k] for g in data["groups"]))
    try:
        xs = {v: float(v) for v in values}
        numeric = True
    except ValueError:
        xs = {v: float(i) for i, v in enumerate(values)}
        numeric = False
    # positive values spanning a decade or more (learning rates, beta): a log axis
    logx = numeric and min(xs.values()) > 0 and max(xs.values()) >= 10 * min(xs.values())
    fig = Figure(figsize=(10.0, 3.8), layout="constrained")
    Canvas(fig)
    ax_acc, ax_div = fig.subplots(1, 2)
    dists = list(dict.fromkeys(g["dist"] for g in data["groups"]))
    for i, d in enumerate(dists):
        gs = sorted((g for g in data["groups"] if g["dist"] == d and g["n_found"]), key=lambda g: xs[g["settings"][k]])
        if not gs:
            continue
        x = np.array([xs[g["settings"][k]] for g in gs])
        s = [g["summary"] for g in gs]
        mean = np.array([v["final_accuracy_mean"] for v in s])
        lo = np.array([v["final_accuracy_min"] for v in s])
        hi = np.array([v["final_accuracy_max"] for v in s])
        style = dict(color=f"C{i % 10}", marker="os^vDxP*"[i % 8], linewidth=1.4, markersize=5, label=d,
                     markerfacecolor="none")
        ax_acc.plot(x, 100 * mean, **style)
        ax_acc.fill_between(x, 100 * lo, 100 * hi, color=f"C{i % 10}", alpha=0.15, linewidth=0)
        # dodge the lines a little so that equal rates of several laws stay visible
        shift = (i - (len(dists) - 1) / 2) * 0.012
        dodged = x * 10 ** (shift * np.log10(max(xs.values()) / min(xs.values()))) if logx else \
            x + shift * (max(xs.values()) - min(xs.values()) or 1.0)
        ax_div.plot(dodged, [v["divergence_rate"] for v in s], **style)
    for ax, ylabel in ((ax_acc, "final test accuracy (%)"), (ax_div, "divergence rate over seeds")):
        ax.set_xlabel(key, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        if not numeric:
            ax.set_xticks(list(xs.values()), values)
        elif logx:
            ax.set_xscale("log")
            ax.set_xticks(list(xs.values()), values)
            ax.minorticks_off()
    ax_div.set_ylim(-0.05, 1.05)
    ax_acc.legend(fontsize=8, title="dist", title_fontsize=8)
    ax_acc.set_title("final accuracy: mean over seeds, band = min..max", fontsize=10)
    ax_div.set_title("fraction of seeds that diverged (lines dodged sideways)", fontsize=10)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def write_report(sweep_dir, out_dir) -> dict:
    """Write the tables and figures of the module docstring; returns the collected data."""
    from .plotting import plot_dt_distributions

    sweep_dir, out_dir = Path(sweep_dir), Path(out_dir)
    data = collect(sweep_dir)
    if not any(r["found"] for r in data["runs"]):
        raise ConfigError(f"{sweep_dir}: no finished runs yet (run neuro-hts sweep first)")
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = data["keys"]
    cols = _summary_columns()
    rows = []
    for g in data["groups"]:
        s = g["summary"]
        rows.append([g["dist"], *g["settings"], g["n_seeds"], g["n_found"], *[_num(s.get(c)) for c in cols]])
    _write_text(out_dir / "summary.csv", _csv_text(["dist", *keys, "n_seeds", "n_runs_found", *cols], rows))
    run_rows = []
    for r in data["runs"]:
        m = r.get("metrics", {})
        run_rows.append([r["name"], r["dist"], *r["settings"], r["seed"], r.get("status", "missing"),
                         r.get("epochs", 0), *[_num(m.get(k)) for k in RUN_METRICS]])
    _write_text(out_dir / "runs.csv",
                _csv_text(["name", "dist", *keys, "seed", "status", "epochs", *RUN_METRICS], run_rows))
    b = data["base"].dt
    plot_dt_distributions(out_dir / "fig1_dt_distributions.png", mu=b.mean, sigma=b.std, dt_min=b.dt_min,
                          dt_max=b.dt_max)
    _plot_curves(data, out_dir / "accuracy_curves.png")
    if keys:
        _plot_stability_map(data, out_dir / "stability_map.png")
    if _curve_key(data) is not None:
        _plot_setting_curve(data, out_dir / "setting_curve.png")
    from .stats import COMPARISON_COLUMNS, law_comparisons

    data["comparisons"] = law_comparisons(data)  # empty without constant and another law
    if data["comparisons"]:
        _write_text(out_dir / "comparisons.csv", _csv_text(
            ["dist", *keys, *COMPARISON_COLUMNS[1:], "left_out"],
            [[r["dist"], *r["settings"], *[r[c] if isinstance(r[c], str) else _num(r[c]) for c in COMPARISON_COLUMNS[1:]],
              r["left_out"]] for r in data["comparisons"]]))
    _write_text(out_dir / "report.md", _markdown(data, sweep_dir))
    logger.info("report of %s written to %s", sweep_dir, out_dir)
    return data


# --------------------------------------------------------------------------- several sweeps
def write_comparison(sweeps: dict, out_dir) -> list[dict]:
    """Side by side: several sweeps (e.g. one per algorithm) with the same dt laws and seeds.

    ``sweeps``: label -> sweep directory, or ``(sweep directory, {key: value})`` to take
    only the setting combination ``{key: value}`` of that sweep (e.g. one variant of a grid
    that crosses ``local.beta`` and ``distill.alpha``; its settings are then not repeated
    in the rows and panels). Writes ``comparison.csv`` (one row per label and
    dt law: seeds found, final / best accuracy mean, std, min, max, volatility, largest
    drop, divergence rate, mean free-phase steps and epoch seconds of the last epoch),
    ``comparison.md`` (the same as a table) and ``comparison.png`` (test accuracy per
    epoch, one panel per dt law, one line per label: mean over seeds, band = min..max).
    Unfinished and missing runs are left out and counted. Returns the rows.
    """
    from .plotting import _figure_class

    out_dir = Path(out_dir)
    if not sweeps:
        raise ConfigError("write_comparison needs at least one sweep")
    rows, curves, collected = [], {}, {}
    for label, spec in sweeps.items():
        sweep_dir, pick = spec if isinstance(spec, tuple) else (spec, None)
        if str(sweep_dir) not in collected:
            collected[str(sweep_dir)] = collect(sweep_dir)
        data = collected[str(sweep_dir)]
        if pick is not None:
            unknown = set(pick) - set(data["keys"])
            if unknown:
                raise ConfigError(f"{sweep_dir} sweeps no {', '.join(sorted(unknown))} (its settings: "
                                  f"{', '.join(data['keys']) or 'none'})")
        for g in data["groups"]:
            if pick is not None:
                have = dict(zip(data["keys"], g["settings"]))
                if any(have[k] != _fmt(v) for k, v in pick.items()):
                    continue
                g = {**g, "settings": tuple(v for k, v in zip(data["keys"], g["settings"]) if k not in pick)}
            found = [r for r in g["runs"] if r["found"]]
            s = g["summary"]
            last = lambda key: [r["history"][key][-1] for r in found if r["history"].get(key)]  # noqa: E731
            rows.append({
                "label": label, "dist": g["dist"], "settings": ", ".join(g["settings"]), "n_seeds": g["n_seeds"],
                "n_found": len(found),
                **{f"{m}_{k}": s.get(f"{m}_{k}", float("nan")) for m in ("final_accuracy", "best_accuracy")
                   for k in ("mean", "std", "min", "max")},
                "volatility_mean": s.get("volatility_mean", float("nan")),
                "largest_drop_max": s.get("largest_drop_max", float("nan")),
                "divergence_rate": s.get("divergence_rate", float("nan")),
                "free_steps_last": float(np.mean(last("free_steps_mean"))) if last("free_steps_mean") else float("nan"),
                "epoch_seconds_last": float(np.mean(last("epoch_seconds"))) if last("epoch_seconds") else float("nan"),
            })
            curves[(label, g["dist"], g["settings"])] = [np.asarray(r["history"]["test_accuracy"], float) for r in found]
    if not any(r["n_found"] for r in rows):
        raise ConfigError("no finished runs in any of the sweeps yet")
    out_dir.mkdir(parents=True, exist_ok=True)
    cols = list(rows[0])
    _write_text(out_dir / "comparison.csv", _csv_text(cols, [[r[c] if isinstance(r[c], str) else _num(r[c])
                                                               for c in cols] for r in rows]))
    pct = lambda v: "" if v != v else f"{100 * v:.2f}"  # noqa: E731
    md = ["| algorithm | dt law | runs | final accuracy (%) mean +- std | min - max | best (%) | volatility (pts) "
          "| largest drop (pts) | diverged | free steps | s / epoch |", "|" + "---|" * 11]
    for r in rows:
        md.append(f"| {r['label']} | {r['dist']}{' (' + r['settings'] + ')' if r['settings'] else ''} "
                  f"| {r['n_found']}/{r['n_seeds']} | {pct(r['final_accuracy_mean'])} +- {pct(r['final_accuracy_std'])} "
                  f"| {pct(r['final_accuracy_min'])} - {pct(r['final_accuracy_max'])} | {pct(r['best_accuracy_mean'])} "
                  f"| {pct(r['volatility_mean'])} | {pct(r['largest_drop_max'])} | {_num(r['divergence_rate'])} "
                  f"| {_num(r['free_steps_last'])} | {_num(r['epoch_seconds_last'])} |")
    _write_text(out_dir / "comparison.md", "\n".join(md) + "\n")

    Figure, Canvas = _figure_class()
    panels = list(dict.fromkeys((d, st) for (_, d, st) in curves))
    fig = Figure(figsize=(5.6 * len(panels), 4.0), layout="constrained")
    Canvas(fig)
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    labels = list(sweeps)
    for ax, (dist, st) in zip(axes, panels):
        for i, label in enumerate(labels):
            cs = [c for c in curves.get((label, dist, st), []) if c.size]
            if not cs:
                continue
            ep, M = _stack(cs)
            ax.plot(ep, 100 * np.nanmean(M, axis=0), color=f"C{i}", marker="o", markersize=3, linewidth=1.4,
                    label=f"{label} ({len(cs)})")
            ax.fill_between(ep, 100 * np.nanmin(M, axis=0), 100 * np.nanmax(M, axis=0), color=f"C{i}", alpha=0.18,
                            linewidth=0)
        _style_accuracy_axes(ax, f"dt law: {dist}" + (f" ({', '.join(st)})" if st else ""), "algorithm (seeds)", 8)
    fig.suptitle("Test accuracy per epoch: mean over seeds, band = min..max", fontsize=11)
    with atomic_path(out_dir / "comparison.png", suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    logger.info("comparison of %s written to %s", ", ".join(map(str, sweeps.values())), out_dir)
    return rows
