"""Float vs Loihi-style fixed point: accuracy, agreement, state errors, weight-width sweep.

:func:`compare_run` loads a trained run, quantizes it for a hardware target
(:func:`~neuro_hts.hardware.quantize.quantize_network`) and relaxes the free phase of the
same test samples

* in float64 (the project's Numba backend, :func:`neuro_hts.backends.get_backend`),
* in integers (:class:`~neuro_hts.hardware.fixed_sim.FixedPointSimulator`, the Numba
  fixed-point oracle),
* optionally in Lava (``lava_samples > 0``: the first N samples through
  ``neuro_hts.lava.run_inference``, or any ``lava_runner`` with the same signature; Lava
  code is imported only then),
* for every weight mantissa width of a sweep (target variants whose
  ``weights.mantissa_bits`` is b; exponent range and everything else kept),
* and, where the target limits decay settings per core
  (``limits.decay_profiles_per_core > 0``) or ``profile_levels`` is given, with the
  profile-binned bundle (``profile_mode=True``; ``profile_levels=K`` uses a target variant
  whose limit is K).

The result (:class:`CompareResult`) holds tidy rows; :func:`write_csv` and
:func:`plot_compare` write them (atomically). The library never prints.

CSV columns (``compare.csv``, one row per measured number)
---------------------------------------------------------

``metric``
    ``accuracy``            fraction of samples whose argmax of the top layer is the label
    ``agreement``           fraction of samples where two variants predict the same class
    ``accuracy_drop``       float accuracy minus the variant's, in percentage points
    ``state_err_p50`` / ``state_err_p90`` / ``state_err_p99`` / ``state_err_max`` /
    ``state_err_mean``      |float - fixed| of the free-phase states (dequantized, units of
                            1.0), over every sample and neuron of one layer
    ``min_bits_within_tol`` smallest swept width whose accuracy is within ``tolerance``
                            points of float, AND every wider swept width too (NaN: none)
    ``tolerance_points``    that tolerance
    ``max_dt_change``       profile binning: max |binned dt - dt| of a layer
    ``top_state_match``     Lava: fraction of samples whose int64 top-layer states (a softmax
                            readout: its integer logits) equal
                            the Numba fixed-point ones bit for bit
    ``steps_per_second``    Lava: the runner's reported speed
    ``weights_zero_frac`` / ``weights_saturated_frac``
                            exponent rules: fraction of a layer's integer weights that are
                            0 / at the saturation limit +-max_int
``variant``
    ``float``, ``fixed`` (the target as is; every design rule holds except a per-core
    decay-profile limit, which only ``fixed_binned`` meets), ``fixed_binned``
    (profile-binned decays),
    ``lava``, ``float@lava_samples`` / ``fixed@lava_samples`` (accuracy on the Lava
    subset), ``sweep`` (one row per width); pairs are written ``a~b`` (``float~fixed``,
    ``float~lava``, ``fixed~lava``, ``fixed~fixed_binned``, ``float~fixed_binned``,
    ``float~sweep``); ``exp_<rule>`` (the sweep under each exponent rule of
    ``fixed_point.EXPONENT_RULES``; ``exp_max`` repeats ``sweep``)
``weight_bits``
    weight mantissa bits of the fixed-point variant (empty for ``float``-only rows)
``layer``
    1-based layer index for per-layer rows, else empty
``n_samples``
    number of test samples the number is computed on (Lava rows: the first N)
``value``
    the number (``nan`` where undefined, e.g. a sweep width the quantizer refuses)
``unit``
    one unit per metric (:data:`METRIC_UNITS`): ``fraction`` (accuracy, agreement,
    top_state_match, weights_*_frac), ``points`` (accuracy_drop, tolerance_points), ``state``
    (state_err_*), ``bits``, ``dt``, ``steps/s``

The figure keeps one unit and one sample count per axis: its accuracy axis is in percent
over the compared test set; a Lava run on fewer samples is stated in a note, not plotted.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._atomic import atomic_path
from ..errors import ConfigError
from .drc import check_deployable, run_design_rules
from .fixed_sim import FixedPointSimulator
from .quantize import DeployBundle, quantize_network
from .target import HardwareTarget, load_target

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_WEIGHT_BITS",
    "HIST_EDGES",
    "STATE_ERR_PERCENTILES",
    "CompareResult",
    "CompareRow",
    "METRIC_UNITS",
    "metric_unit",
    "compare_network",
    "compare_run",
    "format_table",
    "parse_weight_bits",
    "parse_exponent_rules",
    "plot_compare",
    "profile_variant",
    "weight_bits_variant",
    "write_csv",
]

logger = logging.getLogger(__name__)

CSV_COLUMNS = ("metric", "variant", "weight_bits", "layer", "n_samples", "value", "unit")

#: the unit of each metric's ``value`` (one unit per metric: accuracies and agreements are
#: fractions, drops and tolerances accuracy points, i.e. percent)
METRIC_UNITS = {
    "accuracy": "fraction", "agreement": "fraction", "top_state_match": "fraction",
    "accuracy_drop": "points", "tolerance_points": "points", "min_bits_within_tol": "bits",
    "max_dt_change": "dt", "steps_per_second": "steps/s",
    "weights_zero_frac": "fraction", "weights_saturated_frac": "fraction",
}


def metric_unit(metric: str) -> str:
    """Unit of a CSV metric (state errors are in state units, i.e. activation values)."""
    return "state" if metric.startswith("state_err_") else METRIC_UNITS.get(metric, "")
DEFAULT_WEIGHT_BITS = (2, 3, 4, 5, 6, 7, 8)
STATE_ERR_PERCENTILES = (50, 90, 99)
#: histogram bins of |float - fixed| (log-spaced, 1e-7 ... 1; smaller errors, exact zeros
#: included, count in the first bin, larger ones in the last)
HIST_EDGES = np.logspace(-7.0, 0.0, 71)

ProgressFactory = Callable[[int, str], object]


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass


def _no_progress(total, desc):
    return _NoBar()


@dataclass(frozen=True)
class CompareRow:
    """One tidy CSV row (see the module docstring for the meaning of each column)."""

    metric: str
    variant: str
    value: float
    weight_bits: int | None = None
    layer: int | None = None
    n_samples: int | None = None


@dataclass
class CompareResult:
    """Everything :func:`compare_network` measured.

    ``accuracy`` / ``agreement`` map variant names (pairs ``'a~b'``) to fractions;
    ``state_errors[variant][layer]`` maps ``'p50' 'p90' 'p99' 'max' 'mean'`` to values;
    ``histograms[variant]`` is one count array per layer over :data:`HIST_EDGES`;
    ``sweep`` maps weight bits to fixed-point accuracy (NaN: refused, reason in
    ``sweep_errors``) and ``sweep_agreement`` to its agreement with float.
    """

    target_name: str
    arch: tuple[int, ...]
    steps: int
    n_samples: int
    weight_bits: int
    tolerance: float
    accuracy: dict[str, float] = field(default_factory=dict)
    agreement: dict[str, float] = field(default_factory=dict)
    state_errors: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    histograms: dict[str, list[np.ndarray]] = field(default_factory=dict)
    sweep: dict[int, float] = field(default_factory=dict)
    sweep_agreement: dict[int, float] = field(default_factory=dict)
    sweep_errors: dict[int, str] = field(default_factory=dict)
    min_bits_within_tol: int | None = None
    profile_levels: int | None = None
    max_dt_change: list[float] | None = None
    lava_samples: int = 0
    lava_top_state_match: float | None = None
    lava_steps_per_second: float | None = None
    dataset: str = ""
    run_path: str = ""
    rows: list[CompareRow] = field(default_factory=list)
    #: the weight-bits sweep once per exponent rule (``fixed_point.choose_exponent``):
    #: accuracy, and per layer the fraction of weights that round to zero / saturate
    exponent_rules: tuple[str, ...] = ("max",)
    rule_sweep: dict[str, dict[int, float]] = field(default_factory=dict)
    rule_zero_frac: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    rule_saturated_frac: dict[str, dict[int, list[float]]] = field(default_factory=dict)


# --------------------------------------------------------------------------- inputs


def parse_weight_bits(text) -> tuple[int, ...]:
    """``'2,3,8'`` (or an iterable of ints) -> sorted unique widths; ConfigError if malformed."""
    if isinstance(text, str):
        parts = [p.strip() for p in text.split(",")]
        if not text.strip() or any(not p for p in parts):
            raise ConfigError(f"malformed --weight-bits {text!r}: expected comma-separated integers like 2,4,8")
        try:
            bits = [int(p) for p in parts]
        except ValueError:
            raise ConfigError(f"malformed --weight-bits {text!r}: expected comma-separated integers like 2,4,8") from None
    else:
        bits = list(text)
        if any(isinstance(b, bool) or not isinstance(b, (int, np.integer)) for b in bits):
            raise ConfigError(f"weight bits must be integers, got {text!r}")
        bits = [int(b) for b in bits]
    if not bits:
        raise ConfigError("weight bits: give at least one width")
    bad = [b for b in bits if not 1 <= b <= 16]
    if bad:
        raise ConfigError(f"weight bits must lie in [1, 16], got {bad[0]}")
    return tuple(sorted(set(bits)))


def parse_exponent_rules(text) -> tuple[str, ...]:
    """``'max,mse'`` (or a sequence) -> validated rule names, in the order given, ``max`` first added if absent."""
    from .fixed_point import EXPONENT_RULES

    parts = [p.strip() for p in text.split(",")] if isinstance(text, str) else [str(p) for p in text]
    parts = [p for p in parts if p]
    bad = [p for p in parts if p not in EXPONENT_RULES]
    if bad or not parts:
        raise ConfigError(f"exponent rules must be comma-separated names from {', '.join(EXPONENT_RULES)}, "
                          f"got {text!r}")
    if len(set(parts)) != len(parts):
        raise ConfigError(f"each exponent rule may appear once, got {text!r}")
    return tuple(["max"] + [p for p in parts if p != "max"])


def weight_bits_variant(target: HardwareTarget, bits: int) -> HardwareTarget:
    """``target`` with ``weights.mantissa_bits = bits`` (exponent range, evenness kept)."""
    if bits < 1 or bits > 16:
        raise ConfigError(f"weight bits must lie in [1, 16], got {bits}")
    if target.weights.even and bits < 2:
        raise ConfigError(f"{target.name} keeps even weights only: weight bits must be >= 2, got {bits}")
    return dataclasses.replace(
        target,
        name=f"{target.name}-w{bits}",
        weights=dataclasses.replace(target.weights, mantissa_bits=int(bits)),
    )


def profile_variant(target: HardwareTarget, levels: int) -> HardwareTarget:
    """``target`` with ``limits.decay_profiles_per_core = levels``."""
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 1:
        raise ConfigError(f"profile levels must be a positive integer, got {levels!r}")
    return dataclasses.replace(
        target,
        name=f"{target.name}-p{levels}",
        limits=dataclasses.replace(target.limits, decay_profiles_per_core=int(levels)),
    )


# --------------------------------------------------------------------------- helpers


def _state_error_stats(err: np.ndarray) -> dict[str, float]:
    if err.size == 0:
        return {k: float("nan") for k in ("p50", "p90", "p99", "max", "mean")}
    pct = np.percentile(err, STATE_ERR_PERCENTILES)
    out = {f"p{p}": float(v) for p, v in zip(STATE_ERR_PERCENTILES, pct)}
    out["max"] = float(err.max())
    out["mean"] = float(err.mean())
    return out


def _histogram(err: np.ndarray) -> np.ndarray:
    clipped = np.clip(err, HIST_EDGES[0], HIST_EDGES[-1])
    counts, _ = np.histogram(clipped, bins=HIST_EDGES)
    return counts.astype(np.int64)


def _load_lava_runner():
    """``neuro_hts.lava.run_inference``, with Lava imported now.

    Lava must be imported before anything fixes multiprocessing's start method (a tqdm bar
    does), so this runs before the first progress bar is created.
    """
    try:
        from ..lava import import_lava, run_inference  # only here: Lava is optional

        import_lava()
    except ImportError as exc:
        raise ConfigError(f"the Lava comparison needs neuro_hts.lava and lava-nc ({exc}); run with --lava-samples 0") from None
    except RuntimeError as exc:
        raise ConfigError(f"cannot import Lava in this process ({exc})") from None
    return run_inference


def _min_bits_within(sweep: dict[int, float], ref: float, tolerance: float) -> int | None:
    """Smallest width b such that b and every wider swept width are within ``tolerance`` points."""
    best = None
    for b in sorted(sweep, reverse=True):
        acc = sweep[b]
        if not math.isfinite(acc) or (ref - acc) * 100.0 > tolerance + 1e-9:
            break
        best = b
    return best


# --------------------------------------------------------------------------- core


def compare_network(
    network,
    target: HardwareTarget,
    x: np.ndarray,
    y: np.ndarray,
    steps: int,
    *,
    weight_bits=DEFAULT_WEIGHT_BITS,
    profile_levels: int | None = None,
    lava_samples: int = 0,
    lava_runner=None,
    tolerance: float = 0.5,
    batch_size: int = 1000,
    backend: str = "numba",
    source: dict | None = None,
    progress: ProgressFactory | None = None,
    exponent_rules=("max",),
    percentile: float = 99.9,
) -> CompareResult:
    """Compare float and fixed-point free phases of ``network`` on ``(x, y)``.

    Parameters
    ----------
    network : Network (leaky or energy form; MSE output, or a softmax readout after a dense
        chain: what ``drc.check_deployable`` admits). With a readout the fixed-point scores
        are its integer logits (``FixedPointSimulator.scores``), and ``top_state_match``
        compares Lava's logits with them
    target : HardwareTarget, quantized for as is (``fixed``) and per sweep width
    x, y : test inputs (N, n_0) in [0, 1] (or (N, C, H, W) for an image input layer) and integer labels (N,)
    steps : free-phase steps (>= 1)
    weight_bits : widths of the sweep (see :func:`parse_weight_bits`)
    profile_levels : bin decays to this many levels per core (default: the target's limit,
        if any; no binned variant when the target has none and this is None)
    lava_samples : run the first N samples (clamped to the test set) through
        ``lava_runner(bundle, x, n_steps, arith="fixed")`` (default runner:
        ``neuro_hts.lava.run_inference``, imported only when N > 0)
    tolerance : accuracy drop, in percentage points, that counts as "within float"
    backend : float backend name ('numba' or 'numpy'), run in float64
    progress : ``progress(total, desc)`` -> object with ``update(n)`` and ``close()``
    exponent_rules : run the weight-bits sweep once per rule of
        ``fixed_point.EXPONENT_RULES`` (``max`` is the sweep above and the ``fixed``
        variant; ``percentile`` uses ``percentile``), recording per layer the fraction of
        weights that round to zero and that saturate

    Raises
    ------
    ConfigError
        Bad arguments, design-rule violations of the target, an unsupported network.
    """
    from ..backends import get_backend
    from ..dynamics import predict_scores

    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ConfigError(f"steps must be a positive integer, got {steps!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(f"batch size must be a positive integer, got {batch_size!r}")
    if isinstance(lava_samples, bool) or not isinstance(lava_samples, (int, np.integer)) or lava_samples < 0:
        raise ConfigError(f"lava samples must be a non-negative integer, got {lava_samples!r}")
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
        raise ConfigError(f"tolerance must be a non-negative number of points, got {tolerance!r}")
    bits_list = parse_weight_bits(weight_bits)
    rules = parse_exponent_rules(exponent_rules)
    if lava_samples > 0 and lava_runner is None:
        lava_runner = _load_lava_runner()
    x = np.ascontiguousarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if x.ndim > 2 and x.shape[1:] == tuple(network.shapes[0]):
        x = x.reshape(x.shape[0], -1)  # images (N, C, H, W): flat in C order, as the layers read them
    if x.ndim != 2 or x.shape[1] != network.arch[0] or y.shape != (x.shape[0],):
        raise ConfigError(f"test data {x.shape} / labels {y.shape} do not fit the network {'-'.join(map(str, network.arch))}")
    n = int(x.shape[0])
    if n == 0:
        raise ConfigError("no test samples to compare on")

    # ---- bundles. Every design rule is enforced except the per-core decay-profile limit on
    # the unbinned variants: they are the reference binning is measured against.
    def quantize(tgt, profile_mode=False, rule="max"):
        violations = check_deployable(network, tgt) + run_design_rules(network, tgt, profile_mode=True)
        if violations:
            raise ConfigError("design rules violated: " + "; ".join(map(str, violations)))
        return quantize_network(network, tgt, profile_mode=profile_mode, check_rules=False, source=source,
                                exponent_rule=rule, percentile=percentile)

    bundle = quantize(target)
    sim = FixedPointSimulator(bundle)
    own_bits = int(target.weights.mantissa_bits)
    binned: DeployBundle | None = None
    levels = None
    if profile_levels is not None:
        ptarget = profile_variant(target, profile_levels)
        levels = int(profile_levels)
    elif target.limits.decay_profiles_per_core > 0:
        ptarget = target
        levels = int(target.limits.decay_profiles_per_core)
    if levels is not None:
        binned = quantize(ptarget, profile_mode=True)
    sim_binned = FixedPointSimulator(binned) if binned is not None else None
    sweep_sims: dict[int, FixedPointSimulator | None] = {}
    sweep_errors: dict[int, str] = {}
    for b in bits_list:
        if b == own_bits:
            sweep_sims[b] = sim
            continue
        try:
            sweep_sims[b] = FixedPointSimulator(quantize(weight_bits_variant(target, b)))
        except ConfigError as exc:
            logger.warning("weight bits %d: not quantizable: %s", b, exc)
            sweep_sims[b] = None
            sweep_errors[b] = str(exc)

    # the sweep once more per exponent rule (max: the sims above), with each layer's
    # fraction of weights at zero and at the saturation limit
    rule_sims: dict[tuple[str, int], FixedPointSimulator | None] = {}
    rule_zero: dict[str, dict[int, list[float]]] = {r: {} for r in rules}
    rule_sat: dict[str, dict[int, list[float]]] = {r: {} for r in rules}
    for r in rules:
        for b in bits_list:
            if r == "max":
                rule_sims[r, b] = sweep_sims[b]
                qb = rule_sims[r, b].bundle if rule_sims[r, b] is not None else None
            else:
                try:
                    qb = quantize(weight_bits_variant(target, b), rule=r)
                    rule_sims[r, b] = FixedPointSimulator(qb)
                except ConfigError as exc:
                    logger.warning("weight bits %d, exponent rule %s: not quantizable: %s", b, r, exc)
                    rule_sims[r, b] = qb = None
            if qb is not None:
                max_int = weight_bits_variant(target, b).weights.max_int
                rule_zero[r][b] = [float(np.mean(lb.weight_mantissa == 0)) for lb in qb.layers]
                rule_sat[r][b] = [float(np.mean(np.abs(lb.weight_mantissa) >= max_int)) for lb in qb.layers]
    rule_pred = {k: np.empty(n, np.int64) for k, s in rule_sims.items() if s is not None and k[0] != "max"}

    be = get_backend(backend, np.float64)
    netf = network.astype(np.float64)
    L = sim.n_dynamic  # relaxed layers (a softmax readout has no states)

    pred: dict[str, np.ndarray] = {"float": np.empty(n, np.int64), "fixed": np.empty(n, np.int64)}
    if sim_binned is not None:
        pred["fixed_binned"] = np.empty(n, np.int64)
    sweep_pred = {b: np.empty(n, np.int64) for b, s in sweep_sims.items() if s is not None}
    errs = {"fixed": [[] for _ in range(L)]}
    if sim_binned is not None:
        errs["fixed_binned"] = [[] for _ in range(L)]
    fixed_top = np.empty((n, bundle.layers[-1].bias.size), dtype=np.int64)

    n_batches = (n + batch_size - 1) // batch_size
    bar = (progress or _no_progress)(n_batches, "compare")
    try:
        for start in range(0, n, batch_size):
            sl = slice(start, min(start + batch_size, n))
            xb = x[sl]
            sf = be.relax(netf, xb, int(steps)).states
            pred["float"][sl] = np.argmax(predict_scores(netf, sf), axis=1)
            for name, s in (("fixed", sim), ("fixed_binned", sim_binned)):
                if s is None:
                    continue
                st, _ = s.relax(xb, int(steps))
                scores = s.scores(st)  # the top states, or a softmax readout's integer logits
                if name == "fixed":
                    fixed_top[sl] = scores
                pred[name][sl] = np.argmax(scores, axis=1)
                for l, (a, q) in enumerate(zip(sf, s.dequantize_states(st))):
                    errs[name][l].append(np.abs(np.asarray(a, np.float64) - q).ravel())
            for b, s in sweep_sims.items():
                if s is None:
                    continue
                if s is sim:
                    sweep_pred[b][sl] = pred["fixed"][sl]
                else:
                    sweep_pred[b][sl] = s.predict(xb, int(steps))
            for k, p in rule_pred.items():
                p[sl] = rule_sims[k].predict(xb, int(steps))
            bar.update(1)
    finally:
        bar.close()

    res = CompareResult(
        target_name=target.name,
        arch=tuple(int(a) for a in network.arch),
        steps=int(steps),
        n_samples=n,
        weight_bits=own_bits,
        tolerance=float(tolerance),
        profile_levels=levels,
        sweep_errors=sweep_errors,
    )
    rows = res.rows
    for name, p in pred.items():
        acc = float(np.mean(p == y))
        res.accuracy[name] = acc
        rows.append(CompareRow("accuracy", name, acc, None if name == "float" else own_bits, None, n))
    for a, b in (("float", "fixed"), ("float", "fixed_binned"), ("fixed", "fixed_binned")):
        if a in pred and b in pred:
            v = float(np.mean(pred[a] == pred[b]))
            res.agreement[f"{a}~{b}"] = v
            rows.append(CompareRow("agreement", f"{a}~{b}", v, own_bits, None, n))
    for name in pred:
        if name != "float":
            drop = (res.accuracy["float"] - res.accuracy[name]) * 100.0
            rows.append(CompareRow("accuracy_drop", name, drop, own_bits, None, n))
    for name, per_layer in errs.items():
        res.state_errors[name] = []
        res.histograms[name] = []
        for l, chunks in enumerate(per_layer, start=1):
            e = np.concatenate(chunks) if chunks else np.zeros(0)
            stats = _state_error_stats(e)
            res.state_errors[name].append(stats)
            res.histograms[name].append(_histogram(e))
            for k, v in stats.items():
                rows.append(CompareRow(f"state_err_{k}", name, v, own_bits, l, n))
    if binned is not None:
        res.max_dt_change = [binned.max_dt_change(lb) for lb in binned.layers]
        for l, v in enumerate(res.max_dt_change, start=1):
            rows.append(CompareRow("max_dt_change", "fixed_binned", v, own_bits, l, None))

    for b in bits_list:
        if b in sweep_pred:
            acc = float(np.mean(sweep_pred[b] == y))
            agr = float(np.mean(sweep_pred[b] == pred["float"]))
        else:
            acc = agr = float("nan")
        res.sweep[b] = acc
        res.sweep_agreement[b] = agr
        rows.append(CompareRow("accuracy", "sweep", acc, b, None, n))
        rows.append(CompareRow("agreement", "float~sweep", agr, b, None, n))
        rows.append(CompareRow("accuracy_drop", "sweep", (res.accuracy["float"] - acc) * 100.0, b, None, n))
    res.exponent_rules = rules
    for r in rules:
        res.rule_sweep[r] = {}
        for b in bits_list:
            p = sweep_pred.get(b) if r == "max" else rule_pred.get((r, b))
            acc = float(np.mean(p == y)) if p is not None else float("nan")
            res.rule_sweep[r][b] = acc
            rows.append(CompareRow("accuracy", f"exp_{r}", acc, b, None, n))
            for metric, table in (("weights_zero_frac", rule_zero), ("weights_saturated_frac", rule_sat)):
                for l, v in enumerate(table[r].get(b, ()), start=1):
                    rows.append(CompareRow(metric, f"exp_{r}", v, b, l, None))
        res.rule_zero_frac[r], res.rule_saturated_frac[r] = rule_zero[r], rule_sat[r]
    res.min_bits_within_tol = _min_bits_within(res.sweep, res.accuracy["float"], float(tolerance))
    rows.append(CompareRow("min_bits_within_tol", "sweep",
                           float("nan") if res.min_bits_within_tol is None else float(res.min_bits_within_tol), None, None, n))
    rows.append(CompareRow("tolerance_points", "sweep", float(tolerance), None, None, None))

    # ---- Lava (first N samples)
    n_lava = min(int(lava_samples), n)
    if n_lava < lava_samples:
        logger.info("lava samples clamped to the %d test samples", n)
    if n_lava > 0:
        logger.info("running %d samples through Lava", n_lava)
        out = lava_runner(bundle, x[:n_lava], int(steps), arith="fixed")
        lp = np.asarray(out.predictions).astype(np.int64).reshape(-1)
        lt = np.asarray(out.top_states).astype(np.int64)
        if lp.shape != (n_lava,) or lt.shape != (n_lava, fixed_top.shape[1]):
            raise ConfigError(
                f"the Lava runner returned predictions {lp.shape} / top states {lt.shape}, "
                f"expected ({n_lava},) / ({n_lava}, {fixed_top.shape[1]})"
            )
        res.lava_samples = n_lava
        acc = float(np.mean(lp == y[:n_lava]))
        res.accuracy["lava"] = acc
        rows.append(CompareRow("accuracy", "lava", acc, own_bits, None, n_lava))
        for name in ("float", "fixed"):
            v = float(np.mean(pred[name][:n_lava] == lp))
            res.agreement[f"{name}~lava"] = v
            rows.append(CompareRow("agreement", f"{name}~lava", v, own_bits, None, n_lava))
        for name in ("float", "fixed"):  # same-subset references for the Lava accuracy
            v = float(np.mean(pred[name][:n_lava] == y[:n_lava]))
            res.accuracy[f"{name}@lava_samples"] = v
            rows.append(CompareRow("accuracy", f"{name}@lava_samples", v, None if name == "float" else own_bits, None, n_lava))
        res.lava_top_state_match = float(np.mean(np.all(lt == fixed_top[:n_lava], axis=1)))
        rows.append(CompareRow("top_state_match", "fixed~lava", res.lava_top_state_match, own_bits, None, n_lava))
        sps = getattr(out, "steps_per_second", float("nan"))
        res.lava_steps_per_second = float(sps) if sps is not None else float("nan")
        rows.append(CompareRow("steps_per_second", "lava", res.lava_steps_per_second, own_bits, None, n_lava))
    return res


def compare_run(
    run_path: str | os.PathLike,
    target: str | os.PathLike | HardwareTarget,
    *,
    n_test: int | None = None,
    data_dir: str | os.PathLike | None = None,
    steps: int | None = None,
    **kwargs,
) -> CompareResult:
    """:func:`compare_network` on a run file's network and its dataset's test split.

    ``n_test`` defaults to the run's configured test subset (all of it if none);
    ``data_dir`` to the run's; ``steps`` to the run's free-phase steps ``t1``. Other
    keyword arguments go to :func:`compare_network`.
    """
    from ..data import load_recorded_dataset
    from ..hardware.bundle import file_sha256
    from ..runfile import load_run

    tgt = target if isinstance(target, HardwareTarget) else load_target(target)
    state = load_run(run_path)
    cfg = state.config
    net = state.network
    data = load_recorded_dataset(cfg.data.dataset, cfg.data.data_dir, data_dir,
                        n_test=n_test if n_test is not None else cfg.data.n_test)
    if data.x_test.shape[1] != net.arch[0] or data.n_classes != net.arch[-1]:
        raise ConfigError(f"run {run_path} ({'-'.join(map(str, net.arch))}) does not fit dataset {cfg.data.dataset!r}")
    source = {
        "run_path": str(Path(run_path).resolve()),
        "run_sha256": file_sha256(run_path),
        "run_config": cfg.to_json(),
        "epochs_completed": state.epochs_completed,
    }
    res = compare_network(net, tgt, data.x_test, data.y_test, steps if steps is not None else cfg.train.t1,
                          source=source, **kwargs)
    res.dataset = data.name
    res.run_path = str(run_path)
    return res


# --------------------------------------------------------------------------- writers


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return repr(float(v))


def write_csv(result: CompareResult, path: str | os.PathLike) -> Path:
    """Write the tidy rows (columns :data:`CSV_COLUMNS`) atomically; returns the path."""
    path = Path(path)
    with atomic_path(path, suffix=".csv.tmp") as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_COLUMNS)
        for r in result.rows:
            w.writerow([r.metric, r.variant, _fmt(r.weight_bits), _fmt(r.layer), _fmt(r.n_samples), _fmt(r.value),
                        metric_unit(r.metric)])
    logger.debug("wrote %s (%d rows)", path, len(result.rows))
    return path


def plot_compare(result: CompareResult, path: str | os.PathLike) -> Path:
    """Accuracy vs weight bits (left) and one |float - fixed| histogram per layer; atomic."""
    from ..plotting import _figure_class

    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    if fmt not in ("png", "pdf", "svg"):
        raise ConfigError(f"figure format {fmt!r} not supported; use png, pdf or svg")
    Figure, FigureCanvasAgg = _figure_class()
    L = len(result.state_errors.get("fixed", []))
    ncols = 1 + L
    fig = Figure(figsize=(4.4 * ncols, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]

    ax = axes[0]
    fl = result.accuracy["float"] * 100.0
    bits = sorted(result.sweep)
    accs = [result.sweep[b] * 100.0 for b in bits]
    ax.plot(bits, accs, "o-", color="C0", label="fixed (Numba), exponent: max")
    for i, r in enumerate(result.exponent_rules):
        if r != "max":
            ax.plot(bits, [result.rule_sweep[r].get(b, math.nan) * 100.0 for b in bits], "^--", color=f"C{4 + i}",
                    ms=4, label=f"exponent: {r}")
    ax.axhline(fl, color="k", lw=1.2, label=f"float {fl:.2f} %")
    ax.axhspan(fl - result.tolerance, fl + result.tolerance, color="0.85", zorder=0,
               label=f"+-{result.tolerance:g} points")
    if "fixed_binned" in result.accuracy:
        ax.plot([result.weight_bits], [result.accuracy["fixed_binned"] * 100.0], "s", color="C3",
                label=f"binned decays ({result.profile_levels} levels)")
    if "lava" in result.accuracy:
        # one sample count per axis: Lava ran fewer samples, so it is a note, not a point
        lava = result.accuracy["lava"] * 100.0
        if result.lava_samples == result.n_samples:
            ax.plot([result.weight_bits], [lava], "x", color="C2", ms=9, label="Lava")
        else:
            ax.text(0.02, 0.02, f"Lava on the first {result.lava_samples} samples: {lava:.2f} %\n(not plotted: this axis "
                    f"is over {result.n_samples})", transform=ax.transAxes, fontsize=7, va="bottom")
    if result.min_bits_within_tol is not None:
        ax.axvline(result.min_bits_within_tol, color="C1", ls="--", lw=1,
                   label=f"within tol. from {result.min_bits_within_tol} bits")
    ax.set_xlabel("weight mantissa bits")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{result.target_name}: {result.n_samples} samples, T = {result.steps}")
    ax.set_xticks(bits)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)

    widths = np.diff(HIST_EDGES)
    for l in range(L):
        ax = axes[1 + l]
        for name, color in (("fixed", "C0"), ("fixed_binned", "C3")):
            if name not in result.histograms:
                continue
            counts = result.histograms[name][l]
            total = max(int(counts.sum()), 1)
            ax.bar(HIST_EDGES[:-1], counts / total, width=widths, align="edge", color=color,
                   alpha=0.6 if name == "fixed" else 0.4, label=name)
        st = result.state_errors["fixed"][l]
        for k, ls in (("p50", ":"), ("p99", "--")):
            if math.isfinite(st[k]) and st[k] > 0:
                ax.axvline(max(st[k], HIST_EDGES[0]), color="k", ls=ls, lw=1, label=f"{k} {st[k]:.2g}")
        ax.set_xscale("log")
        ax.set_xlim(HIST_EDGES[0], HIST_EDGES[-1])
        ax.set_xlabel(f"|float - fixed| state (first bin: <= {HIST_EDGES[0]:g})")
        ax.set_ylabel("fraction of values")
        ax.set_title(f"layer {l + 1} ({result.arch[l + 1]} neurons), max {st['max']:.3g}")
        ax.legend(fontsize=7)
    with atomic_path(path, suffix=f".{fmt}.tmp") as tmp:
        fig.savefig(tmp, format=fmt, dpi=110)
    logger.debug("wrote %s", path)
    return path


def format_table(result: CompareResult) -> str:
    """A readable plain-text summary (what ``neuro-hts compare`` prints)."""
    lines = []
    pct = lambda v: "n/a" if v is None or not math.isfinite(v) else f"{v * 100:.2f} %"
    lines.append(f"target {result.target_name}, arch {'-'.join(map(str, result.arch))}, T = {result.steps}, "
                 f"{result.n_samples} test samples" + (f" of {result.dataset}" if result.dataset else ""))
    lines.append(f"{'variant':<28} {'accuracy':>9} {'agree w/ float':>14}")
    lines.append(f"{'float (float64)':<28} {pct(result.accuracy['float']):>9} {'':>14}")
    lines.append(f"{f'fixed ({result.weight_bits}-bit weights)':<28} {pct(result.accuracy['fixed']):>9} "
                 f"{pct(result.agreement['float~fixed']):>14}")
    if "fixed_binned" in result.accuracy:
        lines.append(f"{f'fixed, {result.profile_levels} decay levels/core':<28} {pct(result.accuracy['fixed_binned']):>9} "
                     f"{pct(result.agreement['float~fixed_binned']):>14}")
        cost = (result.accuracy["fixed"] - result.accuracy["fixed_binned"]) * 100
        dts = ", ".join(f"{v:.3g}" for v in (result.max_dt_change or []))
        lines.append(f"  binning cost: {cost:+.2f} points accuracy, agreement with unbinned "
                     f"{pct(result.agreement['fixed~fixed_binned'])}, max |d dt| per layer: {dts}")
    if "lava" in result.accuracy:
        lines.append(f"{f'Lava (first {result.lava_samples})':<28} {pct(result.accuracy['lava']):>9} "
                     f"{pct(result.agreement['float~lava']):>14}")
        lines.append(f"  on the same {result.lava_samples} samples: float {pct(result.accuracy['float@lava_samples'])}, "
                     f"fixed {pct(result.accuracy['fixed@lava_samples'])}")
        lines.append(f"  Lava vs Numba fixed: agreement {pct(result.agreement['fixed~lava'])}, "
                     f"top states bit-exact on {pct(result.lava_top_state_match)} of samples, "
                     f"{result.lava_steps_per_second:.3g} steps/s")
    lines.append("")
    lines.append("|float - fixed| state error per layer (units of 1.0)")
    lines.append(f"{'layer':>5} {'p50':>10} {'p90':>10} {'p99':>10} {'max':>10} {'mean':>10}")
    for l, st in enumerate(result.state_errors["fixed"], start=1):
        lines.append(f"{l:>5} " + " ".join(f"{st[k]:>10.3g}" for k in ("p50", "p90", "p99", "max", "mean")))
    lines.append("")
    lines.append("weight-bits sweep (fixed point)")
    lines.append(f"{'bits':>5} {'accuracy':>9} {'drop (pts)':>10} {'agree':>9}")
    fl = result.accuracy["float"]
    for b in sorted(result.sweep):
        acc = result.sweep[b]
        drop = "n/a" if not math.isfinite(acc) else f"{(fl - acc) * 100:+.2f}"
        note = f"  ({result.sweep_errors[b]})" if b in result.sweep_errors else ""
        lines.append(f"{b:>5} {pct(acc):>9} {drop:>10} {pct(result.sweep_agreement[b]):>9}{note}")
    if result.min_bits_within_tol is None:
        lines.append(f"no swept width is within {result.tolerance:g} points of float")
    else:
        lines.append(f"within {result.tolerance:g} points of float from {result.min_bits_within_tol} bits up")
    if len(result.exponent_rules) > 1:
        lines.append("")
        lines.append("exponent rules: accuracy, and % of layer-1 weights at zero / saturated")
        lines.append(f"{'bits':>5} " + " ".join(f"{r:>24}" for r in result.exponent_rules))
        for b in sorted(result.sweep):
            cells = []
            for r in result.exponent_rules:
                z, sat = result.rule_zero_frac[r].get(b), result.rule_saturated_frac[r].get(b)
                frac = "" if z is None else f" {z[0] * 100:4.1f}/{sat[0] * 100:4.1f}"
                cells.append(f"{pct(result.rule_sweep[r][b]) + frac:>24}")
            lines.append(f"{b:>5} " + " ".join(cells))
    return "\n".join(lines)
