"""Distillation (issue 12 item 2): soft targets, the teacher command, EP vs BPTT on soft targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neuro_hts import dynamics
from neuro_hts.algorithms import EP, run_phases
from neuro_hts.bptt import bptt_gradients
from neuro_hts.cli import main as cli_main
from neuro_hts.config import load_config
from neuro_hts.distill import distill_targets, soft_targets, teacher_scores
from neuro_hts.errors import ConfigError
from neuro_hts.hardware import fixed_learning as fl
from neuro_hts.runfile import load_run
from neuro_hts.testing import random_problem
from neuro_hts.training import train

REPO = Path(__file__).resolve().parents[1]


def test_soft_targets_are_a_tempered_softmax():
    z = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.25]])
    for T in (0.1, 1.0, 4.0):
        p = soft_targets(z, T)
        e = np.exp(z / T)
        assert np.allclose(p, e / e.sum(1, keepdims=True), rtol=1e-12) and np.allclose(p.sum(1), 1)
    assert soft_targets(z, 0.1)[0, 0] > soft_targets(z, 1.0)[0, 0] > soft_targets(z, 4.0)[0, 0] > 1 / 3
    assert np.isfinite(soft_targets(np.array([[1e4, 0.0]]), 1e-3)).all()  # no overflow
    for bad in (0, -1, float("nan")):
        with pytest.raises(ConfigError, match="temperature"):
            soft_targets(z, bad)


def test_distill_targets_mix_labels_and_soft_targets():
    y = np.eye(3, dtype=np.float32)[[0, 2]]
    z = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.25]])
    assert distill_targets(y, z, 0.5, 0.0) is y  # alpha 0: the labels themselves
    p = soft_targets(z, 0.5)
    got = distill_targets(y, z, 0.5, 0.25)
    assert got.dtype == np.float32 and np.allclose(got, 0.75 * y + 0.25 * p, atol=1e-7)
    assert np.allclose(distill_targets(y, z, 0.5, 1.0), p, atol=1e-7)
    with pytest.raises(ConfigError, match="alpha"):
        distill_targets(y, z, 0.5, 1.5)


@pytest.mark.parametrize("activation", ["hard_sigmoid", "sigmoid4"])
def test_ep_on_soft_targets_is_the_bptt_gradient_of_the_soft_target_cost(activation):
    """The cost is the student's own, toward y': symmetric EP at small beta still gives its gradient."""
    net, x, y = random_problem((20, 16, 4), "leaky", activation, "mse", seed=0)
    z = np.random.default_rng(0).normal(size=y.shape)
    ys = distill_targets(y, z, 0.5, 0.7)
    assert not np.allclose(ys, y)
    algo = EP(t1=400, t2=400, beta=1e-3, nudging="symmetric")
    res, c = run_phases(fl.float_relaxer(net, x, ys), algo, None)
    est = dynamics.ep_gradients(net, x, ys, res[c.a].states, c.beta_a, res[c.b].states, c.beta_b)
    gW, gb, _ = bptt_gradients(net, x, ys, 400)
    rel = [np.linalg.norm(e - g) / np.linalg.norm(g) for e, g in zip(est[0] + est[1], gW + gb)]
    assert max(rel) < 1e-4, rel
    # and it is not the gradient toward the hard labels
    gW_hard, _, _ = bptt_gradients(net, x, y, 400)
    assert np.linalg.norm(gW_hard[-1] - gW[-1]) > 0.1 * np.linalg.norm(gW[-1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("distill")
    cfg = load_config(REPO / "models" / "digits.toml").replace(
        model={"activation": "sigmoid4"}, train={"epochs": 1}, data={"n_train": 300, "n_test": 100})
    assert cli_main(["--no-progress", "teacher", "--config", str(REPO / "models" / "digits.toml"), "--activation",
                     "sigmoid4", "--epochs", "1", "--n-train", "300", "--n-test", "100", "--out", str(d / "t.h5")]) == 0
    return d, cfg


def test_teacher_is_bptt_and_alpha_zero_is_standard_ep_bit_for_bit(runs):
    d, cfg = runs
    teacher = load_run(d / "t.h5")
    assert teacher.config.train.trainer == "bptt"
    plain = train(cfg, d / "plain.h5")
    zero = train(cfg.replace(distill={"teacher": str(d / "t.h5"), "alpha": 0.0}), d / "zero.h5")
    assert all(np.array_equal(a, b) for a, b in zip(plain.network.weights, zero.network.weights))
    mixed = train(cfg.replace(distill={"teacher": str(d / "t.h5"), "alpha": 0.5, "temperature": 0.25}), d / "mix.h5")
    assert not all(np.array_equal(a, b) for a, b in zip(plain.network.weights, mixed.network.weights))
    stored = load_run(d / "mix.h5").config.distill
    assert len(stored.teacher_sha256) == 64 and stored.temperature == 0.25
    # the teacher's scores: its own free phase, and they predict its own test accuracy
    data_x = np.random.default_rng(0).random((5, 64))
    s = teacher_scores(d / "t.h5", data_x, 10)
    assert s.shape == (5, 10) and np.all((s >= 0) & (s <= 1))  # an MSE teacher's output states


def test_a_changed_teacher_is_refused_on_resume(runs, tmp_path):
    d, cfg = runs
    import shutil

    t = tmp_path / "t.h5"
    shutil.copy(d / "t.h5", t)
    out = tmp_path / "s.h5"
    train(cfg.replace(distill={"teacher": str(t)}), out)
    st = load_run(t)
    st.network.weights[0][0, 0] += 1.0
    from neuro_hts.runfile import save_run

    save_run(t, st)
    with pytest.raises(ConfigError, match="changed since this run started"):
        train(cfg.replace(train={"epochs": 2}), out, resume=True)


def test_cli_bad_input(runs, tmp_path, capsys):
    d, _ = runs
    base = ["--no-progress", "train", "--config", str(REPO / "models" / "digits.toml"), "--epochs", "1", "--n-train", "100"]
    cases = [
        (base + ["--distill", str(tmp_path / "none.h5"), "--out", str(tmp_path / "a.h5")], "teacher not found"),
        (base + ["--distill", str(d / "t.h5"), "--distill-alpha", "2", "--out", str(tmp_path / "a.h5")], "alpha must be"),
        (base + ["--distill", str(d / "t.h5"), "--distill-temperature", "0", "--out", str(tmp_path / "a.h5")],
         "temperature must be"),
        (base + ["--distill", str(d / "t.h5"), "--out", str(d / "t.h5"), "--force"], "would destroy the input"),
        (base + ["--distill", str(d / "t.h5"), "--arch", "64-20-5", "--out", str(tmp_path / "a.h5")], "does not fit"),
        (["teacher", "--config", str(REPO / "models" / "digits.toml"), "--trainer", "ep", "--out", str(tmp_path / "b.h5")],
         "a teacher is trained by BPTT"),
    ]
    for argv, msg in cases:
        capsys.readouterr()
        assert cli_main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and msg in err, (argv, err)
    assert not (tmp_path / "b.h5").exists()
