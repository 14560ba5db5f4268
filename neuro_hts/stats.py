"""Is a dt law's final accuracy different from the constant baseline's? Seeds, intervals, p-values.

For every setting combination of a sweep and every heterogeneous law, the final test
accuracies of its seeds (a) are compared with the baseline's seeds (b, ``constant``):

* ``diff`` = mean(a) - mean(b); ``spread`` = the larger of the two seed standard
  deviations (ddof 1);
* a 95 % bootstrap confidence interval of ``diff`` (percentile method, the two samples
  resampled independently, :func:`scipy.stats.bootstrap`);
* a two-sided permutation p-value of ``diff`` (:func:`scipy.stats.permutation_test`,
  independent samples; exact when the number of distinct relabellings is at most
  ``n_resamples``, e.g. 5 + 5 seeds: 252, otherwise Monte Carlo);
* ``p_holm``: Holm's step-down adjustment over all comparisons of one call (one report):
  it controls the family-wise error rate within the report, not across reports — a reader
  comparing several reports makes more comparisons than any one of them corrects for.

Verdict: ``higher`` / ``lower`` where ``p_holm < alpha``; otherwise ``unresolved`` while
the laws differ by less than their seed spread and either has fewer than ``max_seeds``
seeds (more seeds may decide it: issue 16 asks for up to 20), else ``no detected
difference``. Runs without a finite final accuracy (never evaluated) are left out and
counted.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as _st

__all__ = ["holm", "compare_samples", "law_comparisons", "COMPARISON_COLUMNS"]

COMPARISON_COLUMNS = ("dist", "baseline", "n", "n_baseline", "mean", "mean_baseline", "diff", "spread", "ci_low",
                      "ci_high", "p", "p_holm", "verdict")


def holm(p) -> np.ndarray:
    """Holm's step-down adjusted p-values: with p sorted ascending, p_(i) -> max_{j <= i}
    min(1, (m - j + 1) p_(j)) (1-based), mapped back to the input order; NaN stays NaN and
    is not counted in m."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for i, idx in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[idx]))
        out[idx] = running
    return out


def _mean_diff(a, b, axis=-1):
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def compare_samples(a, b, *, n_resamples: int = 9999, confidence: float = 0.95, seed: int = 0) -> dict:
    """diff, spread, bootstrap CI and permutation p of mean(a) - mean(b) (NaN where a sample has < 2 values)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    out = {"n": int(a.size), "n_baseline": int(b.size),
           "mean": float(a.mean()) if a.size else math.nan, "mean_baseline": float(b.mean()) if b.size else math.nan}
    out["diff"] = out["mean"] - out["mean_baseline"]
    if a.size < 2 or b.size < 2:
        return {**out, "spread": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan}
    out["spread"] = float(max(a.std(ddof=1), b.std(ddof=1)))
    if np.all(a == a[0]) and np.all(b == b[0]):  # no variation: every resample gives diff
        return {**out, "ci_low": out["diff"], "ci_high": out["diff"], "p": 1.0 if out["diff"] == 0 else 0.0}
    rng = np.random.default_rng(seed)
    perm = _st.permutation_test((a, b), _mean_diff, permutation_type="independent", vectorized=True,
                                n_resamples=n_resamples, alternative="two-sided", rng=rng)
    boot = _st.bootstrap((a, b), _mean_diff, vectorized=True, paired=False, n_resamples=n_resamples,
                         confidence_level=confidence, method="percentile", rng=rng)
    return {**out, "ci_low": float(boot.confidence_interval.low), "ci_high": float(boot.confidence_interval.high),
            "p": float(perm.pvalue)}


def law_comparisons(data, baseline: str = "constant", *, alpha: float = 0.05, max_seeds: int = 20,
                    n_resamples: int = 9999, seed: int = 0) -> list[dict]:
    """One row per (setting combination, law != baseline) of a collected sweep
    (:func:`neuro_hts.report.collect`): the keys of :data:`COMPARISON_COLUMNS` plus
    ``settings`` (a tuple) and ``left_out`` (runs without a finite final accuracy)."""
    by_setting: dict[tuple, dict] = {}
    for g in data["groups"]:
        by_setting.setdefault(g["settings"], {})[g["dist"]] = g

    def finals(g):
        v = [r["metrics"]["final_accuracy"] for r in g["runs"] if r["found"]]
        fin = [x for x in v if math.isfinite(x)]
        return fin, len(v) - len(fin)

    rows = []
    for settings, combo in by_setting.items():
        if baseline not in combo:
            continue
        b, b_out = finals(combo[baseline])
        for dist, g in combo.items():
            if dist == baseline:
                continue
            a, a_out = finals(g)
            res = compare_samples(a, b, n_resamples=n_resamples, seed=seed)
            rows.append({"dist": dist, "baseline": baseline, "settings": settings, "left_out": a_out + b_out, **res})
    for row, ph in zip(rows, holm([r["p"] for r in rows])):
        row["p_holm"] = float(ph)
        if ph < alpha:
            row["verdict"] = "higher" if row["diff"] > 0 else "lower"
        elif (math.isnan(row["spread"]) or abs(row["diff"]) < row["spread"]) and min(row["n"], row["n_baseline"]) < max_seeds:
            row["verdict"] = "unresolved"
        else:
            row["verdict"] = "no detected difference"
    return rows
