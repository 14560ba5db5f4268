"""Training and inference throughput of a convolutional config, NumPy reference against the fast path.

Workload: the config's network, batch size, phases (T1, T2, nudging, beta), Adam and learning
rates (e.g. models/bench_cnn_laborieux.toml, Laborieux et al.'s MNIST CNN), on the first
``--batches`` batches of the config's dataset (MNIST from ``--data-dir``; synthetic uniform
images with ``--synthetic``). For each backend (``--backends``, default ``numpy,numba``: the
float64 reference and the float32 fast path), in turn, repeat after repeat:

* training: ``--batches`` calls of ``FloatEngine.train_step`` (every phase, the EP update,
  Adam), the path ``neuro_hts.training.train`` takes;
* inference: the free phase (T1 steps) and the argmax on the same batches
  (``FloatEngine.evaluate`` with the training batch size).

A warm-up per backend (2 samples, 2 steps per phase, on a copy of the network) is not timed
(Numba compiles or loads its cache there).
Prints, per backend, ``<backend> train: <samples/s> samples/s`` and ``<backend> infer: ...``
(the median over ``--repeats``), then lines starting with ``#``: ranges, the fast/reference
ratios (same run, same batches), the command, the machine, and its float32 gemm rate (one
1024^3 sgemm, one thread) as a gauge of how loaded the machine was. ``--t1`` / ``--t2``
shorten the phases (printed; samples/s then are not the config's). ``--local-beta`` (and
``--local-readout``) add layer-wise error costs (``[local]``, docs/ALGORITHMS.md) to the config.

Usage::

    .venv/bin/python scripts/bench_conv.py --config models/bench_cnn_laborieux.toml --data-dir /work/shared/data \\
        [--backends numpy,numba] [--batches 2] [--repeats 3] [--blas-threads 1] [--local-beta 0.5]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: label -> (backend name, dtype)
BACKENDS = {"numpy": ("numpy", np.float64), "numpy-float32": ("numpy", np.float32), "numba": ("numba", np.float32),
            "numba-float64": ("numba", np.float64)}


def sgemm_gflops() -> float:
    a = np.random.default_rng(0).uniform(-1, 1, (1024, 1024)).astype(np.float32)
    c = a @ a
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        np.dot(a, a, out=c)
        best = min(best, time.perf_counter() - t)
    return 2 * 1024**3 / best / 1e9


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu}, {os.cpu_count()} cores, load average {load:.1f}, Python {platform.python_version()}, NumPy {np.__version__}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--data-dir", default=os.environ.get("NEURO_HTS_DATA_DIR"))
    p.add_argument("--synthetic", action="store_true", help="uniform random images instead of the dataset")
    p.add_argument("--backends", default="numpy,numba")
    p.add_argument("--batches", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--t1", type=int)
    p.add_argument("--t2", type=int)
    p.add_argument("--blas-threads", type=int, default=1)
    p.add_argument("--local-beta", type=float, help="layer-wise error costs on the hidden layers ([local] beta)")
    p.add_argument("--local-readout", choices=["fixed", "learned"], help="[local] readout (with --local-beta)")
    args = p.parse_args(argv)

    from neuro_hts._threads import blas_threads
    from neuro_hts.algorithms import make_algorithm
    from neuro_hts.backends import get_backend
    from neuro_hts.config import load_config
    from neuro_hts.data import one_hot
    from neuro_hts.engines import FloatEngine
    from neuro_hts.learning import make_optimizer
    from neuro_hts.network import init_network

    cfg = load_config(args.config)
    over = {k: v for k, v in (("t1", args.t1), ("t2", args.t2)) if v is not None}
    if over:
        cfg = cfg.replace(train=over)
    local = {k: v for k, v in (("beta", args.local_beta), ("readout", args.local_readout)) if v is not None}
    if local:
        cfg = cfg.replace(local=local)
    tc = cfg.train
    B, nb = tc.batch_size, args.batches
    shape0 = cfg.model.spec.layers[0].shape
    n_classes = cfg.model.arch[-1]
    if args.synthetic:
        rng = np.random.default_rng(0)
        x = rng.uniform(0, 1, (B * (nb + 1), *shape0))
        labels = rng.integers(0, n_classes, B * (nb + 1))
    else:
        from neuro_hts.data import load_dataset

        data = load_dataset(cfg.data.dataset, args.data_dir, n_train=B * (nb + 1), n_test=10, images=len(shape0) == 3)
        x, labels = data.x_train, data.y_train
    algo = make_algorithm(cfg)
    labels_ = [b.strip() for b in args.backends.split(",") if b.strip()]
    runs = {}
    for label in labels_:
        name, dt = BACKENDS[label]
        be = get_backend(name, dt)
        net = init_network(cfg, dt)
        engine = FloatEngine(cfg, make_optimizer(tc, net.n_layers), backend=be)
        engine.lrs = tc.layer_lrs(net.n_layers, 0)
        xs = np.ascontiguousarray(x, dtype=dt)
        ys = one_hot(labels, n_classes, dt)
        runs[label] = (engine, net, xs, ys, {"train": [], "infer": []})
    free = algo.free_phase()
    with blas_threads(args.blas_threads if args.blas_threads > 0 else None):
        for label, (engine, net, xs, ys, _) in runs.items():  # warm-up (compiles), not timed: 2 samples, 2 steps
            warm = dataclasses.replace(algo, t1=2, t2=2) if hasattr(algo, "t2") else algo
            engine.train_step(net.copy(), xs[-2:], ys[-2:], warm, np.random.default_rng(0))
            engine.evaluate(net, xs[-2:], labels[-2:], dataclasses.replace(free, steps=2), batch_size=2)
        for rep in range(args.repeats):
            for label, (engine, net, xs, ys, times) in runs.items():
                rng = np.random.default_rng(rep)
                t = time.perf_counter()
                for bi in range(nb):
                    engine.train_step(net, xs[bi * B : (bi + 1) * B], ys[bi * B : (bi + 1) * B], algo, rng)
                times["train"].append(nb * B / (time.perf_counter() - t))
                t = time.perf_counter()
                engine.evaluate(net, xs[: nb * B], labels[: nb * B], free, batch_size=B)
                times["infer"].append(nb * B / (time.perf_counter() - t))
                print(f"# repeat {rep + 1}: {label} train {times['train'][-1]:.3f} infer {times['infer'][-1]:.3f} samples/s",
                      flush=True)
        gf = sgemm_gflops()
    med = {}
    for label, (*_, times) in runs.items():
        for what in ("train", "infer"):
            med[label, what] = statistics.median(times[what])
            print(f"{label} {what}: {med[label, what]:.3f} samples/s")
    for label, (*_, times) in runs.items():
        for what in ("train", "infer"):
            print(f"# {label} {what} range {min(times[what]):.3f}-{max(times[what]):.3f} over {len(times[what])} repeats")
    if len(labels_) > 1:
        ref = labels_[0]
        for label in labels_[1:]:
            for what in ("train", "infer"):
                print(f"# {label}/{ref} {what}: {med[label, what] / med[ref, what]:.2f}x")
    print(f"# workload: {args.config}{' (' + ', '.join(f'{k} {v}' for k, v in over.items()) + ')' if over else ''}: "
          f"batch {B}, T1 {tc.t1}, T2 {tc.t2}, {tc.nudging} beta {tc.beta}, {nb} batches x {args.repeats} repeats, "
          f"{'synthetic images' if args.synthetic else cfg.data.dataset}, BLAS threads {args.blas_threads}"
          + (f", local costs beta {cfg.local.beta} on layers {cfg.local.layers} ({cfg.local.readout} readouts)"
             if cfg.local.active else ""))
    print(f"# command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"# machine: {machine()}; float32 gemm (1024^3, after the runs): {gf:.1f} GFLOP/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
