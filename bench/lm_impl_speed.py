"""Recurrent LM training speed: fused layer (``impl=layer``) vs the same weights unrolled with cells (``impl=cell``).

    python bench/lm_impl_speed.py                      # 30 steps per side, 3 alternating rounds, 1 thread
    python bench/lm_impl_speed.py --batches 5 --repeats 1

The model of ``experiments/multi30k_lm.yaml`` (``conf/model/rnn_lm.yaml`` with the preset's overrides), sized by
the preset's data (Multi30k English, its vocabulary), trained with Adam on the preset's real training windows
(``batch_size`` streams x ``bptt`` tokens) in a plain loop: forward, loss, backward, gradient clipping, step.
Both sides share one initial state dict and the same windows. Reported per side: target tokens per second of
the timed steps (median over rounds), plus forward-only tokens per second (eval mode, no grad), and the ratios;
then the same for the same recurrent layers under a 50-word vocabulary (ids folded into it), where the
softmax layer no longer dominates a step.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from omegaconf import OmegaConf

from common import ROOT, data_dir, emit, machine, median, set_threads, size_args


def preset() -> tuple[dict[str, Any], dict[str, Any]]:
    """``(model kwargs, data kwargs)`` of the preset: group defaults merged with the preset's overrides."""
    exp = OmegaConf.load(ROOT / "experiments" / "multi30k_lm.yaml")
    model = OmegaConf.merge(OmegaConf.load(ROOT / "conf" / "model" / "rnn_lm.yaml"), exp.get("model", {}))
    data = OmegaConf.merge(OmegaConf.load(ROOT / "conf" / "data" / "lm.yaml"), exp.get("data", {}))
    model_kwargs = {k: v for k, v in OmegaConf.to_container(model).items() if not k.startswith("_")}
    return model_kwargs, {k: data[k] for k in ("batch_size", "bptt", "min_freq")}


def timed_steps(net: torch.nn.Module, windows: list[Any], train: bool) -> float:
    """Seconds for one pass over ``windows``: training steps, or forward passes without gradients."""
    import torch.nn.functional as F

    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3) if train else None
    net.train(train)
    state = None
    start = time.perf_counter()
    for window in windows:
        with torch.set_grad_enabled(train):
            logits, state = net(window.tokens, state)
            state = tuple(s.detach() for s in state)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), window.target.reshape(-1))
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 0.5)
            optimizer.step()
    return time.perf_counter() - start


SMALL_VOCAB = 50


def compare(model_kwargs: dict[str, Any], vocab: int, warmup: list[Any], windows: list[Any], repeats: int) -> dict:
    """Tokens/s of both implementations (one initial state dict), training and forward-only, and their ratios."""
    from dlrun.data.streams import LMBatch
    from dlrun.models.rnn_lm import RNNLanguageModel

    fold = [LMBatch(w.tokens % vocab, w.target % vocab, w.start) for w in warmup + windows]  # ids inside the vocabulary
    warmup, windows = fold[: len(warmup)], fold[len(warmup) :]
    tokens = sum(w.target.numel() for w in windows)
    torch.manual_seed(0)
    base = RNNLanguageModel(vocab, **{**model_kwargs, "impl": "layer"})
    nets = {}
    for impl in ("layer", "cell"):
        net = RNNLanguageModel(vocab, **{**model_kwargs, "impl": impl})
        net.load_state_dict(base.state_dict())
        timed_steps(net, warmup, train=True)
        nets[impl] = net
    seconds: dict[str, list[float]] = {f"{impl}_{kind}": [] for impl in nets for kind in ("train", "forward")}
    for _ in range(repeats):
        for impl, net in nets.items():
            seconds[f"{impl}_train"].append(timed_steps(net, windows, train=True))
            seconds[f"{impl}_forward"].append(timed_steps(net, windows, train=False))
    rates = {key: tokens / median(values) for key, values in seconds.items()}
    return {
        "vocab_size": vocab,
        "tokens_per_s": {key: round(rate) for key, rate in rates.items()},
        "layer_over_cell_train": round(rates["layer_train"] / rates["cell_train"], 2),
        "layer_over_cell_forward": round(rates["layer_forward"] / rates["cell_forward"], 2),
    }


def main() -> None:
    parser = size_args(argparse.ArgumentParser(description=__doc__.split("\n")[0]), batches=30, repeats=3)
    args = parser.parse_args()
    set_threads(args.threads)
    from dlrun.data.lm import LanguageModelDataModule

    model_kwargs, data_kwargs = preset()
    folder = data_dir() / "multi30k"
    dm = LanguageModelDataModule(
        str(folder / "train.en.gz"), str(folder / "val.en.gz"), str(folder / "test_2016_flickr.en.gz"), **data_kwargs
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    windows = []
    for window in loader:
        windows.append(window)
        if len(windows) == args.batches + 2:
            break
    warmup, windows = windows[:2], windows[2:]
    vocab_size = dm.dims["vocab_size"]
    results: dict[str, Any] = {
        "machine": machine(),
        "model": {**model_kwargs, "vocab_size": vocab_size},
        "data": data_kwargs,
        "steps": len(windows),
        "tokens_per_step": sum(w.target.numel() for w in windows) // max(len(windows), 1),
    }
    # The preset's network, then the same recurrent layers under a 50-word softmax: what unrolling costs
    # where the output layer does not dominate the step.
    for name, vocab in (("preset", vocab_size), ("small_vocab", SMALL_VOCAB)):
        results[name] = compare(model_kwargs, vocab, warmup, windows, args.repeats)
    emit(results, args.json)


if __name__ == "__main__":
    main()
