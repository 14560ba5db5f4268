"""Speed of EP training inside Lava against the Numba fixed-point engine, with a bit-identity check.

One network (``--arch``, random initialisation, Loihi 2 grid, plain SGD), the same
``--samples`` training samples in batches of ``--batch``:

1. ``lava``: :func:`neuro_hts.lava.learning.train_lava` with one batch per ``run()`` call;
   the first call includes Lava's compile and process start, so it is reported apart and
   the steady rate is taken over the other calls. Wall time of the whole call (build,
   compile, run, reading the weights back with ``Var.get``, stop) is reported too.
2. ``numba``: :meth:`FixedEngine.train_step` per batch on the same batches, after one
   warm-up batch on a copy (Numba compilation).

The final integer weights of both are compared (bit identity). MNIST images when
``--data-dir`` holds them, else the embedded 8x8 digits (``--arch 64-...``).

Usage::

    .venv/bin/python scripts/bench_lava_learning.py --data-dir /work/shared/data --arch 784-64-10 \
        --samples 100 --batch 10 --t1 30 --t2 10 --nudging symmetric
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--arch", default="784-64-10")
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--t1", type=int, default=30)
    p.add_argument("--t2", type=int, default=10)
    p.add_argument("--beta", type=float, default=0.5)
    p.add_argument("--nudging", default="symmetric", choices=["one-sided", "symmetric"])
    p.add_argument("--rounding", default="stochastic", choices=["nearest", "stochastic"])
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from neuro_hts.lava import import_lava

    import_lava()
    from neuro_hts.algorithms import make_algorithm
    from neuro_hts.config import Config
    from neuro_hts.data import load_dataset, one_hot
    from neuro_hts.hardware.fixed_engine import FixedEngine
    from neuro_hts.learning import make_optimizer
    from neuro_hts.lava.learning import train_lava
    from neuro_hts.network import init_network

    arch = [int(v) for v in args.arch.split("-")]
    dataset = "mnist" if arch[0] == 784 else "digits"
    data = load_dataset(dataset, args.data_dir, n_train=args.samples, n_test=1)
    x = np.ascontiguousarray(data.x_train[: args.samples], dtype=np.float32)
    y = one_hot(data.y_train[: args.samples], data.n_classes, np.float32)
    cfg = Config.from_dict({
        "model": {"arch": arch, "activation": "hard_sigmoid"},
        "dt": {"dist": "lognormal", "mean": 0.3, "std": 0.1, "dt_min": 0.01, "dt_max": 0.9, "layers": "hidden"},
        "train": {"arith": "fixed", "target": "loihi2", "optimizer": "sgd", "lr": [args.lr], "batch_size": args.batch,
                  "t1": args.t1, "t2": args.t2, "beta": args.beta, "nudging": args.nudging,
                  "update_rounding": args.rounding, "seed": args.seed, "epochs": 1}})
    eng = FixedEngine(cfg, make_optimizer(cfg.train, len(arch) - 1))
    net = init_network(cfg, np.float32)
    eng.prepare(net)
    start = eng.bundle(net)
    alg = make_algorithm(cfg)
    rng = np.random.default_rng([args.seed, 7])

    marks = []
    t0 = time.perf_counter()
    r = train_lava(start, x, y, batch_size=args.batch, algorithm=alg, lrs=eng.inner.lrs, rounding=args.rounding, rng=copy.deepcopy(rng), chunk=1,
                   progress=lambda done: marks.append((done, time.perf_counter())))
    lava_wall = time.perf_counter() - t0

    warm = copy.deepcopy(net)
    eng.train_step(warm, x[: args.batch], y[: args.batch], alg, None, copy.deepcopy(rng))  # JIT warm-up
    t0 = time.perf_counter()
    for s in range(0, args.samples, args.batch):
        eng.train_step(net, x[s : s + args.batch], y[s : s + args.batch], alg, None, rng)
    numba_s = time.perf_counter() - t0
    final = eng.bundle(net)
    same = all(np.array_equal(m, lb.weight_mantissa) and np.array_equal(b, lb.bias)
               for m, b, lb in zip(r.weights, r.biases, final.layers))

    block = r.n_steps // args.samples
    first_n, first_t = marks[0]
    rest_n = args.samples - first_n
    # the first call's time is r.seconds minus the others' (marks are taken after each call)
    rest_t = marks[-1][1] - first_t
    steady = rest_n / rest_t if rest_t > 0 else float("nan")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
          f"NumPy {np.__version__}")
    print(f"{dataset} {args.arch}, {args.samples} samples, batch {args.batch}, t1 {args.t1}, t2 {args.t2}, "
          f"{args.nudging}, {args.rounding}: {block} Lava steps per sample, {2 * (len(arch) - 1) + 3} processes")
    print(f"lava: run() total {r.seconds:.2f} s; first run() (compile + start + 1 batch) "
          f"{r.seconds - rest_t:.2f} s; steady {steady:.2f} samples/s ({steady * block:.0f} steps/s); "
          f"whole call incl. weight read-back and stop {lava_wall:.2f} s")
    print(f"numba fixed engine: {numba_s:.3f} s, {args.samples / numba_s:.1f} samples/s")
    print(f"numba / lava (steady): {args.samples / numba_s / steady:.0f}x")
    print(f"final integer weights and biases bit-identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
