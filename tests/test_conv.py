"""Convolutional HTS-EP networks (issue 11, the NumPy reference): declaration, parts, engines.

The conv2d connection itself is checked by the contract tests of tests/test_connections.py;
here: configs with C x H x W layers, the network's parameters and per-unit / per-channel
dt, which engines run such networks and which refuse them, quantize / deploy of a CNN run
(the fixed-point kernel itself: tests/test_fixed_conv.py), and BPTT through a CNN against
finite differences of the loss (EP against BPTT: tests/test_gdu.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from neuro_hts import dynamics
from neuro_hts.bptt import bptt_gradients
from neuro_hts.config import Config
from neuro_hts.distributions import HOMOGENEOUS, available_distributions
from neuro_hts.errors import ConfigError
from neuro_hts.network import init_network


def cnn_tables(pool="avg", hidden=(4, 3, 3), classes=10, output="mse", **conv):
    """1 x 8 x 8 input, conv2d 4 channels k3 + pool 2, dense to 10 (a readout of h1 with 'ce')."""
    layers = [{"name": "x", "shape": [1, 8, 8]}, {"name": "h1", "shape": list(hidden)}]
    conns = [{"kind": "conv2d", "pre": "x", "post": "h1", "kernel": 3, "pool": pool, "pool_size": 2, **conv}]
    if output == "mse":
        layers.append({"name": "out", "shape": [classes]})
        conns.append({"kind": "dense", "pre": "h1", "post": "out"})
        costs = [{"kind": "mse", "layer": "out"}]
    else:
        layers.append({"name": "h2", "shape": [12]})
        conns.append({"kind": "dense", "pre": "h1", "post": "h2"})
        costs = [{"kind": "ce", "layer": "h2", "classes": classes}]
    return {"layers": layers, "connections": conns, "costs": costs}


def cnn_config(pool="avg", *, model=None, dt=None, train=None, output="mse"):
    return Config.from_dict({"model": {**cnn_tables(pool, output=output), **(model or {})},
                             "dt": {"layers": "all", **(dt or {})}, "train": {"backend": "numpy", **(train or {})}})


# ------------------------------------------------------------------ declaration
def test_a_cnn_config_round_trips_and_has_the_layer_sizes_as_arch():
    cfg = cnn_config("max")
    assert cfg.model.arch == (64, 36, 10) and cfg.model.output == "mse"
    conv = cfg.model.connections[0]
    assert dict(conv.options) == {"kernel": 3, "pool": "max", "pool_size": 2}
    assert cfg.model.spec.options(conv) == {"kernel": 3, "stride": 1, "padding": 0, "pool": "max", "pool_size": 2,
                                            "pool_stride": 2}
    assert Config.from_json(cfg.to_json()) == cfg
    assert cfg.to_dict()["model"]["connections"][0] == {"kind": "conv2d", "pre": "x", "post": "h1", "kernel": 3,
                                                        "pool": "max", "pool_size": 2}
    assert cfg.model.spec.chain_violations("hard_sigmoid") == []
    assert any("this path runs dense chains only" in r for r in cfg.model.spec.dense_violations("hard_sigmoid"))


@pytest.mark.parametrize("edit,message", [
    (dict(hidden=(4, 4, 4)), "maps [1, 8, 8] to [4, 3, 3], but the post layer has shape [4, 4, 4]"),
    (dict(stride=0), "conv2d stride must be an integer >= 1"),
    (dict(pool="min"), "conv2d pool must be one of none, avg, max"),
    (dict(dilation=2), "unknown key(s) in [[model.connections]]: dilation"),
])
def test_bad_conv_declarations_are_one_line_errors(edit, message):
    with pytest.raises(ConfigError) as info:
        Config.from_dict({"model": cnn_tables(**edit)})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_missing_kernel_and_conv_after_dense_are_refused_with_the_rule():
    t = cnn_tables()
    del t["connections"][0]["kernel"]
    with pytest.raises(ConfigError, match="conv2d needs option kernel"):
        Config.from_dict({"model": t})
    t = cnn_tables()  # a conv2d reading a [n] layer: conv2d then dense, never back
    t["layers"] = [{"name": "x", "shape": [64]}, {"name": "h1", "shape": [4, 3, 3]}, {"name": "out", "shape": [10]}]
    with pytest.raises(ConfigError, match=r"conv2d links C x H x W layers, got \[64\] -> \[4, 3, 3\]"):
        Config.from_dict({"model": t})
    t = cnn_tables()  # the cost must read a [n] layer
    t["layers"], t["connections"] = t["layers"][:2], t["connections"][:1]
    t["costs"] = [{"kind": "mse", "layer": "h1"}]
    with pytest.raises(ConfigError, match="a cost reads a layer of shape"):
        Config.from_dict({"model": t})


# ------------------------------------------------------------------ the network
def test_conv_parameters_have_kernel_per_channel_bias_and_fan_in_scale():
    net = init_network(cnn_config("avg", model={"init_scale": 1.0}))
    assert [w.shape for w in net.weights] == [(4, 1, 3, 3), (10, 36)]
    assert [b.shape for b in net.biases] == [(4,), (10,)]
    assert [d.shape for d in net.dts] == [(4, 3, 3), (10,)]
    assert net.shapes == ((1, 8, 8), (4, 3, 3), (10,)) and net.arch == (64, 36, 10) and not net.is_dense
    assert np.abs(net.weights[0]).max() <= 1 / 3 and np.abs(net.weights[0]).max() > 0.25  # U(-1/sqrt(9), 1/sqrt(9))
    assert np.abs(net.weights[1]).max() <= 1 / 6
    with pytest.raises(ValueError, match="do not fit"):
        type(net)([net.weights[0][:2], net.weights[1]], net.biases, net.dts, spec=net.spec)


@pytest.mark.parametrize("dist", available_distributions())
def test_every_dt_law_gives_every_unit_a_dt_or_one_per_channel(dist):
    per_unit = init_network(cnn_config(dt={"dist": dist, "std": 0.1})).dts[0]
    per_chan = init_network(cnn_config(dt={"dist": dist, "std": 0.1, "per_channel": True})).dts[0]
    assert per_unit.shape == per_chan.shape == (4, 3, 3)
    for d in (per_unit, per_chan):
        assert d.min() >= 1e-3 and d.max() <= 0.5
    # per channel: one value per feature map
    assert np.all(per_chan == per_chan[:, :1, :1])
    if dist not in HOMOGENEOUS:
        assert len(np.unique(per_chan)) > 1  # channels differ
        assert any(len(np.unique(per_unit[c])) > 1 for c in range(4))  # units of a channel differ


def test_per_channel_bias_is_the_primitive_term_summed_over_the_feature_map():
    net = init_network(cnn_config("max"))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (3, 64))
    states = [rng.uniform(0, 1, (3, 4, 3, 3)), rng.uniform(0, 1, (3, 10))]
    phi0 = dynamics.primitive(net, x, states)
    net.biases[0][2] += 0.5
    assert dynamics.primitive(net, x, states) - phi0 == pytest.approx(0.5 * states[0][:, 2].sum(axis=(1, 2)))


# ------------------------------------------------------------------ engines
def test_the_numpy_and_numba_float_engines_train_a_cnn():
    from neuro_hts.algorithms import make_algorithm
    from neuro_hts.backends import get_backend
    from neuro_hts.engines import FloatEngine, check_supported
    from neuro_hts.learning import make_optimizer

    cfg = cnn_config("max", train={"t1": 20, "t2": 5, "beta": 0.2})
    algo = make_algorithm(cfg)
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, (6, 1, 8, 8)), np.eye(10)[rng.integers(0, 10, 6)]
    for backend in ("numpy", "numba"):  # the numba conv path against the reference: tests/test_conv_fast.py
        be = get_backend(backend)
        net = init_network(cfg).astype(be.dtype)
        engine = FloatEngine(cfg, make_optimizer(cfg.train, 2), backend=be)
        check_supported(engine, net, algo)
        before = [w.copy() for w in net.weights]
        stats = engine.train_step(net, x.astype(be.dtype), y.astype(be.dtype), algo)
        assert stats.n == 6 and np.isfinite(stats.loss_sum)
        assert all(np.abs(w - b).max() > 0 for w, b in zip(net.weights, before))
        ev = engine.evaluate(net, x.reshape(6, 64), y.argmax(axis=1), algo.free_phase())
        assert ev.predictions.shape == (6,)


def test_training_a_cnn_with_fixed_arithmetic_is_a_one_line_error(tmp_path):
    from neuro_hts.training import train as run_training

    cfg = cnn_config("avg", train={"epochs": 1, "arith": "fixed", "target": "loihi2"})
    with pytest.raises(ConfigError, match="arith 'fixed' runs dense chains") as info:
        run_training(cfg, tmp_path / "run.h5")
    assert "\n" not in str(info.value) and not (tmp_path / "run.h5").exists()


# ------------------------------------------------------------------ BPTT through a CNN
def _fd_loss_gradients(net, x, y, n_steps, eps=1e-6):
    def loss():
        return float(dynamics.cost(net, dynamics.relax(net, x, n_steps).states, y).mean())

    out = []
    for p in list(net.weights) + list(net.biases):
        g = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            orig = p[i]
            p[i] = orig + eps
            lp = loss()
            p[i] = orig - eps
            lm = loss()
            p[i] = orig
            g[i] = (lp - lm) / (2 * eps)
        out.append(g)
    return out


def max_pool_margin(net, x, n_steps) -> float:
    """Smallest gap, along the free phase, between the two largest values of a max-pooling
    window of a conv2d's convolution (inf without max pooling)."""
    conns = net.connections()
    x = dynamics.as_input(net, x)
    states = dynamics.zero_states(net, x.shape[0], x.dtype)
    drive1 = dynamics.input_drive(net, x)
    margin = np.inf
    for _ in range(n_steps + 1):
        r = [x] + list(states)
        for l, c in enumerate(conns):
            if getattr(c, "pool", None) == "max":
                z = c.conv(r[l])
                win = np.lib.stride_tricks.sliding_window_view(z, (c.pool_size,) * 2, axis=(2, 3))
                win = win[:, :, ::c.pool_stride, ::c.pool_stride].reshape(*z.shape[:2], -1, c.pool_size ** 2)
                top = np.sort(win, axis=-1)
                margin = min(margin, float((top[..., -1] - top[..., -2]).min()))
        states = dynamics.relax_step(net, states, drive1)
    return margin


@pytest.mark.parametrize("pool", ["avg", "max", "none"])
@pytest.mark.parametrize("output", ["mse", "ce"])
def test_bptt_through_a_cnn_matches_finite_differences(pool, output):
    t = cnn_tables(pool, hidden=(2, 3, 3) if pool != "none" else (2, 6, 6), output=output)
    if pool == "none":
        del t["connections"][0]["pool_size"]
    cfg = Config.from_dict({"model": {**t, "activation": "sigmoid4", "init_scale": 2.0}, "dt": {"layers": "all"},
                            "train": {"backend": "numpy"}})
    net = init_network(cfg)
    rng = np.random.default_rng(5)
    x, y = rng.uniform(0, 1, (2, 1, 8, 8)), np.eye(10)[rng.integers(0, 10, 2)]
    n_steps = 5
    assert max_pool_margin(net, x, n_steps) > 1e-4  # FD does not cross an argmax change
    gW, gb, loss = bptt_gradients(net, x, y, n_steps)
    fd = _fd_loss_gradients(net, x, y, n_steps)
    for i, (a, b) in enumerate(zip(gW + gb, fd)):
        assert a.shape == b.shape
        assert np.abs(b).max() > 1e-5, f"parameter {i}: vacuous"
        assert np.abs(a - b).max() <= 1e-6 * np.abs(b).max(), f"parameter {i}"


def test_a_cnn_passes_the_design_rules_and_quantizes_with_a_shared_exponent_per_kernel():
    from neuro_hts.hardware import load_target
    from neuro_hts.hardware.drc import run_design_rules
    from neuro_hts.hardware.quantize import quantize_network

    net = init_network(cnn_config("max"))
    target = load_target("loihi2")
    assert run_design_rules(net, target) == []
    b = quantize_network(net, target)
    assert b.network == net.spec and b.shapes == net.shapes and b.arch == (64, 36, 10)
    conv = b.layers[0]
    assert conv.weight_mantissa.shape == (4, 1, 3, 3) and conv.bias.shape == (4,) and conv.decay.shape == (36,)
    # Loihi 2 keeps even mantissas: the grid step is 2 * 2**e, the rounding error at most 2**e
    assert np.all(conv.weight_mantissa % 2 == 0)
    assert np.abs(conv.weights_float() - net.weights[0]).max() <= 2.0 ** conv.weight_exponent
    assert np.array_equal(conv.dt, net.dts[0].reshape(-1))


def test_loaders_keep_the_image_shape_on_request():
    from neuro_hts.data import IMAGE_SHAPES, load_dataset

    flat = load_dataset("digits")
    img = load_dataset("digits", images=True)
    assert flat.x_train.shape == (1437, 64) and img.x_train.shape == (1437, 1, 8, 8) and img.x_test.shape == (360, 1, 8, 8)
    assert img.sample_shape == IMAGE_SHAPES["digits"] and img.n_features == flat.n_features == 64
    assert np.array_equal(img.x_train.reshape(1437, 64), flat.x_train) and not img.x_train.flags.writeable
    assert img.x_train.flags.c_contiguous


# ------------------------------------------------------------------ the CLI and run files
MODELS = __import__("pathlib").Path(__file__).resolve().parents[1] / "models"


def test_digits_cnn_trains_saves_resumes_and_evaluates_through_the_cli(tmp_path, run_cli):
    import h5py

    from neuro_hts.runfile import load_run

    run = tmp_path / "cnn.h5"
    base = ["train", "--config", str(MODELS / "digits_cnn.toml"), "--n-train", "200", "--n-test", "60", "--t1", "20",
            "--t2", "5"]
    code, out, err = run_cli([*base, "--epochs", "1", "--out", str(run)])
    assert code == 0, err
    with h5py.File(run, "r") as f:
        assert f["layers/1/weight"].shape == (16, 1, 3, 3)
        assert f["layers/1/bias"].shape == (16,) and f["layers/1/dt"].shape == (16, 4, 4)
        assert f["layers/2/weight"].shape == (10, 256)
    state = load_run(run)
    assert state.network.shapes == ((1, 8, 8), (16, 4, 4), (10,)) and state.network.connections()[0].pool == "max"
    code, out, err = run_cli(["train", "--resume", str(run), "--epochs", "2"])
    assert code == 0, err
    resumed = load_run(run)
    assert resumed.epochs_completed == 2 and not np.array_equal(resumed.network.weights[0], state.network.weights[0])
    code, out, err = run_cli(["eval", str(run), "--predictions", str(tmp_path / "p.npy")])
    assert code == 0, err
    assert f"test accuracy: {resumed.history['test_accuracy'][-1]:.4f} (" in out
    assert np.load(tmp_path / "p.npy").shape == (60,)


def test_cli_refuses_the_fixed_path_for_a_cnn_in_one_line(tmp_path, run_cli):
    code, _, err = run_cli(["train", "--config", str(MODELS / "digits_cnn.toml"), "--epochs", "1", "--arith", "fixed",
                            "--target", "loihi2", "--out", str(tmp_path / "x.h5")])
    assert code == 2 and "arith 'fixed' runs dense chains" in err and err.count("\n") == 1


def test_cli_trains_and_evaluates_a_cnn_with_the_numba_backend(tmp_path, run_cli):
    from neuro_hts.runfile import load_run

    run = tmp_path / "fast.h5"
    code, _, err = run_cli(["train", "--config", str(MODELS / "digits_cnn.toml"), "--backend", "numba", "--epochs", "1",
                            "--n-train", "200", "--n-test", "60", "--t1", "20", "--t2", "5", "--out", str(run)])
    assert code == 0, err
    state = load_run(run)
    assert state.config.train.backend == "numba" and state.network.dtype == np.float32
    acc = state.history["test_accuracy"][-1]
    assert acc > 0.3  # 10 classes: above chance after one epoch of 200 digits
    code, out, err = run_cli(["eval", str(run), "--backend", "numba"])
    assert code == 0, err
    assert f"test accuracy: {acc:.4f} (" in out  # the same relaxation as the end of training


def test_quantize_and_deploy_a_cnn_run_through_the_cli(tmp_path, run_cli):
    from neuro_hts.hardware.bundle import load_bundle
    from neuro_hts.hardware.fixed_sim import FixedPointSimulator

    run = tmp_path / "cnn.h5"
    code, _, err = run_cli(["train", "--config", str(MODELS / "digits_cnn.toml"), "--epochs", "1", "--n-train", "40",
                            "--n-test", "20", "--t1", "5", "--t2", "2", "--out", str(run)])
    assert code == 0, err
    bundle = tmp_path / "b.h5"
    code, _, err = run_cli(["quantize", str(run), "--target", "loihi2", "--out", str(bundle)])
    assert code == 0, err
    b = load_bundle(bundle)
    assert b.shapes == ((1, 8, 8), (16, 4, 4), (10,)) and b.layers[0].weight_mantissa.shape == (16, 1, 3, 3)
    code, out, err = run_cli(["deploy", str(bundle), "--backend", "numba", "--n-samples", "7"])
    assert code == 0, err
    from neuro_hts.data import load_dataset

    data = load_dataset("digits")
    right = int(np.sum(FixedPointSimulator(b).predict(data.x_test[:7], 5) == data.y_test[:7]))
    assert f"accuracy: {right / 7:.4f} ({right}/7)" in out
    # Lava runs a CNN bundle in fixed point (tests/test_lava_conv.py), not in floating_pt
    code, _, err = run_cli(["deploy", str(bundle), "--backend", "lava", "--arith", "float", "--n-samples", "5"])
    assert code == 2 and "Lava floating_pt runs dense chains only" in err and err.count("\n") == 1


def test_digits_cnn_config_learns_the_digits(tmp_path):
    """Six of the config's 15 epochs (measured: 96.4 % after 6, 97.5 % after 15, seed 0)."""
    from neuro_hts.config import load_config
    from neuro_hts.training import train

    cfg = load_config(MODELS / "digits_cnn.toml")
    assert cfg.train.backend == "numpy" and cfg.model.connections[0].kind == "conv2d"
    state = train(cfg.replace(train={"epochs": 6}), tmp_path / "cnn.h5")
    assert state.history["test_accuracy"][-1] >= 0.94
    assert state.network.dts[0].shape == (16, 4, 4) and state.network.dts[0].std() > 0.05


def test_deploy_runs_a_cnn_run_in_float_on_the_numba_backend(tmp_path, run_cli):
    run = tmp_path / "cnn.h5"
    code, _, err = run_cli(["train", "--config", str(MODELS / "digits_cnn.toml"), "--epochs", "1", "--n-train", "40",
                            "--n-test", "20", "--t1", "5", "--t2", "2", "--out", str(run)])
    assert code == 0, err
    code, out, err = run_cli(["deploy", str(run), "--backend", "numba", "--arith", "float", "--n-samples", "5"])
    assert code == 0, err
    assert "accuracy" in out


def test_cli_dt_per_channel_flag_gives_one_dt_per_feature_map(tmp_path, run_cli):
    from neuro_hts.runfile import load_run

    run = tmp_path / "pc.h5"
    code, _, err = run_cli(["train", "--config", str(MODELS / "digits_cnn.toml"), "--epochs", "1", "--n-train", "20",
                            "--n-test", "10", "--t1", "3", "--t2", "2", "--dt-per-channel", "--out", str(run)])
    assert code == 0, err
    state = load_run(run)
    d = state.network.dts[0]
    assert state.config.dt.per_channel is True and d.shape == (16, 4, 4)
    assert np.all(d == d[:, :1, :1]) and len(np.unique(d)) > 8
