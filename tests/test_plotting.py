"""Figure 1 (dt distributions) and its summary table."""

from __future__ import annotations

import numpy as np
import pytest

from neuro_hts.distributions import available_distributions, sample_dt
from neuro_hts.errors import ConfigError
from neuro_hts.plotting import dt_summary, plot_dt_distributions

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plot_writes_a_png(tmp_path):
    out = plot_dt_distributions(tmp_path / "figs" / "dt.png", n=5_000)
    assert out == tmp_path / "figs" / "dt.png"
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000
    # IHDR: width and height (big-endian) of a 3x3 grid of panels at 120 dpi
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 1000 and height > 800
    assert [p.name for p in out.parent.iterdir()] == ["dt.png"]  # no temp file left


def test_plot_subset_and_formats(tmp_path):
    out = plot_dt_distributions(tmp_path / "dt.svg", n=2_000, distributions=["constant", "cauchy"])
    assert out.read_text().lstrip().startswith(("<?xml", "<svg"))
    with pytest.raises(ConfigError, match="format"):
        plot_dt_distributions(tmp_path / "dt.jpg2", n=100)
    with pytest.raises(ConfigError, match="unknown dt distribution"):
        plot_dt_distributions(tmp_path / "dt.png", n=100, distributions=["nope"])
    assert not (tmp_path / "dt.png").exists()


def test_summary_pile_up():
    s = dt_summary(n=50_000)
    assert tuple(s) == tuple(d for d in available_distributions() if d != "lognormal_min")  # not a law of samples
    assert s["cauchy"]["frac_at_max"] > 0.01 and s["cauchy"]["frac_at_min"] > 0.01
    assert s["levy"]["frac_at_max"] > 0.1
    assert s["constant"]["frac_at_max"] == 0.0 and s["constant"]["frac_at_min"] == 0.0
    assert s["constant"]["mean"] == pytest.approx(0.3) and s["constant"]["std"] < 1e-12
    assert s["uniform"]["frac_at_max"] == 0.0  # U(0.127, 0.473) never reaches 0.5
    # light-tailed laws keep their moments after clipping (within a few percent)
    for law in ("uniform", "normal", "gamma", "lognormal"):
        assert s[law]["mean"] == pytest.approx(0.3, abs=0.01)
        assert s[law]["std"] == pytest.approx(0.1, abs=0.012)


def test_summary_matches_samples_and_is_reproducible():
    a = dt_summary(n=10_000, seed=3, distributions=["normal", "cauchy"])
    b = dt_summary(n=10_000, seed=3, distributions=["cauchy"])  # per-law streams: order-independent
    assert a["cauchy"] == b["cauchy"]
    assert dt_summary(n=10_000, seed=4, distributions=["cauchy"])["cauchy"] != b["cauchy"]
    # fractions at the bounds are those of sample_dt's clipping
    dt = sample_dt("normal", 1000, np.random.default_rng(0), 0.45, 0.1)
    frac = float(np.mean(dt == 0.5))
    assert frac > 0.2
    s = dt_summary(mu=0.45, n=10_000, distributions=["normal"])["normal"]
    assert s["frac_at_max"] == pytest.approx(0.3085, abs=0.02)  # P(N > mu + 0.5 sigma)


def test_atomic_write_failure_leaves_nothing(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def broken_savefig(self, fname, **kwargs):
        with open(fname, "wb") as fh:
            fh.write(PNG_MAGIC)  # half-written file
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    dest = tmp_path / "dt.png"
    with pytest.raises(OSError, match="disk full"):
        plot_dt_distributions(dest, n=1_000)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_failure_keeps_previous_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    dest = tmp_path / "dt.png"
    dest.write_bytes(b"previous")
    monkeypatch.setattr(Figure, "savefig", lambda self, fname, **kw: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        plot_dt_distributions(dest, n=1_000)
    assert dest.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["dt.png"]


def test_missing_matplotlib_gives_clear_error(tmp_path, monkeypatch):
    import sys

    from neuro_hts.errors import NeuroHTSError

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import -> ImportError
    with pytest.raises(NeuroHTSError, match="pip install") as err:
        plot_dt_distributions(tmp_path / "dt.png", n=100)
    assert isinstance(err.value, ImportError)
    assert not (tmp_path / "dt.png").exists()
