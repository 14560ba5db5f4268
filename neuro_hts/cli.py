"""Command-line interface: ``neuro-hts`` (also ``python -m neuro_hts``).

Only the CLI configures logging and progress bars. Errors a user can cause print one
line on stderr and exit with code 2; Ctrl-C exits 130 with the last checkpoint kept.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .errors import ConfigError, NeuroHTSError

__all__ = ["main", "build_parser"]

logger = logging.getLogger("neuro_hts.cli")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2)."""

    def error(self, message):  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message}\n")


def _tqdm_progress(enabled: bool):
    from tqdm.auto import tqdm

    def factory(total, desc):
        return tqdm(total=total, desc=desc, unit="batch", leave=False, disable=(None if enabled else True), dynamic_ncols=True)

    return factory


def _names(registry_path: str) -> list[str]:
    """Choice list of a registry (``"module:NAME"``), so the CLI never keeps its own tuple."""
    import importlib

    module, _, attr = registry_path.partition(":")
    return list(getattr(importlib.import_module(f"neuro_hts.{module}"), attr).names())


def _add_train_args(p):
    p.add_argument("--config", help="TOML config (models/*.toml); flags override it")
    p.add_argument("--dataset", choices=_names("data:DATASETS"))
    p.add_argument("--data-dir", help="directory holding the idx .gz files (MNIST / Fashion-MNIST)")
    p.add_argument("--n-train", type=int, help="use only the first N training samples")
    p.add_argument("--n-test", type=int, help="use only the first N test samples")
    p.add_argument("--arch", help="layer sizes, e.g. 784-512-10")
    p.add_argument("--form", choices=_names("dynamics:FORMS"))
    p.add_argument("--activation", choices=_names("activations:ACTIVATIONS"))
    p.add_argument("--output", choices=_names("dynamics:OUTPUTS"))
    p.add_argument("--dt-dist", help="a dt law: " + ", ".join(_names("distributions:_REGISTRY")))
    p.add_argument("--dt-mean", type=float)
    p.add_argument("--dt-std", type=float)
    p.add_argument("--dt-min", type=float)
    p.add_argument("--dt-max", type=float)
    p.add_argument("--dt-layers", help="'hidden' (default), 'all', 'none' or indices like 1,2")
    p.add_argument("--dt-per-channel", action="store_true", default=None,
                   help="C x H x W layers: one dt per feature map instead of one per unit")
    p.add_argument("--algorithm", choices=_names("algorithms:ALGORITHMS"), help="learning rule (default ep)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--t1", type=int, help="free-phase steps")
    p.add_argument("--t1-tol", type=float, help="end the free phase once every sample's residual is <= this (at most --t1 steps)")
    p.add_argument("--t2", type=int, help="nudged (ep) or clamped (chl) phase steps")
    p.add_argument("--beta", type=float)
    p.add_argument("--nudging", choices=list(_names_nudging()))
    p.add_argument("--chl-gamma", type=float, help="CHL's feedback gain on every top-down term (default 1)")
    p.add_argument("--clamp-delay", type=int, help="CHL: steps of the clamped phase run as free before clamping (default 0)")
    p.add_argument("--adapt-steps", type=int, help="adjusted adaptation: K steps pulled toward the free state (0: off)")
    p.add_argument("--adapt-coe", type=float, help="adjusted adaptation's mixing coefficient c (default 0.1)")
    p.add_argument("--optimizer", choices=_names("learning:OPTIMIZERS"))
    p.add_argument("--lr", help="learning rate, or one per layer: 5e-4,5e-4")
    p.add_argument("--momentum", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--backend", choices=_names("backends:BACKENDS"))
    p.add_argument("--blas-threads", type=int, help="BLAS threads while training (default 1; 0: the library's default)")
    p.add_argument("--arith", choices=_names("engines:ENGINES"), help="'fixed': train in a hardware target's integer arithmetic (needs --target)")
    p.add_argument("--target", help="hardware target for --arith fixed: a name (loihi2) or a .toml path")
    p.add_argument("--update-rounding", choices=["nearest", "stochastic"], help="rounding of fixed-point weight updates (default stochastic)")


def _names_nudging():
    from .algorithms import NUDGINGS

    return NUDGINGS


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="neuro-hts", description="Equilibrium Propagation with heterogeneous per-neuron time steps (HTS-EP)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train an HTS-EP network; checkpoints every epoch")
    _add_train_args(p)
    p.add_argument("--out", help="run file to write (HDF5)")
    p.add_argument("--resume", metavar="RUN.h5", help="continue an interrupted run (optionally with a larger --epochs)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")

    p = sub.add_parser("list", help="what is registered: connection kinds, costs, algorithms, dt laws, engines, targets, ...")

    p = sub.add_parser("eval", help="test accuracy of a run file")
    p.add_argument("run", help="run file (HDF5)")
    p.add_argument("--dataset", choices=_names("data:DATASETS"))
    p.add_argument("--data-dir")
    p.add_argument("--backend", choices=_names("backends:BACKENDS"))
    p.add_argument("--t1", type=int, help="free-phase steps (default: the run's)")
    p.add_argument("--predictions", metavar="OUT.npy", help="save the predicted class of every test sample")

    p = sub.add_parser("plot-dt", help="histograms of dt_i for every distribution (paper's Figure 1)")
    p.add_argument("--out", required=True, help="PNG file")
    p.add_argument("--dt-mean", type=float, default=0.3)
    p.add_argument("--dt-std", type=float, default=0.1)
    p.add_argument("--dt-min", type=float, default=1e-3)
    p.add_argument("--dt-max", type=float, default=0.5)
    p.add_argument("--n", type=int, default=100_000, help="samples per distribution")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("quantize", help="design-rule check a run and write its fixed-point deploy bundle")
    p.add_argument("run", help="run file (HDF5)")
    p.add_argument("--target", required=True, help="hardware target: a name (loihi2) or a .toml path")
    p.add_argument("--out", required=True, help="bundle file to write (HDF5)")
    p.add_argument("--profile-mode", action="store_true", help="bin each core's decays to the target's decay-profile limit")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")

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
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--out-dir", help="where compare.csv and compare.png go (default: <run stem>_compare/ next to the run)")

    p = sub.add_parser("check-updates", help="fixed-point vs float EP weight update of a run on one training batch")
    p.add_argument("run", help="run file (HDF5)")
    p.add_argument("--target", required=True, help="hardware target: a name (loihi2) or a .toml path")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--lr", type=float, help="plain-SGD learning rate of the compared update (default: the run's)")
    p.add_argument("--data-dir")
    p.add_argument("--seed", type=int, default=0, help="batch choice and stochastic rounding")

    from .cli_continual import add_continual_parser

    add_continual_parser(sub)
    return parser


def _config_from_args(args):
    from .config import Config, load_config, parse_arch

    cfg = load_config(args.config) if args.config else Config()
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
        },
        chl={"gamma": args.chl_gamma, "clamp_delay": args.clamp_delay},
        adapt={"steps": args.adapt_steps, "coe": args.adapt_coe},
        data={"dataset": args.dataset, "data_dir": args.data_dir, "n_train": args.n_train, "n_test": args.n_test},
    )


#: train flags that --resume cannot change (the stored config is used; only --epochs may grow)
_RESUME_FIXED = (
    "config", "dataset", "data_dir", "n_train", "n_test", "arch", "form", "activation", "output",
    "dt_dist", "dt_mean", "dt_std", "dt_min", "dt_max", "dt_layers", "dt_per_channel", "batch_size", "t1", "t2",
    "beta", "nudging", "optimizer", "lr", "momentum", "seed", "backend",
    "arith", "target", "update_rounding", "algorithm", "t1_tol", "chl_gamma", "clamp_delay", "adapt_steps",
    "adapt_coe", "blas_threads",
)


def _cmd_train(args) -> int:
    from .config import Config
    from .training import train

    progress = _tqdm_progress(not args.no_progress)
    if args.resume:
        if args.out and Path(args.out) != Path(args.resume):
            raise ConfigError("--resume continues the run in place; do not pass a different --out")
        ignored = [k for k in _RESUME_FIXED if getattr(args, k) is not None]
        if ignored:
            flags = ", ".join("--" + k.replace("_", "-") for k in ignored)
            raise ConfigError(f"--resume uses the run's stored config; only --epochs may change, not {flags}")
        from .runfile import load_run

        stored = load_run(args.resume).config
        epochs = args.epochs if args.epochs is not None else stored.train.epochs
        cfg = Config().replace(train={"epochs": epochs})
        out = Path(args.resume)
        state = train(cfg, out, resume=True, progress=progress)
    else:
        if not args.out:
            raise ConfigError("train needs --out RUN.h5 (or --resume RUN.h5)")
        out = Path(args.out)
        if out.exists() and not args.force:
            raise ConfigError(f"{out} exists; pass --resume {out} to continue it or --force to overwrite")
        cfg = _config_from_args(args)
        state = train(cfg, out, progress=progress)
    hist = state.history
    acc = hist["test_accuracy"][-1] if hist.get("test_accuracy") else float("nan")
    print(f"trained {state.epochs_completed} epochs on {state.config.data.dataset}: test accuracy {acc:.4f}")
    print(f"run file: {out}")
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
    from .data import load_dataset
    from .engines import make_engine
    from .learning import make_optimizer
    from .runfile import load_run

    state = load_run(args.run)
    cfg = state.config
    dataset = args.dataset or cfg.data.dataset
    data_dir = args.data_dir or cfg.data.data_dir
    images = len(state.network.shapes[0]) == 3  # an image input layer: keep (N, C, H, W)
    data = load_dataset(dataset, data_dir, n_test=cfg.data.n_test if dataset == cfg.data.dataset else None, images=images)
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
    from .hardware.drc import run_design_rules
    from .hardware.quantize import quantize_network
    from .runfile import load_run

    out = Path(args.out)
    if out.exists() and not args.force:
        raise ConfigError(f"{out} exists; pass --force to overwrite it")
    target = load_target(args.target)
    state = load_run(args.run)
    net = state.network
    violations = run_design_rules(net, target, profile_mode=args.profile_mode)
    if violations:
        for v in violations:
            print(f"neuro-hts: error: {v}", file=sys.stderr)
        return 2
    source = {
        "run_path": str(Path(args.run).resolve()),
        "run_sha256": file_sha256(args.run),
        "run_config": state.config.to_json(),
        "epochs_completed": state.epochs_completed,
    }
    bundle = quantize_network(net, target, profile_mode=args.profile_mode, source=source)
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
    print(f"bundle: {out}")
    return 0


def _cmd_check_updates(args) -> int:
    from .hardware.fixed_learning import check_updates, format_update_table

    rows, info = check_updates(args.run, args.target, batch_size=args.batch_size, lr=args.lr, data_dir=args.data_dir, seed=args.seed)
    lrs = ",".join(f"{v:g}" for v in info["lrs"])
    print(f"{info['run']} on {info['target']}: one {info['dataset']} batch of {info['batch_size']}, SGD lr {lrs}, "
          f"beta {info['beta']:g} ({info['nudging']}), T1={info['t1']}, T2={info['t2']}")
    for line in format_update_table(rows):
        print(line)
    return 0


_COMMANDS = {"train": _cmd_train, "list": _cmd_list, "eval": _cmd_eval, "plot-dt": _cmd_plot_dt, "quantize": _cmd_quantize, "check-updates": _cmd_check_updates}


def _cmd_compare(args) -> int:
    from .hardware.compare import (
        compare_run,
        format_table,
        parse_weight_bits,
        plot_compare,
        write_csv,
    )

    bits = parse_weight_bits(args.weight_bits)
    run = Path(args.run)
    out_dir = Path(args.out_dir) if args.out_dir else run.parent / f"{run.stem}_compare"
    res = compare_run(
        run, args.target, n_test=args.n_test, data_dir=args.data_dir, steps=args.steps, weight_bits=bits,
        profile_levels=args.profile_levels, lava_samples=args.lava_samples, tolerance=args.tolerance,
        batch_size=args.batch_size, progress=_tqdm_progress(not args.no_progress),
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
                                 leave=False, dynamic_ncols=True))
            bars[0].update(done - bars[0].n)
    try:
        r = deploy(args.net, backend=args.backend, arith=args.arith, n_samples=args.n_samples, steps=args.steps,
                   dataset=args.dataset, data_dir=args.data_dir, chunk=args.chunk, progress=progress)
    finally:
        for bar in bars:
            bar.close()
    print(f"{args.net}: {args.backend} {args.arith}, {r.n_samples} samples x {r.n_steps} steps")
    print(f"accuracy: {r.accuracy:.4f} ({int(round(r.accuracy * r.n_samples))}/{r.n_samples})")
    line = f"time: {r.seconds:.3f} s, {r.samples_per_second:.1f} samples/s"
    if r.lava_steps_per_second is not None:
        line += f", Lava {r.lava_steps_per_second:.0f} steps/s (incl. one load step per sample)"
    print(line)
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

        bar = tqdm(total=len(cells), desc="sweep", unit="run", dynamic_ncols=True)

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


def _cmd_report(args) -> int:
    from .report import write_report

    data = write_report(args.sweep_dir, args.out)
    found = sum(1 for r in data["runs"] if r["found"])
    print(f"report of {args.sweep_dir} ({found}/{len(data['runs'])} runs, {len(data['groups'])} groups): "
          f"{Path(args.out) / 'report.md'}")
    return 0


_COMMANDS["report"] = _cmd_report


def _cmd_continual(args) -> int:
    from .cli_continual import cmd_continual

    return cmd_continual(args, _tqdm_progress(not args.no_progress))


_COMMANDS["continual"] = _cmd_continual


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not args.verbose:
        logging.getLogger("numba").setLevel(logging.WARNING)
    try:
        return _COMMANDS[args.command](args)
    except NeuroHTSError as exc:
        print(f"neuro-hts: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        kept = "; the last epoch checkpoint is kept (continue with --resume)" if args.command == "train" else ""
        print(f"neuro-hts: interrupted{kept}", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"neuro-hts: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
