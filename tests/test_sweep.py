"""neuro_hts.sweep and `neuro-hts sweep`: grid, resumability, local pool and Dask engines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from neuro_hts.config import load_config
from neuro_hts.errors import ConfigError
from neuro_hts.runfile import load_run
from neuro_hts.sweep import (
    Cell,
    cell_state,
    make_grid,
    parse_seeds,
    parse_set,
    run_sweep,
)

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "models" / "digits.toml"
QUICK = ["--epochs", "1", "--n-train", "150", "--n-test", "60"]


@pytest.fixture
def base():
    return load_config(DIGITS).replace(train={"epochs": 1}, data={"n_train": 150, "n_test": 60})


def test_parse_seeds():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0,2,7") == [0, 2, 7]
    assert parse_seeds("3") == [3]
    assert parse_seeds("0-1,5") == [0, 1, 5]
    for bad in ["", "a", "4-2", "1,1", "-1", "0-1,1"]:
        with pytest.raises(ConfigError):
            parse_seeds(bad)


def test_parse_set_types_values_like_the_config(base):
    assert parse_set("train.t1=20,30", base) == ("train.t1", [20, 30])
    assert parse_set("train.beta=0.05,0.5", base) == ("train.beta", [0.05, 0.5])
    assert parse_set("train.nudging=one-sided,symmetric", base) == ("train.nudging", ["one-sided", "symmetric"])
    assert parse_set("dt.resample_each_epoch=true,false", base) == ("dt.resample_each_epoch", [True, False])
    assert parse_set("train.lr=1e-3,5e-4", base) == ("train.lr", [[1e-3], [5e-4]])
    for bad, msg in [("train.t1", "section.key=v1,v2"), ("train.nope=1", "unknown config key"),
                     ("t1=1", "unknown config key"), ("train.t1=1.5", "not a valid int"),
                     ("train.t1=20,20", "distinct"), ("dt.dist=uniform", "--dt-dists"),
                     ("train.seed=1,2", "--seeds")]:
        with pytest.raises(ConfigError, match=msg):
            parse_set(bad, base)


def test_grid_order_names_and_configs(base):
    cells = make_grid(base, ["constant", "gamma"], [0, 1], [("train.t1", [20, 30]), ("train.beta", [0.1])])
    assert len(cells) == 2 * 2 * 2
    assert cells[0].name == "dist=constant__seed=0__train.t1=20__train.beta=0.1"
    assert cells[1].name == "dist=constant__seed=1__train.t1=20__train.beta=0.1"
    assert len({c.name for c in cells}) == len(cells)
    cfg = cells[-1].config(base)
    assert (cfg.dt.dist, cfg.train.seed, cfg.train.t1, cfg.train.beta) == ("gamma", 1, 30, 0.1)
    assert cfg.model == base.model and cfg.train.epochs == 1
    with pytest.raises(ConfigError, match="unknown dt distribution"):
        make_grid(base, ["constant", "weibull"], [0])
    with pytest.raises(ConfigError, match="cell dist=constant__seed=0__train.t1=0"):
        make_grid(base, ["constant"], [0], [("train.t1", [0])])  # t1 >= 1 is checked per cell


def test_local_sweep_runs_skips_and_resumes(base, tmp_path):
    cells = make_grid(base, ["constant", "lognormal"], [0, 1])
    seen = []
    res = run_sweep(base, cells, tmp_path, progress=seen.append)
    assert [r["status"] for r in res] == ["complete"] * 4 and len(seen) == 4
    assert all(r["was"] == "missing" for r in res)
    files = {c.name: tmp_path / f"{c.name}.h5" for c in cells}
    for c in cells:
        st = load_run(files[c.name])
        assert st.config.dt.dist == c.dist and st.config.train.seed == c.seed and st.epochs_completed == 1
    # the heterogeneous cells really have heterogeneous hidden dt, the baseline does not
    assert np.unique(load_run(files["dist=lognormal__seed=0"]).network.dts[0]).size > 100
    assert np.unique(load_run(files["dist=constant__seed=0"]).network.dts[0]).size == 1
    stamps = {n: p.stat().st_mtime_ns for n, p in files.items()}
    # again: everything is skipped, nothing rewritten
    res2 = run_sweep(base, cells, tmp_path)
    assert [r["was"] for r in res2] == ["complete"] * 4
    assert {n: p.stat().st_mtime_ns for n, p in files.items()} == stamps
    # more epochs: every cell resumes from its checkpoint (same first epoch)
    acc1 = {n: load_run(p).history["test_accuracy"][0] for n, p in files.items()}
    more = base.replace(train={"epochs": 2})
    res3 = run_sweep(more, make_grid(more, ["constant", "lognormal"], [0, 1]), tmp_path)
    assert [r["was"] for r in res3] == ["partial"] * 4
    for n, p in files.items():
        st = load_run(p)
        assert st.epochs_completed == 2 and st.history["test_accuracy"][0] == acc1[n]
    manifest = json.loads((tmp_path / "sweep.json").read_text())
    assert manifest["format"] == "neuro-hts-sweep" and len(manifest["cells"]) == 4
    # another base config in the same directory is refused
    other = base.replace(train={"beta": 0.25})
    with pytest.raises(ConfigError, match="another base config"):
        run_sweep(other, make_grid(other, ["constant"], [0]), tmp_path)


def test_cell_state(base, tmp_path):
    assert cell_state(tmp_path / "x.h5", 3) == "missing"
    run_sweep(base, [Cell("constant", 0)], tmp_path)
    p = tmp_path / "dist=constant__seed=0.h5"
    assert cell_state(p, 1) == "complete" and cell_state(p, 2) == "partial"


def test_process_pool_gives_the_same_runs_as_in_process(base, tmp_path):
    cells = make_grid(base, ["uniform"], [0, 1])
    run_sweep(base, cells, tmp_path / "a")
    res = run_sweep(base, cells, tmp_path / "b", workers=2)
    assert sorted(r["status"] for r in res) == ["complete", "complete"]
    for c in cells:
        a, b = (load_run(tmp_path / d / f"{c.name}.h5") for d in ("a", "b"))
        for wa, wb in zip(a.network.weights, b.network.weights):
            assert np.array_equal(wa, wb)


DASK_SCRIPT = r"""
import json, subprocess, sys
from distributed import LocalCluster
if __name__ == "__main__":
    with LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                      processes=True) as cluster:
        addr = cluster.scheduler_address
        r = subprocess.run([sys.executable, "-m", "neuro_hts", "--no-progress", "sweep", "--config", sys.argv[1],
                            "--dt-dists", "constant,gamma", "--seeds", "0", *sys.argv[3:], "--out", sys.argv[2],
                            "--engine", "dask", "--scheduler", addr], capture_output=True, text=True)
        print("RESULT " + json.dumps({"addr": addr, "rc": r.returncode, "out": r.stdout, "err": r.stderr[-2000:]}))
"""


@pytest.mark.timeout(240)
def test_dask_engine_on_a_loopback_local_cluster(tmp_path):
    pytest.importorskip("distributed")
    from neuro_hts.testing import run_script

    out = tmp_path / "sweep"
    r = run_script(tmp_path, DASK_SCRIPT, str(DIGITS), str(out), *QUICK, timeout=220)
    assert r["addr"].startswith("tcp://127.0.0.1:")
    assert r["rc"] == 0, r["err"]
    assert r["out"].strip().splitlines()[-1] == f"2 cells in {out}: 2 complete"
    for dist in ("constant", "gamma"):
        st = load_run(out / f"dist={dist}__seed=0.h5")
        assert st.config.dt.dist == dist and st.status == "complete"


@pytest.mark.parametrize("argv, message", [
    (["--dt-dists", "constant,weibull"], "unknown dt distribution"),
    (["--dt-dists", "constant", "--seeds", "x"], "--seeds must look like"),
    (["--dt-dists", "constant", "--set", "train.t9=1"], "unknown config key"),
    (["--dt-dists", "constant", "--engine", "dask"], "needs --scheduler"),
    (["--dt-dists", "constant", "--scheduler", "tcp://127.0.0.1:1"], "only used with --engine dask"),
    (["--dt-dists", "constant", "--workers", "0"], "workers must be >= 1"),
])
def test_sweep_bad_input_one_line_exit_2(run_cli, tmp_path, argv, message):
    code, out, err = run_cli(["sweep", "--config", str(DIGITS), "--out", str(tmp_path / "s"), *QUICK, *argv])
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err


def test_sweep_cli_prints_a_table(run_cli, tmp_path):
    code, out, _ = run_cli(["sweep", "--config", str(DIGITS), "--dt-dists", "constant", "--seeds", "0-1",
                            "--set", "train.t1=10,20", "--out", str(tmp_path / "s"), *QUICK])
    assert code == 0
    lines = out.splitlines()
    assert lines[-1] == f"4 cells in {tmp_path / 's'}: 4 complete"
    assert lines[0].startswith("dist=constant__seed=0__train.t1=10 ") and "complete" in lines[0]


def test_sweep_cli_report_option_writes_the_report(run_cli, tmp_path):
    code, out, _ = run_cli(["sweep", "--config", str(DIGITS), "--dt-dists", "constant,lognormal", "--seeds", "0",
                            "--out", str(tmp_path / "s"), "--report", str(tmp_path / "r"), *QUICK])
    assert code == 0
    assert out.splitlines()[-1] == f"report: {tmp_path / 'r' / 'report.md'}"
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| constant | 1/1 |" in md and "| lognormal | 1/1 |" in md
    rows = (tmp_path / "r" / "summary.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[1].startswith("constant,1,1,")
