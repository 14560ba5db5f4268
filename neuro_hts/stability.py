"""Training-stability metrics of a run (per run) and of a group of seeds (across runs).

docs/MODEL.md's claim is that heterogeneous time steps make EP training more stable; the paper
gives no metric, so neuro-hts records these, each one function (all computed from a run's
per-epoch history and status, so they can be recomputed from any run file):

Per run (:func:`run_metrics`):

* ``diverged`` (0/1): the run stopped on non-finite values (status ``diverged``), OR its
  test accuracy collapsed to chance: after having reached ``2 * chance`` it later fell to
  ``<= chance + COLLAPSE_MARGIN`` (:func:`collapsed`), OR it ENDED at chance (final
  accuracy ``<= chance + COLLAPSE_MARGIN``: the network died before the first evaluation,
  e.g. all hidden units saturated, and never recovered);
* ``collapsed`` (0/1): the collapse part of ``diverged`` alone (:func:`collapsed`): the
  run learned, then fell back to chance;
* ``never_learned`` (0/1): test accuracy never reached ``2 * chance`` (:func:`never_learned`);
  such a run counts as diverged through "ended at chance". The two tell a network that
  learned and was destroyed from one that never got going;
* ``final_accuracy``: test accuracy after the last completed epoch (NaN if none);
* ``best_accuracy``: the highest per-epoch test accuracy;
* ``volatility``: standard deviation (ddof 0) of the epoch-to-epoch changes of test
  accuracy over the SECOND HALF of training (the last ``n // 2`` of the ``n`` changes when
  ``n >= 4``, else all of them), so that the climb of the first epochs does not count as
  volatility (NaN with fewer than 2 epochs);
* ``largest_drop``: the largest decrease of test accuracy between consecutive epochs (0
  when it never decreases; NaN with fewer than 2 epochs);
* ``residual_mean`` and ``frac_not_converged``: of the LAST epoch's free phases: mean
  over samples of ``max_i |s_t - s_{t-1}|`` at the last free step, and the fraction of
  samples above the run's ``residual_tol``.

Across seeds (:func:`seed_summary`): mean, std (ddof 1; 0 for one seed), min and max of
each metric, ``final_accuracy_spread`` (max - min of final accuracy) and
``divergence_rate`` (fraction of seeds that diverged).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "COLLAPSE_MARGIN",
    "RUN_METRICS",
    "collapsed",
    "ended_at_chance",
    "largest_drop",
    "never_learned",
    "run_metrics",
    "seed_summary",
    "volatility",
]

#: accuracy within this of chance counts as "fallen to chance"
COLLAPSE_MARGIN = 0.02

#: names returned by :func:`run_metrics`, in order
RUN_METRICS = (
    "diverged",
    "collapsed",
    "never_learned",
    "final_accuracy",
    "best_accuracy",
    "volatility",
    "largest_drop",
    "residual_mean",
    "frac_not_converged",
)


def _acc(history) -> np.ndarray:
    return np.asarray(history.get("test_accuracy", []), dtype=np.float64)


def collapsed(test_accuracy, n_classes: int) -> bool:
    """True when accuracy reached ``2 * chance`` and later fell to ``<= chance + COLLAPSE_MARGIN``."""
    a = np.asarray(test_accuracy, dtype=np.float64)
    chance = 1.0 / n_classes
    learned = np.flatnonzero(a >= 2 * chance)
    if learned.size == 0:
        return False
    after = a[learned[0] + 1:]
    return bool(np.any(~np.isfinite(after)) or np.any(after <= chance + COLLAPSE_MARGIN))


def ended_at_chance(test_accuracy, n_classes: int) -> bool:
    """True when the last test accuracy is ``<= chance + COLLAPSE_MARGIN`` (or not finite)."""
    a = np.asarray(test_accuracy, dtype=np.float64)
    if a.size == 0:
        return False
    return bool(not np.isfinite(a[-1]) or a[-1] <= 1.0 / n_classes + COLLAPSE_MARGIN)


def never_learned(test_accuracy, n_classes: int) -> bool:
    """True when test accuracy was evaluated and never reached ``2 * chance``."""
    a = np.asarray(test_accuracy, dtype=np.float64)
    return bool(a.size and not np.any(a >= 2.0 / n_classes))


def volatility(test_accuracy) -> float:
    """Std (ddof 0) of the epoch-to-epoch changes in the second half of training; NaN with < 2 epochs."""
    a = np.asarray(test_accuracy, dtype=np.float64)
    if a.size < 2:
        return math.nan
    d = np.diff(a)
    if d.size >= 4:
        d = d[d.size - d.size // 2:]
    return float(np.std(d))


def largest_drop(test_accuracy) -> float:
    """max over t of ``a[t-1] - a[t]``, at least 0; NaN with < 2 epochs."""
    a = np.asarray(test_accuracy, dtype=np.float64)
    if a.size < 2:
        return math.nan
    return float(max(0.0, np.max(a[:-1] - a[1:])))


def run_metrics(history, status: str, n_classes: int) -> dict[str, float]:
    """The per-run metrics of the module docstring (floats; ``diverged`` is 0.0 or 1.0)."""
    a = _acc(history)

    def last(key):
        v = history.get(key, [])
        return float(v[-1]) if len(v) else math.nan

    return {
        "diverged": float(status == "diverged" or collapsed(a, n_classes) or ended_at_chance(a, n_classes)),
        "collapsed": float(collapsed(a, n_classes)),
        "never_learned": float(never_learned(a, n_classes)),
        "final_accuracy": float(a[-1]) if a.size else math.nan,
        "best_accuracy": float(np.max(a)) if a.size else math.nan,
        "volatility": volatility(a),
        "largest_drop": largest_drop(a),
        "residual_mean": last("free_residual_mean"),
        "frac_not_converged": last("frac_not_converged"),
    }


def seed_summary(per_seed: list[dict[str, float]]) -> dict[str, float]:
    """Aggregate :func:`run_metrics` dicts of several seeds (see the module docstring).

    NaN values of a metric are left out of its statistics (``nan`` if none is left).
    """
    out: dict[str, float] = {"n_seeds": float(len(per_seed))}
    for name in RUN_METRICS:
        v = np.array([m[name] for m in per_seed], dtype=np.float64)
        v = v[np.isfinite(v)]
        out[f"{name}_mean"] = float(v.mean()) if v.size else math.nan
        out[f"{name}_std"] = float(v.std(ddof=1)) if v.size > 1 else (0.0 if v.size else math.nan)
        out[f"{name}_min"] = float(v.min()) if v.size else math.nan
        out[f"{name}_max"] = float(v.max()) if v.size else math.nan
    fa = np.array([m["final_accuracy"] for m in per_seed], dtype=np.float64)
    fa = fa[np.isfinite(fa)]
    out["final_accuracy_spread"] = float(fa.max() - fa.min()) if fa.size else math.nan
    out["divergence_rate"] = float(np.mean([m["diverged"] for m in per_seed])) if per_seed else math.nan
    return out
