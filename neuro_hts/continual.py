"""Class-incremental learning of an EP network: the protocol, its baselines and SRC.

The protocol (docs/FAMILY.md section 4): the classes are split into ``n_tasks`` tasks of
``classes_per_task`` consecutive classes ({0,1}, {2,3}, ...); task k is trained on its
own classes only, then (method ``src``/``src+rehearsal``) the net sleeps
(:mod:`neuro_hts.sleep`); after every task the whole test set is classified 10-way and
the accuracy on every task's classes is recorded: ``matrix[k, j]`` is the accuracy on the
test samples of task j after task k, ``overall[k]`` the 10-way accuracy on the whole test
set.

Methods (:data:`METHODS`):

* ``sequential`` -- each task on its own data (the lower bound);
* ``joint`` -- task k on the data of tasks 1..k (the upper bound);
* ``rehearsal`` -- task k on its data plus a fixed random ``rehearsal_fraction`` of every
  earlier task's training data ("awake replay");
* ``ewc`` -- elastic weight consolidation: the gradient gets
  ``ewc_lambda * sum_j F_j (theta - theta_j*)`` (:func:`ewc_penalty_grad`), F_j the diagonal
  Fisher after task j estimated from the squared EP (or BPTT) gradient estimates
  (:func:`fisher_diagonal`);
* ``src`` -- sequential, then SRC after every task;
* ``src+rehearsal`` -- rehearsal, then SRC after every task.

``trainer`` picks the gradient: ``ep`` (the config's algorithm and engine, float) or
``bptt`` (:func:`neuro_hts.bptt.bptt_gradients` of the free phase: the same network
trained by backpropagation through time).

A run writes a checkpoint after every task (atomically) and resumes after the last
finished task; the results (CSV, HDF5 with the config, ``summary.json``, figures) are
rewritten after every task. The library logs and never prints.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._atomic import atomic_path
from .config import Config, read_toml
from .errors import ConfigError, DivergenceError, RunFileError
from .sleep import G_FUNCTIONS, SleepConfig, layer_activations, sleep, sleep_iterations

__all__ = [
    "METHODS", "TRAINERS", "ProtocolConfig", "ContinualConfig", "load_continual_config", "task_classes",
    "fisher_diagonal", "ewc_penalty_grad", "run_protocol", "run_seeds", "ProtocolResult", "summarize_seeds",
    "sample_sleep_config", "search_sleep", "probe_accuracy", "SEARCH_FACTORS", "SEARCH_SPACE_WIDE", "SEARCH_SPACES",
]

logger = logging.getLogger(__name__)

METHODS = ("sequential", "joint", "rehearsal", "ewc", "src", "src+rehearsal")
TRAINERS = ("ep", "bptt")
FORMAT_NAME = "neuro-hts-continual"
SCHEMA_VERSION = 1
_STREAMS = {"order": 0, "nudge": 1, "rehearsal": 2, "sleep": 3, "alpha": 4, "fisher": 5, "validation": 6, "probe": 7}


def _rng(seed: int, purpose: str, *extra: int) -> np.random.Generator:
    """One reproducible stream per purpose and (task, epoch): resuming after task k repeats nothing."""
    return np.random.default_rng([int(seed), 14, _STREAMS[purpose], *map(int, extra)])


@dataclass(frozen=True)
class ProtocolConfig:
    """``[continual]``: the class-incremental protocol and the method's settings.

    ``epochs``: epochs per task. ``validation``: hold out this fraction of the training
    set (a fixed split) and test on it instead of the test set (the sleep search).
    ``alpha_samples``: seen training samples whose free-phase states set the sleep's
    input gains. ``fisher_samples`` / ``fisher_batch``: EWC's Fisher estimate.
    ``reset_optimizer``: a fresh optimiser state for every task. ``probe``: after every
    task also record the linear-probe accuracy (:func:`probe_accuracy`) of the last hidden
    layer, on ``probe_samples`` training images of all classes.
    """

    method: str = "sequential"
    trainer: str = "ep"
    n_tasks: int = 5
    classes_per_task: int = 2
    epochs: int = 1
    rehearsal_fraction: float = 0.05
    ewc_lambda: float = 1000.0
    fisher_samples: int = 1000
    fisher_batch: int = 10
    alpha_samples: int = 1000
    reset_optimizer: bool = True
    validation: float = 0.0
    probe: bool = False
    probe_samples: int = 10000

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"[continual] method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.trainer not in TRAINERS:
            raise ConfigError(f"[continual] trainer must be one of {', '.join(TRAINERS)}, got {self.trainer!r}")
        for k in ("n_tasks", "classes_per_task", "epochs", "fisher_samples", "fisher_batch", "alpha_samples",
                  "probe_samples"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"[continual] {k} must be a positive integer, got {v!r}")
        for k, lo, hi in (("rehearsal_fraction", 0.0, 1.0), ("validation", 0.0, 0.5)):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise ConfigError(f"[continual] {k} must be a number in [{lo}, {hi}], got {v!r}")
        if isinstance(self.ewc_lambda, bool) or not isinstance(self.ewc_lambda, (int, float)) or not (
                math.isfinite(self.ewc_lambda) and self.ewc_lambda >= 0):
            raise ConfigError(f"[continual] ewc_lambda must be a finite number >= 0, got {self.ewc_lambda!r}")
        for k in ("reset_optimizer", "probe"):
            if not isinstance(getattr(self, k), bool):
                raise ConfigError(f"[continual] {k} must be true or false, got {getattr(self, k)!r}")

    @property
    def sleeps(self) -> bool:
        return self.method in ("src", "src+rehearsal")

    @property
    def rehearses(self) -> bool:
        return self.method in ("rehearsal", "src+rehearsal")


@dataclass(frozen=True)
class ContinualConfig:
    """A network/training config (:class:`~neuro_hts.config.Config`) plus ``[continual]`` and ``[sleep]``."""

    base: Config = field(default_factory=Config)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    sleep: SleepConfig = field(default_factory=SleepConfig)

    def to_dict(self) -> dict:
        return {**self.base.to_dict(), "continual": dataclasses.asdict(self.protocol), "sleep": self.sleep.to_dict()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "ContinualConfig":
        d = dict(d)
        sections = {}
        for name, klass in (("continual", ProtocolConfig), ("sleep", SleepConfig)):
            sec = d.pop(name, {}) or {}
            if not isinstance(sec, dict):
                raise ConfigError(f"[{name}] must be a table")
            bad = set(sec) - {f.name for f in dataclasses.fields(klass)}
            if bad:
                raise ConfigError(f"unknown key(s) in [{name}]: {', '.join(sorted(bad))}")
            try:
                sections[name] = klass(**sec)
            except ConfigError:
                raise
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"[{name}] invalid value: {exc}") from None
        return cls(Config.from_dict(d), sections["continual"], sections["sleep"])

    @classmethod
    def from_json(cls, text: str) -> "ContinualConfig":
        return cls.from_dict(json.loads(text))

    def replace(self, **sections: dict) -> "ContinualConfig":
        """A copy with keys overridden (None values ignored), sections as in the TOML (``continual``, ``sleep``, ``train``...)."""
        d = self.to_dict()
        for name, updates in sections.items():
            if name not in d:
                raise ConfigError(f"unknown config section {name!r}")
            d[name].update({k: v for k, v in updates.items() if v is not None})
        return ContinualConfig.from_dict(d)


def load_continual_config(path: str | Path) -> ContinualConfig:
    """Load a TOML file with the sections of a Config plus ``[continual]`` and ``[sleep]``."""
    p = Path(path)
    raw = read_toml(p)
    try:
        return ContinualConfig.from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


def task_classes(task: int, classes_per_task: int) -> np.ndarray:
    """Classes of task ``task`` (0-based): classes_per_task consecutive labels."""
    return np.arange(task * classes_per_task, (task + 1) * classes_per_task)


# ----------------------------------------------------------------------------- EWC


def fisher_diagonal(grad_fn, x: np.ndarray, y: np.ndarray, batch: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Diagonal Fisher estimate F = mean_b g_b^2 over batches b of ``batch`` samples.

    g_b is the gradient estimate on batch b (``grad_fn(x_b, y_b) -> (gW, gb)``: the EP
    estimate or BPTT's), so F is the empirical Fisher of ``batch``-sample means (ewc_lambda
    absorbs the factor ``batch`` that separates it from the per-sample Fisher).
    """
    fW = fb = None
    n = 0
    for start in range(0, x.shape[0] - batch + 1, batch):
        gW, gb = grad_fn(x[start : start + batch], y[start : start + batch])
        if fW is None:
            fW = [np.zeros(g.shape) for g in gW]
            fb = [np.zeros(g.shape) for g in gb]
        for acc, g in zip(fW + fb, list(gW) + list(gb)):
            acc += np.asarray(g, np.float64) ** 2
        n += 1
    if n == 0:
        raise ConfigError(f"fisher_batch {batch} is larger than the {x.shape[0]} samples of a task")
    return [f / n for f in fW], [f / n for f in fb]


def ewc_penalty_grad(params: list[np.ndarray], fisher_sum: list[np.ndarray], fisher_anchor_sum: list[np.ndarray],
                     lam: float) -> list[np.ndarray]:
    """Gradient of the EWC penalty (lambda / 2) sum_j sum_i F_j,i (theta_i - theta*_j,i)^2.

    = lambda (sum_j F_j theta - sum_j F_j theta*_j), with ``fisher_sum`` = sum_j F_j and
    ``fisher_anchor_sum`` = sum_j F_j theta*_j kept per parameter array.
    """
    return [lam * (f * np.asarray(p, np.float64) - fa) for p, f, fa in zip(params, fisher_sum, fisher_anchor_sum)]


# ----------------------------------------------------------------------------- state


@dataclass
class ProtocolResult:
    """Accuracies after every finished task (rows), timings and sleep statistics."""

    n_tasks: int
    matrix: np.ndarray  # (tasks done, n_tasks): accuracy on task j's test samples after task k
    overall: np.ndarray  # (tasks done,): 10-way accuracy on the whole test set
    pre_sleep_overall: np.ndarray  # (tasks done,): the same before the sleep (NaN without sleep)
    train_seconds: list[float]
    sleep_seconds: list[float]
    sleep_stats: list[dict]
    probe: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (tasks done,): linear-probe accuracy (NaN: off)

    @property
    def tasks_completed(self) -> int:
        return int(self.overall.shape[0])

    @property
    def final_accuracy(self) -> float:
        return float(self.overall[-1]) if self.tasks_completed else float("nan")


def _empty_result(n_tasks: int) -> ProtocolResult:
    return ProtocolResult(n_tasks, np.zeros((0, n_tasks)), np.zeros(0), np.zeros(0), [], [], [])


def _save_checkpoint(path: Path, cfg: ContinualConfig, net, opt_state: dict, ewc: dict, res: ProtocolResult) -> None:
    import h5py

    with atomic_path(path, suffix=".h5.tmp") as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT_NAME
            f.attrs["schema_version"] = np.int64(SCHEMA_VERSION)
            f.attrs["config"] = cfg.to_json()
            f.attrs["tasks_completed"] = np.int64(res.tasks_completed)
            g = f.create_group("network")
            for i, (w, b, d) in enumerate(zip(net.weights, net.biases, net.dts), start=1):
                gl = g.create_group(str(i))
                gl.create_dataset("weight", data=w)
                gl.create_dataset("bias", data=b)
                gl.create_dataset("dt", data=d)
            for name, arrs in (("optimizer", opt_state), ("ewc", ewc)):
                grp = f.create_group(name)
                for k, lst in arrs.items():
                    gk = grp.create_group(k)
                    for j, a in enumerate(lst):
                        gk.create_dataset(str(j), data=np.asarray(a))
            r = f.create_group("results")
            r.create_dataset("matrix", data=res.matrix)
            r.create_dataset("overall", data=res.overall)
            r.create_dataset("pre_sleep_overall", data=res.pre_sleep_overall)
            r.create_dataset("train_seconds", data=np.asarray(res.train_seconds, np.float64))
            r.create_dataset("sleep_seconds", data=np.asarray(res.sleep_seconds, np.float64))
            r.create_dataset("probe", data=np.asarray(res.probe, np.float64))
            r.attrs["sleep_stats"] = json.dumps(res.sleep_stats)


def _load_checkpoint(path: Path, net):
    """(config json, optimizer state, ewc state, result); the network's arrays are filled in place."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise RunFileError(f"{path}: not a readable continual checkpoint ({exc})") from None
    with f:
        if f.attrs.get("format") != FORMAT_NAME or int(f.attrs.get("schema_version", -1)) != SCHEMA_VERSION:
            raise RunFileError(f"{path}: not a {FORMAT_NAME} checkpoint of schema {SCHEMA_VERSION}")
        for i, (w, b, d) in enumerate(zip(net.weights, net.biases, net.dts), start=1):
            g = f["network"][str(i)]
            w[...] = np.array(g["weight"])
            b[...] = np.array(g["bias"])
            d[...] = np.array(g["dt"])
        states = []
        for name in ("optimizer", "ewc"):
            states.append({k: [np.array(g[str(j)]) for j in range(len(g))] for k, g in f[name].items()})
        r = f["results"]
        n_tasks = r["matrix"].shape[1]
        overall = np.array(r["overall"])
        # checkpoints written before the probe existed hold no "probe": NaN, as with the probe off
        probe = np.array(r["probe"]) if "probe" in r else np.full(overall.shape, np.nan)
        res = ProtocolResult(n_tasks, np.array(r["matrix"]), overall, np.array(r["pre_sleep_overall"]),
                             list(np.array(r["train_seconds"])), list(np.array(r["sleep_seconds"])),
                             json.loads(r.attrs["sleep_stats"]), probe)
        return str(f.attrs["config"]), states[0], states[1], res


# ----------------------------------------------------------------------------- outputs


def _write_outputs(out: Path, cfg: ContinualConfig, res: ProtocolResult, seconds: float) -> dict:
    """accuracy.csv, accuracy.h5 (with the config), summary.json, heatmap.png, curves.png."""
    import h5py

    n = res.n_tasks
    with atomic_path(out / "accuracy.csv") as tmp:
        with open(tmp, "w") as fh:
            fh.write("after_task," + ",".join(f"task_{j + 1}" for j in range(n)) + ",all,all_before_sleep,probe\n")
            for k in range(res.tasks_completed):
                row = [f"{v:.6f}" for v in res.matrix[k]] + [f"{res.overall[k]:.6f}", f"{res.pre_sleep_overall[k]:.6f}",
                                                            f"{res.probe[k]:.6f}"]
                fh.write(f"{k + 1}," + ",".join(row) + "\n")
    with atomic_path(out / "accuracy.h5", suffix=".h5.tmp") as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = "neuro-hts-continual-accuracy"
            f.attrs["config"] = cfg.to_json()
            f.create_dataset("matrix", data=res.matrix)
            f.create_dataset("overall", data=res.overall)
            f.create_dataset("pre_sleep_overall", data=res.pre_sleep_overall)
            f.create_dataset("probe", data=np.asarray(res.probe, np.float64))
    summary = {
        "method": cfg.protocol.method,
        "trainer": cfg.protocol.trainer,
        "dataset": cfg.base.data.dataset,
        "dt_dist": cfg.base.dt.dist,
        "seed": cfg.base.train.seed,
        "tasks_completed": res.tasks_completed,
        "n_tasks": n,
        "complete": res.tasks_completed == n,
        "final_accuracy": res.final_accuracy,
        "overall_accuracy": [float(v) for v in res.overall],
        "overall_before_sleep": [None if np.isnan(v) else float(v) for v in res.pre_sleep_overall],
        "probe_accuracy": [None if np.isnan(v) else float(v) for v in res.probe],
        "matrix": res.matrix.tolist(),
        "train_seconds": [float(v) for v in res.train_seconds],
        "sleep_seconds": [float(v) for v in res.sleep_seconds],
        "seconds": float(seconds),
        "sleep": res.sleep_stats,
        "config": cfg.to_dict(),
    }
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    try:
        _plot(out, cfg, res)
    except ImportError as exc:  # matplotlib is optional
        logger.warning("no figures: %s", exc)
    return summary


def _plot(out: Path, cfg: ContinualConfig, res: ProtocolResult) -> None:
    from .plotting import _figure_class

    Figure, Canvas = _figure_class()
    n, k = res.n_tasks, res.tasks_completed
    title = f"{cfg.base.data.dataset} {cfg.protocol.method} ({cfg.protocol.trainer}, dt {cfg.base.dt.dist}, seed {cfg.base.train.seed})"
    fig = Figure(figsize=(5.5, 4.5))
    Canvas(fig)
    ax = fig.add_subplot(111)
    m = np.full((n, n), np.nan)
    m[:k] = res.matrix
    im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
    for i in range(k):
        for j in range(n):
            ax.text(j, i, f"{100 * m[i, j]:.0f}", ha="center", va="center", color="w" if m[i, j] < 0.6 else "k", fontsize=8)
    ax.set_xticks(range(n), [f"T{j + 1}" for j in range(n)])
    ax.set_yticks(range(n), [f"after T{j + 1}" for j in range(n)])
    ax.set_xlabel("test task")
    ax.set_title(title, fontsize=8)
    fig.colorbar(im, ax=ax, label="accuracy")
    fig.tight_layout()
    with atomic_path(out / "heatmap.png", suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    fig = Figure(figsize=(6, 4))
    Canvas(fig)
    ax = fig.add_subplot(111)
    t = np.arange(1, k + 1)
    for j in range(n):
        ax.plot(t[j:], res.matrix[j:, j], marker="o", lw=1, label=f"task {j + 1}")
    ax.plot(t, res.overall, "k-", marker="s", lw=2, label="all (10-way)")
    if np.isfinite(res.pre_sleep_overall).any():
        ax.plot(t, res.pre_sleep_overall, "k--", lw=1, label="all, before sleep")
    if np.isfinite(res.probe).any():
        ax.plot(t, res.probe, ":", color="0.4", marker="^", lw=1.5, label="linear probe of the hidden layer")
    ax.set_xlabel("after task")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_xticks(range(1, n + 1))
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    with atomic_path(out / "curves.png", suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)


# ----------------------------------------------------------------------------- protocol


def _split(cfg: ContinualConfig, data):
    """(x_train, y_train, x_test, y_test): the test set, or a fixed validation split of the training set."""
    v = cfg.protocol.validation
    if v <= 0:
        return data.x_train, data.y_train, data.x_test, data.y_test
    perm = np.random.default_rng([14, _STREAMS["validation"]]).permutation(data.n_train)
    n_val = int(round(v * data.n_train))
    val, tr = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return data.x_train[tr], data.y_train[tr], data.x_train[val], data.y_train[val]


class _Trainer:
    """The gradient of a batch (EP through the engine, or BPTT), EWC's penalty, the optimiser step."""

    def __init__(self, cfg: ContinualConfig, net):
        from .algorithms import make_algorithm
        from .engines import check_supported, make_engine
        from .learning import make_optimizer

        base = cfg.base
        self.cfg = cfg
        self.n_layers = net.n_layers
        self.engine = make_engine(base, make_optimizer(base.train, net.n_layers))
        if self.engine.name != "float":
            raise ConfigError("continual learning runs the float engine only (train.arith = 'float')")
        self.algorithm = make_algorithm(base)
        check_supported(self.engine, net, self.algorithm)
        self.ewc: dict[str, list[np.ndarray]] = {}

    def new_optimizer(self):
        from .learning import make_optimizer

        self.engine.optimizer = make_optimizer(self.cfg.base.train, self.n_layers)

    def gradients(self, net, x, y, rng=None):
        if self.cfg.protocol.trainer == "bptt":
            from .bptt import bptt_gradients

            gW, gb, _ = bptt_gradients(net, x, y, self.cfg.base.train.t1)
            return gW, gb
        _, gW, gb = self.engine.gradients(net, x, y, self.algorithm, rng)
        return [np.array(g) for g in gW], [np.array(g) for g in gb]

    def step(self, net, x, y, rng) -> None:
        gW, gb = self.gradients(net, x, y, rng)
        if self.ewc:
            lam = self.cfg.protocol.ewc_lambda
            pen = ewc_penalty_grad(list(net.weights) + list(net.biases), self.ewc["fisher"], self.ewc["anchor"], lam)
            L = len(gW)
            gW = [(g + p).astype(g.dtype) for g, p in zip(gW, pen[:L])]
            gb = [(g + p).astype(g.dtype) for g, p in zip(gb, pen[L:])]
        self.engine.optimizer.step(net, gW, gb)

    def consolidate(self, net, x, y, rng) -> None:
        """EWC after a task: add F_k and F_k theta*_k to the running sums."""
        p = self.cfg.protocol
        idx = rng.permutation(x.shape[0])[: p.fisher_samples]
        fW, fb = fisher_diagonal(lambda xb, yb: self.gradients(net, xb, yb, rng), x[idx], y[idx], p.fisher_batch)
        F = fW + fb
        params = [np.asarray(a, np.float64) for a in list(net.weights) + list(net.biases)]
        if not self.ewc:
            self.ewc = {"fisher": [np.zeros_like(a) for a in params], "anchor": [np.zeros_like(a) for a in params]}
        for fs, fa, f, a in zip(self.ewc["fisher"], self.ewc["anchor"], F, params):
            fs += f
            fa += f * a


def _task_training_set(cfg: ContinualConfig, x, y, task: int, seed: int):
    """Indices of the training samples of task ``task`` (0-based) under the method."""
    p = cfg.protocol
    in_task = [np.flatnonzero(np.isin(y, task_classes(j, p.classes_per_task))) for j in range(task + 1)]
    if p.method == "joint":
        return np.concatenate(in_task)
    parts = [in_task[task]]
    if p.rehearses and p.rehearsal_fraction > 0:
        for j in range(task):
            keep = max(1, int(round(p.rehearsal_fraction * in_task[j].size)))
            parts.append(np.sort(_rng(seed, "rehearsal", j).permutation(in_task[j])[:keep]))
    return np.concatenate(parts)


def probe_accuracy(trainer: _Trainer, net, x_fit, y_fit, x_test, y_test, t1: int, batch_size: int = 1000) -> float:
    """Linear-probe accuracy of the last hidden layer: how much the representation still holds.

    The free-phase states h (``t1`` steps) of ``x_fit`` get a least-squares linear readout
    with a bias onto one-hot labels of all classes, V = argmin ||[h 1] V - Y||^2; the
    score is the accuracy of argmax([h 1] V) on ``x_test``. Forgetting that the probe does
    not show is in the net's own readout, not in its hidden layer.
    """
    n_classes = net.arch[-1]

    def hidden(x):
        # the free-phase states of every layer; with a softmax readout its logits come last, so
        # the last hidden layer is always the one before the last entry
        h = layer_activations(trainer.engine.backend, net, x, t1, "free", batch_size)[-2]
        return np.hstack([h, np.ones((h.shape[0], 1))])

    V = np.linalg.lstsq(hidden(x_fit), np.eye(n_classes)[y_fit], rcond=None)[0]
    return float(np.mean(np.argmax(hidden(x_test) @ V, axis=1) == y_test))


def _evaluate(trainer: _Trainer, net, x_test, y_test, n_tasks, cpt):
    ev = trainer.engine.evaluate(net, x_test, y_test, trainer.algorithm.free_phase())
    correct = ev.predictions == y_test
    row = np.array([correct[np.isin(y_test, task_classes(j, cpt))].mean() for j in range(n_tasks)])
    return row, float(correct.mean())


def _comparable(cfg: ContinualConfig) -> dict:
    """What must match for a run to resume: the whole config, but ``[sleep]`` only for a method that sleeps.

    (A stored config goes through ``from_json`` first, so keys added since it was written
    compare with their defaults.)
    """
    d = json.loads(cfg.to_json())
    if not cfg.protocol.sleeps:
        d.pop("sleep")
    return d


def run_protocol(cfg: ContinualConfig, out: str | Path, *, dataset=None, progress=None, force: bool = False) -> dict:
    """Run (or resume) the protocol of ``cfg`` into directory ``out``; returns the summary dict.

    ``out/checkpoint.h5`` holds the state after the last finished task; a run started
    again with the same config continues after it (with another config: ConfigError
    unless ``force``, which starts over).
    """
    from .data import load_dataset, one_hot
    from .network import init_network

    out = Path(out)
    p, base = cfg.protocol, cfg.base
    seed = base.train.seed
    if cfg.protocol.trainer == "bptt" and base.train.algorithm != "ep":
        raise ConfigError("trainer 'bptt' trains the free phase by BPTT; set train.algorithm = 'ep'")
    data = dataset if dataset is not None else load_dataset(base.data.dataset, base.data.data_dir, n_train=base.data.n_train,
                                                            n_test=base.data.n_test)
    if data.n_classes < p.n_tasks * p.classes_per_task:
        raise ConfigError(f"{data.name} has {data.n_classes} classes, fewer than {p.n_tasks} tasks x {p.classes_per_task}")
    from .engines import make_engine
    from .learning import make_optimizer

    dtype = make_engine(base, make_optimizer(base.train, len(base.model.arch) - 1)).dtype
    net = init_network(base, dtype)
    if net.arch[0] != data.n_features or net.arch[-1] != data.n_classes:
        raise ConfigError(f"arch {'-'.join(map(str, net.arch))} does not fit {data.name} ({data.n_features} inputs, "
                          f"{data.n_classes} classes)")
    if p.probe and net.n_layers < 2:
        raise ConfigError("continual.probe needs a hidden layer to probe")
    trainer = _Trainer(cfg, net)
    x_tr, y_tr, x_te, y_te = _split(cfg, data)
    x_tr = np.ascontiguousarray(x_tr, dtype=dtype)
    x_te = np.ascontiguousarray(x_te, dtype=dtype)
    y_tr_1h = one_hot(y_tr, data.n_classes, dtype)
    probe_idx = np.sort(_rng(seed, "probe").permutation(x_tr.shape[0])[: p.probe_samples]) if p.probe else None
    ckpt = out / "checkpoint.h5"
    res = _empty_result(p.n_tasks)
    elapsed = 0.0
    if ckpt.exists() and not force:
        stored, opt_state, ewc, res = _load_checkpoint(ckpt, net)
        if _comparable(ContinualConfig.from_json(stored)) != _comparable(cfg):
            raise ConfigError(f"{out} holds a run with another config; use another --out or --force to start over")
        trainer.engine.optimizer.load_state_dict(opt_state)
        trainer.ewc = ewc
        prev = out / "summary.json"
        if prev.exists():
            elapsed = float(json.loads(prev.read_text()).get("seconds", 0.0))
        logger.info("resuming %s after task %d of %d", out, res.tasks_completed, p.n_tasks)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter() - elapsed
    summary = None
    for task in range(res.tasks_completed, p.n_tasks):
        t0 = time.perf_counter()
        if p.reset_optimizer:
            trainer.new_optimizer()
        idx = _task_training_set(cfg, x_tr, y_tr, task, seed)
        trainer.engine.lrs = base.train.layer_lrs(net.n_layers, 0)
        nb = (idx.size + base.train.batch_size - 1) // base.train.batch_size
        for epoch in range(p.epochs):
            order = idx[_rng(seed, "order", task, epoch).permutation(idx.size)]
            nudge = _rng(seed, "nudge", task, epoch)
            bar = progress(nb, f"task {task + 1}/{p.n_tasks} epoch {epoch + 1}/{p.epochs}") if progress else None
            for bi in range(nb):
                b = order[bi * base.train.batch_size : (bi + 1) * base.train.batch_size]
                with np.errstate(over="ignore", invalid="ignore"):
                    trainer.step(net, x_tr[b], y_tr_1h[b], nudge)
                if bar:
                    bar.update(1)
            if bar:
                bar.close()
            if not net.is_finite():
                raise DivergenceError(f"training diverged in task {task + 1}, epoch {epoch + 1}; the checkpoint after "
                                      f"task {res.tasks_completed} is kept in {ckpt}")
        own = np.flatnonzero(np.isin(y_tr, task_classes(task, p.classes_per_task)))  # this task's training samples
        if p.method == "ewc":
            trainer.consolidate(net, x_tr[own], y_tr_1h[own], _rng(seed, "fisher", task))
        t_train = time.perf_counter() - t0
        row, acc = _evaluate(trainer, net, x_te, y_te, p.n_tasks, p.classes_per_task)
        pre = float("nan")
        t_sleep = 0.0
        stats = {}
        if p.sleeps:
            pre = acc
            t1 = time.perf_counter()
            seen = np.flatnonzero(np.isin(y_tr, np.arange((task + 1) * p.classes_per_task)))
            a_idx = _rng(seed, "alpha", task).permutation(seen)[: p.alpha_samples]
            acts = layer_activations(trainer.engine.backend, net, x_tr[a_idx], base.train.t1, cfg.sleep.alpha_source)
            drive = seen if cfg.sleep.input == "seen" else own
            sres = sleep(net, x_tr[drive], cfg.sleep, sleep_iterations(task + 1, cfg.sleep), _rng(seed, "sleep", task),
                         activations=acts)
            if not net.is_finite():
                raise DivergenceError(f"the sleep after task {task + 1} made the weights non-finite")
            t_sleep = time.perf_counter() - t1
            stats = sres.to_dict()
            row, acc = _evaluate(trainer, net, x_te, y_te, p.n_tasks, p.classes_per_task)
        res.probe = np.append(res.probe, probe_accuracy(trainer, net, x_tr[probe_idx], y_tr[probe_idx], x_te, y_te,
                                                        base.train.t1) if p.probe else np.nan)
        res.matrix = np.vstack([res.matrix, row[None]])
        res.overall = np.append(res.overall, acc)
        res.pre_sleep_overall = np.append(res.pre_sleep_overall, pre)
        res.train_seconds.append(t_train)
        res.sleep_seconds.append(t_sleep)
        res.sleep_stats.append(stats)
        _save_checkpoint(ckpt, cfg, net, trainer.engine.optimizer.state_dict(), trainer.ewc, res)
        summary = _write_outputs(out, cfg, res, time.perf_counter() - t_start)
        logger.info("task %d/%d (%s): 10-way %.4f%s, per task %s (train %.1f s, sleep %.1f s)", task + 1, p.n_tasks,
                    p.method, acc, f" (before sleep {pre:.4f})" if p.sleeps else "",
                    " ".join(f"{v:.3f}" for v in row), t_train, t_sleep)
    if summary is None:
        summary = _write_outputs(out, cfg, res, elapsed)
    return summary


def summarize_seeds(summaries: list[dict]) -> dict:
    """Mean, std and range of the final 10-way accuracy (and of each matrix entry) across seeds."""
    finals = np.array([s["final_accuracy"] for s in summaries], dtype=np.float64)
    mats = [np.array(s["matrix"]) for s in summaries]
    same = all(m.shape == mats[0].shape for m in mats)
    return {
        "method": summaries[0]["method"],
        "trainer": summaries[0]["trainer"],
        "dataset": summaries[0]["dataset"],
        "dt_dist": summaries[0]["dt_dist"],
        "seeds": [s["seed"] for s in summaries],
        "final_accuracy": float(finals.mean()),
        "final_accuracy_std": float(finals.std(ddof=1)) if finals.size > 1 else 0.0,
        "final_accuracy_min": float(finals.min()),
        "final_accuracy_max": float(finals.max()),
        "final_accuracies": finals.tolist(),
        "final_probe_accuracies": [(s.get("probe_accuracy") or [None])[-1] for s in summaries],
        "matrix_mean": np.mean(mats, axis=0).tolist() if same else None,
        "seconds": [s["seconds"] for s in summaries],
        "complete": all(s["complete"] for s in summaries),
    }


def run_seeds(cfg: ContinualConfig, out: str | Path, seeds: list[int], *, progress=None, force: bool = False,
              dataset=None) -> dict:
    """One protocol per seed in ``out/seed_<s>``; ``out/summary.json`` holds their mean and spread."""
    out = Path(out)
    runs = []
    for s in seeds:
        runs.append(run_protocol(cfg.replace(train={"seed": int(s)}), out / f"seed_{s}", progress=progress, force=force,
                                 dataset=dataset))
    summary = summarize_seeds(runs)
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    return summary


# ----------------------------------------------------------------------------- sleep search

#: each sleep parameter of the search is the base value times a factor drawn log-uniformly
#: from (low, high): the published values were tuned for a ReLU net whose weights are far
#: larger than an EP net's, so the STDP steps search mostly downwards, the thresholds up
SEARCH_FACTORS = {"max_rate": (0.5, 2.0), "inc": (0.003, 1.0), "dec": (0.003, 1.0), "alpha_scale": (0.25, 4.0),
                  "thresholds": (0.5, 8.0)}


#: the "wide" search space: absolute ranges, drawn log-uniformly (inc, dec, thresholds,
#: alpha_scale, max_rate) or uniformly from a list (g, mask_size, iterations_first, and the
#: iterations added per task as a fraction of iterations_first: MATLAB's schedule is 1/3)
SEARCH_SPACE_WIDE = {"inc": (1e-5, 3e-2), "dec": (1e-6, 3e-2), "thresholds": (5.0, 400.0), "alpha_scale": (10.0, 1000.0),
                     "max_rate": (60.0, 500.0), "g": G_FUNCTIONS, "mask_size": (0, 8, 11, 14),
                     "iterations_first": (300, 1000, 3000, 10000), "per_task_fraction": (0.0, 1.0 / 3.0)}
#: the search spaces of :func:`search_sleep`
SEARCH_SPACES = ("around", "wide")


def sample_sleep_config(base: SleepConfig, n_layers: int, rng: np.random.Generator, space: str = "around") -> SleepConfig:
    """One candidate of the search.

    ``"around"``: every parameter of :data:`SEARCH_FACTORS` scaled log-uniformly from
    ``base``; ``"wide"``: every parameter of :data:`SEARCH_SPACE_WIDE` drawn from its
    absolute range or list, independently of ``base`` (decay, dt, biases and the alpha
    source stay as in ``base``).
    """
    if space == "wide":
        sp = SEARCH_SPACE_WIDE

        def lu(name):
            lo, hi = sp[name]
            return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))

        def pick(name):
            return sp[name][int(rng.integers(len(sp[name])))]

        g, mask, it1 = pick("g"), int(pick("mask_size")), int(pick("iterations_first"))
        thresholds = tuple(lu("thresholds") for _ in range(n_layers))
        return dataclasses.replace(base, inc=lu("inc"), dec=lu("dec"), thresholds=thresholds, alpha_scale=lu("alpha_scale"),
                                   max_rate=lu("max_rate"), g=str(g), mask_size=mask, iterations_first=it1,
                                   iterations_per_task=int(round(it1 * pick("per_task_fraction"))))
    if space != "around":
        raise ConfigError(f"search space must be one of {', '.join(SEARCH_SPACES)}, got {space!r}")

    def factor(name):
        lo, hi = SEARCH_FACTORS[name]
        return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))

    thresholds = tuple(float(t) * factor("thresholds") for t in base.layer_thresholds(n_layers))
    return dataclasses.replace(base, max_rate=base.max_rate * factor("max_rate"), inc=base.inc * factor("inc"),
                               dec=base.dec * factor("dec"), alpha_scale=base.alpha_scale * factor("alpha_scale"),
                               thresholds=thresholds)


def search_sleep(cfg: ContinualConfig, out: str | Path, n_candidates: int, *, search_seed: int = 0, progress=None,
                 dataset=None, space: str = "around") -> dict:
    """Seeded random search of the sleep parameters on a validation split (resumable).

    Candidate 0 is ``cfg.sleep`` itself, the others :func:`sample_sleep_config` draws
    from the search space ``space`` (:data:`SEARCH_SPACES`).
    Each runs the whole protocol (method ``src`` unless the config says ``src+rehearsal``)
    with ``validation`` (0.1 unless set) of the training set held out as the test set,
    into ``out/candidate_NNN``. Writes ``out/search.csv`` (one row per candidate, best
    first) and ``out/best.json`` (its ``[sleep]`` table and score); returns the latter.
    """
    from .data import load_dataset

    if n_candidates < 1:
        raise ConfigError(f"--search needs at least one candidate, got {n_candidates}")
    out = Path(out)
    method = cfg.protocol.method if cfg.protocol.sleeps else "src"
    cfg = cfg.replace(continual={"method": method, "validation": cfg.protocol.validation or 0.1})
    base = cfg.base
    if dataset is None:
        dataset = load_dataset(base.data.dataset, base.data.data_dir, n_train=base.data.n_train, n_test=base.data.n_test)
    n_layers = len(base.model.arch) - 1
    rng = np.random.default_rng([int(search_seed), 14, 99])
    cands = [dataclasses.replace(cfg.sleep, thresholds=tuple(cfg.sleep.layer_thresholds(n_layers)))]
    if space not in SEARCH_SPACES:
        raise ConfigError(f"search space must be one of {', '.join(SEARCH_SPACES)}, got {space!r}")
    cands += [sample_sleep_config(cfg.sleep, n_layers, rng, space) for _ in range(n_candidates - 1)]
    rows = []
    best = None
    for i, sc in enumerate(cands):
        s = run_protocol(cfg.replace(sleep=sc.to_dict()), out / f"candidate_{i:03d}", dataset=dataset, progress=progress)
        rows.append({"candidate": i, "score": s["final_accuracy"], "seconds": s["seconds"], **sc.to_dict()})
        logger.info("search candidate %d/%d: validation accuracy %.4f", i + 1, len(cands), s["final_accuracy"])
        best = _write_search_table(out, rows, method, cfg, search_seed, len(cands), space)
    return best


def _write_search_table(out: Path, rows: list[dict], method: str, cfg: ContinualConfig, search_seed: int,
                        n_candidates: int, space: str = "around") -> dict:
    """search.csv (the candidates so far, best first) and best.json; rewritten after every candidate."""
    rows = sorted(rows, key=lambda r: -r["score"])
    keys = ["candidate", "score", "seconds", "max_rate", "inc", "dec", "alpha_scale", "thresholds", "g", "mask_size",
            "iterations_first", "iterations_per_task"]
    with atomic_path(out / "search.csv") as tmp:
        with open(tmp, "w") as fh:
            fh.write(",".join(keys) + "\n")
            for r in rows:
                fh.write(",".join(" ".join(f"{t:.6g}" for t in r[k]) if k == "thresholds" else
                                  (f"{r[k]:.6g}" if isinstance(r[k], float) else str(r[k])) for k in keys) + "\n")
    best = {"score": rows[0]["score"], "candidate": rows[0]["candidate"], "method": method,
            "validation": cfg.protocol.validation, "search_seed": int(search_seed), "space": space, "n_candidates": n_candidates,
            "candidates_done": len(rows), "sleep": {k: rows[0][k] for k in SleepConfig.__dataclass_fields__}}
    with atomic_path(out / "best.json") as tmp:
        tmp.write_text(json.dumps(best, indent=1))
    return best
