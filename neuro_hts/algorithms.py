"""Learning algorithms of the EP family as sequences of phases (docs/MODEL.md, docs/FAMILY.md 1-2).

An algorithm says WHAT to relax and WHICH two equilibria to contrast; an engine
(:mod:`neuro_hts.engines`) says HOW (float or the target's integer arithmetic). One
phase runner, :func:`run_phases`, serves every engine, the BPTT tests and the tools.

A :class:`Phase` is one relaxation: ``steps`` synchronous steps from zeros or from the
final states of an earlier phase, with an optional nudge ``beta``, an output ``clamp``,
a feedback gain ``gamma`` and an ``anchor`` phase that every layer is pulled toward.
A :class:`Contrast` names the two phases ``(a, b)`` whose difference is the update and
the divisor ``beta_a - beta_b``::

    g_theta = -( dPhi/dtheta(a) - dPhi/dtheta(b) ) / (beta_a - beta_b)     (descent direction)

Registered algorithms (:data:`ALGORITHMS`):

* ``ep`` -- Equilibrium Propagation: free phase (T1 steps from zeros), nudged phase(s)
  (T2 steps from the free states): one-sided ``(s^beta, s^0)``, symmetric
  ``(s^+beta, s^-beta)`` (divisor 2 beta) or random-sign ``(s^{+-beta}, s^0)``. It
  estimates the gradient of the cost (exact in the small-beta limit at a settled free
  phase: ``has_gradient = True``).
* ``chl`` -- Contrastive Hebbian Learning (Movellan 1990; docs/FAMILY.md section 1): free
  phase with feedback gain gamma, clamped phase from zeros (or from the free states)
  that runs ``clamp_delay`` steps as free and then holds the output at the one-hot
  target; the contrast has no 1/beta (it is the hard-clamp corner of EP, written here
  as ``beta_a - beta_b = 1``). Not an exact gradient.

Adjusted adaptation (docs/FAMILY.md section 2) is a modifier of either, :class:`Adapted`:
after the nudged / clamped phase(s), ``K`` more steps with every layer pulled toward
its own free-phase state, ``s <- (1 - c) step(s) + c s^free``
(:func:`neuro_hts.dynamics.adapt_mix`), and the update taken from the adapted states.
With CHL the clamped output is not stepped, only mixed (``clamp='hold'``); with EP the
nudge stays on. ``K = 0`` returns the inner algorithm itself (bit-identical runs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from .errors import ConfigError
from .registry import Registry

__all__ = [
    "CLAMPS",
    "Phase",
    "Contrast",
    "Algorithm",
    "EP",
    "CHL",
    "Adapted",
    "Plan",
    "ALGORITHMS",
    "NUDGINGS",
    "make_algorithm",
    "run_phases",
]

#: what a phase does to the output (top relaxed) layer: stepped as usual, held at the
#: one-hot target (CHL's clamp), or held at its current value (not stepped)
CLAMPS = ("none", "target", "hold")


@dataclass(frozen=True)
class Phase:
    """One relaxation of a learning step.

    Attributes
    ----------
    name : str
        Unique within the algorithm; later phases refer to it.
    steps : int
        Synchronous steps (>= 0; at most this many when ``tol`` is set).
    start : str
        ``"zeros"`` or the name of an earlier phase whose final states start this one.
    beta : float
        Nudge strength: adds ``-beta dC/ds`` to the output's drive (0: no nudge).
    clamp : str
        ``"none"``, ``"target"`` (output held at y, not integrated) or ``"hold"`` (output
        kept at its current value, not stepped).
    gamma : float
        Feedback gain multiplying every top-down term ``W_{l+1}^T s_{l+1}``.
    anchor : str or None
        Name of an earlier phase; with ``coe`` every layer is mixed toward its states
        after each step: ``s <- (1 - coe) step(s) + coe s^anchor``.
    coe : float
        Mixing coefficient c in [0, 1] (adjusted adaptation).
    tol : float or None
        Stop early once every sample's residual ``max |s_t - s_{t-1}|`` is <= tol.
    """

    name: str
    steps: int
    start: str = "zeros"
    beta: float = 0.0
    clamp: str = "none"
    gamma: float = 1.0
    anchor: str | None = None
    coe: float = 0.0
    tol: float | None = None

    def __post_init__(self):
        if isinstance(self.steps, bool) or not isinstance(self.steps, (int, np.integer)) or self.steps < 0:
            raise ConfigError(f"phase {self.name!r}: steps must be a non-negative integer, got {self.steps!r}")
        if self.clamp not in CLAMPS:
            raise ConfigError(f"phase {self.name!r}: clamp must be one of {', '.join(CLAMPS)}, got {self.clamp!r}")
        if not (0.0 <= self.coe <= 1.0):
            raise ConfigError(f"phase {self.name!r}: coe must lie in [0, 1], got {self.coe}")
        if self.anchor is None and self.coe != 0.0:
            raise ConfigError(f"phase {self.name!r}: coe {self.coe} needs an anchor phase")
        if not math.isfinite(self.beta) or not math.isfinite(self.gamma):
            raise ConfigError(f"phase {self.name!r}: beta and gamma must be finite")
        if self.tol is not None and not self.tol > 0:
            raise ConfigError(f"phase {self.name!r}: tol must be > 0, got {self.tol}")


@dataclass(frozen=True)
class Contrast:
    """The two phases of the update and their nudge strengths (divisor ``beta_a - beta_b``)."""

    a: str
    b: str
    beta_a: float
    beta_b: float

    def __post_init__(self):
        if self.beta_a == self.beta_b:
            raise ConfigError(f"contrast {self.a!r} vs {self.b!r}: beta_a == beta_b gives no estimate")


class Algorithm(Protocol):
    """A learning rule made of phases."""

    name: str
    #: whether the update estimates the exact gradient of the cost (checked against BPTT)
    has_gradient: bool

    def phases(self, rng: np.random.Generator | None = None) -> tuple[tuple[Phase, ...], Contrast]: ...

    def free_phase(self) -> Phase: ...

    def supports(self, net) -> list[str]: ...


#: EP nudging kinds
NUDGINGS = ("one-sided", "symmetric", "random-sign")


@dataclass(frozen=True)
class EP:
    """Equilibrium Propagation: free phase, then nudged phase(s) with +-beta."""

    t1: int = 30
    t2: int = 10
    beta: float = 0.1
    nudging: str = "one-sided"
    t1_tol: float | None = None
    name: str = field(default="ep", init=False)
    has_gradient: bool = field(default=True, init=False)

    def __post_init__(self):
        if self.nudging not in NUDGINGS:
            raise ConfigError(f"nudging must be one of {', '.join(NUDGINGS)}, got {self.nudging!r}")
        if not self.beta > 0:
            raise ConfigError(f"beta must be > 0, got {self.beta}")

    def free_phase(self) -> Phase:
        """The free phase (also the inference relaxation)."""
        return Phase("free", self.t1, tol=self.t1_tol)

    def phases(self, rng=None):
        free = self.free_phase()
        if self.nudging == "symmetric":
            plus = Phase("nudged+", self.t2, start="free", beta=self.beta)
            minus = Phase("nudged-", self.t2, start="free", beta=-self.beta)
            return (free, plus, minus), Contrast("nudged+", "nudged-", self.beta, -self.beta)
        beta = self.beta
        if self.nudging == "random-sign":
            if rng is None:
                raise ConfigError("random-sign nudging needs a random generator")
            beta = beta if rng.random() < 0.5 else -beta
        return (free, Phase("nudged", self.t2, start="free", beta=beta)), Contrast("nudged", "free", beta, 0.0)

    def supports(self, net) -> list[str]:
        return []


@dataclass(frozen=True)
class CHL:
    """Contrastive Hebbian Learning: free phase, then a phase with the output clamped to the target."""

    t1: int = 120
    t2: int = 120
    gamma: float = 1.0
    clamp_delay: int = 0
    start: str = "zeros"
    t1_tol: float | None = None
    name: str = field(default="chl", init=False)
    has_gradient: bool = field(default=False, init=False)

    def __post_init__(self):
        if self.start not in ("zeros", "free"):
            raise ConfigError(f"[chl] start must be 'zeros' or 'free', got {self.start!r}")
        if isinstance(self.clamp_delay, bool) or not isinstance(self.clamp_delay, int) or not 0 <= self.clamp_delay < self.t2:
            raise ConfigError(f"[chl] clamp_delay must be an integer in [0, t2 = {self.t2}), got {self.clamp_delay!r}")
        if not (math.isfinite(self.gamma) and self.gamma >= 0):
            raise ConfigError(f"[chl] gamma must be a finite number >= 0, got {self.gamma}")

    def free_phase(self) -> Phase:
        """The free phase (also the inference relaxation), with the feedback gain gamma."""
        return Phase("free", self.t1, gamma=self.gamma, tol=self.t1_tol)

    def phases(self, rng=None):
        free = self.free_phase()
        start = "zeros" if self.start == "zeros" else "free"
        clamped = Phase("clamped", self.t2 - self.clamp_delay, start="delay", clamp="target", gamma=self.gamma)
        delay = Phase("delay", self.clamp_delay, start=start, gamma=self.gamma)
        return (free, delay, clamped), Contrast("clamped", "free", 1.0, 0.0)

    def supports(self, net) -> list[str]:
        if getattr(net, "output", "mse") != "mse":
            return ["CHL clamps the output layer to the target: it needs output = 'mse' (a relaxed output layer)"]
        return []


@dataclass(frozen=True)
class Adapted:
    """Adjusted adaptation on top of ``inner``: K steps pulled toward the free state, update from them."""

    inner: EP | CHL
    steps: int = 20
    coe: float = 0.1
    has_gradient: bool = field(default=False, init=False)

    def __post_init__(self):
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"[adapt] steps must be a positive integer here, got {self.steps!r}")
        if not 0.0 <= self.coe <= 1.0:
            raise ConfigError(f"[adapt] coe must lie in [0, 1], got {self.coe}")

    @property
    def name(self) -> str:
        return f"{self.inner.name}+adapt"

    def free_phase(self) -> Phase:
        return self.inner.free_phase()

    def phases(self, rng=None):
        phases, contrast = self.inner.phases(rng)
        by_name = {p.name: p for p in phases}
        anchor = "free"
        new = list(phases)
        names = {}
        for side in (contrast.a, contrast.b):
            if side == anchor:
                names[side] = side
                continue
            p = by_name[side]
            clamp = "hold" if p.clamp != "none" else "none"
            ad = Phase(f"{side}:adapted", self.steps, start=side, beta=p.beta, clamp=clamp, gamma=p.gamma,
                       anchor=anchor, coe=self.coe)
            new.append(ad)
            names[side] = ad.name
        return tuple(new), Contrast(names[contrast.a], names[contrast.b], contrast.beta_a, contrast.beta_b)

    def supports(self, net) -> list[str]:
        return self.inner.supports(net)


@dataclass(frozen=True)
class Plan:
    """The phases and contrast of ONE batch, fixed in advance (e.g. a random sign drawn once),
    so that two engines can run exactly the same phases; usable wherever an algorithm is."""

    steps: tuple[Phase, ...]
    contrast: Contrast
    name: str = "plan"
    has_gradient: bool = False

    @classmethod
    def of(cls, algorithm, rng=None) -> "Plan":
        phases, contrast = algorithm.phases(rng)
        return cls(tuple(phases), contrast, algorithm.name, algorithm.has_gradient)

    def phases(self, rng=None):
        return self.steps, self.contrast

    def free_phase(self) -> Phase:
        return next(p for p in self.steps if p.name == "free")

    def supports(self, net) -> list[str]:
        return []


def _make_ep(config) -> EP:
    tc = config.train
    return EP(t1=tc.t1, t2=tc.t2, beta=tc.beta, nudging=tc.nudging, t1_tol=tc.t1_tol)


def _make_chl(config) -> CHL:
    tc, cc = config.train, config.chl
    return CHL(t1=tc.t1, t2=tc.t2, gamma=cc.gamma, clamp_delay=cc.clamp_delay, start=cc.start, t1_tol=tc.t1_tol)


#: algorithm name -> factory(config) -> Algorithm
ALGORITHMS: Registry[Callable] = Registry("algorithm", describe=lambda f: (f.__doc__ or "").strip().splitlines()[0])
ALGORITHMS.register("ep", _make_ep)
ALGORITHMS.register("chl", _make_chl)
_make_ep.__doc__ = EP.__doc__
_make_chl.__doc__ = CHL.__doc__


def make_algorithm(config):
    """The algorithm of a :class:`~neuro_hts.config.Config`: ``train.algorithm``, adapted if ``adapt.steps > 0``."""
    algo = ALGORITHMS.get(config.train.algorithm)(config)
    if config.adapt.steps > 0:
        algo = Adapted(algo, config.adapt.steps, config.adapt.coe)
    return algo


def run_phases(relax, algorithm, rng=None):
    """Run an algorithm's phases in order; returns ``(results by phase name, contrast)``.

    ``relax(phase, start_states, anchor_states) -> RelaxResult`` runs one phase on the
    current batch (``start_states`` None means zeros). The one phase runner of the
    package: engines, tools and tests all go through it.
    """
    phases, contrast = algorithm.phases(rng)
    done = {}
    for ph in phases:
        if ph.name in done:
            raise ConfigError(f"phase name {ph.name!r} is used twice")
        start = None if ph.start == "zeros" else done[ph.start].states
        anchor = done[ph.anchor].states if ph.anchor is not None else None
        done[ph.name] = relax(ph, start, anchor)
    return done, contrast
