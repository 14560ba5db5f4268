"""Sweep archives: a sweep's results without its weights, in one JSON file that travels.

A grid of hundreds of full-data runs outlives the machine it started on. Its run files
hold weights (megabytes each), but a report needs only each cell's status and per-epoch
history. :func:`archive_sweep` gathers exactly that for every finished cell into one
JSON file (a few kilobytes a cell; commit it next to the report), and
:func:`restore_archive` writes the cells back into a sweep directory as metrics-only run
files, so that ``neuro-hts sweep`` on another machine skips them and trains only the
cells still missing, and ``neuro-hts report`` and ``resolve-seeds`` read them like any
others. Layout: docs/FORMAT.md, "Sweep archives".

Both directions merge and never replace: archiving keeps the cells the archive already
has unless the sweep's run of that cell went further (more epochs), and restoring never
touches a run file that exists in the sweep directory.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from ._atomic import atomic_path
from .config import Config
from .errors import ConfigError, NeuroHTSError
from .runfile import HISTORY_KEYS, STATUSES, RunSummary, load_summary, save_summary
from .sweep import MANIFEST, Cell, _write_manifest, load_manifest, same_base, sweep_lock

__all__ = ["ARCHIVE_FORMAT", "ARCHIVE_VERSION", "read_archive", "archive_sweep", "restore_archive"]

logger = logging.getLogger(__name__)

ARCHIVE_FORMAT = "neuro-hts-sweep-archive"
ARCHIVE_VERSION = 1


def _cell_of(entry: dict, where: str) -> Cell:
    try:
        cell = Cell(dist=str(entry["dist"]), seed=int(entry["seed"]), settings=tuple(dict(entry["settings"]).items()))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: a cell lacks dist, seed or settings ({exc})") from None
    if entry.get("name") != cell.name:  # the name is a file name on restore: it must be the cell's own
        raise ConfigError(f"{where}: cell name {entry.get('name')!r} does not match its dist, seed and settings")
    return cell


def _check_run(run, name: str, where: str) -> dict:
    if not isinstance(run, dict):
        raise ConfigError(f"{where}: cell {name} has no run record")
    try:
        status, epochs, target = str(run["status"]), int(run["epochs_completed"]), int(run["epochs"])
        history = {k: [math.nan if v is None else float(v) for v in run["history"].get(k, [])] for k in HISTORY_KEYS}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{where}: cell {name} has a damaged run record ({exc})") from None
    if status not in STATUSES or status == "running":
        raise ConfigError(f"{where}: cell {name} has status {status!r}; archives hold finished cells only")
    if epochs < 0 or target < 1 or any(len(v) > epochs for v in history.values()):
        raise ConfigError(f"{where}: cell {name} has inconsistent epoch counts")
    return {"status": status, "epochs_completed": epochs, "epochs": target, "message": str(run.get("message", "")),
            "history": history}


def read_archive(path) -> tuple[Config, dict[str, tuple[Cell, dict]]]:
    """(base config, {cell name: (cell, run record)}) of an archive; one-line ConfigError if damaged."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep archive not found: {path}")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path} is not a readable sweep archive ({exc.__class__.__name__})") from None
    if not isinstance(d, dict) or d.get("format") != ARCHIVE_FORMAT:
        raise ConfigError(f"{path} is not a neuro-hts sweep archive (no format={ARCHIVE_FORMAT!r})")
    if d.get("version") != ARCHIVE_VERSION:
        raise ConfigError(f"{path}: unsupported sweep archive version {d.get('version')!r} "
                          f"(this neuro-hts reads {ARCHIVE_VERSION})")
    try:
        base = Config.from_dict(d["base_config"])
        entries = list(d["cells"])
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: damaged sweep archive ({exc})") from None
    except NeuroHTSError as exc:
        raise ConfigError(f"{path}: invalid base config: {exc}") from None
    cells = {}
    for e in entries:
        if not isinstance(e, dict):
            raise ConfigError(f"{path}: damaged sweep archive (a cell is not an object)")
        cell = _cell_of(e, str(path))
        try:
            cell.config(base)
        except NeuroHTSError as exc:
            raise ConfigError(f"{path}: cell {cell.name}: {exc}") from None
        cells[cell.name] = (cell, _check_run(e.get("run"), cell.name, str(path)))
    return base, cells


def _record(summary: RunSummary) -> dict:
    return {"status": summary.status, "epochs_completed": summary.epochs_completed,
            "epochs": summary.config.train.epochs, "message": summary.message,
            "history": {k: list(summary.history.get(k, [])) for k in HISTORY_KEYS}}


def _write_archive(path: Path, base: Config, cells: dict[str, tuple[Cell, dict]]) -> None:
    def clean(x):  # NaN and inf as null: the file stays strict JSON
        return None if isinstance(x, float) and not math.isfinite(x) else x

    out = []
    for name in sorted(cells):
        cell, run = cells[name]
        run = dict(run, history={k: [clean(v) for v in vs] for k, vs in run["history"].items()})
        out.append({**cell.to_dict(), "run": run})
    text = json.dumps({"format": ARCHIVE_FORMAT, "version": ARCHIVE_VERSION, "base_config": base.to_dict(),
                       "cells": out}, indent=1, allow_nan=False)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text + "\n", encoding="utf-8")


def _check_archive_path(path: Path) -> None:
    if path.suffix != ".json":
        raise ConfigError(f"a sweep archive is a .json file, got {path}")
    if path.name == MANIFEST:
        raise ConfigError(f"{path} is a sweep manifest, not an archive; choose another file name")


def archive_sweep(sweep_dir, archive_path) -> dict[str, int]:
    """Merge the finished cells of ``sweep_dir`` into the archive ``archive_path``.

    A cell's record is its status, message, epoch counts and ``/history``; cells still
    running are left out. Returns counts: ``added``, ``updated`` (the sweep's run went
    further than the archived one), ``kept`` (already archived as far) and ``running``.
    """
    sweep_dir, archive_path = Path(sweep_dir), Path(archive_path)
    _check_archive_path(archive_path)
    base, cell_dicts = load_manifest(sweep_dir)
    if archive_path.exists():
        abase, cells = read_archive(archive_path)
        if not same_base(abase, base):
            raise ConfigError(f"{archive_path} archives a sweep of another base config than {sweep_dir}")
    else:
        abase, cells = base, {}
    counts = {"added": 0, "updated": 0, "kept": 0, "running": 0}
    for d in cell_dicts:
        cell = _cell_of(d, str(sweep_dir / MANIFEST))
        path = sweep_dir / f"{cell.name}.h5"
        if not path.exists():
            continue
        summary = load_summary(path)
        if summary.status == "running":
            counts["running"] += 1
            continue
        if not same_base(summary.config, cell.config(base)):
            raise ConfigError(f"{path}: its config is not the one the sweep's manifest gives this cell")
        old = cells.get(cell.name)
        if old is not None and old[1]["epochs_completed"] >= summary.epochs_completed:
            counts["kept"] += 1
            continue
        counts["updated" if old is not None else "added"] += 1
        cells[cell.name] = (cell, _record(summary))
    _write_archive(archive_path, abase, cells)
    logger.info("archived %s into %s: %s", sweep_dir, archive_path, counts)
    return counts


def restore_archive(archive_path, sweep_dir) -> dict[str, int]:
    """Write the archive's cells into ``sweep_dir`` as metrics-only run files (docs/FORMAT.md).

    Run files already in ``sweep_dir`` are never replaced. The sweep's manifest gains the
    archived cells (a new directory gets the archive's base config). Returns counts:
    ``restored`` and ``present`` (a run file of that cell was already there).
    """
    archive_path, sweep_dir = Path(archive_path), Path(sweep_dir)
    abase, cells = read_archive(archive_path)
    if (sweep_dir / MANIFEST).exists():
        base, _ = load_manifest(sweep_dir)
        if not same_base(base, abase):
            raise ConfigError(f"{sweep_dir} holds a sweep of another base config than {archive_path}")
    else:
        base = abase
    sweep_dir.mkdir(parents=True, exist_ok=True)
    counts = {"restored": 0, "present": 0}
    with sweep_lock(sweep_dir):
        _write_manifest(sweep_dir, base, [c for c, _ in cells.values()])
        for name, (cell, run) in cells.items():
            path = sweep_dir / f"{name}.h5"
            if path.exists():
                counts["present"] += 1
                continue
            config = cell.config(base).replace(train={"epochs": run["epochs"]})
            save_summary(path, RunSummary(config=config, epochs_completed=run["epochs_completed"], history=run["history"],
                                          status=run["status"], message=run["message"], metrics_only=True))
            counts["restored"] += 1
    logger.info("restored %s into %s: %s", archive_path, sweep_dir, counts)
    return counts
