"""Algorithms as phases (EP, CHL, adjusted adaptation) on every engine.

1. The phase plans each algorithm builds.
2. Contract per registered algorithm: ``has_gradient`` -> agreement with BPTT; otherwise a
   stated cosine alignment with BPTT's gradient and a hand-derived golden step.
3. Exactness: adapt K = 0 is plain EP/CHL bit for bit, c = 1 gives a zero update, the
   closed form of the mixed output after K steps.
4. The phase options (gamma, clamp, anchor mixing, early stop) in every engine against
   the slow references of tests/naive.py: float within a stated tolerance, fixed point
   exactly.
"""

from __future__ import annotations

import dataclasses

import naive
import numpy as np
import pytest

from neuro_hts import dynamics
from neuro_hts.algorithms import ALGORITHMS, CHL, EP, Adapted, Phase, Plan, make_algorithm, run_phases
from neuro_hts.backends import get_backend
from neuro_hts.bptt import bptt_gradients
from neuro_hts.config import Config
from neuro_hts.dynamics import RelaxStatus
from neuro_hts.engines import FloatEngine
from neuro_hts.errors import ConfigError
from neuro_hts.hardware import fixed_learning as fl
from neuro_hts.hardware import load_target
from neuro_hts.hardware.fixed_engine import FixedEngine
from neuro_hts.hardware.fixed_sim import FixedPointSimulator
from neuro_hts.hardware.quantize import quantize_network
from neuro_hts.learning import SGD
from neuro_hts.network import Network
from neuro_hts.runfile import load_run
from neuro_hts.testing import random_problem

LOIHI2 = load_target("loihi2")


def _cos(a, b):
    return float(a.ravel() @ b.ravel() / (np.linalg.norm(a) * np.linalg.norm(b)))


def _estimate(net, x, y, algorithm, rng=None):
    res, c = run_phases(fl.float_relaxer(net, x, y), algorithm, rng)
    gW, gb = dynamics.ep_gradients(net, x, y, res[c.a].states, c.beta_a, res[c.b].states, c.beta_b)
    return res, gW + gb


# ------------------------------------------------------------------------ 1. plans
def test_ep_plans():
    phases, c = EP(t1=7, t2=3, beta=0.2).phases()
    assert [(p.name, p.steps, p.start, p.beta) for p in phases] == [("free", 7, "zeros", 0.0), ("nudged", 3, "free", 0.2)]
    assert (c.a, c.b, c.beta_a, c.beta_b) == ("nudged", "free", 0.2, 0.0)
    phases, c = EP(t1=7, t2=3, beta=0.2, nudging="symmetric").phases()
    assert [p.beta for p in phases] == [0.0, 0.2, -0.2] and (c.a, c.b, c.beta_a, c.beta_b) == ("nudged+", "nudged-", 0.2, -0.2)
    # random sign: one draw per batch, + when rng.random() < 0.5 (as the old ep_phases drew it)
    rng, ref = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(6):
        _, c = EP(beta=0.3, nudging="random-sign").phases(rng)
        assert c.beta_a == (0.3 if ref.random() < 0.5 else -0.3)
    with pytest.raises(ConfigError, match="random generator"):
        EP(nudging="random-sign").phases(None)


def test_chl_plan_clamps_after_the_delay_and_has_no_divisor():
    phases, c = CHL(t1=120, t2=120, gamma=0.5, clamp_delay=13).phases()
    assert [(p.name, p.steps, p.start, p.clamp, p.gamma) for p in phases] == [
        ("free", 120, "zeros", "none", 0.5), ("delay", 13, "zeros", "none", 0.5), ("clamped", 107, "delay", "target", 0.5)]
    assert (c.a, c.b, c.beta_a - c.beta_b) == ("clamped", "free", 1.0)
    assert CHL(t2=10, start="free").phases()[0][1].start == "free"
    for bad in (dict(clamp_delay=10, t2=10), dict(gamma=-1.0), dict(start="nudged")):
        with pytest.raises(ConfigError):
            CHL(**bad)


def test_adapted_plan_anchors_every_contrast_side_to_the_free_phase():
    phases, c = Adapted(EP(beta=0.1, nudging="symmetric"), steps=5, coe=0.2).phases()
    extra = [p for p in phases if p.anchor]
    assert [(p.name, p.start, p.beta, p.clamp, p.anchor, p.coe, p.steps) for p in extra] == [
        ("nudged+:adapted", "nudged+", 0.1, "none", "free", 0.2, 5), ("nudged-:adapted", "nudged-", -0.1, "none", "free", 0.2, 5)]
    assert (c.a, c.b) == ("nudged+:adapted", "nudged-:adapted")
    phases, c = Adapted(CHL(), steps=20, coe=0.1).phases()
    assert phases[-1].clamp == "hold" and (c.a, c.b) == ("clamped:adapted", "free")  # the output is only mixed


def test_make_algorithm_reads_the_config_and_k0_is_the_plain_algorithm():
    cfg = Config.from_dict({"train": {"algorithm": "chl", "t1": 50, "t2": 40}, "chl": {"gamma": 0.7, "clamp_delay": 12}})
    algo = make_algorithm(cfg)
    assert algo == CHL(t1=50, t2=40, gamma=0.7, clamp_delay=12)
    assert make_algorithm(cfg.replace(adapt={"steps": 0, "coe": 0.5})) == algo  # no modifier at all
    assert make_algorithm(cfg.replace(adapt={"steps": 3})) == Adapted(algo, 3, 0.1)
    with pytest.raises(ConfigError, match="clamp_delay"):
        Config.from_dict({"train": {"algorithm": "chl", "t2": 10}, "chl": {"clamp_delay": 10}})
    with pytest.raises(ConfigError, match="output = 'mse'"):
        Config.from_dict({"model": {"arch": [4, 5, 3], "output": "ce"}, "train": {"algorithm": "chl"}})
    with pytest.raises(ConfigError, match="algorithm must be one of ep, chl"):
        Config.from_dict({"train": {"algorithm": "bp"}})


# ------------------------------------------------------------ 2. contract per algorithm
#: (arch, activation): the problems of the contract. Worst per-layer cosine with BPTT
#: (T = 400, settled), measured in the order of the list: CHL 0.616, 0.657, 0.675, 0.894;
#: CHL + adaptation (K 20, c 0.1) 0.602, 0.624, 0.776, 0.971; EP + adaptation (symmetric,
#: beta 1e-3) 0.989, 0.994, 0.993, 0.992. CHL's gap is the output's saturation: the hard
#: clamp pushes saturated outputs that backprop leaves alone.
CONTRACT_PROBLEMS = [((20, 16, 4), "hard_sigmoid"), ((20, 16, 4), "sigmoid4"), ((20, 16, 12, 4), "hard_sigmoid"),
                     ((20, 16, 12, 4), "sigmoid4")]
#: stated alignment bounds of the algorithms without an exact gradient (worst layer)
ALIGNMENT = {"chl": 0.55, "chl+adapt": 0.55, "ep+adapt": 0.98}


def _contract_algorithms():
    T = 400
    out = []
    for name in ALGORITHMS.names():
        base = ALGORITHMS.get(name)(Config.from_dict({"train": {"algorithm": name, "t1": T, "t2": T, "beta": 1e-3,
                                                                 "nudging": "symmetric"}}))
        out += [base, Adapted(base, 20, 0.1)]
    return out


@pytest.mark.parametrize("algorithm", _contract_algorithms(), ids=lambda a: a.name)
@pytest.mark.parametrize("arch,activation", CONTRACT_PROBLEMS)
def test_every_algorithm_meets_its_gradient_contract(algorithm, arch, activation):
    net, x, y = random_problem(arch, "leaky", activation, "mse", seed=0)
    res, est = _estimate(net, x, y, algorithm)
    assert res["free"].status is RelaxStatus.SETTLED
    gW, gb, _ = bptt_gradients(net, x, y, 400, gamma=algorithm.free_phase().gamma)
    cos = [_cos(e, g) for e, g in zip(est, gW + gb)]
    if algorithm.has_gradient:
        rel = [np.linalg.norm(e - g) / np.linalg.norm(g) for e, g in zip(est, gW + gb)]
        assert max(rel) < 1e-4, rel  # symmetric EP at beta 1e-3 (test_gdu.py: the full grid)
    else:
        assert min(cos) > ALIGNMENT[algorithm.name], cos


def test_chl_aligns_better_as_feedback_weakens_in_a_smooth_deep_net():
    """Xie & Seung: with weak feedback CHL's update approaches backprop's. Measured on the
    sigmoid4 20-16-12-4 problem (worst layer): gamma 1 -> 0.894, 0.3 -> 0.979, 0.03 -> 0.986."""
    net, x, y = random_problem((20, 16, 12, 4), "leaky", "sigmoid4", "mse", seed=0)
    worst = {}
    for gamma in (1.0, 0.3, 0.03):
        _, est = _estimate(net, x, y, CHL(t1=400, t2=400, gamma=gamma))
        gW, gb, _ = bptt_gradients(net, x, y, 400, gamma=gamma)
        worst[gamma] = min(_cos(e, g) for e, g in zip(est, gW + gb))
    assert worst[1.0] < worst[0.3] < worst[0.03]
    assert worst[1.0] > 0.88 and worst[0.03] > 0.98


def _golden_net():
    """1-1-1 network, dt = 1, hard sigmoid: W1 = 0.5, b1 = 0.1, W2 = 0.8, b2 = -0.2."""
    one = lambda v: np.array([[v]])  # noqa: E731
    return Network([one(0.5), one(0.8)], [np.array([0.1]), np.array([-0.2])], [np.ones(1), np.ones(1)])


#: By hand, x = 1, y = 1, gamma = 0.5, T1 = T2 = 2, s <- sigma(h) (dt = 1), synchronous:
#: free:    s1 = 0.6, 0.6 (h1 = 0.6 + 0.4 s2);  s2 = sigma(-0.2) = 0, sigma(0.8*0.6 - 0.2) = 0.28
#: clamped from zeros: s2 = y = 1 from step 1; s1 = 0.6, then 0.6 + 0.4 * 1 = 1.0
#: contrast (no 1/beta): dW1 = (1.0 - 0.6) x = 0.4, db1 = 0.4, dW2 = 1 * 1.0 - 0.28 * 0.6 = 0.832,
#: db2 = 1 - 0.28 = 0.72; the estimate (descent direction) is minus these.
#: Adapted, K = 1, c = 0.5, from the clamped states, output held: s1 = 0.5 * sigma(0.6 + 0.4)
#: + 0.5 * 0.6 = 0.8, s2 = 0.5 * 1 + 0.5 * 0.28 = 0.64: dW1 = db1 = 0.2,
#: dW2 = 0.64 * 0.8 - 0.168 = 0.344, db2 = 0.36.
GOLDEN = {
    "chl": [-0.4, -0.832, -0.4, -0.72],
    "chl+adapt": [-0.2, -0.344, -0.2, -0.36],
}


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("name", list(GOLDEN))
def test_golden_chl_step(name, backend):
    chl = CHL(t1=2, t2=2, gamma=0.5)
    algo = chl if name == "chl" else Adapted(chl, steps=1, coe=0.5)
    net = _golden_net()
    x, y = np.array([[1.0]]), np.array([[1.0]])
    engine = FloatEngine(None, backend=get_backend(backend, np.float64))
    free, gW, gb = engine.gradients(net, x, y, algo)
    np.testing.assert_allclose(free.states[0], [[0.6]], rtol=1e-14)
    np.testing.assert_allclose(free.states[1], [[0.28]], rtol=1e-14)
    np.testing.assert_allclose(np.concatenate([g.ravel() for g in gW + gb]), GOLDEN[name], rtol=1e-13)


# ---------------------------------------------------------------------- 3. exactness
@pytest.mark.parametrize("algorithm", ["ep", "chl"])
def test_adapt_steps_0_trains_bit_identical_weights(tmp_path, run_cli, algorithm):
    common = ["train", "--dataset", "digits", "--arch", "64-24-10", "--epochs", "1", "--n-train", "200", "--n-test", "50",
              "--batch-size", "25", "--t1", "20", "--t2", "12", "--algorithm", algorithm, "--seed", "2"]
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    assert run_cli([*common, "--out", str(a)])[0] == 0
    assert run_cli([*common, "--adapt-steps", "0", "--adapt-coe", "0.7", "--out", str(b)])[0] == 0
    ra, rb = load_run(a), load_run(b)
    assert rb.config.adapt.steps == 0
    for p, q in zip(ra.network.weights + ra.network.biases, rb.network.weights + rb.network.biases, strict=True):
        assert np.array_equal(p, q)


@pytest.mark.parametrize("inner", [EP(t1=40, t2=10, beta=0.3), EP(t1=40, t2=10, beta=0.3, nudging="symmetric"),
                                   CHL(t1=40, t2=20, clamp_delay=5)], ids=["ep", "ep-symmetric", "chl"])
@pytest.mark.parametrize("engine", ["numpy", "numba", "numba-float32", "fixed"])
def test_adapt_coe_1_gives_a_zero_update(engine, inner):
    net, x, y = random_problem((12, 9, 4), "leaky", "hard_sigmoid", "mse", seed=3)
    algo = Adapted(inner, steps=3, coe=1.0)
    if engine == "fixed":
        sim = FixedPointSimulator(quantize_network(net, LOIHI2))
        res, c = run_phases(fl.fixed_relaxer(sim, x, y), algo)
        CW, cb = fl.ep_contrast(fl.traces(sim, x, res[c.a].states), fl.traces(sim, x, res[c.b].states))
        grads = CW + cb
        moved = [np.abs(a - b).max() for a, b in zip(res[c.a.split(":")[0]].states, res["free"].states)]
    else:
        name, dtype = {"numpy": ("numpy", np.float64), "numba": ("numba", np.float64),
                       "numba-float32": ("numba", np.float32)}[engine]
        e = FloatEngine(None, backend=get_backend(name, dtype))
        n = net.astype(dtype)
        res, c = e.phases(n, x.astype(dtype), y.astype(dtype), algo)
        grads = list(e.backend.ep_gradients(n, x.astype(dtype), y.astype(dtype), res[c.a].states, c.beta_a,
                                            res[c.b].states, c.beta_b))
        grads = grads[0] + grads[1]
        moved = [np.abs(a - b).max() for a, b in zip(res[c.a.split(":")[0]].states, res["free"].states)]
    assert max(moved) > 1e-3  # the nudged/clamped phase did move away from the free state
    for g in grads:
        assert not np.any(g)  # exactly zero


@pytest.mark.parametrize("backend,dtype,tol", [("numpy", np.float64, 1e-12), ("numba", np.float64, 1e-12),
                                               ("numba", np.float32, 2e-6)])
def test_adapted_chl_output_follows_the_closed_form(backend, dtype, tol):
    """The held output after K mixing steps: (1 - c)^K y + (1 - (1 - c)^K) s^free."""
    net, x, y = random_problem((12, 9, 4), "leaky", "sigmoid4", "mse", seed=1)
    K, c = 20, 0.1
    e = FloatEngine(None, backend=get_backend(backend, dtype))
    res, contrast = e.phases(net.astype(dtype), x.astype(dtype), y.astype(dtype), Adapted(CHL(t1=60, t2=30), K, c))
    s_free = res["free"].states[-1].astype(np.float64)
    want = (1 - c) ** K * y + (1 - (1 - c) ** K) * s_free
    assert (1 - c) ** K == pytest.approx(0.1215766546)
    np.testing.assert_allclose(res[contrast.a].states[-1], want, rtol=0, atol=tol)


# ------------------------------------------------------ 4. phase options vs references
OPTION_CASES = {
    "gamma": dict(gamma=0.3),
    "clamp-target": dict(clamp="target"),
    "hold": dict(clamp="hold"),
    "anchor": dict(anchor=True, coe=0.25),
    "nudge+anchor": dict(beta=0.4, anchor=True, coe=0.1),
    "all": dict(gamma=0.6, clamp="hold", anchor=True, coe=0.3),
}


def _options(case, anchor_states):
    opts = dict(OPTION_CASES[case])
    if opts.pop("anchor", False):
        opts["anchor"] = anchor_states
    return opts


@pytest.mark.parametrize("case", list(OPTION_CASES))
def test_float_phase_options_match_the_naive_loop(case):
    net, x, y = random_problem((7, 6, 5, 3), "leaky", "sigmoid4", "mse", seed=4, batch=3)
    start = dynamics.relax(net, x, 5).states
    anchor = dynamics.relax(net, x, 2).states
    opts = _options(case, anchor)
    want = naive.float_relax(net, x, 6, start, y, **opts)
    ref = dynamics.relax(net, x, 6, start, y, **opts)
    for a, b in zip(ref.states, want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    for dtype, tol in ((np.float64, 1e-12), (np.float32, 3e-6)):
        nb = get_backend("numba", dtype)
        got = nb.relax(net.astype(dtype), x.astype(dtype), 6, [s.astype(dtype) for s in start], y.astype(dtype),
                       **{k: ([a.astype(dtype) for a in v] if k == "anchor" else v) for k, v in opts.items()})
        for a, b in zip(got.states, want):
            np.testing.assert_allclose(a, b, rtol=0, atol=tol)
        np.testing.assert_allclose(got.residual, ref.residual, rtol=0, atol=tol)


@pytest.mark.parametrize("case", list(OPTION_CASES))
def test_fixed_phase_options_match_the_python_integer_reference(case):
    net, x, y = random_problem((7, 6, 5, 3), "leaky", "hard_sigmoid", "mse", seed=4, batch=3)
    sim = FixedPointSimulator(quantize_network(net, LOIHI2))
    start = sim.relax(x, 5)[0]
    anchor = sim.relax(x, 2)[0]
    opts = _options(case, anchor)
    want, want_res, want_n = naive.fixed_relax(sim.bundle, x, 6, start, y, **opts)
    got, res, n = sim.relax(x, 6, start, y, return_steps=True, **opts)
    assert n == want_n == 6
    for a, b in zip(got, want):
        assert np.array_equal(a, b)
    assert np.array_equal(res, want_res)


def test_fixed_chl_with_adaptation_runs_the_reference_phases_and_update():
    """The fixed engine's CHL + adaptation step: phases equal to the Python integer reference,
    the update equal to fixed_ep_update of those states, applied on the grid."""
    net, x, y = random_problem((10, 8, 4), "leaky", "hard_sigmoid", "mse", seed=6, batch=5)
    cfg = Config.from_dict({"model": {"arch": [10, 8, 4]}, "train": {"algorithm": "chl", "t1": 30, "t2": 20,
                            "optimizer": "sgd", "lr": [0.05], "arith": "fixed", "target": "loihi2",
                            "update_rounding": "nearest"}, "chl": {"clamp_delay": 4, "gamma": 0.75},
                            "adapt": {"steps": 6, "coe": 0.2}})
    algo = make_algorithm(cfg)
    engine = FixedEngine(cfg, SGD((0.05, 0.05)))
    grid_net = net.copy()
    engine.prepare(grid_net)
    bundle = engine.bundle(grid_net)
    # the reference, phase by phase
    free, _, _ = naive.fixed_relax(bundle, x, 30, gamma=0.75)
    delay, _, _ = naive.fixed_relax(bundle, x, 4, gamma=0.75)
    clamped, _, _ = naive.fixed_relax(bundle, x, 16, delay, y, gamma=0.75, clamp="target")
    adapted, _, _ = naive.fixed_relax(bundle, x, 6, clamped, y, gamma=0.75, clamp="hold", anchor=free, coe=0.2)
    want = fl.fixed_ep_update(bundle, x, y, adapted, 1.0, free, 0.0, (0.05, 0.05), "nearest")
    assert any(np.abs(q).max() > 0 for q in want.dq_weights)
    before = [lb.weight_mantissa.copy() for lb in bundle.layers]
    stats = engine.train_step(grid_net, x, y, algo)
    after = engine.bundle(grid_net)
    for l, lb in enumerate(after.layers):
        expect = np.clip(before[l] + 2 * want.dq_weights[l], -254, 254)
        assert np.array_equal(lb.weight_mantissa, expect)
    assert stats.free_steps == 30 and stats.n == 5


# ---------------------------------------------------------------- early stop, status
@pytest.mark.parametrize("backend,dtype", [("numpy", np.float64), ("numba", np.float64), ("numba", np.float32)])
def test_tol_ends_the_phase_at_the_first_settled_step(backend, dtype):
    net, x, _ = random_problem((10, 12, 4), "leaky", "hard_sigmoid", "mse", seed=2)
    net, x = net.astype(dtype), x.astype(dtype)
    b = get_backend(backend, dtype)
    early = b.relax(net, x, 500, tol=1e-4)
    assert 5 < early.n_steps < 500 and early.status is RelaxStatus.SETTLED and early.max_residual <= 1e-4
    exact = b.relax(net, x, early.n_steps)
    one_less = b.relax(net, x, early.n_steps - 1)
    assert one_less.max_residual > 1e-4  # it did stop at the FIRST settled step
    for p, q in zip(early.states, exact.states):
        assert np.array_equal(p, q)
    ref = dynamics.relax(net.astype(np.float64), x.astype(np.float64), 500, tol=1e-4)
    assert abs(ref.n_steps - early.n_steps) <= (0 if dtype == np.float64 else 1)
    never = b.relax(net, x, 8, tol=1e-12)
    assert never.n_steps == 8 and never.status is RelaxStatus.MAX_STEPS


def test_fixed_tol_stops_like_the_reference():
    net, x, _ = random_problem((10, 12, 4), "leaky", "hard_sigmoid", "mse", seed=2)
    sim = FixedPointSimulator(quantize_network(net, LOIHI2))
    st, res, n = sim.relax(x, 300, tol=2e-3, return_steps=True)
    want, want_res, want_n = naive.fixed_relax(sim.bundle, x, 300, tol=2e-3)
    assert n == want_n < 300 and res.max() <= int(2e-3 * 4096)
    assert all(np.array_equal(a, b) for a, b in zip(st, want))


def test_status_reports_divergence():
    net, x, _ = random_problem((6, 5, 3), "leaky", "hard_sigmoid", "mse", seed=0)
    net.weights[0][0, 0] = np.nan
    for backend in ("numpy", "numba"):
        r = get_backend(backend, np.float64).relax(net, x, 5)
        assert r.status is RelaxStatus.DIVERGED
    assert dynamics.relax_status(np.array([0.0, 1e-4]), 1e-3) is RelaxStatus.SETTLED
    assert dynamics.relax_status(np.array([0.0, 2e-3]), 1e-3) is RelaxStatus.MAX_STEPS


def test_t1_tol_in_training_records_the_steps_used(tmp_path, run_cli):
    out = tmp_path / "r.h5"
    code, _, err = run_cli(["train", "--dataset", "digits", "--arch", "64-24-10", "--epochs", "2", "--n-train", "200",
                            "--n-test", "50", "--batch-size", "25", "--t1", "200", "--t1-tol", "1e-3", "--out", str(out)])
    assert code == 0, err
    h = load_run(out).history["free_steps_mean"]
    assert len(h) == 2 and all(10 < v < 200 for v in h), h
    out2 = tmp_path / "r2.h5"
    assert run_cli(["train", "--dataset", "digits", "--arch", "64-24-10", "--epochs", "1", "--n-train", "200",
                    "--n-test", "50", "--batch-size", "25", "--t1", "30", "--out", str(out2)])[0] == 0
    assert load_run(out2).history["free_steps_mean"] == [30.0]


def test_phase_validation():
    with pytest.raises(ConfigError, match="needs an anchor"):
        Phase("p", 3, coe=0.2)
    with pytest.raises(ConfigError, match="clamp must be one of"):
        Phase("p", 3, clamp="pin")
    with pytest.raises(ConfigError, match="steps"):
        Phase("p", -1)
    plan = Plan.of(EP(beta=0.2))
    assert plan.phases() == EP(beta=0.2).phases() and plan.free_phase().name == "free"
    assert dataclasses.replace(plan.free_phase(), steps=3).steps == 3
