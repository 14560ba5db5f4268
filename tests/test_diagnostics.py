"""Per-layer learning-signal diagnostics (neuro_hts.diagnostics, /diagnostics, `plot diagnostics`).

The recorded values are checked against a recomputation of the same epoch through the
public dynamics functions (dynamics.relax, dynamics.ep_gradients) and the public
optimiser; resume is checked bit for bit against an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from neuro_hts import dynamics
from neuro_hts.backends import get_backend
from neuro_hts.config import Config, DtConfig, ModelConfig, TrainConfig, load_config
from neuro_hts.data import Dataset, one_hot
from neuro_hts.diagnostics import Diagnostics, EpochAccumulator, grad_abs_means, state_gaps
from neuro_hts.engines import FloatEngine
from neuro_hts.learning import make_optimizer
from neuro_hts.network import init_network, rng_streams
from neuro_hts.runfile import HISTORY_KEYS, load_run, save_run
from neuro_hts.training import train

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "v1"


def _dataset(n_in=6, n_classes=3, n_train=10, n_test=6, seed=5) -> Dataset:
    rng = np.random.default_rng(seed)
    return Dataset("tiny", rng.uniform(0, 1, (n_train, n_in)).astype(np.float32), rng.integers(0, n_classes, n_train),
                   rng.uniform(0, 1, (n_test, n_in)).astype(np.float32), rng.integers(0, n_classes, n_test), n_classes)


def _config(arch=(6, 5, 4, 3), output="mse", nudging="one-sided", epochs=1, **train) -> Config:
    tc = dict(epochs=epochs, batch_size=4, t1=12, t2=5, beta=0.3, nudging=nudging, optimizer="adam", lr=(0.01,),
              seed=3, backend="numpy")
    tc.update(train)
    return Config(model=ModelConfig(arch=arch, output=output), dt=DtConfig(dist="lognormal", layers="all"),
                  train=TrainConfig(**tc))


def _recompute_epoch(cfg: Config, data: Dataset):
    """One epoch replayed by hand: the phases through dynamics.relax, the estimate through dynamics.ep_gradients."""
    tc = cfg.train
    net = init_network(cfg, np.float64)
    opt = make_optimizer(tc, net.n_layers)
    opt.lrs = tc.layer_lrs(net.n_layers, 0)
    x_all = np.asarray(data.x_train, dtype=np.float64)
    y_all = one_hot(data.y_train, data.n_classes, np.float64)
    n = x_all.shape[0]
    order = rng_streams(tc.seed, "shuffle", 0).permutation(n)
    nudge_rng = rng_streams(tc.seed, "nudge", 0)
    gaps, grads, acts = [], [], []
    for start in range(0, n, tc.batch_size):
        idx = order[start:start + tc.batch_size]
        x, y = x_all[idx], y_all[idx]
        free = dynamics.relax(net, x, tc.t1, status_tol=tc.residual_tol).states
        act = []
        for s in free:  # mean |s|, fraction above 0.01, mean normalised entropy of |s| / sum |s|
            a = np.abs(s.reshape(len(x), -1))
            ent = [-sum(v / r.sum() * np.log(v / r.sum()) for v in r if v > 0) / np.log(a.shape[1]) for r in a]
            act.append([a.mean(), np.mean(a > 0.01), np.mean(ent)])
        acts.append(act)
        if tc.nudging == "symmetric":
            a = dynamics.relax(net, x, tc.t2, free, y, tc.beta).states
            b = dynamics.relax(net, x, tc.t2, free, y, -tc.beta).states
            beta_a, beta_b, half = tc.beta, -tc.beta, 0.5
        else:
            beta = tc.beta
            if tc.nudging == "random-sign":
                beta = beta if nudge_rng.random() < 0.5 else -beta
            a, b = dynamics.relax(net, x, tc.t2, free, y, beta).states, free
            beta_a, beta_b, half = beta, 0.0, 1.0
        gaps.append([half * np.mean(np.linalg.norm((sa - sb).reshape(len(x), -1), axis=1)) for sa, sb in zip(a, b)])
        gW, gb = dynamics.ep_gradients(net, x, y, a, beta_a, b, beta_b)
        grads.append([np.mean(np.abs(g)) for g in gW])
        opt.step(net, gW, gb)
    return np.mean(gaps, axis=0), np.mean(grads, axis=0), np.mean(acts, axis=0), net


@pytest.mark.parametrize("nudging,output", [("one-sided", "mse"), ("symmetric", "mse"), ("random-sign", "ce")])
def test_recorded_values_equal_a_recomputation_of_the_epoch(tmp_path, nudging, output):
    cfg = _config(output=output, nudging=nudging)
    data = _dataset()
    state = train(cfg, tmp_path / "r.h5", dataset=data)
    gap, grad, act, net = _recompute_epoch(cfg, data)
    for w_got, w_want in zip(state.network.weights, net.weights):  # the replay followed the same trajectory
        np.testing.assert_allclose(w_got, w_want, rtol=0, atol=1e-12)
    d = load_run(tmp_path / "r.h5").diagnostics
    assert d.state_gap.shape == (1, len(gap)) and d.grad_abs.shape == (1, len(grad))
    np.testing.assert_allclose(d.state_gap[0], gap, rtol=1e-10)
    np.testing.assert_allclose(d.grad_abs[0], grad, rtol=1e-10)
    assert (d.state_gap > 0).all() and (d.grad_abs > 0).all()
    assert d.activity.shape == (1, len(gap), 3)
    np.testing.assert_allclose(d.activity[0], act, rtol=1e-10)
    assert np.all((d.activity[0, :, 1:] > 0) & (d.activity[0, :, 1:] <= 1))


def test_shapes_names_and_the_hdf5_layout(tmp_path):
    out = tmp_path / "r.h5"
    train(_config(arch=(6, 5, 4, 3), output="ce", epochs=3), out, dataset=_dataset())
    with h5py.File(out, "r") as f:
        g = f["diagnostics"]
        assert g["state_gap"].shape == (3, 2) and g["grad_abs"].shape == (3, 3)  # h1, h2 relaxed; 3 connections
        assert g["state_gap"].dtype == np.float64
        assert str(g.attrs["layers"]) == '["h1", "h2"]'
        assert str(g.attrs["connections"]) == '["x->h1", "h1->h2", "h2->readout"]'
        assert set(f["history"].keys()) == set(HISTORY_KEYS)  # /history is untouched
    d = load_run(out).diagnostics
    assert d.layers == ("h1", "h2") and d.connections == ("x->h1", "h1->h2", "h2->readout")
    assert np.isfinite(d.state_gap).all() and np.isfinite(d.grad_abs).all()


def test_the_epoch0_checkpoint_has_the_named_empty_group(tmp_path):
    out = tmp_path / "r.h5"
    train(_config(epochs=0), out, dataset=_dataset())
    d = load_run(out).diagnostics
    assert d.recorded and d.n_epochs == 0 and d.state_gap.shape == (0, 3) and d.grad_abs.shape == (0, 3)


def test_resume_equals_an_uninterrupted_run_bit_for_bit(tmp_path):
    data = _dataset()
    full = train(_config(epochs=3), tmp_path / "full.h5", dataset=data)
    train(_config(epochs=1), tmp_path / "part.h5", dataset=data)
    resumed = train(_config(epochs=3), tmp_path / "part.h5", resume=True, dataset=data)
    a, b = load_run(tmp_path / "full.h5").diagnostics, load_run(tmp_path / "part.h5").diagnostics
    assert a.n_epochs == b.n_epochs == 3
    assert np.array_equal(a.state_gap, b.state_gap) and np.array_equal(a.grad_abs, b.grad_abs)
    assert a.state_gap.tobytes() == b.state_gap.tobytes()
    assert all(np.array_equal(w, v) for w, v in zip(full.network.weights, resumed.network.weights))


def test_a_file_without_the_group_loads_and_resumes_with_nan_rows(tmp_path):
    out = tmp_path / "r.h5"
    data = _dataset()
    train(_config(epochs=2), out, dataset=data)
    with h5py.File(out, "a") as f:  # as written by a neuro-hts before the diagnostics
        del f["diagnostics"]
    state = load_run(out)
    assert not state.diagnostics.recorded and state.diagnostics.n_epochs == 0
    assert len(state.history["test_accuracy"]) == 2
    train(_config(epochs=3), out, resume=True, dataset=data)
    d = load_run(out).diagnostics
    assert d.n_epochs == 3 and np.isnan(d.state_gap[:2]).all() and np.isfinite(d.state_gap[2]).all()


def test_schema1_fixture_loads_with_empty_diagnostics():
    state = load_run(FIXTURES / "run_float.h5")
    assert not state.diagnostics.recorded and state.diagnostics.n_epochs == 0
    assert state.epochs_completed > 0


def test_a_diagnostics_group_longer_than_the_run_is_refused(tmp_path):
    from neuro_hts.errors import RunFileError

    out = tmp_path / "r.h5"
    state = train(_config(epochs=1), out, dataset=_dataset())
    state.diagnostics.append(np.ones(3), np.ones(3))  # two rows for one epoch
    save_run(tmp_path / "bad.h5", state)
    with pytest.raises(RunFileError, match="2 rows for 1 completed epochs"):
        load_run(tmp_path / "bad.h5")


def test_numba_records_what_the_numpy_reference_does():
    cfg = _config(nudging="symmetric")
    net = init_network(cfg, np.float64)
    data = _dataset()
    x = np.asarray(data.x_train[:4], dtype=np.float64)
    y = one_hot(data.y_train[:4], 3, np.float64)
    from neuro_hts.algorithms import make_algorithm

    algo = make_algorithm(cfg)
    got = {}
    for name in ("numpy", "numba"):
        eng = FloatEngine(cfg, make_optimizer(cfg.train, net.n_layers), backend=get_backend(name, np.float64))
        got[name] = eng.train_step(net.copy(), x, y, algo).diagnostics
    np.testing.assert_allclose(got["numba"].state_gap, got["numpy"].state_gap, rtol=1e-9)
    np.testing.assert_allclose(got["numba"].grad_abs, got["numpy"].grad_abs, rtol=1e-9)
    assert (got["numpy"].state_gap > 0).all()


def test_the_bptt_trainer_records_gradients_and_no_state_gap(tmp_path):
    out = tmp_path / "r.h5"
    train(_config(trainer="bptt"), out, dataset=_dataset())
    d = load_run(out).diagnostics
    assert np.isnan(d.state_gap).all() and np.isfinite(d.grad_abs).all() and (d.grad_abs > 0).all()


def test_conv_and_dendritic_networks_record_diagnostics(tmp_path):
    conv = load_config(MODELS / "digits_cnn.toml").replace(
        train={"epochs": 1, "t1": 8, "t2": 3}, data={"n_train": 40, "n_test": 20})
    train(conv, tmp_path / "c.h5")
    d = load_run(tmp_path / "c.h5").diagnostics
    assert d.layers == ("h1", "out") and d.connections == ("x->h1", "h1->out")
    assert d.state_gap.shape == (1, 2) and (d.state_gap > 0).all() and (d.grad_abs > 0).all()
    toml = tmp_path / "digits_dendritic.toml"
    toml.write_text((MODELS / "mnist_dendritic.toml").read_text().replace("shape = [784]", "shape = [64]").replace(
        "shape = [256]", "shape = [16]").replace('dataset = "mnist"', 'dataset = "digits"'))
    dend = load_config(toml).replace(train={"epochs": 1, "t1": 8, "t2": 3, "batch_size": 20}, data={"n_train": 40, "n_test": 20})
    train(dend, tmp_path / "d.h5")
    d = load_run(tmp_path / "d.h5").diagnostics
    assert d.state_gap.shape == (1, len(d.layers)) and d.grad_abs.shape == (1, len(d.connections))
    assert np.isfinite(d.state_gap).all() and (d.grad_abs > 0).all()


def test_the_fixed_point_engines_record_none():
    from neuro_hts.hardware.fixed_engine import FixedEngine

    assert FixedEngine.records_diagnostics is False and FloatEngine.records_diagnostics is True


def test_activity_stats_by_hand():
    from neuro_hts.diagnostics import activity_stats

    s = np.array([[0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.005]])  # one layer, two samples
    got = activity_stats([s])[0]
    h0 = np.log(2) / np.log(4)  # two equal units of four: half the maximum entropy
    p = np.array([1.0, 0.005]) / 1.005
    h1 = -(p * np.log(p)).sum() / np.log(4)
    np.testing.assert_allclose(got, [2.005 / 8, 3 / 8, (h0 + h1) / 2], rtol=1e-12)
    assert activity_stats([np.full((3, 5), 0.2)])[0, 2] == pytest.approx(1.0)  # all equally active
    assert np.isnan(activity_stats([np.zeros((2, 3))])[0, 2])  # no activity: entropy undefined


def test_the_helpers():
    a = [np.array([[3.0, 4.0], [0.0, 0.0]])]
    b = [np.zeros((2, 2))]
    assert state_gaps(a, b, 0.5, 0.0)[0] == pytest.approx(2.5)  # mean of ||(3,4)|| = 5 and 0
    assert state_gaps(a, b, 0.5, -0.5)[0] == pytest.approx(1.25)  # symmetric: halved
    assert grad_abs_means([np.array([[-1.0, 3.0]])])[0] == pytest.approx(2.0)
    acc = EpochAccumulator(1, 1)
    assert np.isnan(acc.mean()[0]).all()
    d = Diagnostics.start(["h1"], ["x->h1"])
    d.append([1.0], [2.0])
    d.pad_to(3)
    assert d.n_epochs == 3 and np.isnan(d.state_gap[:2, 0]).all() and d.state_gap[2, 0] == 1.0


# --------------------------------------------------------------------------- the figure


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    data = _dataset()
    train(_config(epochs=2), tmp / "a.h5", dataset=data)
    train(_config(arch=(6, 4, 4, 4, 3), epochs=2), tmp / "b.h5", dataset=data)
    return tmp / "a.h5", tmp / "b.h5"


def _sha(p) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def _error_lines(err: str) -> list[str]:
    return [ln for ln in err.strip().splitlines() if not ln.startswith(("INFO ", "DEBUG "))]


def test_plot_diagnostics_writes_a_png_with_one_column_per_run(tmp_path, two_runs, run_cli):
    a, b = two_runs
    fig = tmp_path / "fig.png"
    code, out, err = run_cli(["plot", "diagnostics", str(a), str(b), "--out", str(fig)])
    assert code == 0, err
    data = fig.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width = int.from_bytes(data[16:20], "big")
    one = tmp_path / "one.png"
    assert run_cli(["plot", "diagnostics", str(a), "--out", str(one)])[0] == 0
    assert width > int.from_bytes(one.read_bytes()[16:20], "big")  # two columns are wider than one
    assert f"figure: {fig}" in out and "a.h5: last epoch state gap h1" in out
    assert not list(tmp_path.glob(".*tmp"))  # written atomically: no temporary left


def test_plot_diagnostics_refuses_a_run_without_diagnostics(tmp_path, two_runs, run_cli):
    a, _ = two_runs
    old = tmp_path / "old.h5"
    shutil.copy(FIXTURES / "run_float.h5", old)
    fig = tmp_path / "fig.png"
    code, _, err = run_cli(["plot", "diagnostics", str(a), str(old), "--out", str(fig)])
    assert code == 2 and not fig.exists()
    lines = _error_lines(err)
    assert len(lines) == 1 and "old.h5 has no training diagnostics" in lines[0]


@pytest.mark.parametrize("case", ["not_hdf5", "missing", "no_runs", "out_is_input", "exists"])
def test_plot_diagnostics_fails_cleanly_on_bad_input(tmp_path, two_runs, run_cli, case):
    a, _ = two_runs
    fig = tmp_path / "fig.png"
    before = _sha(a)
    if case == "not_hdf5":
        bad = tmp_path / "x.h5"
        bad.write_text("not a run")
        argv = [str(bad), "--out", str(fig)]
    elif case == "missing":
        argv = [str(tmp_path / "nope.h5"), "--out", str(fig)]
    elif case == "no_runs":
        argv = ["--out", str(fig)]
    elif case == "out_is_input":
        argv = [str(a), "--out", str(a), "--force"]
    else:
        fig.write_bytes(b"keep")
        argv = [str(a), "--out", str(fig)]
    code, _, err = run_cli(["plot", "diagnostics", *argv])
    assert code == 2
    assert len(_error_lines(err)) == 1 and _error_lines(err)[0].startswith("neuro-hts: error:")
    assert _sha(a) == before  # never overwrites an input
    assert (fig.read_bytes() == b"keep") if case == "exists" else not fig.exists()


def test_plain_plot_still_takes_one_run(tmp_path, two_runs, run_cli):
    a, b = two_runs
    fig = tmp_path / "p.png"
    assert run_cli(["plot", str(a), "--out", str(fig)])[0] == 0 and fig.stat().st_size > 1000
    code, _, err = run_cli(["plot", str(a), str(b), "--out", str(tmp_path / "q.png")])
    assert code == 2 and "plot diagnostics" in err
