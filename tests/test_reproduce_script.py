"""scripts/reproduce_hts.py: the one command behind RESULTS.md (grids, arguments, errors, a real run)."""

from __future__ import annotations

import csv
import shlex
import shutil
from pathlib import Path

import pytest
from _scripts import load_script

from neuro_hts.cli import build_parser
from neuro_hts.config import load_config
from neuro_hts.archive import read_archive
from neuro_hts.runfile import load_summary
from neuro_hts.sweep import make_grid, parse_seeds, parse_set

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def script():
    mod = load_script("reproduce_hts")
    return mod


def test_dry_run_prints_one_valid_sweep_command_per_grid(script, capsys, tmp_path):
    assert script.main(["--data-root", str(tmp_path), "--dry-run", "--out-root", str(tmp_path / "o")]) == 0
    printed = capsys.readouterr().out.splitlines()
    lines = [ln for ln in printed if ln.startswith("neuro-hts sweep ")]
    assert len(lines) == len(script.GRIDS) == 21
    # each sweep is followed by the archive of its finished cells (no archive yet: no restore)
    assert printed == [x for ln in lines for x in (ln, printed[printed.index(ln) + 1])]
    assert all(printed[i + 1].startswith("neuro-hts archive ") and printed[i + 1].endswith("/cells.json")
               for i in range(0, len(printed), 2))
    n_cells = {}
    for line, name in zip(lines, script.GRIDS):
        argv = shlex.split(line)[1:]
        args = build_parser().parse_args(argv)  # the real CLI accepts it
        assert args.command == "sweep" and args.report == str(tmp_path / "o" / "results" / name)
        assert args.out == str(tmp_path / "o" / "sweeps" / name)
        family = name.startswith("family_") or name in ("stress_adapt", "lr_mnist_placement", "mnist_cnn",
                                                         "fashionmnist_cnn")
        assert ("--data-dir" in line) == (script.GRIDS[name][1] is not None)
        laws = "constant,lognormal,lognormal_min" if name == "lr_mnist_slowest" else (
            "constant,lognormal" if family else "constant,uniform,normal,lognormal,gamma,cauchy")
        assert args.dt_dists == laws
        base = load_config(args.config)
        n_cells[name] = len(make_grid(base, args.dt_dists.split(","), parse_seeds(args.seeds),
                                      [parse_set(s, base) for s in args.set]))
    assert n_cells == {"mnist_784-512-10": 30, "fashionmnist_784-512-10": 30, "stress_mnist": 576,
                       "stress_mnist_dtmean": 90, "stress_mnist_dtmean_sym": 90,
                       "mnist_784-256-256-10": 30, "fashionmnist_784-256-256-10": 30,
                       "family_mnist_ep": 6, "family_mnist_ep_adapt": 6, "family_mnist_chl": 6, "family_mnist_chl_adapt": 6,
                       "stress_adapt": 48, "lr_mnist": 360, "lr_fashionmnist": 360, "lr_mnist_placement": 240,
                       "lr_mnist_slowest": 180, "lr_mnist_settled": 180, "family_hts_digits_cnn": 10,
                       "family_hts_digits_dendritic": 10, "mnist_cnn": 6, "fashionmnist_cnn": 6}
    algos = {name: load_config(shlex.split(line)[shlex.split(line).index("--config") + 1]).train.algorithm
             for line, name in zip(lines, script.GRIDS) if name.startswith("family_mnist")}
    assert algos == {"family_mnist_ep": "ep", "family_mnist_ep_adapt": "ep", "family_mnist_chl": "chl",
                     "family_mnist_chl_adapt": "chl"}
    assert "/fashion-mnist" in lines[1] and "train.nudging=symmetric" in lines[4]
    lr_cfg = load_config(shlex.split(lines[12])[shlex.split(lines[12]).index("--config") + 1])
    assert (lr_cfg.train.lr_schedule, lr_cfg.train.t1, lr_cfg.model.arch) == ("constant", 60, (784, 512, 10))
    assert "/fashion-mnist" in lines[13] and "model.nudge=inside,outside" in lines[14]


def test_only_and_overrides(script, capsys, tmp_path):
    code = script.main(["--data-root", str(tmp_path), "--dry-run", "--only", "stress_mnist_dtmean",
                        "--seeds", "0", "--epochs", "1", "--n-train", "100", "--workers", "2"])
    assert code == 0
    line, archive = capsys.readouterr().out.splitlines()
    assert archive == "neuro-hts archive runs/smoke/sweeps/stress_mnist_dtmean runs/smoke/results/stress_mnist_dtmean/cells.json"
    args = build_parser().parse_args(shlex.split(line)[1:])
    assert (args.seeds, args.epochs, args.n_train, args.n_test, args.workers) == ("0", 1, 100, None, 2)
    assert args.set == ["dt.mean=0.1,0.2,0.3,0.4,0.5"]


def test_bad_input_is_one_line_exit_2(script, capsys, tmp_path):
    assert script.main(["--data-root", str(tmp_path), "--only", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown grid(s) nope" in err
    assert script.main(["--data-root", str(tmp_path / "absent"), "--only", "mnist_784-512-10"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no mnist/" in err


def test_a_real_run_writes_sweeps_and_reports_and_resumes(script, capsys, tmp_path, monkeypatch):
    # a digits grid (embedded data; data_dir is ignored for digits) stands in for MNIST
    monkeypatch.setattr(script, "GRIDS", {"tiny": ("models/digits.toml", "mnist", "0", ("train.t1=10,20",),
                                                   "constant,lognormal")})
    (tmp_path / "data" / "mnist").mkdir(parents=True)
    argv = ["--data-root", str(tmp_path / "data"), "--out-root", str(tmp_path), "--epochs", "1",
            "--n-train", "100", "--n-test", "50", "--no-progress"]
    assert script.main(argv) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "== tiny" and "4 cells in" in out and "4 complete" in out
    rows = list(csv.DictReader(open(tmp_path / "results" / "tiny" / "summary.csv")))
    assert [(r["dist"], r["train.t1"], r["n_runs_found"]) for r in rows] == [
        ("constant", "10", "1"), ("constant", "20", "1"), ("lognormal", "10", "1"), ("lognormal", "20", "1")]
    assert (tmp_path / "results" / "tiny" / "setting_curve.png").exists()
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "sweeps" / "tiny").glob("*.h5")}
    assert script.main(argv) == 0  # a second call skips every finished cell
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    # a new machine: no sweeps/, only the committed results/ with its archive
    archived = read_archive(tmp_path / "results" / "tiny" / "cells.json")[1]
    assert sorted(archived) == sorted(p.stem for p in mtimes)
    accuracies = {p.stem: load_summary(p).history["test_accuracy"] for p in mtimes}
    shutil.rmtree(tmp_path / "sweeps")
    capsys.readouterr()
    assert script.main(argv) == 0
    out = capsys.readouterr().out
    assert "4 cells restored" in out and "4 cells in" in out and "0 cells added, 0 updated, 4 already archived" in out
    restored = {p.stem: load_summary(p) for p in (tmp_path / "sweeps" / "tiny").glob("*.h5")}
    assert all(s.metrics_only for s in restored.values())  # nothing was retrained
    assert {k: s.history["test_accuracy"] for k, s in restored.items()} == accuracies
    rows2 = list(csv.DictReader(open(tmp_path / "results" / "tiny" / "summary.csv")))
    assert [r["final_accuracy_mean"] for r in rows2] == [r["final_accuracy_mean"] for r in rows]
