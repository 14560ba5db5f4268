"""scripts/reproduce_deep.py: issue 12's deep-CNN grid (teacher, four student variants, BPTT reference)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from _scripts import load_script

from neuro_hts.archive import read_archive
from neuro_hts.cli import build_parser
from neuro_hts.distill import teacher_digest
from neuro_hts.runfile import load_run
from neuro_hts.sweep import load_manifest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def script():
    mod = load_script("reproduce_deep")
    return mod


def test_dry_run_lists_teacher_students_and_bptt_per_dataset(script, capsys, tmp_path):
    assert script.main(["--data-root", str(tmp_path), "--dry-run", "--out-root", str(tmp_path / "o")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 * 6
    assert "--data-dir" not in " ".join(lines[:6])  # the embedded digits need none
    for name, chunk in (("digits", lines[:6]), ("mnist", lines[6:12]), ("fashionmnist", lines[12:])):
        assert chunk[0].startswith("neuro-hts teacher ") and chunk[1] == "# student config"
        students, bptt = build_parser().parse_args(shlex.split(chunk[2])[1:]), build_parser().parse_args(shlex.split(chunk[4])[1:])
        assert students.set == ["local.beta=0,0.5", "distill.alpha=0,0.5"] and students.dt_dists == "constant,lognormal"
        assert students.out.endswith(f"sweeps/deep_{name}") and students.seeds == "0-2"
        assert bptt.set == ["train.trainer=bptt"] and bptt.config.endswith(
            "models/digits_deep.toml" if name == "digits" else f"models/{name}_deep_cnn.toml")
        assert chunk[3].endswith(f"results/deep_{name}/cells.json") and chunk[5].endswith(f"results/deep_{name}_bptt/cells.json")


def test_bad_input(script, capsys, tmp_path):
    assert script.main(["--data-root", str(tmp_path), "--only", "cifar"]) == 2
    assert "unknown dataset(s) cifar" in capsys.readouterr().err
    assert script.main(["--data-root", str(tmp_path / "none"), "--only", "mnist"]) == 2
    assert "has no mnist/" in capsys.readouterr().err
    assert script.main(["--only", "digits,mnist"]) == 2
    assert "mnist need --data-root" in capsys.readouterr().err


def test_a_real_run_trains_the_teacher_once_and_every_variant(script, capsys, tmp_path, monkeypatch):
    # the 8x8 digits CNN (embedded data; data_dir is ignored for digits) stands in for the deep nets
    monkeypatch.setattr(script, "DATASETS", {"tiny": ("models/digits_cnn.toml", None)})
    (tmp_path / "data" / "mnist").mkdir(parents=True)
    argv = ["--data-root", str(tmp_path / "data"), "--out-root", str(tmp_path), "--epochs", "1", "--n-train", "60",
            "--n-test", "30", "--seeds", "0", "--no-progress"]
    assert script.main(argv) == 0
    teacher = tmp_path / "results" / "deep_tiny" / "teacher.h5"
    assert load_run(teacher).config.train.trainer == "bptt"
    digest = teacher_digest(teacher)
    _, cells = load_manifest(tmp_path / "sweeps" / "deep_tiny")
    assert len(cells) == 2 * 4 and {(c["settings"]["local.beta"], c["settings"]["distill.alpha"]) for c in cells} == {
        (0.0, 0.0), (0.0, 0.5), (0.5, 0.0), (0.5, 0.5)}
    for c in cells:
        st = load_run(tmp_path / "sweeps" / "deep_tiny" / f"{c['name']}.h5")
        assert st.status == "complete" and st.config.local.beta == c["settings"]["local.beta"]
        # the distilled students recorded this teacher; alpha 0 never reads it
        assert st.config.distill.teacher_sha256 == (digest if c["settings"]["distill.alpha"] > 0 else "")
    assert len(read_archive(tmp_path / "results" / "deep_tiny" / "cells.json")[1]) == 8
    assert len(read_archive(tmp_path / "results" / "deep_tiny_bptt" / "cells.json")[1]) == 2
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "sweeps").rglob("*.h5")}
    capsys.readouterr()
    assert script.main(argv) == 0  # everything finished: nothing retrained, the teacher untouched
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes and teacher_digest(teacher) == digest


def test_deep_figure_tables_every_variant_against_standard_ep(script, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(script, "DATASETS", {"tiny": ("models/digits_cnn.toml", None)})
    argv = ["--out-root", str(tmp_path), "--epochs", "1", "--n-train", "60", "--n-test", "30", "--seeds", "0-1",
            "--no-progress"]
    assert script.main(argv) == 0
    fig = load_script("deep_figure")
    out = tmp_path / "fig"
    assert fig.main(["--dataset", "tiny", "--sweeps-root", str(tmp_path / "sweeps"), "--out", str(out)]) == 0
    rows = (out / "variants.md").read_text().splitlines()[2:]
    assert len(rows) == 2 * 3  # 2 dt laws x 3 variants against standard EP
    assert all(r.count("|") == 9 and "| 2 |" in r for r in rows)  # two seeds each
    labels = [r.split("|")[1].strip() for r in (out / "comparison.md").read_text().splitlines()[2:]]
    assert labels == ["standard EP"] * 2 + ["+ local errors (beta_l 0.5)"] * 2 + ["+ distillation (alpha 0.5)"] * 2 \
        + ["+ both"] * 2 + ["BPTT (same net)"] * 2
    assert (out / "comparison.png").stat().st_size > 10_000 and (out / "diagnostics.png").stat().st_size > 10_000
    assert fig.main(["--dataset", "nope", "--sweeps-root", str(tmp_path / "sweeps")]) == 2
