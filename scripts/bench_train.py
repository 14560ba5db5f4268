"""Training throughput of the backends on MNIST, through the real training path.

Workload (the paper's MNIST setting): a 784-512-10 network, batch 50, T1 = 30 free
steps, T2 = 10 nudged steps, one-sided nudging (beta = 0.1), hard sigmoid, MSE output,
Adam; every batch is one :func:`neuro_hts.learning.ep_train_step`.

Prints one line per backend, ``<backend>: <samples/s> samples/s`` (the median over
``--repeats`` timed runs of ``--batches`` batches each, after a warm-up; the backends take
turns, so load from other users of the machine spreads over all of them), then lines
starting with ``#``: the numba/numpy ratios, the machine's float32 matrix-product rate
(one large sgemm) and the fraction of it the workload reaches.

FLOPs counted (the same for every backend; only matrix products, 2 m n k each): the
input drive W_1 x once per batch, per step the products between neighbouring relaxed
layers (bottom-up and top-down), and the weight gradients as one product per layer
(B rows for layer 1, whose input is the same in both phases, 2B rows for the others).
Elementwise work and the optimiser are not counted.

Usage::

    .venv/bin/python scripts/bench_train.py [--backends numpy,numpy-float32,numba]
        [--repeats 7] [--batches 100] [--data-dir ../shared/data/mnist]
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from neuro_hts.backends import get_backend
from neuro_hts.config import Config, DtConfig, ModelConfig, TrainConfig
from neuro_hts.data import load_dataset, one_hot
from neuro_hts.learning import ep_train_step, make_optimizer
from neuro_hts.network import init_network

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data" / "mnist"

#: backend label -> (backend name, dtype)
BACKENDS = {
    "numpy": ("numpy", np.float64),  # the float64 reference
    "numpy-float32": ("numpy", np.float32),
    "numba": ("numba", np.float32),
    "numba-float64": ("numba", np.float64),
}


def workload_config() -> Config:
    return Config(
        model=ModelConfig(arch=(784, 512, 10), form="leaky", activation="hard_sigmoid", output="mse"),
        dt=DtConfig(),
        train=TrainConfig(batch_size=50, t1=30, t2=10, beta=0.1, nudging="one-sided", optimizer="adam", lr=(5e-4,)),
    )


def flops_per_batch(config: Config) -> int:
    """Matrix-product FLOPs of one ep_train_step (see the module docstring)."""
    arch = config.model.arch
    B, t = config.train.batch_size, config.train
    n_dyn = len(arch) - 1 - (1 if config.model.output == "ce" else 0)
    n_phases = 2 if t.nudging == "symmetric" else 1
    steps = t.t1 + n_phases * t.t2
    flops = 2 * B * arch[0] * arch[1]  # input drive, once per batch
    per_step = sum(2 * (2 * B * arch[l] * arch[l + 1]) for l in range(1, n_dyn))  # bottom-up + top-down
    flops += steps * per_step
    if config.model.output == "ce":  # readout logits and nudge in the nudged steps
        flops += n_phases * t.t2 * 2 * (2 * B * arch[n_dyn] * arch[-1])
    flops += 2 * B * arch[0] * arch[1]  # dW_1: (r_1^a - r_1^b)^T r_0
    flops += sum(2 * (2 * B) * arch[l - 1] * arch[l] for l in range(2, n_dyn + 1))
    if config.model.output == "ce":
        flops += 2 * (2 * B) * arch[n_dyn] * arch[-1]
    return flops


def sgemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Median float32 matrix-product rate of an n x n x n product (NumPy's BLAS)."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=out)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        times.append(time.perf_counter() - t0)
    return 2.0 * n**3 / statistics.median(times) / 1e9


class Runner:
    """One backend with its own network and optimiser, trained batch after batch."""

    def __init__(self, label: str, config: Config, x: np.ndarray, labels: np.ndarray, n_classes: int):
        name, dtype = BACKENDS[label]
        self.label = label
        self.config = config
        self.backend = get_backend(name, dtype)
        self.net = init_network(config, dtype)
        self.opt = make_optimizer(config.train, self.net.n_layers)
        self.x = np.ascontiguousarray(x, dtype=dtype)
        self.y = one_hot(labels, n_classes, dtype)
        self.batch = config.train.batch_size
        self.n_batches = x.shape[0] // self.batch
        self.next = 0
        self.rates: list[float] = []
        self.faults: list[float] = []  # minor page faults per batch, in the timed runs

    def train(self, n_batches: int) -> float:
        """Train ``n_batches`` batches; returns the elapsed seconds."""
        B, train = self.batch, self.config.train
        faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        for _ in range(n_batches):
            i = self.next * B
            ep_train_step(self.backend, self.net, self.opt, self.x[i : i + B], self.y[i : i + B], train)
            self.next = (self.next + 1) % self.n_batches
        elapsed = time.perf_counter() - t0
        self.faults.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / n_batches)
        return elapsed


def blas_description() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    parts = []
    for info in threadpool_info():
        lib = Path(info.get("filepath", "?")).name
        kernels, threads = info.get("architecture"), info.get("num_threads")
        parts.append(f"{info.get('internal_api')} {info.get('version')} ({kernels}, {threads} threads, {lib})")
    return "; ".join(parts) or "none found"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="numpy,numpy-float32,numba", help=f"comma-separated, from {', '.join(BACKENDS)}")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per backend (the median is printed)")
    parser.add_argument("--batches", type=int, default=100, help="batches per timed run")
    parser.add_argument("--warmup", type=int, default=20, help="untimed batches per backend first (compilation, caches)")
    parser.add_argument(
        "--pause", type=float, default=0.5,
        help="seconds of rest before each timed run, so that the idle BLAS threads of the previous backend "
        "(NumPy and SciPy/Numba each bring an OpenBLAS that spin-waits after a call) stop competing for the cores",
    )
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="directory with the MNIST idx(.gz) files")
    parser.add_argument("--sgemm-n", type=int, default=2048, help="size of the sgemm that measures the machine's rate")
    args = parser.parse_args(argv)
    labels = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in labels if b not in BACKENDS]
    if unknown or not labels:
        parser.error(f"unknown backend(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(BACKENDS)}")
    if args.repeats < 1 or args.batches < 1 or args.warmup < 0 or args.pause < 0:
        parser.error("--repeats and --batches must be >= 1, --warmup and --pause >= 0")

    config = workload_config()
    B = config.train.batch_size
    data = load_dataset("mnist", args.data_dir)
    n = min(data.x_train.shape[0], max(args.batches, args.warmup, 1) * B)
    x, y = data.x_train[:n], data.y_train[:n]

    runners = [Runner(label, config, x, y, data.n_classes) for label in labels]
    for r in runners:
        if args.warmup:
            r.train(args.warmup)
    for _ in range(args.repeats):  # backends take turns
        for r in runners:
            time.sleep(args.pause)
            r.rates.append(args.batches * B / r.train(args.batches))

    medians = {r.label: statistics.median(r.rates) for r in runners}
    for label, rate in medians.items():
        print(f"{label}: {rate:.0f} samples/s")

    arch = "-".join(map(str, config.model.arch))
    t = config.train
    print(
        f"# MNIST {arch}, batch {B}, T1={t.t1}, T2={t.t2}, {t.nudging} beta={t.beta}, {config.model.activation}, "
        f"{config.model.output}, {t.optimizer}; median of {args.repeats} runs x {args.batches} batches "
        f"after {args.warmup} warm-up batches"
    )
    for r in runners:
        spread = f"{min(r.rates):.0f}..{max(r.rates):.0f}"
        print(f"#   {r.label}: runs {spread} samples/s, {statistics.median(r.faults):.0f} minor page faults per batch")
    for ref in ("numpy", "numpy-float32"):
        if "numba" in medians and ref in medians:
            print(f"# numba/{ref}: {medians['numba'] / medians[ref]:.2f}x")
    gflops = sgemm_gflops(args.sgemm_n)
    flops = flops_per_batch(config)
    print(f"# sgemm float32 {args.sgemm_n}^3 (NumPy's BLAS): {gflops:.1f} GFLOP/s")
    print(f"# workload: {flops / 1e6:.1f} MFLOP per batch ({flops / B / 1e6:.3f} MFLOP/sample, matrix products only)")
    for label, rate in medians.items():
        achieved = rate / B * flops / 1e9
        print(f"# {label}: {achieved:.1f} GFLOP/s = {achieved / gflops:.3f} of sgemm")
    import numba

    print(
        f"# python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}; "
        f"BLAS: {blas_description()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
