"""The configs in models/ load, and the demo's config reaches the accuracy the README states."""

from pathlib import Path

import pytest

from neuro_hts.config import load_config
from neuro_hts.training import train

MODELS = Path(__file__).resolve().parents[1] / "models"


@pytest.mark.parametrize("path", sorted(MODELS.rglob("*.toml")), ids=lambda p: str(p.relative_to(MODELS)))
def test_every_model_config_validates(path):
    if path.name.startswith("continual_"):  # a Config plus [continual] and [sleep] (neuro_hts.continual)
        from neuro_hts.continual import load_continual_config

        cfg = load_continual_config(path).base
    else:
        cfg = load_config(path)
    assert cfg.model.arch[0] in (64, 784)
    assert cfg.model.arch[-1] == 10


def test_mnist_configs_carry_the_peer_hyperparameters_with_longer_free_phase():
    for name in ("mnist_3ep.toml", "mnist.toml"):
        cfg = load_config(MODELS / name)
        assert cfg.model.arch == (784, 512, 10)
        assert cfg.model.activation == "sigmoid4" and cfg.model.output == "mse"
        assert cfg.train.optimizer == "adam" and cfg.train.lr == (5e-4, 5e-4)
        assert cfg.train.beta == 0.1
        assert (cfg.train.t1, cfg.train.t2, cfg.train.batch_size) == (60, 10, 50)
        assert cfg.dt.dist == "lognormal" and (cfg.dt.mean, cfg.dt.std) == (0.3, 0.1)
    assert load_config(MODELS / "mnist_3ep.toml").train.epochs == 3
    assert load_config(MODELS / "mnist_3ep.toml").train.nudging == "one-sided"
    longer = load_config(MODELS / "mnist.toml").train
    assert (longer.nudging, longer.lr_schedule, longer.epochs) == ("symmetric", "cosine", 20)


def test_demo_config_reaches_95_percent_on_digits(tmp_path):
    cfg = load_config(MODELS / "digits.toml")
    state = train(cfg, tmp_path / "demo.h5")
    assert state.status == "complete"
    assert state.epochs_completed == cfg.train.epochs
    assert state.history["test_accuracy"][-1] >= 0.95
    # heterogeneous hidden layer, constant output layer, as the config says
    dts = state.network.dts
    assert dts[0].std() > 0.05 and dts[0].min() >= 1e-3 and dts[0].max() <= 0.5
    assert (dts[1] == 0.3).all()
