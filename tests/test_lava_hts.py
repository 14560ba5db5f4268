"""The Lava back-end (neuro_hts.lava): HTS processes, builder, deploy CLI.

* bit-exactness: Lava ``fixed_pt`` and the Numba FixedPointSimulator give identical integer
  states after EVERY step (free and nudged phases) for random networks, random decays,
  random inputs, several seeds, shapes, both activations, both shift directions, and
  mantissas Lava has to rescale (odd int8 values);
* Lava ``floating_pt`` against the NumPy reference (:func:`neuro_hts.dynamics.relax`):
  stated tolerance 1e-12 (measured 6e-17: the same float64 operations in another order);
* the Dense weight form and the int32 overflow guard;
* ``neuro-hts deploy``: Lava and Numba give the same predictions; Ctrl-C stops the Lava
  runtime and exits 130; bad input is one line, exit 2.

Everything that imports Lava runs in an isolated child interpreter
(:func:`neuro_hts.testing.run_script`) with a hard timeout; the last test checks that no
child process is left and that Lava never entered the pytest process.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time

import pytest

from neuro_hts.errors import ConfigError
from neuro_hts.testing import ISOLATED_SESSIONS, interrupt_when_lava_runs, leftover_processes, run_script

requires_lava = pytest.mark.skipif(importlib.util.find_spec("lava") is None, reason="lava-nc is not installed")
pytestmark = [requires_lava]

# Builds random bundles like tests/test_fixed_sim.py does, runs them in Lava with a
# per-step record, and replays the same steps in the Numba simulator.
EXACT_SCRIPT = r"""
import dataclasses, itertools, json, sys
import numpy as np
from neuro_hts.hardware import load_target
from neuro_hts.hardware.quantize import DeployBundle, LayerBundle
from neuro_hts.hardware.fixed_sim import FixedPointSimulator
from neuro_hts.lava import lava_connections, run_lava

CASES = json.loads(sys.argv[1])
out = []
for case in CASES:
    rng = np.random.default_rng(case["seed"])
    target = load_target(case["target"])
    F, S = case["F"], case["S"]
    one = 1 << S
    layers = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(case["arch"]), start=1):
        if case["odd"]:
            m = rng.integers(-128, 128, size=(n_out, n_in))
        else:
            m = 2 * rng.integers(-128, 128, size=(n_out, n_in))
        e = int(rng.integers(case["e_lo"], case["e_hi"] + 1))
        layers.append(LayerBundle(
            index=i, weight_mantissa=m.astype(np.int64), weight_exponent=e,
            bias=rng.integers(-one, one, size=n_out).astype(np.int64),
            decay=rng.integers(1, 4097, size=n_out).astype(np.int64),
            dt=np.zeros(n_out)))
    bundle = DeployBundle(target=target, layers=tuple(layers), form="leaky", activation=case["activation"],
                          output="mse", activation_frac_bits=F, state_frac_bits=S)
    B, T1, T2, beta = case["batch"], case["t1"], case["t2"], case["beta"]
    x = rng.random((B, case["arch"][0]))
    y = np.eye(case["arch"][-1])[rng.integers(0, case["arch"][-1], size=B)]
    r = run_lava(bundle, x, t_free=T1, t_nudge=T2, y=y, beta=beta, arith="fixed", record="steps")
    sim = FixedPointSimulator(bundle)
    states, mismatches, compared, distinct = None, [], 0, set()
    for j in range(1, T1 + T2 + 1):
        if j <= T1:
            states, _ = sim.relax(x, 1, states=states)
        else:
            states, _ = sim.relax(x, 1, states=states, y=y, beta=beta)
        for l, s in enumerate(states):
            lava_s = r.states[l][:, j, :]
            compared += s.size
            distinct.update(np.unique(s).tolist())
            if not np.array_equal(lava_s, s):
                mismatches.append([j, l + 1, int(np.sum(lava_s != s))])
    load_zero = all(int(np.abs(s[:, 0, :]).max()) == 0 for s in r.states)
    out.append(dict(compared=compared, mismatches=mismatches[:5], distinct=len(distinct), load_zero=load_zero,
                    scale_shifts=[c[0].scale_shift for c in lava_connections(bundle)],
                    dtype=str(r.states[0].dtype), n_steps=r.n_steps))
print("RESULT " + json.dumps(out))
"""

CASES = [
    # seed, arch, activation, F/S, exponent range (k = e - F + S from -9 to +1), odd mantissas
    dict(seed=0, arch=[5, 4, 3], activation="hard_sigmoid", target="loihi2", F=12, S=12, e_lo=-9, e_hi=-6,
         odd=False, batch=3, t1=6, t2=4, beta=0.5),
    dict(seed=1, arch=[7, 6, 5, 4], activation="sigmoid4", target="loihi2", F=12, S=12, e_lo=-8, e_hi=-5,
         odd=False, batch=2, t1=5, t2=4, beta=-0.8),
    dict(seed=2, arch=[9, 3, 6], activation="hard_sigmoid", target="loihi2", F=12, S=12, e_lo=-3, e_hi=1,
         odd=False, batch=2, t1=4, t2=3, beta=1.3),
    dict(seed=3, arch=[6, 8, 2], activation="sigmoid4", target="generic8", F=6, S=12, e_lo=-4, e_hi=-1,
         odd=True, batch=3, t1=5, t2=3, beta=0.37),
    dict(seed=4, arch=[4, 5, 5, 5, 3], activation="hard_sigmoid", target="loihi2", F=10, S=12, e_lo=-8, e_hi=-4,
         odd=True, batch=2, t1=7, t2=2, beta=0.1),
]


@pytest.mark.lava
@pytest.mark.timeout(240)
def test_lava_fixed_pt_is_bit_exact_with_numba_every_step(tmp_path):
    import json

    res = run_script(tmp_path, EXACT_SCRIPT, json.dumps(CASES), timeout=220)
    assert len(res) == len(CASES)
    for case, r in zip(CASES, res):
        assert r["mismatches"] == [], (case, r)
        n_layers = len(case["arch"]) - 1
        assert r["compared"] == case["batch"] * (case["t1"] + case["t2"]) * sum(case["arch"][1:])
        assert r["dtype"] == "int64" and r["load_zero"]
        assert r["n_steps"] == case["batch"] * (1 + case["t1"] + case["t2"])
        # non-trivial dynamics: many distinct integer states, not a stuck network
        assert r["distinct"] > 20, r
        # odd mantissas are doubled for Lava's Dense (and the shift lowered by one)
        assert r["scale_shifts"] == [1 if case["odd"] else 0] * n_layers


FLOAT_SCRIPT = r"""
import json
import numpy as np
from neuro_hts import dynamics
from neuro_hts.testing import random_problem
from neuro_hts.lava import run_lava

out = []
for seed, arch, act in [(0, [6, 5, 3], "hard_sigmoid"), (1, [7, 6, 5, 4], "sigmoid4")]:
    net, x, y = random_problem(arch, activation=act, seed=seed, batch=3)
    T1, T2, beta = 6, 4, 0.5
    r = run_lava(net, x, t_free=T1, t_nudge=T2, y=y, beta=beta, arith="float", record="steps")
    err, states = 0.0, None
    change = 0.0
    for j in range(1, T1 + T2 + 1):
        if j <= T1:
            states = dynamics.relax(net, x, 1, states=states).states
        else:
            states = dynamics.relax(net, x, 1, states=states, y=y, beta=beta).states
        for l, s in enumerate(states):
            err = max(err, float(np.abs(r.states[l][:, j, :] - s).max()))
            change = max(change, float(np.abs(r.states[l][:, j, :] - r.states[l][:, j - 1, :]).max()))
    out.append(dict(err=err, change=change, dtype=str(r.states[0].dtype)))
print("RESULT " + json.dumps(out))
"""


@pytest.mark.lava
@pytest.mark.timeout(120)
def test_lava_floating_pt_matches_numpy_reference(tmp_path):
    res = run_script(tmp_path, FLOAT_SCRIPT, timeout=100)
    for r in res:
        assert r["dtype"] == "float64"
        assert r["err"] < 1e-12, r  # measured 5.6e-17
        assert r["change"] > 1e-3  # the states move: the comparison is not of zeros


CONN_SCRIPT = r"""
import json
import numpy as np
from neuro_hts.errors import ConfigError
from neuro_hts.hardware import load_target
from neuro_hts.hardware.quantize import DeployBundle, LayerBundle
from neuro_hts.lava import lava_connections
from neuro_hts.lava.proc.hts import lava_weight_form

def bundle(m, e=-8, F=12):
    m = np.asarray(m, dtype=np.int64)
    lb = LayerBundle(index=1, weight_mantissa=m, weight_exponent=e, bias=np.zeros(m.shape[0], dtype=np.int64),
                     decay=np.full(m.shape[0], 2048), dt=np.full(m.shape[0], 0.5))
    return DeployBundle(target=load_target("loihi2"), layers=(lb,), form="leaky", activation="hard_sigmoid",
                        output="mse", activation_frac_bits=F, state_frac_bits=12)

out = {}
out["form_mixed"] = lava_weight_form(np.array([[1, 3, -2, 255, -256]])).tolist()
out["form_positive"] = lava_weight_form(np.array([[1, 3, 255, 300]])).tolist()
c = lava_connections(bundle([[2, -4], [6, 254]], e=-7))[0]
out["even"] = [c[0].scale_shift, c[0].weight_exp, c[0].weights.tolist(), c[1].weights.tolist()]
c = lava_connections(bundle([[3, -5], [1, 127]], e=-7))[0]
out["odd"] = [c[0].scale_shift, c[0].weight_exp, c[0].weights.tolist()]
try:
    lava_connections(bundle(np.full((2, 2100), 254), e=-8))
    out["overflow"] = None
except ConfigError as exc:
    out["overflow"] = str(exc)
print("RESULT " + json.dumps(out))
"""


@pytest.mark.lava
@pytest.mark.timeout(120)
def test_dense_weight_form_and_overflow_guard(tmp_path):
    r = run_script(tmp_path, CONN_SCRIPT, timeout=100)
    # Lava's Dense: mixed-sign matrices keep even values only; all-positive ones keep 8 bits
    assert r["form_mixed"] == [[0, 2, -2, 254, -256]]
    assert r["form_positive"] == [[1, 3, 255, 255]]
    # even mantissas go in unchanged with weight_exp = e - F + S; W^T for the feedback
    assert r["even"] == [0, -7, [[2, -4], [6, 254]], [[2, 6], [-4, 254]]]
    # odd mantissas are doubled and the exponent lowered: the same product
    assert r["odd"] == [1, -8, [[6, -10], [2, 254]]]
    # 2100 inputs x 254 x 4096 > 2**31 - 1: refused, naming the layer
    assert r["overflow"] is not None and "layer 1" in r["overflow"] and "int32" in r["overflow"]


def test_bad_sources_are_refused_before_lava_is_imported():
    from neuro_hts.lava import run_lava
    from neuro_hts.testing import random_problem

    net, x, _ = random_problem([4, 3, 2])
    with pytest.raises(ConfigError, match="need a DeployBundle"):
        run_lava(net, x, t_free=3, arith="fixed")
    with pytest.raises(ConfigError, match="arith must be"):
        run_lava(net, x, t_free=3, arith="double")
    with pytest.raises(ConfigError, match="needs targets y"):
        run_lava(net, x, t_free=3, t_nudge=2, arith="float")
    with pytest.raises(ConfigError, match="x must have shape"):
        run_lava(net, x[:, :2], t_free=3, arith="float")
    with pytest.raises(ConfigError, match="t_free"):
        run_lava(net, x, t_free=-1, arith="float")
    ce, xc, _ = random_problem([4, 3, 2], output="ce")  # a readout's targets have one entry per class
    with pytest.raises(ConfigError, match=r"y must be finite with shape \(8, 2\)"):
        run_lava(ce, xc, t_free=3, t_nudge=2, y=xc[:, :3], arith="float")
    assert [m for m in sys.modules if m == "lava" or m.startswith("lava.")] == []


# --------------------------------------------------------------------------- deploy CLI


@pytest.fixture(scope="module")
def digits_bundle(tmp_path_factory):
    """A briefly trained digits run (64-256-10, leaky, MSE) and its Loihi 2 bundle."""
    from neuro_hts import cli

    d = tmp_path_factory.mktemp("deploy")
    run, bundle = d / "run.h5", d / "net.h5"
    assert cli.main(["--no-progress", "train", "--config", "models/digits.toml", "--epochs", "1", "--n-train", "300",
                     "--out", str(run)]) == 0
    assert cli.main(["--no-progress", "quantize", str(run), "--target", "loihi2", "--out", str(bundle)]) == 0
    return run, bundle


def _deploy_child(*argv, timeout=200):
    from neuro_hts.testing import run_isolated

    res = run_isolated([sys.executable, "-m", "neuro_hts", "--no-progress", "deploy", *argv], cwd=os.getcwd(),
                       timeout=timeout)
    return res


@pytest.mark.lava
@pytest.mark.timeout(240)
def test_deploy_lava_fixed_matches_numba(digits_bundle, run_cli):
    _, bundle = digits_bundle
    res = _deploy_child(str(bundle), "--n-samples", "30", "--steps", "20", "--chunk", "7")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == f"{bundle}: lava fixed, 30 samples x 20 steps"
    acc_lava = lines[1]
    assert "Lava" in lines[2] and "steps/s" in lines[2]
    code, out, _ = run_cli(["deploy", str(bundle), "--backend", "numba", "--n-samples", "30", "--steps", "20"])
    assert code == 0
    # bit-exact back-ends: the same predictions, so the same accuracy line
    assert out.splitlines()[1] == acc_lava
    n_right = int(acc_lava.split("(")[1].split("/")[0])
    assert n_right >= 15  # a trained network: far above chance (3 of 30)


@pytest.mark.lava
@pytest.mark.timeout(240)
def test_deploy_lava_float_from_run_file(digits_bundle, run_cli):
    run, _ = digits_bundle
    res = _deploy_child(str(run), "--arith", "float", "--n-samples", "20", "--steps", "20")
    assert res.returncode == 0, res.stderr
    code, out, _ = run_cli(["deploy", str(run), "--backend", "numba", "--arith", "float", "--n-samples", "20",
                            "--steps", "20"])
    assert code == 0 and out.splitlines()[1] == res.stdout.splitlines()[1]


@pytest.mark.lava
@pytest.mark.timeout(240)
def test_deploy_ctrl_c_stops_lava_and_exits_130(digits_bundle, tmp_path):
    _, bundle = digits_bundle
    # Lava's runtime processes running, then Ctrl-C to the whole process group
    res = interrupt_when_lava_runs(["--no-progress", "deploy", str(bundle), "--n-samples", "360", "--chunk", "2"],
                                   cwd=os.getcwd())
    assert res.returncode == 130, res.stderr
    assert res.stderr.strip().splitlines()[-1] == "neuro-hts: interrupted"
    assert "Traceback" not in res.stderr


@pytest.mark.lava
@pytest.mark.timeout(240)
def test_deploy_kill_9_on_the_leader_leaves_no_lava_process(digits_bundle):
    """SIGKILL to the deploying process only (not its group): Lava's forked runtime
    processes must die with it (neuro_hts.lava._lifeline), none may stay behind."""
    _, bundle = digits_bundle
    proc = subprocess.Popen(
        [sys.executable, "-m", "neuro_hts", "--no-progress", "deploy", str(bundle), "--n-samples", "360",
         "--chunk", "2"],
        cwd=os.getcwd(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    ISOLATED_SESSIONS.append(proc.pid)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(leftover_processes()[0]) < 6 and proc.poll() is None:
            time.sleep(0.2)
        assert proc.poll() is None
        time.sleep(1.0)
        forked = [pid for pid in leftover_processes()[0] if pid != proc.pid]
        assert len(forked) >= 5, forked  # the runtime is up
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 20
        while leftover_processes()[0] and time.monotonic() < deadline:
            time.sleep(0.1)
        left = leftover_processes()[0]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert left == [], left


LIFELINE_SCRIPT = r"""
import os, sys, time
from neuro_hts.lava import _lifeline
assert _lifeline.install() and _lifeline.install()
pid = os.fork()
if pid == 0:
    grandchild = os.fork()
    if grandchild == 0:
        time.sleep(120)
        os._exit(0)
    print(grandchild, flush=True)
    time.sleep(120)
    os._exit(0)
print(pid, flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals are Linux only")
def test_lifeline_children_and_grandchildren_die_with_a_killed_parent(tmp_path):
    """Without Lava: a child and a grandchild forked after install() are gone within
    seconds of SIGKILL to the root; without install() they would sleep for 120 s."""
    script = tmp_path / "lifeline.py"
    script.write_text(LIFELINE_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    ISOLATED_SESSIONS.append(proc.pid)
    try:
        pids = [int(proc.stdout.readline()) for _ in range(2)]
        assert sorted(leftover_processes()[0]) == sorted([proc.pid, *pids])
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while leftover_processes()[0] and time.monotonic() < deadline:
            time.sleep(0.05)
        left = leftover_processes()[0]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.stdout.close()
    assert left == []


@pytest.mark.parametrize("argv, message", [
    (["--arith", "fixed"], "is a run file: fixed-point deployment needs a bundle"),
    (["--n-samples", "0"], "n_samples must be >= 1"),
    (["--arith", "float", "--steps", "0"], "steps must be an integer >= 1"),
    (["--chunk", "0"], "--chunk must be >= 1"),
    (["--backend", "loihi"], "invalid choice"),
])
def test_deploy_bad_input_one_line_exit_2(digits_bundle, run_cli, argv, message):
    run, _ = digits_bundle
    code, out, err = run_cli(["deploy", str(run), "--backend", "numba", *argv])
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err


def test_deploy_missing_or_foreign_file(run_cli, tmp_path):
    code, _, err = run_cli(["deploy", str(tmp_path / "nope.h5"), "--backend", "numba"])
    assert code == 2 and "file not found" in err and err.count("\n") == 1
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    code, _, err = run_cli(["deploy", str(junk), "--backend", "numba"])
    assert code == 2 and "not a readable HDF5 file" in err and err.count("\n") == 1


def test_no_lava_left_behind_and_never_imported_here():
    """Runs last in this module."""
    assert leftover_processes() == ([], [])
    assert [m for m in sys.modules if m == "lava" or m.startswith("lava.")] == []
