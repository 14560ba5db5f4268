"""The ``neuro-hts continual`` subcommand: its parser and handler (registered by :mod:`neuro_hts.cli`).

::

    neuro-hts continual --config models/continual_mnist.toml --method src --out DIR [--seeds 0-2]
    neuro-hts continual --config models/continual_mnist.toml --search 12 --out DIR   # sleep search
    neuro-hts continual --config models/continual_mnist.toml --search 100 --search-space wide --out DIR
"""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError

__all__ = ["add_continual_parser", "cmd_continual"]


def add_continual_parser(sub) -> None:
    from .continual import METHODS, SEARCH_SPACES, TRAINERS

    p = sub.add_parser("continual", help="class-incremental learning (5 tasks x 2 classes): baselines and sleep (SRC)")
    p.add_argument("--config", required=True, help="TOML config with [continual] and [sleep] (models/continual_*.toml)")
    p.add_argument("--method", choices=METHODS, help="default: the config's [continual] method")
    p.add_argument("--trainer", choices=TRAINERS, help="ep (default) or bptt: the same network trained by BPTT")
    p.add_argument("--out", required=True, help="output directory (resumes the run it holds)")
    p.add_argument("--seeds", help="several seeds, e.g. 0-2: one sub-directory each, mean and spread in summary.json")
    p.add_argument("--seed", type=int, help="one seed (default: the config's train.seed)")
    p.add_argument("--epochs", type=int, help="epochs per task")
    p.add_argument("--rehearsal-fraction", type=float, help="fraction of every old task's data rehearsed (e.g. 0.05)")
    p.add_argument("--ewc-lambda", type=float)
    p.add_argument("--dt-dist", help="dt law of the hidden layers (constant, lognormal, ...)")
    p.add_argument("--data-dir", help="directory holding the idx .gz files")
    p.add_argument("--n-train", type=int)
    p.add_argument("--n-test", type=int)
    p.add_argument("--validation", type=float, help="test on this held-out fraction of the training set instead")
    p.add_argument("--probe", action="store_true", default=None,
                   help="after every task also the linear-probe accuracy of the last hidden layer (continual.probe)")
    p.add_argument("--search", type=int, metavar="N", help="search the sleep parameters: N seeded candidates on a validation split")
    p.add_argument("--search-seed", type=int, default=0)
    p.add_argument("--search-space", choices=SEARCH_SPACES, default="around",
                   help="around: factors of the config's [sleep] values (default); wide: absolute ranges, g, window and schedule too")
    p.add_argument("--force", action="store_true", help="start over in an --out that holds a run with another config")


def _config(args):
    from .continual import load_continual_config

    cfg = load_continual_config(args.config)
    return cfg.replace(
        continual={"method": args.method, "trainer": args.trainer, "epochs": args.epochs,
                   "rehearsal_fraction": args.rehearsal_fraction, "ewc_lambda": args.ewc_lambda,
                   "validation": args.validation, "probe": args.probe},
        train={"seed": args.seed},
        dt={"dist": args.dt_dist},
        data={"data_dir": args.data_dir, "n_train": args.n_train, "n_test": args.n_test},
    )


def cmd_continual(args, progress=None) -> int:
    from .continual import run_protocol, run_seeds, search_sleep

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; continual writes a directory")
    if Path(args.config).resolve().parent == out.resolve():
        raise ConfigError("--out must not be the directory of --config (outputs never replace inputs)")
    cfg = _config(args)
    if args.search is not None:
        best = search_sleep(cfg, out, args.search, search_seed=args.search_seed, progress=progress,
                            space=args.search_space)
        print(f"sleep search ({best['n_candidates']} candidates, validation {best['validation']}): best candidate "
              f"{best['candidate']} scores {best['score']:.4f}")
        print("[sleep] " + ", ".join(f"{k} = {v}" for k, v in best["sleep"].items()))
        print(f"table: {out / 'search.csv'}   best: {out / 'best.json'}")
        return 0
    if args.seeds:
        if args.seed is not None:
            raise ConfigError("pass --seed or --seeds, not both")
        from .sweep import parse_seeds

        s = run_seeds(cfg, out, parse_seeds(args.seeds), progress=progress, force=args.force)
        print(f"{s['dataset']} {s['method']} ({s['trainer']}), seeds {s['seeds']}: final 10-way accuracy "
              f"{s['final_accuracy']:.4f} +- {s['final_accuracy_std']:.4f} (min {s['final_accuracy_min']:.4f}, "
              f"max {s['final_accuracy_max']:.4f})")
    else:
        s = run_protocol(cfg, out, progress=progress, force=args.force)
        print(f"{s['dataset']} {s['method']} ({s['trainer']}), seed {s['seed']}: final 10-way accuracy "
              f"{s['final_accuracy']:.4f} after {s['tasks_completed']} tasks ({s['seconds']:.0f} s)")
        print("after task: " + "  ".join(f"{k + 1}: {v:.4f}" for k, v in enumerate(s["overall_accuracy"])))
    print(f"results: {out}")
    return 0
