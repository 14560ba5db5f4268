"""The Numba backend against the NumPy reference (neuro_hts.dynamics), on the same inputs.

Tolerances (measured with these seeds and with 784-512-10 / 784-256-256-10 networks
over five seeds while choosing them):

* float64 Numba vs float64 NumPy: states and residuals rtol 1e-10 (atol 1e-12 for
  entries at exactly 0); the largest difference seen was 7e-16. The kernels only
  reorder sums (BLAS, and reassociated dot products for layers of <= 12 neurons).
* float32 Numba vs float64 NumPy: states atol 3e-6 after 30 + 10 steps (worst seen
  5e-7). The dynamics contract, so rounding errors do not grow with the step count.
* gradients: float64 within 1e-10 of the largest entry of each array (worst seen
  6e-12; entry-wise rtol is meaningless where r^a r^a' - r^b r^b' cancels to ~0);
  float32 phases + gradients against the float64 pipeline atol 1e-5 (worst seen 8e-7,
  i.e. the state error divided by beta).
"""

from __future__ import annotations

import numpy as np
import pytest

from neuro_hts.testing import random_problem
from neuro_hts import dynamics
from neuro_hts.backends import get_backend
from neuro_hts.backends.numba_backend import NumbaBackend
from neuro_hts.backends.numpy_ref import NumpyBackend
from neuro_hts.config import Config, DtConfig, ModelConfig, TrainConfig
from neuro_hts.errors import ConfigError
from neuro_hts.learning import make_optimizer, ep_train_step
from neuro_hts.network import Network, init_network

F64_RTOL, F64_ATOL = 1e-10, 1e-12
F32_STATE_ATOL = 3e-6
F64_GRAD_REL = 1e-10
F32_GRAD_ATOL = 1e-5

T1, T2, BETA = 30, 10, 0.1

FORMS = ("leaky", "energy")
ACTIVATIONS = ("hard_sigmoid", "sigmoid4")
OUTPUTS = ("mse", "ce")
# one, two and three hidden layers; the 8-neuron layer and the 5-neuron output take the
# dot-product path of the kernels, the others gemm
ARCHS = {"1hidden": (24, 20, 5), "2hidden": (24, 20, 16, 5), "3hidden": (24, 20, 8, 16, 5)}
PHASES = ("free", "nudged+", "nudged-")

REF = NumpyBackend(np.float64)
NB64 = NumbaBackend(np.float64)
NB32 = NumbaBackend(np.float32)


def _problem(arch, form="leaky", activation="hard_sigmoid", output="mse", seed=0, batch=8):
    return random_problem(arch, form, activation, output, seed=seed, batch=batch, data_seed=2000 + seed)


def _phase(backend, net, x, y, phase, free_states):
    """Run one phase: free from zeros, or nudged (+/- beta) from the given free states."""
    if phase == "free":
        return backend.relax(net, x, T1)
    beta = BETA if phase == "nudged+" else -BETA
    return backend.relax(net, x, T2, free_states, y, beta)


def _max_abs_diff(a, b):
    return max(float(np.abs(np.asarray(p, np.float64) - q).max()) for p, q in zip(a, b))


combos = pytest.mark.parametrize(
    "form,activation,output,arch",
    [(f, a, o, arch) for f in FORMS for a in ACTIVATIONS for o in OUTPUTS for arch in ARCHS],
)


# ------------------------------------------------------------------ relaxation
@combos
@pytest.mark.parametrize("phase", PHASES)
def test_relax_float64_matches_reference(form, activation, output, arch, phase):
    net, x, y = _problem(ARCHS[arch], form, activation, output)
    free = REF.relax(net, x, T1)
    ref = _phase(REF, net, x, y, phase, free.states)
    got = _phase(NB64, net, x, y, phase, free.states)
    assert len(got.states) == net.n_dynamic and got.n_steps == ref.n_steps
    for s_ref, s in zip(ref.states, got.states):
        assert s.dtype == np.float64 and s.shape == s_ref.shape
        np.testing.assert_allclose(s, s_ref, rtol=F64_RTOL, atol=F64_ATOL)
    np.testing.assert_allclose(got.residual, ref.residual, rtol=F64_RTOL, atol=F64_ATOL)
    # the phase really moved the states (a comparison of two stuck relaxations proves little)
    start = free.states if phase != "free" else dynamics.zero_states(net, x.shape[0])
    assert _max_abs_diff(got.states, start) > 1e-3


@combos
@pytest.mark.parametrize("phase", PHASES)
def test_relax_float32_matches_reference(form, activation, output, arch, phase):
    net, x, y = _problem(ARCHS[arch], form, activation, output, seed=1)
    free = REF.relax(net, x, T1)
    ref = _phase(REF, net, x, y, phase, free.states)
    got = _phase(NB32, net, x, y, phase, free.states)
    assert all(s.dtype == np.float32 for s in got.states) and got.residual.dtype == np.float32
    assert _max_abs_diff(got.states, ref.states) <= F32_STATE_ATOL
    assert float(np.abs(got.residual - ref.residual).max()) <= F32_STATE_ATOL


def test_relax_float32_mnist_sized_network():
    """784-512-10 as in the benchmark (and a 784-256-256-10), float32 against float64."""
    for arch in ((784, 512, 10), (784, 256, 256, 10)):
        net, x, y = _problem(arch, batch=16)
        x = (x > 0.7) * x  # MNIST-like: most pixels 0
        free_ref = REF.relax(net, x, T1)
        free = NB32.relax(net, x, T1)
        assert _max_abs_diff(free.states, free_ref.states) <= F32_STATE_ATOL
        nudged_ref = REF.relax(net, x, T2, free_ref.states, y, BETA)
        nudged = NB32.relax(net, x, T2, free.states, y, BETA)
        assert _max_abs_diff(nudged.states, nudged_ref.states) <= F32_STATE_ATOL


def test_input_drive_and_reused_drive():
    net, x, y = _problem(ARCHS["2hidden"], form="energy", activation="sigmoid4")
    d_ref = REF.input_drive(net, x)
    d = NB64.input_drive(net, x)
    np.testing.assert_allclose(d, d_ref, rtol=F64_RTOL, atol=F64_ATOL)
    # passing drive1 gives the same phase as computing it, and a different drive changes it
    a = NB64.relax(net, x, 5)
    b = NB64.relax(net, x, 5, drive1=d)
    c = NB64.relax(net, x, 5, drive1=d + 0.5)
    np.testing.assert_array_equal(a.states[0], b.states[0])
    assert float(np.abs(c.states[0] - a.states[0]).max()) > 1e-3


# ------------------------------------------------------------------ EP gradients
@combos
@pytest.mark.parametrize("nudging", ["one-sided", "symmetric"])
def test_ep_gradients_float64_match_reference(form, activation, output, arch, nudging):
    net, x, y = _problem(ARCHS[arch], form, activation, output, seed=2)
    free = REF.relax(net, x, T1)
    plus = REF.relax(net, x, T2, free.states, y, BETA)
    if nudging == "one-sided":
        args = (plus.states, BETA, free.states, 0.0)
    else:
        args = (plus.states, BETA, REF.relax(net, x, T2, free.states, y, -BETA).states, -BETA)
    gW_ref, gb_ref = REF.ep_gradients(net, x, y, *args)
    gW, gb = NB64.ep_gradients(net, x, y, *args)
    assert [g.shape for g in gW] == [w.shape for w in net.weights]
    assert [g.shape for g in gb] == [b.shape for b in net.biases]
    for g, g_ref in zip(gW + gb, gW_ref + gb_ref):
        scale = float(np.abs(g_ref).max())
        assert scale > 0.0
        assert float(np.abs(g - g_ref).max()) <= F64_GRAD_REL * scale


@pytest.mark.parametrize("form,activation,output", [(f, a, o) for f in FORMS for a in ACTIVATIONS for o in OUTPUTS])
@pytest.mark.parametrize("nudging", ["one-sided", "symmetric"])
def test_ep_phases_and_gradients_float32_match_float64_pipeline(form, activation, output, nudging):
    net, x, y = _problem(ARCHS["3hidden"], form, activation, output, seed=3)

    def pipeline(backend):
        free = backend.relax(net, x, T1)
        plus = backend.relax(net, x, T2, free.states, y, BETA)
        if nudging == "one-sided":
            return backend.ep_gradients(net, x, y, plus.states, BETA, free.states, 0.0)
        minus = backend.relax(net, x, T2, free.states, y, -BETA)
        return backend.ep_gradients(net, x, y, plus.states, BETA, minus.states, -BETA)

    gW_ref, gb_ref = pipeline(REF)
    gW, gb = pipeline(NB32)
    assert all(g.dtype == np.float32 for g in gW + gb)
    assert _max_abs_diff(gW + gb, gW_ref + gb_ref) <= F32_GRAD_ATOL
    # the gradients are not trivially small compared with that tolerance
    assert max(float(np.abs(g).max()) for g in gW_ref) > 100 * F32_GRAD_ATOL


# ------------------------------------------------------------------ Laborieux et al.'s discrete-time EP
def _laborieux_step(weights, biases, x, states, y, beta):
    """s_l <- clip(W_l s_{l-1} + W_{l+1}^T s_{l+1} + b_l, 0, 1), + beta (y - s_L) for the output."""
    full = [x] + list(states)
    L = len(weights)
    new = []
    for l in range(1, L + 1):
        h = full[l - 1] @ weights[l - 1].T + biases[l - 1]
        if l < L:
            h = h + full[l + 1] @ weights[l]
        else:
            h = h + beta * (y - full[l])
        new.append(np.clip(h, 0.0, 1.0))
    return new


@pytest.mark.parametrize("arch", ["1hidden", "2hidden"])
@pytest.mark.parametrize("backend", [REF, NB64, NB32], ids=["numpy", "numba64", "numba32"])
def test_unit_dt_leaky_form_is_laborieux_discrete_ep(arch, backend):
    net, x, y = _problem(ARCHS[arch], seed=4)
    net = Network(net.weights, net.biases, [np.ones_like(d) for d in net.dts], "leaky", "hard_sigmoid", "mse")
    tol = dict(rtol=F64_RTOL, atol=F64_ATOL) if backend.dtype == np.float64 else dict(rtol=0, atol=F32_STATE_ATOL)
    states = dynamics.zero_states(net, x.shape[0])
    for beta, n_steps in ((0.0, 12), (0.5, 6), (-0.5, 6)):
        expected = states
        for _ in range(n_steps):
            expected = _laborieux_step(net.weights, net.biases, x, expected, y, beta)
        got = backend.relax(net, x, n_steps, states, y, beta)
        for s, e in zip(got.states, expected):
            np.testing.assert_allclose(s, e, **tol)
        assert _max_abs_diff(expected, states) > 1e-2
        if beta == 0.0:
            states = expected


# ------------------------------------------------------------------ full training step
@pytest.mark.parametrize("optimizer,nudging,lr", [("adam", "one-sided", 0.01), ("sgd", "symmetric", 0.2)])
def test_ep_train_step_float64_same_update_as_numpy(optimizer, nudging, lr):
    cfg = Config(
        model=ModelConfig(arch=(30, 20, 6)),
        dt=DtConfig(dist="lognormal"),
        train=TrainConfig(optimizer=optimizer, nudging=nudging, lr=(lr,), t1=T1, t2=T2, beta=BETA),
    )
    net0 = init_network(cfg, np.float64)
    rng = np.random.default_rng(5)
    batches = [(rng.uniform(0, 1, (10, 30)), np.eye(6)[rng.integers(0, 6, 10)]) for _ in range(3)]
    results = {}
    for name in ("numpy", "numba"):
        net = net0.copy()
        backend = get_backend(name, np.float64)
        opt = make_optimizer(cfg.train, net.n_layers)
        stats = [ep_train_step(backend, net, opt, x, y, cfg.train) for x, y in batches]
        results[name] = (net, stats)
    (net_ref, st_ref), (net_nb, st_nb) = results["numpy"], results["numba"]
    for w_ref, w, w0 in zip(net_ref.weights + net_ref.biases, net_nb.weights + net_nb.biases, net0.weights + net0.biases):
        change = w_ref - w0
        assert float(np.abs(change).max()) > 1e-3  # the step did update this array
        np.testing.assert_allclose(w - w0, change, rtol=1e-8, atol=1e-12)
    for a, b in zip(st_ref, st_nb):
        assert a.n_correct == b.n_correct and a.n == b.n
        assert b.loss_sum == pytest.approx(a.loss_sum, rel=1e-10)
        np.testing.assert_allclose(b.residual, a.residual, rtol=F64_RTOL, atol=F64_ATOL)


def test_ep_train_step_float32_network_same_update_as_float64_numpy():
    """The training path as benchmarked: a float32 network on the float32 Numba backend.

    Plain SGD, whose update is linear in the gradient (Adam's first step is lr * sign(g),
    which turns float32 rounding of near-zero gradient entries into +-lr).
    """
    cfg = Config(
        model=ModelConfig(arch=(40, 24, 10)),
        train=TrainConfig(optimizer="sgd", lr=(0.05,), t1=T1, t2=T2, beta=BETA),
    )
    net0 = init_network(cfg, np.float64)
    rng = np.random.default_rng(6)
    x, y = rng.uniform(0, 1, (16, 40)), np.eye(10)[rng.integers(0, 10, 16)]
    net_ref, net32 = net0.copy(), net0.astype(np.float32)
    ep_train_step(get_backend("numpy"), net_ref, make_optimizer(cfg.train, 2), x, y, cfg.train)
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    ep_train_step(get_backend("numba"), net32, make_optimizer(cfg.train, 2), x32, y32, cfg.train)
    lr = cfg.train.lr[0]
    for w_ref, w, w0 in zip(net_ref.weights + net_ref.biases, net32.weights + net32.biases, net0.weights + net0.biases):
        assert w.dtype == np.float32
        change = w_ref - w0
        assert float(np.abs(change).max()) > 100 * lr * F32_GRAD_ATOL
        # float32 storage of the weights (|w| < 1: < 6e-8) plus lr * the gradient tolerance
        assert float(np.abs((w - w0) - change).max()) <= 1e-7 + lr * F32_GRAD_ATOL


# ------------------------------------------------------------------ interface and edge cases
def test_in_place_weight_updates_are_seen_without_copies():
    net, x, y = _problem(ARCHS["2hidden"])
    net32 = net.astype(np.float32)
    before = NB32.relax(net32, x, 10)
    for w in net32.weights:
        w *= np.float32(1.5)  # what an optimiser does between calls
    after = NB32.relax(net32, x, 10)
    ref = REF.relax(net32.astype(np.float64), x, 10)
    assert _max_abs_diff(after.states, before.states) > 1e-3
    assert _max_abs_diff(after.states, ref.states) <= F32_STATE_ATOL


def test_float64_network_on_float32_backend_is_converted():
    net, x, y = _problem(ARCHS["1hidden"], output="ce")
    got = NB32.relax(net, x, T1)
    assert got.states[0].dtype == np.float32
    assert _max_abs_diff(got.states, REF.relax(net, x, T1).states) <= F32_STATE_ATOL


def test_input_states_are_not_modified_and_zero_steps_copy():
    net, x, y = _problem(ARCHS["2hidden"])
    free = NB64.relax(net, x, T1)
    kept = [s.copy() for s in free.states]
    NB64.relax(net, x, T2, free.states, y, BETA)
    NB64.ep_gradients(net, x, y, free.states, BETA, kept, 0.0)
    for s, k in zip(free.states, kept):
        np.testing.assert_array_equal(s, k)
    zero = NB64.relax(net, x, 0, free.states)
    assert zero.n_steps == 0 and not np.any(zero.residual)
    for s, k in zip(zero.states, kept):
        np.testing.assert_array_equal(s, k)
        assert not np.shares_memory(s, k)


@pytest.mark.parametrize("n_steps", [1, 2, 7])
def test_result_buffer_for_odd_and_even_step_counts(n_steps):
    net, x, y = _problem(ARCHS["3hidden"], form="energy", output="ce")
    ref = REF.relax(net, x, n_steps)
    got = NB64.relax(net, x, n_steps)
    assert _max_abs_diff(got.states, ref.states) <= 1e-12
    np.testing.assert_allclose(got.residual, ref.residual, rtol=F64_RTOL, atol=F64_ATOL)


def test_non_finite_weights_propagate_like_the_reference():
    net, x, y = _problem(ARCHS["2hidden"])
    net.weights[1][0, 0] = np.nan
    ref = REF.relax(net, x, 5)
    got = NB64.relax(net, x, 5)
    assert np.isnan(ref.residual).all()
    np.testing.assert_array_equal(np.isnan(got.residual), np.isnan(ref.residual))
    for s, s_ref in zip(got.states, ref.states):
        np.testing.assert_array_equal(np.isnan(s), np.isnan(s_ref))


def test_bad_inputs_are_refused():
    net, x, y = _problem(ARCHS["1hidden"])
    with pytest.raises(ValueError, match="x has shape"):
        NB32.relax(net, x[:, :-1], 3)
    with pytest.raises(ValueError, match="needs targets"):
        NB32.relax(net, x, 3, beta=0.1)
    with pytest.raises(ValueError, match=r"states\[1\] has shape"):
        NB32.relax(net, x, 3, [np.zeros((8, 20)), np.zeros((8, 4))])
    with pytest.raises(ValueError, match="n_steps"):
        NB32.relax(net, x, -1)
    with pytest.raises(ValueError, match="different beta"):
        NB32.ep_gradients(net, x, y, [np.zeros((8, 20)), np.zeros((8, 5))], 0.1, [np.zeros((8, 20)), np.zeros((8, 5))], 0.1)
    with pytest.raises(ConfigError, match="float32 or float64"):
        NumbaBackend(np.float16)
    assert get_backend("numba").dtype == np.float32 and get_backend("numba").name == "numba"


@pytest.mark.parametrize("form", FORMS)
def test_read_only_inputs_are_accepted(form):
    """Datasets hand out read-only arrays; x is used in place, other inputs are copied."""
    net, x, y = _problem(ARCHS["2hidden"], form=form, output="ce")
    free_ref = REF.relax(net, x, T1)
    grads_ref = REF.ep_gradients(net, x, y, REF.relax(net, x, T2, free_ref.states, y, BETA).states, BETA, free_ref.states, 0.0)
    for a in (x, y, *free_ref.states):
        a.setflags(write=False)
    free = NB64.relax(net, x, T1)
    nudged = NB64.relax(net, x, T2, free_ref.states, y, BETA)
    grads = NB64.ep_gradients(net, x, y, nudged.states, BETA, free_ref.states, 0.0)
    assert _max_abs_diff(free.states, free_ref.states) <= 1e-12
    assert _max_abs_diff(grads[0] + grads[1], grads_ref[0] + grads_ref[1]) <= 1e-12
