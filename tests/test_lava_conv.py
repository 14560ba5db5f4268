"""Conv networks through Lava in fixed point (issue 11 item 7) and ``deploy --predictions``.

* bit-exactness: Lava ``fixed_pt`` (the HTSConvConnection process, or Lava's Sparse for
  linear pooling when it holds the unrolled weights) and the Numba conv kernel give
  identical int64 states after EVERY step, free and nudged, for tiny random CNNs: max,
  avg and no pooling, conv stride 2, padding, pool stride 2, a dense layer after, both
  activations;
* a trained models/digits_cnn.toml bundle: ``deploy --backend lava`` and ``--backend
  numba`` write identical ``--predictions`` files, ``run_inference`` gives the simulator's
  top states bit for bit, and ``compare --lava-samples`` reports a full top-state match;
* ``--predictions`` for numba fixed and float, atomically, never over the input, one-line
  errors for bad paths (checked before the run);
* Ctrl-C during a Lava conv deploy stops the runtime and exits 130.

Lava runs in isolated child interpreters (:func:`neuro_hts.testing.run_script`); the last
test checks that nothing is left behind and that Lava never entered the pytest process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from neuro_hts.testing import interrupt_when_lava_runs, leftover_processes, run_script

requires_lava = pytest.mark.skipif(importlib.util.find_spec("lava") is None, reason="lava-nc is not installed")

EXACT_SCRIPT = r"""
import dataclasses, json, sys
sys.path.insert(0, sys.argv[2])  # tests/: conv_net of test_fixed_conv
import numpy as np
from test_fixed_conv import conv_net, LOIHI2
from neuro_hts.hardware.quantize import quantize_network
from neuro_hts.hardware.fixed_sim import FixedPointSimulator
from neuro_hts.lava import lava_connections, run_lava

CASES = json.loads(sys.argv[1])
out = []
for case in CASES:
    net = conv_net(case["pool1"], case["pool2"], seed=case["seed"], activation=case["activation"],
                   pool_stride2=case["pst"])
    b = quantize_network(net, LOIHI2)
    if case.get("small"):  # mantissas small enough that Lava's Sparse holds avg pooling's window sums
        layers = list(b.layers)
        for l in range(2):
            m = np.asarray(layers[l].weight_mantissa)
            layers[l] = dataclasses.replace(layers[l], weight_mantissa=2 * (m // 16),
                                            weight_exponent=layers[l].weight_exponent + 3)
        b = dataclasses.replace(b, layers=tuple(layers))
    rng = np.random.default_rng(case["seed"] + 10)
    B, T1, T2 = 2, case["t1"], case["t2"]
    x = rng.random((B, 2, 7, 7))
    y = np.eye(4)[rng.integers(0, 4, size=B)]
    kinds = [c[0].kind for c in lava_connections(b, conv_route=case["route"])]
    r = run_lava(b, x, t_free=T1, t_nudge=T2, y=y, beta=0.5, record="steps", conv_route=case["route"])
    sim = FixedPointSimulator(b)
    st, mismatches, compared, distinct = None, [], 0, set()
    for j in range(1, T1 + T2 + 1):
        st, _ = sim.relax(x, 1, states=st) if j <= T1 else sim.relax(x, 1, states=st, y=y, beta=0.5)
        for l, s in enumerate(st):
            s = s.reshape(B, -1)
            compared += s.size
            distinct.update(np.unique(s).tolist())
            if not np.array_equal(r.states[l][:, j, :], s):
                mismatches.append([j, l + 1, int(np.sum(r.states[l][:, j, :] != s))])
    out.append(dict(kinds=kinds, mismatches=mismatches[:5], compared=compared, distinct=len(distinct),
                    sizes=[int(n) for n in b.arch[1:]], dtype=str(r.states[0].dtype)))
print("RESULT " + json.dumps(out))
"""

CASES = [
    dict(pool1="max", pool2="avg", pst=1, seed=1, activation="hard_sigmoid", route="auto", t1=5, t2=3),
    dict(pool1="none", pool2="none", pst=1, seed=2, activation="sigmoid4", route="auto", t1=5, t2=3),
    dict(pool1="avg", pool2="max", pst=2, seed=3, activation="hard_sigmoid", route="process", t1=4, t2=3),
    dict(pool1="none", pool2="avg", pst=1, seed=4, activation="hard_sigmoid", route="sparse", t1=4, t2=2,
         small=True),
]


@requires_lava
@pytest.mark.lava
@pytest.mark.timeout(300)
def test_lava_conv_fixed_pt_is_bit_exact_with_numba_every_step(tmp_path):
    res = run_script(tmp_path, EXACT_SCRIPT, json.dumps(CASES), str(Path(__file__).parent), timeout=280)
    assert len(res) == len(CASES)
    expect_kinds = [["conv", "conv", "dense"],  # max -> process; avg window sums beyond 8 bits -> process
                    ["sparse", "sparse", "dense"],  # no pooling: Lava's Sparse holds the kernel mantissas
                    ["conv", "conv", "dense"],  # conv_route='process'
                    ["sparse", "sparse", "dense"]]  # small mantissas: Sparse holds the avg window sums
    for case, r, kinds in zip(CASES, res, expect_kinds):
        assert r["kinds"] == kinds, (case, r)
        assert r["mismatches"] == [], (case, r)
        assert r["compared"] == 2 * (case["t1"] + case["t2"]) * sum(r["sizes"])
        assert r["dtype"] == "int64"
        assert r["distinct"] > 20, r  # the states move: not a comparison of zeros


ROUTE_SCRIPT = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from test_fixed_conv import LOIHI2, conv_net
from neuro_hts.errors import ConfigError
from neuro_hts.hardware.quantize import quantize_network
from neuro_hts.lava import lava_connections

out = {}
for pools in (("max", "avg"), ("none", "avg")):
    b = quantize_network(conv_net(*pools, seed=1), LOIHI2)
    try:
        lava_connections(b, conv_route="sparse")
        out[pools[0]] = None
    except ConfigError as exc:
        out[pools[0]] = str(exc)
try:
    lava_connections(b, conv_route="dense")
except ConfigError as exc:
    out["bad_route"] = str(exc)
out["auto"] = [c[0].kind for c in lava_connections(b)]
print("RESULT " + json.dumps(out))
"""


@requires_lava
def test_sparse_route_refuses_what_it_cannot_hold_in_one_line(tmp_path):
    """Routing is decided on the host (Lava's own weightutils say what Sparse keeps)."""
    r = run_script(tmp_path, ROUTE_SCRIPT, str(Path(__file__).parent), timeout=100)
    assert "max pooling is not a fixed linear map" in r["max"]
    assert "Sparse cannot hold these unrolled conv weights" in r["none"]
    assert "conv_route must be one of" in r["bad_route"]
    assert all("\n" not in v for v in (r["max"], r["none"], r["bad_route"]))
    # auto: no pooling -> Sparse; the avg layer whose window sums exceed 8 bits -> the conv process
    assert r["auto"] == ["sparse", "conv", "dense"]


# --------------------------------------------------------------------------- a trained digits CNN


@pytest.fixture(scope="module")
def digits_cnn(tmp_path_factory):
    """A briefly trained models/digits_cnn.toml run (max pooling) and its Loihi 2 bundle."""
    from neuro_hts import cli

    d = tmp_path_factory.mktemp("cnn")
    run, bundle = d / "run.h5", d / "net.h5"
    assert cli.main(["--no-progress", "train", "--config", "models/digits_cnn.toml", "--epochs", "1",
                     "--n-train", "200", "--out", str(run)]) == 0
    assert cli.main(["--no-progress", "quantize", str(run), "--target", "loihi2", "--out", str(bundle)]) == 0
    return run, bundle


def _cli_child(*argv, timeout=240):
    from neuro_hts.testing import run_isolated

    return run_isolated([sys.executable, "-m", "neuro_hts", "--no-progress", *argv], cwd=os.getcwd(),
                        timeout=timeout)


TOP_SCRIPT = r"""
import json, sys
import numpy as np
from neuro_hts.data import load_recorded_dataset
from neuro_hts.hardware.bundle import load_bundle
from neuro_hts.hardware.fixed_sim import FixedPointSimulator
from neuro_hts.lava import run_inference

b = load_bundle(sys.argv[1])
x = load_recorded_dataset("digits", None, None, n_test=6).x_test
r = run_inference(b, x, 12, chunk=3)
st, _ = FixedPointSimulator(b).relax(x, 12)
top = st[-1].reshape(len(x), -1)
print("RESULT " + json.dumps(dict(equal=bool(np.array_equal(r.top_states, top)), top_max=int(np.abs(top).max()),
                                  pred=r.predictions.tolist(), sim_pred=np.argmax(top, axis=1).tolist(),
                                  sps=r.steps_per_second)))
"""


@requires_lava
@pytest.mark.lava
@pytest.mark.timeout(300)
def test_trained_digits_cnn_lava_equals_numba(digits_cnn, tmp_path, run_cli):
    _, bundle = digits_cnn
    r = run_script(tmp_path, TOP_SCRIPT, str(bundle), timeout=200)
    assert r["equal"] and r["top_max"] > 0 and r["pred"] == r["sim_pred"], r
    lava_npy, numba_npy = tmp_path / "lava.npy", tmp_path / "numba.npy"
    res = _cli_child("deploy", str(bundle), "--n-samples", "8", "--steps", "15", "--chunk", "4",
                     "--predictions", str(lava_npy))
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1] == f"predictions: {lava_npy}"
    code, out, err = run_cli(["deploy", str(bundle), "--backend", "numba", "--n-samples", "8", "--steps", "15",
                              "--predictions", str(numba_npy)])
    assert code == 0, err
    a, b = np.load(lava_npy), np.load(numba_npy)
    assert a.dtype == np.int64 and a.shape == (8,) and np.array_equal(a, b)
    assert out.splitlines()[1] == res.stdout.splitlines()[1]  # the same accuracy line
    assert len(set(a.tolist())) > 1  # a trained network, not one class for every digit


@requires_lava
@pytest.mark.lava
@pytest.mark.timeout(400)
def test_compare_lava_samples_on_a_cnn_run(digits_cnn, tmp_path):
    run, _ = digits_cnn
    res = _cli_child("compare", str(run), "--target", "loihi2", "--n-test", "20", "--steps", "10",
                     "--weight-bits", "8", "--exponent-rules", "max", "--lava-samples", "4",
                     "--out-dir", str(tmp_path / "cmp"), timeout=360)
    assert res.returncode == 0, res.stderr
    rows = (tmp_path / "cmp" / "compare.csv").read_text().splitlines()
    match = [r for r in rows if r.startswith("top_state_match,fixed~lava,")]
    assert len(match) == 1 and float(match[0].split(",")[5]) == 1.0, rows
    assert any(r.startswith("accuracy,lava,") for r in rows)


def test_predictions_numba_fixed_and_float(digits_cnn, tmp_path, run_cli):
    run, bundle = digits_cnn
    fixed, flt = tmp_path / "fixed.npy", tmp_path / "sub" / "float.npy"
    (tmp_path / "sub").mkdir()
    code, out, err = run_cli(["deploy", str(bundle), "--backend", "numba", "--n-samples", "12", "--steps", "10",
                              "--predictions", str(fixed)])
    assert code == 0, err
    p = np.load(fixed)
    assert p.dtype == np.int64 and p.shape == (12,) and p.min() >= 0 and p.max() < 10
    acc = float(out.splitlines()[1].split()[1])
    labels = __import__("neuro_hts.data", fromlist=["x"]).load_recorded_dataset("digits", None, None, n_test=12).y_test
    assert abs(np.mean(p == labels) - acc) < 1e-4  # the file holds what the accuracy was computed from
    code, _, err = run_cli(["deploy", str(run), "--backend", "numba", "--arith", "float", "--n-samples", "12",
                            "--steps", "10", "--predictions", str(flt)])
    assert code == 0, err
    q = np.load(flt)
    assert q.shape == (12,) and q.dtype == np.int64
    assert [f.name for f in tmp_path.iterdir() if f.name.startswith(".")] == []  # no temporary file left
    # overwriting an earlier predictions file is allowed (atomically)
    code, _, _ = run_cli(["deploy", str(bundle), "--backend", "numba", "--n-samples", "5", "--steps", "10",
                          "--predictions", str(fixed)])
    assert code == 0 and np.load(fixed).shape == (5,)


def test_predictions_bad_paths_are_one_line_before_the_run(digits_cnn, tmp_path, run_cli):
    _, bundle = digits_cnn
    before = bundle.read_bytes()
    npy_bundle = tmp_path / "net.npy"
    npy_bundle.write_bytes(before)  # an input that happens to end in .npy
    for dest, message in ((tmp_path / "p.txt", "must end in .npy"),
                          (tmp_path / "missing" / "p.npy", "does not exist"),
                          (tmp_path, "must end in .npy"),
                          (npy_bundle, "is the input")):
        net = npy_bundle if dest == npy_bundle else bundle
        code, out, err = run_cli(["deploy", str(net), "--backend", "numba", "--n-samples", "3", "--steps", "5",
                                  "--predictions", str(dest)])
        assert code == 2 and out == "" and err.count("\n") == 1 and message in err, (dest, err)
    assert bundle.read_bytes() == before and npy_bundle.read_bytes() == before
    d = tmp_path / "d.npy"
    d.mkdir()
    code, _, err = run_cli(["deploy", str(bundle), "--backend", "numba", "--n-samples", "3", "--steps", "5",
                            "--predictions", str(d)])
    assert code == 2 and "is a directory" in err


def test_lava_float_on_a_cnn_is_refused_in_one_line(digits_cnn, run_cli):
    run, _ = digits_cnn
    code, out, err = run_cli(["deploy", str(run), "--backend", "lava", "--arith", "float", "--n-samples", "3"])
    assert code == 2 and out == "" and err.count("\n") == 1 and "floating_pt runs dense chains only" in err


@requires_lava
@pytest.mark.lava
@pytest.mark.timeout(240)
def test_ctrl_c_during_a_lava_conv_deploy_stops_and_exits_130(digits_cnn, tmp_path):
    _, bundle = digits_cnn
    dest = tmp_path / "p.npy"
    res = interrupt_when_lava_runs(["--no-progress", "deploy", str(bundle), "--n-samples", "360", "--chunk", "2",
                                    "--predictions", str(dest)], cwd=os.getcwd())
    assert res.returncode == 130, res.stderr
    assert res.stderr.strip().splitlines()[-1] == "neuro-hts: interrupted" and "Traceback" not in res.stderr
    assert not dest.exists() and list(tmp_path.iterdir()) == []  # no predictions, no temporary file


def test_no_lava_left_behind_and_never_imported_here():
    """Runs last in this module."""
    assert leftover_processes() == ([], [])
    assert [m for m in sys.modules if m == "lava" or m.startswith("lava.")] == []
