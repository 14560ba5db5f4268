"""Configuration: frozen dataclasses, TOML loading, validation and overrides.

A config has these sections, mirrored in the TOML files of ``models/``::

    [model]  arch, form, activation, output, init_scale
    [dt]     dist, mean, std, dt_min, dt_max, layers, resample_each_epoch, per_channel
    [train]  algorithm, epochs, batch_size, t1, t1_tol, t2, beta, nudging, optimizer, lr, ...
    [chl]    gamma, clamp_delay, start                 (algorithm = "chl")
    [adapt]  steps, coe                                (adjusted adaptation of ep or chl)
    [local]  layers, readout, beta, init_scale         (layer-wise error costs; off by default)
    [data]   dataset, data_dir, n_train, n_test
    [distill] teacher, temperature, alpha              (soft targets from a teacher run)

Unknown keys and non-finite numbers are errors (never silently ignored). Every choice
(form, activation, output, nudging, optimizer, backend, arith, algorithm, dataset, dt law)
is checked against the registry that implements it (:mod:`neuro_hts.registry`), so a
newly registered entry is accepted everywhere at once.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .activations import ACTIVATIONS
from .algorithms import ALGORITHMS, NUDGINGS, make_algorithm
from .backends import BACKENDS
from .data import DATASETS
from .distributions import DT_MAX, DT_MEAN, DT_MIN, DT_STD, validate_dt_params
from .dynamics import FORMS, NUDGE_PLACEMENTS, OUTPUTS
from .engines import ENGINES, TRAINERS
from .costs import READOUT_KINDS
from .errors import ConfigError
from .learning import OPTIMIZERS
from .spec import ConnectionSpec, CostSpec, LayerSpec, NetworkSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "ModelConfig", "DtConfig", "TrainConfig", "ChlConfig", "AdaptConfig", "LocalConfig", "DataConfig", "Config", "parse_arch",
    "load_config", "parse_local_layers",
]

LR_SCHEDULES = ("constant", "cosine")
#: largest dense network (weights + biases) a config may describe: 100 M parameters, 0.75 GiB in
#: float64 (MNIST's 784-512-10 has 407k); larger sizes are typos that would exhaust memory
MAX_PARAMETERS = 100_000_000
UPDATE_ROUNDINGS = ("nearest", "stochastic")
#: train.lava_learning (neuro_hts.lava.ld_rule.LAVA_LEARNING)
LAVA_LEARNING = ("exact", "learning-dense")


def parse_arch(text: str | tuple | list) -> tuple[int, ...]:
    """Parse '784-512-10' (or a sequence of ints) into a tuple of >= 2 positive sizes."""
    if isinstance(text, (list, tuple)):
        parts = list(text)
    elif isinstance(text, str):
        parts = text.strip().split("-")
    else:
        raise ConfigError(f"malformed --arch {text!r}: expected sizes like 784-512-10")
    try:
        sizes = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        raise ConfigError(f"malformed --arch {text!r}: expected sizes like 784-512-10") from None
    if len(sizes) < 2 or any(s <= 0 for s in sizes):
        raise ConfigError(f"malformed --arch {text!r}: need at least input and output sizes, all positive")
    return sizes


def _check_finite(section: str, name: str, value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"[{section}] {name} must be finite, got {value}")
    if isinstance(value, (list, tuple)):
        for v in value:
            _check_finite(section, name, v)


def _choice(section: str, name: str, value: str, options) -> None:
    """``options``: a tuple of names or a :class:`~neuro_hts.registry.Registry`."""
    names = options.names() if hasattr(options, "names") else tuple(options)
    if value not in names:
        raise ConfigError(f"[{section}] {name} must be one of {', '.join(names)}, got {value!r}")


def _table(part) -> dict:
    """A declared part (a spec dataclass or already a table) as its TOML table."""
    if isinstance(part, ConnectionSpec):
        return part.to_table()
    return dataclasses.asdict(part) if dataclasses.is_dataclass(part) else part


@dataclass(frozen=True)
class ModelConfig:
    """Network: layer sizes, dynamics form, activation and output cost.

    ``output='mse'``: the last layer is a dynamic layer nudged by beta (y - s_L).
    ``output='ce'``: the last layer is a softmax readout of layer L-1 (Laborieux et al.).
    ``nudge``: where the nudge -beta dC/ds_L enters the leaky form's top layer: ``"inside"``
    sigma (Laborieux et al.; EP's estimate is then exact in the small-beta limit) or
    ``"outside"`` it, s <- s + dt (sigma(h) - s - beta dC/ds) (Ernoult et al.'s leaky form,
    followed by the HTS authors' public EP code; not an exact gradient, see
    :func:`neuro_hts.dynamics.leaky_update`). The energy form's nudge is always outside rho'.

    Instead of ``arch``/``output`` the parts may be declared (``[[model.layers]]``,
    ``[[model.connections]]``, ``[[model.costs]]``, see :mod:`neuro_hts.spec`); ``arch``
    and ``output`` are then derived from them (and must agree if given too).
    """

    arch: tuple[int, ...] = (64, 256, 10)
    form: str = "leaky"
    activation: str = "hard_sigmoid"
    output: str = "mse"
    init_scale: float = 1.0
    nudge: str = "inside"
    layers: tuple[LayerSpec, ...] = ()
    connections: tuple[ConnectionSpec, ...] = ()
    costs: tuple[CostSpec, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "arch", parse_arch(self.arch))
        for k in ("layers", "connections", "costs"):
            object.__setattr__(self, k, tuple(getattr(self, k)))
        if self.layers or self.connections or self.costs:
            spec = NetworkSpec.from_tables(
                *[[_table(t) for t in getattr(self, k)] for k in ("layers", "connections", "costs")]
            )
            for k in ("layers", "connections", "costs"):
                object.__setattr__(self, k, getattr(spec, k))
            arch, output = spec.chain(self.activation)
            if (arch, output) != (self.arch, self.output):
                raise ConfigError(f"[model] arch {'-'.join(map(str, self.arch))} / output {self.output!r} do not match the "
                                  f"declared layers ({'-'.join(map(str, arch))} / {output!r}); declare one or the other")
        if not self.layers:
            n_params = sum(a * b + b for a, b in zip(self.arch[:-1], self.arch[1:]))
            if n_params > MAX_PARAMETERS:
                raise ConfigError(f"[model] arch {'-'.join(map(str, self.arch))} has {n_params:,} parameters "
                                  f"({n_params * 8 / 2**30:.1f} GiB in float64); this neuro-hts allows at most "
                                  f"{MAX_PARAMETERS:,}")
        _choice("model", "form", self.form, FORMS)
        _choice("model", "output", self.output, OUTPUTS)
        _choice("model", "activation", self.activation, ACTIVATIONS)
        _choice("model", "nudge", self.nudge, NUDGE_PLACEMENTS)
        if self.nudge == "outside" and self.form != "leaky":
            raise ConfigError(f"[model] nudge = 'outside' is an option of the leaky form; the {self.form} form's "
                              f"nudge already enters outside the activation (use nudge = 'inside', the default)")
        if self.output == "ce" and len(self.arch) < 3:
            raise ConfigError("[model] output='ce' needs at least one hidden layer (a readout of layer L-1)")
        if not (self.init_scale > 0 and math.isfinite(self.init_scale)):
            raise ConfigError(f"[model] init_scale must be a positive finite number, got {self.init_scale}")

    @property
    def spec(self) -> NetworkSpec:
        """The network as typed parts: the declared ones, or the MLP of ``arch``/``output``."""
        if self.layers:
            return NetworkSpec(self.layers, self.connections, self.costs)
        return NetworkSpec.from_arch(self.arch, self.output)


@dataclass(frozen=True)
class DtConfig:
    """Per-neuron time steps. ``layers``: 'hidden' (paper), 'all', 'none', or indices '1,2'.

    Layers that are not heterogeneous get the constant dt = ``mean``. Every unit of a
    C x H x W layer gets its own dt; with ``per_channel = true`` one dt is drawn per
    feature map (channel) and shared by its H x W units, for every law (layers of shape
    [n] keep one dt per neuron).
    """

    dist: str = "lognormal"
    mean: float = DT_MEAN
    std: float = DT_STD
    dt_min: float = DT_MIN
    dt_max: float = DT_MAX
    layers: str = "hidden"
    resample_each_epoch: bool = False
    per_channel: bool = False

    def __post_init__(self):
        for k in ("mean", "std", "dt_min", "dt_max"):
            _check_finite("dt", k, getattr(self, k))
        validate_dt_params(self.dist, self.mean, self.std, self.dt_min, self.dt_max)
        if not isinstance(self.per_channel, bool):
            raise ConfigError(f"[dt] per_channel must be true or false, got {self.per_channel!r}")
        if not (self.dt_min <= self.mean <= self.dt_max) and self.dist == "constant":
            raise ConfigError(f"[dt] constant dt {self.mean} lies outside [{self.dt_min}, {self.dt_max}]")
        if self.layers not in ("hidden", "all", "none"):
            try:
                idx = [int(p) for p in str(self.layers).split(",")]
            except ValueError:
                raise ConfigError(f"[dt] layers must be 'hidden', 'all', 'none' or indices like '1,2', got {self.layers!r}") from None
            if any(i < 1 for i in idx):
                raise ConfigError(f"[dt] layer indices start at 1, got {self.layers!r}")

    def heterogeneous_layers(self, n_dynamic: int, n_layers: int) -> tuple[int, ...]:
        """1-based indices of dynamic layers that get sampled dt (others: constant mean)."""
        if self.layers == "hidden":
            return tuple(range(1, min(n_dynamic, n_layers - 1) + 1))
        if self.layers == "all":
            return tuple(range(1, n_dynamic + 1))
        if self.layers == "none":
            return ()
        idx = tuple(int(p) for p in str(self.layers).split(","))
        if any(i > n_dynamic for i in idx):
            raise ConfigError(f"[dt] layers {self.layers!r} names a layer beyond the {n_dynamic} dynamic layers")
        return idx


@dataclass(frozen=True)
class TrainConfig:
    """Phases, nudging, optimiser and run settings. ``lr``: one value or one per layer.

    ``algorithm``: a name of :data:`neuro_hts.algorithms.ALGORITHMS` (``ep``, ``chl``);
    ``t1``/``t2`` are its free and nudged/clamped phase lengths, ``beta`` and ``nudging``
    EP's. ``t1_tol``: end the free phase once every sample of the batch has settled
    (residual <= t1_tol), after at most ``t1`` steps (None: always ``t1`` steps).
    ``blas_threads``: BLAS threads while training (1 is fastest on small machines and
    robust to a busy core; 0 leaves the library's default).
    """

    algorithm: str = "ep"
    epochs: int = 10
    # defaults that train well on the embedded digits (models/digits.toml, measured in
    # README.md "Quick start"); the paper's MNIST settings live in models/*.toml
    batch_size: int = 20
    t1: int = 60
    t2: int = 15
    beta: float = 0.5
    nudging: str = "symmetric"
    optimizer: str = "adam"
    lr: tuple[float, ...] = (1.5e-3,)
    lr_schedule: str = "constant"
    lr_min: float = 1e-5
    momentum: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    seed: int = 0
    backend: str = "numba"
    residual_tol: float = 1e-3
    t1_tol: float | None = None
    blas_threads: int = 1
    #: "float" (the backends) or "fixed": the target's integer arithmetic for the phases and
    #: quantized weight updates (neuro_hts.hardware.fixed_learning); needs ``target``
    arith: str = "float"
    #: hardware target (name such as "loihi2" or a .toml path) for arith = "fixed"
    target: str = ""
    #: rounding of the fixed-point updates onto the weight grid (arith = "fixed")
    update_rounding: str = "stochastic"
    #: backend = "lava": "exact" (the package's integer EP update in EPConnection, bit-exact with
    #: the Numba engine) or "learning-dense" (Lava's LearningDense, a three-factor rule;
    #: docs/LAVA_LEARNING.md)
    lava_learning: str = "exact"
    #: "ep": the algorithm's phases and estimate; "bptt": the same network trained by the
    #: exact gradient of its free phase (:func:`neuro_hts.bptt.bptt_gradients`), the reference
    #: EP is compared with (and a teacher)
    trainer: str = "ep"

    def __post_init__(self):
        lr = self.lr if isinstance(self.lr, (list, tuple)) else (self.lr,)
        object.__setattr__(self, "lr", tuple(float(v) for v in lr))
        for f in dataclasses.fields(self):
            _check_finite("train", f.name, getattr(self, f.name))
        for k in ("epochs", "batch_size", "t1", "t2", "seed", "blas_threads"):
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ConfigError(f"[train] {k} must be an integer, got {v!r}")
        if self.epochs < 0 or self.batch_size < 1 or self.t1 < 1 or self.t2 < 1:
            raise ConfigError("[train] epochs >= 0, batch_size >= 1, t1 >= 1 and t2 >= 1 are required")
        if self.seed < 0:
            raise ConfigError(f"[train] seed must be >= 0, got {self.seed}")
        if self.blas_threads < 0:
            raise ConfigError(f"[train] blas_threads must be >= 0 (0: the library default), got {self.blas_threads}")
        if self.t1_tol is not None and (isinstance(self.t1_tol, bool) or not isinstance(self.t1_tol, (int, float))
                                        or not self.t1_tol > 0):
            raise ConfigError(f"[train] t1_tol must be a number > 0, got {self.t1_tol!r}")
        _choice("train", "algorithm", self.algorithm, ALGORITHMS)
        if not self.beta > 0:
            raise ConfigError(f"[train] beta must be > 0, got {self.beta}")
        if not self.lr or any(v < 0 for v in self.lr):
            raise ConfigError(f"[train] lr must be non-negative, got {self.lr}")
        if not (0 <= self.momentum < 1):
            raise ConfigError(f"[train] momentum must be in [0, 1), got {self.momentum}")
        _choice("train", "nudging", self.nudging, NUDGINGS)
        _choice("train", "optimizer", self.optimizer, OPTIMIZERS)
        _choice("train", "lr_schedule", self.lr_schedule, LR_SCHEDULES)
        if self.lr_min < 0:
            raise ConfigError(f"[train] lr_min must be >= 0, got {self.lr_min}")
        _choice("train", "backend", self.backend, BACKENDS)
        _choice("train", "arith", self.arith, ENGINES)
        _choice("train", "update_rounding", self.update_rounding, UPDATE_ROUNDINGS)
        _choice("train", "lava_learning", self.lava_learning, LAVA_LEARNING)
        if self.lava_learning != "exact" and self.backend != "lava":
            raise ConfigError(f"[train] lava_learning = {self.lava_learning!r} needs backend = 'lava' (--backend lava)")
        _choice("train", "trainer", self.trainer, TRAINERS)
        if not isinstance(self.target, str):
            raise ConfigError(f"[train] target must be a string, got {self.target!r}")
        if self.arith == "fixed" and not self.target:
            raise ConfigError("[train] arith = 'fixed' needs a hardware target (target = 'loihi2' or a .toml path)")
        if self.target and self.arith != "fixed":
            raise ConfigError(f"[train] target {self.target!r} is used only with arith = 'fixed' (--arith fixed); "
                              f"with arith = {self.arith!r} training would run in float")


    def layer_lrs(self, n_layers: int, epoch: int = 0) -> tuple[float, ...]:
        """Per-layer learning rates for ``epoch`` (0-based).

        ``lr_schedule='cosine'``: lr_e = lr_min + (lr - lr_min) (1 + cos(pi e / epochs)) / 2,
        set at the start of each epoch (cosine annealing, as Laborieux et al. train).
        """
        if len(self.lr) == 1:
            base = self.lr * n_layers
        elif len(self.lr) != n_layers:
            raise ConfigError(f"[train] lr has {len(self.lr)} values for {n_layers} layers")
        else:
            base = self.lr
        if self.lr_schedule == "cosine" and self.epochs > 0:
            f = 0.5 * (1.0 + math.cos(math.pi * epoch / self.epochs))
            return tuple(min(self.lr_min, b) + (b - min(self.lr_min, b)) * f for b in base)
        return base


@dataclass(frozen=True)
class ChlConfig:
    """Contrastive Hebbian Learning (``train.algorithm = "chl"``, docs/FAMILY.md section 1).

    ``gamma``: feedback gain on every top-down term; ``clamp_delay``: steps of the clamped
    phase run as free before the output is held at the target (< t2); ``start``: the
    clamped phase starts from ``"zeros"`` (the authors' code) or from the ``"free"`` states.
    """

    gamma: float = 1.0
    clamp_delay: int = 0
    start: str = "zeros"


@dataclass(frozen=True)
class AdaptConfig:
    """Adjusted adaptation (docs/FAMILY.md section 2) of EP or CHL: ``steps`` K (0: off) and ``coe`` c."""

    steps: int = 0
    coe: float = 0.1

    def __post_init__(self):
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise ConfigError(f"[adapt] steps must be a non-negative integer, got {self.steps!r}")
        if isinstance(self.coe, bool) or not isinstance(self.coe, (int, float)) or not 0.0 <= self.coe <= 1.0:
            raise ConfigError(f"[adapt] coe must be a number in [0, 1], got {self.coe!r}")


def parse_local_layers(text) -> str | tuple[int, ...]:
    """``[local] layers`` / ``--local-layers``: ``"all"``, or hidden-layer indices (a list, or text like ``"1,2"``)."""
    if isinstance(text, str):
        if text.strip() == "all":
            return "all"
        parts = [p.strip() for p in text.split(",")]
    elif isinstance(text, (list, tuple)):
        parts = list(text)
    else:
        raise ConfigError(f"[local] layers must be 'all' or hidden-layer indices like [1, 2], got {text!r}")
    try:
        if any(isinstance(p, (bool, float)) for p in parts):
            raise ValueError
        idx = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        raise ConfigError(f"[local] layers must be 'all' or hidden-layer indices like [1, 2], got {text!r}") from None
    if not idx:
        raise ConfigError("[local] layers must be 'all' or a non-empty list of hidden-layer indices (beta = 0 turns "
                          "local costs off)")
    if any(i < 1 for i in idx):
        raise ConfigError(f"[local] layer indices start at 1 (the first hidden layer), got {text!r}")
    if len(set(idx)) != len(idx):
        raise ConfigError(f"[local] layers names a layer twice: {text!r}")
    return tuple(sorted(idx))


@dataclass(frozen=True)
class LocalConfig:
    """Layer-wise ("local") error costs (docs/FAMILY.md section 5 form (i); docs/ALGORITHMS.md).

    Every hidden layer l in ``layers`` (``"all"`` or 1-based indices of hidden layers) gets
    a readout R_l (n_classes x n_l, U(-k, k), k = ``init_scale`` / sqrt(n_l)), ``"fixed"``
    (random, never changed) or ``"learned"``, and a cost ``beta`` L(R_l r_l, y) with the
    output cost's loss, added to the nudged phases' objective (never to the free phase).
    ``beta = 0`` (the default) means no local costs: standard EP, bit for bit.
    """

    layers: str | tuple[int, ...] = "all"
    readout: str = "fixed"
    beta: float = 0.0
    init_scale: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "layers", parse_local_layers(self.layers))
        _choice("local", "readout", self.readout, READOUT_KINDS)
        for k in ("beta", "init_scale"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"[local] {k} must be a finite number, got {v!r}")
        if not self.beta >= 0:
            raise ConfigError(f"[local] beta must be >= 0 (0: no local costs), got {self.beta}")
        if not self.init_scale > 0:
            raise ConfigError(f"[local] init_scale must be > 0, got {self.init_scale}")
        object.__setattr__(self, "beta", float(self.beta))
        object.__setattr__(self, "init_scale", float(self.init_scale))

    @property
    def active(self) -> bool:
        """Whether there are local costs (beta > 0)."""
        return self.beta > 0

    def layer_indices(self, n_dynamic: int) -> tuple[int, ...]:
        """The hidden layers (1-based) that get a local cost; layer ``n_dynamic`` carries the output cost."""
        hidden = n_dynamic - 1
        if self.layers == "all":
            if hidden < 1:
                raise ConfigError("[local] the network has no hidden layer below the output layer to give a local "
                                  "cost (layers = 'all')")
            return tuple(range(1, hidden + 1))
        for i in self.layers:
            if i == n_dynamic:
                raise ConfigError(f"[local] layer {i} is the output layer (it carries the output cost); local costs go "
                                  f"on hidden layers 1..{hidden}")
            if i > hidden:
                raise ConfigError(f"[local] layer {i} is out of range: the network's hidden layers are 1..{hidden}")
        return self.layers


@dataclass(frozen=True)
class DistillConfig:
    """Distillation from a teacher run (docs/ALGORITHMS.md "Distillation"; ``neuro_hts.distill``).

    ``teacher``: its run file ("" = off); targets ``(1 - alpha) y + alpha softmax(z_t /
    temperature)``; ``teacher_sha256``: the teacher file's digest, recorded when training
    starts so that a resumed run refuses a teacher that changed.
    """

    teacher: str = ""
    temperature: float = 1.0
    alpha: float = 0.5
    teacher_sha256: str = ""

    def __post_init__(self):
        if not isinstance(self.teacher, str) or not isinstance(self.teacher_sha256, str):
            raise ConfigError("[distill] teacher and teacher_sha256 must be strings")
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0:
            raise ConfigError(f"[distill] temperature must be a positive number, got {t!r}")
        a = self.alpha
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0.0 <= a <= 1.0:
            raise ConfigError(f"[distill] alpha must be a number in [0, 1], got {a!r}")


@dataclass(frozen=True)
class DataConfig:
    """Dataset and subset; ``normalize = [mean, std]``: inputs x <- (x - mean) / std after the
    [0, 1] scaling (the authors' Fashion-MNIST transform; :func:`neuro_hts.data.normalize`)."""

    dataset: str = "digits"
    data_dir: str | None = None
    n_train: int | None = None
    n_test: int | None = None
    normalize: tuple[float, float] | None = None

    def __post_init__(self):
        _choice("data", "dataset", self.dataset, DATASETS)
        if self.normalize is not None:
            v = self.normalize
            if (not isinstance(v, (list, tuple)) or len(v) != 2 or any(isinstance(a, bool) or not isinstance(a, (int, float))
                                                                       for a in v) or not v[1] > 0):
                raise ConfigError(f"[data] normalize must be [mean, std] with std > 0, got {v!r}")
            object.__setattr__(self, "normalize", (float(v[0]), float(v[1])))
        for k in ("n_train", "n_test"):
            v = getattr(self, k)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ConfigError(f"[data] {k} must be a positive integer, got {v!r}")


def _model_from_parts(sec: dict) -> dict:
    """A [model] table that declares its parts: ``arch``/``output`` derived (and checked if also given)."""
    spec = NetworkSpec.from_tables(sec.get("layers", ()), sec.get("connections", ()), sec.get("costs", ()))
    arch, output = spec.chain(sec.get("activation", ModelConfig.activation))
    if "arch" in sec and parse_arch(sec["arch"]) != arch or "output" in sec and sec["output"] != output:
        raise ConfigError(f"[model] arch/output ({sec.get('arch')}, {sec.get('output')}) do not match the declared layers "
                          f"({'-'.join(map(str, arch))}, {output!r}); declare one or the other")
    return {**sec, "arch": list(arch), "output": output}


_SECTIONS = {"model": ModelConfig, "dt": DtConfig, "train": TrainConfig, "chl": ChlConfig, "adapt": AdaptConfig,
             "local": LocalConfig, "data": DataConfig, "distill": DistillConfig}


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    dt: DtConfig = field(default_factory=DtConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    chl: ChlConfig = field(default_factory=ChlConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    local: LocalConfig = field(default_factory=LocalConfig)
    data: DataConfig = field(default_factory=DataConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def __post_init__(self):
        n_layers = len(self.model.arch) - 1
        self.train.layer_lrs(n_layers)
        n_dyn = n_layers - (1 if self.model.output == "ce" else 0)
        self.dt.heterogeneous_layers(n_dyn, n_layers)
        try:
            algo = make_algorithm(self)
        except ConfigError as exc:
            raise ConfigError(f"[{self.train.algorithm}] {exc}" if not str(exc).startswith("[") else str(exc)) from None
        if self.train.trainer == "bptt":
            why = [w for w, bad in [("train.arith = 'float'", self.train.arith != "float"),
                                    ("train.algorithm = 'ep'", self.train.algorithm != "ep"),
                                    ("adapt.steps = 0", self.adapt.steps != 0),
                                    ("no train.t1_tol (BPTT runs exactly t1 steps)", self.train.t1_tol is not None)] if bad]
            if why:
                raise ConfigError("[train] trainer = 'bptt' backpropagates through the t1 free-phase steps; it needs "
                                  + ", ".join(why))
        if self.train.lava_learning == "learning-dense" and (self.train.algorithm != "ep" or self.adapt.steps != 0):
            raise ConfigError("[train] lava_learning = 'learning-dense' is built and checked for EP without adjusted "
                              "adaptation only (docs/LAVA_LEARNING.md); use lava_learning = 'exact' for CHL or adaptation")
        if self.model.nudge != "inside" and self.train.arith == "fixed":
            raise ConfigError(f"[model] nudge = {self.model.nudge!r} is not in the fixed-point (Loihi) neuron, which adds "
                              f"the nudge to its input current (inside); train with arith = 'float', or nudge = 'inside'")
        reasons = algo.supports(self.model)
        if reasons:
            raise ConfigError(f"[train] algorithm {algo.name!r}: " + "; ".join(reasons))
        if self.local.active or self.local.layers != "all":  # named layers are checked even while beta = 0
            self.local.layer_indices(n_dyn)
        if self.local.active:
            why = [w for w, bad in [("train.algorithm = 'ep' (the local costs act in EP's nudged phases)",
                                     self.train.algorithm != "ep"),
                                    ("train.arith = 'float'", self.train.arith != "float")] if bad]
            if why:
                raise ConfigError("[local] local error costs need " + ", ".join(why))

    # --- conversion -------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["model"]["arch"] = list(self.model.arch)
        for k in ("layers", "connections", "costs"):  # JSON-normal: lists, not tuples
            d["model"][k] = json.loads(json.dumps([_table(t) for t in getattr(self.model, k)]))
        d["train"]["lr"] = list(self.train.lr)
        if isinstance(self.local.layers, tuple):
            d["local"]["layers"] = list(self.local.layers)
        if self.data.normalize is not None:
            d["data"]["normalize"] = list(self.data.normalize)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        if not isinstance(d, dict):
            raise ConfigError("config must be a table of sections")
        unknown = set(d) - set(_SECTIONS)
        if unknown:
            raise ConfigError(f"unknown config section(s): {', '.join(sorted(unknown))}")
        parts = {}
        for name, klass in _SECTIONS.items():
            sec = d.get(name, {}) or {}
            if not isinstance(sec, dict):
                raise ConfigError(f"[{name}] must be a table")
            names = {f.name for f in dataclasses.fields(klass)}
            bad = set(sec) - names
            if bad:
                raise ConfigError(f"unknown key(s) in [{name}]: {', '.join(sorted(bad))}")
            for k, v in sec.items():
                _check_finite(name, k, v)
            if name == "model" and sec.get("layers"):
                sec = _model_from_parts(sec)
            try:
                parts[name] = klass(**sec)
            except ConfigError:
                raise
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"[{name}] invalid value: {exc}") from None
        return cls(**parts)

    @classmethod
    def from_json(cls, text: str) -> "Config":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config is not valid JSON: {exc}") from None

    def replace(self, **sections: dict) -> "Config":
        """Return a copy with keys of some sections overridden: ``cfg.replace(train={'epochs': 3})``."""
        d = self.to_dict()
        for name, updates in sections.items():
            if name not in _SECTIONS:
                raise ConfigError(f"unknown config section {name!r}")
            d[name].update({k: v for k, v in updates.items() if v is not None})
        return Config.from_dict(d)


def read_toml(path: str | Path) -> dict:
    """The tables of a TOML config file; a one-line ConfigError naming the file otherwise
    (missing, a directory, binary or not UTF-8, invalid TOML)."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {' '.join(str(exc).split())}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a text TOML file (binary or not UTF-8; a run file goes to --resume or eval)") from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a directory, not a TOML config file") from None


def load_config(path: str | Path) -> Config:
    """Load and validate a TOML config; errors name the file and the problem."""
    p = Path(path)
    raw = read_toml(p)
    try:
        return Config.from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None
