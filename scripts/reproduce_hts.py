"""Every grid behind RESULTS.md in one command: the sweeps, then their reports.

Each grid is one ``neuro-hts sweep ... --report results/<name>`` (see RESULTS.md for
what each one answers). Finished cells are skipped and unfinished ones resume, so the
command can be stopped (Ctrl-C) and started again at any time; ``--only`` picks grids.

Grids (name: config; laws x seeds x settings; dataset; runs; time on a 2-core machine):

* ``mnist_784-512-10``: 6 laws x 5 seeds; MNIST; 30 runs; about 1.6 h
* ``fashionmnist_784-512-10``: 6 laws x 5 seeds; Fashion-MNIST; 30 runs; about 1.5 h
* ``stress_mnist``: 6 laws x 3 seeds x T1 {20,30,60,100} x beta {0.05,0.1,0.2,0.5} x
  {one-sided, symmetric}; MNIST subset; 576 runs; about 45 min
* ``stress_mnist_dtmean``: 6 laws x 3 seeds x mean dt {0.1..0.5}, one-sided; 90 runs; 5 min
* ``stress_mnist_dtmean_sym``: the same with symmetric nudging; 90 runs; 6 min
* ``mnist_784-256-256-10`` and ``fashionmnist_784-256-256-10``: 6 laws x 5 seeds; 30 runs
  each; about 1.6 h each with ``--workers 2``
* ``family_mnist_ep``, ``family_mnist_ep_adapt``, ``family_mnist_chl``,
  ``family_mnist_chl_adapt`` (RESULTS.md section 6): EP, EP + adjusted adaptation, CHL,
  CHL + adaptation; constant and lognormal dt x 3 seeds; MNIST 784-512-10; 6 runs each;
  ``scripts/family_figure.py`` draws them together
* ``stress_adapt`` (RESULTS.md section 6b): the stressed setup of ``stress_mnist``, one-sided,
  constant and lognormal dt x 3 seeds x T1 {20,30} x beta {0.1,0.2} x adaptation K {0,20};
  48 runs; about 35 min with ``--workers 2``
* ``lr_mnist``, ``lr_fashionmnist`` (issue 16, the learning-rate axis): 784-512-10 on the full
  data, constant Adam rate {5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2} x {one-sided, symmetric} x
  6 laws x 5 seeds, 3 epochs; 360 runs each, about 50 s a run (about 2.5 h with
  ``--workers 2``)
* ``lr_mnist_placement``: the same rates, one-sided, crossed with the nudge's placement
  (``model.nudge`` inside / outside sigma) and the heterogeneous output layer
  (``dt.layers`` hidden / all); constant and lognormal dt x 5 seeds; 240 runs
* ``lr_mnist_slowest``: the slow-neuron effect taken out: constant, lognormal and
  ``lognormal_min`` (constant at the slowest dt lognormal draws for the same seed) x the
  rates x {one-sided, symmetric}, 5 seeds; 180 runs, of which the constant and lognormal ones are
  ``lr_mnist``'s (the same cell names; the grid's archive holds the ones run so far)
* ``lr_mnist_settled``: every law's free phase run to a residual of 1e-5 (``train.t1_tol``,
  at most 400 steps) so that none is compared unsettled; 6 laws x the rates, one-sided,
  5 seeds; 180 runs
* ``family_hts_digits_cnn``, ``family_hts_digits_dendritic`` (issue 16 item 5, the small case):
  constant vs lognormal dt x 5 seeds in the CNN of ``models/digits_cnn.toml`` and the
  dendritic net of ``models/digits_dendritic.toml`` (mean dt 0.5, std 0.2); embedded
  digits, no data files; 10 runs each, minutes
* ``mnist_cnn``, ``fashionmnist_cnn`` (issue 11 item 5, issue 16 item 5): the CNNs of
  ``models/mnist_cnn.toml`` and ``models/fashionmnist_cnn.toml``, constant vs lognormal dt
  (per-unit, conv layers) x 3 seeds; 6 runs each, about 90 min (MNIST, 15 epochs) and 60
  min (Fashion-MNIST, 10 epochs) a run on one core of a 2-vCPU AMD EPYC (RESULTS.md section 12)

Usage::

    .venv/bin/python scripts/reproduce_hts.py --data-root DIR [--only NAME,NAME]
        [--out-root .] [--workers 2] [--engine dask --scheduler ADDRESS]
        [--seeds 0-1 --epochs 1 --n-train 500 --n-test 500]   # a quick smoke run
        [--dry-run]                                            # print the commands only

``DIR`` holds ``mnist/`` and ``fashion-mnist/`` with the original idx ``.gz`` files.
Sweeps go to ``OUT_ROOT/sweeps/<name>``, reports to ``OUT_ROOT/results/<name>``
(``OUT_ROOT``: ``.`` for the full grids, ``runs/smoke`` for a shortened smoke run, which
is refused outright where it would replace the repository's committed ``results/``).
Every finished cell is also kept in ``results/<name>/cells.json`` (``neuro-hts archive``:
status and history, no weights), which is restored into ``sweeps/<name>`` before the grid
runs (``neuro-hts restore``), so a grid too long for one machine continues on the next
one from the committed archive and trains only the cells still missing. With
``--workers N`` (N > 1) each worker is limited to one BLAS thread. Exit code: 0 when every
grid finished, 1 when a cell failed, 2 on bad input, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAWS = "constant,uniform,normal,lognormal,gamma,cauchy"
STRESS_SETS = ("train.t1=20,30,60,100", "train.beta=0.05,0.1,0.2,0.5", "train.nudging=one-sided,symmetric")
DTMEAN = "dt.mean=0.1,0.2,0.3,0.4,0.5"

FAMILY_LAWS = "constant,lognormal"
STRESS_ADAPT_SETS = ("train.t1=20,30", "train.beta=0.1,0.2", "adapt.steps=0,20")
#: each grid's archive (neuro-hts archive: every finished cell's status and history, no
#: weights) in its results directory; restored into the sweep directory before the grid runs,
#: so a grid continues on another machine where the last one stopped
ARCHIVE = "cells.json"
LR_AXIS = "train.lr=0.0005,0.001,0.002,0.005,0.01,0.02"

#: name -> (config relative to the repository, dataset directory name (None: the embedded digits),
#: seeds, --set values, dt laws)
GRIDS: dict[str, tuple[str, str, str, tuple[str, ...], str]] = {
    "mnist_784-512-10": ("models/repro/mnist_784-512-10.toml", "mnist", "0-4", (), LAWS),
    "fashionmnist_784-512-10": ("models/repro/fashionmnist_784-512-10.toml", "fashion-mnist", "0-4", (), LAWS),
    "stress_mnist": ("models/repro/stress_mnist.toml", "mnist", "0-2", STRESS_SETS, LAWS),
    "stress_mnist_dtmean": ("models/repro/stress_mnist.toml", "mnist", "0-2", (DTMEAN,), LAWS),
    "stress_mnist_dtmean_sym": ("models/repro/stress_mnist.toml", "mnist", "0-2", ("train.nudging=symmetric", DTMEAN), LAWS),
    "mnist_784-256-256-10": ("models/repro/mnist_784-256-256-10.toml", "mnist", "0-4", (), LAWS),
    "fashionmnist_784-256-256-10": ("models/repro/fashionmnist_784-256-256-10.toml", "fashion-mnist", "0-4", (), LAWS),
    **{f"family_mnist_{v}": (f"models/family/mnist_{v}.toml", "mnist", "0-2", (), FAMILY_LAWS)
       for v in ("ep", "ep_adapt", "chl", "chl_adapt")},
    "stress_adapt": ("models/repro/stress_mnist.toml", "mnist", "0-2", STRESS_ADAPT_SETS, FAMILY_LAWS),
    "lr_mnist": ("models/repro/lr_mnist.toml", "mnist", "0-4", (LR_AXIS, "train.nudging=one-sided,symmetric"), LAWS),
    "lr_fashionmnist": ("models/repro/lr_fashionmnist.toml", "fashion-mnist", "0-4",
                        (LR_AXIS, "train.nudging=one-sided,symmetric"), LAWS),
    "lr_mnist_placement": ("models/repro/lr_mnist.toml", "mnist", "0-4",
                           (LR_AXIS, "model.nudge=inside,outside", "dt.layers=hidden,all"), FAMILY_LAWS),
    # the nudging axis named as in lr_mnist so that the cells are lr_mnist's: its constant and
    # lognormal cells are restored from results/lr_mnist/cells.json, not retrained
    "lr_mnist_slowest": ("models/repro/lr_mnist.toml", "mnist", "0-4", (LR_AXIS, "train.nudging=one-sided,symmetric"),
                         "constant,lognormal,lognormal_min"),
    "lr_mnist_settled": ("models/repro/lr_mnist.toml", "mnist", "0-4",
                         (LR_AXIS, "train.t1=400", "train.t1_tol=0.00001"), LAWS),
    # issue 16 item 5, the small case: HTS (lognormal vs constant dt at the same mean) in the
    # convolutional and the dendritic nets on the embedded digits (no data files needed)
    "family_hts_digits_cnn": ("models/digits_cnn.toml", None, "0-4", (), FAMILY_LAWS),
    "family_hts_digits_dendritic": ("models/digits_dendritic.toml", None, "0-4", ("dt.mean=0.5", "dt.std=0.2"),
                                    FAMILY_LAWS),
    # issue 11 item 5: the convolutional nets on the full data
    "mnist_cnn": ("models/mnist_cnn.toml", "mnist", "0-2", (), FAMILY_LAWS),
    "fashionmnist_cnn": ("models/fashionmnist_cnn.toml", "fashion-mnist", "0-2", (), FAMILY_LAWS),
}


def grid_argv(name: str, args) -> list[str]:
    """The ``neuro-hts`` arguments of one grid."""
    config, dataset, seeds, sets, laws = GRIDS[name]
    out_root = Path(args.out_root)
    data = [] if dataset is None else ["--data-dir", str(Path(args.data_root) / dataset)]
    argv = ["sweep", "--config", str(REPO / config), "--dt-dists", laws, "--seeds", args.seeds or seeds,
            *data, "--out", str(out_root / "sweeps" / name),
            "--report", str(out_root / "results" / name), "--workers", str(args.workers)]
    for s in sets:
        argv += ["--set", s]
    if args.engine != "local":
        argv += ["--engine", args.engine, "--scheduler", args.scheduler or ""]
    for opt in ("epochs", "n_train", "n_test"):
        if getattr(args, opt) is not None:
            argv += [f"--{opt.replace('_', '-')}", str(getattr(args, opt))]
    return argv


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", required=True, help="directory holding mnist/ and fashion-mnist/")
    p.add_argument("--only", help=f"comma-separated grid names (default: all): {', '.join(GRIDS)}")
    p.add_argument("--out-root", help="sweeps/ and results/ go here (default: . for the full grids; runs/smoke "
                   "when --seeds/--epochs/--n-train/--n-test shorten them, so a smoke run never replaces results/)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes per grid (default 1)")
    p.add_argument("--engine", choices=["local", "dask"], default="local")
    p.add_argument("--scheduler", help="Dask scheduler address (with --engine dask)")
    p.add_argument("--seeds", help="override every grid's seeds, e.g. 0-1")
    p.add_argument("--epochs", type=int, help="override every grid's epochs (smoke runs)")
    p.add_argument("--n-train", type=int, help="use only the first N training samples (smoke runs)")
    p.add_argument("--n-test", type=int, help="use only the first N test samples (smoke runs)")
    p.add_argument("--dry-run", action="store_true", help="print the neuro-hts commands and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    names = list(GRIDS) if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in GRIDS]
    if unknown or not names:
        print(f"reproduce_hts: error: unknown grid(s) {', '.join(unknown) or '(none given)'} "
              f"(known: {', '.join(GRIDS)})", file=sys.stderr)
        return 2
    smoke = any(getattr(args, k) is not None for k in ("seeds", "epochs", "n_train", "n_test"))
    if args.out_root is None:
        args.out_root = "runs/smoke" if smoke else "."
    if smoke and (Path(args.out_root) / "results").resolve() == (REPO / "results").resolve():
        print(f"reproduce_hts: error: a shortened run (--seeds/--epochs/--n-train/--n-test) would overwrite the "
              f"committed tables in {REPO / 'results'}; pass another --out-root (default runs/smoke)", file=sys.stderr)
        return 2
    needed = {GRIDS[n][1] for n in names} - {None}
    missing = [d for d in sorted(needed) if not (Path(args.data_root) / d).is_dir()]
    if missing and not args.dry_run:
        print(f"reproduce_hts: error: {args.data_root} has no {', '.join(d + '/' for d in missing)} "
              "(it must hold the datasets' idx .gz files)", file=sys.stderr)
        return 2
    if args.workers > 1:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, "1")  # inherited by the spawned workers
    out_root = Path(args.out_root)
    commands = []
    for n in names:
        sweep_dir, archive = out_root / "sweeps" / n, out_root / "results" / n / ARCHIVE
        restore = ["restore", str(archive), str(sweep_dir)] if archive.exists() else None
        commands.append((n, restore, grid_argv(n, args), ["archive", str(sweep_dir), str(archive)]))
    if args.dry_run:
        for _, restore, sweep, archive in commands:
            for argv_ in (restore, sweep, archive):
                if argv_:
                    print(shlex.join(["neuro-hts", *argv_]))
        return 0
    from neuro_hts.cli import main as cli_main

    pre = ["--no-progress"] if args.no_progress else []
    worst = 0
    for name, restore, sweep, archive in commands:
        print(f"== {name}", flush=True)
        if restore and (code := cli_main(pre + restore)) != 0:
            return code
        code = cli_main(pre + sweep)
        if (Path(archive[1]) / "sweep.json").exists():  # also after an interruption: keep what finished
            archived = cli_main(pre + archive)
            code = code if code == 130 else max(code, archived)
        if code in (2, 130):
            return code
        worst = max(worst, code)
    return worst


if __name__ == "__main__":
    sys.exit(main())
