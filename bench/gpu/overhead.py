"""GPU overhead: dlrun vs a hand-written loop vs a bare Lightning Trainer, in one process on one GPU.

    python bench/gpu/overhead.py --json bench/results/gpu/overhead.json    # every case, a few minutes on an H100/H200
    python bench/gpu/overhead.py --cases mnist --compile off               # a subset
    python bench/gpu/overhead.py --smoke                                    # tiny sizes on the CPU (the test)

Cases: the MNIST MLP (784-512-512-10) and CNN (the Keras example) at batch 128 and 1024, and the Multi30k
GRU+attention seq2seq on the preset's bucketed batches (tokens/s), each in every ``--precisions`` and with
``torch.compile`` off and on (``--compile``). Every side trains the same network with Adam 1e-3 on the
same batches for ``--skip`` untimed steps (warm-up, cuDNN autotuning, compilation), then ``--steps`` timed
steps, synchronized with the device at both ends of the timed window:

- **dlrun**: ``dlrun.run`` (Hydra config, dlrun's callbacks, ``tracking=none``: no MLflow), MNIST on the
  device (``data.on_device``), ``compile.*`` for compilation;
- **lightning**: the hand loop's step in a bare ``Trainer`` (no logger, checkpoints or progress bar);
- **hand**: the plain PyTorch loop of ``bench/reference_loop.py``, data on the device (MNIST normalized there
  once, batches indexed by a device permutation; seq2seq batches moved there up front, dlrun's network with
  the preset's loss written out and gradient clipping), ``torch.autocast`` for bf16-mixed.

Sides alternate (dlrun, lightning, hand, dlrun, ...) for ``--repeats`` rounds, after one untimed round
for compiled cases (each side's graphs compiled before any is timed); each result is a median
and every repeat is kept. Peak GPU memory is per side (``max_memory_allocated`` over its run). For the
phase table (``--phases``), the MNIST cases at batch 128 without compilation are also run with
``time.perf_counter()`` marks at the step's hooks, as ``bench/step_phases.py`` does on the CPU: host time
per phase, unsynchronized, so a phase that only queues GPU work is short; where the host's whole step
takes longer than the GPU's, the GPU waits for the host, and the table says where the host spends it.
No network and no MLflow server are needed.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: common.py, reference_loop.py, step_phases.py
from common import data_dir, emit, machine, median, set_threads  # noqa: E402
from reference_loop import TRAIN_SIZE, mnist_loss, mnist_network, shuffled, train, training_set  # noqa: E402
from step_phases import PHASES, mark, marked_training_step, marker_callback, phase_medians  # noqa: E402


@dataclass(frozen=True)
class Case:
    """One configuration every side trains."""

    task: str  # mnist | seq2seq
    model: str  # mlp | cnn | gru_attn
    batch_size: int
    precision: str  # 32-true | bf16-mixed
    compiled: bool

    @property
    def name(self) -> str:
        """Short label, e.g. ``cnn b128 bf16-mixed compiled``."""
        return f"{self.model} b{self.batch_size} {self.precision}{' compiled' if self.compiled else ''}"

    @property
    def unit(self) -> str:
        """What throughput counts."""
        return "tokens" if self.task == "seq2seq" else "samples"


@dataclass
class Settings:
    """Sizes and switches shared by every side."""

    device: torch.device
    steps: int
    skip: int
    compile_mode: str
    compile_backend: str
    workdir: Path
    smoke: bool


# ---------------------------------------------------------------- timing


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Window:
    """Start/end times of the timed steps ``[skip, skip + steps)``, synchronized with the device at both ends.

    Steps count across epochs: an epoch's end (dlrun's checkpoint, epoch line, throughput) inside the
    window is part of what is timed, as it is part of a user's training; validation is off.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.start = self.end = 0.0
        self.count = 0  # steps started so far (Lightning's batch_idx restarts every epoch)

    def before(self, step: int) -> None:
        """Call before step ``step`` starts."""
        if step == self.settings.skip:
            synchronize(self.settings.device)
            self.start = time.perf_counter()

    def after(self, step: int) -> None:
        """Call after step ``step`` ended."""
        if step == self.settings.skip + self.settings.steps - 1:
            synchronize(self.settings.device)
            self.end = time.perf_counter()

    @property
    def seconds(self) -> float:
        """Length of the timed window."""
        return self.end - self.start


def clock_callback(window: Window, settings: Settings, case: Case) -> Any:
    """A Lightning callback that times the window and, when dlrun has not compiled the network, compiles it."""
    import pytorch_lightning as pl

    from dlrun.tasks.compile import compile_network, is_compiled

    class Clock(pl.Callback):
        compiled_by = "none"

        def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
            if case.compiled:
                if is_compiled(pl_module):
                    self.compiled_by = "dlrun"
                else:  # compile.* not wired into dlrun's train task yet: compile exactly as it would
                    compile_network(pl_module, settings.compile_mode, settings.compile_backend)
                    self.compiled_by = "bench"

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            window.before(window.count)

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            window.after(window.count)
            window.count += 1

    return Clock()


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, float | None]]:
    """Yields a dict whose ``gib`` is set, on exit, to the peak GPU memory allocated inside (None on the CPU)."""
    out: dict[str, float | None] = {"gib": None}
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    yield out
    if device.type == "cuda":
        synchronize(device)
        out["gib"] = torch.cuda.max_memory_allocated(device) / 2**30


def autocast(case: Case, device: torch.device) -> Any:
    """``torch.autocast`` for bf16-mixed, nothing for fp32 (as Lightning's precision plugin does)."""
    if case.precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---------------------------------------------------------------- data and networks of the hand and Lightning sides


class Data:
    """What the hand and Lightning sides train on, built once per task and kept on the device."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._mnist: tuple[torch.Tensor, torch.Tensor] | None = None
        self._text: dict[int, tuple[list[Any], int, Any, dict[str, Any]]] = {}

    def mnist(self) -> tuple[torch.Tensor, torch.Tensor]:
        """55,000 training images normalized once on the device ``(n, 1, 28, 28)`` and their labels."""
        if self._mnist is None:
            self._mnist = training_set(data_dir() / "mnist", self.settings.device)
        return self._mnist

    def text(self, case: Case, seed: int) -> tuple[list[Any], int, Any, dict[str, Any]]:
        """The first skip+steps bucketed training batches (epochs 0, 1, ...; on the device), their timed tokens,
        the config and the vocabulary sizes. Seed 0's batches serve every repeat (the data order is not the point)."""
        if case.batch_size not in self._text:
            from hydra.core.hydra_config import HydraConfig

            from dlrun.api import compose_job
            from dlrun.tasks.parts import build_data

            cfg = compose_job(seq2seq_overrides(case, self.settings, seed, self.settings.workdir / "compose"))
            HydraConfig.instance().set_config(cfg)  # the data paths interpolate ${hydra:runtime.cwd}
            data = build_data(cfg)
            data.module.prepare_data()
            data.module.setup("fit")
            loader = data.module.train_dataloader()
            wanted = self.settings.skip + self.settings.steps
            batches: list[Any] = []
            for epoch in itertools.count():  # as Lightning draws them: set_epoch before each epoch
                loader.sampler.set_epoch(epoch)
                batches += [self.on_device(b) for b in itertools.islice(loader, wanted - len(batches))]
                if len(batches) >= wanted:
                    break
            timed = batches[self.settings.skip :]
            tokens = sum(int((b.tgt[:, 1:] != 0).sum()) for b in timed)
            self._text[case.batch_size] = (batches, tokens, cfg, data.dims())
        return self._text[case.batch_size]

    def on_device(self, batch: Any) -> Any:
        """A text batch on the device with ``src_lengths`` left on the host, as dlrun moves it (packing needs
        them there; on the device the network would copy them back, a sync per step)."""
        from dlrun.data.text_batching import TextBatch

        device = self.settings.device
        return TextBatch(batch.src.to(device), batch.src_lengths, batch.tgt.to(device), batch.ids.to(device))


def network(case: Case, data: Data, seed: int) -> torch.nn.Module:
    """The case's network on the device, initialized from ``seed`` (hand-written for MNIST, dlrun's seq2seq)."""
    torch.manual_seed(seed)
    if case.task == "mnist":
        net = mnist_network(case.model)
    else:
        from dlrun.config.build import build

        _, _, cfg, dims = data.text(case, seed)
        net = build(cfg.model, "model", **dims)
    return net.to(data.settings.device)


def seq2seq_loss(net: torch.nn.Module, batch: Any) -> torch.Tensor:
    """Token-averaged cross-entropy with label smoothing 0.1, the preset's objective, written out."""
    logits = net(batch.src, batch.src_lengths, batch.tgt[:, :-1])
    target = batch.tgt[:, 1:]
    loss_sum = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(),
        target.reshape(-1),
        ignore_index=0,
        reduction="sum",
        label_smoothing=0.1,
    )
    return loss_sum / (target != 0).sum().clamp(min=1)


def mnist_batches(data: Data, case: Case) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The skip+steps batches of a device permutation (indexing happens as they are drawn)."""
    images, labels = data.mnist()
    order = shuffled(len(labels), case.batch_size, device=images.device)
    wanted = data.settings.skip + data.settings.steps
    if len(order) < wanted:
        order = order * (wanted // len(order) + 1)
    return order[:wanted]


# ---------------------------------------------------------------- the three sides


def hand_side(case: Case, data: Data, seed: int, marks: bool = False) -> tuple[float, float | None]:
    """Seconds of the timed window and peak GPU GiB of the hand-written loop (``reference_loop.train``)."""
    settings = data.settings
    net = network(case, data, seed)
    if case.compiled:
        options = {"mode": settings.compile_mode} if settings.compile_backend == "inductor" else {}
        net.compile(backend=settings.compile_backend, **options)
    window = Window(settings)

    def hook(point: str, step: int) -> None:
        if point == "batch_start":
            window.before(step)
        if marks:
            mark(point)
        if point == "batch_end":
            window.after(step)

    if case.task == "mnist":
        images, labels = data.mnist()
        steps, fetch, loss = mnist_batches(data, case), lambda index: (images[index], labels[index]), mnist_loss
    else:
        steps, fetch, loss = data.text(case, seed)[0], None, seq2seq_loss
    with peak_memory(settings.device) as peak:
        clip = 1.0 if case.task == "seq2seq" else None
        train(net, steps, fetch, loss, clip_norm=clip, autocast=lambda: autocast(case, settings.device), hook=hook)
    return window.seconds, peak["gib"]


class Batches:
    """An iterable of device batches for a bare Trainer (Lightning leaves tensors already on the device alone)."""

    def __init__(self, data: Data, case: Case, seed: int) -> None:
        self.data, self.case, self.seed = data, case, seed

    def __iter__(self) -> Iterator[Any]:
        if self.case.task == "mnist":
            images, labels = self.data.mnist()
            return ((images[index], labels[index]) for index in mnist_batches(self.data, self.case))
        return iter(self.data.text(self.case, self.seed)[0])

    def __len__(self) -> int:
        return self.data.settings.skip + self.data.settings.steps


def lightning_side(case: Case, data: Data, seed: int, marks: bool = False) -> tuple[float, float | None]:
    """Seconds of the timed window and peak GPU GiB of the hand loop's step in a bare Lightning Trainer."""
    import pytorch_lightning as pl

    settings = data.settings
    net = network(case, data, seed)

    def training_step(self: Any, batch: Any, batch_idx: int) -> torch.Tensor:
        return (mnist_loss if case.task == "mnist" else seq2seq_loss)(self.net, batch)

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=1e-3)

        def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
            return batch  # already where the hand loop has it (text lengths on the host)

    Module.training_step = marked_training_step(training_step) if marks else training_step
    window = Window(settings)
    callbacks = [clock_callback(window, settings, case)] + ([marker_callback()] if marks else [])
    trainer = pl.Trainer(
        accelerator=settings.device.type if settings.device.type == "cpu" else "gpu", devices=1, max_epochs=1,
        max_steps=settings.skip + settings.steps,
        precision=case.precision, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, callbacks=callbacks,
        gradient_clip_val=1.0 if case.task == "seq2seq" else None,
    )  # fmt: skip
    with peak_memory(settings.device) as peak:
        trainer.fit(Module(), train_dataloaders=Batches(data, case, seed))
    return window.seconds, peak["gib"]


def mnist_overrides(case: Case, settings: Settings, seed: int, run_dir: Path) -> list[str]:
    """``dlrun`` arguments of one MNIST measurement."""
    model = {
        "mlp": ["model=mlp", "model.hidden_sizes=[512,512]", "model.dropout=0.2"],
        "cnn": ["model=cnn", "model.channels=[32,64]", "model.kernel_sizes=[3,3]", "model.dense_size=128"],
    }[case.model]
    return [
        *model,
        "data=mnist",
        f"data.batch_size={case.batch_size}",
        "data.on_device=true",
        *common_overrides(case, settings, seed, run_dir),
    ]


def seq2seq_overrides(case: Case, settings: Settings, seed: int, run_dir: Path) -> list[str]:
    """``dlrun`` arguments of one seq2seq measurement: the preset, its bucketed batches, fewer steps."""
    overrides = ["experiment=multi30k_gru_attn", f"data.batch_size={case.batch_size}", "scheduler=none"]
    if settings.smoke:  # a tiny network: the smoke run checks the plumbing, not the speed
        overrides += ["model.emb_size=16", "model.hidden_size=16"]
    return overrides + common_overrides(case, settings, seed, run_dir)


def common_overrides(case: Case, settings: Settings, seed: int, run_dir: Path) -> list[str]:
    """Overrides every dlrun measurement shares: one short epoch, no MLflow, no plots."""
    accelerator = "cpu" if settings.device.type == "cpu" else "gpu"
    return [
        "optimizer=adam",
        "optimizer.lr=1e-3",
        f"trainer.accelerator={accelerator}",
        "trainer.devices=1",
        f"trainer.precision={case.precision}",
        "trainer.max_epochs=1000",
        f"trainer.max_steps={settings.skip + settings.steps}",
        "trainer.limit_val_batches=0",
        "trainer.limit_test_batches=1",
        "callbacks.plots=false",
        "callbacks.progress_every_n_steps=0",
        "checkpoint.save_last=false",
        "tracking=none",
        f"compile.enabled={str(case.compiled).lower()}",
        f"compile.mode={settings.compile_mode}",
        f"compile.backend={settings.compile_backend}",
        f"seed={seed}",
        f"hydra.run.dir={run_dir}",
    ]


def dlrun_side(case: Case, data: Data, seed: int, marks: bool = False) -> tuple[float, float | None, str]:
    """Seconds of the timed window, peak GPU GiB and who compiled (dlrun/bench/none) for ``dlrun.run``."""
    import dlrun
    import dlrun.tasks.train
    from dlrun.objectives.classification import ClassificationModule

    settings = data.settings
    window = Window(settings)
    clock = clock_callback(window, settings, case)
    extra = [clock] + ([marker_callback()] if marks else [])
    build_trainer, step = dlrun.tasks.train.build_trainer, ClassificationModule.training_step

    def with_extra(cfg: Any, job: Any, run: Any, callbacks: list[Any]) -> Any:
        return build_trainer(cfg, job, run, [*extra, *callbacks])

    dlrun.tasks.train.build_trainer = with_extra
    if marks:
        ClassificationModule.training_step = marked_training_step(step)
    run_dir = settings.workdir / f"run-{time.time_ns()}"
    make = mnist_overrides if case.task == "mnist" else seq2seq_overrides
    try:
        with peak_memory(settings.device) as peak:
            dlrun.run(make(case, settings, seed, run_dir))
    finally:
        dlrun.tasks.train.build_trainer, ClassificationModule.training_step = build_trainer, step
    return window.seconds, peak["gib"], clock.compiled_by


# ---------------------------------------------------------------- running the cases


def units(case: Case, data: Data, seed: int) -> int:
    """Samples or real target tokens in the timed window."""
    if case.task == "mnist":  # every side walks epochs of full batches and one smaller last batch
        full, rest = divmod(TRAIN_SIZE, case.batch_size)
        epoch = [case.batch_size] * full + ([rest] if rest else [])
        sizes = epoch * ((data.settings.skip + data.settings.steps) // len(epoch) + 1)
        return sum(sizes[data.settings.skip : data.settings.skip + data.settings.steps])
    return data.text(case, seed)[1]


def measure(case: Case, data: Data, repeats: int) -> dict[str, Any]:
    """Alternate the three sides ``repeats`` times; medians of units/s, ratios, peak memory."""
    rates: dict[str, list[float]] = {"dlrun": [], "lightning": [], "hand": []}
    peaks: dict[str, list[float | None]] = {name: [] for name in rates}
    compiled_by = "none"
    if case.compiled:  # compile every side's graphs once, untimed: otherwise the first side pays what the others reuse
        dlrun_side(case, data, 0), lightning_side(case, data, 0), hand_side(case, data, 0)
    for repeat in range(repeats):
        seed = repeat
        count = units(case, data, seed)
        seconds, peak, compiled_by = dlrun_side(case, data, seed)
        rates["dlrun"].append(count / seconds)
        peaks["dlrun"].append(peak)
        for name, side in (("lightning", lightning_side), ("hand", hand_side)):
            seconds, peak = side(case, data, seed)
            rates[name].append(count / seconds)
            peaks[name].append(peak)
        line = "  ".join(f"{n} {v[-1]:,.0f}" for n, v in rates.items())
        print(f"{case.name} repeat {repeat + 1}: {line} {case.unit}/s", flush=True)
    ratio = [d / h for d, h in zip(rates["dlrun"], rates["hand"], strict=True)]
    return {
        **asdict(case),
        "unit": case.unit,
        **{f"{name}_{case.unit}_per_s": median(values) for name, values in rates.items()},
        "ratio": median(ratio),
        "lightning_vs_hand": median([lt / h for lt, h in zip(rates["lightning"], rates["hand"], strict=True)]),
        "dlrun_vs_lightning": median([d / lt for d, lt in zip(rates["dlrun"], rates["lightning"], strict=True)]),
        "peak_gib": {name: max((p for p in values if p is not None), default=None) for name, values in peaks.items()},
        "compiled_by": compiled_by,
        "runs": rates,
    }


def phases(case: Case, data: Data, repeats: int) -> dict[str, dict[str, float]]:
    """Per-phase host milliseconds per step for the three sides (medians over steps, then repeats)."""
    runs: dict[str, list[dict[str, float]]] = {"dlrun": [], "lightning": [], "hand": []}
    for repeat in range(repeats):
        phase_medians()  # drop marks left by anything before
        dlrun_side(case, data, repeat, marks=True)
        runs["dlrun"].append(timed_phases())
        lightning_side(case, data, repeat, marks=True)
        runs["lightning"].append(timed_phases())
        hand_side(case, data, repeat, marks=True)
        runs["hand"].append(timed_phases())
    names = list(dict.fromkeys(PHASES.values()))
    table = {side: {p: median([r.get(p, 0.0) for r in reps]) for p in names} for side, reps in runs.items()}
    for per_phase in table.values():
        per_phase["step"] = sum(per_phase.values())
    return table


def timed_phases() -> dict[str, float]:
    """Phase medians of the marks since the last call (untimed warm-up steps included: medians shrug them off)."""
    return phase_medians()


def cases(args: argparse.Namespace) -> list[Case]:
    """The cases the flags select, MNIST first."""
    chosen = set(args.cases.split(","))
    out: list[Case] = []
    for compiled in [c == "on" for c in args.compile.split(",")]:
        for precision in args.precisions.split(","):
            if "mnist" in chosen:
                for model in args.models.split(","):
                    for batch in [int(b) for b in args.batch_sizes.split(",")]:
                        out.append(Case("mnist", model, batch, precision, compiled))
            if "seq2seq" in chosen:
                out.append(Case("seq2seq", "gru_attn", args.text_batch_size, precision, compiled))
    return out


def main() -> None:
    """Parse flags, run the selected cases and the phase table, print and save the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--cases", default="mnist,seq2seq", help="comma-separated: mnist, seq2seq")
    parser.add_argument("--models", default="mlp,cnn", help="MNIST networks: mlp, cnn")
    parser.add_argument("--batch-sizes", default="128,1024", help="MNIST batch sizes")
    parser.add_argument("--text-batch-size", type=int, default=128, help="seq2seq sentences per batch (bucketed)")
    parser.add_argument("--precisions", default="32-true,bf16-mixed", help="Lightning precisions")
    parser.add_argument("--compile", default="off,on", help="off, on or both")
    parser.add_argument("--compile-mode", default="default", help="default | reduce-overhead | max-autotune")
    parser.add_argument("--compile-backend", default="inductor", help="inductor | eager")
    parser.add_argument("--steps", type=int, default=150, help="timed steps per measurement")
    parser.add_argument("--skip", type=int, default=25, help="untimed steps first (warm-up, compilation)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repeats per case")
    parser.add_argument(
        "--phases", choices=("on", "off"), default="on", help="phase table of the batch-128 MNIST cases"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: 1 on the CPU, all on a GPU machine)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here as JSON")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks that the script runs")
    args = parser.parse_args()
    if args.smoke:
        args.device = args.device or "cpu"
        args.steps, args.skip, args.repeats = 2, 1, 1
        args.models, args.batch_sizes, args.precisions, args.text_batch_size = "mlp", "16", "32-true", 8
        args.compile_backend = "eager"  # graph capture without code generation: seconds, not minutes
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads or device.type == "cpu":
        set_threads(args.threads or 1)
    os.environ.setdefault("DLRUN_DATA_DIR", str(data_dir()))
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False  # Lightning's default (benchmark=None -> off); every side the same

    with tempfile.TemporaryDirectory(prefix="dlrun-gpu-bench-") as tmp:
        settings = Settings(
            device, args.steps, args.skip, args.compile_mode, args.compile_backend, Path(tmp), args.smoke
        )
        data = Data(settings)
        result: dict[str, Any] = {"machine": machine(), "device": describe(device), "settings": {
            k: v for k, v in vars(args).items() if k not in ("json",)}, "cases": []}  # fmt: skip
        started = time.perf_counter()
        for case in cases(args):
            result["cases"].append(measure(case, data, args.repeats))
            if args.json is not None:  # after every case: a run cut short by a time limit keeps what it measured
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
        if args.phases == "on" and "mnist" in args.cases:
            result["phases_ms"] = {}
            for model in args.models.split(","):
                batch = int(args.batch_sizes.split(",")[0])
                case = Case("mnist", model, batch, args.precisions.split(",")[0], False)
                result["phases_ms"][case.name] = phases(case, data, args.repeats)
        result["wall_s"] = round(time.perf_counter() - started, 1)
    result["machine"]["load_1min_end"] = round(os.getloadavg()[0], 2)
    emit(result, args.json)
    print(table(result), flush=True)


def describe(device: torch.device) -> dict[str, Any]:
    """The accelerator: name, memory and CUDA version (or the CPU)."""
    if device.type != "cuda":
        return {"type": device.type}
    props = torch.cuda.get_device_properties(device)
    return {
        "type": "cuda",
        "name": props.name,
        "memory_gib": round(props.total_memory / 2**30, 1),
        "cuda": torch.version.cuda,
    }


def table(result: dict[str, Any]) -> str:
    """The results as Markdown tables (throughput, ratios, memory; phases)."""
    lines = [
        "| case | dlrun | bare Lightning | hand loop | dlrun / hand | Lightning / hand | dlrun / Lightning "
        "| peak GiB (dlrun, hand) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in result["cases"]:
        unit = c["unit"]
        name = Case(c["task"], c["model"], c["batch_size"], c["precision"], c["compiled"]).name
        peak = c["peak_gib"]
        mem = ", ".join("-" if peak[s] is None else f"{peak[s]:.2f}" for s in ("dlrun", "hand"))
        lines.append(
            f"| {name} ({unit}/s) | {c[f'dlrun_{unit}_per_s']:,.0f} | {c[f'lightning_{unit}_per_s']:,.0f} "
            f"| {c[f'hand_{unit}_per_s']:,.0f} | **{c['ratio']:.3f}** | {c['lightning_vs_hand']:.3f} "
            f"| {c['dlrun_vs_lightning']:.3f} | {mem} |"
        )
    for name, per_side in result.get("phases_ms", {}).items():
        lines += [
            "",
            f"Host time per step phase, {name} (ms, medians):",
            "",
            "| phase | dlrun | bare Lightning | hand loop |",
            "| --- | ---: | ---: | ---: |",
        ]
        for phase in per_side["hand"]:
            lines.append(
                f"| {phase} | " + " | ".join(f"{per_side[s][phase]:.3f}" for s in ("dlrun", "lightning", "hand")) + " |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
