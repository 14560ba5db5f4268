"""The ``neuro-hts`` command line: train / resume / eval / plot-dt, and its one-line errors.

Most cases call ``cli.main`` in-process (fast); a few run ``python -m neuro_hts`` in a
subprocess to check the real stderr and exit code, including a SIGKILL mid-run.
"""

from __future__ import annotations

import gzip
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from neuro_hts import training  # noqa: F401
from neuro_hts.engines import FloatEngine
from neuro_hts.config import Config
from neuro_hts.data import load_dataset
from neuro_hts.distributions import available_distributions
from neuro_hts.runfile import HISTORY_KEYS, load_run

#: A tiny, fast training setup on the embedded digits dataset.
SMALL = ["--dataset", "digits", "--arch", "64-32-10", "--n-train", "300", "--n-test", "60", "--t1", "10", "--t2", "4", "--batch-size", "25"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_subprocess(argv, cwd, timeout=120):
    return subprocess.run([sys.executable, "-m", "neuro_hts", *argv], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(code, out, err, expected: str):
    assert code == 2, err
    assert "Traceback" not in err
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
    assert expected in err, err
    assert out == ""


def assert_same_run(a, b):
    """Bit-identical parameters, dt, optimizer state and history (but the wall-clock times)."""
    assert a.epochs_completed == b.epochs_completed
    assert a.config == b.config
    for name in ("weights", "biases", "dts"):
        for x, y in zip(getattr(a.network, name), getattr(b.network, name), strict=True):
            assert x.dtype == y.dtype and np.array_equal(x, y), name
    assert set(a.optimizer_state) == set(b.optimizer_state)
    for k in a.optimizer_state:
        for x, y in zip(a.optimizer_state[k], b.optimizer_state[k], strict=True):
            assert np.array_equal(x, y), k
    for k in HISTORY_KEYS:
        if k != "epoch_seconds":
            assert a.history[k] == b.history[k], k


# --------------------------------------------------------------------------- help


def test_python_m_help(tmp_path):
    r = run_subprocess(["--help"], tmp_path)
    assert r.returncode == 0 and r.stderr == ""
    for cmd in ("train", "eval", "plot-dt"):
        assert cmd in r.stdout
    r = run_subprocess(["train", "--help"], tmp_path)
    assert r.returncode == 0 and "--resume" in r.stdout and "--force" in r.stdout


# --------------------------------------------------------------------------- resume


RESUME_CASES = {
    # default backend (numba, float32) and Adam
    "numba-adam": ([], None),
    # float64 reference, SGD with momentum, random nudging signs, dt resampled every epoch
    "numpy-sgd-resample": (
        ["--backend", "numpy", "--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.5", "--nudging", "random-sign"],
        '[dt]\ndist = "cauchy"\nresample_each_epoch = true\n',
    ),
}


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, run_cli, case):
    flags, toml = RESUME_CASES[case]
    if toml:
        (tmp_path / "cfg.toml").write_text(toml)
        flags = ["--config", str(tmp_path / "cfg.toml"), *flags]
    common = ["train", *SMALL, *flags, "--seed", "7"]
    straight, part = tmp_path / "straight.h5", tmp_path / "part.h5"

    code, out, _ = run_cli([*common, "--epochs", "3", "--out", str(straight)])
    assert code == 0 and "trained 3 epochs" in out
    code, out, _ = run_cli([*common, "--epochs", "1", "--out", str(part)])
    assert code == 0 and "trained 1 epochs" in out
    after_one = load_run(part)
    assert after_one.epochs_completed == 1 and after_one.status == "complete"

    code, out, err = run_cli(["train", "--resume", str(part), "--epochs", "3"])
    assert code == 0, err
    assert "trained 3 epochs" in out and str(part) in out

    a, b = load_run(straight), load_run(part)
    assert b.status == "complete" and len(b.history["test_accuracy"]) == 3
    assert b.config.train.epochs == 3
    assert_same_run(a, b)
    # training really moved the weights between epoch 1 and 3 (so equality is not trivial)
    assert not np.array_equal(after_one.network.weights[0], b.network.weights[0])
    if "resample" in case:
        assert not np.array_equal(after_one.network.dts[0], b.network.dts[0])


KILL_ARGS = ["train", "--dataset", "digits", "--arch", "64-32-10", "--n-test", "60", "--t1", "20", "--t2", "6",
             "--batch-size", "2", "--backend", "numpy", "--epochs", "3", "--seed", "3"]  # ~0.4 s per epoch


def _epochs_on_disk(path: Path) -> int:
    with h5py.File(path, "r") as f:
        return int(f.attrs["epochs_completed"])


def test_sigkill_mid_run_then_resume_matches_uninterrupted(tmp_path, run_cli):
    run = tmp_path / "killed.h5"
    with open(tmp_path / "stderr.txt", "wb") as errf:
        proc = subprocess.Popen([sys.executable, "-m", "neuro_hts", "--no-progress", *KILL_ARGS, "--out", str(run)],
                                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=errf)
        try:
            deadline = time.monotonic() + 90
            while not (run.exists() and _epochs_on_disk(run) >= 1):
                assert proc.poll() is None, "training ended before it could be killed"
                assert time.monotonic() < deadline, "no epoch-1 checkpoint within 90 s"
                time.sleep(0.02)
            time.sleep(0.1)  # into epoch 2
            assert proc.poll() is None, "training ended before it could be killed"
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    killed = load_run(run)  # the checkpoint survived the kill intact
    assert killed.status == "running" and 1 <= killed.epochs_completed < 3

    code, out, err = run_cli(["train", "--resume", str(run)])  # epochs from the stored config
    assert code == 0, err
    assert "trained 3 epochs" in out

    straight = tmp_path / "straight.h5"
    code, _, err = run_cli([*KILL_ARGS, "--out", str(straight)])
    assert code == 0, err
    resumed = load_run(run)
    assert resumed.status == "complete"
    assert_same_run(load_run(straight), resumed)


def test_resume_refuses_other_flags_and_fewer_epochs(tmp_path, run_cli):
    run = tmp_path / "run.h5"
    assert run_cli(["train", *SMALL, "--epochs", "2", "--out", str(run)])[0] == 0
    before = run.read_bytes()
    assert_one_line_error(*run_cli(["train", "--resume", str(run), "--lr", "0.1", "--epochs", "4"]), "only --epochs may change, not --lr")
    assert_one_line_error(*run_cli(["train", "--resume", str(run), "--epochs", "1"]), "already has 2 epochs")
    assert_one_line_error(*run_cli(["train", "--resume", str(run), "--out", str(tmp_path / "other.h5")]), "in place")
    assert_one_line_error(*run_cli(["train", "--resume", str(tmp_path / "nope.h5")]), "run file not found")
    assert run.read_bytes() == before


# --------------------------------------------------------------------------- bad input


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _mnist_dir(tmp_path: Path, kind: str) -> str:
    d = tmp_path / "mnist-data"
    d.mkdir()
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    if kind == "empty":
        return str(d)
    # a valid idx payload of the wrong content, gzip-compressed
    idx = b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + b"\x01\x02\x03"
    for n in names:
        (d / f"{n}.gz").write_bytes(gzip.compress(idx))
    if kind == "truncated":
        data = gzip.compress(bytes(range(256)) * 40)
        (d / "train-images-idx3-ubyte.gz").write_bytes(data[: len(data) // 2])
    if kind == "partial":
        (d / "t10k-labels-idx1-ubyte.gz").unlink()
    return str(d)


def _run_file(tmp_path: Path, kind: str) -> str:
    """A run file that eval must reject: truncated, foreign HDF5 or not HDF5 at all."""
    p = tmp_path / f"{kind}.h5"
    if kind == "foreign":
        with h5py.File(p, "w") as f:
            f["images"] = np.zeros((2, 3))
        return str(p)
    if kind == "text":
        return _write(p, "hello\n")
    good = tmp_path / "good.h5"
    cfg = Config().replace(model={"arch": [64, 32, 10]}, train={"epochs": 0, "backend": "numpy"}, data={"n_train": 50, "n_test": 20})
    training.train(cfg, good)
    data = good.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return str(p)


def _existing_out(tmp_path: Path) -> str:
    p = tmp_path / "new.h5"
    p.write_bytes(b"precious")
    return str(p)


#: id -> (function tmp_path -> argv, text the error line must contain)
BAD_INPUT = {
    "arch-letters": (lambda t: ["train", "--arch", "64-x-10"], "malformed --arch '64-x-10'"),
    "arch-single": (lambda t: ["train", "--arch", "64"], "malformed --arch '64'"),
    "arch-empty-part": (lambda t: ["train", "--arch", "64--10"], "malformed --arch"),
    "arch-zero": (lambda t: ["train", "--arch", "64-0-10"], "all positive"),
    "arch-wrong-dataset": (lambda t: ["train", "--arch", "784-32-10"], "does not fit dataset 'digits'"),
    "unknown-dist": (lambda t: ["train", "--dt-dist", "weibull"], "unknown dt distribution 'weibull'"),
    "negative-std": (lambda t: ["train", "--dt-std", "-0.1"], "dt std must be >= 0"),
    "dt-min-zero": (lambda t: ["train", "--dt-min", "0"], "dt range must satisfy 0 < dt_min <= dt_max <= 1"),
    "dt-max-above-1": (lambda t: ["train", "--dt-max", "1.5"], "dt range must satisfy 0 < dt_min <= dt_max <= 1"),
    "dt-min-above-max": (lambda t: ["train", "--dt-min", "0.4", "--dt-max", "0.2"], "dt range"),
    "dt-mean-nan-flag": (lambda t: ["train", "--dt-mean", "nan"], "[dt] mean must be finite"),
    "lr-malformed": (lambda t: ["train", "--lr", "fast"], "malformed --lr 'fast'"),
    "lr-count": (lambda t: ["train", "--lr", "1e-3,1e-3,1e-3"], "lr has 3 values for 2 layers"),
    "n-train-too-big": (lambda t: ["train", "--n-train", "5000"], "n_train = 5000 exceeds the 1437 training samples"),
    "epochs-not-int": (lambda t: ["train", "--epochs", "two"], "argument --epochs: invalid int value: 'two'"),
    "dataset-unknown": (lambda t: ["train", "--dataset", "cifar"], "argument --dataset: invalid choice: 'cifar'"),
    "mnist-empty-dir": (lambda t: ["train", "--dataset", "mnist", "--arch", "784-32-10", "--data-dir", _mnist_dir(t, "empty")], "mnist files not found"),
    "mnist-corrupt": (lambda t: ["train", "--dataset", "mnist", "--arch", "784-32-10", "--data-dir", _mnist_dir(t, "wrong")], "SHA-256 checksum mismatch for the mnist train-images-idx3-ubyte file"),
    "mnist-truncated-gz": (lambda t: ["train", "--dataset", "mnist", "--arch", "784-32-10", "--data-dir", _mnist_dir(t, "truncated")], "truncated (not a valid gzip stream)"),
    "mnist-missing-one": (lambda t: ["train", "--dataset", "mnist", "--arch", "784-32-10", "--data-dir", _mnist_dir(t, "partial")], "lacks t10k-labels-idx1-ubyte.gz"),
    "toml-nan": (lambda t: ["train", "--config", _write(t / "c.toml", "[dt]\nmean = nan\n")], "c.toml: [dt] mean must be finite, got nan"),
    "toml-inf-list": (lambda t: ["train", "--config", _write(t / "c.toml", "[train]\nlr = [1e-3, inf]\n")], "[train] lr must be finite"),
    "toml-unknown-key": (lambda t: ["train", "--config", _write(t / "c.toml", "[train]\nlearning_rate = 0.1\n")], "unknown key(s) in [train]: learning_rate"),
    "toml-unknown-section": (lambda t: ["train", "--config", _write(t / "c.toml", "[optim]\nlr = 0.1\n")], "unknown config section(s): optim"),
    "toml-syntax": (lambda t: ["train", "--config", _write(t / "c.toml", "[train\n")], "c.toml: invalid TOML"),
    "toml-missing": (lambda t: ["train", "--config", str(t / "nope.toml")], "config file not found"),
    "out-exists": (lambda t: ["train", "--out", _existing_out(t)], "exists; pass --resume"),
    "no-out": (lambda t: ["train", "--epochs", "1"], "train needs --out"),
    "eval-truncated": (lambda t: ["eval", _run_file(t, "truncated")], "not a readable HDF5 file (truncated or not HDF5)"),
    "eval-foreign": (lambda t: ["eval", _run_file(t, "foreign")], "is not a neuro-hts run file"),
    "eval-not-hdf5": (lambda t: ["eval", _run_file(t, "text")], "not a readable HDF5 file"),
    "eval-missing": (lambda t: ["eval", str(t / "nope.h5")], "run file not found"),
    "plot-negative-std": (lambda t: ["plot-dt", "--out", str(t / "f.png"), "--dt-std", "-1"], "dt std must be >= 0"),
    "plot-format": (lambda t: ["plot-dt", "--out", str(t / "f.jpeg"), "--n", "100"], "figure format 'jpeg' not supported"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_gives_one_line_and_exit_2(tmp_path, run_cli, case):
    make_argv, expected = BAD_INPUT[case]
    argv = make_argv(tmp_path)
    if argv[0] == "train" and "--out" not in argv and case != "no-out":
        argv += ["--out", str(tmp_path / "new.h5")]
    code, out, err = run_cli(argv)
    assert_one_line_error(code, out, err, expected)
    assert err.startswith("neuro-hts")
    if case == "out-exists":
        assert (tmp_path / "new.h5").read_bytes() == b"precious"
    elif argv[0] == "train":
        assert not (tmp_path / "new.h5").exists()  # nothing written for a run that never started
    assert not (tmp_path / "f.png").exists() and not (tmp_path / "f.jpeg").exists()


@pytest.mark.parametrize("case", ["arch-letters", "mnist-empty-dir", "toml-nan", "eval-truncated", "out-exists"])
def test_bad_input_through_python_m(tmp_path, case):
    make_argv, expected = BAD_INPUT[case]
    argv = make_argv(tmp_path)
    if argv[0] == "train" and "--out" not in argv:
        argv += ["--out", str(tmp_path / "new.h5")]
    r = run_subprocess(argv, tmp_path)
    assert_one_line_error(r.returncode, r.stdout, r.stderr, expected)
    assert r.stderr.startswith("neuro-hts: error: ")


# --------------------------------------------------------------------------- divergence


def test_huge_learning_rate_diverges_and_keeps_last_good_checkpoint(tmp_path):
    run = tmp_path / "run.h5"
    # lr 1e308 is inf in float32 (numba backend): the first update makes the weights inf/NaN
    r = run_subprocess(["--no-progress", "train", *SMALL, "--epochs", "3", "--optimizer", "sgd", "--lr", "1e308", "--out", str(run)], tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert "Traceback" not in r.stderr and "Warning" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert re.match(r"neuro-hts: error: training diverged at epoch 1\b.*non-finite .*; the last good checkpoint \(epoch 0\) is kept in ", last), last
    state = load_run(run)
    assert state.status == "diverged" and "diverged at epoch 1" in state.message
    assert state.epochs_completed == 0 and state.network.is_finite()
    r = run_subprocess(["train", "--resume", str(run)], tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "holds a diverged run" in r.stderr


@pytest.mark.parametrize("poison_at,where", [(6, "epoch 2, batch 3: non-finite states"), (8, "epoch 2: non-finite weights")])
def test_divergence_mid_run_keeps_the_epoch_1_checkpoint(tmp_path, run_cli, monkeypatch, poison_at, where):
    args = ["train", *SMALL, "--n-train", "200", "--batch-size", "50", "--backend", "numpy", "--epochs", "3"]  # 4 batches/epoch
    clean = tmp_path / "clean.h5"
    assert run_cli([*args, "--epochs", "1", "--out", str(clean)])[0] == 0

    real_step = FloatEngine.train_step
    calls = {"n": 0}

    def poisoned_step(engine, net, *rest):
        stats = real_step(engine, net, *rest)
        calls["n"] += 1
        if calls["n"] == poison_at:  # epoch 2: a NaN weight after this batch's update
            net.weights[0][0, 0] = np.nan
        return stats

    monkeypatch.setattr(FloatEngine, "train_step", poisoned_step)
    run = tmp_path / "run.h5"
    code, out, err = run_cli([*args, "--out", str(run)])
    assert_one_line_error(code, out, err, f"training diverged at {where}; the last good checkpoint (epoch 1) is kept in {run}")
    state = load_run(run)
    assert state.status == "diverged" and where in state.message
    assert state.epochs_completed == 1 and len(state.history["test_accuracy"]) == 1
    assert state.network.is_finite()
    good = load_run(clean)
    for x, y in zip(state.network.weights + state.network.biases, good.network.weights + good.network.biases, strict=True):
        assert np.array_equal(x, y)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean.h5", "run.h5"]


# --------------------------------------------------------------------------- eval


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "run.h5"
    cfg = Config().replace(
        model={"arch": [64, 32, 10]},
        train={"epochs": 2, "lr": [2e-3], "batch_size": 20, "seed": 1},
        data={"dataset": "digits", "n_train": 600, "n_test": 150},
    )
    training.train(cfg, path)
    return path


def test_eval_prints_accuracy_and_saves_predictions(trained_run, tmp_path, run_cli):
    pred_path = tmp_path / "out" / "pred.npy"
    code, out, err = run_cli(["eval", str(trained_run), "--predictions", str(pred_path)])
    assert code == 0, err
    m = re.search(r"test accuracy: (\d\.\d{4}) \((\d+)/(\d+)\) on digits, T1=60", out)  # the default T1
    assert m, out
    pred = np.load(pred_path)
    labels = load_dataset("digits", n_test=150).y_test
    assert pred.shape == (150,) and pred.dtype == np.int64
    assert pred.min() >= 0 and pred.max() <= 9
    acc = float(np.mean(pred == labels))
    assert float(m.group(1)) == pytest.approx(acc, abs=5e-5)
    assert int(m.group(2)) == int(np.sum(pred == labels)) and int(m.group(3)) == 150
    assert acc > 0.3  # a trained network, not a constant guess (~0.1)
    assert acc == pytest.approx(load_run(trained_run).history["test_accuracy"][-1])
    assert f"predictions: {pred_path}" in out
    assert sorted(p.name for p in pred_path.parent.iterdir()) == ["pred.npy"]


def test_eval_t1_override_and_validation(trained_run, run_cli):
    code, out, _ = run_cli(["eval", str(trained_run), "--t1", "3", "--backend", "numpy"])
    assert code == 0 and "T1=3, backend numpy" in out
    assert_one_line_error(*run_cli(["eval", str(trained_run), "--t1", "0"]), "--t1 must be >= 1")
    assert_one_line_error(*run_cli(["eval", str(trained_run), "--dataset", "mnist", "--data-dir", str(trained_run.parent)]), "mnist files not found")


# --------------------------------------------------------------------------- plot-dt


def test_plot_dt_writes_png_and_prints_table(tmp_path, run_cli):
    fig = tmp_path / "fig.png"
    code, out, err = run_cli(["plot-dt", "--out", str(fig), "--n", "2000"])
    assert code == 0, err
    assert fig.read_bytes()[:8] == PNG_MAGIC
    lines = out.strip().splitlines()
    assert lines[0].split() == ["distribution", "mean", "std", "at", "dt_min", "at", "dt_max"]
    rows = {parts[0]: [float(v) for v in parts[1:]] for parts in (line.split() for line in lines[1:-1])}
    assert list(rows) == [d for d in available_distributions() if d != "lognormal_min"]  # layer-size dependent
    assert rows["constant"] == [0.3, 0.0, 0.0, 0.0]
    assert all(0.001 <= r[0] <= 0.5 and 0 <= r[2] <= 1 and 0 <= r[3] <= 1 for r in rows.values())
    assert rows["levy"][3] > 0.05  # heavy tail piles up at dt_max
    assert lines[-1] == f"figure: {fig}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png"]
