"""scripts/bench_memory.py: EP's step memory does not grow with T1, BPTT's does (tracemalloc
counts are deterministic, so these are exact properties, not timings)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _scripts import load_script

from neuro_hts.config import load_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def script():
    mod = load_script("bench_memory")
    return mod


def test_ep_memory_is_flat_in_t1_and_bptt_grows_by_one_state_per_step(script):
    cfg = load_config(REPO / "models" / "digits.toml")
    batch = 16
    m = {t1: script.measure(cfg, t1, batch, 0) for t1 in (10, 40, 160)}
    # one state of every relaxed layer (float64): what BPTT must keep per step
    per_step = sum(cfg.model.arch[1:]) * batch * 8
    # EP: 150 more steps cost less than ONE state (NumPy's small-block caches and Python
    # objects account for the few kB it varies by; there is no per-step growth)
    assert abs(m[160]["ep"] - m[10]["ep"]) < per_step, m
    assert m[160]["bptt"] - m[40]["bptt"] >= 120 * per_step * 0.95, m
    assert m[40]["bptt"] - m[10]["bptt"] >= 30 * per_step * 0.95, m
    assert m[160]["bptt"] > 3 * m[160]["ep"], m


def test_bad_arguments_exit_2(script, capsys):
    assert script.main(["--t1", "0"]) == 2
    assert script.main(["--t1", "a,b"]) == 2
    assert "--t1 must be positive integers" in capsys.readouterr().err
