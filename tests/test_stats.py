"""neuro_hts.stats: Holm's adjustment, permutation p and bootstrap interval, the verdicts, and the report's table."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from test_report import _sweep_grid, make_sweep

from neuro_hts.report import write_report
from neuro_hts.stats import compare_samples, holm, law_comparisons


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): 4 * 0.005 = 0.02, 3 * 0.01 = 0.03, 2 * 0.03 = 0.06,
    # 1 * 0.04 = 0.04 -> max(0.06, 0.04) = 0.06 (step-down monotone)
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    out = holm([0.5, np.nan, 0.6])  # NaN not counted: m = 2
    np.testing.assert_allclose(out[[0, 2]], [1.0, 1.0])
    assert np.isnan(out[1])
    np.testing.assert_allclose(holm([0.2]), [0.2])


def test_exact_permutation_p_and_bootstrap_interval():
    # 3 + 3 values: C(6, 3) = 20 relabellings; only the observed split and its mirror reach |diff| = 3
    r = compare_samples([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert r["diff"] == pytest.approx(-3.0)
    assert r["p"] == pytest.approx(2 / 20)
    assert r["spread"] == pytest.approx(1.0)
    assert -5.0 <= r["ci_low"] <= -3.0 <= r["ci_high"] <= -1.0
    r1 = compare_samples([0.9], [0.8, 0.7])
    assert r1["diff"] == pytest.approx(0.15) and np.isnan(r1["p"]) and np.isnan(r1["ci_low"])


def _data(samples: dict, settings=("x",)):
    def run(v):
        return {"found": True, "metrics": {"final_accuracy": v}}

    return {"groups": [{"dist": d, "settings": settings, "runs": [run(v) for v in vals]} for d, vals in samples.items()]}


def test_verdicts():
    rng = np.random.default_rng(0)
    base = list(0.90 + 0.002 * rng.standard_normal(6))
    higher = [v + 0.02 for v in base]
    noisy = list(0.90 + 0.01 * rng.standard_normal(6))
    rows = {r["dist"]: r for r in law_comparisons(_data({"constant": base, "lognormal": higher, "gamma": noisy}))}
    assert rows["lognormal"]["verdict"] == "higher" and rows["lognormal"]["p"] == pytest.approx(2 / 924)  # C(12, 6) = 924: exact
    assert rows["lognormal"]["p_holm"] == pytest.approx(2 * 2 / 924)  # smallest of m = 2
    assert rows["gamma"]["verdict"] == "unresolved" and rows["gamma"]["p_holm"] >= 0.05
    # the same undecided comparison with the seed budget reached
    done = law_comparisons(_data({"constant": base, "gamma": noisy}), max_seeds=6)
    assert done[0]["verdict"] == "no detected difference"
    nan_run = law_comparisons(_data({"constant": base, "cauchy": [float("nan")] + higher[1:]}))
    assert nan_run[0]["left_out"] == 1 and nan_run[0]["n"] == 5


def test_the_report_writes_the_comparison_table(tmp_path):
    make_sweep(tmp_path / "s")
    data = write_report(tmp_path / "s", tmp_path / "r")
    with open(tmp_path / "r" / "comparisons.csv", newline="") as f:
        rows = {r["train.t1"]: r for r in csv.DictReader(f)}
    # t1 = 30: lognormal 0.93, 0.91 against constant 0.92, 0.90: +1 point, spread 1.41 points, 2 + 2 seeds
    assert float(rows["30"]["diff"]) == pytest.approx(0.01, rel=1e-5) and float(rows["30"]["spread"]) == pytest.approx(0.02 ** 0.5 / 10, rel=1e-5)
    assert rows["30"]["verdict"] == "unresolved" and rows["10"]["verdict"] == "unresolved"
    assert float(rows["30"]["p"]) == pytest.approx(4 / 6, rel=1e-5)  # of C(4, 2) = 6 relabellings, diffs +-1, +-2, 0, 0 points
    md = (tmp_path / "r" / "report.md").read_text()
    assert "## Each law against constant" in md and "Holm" in md and len(data["comparisons"]) == 2


def test_more_seeds_adds_seeds_only_where_undecided(tmp_path):
    from neuro_hts.resolve import more_seeds

    make_sweep(tmp_path / "s")  # 2 seeds per (law, t1); both comparisons unresolved
    cells = more_seeds(tmp_path / "s", max_seeds=4, step=2)
    assert sorted(c.name for c in cells) == sorted(f"dist={d}__seed={s}__train.t1={t}" for d in ("constant", "lognormal")
                                                   for s in (2, 3) for t in (10, 30))
    assert more_seeds(tmp_path / "s", max_seeds=2) == []  # the budget is reached: nothing to add


def test_more_seeds_where_keeps_only_matching_settings_and_pairs_come_together(tmp_path, run_cli):
    from neuro_hts.resolve import more_seeds, parse_where

    make_sweep(tmp_path / "s")
    cells = more_seeds(tmp_path / "s", max_seeds=4, step=2, where=parse_where(["train.t1=3e1"]))  # 30 as a number
    # only t1 = 30, and each comparison's two sides next to each other (a stop part-way leaves whole pairs)
    assert [c.name for c in cells] == [f"dist={d}__seed={s}__train.t1=30" for d in ("constant", "lognormal")
                                       for s in (2, 3)]
    assert more_seeds(tmp_path / "s", max_seeds=4, where=parse_where(["train.t1=20"])) == []
    code, _, err = run_cli(["resolve-seeds", str(tmp_path / "s"), "--where", "train.lr=0.1", "--dry-run"])
    assert code == 2 and "does not vary" in err and "train.t1" in err
    code, _, err = run_cli(["resolve-seeds", str(tmp_path / "s"), "--where", "train.t1", "--dry-run"])
    assert code == 2 and "KEY=VALUE" in err


def test_more_seeds_lets_the_side_that_is_behind_catch_up_first(tmp_path):
    from neuro_hts.network import init_network
    from neuro_hts.resolve import more_seeds
    from neuro_hts.runfile import HISTORY_KEYS, RunState, save_run
    from neuro_hts.sweep import _write_manifest, make_grid

    base, cells = _sweep_grid()
    make_sweep(tmp_path / "s")  # 2 seeds per side
    extra = make_grid(base, ["constant"], [2, 3], [("train.t1", [30])])
    _write_manifest(tmp_path / "s", base, cells + extra)
    for c in extra:  # constant at t1 = 30 now has 4 finished seeds, lognormal 2
        cfg = c.config(base)
        hist = {k: [0.0] * 3 for k in HISTORY_KEYS}
        hist["test_accuracy"] = [0.6, 0.9, 0.91]
        save_run(tmp_path / "s" / f"{c.name}.h5", RunState(config=cfg, network=init_network(cfg), epochs_completed=3,
                                                           history=hist, status="complete"))
    names = [c.name for c in more_seeds(tmp_path / "s", max_seeds=20, step=1, where={"train.t1": ["30"]})]
    # target max(min(4, 2) + 1, 4) = 4: lognormal gets seeds 2 and 3, constant nothing
    assert names == ["dist=lognormal__seed=2__train.t1=30", "dist=lognormal__seed=3__train.t1=30"]


def test_more_seeds_reruns_cells_a_stopped_round_left_unfinished(tmp_path):
    from neuro_hts.resolve import more_seeds
    from neuro_hts.sweep import _write_manifest

    base, cells = _sweep_grid()
    make_sweep(tmp_path / "s")
    first = more_seeds(tmp_path / "s", max_seeds=4, step=2)
    _write_manifest(tmp_path / "s", base, cells + first)  # the round was planned, then stopped before any cell ran
    again = more_seeds(tmp_path / "s", max_seeds=4, step=2)
    assert sorted(c.name for c in again) == sorted(c.name for c in first)  # the same seeds 2 and 3, not 4 and 5


def test_resolve_seeds_cli_runs_rounds_until_the_budget_and_reports(tmp_path, run_cli):
    make_sweep(tmp_path / "s")
    code, out, err = run_cli(["resolve-seeds", str(tmp_path / "s"), "--max-seeds", "3", "--step", "1", "--dry-run"])
    assert code == 0 and out.strip().endswith("next round: 4 cells in " + str(tmp_path / "s")), err
    assert not (tmp_path / "s" / "dist=constant__seed=2__train.t1=10.h5").exists()
    code, out, err = run_cli(["resolve-seeds", str(tmp_path / "s"), "--max-seeds", "3", "--step", "1",
                              "--report", str(tmp_path / "r")])
    assert code == 0, err
    assert "1 rounds, 4 cells added" in out
    with open(tmp_path / "r" / "comparisons.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {(r["n"], r["n_baseline"]) for r in rows} == {("3", "3")}
    code, out, _ = run_cli(["resolve-seeds", str(tmp_path / "s"), "--max-seeds", "3", "--dry-run"])
    assert code == 0 and "next round: 0 cells" in out  # the budget of 3 seeds is reached
    code, _, err = run_cli(["resolve-seeds", str(tmp_path / "s"), "--step", "0"])
    assert code == 2 and "step >= 1" in err
