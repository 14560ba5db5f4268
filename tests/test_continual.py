"""The class-incremental protocol (neuro_hts.continual) and the ``continual`` subcommand, on the 8x8 digits."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from neuro_hts.continual import (
    SEARCH_SPACE_WIDE, ContinualConfig, _task_training_set, ewc_penalty_grad, fisher_diagonal, load_continual_config,
    run_protocol, run_seeds, sample_sleep_config, search_sleep,
)
from neuro_hts.sleep import SleepConfig
from neuro_hts.data import load_dataset
from neuro_hts.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "models" / "continual_digits.toml"


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def small(method="sequential", **sections):
    """A fast config: 64-32-10, three epochs per task, short phases, short sleeps."""
    cfg = load_continual_config(DIGITS).replace(
        model={"arch": [64, 32, 10]},
        continual={"method": method, "epochs": 3, "alpha_samples": 200, "fisher_samples": 100},
        sleep={"iterations_first": 200, "iterations_per_task": 50, "inc": 0.001, "dec": 0.0001,
               "thresholds": [30.0, 60.0]},
    )
    return cfg.replace(**sections) if sections else cfg


@pytest.fixture(scope="module")
def seq_run(tmp_path_factory, digits):
    """The sequential baseline of :func:`small` (shared: several tests compare against it)."""
    out = tmp_path_factory.mktemp("seq")
    return out, run_protocol(small(), out, dataset=digits)


def test_sequential_writes_every_output_and_forgets(seq_run):
    out, s = seq_run
    rows = (out / "accuracy.csv").read_text().splitlines()
    assert rows[0].startswith("after_task,task_1,") and len(rows) == 6
    m = np.array(s["matrix"])
    assert m.shape == (5, 5)
    # after task 1 only classes 0 and 1 can be predicted: every later task scores exactly 0
    assert m[0, 0] > 0.8 and (m[0, 1:] == 0).all()
    assert s["final_accuracy"] == pytest.approx(s["overall_accuracy"][-1]) and 0 <= s["final_accuracy"] <= 1
    with h5py.File(out / "accuracy.h5") as f:
        np.testing.assert_array_equal(f["matrix"][...], m)
        assert ContinualConfig.from_json(f.attrs["config"]).protocol.method == "sequential"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["tasks_completed"] == 5
    for png in ("heatmap.png", "curves.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_resume_after_an_interruption_gives_the_same_results(tmp_path, digits):
    cfg = small("ewc", continual={"n_tasks": 3})
    whole = run_protocol(cfg, tmp_path / "whole", dataset=digits)

    class Stop(Exception):
        pass

    def progress(total, desc):
        if desc.startswith("task 3/"):
            raise Stop
        return None

    with pytest.raises(Stop):
        run_protocol(cfg, tmp_path / "cut", dataset=digits, progress=progress)
    part = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert part["tasks_completed"] == 2 and not part["complete"]
    resumed = run_protocol(cfg, tmp_path / "cut", dataset=digits)
    assert resumed["matrix"] == whole["matrix"]
    assert resumed["final_accuracy"] == whole["final_accuracy"]
    with pytest.raises(ConfigError, match="another config"):
        run_protocol(small("sequential"), tmp_path / "cut", dataset=digits)
    # the sleep's values are part of the config only for a method that sleeps
    assert run_protocol(cfg.replace(sleep={"inc": 0.5}), tmp_path / "cut", dataset=digits)["matrix"] == whole["matrix"]
    src = small("src", continual={"n_tasks": 1})
    run_protocol(src, tmp_path / "src", dataset=digits)
    with pytest.raises(ConfigError, match="another config"):
        run_protocol(src.replace(sleep={"inc": 0.5}), tmp_path / "src", dataset=digits)


def test_sleep_with_zero_stdp_rates_is_sequential(tmp_path, digits, seq_run):
    seq = seq_run[1]
    src0 = run_protocol(small("src", sleep={"inc": 0.0, "dec": 0.0}), tmp_path / "b", dataset=digits)
    assert src0["matrix"] == seq["matrix"]
    src = run_protocol(small("src"), tmp_path / "c", dataset=digits)
    assert all(st["spikes_per_layer"][0] > 0 and st["weight_change"][0] > 0 for st in src["sleep"])
    assert src["overall_before_sleep"][0] == seq["overall_accuracy"][0]  # the same training up to the first sleep


@pytest.mark.parametrize("source, classes", [("seen", [[0, 1], [0, 1, 2, 3]]), ("current", [[0, 1], [2, 3]])])
def test_sleep_input_is_the_mean_of_the_seen_or_the_current_task(tmp_path, digits, monkeypatch, source, classes):
    import neuro_hts.continual as cont

    driven = []
    real = cont.sleep

    def spy(net, x, *a, **k):
        driven.append(x.copy())
        return real(net, x, *a, **k)

    monkeypatch.setattr(cont, "sleep", spy)
    run_protocol(small("src", continual={"n_tasks": 2, "epochs": 1}, sleep={"input": source}), tmp_path / source,
                 dataset=digits)
    x = np.asarray(digits.x_train, np.float32).reshape(digits.n_train, -1)
    for got, cls in zip(driven, classes):
        want = x[np.isin(digits.y_train, cls)]
        assert got.shape == want.shape and np.array_equal(got, want)
    with pytest.raises(ConfigError, match="input must be one of"):
        small("src", sleep={"input": "dreams"})


def test_the_probe_sees_what_the_readout_forgot_and_resumes(tmp_path, digits, seq_run):
    seq = seq_run[1]
    assert seq["probe_accuracy"] == [None] * 5  # off by default
    cfg = small(continual={"probe": True, "probe_samples": 600})
    s = run_protocol(cfg, tmp_path / "p", dataset=digits)
    assert s["matrix"] == seq["matrix"]  # the probe only looks
    probe = np.array(s["probe_accuracy"])
    # sequential training forgets in the readout: the hidden layer still separates most classes
    assert probe[-1] > 2 * s["final_accuracy"] and probe.min() > 0.5
    h5 = h5py.File(tmp_path / "p" / "accuracy.h5")
    assert np.allclose(h5["probe"][()], probe)
    assert (tmp_path / "p" / "accuracy.csv").read_text().splitlines()[0].endswith(",all,all_before_sleep,probe")
    # stopped after task 2 by an older version (its checkpoint has no probe): resumes with NaN there
    class Stop(Exception):
        pass

    def progress(total, desc):
        if desc.startswith("task 3/"):
            raise Stop

    with pytest.raises(Stop):
        run_protocol(cfg, tmp_path / "cut", dataset=digits, progress=progress)
    with h5py.File(tmp_path / "cut" / "checkpoint.h5", "a") as f:
        del f["results"]["probe"]
    resumed = run_protocol(cfg, tmp_path / "cut", dataset=digits)
    assert resumed["probe_accuracy"][:2] == [None, None]
    assert resumed["probe_accuracy"][2:] == list(probe[2:]) and resumed["matrix"] == s["matrix"]


def test_probe_of_a_constant_hidden_layer_is_one_class(digits, tmp_path):
    from neuro_hts.continual import _Trainer, probe_accuracy
    from neuro_hts.network import init_network

    cfg = small()
    net = init_network(cfg.base, np.float32)
    for w, b in zip(net.weights, net.biases):
        w[...] = 0.0
        b[...] = 0.0
    x = np.asarray(digits.x_train, np.float32).reshape(digits.n_train, -1)
    acc = probe_accuracy(_Trainer(cfg, net), net, x, digits.y_train, x, digits.y_train, cfg.base.train.t1)
    assert acc <= np.bincount(digits.y_train).max() / digits.n_train + 1e-9
    # with a softmax readout the last relaxed state is the hidden layer itself
    ce = small(model={"output": "ce"}, continual={"n_tasks": 1, "probe": True, "probe_samples": 400})
    s = run_protocol(ce, tmp_path / "ce", dataset=digits)
    assert s["probe_accuracy"][0] > 0.5
    with pytest.raises(ConfigError, match="hidden layer"):
        run_protocol(small(model={"arch": [64, 10]}, continual={"probe": True}), Path("/nonexistent/never"),
                     dataset=digits)


def test_joint_is_the_upper_bound(tmp_path, digits, seq_run):
    seq = seq_run[1]
    joint = run_protocol(small("joint"), tmp_path / "j", dataset=digits)
    assert joint["final_accuracy"] > 0.6 > seq["final_accuracy"]


def test_rehearsal_training_sets(digits):
    y = digits.y_train
    cfg = small("rehearsal", continual={"rehearsal_fraction": 0.1})
    idx = _task_training_set(cfg, digits.x_train, y, 2, seed=0)
    n = [int(np.isin(y, [2 * j, 2 * j + 1]).sum()) for j in range(3)]
    assert idx.size == n[2] + round(0.1 * n[0]) + round(0.1 * n[1])
    assert set(np.unique(y[idx])) == {0, 1, 2, 3, 4, 5}
    np.testing.assert_array_equal(idx, _task_training_set(cfg, digits.x_train, y, 2, seed=0))  # fixed by the seed
    joint = _task_training_set(small("joint"), digits.x_train, y, 2, seed=0)
    assert joint.size == sum(n)
    seq = _task_training_set(small("sequential"), digits.x_train, y, 2, seed=0)
    assert seq.size == n[2]


def test_fisher_and_ewc_penalty():
    grads = iter([([np.array([1.0, -2.0])], [np.array([3.0])]), ([np.array([3.0, 0.0])], [np.array([-1.0])])])
    fW, fb = fisher_diagonal(lambda xb, yb: next(grads), np.zeros((4, 1)), np.zeros((4, 1)), batch=2)
    np.testing.assert_allclose(fW[0], [5.0, 2.0])  # mean of squares: (1 + 9) / 2, (4 + 0) / 2
    np.testing.assert_allclose(fb[0], [5.0])
    F = [np.array([2.0, 0.5])]
    anchor = [np.array([1.0, -1.0])]
    g = ewc_penalty_grad([np.array([3.0, 1.0])], F, [F[0] * anchor[0]], lam=10.0)
    np.testing.assert_allclose(g[0], 10.0 * F[0] * (np.array([3.0, 1.0]) - anchor[0]))


def test_ewc_and_bptt_run(tmp_path, digits, seq_run):
    ewc = run_protocol(small("ewc", continual={"ewc_lambda": 1e4}), tmp_path / "e", dataset=digits)
    seq = seq_run[1]
    assert ewc["matrix"][0] == seq["matrix"][0]  # the penalty starts after task 1
    assert ewc["matrix"] != seq["matrix"]
    bptt = run_protocol(small("sequential", continual={"trainer": "bptt", "n_tasks": 2}), tmp_path / "b", dataset=digits)
    assert bptt["trainer"] == "bptt" and bptt["matrix"][0][0] > 0.8


def test_seeds_report_mean_and_spread(tmp_path, digits):
    s = run_seeds(small(continual={"n_tasks": 2}), tmp_path / "seeds", [0, 1], dataset=digits)
    finals = [json.loads((tmp_path / "seeds" / f"seed_{k}" / "summary.json").read_text())["final_accuracy"] for k in (0, 1)]
    assert s["final_accuracy"] == pytest.approx(np.mean(finals))
    assert s["final_accuracy_std"] == pytest.approx(np.std(finals, ddof=1))
    assert json.loads((tmp_path / "seeds" / "summary.json").read_text())["seeds"] == [0, 1]


def test_search_writes_its_table_and_best(tmp_path, digits):
    cfg = small("src", continual={"n_tasks": 2, "epochs": 1}, sleep={"iterations_first": 50, "iterations_per_task": 0})
    best = search_sleep(cfg, tmp_path / "search", 2, dataset=digits)
    rows = (tmp_path / "search" / "search.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("candidate,score")
    assert best["score"] == float(rows[1].split(",")[1]) or abs(best["score"] - float(rows[1].split(",")[1])) < 1e-5
    assert best["validation"] == 0.1 and set(best["sleep"]) >= {"inc", "dec", "thresholds", "alpha_scale"}
    assert (tmp_path / "search" / "candidate_001" / "summary.json").exists()


def test_wide_space_draws_inside_its_ranges_and_is_seeded():
    base = SleepConfig(decay=0.99, use_biases=True)

    def draw(seed):
        rng = np.random.default_rng(seed)
        return [sample_sleep_config(base, 2, rng, "wide") for _ in range(200)]

    cands = draw(3)
    sp = SEARCH_SPACE_WIDE
    for name in ("inc", "dec", "alpha_scale", "max_rate"):
        v = np.array([getattr(c, name) for c in cands])
        assert sp[name][0] <= v.min() and v.max() <= sp[name][1]
        # log-uniform: about half of the draws below the geometric midpoint
        assert 0.35 < np.mean(v < np.sqrt(sp[name][0] * sp[name][1])) < 0.65
    th = np.array([c.thresholds for c in cands])
    assert th.shape == (200, 2) and th.min() >= 5.0 and th.max() <= 400.0 and not np.allclose(th[:, 0], th[:, 1])
    assert {c.g for c in cands} == set(sp["g"]) and {c.mask_size for c in cands} == set(sp["mask_size"])
    assert {c.iterations_first for c in cands} == set(sp["iterations_first"])
    assert all(c.iterations_per_task in (0, round(c.iterations_first / 3)) for c in cands)
    assert 0 < sum(c.iterations_per_task == 0 for c in cands) < 200
    # what the space does not draw stays as in the base
    assert all(c.decay == 0.99 and c.use_biases for c in cands)
    assert [c.to_dict() for c in draw(3)] == [c.to_dict() for c in cands]
    assert [c.to_dict() for c in draw(4)] != [c.to_dict() for c in cands]
    with pytest.raises(ConfigError, match="search space"):
        sample_sleep_config(base, 2, np.random.default_rng(0), "narrow")


def test_wide_search_records_its_space(tmp_path, digits):
    cfg = small("src", continual={"n_tasks": 2, "epochs": 1}, sleep={"iterations_first": 50, "iterations_per_task": 0})
    best = search_sleep(cfg, tmp_path / "search", 2, dataset=digits, space="wide")
    assert best["space"] == "wide"
    header, *rows = (tmp_path / "search" / "search.csv").read_text().splitlines()
    assert header.split(",")[-4:] == ["g", "mask_size", "iterations_first", "iterations_per_task"]
    drawn = next(r for r in rows if r.startswith("1,")).split(",")
    again = sample_sleep_config(cfg.sleep, 2, np.random.default_rng([0, 14, 99]), "wide")
    assert drawn[-4:] == [again.g, str(again.mask_size), str(again.iterations_first), str(again.iterations_per_task)]
    with pytest.raises(ConfigError, match="search space"):
        search_sleep(cfg, tmp_path / "other", 2, dataset=digits, space="narrow")


def test_cli(run_cli, tmp_path):
    code, out, err = run_cli(["continual", "--config", str(DIGITS), "--method", "nope", "--out", str(tmp_path / "x")])
    assert code == 2 and "invalid choice" in err
    (tmp_path / "f").write_text("")
    code, out, err = run_cli(["continual", "--config", str(DIGITS), "--out", str(tmp_path / "f")])
    assert code == 2 and err.count("\n") == 1 and "is a file" in err
    bad = tmp_path / "bad.toml"
    bad.write_text(DIGITS.read_text() + "\n[continual.extra]\n")
    code, out, err = run_cli(["continual", "--config", str(bad), "--out", str(tmp_path / "y")])
    assert code == 2 and "continual" in err
