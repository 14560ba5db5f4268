"""Convolutional networks in fixed point (issue 11 item 6): the conv kernel of
neuro_hts.hardware.fixed_sim against the plain-Python integer reference of tests/naive.py
(bit for bit), against the float dynamics as weight bits grow, the design rules, and the
deploy bundle of a CNN (schema 4) with the reading of older bundles."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import naive
import numpy as np
import pytest

from neuro_hts import dynamics
from neuro_hts.config import Config
from neuro_hts.errors import ConfigError, RunFileError
from neuro_hts.hardware import load_target
from neuro_hts.hardware.bundle import BUNDLE_SCHEMA_VERSION, load_bundle, save_bundle
from neuro_hts.hardware.compare import weight_bits_variant
from neuro_hts.hardware.drc import run_design_rules
from neuro_hts.hardware.fixed_sim import FixedPointSimulator
from neuro_hts.hardware.quantize import quantize_network
from neuro_hts.network import init_network

LOIHI2 = load_target("loihi2")


def conv_net(pool1="max", pool2="avg", *, seed=0, activation="hard_sigmoid", scale=3.0, pool_stride2=1):
    """x 2x7x7 -> conv k3 s2 p1 + pool1 2 -> h1 3x2x2 -> conv k2 p1 + pool2 2 (stride pool_stride2) -> h2 -> dense -> out 4."""
    from neuro_hts.connections import conv2d_out_shape

    h1 = conv2d_out_shape((2, 7, 7), 3, 3, 2, 1, pool1, 2, 2)[1]
    h2 = conv2d_out_shape(h1, 2, 2, 1, 1, pool2, 2, pool_stride2)[1]
    tables = {
        "layers": [{"name": "x", "shape": [2, 7, 7]}, {"name": "h1", "shape": list(h1)},
                   {"name": "h2", "shape": list(h2)}, {"name": "out", "shape": [4]}],
        "connections": [
            {"kind": "conv2d", "pre": "x", "post": "h1", "kernel": 3, "stride": 2, "padding": 1, "pool": pool1,
             "pool_size": 2},
            {"kind": "conv2d", "pre": "h1", "post": "h2", "kernel": 2, "padding": 1, "pool": pool2, "pool_size": 2,
             "pool_stride": pool_stride2},
            {"kind": "dense", "pre": "h2", "post": "out"}],
        "costs": [{"kind": "mse", "layer": "out"}]}
    cfg = Config.from_dict({"model": {**tables, "activation": activation}, "dt": {"layers": "all"},
                            "train": {"backend": "numpy", "seed": seed}})
    net = init_network(cfg)
    net.weights = [w * scale for w in net.weights]  # drives that reach the activation's range
    net.biases = [np.random.default_rng(seed).normal(0, 0.2, b.shape) for b in net.biases]
    return net


CASES = [("max", "avg", 1), ("avg", "max", 1), ("none", "none", 1), ("max", "max", 2)]


@pytest.mark.parametrize("pool1,pool2,pst", CASES)
def test_conv_kernel_equals_the_plain_python_integer_reference(pool1, pool2, pst):
    net = conv_net(pool1, pool2, pool_stride2=pst, seed=1)
    b = quantize_network(net, LOIHI2)
    sim = FixedPointSimulator(b)
    assert sim.kernel == "conv"
    rng = np.random.default_rng(2)
    x = rng.random((3, 2, 7, 7))
    st, res, taken = sim.relax(x, 6, return_steps=True)
    ref, rres, rtaken = naive.fixed_relax_chain(b, x, 6)
    assert [s.shape for s in st] == [(3, *sh) for sh in b.shapes[1:]]
    for l, (a, r) in enumerate(zip(st, ref)):
        assert np.array_equal(a.reshape(3, -1), r), f"layer {l + 1}"
        assert np.abs(r).max() > 0, f"layer {l + 1}: vacuous"
    assert np.array_equal(res, rres) and taken == rtaken == 6 and res.max() > 0
    # a nudged phase from the free states, with a feedback gain
    y = np.eye(4)[[0, 3, 1]]
    st2, res2 = sim.relax(x, 4, states=st, y=y, beta=0.5, gamma=0.75)
    ref2, rres2, _ = naive.fixed_relax_chain(b, x, 4, states=ref, y=y, beta=0.5, gamma=0.75)
    for a, r in zip(st2, ref2):
        assert np.array_equal(a.reshape(3, -1), r)
    assert np.array_equal(res2, rres2)
    assert not np.array_equal(st2[-1], st[-1])  # the nudge moved the top layer


def test_conv_kernel_phase_options_equal_the_reference():
    net = conv_net("max", "avg", seed=3, activation="sigmoid4")
    b = quantize_network(net, LOIHI2)
    sim = FixedPointSimulator(b)
    x = np.random.default_rng(4).random((2, 98))  # flat inputs
    y = np.eye(4)[[2, 0]]
    free, _ = sim.relax(x, 5)
    ref_free, _, _ = naive.fixed_relax_chain(b, x, 5)
    for kw in ({"clamp": "target", "y": y}, {"clamp": "hold"}, {"anchor": free, "coe": 0.25, "y": y, "beta": -0.5}):
        a_kw = dict(kw)
        r_kw = dict(kw)
        if "anchor" in kw:
            r_kw["anchor"] = ref_free
        st, res = sim.relax(x, 4, states=free, **a_kw)
        ref, rres, _ = naive.fixed_relax_chain(b, x, 4, states=ref_free, **r_kw)
        for a, r in zip(st, ref):
            assert np.array_equal(a.reshape(2, -1), r), kw
        assert np.array_equal(res, rres)
    # tol: the same step count as the reference
    st, res, taken = sim.relax(x, 200, tol=0.002, return_steps=True)
    ref, rres, rtaken = naive.fixed_relax_chain(b, x, 200, tol=0.002)
    assert taken == rtaken < 200 and np.array_equal(res, rres)


def test_the_conv_kernel_runs_a_dense_chain_bit_for_bit_like_the_dense_kernel():
    from neuro_hts.testing import random_problem

    net, x, y = random_problem((6, 5, 4, 3), "leaky", "hard_sigmoid", "mse", seed=0)
    b = quantize_network(net, LOIHI2)
    dense, conv = FixedPointSimulator(b), FixedPointSimulator(b, kernel="conv")
    assert dense.kernel == "dense" and conv.kernel == "conv"
    for kw in ({}, {"y": y, "beta": 0.5, "gamma": 0.5}):
        a, ra = dense.relax(x, 7, **kw)
        c, rc = conv.relax(x, 7, **kw)
        assert all(np.array_equal(u, v) for u, v in zip(a, c)) and np.array_equal(ra, rc) and ra.max() > 0
    with pytest.raises(ConfigError, match="dense kernel runs dense chains only"):
        FixedPointSimulator(quantize_network(conv_net(), LOIHI2), kernel="dense")


def test_fixed_states_approach_the_float_states_as_weight_bits_grow():
    # Loihi 2's 24-bit payloads (12 activation fraction bits), without the even-mantissa
    # rule and with room below its exponent range, so that the weights set the error
    # (generic8's 6-bit activations hold it near 0.02 whatever the weight width)
    net = conv_net("max", "avg", seed=5, scale=2.0)
    x = np.random.default_rng(6).random((4, 98))
    steps = 30
    flo = dynamics.relax(net, x, steps).states
    base = dataclasses.replace(LOIHI2, weights=dataclasses.replace(LOIHI2.weights, even=False, exponent_min=-16))
    errs = []
    for bits in (3, 5, 8, 11):
        sim = FixedPointSimulator(quantize_network(net, weight_bits_variant(base, bits), check_rules=False))
        st, _ = sim.relax(x, steps)
        errs.append(max(np.abs(f - q).max() for f, q in zip(flo, sim.dequantize_states(st))))
    # measured 0.141, 0.021, 0.0050, 0.0025 (then the 12-bit states' floor)
    assert all(b < a for a, b in zip(errs, errs[1:])), errs
    assert errs[0] > 0.05 and errs[-1] < 0.004, errs


def test_design_rules_of_a_cnn():
    net = conv_net("max", "avg")
    assert run_design_rules(net, LOIHI2) == []
    # a 3x3 avg window: its area 9 is not a power of two
    tables = {"layers": [{"name": "x", "shape": [1, 6, 6]}, {"name": "h1", "shape": [2, 1, 1]},
                         {"name": "out", "shape": [3]}],
              "connections": [{"kind": "conv2d", "pre": "x", "post": "h1", "kernel": 3, "pool": "avg", "pool_size": 3,
                               "pool_stride": 3},
                              {"kind": "dense", "pre": "h1", "post": "out"}],
              "costs": [{"kind": "mse", "layer": "out"}]}
    bad = init_network(Config.from_dict({"model": tables, "dt": {"layers": "all"}, "train": {"backend": "numpy"}}))
    v = run_design_rules(bad, LOIHI2)
    assert [(x.rule, x.layer) for x in v] == [("pool_area", 1)] and "power of two" in str(v[0])
    with pytest.raises(ConfigError, match="pool_area: layer 1") as info:
        quantize_network(bad, LOIHI2)
    assert "\n" not in str(info.value)
    # fan-in C_in k k = 2 * 9 = 18 (layer 1), 3 * 4 = 12 (layer 2), 8 (dense)
    small = dataclasses.replace(LOIHI2, limits=dataclasses.replace(LOIHI2.limits, max_fan_in=12))
    assert [(x.rule, x.layer) for x in run_design_rules(net, small)] == [("fan_in", 1)]
    assert "18 synapses" in str(run_design_rules(net, small)[0])
    # neurons per core over C * H * W units: h2 has 2 x 2 x 2 = 8, h1 3 x 2 x 2 = 12
    tiny = dataclasses.replace(LOIHI2, limits=dataclasses.replace(LOIHI2.limits, cores=1, neurons_per_core=10))
    assert [(x.rule, x.layer) for x in run_design_rules(net, tiny)] == [("layer_size", 1)]
    # per-unit decays over C * H * W: one core of 10 units may hold at most 3 decays
    prof = dataclasses.replace(LOIHI2, limits=dataclasses.replace(LOIHI2.limits, neurons_per_core=10,
                                                                   decay_profiles_per_core=3))
    assert ("decay_profiles", 1) in [(x.rule, x.layer) for x in run_design_rules(net, prof)]
    b = quantize_network(net, prof, profile_mode=True)
    assert all(np.unique(lb.decay[:10]).size <= 3 for lb in b.layers)


@pytest.mark.parametrize("activation", ["hard_sigmoid", "sigmoid4"])
def test_energy_form_cnn_equals_the_plain_python_integer_reference(activation):
    from neuro_hts.hardware.drc import check_deployable

    net = dataclasses.replace(conv_net("max", "avg", seed=3, activation=activation), form="energy")
    assert check_deployable(net, LOIHI2) == []
    b = quantize_network(net, LOIHI2)
    assert b.form == "energy"
    sim = FixedPointSimulator(b)
    x = np.random.default_rng(4).random((3, 2, 7, 7))
    st, res = sim.relax(x, 5)
    ref, rres, _ = naive.fixed_relax_chain(b, x, 5)
    for l, (a, r) in enumerate(zip(st, ref)):
        assert np.array_equal(a.reshape(3, -1), r), f"layer {l + 1}"
        assert r.max() > 0, f"layer {l + 1}: vacuous"
    assert np.array_equal(res, rres)
    leaky, _ = FixedPointSimulator(dataclasses.replace(b, form="leaky")).relax(x, 5)
    assert any(not np.array_equal(a, c) for a, c in zip(st, leaky))  # the form changes the integers


def test_what_stays_refused_in_one_line():
    from neuro_hts.hardware.drc import check_deployable

    net = conv_net()
    ce = SimpleNamespace(form="leaky", output="ce", is_dense=net.is_dense)  # what the check reads of a CNN
    v = check_deployable(ce, LOIHI2)
    assert [x.rule for x in v] == ["softmax_readout"] and "after conv2d" in str(v[0])
    v = check_deployable(dataclasses.replace(net, form="hopfield"), LOIHI2)
    assert [x.rule for x in v] == ["deployable"] and "form 'hopfield'" in str(v[0])


def test_a_cnn_bundle_round_trips_and_describes_itself(tmp_path):
    import h5py

    net = conv_net("max", "avg")
    b = quantize_network(net, LOIHI2, source={"run_path": "r.h5", "run_sha256": "0", "run_config": "",
                                               "epochs_completed": 1})
    path = save_bundle(tmp_path / "b.h5", b)
    with h5py.File(path, "r") as f:
        assert int(f.attrs["schema_version"]) == BUNDLE_SCHEMA_VERSION == 4
        assert f["layers/1/weight_mantissa"].shape == (3, 2, 3, 3) and f["layers/1/bias"].shape == (3,)
        assert f["layers/1/decay"].shape == (12,)
    back = load_bundle(path)
    assert back.network == net.spec and back.shapes == b.shapes
    assert back.connection_options()[1] == ("conv2d", {"kernel": 2, "stride": 1, "padding": 1, "pool": "avg",
                                                       "pool_size": 2, "pool_stride": 1})
    for u, v in zip(b.layers, back.layers):
        assert np.array_equal(u.weight_mantissa, v.weight_mantissa) and u.weight_exponent == v.weight_exponent
        assert np.array_equal(u.bias, v.bias) and np.array_equal(u.decay, v.decay)
    x = np.random.default_rng(0).random((2, 98))
    assert all(np.array_equal(p, q) for p, q in zip(FixedPointSimulator(b).relax(x, 4)[0],
                                                   FixedPointSimulator(back).relax(x, 4)[0]))
    # a hand-edited bundle whose kernel no longer fits its parts
    bad = tmp_path / "bad.h5"
    bad.write_bytes(path.read_bytes())
    with h5py.File(bad, "r+") as f:
        del f["layers/1/weight_mantissa"]
        f["layers/1/weight_mantissa"] = np.zeros((3, 2, 2, 2), dtype=np.int64)
    with pytest.raises(RunFileError, match=r"shape: layer 1: weight_mantissa has shape \(3, 2, 2, 2\)") as info:
        load_bundle(bad)
    assert "\n" not in str(info.value)
    # a version-3 file holds dense chains only
    old = tmp_path / "v3.h5"
    old.write_bytes(path.read_bytes())
    with h5py.File(old, "r+") as f:
        f.attrs["schema_version"] = np.int64(3)
    with pytest.raises(RunFileError, match="deploys dense chains only"):
        load_bundle(old)


def test_a_version_3_dense_bundle_still_loads(tmp_path):
    import h5py

    from neuro_hts.testing import random_problem

    net, x, _ = random_problem((6, 5, 3), "leaky", "hard_sigmoid", "mse", seed=0)
    b = quantize_network(net, LOIHI2)
    path = save_bundle(tmp_path / "b.h5", b)
    with h5py.File(path, "r+") as f:
        f.attrs["schema_version"] = np.int64(3)
    back = load_bundle(path)
    assert back.is_dense and back.network is None and back.arch == (6, 5, 3)
    assert np.array_equal(FixedPointSimulator(back).predict(x, 5), FixedPointSimulator(b).predict(x, 5))


def test_compare_network_on_a_cnn_with_image_inputs():
    from neuro_hts.hardware.compare import compare_network

    net = conv_net("max", "avg", seed=7)
    rng = np.random.default_rng(8)
    x = rng.random((12, 2, 7, 7))
    y = rng.integers(0, 4, 12)
    r = compare_network(net, LOIHI2, x, y, 15, weight_bits=(3, 8))
    assert r.arch == (98, 12, 8, 4)
    flat = compare_network(net, LOIHI2, x.reshape(12, -1), y, 15, weight_bits=(3, 8))
    assert r.accuracy == flat.accuracy
    assert set(r.sweep) == {3, 8}
    sim = FixedPointSimulator(quantize_network(net, LOIHI2))
    assert r.accuracy["fixed"] == float(np.mean(sim.predict(x, 15) == y))


def test_max_fan_in_is_an_optional_target_key(tmp_path):
    from neuro_hts.hardware.target import TargetError

    text = (load_target("loihi2").source and open(load_target("loihi2").source).read())
    assert load_target("loihi2").limits.max_fan_in == 0  # shipped targets leave it out
    p = tmp_path / "t.toml"
    p.write_text(text.replace("decay_profiles_per_core = 0", "decay_profiles_per_core = 0\nmax_fan_in = 16"))
    assert load_target(p).limits.max_fan_in == 16
    p.write_text(text.replace("decay_profiles_per_core = 0", "decay_profiles_per_core = 0\nmax_fan_in = -1"))
    with pytest.raises(TargetError, match="max_fan_in must be >= 0"):
        load_target(p)
    p.write_text(text.replace("decay_profiles_per_core = 0", "decay_profiles_per_core = 0\nmax_fan = 1"))
    with pytest.raises(TargetError, match="unknown key"):
        load_target(p)


def test_bundle_as_network_of_a_cnn_bundle_runs_in_float():
    from neuro_hts.deploy import bundle_as_network

    net = conv_net("max", "avg")
    b = quantize_network(net, LOIHI2)
    back = bundle_as_network(b)
    assert back.spec == net.spec and [d.shape for d in back.dts] == [d.shape for d in net.dts]
    x = np.random.default_rng(0).random((3, 98))
    a = dynamics.relax(back, x, 20).states
    f = dynamics.relax(net, x, 20).states
    assert max(np.abs(u - v).max() for u, v in zip(a, f)) < 0.05


def test_compare_hands_a_cnn_to_the_lava_runner():
    """compare --lava-samples on a CNN (the Lava run itself: tests/test_lava_conv.py): the runner gets the
    bundle and the first N samples; a runner that returns the simulator's top states is a full match, one
    that is off by one unit in one sample is not."""
    from neuro_hts.hardware.compare import compare_network
    from neuro_hts.lava import InferenceResult

    calls = []

    def runner(bundle, xs, steps, arith):
        calls.append((bundle.is_dense, xs.shape, steps, arith))
        st, _ = FixedPointSimulator(bundle).relax(xs, steps)
        top = st[-1].reshape(len(xs), -1).copy()
        if len(calls) == 2:
            top[0, 0] += 1
        return InferenceResult(predictions=np.argmax(top, axis=1), top_states=top, steps_per_second=1.0,
                               seconds=1.0, n_steps=1)

    x = np.random.default_rng(0).random((5, 2, 7, 7))
    y = np.array([0, 1, 2, 3, 0])
    res = compare_network(conv_net(), LOIHI2, x, y, 5, weight_bits="8", lava_samples=3, lava_runner=runner)
    assert calls == [(False, (3, 98), 5, "fixed")]  # compare flattens images
    assert res.lava_samples == 3 and res.lava_top_state_match == 1.0
    res = compare_network(conv_net(), LOIHI2, x, y, 5, weight_bits="8", lava_samples=3, lava_runner=runner)
    assert res.lava_top_state_match == 2 / 3