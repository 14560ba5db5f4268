"""Issue 12's deep-CNN comparison in one command: standard EP, + local errors, + distillation,
+ both, and the BPTT-trained same net, constant and lognormal dt, 3 seeds, per dataset.

For each dataset (``digits``: the 3-hidden-layer MLP of ``models/digits_deep.toml`` on the
embedded 8x8 digits, minutes; ``mnist``, ``fashionmnist``: the 4-conv CNNs of
``models/<ds>_deep_cnn.toml``, hours):

1. the teacher: the deep net trained by BPTT (``neuro-hts teacher``, constant dt, seed 0),
   written to ``results/deep_<ds>/teacher.h5`` (small: commit it, so that every later
   session distils from the same teacher; the students' run files record its SHA-256);
2. the students: one sweep of dt law x seed x ``local.beta`` {0, B} x ``distill.alpha`` {0, A}
   (the four variants: standard EP is beta 0, alpha 0, bit for bit) into
   ``sweeps/deep_<ds>``, report in ``results/deep_<ds>``;
3. the reference: the same net trained by BPTT (``train.trainer=bptt``) for every law and
   seed, ``sweeps/deep_<ds>_bptt``, report in ``results/deep_<ds>_bptt``.

Every sweep keeps its finished cells in ``results/<name>/cells.json`` (``neuro-hts
archive``) and restores them first (``neuro-hts restore``), so the grid continues on
another machine where the last one stopped; finished cells are skipped, unfinished ones
resume. Runs: 24 students + 6 BPTT + 1 teacher per dataset.

Usage::

    .venv/bin/python scripts/reproduce_deep.py [--data-root DIR] [--only digits,mnist,fashionmnist]
        [--local-beta 0.5] [--alpha 0.5] [--temperature 0.25] [--seeds 0-2] [--workers 1]
        [--epochs 1 --n-train 200 --n-test 100 --out-root runs/smoke]   # a quick smoke run
        [--dry-run]

Exit code: 0 when everything finished, 1 when a cell failed, 2 on bad input, 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: name -> (config, dataset directory under --data-root; None: the embedded digits)
DATASETS = {"digits": ("models/digits_deep.toml", None),
            "mnist": ("models/mnist_deep_cnn.toml", "mnist"),
            "fashionmnist": ("models/fashionmnist_deep_cnn.toml", "fashion-mnist")}
LAWS = "constant,lognormal"
ARCHIVE = "cells.json"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", help="directory holding mnist/ and fashion-mnist/ (not needed for digits)")
    p.add_argument("--only", help=f"comma-separated datasets (default: all): {', '.join(DATASETS)}")
    p.add_argument("--out-root", help="sweeps/ and results/ go here (default . ; runs/smoke when shortened)")
    p.add_argument("--local-beta", type=float, default=0.5, help="beta_l of the local-error variants (default 0.5)")
    p.add_argument("--alpha", type=float, default=0.5, help="distillation weight of the soft targets (default 0.5)")
    p.add_argument("--temperature", type=float, default=0.25,
                   help="distillation temperature (default 0.25: the MSE teacher's scores lie in [0, 1])")
    p.add_argument("--seeds", default="0-2", help="seeds of every law and variant (default 0-2)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes per sweep (default 1)")
    p.add_argument("--epochs", type=int, help="override the configs' epochs (smoke runs)")
    p.add_argument("--n-train", type=int, help="use only the first N training samples (smoke runs)")
    p.add_argument("--n-test", type=int, help="use only the first N test samples (smoke runs)")
    p.add_argument("--dry-run", action="store_true", help="print the neuro-hts commands and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def _short(args) -> list[str]:
    out = []
    for opt in ("epochs", "n_train", "n_test"):
        if getattr(args, opt) is not None:
            out += [f"--{opt.replace('_', '-')}", str(getattr(args, opt))]
    return out


def student_config(config: Path, teacher: Path, temperature: float) -> str:
    """The students' base config: the deep config with its teacher and temperature added."""
    text = config.read_text(encoding="utf-8")
    if "[distill]" in text:
        raise ValueError(f"{config} already has a [distill] section; the script adds the teacher itself")
    return text + f'\n[distill]\nteacher = "{teacher.as_posix()}"\ntemperature = {temperature!r}\n'


def plan(name: str, args) -> list[tuple[str, list[str] | None]]:
    """(what, neuro-hts argv) of one dataset, in order; argv None marks writing the student config."""
    config, dataset = DATASETS[name]
    out = Path(args.out_root)
    data = [] if dataset is None else ["--data-dir", str(Path(args.data_root or ".") / dataset)]
    res, sw = out / "results" / f"deep_{name}", out / "sweeps" / f"deep_{name}"
    res_b, sw_b = out / "results" / f"deep_{name}_bptt", out / "sweeps" / f"deep_{name}_bptt"
    teacher = res / "teacher.h5"
    steps: list[tuple[str, list[str] | None]] = []
    if teacher.exists():
        more = ["--epochs", str(args.epochs)] if args.epochs is not None else []
        steps.append(("teacher (resume if unfinished)", ["train", "--resume", str(teacher)] + data + more))
    else:
        steps.append(("teacher", ["teacher", "--config", str(REPO / config), "--dt-dist", "constant", *data,
                                  "--out", str(teacher)] + _short(args)))
    steps.append(("student config", None))
    for s_dir, r_dir, argv in (
            (sw, res, ["sweep", "--config", str(out / "sweeps" / f"deep_{name}_students.toml"), "--set",
                       f"local.beta=0,{args.local_beta:g}", "--set", f"distill.alpha=0,{args.alpha:g}"]),
            (sw_b, res_b, ["sweep", "--config", str(REPO / config), "--set", "train.trainer=bptt"])):
        if (r_dir / ARCHIVE).exists():
            steps.append(("restore", ["restore", str(r_dir / ARCHIVE), str(s_dir)]))
        steps.append(("sweep", argv + ["--dt-dists", LAWS, "--seeds", args.seeds, *data, "--out", str(s_dir),
                                       "--report", str(r_dir), "--workers", str(args.workers)] + _short(args)))
        steps.append(("archive", ["archive", str(s_dir), str(r_dir / ARCHIVE)]))
    return steps


def main(argv=None) -> int:
    args = parse_args(argv)
    names = list(DATASETS) if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in DATASETS]
    if unknown or not names:
        print(f"reproduce_deep: error: unknown dataset(s) {', '.join(unknown) or '(none given)'} "
              f"(known: {', '.join(DATASETS)})", file=sys.stderr)
        return 2
    smoke = any(getattr(args, k) is not None for k in ("epochs", "n_train", "n_test"))
    if args.out_root is None:
        args.out_root = "runs/smoke" if smoke else "."
    if smoke and (Path(args.out_root) / "results").resolve() == (REPO / "results").resolve():
        print("reproduce_deep: error: a shortened run would overwrite the committed tables in results/; "
              "pass another --out-root (default runs/smoke)", file=sys.stderr)
        return 2
    needs = [DATASETS[n][1] for n in names if DATASETS[n][1] is not None]
    if needs and args.data_root is None and not args.dry_run:
        print(f"reproduce_deep: error: {', '.join(needs)} need --data-root DIR (holding mnist/ and fashion-mnist/)",
              file=sys.stderr)
        return 2
    missing = [d for d in needs if not (Path(args.data_root or ".") / d).is_dir()]
    if missing and not args.dry_run:
        print(f"reproduce_deep: error: {args.data_root} has no {', '.join(d + '/' for d in missing)}", file=sys.stderr)
        return 2
    if args.dry_run:
        for name in names:
            for what, argv_ in plan(name, args):
                print(f"# {what}" if argv_ is None else shlex.join(["neuro-hts", *argv_]))
        return 0
    from neuro_hts.cli import main as cli_main

    pre = ["--no-progress"] if args.no_progress else []
    worst = 0
    for name in names:
        print(f"== deep_{name}", flush=True)
        config, _ = DATASETS[name]
        out = Path(args.out_root)
        for what, argv_ in plan(name, args):
            if argv_ is None:
                path = out / "sweeps" / f"deep_{name}_students.toml"
                path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    text = student_config(REPO / config, out / "results" / f"deep_{name}" / "teacher.h5",
                                          args.temperature)
                except ValueError as exc:
                    print(f"reproduce_deep: error: {exc}", file=sys.stderr)
                    return 2
                path.write_text(text, encoding="utf-8")
                continue
            if what == "archive" and not (Path(argv_[1]) / "sweep.json").exists():
                continue
            if what.startswith("teacher"):
                (out / "results" / f"deep_{name}").mkdir(parents=True, exist_ok=True)
            code = cli_main(pre + argv_)
            if code in (2, 130) and what != "archive":
                return code
            worst = max(worst, code)
    return worst


if __name__ == "__main__":
    sys.exit(main())
