"""Peak memory of one EP training step against one BPTT step of the same network, as T1 grows.

EP needs only the current states of each phase: its memory should not depend on the
number of free-phase steps T1. Backpropagation through time keeps every state of the free
phase for its reverse pass, so its memory grows linearly with T1. This script measures
both on one batch through the package's own code paths:

* ``ep``: :meth:`neuro_hts.engines.FloatEngine.train_step` with the NumPy backend in
  float64 (free phase of T1 steps, nudged phase, EP estimate, optimiser step), the
  algorithm of the config (``train.algorithm``, ``[adapt]``);
* ``bptt``: :func:`neuro_hts.bptt.bptt_gradients` over the same T1 steps (float64).

Memory is the peak of Python's ``tracemalloc`` (which sees NumPy's array buffers) during
the call, above what was allocated before it (network, batch, optimiser state). The Numba
backend allocates through Numba's runtime, which ``tracemalloc`` does not see, so it is not
measured here. Inputs are random (uniform in [0, 1), one-hot targets): memory does not
depend on the data.

Usage::

    .venv/bin/python scripts/bench_memory.py [--config models/repro/mnist_784-512-10.toml]
        [--t1 20,60,200] [--batch 50] [--seed 0]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tracemalloc
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _peak_bytes(fn) -> int:
    """Peak tracemalloc bytes above the level at the call (the call's own working memory)."""
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - base


def measure(config, t1: int, batch: int, seed: int) -> dict[str, int]:
    from neuro_hts.algorithms import make_algorithm
    from neuro_hts.backends import get_backend
    from neuro_hts.bptt import bptt_gradients
    from neuro_hts.engines import FloatEngine
    from neuro_hts.learning import make_optimizer
    from neuro_hts.network import init_network

    cfg = config.replace(train={"t1": t1, "t1_tol": None, "backend": "numpy"})
    net = init_network(cfg, np.float64)
    rng = np.random.default_rng(seed)
    n_in, n_out = net.arch[0], net.arch[-1]
    x = rng.random((batch, n_in))
    y = np.eye(n_out)[rng.integers(0, n_out, batch)]
    engine = FloatEngine(cfg, make_optimizer(cfg.train, net.n_layers), get_backend("numpy", np.float64))
    algorithm = make_algorithm(cfg)
    nudge_rng = np.random.default_rng(seed)
    engine.train_step(net, x, y, algorithm, nudge_rng)  # optimiser state exists before the measured step
    ep = _peak_bytes(lambda: engine.train_step(net, x, y, algorithm, nudge_rng))
    bptt = _peak_bytes(lambda: bptt_gradients(net, x, y, t1))
    return {"ep": ep, "bptt": bptt}


def main(argv=None) -> int:
    from neuro_hts.config import load_config

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(REPO / "models" / "repro" / "mnist_784-512-10.toml"))
    p.add_argument("--t1", default="20,60,200", help="comma-separated free-phase lengths")
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    try:
        t1s = [int(v) for v in a.t1.split(",")]
        if not t1s or min(t1s) < 1 or a.batch < 1:
            raise ValueError
    except ValueError:
        print(f"bench_memory: --t1 must be positive integers and --batch >= 1, got {a.t1!r} / {a.batch}",
              file=sys.stderr)
        return 2
    config = load_config(a.config)
    state_mib = sum(config.model.arch[1:]) * a.batch * 8 / 2**20
    print(f"# {Path(a.config).name}: arch {'-'.join(map(str, config.model.arch))}, batch {a.batch}, "
          f"algorithm {config.train.algorithm}, float64; one state of all layers = {state_mib:.3f} MiB")
    print(f"# machine: {platform.machine()}, Python {platform.python_version()}, NumPy {np.__version__}")
    print("| T1 | EP step peak (MiB) | BPTT step peak (MiB) | BPTT / EP |")
    print("|---|---|---|---|")
    for t1 in t1s:
        m = measure(config, t1, a.batch, a.seed)
        ep, bp = m["ep"] / 2**20, m["bptt"] / 2**20
        print(f"| {t1} | {ep:.2f} | {bp:.2f} | {bp / ep:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
