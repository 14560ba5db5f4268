"""Seed x distribution x setting sweeps: one run file per cell, resumable, local or on Dask.

A sweep is a base config and a grid: dt distributions x seeds x any number of swept
settings (``--set train.t1=20,30,60``). Each cell is an ordinary training run written to
``<out>/<cell name>.h5`` by :func:`neuro_hts.training.train`, so every cell checkpoints
after each epoch. Running the same sweep again skips finished cells (status ``complete``
or ``diverged``) and resumes unfinished ones (also after raising ``epochs``);
``<out>/sweep.json`` records the grid (written atomically) and refuses a different base
config (other than its number of epochs) in the same directory.

Engines:

* ``local`` (default, no server): cells one after another in this process
  (``workers = 1``), or in a ``concurrent.futures`` process pool of ``workers`` spawned
  interpreters;
* ``dask``: the cells are tasks on an existing Dask cluster (``scheduler`` = its address,
  e.g. ``tcp://10.0.0.5:8786``). Workers need neuro-hts installed and must see ``out``
  and the data at the same paths (a shared file system).
"""

from __future__ import annotations

import contextlib

import itertools
import json
import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

from ._atomic import atomic_path
from .config import Config
from .distributions import available_distributions
from .errors import ConfigError, DivergenceError, NeuroHTSError

__all__ = ["MANIFEST", "Cell", "cell_state", "same_base", "load_manifest", "make_grid", "parse_seeds", "parse_set", "run_cell", "run_sweep"]

logger = logging.getLogger(__name__)

MANIFEST = "sweep.json"
ENGINES = ("local", "dask")
#: seconds to wait for a Dask scheduler
SCHEDULER_TIMEOUT = 20


@dataclass(frozen=True)
class Cell:
    """One run of the grid: a dt distribution, a seed and the swept settings."""

    dist: str
    seed: int
    settings: tuple[tuple[str, object], ...] = ()  # ((section.key, value), ...), grid order

    @property
    def name(self) -> str:
        parts = [f"dist={self.dist}", f"seed={self.seed}"] + [f"{k}={_fmt(v)}" for k, v in self.settings]
        return re.sub(r"[^A-Za-z0-9_.=+-]", "_", "__".join(parts))

    def config(self, base: Config) -> Config:
        sections: dict[str, dict] = {"dt": {"dist": self.dist}, "train": {"seed": self.seed}}
        for key, value in self.settings:
            sec, field = key.split(".", 1)
            sections.setdefault(sec, {})[field] = value
        return base.replace(**sections)

    def to_dict(self) -> dict:
        return {"name": self.name, "dist": self.dist, "seed": self.seed,
                "settings": {k: v for k, v in self.settings}}


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return ",".join(_fmt(x) for x in v)
    return str(v)


def parse_seeds(text: str) -> list[int]:
    """'0-4' -> [0, 1, 2, 3, 4]; '0,2,7' -> [0, 2, 7]; '3' -> [3] (no duplicates, >= 0)."""
    seeds: list[int] = []
    try:
        for part in str(text).split(","):
            part = part.strip()
            if re.fullmatch(r"\d+-\d+", part):
                lo, hi = (int(v) for v in part.split("-"))
                if hi < lo:
                    raise ValueError
                seeds += list(range(lo, hi + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise ConfigError(f"--seeds must look like 0-4 or 0,2,7, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds must be distinct non-negative integers, got {text!r}")
    return seeds


def parse_set(text: str, base: Config) -> tuple[str, list]:
    """'train.t1=20,30' -> ('train.t1', [20, 30]), values typed like the base config's field."""
    if "=" not in text:
        raise ConfigError(f"--set must look like section.key=v1,v2, got {text!r}")
    key, _, values = text.partition("=")
    key = key.strip()
    d = base.to_dict()
    if key.count(".") != 1 or key.split(".")[0] not in d or key.split(".")[1] not in d[key.split(".")[0]]:
        raise ConfigError(f"--set: unknown config key {key!r} (use section.key, e.g. train.t1)")
    sec, field = key.split(".")
    if key in ("dt.dist", "train.seed"):
        raise ConfigError(f"--set {key}: use --dt-dists / --seeds for that")
    current = d[sec][field]
    out = []
    for raw in values.split(","):
        raw = raw.strip()
        try:
            if isinstance(current, bool):
                if raw.lower() not in ("true", "false"):
                    raise ValueError
                v = raw.lower() == "true"
            elif isinstance(current, int):
                v = int(raw)
            elif isinstance(current, float):
                v = float(raw)
            elif isinstance(current, list):  # per-layer lists (lr): one value for every layer
                v = [float(raw)]
            elif current is None:  # optional numbers (train.t1_tol): a number, or "none"
                v = None if raw.lower() == "none" else float(raw)
            else:
                v = raw
        except ValueError:
            raise ConfigError(f"--set {key}: {raw!r} is not a valid {type(current).__name__}") from None
        out.append(v)
    if not out or len({json.dumps(v) for v in out}) != len(out):
        raise ConfigError(f"--set {key}: values must be distinct, got {values!r}")
    return key, out


def make_grid(base: Config, dists, seeds, sets=()) -> list[Cell]:
    """Every combination (distribution-major, then settings, then seed); validates each config."""
    dists = list(dists)
    known = available_distributions()
    unknown = [d for d in dists if d not in known]
    if unknown:
        raise ConfigError(f"unknown dt distribution(s): {', '.join(unknown)} (known: {', '.join(known)})")
    if not dists or len(set(dists)) != len(dists):
        raise ConfigError("--dt-dists must name distinct distributions")
    keys = [k for k, _ in sets]
    if len(set(keys)) != len(keys):
        raise ConfigError("each --set key may appear once")
    cells = []
    for dist in dists:
        for combo in itertools.product(*[vals for _, vals in sets]):
            for seed in seeds:
                cell = Cell(dist=dist, seed=int(seed), settings=tuple(zip(keys, combo)))
                try:
                    cell.config(base)
                except ConfigError as exc:
                    raise ConfigError(f"cell {cell.name}: {exc}") from None
                cells.append(cell)
    return cells


def cell_state(path: Path, epochs: int) -> str:
    """'missing', 'partial' (resumable), 'complete' or 'diverged' for a cell's run file."""
    from .runfile import load_summary

    path = Path(path)
    if not path.exists():
        return "missing"
    st = load_summary(path)
    if st.status == "diverged":
        return "diverged"
    if st.epochs_completed >= epochs:
        return "complete"
    return "partial"


def run_cell(base_json: str, cell: Cell, out_dir: str) -> dict:
    """Train (or resume, or skip) one cell; returns a summary dict. Top-level: picklable."""
    from .runfile import load_summary
    from .training import train

    base = Config.from_json(base_json)
    cfg = cell.config(base)
    path = Path(out_dir) / f"{cell.name}.h5"
    state = cell_state(path, cfg.train.epochs)
    t0 = time.perf_counter()
    status = state
    if state == "partial" and load_summary(path).metrics_only:
        raise ConfigError(f"cell {cell.name} was restored from an archive with fewer epochs than "
                          f"{cfg.train.epochs} and holds no weights to resume from; delete {path} to retrain it")
    if state in ("missing", "partial"):
        try:
            train(cfg, path, resume=state == "partial")
            status = "complete"
        except DivergenceError:
            status = "diverged"
    st = load_summary(path)
    acc = st.history.get("test_accuracy", [])
    return {"name": cell.name, "status": status, "was": state, "seconds": time.perf_counter() - t0,
            "epochs": st.epochs_completed, "final_accuracy": float(acc[-1]) if len(acc) else math.nan}


def same_base(a: Config, b: Config) -> bool:
    """Whether two base configs define the same sweep.

    The number of epochs may differ (more epochs resume the finished cells; fewer leave
    them as they are), and so may ``data.data_dir``: where the files live is not part of
    the data's identity, since every idx file is checksum-verified on load. So may
    ``distill.teacher_sha256``, which a distilled run records when it starts (its teacher
    file's digest, checked on resume).
    """
    def key(c: Config) -> str:
        d = c.to_dict()
        d["train"]["epochs"], d["data"]["data_dir"], d["distill"]["teacher_sha256"] = 0, None, ""
        return json.dumps(d, sort_keys=True)

    return key(a) == key(b)


def _write_manifest(out_dir: Path, base: Config, cells: list[Cell]) -> None:
    path = out_dir / MANIFEST
    cells_d: dict[str, dict] = {}  # the manifest's cells first, in their order; new cells after them
    if path.exists():
        try:
            old = json.loads(path.read_text())
            old_base = Config.from_json(old["base_config"])
        except (OSError, ValueError, KeyError, NeuroHTSError) as exc:
            raise ConfigError(f"{path} is not a readable sweep manifest ({exc})") from None
        if not same_base(old_base, base):
            raise ConfigError(f"{out_dir} holds a sweep of another base config; use a new --out")
        for c in old.get("cells", []):
            cells_d.setdefault(c["name"], c)
    for c in cells:
        cells_d.setdefault(c.name, c.to_dict())
    text = json.dumps({"format": "neuro-hts-sweep", "base_config": base.to_json(),
                       "cells": list(cells_d.values())}, indent=1)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def load_manifest(out_dir) -> tuple[Config, list[dict]]:
    """(base config, cell dicts) of a sweep directory."""
    path = Path(out_dir) / MANIFEST
    if not path.exists():
        raise ConfigError(f"{out_dir} has no {MANIFEST}: not a sweep directory")
    try:
        d = json.loads(path.read_text())
        return Config.from_json(d["base_config"]), list(d["cells"])
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"{path} is not a readable sweep manifest ({exc})") from None


def run_sweep(base: Config, cells: list[Cell], out_dir, *, engine: str = "local", workers: int = 1,
              scheduler: str | None = None, progress=None) -> list[dict]:
    """Run every cell (skipping finished ones); ``progress(result)`` after each cell.

    Returns the per-cell summaries in completion order. A cell that raises is reported
    with ``status = 'error'`` and its message; the others still run.
    """
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "dask" and not scheduler:
        raise ConfigError("--engine dask needs --scheduler ADDRESS (e.g. tcp://127.0.0.1:8786)")
    if engine == "local" and scheduler:
        raise ConfigError("--scheduler is only used with --engine dask")
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with sweep_lock(out_dir):
        _write_manifest(out_dir, base, cells)
        return _run_cells(base, cells, out_dir, engine, workers, scheduler, progress)


LOCK_NAME = ".sweep.lock"


@contextlib.contextmanager
def sweep_lock(out_dir):
    """Hold an exclusive lock on a sweep directory; a second sweep on it is refused with one line.

    The lock is an ``flock`` on ``<out>/.sweep.lock`` (released by the kernel when the
    process ends, even on kill -9); the file records the holder's pid for the message.
    """
    import fcntl
    import os

    path = Path(out_dir) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise ConfigError(f"another sweep (pid {holder}) is running on {out_dir}; wait for it to finish "
                              f"(cells it completed are then skipped) or use another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield path
    finally:
        os.close(fd)


def _run_cells(base, cells, out_dir, engine, workers, scheduler, progress) -> list[dict]:
    base_json = base.to_json()
    results: list[dict] = []

    def done(res):
        results.append(res)
        logger.info("cell %s: %s (%.1f s)", res["name"], res["status"], res.get("seconds", 0.0))
        if progress is not None:
            progress(res)

    def failed(cell, exc):
        done({"name": cell.name, "status": "error", "was": "?", "seconds": 0.0, "epochs": 0,
              "final_accuracy": math.nan, "error": f"{type(exc).__name__}: {exc}"})

    if engine == "local" and workers == 1:
        for cell in cells:
            try:
                done(run_cell(base_json, cell, str(out_dir)))
            except NeuroHTSError as exc:
                failed(cell, exc)
    elif engine == "local":
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futs = {pool.submit(run_cell, base_json, c, str(out_dir)): c for c in cells}
            try:
                for fut in as_completed(futs):
                    exc = fut.exception()
                    done(fut.result()) if exc is None else failed(futs[fut], exc)
            except BaseException:
                for f in futs:
                    f.cancel()
                raise
    else:
        try:
            from distributed import Client, as_completed
        except ImportError:
            raise ConfigError("--engine dask needs dask[distributed] (pip install 'neuro-hts[dask]')") from None
        try:
            client = Client(scheduler, timeout=SCHEDULER_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        try:
            futs = client.map(run_cell, [base_json] * len(cells), cells, [str(out_dir)] * len(cells),
                              key=[f"neuro-hts-{c.name}" for c in cells], pure=False)
            by_key = {f.key: c for f, c in zip(futs, cells)}
            for fut in as_completed(futs):
                if fut.status == "finished":
                    done(fut.result())
                else:
                    failed(by_key[fut.key], fut.exception())
        finally:
            client.close()
    return results

