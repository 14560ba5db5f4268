"""Files written by neuro-hts at commit 903d546 (run-file schema 1) still work.

tests/fixtures/v1/README.md says how the files were made and what that code measured on
them: these tests evaluate, resume, quantize and deploy them with today's code and
compare with those figures.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from neuro_hts.hardware.bundle import load_bundle
from neuro_hts.runfile import SCHEMA_VERSION, load_run

FIX = Path(__file__).parent / "fixtures" / "v1"
EXPECTED = json.loads((FIX / "resumed_by_903d546.json").read_text())


def _copy(tmp_path, name) -> Path:
    dst = tmp_path / name
    shutil.copyfile(FIX / name, dst)
    return dst


def test_the_fixtures_are_schema_1():
    for name in ("run_float.h5", "run_fixed.h5"):
        with h5py.File(FIX / name, "r") as f:
            assert int(f.attrs["schema_version"]) == 1
            assert "free_steps_mean" not in f["history"]
    assert SCHEMA_VERSION == 2


def test_a_schema_1_run_loads_with_the_defaults_of_the_new_keys():
    state = load_run(FIX / "run_float.h5")
    cfg = state.config
    assert cfg.train.algorithm == "ep" and cfg.train.t1_tol is None and cfg.adapt.steps == 0 and cfg.chl.gamma == 1.0
    assert state.history["free_steps_mean"] == [40.0, 40.0]  # t1 for each completed epoch
    assert state.history["test_accuracy"] == pytest.approx(EXPECTED["run_float"]["test_accuracy_after_resume_to_3"][:2])


@pytest.mark.parametrize("name,expected", [("run_float.h5", "0.8650 (173/200)"), ("run_fixed.h5", "0.7750 (155/200)")])
def test_eval_gives_the_accuracy_the_old_code_measured(run_cli, name, expected):
    code, out, err = run_cli(["eval", str(FIX / name)])
    assert code == 0, err
    assert f"test accuracy: {expected}" in out


@pytest.mark.parametrize("name,exact", [("run_fixed.h5", True), ("run_float.h5", False)])
def test_resume_ends_where_the_old_code_ended(tmp_path, run_cli, name, exact):
    """Resumed to 3 epochs: the fixed-point run on the same grid bit for bit, the float32 run
    within float32 rounding of the old kernels (atol 1e-5), same accuracies either way."""
    path = _copy(tmp_path, name)
    code, out, err = run_cli(["train", "--resume", str(path), "--epochs", "3"])
    assert code == 0, err
    state = load_run(path)
    key = path.stem
    assert state.history["test_accuracy"] == pytest.approx(EXPECTED[key]["test_accuracy_after_resume_to_3"], abs=1e-12)
    ref = np.load(FIX / "resumed_by_903d546.npz")
    with h5py.File(path, "r") as f:
        assert int(f.attrs["schema_version"]) == SCHEMA_VERSION  # rewritten in the new schema
    for i, (w, b) in enumerate(zip(state.network.weights, state.network.biases), start=1):
        for got, want in ((w, ref[f"{key}_W{i}"]), (b, ref[f"{key}_b{i}"])):
            if exact:
                assert np.array_equal(got, want)
            else:
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_quantize_gives_the_old_bundle(tmp_path, run_cli):
    out = tmp_path / "b.h5"
    code, _, err = run_cli(["quantize", str(FIX / "run_float.h5"), "--target", "loihi2", "--out", str(out)])
    assert code == 0, err
    new, old = load_bundle(out), load_bundle(FIX / "bundle_loihi2.h5")
    assert len(new.layers) == len(old.layers) == 2
    for a, b in zip(new.layers, old.layers):
        assert np.array_equal(a.weight_mantissa, b.weight_mantissa) and a.weight_exponent == b.weight_exponent
        assert np.array_equal(a.bias, b.bias) and np.array_equal(a.decay, b.decay)


def test_deploy_of_the_old_bundle_on_numba(run_cli):
    code, out, err = run_cli(["deploy", str(FIX / "bundle_loihi2.h5"), "--backend", "numba", "--n-samples", "200"])
    assert code == 0, err
    assert "accuracy: 0.8650 (173/200)" in out


@pytest.mark.lava
@pytest.mark.timeout(120)
def test_deploy_of_the_old_bundle_in_lava_matches_numba(tmp_path, run_cli):
    # Lava must own multiprocessing's start method: run it in a child process
    child = subprocess.run([sys.executable, "-m", "neuro_hts", "--no-progress", "deploy", str(FIX / "bundle_loihi2.h5"),
                            "--backend", "lava", "--n-samples", "20"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=110)
    assert child.returncode == 0, child.stderr
    out = child.stdout
    code2, out2, _ = run_cli(["deploy", str(FIX / "bundle_loihi2.h5"), "--backend", "numba", "--n-samples", "20"])
    acc = [line for line in out.splitlines() if line.startswith("accuracy:")]
    acc2 = [line for line in out2.splitlines() if line.startswith("accuracy:")]
    assert acc and acc == acc2
