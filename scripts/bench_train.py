"""Training throughput of the backends on MNIST, through the real training path.

Workload (the paper's MNIST setting): a 784-512-10 network, batch 50, T1 = 30 free
steps, T2 = 10 nudged steps, one-sided nudging (beta = 0.1), hard sigmoid, MSE output,
Adam; every batch is one
``neuro_hts.learning.ep_train_step(backend, net, optimizer, x, y, train_cfg, rng)`` on
``x_train[idx], y_train[idx]`` with a shuffled ``idx``, as ``neuro_hts.training`` takes
its batches (the copy is timed too; it is part of the training path).

Three modes:

* default: every backend in this process, taking turns run by run; prints one line per
  backend, ``<backend>: <samples/s> samples/s`` (the median over ``--repeats`` timed runs
  of ``--batches`` batches each, after a warm-up), then lines starting with ``#``: the
  ranges, the numba/numpy ratios, the machine's float32 matrix-product rate (one large
  sgemm) and the fraction of it the workload reaches.
* ``--compare-with OLD_TREE``: the same workload for an older checkout of the package
  (e.g. ``git worktree add /tmp/old903 903d546``) and for this one, in alternating
  subprocesses (old with ``PYTHONPATH=OLD_TREE``; each subprocess prints the
  ``neuro_hts.__file__`` it imported, and the parent checks it), same data and settings.
  Each repeat runs every (backend, version) once, in turn, each in a fresh process
  (import, data, warm-up, one timed run). Versions: ``old-1t`` and ``new-1t`` (one BLAS
  thread in every BLAS library), ``old-default`` (BLAS threads as they come). With
  ``--busy-core`` every repeat is run twice: with both cores idle, and with a spinning
  ``python -c "while True: pass"`` holding one core (started and killed by this script).
  Prints the medians, ranges and the ratios new/old and busy/idle.
* ``--worker``: one subprocess of the comparison (prints one JSON line).

BLAS threads: ``--blas-threads N`` (default 1; 0 = leave as they are) limits every BLAS
library loaded, NumPy's and SciPy's (Numba's ``np.dot`` calls SciPy's), through
``neuro_hts._threads.blas_threads`` when the package has it and threadpoolctl directly
otherwise (older checkouts).

FLOPs counted (the same for every backend; only matrix products, 2 m n k each): the
input drive W_1 x once per batch, per step the products between neighbouring relaxed
layers (bottom-up and top-down), and the weight gradients as one product per layer
(B rows for layer 1, whose input is the same in both phases, 2B rows for the others).
Elementwise work and the optimiser are not counted. Dense products are counted even
where a backend skips the zero pixels of the input.

Usage::

    .venv/bin/python scripts/bench_train.py [--backends numpy,numpy-float32,numba]
        [--repeats 7] [--batches 100] [--data-dir ../shared/data/mnist] [--blas-threads 1]
    .venv/bin/python scripts/bench_train.py --compare-with /tmp/old903 [--busy-core]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data" / "mnist"

#: backend label -> (backend name, dtype)
BACKENDS = {
    "numpy": ("numpy", np.float64),  # the float64 reference
    "numpy-float32": ("numpy", np.float32),
    "numba": ("numba", np.float32),
    "numba-float64": ("numba", np.float64),
}

#: comparison versions: name -> (which tree, BLAS threads; None = as they come)
VERSIONS = {"old-1t": ("old", 1), "old-default": ("old", None), "new-1t": ("new", 1)}


def workload_config():
    from neuro_hts.config import Config, DtConfig, ModelConfig, TrainConfig

    return Config(
        model=ModelConfig(arch=(784, 512, 10), form="leaky", activation="hard_sigmoid", output="mse"),
        dt=DtConfig(),
        train=TrainConfig(batch_size=50, t1=30, t2=10, beta=0.1, nudging="one-sided", optimizer="adam", lr=(5e-4,)),
    )


def flops_per_batch(config) -> int:
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


def blas_limit(n: int | None):
    """A context limiting every loaded BLAS library to ``n`` threads (None: no limit).

    Uses neuro_hts._threads.blas_threads where the package has it; for older checkouts
    it does the same by hand: load SciPy's BLAS (the one Numba's np.dot calls) first,
    then limit every BLAS library with threadpoolctl.
    """
    if not n:
        return contextlib.nullcontext()
    try:
        from neuro_hts._threads import blas_threads
    except ImportError:
        import scipy.linalg.cython_blas  # noqa: F401
        from threadpoolctl import threadpool_limits

        return threadpool_limits(limits=n, user_api="blas")
    return blas_threads(n)


def blas_summary() -> list[dict]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [
        {
            "lib": Path(info.get("filepath", "?")).name,
            "version": info.get("version"),
            "arch": info.get("architecture"),
            "threads": info.get("num_threads"),
        }
        for info in threadpool_info()
        if info.get("user_api") == "blas"
    ]


def blas_description() -> str:
    parts = [f"openblas {i['version']} ({i['arch']}, {i['threads']} threads, {i['lib']})" for i in blas_summary()]
    return "; ".join(parts) or "none found"


class Runner:
    """One backend with its own network and optimiser, trained batch after batch."""

    def __init__(self, label: str, config, x: np.ndarray, labels: np.ndarray, n_classes: int):
        from neuro_hts.backends import get_backend
        from neuro_hts.data import one_hot
        from neuro_hts.learning import make_optimizer
        from neuro_hts.network import init_network

        name, dtype = BACKENDS[label]
        self.label = label
        self.config = config
        self.backend = get_backend(name, dtype)
        self.net = init_network(config, dtype)
        self.opt = make_optimizer(config.train, self.net.n_layers)
        self.rng = np.random.default_rng(0)  # ep_train_step's generator (used by random-sign nudging only)
        self.x = np.ascontiguousarray(x, dtype=dtype)
        self.y = one_hot(labels, n_classes, dtype)
        self.batch = config.train.batch_size
        self.n_batches = x.shape[0] // self.batch
        # batches as neuro_hts.training takes them: x[idx], y[idx] with a shuffled order
        self.order = np.random.default_rng(1).permutation(self.n_batches * self.batch)
        self.next = 0
        self.rates: list[float] = []
        self.faults: list[float] = []  # minor page faults per batch, in the timed runs

    def train(self, n_batches: int) -> float:
        """Train ``n_batches`` batches; returns the elapsed seconds."""
        from neuro_hts.learning import ep_train_step

        B, train = self.batch, self.config.train
        faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        for _ in range(n_batches):
            idx = self.order[self.next * B : (self.next + 1) * B]
            ep_train_step(self.backend, self.net, self.opt, self.x[idx], self.y[idx], train, self.rng)
            self.next = (self.next + 1) % self.n_batches
        elapsed = time.perf_counter() - t0
        self.faults.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / n_batches)
        return elapsed


#: the parts of one training step timed by Runner.breakdown, in order
PARTS = ("batch copy", "input drive", "free phase", "nudged phase", "EP gradients", "loss and accuracy", "optimiser")


def _breakdown_step(runner, idx, pc=time.perf_counter) -> list[float]:
    """One training step split into PARTS, each timed (seconds). The same calls as
    ep_train_step for one-sided nudging (neuro_hts.learning.ep_phases), one by one."""
    from neuro_hts import dynamics

    be, net, train = runner.backend, runner.net, runner.config.train
    t = [pc()]
    x, y = runner.x[idx], runner.y[idx]
    t.append(pc())
    drive1 = be.input_drive(net, x)
    t.append(pc())
    free = be.relax(net, x, train.t1, drive1=drive1)
    t.append(pc())
    nudged = be.relax(net, x, train.t2, free.states, y, train.beta, drive1=drive1)
    t.append(pc())
    gW, gb = be.ep_gradients(net, x, y, nudged.states, train.beta, free.states, 0.0)
    t.append(pc())
    scores = dynamics.predict_scores(net, free.states)
    float(dynamics.cost(net, free.states, y).sum())
    int((scores.argmax(axis=1) == y.argmax(axis=1)).sum())
    t.append(pc())
    runner.opt.step(net, gW, gb)
    t.append(pc())
    return [b - a for a, b in zip(t, t[1:])]


def load_data(data_dir: str, n: int):
    from neuro_hts.data import load_dataset

    data = load_dataset("mnist", data_dir, n_train=n, n_test=1)
    return data.x_train, data.y_train, data.n_classes


# ---------------------------------------------------------------------------- modes
def run_in_process(args, labels) -> int:
    config = workload_config()
    B = config.train.batch_size
    x, y, n_classes = load_data(args.data_dir, max(args.batches, args.warmup, 1) * B)
    with blas_limit(args.blas_threads):
        runners = [Runner(label, config, x, y, n_classes) for label in labels]
        for r in runners:
            if args.warmup:
                r.train(args.warmup)
        for _ in range(args.repeats):  # backends take turns
            for r in runners:
                time.sleep(args.pause)
                r.rates.append(args.batches * B / r.train(args.batches))
        blas = blas_description()

    medians = {r.label: statistics.median(r.rates) for r in runners}
    for label, rate in medians.items():
        print(f"{label}: {rate:.0f} samples/s")

    arch = "-".join(map(str, config.model.arch))
    t = config.train
    print(
        f"# MNIST {arch}, batch {B}, T1={t.t1}, T2={t.t2}, {t.nudging} beta={t.beta}, {config.model.activation}, "
        f"{config.model.output}, {t.optimizer}; median of {args.repeats} runs x {args.batches} batches "
        f"after {args.warmup} warm-up batches; BLAS threads {args.blas_threads or 'as they come'}"
    )
    for r in runners:
        spread = f"{min(r.rates):.0f}..{max(r.rates):.0f}"
        print(f"#   {r.label}: runs {spread} samples/s, {statistics.median(r.faults):.0f} minor page faults per batch")
    for ref in ("numpy", "numpy-float32"):
        if "numba" in medians and ref in medians:
            print(f"# numba/{ref}: {medians['numba'] / medians[ref]:.2f}x")
    with blas_limit(args.blas_threads):
        gflops = sgemm_gflops(args.sgemm_n)
    flops = flops_per_batch(config)
    print(f"# sgemm float32 {args.sgemm_n}^3 (NumPy's BLAS, same threads): {gflops:.1f} GFLOP/s")
    print(f"# workload: {flops / 1e6:.1f} MFLOP per batch ({flops / B / 1e6:.3f} MFLOP/sample, matrix products only)")
    for label, rate in medians.items():
        achieved = rate / B * flops / 1e9
        print(f"# {label}: {achieved:.1f} GFLOP/s = {achieved / gflops:.3f} of sgemm")
    import numba

    print(f"# python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}; BLAS: {blas}")
    return 0


def run_worker(args, labels) -> int:
    """One process of the comparison: warm-up and ``--repeats`` timed runs of one backend."""
    import neuro_hts

    (label,) = labels
    config = workload_config()
    B = config.train.batch_size
    x, y, n_classes = load_data(args.data_dir, max(args.batches, args.warmup, 1) * B)
    with blas_limit(args.blas_threads):
        r = Runner(label, config, x, y, n_classes)
        if args.warmup:
            r.train(args.warmup)
        blas = blas_summary()  # after the warm-up: Numba has loaded its BLAS by now
        parts = []
        for _ in range(args.repeats):  # no pause: this process runs one backend only
            if args.breakdown:
                for _ in range(args.batches):
                    idx = r.order[r.next * B : (r.next + 1) * B]
                    parts.append(_breakdown_step(r, idx))
                    r.next = (r.next + 1) % r.n_batches
                r.rates.append(args.batches * B / sum(map(sum, parts[-args.batches :])))
            else:
                r.rates.append(args.batches * B / r.train(args.batches))
    out = {"label": label, "rates": r.rates, "faults": r.faults, "neuro_hts": neuro_hts.__file__, "blas": blas}
    if args.breakdown:
        out["parts_ms"] = [statistics.median(p[i] for p in parts) * 1e3 for i in range(len(PARTS))]
    print(json.dumps(out))
    return 0


def _cpu_times() -> tuple[float, float] | None:
    """(busy, steal) CPU seconds of the whole machine so far, from /proc/stat (Linux)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    v = [int(f) for f in fields]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    steal = v[7] if len(v) > 7 else 0
    return (sum(v[:8]) - idle - steal) / ticks, steal / ticks


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    rest = stat[stat.rfind(")") + 2 :].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


class Spinner:
    """A process spinning on one core (``python -c "while True: pass"``), started and killed here."""

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)
        return self

    def cpu(self) -> float:
        return _proc_cpu(self.proc.pid)

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()
        return False


class _NoSpinner(contextlib.nullcontext):
    def __enter__(self):
        return None


def _worker_cmd(args, label: str, threads: int | None) -> list[str]:
    return [
        sys.executable, str(Path(__file__).resolve()), "--worker", "--backends", label,
        "--batches", str(args.batches), "--warmup", str(args.warmup), "--repeats", "1",
        "--pause", str(args.pause), "--data-dir", args.data_dir, "--blas-threads", str(threads or 0),
    ] + (["--breakdown"] if args.breakdown else [])


def run_compare(args, labels) -> int:
    old_tree = Path(args.compare_with).resolve()
    if not (old_tree / "neuro_hts" / "__init__.py").is_file():
        print(f"error: {old_tree} holds no neuro_hts package", file=sys.stderr)
        return 2
    trees = {"old": old_tree, "new": REPO}
    versions = [v for v in args.versions.split(",") if v]
    loads = ["idle", "busy"] if args.busy_core else ["idle"]
    # (backend, version, load) -> list of samples/s
    rates: dict[tuple[str, str, str], list[float]] = {}
    # (load) -> per worker run: CPU (cores) used by other processes, and steal (cores)
    others: dict[str, list[float]] = {}
    steals: dict[str, list[float]] = {}
    parts_ms: dict[tuple[str, str, str], list[list[float]]] = {}  # with --breakdown
    seen: dict[str, set[str]] = {}
    blas_seen: dict[tuple[str, str], list] = {}
    env0 = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for rep in range(args.repeats):
        for load in loads:
            ctx = Spinner() if load == "busy" else _NoSpinner()
            with ctx as spin:
                for label in labels:
                    for version in versions:
                        tree, threads = VERSIONS[version]
                        env = dict(env0, PYTHONPATH=str(trees[tree]))
                        t0, c0 = time.perf_counter(), _cpu_times()
                        ch0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                        s0 = spin.cpu() if spin else 0.0
                        r = subprocess.run(
                            _worker_cmd(args, label, threads), env=env, capture_output=True, text=True, cwd="/"
                        )
                        wall, c1 = time.perf_counter() - t0, _cpu_times()
                        ch1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                        mine = (ch1.ru_utime + ch1.ru_stime - ch0.ru_utime - ch0.ru_stime) + (
                            (spin.cpu() - s0) if spin else 0.0
                        )
                        if c0 and c1:
                            others.setdefault(load, []).append(max(0.0, (c1[0] - c0[0] - mine) / wall))
                            steals.setdefault(load, []).append((c1[1] - c0[1]) / wall)
                        if r.returncode != 0:
                            print(f"error: worker {label} {version} failed:\n{r.stderr}", file=sys.stderr)
                            return 1
                        out = json.loads(r.stdout.strip().splitlines()[-1])
                        where = Path(out["neuro_hts"]).resolve()
                        if trees[tree] not in where.parents:
                            print(f"error: {version} imported {where}, not from {trees[tree]}", file=sys.stderr)
                            return 1
                        seen.setdefault(version, set()).add(str(where))
                        blas_seen[(version, load)] = out["blas"]
                        rates.setdefault((label, version, load), []).extend(out["rates"])
                        if "parts_ms" in out:
                            parts_ms.setdefault((label, version, load), []).append(out["parts_ms"])
                        print(
                            f"#   repeat {rep + 1}/{args.repeats} {load:4s} {label:13s} {version:11s} "
                            f"{out['rates'][0]:8.0f} samples/s",
                            file=sys.stderr, flush=True,
                        )

    config = workload_config()
    t = config.train
    print(
        f"# MNIST 784-512-10, batch {t.batch_size}, T1={t.t1}, T2={t.t2}, {t.nudging}, hard sigmoid, MSE, Adam; "
        f"{args.repeats} repeats, each one fresh process per (backend, version{', load' if args.busy_core else ''}) "
        f"taking turns: {args.warmup} warm-up + {args.batches} timed batches"
    )
    for version, files in seen.items():
        print(f"# {version}: imported {', '.join(sorted(files))}")
    for load in loads:
        if others.get(load):
            o, st = others[load], steals[load]
            print(
                f"# {load}: CPU of other processes during the worker runs {statistics.median(o):.2f} cores "
                f"(median; max {max(o):.2f}), steal {statistics.median(st):.2f} cores (max {max(st):.2f})"
            )
    for (version, load), blas in sorted(blas_seen.items()):
        libs = "; ".join(f"{b['lib']} {b['threads']} threads" for b in blas)
        print(f"# {version} ({load}): BLAS {libs}")
    print("| backend | version | load | median samples/s | range |")
    print("|---|---|---|---|---|")
    med = {}
    for label in labels:
        for version in versions:
            for load in loads:
                v = rates[(label, version, load)]
                med[(label, version, load)] = statistics.median(v)
                print(f"| {label} | {version} | {load} | {statistics.median(v):.0f} | {min(v):.0f}-{max(v):.0f} |")
    if parts_ms:
        keys = sorted(parts_ms, key=lambda k: (labels.index(k[0]), loads.index(k[2]), versions.index(k[1])))
        print("")
        print("Per batch, ms (median over the batches of each process, then median over the processes):")
        print("")
        print("| part | " + " | ".join(f"{lb} {v} {ld}" for lb, v, ld in keys) + " |")
        print("|---|" + "---|" * len(keys))
        cols = {k: [statistics.median(run[i] for run in parts_ms[k]) for i in range(len(PARTS))] for k in keys}
        for i, part in enumerate(PARTS):
            print(f"| {part} | " + " | ".join(f"{cols[k][i]:.3f}" for k in keys) + " |")
        print("| sum | " + " | ".join(f"{sum(cols[k]):.3f}" for k in keys) + " |")
        print("")
    for label in labels:
        for load in loads:
            if "new-1t" in versions:
                for old in ("old-1t", "old-default"):
                    if old in versions:
                        ratio = med[(label, "new-1t", load)] / med[(label, old, load)]
                        print(f"# {label} {load}: new-1t / {old} = {ratio:.2f}x")
        if args.busy_core:
            for version in versions:
                ratio = med[(label, version, "busy")] / med[(label, version, "idle")]
                print(f"# {label} {version}: busy / idle = {ratio:.2f}")
    return 0


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
    parser.add_argument(
        "--blas-threads", type=int, default=1,
        help="threads of every BLAS library (NumPy's and SciPy's/Numba's); 0 = leave them as they come",
    )
    parser.add_argument("--compare-with", metavar="OLD_TREE", help="also run the package found in OLD_TREE (see above)")
    parser.add_argument(
        "--versions", default=",".join(VERSIONS), help=f"with --compare-with: comma-separated, from {', '.join(VERSIONS)}"
    )
    parser.add_argument("--busy-core", action="store_true", help="with --compare-with: also run with one core held busy")
    parser.add_argument(
        "--breakdown", action="store_true",
        help="with --compare-with: time the parts of each step (drive, phases, gradients, optimiser) separately "
        "(one-sided nudging only; the rates then exclude the Python glue of ep_train_step)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    labels = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in labels if b not in BACKENDS]
    if unknown or not labels:
        parser.error(f"unknown backend(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(BACKENDS)}")
    if args.repeats < 1 or args.batches < 1 or args.warmup < 0 or args.pause < 0 or args.blas_threads < 0:
        parser.error("--repeats and --batches must be >= 1, --warmup, --pause and --blas-threads >= 0")
    bad_versions = [v for v in args.versions.split(",") if v and v not in VERSIONS]
    if bad_versions:
        parser.error(f"unknown version(s) {', '.join(bad_versions)}; choose from {', '.join(VERSIONS)}")
    if args.worker:
        if len(labels) != 1:
            parser.error("--worker runs one backend")
        return run_worker(args, labels)
    if args.compare_with:
        return run_compare(args, labels)
    if args.busy_core or args.breakdown:
        parser.error("--busy-core and --breakdown need --compare-with")
    return run_in_process(args, labels)


if __name__ == "__main__":
    sys.exit(main())
