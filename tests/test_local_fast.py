"""Local error costs (``[local]``, docs/ALGORITHMS.md "Local error costs") on the Numba conv and dendritic paths.

The conv path (neuro_hts/backends/conv_kernels.py, ConvChain) and the dendritic path
(neuro_hts/backends/numba_dendritic.py) add each local cost's drive beta * (-dC_l/ds_l) to its
hidden layer in the nudged phases, as dynamics.local_nudges does (a conv layer read flattened
in C order). Checked against the NumPy reference with the conv fast path's tolerance
(tests/test_conv_fast.py: float64 1e-10, float32 1e-4) and the dendritic path's
(tests/test_dendritic.py: float64 1e-12, float32 1e-6 on states): small CNNs with max and avg
pooling, local costs on one and on two hidden conv layers, both forms, MSE and CE, inside and
outside nudging, fixed and learned readouts, one-sided and symmetric nudging; the free phase
unchanged bit for bit; beta_l = 0 and ``--local-beta 0`` are plain EP bit for bit; a short
training run on Numba agrees with the reference.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_conv_fast import TOL, batch, max_err, rel_err, two_conv_config
from test_local_error import _with_local

from neuro_hts import dynamics
from neuro_hts.algorithms import EP, make_algorithm
from neuro_hts.backends import get_backend
from neuro_hts.config import Config
from neuro_hts.dendritic import dendritic_model
from neuro_hts.engines import FloatEngine
from neuro_hts.learning import make_optimizer
from neuro_hts.network import init_network
from neuro_hts.runfile import load_run

MODELS = __import__("pathlib").Path(__file__).resolve().parents[1] / "models"

# (pooling variant, form, output, local layers, nudge placement). With output "mse" the hidden
# layers are h1 (3 x 4 x 4) and h2 (4 x 2 x 2); with "ce" h1 and h2 below the relaxed [12] layer.
CONV_CASES = [("max", "leaky", "mse", (1,), "inside"), ("max", "leaky", "mse", (1, 2), "inside"),
              ("avg", "leaky", "mse", (1, 2), "outside"), ("avg", "energy", "ce", (1, 2), "inside"),
              ("max", "energy", "mse", (2,), "inside"), ("max", "leaky", "ce", (1,), "inside")]


def _conv_net(variant, form, output, layers, nudge, beta=0.7):
    net = init_network(two_conv_config(variant, form=form, output=output))
    return _with_local(dataclasses.replace(net, nudge=nudge), beta=beta, layers=layers)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("variant,form,output,layers,nudge", CONV_CASES)
def test_numba_conv_relaxations_with_local_costs_equal_the_reference(variant, form, output, layers, nudge, dtype):
    net = _conv_net(variant, form, output, layers, nudge)
    plain = dataclasses.replace(net, local=None)
    x, y = batch()
    fast = get_backend("numba", dtype)
    assert fast.supports(net) == []
    fnet, xf, yf = net.astype(dtype), x.astype(dtype), y.astype(dtype)
    assert fnet.local.weights[0].dtype == dtype
    # the free phase never feels the local costs: the same bits as without them
    free = fast.relax(fnet, xf, 20)
    free_plain = fast.relax(plain.astype(dtype), xf, 20)
    for a, b in zip(free.states, free_plain.states, strict=True):
        assert np.array_equal(a, b)
    ref_free = dynamics.relax(net, x, 20)
    assert max_err(free.states, ref_free.states) <= TOL[dtype]
    for beta in (0.4, -0.4):
        ref = dynamics.relax(net, x, 8, states=ref_free.states, y=y, beta=beta)
        got = fast.relax(fnet, xf, 8, states=free.states, y=yf, beta=beta)
        assert max_err(got.states, ref.states) <= TOL[dtype]
        assert np.abs(got.residual - ref.residual).max() <= TOL[dtype]
        # the local drive moved every layer that has a cost (the comparison above is not plain EP's)
        ref_plain = dynamics.relax(plain, x, 8, states=ref_free.states, y=y, beta=beta)
        for l in layers:
            assert np.abs(ref.states[l - 1] - ref_plain.states[l - 1]).max() > 1e-3


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("nudging", ["one-sided", "symmetric"])
@pytest.mark.parametrize("variant,form,output,layers,nudge", [CONV_CASES[1], CONV_CASES[3]])
def test_numba_conv_ep_estimates_with_local_costs_equal_the_reference(variant, form, output, layers, nudge, nudging,
                                                                      dtype):
    """Weights, biases and the learned readouts' gradients (dynamics.local_gradients at the contrast's states)."""
    net = _conv_net(variant, form, output, layers, nudge, beta=0.5)
    x, y = batch(8, seed=2)
    algo = EP(t1=20, t2=8, beta=0.3, nudging=nudging)
    _, rW, rb, rR = FloatEngine(None, backend=get_backend("numpy", np.float64)).gradients_full(net, x, y, algo)
    _, fW, fb, fR = FloatEngine(None, backend=get_backend("numba", dtype)).gradients_full(
        net.astype(dtype), x.astype(dtype), y.astype(dtype), algo)
    assert len(rR) == len(fR) == len(layers) and fR[0].dtype == dtype and fW[0].ndim == 4
    assert rel_err(fW + fb + fR, rW + rb + rR) <= TOL[dtype]
    # and the local costs changed the estimate (so the equality is not plain EP's)
    _, pW, _, _ = FloatEngine(None, backend=get_backend("numpy", np.float64)).gradients_full(
        dataclasses.replace(net, local=None), x, y, algo)
    assert rel_err(rW, pW) > 1e-2


def _local_conv_config(readout, nudging, variant="max", layers=(1, 2)):
    return two_conv_config(variant, per_channel=True, train={"nudging": nudging}).replace(
        local={"beta": 0.5, "readout": readout, "layers": list(layers)})


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("readout,nudging,variant,layers", [("fixed", "symmetric", "max", (1, 2)),
                                                            ("learned", "one-sided", "avg", (1,)),
                                                            ("learned", "symmetric", "max", (1, 2))])
def test_a_short_numba_conv_training_run_with_local_costs_agrees_with_the_reference(readout, nudging, variant, layers,
                                                                                    dtype):
    """Four train_step calls (every phase, the EP update, Adam, the readouts' own Adam) on Numba and on
    the float64 reference: weights, biases and readouts within the conv tolerance (float32 measured
    <= 8e-7 relative, float64 <= 6e-15; the bound is TOL's), and the same losses."""
    cfg = _local_conv_config(readout, nudging, variant, layers)
    net0 = init_network(cfg)
    assert net0.local.layers == layers and net0.local.learned == (readout == "learned")
    rng = np.random.default_rng(4)
    xs = rng.uniform(0, 1, (4, 8, 1, 8, 8))
    ys = np.eye(10)[rng.integers(0, 10, (4, 8))]
    algo = make_algorithm(cfg)
    out = {}
    for name, dt in (("numpy", np.float64), ("numba", dtype)):
        net = net0.astype(dt)
        engine = FloatEngine(cfg, make_optimizer(cfg.train, net.n_layers), backend=get_backend(name, dt))
        losses = [engine.train_step(net, x.astype(dt), y.astype(dt), algo).loss_sum for x, y in zip(xs, ys)]
        out[name] = (net, losses)
    (ref, rl), (got, gl) = out["numpy"], out["numba"]
    assert rel_err(ref.weights, net0.weights) > 1e-3
    assert rel_err(got.weights + got.biases, ref.weights + ref.biases) <= TOL[dtype]
    assert rel_err(got.local.weights, ref.local.weights) <= TOL[dtype]
    moved = rel_err(ref.local.weights, net0.local.weights)
    assert (moved > 1e-3) if readout == "learned" else (moved == 0.0)
    np.testing.assert_allclose(gl, rl, rtol=TOL[dtype], atol=0)


def test_a_zero_local_beta_on_numba_conv_is_plain_ep_bit_for_bit():
    """beta_l = 0 in the kernels: phases, estimates and four training steps equal plain EP's bit for bit."""
    cfg = two_conv_config("max", train={"nudging": "symmetric"})
    net0 = init_network(cfg, np.float32)
    zero0 = _with_local(net0, beta=0.0, layers=(1, 2))
    x, y = (a.astype(np.float32) for a in batch(8, seed=3))
    fast = get_backend("numba", np.float32)
    algo = make_algorithm(cfg)
    _, gW, gb, _ = FloatEngine(None, backend=fast).gradients_full(net0, x, y, algo)
    _, zW, zb, zR = FloatEngine(None, backend=fast).gradients_full(zero0, x, y, algo)
    for a, b in zip(gW + gb, zW + zb, strict=True):
        assert np.array_equal(a, b)
    assert all(not np.any(g) for g in zR)
    nets = []  # fixed readouts here: the engine of a config without local costs has no readout optimiser
    fixed = dataclasses.replace(zero0, local=dataclasses.replace(zero0.local, learned=False))
    for net in (net0.astype(np.float32), fixed.astype(np.float32)):
        engine = FloatEngine(cfg, make_optimizer(cfg.train, net.n_layers), backend=fast)
        for _ in range(4):
            engine.train_step(net, x, y, algo)
        nets.append(net)
    assert rel_err(nets[0].weights, net0.weights) > 1e-3
    for a, b in zip(nets[0].weights + nets[0].biases, nets[1].weights + nets[1].biases, strict=True):
        assert np.array_equal(a, b)


def test_local_beta_zero_on_numba_conv_trains_exactly_plain_ep_and_a_positive_one_agrees_with_numpy(tmp_path, run_cli):
    common = ["train", "--config", str(MODELS / "digits_cnn.toml"), "--epochs", "1", "--n-train", "100", "--n-test",
              "40", "--t1", "15", "--t2", "5", "--seed", "2"]
    runs = {}
    for name, flags in [("plain", ["--backend", "numba"]),
                        ("zero", ["--backend", "numba", "--local-beta", "0", "--local-readout", "learned"]),
                        ("on", ["--backend", "numba", "--local-beta", "0.5", "--local-readout", "learned"]),
                        ("ref", ["--backend", "numpy", "--local-beta", "0.5", "--local-readout", "learned"])]:
        code, _, err = run_cli([*common, *flags, "--out", str(tmp_path / f"{name}.h5")])
        assert code == 0, err
        runs[name] = load_run(tmp_path / f"{name}.h5")
    plain, zero, on, ref = (runs[k].network for k in ("plain", "zero", "on", "ref"))
    assert zero.local is None and on.local is not None and on.local.layers == (1,)
    for a, b in zip(plain.weights + plain.biases, zero.weights + zero.biases, strict=True):
        assert np.array_equal(a, b)
    # the local cost changes training, and numba (float32) agrees with the float64 reference (measured 1.7e-7)
    assert rel_err(on.weights, plain.weights) > 1e-3
    assert on.dtype == np.float32 and ref.dtype == np.float64
    assert rel_err(on.weights + on.biases + on.local.weights, ref.weights + ref.biases + ref.local.weights) <= TOL[np.float32]
    assert abs(runs["on"].history["test_accuracy"][-1] - runs["ref"].history["test_accuracy"][-1]) <= 1 / 40 + 1e-12


# --------------------------------------------------------------------------- the dendritic path


def _dendritic_net(arch=(20, 12, 8, 5), layers=None, beta=0.6, nudge="inside"):
    cfg = Config.from_dict({"model": {**dendritic_model(arch), "nudge": nudge},
                            "dt": {"dist": "lognormal", "mean": 0.3, "std": 0.1}})
    return _with_local(init_network(cfg, dtype=np.float64), beta=beta, layers=layers)


@pytest.mark.parametrize("layers,nudge", [((1,), "inside"), ((1, 2), "inside"), ((1, 2), "outside")])
def test_numba_dendritic_relaxations_with_local_costs_equal_the_reference(layers, nudge):
    net = _dendritic_net(layers=layers, nudge=nudge)
    plain = dataclasses.replace(net, local=None)
    rng = np.random.default_rng(1)
    x, y = rng.uniform(0, 1, (6, 20)), np.eye(5)[rng.integers(0, 5, 6)]
    ref, f64, f32 = get_backend("numpy", np.float64), get_backend("numba", np.float64), get_backend("numba")
    assert f64.supports(net) == []
    free = ref.relax(net, x, 30)
    for a, b in zip(f64.relax(net, x, 30).states, f64.relax(plain, x, 30).states, strict=True):
        assert np.array_equal(a, b)
    for beta in (0.5, -0.5):
        want = ref.relax(net, x, 10, states=free.states, y=y, beta=beta)
        got = f64.relax(net, x, 10, states=free.states, y=y, beta=beta)
        assert max_err(got.states, want.states) <= 1e-12
        got32 = f32.relax(net.astype(np.float32), x.astype(np.float32), 10,
                          states=[s.astype(np.float32) for s in free.states], y=y.astype(np.float32), beta=beta)
        assert max_err(got32.states, want.states) <= 1e-6
        moved = ref.relax(plain, x, 10, states=free.states, y=y, beta=beta)
        assert all(np.abs(want.states[l - 1] - moved.states[l - 1]).max() > 1e-3 for l in layers)
    algo = EP(t1=30, t2=10, beta=0.3, nudging="symmetric")
    _, rW, rb, rR = FloatEngine(None, backend=ref).gradients_full(net, x, y, algo)
    _, fW, fb, fR = FloatEngine(None, backend=f64).gradients_full(net, x, y, algo)
    assert len(fR) == len(layers)
    assert rel_err(fW + fR, rW + rR) <= 1e-10 and max_err(fb, rb) <= 1e-12
