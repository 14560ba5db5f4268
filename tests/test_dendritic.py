"""Dendritic EP (issue 13, docs/DENDRITIC.md): masks, branches, the per-layer EP contrast, BPTT, dt, configs, refusals.

The connection's own contract (finite differences of phi_post / phi_pre, vjps, naive loops)
is in tests/test_connections.py with every other kind.
"""

from __future__ import annotations

import numpy as np
import pytest

from neuro_hts.algorithms import EP
from neuro_hts.bptt import bptt_gradients
from neuro_hts.config import Config, load_config
from neuro_hts.data import load_dataset, one_hot
from neuro_hts.dendritic import Dendritic, branch_size, cosine, dendritic_model, ep_bptt_alignment, override_branches
from neuro_hts.engines import FloatEngine, check_supported
from neuro_hts.errors import ConfigError
from neuro_hts.learning import SGD, Adam
from neuro_hts.network import init_network

from pathlib import Path

MODELS = Path(__file__).resolve().parents[1] / "models"


def _config(arch=(64, 16, 10), dt=None, seed=0, **opts):
    dt = dt or {"dist": "constant", "mean": 0.5}
    return Config.from_dict({"model": dendritic_model(arch, **opts), "train": {"backend": "numpy", "seed": seed},
                             "dt": dt})


@pytest.fixture(scope="module")
def digits():
    d = load_dataset("digits", None)
    return np.asarray(d.x_train[:24], dtype=np.float64), one_hot(d.y_train[:24], 10, np.float64)


def _grads(net, x, y, t1=60, t2=20, beta=0.1, nudging="symmetric"):
    return FloatEngine(None, backend=_numpy()).gradients(net, x, y, EP(t1=t1, t2=t2, beta=beta, nudging=nudging))


def _numpy():
    from neuro_hts.backends import get_backend

    return get_backend("numpy")


# ----------------------------------------------------------------------------- masks
@pytest.mark.parametrize("p,n_in,n_out", [(0.5, 64, 16), (0.3, 7, 5), (0.5, 5, 3), (1.0, 6, 4)])
def test_every_branch_row_has_exactly_round_p_n_inputs(p, n_in, n_out):
    net = init_network(_config((n_in, n_out, 10), branch_sparsity=p, basal_branches=3, apical_branches=2))
    b1, b2 = net.buffers
    assert set(b1) == {"basal_mask"} and set(b2) == {"basal_mask", "apical_mask"}  # the input takes no apical branches
    assert b1["basal_mask"].shape == (n_out * 3, n_in) and b2["apical_mask"].shape == (n_out * 2, 10)
    assert (b1["basal_mask"].sum(axis=1) == round(p * n_in)).all()  # Python's round: round(0.5 * 5) = 2
    assert (b2["basal_mask"].sum(axis=1) == round(p * n_out)).all()
    assert (b2["apical_mask"].sum(axis=1) == max(1, round(p * 10))).all()
    assert branch_size(0.5, 5) == 2 and branch_size(0.01, 10) == 1
    if p < 1:  # random subsets: rows differ, the seed fixes them
        assert len({r.tobytes() for r in b1["basal_mask"]}) > 1
        again = init_network(_config((n_in, n_out, 10), branch_sparsity=p, basal_branches=3))
        assert np.array_equal(again.buffers[0]["basal_mask"], b1["basal_mask"])
        other = init_network(_config((n_in, n_out, 10), seed=1, branch_sparsity=p, basal_branches=3))
        assert not np.array_equal(other.buffers[0]["basal_mask"], b1["basal_mask"])


def test_masked_entries_get_a_zero_update_and_stay_zero(digits):
    x, y = digits
    for opt in (SGD([0.5, 0.5], momentum=0.9), Adam([0.01, 0.01])):
        net = init_network(_config((64, 16, 12, 10)))
        conns = net.connections()
        off = [(c.basal_mask == 0, None if c.apical_mask is None else c.apical_mask == 0) for c in conns]
        start = [c.basal_weight.copy() for c in conns]
        _, gW, _ = _grads(net, x, y)
        for c, g, (bo, ao) in zip(conns, gW, off):
            parts = c.parts(g)
            assert (parts["basal_weight"][bo] == 0).all() and np.abs(parts["basal_weight"][~bo]).max() > 0
            if ao is not None:
                assert (parts["apical_weight"][ao] == 0).all() and np.abs(parts["apical_weight"][~ao]).max() > 0
        engine = FloatEngine(None, optimizer=opt, backend=_numpy())
        for _ in range(3):
            engine.train_step(net, x, y, EP(t1=30, t2=10, beta=0.1, nudging="symmetric"))
        for c, (bo, ao), w0 in zip(net.connections(), off, start):
            assert (c.basal_weight[bo] == 0).all() and not np.array_equal(c.basal_weight[~bo], w0[~bo])
            if ao is not None:
                assert (c.apical_weight[ao] == 0).all()
        assert all((b == 0).all() for b in net.biases)  # no soma bias: it stays zero


# ----------------------------------------------------------------------------- branches
def test_one_branch_with_a_full_mask_is_a_single_relu_dendrite():
    net = init_network(_config((6, 5, 4), basal_branches=1, apical_branches=1, branch_sparsity=1.0, apical_scale=0.3))
    c1, c2 = net.connections()
    assert (c1.basal_mask == 1).all() and (c2.apical_mask == 1).all()
    u, v = np.random.default_rng(0).uniform(0, 1, (3, 6)), np.random.default_rng(1).uniform(0, 1, (3, 4))
    np.testing.assert_allclose(c1.drive_post(u), np.maximum(u @ c1.basal_weight.T + c1.basal_bias, 0), rtol=0, atol=1e-15)
    h = np.random.default_rng(2).uniform(0, 1, (3, 5))
    np.testing.assert_allclose(c2.feedback(v, h), 0.3 * np.maximum(v @ c2.apical_weight.T, 0), rtol=0, atol=1e-15)
    assert c1.feedback(h, u).shape == (3, 6) and not c1.feedback(h, u).any()  # the clamped input takes no feedback
    # K branches: the mean of K ReLU dendrites
    k = init_network(_config((6, 5, 4), basal_branches=3, branch_sparsity=1.0)).connections()[0]
    P = u @ k.basal_weight.T + k.basal_bias
    np.testing.assert_allclose(k.drive_post(u), np.maximum(P, 0).reshape(3, 5, 3).mean(axis=2), atol=1e-15)


# ----------------------------------------------------------------------------- the EP contrast
@pytest.mark.parametrize("arch", [(64, 16, 10), (64, 16, 12, 10)])
@pytest.mark.parametrize("nudging", ["symmetric", "one-sided"])
def test_with_apical_scale_zero_the_hidden_updates_are_exactly_zero_and_the_outputs_are_not(digits, arch, nudging):
    x, y = digits
    net = init_network(_config(arch, apical_scale=0.0))
    free, gW, gb = _grads(net, x, y, nudging=nudging)
    *hidden, top = [net.connections()[l].parts(g) for l, g in enumerate(gW)]
    for parts in hidden:
        assert all((v == 0).all() for v in parts.values())
    assert (top["apical_weight"] == 0).all()  # a = 0 multiplies it
    assert np.abs(top["basal_weight"]).max() > 1e-3 and np.abs(top["basal_bias"]).max() > 1e-3
    # and with a > 0 the nudge reaches the hidden layers
    _, gW2, _ = _grads(init_network(_config(arch, apical_scale=0.2)), x, y, nudging=nudging)
    assert np.abs(gW2[0]).max() > 1e-6


def _tied(arch, a, dt):
    """One full branch per soma, dense apical, positive weights (every ReLU active): with A = W^T / a the
    dendritic net is the dense symmetric net, so EP must equal BPTT of the tied weights."""
    net = init_network(_config(arch, dt, basal_branches=1, apical_branches=1, branch_sparsity=1.0, apical_dense=True,
                               apical_scale=a))
    rng = np.random.default_rng(5)
    conns = net.connections()
    for c in conns:
        c.basal_weight[...] = rng.uniform(0.0, 0.3 / c.n_in ** 0.5, c.basal_weight.shape)
        c.basal_bias[...] = rng.uniform(0.0, 0.05, c.basal_bias.shape)
    for c in conns[1:]:
        c.apical_weight[...] = c.basal_weight.T / a  # the apical branches of pre read post through W^T / a
    return net


@pytest.mark.parametrize("dt", [{"dist": "constant", "mean": 0.5}, {"dist": "lognormal", "mean": 0.3, "std": 0.1}])
def test_tied_all_active_branches_reduce_to_standard_ep_which_equals_bptt(digits, dt):
    """Per-neuron dt included: at a settled free phase EP = BPTT of the tied net (relative error < 1e-3)."""
    x, y = digits[0][:8], digits[1][:8]
    a = 0.5
    net = _tied((64, 12, 10, 10), a, dt)
    if dt["dist"] == "lognormal":
        assert net.dts[0].std() > 0.05 and net.dts[1].std() > 0.05
    free, gW, _ = _grads(net, x, y, t1=400, t2=200, beta=1e-3)
    assert free.status.value == "settled" and all(0.05 < s.mean() < 0.95 for s in free.states)
    bW, _, _ = bptt_gradients(net, x, y, 400)
    conns = net.connections()
    ep = [c.parts(g) for c, g in zip(conns, gW)]
    bp = [c.parts(g) for c, g in zip(conns, bW)]
    for l in range(len(conns)):
        # W_l acts bottom-up in h_l and, tied, top-down in h_{l-1} as a A_l = W_l^T (A_l: the same connection's)
        want_w = bp[l]["basal_weight"] + (bp[l]["apical_weight"].T / a if "apical_weight" in bp[l] else 0.0)
        for got, want in ((ep[l]["basal_weight"], want_w), (ep[l]["basal_bias"], bp[l]["basal_bias"])):
            assert np.linalg.norm(got - want) <= 1e-3 * np.linalg.norm(want), l


def test_alignment_with_bptt_is_reported_per_layer_and_the_output_stays_aligned(digits):
    """Untied random apical weights: the output's basal update aligns with BPTT (measured 0.999); the hidden
    layers' do not at initialisation (measured 0.17, -0.05) and align as training goes
    (scripts/dendritic_alignment.py, docs/DENDRITIC.md)."""
    x, y = digits
    for arch in ((64, 16, 10), (64, 16, 12, 10)):
        rows = ep_bptt_alignment(init_network(_config(arch, basal_branches=4)), x, y)
        assert len(rows) == len(arch) - 1
        assert set(rows[0]) == {"layer", "basal_weight", "basal_bias"}
        assert set(rows[-1]) == {"layer", "basal_weight", "basal_bias", "apical_weight"}
        assert rows[-1]["basal_weight"] >= 0.99 and rows[-1]["basal_bias"] >= 0.99
        assert all(-1.0 <= v <= 1.0 for r in rows for v in r.values())
    assert cosine(np.ones(3), 2 * np.ones(3)) == pytest.approx(1.0)


def test_bptt_of_a_dendritic_net_is_the_finite_difference_of_the_loss():
    from neuro_hts import dynamics

    net = init_network(_config((6, 5, 4, 3), {"dist": "lognormal", "mean": 0.3, "std": 0.1}, basal_branches=2,
                               apical_branches=2, branch_sparsity=0.6, apical_scale=0.7))
    for w in net.weights:
        w *= 2.5
    rng = np.random.default_rng(0)
    x, y, T = rng.uniform(0, 1, (3, 6)), np.eye(3), 7
    gW, _, _ = bptt_gradients(net, x, y, T)

    def loss():
        s, d1 = dynamics.zero_states(net, 3), dynamics.input_drive(net, x)
        for _ in range(T):
            s = dynamics.relax_step(net, s, d1)
        return float(dynamics.cost(net, s, y).mean())

    for w, g in zip(net.weights, gW):
        for i in rng.choice(w.size, 25, replace=False):
            old = w[i]
            w[i] = old + 1e-6
            hi = loss()
            w[i] = old - 1e-6
            lo = loss()
            w[i] = old
            assert g[i] == pytest.approx((hi - lo) / 2e-6, abs=1e-8)
        assert np.abs(g).max() > 1e-3


def test_per_neuron_dt_changes_the_path_not_the_settled_state(digits):
    x, _ = digits
    const = init_network(_config((64, 16, 12, 10)))
    het = init_network(_config((64, 16, 12, 10), {"dist": "lognormal", "mean": 0.3, "std": 0.1}))
    assert all(np.array_equal(a, b) for a, b in zip(const.weights, het.weights))  # same seed, same weights and masks
    assert het.dts[0].std() > 0.05 and (het.dts[-1] == 0.3).all()
    be = _numpy()
    early = [be.relax(n, x, 3).states[0] for n in (const, het)]
    assert np.abs(early[0] - early[1]).max() > 1e-2
    late = [be.relax(n, x, 400) for n in (const, het)]
    assert all(r.status.value == "settled" for r in late)
    for a, b in zip(late[0].states, late[1].states):
        np.testing.assert_allclose(a, b, atol=1e-8)


# ----------------------------------------------------------------------------- configs, run files, refusals
def test_options_are_checked_in_one_line():
    with pytest.raises(ConfigError, match="input layer is clamped"):
        Config.from_dict({"model": {**dendritic_model((64, 16, 10)),
                                    "connections": [{"kind": "dendritic", "pre": "x", "post": "h1", "apical": True},
                                                    {"kind": "dendritic", "pre": "h1", "post": "out"}]}})
    for bad, msg in (({"branch_sparsity": 0.0}, "branch_sparsity"), ({"basal_branches": 0}, "basal_branches"),
                     ({"apical_scale": float("inf")}, "apical_scale"), ({"apical_dense": 1}, "apical_dense")):
        with pytest.raises(ConfigError, match=msg) as info:
            _config(**bad)
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="no dendritic connection"):
        override_branches(Config(), basal_branches=2)


def test_the_readme_configs_and_the_flags_that_override_them():
    cfg = load_config(MODELS / "mnist_dendritic.toml")
    assert cfg.model.arch == (784, 256, 10) and cfg.model.activation == "hard_sigmoid"
    assert (cfg.train.t1, cfg.train.t2, cfg.train.beta, cfg.train.nudging, cfg.train.batch_size, cfg.train.epochs) == (
        60, 12, 0.1, "symmetric", 64, 20)
    assert (cfg.train.optimizer, cfg.train.lr, cfg.train.momentum) == ("sgd", (0.4, 0.02), 0.9)
    opts = [cfg.model.spec.options(c) for c in cfg.model.spec.connections]
    assert [(o["basal_branches"], o["apical_branches"], o["branch_sparsity"], o["apical_scale"], o["apical"])
            for o in opts] == [(8, 2, 0.5, 0.2, False), (8, 2, 0.5, 0.2, True)]
    assert load_config(MODELS / "fashionmnist_dendritic.toml").data.normalize == (0.2860, 0.3530)
    assert load_config(MODELS / "mnist_dendritic.toml").data.normalize is None
    deep = load_config(MODELS / "mnist_dendritic_deep.toml")
    assert deep.model.arch == (784, 256, 256, 10) and len(deep.train.lr) == 3
    for stem in ("mnist_dendritic", "mnist_dendritic_deep", "fashionmnist_dendritic", "fashionmnist_dendritic_deep"):
        d, s = load_config(MODELS / f"{stem}.toml"), load_config(MODELS / f"{stem}_std.toml")
        assert d.model.arch == s.model.arch and s.model.spec.is_dense and d.data == s.data
        assert d.train == s.train and d.dt == s.dt and d.train.backend == "numba"
    over = override_branches(cfg, basal_branches=3, apical_scale=0.0)
    assert [cfg_o["basal_branches"] for cfg_o in map(over.model.spec.options, over.model.spec.connections)] == [3, 3]
    assert [o["apical_scale"] for o in map(over.model.spec.options, over.model.spec.connections)] == [0.0, 0.0]


def _digits_toml(tmp_path):
    """models/mnist_dendritic.toml resized to digits (64-16-10): declared layers are not resized by --arch."""
    toml = tmp_path / "digits_dendritic.toml"
    toml.write_text((MODELS / "mnist_dendritic.toml").read_text().replace("shape = [784]", "shape = [64]").replace(
        "shape = [256]", "shape = [16]").replace('dataset = "mnist"', 'dataset = "digits"'))
    return toml


def test_cli_flags_override_the_config_and_the_run_file_keeps_the_masks(tmp_path, run_cli):
    from neuro_hts.runfile import load_run

    run = tmp_path / "d.h5"
    toml = _digits_toml(tmp_path)
    code, _, err = run_cli(["train", "--config", str(toml), "--epochs", "1", "--n-train", "64", "--n-test", "20",
                            "--t1", "10", "--t2", "4", "--basal-branches", "3", "--apical-branches", "1",
                            "--branch-sparsity", "0.25", "--apical-scale", "0.5", "--out", str(run)])
    assert code == 0, err
    state = load_run(run)
    opts = [state.config.model.spec.options(c) for c in state.config.model.spec.connections]
    assert [(o["basal_branches"], o["apical_branches"], o["branch_sparsity"], o["apical_scale"]) for o in opts] == [
        (3, 1, 0.25, 0.5)] * 2
    fresh = init_network(state.config)
    for got, want in zip(state.network.buffers, fresh.buffers):
        assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in got)
    assert (state.network.buffers[0]["basal_mask"].sum(axis=1) == 16).all()  # round(0.25 * 64)
    c = state.network.connections()[0]
    assert (c.basal_weight[c.basal_mask == 0] == 0).all()
    code, out, err = run_cli(["eval", str(run)])
    assert code == 0, err
    import h5py  # a hand-edited mask (a 2 where only 0 and 1 mean anything) is refused at load, in one line

    bad = tmp_path / "badmask.h5"
    bad.write_bytes(run.read_bytes())
    with h5py.File(bad, "r+") as f:
        name = next(n for n in ("layers/1/buffers/basal_mask", "layers/2/buffers/basal_mask") if n in f)
        m = f[name][()]
        m.flat[0] = 2
        f[name][...] = m
    code, out, err = run_cli(["eval", str(bad)])
    assert code == 2 and "values other than 0 and 1" in err and err.count("\n") == 1 and out == "", err
    code, _, err = run_cli(["train", "--config", str(toml), "--apical-scale", "x", "--out", str(tmp_path / "y.h5")])
    assert code == 2


def test_quantize_and_deploy_refuse_a_dendritic_run_with_the_branch_dendrites_rule(tmp_path, run_cli):
    from neuro_hts.hardware.drc import run_design_rules
    from neuro_hts.hardware.quantize import quantize_network
    from neuro_hts.hardware.target import load_target

    net = init_network(_config())
    target = load_target("loihi2")
    v = run_design_rules(net, target)
    assert [x.rule for x in v] == ["branch_dendrites"] and "no Lava process exists for branch dendrites" in str(v[0])
    with pytest.raises(ConfigError, match="branch_dendrites: layer 1: no Lava process"):
        quantize_network(net, target, rounding="nearest")
    toml = _digits_toml(tmp_path)
    run = tmp_path / "d.h5"
    code, _, err = run_cli(["train", "--config", str(toml), "--epochs", "1", "--n-train", "40", "--batch-size", "20", "--n-test", "20",
                            "--t1", "5", "--t2", "2", "--out", str(run)])
    assert code == 0, err
    code, _, err = run_cli(["quantize", str(run), "--target", "loihi2", "--out", str(tmp_path / "b.h5")])
    assert code == 2 and "branch_dendrites" in err and err.count("\n") == 1
    code, _, err = run_cli(["deploy", str(run), "--arith", "float", "--backend", "numba"])
    assert code == 2 and "branch_dendrites" in err and err.count("\n") == 1


@pytest.mark.parametrize("arch", [(64, 16, 10), (64, 16, 12, 10)])
@pytest.mark.parametrize("dist", ["constant", "lognormal"])
def test_numba_equals_the_reference_within_float32_tolerance(digits, arch, dist):
    """float32: states within 1e-6 and updates within 2e-4 relative (measured 4e-8 and 5e-5)."""
    from neuro_hts.backends import get_backend

    x, y = digits
    net = init_network(_config(arch, {"dist": dist, "mean": 0.3 if dist == "lognormal" else 0.5, "std": 0.1}))
    alg = EP(t1=60, t2=20, beta=0.1, nudging="symmetric")
    f64, gW64, _ = FloatEngine(None, backend=_numpy()).gradients(net, x, y, alg)
    f32, gW32, gb32 = FloatEngine(None, backend=get_backend("numba")).gradients(
        net.astype(np.float32), x.astype(np.float32), y.astype(np.float32), alg)
    assert f32.states[0].dtype == np.float32 and gW32[0].dtype == np.float32
    for a, b in zip(f64.states, f32.states):
        assert np.abs(a - b).max() <= 1e-6
    for a, b in zip(gW64, gW32):
        assert np.linalg.norm(a - b) <= 2e-4 * np.linalg.norm(a)
    assert all((g == 0).all() for g in gb32)


def test_numba_float64_runs_every_phase_option_as_the_reference(digits):
    from neuro_hts.backends import get_backend

    x, y = digits
    net = init_network(_config((64, 16, 12, 10)))
    ref, nb = _numpy(), get_backend("numba", np.float64)
    free = ref.relax(net, x, 30)
    for opts in ({"gamma": 0.5}, {"clamp": "target", "y": y}, {"clamp": "hold", "states": free.states},
                 {"anchor": free.states, "coe": 0.1, "beta": 0.1, "y": y, "states": free.states}, {"tol": 1e-4}):
        a, b = ref.relax(net, x, 40, **opts), nb.relax(net, x, 40, **opts)
        assert a.n_steps == b.n_steps
        for u, v in zip(a.states, b.states):
            np.testing.assert_allclose(v, u, rtol=0, atol=1e-12)
        np.testing.assert_allclose(b.residual, a.residual, rtol=0, atol=1e-12)


def test_numba_refuses_what_its_dendritic_path_does_not_run():
    from neuro_hts.backends import get_backend

    cfg = Config.from_dict({"model": {**dendritic_model((64, 16, 10)), "form": "energy"}, "train": {"backend": "numpy"}})
    engine = FloatEngine(cfg, backend=get_backend("numba"))
    with pytest.raises(ConfigError, match="leaky form with an MSE output"):
        check_supported(engine, init_network(cfg, np.float32), EP())
    assert isinstance(init_network(cfg).connections()[1], Dendritic)


def test_the_shared_input_contrast_equals_the_difference_of_the_two_gradients():
    c = init_network(_config((6, 5, 4), basal_branches=3)).connections()[0]
    rng = np.random.default_rng(3)
    u, va, vb = rng.uniform(0, 1, (4, 6)), rng.uniform(0, 1, (4, 5)), rng.uniform(0, 1, (4, 5))
    want = c.param_grad(u, va)["weight"] - c.param_grad(u, vb)["weight"]
    np.testing.assert_allclose(c.param_grad_contrast(u, va, u, vb)["weight"], want, rtol=1e-12, atol=1e-14)
    assert np.abs(want).max() > 1e-3
