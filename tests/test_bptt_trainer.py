"""``train.trainer = "bptt"``: the same network trained by the exact gradient of its free phase.

The EP family's reference (issues 12 and 13 compare EP with "the same net trained by
BPTT"). Checked: one training step is bit for bit the optimiser step on
:func:`neuro_hts.bptt.bptt_gradients` for a dense, a convolutional and a dendritic net;
it trains the embedded digits; the settings it cannot honour are refused in one line.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_conv_fast import batch as conv_batch
from test_conv_fast import two_conv_config

from neuro_hts.algorithms import make_algorithm
from neuro_hts.bptt import bptt_gradients
from neuro_hts.config import Config
from neuro_hts.data import load_dataset, one_hot
from neuro_hts.dendritic import dendritic_model
from neuro_hts.engines import make_engine
from neuro_hts.errors import ConfigError
from neuro_hts.learning import make_optimizer
from neuro_hts.network import init_network


def _dense():
    cfg = Config.from_dict({"model": {"arch": [20, 12, 5], "activation": "sigmoid4"},
                            "dt": {"dist": "lognormal", "mean": 0.4, "std": 0.15}})
    rng = np.random.default_rng(0)
    return cfg, rng.uniform(0, 1, (6, 20)), np.eye(5)[rng.integers(0, 5, 6)]


def _conv():
    x, y = conv_batch()
    return two_conv_config("avg"), x, y


def _dendritic():
    cfg = Config.from_dict({"model": dendritic_model((20, 12, 5)), "dt": {"dist": "lognormal", "mean": 0.3, "std": 0.1}})
    rng = np.random.default_rng(1)
    return cfg, rng.uniform(0, 1, (6, 20)), np.eye(5)[rng.integers(0, 5, 6)]


@pytest.mark.parametrize("make", [_dense, _conv, _dendritic], ids=["dense", "conv", "dendritic"])
def test_one_step_is_the_optimiser_step_on_the_bptt_gradient(make):
    cfg, x, y = make()
    cfg = cfg.replace(train={"trainer": "bptt", "backend": "numpy", "t1": 25, "optimizer": "sgd", "lr": [0.3],
                             "momentum": 0.0})
    net = init_network(cfg)
    ref = net.copy()
    engine = make_engine(cfg, make_optimizer(cfg.train, net.n_layers))
    stats = engine.train_step(net, x, y, make_algorithm(cfg))
    gW, gb, _ = bptt_gradients(ref, x, y, 25)
    lr = cfg.train.layer_lrs(ref.n_layers)
    for l in range(ref.n_layers):
        np.testing.assert_array_equal(net.weights[l], ref.weights[l] - lr[l] * gW[l])
        np.testing.assert_array_equal(net.biases[l], ref.biases[l] - lr[l] * gb[l])
    assert stats.n == 6 and stats.free_steps == 25


def test_it_trains_the_digits_and_the_run_file_records_it(tmp_path, run_cli):
    from neuro_hts.runfile import load_run

    out = tmp_path / "bptt.h5"
    code, _, err = run_cli(["train", "--dataset", "digits", "--arch", "64-32-10", "--epochs", "3", "--t1", "40",
                            "--activation", "sigmoid4", "--trainer", "bptt", "--backend", "numpy", "--out", str(out)])
    assert code == 0, err
    st = load_run(out)
    assert st.config.train.trainer == "bptt"
    # measured 0.953 (EP with the same flags: 0.953); with the hard sigmoid (T1 60) BPTT reaches only 0.683
    # at 3 epochs (EP 0.942): the exact gradient is zero through saturated units that EP's finite beta moves
    assert st.history["test_accuracy"][-1] > 0.85, st.history["test_accuracy"]


@pytest.mark.parametrize("extra,needs", [
    ({"train": {"algorithm": "chl"}}, "train.algorithm = 'ep'"),
    ({"adapt": {"steps": 5}}, "adapt.steps = 0"),
    ({"train": {"t1_tol": 1e-4}}, "no train.t1_tol"),
    ({"train": {"arith": "fixed", "target": "loihi2"}}, "train.arith = 'float'"),
])
def test_what_bptt_cannot_honour_is_refused_in_one_line(extra, needs):
    table = {"train": {"trainer": "bptt", **extra.get("train", {})}, **{k: v for k, v in extra.items() if k != "train"}}
    with pytest.raises(ConfigError, match="trainer = 'bptt'") as exc:
        Config.from_dict(table)
    assert needs in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="trainer must be one of"):
        Config.from_dict({"train": {"trainer": "backprop"}})


def test_numba_backend_runs_it_in_float32():
    d = load_dataset("digits", None)
    x, y = d.x_train[:20].astype(np.float32), one_hot(d.y_train[:20], 10, np.float32)
    cfg = Config.from_dict({"model": {"arch": [64, 16, 10]}, "train": {"trainer": "bptt", "backend": "numba", "t1": 10}})
    net = init_network(cfg, dtype=np.float32)
    before = [w.copy() for w in net.weights]
    engine = make_engine(cfg, make_optimizer(cfg.train, net.n_layers))
    engine.train_step(net, x, y, make_algorithm(cfg))
    assert all(w.dtype == np.float32 for w in net.weights)
    assert all(np.max(np.abs(a - b)) > 0 for a, b in zip(net.weights, before))
