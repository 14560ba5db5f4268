"""The energy form and the softmax readout through Lava (issue 15 item 4).

* ``fixed_pt``: identical int64 states after EVERY step as the Numba FixedPointSimulator
  for small random energy-form networks (free and nudged phases, both activations, both
  shift directions, F < S), and for softmax-readout networks (free phase, leaky and
  energy form) also identical integer logits and predictions (``run_inference``);
* the softmax readout's nudged phase (the integer softmax, ``fixed_point.softmax_int``):
  the same equality every step, leaky and energy form;
* ``floating_pt``: the energy form and the readout (free and nudged) against the NumPy reference
  (:func:`neuro_hts.dynamics.relax`, :func:`~neuro_hts.dynamics.predict_scores`) within 1e-12.

Lava runs in an isolated child interpreter (:func:`neuro_hts.testing.run_script`).
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from neuro_hts.testing import run_script

pytestmark = [pytest.mark.skipif(importlib.util.find_spec("lava") is None, reason="lava-nc is not installed")]

EXACT_SCRIPT = r"""
import itertools, json, sys
import numpy as np
from neuro_hts.hardware import load_target
from neuro_hts.hardware.quantize import DeployBundle, LayerBundle
from neuro_hts.hardware.fixed_sim import FixedPointSimulator
from neuro_hts.lava import run_inference, run_lava

out = []
for case in json.loads(sys.argv[1]):
    rng = np.random.default_rng(case["seed"])
    F, S = case["F"], case["S"]
    one = 1 << S
    layers = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(case["arch"]), start=1):
        layers.append(LayerBundle(
            index=i, weight_mantissa=(2 * rng.integers(-128, 128, size=(n_out, n_in))).astype(np.int64),
            weight_exponent=int(rng.integers(case["e_lo"], case["e_hi"] + 1)),
            bias=rng.integers(-one, one, size=n_out).astype(np.int64),
            decay=rng.integers(1, 4097, size=n_out).astype(np.int64), dt=np.full(n_out, 0.5)))
    bundle = DeployBundle(target=load_target("loihi2"), layers=tuple(layers), form=case["form"],
                          activation=case["activation"], output=case["output"], activation_frac_bits=F,
                          state_frac_bits=S)
    B, T1, T2, beta = case["batch"], case["t1"], case["t2"], case["beta"]
    x = rng.random((B, case["arch"][0]))
    y = np.eye(case["arch"][-1])[rng.integers(0, case["arch"][-1], size=B)]
    sim = FixedPointSimulator(bundle)
    r = run_lava(bundle, x, t_free=T1, t_nudge=T2, y=y if T2 else None, beta=beta, arith="fixed", record="steps")
    states, mismatches, compared, distinct = None, [], 0, set()
    for j in range(1, T1 + T2 + 1):
        states, _ = sim.relax(x, 1, states=states, **({} if j <= T1 else dict(y=y, beta=beta)))
        for l, s in enumerate(states):
            compared += s.size
            distinct.update(np.unique(s).tolist())
            if not np.array_equal(r.states[l][:, j, :], s):
                mismatches.append([j, l + 1, int(np.sum(r.states[l][:, j, :] != s))])
    res = dict(compared=compared, mismatches=mismatches[:5], distinct=len(distinct),
               block=int(r.states[0].shape[1]), n_relaxed=len(r.states))
    if case["output"] == "ce" and T2 > 0:  # the nudge moved the top relaxed layer
        free, _ = sim.relax(x, T2, states=sim.relax(x, T1)[0])
        res["nudge_moved"] = not np.array_equal(free[-1], states[-1])
    if case["output"] == "ce":
        logits = sim.logits(states)
        res["logits_equal"] = r.logits is not None and np.array_equal(r.logits, logits)
        res["logits_distinct"] = int(np.unique(logits).size)
        res["hold_equal"] = all(np.array_equal(s[:, -1], s[:, -2]) for s in r.states)  # the hold step
        inf = run_inference(bundle, x, T1)
        res["predictions_equal"] = np.array_equal(inf.predictions, sim.predict(x, T1))
        res["scores_equal"] = np.array_equal(inf.top_states, sim.logits(sim.relax(x, T1)[0]))
    out.append(res)
print("RESULT " + json.dumps(out))
"""

CASES = [
    dict(seed=0, arch=[5, 4, 3], form="energy", output="mse", activation="hard_sigmoid", F=12, S=12, e_lo=-12,
         e_hi=-11, batch=3, t1=6, t2=4, beta=0.5),
    dict(seed=1, arch=[7, 6, 5, 4], form="energy", output="mse", activation="sigmoid4", F=12, S=12, e_lo=-8,
         e_hi=-5, batch=2, t1=5, t2=4, beta=-0.8),
    dict(seed=2, arch=[9, 3, 6], form="energy", output="mse", activation="sigmoid4", F=10, S=12, e_lo=-10, e_hi=-8,
         batch=2, t1=4, t2=3, beta=1.3),
    dict(seed=3, arch=[6, 5, 4, 3], form="energy", output="ce", activation="sigmoid4", F=12, S=12, e_lo=-8,
         e_hi=-5, batch=3, t1=6, t2=0, beta=0.0),
    dict(seed=5, arch=[6, 5, 4, 3], form="energy", output="ce", activation="sigmoid4", F=12, S=12, e_lo=-10,
         e_hi=-8, batch=3, t1=5, t2=4, beta=0.9),
    dict(seed=6, arch=[7, 6, 5], form="leaky", output="ce", activation="hard_sigmoid", F=10, S=12, e_lo=-9,
         e_hi=-7, batch=2, t1=4, t2=3, beta=-0.6),
    dict(seed=4, arch=[6, 8, 4], form="leaky", output="ce", activation="hard_sigmoid", F=12, S=12, e_lo=-9,
         e_hi=-6, batch=3, t1=5, t2=0, beta=0.0),
]


@pytest.mark.lava
@pytest.mark.timeout(300)
def test_lava_fixed_pt_energy_and_readout_bit_exact_with_numba(tmp_path):
    res = run_script(tmp_path, EXACT_SCRIPT, json.dumps(CASES), timeout=280)
    assert len(res) == len(CASES)
    for case, r in zip(CASES, res):
        assert r["mismatches"] == [], (case, r)
        readout = case["output"] == "ce"
        relaxed = case["arch"][1:-1] if readout else case["arch"][1:]
        assert r["n_relaxed"] == len(relaxed)
        assert r["compared"] == case["batch"] * (case["t1"] + case["t2"]) * sum(relaxed)
        assert r["block"] == 1 + case["t1"] + case["t2"] + (1 if readout else 0)
        assert r["distinct"] > 20, r  # the states move: not a stuck network
        if readout:
            assert r["logits_equal"] and r["hold_equal"] and r["predictions_equal"] and r["scores_equal"], r
            assert r["logits_distinct"] > 3, r
            if case["t2"] > 0:
                assert r["nudge_moved"], r


FLOAT_SCRIPT = r"""
import json
import numpy as np
from neuro_hts import dynamics
from neuro_hts.testing import random_problem
from neuro_hts.lava import run_inference, run_lava

out = []
for seed, arch, act, output in [(0, [6, 5, 3], "sigmoid4", "mse"), (1, [7, 6, 5, 4], "hard_sigmoid", "ce"),
                                (2, [7, 6, 5, 4], "sigmoid4", "ce")]:
    net, x, y = random_problem(arch, form="energy", activation=act, output=output, seed=seed, batch=3)
    T1, T2, beta = 6, (4 if seed != 1 else 0), 0.5
    r = run_lava(net, x, t_free=T1, t_nudge=T2, y=y if T2 else None, beta=beta, arith="float", record="steps")
    err, change, states = 0.0, 0.0, None
    for j in range(1, T1 + T2 + 1):
        kw = {} if j <= T1 else dict(y=y, beta=beta)
        states = dynamics.relax(net, x, 1, states=states, **kw).states
        for l, s in enumerate(states):
            err = max(err, float(np.abs(r.states[l][:, j, :] - s).max()))
            change = max(change, float(np.abs(r.states[l][:, j, :] - r.states[l][:, j - 1, :]).max()))
    res = dict(err=err, change=change)
    if output == "ce" and T2 == 0:
        ref = dynamics.predict_scores(net, states)
        res["logit_err"] = float(np.abs(r.logits - ref).max())
        res["pred_equal"] = bool(np.array_equal(run_inference(net, x, T1, arith="float").predictions,
                                                np.argmax(ref, axis=1)))
    out.append(res)
print("RESULT " + json.dumps(out))
"""


@pytest.mark.lava
@pytest.mark.timeout(150)
def test_lava_floating_pt_energy_and_readout_match_numpy_reference(tmp_path):
    res = run_script(tmp_path, FLOAT_SCRIPT, timeout=130)
    assert len(res) == 3
    for r in res:
        assert r["err"] < 1e-12, r
        assert r["change"] > 1e-3  # the states move
    assert res[1]["logit_err"] < 1e-12 and res[1]["pred_equal"]
