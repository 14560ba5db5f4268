"""Float vs Loihi-style fixed point: test accuracy and prediction agreement of a trained run.

Loads a run file, quantizes its network for a hardware target
(:func:`neuro_hts.hardware.quantize.quantize_network`), runs the free phase in float
(:func:`neuro_hts.dynamics.relax`) and in integers
(:class:`neuro_hts.hardware.fixed_sim.FixedPointSimulator`) on the first ``--n-test`` test
samples, and prints both accuracies, the fraction of samples where the two predict the
same class, and the largest and mean |float - fixed| state difference.

Usage::

    .venv/bin/python scripts/compare_fixed.py runs/mnist_sym.h5 [--target loihi2]
        [--data-dir ../shared/data/mnist] [--n-test 2000] [--steps T1] [--batch 500]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from neuro_hts import dynamics
from neuro_hts.data import load_dataset
from neuro_hts.hardware import load_target
from neuro_hts.hardware.fixed_sim import FixedPointSimulator
from neuro_hts.hardware.quantize import quantize_network
from neuro_hts.runfile import load_run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--target", default="loihi2")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--dataset", default=None, help="default: the run's dataset")
    p.add_argument("--n-test", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="free-phase steps (default: the run's t1)")
    p.add_argument("--batch", type=int, default=500)
    args = p.parse_args(argv)

    state = load_run(args.run)
    net, cfg = state.network, state.config
    data = load_dataset(args.dataset or cfg.data.dataset, args.data_dir or cfg.data.data_dir, n_test=args.n_test)
    steps = args.steps if args.steps is not None else cfg.train.t1
    bundle = quantize_network(net, load_target(args.target))
    sim = FixedPointSimulator(bundle)

    x, y = data.x_test.astype(np.float64), data.y_test
    netf = net.astype(np.float64)
    pf, pq, max_err, abs_sum, n_vals = [], [], 0.0, 0.0, 0
    t0 = time.perf_counter()
    for i in range(0, x.shape[0], args.batch):
        xb = x[i:i + args.batch]
        sf = dynamics.relax(netf, xb, steps).states
        sq = sim.dequantize_states(sim.relax(xb, steps)[0])
        max_err = max(max_err, max(float(np.abs(a - b).max()) for a, b in zip(sf, sq)))
        abs_sum += sum(float(np.abs(a - b).sum()) for a, b in zip(sf, sq))
        n_vals += sum(a.size for a in sf)
        pf.append(np.argmax(sf[-1], axis=1))
        pq.append(np.argmax(sq[-1], axis=1))
    pf, pq = np.concatenate(pf), np.concatenate(pq)
    print(f"run: {args.run}  arch: {'-'.join(map(str, net.arch))}  activation: {net.activation}  "
          f"target: {args.target}  steps: {steps}  samples: {x.shape[0]}")
    print(f"weight exponents: {[lb.weight_exponent for lb in bundle.layers]}  "
          f"F = {bundle.activation_frac_bits}  S = {bundle.state_frac_bits}")
    print(f"float accuracy: {np.mean(pf == y):.4f}")
    print(f"fixed accuracy: {np.mean(pq == y):.4f}")
    print(f"prediction agreement: {np.mean(pf == pq):.4f}")
    print(f"|float - fixed| state: max {max_err:.4g}, mean {abs_sum / max(n_vals, 1):.3g}")
    print(f"# {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
