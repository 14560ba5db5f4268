"""Run files (docs/FORMAT.md): exact round trip, documented layout, atomic writes, clear errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from neuro_hts.config import Config
from neuro_hts.errors import RunFileError
from neuro_hts.learning import SGD, Adam
from neuro_hts.network import init_network
from neuro_hts.runfile import (
    FORMAT_NAME,
    HISTORY_KEYS,
    SCHEMA_VERSION,
    RunState,
    load_run,
    save_run,
)
from neuro_hts.stability import RUN_METRICS, run_metrics

FORMAT_DOC = Path(__file__).resolve().parents[1] / "docs" / "FORMAT.md"


def _state(seed=0, epochs=2, dtype=np.float32, optimizer="adam") -> RunState:
    """A RunState as training leaves it after ``epochs`` epochs (optimizer stepped once)."""
    cfg = Config().replace(model={"arch": [64, 32, 10]}, train={"seed": seed, "optimizer": optimizer, "momentum": 0.5})
    net = init_network(cfg, dtype)
    rng = np.random.default_rng(seed)
    opt = Adam((1e-3, 1e-3)) if optimizer == "adam" else SGD((1e-2, 1e-2), momentum=0.5)
    opt.step(net, [rng.normal(size=w.shape) for w in net.weights], [rng.normal(size=b.shape) for b in net.biases])
    hist = {k: list(rng.uniform(size=epochs)) for k in HISTORY_KEYS}
    return RunState(cfg, net, epochs_completed=epochs, history=hist, optimizer_state=opt.state_dict(), status="running", message="note")


def _assert_same_state(a: RunState, b: RunState):
    assert a.config == b.config
    assert a.epochs_completed == b.epochs_completed and a.status == b.status and a.message == b.message
    for name in ("weights", "biases", "dts"):
        for x, y in zip(getattr(a.network, name), getattr(b.network, name), strict=True):
            assert x.dtype == y.dtype and np.array_equal(x, y)
    assert a.history == b.history
    assert set(a.optimizer_state) == set(b.optimizer_state)
    for k in a.optimizer_state:
        for x, y in zip(a.optimizer_state[k], b.optimizer_state[k], strict=True):
            assert np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(x, y)


@pytest.mark.parametrize("dtype,optimizer", [(np.float32, "adam"), (np.float64, "sgd")])
def test_round_trip_is_exact(tmp_path, dtype, optimizer):
    state = _state(dtype=dtype, optimizer=optimizer)
    assert save_run(tmp_path / "run.h5", state) == tmp_path / "run.h5"
    back = load_run(tmp_path / "run.h5")
    _assert_same_state(state, back)
    if optimizer == "adam":
        assert int(np.asarray(back.optimizer_state["t"][0])) == 1
    assert back.network.form == "leaky" and back.network.output == "mse"


def test_layout_is_the_documented_one(tmp_path):
    state = _state(epochs=3)
    save_run(tmp_path / "run.h5", state)
    with h5py.File(tmp_path / "run.h5", "r") as f:
        assert set(f.attrs) == {"format", "schema_version", "config", "neuro_hts_version", "epochs_completed", "status", "message"}
        assert f.attrs["format"] == FORMAT_NAME
        assert f.attrs["schema_version"] == SCHEMA_VERSION and isinstance(f.attrs["schema_version"], np.integer)
        assert isinstance(f.attrs["epochs_completed"], np.integer) and f.attrs["epochs_completed"] == 3
        assert json.loads(f.attrs["config"]) == state.config.to_dict()
        assert f.attrs["status"] == "running" and f.attrs["message"] == "note"
        assert set(f) == {"layers", "history", "stability", "optimizer"}
        # the stability metrics of the stored history, as neuro_hts.stability computes them
        want = run_metrics(state.history, state.status, 10)
        assert set(f["stability"].attrs) == set(RUN_METRICS)
        for k in RUN_METRICS:
            assert f["stability"].attrs[k] == pytest.approx(want[k], nan_ok=True)
        acc = state.history["test_accuracy"]
        assert f["stability"].attrs["final_accuracy"] == acc[-1]
        assert f["stability"].attrs["largest_drop"] == pytest.approx(max(0.0, acc[0] - acc[1], acc[1] - acc[2]))
        layers = f["layers"]
        assert dict(layers.attrs) == {"form": "leaky", "activation": "hard_sigmoid", "output": "mse"}
        arch = state.config.model.arch
        assert sorted(layers) == [str(i) for i in range(1, len(arch))]
        for i in range(1, len(arch)):
            assert layers[f"{i}/weight"].shape == (arch[i], arch[i - 1])
            assert layers[f"{i}/bias"].shape == layers[f"{i}/dt"].shape == (arch[i],)
        assert set(f["history"]) == set(HISTORY_KEYS)
        assert all(f["history"][k].shape == (3,) and f["history"][k].dtype == np.float64 for k in HISTORY_KEYS)
        assert set(f["optimizer"]) == {"m", "v", "t"}
        assert [f[f"optimizer/m/{j}"].shape for j in range(4)] == [(32, 64), (10, 32), (32,), (10,)]
        assert f["optimizer/t/0"].shape == ()


def test_format_doc_describes_every_history_key_and_its_snippet_runs(tmp_path, monkeypatch):
    doc = FORMAT_DOC.read_text()
    for word in (*HISTORY_KEYS, "schema_version", "neuro_hts_version", "epochs_completed", "status", "message", "fsync"):
        assert f"`{word}`" in doc or word in doc, word
    snippet = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    assert len(snippet.strip().splitlines()) <= 5
    state = _state(epochs=2)
    save_run(tmp_path / "run.h5", state)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(snippet, ns)  # noqa: S102 - the documented example, run as written
    assert ns["config"] == state.config.to_dict()
    assert [w.shape for w in ns["weights"]] == [(32, 64), (10, 32)]
    assert np.array_equal(ns["weights"][1], state.network.weights[1])
    assert np.array_equal(ns["test_accuracy"], state.history["test_accuracy"])


def _failing_create_dataset(monkeypatch, fail_at: int):
    """Make the ``fail_at``-th h5py dataset creation raise (the write dies midway)."""
    real = h5py.Group.create_dataset
    calls = {"n": 0}

    def create_dataset(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise OSError("disk full (injected)")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", create_dataset)
    return calls


@pytest.mark.parametrize("fail_at", [1, 4, 12])
def test_failed_write_keeps_previous_file_and_leaves_no_temp(tmp_path, monkeypatch, fail_at):
    path = tmp_path / "run.h5"
    old = _state(seed=0, epochs=1)
    save_run(path, old)
    before = path.read_bytes()
    new = _state(seed=1, epochs=2)
    calls = _failing_create_dataset(monkeypatch, fail_at)
    with pytest.raises(OSError, match="injected"):
        save_run(path, new)
    assert calls["n"] == fail_at  # it really failed midway, after writing some datasets
    monkeypatch.undo()
    assert path.read_bytes() == before
    _assert_same_state(old, load_run(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.h5"]


def test_failed_first_write_leaves_nothing(tmp_path, monkeypatch):
    _failing_create_dataset(monkeypatch, 3)
    with pytest.raises(OSError, match="injected"):
        save_run(tmp_path / "sub" / "run.h5", _state())
    assert list((tmp_path / "sub").iterdir()) == []


def test_successful_overwrite_replaces_content(tmp_path):
    path = tmp_path / "run.h5"
    save_run(path, _state(seed=0, epochs=1))
    save_run(path, _state(seed=1, epochs=5))
    assert load_run(path).epochs_completed == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.h5"]


def _edit(path: Path, fn):
    with h5py.File(path, "r+") as f:
        fn(f)


def _set_attr(name, value):
    return lambda f: f.attrs.__setitem__(name, value)


def _replace_weight(f):
    del f["layers/1/weight"]
    f["layers/1/weight"] = np.zeros((64, 32), dtype=np.float32)  # transposed


def _bad_file(kind: str, path: Path, good: bytes) -> None:
    if kind == "missing":
        return
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("epoch,accuracy\n1,0.5\n")
    elif kind.startswith("truncated"):
        path.write_bytes(good[: int(len(good) * float(kind.split("-")[1]))])
    elif kind == "foreign":
        with h5py.File(path, "w") as f:
            f["data"] = np.arange(10)
            f.attrs["format"] = "something-else"
    else:
        path.write_bytes(good)
        edits = {
            "schema-3": _set_attr("schema_version", np.int64(3)),
            "config-not-json": _set_attr("config", "{not json"),
            "config-unknown-key": _set_attr("config", json.dumps({"model": {"arch": [64, 32, 10], "colour": 1}})),
            "no-layer-2": lambda f: f.__delitem__("layers/2"),
            "no-epochs": lambda f: f.attrs.__delitem__("epochs_completed"),
            "shape-mismatch": _replace_weight,
        }
        _edit(path, edits[kind])


BAD_KINDS = {
    "missing": "not found",
    "empty": "not a readable HDF5 file",
    "text": "not a readable HDF5 file",
    "truncated-0.05": "not a readable HDF5 file",
    "truncated-0.5": "not a readable HDF5 file",
    "truncated-0.999": "not a readable HDF5 file",
    "foreign": "not a neuro-hts run file",
    "schema-3": "unsupported schema_version 3",
    "config-not-json": "invalid stored config",
    "config-unknown-key": "unknown key(s) in [model]: colour",
    "no-layer-2": "damaged or incomplete",
    "no-epochs": "damaged or incomplete",
    "shape-mismatch": "inconsistent layers",
}


@pytest.mark.parametrize("kind", list(BAD_KINDS))
def test_load_rejects_bad_files_with_one_line(tmp_path, kind):
    good_path = tmp_path / "good.h5"
    save_run(good_path, _state())
    path = tmp_path / "bad.h5"
    _bad_file(kind, path, good_path.read_bytes())
    with pytest.raises(RunFileError) as info:
        load_run(path)
    msg = str(info.value)
    assert BAD_KINDS[kind] in msg and str(path) in msg
    assert "\n" not in msg


def test_corrupt_bytes_never_escape_as_other_errors(tmp_path):
    """Flipping bytes anywhere either still loads or gives RunFileError (h5py raises RuntimeError too)."""
    good = tmp_path / "good.h5"
    save_run(good, _state())
    data = good.read_bytes()
    bad = tmp_path / "bad.h5"
    n_rejected = 0
    for off in range(0, len(data), 211):
        b = bytearray(data)
        b[off : off + 64] = bytes(x ^ 0x5A for x in b[off : off + 64])
        bad.write_bytes(bytes(b))
        try:
            load_run(bad)
        except RunFileError as exc:
            assert "\n" not in str(exc)
            n_rejected += 1
    assert n_rejected > 0
