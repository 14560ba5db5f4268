"""Alignment of the dendritic EP update with BPTT during training (issue 13; docs/DENDRITIC.md).

Trains a small dendritic net on the embedded 8x8 digits with symmetric EP (beta 0.1,
T1 60, T2 12, batch 64, SGD momentum 0.9) on the NumPy reference and prints, before
epochs 0, 1, 3 and 5, the test accuracy and the per-layer cosine of the EP update
(beta 1e-3, T1 300, T2 100) with the BPTT gradient (300 free steps) on 32 training
samples (neuro_hts.dendritic.ep_bptt_alignment)::

    python scripts/dendritic_alignment.py [--arch 64-32-10] [--lr 3.2,0.32] [--epochs 6]
"""

from __future__ import annotations

import argparse

import numpy as np

from neuro_hts.algorithms import EP
from neuro_hts.backends import get_backend
from neuro_hts.config import Config
from neuro_hts.data import load_dataset, one_hot
from neuro_hts.dendritic import dendritic_model, ep_bptt_alignment
from neuro_hts.engines import FloatEngine
from neuro_hts.learning import SGD
from neuro_hts.network import init_network


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="64-32-10")
    ap.add_argument("--lr", default="3.2,0.32", help="per-layer SGD rates")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--apical-scale", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    arch = tuple(int(v) for v in args.arch.split("-"))
    cfg = Config.from_dict({"model": dendritic_model(arch, apical_scale=args.apical_scale),
                            "train": {"backend": "numpy", "seed": args.seed},
                            "dt": {"dist": "constant", "mean": 1.0, "dt_max": 1.0}})
    net = init_network(cfg)
    engine = FloatEngine(cfg, optimizer=SGD([float(v) for v in args.lr.split(",")], momentum=0.9),
                         backend=get_backend("numpy"))
    d = load_dataset("digits", None)
    x, y = np.asarray(d.x_train, dtype=np.float64), one_hot(d.y_train, 10, np.float64)
    alg = EP(t1=60, t2=12, beta=0.1, nudging="symmetric")
    for epoch in range(args.epochs):
        if epoch in (0, 1, 3, 5):
            acc = engine.evaluate(net, d.x_test, d.y_test, alg.free_phase()).accuracy
            rows = ep_bptt_alignment(net, x[:32], y[:32])
            print(f"epoch {epoch}: test {acc:.3f}  cos(EP, BPTT) per layer "
                  + " ".join(f"{r['layer']:+.3f}" for r in rows)
                  + "  basal parts " + " ".join(f"{r['basal_weight']:+.3f}" for r in rows), flush=True)
        order = np.random.default_rng(epoch).permutation(len(x))
        for i in range(0, len(x), 64):
            engine.train_step(net, x[order[i : i + 64]], y[order[i : i + 64]], alg)


if __name__ == "__main__":
    main()
