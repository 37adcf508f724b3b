"""Value checks that run before any data is read or any MLflow run opens (``dlrun.config.validate.check_values``)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from hydra import compose, initialize_config_dir

from dlrun.config.search_path import register, shipped_dir
from dlrun.config.validate import check_values
from dlrun.errors import ConfigError
from helpers import DATA

# override(s) -> the exact start of the error line (key first), or None when the config is fine
CASES = {
    "data.batch_size=0": "data.batch_size: must be >= 1, got 0",
    "data.batch_size=abc": "data.batch_size: expected int, got 'abc'",
    "model.dropout=1.5": "model.dropout: must be in [0, 1), got 1.5",
    "trainer.precision=nonsense": "trainer.precision: Precision 'nonsense' is invalid",
    "objective.label_smoothing=2": "objective.label_smoothing: must be in [0, 1), got 2",
    "optimizer.lr=-0.1": "optimizer.lr: Invalid learning rate: -0.1",
    "optimizer=sgd optimizer.momentum=-1": "optimizer.momentum: Invalid momentum value: -1",
    "optimizer.betas=[2,0.9]": "optimizer.betas: Invalid beta parameter at index 0: 2",
    "scheduler=plateau scheduler.factor=2": "scheduler.factor: Factor should be < 1.0",
    "trainer.devices=0": "trainer.devices: `Trainer(devices=0)` value is not a valid input",
    "trainer.val_check_interval=-1": "trainer.val_check_interval: You have passed invalid value -1",
    "trainer.max_epochs=-1": "trainer.max_epochs: -1 trains forever; give a number of epochs, or also set one of",
    "trainer.max_epochs=-1 trainer.max_steps=5": None,
    "callbacks.progress_every_n_steps=-1": (
        "callbacks.progress_every_n_steps: must be a whole number >= 0 (0: one line per epoch), got -1"
    ),
    "callbacks.progress_every_n_steps=0": None,
    "trainer.max_epochs=-1 early_stopping.patience=3": None,
    "objective.class_weights=[1,2]": "objective.class_weights: need 10 weights, got 2",
    "objective.class_weights=[1,1,1,1,1,1,1,1,1,2]": None,
    "model=cnn model.kernel_sizes=[3]": "model.kernel_sizes: need one per conv layer (2), got 1",
    "model=seq2seq": (
        "model: dlrun.models.seq2seq.Seq2Seq needs src_vocab_size, tgt_vocab_size, which data "
        "(dlrun.data.mnist.MNISTDataModule) does not provide"
    ),
    "experiment=multi30k_gru_attn data.batching=nonsense": (
        "data.batching: expected one of 'padded', 'dynamic', 'bucket', 'tokens'"
    ),
    # Text sizes follow the vocabulary, unknown before the corpus is read: the network is checked with stand-ins.
    "experiment=multi30k_gru_attn model.dropout=2": "model.dropout: must be in [0, 1), got 2",
    "experiment=multi30k_gru_attn model.teacher_forcing=3": "model.teacher_forcing: expected a ratio in [0, 1], got 3",
    "experiment=multi30k_gru_attn": None,
    "experiment=mnist_cnn": None,
    "experiment=mnist_mlp": None,
}


@pytest.fixture(scope="module")
def composer() -> Iterator:
    register()  # shipped experiments/ on Hydra's search path, as the dlrun command does
    with initialize_config_dir(str(shipped_dir("conf")), version_base="1.3"):
        yield lambda overrides: compose(
            "config", overrides=[*overrides, f"paths.data_dir={DATA}", "paths.output_dir=/nonexistent"]
        )


@pytest.mark.parametrize("overrides", list(CASES))
def test_values_are_checked_before_the_run(composer, overrides: str) -> None:
    cfg = composer(overrides.split())
    expected = CASES[overrides]
    if expected is None:
        check_values(cfg)
        return
    with pytest.raises(ConfigError) as caught:
        check_values(cfg)
    message = str(caught.value)
    assert message.startswith(expected), message
    assert "\n" not in message and "\x1b" not in message


def test_checks_allocate_no_weights(composer) -> None:
    """A network of any size is checked on the meta device: a 10^10-parameter MLP costs nothing."""
    check_values(composer(["model.hidden_sizes=[100000,100000]"]))


def test_checks_read_no_data(composer, tmp_path) -> None:
    cfg = composer(["data.download=false"])
    cfg.data.data_dir = str(tmp_path / "nowhere")
    check_values(cfg)  # missing files are the data module's to report, when it reads them
    assert not (tmp_path / "nowhere").exists()
    assert re.match(r"\S+", cfg.data.data_dir)
