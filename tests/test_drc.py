"""Design-rule checks (neuro_hts.hardware.drc): each rule passes a fitting network and
names the layer of a violating one; run_design_rules reports every violation at once."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from neuro_hts.hardware import load_target
from neuro_hts.hardware.drc import (
    RULES,
    Violation,
    check_decay_profiles,
    check_decay_range,
    check_graded_spikes,
    check_layer_size,
    check_weight_range,
    core_slices,
    run_design_rules,
)
from neuro_hts.hardware.target import LimitSpec
from neuro_hts.network import Network


def make_net(arch=(8, 6, 4), dt=0.25, w=0.1, seed=0):
    rng = np.random.default_rng(seed)
    ws = [rng.uniform(-w, w, (o, i)) for i, o in zip(arch[:-1], arch[1:])]
    bs = [np.zeros(o) for o in arch[1:]]
    dts = [np.full(o, dt) for o in arch[1:]]
    return Network(ws, bs, dts)


@pytest.fixture(scope="module")
def loihi2():
    return load_target("loihi2")


@pytest.fixture(scope="module")
def loihi1():
    return load_target("loihi1")


def test_decay_range(loihi2):
    assert check_decay_range(make_net(), loihi2) == []
    net = make_net()
    net.dts[1][2] = 1e-4  # round(0.4096) = 0: frozen neuron
    net.dts[0][0] = 1.5   # decay 6144 > 4096: overshoot
    v = check_decay_range(net, loihi2)
    assert [(x.rule, x.layer) for x in v] == [("decay_range", 1), ("decay_range", 2)]
    assert "dt[2] = 0.0001" in v[1].message and "[1, 4096]" in v[1].message
    # the edges of the range are fine: decay 1 and 4096
    ok = make_net()
    ok.dts[0][:] = [1 / 4096, 1.0, 0.5, 0.3, 0.2, 0.1]
    assert check_decay_range(ok, loihi2) == []


def test_layer_size(loihi1):
    small = dataclasses.replace(loihi1, limits=LimitSpec(cores=2, neurons_per_core=3, decay_profiles_per_core=0))
    assert check_layer_size(make_net((8, 6, 4)), small) == []  # 6 == 2 x 3
    v = check_layer_size(make_net((8, 7, 4)), small)
    assert v == [Violation("layer_size", 1, "7 neurons exceed 2 cores x 3 neurons = 6")]
    # cores = 0 means unlimited
    unlimited = dataclasses.replace(small, limits=LimitSpec(0, 3, 0))
    assert check_layer_size(make_net((8, 100, 4)), unlimited) == []


def test_weight_range(loihi2):
    # largest representable: 254 * 2**7 = 32512
    net = make_net()
    net.weights[0][0, 0] = 32512.0
    assert check_weight_range(net, loihi2) == []
    net.weights[1][1, 1] = -32513.0
    v = check_weight_range(net, loihi2)
    assert len(v) == 1 and v[0].rule == "weight_range" and v[0].layer == 2
    assert "32513" in v[0].message and "254 * 2**7" in v[0].message
    net.weights[0][0, 0] = np.nan
    assert [x.layer for x in check_weight_range(net, loihi2)] == [1, 2]


def test_decay_profiles_counts_per_core(loihi1):
    # 2048 neurons = 2 cores of 1024; core 0 has 32 distinct decays, core 1 has 33
    dt = np.concatenate([np.repeat(np.arange(1, 33) / 64, 32), np.resize(np.arange(1, 34) / 64, 1024)])
    assert dt.size == 2048
    net = make_net((4, 2048, 2))
    net.dts[0][:] = dt
    v = check_decay_profiles(net, loihi1)
    assert len(v) == 1 and v[0].layer == 1
    assert "core 1 needs 33 distinct decays" in v[0].message and "allows 32" in v[0].message
    net.dts[0][1024:] = dt[:1024]  # core 1 now like core 0
    assert check_decay_profiles(net, loihi1) == []
    # no limit on Loihi 2
    assert check_decay_profiles(make_net((4, 2048, 2), dt=0.3), load_target("loihi2")) == []


def test_graded_spikes(loihi1, loihi2):
    assert check_graded_spikes(make_net(), loihi2) == []
    v = check_graded_spikes(make_net(), loihi1)
    assert len(v) == 1 and v[0].rule == "graded_spikes" and v[0].layer is None
    assert str(v[0]).startswith("graded_spikes: network: target 'loihi1' has binary spikes")


def test_core_slices():
    assert core_slices(5, 0) == [slice(0, 5)]
    assert core_slices(5, 2) == [slice(0, 2), slice(2, 4), slice(4, 5)]


def test_run_design_rules_reports_every_violation_and_reads_only(loihi1):
    net = make_net((4, 2048, 2))
    net.dts[0][:] = np.linspace(0.01, 0.9, 2048)
    net.dts[1][0] = 1e-5
    net.weights[1][0, 0] = 1e6
    before = [a.copy() for a in (*net.weights, *net.biases, *net.dts)]
    v = run_design_rules(net, loihi1)
    assert [(x.rule, x.layer) for x in v] == [
        ("decay_range", 2), ("weight_range", 2), ("decay_profiles", 1), ("graded_spikes", None)]
    assert [x.rule for x in run_design_rules(net, loihi1, profile_mode=True)] == ["decay_range", "weight_range", "graded_spikes"]
    for a, b in zip(before, (*net.weights, *net.biases, *net.dts)):
        assert np.array_equal(a, b)
    assert list(RULES) == ["branch_dendrites", "chain", "pool_area", "fan_in", "decay_range", "layer_size", "weight_range", "decay_profiles", "graded_spikes"]
