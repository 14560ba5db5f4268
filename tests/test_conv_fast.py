"""The conv fast path (backend 'numba' on a CNN, neuro_hts/backends/conv_kernels.py) against the NumPy reference.

Stated tolerance (docs/CONV.md "The fast path"): float64 within 1e-10 (absolute on states
in [0, 1], relative to the largest entry on gradients and weights), float32 within 1e-4 of
the float64 reference. Checked on a two-conv network (conv -> conv -> dense, so the conv
feedback between relaxed layers is exercised) for max / avg / no pooling, stride and
padding variants, overlapping pooling windows, per-unit and per-channel dt, both forms,
MSE and softmax readout: the states after a free and a nudged relaxation, the EP
gradients and the weights after one training step.
"""

from __future__ import annotations

import numpy as np
import pytest

from neuro_hts import dynamics
from neuro_hts.algorithms import make_algorithm
from neuro_hts.backends import get_backend
from neuro_hts.config import Config
from neuro_hts.engines import FloatEngine
from neuro_hts.learning import make_optimizer
from neuro_hts.network import init_network

TOL = {np.float64: 1e-10, np.float32: 1e-4}

#: name -> (conv1 options, h1 shape, conv2 options, h2 shape) on a 1 x 8 x 8 input
VARIANTS = {
    "max": ({"kernel": 3, "padding": 1, "pool": "max"}, [3, 4, 4], {"kernel": 3, "padding": 1, "pool": "max"}, [4, 2, 2]),
    "avg": ({"kernel": 3, "padding": 1, "pool": "avg"}, [3, 4, 4], {"kernel": 3, "padding": 1, "pool": "avg"}, [4, 2, 2]),
    "none-stride2": ({"kernel": 3, "stride": 2, "padding": 1}, [3, 4, 4], {"kernel": 2, "stride": 2}, [4, 2, 2]),
    "max-overlap": ({"kernel": 3, "pool": "max", "pool_size": 3, "pool_stride": 1}, [3, 4, 4],
                    {"kernel": 3, "padding": 2, "stride": 2, "pool": "max", "pool_size": 2, "pool_stride": 1}, [4, 2, 2]),
}


def two_conv_config(variant="max", *, form="leaky", output="mse", per_channel=False, activation="sigmoid4", train=None):
    c1, h1, c2, h2 = VARIANTS[variant]
    layers = [{"name": "x", "shape": [1, 8, 8]}, {"name": "h1", "shape": h1}, {"name": "h2", "shape": h2}]
    conns = [{"kind": "conv2d", "pre": "x", "post": "h1", **c1}, {"kind": "conv2d", "pre": "h1", "post": "h2", **c2}]
    if output == "mse":
        layers.append({"name": "out", "shape": [10]})
        conns.append({"kind": "dense", "pre": "h2", "post": "out"})
        costs = [{"kind": "mse", "layer": "out"}]
    else:  # a softmax readout of a relaxed [12] layer
        layers.append({"name": "h3", "shape": [12]})
        conns.append({"kind": "dense", "pre": "h2", "post": "h3"})
        costs = [{"kind": "ce", "layer": "h3", "classes": 10}]
    return Config.from_dict({
        "model": {"layers": layers, "connections": conns, "costs": costs, "form": form, "activation": activation,
                  "init_scale": 2.0},
        "dt": {"layers": "all", "dist": "lognormal", "mean": 0.4, "std": 0.2, "dt_max": 1.0, "per_channel": per_channel},
        "train": {"backend": "numba", "t1": 15, "t2": 5, "beta": 0.3, "optimizer": "adam", "lr": [1e-2], **(train or {})},
    })


def batch(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n, 1, 8, 8)), np.eye(10)[rng.integers(0, 10, n)]


def max_err(a, b):
    return max(float(np.abs(np.asarray(u, np.float64) - v).max()) for u, v in zip(a, b))


def rel_err(a, b):
    """Largest |a - b| relative to the largest |b|, over a list of arrays (b the reference)."""
    return max(float(np.abs(np.asarray(u, np.float64) - v).max() / np.abs(v).max()) for u, v in zip(a, b))


CASES = [("max", "leaky", "mse", False), ("avg", "leaky", "mse", True), ("none-stride2", "leaky", "mse", False),
         ("max-overlap", "leaky", "mse", True), ("max", "energy", "mse", False), ("max", "leaky", "ce", True),
         ("avg", "energy", "ce", False)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("variant,form,output,per_channel", CASES)
def test_fast_relaxations_and_ep_gradients_equal_the_reference(variant, form, output, per_channel, dtype):
    net = init_network(two_conv_config(variant, form=form, output=output, per_channel=per_channel))
    if per_channel:
        d = net.dts[0]
        assert np.all(d == d[:, :1, :1]) and len(np.unique(d)) == d.shape[0]
    x, y = batch()
    fast = get_backend("numba", dtype)
    assert fast.supports(net) == []
    fnet = net.astype(dtype)
    ref_free = dynamics.relax(net, x, 25)
    got_free = fast.relax(fnet, x.astype(dtype), 25)
    assert got_free.states[1].shape == (6, *net.shapes[2]) and got_free.states[0].dtype == dtype
    assert max_err(got_free.states, ref_free.states) <= TOL[dtype]
    assert np.abs(got_free.residual - ref_free.residual).max() <= TOL[dtype]
    assert ref_free.residual.max() > 1e-6  # the relaxation still moves: the residuals are compared, not two zeros
    for beta in (0.3, -0.3):
        ref_n = dynamics.relax(net, x, 8, states=ref_free.states, y=y, beta=beta)
        got_n = fast.relax(fnet, x.astype(dtype), 8, states=got_free.states, y=y.astype(dtype), beta=beta)
        assert max_err(got_n.states, ref_n.states) <= TOL[dtype]
        assert max_err(ref_n.states, ref_free.states) > 1e-3  # the nudge moved the states
    ref_g = dynamics.ep_gradients(net, x, y, ref_n.states, -0.3, ref_free.states, 0.0)
    got_g = fast.ep_gradients(fnet, x.astype(dtype), y.astype(dtype), got_n.states, -0.3, got_free.states, 0.0)
    assert [g.shape for g in got_g[0]] == [w.shape for w in net.weights] and got_g[0][0].ndim == 4
    assert rel_err(got_g[0] + got_g[1], ref_g[0] + ref_g[1]) <= TOL[dtype]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("pre", ["random", "zeros"])
def test_conv_products_equal_the_connection_including_argmax_ties(variant, pre):
    """Drive and feedback of each conv connection equal Conv2d's; on a zero pre state every window
    ties and the first maximum (C order) must win in both."""
    from neuro_hts.backends.conv_kernels import _Conn

    net = init_network(two_conv_config(variant))
    rng = np.random.default_rng(3)
    for conn, w in zip(net.connections()[:2], net.weights):
        r = rng.uniform(0, 1, (3, *conn.pre_shape)) if pre == "random" else np.zeros((3, *conn.pre_shape))
        u = rng.uniform(-1, 1, (3, *conn.post_shape))
        fast = _Conn(conn, w)
        drive = fast.forward(r, np.empty((3, *conn.post_shape)))
        feedback = fast.backward(u, np.empty((3, *conn.pre_shape)))
        assert np.abs(drive - conn.drive_post(r)).max() <= 1e-12
        ref_fb = conn.drive_pre(u, r)
        assert np.abs(ref_fb).max() > 0.1 and np.abs(feedback - ref_fb).max() <= 1e-12


def test_the_callers_states_are_not_written_into():
    net = init_network(two_conv_config("max"))
    x, y = batch(2)
    states = [np.full((2, *sh), 0.5) for sh in net.shapes[1:]]
    got = get_backend("numba", np.float64).relax(net, x, 3, states=states, y=y, beta=0.5)
    assert all(np.all(s == 0.5) for s in states) and max_err(got.states, states) > 1e-3


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("nudging", ["one-sided", "symmetric"])
def test_one_training_step_and_evaluation_equal_the_reference(nudging, dtype):
    cfg = two_conv_config("max", per_channel=True, train={"nudging": nudging})
    net0 = init_network(cfg)
    x, y = batch(8, seed=1)
    algo = make_algorithm(cfg)
    out = {}
    for name, dt in (("numpy", np.float64), ("numba", dtype)):
        net = net0.astype(dt)
        engine = FloatEngine(cfg, make_optimizer(cfg.train, net.n_layers), backend=get_backend(name, dt))
        stats = engine.train_step(net, x.astype(dt), y.astype(dt), algo)
        ev = engine.evaluate(net, x.reshape(8, 64).astype(dt), y.argmax(axis=1), algo.free_phase())
        out[name] = (net, stats, ev)
    (ref, rs, rev), (got, gs, gev) = out["numpy"], out["numba"]
    moved = rel_err(ref.weights, net0.weights)
    assert moved > 1e-3
    assert rel_err(got.weights + got.biases, ref.weights + ref.biases) <= TOL[dtype]
    assert abs(gs.loss_sum - rs.loss_sum) <= TOL[dtype] * max(1.0, abs(rs.loss_sum)) and gs.n_correct == rs.n_correct
    assert np.array_equal(gev.predictions, rev.predictions)


@pytest.mark.parametrize("algorithm", ["chl", "adapt"])
def test_other_phases_clamp_gamma_anchor_and_tol_equal_the_reference(algorithm):
    """CHL (output clamped to the target, feedback gain gamma) and an adjusted-adaptation phase (anchor, coe)."""
    net = init_network(two_conv_config("avg"))
    x, y = batch()
    fast = get_backend("numba", np.float64)
    free_r, free_g = dynamics.relax(net, x, 10), fast.relax(net, x, 10)
    if algorithm == "chl":
        kw = dict(y=y, clamp="target", gamma=0.7)
    else:
        kw = dict(y=y, beta=0.2, anchor=free_r.states, coe=0.3)
    ref = dynamics.relax(net, x, 6, states=free_r.states, **kw)
    got = fast.relax(net, x, 6, states=free_g.states, **kw)
    assert max_err(got.states, ref.states) <= 1e-10 and np.abs(got.residual - ref.residual).max() <= 1e-10
    assert max_err(ref.states, free_r.states) > 1e-3
    ref_t = dynamics.relax(net, x, 500, tol=1e-4)
    got_t = fast.relax(net, x, 500, tol=1e-4)
    assert got_t.n_steps == ref_t.n_steps < 500 and got_t.status == ref_t.status


def test_the_fast_path_refuses_a_bad_state_shape_in_one_line():
    net = init_network(two_conv_config("max"))
    x, _ = batch(2)
    with pytest.raises(ValueError, match=r"states\[1\] has shape \(2, 4, 4\), expected \(2, 4, 2, 2\)"):
        get_backend("numba").relax(net, x, 2, states=[np.zeros((2, 3, 4, 4)), np.zeros((2, 4, 4)), np.zeros((2, 10))])


# ------------------------------------------------------------------ the configs and the benchmark
MODELS = __import__("pathlib").Path(__file__).resolve().parents[1] / "models"


def test_the_laborieux_benchmark_config_is_their_mnist_recipe():
    from neuro_hts.config import load_config

    cfg = load_config(MODELS / "bench_cnn_laborieux.toml")
    spec, tc = cfg.model.spec, cfg.train
    assert [layer.shape for layer in spec.layers] == [(1, 28, 28), (32, 12, 12), (64, 4, 4), (10,)]
    assert [spec.options(c) for c in spec.connections[:2]] == [
        {"kernel": 5, "stride": 1, "padding": 0, "pool": "max", "pool_size": 2, "pool_stride": 2}] * 2
    assert spec.connections[2].kind == "dense" and cfg.model.output == "mse" and cfg.model.activation == "hard_sigmoid"
    assert (tc.t1, tc.t2, tc.batch_size, tc.beta, tc.nudging) == (200, 10, 100, 0.4, "one-sided")
    assert tc.optimizer == "adam" and tc.lr == (5e-5, 1e-5, 8e-6) and tc.backend == "numba"
    net = init_network(cfg, np.float32)
    assert all(np.all(d == 1.0) for d in net.dts)  # every dt = 1: their discrete-time dynamics


@pytest.mark.parametrize("name,dataset", [("mnist_cnn.toml", "mnist"), ("fashionmnist_cnn.toml", "fashion-mnist")])
def test_the_cnn_configs_run_the_fast_path_with_hts_in_the_conv_layers(name, dataset):
    from neuro_hts.config import load_config

    cfg = load_config(MODELS / name)
    assert cfg.data.dataset == dataset and cfg.train.backend == "numba"
    assert [c.kind for c in cfg.model.spec.connections] == ["conv2d", "conv2d", "dense"]
    net = init_network(cfg, np.float32)
    assert net.dts[0].shape == (16, 12, 12) and net.dts[1].shape == (32, 5, 5)
    assert net.dts[0].std() > 0.05 and net.dts[1].std() > 0.05 and np.all(net.dts[2] == net.dts[2][0])
    assert get_backend("numba").supports(net) == []


def test_bench_conv_prints_samples_per_second_for_both_paths():
    import subprocess
    import sys

    script = MODELS.parent / "scripts" / "bench_conv.py"
    out = subprocess.run([sys.executable, str(script), "--config", str(MODELS / "digits_cnn.toml"), "--batches", "1",
                          "--repeats", "1", "--t1", "3", "--t2", "2"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    for label in ("numpy", "numba"):
        for what in ("train", "infer"):
            line = next(x for x in lines if x.startswith(f"{label} {what}: "))
            assert float(line.split()[2]) > 0 and line.endswith(" samples/s")
    assert any(x.startswith("# numba/numpy train: ") for x in lines)
    assert any(x.startswith("# workload: ") and "(t1 3, t2 2)" in x and "T1 3, T2 2" in x for x in lines)
