"""Distributions of the per-neuron time steps (docs/MODEL.md, "Heterogeneous time steps").

Moment matching is checked on 200k unclipped samples from seeded generators. The
tolerances are statistical: the standard error of the mean is sigma / sqrt(n) = 2.2e-3
sigma, so |mean - mu| < 0.015 sigma is ~7 standard errors; the standard error of the
sample std depends on the law's kurtosis and is quoted per law.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neuro_hts import distributions
from neuro_hts.config import DtConfig
from neuro_hts.distributions import (
    DT_MAX,
    DT_MIN,
    HEAVY_TAILED,
    available_distributions,
    register_distribution,
    sample_dt,
    sample_unclipped,
    validate_dt_params,
)
from neuro_hts.errors import ConfigError

N = 200_000
PAIRS = [(0.3, 0.1), (0.1, 0.02), (0.5, 0.2), (0.05, 0.025)]
MOMENT_LAWS = ("constant", "uniform", "normal", "lognormal", "gamma", "pareto", "student_t")

# Relative tolerance on the sample std. Measured spread (sd over 20 seeds) of
# std/sigma - 1: uniform 1.0e-3, normal 1.2e-3, lognormal <= 2.4e-3, gamma <= 1.9e-3,
# Student t (5 dof, kurtosis 9) 3.6e-3, Pareto (shape a = 3.2 .. 4.2, infinite or barely
# finite 4th moment, so the sample std converges slowly) up to 1.7e-2.
STD_RTOL = {"uniform": 0.01, "normal": 0.01, "lognormal": 0.02, "gamma": 0.02, "student_t": 0.025, "pareto": 0.1}


@pytest.fixture
def private_registry(monkeypatch):
    """A copy of the registry, so that registrations made by a test do not leak."""
    monkeypatch.setattr(distributions, "_REGISTRY", distributions._REGISTRY.copy())


@pytest.mark.parametrize("mu,sigma", PAIRS)
@pytest.mark.parametrize("dist", MOMENT_LAWS)
def test_unclipped_mean_and_std_match_parameters(dist, mu, sigma):
    x = sample_unclipped(dist, N, np.random.default_rng(12345), mu, sigma)
    assert x.shape == (N,) and x.dtype == np.float64
    if dist == "constant":
        assert np.all(x == mu)
        return
    assert abs(x.mean() - mu) < 0.015 * sigma
    assert abs(x.std() / sigma - 1.0) < STD_RTOL[dist]


@pytest.mark.parametrize("mu,sigma", PAIRS)
def test_cauchy_median_and_iqr(mu, sigma):
    x = sample_unclipped("cauchy", N, np.random.default_rng(7), mu, sigma)
    q25, q50, q75 = np.percentile(x, [25, 50, 75])
    # measured: median off by 6e-3 sigma, IQR / (2 sigma) = 1.000
    assert abs(q50 - mu) < 0.03 * sigma
    assert abs((q75 - q25) / (2.0 * sigma) - 1.0) < 0.03


@pytest.mark.parametrize("mu,sigma", PAIRS)
def test_levy_median(mu, sigma):
    x = sample_unclipped("levy", N, np.random.default_rng(7), mu, sigma)
    # measured: median off by 9.5e-3 sigma; the whole mass lies above the location
    assert abs(np.median(x) - mu) < 0.03 * sigma
    assert x.min() >= mu - sigma / 0.6744897501960817**2


def test_lognormal_and_gamma_are_positive_and_skewed():
    for dist in ("lognormal", "gamma", "pareto"):
        x = sample_unclipped(dist, N, np.random.default_rng(3), 0.3, 0.1)
        assert x.min() > 0
        assert np.median(x) < x.mean()  # right-skewed


# ----------------------------------------------------------------------- clipping
@pytest.mark.parametrize("dist", sorted(set(available_distributions())))
def test_sample_dt_lies_in_range(dist):
    dt = sample_dt(dist, 20_000, np.random.default_rng(0), 0.3, 0.1, DT_MIN, DT_MAX)
    assert dt.shape == (20_000,)
    assert np.all(np.isfinite(dt))
    assert dt.min() >= DT_MIN and dt.max() <= DT_MAX


@pytest.mark.parametrize("dist", HEAVY_TAILED)
def test_heavy_tailed_laws_pile_up_at_dt_max(dist):
    """The paper's Figure 1: mu = 0.3, sigma = 0.1 clipped to [1e-3, 0.5]."""
    dt = sample_dt(dist, 20_000, np.random.default_rng(0), 0.3, 0.1, 1e-3, 0.5)
    # measured fractions at 0.5: cauchy 0.14, levy 0.37, pareto 0.039, student_t 0.023
    assert np.mean(dt == 0.5) > 0.01


def test_cauchy_and_levy_pile_up_more_than_normal():
    frac = {d: np.mean(sample_dt(d, 20_000, np.random.default_rng(0)) == DT_MAX) for d in ("normal", "cauchy", "levy")}
    # measured: normal 0.022 (two sigma above the mean), cauchy 0.14, levy 0.37
    assert frac["cauchy"] > 3 * frac["normal"]
    assert frac["levy"] > 3 * frac["normal"]


def test_uniform_and_constant_never_clip_at_defaults():
    # U(0.3 -+ 0.173) stays inside [1e-3, 0.5]
    assert not np.any(sample_dt("uniform", 20_000, np.random.default_rng(0)) == DT_MAX)
    assert np.all(sample_dt("constant", 100, np.random.default_rng(0)) == 0.3)


def test_constant_mean_outside_range_is_clipped():
    assert np.all(sample_dt("constant", 5, np.random.default_rng(0), 0.9, 0.0, 1e-3, 0.5) == 0.5)


@pytest.mark.parametrize("dist", MOMENT_LAWS)
@pytest.mark.parametrize("sigma", [0.0, 1e-200, 1e-12])
def test_negligible_spread_gives_the_mean(dist, sigma):
    """sigma -> 0 degenerates to constant mu (sigma^2 underflowing used to divide by zero)."""
    x = sample_unclipped(dist, 1000, np.random.default_rng(0), 0.3, sigma)
    assert np.allclose(x, 0.3, rtol=1e-9, atol=0.0)


# ---------------------------------------------------------------- reproducibility
@pytest.mark.parametrize("dist", sorted(set(available_distributions()) - {"constant"}))
def test_seeded_generator_reproduces_and_seeds_differ(dist):
    a = sample_dt(dist, 256, np.random.default_rng(42))
    b = sample_dt(dist, 256, np.random.default_rng(42))
    c = sample_dt(dist, 256, np.random.default_rng(43))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_sampling_does_not_touch_global_numpy_state():
    np.random.seed(0)
    before = np.random.get_state()[1].copy()
    sample_dt("lognormal", 100, np.random.default_rng(1))
    assert np.array_equal(np.random.get_state()[1], before)


# ------------------------------------------------------------------- registration
def test_register_user_distribution(private_registry):
    def triangular(rng, mu, sigma, size):
        half = math.sqrt(6.0) * sigma  # symmetric triangular law: std = half-width / sqrt(6)
        return rng.triangular(mu - half, mu, mu + half, size)

    register_distribution("triangular", triangular)
    assert "triangular" in available_distributions()
    x = sample_unclipped("triangular", N, np.random.default_rng(0), 0.3, 0.05)
    assert abs(x.mean() - 0.3) < 0.015 * 0.05
    assert abs(x.std() / 0.05 - 1.0) < 0.01
    dt = sample_dt("triangular", 1000, np.random.default_rng(0), 0.3, 0.1, 0.2, 0.4)
    assert dt.min() >= 0.2 and dt.max() <= 0.4 and np.any(dt == 0.4)
    # a config may now name it
    assert DtConfig(dist="triangular").dist == "triangular"

    with pytest.raises(ConfigError, match="already registered"):
        register_distribution("triangular", triangular)
    with pytest.raises(ConfigError, match="already registered"):
        register_distribution("lognormal", triangular)
    register_distribution("triangular", lambda rng, mu, sigma, size: np.full(size, mu), replace=True)
    assert np.all(sample_unclipped("triangular", 4, np.random.default_rng(0), 0.25, 0.1) == 0.25)


def test_register_rejects_bad_names_and_samplers(private_registry):
    with pytest.raises(ConfigError):
        register_distribution("not a name", lambda rng, mu, sigma, size: np.zeros(size))
    with pytest.raises(ConfigError):
        register_distribution("notcallable", 3.0)


def test_sampler_with_wrong_shape_is_refused(private_registry):
    register_distribution("short", lambda rng, mu, sigma, size: np.zeros(size - 1))
    with pytest.raises(ConfigError, match="shape"):
        sample_dt("short", 10, np.random.default_rng(0))


def test_unknown_distribution_is_not_registered_by_a_failed_call():
    with pytest.raises(ConfigError, match="unknown dt distribution"):
        sample_dt("weibull", 10, np.random.default_rng(0))
    assert "weibull" not in available_distributions()


# ------------------------------------------------------------------ invalid input
@pytest.mark.parametrize(
    "dist,mu,sigma,dt_min,dt_max,message",
    [
        ("weibull", 0.3, 0.1, 1e-3, 0.5, "unknown dt distribution"),
        ("normal", 0.3, -0.1, 1e-3, 0.5, "std"),
        ("normal", 0.3, 0.1, 0.0, 0.5, "dt range"),
        ("normal", 0.3, 0.1, -1e-3, 0.5, "dt range"),
        ("normal", 0.3, 0.1, 1e-3, 1.5, "dt range"),
        ("normal", 0.3, 0.1, 0.6, 0.5, "dt range"),
        ("normal", float("nan"), 0.1, 1e-3, 0.5, "mean"),
        ("normal", 0.3, float("inf"), 1e-3, 0.5, "std"),
        ("normal", 0.3, 0.1, float("nan"), 0.5, "dt_min"),
        ("lognormal", 0.0, 0.1, 1e-3, 0.5, "mean"),
        ("gamma", -0.3, 0.1, 1e-3, 0.5, "mean"),
    ],
)
def test_invalid_parameters_raise_config_error(dist, mu, sigma, dt_min, dt_max, message):
    with pytest.raises(ConfigError, match=message):
        validate_dt_params(dist, mu, sigma, dt_min, dt_max)
    with pytest.raises(ConfigError, match=message):
        sample_dt(dist, 10, np.random.default_rng(0), mu, sigma, dt_min, dt_max)


def test_invalid_parameters_in_dt_config():
    with pytest.raises(ConfigError):
        DtConfig(dist="lognormal", mean=float("nan"))
    with pytest.raises(ConfigError):
        DtConfig(dt_min=0.0)
    with pytest.raises(ConfigError):
        DtConfig(dist="nope")


# --------------------------------------------------------------- property test
@settings(max_examples=300, deadline=None)
@given(
    dist=st.sampled_from(sorted(set(available_distributions()))),
    mu=st.floats(min_value=1e-6, max_value=1e3),
    sigma=st.floats(min_value=0.0, max_value=1e3),
    bounds=st.tuples(st.floats(min_value=1e-12, max_value=1.0), st.floats(min_value=1e-12, max_value=1.0)),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_sample_dt_always_within_bounds(dist, mu, sigma, bounds, seed):
    dt_min, dt_max = min(bounds), max(bounds)
    dt = sample_dt(dist, 64, np.random.default_rng(seed), mu, sigma, dt_min, dt_max)
    assert dt.shape == (64,)
    assert np.all((dt >= dt_min) & (dt <= dt_max))


def test_lognormal_min_is_constant_at_the_slowest_dt_lognormal_draws_for_the_same_seed():
    from neuro_hts.config import Config
    from neuro_hts.network import init_network

    nets = {d: init_network(Config.from_dict({"model": {"arch": [20, 300, 200, 10]},
                                             "dt": {"dist": d, "mean": 0.3, "std": 0.15, "layers": "all"},
                                             "train": {"seed": 4}}))
            for d in ("lognormal", "lognormal_min")}
    for het, hom in zip(nets["lognormal"].dts, nets["lognormal_min"].dts):  # every layer, the stream stays in step
        assert np.all(hom == het.min()) and het.max() > het.min()
    assert nets["lognormal_min"].dts[0][0] < 0.3 / 2  # well below the mean: the slow-neuron baseline
