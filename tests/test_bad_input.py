"""Bad and hostile input to every command: one line on stderr, exit code 2, nothing written.

Each case of :data:`CASES` runs ``neuro-hts`` in-process on copies of small fixture files
(a tiny trained run, its Loihi 2 bundle and hand-edited variants of both) in a fresh
directory, and asserts: exit code 2, exactly one stderr line holding a specific message
fragment, no traceback, nothing on stdout, and that no file in that directory was created,
changed or removed. A few cases run a real subprocess (the real stderr, SIGTERM, logging).
The kill -9 Lava case (no orphaned Lava process) is covered by tests/test_lava_hts.py,
``test_deploy_kill_9_on_the_leader_leaves_no_lava_process`` and
``test_lifeline_children_and_grandchildren_die_with_a_killed_parent``; it is not repeated here.
"""

from __future__ import annotations

import hashlib
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from neuro_hts import cli
from neuro_hts.config import Config
from neuro_hts.hardware import load_target
from neuro_hts.hardware.bundle import save_bundle
from neuro_hts.hardware.quantize import quantize_network

REPO = Path(__file__).resolve().parents[1]
TINY = {"model": {"arch": [64, 16, 10]}, "train": {"epochs": 1, "backend": "numpy", "t1": 5, "t2": 2, "batch_size": 25},
        "data": {"n_train": 100, "n_test": 30}}


# --------------------------------------------------------------------------- fixture files


def _edit(src: Path, dst: Path, fn) -> None:
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        fn(f)


def _set(f, name, value):
    data = f[name][()]
    del f[name]
    f.create_dataset(name, data=value(data) if callable(value) else value)


def _poke(name, index, value):
    def fn(f):
        a = f[name][()]
        a[index] = value
        f[name][...] = a
    return fn


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    """name -> path of every fixture file (built once per module)."""
    from neuro_hts.training import train

    d = tmp_path_factory.mktemp("bad_input_fixtures")
    run = d / "run.h5"
    train(Config().replace(**TINY), run)
    files = {"run.h5": run}
    from neuro_hts.runfile import load_run

    state = load_run(run)
    bundle = quantize_network(state.network, load_target("loihi2"), source={"run_config": state.config.to_json()})
    files["bundle.h5"] = save_bundle(d / "bundle.h5", bundle)

    run_edits = {
        "nan.h5": _poke("layers/1/weight", (0, 0), np.nan),
        "infbias.h5": _poke("layers/2/bias", 0, np.inf),
        "dtneg.h5": _poke("layers/1/dt", 0, -0.1),
        "dtbig.h5": _poke("layers/1/dt", 3, 1.5),
        "dtzero.h5": _poke("layers/1/dt", 2, 0.0),
        "badstatus.h5": lambda f: f.attrs.__setitem__("status", "great"),
        "negepochs.h5": lambda f: f.attrs.__setitem__("epochs_completed", np.int64(-1)),
        "longhist.h5": lambda f: _set(f, "history/test_accuracy", np.array([0.1, 0.2, 0.3])),
        "diverged.h5": lambda f: (f.attrs.__setitem__("status", "diverged"),
                                  f.attrs.__setitem__("message", "non-finite states")),
    }
    for name, fn in run_edits.items():
        _edit(run, d / name, fn)
        files[name] = d / name
    bundle_edits = {
        "b_mant.h5": _poke("layers/1/weight_mantissa", (0, 0), 10000),
        "b_odd.h5": _poke("layers/1/weight_mantissa", (0, 1), 3),
        "b_exp.h5": lambda f: f["layers/1"].attrs.__setitem__("weight_exponent", np.int64(99)),
        "b_decay0.h5": _poke("layers/1/decay", 0, 0),
        "b_decay5000.h5": _poke("layers/1/decay", 0, 5000),
        "b_bias.h5": _poke("layers/1/bias", 0, 2**40),
        "b_floatbias.h5": lambda f: _set(f, "layers/1/bias", lambda a: a.astype(np.float64) + 0.5),
        "b_form.h5": lambda f: f["layers"].attrs.__setitem__("form", "hopfield"),
        "b_dt.h5": _poke("layers/2/dt", 0, np.nan),
        "b_frac.h5": lambda f: f["layers"].attrs.__setitem__("activation_frac_bits", np.int64(3)),
    }
    for name, fn in bundle_edits.items():
        _edit(files["bundle.h5"], d / name, fn)
        files[name] = d / name
    (d / "text.txt").write_text("hello, not HDF5\n")
    files["text.txt"] = d / "text.txt"
    (d / "trunc.h5").write_bytes(run.read_bytes()[:200])
    files["trunc.h5"] = d / "trunc.h5"
    shutil.copy(run, d / "binary.toml")
    files["binary.toml"] = d / "binary.toml"
    (d / "latin1.toml").write_bytes("[model]\nform = \"l\xe9aky\"\n".encode("latin-1"))
    files["latin1.toml"] = d / "latin1.toml"
    (d / "cfg.toml").write_text('[model]\narch = [64, 16, 10]\n[train]\nbackend = "numpy"\n')
    files["cfg.toml"] = d / "cfg.toml"
    (d / "exists.h5").write_bytes(b"precious")
    files["exists.h5"] = d / "exists.h5"
    (d / "exists.png").write_bytes(b"precious")
    files["exists.png"] = d / "exists.png"
    return files


def _snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): (p.stat().st_size, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(d.rglob("*")) if p.is_file()} | {str(p.relative_to(d)) + "/": 0
                                                              for p in d.rglob("*") if p.is_dir()}


def _stage(fixtures, tmp_path: Path, names) -> Path:
    for n in names:
        shutil.copy2(fixtures[n], tmp_path / n)
    (tmp_path / "empty").mkdir()
    return tmp_path


# --------------------------------------------------------------------------- the cases

CL_DIGITS = str(REPO / "models" / "continual_digits.toml")

#: id -> (argv with {d} for the case's directory, fixture files it needs, expected stderr fragment)
CASES = {
    # ---- train: flags and config files
    "train-arch-malformed": ("train --arch 64-x-10 --out {d}/o.h5", [], "malformed --arch"),
    "train-arch-huge": ("train --arch 100000-100000-10 --out {d}/o.h5", [], "allows at most"),
    "train-arch-zero": ("train --arch 64-0-10 --out {d}/o.h5", [], "all positive"),
    "train-config-binary-run": ("train --config {d}/run.h5 --out {d}/o.h5", ["run.h5"], "not a text TOML file"),
    "train-config-binary-toml": ("train --config {d}/binary.toml --out {d}/o.h5", ["binary.toml"], "not a text TOML file"),
    "train-config-latin1": ("train --config {d}/latin1.toml --out {d}/o.h5", ["latin1.toml"], "not UTF-8"),
    "train-config-missing": ("train --config {d}/nope.toml --out {d}/o.h5", [], "config file not found"),
    "train-config-directory": ("train --config {d}/empty --out {d}/o.h5", [], "is a directory"),
    "train-target-binary": ("train --arith fixed --target {d}/binary.toml --out {d}/o.h5", ["binary.toml"],
                            "not a text TOML file"),
    "train-target-without-fixed": ("train --target loihi2 --out {d}/o.h5", [], "used only with arith = 'fixed'"),
    "train-fixed-without-target": ("train --arith fixed --out {d}/o.h5", [], "needs a hardware target"),
    "train-momentum-with-adam": ("train --config {d}/cfg.toml --momentum 0.9 --out {d}/o.h5", ["cfg.toml"], "Adam ignores"),
    "train-dt-law-degenerate": ("train --config {d}/cfg.toml --dt-mean 0.9 --out {d}/o.h5", ["cfg.toml"],
                                "the same dt 0.5"),
    "train-dt-law-unknown": ("train --dt-dist nope --out {d}/o.h5", [], "unknown dt distribution"),
    "train-dt-min-zero": ("train --dt-min 0 --out {d}/o.h5", [], "dt range must satisfy"),
    "train-dt-max-above-one": ("train --dt-max 1.5 --out {d}/o.h5", [], "dt range must satisfy"),
    "train-dt-std-negative": ("train --dt-std -1 --out {d}/o.h5", [], "dt std must be >= 0"),
    "train-dt-mean-nan": ("train --dt-mean nan --out {d}/o.h5", [], "must be finite"),
    "train-dt-layers-zero": ("train --dt-layers 0 --out {d}/o.h5", [], "layer indices start at 1"),
    "train-batch-larger-than-data": ("train --config {d}/cfg.toml --n-train 40 --batch-size 50 --out {d}/o.h5",
                                     ["cfg.toml"], "larger than the 40 training samples"),
    "train-epochs-negative": ("train --epochs -1 --out {d}/o.h5", [], "epochs >= 0"),
    "train-t1-zero": ("train --t1 0 --out {d}/o.h5", [], "t1 >= 1"),
    "train-lr-malformed": ("train --lr fast --out {d}/o.h5", [], "malformed --lr"),
    "train-lr-negative": ("train --lr -1 --out {d}/o.h5", [], "lr must be non-negative"),
    "train-n-train-zero": ("train --n-train 0 --out {d}/o.h5", [], "n_train must be a positive integer"),
    "train-beta-zero": ("train --beta 0 --out {d}/o.h5", [], "beta must be > 0"),
    "train-no-out": ("train --arch 64-16-10", [], "train needs --out"),
    "train-out-exists": ("train --config {d}/cfg.toml --out {d}/exists.h5", ["cfg.toml", "exists.h5"], "exists; pass --resume"),
    "train-out-is-config": ("train --config {d}/cfg.toml --out {d}/cfg.toml --force", ["cfg.toml"], "is the input"),
    "train-mnist-data-missing": ("train --dataset mnist --arch 784-16-10 --data-dir {d}/empty --out {d}/o.h5", [],
                                 "files not found"),
    "train-threads-zero": ("train --threads 0 --arch 64-16-10 --out {d}/o.h5", [], "--threads must be >= 1"),
    "train-unknown-flag": ("train --frobnicate 3", [], "unrecognized arguments"),
    "train-resume-missing": ("train --resume {d}/nope.h5", [], "run file not found"),
    "train-resume-changes-arch": ("train --resume {d}/run.h5 --arch 64-8-10", ["run.h5"], "--resume uses the run's stored config"),
    "train-resume-other-out": ("train --resume {d}/run.h5 --out {d}/other.h5", ["run.h5"], "do not pass a different --out"),
    "train-resume-diverged": ("train --resume {d}/diverged.h5 --epochs 3", ["diverged.h5"], "holds a diverged run"),
    "train-resume-fewer-epochs": ("train --resume {d}/run.h5 --epochs 0", ["run.h5"], "cannot resume it"),
    "train-resume-nan": ("train --resume {d}/nan.h5 --epochs 3", ["nan.h5"], "NaN or infinite"),
    "train-resume-print-config": ("train --resume {d}/run.h5 --print-config", ["run.h5"], "describe a new run"),
    # ---- eval: run-file values are validated, not only shapes
    "eval-nan-weights": ("eval {d}/nan.h5", ["nan.h5"], "layer 1 weight holds 1 NaN or infinite"),
    "eval-inf-bias": ("eval {d}/infbias.h5", ["infbias.h5"], "layer 2 bias holds 1 NaN or infinite"),
    "eval-dt-negative": ("eval {d}/dtneg.h5", ["dtneg.h5"], "lies outside (0, 1]"),
    "eval-dt-above-one": ("eval {d}/dtbig.h5", ["dtbig.h5"], "dt[3] = 1.5 lies outside (0, 1]"),
    "eval-dt-zero": ("eval {d}/dtzero.h5", ["dtzero.h5"], "lies outside (0, 1]"),
    "eval-bad-status": ("eval {d}/badstatus.h5", ["badstatus.h5"], "status 'great' is not one of"),
    "eval-negative-epochs": ("eval {d}/negepochs.h5", ["negepochs.h5"], "is negative"),
    "eval-history-too-long": ("eval {d}/longhist.h5", ["longhist.h5"], "entries for 1 completed epochs"),
    "eval-text-file": ("eval {d}/text.txt", ["text.txt"], "not a readable HDF5 file"),
    "eval-truncated": ("eval {d}/trunc.h5", ["trunc.h5"], "not a readable HDF5 file"),
    "eval-bundle": ("eval {d}/bundle.h5", ["bundle.h5"], "is not a neuro-hts run file"),
    "eval-missing": ("eval {d}/nope.h5", [], "run file not found"),
    "eval-t1-zero": ("eval {d}/run.h5 --t1 0", ["run.h5"], "--t1 must be >= 1"),
    "eval-n-test-zero": ("eval {d}/run.h5 --n-test 0", ["run.h5"], "--n-test must be >= 1"),
    "eval-n-test-too-many": ("eval {d}/run.h5 --n-test 100000", ["run.h5"], "n_test"),
    "eval-predictions-onto-run": ("eval {d}/run.h5 --predictions {d}/run.h5", ["run.h5"], "is the input"),
    # ---- deploy: a bundle is checked against its target when loaded
    "deploy-mantissa-10000": ("deploy {d}/b_mant.h5 --backend numba", ["b_mant.h5"], "weight_range: layer 1"),
    "deploy-odd-mantissa": ("deploy {d}/b_odd.h5 --backend numba", ["b_odd.h5"], "weight_even: layer 1"),
    "deploy-exponent-99": ("deploy {d}/b_exp.h5 --backend lava", ["b_exp.h5"], "weight exponent 99 outside [-8, 7]"),
    "deploy-decay-0": ("deploy {d}/b_decay0.h5 --backend numba", ["b_decay0.h5"], "decay_range: layer 1"),
    "deploy-decay-5000": ("deploy {d}/b_decay5000.h5 --backend lava", ["b_decay5000.h5"], "first [0] = 5000"),
    "deploy-bias-2-40": ("deploy {d}/b_bias.h5 --backend numba", ["b_bias.h5"], "bias_range: layer 1"),
    "deploy-float-bias": ("deploy {d}/b_floatbias.h5 --backend numba", ["b_floatbias.h5"], "bias must be an integer array"),
    "deploy-unknown-form": ("deploy {d}/b_form.h5 --backend numba", ["b_form.h5"], "form 'hopfield' has no fixed-point"),
    "deploy-dt-nan": ("deploy {d}/b_dt.h5 --backend numba", ["b_dt.h5"], "dt_range: layer 2"),
    "deploy-frac-bits": ("deploy {d}/b_frac.h5 --backend numba", ["b_frac.h5"], "activation_frac_bits 3"),
    "deploy-run-as-fixed": ("deploy {d}/run.h5 --backend numba", ["run.h5"], "needs a bundle"),
    "deploy-nan-run-float": ("deploy {d}/nan.h5 --backend numba --arith float", ["nan.h5"], "NaN or infinite"),
    "deploy-text-file": ("deploy {d}/text.txt --backend numba", ["text.txt"], "not a readable HDF5 file"),
    "deploy-n-samples-zero": ("deploy {d}/bundle.h5 --backend numba --n-samples 0", ["bundle.h5"], "n_samples must be >= 1"),
    "deploy-steps-zero": ("deploy {d}/bundle.h5 --backend numba --steps 0", ["bundle.h5"], "steps must be an integer >= 1"),
    "deploy-chunk-zero": ("deploy {d}/bundle.h5 --chunk 0", ["bundle.h5"], "--chunk must be >= 1"),
    "deploy-backend-unknown": ("deploy {d}/bundle.h5 --backend loihi", ["bundle.h5"], "invalid choice"),
    # ---- quantize
    "quantize-out-is-run": ("quantize {d}/run.h5 --target loihi2 --out {d}/run.h5 --force", ["run.h5"], "is the input"),
    "quantize-out-exists": ("quantize {d}/run.h5 --target loihi2 --out {d}/exists.h5", ["run.h5", "exists.h5"],
                            "exists; pass --force"),
    "quantize-target-unknown": ("quantize {d}/run.h5 --target loihi9 --out {d}/o.h5", ["run.h5"], "loihi9"),
    "quantize-target-binary": ("quantize {d}/run.h5 --target {d}/binary.toml --out {d}/o.h5", ["run.h5", "binary.toml"],
                               "not a text TOML file"),
    "quantize-nan-run": ("quantize {d}/nan.h5 --target loihi2 --out {d}/o.h5", ["nan.h5"], "NaN or infinite"),
    "quantize-binary-spikes": ("quantize {d}/run.h5 --target loihi1 --out {d}/o.h5", ["run.h5"], "graded_spikes"),
    # ---- show / plot / export
    "show-nan-run": ("show {d}/nan.h5", ["nan.h5"], "NaN or infinite"),
    "show-missing": ("show {d}/nope.h5", [], "run file not found"),
    "plot-out-is-run": ("plot {d}/run.h5 --out {d}/run.h5 --force", ["run.h5"], "is the input"),
    "plot-out-exists": ("plot {d}/run.h5 --out {d}/exists.png", ["run.h5", "exists.png"], "exists; pass --force"),
    "plot-format": ("plot {d}/run.h5 --out {d}/fig.txt", ["run.h5"], "figure format 'txt' not supported"),
    "plot-dt-run": ("plot {d}/dtbig.h5", ["dtbig.h5"], "lies outside (0, 1]"),
    "export-out-is-run": ("export {d}/run.h5 --out {d}/run.h5 --force", ["run.h5"], "is the input"),
    "export-nan-run": ("export {d}/nan.h5", ["nan.h5"], "NaN or infinite"),
    "export-format": ("export {d}/run.h5 --format csv", ["run.h5"], "invalid choice"),
    "plot-dt-n-zero": ("plot-dt --out {d}/dt.png --n 0", [], "--n must be >= 1"),
    "plot-dt-range": ("plot-dt --out {d}/dt.png --dt-min 0", [], "dt range must satisfy"),
    # ---- compare / check-updates
    "compare-nan-run": ("compare {d}/nan.h5 --target loihi2 --out-dir {d}/cmp", ["nan.h5"], "NaN or infinite"),
    "compare-weight-bits": ("compare {d}/run.h5 --target loihi2 --weight-bits a,b --out-dir {d}/cmp", ["run.h5"],
                            "malformed --weight-bits"),
    "check-updates-nan-run": ("check-updates {d}/nan.h5 --target loihi2", ["nan.h5"], "NaN or infinite"),
    "check-updates-target-binary": ("check-updates {d}/run.h5 --target {d}/binary.toml", ["run.h5", "binary.toml"],
                                    "not a text TOML file"),
    # ---- sweep / report
    "sweep-config-binary": ("sweep --config {d}/binary.toml --dt-dists constant --out {d}/sw", ["binary.toml"],
                            "not a text TOML file"),
    "sweep-dt-dist-unknown": ("sweep --config {d}/cfg.toml --dt-dists nope --out {d}/sw", ["cfg.toml"],
                              "unknown dt distribution"),
    "sweep-seeds": ("sweep --config {d}/cfg.toml --dt-dists constant --seeds x --out {d}/sw", ["cfg.toml"], "--seeds must"),
    "sweep-set": ("sweep --config {d}/cfg.toml --dt-dists constant --set train.nope=1 --out {d}/sw", ["cfg.toml"],
                  "unknown config key"),
    "report-not-a-sweep": ("report {d}/empty --out {d}/rep", [], "not a sweep directory"),
    "resolve-seeds-not-a-sweep": ("resolve-seeds {d}/empty", [], "not a sweep directory"),
    "teacher-config-missing": ("teacher --config {d}/nope.toml --out {d}/t.h5", [], "config file not found"),
    "train-distill-teacher-is-a-toml": ("train --distill {d}/cfg.toml --out {d}/o.h5", ["cfg.toml"], "not a readable HDF5"),
    "archive-not-a-sweep": ("archive {d}/empty {d}/a.json", [], "not a sweep directory"),
    "archive-onto-a-run-file": ("archive {d}/empty {d}/run.h5", ["run.h5"], "a sweep archive is a .json file"),
    "restore-not-an-archive": ("restore {d}/cfg.toml {d}/sw", ["cfg.toml"], "not a readable sweep archive"),
    # ---- continual
    "continual-config-binary": ("continual --config {d}/binary.toml --method src --out {d}/cl", ["binary.toml"],
                                "not a text TOML file"),
    "continual-config-missing": ("continual --config {d}/nope.toml --method src --out {d}/cl", [], "config file not found"),
    "continual-method": ("continual --config " + CL_DIGITS + " --method nope --out {d}/cl", [], "invalid choice"),
    "continual-seeds": ("continual --config " + CL_DIGITS + " --seeds x --out {d}/cl", [], "--seeds must"),
    "continual-out-is-file": ("continual --config " + CL_DIGITS + " --out {d}/exists.h5", ["exists.h5"],
                              "continual writes a directory"),
    "continual-epochs-zero": ("continual --config " + CL_DIGITS + " --epochs 0 --out {d}/cl", [],
                              "epochs must be a positive integer"),
    # ---- the parser
    "unknown-command": ("frobnicate", [], "invalid choice"),
    "threads-negative-top": ("--threads -2 show {d}/run.h5", ["run.h5"], "--threads must be >= 1"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, fixtures, tmp_path, capsys):
    argv_text, needs, fragment = CASES[case]
    d = _stage(fixtures, tmp_path, needs)
    before = _snapshot(d)
    argv = [a.format(d=d) for a in argv_text.split()]
    try:
        code = cli.main(["--no-progress", *argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2, (code, err)
    assert "Traceback" not in err
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
    assert fragment in err, err
    assert out == ""
    assert _snapshot(d) == before, "a file was written, changed or removed"


def test_there_are_at_least_60_cases_covering_every_command():
    assert len(CASES) >= 60
    commands = {argv.split()[0] if not argv.startswith("--") else argv.split()[2] for argv, _, _ in CASES.values()}
    parser_commands = set(cli._COMMANDS)
    assert parser_commands <= commands | {"list"}, parser_commands - commands  # `list` takes no input


# --------------------------------------------------------------------------- outside the table


def test_a_registered_dt_law_returning_nan_or_negative_values_is_refused(fixtures, tmp_path, capsys):
    from neuro_hts.distributions import _REGISTRY, register_distribution

    register_distribution("broken_nan_law", lambda rng, mu, sigma, size: np.where(np.arange(size) % 2, np.nan, -mu))
    try:
        d = _stage(fixtures, tmp_path, ["cfg.toml"])
        before = _snapshot(d)
        code = cli.main(["--no-progress", "train", "--config", str(d / "cfg.toml"), "--dt-dist", "broken_nan_law",
                         "--out", str(d / "o.h5")])
        out, err = capsys.readouterr()
        assert code == 2 and err.count("\n") == 1
        assert "dt law 'broken_nan_law' returned 16 of 16 values that are NaN, infinite or <= 0" in err
        assert _snapshot(d) == before
    finally:
        _REGISTRY._entries.pop("broken_nan_law", None)


def test_a_second_sweep_on_a_locked_directory_is_refused(fixtures, tmp_path, capsys):
    from neuro_hts.sweep import sweep_lock

    d = _stage(fixtures, tmp_path, ["cfg.toml"])
    (d / "sw").mkdir()
    with sweep_lock(d / "sw"):
        before = _snapshot(d)
        code = cli.main(["--no-progress", "sweep", "--config", str(d / "cfg.toml"), "--dt-dists", "constant",
                         "--seeds", "0", "--epochs", "0", "--out", str(d / "sw")])
        out, err = capsys.readouterr()
        assert _snapshot(d) == before
    assert code == 2 and err.count("\n") == 1
    assert "another sweep (pid " in err and "is running on" in err


def test_train_api_refuses_to_overwrite_unless_asked(fixtures, tmp_path):
    from neuro_hts.errors import ConfigError
    from neuro_hts.training import train

    path = tmp_path / "precious.h5"
    path.write_bytes(b"precious")
    with pytest.raises(ConfigError, match="exists; resume it"):
        train(Config().replace(**TINY), path)
    assert path.read_bytes() == b"precious"
    state = train(Config().replace(**{**TINY, "train": {**TINY["train"], "epochs": 0}}), path, overwrite=True)
    assert state.status == "complete" and path.read_bytes()[:4] == b"\x89HDF"


def test_degenerate_but_meaningful_settings_warn_with_the_clipped_fraction(caplog):
    from neuro_hts.network import rng_streams, sample_network_dts

    cfg = Config().replace(model={"arch": [64, 400, 10]}, dt={"dist": "normal", "mean": 0.5, "std": 0.1})
    with caplog.at_level("WARNING", logger="neuro_hts.network"):
        dts = sample_network_dts(cfg, cfg.model.arch, rng_streams(0, "dt"))
    frac = float(np.mean(dts[0] == 0.5))
    assert 0.4 < frac < 0.6  # half of N(0.5, 0.1) lies above dt_max 0.5
    assert any(f"{100 * frac:.1f}% of layer 1's time steps sit at a bound" in r.getMessage() for r in caplog.records)


def test_reproduce_script_keeps_smoke_runs_out_of_results(tmp_path, capsys):
    from _scripts import load_script

    script = load_script("reproduce_hts", "reproduce_hts_bad")
    before = _snapshot(REPO / "results")
    code = script.main(["--data-root", str(tmp_path), "--out-root", str(REPO), "--epochs", "1", "--only", "mnist_784-512-10"])
    err = capsys.readouterr().err
    assert code == 2 and "would overwrite the committed tables" in err and err.count("\n") == 1
    assert _snapshot(REPO / "results") == before
    args = script.parse_args(["--data-root", str(tmp_path), "--epochs", "1"])
    assert args.out_root is None  # resolved to runs/smoke in main
    assert script.main(["--data-root", str(tmp_path), "--epochs", "1", "--dry-run", "--only", "mnist_784-512-10"]) == 0
    out = capsys.readouterr().out
    assert "runs/smoke/results/mnist_784-512-10" in out and " results/" not in out


def test_resume_accepts_a_new_data_dir(fixtures, tmp_path, capsys):
    d = _stage(fixtures, tmp_path, ["run.h5"])
    code = cli.main(["--no-progress", "train", "--resume", str(d / "run.h5"), "--epochs", "1", "--data-dir", str(d / "empty")])
    out, err = capsys.readouterr()
    assert code == 0, err  # digits ignores the directory; the flag is no longer refused
    assert "run status: complete, 1/1 epochs" in out


def test_recorded_data_dir_falls_back_to_the_environment_once_the_files_moved(monkeypatch, tmp_path):
    from neuro_hts import data as data_mod
    from neuro_hts.errors import DataError

    calls = []

    def fake_load(name, data_dir=None, **kw):
        calls.append(data_dir)
        if data_dir == "/old/place":
            raise DataError(f"{name} files not found (searched {data_dir})")
        return f"found in {data_dir or 'the environment'}"

    monkeypatch.setattr(data_mod, "load_dataset", fake_load)
    assert data_mod.load_recorded_dataset("mnist", "/old/place", None) == "found in the environment"
    assert calls == ["/old/place", None]
    calls.clear()
    assert data_mod.load_recorded_dataset("mnist", "/old/place", "/new") == "found in /new"
    assert calls == ["/new"]  # an explicit --data-dir wins at once


# --------------------------------------------------------------------------- real processes


def _run(argv, cwd, timeout=120, **kw):
    return subprocess.run([sys.executable, "-m", "neuro_hts", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, **kw)


def test_subprocess_binary_config_is_one_line_without_traceback(fixtures, tmp_path):
    d = _stage(fixtures, tmp_path, ["run.h5"])
    r = _run(["train", "--config", str(d / "run.h5"), "--out", str(d / "o.h5")], d)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "not a text TOML file" in r.stderr and "Traceback" not in r.stderr
    assert not (d / "o.h5").exists()


def test_subprocess_version_bare_call_and_flags_after_the_command(fixtures, tmp_path):
    d = _stage(fixtures, tmp_path, ["run.h5"])
    r = _run(["--version"], d)
    assert r.returncode == 0 and r.stdout.startswith("neuro-hts ")
    r = _run([], d)
    assert r.returncode == 2 and "usage: neuro-hts" in r.stdout and "show" in r.stdout
    r = _run(["show", str(d / "run.h5"), "-v", "--no-progress", "--threads", "1"], d)
    assert r.returncode == 0, r.stderr
    assert "run status: complete, 1/1 epochs" in r.stdout and "final test accuracy" in r.stdout


def test_subprocess_sigterm_prints_a_message_and_keeps_the_checkpoint(tmp_path):
    # far more epochs than it can finish: under heavy load the run must still be training when the
    # signal arrives (with 200 epochs, about 20 s, a descheduled test process once saw it exit 0)
    out = tmp_path / "t.h5"
    p = subprocess.Popen([sys.executable, "-m", "neuro_hts", "train", "--dataset", "digits", "--arch", "64-16-10",
                          "--backend", "numpy", "--epochs", "20000", "--t1", "5", "--t2", "2", "--out", str(out)],
                         cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 90
    while not out.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert out.exists()
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143
    assert "neuro-hts: terminated (SIGTERM); the last epoch checkpoint is kept" in err
    assert "Traceback" not in err and "\r" not in err  # no tqdm carriage returns when stderr is a file
    assert not list(tmp_path.glob(".t.h5.*"))  # no stray temporary file


# --------------------------------------------------------------------------- status is printed


def test_eval_and_show_say_a_run_diverged(fixtures, tmp_path, capsys):
    d = _stage(fixtures, tmp_path, ["diverged.h5"])
    assert cli.main(["--no-progress", "eval", str(d / "diverged.h5")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == ("run status: DIVERGED after 1/1 epochs (non-finite states); "
                                   "these are the weights of the last good epoch")
    assert "test accuracy:" in out
    assert cli.main(["--no-progress", "show", str(d / "diverged.h5")]) == 0
    assert "run status: DIVERGED" in capsys.readouterr().out


def test_deploy_prints_the_source_run_status_and_excludes_the_jit_compile(fixtures, tmp_path, capsys):
    d = _stage(fixtures, tmp_path, ["diverged.h5"])
    assert cli.main(["--no-progress", "quantize", str(d / "diverged.h5"), "--target", "loihi2", "--out", str(d / "b.h5")]) == 0
    capsys.readouterr()
    with h5py.File(d / "b.h5", "r") as f:
        assert f.attrs["run_status"] == "diverged" and f.attrs["run_message"] == "non-finite states"
    assert cli.main(["--no-progress", "deploy", str(d / "b.h5"), "--backend", "numba", "--n-samples", "20"]) == 0
    out = capsys.readouterr().out
    assert "source run status: DIVERGED after 1 epochs (non-finite states)" in out
    assert "warm-up / JIT compile, not counted" in out


def test_quantize_refuses_nothing_deployable_and_a_hand_edited_bundle_cannot_be_loaded_silently(fixtures):
    from neuro_hts.errors import RunFileError
    from neuro_hts.hardware.bundle import load_bundle

    with pytest.raises(RunFileError) as exc:
        load_bundle(fixtures["b_mant.h5"])
    assert "weight mantissas outside [-256, 254] of loihi2: 1 value(s), first [0] = 10000" in str(exc.value)
    assert load_bundle(fixtures["b_mant.h5"], check=False).layers[0].weight_mantissa[0, 0] == 10000


def test_check_updates_explains_undefined_cosines():
    from neuro_hts.hardware.fixed_learning import UpdateComparison, format_update_table

    rows = [UpdateComparison("W1", "nearest", float("nan"), 1.0, 1.0, 0.0, 2**-8, 0.2),
            UpdateComparison("b1", "nearest", float("nan"), float("nan"), float("nan"), float("nan"), 2**-12, 0.0)]
    lines = format_update_table(rows)
    assert lines[-3].startswith("note: every cosine is undefined (NaN)")
    assert "every fixed-point update rounded to 0 (nearest W1): the largest float update is 0.2 grid steps" in lines[-2]
    assert "the float update itself is 0 (b1)" in lines[-1]


def test_export_npz_holds_every_array_and_a_json_header(fixtures, tmp_path, capsys):
    import json

    from neuro_hts.runfile import load_run

    d = _stage(fixtures, tmp_path, ["run.h5"])
    assert cli.main(["--no-progress", "export", str(d / "run.h5")]) == 0
    z = np.load(d / "run.npz")  # no pickle needed
    header = json.loads(str(z["header"]))
    state = load_run(d / "run.h5")
    assert header["format"] == "neuro-hts-export" and header["arch"] == [64, 16, 10] and header["status"] == "complete"
    for i, w in enumerate(state.network.weights, start=1):
        assert np.array_equal(z[f"weight_{i}"], w) and np.array_equal(z[f"dt_{i}"], state.network.dts[i - 1])
    assert header["arrays"]["weight_1"] == [16, 64]


def test_print_config_is_loadable_toml_of_the_effective_config(tmp_path, capsys):
    from neuro_hts.config import load_config

    assert cli.main(["train", "--arch", "64-16-10", "--dt-mean", "0.2", "--print-config"]) == 0
    text = capsys.readouterr().out
    (tmp_path / "eff.toml").write_text(text)
    assert load_config(tmp_path / "eff.toml") == Config().replace(model={"arch": [64, 16, 10]}, dt={"mean": 0.2})


def test_dry_run_checks_and_writes_nothing(fixtures, tmp_path, capsys):
    d = _stage(fixtures, tmp_path, ["cfg.toml"])
    before = _snapshot(d)
    assert cli.main(["--no-progress", "train", "--config", str(d / "cfg.toml"), "--dry-run", "--out", str(d / "o.h5")]) == 0
    out = capsys.readouterr().out
    assert "would train 64-16-10 (1,210 parameters" in out and "1437 training and 360 test samples" in out
    assert out.rstrip().endswith(f"dry run: nothing written (would write {d / 'o.h5'})")
    assert _snapshot(d) == before
