"""neuro_hts.stability: hand-computed metrics."""

import math

import numpy as np
import pytest

from neuro_hts.stability import (
    RUN_METRICS,
    collapsed,
    largest_drop,
    run_metrics,
    seed_summary,
    volatility,
)


def test_volatility_and_largest_drop_by_hand():
    a = [0.90, 0.95, 0.93, 0.97]
    # changes +0.05, -0.02, +0.04: mean 0.023333, std (ddof 0) = sqrt(mean of squared deviations)
    d = np.array([0.05, -0.02, 0.04])
    assert volatility(a) == pytest.approx(math.sqrt(np.mean((d - d.mean()) ** 2)), abs=1e-15)
    assert volatility(a) == pytest.approx(0.030912061651652, abs=1e-12)
    assert largest_drop(a) == pytest.approx(0.02, abs=1e-15)
    assert largest_drop([0.1, 0.2, 0.3]) == 0.0
    assert volatility([0.5, 0.5, 0.5]) == 0.0
    # 5 changes (+0.3, +0.2, +0.01, -0.01, +0.01): only the last 2 count -> std of (-0.01, +0.01)
    assert volatility([0.2, 0.5, 0.7, 0.71, 0.70, 0.71]) == pytest.approx(0.01, abs=1e-12)
    assert math.isnan(volatility([0.9])) and math.isnan(largest_drop([]))


@pytest.mark.parametrize("acc, expected", [
    ([0.5, 0.9, 0.11], True),     # learned, then fell to chance (0.1 + 0.02)
    ([0.5, 0.9, 0.13], False),    # low but above chance + margin
    ([0.1, 0.1, 0.1], False),     # never learned: not a collapse (run_metrics: ended at chance)
    ([0.12, 0.3, 0.9], False),    # starts at chance, then learns
    ([0.3, float("nan")], True),  # non-finite after learning
])
def test_collapse_rule(acc, expected):
    assert collapsed(acc, 10) is expected


def test_run_metrics_of_a_history():
    h = {
        "test_accuracy": [0.8, 0.9, 0.85],
        "free_residual_mean": [0.1, 0.01, 0.002],
        "frac_not_converged": [0.5, 0.2, 0.05],
    }
    m = run_metrics(h, "complete", 10)
    assert tuple(m) == RUN_METRICS
    assert m["diverged"] == 0.0
    assert m["final_accuracy"] == 0.85 and m["best_accuracy"] == 0.9
    assert m["largest_drop"] == pytest.approx(0.05)
    assert m["volatility"] == pytest.approx(0.075)  # changes +0.1, -0.05: std 0.075
    assert m["residual_mean"] == 0.002 and m["frac_not_converged"] == 0.05
    assert m["collapsed"] == 0.0 and m["never_learned"] == 0.0
    assert run_metrics(h, "diverged", 10)["diverged"] == 1.0
    # a network that died in its first epoch and never left chance counts as diverged
    dead = run_metrics({"test_accuracy": [0.098, 0.098, 0.1]}, "complete", 10)
    assert dead["diverged"] == 1.0 and dead["never_learned"] == 1.0 and dead["collapsed"] == 0.0
    fell = run_metrics({"test_accuracy": [0.098, 0.87, 0.114]}, "complete", 10)
    assert fell["diverged"] == 1.0 and fell["collapsed"] == 1.0 and fell["never_learned"] == 0.0
    slow = run_metrics({"test_accuracy": [0.098, 0.3, 0.5]}, "complete", 10)
    assert slow["diverged"] == 0.0 and slow["never_learned"] == 0.0
    empty = run_metrics({"test_accuracy": []}, "running", 10)
    assert math.isnan(empty["final_accuracy"]) and math.isnan(empty["residual_mean"]) and empty["diverged"] == 0.0


def test_seed_summary():
    runs = [
        run_metrics({"test_accuracy": [0.9, 0.95]}, "complete", 10),
        run_metrics({"test_accuracy": [0.9, 0.97]}, "complete", 10),
        run_metrics({"test_accuracy": [0.9, 0.05]}, "complete", 10),  # collapsed
    ]
    s = seed_summary(runs)
    assert s["n_seeds"] == 3
    assert s["final_accuracy_mean"] == pytest.approx((0.95 + 0.97 + 0.05) / 3)
    assert s["final_accuracy_std"] == pytest.approx(np.std([0.95, 0.97, 0.05], ddof=1))
    assert s["final_accuracy_spread"] == pytest.approx(0.92)
    assert s["divergence_rate"] == pytest.approx(1 / 3)
    assert s["largest_drop_max"] == pytest.approx(0.85)
    # NaN metrics (one epoch: no volatility) are left out, not propagated
    one = seed_summary([run_metrics({"test_accuracy": [0.9]}, "complete", 10)])
    assert math.isnan(one["volatility_mean"]) and one["final_accuracy_std"] == 0.0
