"""Networks as typed parts (neuro_hts.spec): declared in TOML, validated, mapped onto the engines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neuro_hts.config import Config, load_config
from neuro_hts.errors import ConfigError
from neuro_hts.network import init_network
from neuro_hts.spec import NetworkSpec

MODELS = Path(__file__).resolve().parents[1] / "models"


def test_arch_is_one_instance_of_the_parts():
    spec = NetworkSpec.from_arch((784, 512, 10), "mse")
    assert [(l.name, l.shape) for l in spec.layers] == [("x", (784,)), ("h1", (512,)), ("out", (10,))]
    assert [(c.kind, c.pre, c.post) for c in spec.connections] == [("dense", "x", "h1"), ("dense", "h1", "out")]
    assert [(c.kind, c.layer) for c in spec.costs] == [("mse", "out")]
    assert spec.chain("hard_sigmoid") == ((784, 512, 10), "mse")
    ce = NetworkSpec.from_arch((784, 256, 128, 10), "ce")  # the softmax readout reads h2: no relaxed output layer
    assert [l.name for l in ce.layers] == ["x", "h1", "h2"] and (ce.costs[0].layer, ce.costs[0].classes) == ("h2", 10)
    assert ce.chain("sigmoid4") == ((784, 256, 128, 10), "ce")
    assert NetworkSpec.from_tables(**ce.to_tables()) == ce


def test_declared_parts_train_the_same_network_as_arch():
    parts = load_config(MODELS / "mnist_mlp_parts.toml")
    arch = load_config(MODELS / "mnist_3ep.toml")
    assert parts.model.arch == arch.model.arch == (784, 512, 10) and parts.model.output == "mse"
    assert parts.model.spec == arch.model.spec
    assert parts.replace(model={}).model == parts.model  # survives the JSON round trip of a run file
    assert Config.from_json(parts.to_json()) == parts
    a, b = init_network(parts), init_network(arch)
    for p, q in zip(a.weights + a.biases + a.dts, b.weights + b.biases + b.dts, strict=True):
        assert np.array_equal(p, q)


def _tables(**edits):
    t = NetworkSpec.from_arch((6, 5, 3), "mse").to_tables()
    t.update(edits)
    return {"model": t}


@pytest.mark.parametrize("edits,message", [
    (dict(layers=[{"name": "x", "shape": [6]}, {"name": "h1", "shape": [2, 3, 3]}, {"name": "out", "shape": [3]}]),
     "C x H x W layers need a convolution kind"),
    (dict(connections=[{"kind": "dense", "pre": "h1", "post": "out"}, {"kind": "dense", "pre": "x", "post": "h1"}]),
     "are not the chain"),
    (dict(costs=[{"kind": "mse", "layer": "out"}, {"kind": "mse", "layer": "h1"}]), "exactly one cost, on the top layer"),
    (dict(costs=[{"kind": "ce", "layer": "out"}]), "needs classes"),
    (dict(layers=[{"name": "x", "shape": [6]}, {"name": "h1", "shape": [5], "activation": "sigmoid4"},
                  {"name": "out", "shape": [3]}]), "per-layer activation"),
])
def test_networks_the_engines_cannot_run_are_refused_with_the_rule(edits, message):
    with pytest.raises(ConfigError, match="the engines cannot run this network") as info:
        Config.from_dict(_tables(**edits))
    assert message in str(info.value)


@pytest.mark.parametrize("edits,message", [
    (dict(connections=[{"kind": "conv9", "pre": "x", "post": "h1"}]), "kind must be one of dense"),
    (dict(costs=[{"kind": "hinge", "layer": "out"}]), "kind must be one of mse, ce"),
    (dict(connections=[{"kind": "dense", "pre": "x", "post": "h9"}]), "no layer named 'h9'"),
    (dict(layers=[{"name": "x", "shape": [6]}, {"name": "x", "shape": [3]}]), "names must be distinct"),
    (dict(layers=[{"name": "x", "size": 6}]), "unknown key(s) in [[model.layers]]: size"),
    (dict(costs=[]), "at least one cost"),
])
def test_bad_declarations_are_one_line_errors(edits, message):
    with pytest.raises(ConfigError) as info:
        Config.from_dict(_tables(**edits))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_arch_that_disagrees_with_the_parts_is_an_error(tmp_path, run_cli):
    with pytest.raises(ConfigError, match="do not match the declared layers"):
        Config.from_dict({"model": {**_tables()["model"], "arch": [6, 4, 3]}})
    code, _, err = run_cli(["train", "--config", str(MODELS / "mnist_mlp_parts.toml"), "--arch", "784-100-10",
                            "--out", str(tmp_path / "x.h5")])
    assert code == 2 and "do not match the declared layers" in err and err.count("\n") == 1


def test_bundles_record_their_parts_and_refuse_what_they_cannot_deploy(tmp_path):
    import json

    import h5py

    from neuro_hts.errors import RunFileError
    from neuro_hts.hardware import load_target
    from neuro_hts.hardware.bundle import BUNDLE_SCHEMA_VERSION, load_bundle, save_bundle
    from neuro_hts.hardware.quantize import quantize_network
    from neuro_hts.testing import random_problem

    net, _, _ = random_problem((6, 5, 3), "leaky", "hard_sigmoid", "mse", seed=0)
    path = tmp_path / "b.h5"
    save_bundle(path, quantize_network(net, load_target("loihi2")))
    with h5py.File(path, "r") as f:
        assert int(f.attrs["schema_version"]) == BUNDLE_SCHEMA_VERSION == 4
        assert NetworkSpec.from_tables(**json.loads(f.attrs["network"])) == NetworkSpec.from_arch((6, 5, 3), "mse")
    assert load_bundle(path).spec.chain("hard_sigmoid") == ((6, 5, 3), "mse")
    tables = NetworkSpec.from_arch((6, 5, 3), "mse").to_tables()
    for edit, message in ((dict(layers=[{"name": "x", "shape": [6]}, {"name": "h1", "shape": [5, 1, 1]},
                                        {"name": "out", "shape": [3]}]), "deploys chains of conv2d and dense connections only"),
                          (dict(layers=[{"name": "x", "shape": [6]}, {"name": "h1", "shape": [4]},
                                        {"name": "out", "shape": [3]}]), "does not match the bundle's layers")):
        bad = tmp_path / "bad.h5"
        bad.write_bytes(path.read_bytes())
        with h5py.File(bad, "r+") as f:
            f.attrs["network"] = json.dumps({**tables, **edit})
        with pytest.raises(RunFileError, match=message):
            load_bundle(bad)
