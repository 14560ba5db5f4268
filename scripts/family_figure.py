"""RESULTS.md section 6: the four EP-family grids side by side (table and figure).

Reads the sweeps written by ``scripts/reproduce_hts.py --only family_mnist_ep,...``
(``SWEEPS_ROOT/family_mnist_<variant>``) and writes ``comparison.md``, ``comparison.csv``
and ``comparison.png`` with :func:`neuro_hts.report.write_comparison`.

Usage::

    .venv/bin/python scripts/family_figure.py [--sweeps-root sweeps] [--out results/family_mnist]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from neuro_hts.errors import NeuroHTSError
from neuro_hts.report import write_comparison

VARIANTS = {"EP": "ep", "EP + adaptation": "ep_adapt", "CHL": "chl", "CHL + adaptation": "chl_adapt"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sweeps-root", default="sweeps", help="directory holding family_mnist_<variant>/ (default sweeps)")
    p.add_argument("--out", default="results/family_mnist", help="output directory (default results/family_mnist)")
    args = p.parse_args(argv)
    root = Path(args.sweeps_root)
    sweeps = {label: root / f"family_mnist_{v}" for label, v in VARIANTS.items() if (root / f"family_mnist_{v}").is_dir()}
    if not sweeps:
        print(f"family_figure: error: no family_mnist_* sweep in {root}", file=sys.stderr)
        return 2
    try:
        rows = write_comparison(sweeps, args.out)
    except NeuroHTSError as exc:
        print(f"family_figure: error: {exc}", file=sys.stderr)
        return 2
    print(Path(args.out, "comparison.md").read_text(), end="")
    print(f"{len(rows)} rows; figure: {Path(args.out) / 'comparison.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
