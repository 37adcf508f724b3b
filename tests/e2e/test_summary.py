"""task=summary: a layer table for one real batch, no training; shape faults name the layer and both shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from dlrun.models.inspection import ShapeError, activations, trace
from trained_runs import common


def test_trace_records_every_layer() -> None:
    """Shapes of each call and parameter counts; containers count their children's parameters."""
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    records = {r.name: r for r in trace(net, torch.zeros(5, 1, 8, 8))}
    assert records["0"].type == "Conv2d" and records["0"].output_shape == "[5, 4, 6, 6]"
    assert records["3"].input_shape == "[5, 144]" and records["3"].params == 144 * 2 + 2
    assert net.training  # the look inside left the mode as it was


@pytest.mark.parametrize(
    ("layer", "bad_input", "expected"),
    [
        (nn.Linear(10, 3), torch.zeros(2, 7), "layer 1 (Linear): expects input [*, 10], got [2, 7]"),
        (
            nn.Conv2d(3, 4, 3),
            torch.zeros(2, 1, 8, 8),
            "layer 1 (Conv2d): expects input [batch, 3, *, *], got [2, 1, 8, 8]",
        ),
        (
            nn.GRU(6, 4, batch_first=True),
            torch.zeros(2, 5, 3),
            "layer 1 (GRU): expects input [batch, seq, 6], got [2, 5, 3]",
        ),
    ],
)
def test_shape_error_names_layer_and_shapes(layer: nn.Module, bad_input: torch.Tensor, expected: str) -> None:
    """The innermost failing layer is named with what it expects and what it got."""
    with pytest.raises(ShapeError) as caught:
        trace(nn.Sequential(nn.Identity(), layer), bad_input)
    assert str(caught.value) == expected


def test_activations_of_repeated_layers_are_lists() -> None:
    """A layer called several times in one pass maps to the list of its outputs."""

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.step = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.step(self.step(x))

    outputs = activations(Twice(), torch.ones(1, 3), layers=["step"])
    assert isinstance(outputs["step"], list) and len(outputs["step"]) == 2


def test_summary_prints_conv_rows_without_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`task=summary model=cnn`: Conv2d rows with real-batch shapes and the totals; nothing trained or recorded."""
    import dlrun

    records = dlrun.run(["task=summary", "model=cnn", *common(tmp_path, "summary")])
    out = capsys.readouterr().out
    conv = [r for r in records if r.type == "Conv2d"]
    assert [r.output_shape for r in conv] == ["[128, 32, 26, 26]", "[128, 64, 24, 24]"]
    assert "net.features.0" in out and "Conv2d" in out and "[128, 1, 28, 28]" in out
    assert "1,199,882" in out  # total parameters of the Keras/PyTorch example convnet
    assert not (tmp_path / "summary" / "checkpoints").exists()
    assert not (tmp_path / "mlflow.db").exists()


BAD_NET = """
from torch import nn


class WrongWidth(nn.Module):
    \"\"\"Builds fine; its second Linear expects 32 features where the first gives 64: only a real batch shows it.\"\"\"

    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 64), nn.ReLU(), nn.Linear(32, num_classes))

    def forward(self, x):
        return self.layers(x)
"""


def test_summary_shape_mismatch_found_by_tracing_a_real_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user network whose layers disagree is built without complaint; tracing one real batch names the layer
    (its path in the network) and both shapes, in one line."""
    import dlrun
    from dlrun.cli import describe_error

    (tmp_path / "wrong_width.py").write_text(BAD_NET)  # the user's own code and config, in the working directory
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "wrong_width.yaml").write_text("_target_: wrong_width.WrongWidth\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ShapeError) as caught:
        dlrun.run(["task=summary", "model=wrong_width", "objective=classification", *common(tmp_path, "bad")])
    code, line = describe_error(caught.value, [])
    assert code == 2 and "\n" not in line
    assert line == "layer net.layers.3 (Linear): expects input [*, 32], got [128, 64]", line
