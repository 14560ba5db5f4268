"""scripts/reproduce_continual.py: the plan it runs, its input checks, and the table it writes (digits, tiny)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from _scripts import load_script

from neuro_hts.cli import build_parser

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rc():
    mod = load_script("reproduce_continual")
    return mod


def test_dry_run_plans_every_setting_and_law_with_commands_the_cli_parses(rc, capsys):
    assert rc.main(["--only", "mnist,fashionmnist", "--dry-run", "--bptt", "--data-root", "/d"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 * 2 * (len(rc.SETTINGS) + len(rc.BPTT_SETTINGS))
    parser = build_parser()
    outs = set()
    for line in lines:
        argv = shlex.split(line)[1:]
        a = parser.parse_args(argv)
        assert a.seeds == "0-2" and a.dt_dist in ("constant", "lognormal")
        outs.add(a.out)
    assert len(outs) == len(lines)  # one directory per (dataset, law, setting)
    r5 = [shlex.split(x) for x in lines if x.endswith("/mnist/lognormal/src+rehearsal_5")]
    assert len(r5) == 1 and r5[0][r5[0].index("--rehearsal-fraction") + 1] == "0.05"
    assert "/d/fashion-mnist" in lines[-1] and "--trainer bptt" in lines[-1]


@pytest.mark.parametrize("argv, msg", [
    (["--only", "cifar"], "unknown dataset"),
    (["--only", "digits", "--settings", "src,nope"], "unknown setting"),
    (["--only", "digits", "--laws", "uniformish"], "--laws"),
    (["--only", "mnist"], "need --data-root"),
])
def test_bad_input_is_one_line_and_exit_2(rc, capsys, argv, msg):
    assert rc.main(argv) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1


def test_runs_and_tables_the_digits(rc, tmp_path, capsys):
    argv = ["--only", "digits", "--seeds", "0-1", "--settings", "sequential", "--laws", "constant",
            "--out-root", str(tmp_path)]
    assert rc.main(argv) == 0
    res = json.loads((tmp_path / "results" / "continual_digits.json").read_text())
    row = res["settings"]["sequential"]["constant"]
    summ = json.loads((tmp_path / "runs/continual/digits/constant/sequential/summary.json").read_text())
    assert row["finals"] == summ["final_accuracies"] and len(row["finals"]) == 2 and row["seeds"] == [0, 1]
    md = (tmp_path / "results" / "continual_digits.md").read_text()
    probe = 100 * sum(row["probes"]) / 2
    assert f"| sequential | {100 * row['mean']:.2f} +- {100 * row['std']:.2f} (2; probe {probe:.1f}) |" in md
    assert (tmp_path / "results" / "continual_digits.png").stat().st_size > 1000
    mats = (tmp_path / "results" / "continual_digits_matrices.md").read_text()
    last = [f"{100 * v:.1f}" for v in summ["matrix_mean"][-1]]
    assert "## sequential, dt constant" in mats and f"| T5 | {' | '.join(last)} |" in mats
    assert (tmp_path / "results" / "continual_digits_matrices.png").stat().st_size > 1000
    # a second call finds every protocol finished and only rewrites the table
    mtime = (tmp_path / "runs/continual/digits/constant/sequential/seed_0/checkpoint.h5").stat().st_mtime_ns
    assert rc.main(argv + ["--table-only"]) == 0
    assert (tmp_path / "runs/continual/digits/constant/sequential/seed_0/checkpoint.h5").stat().st_mtime_ns == mtime
