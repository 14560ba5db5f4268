"""Issue 14's continual-learning comparison in one command: every method, both dt laws,
3 seeds, per dataset, with the table and the figure.

For each dataset (``digits``: ``models/continual_digits.toml``, the embedded 8x8 digits,
minutes; ``mnist``, ``fashionmnist``: ``models/continual_<ds>.toml``, 784-512-10, about
half a minute to a few minutes per protocol) and each dt law (``constant``: every hidden
unit at the config's mean dt; ``lognormal``: the config's HTS law), one
``neuro-hts continual --seeds`` run per method setting into
``<out-root>/runs/continual/<ds>/<law>/<setting>``:

    sequential, joint, rehearsal at 1 / 5 / 10 %, ewc, src, src+rehearsal at 1 / 5 / 10 %,
    and, with ``--bptt``, the same net trained by BPTT: bptt (sequential) and bptt+src.

Every run resumes where it stopped (the protocol checkpoints after every task), so the
script can be interrupted and started again. At the end (and with ``--table-only``
without running anything) it writes ``<out-root>/results/continual_<ds>.json`` (final
10-way accuracy per setting and law: mean, std, min, max and the per-seed values, with the
wall time of the protocols), ``continual_<ds>.md`` (the same as a table),
``continual_<ds>.png`` (bars with the seed spread), ``continual_<ds>_matrices.{md,png}``
(every setting's mean accuracy matrix: after task k, accuracy on task j's test images),
and prints the table.

Usage::

    .venv/bin/python scripts/reproduce_continual.py --data-root DIR [--only mnist,fashionmnist]
        [--seeds 0-2] [--laws constant,lognormal] [--settings src,sequential] [--bptt]
        [--workers 2] [--out-root .] [--table-only] [--dry-run]

Exit code: 0 when everything finished, 1 when a run failed, 2 on bad input, 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: name -> (config, dataset directory under --data-root; None: the embedded digits)
DATASETS = {"digits": ("models/continual_digits.toml", None),
            "mnist": ("models/continual_mnist.toml", "mnist"),
            "fashionmnist": ("models/continual_fashionmnist.toml", "fashion-mnist")}
LAWS = ("constant", "lognormal")
#: setting -> extra ``neuro-hts continual`` arguments
SETTINGS = {
    "sequential": ["--method", "sequential"],
    "joint": ["--method", "joint"],
    "rehearsal_1": ["--method", "rehearsal", "--rehearsal-fraction", "0.01"],
    "rehearsal_5": ["--method", "rehearsal", "--rehearsal-fraction", "0.05"],
    "rehearsal_10": ["--method", "rehearsal", "--rehearsal-fraction", "0.1"],
    "ewc": ["--method", "ewc"],
    "src": ["--method", "src"],
    "src+rehearsal_1": ["--method", "src+rehearsal", "--rehearsal-fraction", "0.01"],
    "src+rehearsal_5": ["--method", "src+rehearsal", "--rehearsal-fraction", "0.05"],
    "src+rehearsal_10": ["--method", "src+rehearsal", "--rehearsal-fraction", "0.1"],
}
BPTT_SETTINGS = {"bptt": ["--method", "sequential", "--trainer", "bptt"],
                 "bptt+src": ["--method", "src", "--trainer", "bptt"]}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", help="directory holding mnist/ and fashion-mnist/ (not needed for digits)")
    p.add_argument("--only", help=f"comma-separated datasets (default: mnist,fashionmnist): {', '.join(DATASETS)}")
    p.add_argument("--out-root", default=".", help="runs/ and results/ go here (default .)")
    p.add_argument("--seeds", default="0-2", help="seeds of every setting (default 0-2)")
    p.add_argument("--laws", default=",".join(LAWS), help="dt laws (default constant,lognormal)")
    p.add_argument("--settings", help=f"comma-separated settings (default: all): {', '.join(SETTINGS)}")
    p.add_argument("--bptt", action="store_true", help="add the BPTT-trained net with and without SRC")
    p.add_argument("--workers", type=int, default=1, help="protocols run at once, one process each (default 1)")
    p.add_argument("--table-only", action="store_true", help="write the tables and figures from what has finished")
    p.add_argument("--dry-run", action="store_true", help="print the neuro-hts commands and exit")
    return p.parse_args(argv)


def _laws(args) -> list[str]:
    return [v.strip() for v in args.laws.split(",") if v.strip()]


def jobs(name: str, args) -> list[tuple[str, str, Path, list[str]]]:
    """(law, setting, out dir, neuro-hts argv) of one dataset."""
    config, dataset = DATASETS[name]
    data = [] if dataset is None else ["--data-dir", str(Path(args.data_root or ".") / dataset)]
    settings = dict(SETTINGS, **(BPTT_SETTINGS if args.bptt else {}))
    chosen = list(settings) if not args.settings else [s.strip() for s in args.settings.split(",") if s.strip()]
    out = []
    for law in _laws(args):
        for s in chosen:
            d = Path(args.out_root) / "runs" / "continual" / name / law / s
            out.append((law, s, d, ["--no-progress", "continual", "--config", str(REPO / config), *settings[s],
                                    "--dt-dist", law, "--seeds", args.seeds, "--probe", *data, "--out", str(d)]))
    return out


def _run(argv: list[str]) -> int:
    from neuro_hts.cli import main as cli_main

    return cli_main(argv)


def table(name: str, args) -> dict:
    """Collect the finished runs of one dataset into results/continual_<name>.{json,md,png}."""
    rows = {}
    for law, s, d, _ in jobs(name, args):
        f = d / "summary.json"
        if not f.exists():
            continue
        summ = json.loads(f.read_text())
        if not summ.get("complete", False):
            continue
        finals = summ["final_accuracies"]
        rows.setdefault(s, {})[law] = {
            "mean": summ["final_accuracy"], "std": summ["final_accuracy_std"], "min": summ["final_accuracy_min"],
            "max": summ["final_accuracy_max"], "seeds": summ["seeds"], "finals": finals, "seconds": summ["seconds"],
            "matrix_mean": summ["matrix_mean"], "probes": summ.get("final_probe_accuracies")}
    res_dir = Path(args.out_root) / "results"
    res_dir.mkdir(parents=True, exist_ok=True)
    result = {"dataset": name, "config": DATASETS[name][0], "settings": rows}
    (res_dir / f"continual_{name}.json").write_text(json.dumps(result, indent=1))
    laws = _laws(args)
    lines = ["| setting | " + " | ".join(f"{law}: final 10-way % (mean +- std (seeds; linear probe))" for law in laws) + " |",
             "|---|" + "---|" * len(laws)]
    for s, by_law in rows.items():
        cells = []
        for law in laws:
            v = by_law.get(law)
            probes = [q for q in ((v or {}).get("probes") or []) if q is not None]
            probe = f"; probe {100 * sum(probes) / len(probes):.1f}" if probes else ""
            cells.append("-" if v is None else f"{100 * v['mean']:.2f} +- {100 * v['std']:.2f} ({len(v['finals'])}{probe})")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    (res_dir / f"continual_{name}.md").write_text("\n".join(lines) + "\n")
    print(f"== continual {name}")
    print("\n".join(lines), flush=True)
    mats = [f"# class-incremental {name}: mean accuracy matrices over the seeds (row: after task k; column: test task j)", ""]
    for s_name, by_law in rows.items():
        for law in laws:
            m = (by_law.get(law) or {}).get("matrix_mean")
            if m is None:
                continue
            n = len(m[0])
            mats += [f"## {s_name}, dt {law}", "", "| after | " + " | ".join(f"T{j + 1}" for j in range(n)) + " |",
                     "|---|" + "---|" * n]
            mats += [f"| T{k + 1} | " + " | ".join(f"{100 * v:.1f}" for v in row) + " |" for k, row in enumerate(m)]
            mats.append("")
    (res_dir / f"continual_{name}_matrices.md").write_text("\n".join(mats))
    if rows:
        _figure(res_dir / f"continual_{name}.png", name, rows, laws)
        _matrix_figure(res_dir / f"continual_{name}_matrices.png", name, rows, laws)
    return result


def _matrix_figure(path: Path, name: str, rows: dict, laws: list[str]) -> None:
    """One heat map per setting: the mean accuracy matrix of the first law that has it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    items = []
    for s_name, by_law in rows.items():
        law = next((lw for lw in laws if (by_law.get(lw) or {}).get("matrix_mean") is not None), None)
        if law is not None:
            items.append((s_name, law, np.array(by_law[law]["matrix_mean"])))
    if not items:
        return
    cols = min(4, len(items))
    nrows = (len(items) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(3.1 * cols, 2.9 * nrows), squeeze=False)
    for ax in axes.flat[len(items):]:
        ax.axis("off")
    for ax, (s_name, law, m) in zip(axes.flat, items):
        ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, f"{100 * m[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="w" if m[i, j] < 0.6 else "k")
        ax.set_xticks(range(m.shape[1]), [f"T{j + 1}" for j in range(m.shape[1])], fontsize=7)
        ax.set_yticks(range(m.shape[0]), [f"after T{k + 1}" for k in range(m.shape[0])], fontsize=7)
        ax.set_title(f"{s_name} (dt {law})", fontsize=8)
    fig.suptitle(f"class-incremental {name}: accuracy on each task's test images (%), mean over seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _figure(path: Path, name: str, rows: dict, laws: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(rows)
    x = np.arange(len(names))
    w = 0.8 / max(1, len(laws))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.75 * len(names) + 2), 4.6))
    probe_labelled = False
    for k, law in enumerate(laws):
        m = [100 * rows[s][law]["mean"] if law in rows[s] else np.nan for s in names]
        e = [100 * rows[s][law]["std"] if law in rows[s] else 0.0 for s in names]
        ax.bar(x + (k - (len(laws) - 1) / 2) * w, m, w, yerr=e, capsize=3, label=f"dt {law}")
        for s_i, s in enumerate(names):
            if law in rows[s]:
                xs = x[s_i] + (k - (len(laws) - 1) / 2) * w
                ax.plot(np.full(len(rows[s][law]["finals"]), xs), 100 * np.array(rows[s][law]["finals"]), "k.", ms=3)
                probes = [v for v in (rows[s][law].get("probes") or []) if v is not None]
                if probes:
                    ax.plot([xs], [100 * np.mean(probes)], "D", color="0.3", ms=4,
                            label="linear probe of the hidden layer (mean)" if not probe_labelled else None)
                    probe_labelled = True
    ax.set_xticks(x, names, rotation=35, ha="right")
    ax.set_ylabel("final 10-way test accuracy (%)")
    ax.set_title(f"class-incremental {name}, 5 tasks x 2 classes (bars: mean, whiskers: std, dots: seeds)")
    ax.set_ylim(0, 105)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.32), ncol=3, fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    names = ["mnist", "fashionmnist"] if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in DATASETS]
    if unknown or not names:
        print(f"reproduce_continual: error: unknown dataset(s) {', '.join(unknown) or '(none given)'} "
              f"(known: {', '.join(DATASETS)})", file=sys.stderr)
        return 2
    known = dict(SETTINGS, **BPTT_SETTINGS)
    bad = [s for s in (args.settings or "").split(",") if s.strip() and s.strip() not in known]
    if bad:
        print(f"reproduce_continual: error: unknown setting(s) {', '.join(bad)} (known: {', '.join(known)})",
              file=sys.stderr)
        return 2
    bad_laws = [v for v in _laws(args) if v not in LAWS]
    if bad_laws or args.workers < 1:
        print(f"reproduce_continual: error: --laws takes {', '.join(LAWS)} and --workers >= 1", file=sys.stderr)
        return 2
    needs = [DATASETS[n][1] for n in names if DATASETS[n][1] is not None]
    if needs and not (args.dry_run or args.table_only):
        if args.data_root is None:
            print(f"reproduce_continual: error: {', '.join(needs)} need --data-root DIR (holding mnist/ and "
                  "fashion-mnist/)", file=sys.stderr)
            return 2
        missing = [d for d in needs if not (Path(args.data_root) / d).is_dir()]
        if missing:
            print(f"reproduce_continual: error: {args.data_root} has no {', '.join(d + '/' for d in missing)}",
                  file=sys.stderr)
            return 2
    if args.dry_run:
        for name in names:
            for *_, argv_ in jobs(name, args):
                print(shlex.join(["neuro-hts", *argv_]))
        return 0
    worst = 0
    if not args.table_only:
        todo = [j for name in names for j in jobs(name, args)]
        try:
            if args.workers == 1:
                codes = []
                for law, s, d, argv_ in todo:
                    print(f"-- {d}", flush=True)
                    codes.append(_run(argv_))
                    if codes[-1] in (2, 130):
                        return codes[-1]
            else:
                with ProcessPoolExecutor(max_workers=args.workers) as ex:
                    codes = list(ex.map(_run, [j[3] for j in todo]))
        except KeyboardInterrupt:
            print("reproduce_continual: interrupted; run it again to continue", file=sys.stderr)
            return 130
        if any(c == 2 for c in codes):
            return 2
        worst = max([0, *codes])
    for name in names:
        table(name, args)
    return min(worst, 1) if worst != 130 else 130


if __name__ == "__main__":
    sys.exit(main())
