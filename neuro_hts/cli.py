"""Command-line interface: ``neuro-hts`` (also ``python -m neuro_hts``).

Only the CLI configures logging and progress bars. Errors a user can cause print one
line on stderr and exit with code 2; Ctrl-C exits 130 with the last checkpoint kept.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from .errors import ConfigError, NeuroHTSError

__all__ = ["main", "build_parser"]

logger = logging.getLogger("neuro_hts.cli")


class _Formatter(argparse.HelpFormatter):
    """Help that states every flag's default (when it has one that is not implied by the config)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "%(default)" in text or "default" in text:
            return text
        if action.default not in (None, False, argparse.SUPPRESS) and action.option_strings:
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message):  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message}\n")


def _bars_disabled(enabled: bool):
    """tqdm's ``disable``: off when asked, and (None) off whenever stderr is not a terminal (no carriage returns in logs)."""
    return None if enabled and sys.stderr.isatty() else True


def _tqdm_progress(enabled: bool):
    from tqdm.auto import tqdm

    def factory(total, desc):
        return tqdm(total=total, desc=desc, unit="batch", leave=False, disable=_bars_disabled(enabled), dynamic_ncols=True)

    return factory


def _same_file(a, b) -> bool:
    """Whether paths ``a`` and ``b`` name one file (through links, ``..`` or a relative path)."""
    import os

    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def _refuse_overwrite_input(out, *inputs) -> None:
    """An output must never replace one of the command's inputs (not even with --force)."""
    for inp in inputs:
        if inp is not None and _same_file(out, inp):
            raise ConfigError(f"output {out} is the input {inp}: writing it would destroy the input; choose another path")


def _names(registry_path: str) -> list[str]:
    """Choice list of a registry (``"module:NAME"``), so the CLI never keeps its own tuple."""
    import importlib

    module, _, attr = registry_path.partition(":")
    return list(getattr(importlib.import_module(f"neuro_hts.{module}"), attr).names())


def _dflt(section: str, key: str) -> str:
    """' (default: V)': the value a flag takes when neither it nor --config sets it (the Config default)."""
    from .config import Config

    v = getattr(getattr(Config(), section), key)
    if isinstance(v, tuple):
        v = "-".join(map(str, v)) if key == "arch" else ",".join(f"{x:g}" for x in v)
    return f" (default: {v})" if v not in (None, "") else " (default: not set)"


def _add_train_args(p):
    p.add_argument("--config", help="TOML config (models/*.toml); flags override it (default: built-in defaults)")
    p.add_argument("--dataset", choices=_names("data:DATASETS"), help="dataset" + _dflt("data", "dataset"))
    p.add_argument("--data-dir", help="directory holding the idx .gz files (MNIST / Fashion-MNIST)"
                   " (default: $NEURO_HTS_DATA_DIR, then the system data directories)")
    p.add_argument("--n-train", type=int, help="use only the first N training samples (default: all)")
    p.add_argument("--n-test", type=int, help="use only the first N test samples (default: all)")
    p.add_argument("--arch", help="layer sizes, e.g. 784-512-10" + _dflt("model", "arch"))
    p.add_argument("--form", choices=_names("dynamics:FORMS"), help="dynamics form" + _dflt("model", "form"))
    p.add_argument("--activation", choices=_names("activations:ACTIVATIONS"), help="activation" + _dflt("model", "activation"))
    p.add_argument("--output", choices=_names("dynamics:OUTPUTS"), help="output cost" + _dflt("model", "output"))
    p.add_argument("--nudge", choices=list(importlib.import_module("neuro_hts.dynamics").NUDGE_PLACEMENTS),
                   help="where the leaky form's nudge enters: inside sigma or outside it" + _dflt("model", "nudge"))
    p.add_argument("--dt-dist", help="a dt law: " + ", ".join(_names("distributions:_REGISTRY")) + _dflt("dt", "dist"))
    p.add_argument("--dt-mean", type=float, help="mean of the dt law" + _dflt("dt", "mean"))
    p.add_argument("--dt-std", type=float, help="standard deviation of the dt law" + _dflt("dt", "std"))
    p.add_argument("--dt-min", type=float, help="dt values are clipped to >= this" + _dflt("dt", "dt_min"))
    p.add_argument("--dt-max", type=float, help="dt values are clipped to <= this" + _dflt("dt", "dt_max"))
    p.add_argument("--dt-layers", help="'hidden' (default), 'all', 'none' or indices like 1,2")
    p.add_argument("--dt-per-channel", action="store_true", default=None,
                   help="C x H x W layers: one dt per feature map instead of one per unit")
    p.add_argument("--algorithm", choices=_names("algorithms:ALGORITHMS"), help="learning rule (default ep)")
    p.add_argument("--epochs", type=int, help="epochs to train" + _dflt("train", "epochs"))
    p.add_argument("--batch-size", type=int, help="samples per batch" + _dflt("train", "batch_size"))
    p.add_argument("--t1", type=int, help="free-phase steps" + _dflt("train", "t1"))
    p.add_argument("--t1-tol", type=float, help="end the free phase once every sample's residual is <= this (at most --t1 steps)")
    p.add_argument("--t2", type=int, help="nudged (ep) or clamped (chl) phase steps" + _dflt("train", "t2"))
    p.add_argument("--beta", type=float, help="nudging strength" + _dflt("train", "beta"))
    p.add_argument("--nudging", choices=list(_names_nudging()), help="nudging sign scheme" + _dflt("train", "nudging"))
    p.add_argument("--trainer", choices=list(importlib.import_module("neuro_hts.engines").TRAINERS),
                   help="ep: the algorithm's estimate; bptt: the exact gradient of the free phase by BPTT"
                   + _dflt("train", "trainer"))
    p.add_argument("--distill", metavar="TEACHER.h5",
                   help="distil from a teacher run (neuro-hts teacher): targets (1 - alpha) y + alpha softmax(z_t / T)")
    p.add_argument("--distill-temperature", type=float, help="temperature T of the teacher's soft targets" + _dflt("distill", "temperature"))
    p.add_argument("--distill-alpha", type=float, help="weight of the soft targets against the labels" + _dflt("distill", "alpha"))
    p.add_argument("--chl-gamma", type=float, help="CHL's feedback gain on every top-down term (default 1)")
    p.add_argument("--clamp-delay", type=int, help="CHL: steps of the clamped phase run as free before clamping (default 0)")
    p.add_argument("--adapt-steps", type=int, help="adjusted adaptation: K steps pulled toward the free state (0: off)")
    p.add_argument("--adapt-coe", type=float, help="adjusted adaptation's mixing coefficient c (default 0.1)")
    p.add_argument("--local-beta", type=float, help="layer-wise error costs: beta_l of every local cost, >= 0 "
                   "(0: none, standard EP)" + _dflt("local", "beta"))
    p.add_argument("--local-layers", help="hidden layers with a local cost: 'all' or indices like 1,2"
                   + _dflt("local", "layers"))
    p.add_argument("--local-readout", choices=["fixed", "learned"], help="local readouts: fixed random or learned"
                   + _dflt("local", "readout"))
    p.add_argument("--optimizer", choices=_names("learning:OPTIMIZERS"), help="optimiser" + _dflt("train", "optimizer"))
    p.add_argument("--lr", help="learning rate, or one per layer: 5e-4,5e-4" + _dflt("train", "lr"))
    p.add_argument("--momentum", type=float, help="SGD momentum (optimizer sgd only)" + _dflt("train", "momentum"))
    p.add_argument("--seed", type=int, help="random seed (init, dt, shuffling, nudging)" + _dflt("train", "seed"))
    p.add_argument("--backend", choices=_names("backends:BACKENDS"), help="float backend" + _dflt("train", "backend"))
    p.add_argument("--blas-threads", type=int, help="BLAS threads while training (default 1; 0: the library's default)")
    p.add_argument("--arith", choices=_names("engines:ENGINES"), help="'fixed': train in a hardware target's integer arithmetic (needs --target)")
    p.add_argument("--target", help="hardware target for --arith fixed: a name (loihi2) or a .toml path")
    p.add_argument("--update-rounding", choices=["nearest", "stochastic"], help="rounding of fixed-point weight updates (default stochastic)")
    p.add_argument("--lava-learning", choices=["exact", "learning-dense"],
                   help="--backend lava: 'exact' integer EP update (default) or Lava's LearningDense 3-factor rule")
    p.add_argument("--basal-branches", type=int, help="dendritic: basal branches per soma (every dendritic connection)")
    p.add_argument("--apical-branches", type=int, help="dendritic: apical branches per hidden unit")
    p.add_argument("--branch-sparsity", type=float, help="dendritic: fraction p of a branch's possible inputs it sees")
    p.add_argument("--apical-scale", type=float, help="dendritic: scale a of the apical (top-down) drive")


def _add_common(p, top: bool) -> None:
    """-v / --no-progress / --threads: before the command (top) or after it (a sub-parser; SUPPRESS keeps the top's value)."""
    kw = {} if top else {"default": argparse.SUPPRESS}
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging", **({"default": False} if top else kw))
    p.add_argument("--no-progress", action="store_true", help="no progress bars (they are off anyway when stderr is "
                   "not a terminal)", **({"default": False} if top else kw))
    p.add_argument("--threads", type=int, metavar="N", help="BLAS and Numba threads (default: BLAS 1 while training, "
                   "the libraries' defaults otherwise)", **({"default": None} if top else kw))


def _names_nudging():
    from .algorithms import NUDGINGS

    return NUDGINGS


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="neuro-hts", description="Equilibrium Propagation with heterogeneous per-neuron time steps (HTS-EP)")
    parser.add_argument("--version", action="version", version=f"neuro-hts {__version__}")
    _add_common(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser,
                                metavar="COMMAND", title="commands (neuro-hts COMMAND --help for each)")
    _orig_add = sub.add_parser

    def add_parser(name, **kw):  # every subcommand also takes -v / --no-progress / --threads after its name
        sp = _orig_add(name, **kw)
        _add_common(sp, top=False)
        return sp

    sub.add_parser = add_parser

    p = sub.add_parser("train", help="train an HTS-EP network; checkpoints every epoch")
    _add_train_args(p)
    p.add_argument("--out", help="run file to write (HDF5)")
    p.add_argument("--resume", metavar="RUN.h5", help="continue an interrupted run (optionally with a larger --epochs)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    p.add_argument("--print-config", action="store_true",
                   help="print the effective config (defaults, --config and flags merged) as TOML and exit")
    p.add_argument("--dry-run", action="store_true",
                   help="check the config, data and network, print what would be trained, write nothing")

    p = sub.add_parser("teacher", help="train a distillation teacher: the same network by backpropagation through "
                       "its free phase (train --trainer bptt)")
    _add_train_args(p)
    p.add_argument("--out", required=True, help="teacher run file to write (HDF5)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")

    p = sub.add_parser("show", help="a run file at a glance: config, status, per-epoch table")
    p.add_argument("run", help="run file (HDF5)")

    p = sub.add_parser("plot", help="figure of one run: training curves, residual, per-layer weights and dt; "
                       "'plot diagnostics RUN.h5 [RUN2.h5 ...]': per-layer state gap and mean |dW| by epoch",
                       usage="neuro-hts plot [-h] [--out OUT] [--force] RUN.h5\n"
                             "       neuro-hts plot diagnostics [-h] [--out OUT] [--force] RUN.h5 [RUN2.h5 ...]")
    p.add_argument("run", nargs="+", metavar="RUN.h5",
                   help="run file (HDF5); after the word 'diagnostics', one or more run files (one column each)")
    p.add_argument("--out", help="figure (png, pdf or svg; default: <run stem>.png, or <first run stem>_diagnostics.png, "
                   "next to the (first) run)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")

    p = sub.add_parser("export", help="a run's weights, biases and dts for other tools (NPZ with a JSON header)")
    p.add_argument("run", help="run file (HDF5)")
    p.add_argument("--format", choices=["npz"], default="npz", help="output format")
    p.add_argument("--out", help="file to write (default: <run stem>.npz next to the run)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")

    p = sub.add_parser("list", help="what is registered: connection kinds, costs, algorithms, dt laws, engines, targets, ...")

    p = sub.add_parser("eval", help="test accuracy of a run file")
    p.add_argument("run", help="run file (HDF5)")
    p.add_argument("--dataset", choices=_names("data:DATASETS"))
    p.add_argument("--data-dir", help="dataset directory (default: the run's; where it moved, $NEURO_HTS_DATA_DIR)")
    p.add_argument("--backend", choices=_names("backends:BACKENDS"), help="float backend (default: the run's)")
    p.add_argument("--t1", type=int, help="free-phase steps (default: the run's)")
    p.add_argument("--n-test", type=int, help="use only the first N test samples (default: the run's test set)")
    p.add_argument("--predictions", metavar="OUT.npy", help="save the predicted class of every test sample")

    p = sub.add_parser("plot-dt", help="histograms of dt_i for every distribution (paper's Figure 1)")
    p.add_argument("--out", required=True, help="PNG file")
    p.add_argument("--dt-mean", type=float, default=0.3, help="mean of every law")
    p.add_argument("--dt-std", type=float, default=0.1, help="standard deviation of every law")
    p.add_argument("--dt-min", type=float, default=1e-3, help="lower clip")
    p.add_argument("--dt-max", type=float, default=0.5, help="upper clip")
    p.add_argument("--n", type=int, default=100_000, help="samples per distribution")
    p.add_argument("--seed", type=int, default=0, help="random seed")

    p = sub.add_parser("quantize", help="design-rule check a run and write its fixed-point deploy bundle")
    p.add_argument("run", help="run file (HDF5)")
    p.add_argument("--target", required=True, help="hardware target: a name (loihi2) or a .toml path")
    p.add_argument("--out", required=True, help="bundle file to write (HDF5)")
    p.add_argument("--profile-mode", action="store_true", help="bin each core's decays to the target's decay-profile limit")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    p.add_argument("--exponent-rule", choices=["max", "percentile", "mse"], default="max",
                   help="each layer's weight exponent: max (nothing saturates; default), percentile, or mse "
                        "(least squared error with saturation)")
    p.add_argument("--percentile", type=float, default=99.9, help="percentile of |w| the percentile rule keeps (default 99.9)")

    p = sub.add_parser("sweep", help="train a grid of dt distributions x seeds x settings, one run file per cell (resumable)")
    p.add_argument("--config", required=True, help="base TOML config (models/*.toml)")
    p.add_argument("--dt-dists", required=True, help="comma-separated distributions, e.g. constant,uniform,lognormal")
    p.add_argument("--seeds", default="0-4", help="e.g. 0-4 or 0,2,7 (default 0-4)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=V1,V2",
                   help="sweep a setting too (repeatable), e.g. train.t1=20,30,60")
    p.add_argument("--out", required=True, help="sweep directory (one run file per cell, sweep.json)")
    p.add_argument("--engine", choices=["local", "dask"], default="local")
    p.add_argument("--scheduler", help="Dask scheduler address (with --engine dask)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    p.add_argument("--data-dir", help="dataset directory for every cell")
    p.add_argument("--epochs", type=int, help="override the config's epochs")
    p.add_argument("--n-train", type=int, help="use only the first N training samples")
    p.add_argument("--n-test", type=int, help="use only the first N test samples")
    p.add_argument("--report", metavar="REPORT_DIR",
                   help="also write the report (as neuro-hts report) of the sweep directory when the grid is done")

    p = sub.add_parser("resolve-seeds", help="add seeds where a law and constant differ by less than their seed "
                       "spread, until resolved or --max-seeds (resumable)")
    p.add_argument("sweep_dir", help="directory written by neuro-hts sweep (with constant among its laws)")
    p.add_argument("--max-seeds", type=int, default=20, help="at most this many seeds per law and setting (default 20)")
    p.add_argument("--step", type=int, default=5, help="seeds added per round to each undecided comparison (default 5)")
    p.add_argument("--engine", choices=["local", "dask"], default="local")
    p.add_argument("--scheduler", help="Dask scheduler address (with --engine dask)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    p.add_argument("--report", dest="report_dir", help="also write the report of the sweep directory when done")
    p.add_argument("--where", action="append", metavar="KEY=V1[,V2...]",
                   help="only the settings that match (repeatable), e.g. --where train.lr=0.005,0.01")
    p.add_argument("--dry-run", action="store_true", help="list the cells of the next round and exit")

    p = sub.add_parser("archive", help="merge a sweep's finished cells (status and history, no weights) into a "
                       "JSON archive that travels to other machines")
    p.add_argument("sweep_dir", help="directory written by neuro-hts sweep")
    p.add_argument("archive", help="archive file (.json); created, or merged into when it exists")

    p = sub.add_parser("restore", help="write an archive's cells into a sweep directory as metrics-only run files, "
                       "so that sweep skips them and report reads them")
    p.add_argument("archive", help="archive file written by neuro-hts archive")
    p.add_argument("sweep_dir", help="sweep directory (created if missing); existing run files are never replaced")

    p = sub.add_parser("report", help="tables (markdown, CSV) and figures of a sweep directory")
    p.add_argument("sweep_dir", help="directory written by neuro-hts sweep")
    p.add_argument("--out", required=True, help="report directory (report.md, summary.csv, runs.csv, PNGs)")

    p = sub.add_parser("deploy", help="inference of a deploy bundle (or run file) through Lava or Numba: accuracy and speed")
    p.add_argument("net", help="deploy bundle (neuro-hts quantize) or, with --arith float, a run file")
    p.add_argument("--backend", choices=["lava", "numba"], default="lava")
    p.add_argument("--arith", choices=["fixed", "float"], default="fixed", help="Lava fixed_pt / floating_pt models")
    p.add_argument("--n-samples", type=int, default=100, help="first N test samples (default 100)")
    p.add_argument("--steps", type=int, help="free-phase steps (default: the source run's t1)")
    p.add_argument("--dataset", choices=_names("data:DATASETS"), help="default: the source run's")
    p.add_argument("--data-dir", help="dataset directory (default: the source run's)")
    p.add_argument("--chunk", type=int, default=10, help="samples per Lava run() call (progress granularity)")
    p.add_argument("--predictions", metavar="OUT.npy",
                   help="save the predicted classes (int64, shape (N,)) to this .npy file (written atomically)")

    p = sub.add_parser("compare", help="float vs fixed-point accuracy, agreement, state errors and a weight-bits sweep")
    p.add_argument("run", help="run file (HDF5)")
    p.add_argument("--target", required=True, help="hardware target: a name (loihi2) or a .toml path")
    p.add_argument("--n-test", type=int, help="use only the first N test samples (default: the run's test set)")
    p.add_argument("--data-dir", help="dataset directory (default: the run's)")
    p.add_argument("--steps", type=int, help="free-phase steps (default: the run's t1)")
    p.add_argument("--weight-bits", default="2,3,4,5,6,7,8", help="weight mantissa widths to sweep, e.g. 2,4,8")
    p.add_argument("--profile-levels", type=int, help="also bin decays to K levels per core (default: the target's limit, if any)")
    p.add_argument("--lava-samples", type=int, default=0, help="also run the first N samples in Lava (0: skip)")
    p.add_argument("--tolerance", type=float, default=0.5, help="accuracy drop (points) that counts as within float")
    p.add_argument("--batch-size", type=int, default=1000, help="samples per evaluation batch")
    p.add_argument("--out-dir", help="where compare.csv and compare.png go (default: <run stem>_compare/ next to the run)")
    p.add_argument("--exponent-rules", default="max,percentile,mse",
                   help="weight-exponent rules to sweep (max, percentile, mse; default all three)")
    p.add_argument("--percentile", type=float, default=99.9, help="percentile of |w| the percentile rule keeps (default 99.9)")

    p = sub.add_parser("check-updates", help="fixed-point vs float EP weight update of a run on one training batch")
    p.add_argument("run", help="run file (HDF5)")
    p.add_argument("--target", required=True, help="hardware target: a name (loihi2) or a .toml path")
    p.add_argument("--batch-size", type=int, default=50, help="samples in the training batch")
    p.add_argument("--lr", type=float, help="plain-SGD learning rate of the compared update (default: the run's)")
    p.add_argument("--data-dir", help="dataset directory (default: the run's)")
    p.add_argument("--seed", type=int, default=0, help="batch choice and stochastic rounding")

    from .cli_continual import add_continual_parser

    add_continual_parser(sub)
    return parser


def _config_from_args(args):
    from .config import Config, load_config, parse_arch, parse_local_layers

    from .dendritic import override_branches

    cfg = load_config(args.config) if args.config else Config()
    cfg = override_branches(cfg, basal_branches=args.basal_branches, apical_branches=args.apical_branches,
                            branch_sparsity=args.branch_sparsity, apical_scale=args.apical_scale)
    lr = None
    if args.lr is not None:
        try:
            lr = [float(v) for v in args.lr.split(",")]
        except ValueError:
            raise ConfigError(f"malformed --lr {args.lr!r}: expected a number or a comma list") from None
    return cfg.replace(
        model={
            "arch": list(parse_arch(args.arch)) if args.arch else None,
            "form": args.form,
            "activation": args.activation,
            "output": args.output,
            "nudge": args.nudge,
        },
        dt={"dist": args.dt_dist, "mean": args.dt_mean, "std": args.dt_std, "dt_min": args.dt_min, "dt_max": args.dt_max, "layers": args.dt_layers,
            "per_channel": args.dt_per_channel},
        train={
            "algorithm": args.algorithm,
            "t1_tol": args.t1_tol,
            "blas_threads": args.blas_threads,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "t1": args.t1,
            "t2": args.t2,
            "beta": args.beta,
            "nudging": args.nudging,
            "optimizer": args.optimizer,
            "lr": lr,
            "momentum": args.momentum,
            "seed": args.seed,
            "backend": args.backend,
            "arith": args.arith,
            "target": args.target,
            "update_rounding": args.update_rounding,
            "lava_learning": args.lava_learning,
            "trainer": args.trainer,
        },
        chl={"gamma": args.chl_gamma, "clamp_delay": args.clamp_delay},
        adapt={"steps": args.adapt_steps, "coe": args.adapt_coe},
        local={"beta": args.local_beta, "layers": parse_local_layers(args.local_layers) if args.local_layers else None,
               "readout": args.local_readout},
        data={"dataset": args.dataset, "data_dir": args.data_dir, "n_train": args.n_train, "n_test": args.n_test},
        distill={"teacher": str(Path(args.distill).resolve()) if args.distill else None,
                 "temperature": args.distill_temperature, "alpha": args.distill_alpha},
    )


#: train flags that --resume cannot change (the stored config is used; only --epochs may grow)
_RESUME_FIXED = (
    "config", "dataset", "n_train", "n_test", "arch", "form", "activation", "output", "nudge",
    "dt_dist", "dt_mean", "dt_std", "dt_min", "dt_max", "dt_layers", "dt_per_channel", "batch_size", "t1", "t2",
    "beta", "nudging", "optimizer", "lr", "momentum", "seed", "backend",
    "arith", "target", "update_rounding", "lava_learning", "algorithm", "t1_tol", "chl_gamma", "clamp_delay", "adapt_steps",
    "adapt_coe", "blas_threads", "trainer", "basal_branches", "apical_branches", "branch_sparsity", "apical_scale",
    "distill", "distill_temperature", "distill_alpha",
    "local_beta", "local_layers", "local_readout",
)


def _cmd_train(args) -> int:
    from .config import Config
    from .training import train

    progress = _tqdm_progress(not args.no_progress)
    if args.resume:
        if args.print_config or args.dry_run:
            raise ConfigError("--print-config and --dry-run describe a new run; use neuro-hts show RUN.h5 for a stored one")
        if args.out and Path(args.out) != Path(args.resume):
            raise ConfigError("--resume continues the run in place; do not pass a different --out")
        ignored = [k for k in _RESUME_FIXED if getattr(args, k) is not None]
        if ignored:
            flags = ", ".join("--" + k.replace("_", "-") for k in ignored)
            raise ConfigError(f"--resume uses the run's stored config; only --epochs may change, not {flags} "
                              f"(and --data-dir, where the data moved)")
        from .runfile import load_run

        stored = load_run(args.resume).config
        epochs = args.epochs if args.epochs is not None else stored.train.epochs
        cfg = Config().replace(train={"epochs": epochs})
        out = Path(args.resume)
        state = train(cfg, out, resume=True, progress=progress, data_dir=args.data_dir)
    else:
        cfg = _config_from_args(args)
        if args.print_config:
            from .runview import config_toml

            sys.stdout.write(config_toml(cfg))
            return 0
        if not args.out and not args.dry_run:
            raise ConfigError("train needs --out RUN.h5 (or --resume RUN.h5)")
        out = Path(args.out) if args.out else None
        if out is not None:
            for inp in (args.config, args.target, args.distill):
                if inp:
                    _refuse_overwrite_input(out, inp)
            if out.exists() and not args.force:
                raise ConfigError(f"{out} exists; pass --resume {out} to continue it or --force to overwrite")
        if args.dry_run:
            from .training import dry_run

            for line in dry_run(cfg):
                print(line)
            print(f"dry run: nothing written{f' (would write {out})' if out else ''}")
            return 0
        state = train(cfg, out, progress=progress, overwrite=args.force)
    for line in _train_summary(state, out):
        print(line)
    return 0


def _cmd_teacher(args) -> int:
    if args.trainer not in (None, "bptt"):
        raise ConfigError(f"a teacher is trained by BPTT; drop --trainer {args.trainer} (or use neuro-hts train)")
    args.trainer = "bptt"
    args.resume, args.print_config, args.dry_run = None, False, False
    return _cmd_train(args)


def _train_summary(state, out) -> list[str]:
    """The closing lines of train: final and best accuracy (with its epoch), stability, residual, the file."""
    import math

    from .runfile import status_line
    from .stability import run_metrics

    hist = state.history
    acc = hist.get("test_accuracy") or []
    m = run_metrics(hist, state.status, int(state.network.arch[-1]))
    lines = [f"trained {state.epochs_completed} epochs on {state.config.data.dataset}: "
             f"final test accuracy {m['final_accuracy']:.4f}"]
    if acc:
        best = max(range(len(acc)), key=lambda k: acc[k])
        lines[0] += f" (best {acc[best]:.4f} at epoch {best + 1})"
    drop = m["best_accuracy"] - m["final_accuracy"]
    verdict = ("diverged" if m["diverged"] else "never learned" if m["never_learned"]
               else f"unstable (ended {100 * drop:.1f} points below its best)" if drop > 0.03 else "stable")
    res = m["residual_mean"]
    nc = m["frac_not_converged"]
    lines.append(f"stability: {verdict}; last epoch free-phase residual {res:.2e}" +
                 (f", {100 * nc:.1f}% of samples not converged (residual > {state.config.train.residual_tol:g})"
                  if not math.isnan(nc) else ""))
    if not math.isnan(nc) and nc > 0.5:
        lines.append("note: most free phases did not settle; a larger --t1 (or a smaller --dt-mean) helps")
    lines.append(status_line(state))
    lines.append(f"run file: {out}")
    return lines


def _cmd_show(args) -> int:
    from .runfile import load_run, load_summary
    from .runview import show_lines

    summary = load_summary(args.run)  # a metrics-only file (a restored sweep cell) is shown without weights
    state = summary if summary.metrics_only else load_run(args.run)
    for line in show_lines(args.run, state):
        print(line)
    return 0


def _out_for(args, suffix: str) -> Path:
    run = Path(args.run)
    out = Path(args.out) if args.out else run.with_suffix(suffix)
    _refuse_overwrite_input(out, args.run)
    if out.exists() and not args.force:
        raise ConfigError(f"{out} exists; pass --force to overwrite it")
    return out


def _cmd_plot(args) -> int:
    from .runfile import load_run
    from .runview import plot_run

    runs = list(args.run)
    if runs[0] == "diagnostics":  # a run file of that name: pass it as ./diagnostics
        return _cmd_plot_diagnostics(args, runs[1:])
    if len(runs) > 1:
        raise ConfigError(f"plot takes one run file, got {len(runs)}; to compare runs use "
                          f"neuro-hts plot diagnostics {' '.join(runs)}")
    args.run = runs[0]
    out = _out_for(args, ".png")
    state = load_run(args.run)
    path = plot_run(state, out, title=f"{args.run}: " + ", ".join([state.config.data.dataset, "-".join(map(str, state.network.arch))]))
    print(f"figure: {path}")
    return 0


def _cmd_plot_diagnostics(args, runs) -> int:
    """``plot diagnostics RUN.h5 [RUN2.h5 ...]``: the per-layer learning-signal figure (one column per run)."""
    import numpy as np

    from .runfile import load_run
    from .runview import plot_diagnostics

    if not runs:
        raise ConfigError("plot diagnostics needs at least one run file: neuro-hts plot diagnostics RUN.h5 [RUN2.h5 ...]")
    first = Path(runs[0])
    out = Path(args.out) if args.out else first.with_name(f"{first.stem}_diagnostics.png")
    _refuse_overwrite_input(out, *runs)
    if out.exists() and not args.force:
        raise ConfigError(f"{out} exists; pass --force to overwrite it")
    names = [Path(r).name for r in runs]
    labels = names if len(set(names)) == len(names) else [str(r) for r in runs]
    states = [(label, load_run(r)) for label, r in zip(labels, runs)]
    path = plot_diagnostics(states, out)
    for label, state in states:
        d = state.diagnostics
        last = d.state_gap[-1]
        if d.n_epochs and np.isfinite(last[0]) and np.isfinite(last[-1]) and last[-1] > 0:
            print(f"{label}: last epoch state gap {d.layers[0]} {last[0]:.3g} ... {d.layers[-1]} {last[-1]:.3g} "
                  f"(ratio {last[0] / last[-1]:.3g}); mean |dW| {d.connections[0]} {d.grad_abs[-1, 0]:.3g} ... "
                  f"{d.connections[-1]} {d.grad_abs[-1, -1]:.3g}")
    print(f"figure: {path}")
    return 0


def _cmd_export(args) -> int:
    from .runfile import load_run
    from .runview import export_npz

    out = _out_for(args, ".npz")
    state = load_run(args.run)
    path = export_npz(state, out, source=str(args.run))
    print(f"exported {args.run} ({state.network.n_layers} layers, {state.status}) as {args.format}: {path}")
    return 0


def _cmd_list(args) -> int:
    from .catalog import catalog

    for kind, entries in catalog().items():
        print(f"{kind}s:" if not kind.endswith("s") else f"{kind}:")
        width = max((len(n) for n, _ in entries), default=0)
        for name, desc in entries:
            print(f"  {name:<{width}}  {desc}".rstrip())
    return 0


def _cmd_eval(args) -> int:
    import dataclasses

    import numpy as np

    from ._atomic import atomic_path
    from .algorithms import make_algorithm
    from .data import load_recorded_dataset, normalize
    from .engines import make_engine
    from .learning import make_optimizer
    from .runfile import load_run, status_line

    if args.n_test is not None and args.n_test < 1:
        raise ConfigError(f"--n-test must be >= 1, got {args.n_test}")
    if args.t1 is not None and args.t1 < 1:
        raise ConfigError("--t1 must be >= 1")
    if args.predictions:
        _refuse_overwrite_input(args.predictions, args.run)
    state = load_run(args.run)
    cfg = state.config
    dataset = args.dataset or cfg.data.dataset
    images = len(state.network.shapes[0]) == 3  # an image input layer: keep (N, C, H, W)
    n_test = args.n_test if args.n_test is not None else (cfg.data.n_test if dataset == cfg.data.dataset else None)
    recorded = cfg.data.data_dir if dataset == cfg.data.dataset else None
    data = load_recorded_dataset(dataset, recorded, args.data_dir, n_test=n_test, images=images)
    data = normalize(data, cfg.data.normalize)  # the inputs the run was trained on
    if data.n_features != state.network.arch[0] or data.n_classes != state.network.arch[-1]:
        raise ConfigError(f"run {args.run} ({'-'.join(map(str, state.network.arch))}) does not fit dataset {dataset!r}")
    if args.backend:
        cfg = cfg.replace(train={"backend": args.backend})
    engine = make_engine(cfg, make_optimizer(cfg.train, state.network.n_layers))
    if state.optimizer_state:
        engine.load_state_dict(state.optimizer_state)  # the fixed engine's grid (weight exponents)
    net = state.network.astype(engine.dtype)
    t1 = args.t1 if args.t1 is not None else cfg.train.t1
    if t1 < 1:
        raise ConfigError("--t1 must be >= 1")
    phase = dataclasses.replace(make_algorithm(cfg).free_phase(), steps=t1)
    ev = engine.evaluate(net, np.ascontiguousarray(data.x_test, dtype=engine.dtype), data.y_test, phase,
                         progress=_tqdm_progress(not args.no_progress))
    n_ok = int(np.sum(ev.predictions == data.y_test))
    where = f"fixed point ({cfg.train.target})" if engine.name == "fixed" else f"backend {engine.backend.name}"
    print(status_line(state))
    if state.status == "diverged":
        logger.warning("%s diverged during training: %s", args.run, state.message)
    print(f"test accuracy: {ev.accuracy:.4f} ({n_ok}/{len(data.y_test)}) on {dataset}, T1={t1}, {where}")
    if args.predictions:
        with atomic_path(args.predictions, suffix=".npy.tmp") as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, ev.predictions)
        print(f"predictions: {args.predictions}")
    return 0


def _cmd_plot_dt(args) -> int:
    from .distributions import validate_dt_params
    from .plotting import dt_summary, plot_dt_distributions

    validate_dt_params("constant", args.dt_mean, args.dt_std, args.dt_min, args.dt_max)
    if args.n < 1:
        raise ConfigError("--n must be >= 1")
    path = plot_dt_distributions(args.out, mu=args.dt_mean, sigma=args.dt_std, dt_min=args.dt_min, dt_max=args.dt_max, n=args.n, seed=args.seed)
    summary = dt_summary(mu=args.dt_mean, sigma=args.dt_std, dt_min=args.dt_min, dt_max=args.dt_max, n=args.n, seed=args.seed)
    print(f"{'distribution':<12} {'mean':>7} {'std':>7} {'at dt_min':>9} {'at dt_max':>9}")
    for name, s in summary.items():
        print(f"{name:<12} {s['mean']:7.4f} {s['std']:7.4f} {s['frac_at_min']:9.4f} {s['frac_at_max']:9.4f}")
    print(f"figure: {path}")
    return 0


def _cmd_quantize(args) -> int:
    import numpy as np

    from .hardware import load_target
    from .hardware.bundle import file_sha256, save_bundle
    from .hardware.drc import check_deployable, run_design_rules
    from .hardware.quantize import quantize_network
    from .runfile import load_run, status_line

    out = Path(args.out)
    _refuse_overwrite_input(out, args.run)
    if out.exists() and not args.force:
        raise ConfigError(f"{out} exists; pass --force to overwrite it")
    target = load_target(args.target)
    state = load_run(args.run)
    if state.status == "diverged":
        logger.warning("%s: %s", args.run, status_line(state))
    net = state.network
    violations = check_deployable(net, target) + run_design_rules(net, target, profile_mode=args.profile_mode)
    if violations:
        for v in violations:
            print(f"neuro-hts: error: {v}", file=sys.stderr)
        return 2
    source = {
        "run_path": str(Path(args.run).resolve()),
        "run_sha256": file_sha256(args.run),
        "run_config": state.config.to_json(),
        "epochs_completed": state.epochs_completed,
        "run_status": state.status,
        "run_message": state.message,
    }
    bundle = quantize_network(net, target, profile_mode=args.profile_mode, source=source,
                              exponent_rule=args.exponent_rule, percentile=args.percentile)
    save_bundle(out, bundle)
    print(f"quantized {args.run} for {target.name} ({'-'.join(map(str, net.arch))}, activation fraction bits {bundle.activation_frac_bits})")
    head = f"{'layer':>5} {'exponent':>8} {'max|err|/max|w|':>15} {'decays':>6}"
    print(head + (f" {'max|d dt|':>9}" if bundle.profile_mode else ""))
    for lb, w in zip(bundle.layers, net.weights):
        wmax = float(np.max(np.abs(w))) if w.size else 0.0
        err = float(np.max(np.abs(lb.weights_float() - w))) if w.size else 0.0
        rel = err / wmax if wmax > 0 else 0.0
        line = f"{lb.index:>5} {lb.weight_exponent:>8} {rel:>15.3e} {np.unique(lb.decay).size:>6}"
        if bundle.profile_mode:
            line += f" {bundle.max_dt_change(lb):>9.3e}"
        print(line)
        _warn_exponent_bound(lb, target)
    print(f"bundle: {out}")
    return 0


def _warn_exponent_bound(lb, target) -> None:
    """Warn when a layer's shared exponent sits at the target's bound (its mantissas then use a sliver of the range)."""
    import numpy as np

    ws = target.weights
    e = lb.weight_exponent
    wm = lb.weight_mantissa
    used = (int(wm.min()), int(wm.max())) if wm.size else (0, 0)
    lo, hi = -(1 << ws.mantissa_bits), (1 << ws.mantissa_bits) - ws.lsb
    if e == ws.exponent_min and max(abs(used[0]), abs(used[1])) < hi // 2:
        logger.warning("layer %d: weight exponent held at %s's lower bound exponent_min = %d: mantissas use %d..%d of "
                       "%d..%d, so the layer's weights lose precision (see docs/HARDWARE.md on the bound)",
                       lb.index, target.name, e, used[0], used[1], lo, hi)
    elif e == ws.exponent_max and int(np.max(np.abs(wm), initial=0)) >= hi:
        logger.warning("layer %d: weight exponent held at %s's upper bound exponent_max = %d: weights saturate at "
                       "+-%d * 2**%d", lb.index, target.name, e, hi, e)


def _cmd_check_updates(args) -> int:
    from .hardware.fixed_learning import check_updates, format_update_table

    rows, info = check_updates(args.run, args.target, batch_size=args.batch_size, lr=args.lr, data_dir=args.data_dir, seed=args.seed)
    lrs = ",".join(f"{v:g}" for v in info["lrs"])
    print(f"{info['run']} on {info['target']}: one {info['dataset']} batch of {info['batch_size']}, SGD lr {lrs}, "
          f"beta {info['beta']:g} ({info['nudging']}), T1={info['t1']}, T2={info['t2']}")
    for line in format_update_table(rows):
        print(line)
    return 0


_COMMANDS = {"train": _cmd_train, "show": _cmd_show, "plot": _cmd_plot, "export": _cmd_export, "list": _cmd_list, "eval": _cmd_eval, "plot-dt": _cmd_plot_dt, "quantize": _cmd_quantize, "check-updates": _cmd_check_updates}
_COMMANDS["teacher"] = _cmd_teacher


def _cmd_compare(args) -> int:
    from .hardware.compare import (
        compare_run,
        format_table,
        parse_exponent_rules,
        parse_weight_bits,
        plot_compare,
        write_csv,
    )

    bits = parse_weight_bits(args.weight_bits)
    rules = parse_exponent_rules(args.exponent_rules)
    run = Path(args.run)
    out_dir = Path(args.out_dir) if args.out_dir else run.parent / f"{run.stem}_compare"
    res = compare_run(
        run, args.target, n_test=args.n_test, data_dir=args.data_dir, steps=args.steps, weight_bits=bits,
        profile_levels=args.profile_levels, lava_samples=args.lava_samples, tolerance=args.tolerance,
        batch_size=args.batch_size, progress=_tqdm_progress(not args.no_progress), exponent_rules=rules,
        percentile=args.percentile,
    )
    csv_path = write_csv(res, out_dir / "compare.csv")
    png_path = plot_compare(res, out_dir / "compare.png")
    print(format_table(res))
    print(f"table: {csv_path}")
    print(f"figure: {png_path}")
    return 0


_COMMANDS["compare"] = _cmd_compare


def _cmd_deploy(args) -> int:
    from .deploy import deploy

    if args.chunk < 1:
        raise ConfigError("--chunk must be >= 1")
    bars = []
    progress = None
    if not args.no_progress:
        from tqdm.auto import tqdm

        def progress(done):
            # created on the first report, i.e. after Lava's import: Lava must be the first
            # to set multiprocessing's start method, and a tqdm bar fixes it
            if not bars:
                bars.append(tqdm(total=args.n_samples, desc=f"{args.backend} {args.arith}", unit="sample",
                                 leave=False, dynamic_ncols=True, disable=_bars_disabled(True)))
            bars[0].update(done - bars[0].n)
    try:
        r = deploy(args.net, backend=args.backend, arith=args.arith, n_samples=args.n_samples, steps=args.steps,
                   dataset=args.dataset, data_dir=args.data_dir, chunk=args.chunk, progress=progress,
                   predictions=args.predictions)
    finally:
        for bar in bars:
            bar.close()
    print(f"{args.net}: {args.backend} {args.arith}, {r.n_samples} samples x {r.n_steps} steps")
    print(f"accuracy: {r.accuracy:.4f} ({int(round(r.accuracy * r.n_samples))}/{r.n_samples})")
    line = f"time: {r.seconds:.3f} s, {r.samples_per_second:.1f} samples/s"
    if r.lava_steps_per_second is not None:
        line += f", Lava {r.lava_steps_per_second:.0f} steps/s (incl. one load step per sample)"
    if r.compile_seconds > 0:
        line += f" (after a {r.compile_seconds:.2f} s warm-up / JIT compile, not counted)"
    print(line)
    if r.source_status:
        print(r.source_status)
    if r.predictions_path:
        print(f"predictions: {r.predictions_path}")
    return 0


_COMMANDS["deploy"] = _cmd_deploy


def _cmd_sweep(args) -> int:
    from .config import load_config
    from .sweep import make_grid, parse_seeds, parse_set, run_sweep

    base = load_config(args.config)
    base = base.replace(data={"data_dir": args.data_dir, "n_train": args.n_train, "n_test": args.n_test},
                        train={"epochs": args.epochs})
    dists = [d.strip() for d in args.dt_dists.split(",") if d.strip()]
    cells = make_grid(base, dists, parse_seeds(args.seeds), [parse_set(s, base) for s in args.set])
    bar = None
    if not args.no_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(cells), desc="sweep", unit="run", dynamic_ncols=True, disable=_bars_disabled(True))

    def progress(res):
        if bar is not None:
            bar.set_postfix_str(f"{res['name']}: {res['status']}")
            bar.update(1)

    try:
        results = run_sweep(base, cells, args.out, engine=args.engine, workers=args.workers,
                            scheduler=args.scheduler, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    counts = {}
    for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    for r in sorted(results, key=lambda r: r["name"]):
        line = f"{r['name']:<60} {r['status']:<9} acc {r['final_accuracy']:.4f}  ({r['seconds']:.0f} s)"
        print(line + (f"  {r['error']}" if "error" in r else ""))
    print(f"{len(results)} cells in {args.out}: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    if args.report:
        from .report import write_report

        write_report(args.out, args.report)
        print(f"report: {Path(args.report) / 'report.md'}")
    return 1 if counts.get("error") else 0


_COMMANDS["sweep"] = _cmd_sweep


def _cmd_resolve_seeds(args) -> int:
    from .resolve import more_seeds, parse_where, resolve_seeds

    where = parse_where(args.where)
    if args.dry_run:
        cells = more_seeds(args.sweep_dir, max_seeds=args.max_seeds, step=args.step, where=where)
        for c in cells:
            print(c.name)
        print(f"next round: {len(cells)} cells in {args.sweep_dir}")
        return 0
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    more_seeds(args.sweep_dir, max_seeds=args.max_seeds, step=args.step, where=where)  # bad input fails here
    rounds = resolve_seeds(args.sweep_dir, max_seeds=args.max_seeds, step=args.step, engine=args.engine,
                           workers=args.workers, scheduler=args.scheduler, where=where)
    errors = sum(r["status"] == "error" for rnd in rounds for r in rnd)
    print(f"{len(rounds)} rounds, {sum(len(r) for r in rounds)} cells added to {args.sweep_dir}"
          + (f", {errors} failed" if errors else ""))
    if args.report_dir:
        from .report import write_report

        write_report(args.sweep_dir, args.report_dir)
        print(f"report: {Path(args.report_dir) / 'report.md'}")
    return 1 if errors else 0


_COMMANDS["resolve-seeds"] = _cmd_resolve_seeds


def _cmd_archive(args) -> int:
    from .archive import archive_sweep

    n = archive_sweep(args.sweep_dir, args.archive)
    print(f"{args.archive}: {n['added']} cells added, {n['updated']} updated, {n['kept']} already archived"
          + (f", {n['running']} still running left out" if n["running"] else ""))
    return 0


def _cmd_restore(args) -> int:
    from .archive import restore_archive

    n = restore_archive(args.archive, args.sweep_dir)
    print(f"{args.sweep_dir}: {n['restored']} cells restored from {args.archive}, {n['present']} already present")
    return 0


_COMMANDS["archive"] = _cmd_archive
_COMMANDS["restore"] = _cmd_restore


def _cmd_report(args) -> int:
    from .report import write_report

    data = write_report(args.sweep_dir, args.out)
    found = sum(1 for r in data["runs"] if r["found"])
    print(f"report of {args.sweep_dir} ({found}/{len(data['runs'])} runs, {len(data['groups'])} groups): "
          f"{Path(args.out) / 'report.md'}")
    return 0


_COMMANDS["report"] = _cmd_report


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so that the command unwinds (atomic writes stay atomic)."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def _set_threads(n):
    """--threads N: N BLAS threads for the whole command, and N Numba threads (at most what Numba started)."""
    import contextlib

    if n is None:
        return contextlib.nullcontext()
    if n < 1:
        raise ConfigError(f"--threads must be >= 1, got {n}")
    try:
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    except ImportError:  # pragma: no cover - numba is a dependency
        pass
    from ._threads import blas_threads

    return blas_threads(n)


def _cmd_continual(args) -> int:
    from .cli_continual import cmd_continual

    return cmd_continual(args, _tqdm_progress(not args.no_progress))


_COMMANDS["continual"] = _cmd_continual


def main(argv=None) -> int:
    import signal

    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        parser.print_help()
        return 2
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not args.verbose:
        logging.getLogger("numba").setLevel(logging.WARNING)
    kept = "; the last epoch checkpoint is kept (continue with --resume)" if args.command == "train" else ""
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (an embedding application): leave SIGTERM alone
        pass
    try:
        if args.command == "train" and args.threads is not None and getattr(args, "blas_threads", None) is None \
                and not args.resume:
            args.blas_threads = args.threads  # training sets its own BLAS count: --threads is it
        with _set_threads(args.threads):
            return _COMMANDS[args.command](args)
    except NeuroHTSError as exc:
        print(f"neuro-hts: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"neuro-hts: interrupted{kept}", file=sys.stderr)
        return 130
    except _Terminated:
        print(f"neuro-hts: terminated (SIGTERM){kept}", file=sys.stderr)
        return 143
    except OSError as exc:
        print(f"neuro-hts: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print("neuro-hts: error: out of memory (a smaller --arch, --batch-size or --n-test fits)", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
