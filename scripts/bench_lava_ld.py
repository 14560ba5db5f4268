"""The precision cost of the learning-dense variant: per-layer cosine with the exact integer EP update.

One network (``--arch``, random initialisation, Loihi 2 grid, plain SGD) trained by
:func:`neuro_hts.lava.learning.train_lava_ld` (Lava's LearningDense, the three-factor EP
rule) on ``--batches`` batches of ``--batch`` MNIST images (or the embedded digits for
``--arch 64-...``); for every batch, the exact integer update (``FixedEngine.train_step``,
``--rounding``) from the same weights on the same batch
(:func:`neuro_hts.lava.learning.compare_ld_updates`). Prints the cosine and the norm ratio
per layer and batch, and their mean and minimum.

Usage::

    .venv/bin/python scripts/bench_lava_ld.py --data-dir /work/shared/data --arch 784-64-10 \\
        --batches 10 --batch 10 --t1 20 --t2 5 --nudging symmetric
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--arch", default="784-64-10")
    p.add_argument("--batches", type=int, default=10)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--t1", type=int, default=20)
    p.add_argument("--t2", type=int, default=5)
    p.add_argument("--beta", type=float, default=0.5)
    p.add_argument("--nudging", default="symmetric", choices=["one-sided", "symmetric"])
    p.add_argument("--rounding", default="nearest", choices=["nearest", "stochastic"])
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--x1-tau", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from neuro_hts.lava import import_lava

    import_lava()
    from neuro_hts.algorithms import make_algorithm
    from neuro_hts.config import Config
    from neuro_hts.data import load_dataset, one_hot
    from neuro_hts.hardware.fixed_engine import FixedEngine
    from neuro_hts.learning import make_optimizer
    from neuro_hts.lava.learning import compare_ld_updates
    from neuro_hts.network import init_network

    arch = [int(v) for v in args.arch.split("-")]
    n = args.batches * args.batch
    dataset = "mnist" if arch[0] == 784 else "digits"
    data = load_dataset(dataset, args.data_dir, n_train=n, n_test=1)
    x = np.ascontiguousarray(data.x_train[:n], dtype=np.float32)
    y = one_hot(data.y_train[:n], data.n_classes, np.float32)
    cfg = Config.from_dict({
        "model": {"arch": arch, "activation": "hard_sigmoid"},
        "dt": {"dist": "lognormal", "mean": 0.3, "std": 0.1, "dt_min": 0.01, "dt_max": 0.9, "layers": "hidden"},
        "train": {"arith": "fixed", "target": "loihi2", "optimizer": "sgd", "lr": [args.lr], "batch_size": args.batch,
                  "t1": args.t1, "t2": args.t2, "beta": args.beta, "nudging": args.nudging,
                  "update_rounding": args.rounding, "seed": args.seed, "epochs": 1}})
    eng = FixedEngine(cfg, make_optimizer(cfg.train, len(arch) - 1))
    net = init_network(cfg, np.float32)
    eng.prepare(net)
    res = compare_ld_updates(eng, net, x, y, make_algorithm(cfg), x1_tau=args.x1_tau, rng_seed=args.seed)
    print(f"{dataset} {args.arch}, {args.batches} batches of {args.batch}, t1 {args.t1}, t2 {args.t2}, {args.nudging}, "
          f"lr {args.lr}, x1_tau {args.x1_tau}, exact rounding {args.rounding}, seed {args.seed}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    for b, (c, r) in enumerate(zip(res["cos"], res["norm_ratio"])):
        print(f"batch {b}: cos " + " ".join(f"W{l + 1} {v:.3f}" for l, v in enumerate(c))
              + "  |dW_ld|/|dW_exact| " + " ".join(f"{v:.2f}" for v in r))
    print("mean cos " + " ".join(f"W{l + 1} {v:.3f}" for l, v in enumerate(res["mean"]))
          + "; min " + " ".join(f"W{l + 1} {v:.3f}" for l, v in enumerate(res["min"])))
    print("baseline, the exact path's stochastically rounded step: mean cos "
          + " ".join(f"W{l + 1} {v:.3f}" for l, v in enumerate(res["mean_sr"])))
    print("summed over the batches: cos " + " ".join(f"W{l + 1} {v:.3f}" for l, v in enumerate(res["cum"]))
          + "; the exact path's stochastically rounded steps: "
          + " ".join(f"W{l + 1} {v:.3f}" for l, v in enumerate(res["cum_sr"])))
    print("mean |dW_ld|/|dW_exact| " + " ".join(f"{v:.2f}" for v in np.nanmean(res["norm_ratio"], axis=0)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
