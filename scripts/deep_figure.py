"""RESULTS.md section 10: issue 12's variants side by side (table, p-values, curves, diagnostics).

Reads the sweeps of ``scripts/reproduce_deep.py`` for one dataset (``SWEEPS_ROOT/deep_<ds>``:
the students, ``local.beta`` x ``distill.alpha``; ``SWEEPS_ROOT/deep_<ds>_bptt``: the BPTT
reference) and writes into ``OUT``:

* ``comparison.md`` / ``.csv`` / ``.png`` (:func:`neuro_hts.report.write_comparison`): one row
  per variant and dt law, test accuracy per epoch (mean over seeds, band = min..max);
* ``variants.md``: each variant's final accuracy against standard EP's of the same dt law:
  difference, 95 % bootstrap interval, permutation p (:func:`neuro_hts.stats.compare_samples`;
  Holm-adjusted over the table's comparisons);
* ``diagnostics.png``: ``neuro-hts plot diagnostics`` of one run per variant (constant dt, the
  lowest seed), where the run files still hold their weights (not for cells restored from an
  archive).

Usage::

    .venv/bin/python scripts/deep_figure.py --dataset digits [--local-beta 0.5] [--alpha 0.5]
        [--sweeps-root sweeps] [--out results/deep_digits]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from neuro_hts.errors import NeuroHTSError


def variants(beta: float, alpha: float) -> dict[str, dict]:
    return {"standard EP": {"local.beta": 0.0, "distill.alpha": 0.0},
            f"+ local errors (beta_l {beta:g})": {"local.beta": beta, "distill.alpha": 0.0},
            f"+ distillation (alpha {alpha:g})": {"local.beta": 0.0, "distill.alpha": alpha},
            "+ both": {"local.beta": beta, "distill.alpha": alpha}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, help="digits, mnist or fashionmnist (the sweeps deep_<dataset>)")
    p.add_argument("--local-beta", type=float, default=0.5, help="the local-error variants' beta_l (default 0.5)")
    p.add_argument("--alpha", type=float, default=0.5, help="the distilled variants' alpha (default 0.5)")
    p.add_argument("--sweeps-root", default="sweeps", help="directory holding deep_<dataset>[_bptt]/ (default sweeps)")
    p.add_argument("--out", help="output directory (default results/deep_<dataset>)")
    args = p.parse_args(argv)
    root = Path(args.sweeps_root)
    out = Path(args.out or f"results/deep_{args.dataset}")
    students, bptt = root / f"deep_{args.dataset}", root / f"deep_{args.dataset}_bptt"
    if not students.is_dir():
        print(f"deep_figure: error: no sweep {students} (run scripts/reproduce_deep.py first)", file=sys.stderr)
        return 2
    try:
        from neuro_hts.report import collect, write_comparison
        from neuro_hts.stats import compare_samples, holm

        spec = {label: (students, pick) for label, pick in variants(args.local_beta, args.alpha).items()}
        if bptt.is_dir():
            spec["BPTT (same net)"] = bptt
        rows = write_comparison(spec, out)
        data = collect(students)
        keys = data["keys"]
        finals = {}
        for g in data["groups"]:
            have = dict(zip(keys, g["settings"]))
            for label, pick in variants(args.local_beta, args.alpha).items():
                if all(have.get(k) == f"{v:g}" for k, v in pick.items()):
                    finals[(label, g["dist"])] = [r["metrics"]["final_accuracy"] for r in g["runs"] if r["found"]]
        lines = ["| dt law | variant | runs | final accuracy (%) | difference to standard EP (points) | 95 % interval "
                 "| permutation p | Holm-adjusted p |", "|" + "---|" * 8]
        tests = []
        for (label, dist), acc in finals.items():
            base = finals.get(("standard EP", dist), [])
            if label != "standard EP":
                tests.append((dist, label, acc, compare_samples(acc, base)))
        adjusted = holm([t[3]["p"] for t in tests])
        for (dist, label, acc, c), padj in zip(tests, adjusted):
            lines.append(f"| {dist} | {label} | {len(acc)} | {100 * c['mean']:.2f} | {100 * c['diff']:+.2f} "
                         f"| {100 * c['ci_low']:+.2f} .. {100 * c['ci_high']:+.2f} | {c['p']:.3g} | {padj:.3g} |")
        (out / "variants.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
        runs = _diagnostic_runs(students, data, keys, variants(args.local_beta, args.alpha))
        if runs:
            from neuro_hts.runview import plot_diagnostics

            plot_diagnostics(runs, out / "diagnostics.png")
    except NeuroHTSError as exc:
        print(f"deep_figure: error: {exc}", file=sys.stderr)
        return 2
    print((out / "comparison.md").read_text(), end="")
    print((out / "variants.md").read_text(), end="")
    print(f"{len(rows)} rows; figures: {out / 'comparison.png'}" + (f", {out / 'diagnostics.png'}" if runs else ""))
    return 0


def _diagnostic_runs(sweep_dir, data, keys, picks) -> list:
    """(label, RunState) of the lowest-seed constant-dt run of each variant, where its file holds weights."""
    from neuro_hts.errors import RunFileError
    from neuro_hts.runfile import load_run

    out = []
    for label, pick in picks.items():
        cands = [r for g in data["groups"] if g["dist"] == "constant"
                 and all(dict(zip(keys, g["settings"])).get(k) == f"{v:g}" for k, v in pick.items())
                 for r in g["runs"] if r["found"]]
        if not cands:
            continue
        r = min(cands, key=lambda r: r["seed"])
        try:
            out.append((f"{label}, seed {r['seed']}", load_run(Path(sweep_dir) / f"{r['name']}.h5")))
        except RunFileError:  # a metrics-only cell (restored from an archive): no diagnostics figure
            return []
    return out


if __name__ == "__main__":
    sys.exit(main())
