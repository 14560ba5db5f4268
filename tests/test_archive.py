"""neuro_hts.archive, `neuro-hts archive` / `restore`: a sweep's results without weights, across machines."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from neuro_hts.archive import archive_sweep, read_archive, restore_archive
from neuro_hts.cli import main as cli_main
from neuro_hts.config import load_config
from neuro_hts.errors import ConfigError, RunFileError
from neuro_hts.report import collect
from neuro_hts.runfile import load_run, load_summary, save_run
from neuro_hts.sweep import cell_state, make_grid, run_sweep, same_base

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A finished 2-law x 2-setting digits sweep; one cell marked diverged with a NaN loss."""
    out = tmp_path_factory.mktemp("sw") / "sweep"
    base = load_config(REPO / "models" / "digits.toml").replace(train={"epochs": 2}, data={"n_train": 120, "n_test": 50})
    cells = make_grid(base, ["constant", "lognormal"], [0], [("train.t1", [10, 15])])
    res = run_sweep(base, cells, out)
    assert {r["status"] for r in res} == {"complete"}
    bad = out / f"{cells[-1].name}.h5"
    st = load_run(bad)
    st.status, st.message = "diverged", "training diverged at epoch 2: non-finite weights"
    st.history["train_loss"][-1] = math.nan
    save_run(bad, st)
    return base, cells, out


def _histories(d: Path) -> dict:
    return {p.stem: (load_summary(p).status, load_summary(p).history) for p in sorted(d.glob("*.h5"))}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k][0] == b[k][0] and a[k][1].keys() == b[k][1].keys()
        and all(np.array_equal(a[k][1][h], b[k][1][h], equal_nan=True) for h in a[k][1]) for k in a)


def test_round_trip_keeps_every_status_and_history_bit_for_bit(sweep, tmp_path):
    base, cells, out = sweep
    arc = tmp_path / "cells.json"
    assert archive_sweep(out, arc) == {"added": 4, "updated": 0, "kept": 0, "running": 0}
    text = arc.read_text()
    json.loads(text)  # strict JSON: the NaN loss is stored as null
    assert "NaN" not in text and "null" in text
    assert sorted(read_archive(arc)[1]) == sorted(c.name for c in cells)
    dst = tmp_path / "restored"
    assert restore_archive(arc, dst) == {"restored": 4, "present": 0}
    assert _same(_histories(dst), _histories(out))
    st = load_summary(dst / f"{cells[-1].name}.h5")
    assert st.metrics_only and st.status == "diverged" and "non-finite weights" in st.message
    assert math.isnan(st.history["train_loss"][-1])
    # the sweep counts the restored cells finished and the report reads them like the originals
    assert [cell_state(dst / f"{c.name}.h5", 2) for c in cells] == ["complete"] * 3 + ["diverged"]
    a, b = collect(out), collect(dst)
    assert [g["summary"] for g in a["groups"]] == [g["summary"] for g in b["groups"]]
    # a second archive of the same sweep changes nothing
    before = arc.read_text()
    assert archive_sweep(out, arc) == {"added": 0, "updated": 0, "kept": 4, "running": 0}
    assert arc.read_text() == before


def test_metrics_only_files_refuse_what_needs_weights(sweep, tmp_path, capsys):
    base, cells, out = sweep
    archive_sweep(out, tmp_path / "a.json")
    dst = tmp_path / "r"
    restore_archive(tmp_path / "a.json", dst)
    path = dst / f"{cells[0].name}.h5"
    with pytest.raises(RunFileError, match="metrics-only run file"):
        load_run(path)
    assert cli_main(["show", str(path)]) == 0  # shown without weights: config, status, the epoch table
    out = capsys.readouterr().out
    assert "metrics only" in out and "run status: complete, 2/2 epochs" in out and "final test accuracy" in out
    assert cli_main(["eval", str(path)]) == 2 and "no weights" in capsys.readouterr().err
    # more epochs than the archive holds: a clear error for that cell, nothing retrained
    res = run_sweep(base.replace(train={"epochs": 3}), cells[:1], dst)
    assert res[0]["status"] == "error" and "no weights to resume from" in res[0]["error"]
    assert load_summary(path).epochs_completed == 2


def test_restore_never_replaces_a_run_file_and_archive_prefers_the_longer_run(sweep, tmp_path):
    base, cells, out = sweep
    arc = tmp_path / "a.json"
    archive_sweep(out, arc)
    # a sweep directory that already trained one cell further (3 epochs) than the archive
    dst = tmp_path / "d"
    run_sweep(base.replace(train={"epochs": 3}), cells[:1], dst)
    full = dst / f"{cells[0].name}.h5"
    acc3 = load_run(full).history["test_accuracy"]
    assert restore_archive(arc, dst) == {"restored": 3, "present": 1}
    assert load_run(full).history["test_accuracy"] == acc3  # still the full run file, weights and all
    assert archive_sweep(dst, arc)["updated"] == 1
    assert read_archive(arc)[1][cells[0].name][1]["epochs_completed"] == 3


def test_same_base_ignores_epochs_and_data_dir_only(sweep):
    base = sweep[0]
    assert same_base(base, base.replace(train={"epochs": 9}, data={"data_dir": "/elsewhere"}))
    assert not same_base(base, base.replace(train={"beta": 0.3}))


def test_bad_input(sweep, tmp_path, capsys):
    base, cells, out = sweep
    arc = tmp_path / "a.json"
    archive_sweep(out, arc)
    other = tmp_path / "other"
    run_sweep(base.replace(train={"beta": 0.3}), cells[:1], other)
    with pytest.raises(ConfigError, match="another base config"):
        archive_sweep(other, arc)
    with pytest.raises(ConfigError, match="another base config"):
        restore_archive(arc, other)
    with pytest.raises(ConfigError, match="is a .json file"):
        archive_sweep(out, tmp_path / "a.h5")
    d = json.loads(arc.read_text())
    d["cells"][0]["name"] = "../../escape"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(d))
    with pytest.raises(ConfigError, match="does not match its dist, seed and settings"):
        read_archive(bad)
    d = json.loads(arc.read_text())
    d["cells"][0]["run"]["status"] = "running"
    bad.write_text(json.dumps(d))
    with pytest.raises(ConfigError, match="finished cells only"):
        read_archive(bad)
    bad.write_text("{not json")
    for argv, msg in [(["restore", str(bad), str(tmp_path / "x")], "not a readable sweep archive"),
                      (["restore", str(tmp_path / "none.json"), str(tmp_path / "x")], "sweep archive not found"),
                      (["archive", str(tmp_path), str(arc)], "not a sweep directory"),
                      (["archive", str(out), str(bad)], "not a readable sweep archive")]:
        capsys.readouterr()
        assert cli_main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and msg in err, (argv, err)
    assert bad.read_text() == "{not json"  # a damaged archive is reported, never overwritten
    assert not (tmp_path / "x").exists()
