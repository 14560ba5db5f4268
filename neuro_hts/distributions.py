"""Distributions of heterogeneous per-neuron time steps dt_i (docs/MODEL.md, "Heterogeneous time steps").

Every law is parameterised by its mean ``mu`` and standard deviation ``sigma`` (moment
matching); laws without finite moments (Cauchy, Levy) take ``mu`` as location/median and
``sigma`` as scale, as stated per law. Samples are then clipped to ``[dt_min, dt_max]``
(paper defaults: mu=0.3, sigma=0.1, [1e-3, 0.5]).

A sampler is a function ``sampler(rng, mu, sigma, size) -> ndarray`` returning unclipped
samples; users add their own with :func:`register_distribution`.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from .errors import ConfigError
from .registry import Registry

__all__ = [
    "DT_MEAN",
    "DT_STD",
    "DT_MIN",
    "DT_MAX",
    "Sampler",
    "register_distribution",
    "available_distributions",
    "sample_unclipped",
    "sample_dt",
    "validate_dt_params",
    "HEAVY_TAILED",
]

DT_MEAN = 0.3
DT_STD = 0.1
DT_MIN = 1e-3
DT_MAX = 0.5

Sampler = Callable[[np.random.Generator, float, float, int], np.ndarray]

_REGISTRY: Registry = Registry("dt law")
#: Built-in laws whose clipped histograms show the pile-up at dt_max (paper's Figure 1).
HEAVY_TAILED = ("cauchy", "levy", "pareto", "student_t")


def register_distribution(name: str, sampler: Sampler, *, replace: bool = False) -> None:
    """Register ``sampler(rng, mu, sigma, size)`` under ``name``.

    Raises ConfigError if the name is taken (pass ``replace=True`` to override).
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"distribution name must be an identifier, got {name!r}")
    if not callable(sampler):
        raise ConfigError(f"sampler for {name!r} is not callable")
    if name in _REGISTRY and not replace:
        raise ConfigError(f"distribution {name!r} is already registered (pass replace=True)")
    _REGISTRY.register(name, sampler, replace=replace)


def available_distributions() -> tuple[str, ...]:
    return _REGISTRY.names()


def _constant(rng, mu, sigma, size):
    """dt_i = mu (homogeneous baseline; sigma is ignored)."""
    return np.full(size, mu, dtype=np.float64)


def _uniform(rng, mu, sigma, size):
    """U(mu - sqrt(3) sigma, mu + sqrt(3) sigma)."""
    half = math.sqrt(3.0) * sigma
    return rng.uniform(mu - half, mu + half, size)


def _normal(rng, mu, sigma, size):
    """N(mu, sigma^2)."""
    return rng.normal(mu, sigma, size)


#: Below this coefficient of variation sigma/mu a law is constant at float64 precision
#: (its spread is under an ulp of mu); the shape parameters of gamma and Pareto would
#: overflow there, so those samplers return mu.
_NEGLIGIBLE_CV = 1e-17


def _lognormal(rng, mu, sigma, size):
    """exp(N(m, s2)) with s2 = ln(1 + sigma^2/mu^2), m = ln(mu) - s2/2."""
    cv = sigma / mu
    s2 = math.log1p(cv * cv)
    m = math.log(mu) - s2 / 2.0
    return np.exp(rng.normal(m, math.sqrt(s2), size))


def _lognormal_min(rng, mu, sigma, size):
    """dt_i = min_j x_j for x ~ :func:`_lognormal` (mu, sigma) of the layer's size: homogeneous,
    at the slowest dt that ``lognormal`` draws for the same layer and seed (the same random
    stream, consumed the same way; clipping commutes with the minimum). The baseline of
    the equal-slowest comparison: a constant network as slow as the heterogeneous one's
    slowest neuron, which takes the slow-neuron effect out of a constant-vs-lognormal
    difference."""
    return np.full(size, _lognormal(rng, mu, sigma, size).min())


def _gamma(rng, mu, sigma, size):
    """Gamma(shape k = mu^2/sigma^2, scale theta = sigma^2/mu)."""
    cv = sigma / mu
    if cv < _NEGLIGIBLE_CV:
        return np.full(size, mu, dtype=np.float64)
    return rng.gamma(1.0 / (cv * cv), sigma * cv, size)


def _cauchy(rng, mu, sigma, size):
    """Cauchy(location mu, scale sigma): no mean or variance; median mu, IQR 2 sigma."""
    return mu + sigma * rng.standard_cauchy(size)


def _levy(rng, mu, sigma, size):
    """Levy (stable, alpha=1/2) with scale c = sigma, shifted so that its median is mu.

    A Levy(loc, c) variable is loc + c / Z^2 with Z ~ N(0, 1); its median is
    loc + c / (Phi^-1(3/4))^2 ~= loc + 2.198 c. No finite mean or variance.
    """
    z = rng.standard_normal(size)
    median_offset = 1.0 / 0.6744897501960817**2
    with np.errstate(divide="ignore"):
        return (mu - sigma * median_offset) + sigma / z**2


def _pareto(rng, mu, sigma, size):
    """Pareto type I with shape a and minimum x_m matching mean mu and std sigma.

    a = 1 + sqrt(1 + mu^2/sigma^2) (> 2, so the variance is finite),
    x_m = mu (a - 1) / a. Power-law right tail P(X > x) = (x_m / x)^a.
    """
    cv = sigma / mu
    if cv < _NEGLIGIBLE_CV:
        return np.full(size, mu, dtype=np.float64)
    a = 1.0 + math.sqrt(1.0 + 1.0 / (cv * cv))
    x_m = mu * (a - 1.0) / a
    return x_m * (1.0 + rng.pareto(a, size))


_STUDENT_DF = 5.0


def _student_t(rng, mu, sigma, size):
    """Student's t with 5 degrees of freedom, scaled to std sigma and shifted to mean mu."""
    scale = sigma * math.sqrt((_STUDENT_DF - 2.0) / _STUDENT_DF)
    return mu + scale * rng.standard_t(_STUDENT_DF, size)


for _name, _fn in [
    ("constant", _constant),
    ("uniform", _uniform),
    ("normal", _normal),
    ("lognormal", _lognormal),
    ("lognormal_min", _lognormal_min),
    ("gamma", _gamma),
    ("cauchy", _cauchy),
    ("levy", _levy),
    ("pareto", _pareto),
    ("student_t", _student_t),
]:
    register_distribution(_name, _fn)

#: the laws shipped with neuro-hts (their out-of-range draws are clipped, as in the paper);
#: a user-registered law must return positive finite values
BUILTIN = frozenset(_REGISTRY.names())
#: the laws that give every neuron of a layer the same dt on purpose
HOMOGENEOUS = frozenset({"constant", "lognormal_min"})


def validate_dt_params(dist: str, mu: float, sigma: float, dt_min: float, dt_max: float) -> None:
    """Raise ConfigError naming the first invalid parameter."""
    if dist not in _REGISTRY:
        raise ConfigError(f"unknown dt distribution {dist!r}; choose one of {', '.join(_REGISTRY)}")
    for label, v in (("dt mean", mu), ("dt std", sigma), ("dt_min", dt_min), ("dt_max", dt_max)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise ConfigError(f"{label} must be a finite number, got {v!r}")
    if sigma < 0:
        raise ConfigError(f"dt std must be >= 0, got {sigma}")
    if not (0.0 < dt_min <= dt_max <= 1.0):
        raise ConfigError(f"dt range must satisfy 0 < dt_min <= dt_max <= 1, got [{dt_min}, {dt_max}]")
    if mu <= 0:
        raise ConfigError(f"dt mean must be > 0, got {mu}")


def sample_unclipped(dist: str, n: int, rng: np.random.Generator, mu: float = DT_MEAN, sigma: float = DT_STD) -> np.ndarray:
    """Draw ``n`` unclipped samples of law ``dist`` (float64)."""
    if dist not in _REGISTRY:
        raise ConfigError(f"unknown dt distribution {dist!r}; choose one of {', '.join(_REGISTRY)}")
    out = np.asarray(_REGISTRY.get(dist)(rng, float(mu), float(sigma), int(n)), dtype=np.float64)
    if out.shape != (n,):
        raise ConfigError(f"sampler {dist!r} returned shape {out.shape}, expected ({n},)")
    return out


def sample_dt(
    dist: str,
    n: int,
    rng: np.random.Generator,
    mu: float = DT_MEAN,
    sigma: float = DT_STD,
    dt_min: float = DT_MIN,
    dt_max: float = DT_MAX,
) -> np.ndarray:
    """Per-neuron time steps: dt_i ~ D(mu, sigma), then dt_i = clip(dt_i, dt_min, dt_max).

    Non-finite draws (e.g. a Levy sample at Z = 0) are clipped to dt_max.
    """
    validate_dt_params(dist, mu, sigma, dt_min, dt_max)
    raw = sample_unclipped(dist, n, rng, mu, sigma)
    if dist not in BUILTIN:
        bad = ~np.isfinite(raw) | (raw <= 0)
        if bad.any():
            raise ConfigError(f"dt law {dist!r} returned {int(bad.sum())} of {n} values that are NaN, infinite or <= 0 "
                              f"(first: {raw[np.flatnonzero(bad)[0]]!r}); a sampler must return positive finite "
                              f"time steps")
    raw = np.where(np.isnan(raw), dt_max, raw)
    return np.clip(raw, dt_min, dt_max)


def clipped_fraction(dist: str, n: int, rng: np.random.Generator, mu: float, sigma: float, dt_min: float,
                     dt_max: float) -> float:
    """Fraction of ``n`` unclipped draws of ``dist`` that fall outside ``[dt_min, dt_max]``."""
    raw = sample_unclipped(dist, n, rng, mu, sigma)
    with np.errstate(invalid="ignore"):
        return float(np.mean(~((raw >= dt_min) & (raw <= dt_max))))
