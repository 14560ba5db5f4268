"""EP learning inside Lava (neuro_hts.lava.learning, neuro_hts.lava.proc.ep).

* bit-exactness per batch: the integer weights and biases a Lava run keeps after EVERY
  batch equal those of the Numba fixed-point engine (FixedEngine.train_step) on the same
  batches, for 3 random networks (2 and 3 layers, both activations), one-sided and
  symmetric nudging, nearest and stochastic rounding, a short last batch;
* ``neuro-hts train --arith fixed --target loihi2 --backend lava`` on an MNIST subset gives
  the run file of ``--backend numba`` with the same flags (weights, biases, history);
* Ctrl-C stops a Lava training run (exit 130, no process left), and the resumed run equals
  an uninterrupted Numba run;
* refused configurations are one line, exit 2, and never import Lava here.

Everything that imports Lava runs in an isolated child interpreter with a hard timeout.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from neuro_hts.data import DATA_DIR_ENV
from neuro_hts.errors import ConfigError
from neuro_hts.runfile import HISTORY_KEYS, load_run
from neuro_hts.testing import interrupt_when_lava_runs, leftover_processes, run_isolated, run_script

requires_lava = pytest.mark.skipif(importlib.util.find_spec("lava") is None, reason="lava-nc is not installed")
pytestmark = [requires_lava]

ROOT = Path(__file__).resolve().parents[1]

PER_BATCH_SCRIPT = r"""
import copy, json, sys
import numpy as np
from neuro_hts.algorithms import make_algorithm
from neuro_hts.config import Config
from neuro_hts.hardware.fixed_engine import FixedEngine
from neuro_hts.learning import make_optimizer
from neuro_hts.network import init_network
from neuro_hts.lava.learning import train_lava

out = []
for case in json.loads(sys.argv[1]):
    arch, B, N = case["arch"], case["B"], case["N"]
    cfg = Config.from_dict({"model": {"arch": arch, "activation": case["act"]},
        "dt": {"dist": "lognormal", "mean": 0.3, "std": 0.1, "dt_min": 0.01, "dt_max": 0.9, "layers": "all"},
        "train": {"arith": "fixed", "target": "loihi2", "optimizer": "sgd", "lr": case["lr"], "batch_size": B,
                  "t1": case["t1"], "t2": case["t2"], "beta": case["beta"], "nudging": case["nudging"],
                  "update_rounding": case["rounding"], "seed": case["seed"], "epochs": 1,
                  "algorithm": case.get("algorithm", "ep")},
        "chl": case.get("chl", {}), "adapt": case.get("adapt", {})})
    eng = FixedEngine(cfg, make_optimizer(cfg.train, len(arch) - 1))
    net = init_network(cfg, np.float32)
    eng.prepare(net)
    start = eng.bundle(net)
    rng = np.random.default_rng(case["seed"] + 100)
    x = rng.random((N, arch[0])).astype(np.float32)
    y = np.eye(arch[-1], dtype=np.float32)[rng.integers(0, arch[-1], N)]
    alg = make_algorithm(cfg)
    round_rng = np.random.default_rng([case["seed"], 7])
    lava_rng = copy.deepcopy(round_rng)
    numba = []
    for s in range(0, N, B):
        eng.train_step(net, x[s:s + B], y[s:s + B], alg, None, round_rng)
        numba.append([(np.array(lb.weight_mantissa), np.array(lb.bias)) for lb in eng.bundle(net).layers])
    r = train_lava(start, x, y, batch_size=B, algorithm=alg, lrs=eng.inner.lrs, rounding=case["rounding"],
                   rng=lava_rng, record_weights=True)
    res = dict(batches=len(numba), equal=[], changed=[], final_equal=True)
    prev = [(np.array(lb.weight_mantissa), np.array(lb.bias)) for lb in start.layers]
    for bi, layers in enumerate(numba):
        res["equal"].append([bool(np.array_equal(r.weight_history[l][bi], w) and np.array_equal(r.bias_history[l][bi], b))
                             for l, (w, b) in enumerate(layers)])
        res["changed"].append([int(np.sum(w != pw)) for (w, _), (pw, _) in zip(layers, prev)])
        prev = layers
    res["final_equal"] = all(np.array_equal(m, w) and np.array_equal(c, b)
                             for m, c, (w, b) in zip(r.weights, r.biases, numba[-1]))
    res["lava_rng_untouched"] = lava_rng.bit_generator.state == copy.deepcopy(np.random.default_rng([case["seed"], 7])).bit_generator.state
    res["top_shape"] = list(r.top_free.shape)
    out.append(res)
print("RESULT " + json.dumps(out))
"""

CASES = [
    dict(arch=[6, 5, 3], act="hard_sigmoid", lr=[0.5], B=3, N=15, t1=8, t2=4, beta=0.5, nudging="one-sided",
         rounding="nearest", seed=0),
    dict(arch=[7, 6, 5, 4], act="sigmoid4", lr=[0.4, 0.3, 0.2], B=3, N=16, t1=8, t2=3, beta=0.5, nudging="symmetric",
         rounding="stochastic", seed=1),
    dict(arch=[5, 8, 3], act="hard_sigmoid", lr=[0.3], B=2, N=11, t1=6, t2=4, beta=0.8, nudging="one-sided",
         rounding="stochastic", seed=2),
]


@pytest.mark.lava
@pytest.mark.timeout(400)
def test_lava_weights_equal_the_numba_fixed_engine_after_every_batch(tmp_path):
    res = run_script(tmp_path, PER_BATCH_SCRIPT, json.dumps(CASES), timeout=380)
    assert len(res) == len(CASES)
    for case, r in zip(CASES, res):
        assert r["batches"] == -(-case["N"] // case["B"]) >= 5
        n_layers = len(case["arch"]) - 1
        assert r["equal"] == [[True] * n_layers] * r["batches"], (case, r)
        assert r["final_equal"] and r["lava_rng_untouched"]
        assert r["top_shape"] == [case["N"], case["arch"][-1]]
        # non-trivial: every layer's integer weights moved during the run, most batches change some
        assert all(sum(col) > 0 for col in zip(*r["changed"])), r["changed"]
        assert sum(sum(c) > 0 for c in r["changed"]) >= r["batches"] - 1, r["changed"]


PHASE_CASES = [
    # CHL: feedback gain, clamp delay, clamped phase from the free states
    dict(arch=[6, 7, 3], act="hard_sigmoid", lr=[0.05], B=3, N=15, t1=8, t2=5, beta=0.5, nudging="one-sided",
         rounding="stochastic", seed=3, algorithm="chl", chl=dict(gamma=0.5, clamp_delay=2, start="free")),
    # CHL from zeros, adjusted adaptation: the clamped output held, every layer mixed toward its free state
    dict(arch=[5, 6, 4, 3], act="sigmoid4", lr=[0.4], B=2, N=10, t1=8, t2=4, beta=0.5, nudging="one-sided",
         rounding="nearest", seed=4, algorithm="chl", adapt=dict(steps=3, coe=0.25)),
    # symmetric EP, adapted: four restores per block (free, nudged+, nudged-)
    dict(arch=[6, 5, 3], act="hard_sigmoid", lr=[0.5], B=3, N=15, t1=8, t2=3, beta=0.5, nudging="symmetric",
         rounding="stochastic", seed=5, adapt=dict(steps=4, coe=0.3)),
]


@pytest.mark.lava
@pytest.mark.timeout(400)
def test_chl_and_adjusted_adaptation_in_lava_equal_the_numba_fixed_engine_after_every_batch(tmp_path):
    res = run_script(tmp_path, PER_BATCH_SCRIPT, json.dumps(PHASE_CASES), timeout=380)
    for case, r in zip(PHASE_CASES, res, strict=True):
        assert r["batches"] == -(-case["N"] // case["B"]) >= 5
        assert r["equal"] == [[True] * (len(case["arch"]) - 1)] * r["batches"], (case, r)
        assert r["final_equal"]
        assert all(sum(col) > 0 for col in zip(*r["changed"])), r["changed"]


FLOAT_SCRIPT = r"""
import copy, json, sys
import numpy as np
from neuro_hts.algorithms import make_algorithm
from neuro_hts.config import Config
from neuro_hts.engines import FloatEngine
from neuro_hts.learning import make_optimizer
from neuro_hts.network import init_network
from neuro_hts.lava.learning import train_lava_float

out = []
for case in json.loads(sys.argv[1]):
    arch, B, N = case["arch"], case["B"], case["N"]
    cfg = Config.from_dict({"model": {"arch": arch, "activation": case["act"]},
        "dt": {"dist": "lognormal", "mean": 0.3, "std": 0.1, "dt_min": 0.01, "dt_max": 0.9, "layers": "all"},
        "train": {"backend": "numpy", "optimizer": "sgd", "lr": case["lr"], "batch_size": B, "t1": case["t1"],
                  "t2": case["t2"], "beta": case["beta"], "nudging": case["nudging"], "seed": case["seed"],
                  "algorithm": case.get("algorithm", "ep")},
        "chl": case.get("chl", {}), "adapt": case.get("adapt", {})})
    eng = FloatEngine(cfg, make_optimizer(cfg.train, len(arch) - 1))
    net = init_network(cfg, np.float64)
    start = copy.deepcopy(net)
    rng = np.random.default_rng(case["seed"] + 100)
    x = rng.random((N, arch[0]))
    y = np.eye(arch[-1])[rng.integers(0, arch[-1], N)]
    alg = make_algorithm(cfg)
    ref = []
    for s in range(0, N, B):
        eng.train_step(net, x[s:s + B], y[s:s + B], alg)
        ref.append([(w.copy(), b.copy()) for w, b in zip(net.weights, net.biases)])
    r = train_lava_float(start, x, y, batch_size=B, algorithm=alg, lrs=eng.lrs, record_weights=True)
    err = max(float(np.abs(r.weight_history[l][bi] - w).max()) + float(np.abs(r.bias_history[l][bi] - b).max())
              for bi, layers in enumerate(ref) for l, (w, b) in enumerate(layers))
    moved = min(float(np.abs(ref[-1][l][0] - w0).max()) for l, w0 in enumerate(start.weights))
    out.append(dict(err=err, moved=moved, batches=len(ref)))
print("RESULT " + json.dumps(out))
"""

FLOAT_CASES = [
    dict(arch=[6, 5, 3], act="hard_sigmoid", lr=[0.5], B=3, N=15, t1=8, t2=4, beta=0.5, nudging="symmetric", seed=0),
    dict(arch=[5, 6, 4, 3], act="sigmoid4", lr=[0.2], B=2, N=10, t1=8, t2=4, beta=0.5, nudging="one-sided", seed=1,
         algorithm="chl", chl=dict(gamma=0.5, clamp_delay=1), adapt=dict(steps=3, coe=0.25)),
]


@pytest.mark.lava
@pytest.mark.timeout(300)
def test_lava_floating_pt_training_matches_the_numpy_reference(tmp_path):
    """floating_pt against FloatEngine (NumPy float64, plain SGD): stated tolerance 1e-10, measured 1.4e-16 (the same
    float64 operations in another order)."""
    res = run_script(tmp_path, FLOAT_SCRIPT, json.dumps(FLOAT_CASES), timeout=280)
    for case, r in zip(FLOAT_CASES, res, strict=True):
        assert r["batches"] == 5
        assert r["err"] < 1e-10, r
        assert r["moved"] > 5e-4, r  # the weights did learn (measured 0.033 and 0.0012)


def _mnist_root() -> str:
    for root in (os.environ.get(DATA_DIR_ENV), "/work/shared/data"):
        if root and (Path(root) / "mnist" / "train-images-idx3-ubyte.gz").is_file():
            return root
    pytest.skip(f"MNIST files not available (set {DATA_DIR_ENV})")


def _train_child(*argv, timeout=300):
    return run_isolated([sys.executable, "-m", "neuro_hts", "--no-progress", "train", *argv], cwd=str(ROOT),
                        timeout=timeout)


def _same_runs(a, b):
    for x, y in zip(a.network.weights + a.network.biases, b.network.weights + b.network.biases, strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y)
    for k in HISTORY_KEYS:
        if k != "epoch_seconds":
            assert a.history[k] == b.history[k], k
    assert [int(e) for e in a.optimizer_state["weight_exponent"]] == [int(e) for e in b.optimizer_state["weight_exponent"]]


@pytest.mark.lava
@pytest.mark.timeout(400)
def test_cli_train_backend_lava_equals_numba_on_an_mnist_subset(tmp_path):
    data = _mnist_root()
    common = ["--dataset", "mnist", "--data-dir", data, "--arch", "784-24-10", "--n-train", "60", "--n-test", "100",
              "--arith", "fixed", "--target", "loihi2", "--optimizer", "sgd", "--lr", "0.2", "--batch-size", "10",
              "--t1", "16", "--t2", "4", "--beta", "0.5", "--nudging", "symmetric", "--epochs", "1", "--seed", "4"]
    res = _train_child(*common, "--backend", "lava", "--out", str(tmp_path / "lava.h5"), timeout=380)
    assert res.returncode == 0, res.stderr
    assert "Lava training (fixed_pt): 60 samples (6 batches)" in res.stderr
    from neuro_hts import cli

    assert cli.main(["--no-progress", "train", *common, "--backend", "numba", "--out", str(tmp_path / "numba.h5")]) == 0
    a, b = load_run(tmp_path / "lava.h5"), load_run(tmp_path / "numba.h5")
    assert a.config.train.backend == "lava" and b.config.train.backend == "numba"
    _same_runs(a, b)
    # the weights moved from the initial grid network: 6 batches of real updates
    from neuro_hts.hardware.fixed_engine import FixedEngine
    from neuro_hts.learning import make_optimizer
    from neuro_hts.network import init_network

    net0 = init_network(a.config, np.float32)
    FixedEngine(a.config, make_optimizer(a.config.train, 2)).prepare(net0)
    for w0, w in zip(net0.weights, a.network.weights, strict=True):
        assert np.sum(w0 != w) > 10


DIGITS = ["--config", "models/digits.toml", "--n-train", "60", "--n-test", "60", "--arith", "fixed", "--target",
          "loihi2", "--optimizer", "sgd", "--lr", "0.2", "--t1", "12", "--t2", "4", "--seed", "6"]


@pytest.mark.lava
@pytest.mark.timeout(500)
def test_ctrl_c_stops_lava_training_and_the_resumed_run_equals_numba(tmp_path):
    run = tmp_path / "lava.h5"
    res = _train_child(*DIGITS, "--backend", "lava", "--epochs", "1", "--out", str(run))
    assert res.returncode == 0, res.stderr
    res = interrupt_when_lava_runs(["--no-progress", "train", "--resume", str(run), "--epochs", "3"], cwd=str(ROOT),
                                   wait=200, settle=0.5, timeout=200)
    assert res.returncode == 130, res.stderr
    assert "neuro-hts: interrupted; the last epoch checkpoint is kept" in res.stderr and "Traceback" not in res.stderr
    assert load_run(run).epochs_completed == 1
    res = _train_child("--resume", str(run), "--epochs", "2")
    assert res.returncode == 0, res.stderr
    from neuro_hts import cli

    straight = tmp_path / "numba.h5"
    assert cli.main(["--no-progress", "train", *DIGITS, "--backend", "numba", "--epochs", "2", "--out", str(straight)]) == 0
    a, b = load_run(run), load_run(straight)
    assert a.epochs_completed == b.epochs_completed == 2
    _same_runs(a, b)


def test_schedule_block_layout_per_algorithm():
    """The block layout of docs/LAVA_LEARNING.md, without Lava: lengths, start/restore steps, contrast ends."""
    from neuro_hts.algorithms import CHL, EP, Adapted
    from neuro_hts.lava.schedule import START_RESTORE, START_ZERO, UPDATE, lava_schedule

    def sched(alg):
        return lava_schedule(*alg.phases(None), lambda v: int(round(v * 4096)))

    one = sched(EP(t1=5, t2=3, beta=0.5))
    assert one["block"] == 9 and (one["free_end"], one["j_a"], one["j_b"]) == (5, 8, 5)
    assert one["kind"] == [START_ZERO] + [UPDATE] * 8 and one["beta"][6:] == [2048] * 3 and one["beta"][:6] == [0] * 6
    assert (one["beta_a"], one["beta_b"]) == (2048, 0)
    sym = sched(EP(t1=5, t2=3, beta=0.5, nudging="symmetric"))
    assert sym["block"] == 1 + 5 + 3 + 1 + 3 and (sym["j_a"], sym["j_b"]) == (8, 12)
    assert sym["kind"][9] == START_RESTORE and sym["src"][9] == 0 and sym["save"][5] == [0]  # the free state
    assert sym["beta"][10:] == [-2048] * 3 and (sym["beta_a"], sym["beta_b"]) == (2048, -2048)
    chl = sched(CHL(t1=6, t2=4, gamma=0.5, clamp_delay=1))
    assert chl["block"] == 1 + 6 + 1 + 4 and chl["kind"][7] == START_ZERO
    assert chl["clamp"][8] == 0 and chl["clamp"][9:] == [1] * 3 and set(chl["gamma"][1:7]) == {2048}
    assert (chl["j_a"], chl["j_b"], chl["beta_a"], chl["beta_b"]) == (11, 6, 4096, 0)
    ad = sched(Adapted(CHL(t1=6, t2=4, start="free"), steps=2, coe=0.25))
    assert ad["block"] == 1 + 6 + 4 + 2 and ad["j_a"] == 12
    assert ad["anchor"][11:] == [0, 0] and ad["coe"][11:] == [1024, 1024] and ad["clamp"][11:] == [2, 2]
    with pytest.raises(ConfigError, match="no tol"):
        sched(EP(t1=5, t1_tol=0.01))


@pytest.mark.parametrize("argv, message", [
    (["--arith", "float"], "backend 'lava' trains in fixed point only"),
    (["--optimizer", "adam"], "--backend lava trains with the integer SGD update"),
    (["--nudging", "random-sign"], "the Lava schedule is fixed for the whole run: random-sign nudging needs a random"),
    (["--t1-tol", "0.01"], "runs every phase for its full steps (no tol)"),
])
def test_refused_lava_training_is_one_line_exit_2(run_cli, tmp_path, argv, message, monkeypatch):
    monkeypatch.chdir(ROOT)
    base = list(DIGITS)
    if "float" in argv:  # a float run takes no target (train refuses --target without --arith fixed first)
        i = base.index("--target")
        del base[i:i + 2]
    args = ["train", *base, "--backend", "lava", "--epochs", "1", "--out", str(tmp_path / "r.h5"), *argv]
    code, out, err = run_cli(args)
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_lava_never_imported_here():
    """Runs last in this module: the refusals above did not import Lava into pytest."""
    assert leftover_processes() == ([], [])
    assert [m for m in sys.modules if m == "lava" or m.startswith("lava.")] == []
