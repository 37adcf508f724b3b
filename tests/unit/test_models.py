"""The MNIST networks as plain torch modules: shapes, sizes, input checks, initialization, argument checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dlrun.models.cnn import CNN
from dlrun.models.mlp import MLP

SHAPE = [1, 28, 28]


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def mlp(**kwargs) -> MLP:
    return MLP(input_shape=SHAPE, num_classes=10, **kwargs)


def cnn(**kwargs) -> CNN:
    return CNN(input_shape=SHAPE, num_classes=10, **kwargs)


@pytest.mark.parametrize("make", [mlp, cnn], ids=["mlp", "cnn"])
@pytest.mark.parametrize("batch", [1, 5])
def test_logits_shape(make, batch: int) -> None:
    torch.manual_seed(0)
    net = make().eval()
    out = net(torch.randn(batch, 1, 28, 28))
    assert out.shape == (batch, 10)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_parameter_counts() -> None:
    assert n_params(mlp()) == 669_706  # 784*512+512 + 512*512+512 + 512*10+10
    assert n_params(mlp(hidden_sizes=[64])) == 784 * 64 + 64 + 64 * 10 + 10
    assert n_params(cnn()) == 1_199_882  # 320 + 18,496 + 9216*128+128 + 1,290


def test_mlp_layers_follow_the_config() -> None:
    net = mlp(hidden_sizes=[32, 16], activation="gelu", norm="layer", dropout=0.1)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 32), (32, 16), (16, 10)]
    assert sum(isinstance(m, nn.LayerNorm) for m in net.modules()) == 2
    assert sum(isinstance(m, nn.GELU) for m in net.modules()) == 2
    assert all(m.p == 0.1 for m in net.modules() if isinstance(m, nn.Dropout))


@pytest.mark.parametrize(("make", "name"), [(mlp, "MLP"), (cnn, "CNN")], ids=["mlp", "cnn"])
@pytest.mark.parametrize("shape", [(4, 28, 28), (4, 3, 28, 28), (4, 784)])
def test_wrong_input_shape_names_expected_and_got(make, name: str, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError) as info:
        make()(torch.zeros(shape))
    assert str(info.value) == f"{name} input: expected (batch, 1, 28, 28), got {shape}"


def weights_and_biases(net: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    weights = [p for p in net.parameters() if p.dim() >= 2]
    biases = [p for name, p in net.named_parameters() if name.endswith("bias")]
    return weights, biases


@pytest.mark.parametrize("make", [mlp, cnn], ids=["mlp", "cnn"])
@pytest.mark.parametrize("scheme", ["xavier_uniform", "kaiming_normal", "orthogonal"])
def test_init_schemes_replace_weights_and_zero_biases(make, scheme: str) -> None:
    torch.manual_seed(0)
    default = make()
    torch.manual_seed(0)
    net = make(init=scheme)
    default_w, default_b = weights_and_biases(default)
    weights, biases = weights_and_biases(net)
    assert len(weights) == len(default_w) and len(biases) == len(default_b) >= 3
    for w, w0 in zip(weights, default_w, strict=True):
        assert not torch.equal(w, w0)
    assert all(torch.count_nonzero(b) == 0 for b in biases)
    assert all(torch.count_nonzero(b) > 0 for b in default_b)  # "default" keeps torch's own init

    for w in weights:
        flat = w.detach().reshape(w.shape[0], -1)
        fan_out, fan_in = flat.shape[0], flat.shape[1]
        if w.dim() > 2:  # conv: torch's fans include the receptive field
            fan_out = w.shape[0] * math.prod(w.shape[2:])
        if scheme == "xavier_uniform":
            bound = math.sqrt(6 / (fan_in + fan_out))
            assert float(flat.abs().max()) <= bound + 1e-6
            assert float(flat.abs().max()) > 0.9 * bound
        elif scheme == "kaiming_normal" and flat.numel() > 1000:
            expected = math.sqrt(2 / fan_in)
            assert abs(float(flat.std()) / expected - 1) < 0.15
        elif scheme == "orthogonal":
            small = flat if flat.shape[0] <= flat.shape[1] else flat.T
            gram = small @ small.T
            assert torch.allclose(gram, torch.eye(len(gram)), atol=1e-4)


def test_unknown_init_scheme() -> None:
    with pytest.raises(ValueError, match=r"^init: unknown scheme 'zeros'"):
        mlp(init="zeros")


def test_cnn_flatten_size_checked_against_the_conv_output() -> None:
    assert cnn(flatten_size=9216)(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match=r"^flatten_size: 1000 does not match .* = 9216"):
        cnn(flatten_size=1000)


def test_cnn_stages_pool_where_asked_and_batch_norm_replaces_conv_bias() -> None:
    net = cnn(channels=[32, 32, 64, 64], kernel_sizes=[3, 3, 3, 3], pool_after=[2, 4], batch_norm=True)
    # 28 -> 26 -> 24 -> pool 12 -> 10 -> 8 -> pool 4: 64 x 4 x 4
    assert net.head[0].in_features == 64 * 4 * 4
    kinds = [type(m).__name__ for m in net.features]
    assert kinds.count("MaxPool2d") == 2 and kinds.count("BatchNorm2d") == 4
    assert kinds[:3] == ["Conv2d", "BatchNorm2d", "ReLU"]
    assert all(m.bias is None for m in net.features if isinstance(m, torch.nn.Conv2d))
    assert net(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    # without batch norm the convs keep their bias and the default pools once, after the last conv
    assert all(m.bias is not None for m in cnn().features if isinstance(m, torch.nn.Conv2d))
    assert [type(m).__name__ for m in cnn().features].count("MaxPool2d") == 1


@pytest.mark.parametrize("pool_after", [[], [0], [3], [2, 1], [1, 1]])
def test_cnn_pool_after_must_name_increasing_convs(pool_after: list[int]) -> None:
    with pytest.raises(ValueError, match=r"^pool_after: need increasing conv counts in 1\.\.2"):
        cnn(pool_after=pool_after)


def test_cnn_pool_too_deep_for_the_image_names_the_pool() -> None:
    with pytest.raises(ValueError, match=r"^kernel_sizes: .* before pool 3, below pool_size 4"):
        cnn(channels=[8, 8, 8], kernel_sizes=[3, 3, 3], pool_after=[1, 2, 3], pool_size=4)


@pytest.mark.parametrize("dropout", [-0.1, 1.0, 1.5])
def test_mlp_dropout_out_of_range(dropout: float) -> None:
    with pytest.raises(ValueError) as info:
        mlp(dropout=dropout)
    assert str(info.value).startswith("dropout: ")
    assert str(dropout) in str(info.value)


@pytest.mark.parametrize("key", ["conv_dropout", "dense_dropout"])
def test_cnn_dropout_out_of_range_names_key(key: str) -> None:
    with pytest.raises(ValueError, match=rf"^{key}: "):
        cnn(**{key: 1.5})
    with pytest.raises(ValueError, match=rf"^{key}: must be in \[0, 1\), got 1.0"):
        cnn(**{key: 1.0})


def test_other_bad_arguments_name_their_key() -> None:
    with pytest.raises(ValueError, match=r"^hidden_sizes: "):
        mlp(hidden_sizes=[64, 0])
    with pytest.raises(ValueError, match=r"^activation: unknown 'swish'"):
        mlp(activation="swish")
    with pytest.raises(ValueError, match=r"^kernel_sizes: need one per conv layer"):
        cnn(channels=[8, 16, 32], kernel_sizes=[3, 3])
    with pytest.raises(ValueError, match=r"^kernel_sizes: convs shrink"):
        cnn(kernel_sizes=[15, 15])  # 28 -> 14 -> 0
