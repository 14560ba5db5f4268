"""More seeds where a law and the constant baseline are undecided (issue 16 item 4).

Kept apart from :mod:`neuro_hts.sweep` (which :mod:`neuro_hts.report` reads) so that the
sweep, the report and this loop import one another in one direction only.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .errors import ConfigError
from .sweep import Cell, load_manifest, run_sweep

__all__ = ["more_seeds", "parse_where", "resolve_seeds"]

logger = logging.getLogger(__name__)


def _matches(raw_settings: dict, where: dict[str, list[str]] | None) -> bool:
    """Whether a cell's settings take, for every key of ``where``, one of its values (numbers
    compared as numbers, so ``5e-3`` matches ``0.005``)."""
    if not where:
        return True
    for key, wanted in where.items():
        if key not in raw_settings:
            return False
        have = raw_settings[key]
        if isinstance(have, (list, tuple)) and len(have) == 1:  # one value for every layer, e.g. train.lr = [0.005]
            have = have[0]
        for w in wanted:
            try:
                if float(have) == float(w):
                    break
            except (TypeError, ValueError):
                if str(have) == w:
                    break
        else:
            return False
    return True


def parse_where(items: list[str] | None) -> dict[str, list[str]]:
    """``["train.lr=0.005,0.01", "train.nudging=one-sided"]`` -> ``{"train.lr": ["0.005", "0.01"], ...}``."""
    out: dict[str, list[str]] = {}
    for item in items or []:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise ConfigError(f"--where takes KEY=VALUE[,VALUE...], got {item!r}")
        out.setdefault(key.strip(), []).extend(v.strip() for v in values.split(",") if v.strip())
    return out


def more_seeds(sweep_dir, *, max_seeds: int = 20, step: int = 5, baseline: str = "constant",
               alpha: float = 0.05, where: dict[str, list[str]] | None = None) -> list[Cell]:
    """The cells one round of :func:`resolve_seeds` adds: for every law whose comparison with
    ``baseline`` is ``unresolved`` (:func:`neuro_hts.stats.law_comparisons`: the difference is
    below the seed spread, not significant after Holm, and a side has fewer than
    ``max_seeds`` seeds), ``step`` more seeds (the smallest unused ones, at most
    ``max_seeds`` in all) of that law and of the baseline at the same settings.

    The two sides of a comparison end a round with equal seed counts where they can: a side
    that is behind (a law added later, a round stopped part-way) catches up first.

    ``where`` keeps only the settings it matches (:func:`parse_where`), e.g. the rates where
    the laws differ most. The cells come setting by setting, each comparison's two sides
    together, so that a round stopped part-way leaves finished comparisons, not one law
    run ahead of the other everywhere."""
    from .report import collect
    from .stats import law_comparisons

    if max_seeds < 2 or step < 1:
        raise ConfigError(f"max_seeds must be >= 2 and step >= 1, got {max_seeds} and {step}")
    sweep_dir = Path(sweep_dir)
    data = collect(sweep_dir)
    if baseline not in {g["dist"] for g in data["groups"]}:
        raise ConfigError(f"{sweep_dir}: no {baseline!r} cells to compare the laws with")
    rows = law_comparisons(data, baseline, alpha=alpha, max_seeds=max_seeds)
    groups: dict[tuple, list[dict]] = {}
    for r in data["runs"]:  # every cell of the manifest, found or not
        groups.setdefault((r["dist"], r["settings"]), []).append(r)
    if where:
        known = {k for g in groups.values() for k in g[0]["raw_settings"]}
        unknown = sorted(set(where) - known)
        if unknown:
            raise ConfigError(f"{sweep_dir}: --where names {', '.join(unknown)}, which the sweep does not vary "
                              f"(it varies: {', '.join(sorted(known)) or 'nothing'})")
    def n_found(key):
        return sum(1 for c in groups[key] if c["found"])

    # each undecided comparison brings its two sides to the same number of seeds: step more
    # than the smaller side has, and never fewer than the larger has (so a side that is
    # behind catches up first); a baseline shared by several laws takes the largest target
    want: dict[tuple, int] = {}
    for r in rows:
        if r["verdict"] != "unresolved" or not _matches(groups[(r["dist"], r["settings"])][0]["raw_settings"], where):
            continue
        a, b = (r["dist"], r["settings"]), (baseline, r["settings"])
        target = min(max(min(n_found(a), n_found(b)) + step, n_found(a), n_found(b)), max_seeds)
        for key in (a, b):
            want[key] = max(want.get(key, 0), target)
    new = []
    for settings, dist in sorted((s, d) for d, s in want):
        have = groups[(dist, settings)]
        raw = tuple(have[0]["raw_settings"].items())
        found = {int(c["seed"]) for c in have if c["found"]}
        # cells of an earlier round that never finished (stopped part-way) come first: they
        # are in the manifest, so counting them as seeds would skip them for good
        pending = sorted(int(c["seed"]) for c in have if not c["found"])
        new.extend(Cell(dist=dist, seed=s, settings=raw) for s in pending)
        seeds = found | set(pending)
        s = 0
        while len(seeds) < want[(dist, settings)]:
            if s not in seeds:
                seeds.add(s)
                new.append(Cell(dist=dist, seed=s, settings=raw))
            s += 1
    return new


def resolve_seeds(sweep_dir, *, max_seeds: int = 20, step: int = 5, baseline: str = "constant", engine: str = "local",
                  workers: int = 1, scheduler: str | None = None, progress=None,
                  where: dict[str, list[str]] | None = None) -> list[list[dict]]:
    """Run rounds of :func:`more_seeds` until no comparison is ``unresolved`` (issue 16: seeds
    until the difference is resolved or ``max_seeds`` are reached); returns each round's
    cell results. Resumable like a sweep: the added cells are in the manifest."""
    base, _ = load_manifest(sweep_dir)
    rounds = []
    while True:
        cells = more_seeds(sweep_dir, max_seeds=max_seeds, step=step, baseline=baseline, where=where)
        if not cells:
            return rounds
        logger.info("resolve seeds, round %d: %d more cells", len(rounds) + 1, len(cells))
        rounds.append(run_sweep(base, cells, sweep_dir, engine=engine, workers=workers, scheduler=scheduler,
                                progress=progress))
