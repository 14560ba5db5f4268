"""The block schedule of a learning step in Lava (no Lava import): which phase each block step runs.

Used by :func:`neuro_hts.lava.learning.train_lava` to build, and by the Processes of
:mod:`neuro_hts.lava.proc.ep` to run, one EP / CHL / adapted learning step per sample.
"""

from __future__ import annotations

from neuro_hts.algorithms import CLAMPS
from neuro_hts.errors import ConfigError

__all__ = ["START_ZERO", "START_RESTORE", "UPDATE", "CLAMP_CODES", "lava_schedule"]

#: schedule step kinds: set the state to 0, restore a saved phase's state, one update step
START_ZERO, START_RESTORE, UPDATE = 0, 1, 2
#: output clamp codes (neuro_hts.algorithms.CLAMPS order: none, target, hold)
CLAMP_CODES = {name: i for i, name in enumerate(CLAMPS)}


def lava_schedule(phases, contrast, fraction=float) -> dict:
    """The block schedule of one learning step (:mod:`neuro_hts.lava.proc.ep`) from an algorithm's phases.

    Block steps in phase order: each phase gets a START step (state 0, or the saved final
    state of ``phase.start``) unless it starts from the phase just before it, then
    ``phase.steps`` UPDATE steps. The first phase must start from zeros (its start step is
    block step 0). ``fraction`` turns beta, gamma and coe into the arithmetic's numbers
    (``rint(v * 2**D)`` for fixed point). Returns per-step lists ``kind``, ``src``,
    ``beta``, ``clamp``, ``gamma``, ``anchor``, ``coe``, ``save`` and ``block``,
    ``n_slots``, ``free_end``, ``j_a``, ``j_b`` (the contrast's phase ends), ``beta_a``,
    ``beta_b``.
    """
    phases = list(phases)
    if not phases or phases[0].start != "zeros":
        raise ConfigError("the Lava schedule needs a first phase that starts from zeros")
    slots = {p.name: i for i, p in enumerate(phases)}
    cols = {k: [] for k in ("kind", "src", "beta", "clamp", "gamma", "anchor", "coe", "save")}
    ends = {}
    prev = None
    for p in phases:
        if p.tol is not None:
            raise ConfigError(f"phase {p.name!r}: the Lava schedule runs every phase for its full steps (no tol)")
        if p.clamp not in CLAMPS:
            raise ConfigError(f"phase {p.name!r}: unknown clamp {p.clamp!r}")
        for ref in (p.start, p.anchor):
            if ref not in (None, "zeros") and ref not in ends:
                raise ConfigError(f"phase {p.name!r} refers to {ref!r}, which has not run before it")
        if prev is None or p.start != prev:
            restore = p.start != "zeros"
            cols["kind"].append(START_RESTORE if restore else START_ZERO)
            cols["src"].append(slots[p.start] if restore else -1)
            for k, v in (("beta", 0), ("clamp", 0), ("gamma", fraction(1.0)), ("anchor", -1), ("coe", 0)):
                cols[k].append(v)
            cols["save"].append([])
        for _ in range(p.steps):
            cols["kind"].append(UPDATE)
            cols["src"].append(-1)
            cols["beta"].append(fraction(p.beta))
            cols["clamp"].append(CLAMP_CODES[p.clamp])
            cols["gamma"].append(fraction(p.gamma))
            cols["anchor"].append(slots[p.anchor] if p.anchor is not None else -1)
            cols["coe"].append(fraction(p.coe))
            cols["save"].append([])
        ends[p.name] = len(cols["kind"]) - 1
        prev = p.name
    used = {p.start for p in phases} | {p.anchor for p in phases}
    for name, j in ends.items():
        if name in used:
            cols["save"][j].append(slots[name])
    if "free" not in ends:
        raise ConfigError("the Lava schedule needs a phase named 'free'")
    if ends[contrast.a] == ends[contrast.b]:
        raise ConfigError("the contrast's two phases end at the same step")
    return dict(cols, block=len(cols["kind"]), n_slots=len(phases), free_end=ends["free"], j_a=ends[contrast.a],
                j_b=ends[contrast.b], beta_a=fraction(contrast.beta_a), beta_b=fraction(contrast.beta_b))
