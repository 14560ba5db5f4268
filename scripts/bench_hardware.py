"""Lava and Numba speed for a deployed 784-512-10 HTS-EP network (fixed point).

Three measurements, each the median of ``--repeats`` runs (they take turns, so load from
other users of the machine spreads over all of them):

1. ``lava hts``: our Lava graph (:func:`neuro_hts.lava.run_lava`, ``fixed_pt``):
   GradedSource -> Dense(W1) -> HTSLayer(512) <-> Dense(W2)/Dense(W2^T) <-> HTSLayer(10)
   -> StateRecorder: 7 processes, ``--samples`` samples of ``1 + --steps`` Lava steps.
2. ``lava stock``: Lava's own processes with the same sizes and the same number of
   processes and connections: RingBuffer(784 binary spikes) -> Dense -> LIF(512) <->
   Dense/Dense^T <-> LIF(10) -> sink RingBuffer, ``fixed_pt`` (bit-accurate Loihi models),
   the same number of steps. The ratio of the two is the overhead of our processes.
3. ``numba fixed``: :class:`~neuro_hts.hardware.fixed_sim.FixedPointSimulator` on
   ``--numba-samples`` samples (one batch), per sample, against Lava's per-sample time;
   the Lava and Numba top-layer states of the Lava samples are compared for bit identity.

Only the ``run()`` calls are timed for Lava (not the build, compile or stop). The network
is a random initialisation of ``models/mnist.toml`` (or ``--run RUN.h5``), quantized for
Loihi 2; inputs are MNIST test images when ``--data-dir`` holds them, else uniform noise.

Usage::

    .venv/bin/python scripts/bench_hardware.py [--run runs/mnist.h5] [--data-dir ../shared/data/mnist]
        [--samples 20] [--steps 60] [--repeats 5] [--numba-samples 2000]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data" / "mnist"


def make_bundle(run: str | None):
    from neuro_hts.config import load_config
    from neuro_hts.hardware import load_target
    from neuro_hts.hardware.quantize import quantize_network
    from neuro_hts.network import init_network
    from neuro_hts.runfile import load_run

    if run:
        net = load_run(run).network
    else:
        net = init_network(load_config(REPO / "models" / "mnist.toml"))
    return quantize_network(net, load_target("loihi2"))


def inputs(data_dir: Path, n: int) -> tuple[np.ndarray, str]:
    from neuro_hts.data import load_dataset
    from neuro_hts.errors import DataError

    try:
        d = load_dataset("mnist", data_dir, n_test=n)
        x = np.asarray(d.x_test, dtype=np.float64)
        reps = -(-n // x.shape[0])
        return np.tile(x, (reps, 1))[:n], f"MNIST test images from {data_dir}"
    except DataError:
        return np.random.default_rng(0).random((n, 784)), "uniform noise (no MNIST found)"


def lava_stock_seconds(bundle, n_steps: int, seed: int = 0) -> float:
    """Seconds of ``run()`` for Lava's own RingBuffer/Dense/LIF network of the same sizes."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source
    from lava.proc.lif.process import LIF

    rng = np.random.default_rng(seed)
    n0 = bundle.layers[0].weight_mantissa.shape[1]
    n1, n2 = (lb.weight_mantissa.shape[0] for lb in bundle.layers)
    w1 = np.asarray(bundle.layers[0].weight_mantissa)
    w2 = np.asarray(bundle.layers[1].weight_mantissa)
    src = Source(data=(rng.random((n0, n_steps)) < 0.2).astype(np.int32))
    lif1 = LIF(shape=(n1,), du=1024, dv=512, vth=2000, bias_mant=0)
    lif2 = LIF(shape=(n2,), du=1024, dv=512, vth=2000, bias_mant=0)
    d1, d2, d2t = Dense(weights=w1), Dense(weights=w2), Dense(weights=np.ascontiguousarray(w2.T))
    sink = Sink(shape=(n2,), buffer=n_steps)
    src.s_out.connect(d1.s_in)
    d1.a_out.connect(lif1.a_in)
    lif1.s_out.connect(d2.s_in)
    d2.a_out.connect(lif2.a_in)
    lif2.s_out.connect(d2t.s_in)
    d2t.a_out.connect(lif1.a_in)
    lif2.s_out.connect(sink.a_in)
    try:
        t0 = time.perf_counter()
        src.run(condition=RunSteps(num_steps=n_steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        return time.perf_counter() - t0
    finally:
        if src.runtime is not None:
            src.stop()


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numba

    return (f"{platform.node()}: {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, "
            f"NumPy {np.__version__}, Numba {numba.__version__}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="run file to deploy (default: random init of models/mnist.toml)")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    p.add_argument("--samples", type=int, default=20, help="samples per Lava run")
    p.add_argument("--steps", type=int, default=60, help="free-phase steps per sample")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--numba-samples", type=int, default=2000)
    args = p.parse_args(argv)

    from neuro_hts.lava import import_lava, run_lava

    import_lava()
    from neuro_hts.hardware.fixed_sim import FixedPointSimulator

    bundle = make_bundle(args.run)
    block = 1 + args.steps
    n_lava_steps = args.samples * block
    x, what = inputs(Path(args.data_dir), max(args.samples, args.numba_samples))
    x_lava = x[: args.samples]
    sim = FixedPointSimulator(bundle)
    sim.relax(x[:2], 2)  # compile / load the cached kernels

    hts, stock, numba_s = [], [], []
    identical = True
    for rep in range(args.repeats):
        r = run_lava(bundle, x_lava, t_free=args.steps, arith="fixed", record="final")
        hts.append(r.seconds)
        ref, _ = sim.relax(x_lava, args.steps)
        identical &= bool(np.array_equal(r.states[0], ref[-1]))
        stock.append(lava_stock_seconds(bundle, n_lava_steps, seed=rep))
        t0 = time.perf_counter()
        sim.relax(x[: args.numba_samples], args.steps)
        numba_s.append(time.perf_counter() - t0)
        print(f"#   repeat {rep + 1}: lava hts {n_lava_steps / hts[-1]:.0f} steps/s, "
              f"lava stock {n_lava_steps / stock[-1]:.0f} steps/s, "
              f"numba {args.numba_samples / numba_s[-1]:.0f} samples/s", flush=True)

    hts_sps = n_lava_steps / statistics.median(hts)
    stock_sps = n_lava_steps / statistics.median(stock)
    lava_per_sample = statistics.median(hts) / args.samples
    numba_per_sample = statistics.median(numba_s) / args.numba_samples
    arch = "-".join(str(v) for v in [bundle.layers[0].weight_mantissa.shape[1]] + [lb.weight_mantissa.shape[0] for lb in bundle.layers])
    print(f"# network {arch}, Loihi 2 fixed point, {args.steps} free steps per sample (+1 load step in Lava); "
          f"inputs: {what}; medians of {args.repeats}")
    print(f"lava hts (fixed_pt): {hts_sps:.0f} steps/s, {1e3 * lava_per_sample:.1f} ms/sample")
    print(f"lava stock LIF+Dense (fixed_pt): {stock_sps:.0f} steps/s")
    print(f"# overhead of our processes: {stock_sps / hts_sps:.2f}x the stock step time")
    print(f"numba fixed: {1e3 * numba_per_sample:.3f} ms/sample ({1 / numba_per_sample:.0f} samples/s, "
          f"batch {args.numba_samples})")
    print(f"# numba/lava per sample: {lava_per_sample / numba_per_sample:.0f}x faster; "
          f"top-layer states bit-identical on the Lava samples: {identical}")
    print(f"# machine: {machine()}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
