"""CLI of the EP family: `neuro-hts list`, the algorithm flags of train and sweep --set."""

from __future__ import annotations

import numpy as np
import pytest

from neuro_hts.algorithms import ALGORITHMS
from neuro_hts.config import load_config
from neuro_hts.runfile import load_run
from neuro_hts.sweep import make_grid, parse_set

SMALL = ["--dataset", "digits", "--arch", "64-24-10", "--epochs", "1", "--n-train", "200", "--n-test", "100",
         "--batch-size", "25"]


def test_list_prints_every_registry(run_cli):
    code, out, err = run_cli(["list"])
    assert code == 0, err
    lines = out.splitlines()
    for header in ("connection kinds:", "costs:", "algorithms:", "engines:", "dt laws:", "hardware targets:", "backends:"):
        assert header in lines, header
    i = lines.index("algorithms:")
    assert [ln.split()[0] for ln in lines[i + 1 : i + 1 + len(ALGORITHMS)]] == list(ALGORITHMS.names())
    assert any(ln.strip().startswith("loihi2 ") for ln in lines)
    assert any(ln.strip().startswith("lognormal ") for ln in lines)


def test_train_chl_with_adaptation_records_every_flag(tmp_path, run_cli):
    out = tmp_path / "chl.h5"
    code, stdout, err = run_cli(["train", *SMALL, "--algorithm", "chl", "--t1", "40", "--t2", "30", "--clamp-delay", "5",
                                 "--chl-gamma", "0.8", "--adapt-steps", "4", "--adapt-coe", "0.2", "--optimizer", "adam",
                                 "--lr", "0.01", "--out", str(out)])
    assert code == 0, err
    cfg = load_run(out).config
    assert (cfg.train.algorithm, cfg.train.t1, cfg.train.t2) == ("chl", 40, 30)
    assert (cfg.chl.gamma, cfg.chl.clamp_delay, cfg.adapt.steps, cfg.adapt.coe) == (0.8, 5, 4, 0.2)
    acc = float(stdout.split("test accuracy ")[1].split()[0])
    assert acc > 0.3  # 8 batches of digits (chance 0.1; measured 0.54)


def test_bad_algorithm_settings_are_one_line_errors(tmp_path, run_cli):
    out = tmp_path / "x.h5"
    cases = [
        (["--algorithm", "chl", "--t2", "10", "--clamp-delay", "10"], "clamp_delay must be an integer in [0, t2 = 10)"),
        (["--adapt-coe", "1.5"], "[adapt] coe must be a number in [0, 1]"),
        (["--adapt-steps", "-1"], "[adapt] steps must be a non-negative integer"),
        (["--algorithm", "chl", "--output", "ce", "--arch", "64-24-10"], "needs output = 'mse'"),
        (["--t1-tol", "0"], "t1_tol must be a number > 0"),
    ]
    for flags, msg in cases:
        code, stdout, err = run_cli(["train", *SMALL, *flags, "--out", str(out)])
        assert code == 2 and err.count("\n") == 1 and msg in err, (flags, err)
        assert not out.exists()
    code, _, err = run_cli(["train", *SMALL, "--algorithm", "bp", "--out", str(out)])
    assert code == 2 and "invalid choice: 'bp'" in err


def test_sweep_set_takes_the_algorithm_keys(tmp_path):
    base = load_config("models/digits.toml")
    sets = [parse_set("train.algorithm=ep,chl", base), parse_set("adapt.steps=0,20", base),
            parse_set("train.t1_tol=none,1e-3", base)]
    assert sets == [("train.algorithm", ["ep", "chl"]), ("adapt.steps", [0, 20]), ("train.t1_tol", [None, 1e-3])]
    cells = make_grid(base, ["constant"], [0], sets)
    assert len(cells) == 8
    cfgs = [c.config(base) for c in cells]
    assert {(c.train.algorithm, c.adapt.steps, c.train.t1_tol) for c in cfgs} == {
        (a, k, t) for a in ("ep", "chl") for k in (0, 20) for t in (None, 1e-3)}
    assert "adapt.steps=20" in cells[-1].name


@pytest.mark.parametrize("threads", ["1", "0"])
def test_blas_threads_flag(tmp_path, run_cli, threads):
    out = tmp_path / "t.h5"
    assert run_cli(["train", *SMALL, "--blas-threads", threads, "--out", str(out)])[0] == 0
    st = load_run(out)
    assert st.config.train.blas_threads == int(threads) and np.isfinite(st.history["test_accuracy"][0])
