"""neuro_hts.report and `neuro-hts report`: tables and figures of a sweep directory.

The sweep directories here are written directly (manifest + run files with chosen
histories), so every number in the report is known in advance.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from neuro_hts.config import load_config
from neuro_hts.network import init_network
from neuro_hts.report import collect, divergence_tally, write_report
from neuro_hts.runfile import HISTORY_KEYS, RunState, save_run
from neuro_hts.sweep import _write_manifest, make_grid

REPO = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"

# (dist, t1) -> per-seed test-accuracy histories; ("constant", 10) seed 1 collapses
HISTORIES = {
    ("constant", 10): [[0.5, 0.8, 0.85], [0.5, 0.8, 0.09]],
    ("constant", 30): [[0.6, 0.9, 0.92], [0.6, 0.88, 0.90]],
    ("lognormal", 10): [[0.5, 0.82, 0.86], [0.5, 0.8, 0.84]],
    ("lognormal", 30): [[0.6, 0.9, 0.93], [0.6, 0.9, 0.91]],
}


def _sweep_grid():
    base = load_config(REPO / "models" / "digits.toml").replace(model={"arch": [64, 8, 10]}, train={"epochs": 3})
    return base, make_grid(base, ["constant", "lognormal"], [0, 1], [("train.t1", [10, 30])])


def make_sweep(d: Path, skip=(), unfinished=()) -> list:
    base, cells = _sweep_grid()
    _write_manifest(d, base, cells)
    for c in cells:
        if c.name in skip:
            continue
        acc = HISTORIES[(c.dist, c.settings[0][1])][c.seed]
        hist = {k: [0.0] * len(acc) for k in HISTORY_KEYS}
        hist["test_accuracy"] = list(acc)
        hist["free_residual_mean"] = [1e-2, 1e-3, 2e-4 * (1 + c.seed)]
        hist["frac_not_converged"] = [0.5, 0.1, 0.01 * (1 + c.seed)]
        cfg = c.config(base)
        save_run(d / f"{c.name}.h5", RunState(config=cfg, network=init_network(cfg), epochs_completed=len(acc),
                                              history=hist,
                                              status="running" if c.name in unfinished else "complete"))
    return cells


def write_flat_runs(d: Path, base, cells) -> None:
    """A finished one-epoch run file at 50 % accuracy for each cell (for tests about layout, not numbers)."""
    _write_manifest(d, base, cells)
    for c in cells:
        cfg = c.config(base)
        save_run(d / f"{c.name}.h5", RunState(config=cfg, network=init_network(cfg), epochs_completed=1,
                                              history={k: [0.5] for k in HISTORY_KEYS}, status="complete"))


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_report_tables_hold_the_expected_numbers(tmp_path):
    make_sweep(tmp_path / "s")
    write_report(tmp_path / "s", tmp_path / "r")
    rows = {(r["dist"], r["train.t1"]): r for r in _read_csv(tmp_path / "r" / "summary.csv")}
    assert list(rows) == [("constant", "10"), ("constant", "30"), ("lognormal", "10"), ("lognormal", "30")]
    r = rows[("constant", "10")]
    assert r["n_seeds"] == "2" and r["n_runs_found"] == "2"
    assert float(r["final_accuracy_mean"]) == pytest.approx((0.85 + 0.09) / 2)
    assert float(r["final_accuracy_std"]) == pytest.approx(np.std([0.85, 0.09], ddof=1), rel=1e-5)
    assert float(r["divergence_rate"]) == 0.5  # seed 1 fell to chance after learning
    assert float(r["largest_drop_max"]) == pytest.approx(0.71)
    assert float(r["final_accuracy_spread"]) == pytest.approx(0.76)
    assert float(rows[("lognormal", "30")]["divergence_rate"]) == 0.0
    assert float(rows[("lognormal", "30")]["residual_mean_mean"]) == pytest.approx(3e-4)
    assert float(rows[("lognormal", "30")]["frac_not_converged_max"]) == pytest.approx(0.02)
    runs = _read_csv(tmp_path / "r" / "runs.csv")
    assert len(runs) == 8 and {r["status"] for r in runs} == {"complete"}
    collapsed = [r for r in runs if r["dist"] == "constant" and r["train.t1"] == "10" and r["seed"] == "1"]
    assert collapsed[0]["diverged"] == "1" and collapsed[0]["final_accuracy"] == "0.09"

    md = (tmp_path / "r" / "report.md").read_text()
    summary = md.split("\n## ")[0]  # the summary table, before the side-by-side and comparison sections
    table = [ln for ln in summary.splitlines() if ln.startswith("| constant") or ln.startswith("| lognormal")]
    assert len(table) == 4
    assert table[0].startswith("| constant | 10 | 2/2 | 47.00 +- 53.74 | 82.50 | 1/2 |")
    for name in ("fig1_dt_distributions.png", "accuracy_curves.png", "stability_map.png"):
        data = (tmp_path / "r" / name).read_bytes()
        assert data[:8] == PNG and len(data) > 10_000
        assert f"({name})" in md


def test_missing_runs_are_counted_and_left_out(tmp_path):
    cells = make_sweep(tmp_path / "s", skip={"dist=lognormal__seed=1__train.t1=30"})
    assert len(cells) == 8
    data = collect(tmp_path / "s")
    g = [g for g in data["groups"] if g["dist"] == "lognormal" and g["settings"] == ("30",)][0]
    assert g["n_seeds"] == 2 and g["n_found"] == 1
    assert g["summary"]["final_accuracy_mean"] == pytest.approx(0.93)
    write_report(tmp_path / "s", tmp_path / "r")
    md = (tmp_path / "r" / "report.md").read_text()
    assert "Runs: 7 of 8 finished (1 missing; left out)." in md
    assert "| lognormal | 30 | 1/2 | 93.00 +- 0.00 |" in md


def test_unfinished_runs_are_listed_but_left_out_of_the_statistics(tmp_path):
    # a run still training (status "running") would drag the mean towards its early epochs
    make_sweep(tmp_path / "s", skip={"dist=constant__seed=0__train.t1=30"},
               unfinished={"dist=lognormal__seed=1__train.t1=30"})
    data = collect(tmp_path / "s")
    g = [g for g in data["groups"] if g["dist"] == "lognormal" and g["settings"] == ("30",)][0]
    assert g["n_found"] == 1 and g["summary"]["final_accuracy_mean"] == pytest.approx(0.93)
    write_report(tmp_path / "s", tmp_path / "r")
    md = (tmp_path / "r" / "report.md").read_text()
    assert "Runs: 6 of 8 finished (1 unfinished, 1 missing; left out)." in md
    runs = {r["name"]: r for r in _read_csv(tmp_path / "r" / "runs.csv")}
    assert runs["dist=lognormal__seed=1__train.t1=30"]["status"] == "running"
    assert runs["dist=lognormal__seed=1__train.t1=30"]["final_accuracy"] == "0.91"
    assert runs["dist=constant__seed=0__train.t1=30"]["status"] == "missing"
    summary = {(r["dist"], r["train.t1"]): r for r in _read_csv(tmp_path / "r" / "summary.csv")}
    assert summary[("lognormal", "30")]["n_runs_found"] == "1"


def test_a_sweep_with_only_unfinished_runs_is_refused(tmp_path):
    cells = make_sweep(tmp_path / "s", unfinished={c.name for c in _sweep_grid()[1]})
    assert len(cells) == 8
    with pytest.raises(Exception, match="no finished runs yet"):
        write_report(tmp_path / "s", tmp_path / "r")


def test_report_without_swept_settings_has_no_stability_map(tmp_path):
    base = load_config(REPO / "models" / "digits.toml").replace(model={"arch": [64, 8, 10]})
    write_flat_runs(tmp_path / "s", base, make_grid(base, ["constant"], [0]))
    write_report(tmp_path / "s", tmp_path / "r")
    assert not (tmp_path / "r" / "stability_map.png").exists()
    assert (tmp_path / "r" / "accuracy_curves.png").read_bytes()[:8] == PNG


def test_report_cli(run_cli, tmp_path):
    make_sweep(tmp_path / "s")
    code, out, _ = run_cli(["report", str(tmp_path / "s"), "--out", str(tmp_path / "r")])
    assert code == 0
    assert out == f"report of {tmp_path / 's'} (8/8 runs, 4 groups): {tmp_path / 'r' / 'report.md'}\n"


def test_report_bad_input(run_cli, tmp_path):
    code, out, err = run_cli(["report", str(tmp_path), "--out", str(tmp_path / "r")])
    assert code == 2 and out == "" and err.count("\n") == 1 and "not a sweep directory" in err
    base = load_config(REPO / "models" / "digits.toml")
    _write_manifest(tmp_path / "empty", base, make_grid(base, ["constant"], [0]))
    code, out, err = run_cli(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "r")])
    assert code == 2 and err.count("\n") == 1 and "no finished runs yet" in err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "sweep.json").write_text("{not json")
    code, out, err = run_cli(["report", str(tmp_path / "bad"), "--out", str(tmp_path / "r")])
    assert code == 2 and err.count("\n") == 1 and "not a readable sweep manifest" in err


def test_side_by_side_table_and_divergence_tally(tmp_path):
    make_sweep(tmp_path / "s")
    data = collect(tmp_path / "s")
    # constant diverges in 1/2 seeds at t1=10 (seed 1 collapses), lognormal in none
    assert divergence_tally(data) == {"lognormal": {"fewer": 1, "same": 1, "more": 0, "baseline_unstable": 1,
                                                    "fewer_where_unstable": 1, "diverged": 0, "runs": 4}}
    write_report(tmp_path / "s", tmp_path / "r")
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| train.t1 | constant | lognormal |" in md
    assert "| 10 | **47.0 (1/2: 1 coll., drop 71.0)** | 85.0 (0/2, drop 0.0) |" in md
    assert "| 30 | 91.0 (0/2, drop 0.0) | 92.0 (0/2, drop 0.0) |" in md
    assert "- lognormal: 0/4 runs diverged; fewer diverged seeds than constant in 1, as many in 1, more in 0" in md


def test_one_swept_setting_gets_a_setting_curve(tmp_path):
    make_sweep(tmp_path / "s")
    write_report(tmp_path / "s", tmp_path / "r")
    data = (tmp_path / "r" / "setting_curve.png").read_bytes()
    assert data[:8] == PNG and len(data) > 10_000
    assert "(setting_curve.png)" in (tmp_path / "r" / "report.md").read_text()


def test_setting_curve_with_a_fixed_second_setting(tmp_path):
    base = load_config(REPO / "models" / "digits.toml").replace(model={"arch": [64, 8, 10]})
    write_flat_runs(tmp_path / "s", base,
                    make_grid(base, ["constant"], [0], [("train.nudging", ["symmetric"]), ("dt.mean", [0.2, 0.3])]))
    write_report(tmp_path / "s", tmp_path / "r")
    assert (tmp_path / "r" / "setting_curve.png").read_bytes()[:8] == PNG
    # two settings that both vary: no curve
    write_flat_runs(tmp_path / "s3", base,
                    make_grid(base, ["constant"], [0], [("train.t1", [10, 30]), ("dt.mean", [0.2, 0.3])]))
    write_report(tmp_path / "s3", tmp_path / "r3")
    assert not (tmp_path / "r3" / "setting_curve.png").exists()


def test_no_side_by_side_without_a_constant_baseline(tmp_path):
    base = load_config(REPO / "models" / "digits.toml").replace(model={"arch": [64, 8, 10]})
    write_flat_runs(tmp_path / "s", base, make_grid(base, ["uniform", "lognormal"], [0], [("train.t1", [10, 30])]))
    write_report(tmp_path / "s", tmp_path / "r")
    md = (tmp_path / "r" / "report.md").read_text()
    assert "## Side by side" not in md and divergence_tally(collect(tmp_path / "s")) == {}


def _history_sweep(d: Path, algorithm: str, curves: dict) -> None:
    """A sweep of one algorithm whose run files hold the given test-accuracy curves, keyed by (dist, seed)."""
    base = load_config(Path(__file__).resolve().parents[1] / "models" / "digits.toml").replace(
        train={"algorithm": algorithm, "t2": 30})
    cells = make_grid(base, sorted({k[0] for k in curves}), sorted({k[1] for k in curves}))
    _write_manifest(d, base, cells)
    for c in cells:
        cfg = c.config(base)
        acc = curves[(c.dist, c.seed)]
        hist = {k: [0.0] * len(acc) for k in HISTORY_KEYS}
        hist.update(test_accuracy=list(acc), free_steps_mean=[60.0] * len(acc), epoch_seconds=[2.0] * len(acc))
        save_run(d / f"{c.name}.h5", RunState(config=cfg, network=init_network(cfg), epochs_completed=len(acc),
                                              history=hist, status="complete"))


def test_comparison_of_several_sweeps(tmp_path):
    from neuro_hts.report import write_comparison

    _history_sweep(tmp_path / "ep", "ep", {("constant", 0): [0.9, 0.95], ("constant", 1): [0.92, 0.97],
                                           ("lognormal", 0): [0.9, 0.96], ("lognormal", 1): [0.9, 0.94]})
    _history_sweep(tmp_path / "chl", "chl", {("constant", 0): [0.8, 0.9], ("constant", 1): [0.85, 0.8],
                                             ("lognormal", 0): [0.8, 0.91], ("lognormal", 1): [0.82, 0.93]})
    rows = write_comparison({"EP": tmp_path / "ep", "CHL": tmp_path / "chl"}, tmp_path / "out")
    got = {(r["label"], r["dist"]): r for r in rows}
    assert list(got) == [("EP", "constant"), ("EP", "lognormal"), ("CHL", "constant"), ("CHL", "lognormal")]
    assert got[("EP", "constant")]["final_accuracy_mean"] == pytest.approx(0.96)
    assert got[("CHL", "constant")]["final_accuracy_min"] == pytest.approx(0.8)
    assert got[("CHL", "constant")]["largest_drop_max"] == pytest.approx(0.05)
    assert got[("EP", "lognormal")]["free_steps_last"] == 60.0 and got[("EP", "lognormal")]["n_found"] == 2
    md = (tmp_path / "out" / "comparison.md").read_text().splitlines()
    assert len(md) == 2 + 4 and "| EP | constant | 2/2 | 96.00 +- 1.41 | 95.00 - 97.00 |" in md[2]
    assert len(_read_csv(tmp_path / "out" / "comparison.csv")) == 4
    assert (tmp_path / "out" / "comparison.png").stat().st_size > 10_000


def test_collect_orders_each_laws_settings_by_value_whatever_the_manifest_order(tmp_path):
    import json

    from neuro_hts.sweep import MANIFEST

    make_sweep(tmp_path / "s")
    path = tmp_path / "s" / MANIFEST
    m = json.loads(path.read_text())
    m["cells"] = m["cells"][::-1]  # t1 = 30 cells first, as cells added later used to be written
    path.write_text(json.dumps(m))
    groups = collect(tmp_path / "s")["groups"]
    assert [(g["dist"], g["settings"]) for g in groups] == [("lognormal", ("10",)), ("lognormal", ("30",)),
                                                            ("constant", ("10",)), ("constant", ("30",))]


def test_a_manifest_keeps_its_cells_order_when_cells_are_added(tmp_path):
    import json

    from neuro_hts.sweep import MANIFEST, _write_manifest

    base, cells = _sweep_grid()
    _write_manifest(tmp_path, base, cells)
    extra = make_grid(base, ["constant"], [5], [("train.t1", [10])])
    _write_manifest(tmp_path, base, extra)
    names = [c["name"] for c in json.loads((tmp_path / MANIFEST).read_text())["cells"]]
    assert names == [c.name for c in cells] + [extra[0].name]
