"""Layer-wise ("local") error costs, ``[local]`` / ``--local-beta`` (issue 12 item 1; docs/ALGORITHMS.md
"Local error costs", docs/FAMILY.md section 5 form (i)).

1. The cost: its nudge and its readout gradient against finite differences of its value.
2. The phases: the free phase never feels it; a nudged step by hand; beta_l = 0 and
   ``--local-beta 0`` are plain EP bit for bit.
3. The gradient: symmetric EP with local costs equals BPTT of the total objective
   C + sum_l beta_l L_l (weights, biases and learned readouts), and the local terms matter.
4. The Numba dense kernels equal the NumPy reference (float64 1e-10, float32 2e-5).
5. Run files: /local kept, resume bit for bit, fixed readouts never change.
6. Bad input: one-line ConfigErrors, CLI exit code 2.

The Numba conv and dendritic paths with local costs: tests/test_local_fast.py.
"""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest
from test_cli import SMALL, assert_same_run

from neuro_hts import dynamics
from neuro_hts.algorithms import EP, make_algorithm
from neuro_hts.backends import get_backend
from neuro_hts.bptt import bptt_gradients, bptt_gradients_full
from neuro_hts.config import Config
from neuro_hts.costs import LocalCosts, LocalReadout
from neuro_hts.engines import FloatEngine, make_engine
from neuro_hts.errors import ConfigError, RunFileError
from neuro_hts.learning import make_optimizer
from neuro_hts.network import Network, init_network
from neuro_hts.runfile import load_run, save_run
from neuro_hts.testing import random_problem


def _with_local(net, beta=0.5, learned=True, layers=None, seed=5, scale=0.5):
    """``net`` with a random readout on every hidden layer (or ``layers``)."""
    rng = np.random.default_rng(seed)
    layers = tuple(range(1, net.n_dynamic)) if layers is None else layers
    n_classes = net.arch[-1]
    ws = [rng.uniform(-scale, scale, (n_classes, int(np.prod(net.shapes[l])))) for l in layers]
    return dataclasses.replace(net, local=LocalCosts(layers, ws, beta, net.output, learned))


def _fd(f, a, eps=1e-6):
    """Central finite differences of the scalar f at array a."""
    g = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        old = a[i]
        a[i] = old + eps
        up = f()
        a[i] = old - eps
        dn = f()
        a[i] = old
        g[i] = (up - dn) / (2 * eps)
    return g


# --------------------------------------------------------------------------- 1. the cost


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_nudge_and_readout_gradient_are_finite_differences_of_the_cost(loss):
    rng = np.random.default_rng(0)
    R, r = rng.normal(size=(4, 6)), rng.uniform(0, 1, (3, 6))
    y = np.eye(4)[[0, 2, 3]]
    ro = LocalReadout(R, 0.7, loss)
    fd_r = _fd(lambda: ro.value(r, y).sum(), r)
    np.testing.assert_allclose(ro.nudge(r, y), -fd_r, atol=1e-8)
    fd_R = _fd(lambda: ro.value(r, y).sum(), R)
    np.testing.assert_allclose(ro.param_grad(r, y)["weight"], fd_R, atol=1e-8)
    assert np.max(np.abs(fd_r)) > 1e-2  # not a trivially zero cost


@pytest.mark.parametrize("form,activation,output", [("leaky", "sigmoid4", "mse"), ("energy", "sigmoid4", "ce")])
def test_the_drive_of_each_hidden_layer_is_minus_the_gradient_of_the_local_costs(form, activation, output):
    """dynamics.local_nudges = -d(sum_l C_l)/ds_l (through r = rho(s) in the energy form): the drive
    that the nudged primitive Phi - beta sum_l C_l puts on s_l, per unit of beta."""
    net, x, y = random_problem((10, 7, 6, 4), form, activation, output, seed=2)
    net = _with_local(net, beta=0.8)
    states = dynamics.relax(net, x, 15).states
    drives = dynamics.local_nudges(net, states, y)
    assert sorted(drives) == [1, 2] if output == "mse" else sorted(drives) == [1]
    for l, g in drives.items():
        fd = _fd(lambda: dynamics.local_cost(net, states, y).sum(), states[l - 1])
        np.testing.assert_allclose(g, -fd, atol=1e-7)


# --------------------------------------------------------------------------- 2. the phases


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_the_free_phase_never_feels_the_local_costs_and_the_nudged_phase_does(backend):
    net, x, y = random_problem((12, 9, 7, 5), "leaky", "sigmoid4", "mse", seed=1)
    loc = _with_local(net, beta=1.0)
    be = get_backend(backend, dtype=np.float64)
    free, free_loc = be.relax(net, x, 30), be.relax(loc, x, 30)
    for a, b in zip(free.states, free_loc.states):
        np.testing.assert_array_equal(a, b)
    nud = be.relax(net, x, 10, states=free.states, y=y, beta=0.3).states
    nud_loc = be.relax(loc, x, 10, states=free.states, y=y, beta=0.3).states
    assert np.max(np.abs(nud[0] - nud_loc[0])) > 1e-3 and np.max(np.abs(nud[1] - nud_loc[1])) > 1e-3


def test_a_nudged_step_by_hand_on_a_one_one_one_network():
    """x = 1, W1 = 0.5, b1 = 0.1, W2 = 0.4, b2 = 0, dt = 0.5, hard sigmoid, MSE, one class y = 1;
    s1 = 0.2, s2 = 0.3; readout R1 = 2, beta_l = 0.5, beta = 0.4. Local: z = R1 s1 = 0.4,
    -dC_1/ds1 = beta_l R1 (y - z) = 0.5 * 2 * 0.6 = 0.6. h1 = 0.5 + 0.1 + 0.4 * 0.3 = 0.72, plus
    beta * 0.6 = 0.24: 0.96; s1 <- 0.2 + 0.5 (0.96 - 0.2) = 0.58 (0.2 + 0.5 (0.72 - 0.2) = 0.46 free)."""
    net = Network([np.array([[0.5]]), np.array([[0.4]])], [np.array([0.1]), np.array([0.0])],
                  [np.array([0.5]), np.array([0.5])], "leaky", "hard_sigmoid", "mse")
    net = dataclasses.replace(net, local=LocalCosts((1,), [np.array([[2.0]])], 0.5, "mse"))
    x, y, s = np.array([[1.0]]), np.array([[1.0]]), [np.array([[0.2]]), np.array([[0.3]])]
    d1 = dynamics.input_drive(net, x)
    assert dynamics.relax_step(net, s, d1, y, 0.4)[0][0, 0] == pytest.approx(0.58, abs=1e-15)
    assert dynamics.relax_step(net, s, d1, y, 0.0)[0][0, 0] == pytest.approx(0.46, abs=1e-15)
    fast = get_backend("numba", dtype=np.float64).relax(net, x, 1, states=s, y=y, beta=0.4).states
    assert fast[0][0, 0] == pytest.approx(0.58, abs=1e-15)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_a_zero_local_beta_is_plain_ep_bit_for_bit_in_the_kernels(backend):
    net, x, y = random_problem((12, 9, 7, 5), "leaky", "hard_sigmoid", "mse", seed=4)
    zero = _with_local(net, beta=0.0)
    be = get_backend(backend, dtype=np.float64)
    algo = EP(t1=20, t2=6, beta=0.5, nudging="symmetric")
    _, gW, gb, _ = FloatEngine(None, backend=be).gradients_full(net, x, y, algo)
    _, zW, zb, zR = FloatEngine(None, backend=be).gradients_full(zero, x, y, algo)
    for a, b in zip(gW + gb, zW + zb):
        assert np.array_equal(a, b)
    assert all(not np.any(g) for g in zR)


def test_local_beta_zero_trains_exactly_plain_ep(tmp_path, run_cli):
    plain, zero = tmp_path / "plain.h5", tmp_path / "zero.h5"
    common = ["train", *SMALL, "--arch", "64-24-16-10", "--epochs", "2", "--seed", "3"]
    assert run_cli([*common, "--out", str(plain)])[0] == 0
    code, _, err = run_cli([*common, "--local-beta", "0", "--local-layers", "all", "--local-readout", "learned",
                            "--out", str(zero)])
    assert code == 0, err
    a, b = load_run(plain), load_run(zero)
    for x, y in zip(a.network.weights + a.network.biases, b.network.weights + b.network.biases, strict=True):
        assert np.array_equal(x, y)
    assert b.network.local is None
    with h5py.File(zero, "r") as f:
        assert "local" not in f
    # and a positive local beta does change training (the equality above is not trivial)
    on = tmp_path / "on.h5"
    assert run_cli([*common, "--local-beta", "0.5", "--out", str(on)])[0] == 0
    assert not np.array_equal(load_run(on).network.weights[0], a.network.weights[0])


# --------------------------------------------------------------------------- 3. EP vs BPTT


def _rel(est, ref):
    return max(float(np.linalg.norm(e - g) / np.linalg.norm(g)) for e, g in zip(est, ref))


@pytest.mark.parametrize("arch,activation,output", [((20, 16, 4), "hard_sigmoid", "mse"),
                                                    ((20, 16, 12, 4), "sigmoid4", "mse"),
                                                    ((20, 16, 12, 4), "sigmoid4", "ce")])
def test_symmetric_ep_with_local_costs_equals_bptt_of_the_total_objective(arch, activation, output):
    """beta 1e-3, T = 400 (settled), both nudges inside sigma: measured max relative error
    1.5e-6 / 2.4e-6 / 9.7e-8 over every weight, bias and readout; the bound is 1e-4 (as for
    plain EP in tests/test_nudge_placement.py). Without the local terms in BPTT the error is > 1e-2."""
    net, x, y = random_problem(arch, "leaky", activation, output, seed=0)
    net = _with_local(net, beta=0.5, scale=0.3)
    gW, gb, gR, loss = bptt_gradients_full(net, x, y, 400)
    assert len(gR) == net.n_dynamic - 1
    assert loss == pytest.approx(float((dynamics.cost(net, dynamics.relax(net, x, 400).states, y)
                                        + dynamics.local_cost(net, dynamics.relax(net, x, 400).states, y)).mean()))
    algo = EP(t1=400, t2=400, beta=1e-3, nudging="symmetric")
    _, eW, eb, eR = FloatEngine(None, backend=get_backend("numpy", dtype=np.float64)).gradients_full(net, x, y, algo)
    assert _rel(list(eW) + list(eb) + eR, gW + gb + gR) < 1e-4
    pW, pb, _ = bptt_gradients(dataclasses.replace(net, local=None), x, y, 400)
    assert _rel(list(eW) + list(eb), pW + pb) > 1e-2


# --------------------------------------------------------------------------- 4. Numba vs NumPy


CASES = [((12, 9, 7, 5), "leaky", "sigmoid4", "mse", "inside"), ((12, 9, 7, 5), "leaky", "hard_sigmoid", "ce", "inside"),
         ((12, 9, 7, 5), "energy", "sigmoid4", "mse", "inside"), ((12, 9, 7, 5), "leaky", "sigmoid4", "mse", "outside"),
         ((12, 9, 7, 6, 5), "energy", "hard_sigmoid", "ce", "inside")]


@pytest.mark.parametrize("arch,form,activation,output,nudge", CASES)
def test_numba_dense_kernels_equal_the_reference(arch, form, activation, output, nudge):
    net, x, y = random_problem(arch, form, activation, output, seed=1)
    net = _with_local(dataclasses.replace(net, nudge=nudge), beta=0.7)
    ref, fast = get_backend("numpy", dtype=np.float64), get_backend("numba", dtype=np.float64)
    free = ref.relax(net, x, 20).states
    for beta in (0.4, -0.4):
        nr = ref.relax(net, x, 8, states=free, y=y, beta=beta).states
        nf = fast.relax(net, x, 8, states=free, y=y, beta=beta).states
        for a, b in zip(nr, nf):
            assert np.max(np.abs(a - b)) < 1e-10
    algo = EP(t1=20, t2=8, beta=0.4, nudging="symmetric")
    _, rW, rb, rR = FloatEngine(None, backend=ref).gradients_full(net, x, y, algo)
    _, fW, fb, fR = FloatEngine(None, backend=fast).gradients_full(net, x, y, algo)
    assert len(rR) == len(fR) == net.n_dynamic - 1
    for a, b in zip(rW + rb + rR, fW + fb + fR):
        assert np.max(np.abs(a - b)) < 1e-10
    # float32 kernels (training's default) within float32 rounding
    f32 = get_backend("numba", dtype=np.float32)
    n32 = f32.relax(net.astype(np.float32), x.astype(np.float32), 8, states=[s.astype(np.float32) for s in free],
                    y=y.astype(np.float32), beta=0.4).states
    for a, b in zip(ref.relax(net, x, 8, states=free, y=y, beta=0.4).states, n32):
        assert np.max(np.abs(a - b)) < 2e-5


# --------------------------------------------------------------------------- 5. run files


def test_resume_with_learned_readouts_is_bit_identical(tmp_path, run_cli):
    common = ["train", *SMALL, "--arch", "64-24-16-10", "--seed", "7", "--local-beta", "0.5",
              "--local-readout", "learned", "--local-layers", "1,2"]
    straight, part = tmp_path / "straight.h5", tmp_path / "part.h5"
    assert run_cli([*common, "--epochs", "3", "--out", str(straight)])[0] == 0
    assert run_cli([*common, "--epochs", "1", "--out", str(part)])[0] == 0
    after_one = load_run(part)
    code, _, err = run_cli(["train", "--resume", str(part), "--epochs", "3"])
    assert code == 0, err
    a, b = load_run(straight), load_run(part)
    assert_same_run(a, b)
    assert a.network.local.layers == b.network.local.layers == (1, 2) and b.network.local.learned
    for x, y in zip(a.network.local.weights, b.network.local.weights, strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y)
    assert any(k.startswith("local_") for k in b.optimizer_state)
    # the readouts learned between epoch 1 and 3, so their equality is not trivial
    assert not np.array_equal(after_one.network.local.weights[0], b.network.local.weights[0])
    with h5py.File(part, "r") as f:
        assert f["local"].attrs["readout"] == "learned" and f["local/2/weight"].shape == (10, 16)


def test_fixed_readouts_never_change_and_a_file_without_them_is_refused(tmp_path):
    cfg = Config.from_dict({"model": {"arch": [64, 16, 10]}, "train": {"epochs": 1, "t1": 10, "t2": 4},
                            "data": {"n_train": 100, "n_test": 20}, "local": {"beta": 1.0}})
    from neuro_hts.training import train

    start = init_network(cfg).local.weights[0].copy()
    state = train(cfg, tmp_path / "f.h5")
    assert not state.network.local.learned
    np.testing.assert_array_equal(load_run(tmp_path / "f.h5").network.local.weights[0], start.astype(np.float32))
    with h5py.File(tmp_path / "f.h5", "a") as f:
        del f["local"]
    with pytest.raises(RunFileError, match="no /local"):
        load_run(tmp_path / "f.h5")


def test_an_engine_without_local_state_cannot_update_learned_readouts():
    net, x, y = random_problem((12, 9, 5), "leaky", "sigmoid4", "mse", seed=1)
    net = _with_local(net)
    cfg = Config.from_dict({"model": {"arch": [12, 9, 5]}, "train": {"backend": "numpy"}})
    engine = make_engine(cfg, make_optimizer(cfg.train, 2))
    with pytest.raises(ConfigError, match="learned local readouts"):
        engine.train_step(net, x, y, make_algorithm(cfg))


# --------------------------------------------------------------------------- 6. bad input


@pytest.mark.parametrize("local,arch,match", [
    ({"beta": -0.5}, [64, 16, 10], "beta must be >= 0"),
    ({"beta": 1.0, "layers": [3]}, [64, 16, 10], "out of range"),
    ({"beta": 1.0, "layers": [2]}, [64, 16, 10], "is the output layer"),
    ({"beta": 1.0, "layers": [0]}, [64, 16, 10], "start at 1"),
    ({"beta": 1.0, "layers": []}, [64, 16, 10], "non-empty"),
    ({"beta": 1.0, "layers": "some"}, [64, 16, 10], "must be 'all'"),
    ({"beta": 1.0, "readout": "trained"}, [64, 16, 10], "readout must be one of"),
    ({"beta": 1.0, "init_scale": 0}, [64, 16, 10], "init_scale must be > 0"),
    ({"beta": 1.0}, [64, 10], "no hidden layer"),
    ({"beta": 1.0, "size": 3}, [64, 16, 10], "unknown key"),
    ({"layers": [4]}, [64, 16, 10], "out of range"),  # named layers are checked even with beta = 0
])
def test_bad_local_settings_are_one_line_config_errors(local, arch, match):
    with pytest.raises(ConfigError, match=match) as exc:
        Config.from_dict({"model": {"arch": arch}, "local": local})
    assert "\n" not in str(exc.value)


def test_local_costs_are_refused_where_they_would_be_ignored():
    with pytest.raises(ConfigError, match="train.algorithm = 'ep'"):
        Config.from_dict({"train": {"algorithm": "chl"}, "local": {"beta": 1.0}})
    with pytest.raises(ConfigError, match="train.arith = 'float'"):
        Config.from_dict({"train": {"arith": "fixed", "target": "loihi2"}, "local": {"beta": 1.0}})
    with pytest.raises(ConfigError, match="output layer"):  # with a softmax readout the top relaxed layer is 2
        Config.from_dict({"model": {"arch": [64, 16, 12, 10], "output": "ce"}, "local": {"beta": 1.0, "layers": [2]}})


def test_the_cli_exits_2_on_bad_local_values(tmp_path, run_cli):
    for flags, match in [(["--local-beta", "-1"], "beta must be >= 0"),
                         (["--local-beta", "1", "--local-layers", "5"], "out of range"),
                         (["--local-beta", "1", "--local-layers", "2"], "output layer"),
                         (["--local-beta", "1", "--local-layers", "1,x"], "must be 'all'"),
                         (["--local-readout", "random"], "invalid choice")]:
        code, _, err = run_cli(["train", *SMALL, "--epochs", "1", *flags, "--out", str(tmp_path / "bad.h5")])
        assert code == 2 and match in err and "Traceback" not in err, (flags, err)
        assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad.h5").exists()
    # resume takes the stored config: a local flag with --resume is refused too
    state_path = tmp_path / "r.h5"
    assert run_cli(["train", *SMALL, "--epochs", "1", "--out", str(state_path)])[0] == 0
    code, _, err = run_cli(["train", "--resume", str(state_path), "--local-beta", "1"])
    assert code == 2 and "--local-beta" in err


def test_save_and_load_keep_the_readouts(tmp_path):
    cfg = Config.from_dict({"model": {"arch": [64, 16, 12, 10]}, "local": {"beta": 0.25, "readout": "learned"}})
    net = init_network(cfg)
    from neuro_hts.runfile import RunState

    save_run(tmp_path / "r.h5", RunState(config=cfg, network=net))
    back = load_run(tmp_path / "r.h5").network.local
    assert back.layers == (1, 2) and back.beta == 0.25 and back.learned and back.loss == "mse"
    for a, b in zip(net.local.weights, back.weights, strict=True):
        np.testing.assert_array_equal(a, b)
    # the readout's init: U(-k, k), k = init_scale / sqrt(n_l), its own stream (the weights do not change)
    assert np.max(np.abs(net.local.weights[0])) <= 1 / np.sqrt(16)
    plain = init_network(cfg.replace(local={"beta": 0.0}))
    for a, b in zip(net.weights, plain.weights):
        np.testing.assert_array_equal(a, b)


def test_the_model_config_has_local_costs_and_print_config_round_trips_them(tmp_path, run_cli):
    from pathlib import Path

    from neuro_hts.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "models" / "digits_local.toml")
    assert cfg.local.active and cfg.local.layers == "all" and cfg.local.readout == "fixed"
    assert init_network(cfg).local.layers == (1, 2)
    assert init_network(cfg.replace(local={"beta": 0.0})).local is None
    code, out, err = run_cli(["train", "--config", str(Path(__file__).resolve().parents[1] / "models" / "digits_local.toml"),
                              "--local-layers", "2", "--local-readout", "learned", "--print-config"])
    assert code == 0, err
    (tmp_path / "c.toml").write_text(out)
    back = load_config(tmp_path / "c.toml")
    assert back == cfg.replace(local={"layers": [2], "readout": "learned"}) and back.local.layers == (2,)
