"""Cost of a dendritic EP batch vs a standard EP batch of the same layer sizes, in one run (issue 13).

Builds the two nets of ``models/mnist_dendritic.toml`` and ``models/mnist_dendritic_std.toml``
(784-256-10; ``--deep``: the 784-256-256-10 pair), the README schedule (symmetric beta 0.1,
T1 60, T2 12, batch 64, SGD momentum 0.9), and times ``--batches`` training steps of each,
interleaved in rounds so that a busy machine slows both alike, on each ``--backends``.
Prints seconds per batch, the projected seconds per 60,000-image epoch and the ratio
dendritic / standard (the issue's budget: at most 2)::

    python scripts/bench_dendritic.py [--data-dir DIR] [--deep] [--batches 20] [--backends numba,numpy]

Without MNIST (no --data-dir / $NEURO_HTS_DATA_DIR) it uses uniform random images.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from neuro_hts._threads import blas_threads
from neuro_hts.algorithms import make_algorithm
from neuro_hts.config import load_config
from neuro_hts.engines import make_engine
from neuro_hts.learning import make_optimizer
from neuro_hts.network import init_network

MODELS = Path(__file__).resolve().parents[1] / "models"


def _images(data_dir, n):
    try:
        from neuro_hts.data import load_dataset, one_hot

        d = load_dataset("mnist", data_dir, n_train=n, n_test=1)
        return np.asarray(d.x_train), one_hot(d.y_train, 10, np.float64), "mnist"
    except Exception:  # noqa: BLE001 - a benchmark falls back to random images
        rng = np.random.default_rng(0)
        return rng.uniform(0, 1, (n, 784)), np.eye(10)[rng.integers(0, 10, n)], "random"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir")
    ap.add_argument("--deep", action="store_true")
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--backends", default="numba,numpy")
    args = ap.parse_args()
    stem = "mnist_dendritic_deep" if args.deep else "mnist_dendritic"
    cfgs = {"standard": load_config(MODELS / f"{stem}_std.toml"), "dendritic": load_config(MODELS / f"{stem}.toml")}
    bs = cfgs["standard"].train.batch_size
    x, y, source = _images(args.data_dir, bs * args.batches)
    print(f"{stem}: {'-'.join(map(str, cfgs['dendritic'].model.arch))}, batch {bs}, {args.batches} batches x "
          f"{args.rounds} rounds, {source} images")
    for backend in args.backends.split(","):
        runs = {}
        for name, cfg in cfgs.items():
            cfg = cfg.replace(train={"backend": backend})
            engine = make_engine(cfg, make_optimizer(cfg.train, len(cfg.model.arch) - 1))
            net = init_network(cfg, engine.dtype)
            runs[name] = (engine, net, make_algorithm(cfg), x.astype(engine.dtype), y.astype(engine.dtype))
        times = {name: [] for name in runs}
        with blas_threads(1):
            for name, (engine, net, algo, xx, yy) in runs.items():  # warm-up (compilation)
                engine.train_step(net, xx[:bs], yy[:bs], algo)
            for _ in range(args.rounds):
                for name, (engine, net, algo, xx, yy) in runs.items():
                    t0 = time.perf_counter()
                    for b in range(args.batches):
                        engine.train_step(net, xx[b * bs : (b + 1) * bs], yy[b * bs : (b + 1) * bs], algo)
                    times[name].append((time.perf_counter() - t0) / args.batches)
        per = {name: min(t) for name, t in times.items()}
        epoch = {name: per[name] * 60000 / bs for name in per}
        print(f"  {backend:6s} standard {per['standard'] * 1e3:8.2f} ms/batch ({epoch['standard']:7.1f} s/epoch)   "
              f"dendritic {per['dendritic'] * 1e3:8.2f} ms/batch ({epoch['dendritic']:7.1f} s/epoch)   "
              f"ratio {per['dendritic'] / per['standard']:.2f}")


if __name__ == "__main__":
    main()
