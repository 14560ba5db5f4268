"""Training and evaluation loops with per-epoch atomic checkpoints and exact resume.

Randomness per epoch comes from ``rng_streams(seed, purpose, epoch)``, so an interrupted
run resumed from its last checkpoint follows exactly the batches, nudging signs and
optimiser state of an uninterrupted run with the same seed.

Progress is reported through an optional ``progress`` factory (the CLI passes tqdm);
the library itself never prints.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from ._threads import blas_threads
from .algorithms import Phase, make_algorithm
from .backends import get_backend
from .config import Config
from .diagnostics import Diagnostics, EpochAccumulator, diagnostic_names
from .dynamics import RelaxStatus
from .engines import ENGINES, EvalResult, FloatEngine, check_supported, make_engine
from .errors import ConfigError, DivergenceError, RunFileError
from .learning import make_optimizer
from .network import Network, init_network, rng_streams, sample_network_dts
from .runfile import HISTORY_KEYS, RunState, load_run, save_run

__all__ = ["EvalResult", "evaluate", "train", "Progress", "ProgressFactory"]  # EvalResult: from engines

logger = logging.getLogger(__name__)


class Progress(Protocol):
    def update(self, n: int = 1) -> None: ...

    def set_postfix(self, values: dict) -> None: ...

    def close(self) -> None: ...


ProgressFactory = Callable[[int, str], Progress]


class _NoProgress:
    def update(self, n=1):
        pass

    def set_postfix(self, values):
        pass

    def close(self):
        pass


def _no_progress(total, desc):
    return _NoProgress()


def evaluate(backend, net: Network, x: np.ndarray, labels: np.ndarray, t1: int, batch_size: int = 1000,
             progress: ProgressFactory | None = None, *, phase: Phase | None = None) -> EvalResult:
    """Free phase (T1 steps from s = 0, or ``phase``) on every sample; accuracy of argmax of the output."""
    engine = FloatEngine(None, backend=backend)
    return engine.evaluate(net, x, labels, phase or Phase("free", int(t1)), batch_size, progress)


def _load_data(config: Config):
    from .data import load_recorded_dataset, normalize

    d = config.data
    images = len(config.model.spec.layers[0].shape) == 3  # an image input layer: keep (N, C, H, W)
    return normalize(load_recorded_dataset(d.dataset, d.data_dir, n_train=d.n_train, n_test=d.n_test, images=images),
                     d.normalize)


def _distill_targets(config: Config, x_train, y_train, n_classes: int):
    """(config with the teacher's digest recorded, the distillation targets); a resumed run
    whose teacher file changed is refused."""
    from .distill import distill_targets, teacher_digest, teacher_scores

    d = config.distill
    path = Path(d.teacher)
    if not path.is_file():
        raise ConfigError(f"distillation teacher not found: {path}")
    digest = teacher_digest(path)
    if d.teacher_sha256 and d.teacher_sha256 != digest:
        raise ConfigError(f"teacher {path} changed since this run started (SHA-256 {digest[:12]}..., "
                          f"recorded {d.teacher_sha256[:12]}...); resume with the original teacher")
    scores = teacher_scores(path, x_train, n_classes)
    targets = distill_targets(y_train, scores, d.temperature, d.alpha)
    agree = float(np.mean(scores.argmax(axis=1) == y_train.argmax(axis=1)))
    logger.info("distilling from %s: T %g, alpha %g; the teacher is right on %.2f %% of the training set",
                path, d.temperature, d.alpha, 100 * agree)
    return config.replace(distill={"teacher_sha256": digest}), targets


def _mark_diverged(out: Path, reason: str) -> DivergenceError:
    """Keep the last good checkpoint, flag it as diverged, and build the error to raise."""
    last = load_run(out)
    last.status = "diverged"
    last.message = reason
    save_run(out, last)
    return DivergenceError(f"{reason}; the last good checkpoint (epoch {last.epochs_completed}) is kept in {out}")


def train(config: Config, out: str | Path, *, resume: bool = False, dataset=None, progress: ProgressFactory | None = None,
          overwrite: bool = False, data_dir: str | None = None) -> RunState:
    """Train a network with its algorithm and engine, checkpointing it to ``out`` after every epoch.

    The algorithm (``train.algorithm``, adapted when ``adapt.steps > 0``) says which phases
    to run; the engine (``train.arith``: float or fixed) runs them and applies the update.
    ``resume=True`` continues the run stored in ``out`` (its stored config is used, with
    ``config.train.epochs`` as the new total). Raises DivergenceError when a free phase
    reports DIVERGED or the weights become non-finite, after marking the last good
    checkpoint as diverged.

    A new run refuses to replace an existing ``out`` unless ``overwrite=True``.
    ``data_dir`` (resume only): a new location of the run's data files (they moved); the
    files are checksum-verified on load, so the run stays the same (the stored config
    records the new directory).
    """
    out = Path(out)
    progress = progress or _no_progress
    if not resume and out.exists() and not overwrite:
        raise ConfigError(f"{out} exists; resume it (resume=True, --resume) or pass overwrite=True (--force) to replace it")
    if not resume and config.train.optimizer == "adam" and config.train.momentum != 0:
        raise ConfigError(f"momentum {config.train.momentum} is an SGD setting that Adam ignores; use optimizer 'sgd' "
                          f"(--optimizer sgd) or drop --momentum (Adam's own is adam_beta1)")
    if data_dir is not None and not resume:
        raise ConfigError("data_dir= is for resume; a new run takes config.data.data_dir")
    if resume:
        state = load_run(out)
        if data_dir is not None:
            state.config = state.config.replace(data={"data_dir": str(data_dir)})
        if state.status == "diverged":
            raise RunFileError(f"{out} holds a diverged run ({state.message}); start a new run instead")
        if config.train.epochs < state.epochs_completed:
            raise ConfigError(f"{out} already has {state.epochs_completed} epochs; --epochs {config.train.epochs} cannot resume it")
        state.config = state.config.replace(train={"epochs": config.train.epochs})
        config = state.config
        logger.info("resuming %s at epoch %d of %d", out, state.epochs_completed, config.train.epochs)
    tc = config.train
    n_layers = len(config.model.arch) - 1
    engine = make_engine(config, make_optimizer(tc, n_layers))
    config = engine.canonical_config(config)
    tc = config.train
    if resume:
        state.config = config
        state.network = state.network.astype(engine.dtype)
    else:
        state = RunState(config=config, network=init_network(config, engine.dtype))
    net = state.network
    algorithm = make_algorithm(config)
    check_supported(engine, net, algorithm)
    data = dataset if dataset is not None else _load_data(config)
    from .data import one_hot

    x_train = np.ascontiguousarray(data.x_train, dtype=engine.dtype)
    x_test = np.ascontiguousarray(data.x_test, dtype=engine.dtype)
    y_train = one_hot(data.y_train, data.n_classes, engine.dtype)
    if config.distill.teacher and config.distill.alpha > 0:  # alpha 0: the labels alone, no teacher needed
        config, y_train = _distill_targets(config, x_train, y_train, data.n_classes)
        state.config = config
    n_in = int(np.prod(x_train.shape[1:]))
    if net.arch[0] != n_in or net.arch[-1] != data.n_classes or (x_train.ndim == 4 and x_train.shape[1:] != net.shapes[0]):
        raise ConfigError(
            f"--arch {'-'.join(map(str, net.arch))} does not fit dataset {data.name!r} "
            f"({n_in} inputs, {data.n_classes} classes)"
        )
    if tc.batch_size > x_train.shape[0]:
        raise ConfigError(f"batch size {tc.batch_size} is larger than the {x_train.shape[0]} training samples of "
                          f"{data.name!r}: every epoch would be one partial batch")
    if state.optimizer_state:
        engine.load_state_dict(state.optimizer_state)
    elif engine.prepare(net):  # e.g. the fixed engine puts a new network on its weight grid
        state.optimizer_state = engine.state_dict()
    records = bool(getattr(engine, "records_diagnostics", False))
    if records:  # per-layer learning-signal diagnostics (neuro_hts.diagnostics, /diagnostics)
        names = diagnostic_names(config.model.spec)
        if (state.diagnostics.layers, state.diagnostics.connections) != names:
            state.diagnostics = Diagnostics.start(*names)  # a run from before they were recorded
        state.diagnostics.pad_to(state.epochs_completed)  # its earlier epochs: NaN rows
    if not resume:
        save_run(out, state)  # epoch-0 checkpoint: resumable from the start, kept on divergence
    n = x_train.shape[0]
    n_batches = (n + tc.batch_size - 1) // tc.batch_size
    free_phase = algorithm.free_phase()
    with blas_threads(tc.blas_threads):
        for epoch in range(state.epochs_completed, tc.epochs):
            t0 = time.perf_counter()
            if config.dt.resample_each_epoch and epoch > 0:
                new_dts = sample_network_dts(config, net.arch, rng_streams(tc.seed, "dt", epoch), warn=False)
                for d, nd in zip(net.dts, new_dts):
                    d[...] = nd
            engine.lrs = tc.layer_lrs(net.n_layers, epoch)
            order = rng_streams(tc.seed, "shuffle", epoch).permutation(n)
            nudge_rng = rng_streams(tc.seed, "nudge", epoch)
            round_rng = rng_streams(tc.seed, "nudge", epoch, 1)  # fixed-point update rounding
            loss_sum, correct, steps = 0.0, 0, 0
            diag = EpochAccumulator(len(state.diagnostics.layers), len(state.diagnostics.connections))
            resid = np.empty(n)
            batches = [order[bi * tc.batch_size : (bi + 1) * tc.batch_size] for bi in range(n_batches)]
            if hasattr(engine, "train_epoch"):  # e.g. Lava: the whole epoch in one run, stats per batch
                stream = engine.train_epoch(net, x_train, y_train, batches, algorithm, nudge_rng, round_rng)
            else:
                stream = (engine.train_step(net, x_train[idx], y_train[idx], algorithm, nudge_rng, round_rng)
                          for idx in batches)
            bar = progress(n_batches, f"epoch {epoch + 1}/{tc.epochs}")
            try:
                for bi, idx in enumerate(batches):
                    # overflow is not warned about: the relaxation's status reports it just below
                    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                        stats = next(stream)
                    if stats.status is RelaxStatus.DIVERGED or not np.isfinite(stats.loss_sum):
                        raise _mark_diverged(out, f"training diverged at epoch {epoch + 1}, batch {bi + 1}: non-finite states")
                    loss_sum += stats.loss_sum
                    diag.add(stats.diagnostics)
                    correct += stats.n_correct
                    steps += stats.free_steps * len(idx)
                    resid[bi * tc.batch_size : bi * tc.batch_size + len(idx)] = stats.residual
                    bar.update(1)
                    if bi % 50 == 0:
                        bar.set_postfix({"loss": f"{loss_sum / ((bi + 1) * tc.batch_size):.4f}"})
            finally:
                bar.close()
            if not net.is_finite():
                raise _mark_diverged(out, f"training diverged at epoch {epoch + 1}: non-finite weights")
            ev = engine.evaluate(net, x_test, data.y_test, free_phase)
            row = {
                "test_accuracy": ev.accuracy,
                "train_accuracy": correct / n,
                "train_loss": loss_sum / n,
                "free_residual_mean": float(resid.mean()),
                "free_residual_max": float(resid.max()),
                "frac_not_converged": float(np.mean(resid > tc.residual_tol)),
                "epoch_seconds": time.perf_counter() - t0,
                "free_steps_mean": steps / n,
            }
            for k in HISTORY_KEYS:
                state.history.setdefault(k, []).append(row[k])
            if records:
                state.diagnostics.append(*diag.mean())
            state.epochs_completed = epoch + 1
            state.optimizer_state = engine.state_dict()
            state.status = "complete" if state.epochs_completed >= tc.epochs else "running"
            save_run(out, state)
            logger.info(
                "epoch %d/%d: test %.4f train %.4f loss %.4f residual %.2e, %.1f free steps (%.1f s)",
                epoch + 1, tc.epochs, row["test_accuracy"], row["train_accuracy"], row["train_loss"],
                row["free_residual_mean"], row["free_steps_mean"], row["epoch_seconds"],
            )
    if state.status != "complete":
        state.status = "complete"
        save_run(out, state)
    return state


def dry_run(config: Config) -> list[str]:
    """Check everything a new run needs without training or writing: lines describing the run.

    Builds the engine and the initial network (the dt laws are sampled and checked), loads
    the data and checks that the network and the batch size fit it; raises the same
    one-line errors :func:`train` would.
    """
    tc = config.train
    if tc.optimizer == "adam" and tc.momentum != 0:
        raise ConfigError(f"momentum {tc.momentum} is an SGD setting that Adam ignores; use optimizer 'sgd' "
                          f"(--optimizer sgd) or drop --momentum (Adam's own is adam_beta1)")
    engine = make_engine(config, make_optimizer(tc, len(config.model.arch) - 1))
    config = engine.canonical_config(config)
    net = init_network(config, engine.dtype)
    algorithm = make_algorithm(config)
    check_supported(engine, net, algorithm)
    data = _load_data(config)
    n_in = int(np.prod(data.x_train.shape[1:]))
    if net.arch[0] != n_in or net.arch[-1] != data.n_classes:
        raise ConfigError(f"--arch {'-'.join(map(str, net.arch))} does not fit dataset {data.name!r} "
                          f"({n_in} inputs, {data.n_classes} classes)")
    if tc.batch_size > data.x_train.shape[0]:
        raise ConfigError(f"batch size {tc.batch_size} is larger than the {data.x_train.shape[0]} training samples of "
                          f"{data.name!r}: every epoch would be one partial batch")
    n_params = sum(int(w.size) + int(b.size) for w, b in zip(net.weights, net.biases))
    return [
        f"would train {'-'.join(map(str, net.arch))} ({n_params:,} parameters, {config.model.form}/"
        f"{config.model.activation}/{config.model.output}) with {tc.algorithm} on {data.name}: "
        f"{data.x_train.shape[0]} training and {data.x_test.shape[0]} test samples",
        f"{tc.epochs} epochs of {-(-data.x_train.shape[0] // tc.batch_size)} batches of {tc.batch_size}, "
        f"T1={tc.t1}, T2={tc.t2}, {tc.optimizer} lr {','.join(f'{v:g}' for v in tc.lr)}, "
        f"{engine.name} engine" + (f" ({tc.target})" if tc.target else f" (backend {tc.backend})"),
        f"dt: {config.dt.dist} mean {config.dt.mean:g} std {config.dt.std:g} in [{config.dt.dt_min:g}, "
        f"{config.dt.dt_max:g}] on layers {config.dt.layers}: sampled means "
        + ", ".join(f"{float(np.mean(d)):.3f}" for d in net.dts[: net.n_dynamic]),
    ]
