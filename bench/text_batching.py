"""Text batching: pad fraction, real-token throughput and peak memory of each ``data.batching`` mode.

    python bench/text_batching.py                          # 20 training steps per mode, 3 rounds
    python bench/text_batching.py --batches 2 --repeats 1 --modes padded,bucket

Multi30k train (de->en), the GRU+attention model of ``conf/model/seq2seq.yaml`` with its objective, Adam 1e-3,
batch size 128 sentences (``tokens``: 4096 padded tokens), built by dlrun's own config and builders and
trained by a Lightning Trainer with dlrun's ``Throughput`` callback (no validation, no MLflow). Per mode:

- ``pad_fraction_epoch``: padding / all tokens (source + target) over one full epoch's batches, from lengths;
- ``pad_fraction_steps``: the same over the trained steps (dlrun's ``train/pad_fraction``);
- ``tokens_per_s``: real target tokens per second of the training steps (dlrun's ``train/tokens_per_s``);
- ``peak_mib``: peak memory of the steps above what was in use before them (CPU: resident set, sampled
  every 2 ms after returning freed memory to the OS; CUDA: ``max_memory_allocated``).

Modes run in rounds (padded, dynamic, bucket, tokens, then again), after one untimed warm-up; medians reported.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import logging
import os
import threading
import warnings
from typing import Any

import torch

from common import data_dir, emit, machine, median, set_threads, size_args

MODES = ("padded", "dynamic", "bucket", "tokens")


class PeakMemory:
    """Peak memory above the level at ``start``: CUDA allocator stats, else the sampled resident set size."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._stop = threading.Event()
        self._base = self._peak = 0

    def _rss(self) -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * self._page

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self._peak = max(self._peak, self._rss())

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed heap back, so the baseline is what is in use
        except OSError:
            pass
        self._base = self._peak = self._rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self._peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, self._rss())

    @property
    def mib(self) -> float:
        """Peak above the baseline, MiB."""
        return (self._peak - self._base) / 2**20


def build(mode: str, overrides: list[str]) -> tuple[Any, Any]:
    """dlrun's config and Multi30k data module (set up for fit) for ``data.batching=mode``."""
    from hydra.core.hydra_config import HydraConfig

    from dlrun.api import compose_job
    from dlrun.config.build import build as build_node

    cfg = compose_job(["data=multi30k", "model=seq2seq", f"data.batching={mode}", *overrides])
    HydraConfig.instance().set_config(cfg)  # resolves ${hydra:...} as in a run
    datamodule = build_node(cfg.data, "data")
    datamodule.setup("fit")
    return cfg, datamodule


def fresh_module(cfg: Any, datamodule: Any, seed: int) -> Any:
    """A newly initialized translation module (network, objective, optimizer) as ``dlrun`` builds it."""
    from dlrun.contracts import data_view
    from dlrun.tasks.parts import build_objective

    torch.manual_seed(seed)
    return build_objective(cfg, data_view(datamodule)).module


def train_steps(datamodule: Any, module: Any, steps: int, accelerator: str) -> dict[str, float]:
    """Train ``steps`` batches with dlrun's Throughput callback; tokens/s, pad fraction and peak memory."""
    import pytorch_lightning as pl

    from dlrun.callbacks.monitors import Throughput

    trainer = pl.Trainer(
        accelerator=accelerator, devices=1, max_epochs=1, limit_train_batches=steps, limit_val_batches=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[Throughput(module.count_units, module.throughput_unit)], use_distributed_sampler=False,
        num_sanity_val_steps=0,
    )  # fmt: skip
    with PeakMemory(accelerator == "gpu") as peak:
        trainer.fit(module, datamodule=datamodule)
    metrics = trainer.callback_metrics
    return {
        "tokens_per_s": float(metrics["train/tokens_per_s"]),
        "pad_fraction_steps": float(metrics["train/pad_fraction"]),
        "peak_mib": peak.mib,
    }


def main() -> None:
    """Train each batching mode for a few steps, in rounds; print medians per mode and bucket vs padded."""
    parser = size_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]), batches=20, repeats=3)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of " + ", ".join(MODES))
    parser.add_argument("overrides", nargs="*", help="extra dlrun overrides, e.g. model.hidden_size=256")
    args = parser.parse_args()
    set_threads(args.threads)
    os.environ.setdefault("DLRUN_DATA_DIR", str(data_dir()))
    warnings.filterwarnings("ignore")  # Lightning's advice on workers and logging intervals
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    modes = args.modes.split(",")

    built = {mode: build(mode, args.overrides) for mode in modes}
    pad_epoch = {mode: dm.pad_fraction("train") for mode, (_, dm) in built.items()}
    cfg, dm = built[modes[0]]
    train_steps(dm, fresh_module(cfg, dm, 0), min(args.batches, 3), accelerator)  # untimed warm-up

    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    for repeat in range(args.repeats):
        for mode in modes:
            cfg, datamodule = built[mode]
            runs[mode].append(train_steps(datamodule, fresh_module(cfg, datamodule, repeat), args.batches, accelerator))
            stats = runs[mode][-1]
            print(
                f"round {repeat + 1} {mode:8s} {stats['tokens_per_s']:8.0f} tokens/s  "
                f"pad {stats['pad_fraction_steps']:.3f}  peak {stats['peak_mib']:.0f} MiB",
                flush=True,
            )
    result: dict[str, Any] = {"machine": machine(), "accelerator": accelerator, "steps": args.batches, "modes": {}}
    for mode, stats in runs.items():
        result["modes"][mode] = {key: median([s[key] for s in stats]) for key in stats[0]}
        result["modes"][mode]["pad_fraction_epoch"] = pad_epoch[mode]
        result["modes"][mode]["runs"] = stats
    if "bucket" in runs and "padded" in runs:
        ratios = [b["tokens_per_s"] / p["tokens_per_s"] for b, p in zip(runs["bucket"], runs["padded"], strict=True)]
        result["bucket_vs_padded_tokens_per_s"] = median(ratios)
    result["machine"]["load_1min_end"] = round(os.getloadavg()[0], 2)
    emit(result, args.json)


if __name__ == "__main__":
    main()
