"""The language-model objective: truncated BPTT, stateful vs stateless, overfit, resume, samples."""

from __future__ import annotations

import gzip
import warnings
from functools import partial
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from dlrun.callbacks.lm_samples import LanguageModelSamples
from dlrun.data.lm import LanguageModelDataModule
from dlrun.data.streams import StreamWindows, cut_streams
from dlrun.models.rnn_lm import RNNLanguageModel
from dlrun.objectives.language_model import STATE_KEY, LanguageModelObjective

V = 29
SENTENCES = ["the cat sat on the mat .", "a dog ran in the park !", "birds sing at dawn ."]


def objective(
    stateful: bool = True, seed: int = 0, lr: float = 1e-2, size: int = 16, **kwargs
) -> LanguageModelObjective:
    torch.manual_seed(seed)
    net = RNNLanguageModel(kwargs.pop("vocab_size", V), size, size, num_layers=kwargs.pop("num_layers", 1), dropout=0.0)
    return LanguageModelObjective(net, partial(torch.optim.Adam, lr=lr), stateful=stateful, **kwargs)


def windows(count: int = 4, rows: int = 3, bptt: int = 5) -> list:
    torch.manual_seed(123)
    data = StreamWindows(cut_streams(torch.randint(4, V, (rows * (count * bptt + 1),)), rows))
    return [data[(k * bptt, bptt)] for k in range(count)]


def corpus(tmp_path: Path, repeats: int = 12) -> dict[str, str]:
    path = tmp_path / "tiny.txt.gz"
    path.write_bytes(gzip.compress(("\n".join(SENTENCES * repeats) + "\n").encode()))
    return {"train": str(path), "val": str(path), "test": str(path)}


def trainer(tmp_path: Path, **kwargs) -> pl.Trainer:
    options = {
        "logger": False, "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False,
        "default_root_dir": str(tmp_path), "num_sanity_val_steps": 0,
    }  # fmt: skip
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    return pl.Trainer(**{**options, **kwargs})


# ---------------------------------------------------------------- truncated BPTT


def test_state_is_carried_and_detached_between_training_steps() -> None:
    module = objective(stateful=True)
    first, second = windows(2)
    embedded: list[torch.Tensor] = []
    module.net.embedding.register_forward_hook(lambda mod, args, out: embedded.append(out))
    module.training_step(first, 0)
    loss = module.training_step(second, 1)
    # Carried: the second window's loss is the one from the first window's final state, not from zeros.
    _, state = module.net(first.tokens)
    logits, _ = module.net(second.tokens, state)
    carried = torch.nn.functional.cross_entropy(logits.flatten(0, 1), second.target.flatten())
    zeros = torch.nn.functional.cross_entropy(module.net(second.tokens)[0].flatten(0, 1), second.target.flatten())
    torch.testing.assert_close(loss, carried)
    assert abs(loss.item() - zeros.item()) > 1e-4
    # Detached: the gradient of step 2 does not reach step 1's inputs (its embeddings) ...
    assert torch.autograd.grad(loss, embedded[0], allow_unused=True)[0] is None
    assert torch.autograd.grad(loss, embedded[1])[0].abs().sum() > 0
    # ... though the same state, not detached, would carry it there: the check above can fail.
    _, state = module.net(first.tokens)
    first_inputs = embedded[-1]
    logits, _ = module.net(second.tokens, state)
    undetached = torch.nn.functional.cross_entropy(logits.flatten(0, 1), second.target.flatten())
    assert torch.autograd.grad(undetached, first_inputs)[0].abs().sum() > 0
    assert all(not s.requires_grad for s in module._states["train"][0])


def test_stateful_and_stateless_differ_only_after_the_first_window() -> None:
    stateful, stateless = objective(stateful=True), objective(stateful=False)
    stateless.load_state_dict(stateful.state_dict())
    batches = windows(4)
    for epoch in range(2):  # the state resets where an epoch starts (window start 0)
        with torch.no_grad():
            a = [float(stateful.training_step(b, k)) for k, b in enumerate(batches)]
            b_ = [float(stateless.training_step(b, k)) for k, b in enumerate(batches)]
        assert a[0] == b_[0], f"epoch {epoch}: the first window starts from zeros either way"
        assert all(abs(x - y) > 1e-5 for x, y in zip(a[1:], b_[1:], strict=True))
        # Stateless: each window is the net's loss from zeros; a window read twice gives the same loss.
        assert float(stateless.training_step(batches[2], 9)) == pytest.approx(b_[2], abs=1e-6)
    # A window that does not continue the saved position starts from zeros, even when stateful.
    with torch.no_grad():
        assert float(stateful.training_step(batches[2], 9)) == pytest.approx(b_[2], abs=1e-6)


def test_evaluation_starts_from_zeros_and_keeps_the_training_state(tmp_path: Path) -> None:
    module = objective(stateful=True, vocab_size=50)
    dm = LanguageModelDataModule(**corpus(tmp_path, repeats=4), batch_size=2, eval_batch_size=2, bptt=4, min_freq=1)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    with torch.no_grad():
        module.training_step(batches[0], 0)
        module.training_step(batches[1], 1)
        saved = module._states["train"]
        module.on_validation_epoch_start()
        module.validation_step(batches[0], 0)
        module.validation_step(batches[1], 1)
    assert module._states["train"] is saved  # validation carries its own state
    module.on_validation_epoch_start()
    assert "val" not in module._states  # every pass starts from zeros


# ---------------------------------------------------------------- training with Lightning


def test_tiny_corpus_is_overfit_to_perplexity_near_one(tmp_path: Path) -> None:
    dm = LanguageModelDataModule(**corpus(tmp_path), batch_size=2, eval_batch_size=2, bptt=10, min_freq=1)
    dm.setup("fit")
    module = objective(
        stateful=True, lr=2e-2, size=32, prompts=[], samples_per_prompt=0, vocab_size=dm.dims["vocab_size"]
    )
    trainer(tmp_path, max_epochs=40, gradient_clip_val=1.0).fit(module, datamodule=dm)
    assert float(trainer_metrics := module.trainer.callback_metrics["val/ppl"]) < 1.3, trainer_metrics
    results = module.trainer.test(module, datamodule=dm, verbose=False)
    assert results[0]["test/ppl"] < 1.3
    assert module.predict_lines(["the cat"], dm) == ["the cat sat on the mat."]


def test_resume_from_a_checkpoint_continues_as_if_uninterrupted(tmp_path: Path) -> None:
    dm = LanguageModelDataModule(**corpus(tmp_path, repeats=3), batch_size=2, eval_batch_size=2, bptt=6, min_freq=1)
    dm.setup("fit")
    v = dm.dims["vocab_size"]
    straight = objective(vocab_size=v, samples_per_prompt=0)
    trainer(tmp_path / "a", max_epochs=2).fit(straight, datamodule=dm)

    first = objective(vocab_size=v, samples_per_prompt=0)
    t1 = trainer(tmp_path / "b", max_epochs=1)
    t1.fit(first, datamodule=dm)
    path = tmp_path / "last.ckpt"
    t1.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)  # plain data: hyper-parameters, state tensors
    assert checkpoint[STATE_KEY]["next"] == dm.rows("train").size(1) - 1
    resumed = objective(vocab_size=v, seed=99, samples_per_prompt=0)
    trainer(tmp_path / "c", max_epochs=2).fit(resumed, datamodule=dm, ckpt_path=str(path))
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_mid_epoch_state_survives_a_checkpoint() -> None:
    module, batches = objective(), windows(3)
    with torch.no_grad():
        module.training_step(batches[0], 0)
        checkpoint: dict = {}
        module.on_save_checkpoint(checkpoint)
        expected = float(module.training_step(batches[1], 1))
        restored = objective(seed=5)
        restored.load_state_dict(module.state_dict())
        restored.on_load_checkpoint(checkpoint)
        assert float(restored.training_step(batches[1], 1)) == pytest.approx(expected, abs=1e-6)
        fresh = objective(seed=5)
        fresh.load_state_dict(module.state_dict())
        assert float(fresh.training_step(batches[1], 1)) != pytest.approx(expected, abs=1e-4)


def test_samples_are_written_and_published_every_validation_epoch(tmp_path: Path) -> None:
    dm = LanguageModelDataModule(**corpus(tmp_path, repeats=2), batch_size=2, eval_batch_size=2, bptt=8, min_freq=1)
    dm.setup("fit")
    module = objective(
        vocab_size=dm.dims["vocab_size"], prompts=["The cat", ""], samples_per_prompt=2, top_k=3, max_new_tokens=5
    )
    published: list = []
    callback = LanguageModelSamples(
        tmp_path / "run", publish=lambda path, folder: published.append((path.name, folder))
    )
    trainer(tmp_path, max_epochs=2, limit_train_batches=2, callbacks=[callback]).fit(module, datamodule=dm)
    assert published == [("epoch_000.txt", "samples"), ("epoch_001.txt", "samples")]
    text = (tmp_path / "run" / "samples" / "epoch_001.txt").read_text(encoding="utf-8").splitlines()
    assert text[0] == "epoch 1, temperature 0.8, top_k 3"
    assert text[1] == "prompt: 'the cat'" and text[2].startswith("  the cat") and text[3].startswith("  the cat")
    assert text[4] == "prompt: ''" and len(text) == 7
    lines = module.predict_lines(["A dog", "birds"], dm)
    assert len(lines) == 2 and lines[0].startswith("a dog") and lines[1].startswith("birds")
