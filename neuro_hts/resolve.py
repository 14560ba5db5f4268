"""More seeds where a law and the constant baseline are undecided (issue 16 item 4).

Kept apart from :mod:`neuro_hts.sweep` (which :mod:`neuro_hts.report` reads) so that the
sweep, the report and this loop import one another in one direction only.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .errors import ConfigError
from .sweep import Cell, load_manifest, run_sweep

__all__ = ["more_seeds", "resolve_seeds"]

logger = logging.getLogger(__name__)


def more_seeds(sweep_dir, *, max_seeds: int = 20, step: int = 5, baseline: str = "constant",
               alpha: float = 0.05) -> list[Cell]:
    """The cells one round of :func:`resolve_seeds` adds: for every law whose comparison with
    ``baseline`` is ``unresolved`` (:func:`neuro_hts.stats.law_comparisons`: the difference is
    below the seed spread, not significant after Holm, and a side has fewer than
    ``max_seeds`` seeds), ``step`` more seeds (the smallest unused ones, at most
    ``max_seeds`` in all) of that law and of the baseline at the same settings."""
    from .report import collect
    from .stats import law_comparisons

    if max_seeds < 2 or step < 1:
        raise ConfigError(f"max_seeds must be >= 2 and step >= 1, got {max_seeds} and {step}")
    sweep_dir = Path(sweep_dir)
    data = collect(sweep_dir)
    if baseline not in {g["dist"] for g in data["groups"]}:
        raise ConfigError(f"{sweep_dir}: no {baseline!r} cells to compare the laws with")
    rows = law_comparisons(data, baseline, alpha=alpha, max_seeds=max_seeds)
    targets = set()
    for r in rows:
        if r["verdict"] == "unresolved":
            targets |= {(r["dist"], r["settings"]), (baseline, r["settings"])}
    groups: dict[tuple, list[dict]] = {}
    for r in data["runs"]:  # every cell of the manifest, found or not
        groups.setdefault((r["dist"], r["settings"]), []).append(r)
    new = []
    for dist, settings in sorted(targets):
        have = groups[(dist, settings)]
        seeds = {int(c["seed"]) for c in have}
        want = min(len(seeds) + step, max_seeds)
        s = 0
        while len(seeds) < want:
            if s not in seeds:
                seeds.add(s)
                new.append(Cell(dist=dist, seed=s, settings=tuple(have[0]["raw_settings"].items())))
            s += 1
    return new


def resolve_seeds(sweep_dir, *, max_seeds: int = 20, step: int = 5, baseline: str = "constant", engine: str = "local",
                  workers: int = 1, scheduler: str | None = None, progress=None) -> list[list[dict]]:
    """Run rounds of :func:`more_seeds` until no comparison is ``unresolved`` (issue 16: seeds
    until the difference is resolved or ``max_seeds`` are reached); returns each round's
    cell results. Resumable like a sweep: the added cells are in the manifest."""
    base, _ = load_manifest(sweep_dir)
    rounds = []
    while True:
        cells = more_seeds(sweep_dir, max_seeds=max_seeds, step=step, baseline=baseline)
        if not cells:
            return rounds
        logger.info("resolve seeds, round %d: %d more cells", len(rounds) + 1, len(cells))
        rounds.append(run_sweep(base, cells, sweep_dir, engine=engine, workers=workers, scheduler=scheduler,
                                progress=progress))
