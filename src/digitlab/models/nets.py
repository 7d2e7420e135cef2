"""Models, registered by name: `create_model(name, **kwargs)`, `list_models()`.

Every model takes float images (B, 1, 28, 28) in [0, 1] and returns logits (B, num_classes).
It also splits in two: `penultimate(images)` gives the activations (B, D) its last layer reads and
`head(activations)` the logits, with `forward(x) == head(penultimate(x))` exactly; the
out-of-distribution score (digitlab.inference.ood) reads the first half.
`create_model` records the name and keyword arguments on the model (`model.spec`), which is
all a checkpoint needs to rebuild it.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import cast

import torch
from torch import nn

from ..errors import ConfigError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_BUILT_FROM_RUNS: set[str] = set()  # models assembled from trained runs (the ensemble), never trained themselves


def register_model(name: str, trainable: bool = True):
    """Decorator: make a model class or factory available to `create_model` under `name`; `list_models`
    (the CLI's --model choices) names it only if it is `trainable`."""

    def add(builder):
        _REGISTRY[name] = builder
        if not trainable:
            _BUILT_FROM_RUNS.add(name)
        return builder

    return add


def list_models() -> list[str]:
    """The models one can train (create_model also builds the ensemble that digitlab.runs.ensemble assembles)."""
    return sorted(set(_REGISTRY) - _BUILT_FROM_RUNS)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model; unknown names or arguments are a ConfigError."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r} (known: {', '.join(list_models())})")
    builder = _REGISTRY[name]
    accepted = inspect.signature(builder).parameters
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(f"model {name!r} takes no argument {', '.join(unknown)} (it takes: {', '.join(accepted)})")
    try:
        model = builder(**kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"model {name!r}: {error}") from None
    # nn.Module types its attributes as tensors or modules; spec is a plain dict, read back by save_model
    model.spec = {"name": name, "kwargs": dict(kwargs)}  # type: ignore[assignment]
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


@register_model("mlp")
class MLP(nn.Module):
    """Fully connected ReLU net; the default hidden=(32, 16) is the seed architecture (25,818 parameters)."""

    def __init__(
        self, hidden: tuple[int, ...] = (32, 16), dropout: float = 0.0, in_features: int = 784, num_classes: int = 10
    ):
        super().__init__()
        if any(int(width) < 1 for width in hidden):
            raise ValueError(f"hidden sizes must be positive, got {list(hidden)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.hidden = tuple(int(width) for width in hidden)
        self.dropout = dropout
        layers: list[nn.Module] = []
        width = in_features
        for next_width in self.hidden:
            layers += [nn.Linear(width, next_width), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = next_width
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, images):
        return self.head(self.penultimate(images))

    def penultimate(self, images):
        return self.net[:-1](images.flatten(1))

    def head(self, activations):
        return self.net[-1](activations)

    def linear_layers(self) -> list[nn.Linear]:
        return [layer for layer in self.net if isinstance(layer, nn.Linear)]


def in_preferred_layout(model: nn.Module, value):
    """`value` (the model itself, or a batch of images for it) in the memory format the model runs
    fastest in: channels-last for the convolutional nets that ask for it, unchanged otherwise."""
    model = getattr(model, "module", model)  # a DistributedDataParallel wrapper: ask the model inside
    if getattr(model, "prefers_channels_last", False):
        return value.to(memory_format=torch.channels_last)
    return value


def _conv_block(in_channels: int, out_channels: int) -> list[nn.Module]:
    """3x3 conv (no bias: BatchNorm follows), BatchNorm, ReLU, 2x2 max-pool: halves height and width."""
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    ]


class _ConvStack(nn.Module):
    """Convolutions (`features`, a convolution first) then `classifier`, whose last two layers (dropout,
    linear) are the head; what the penultimate activations are for the out-of-distribution detector."""

    features: nn.Sequential
    classifier: nn.Sequential

    def forward(self, images):
        return self.head(self.penultimate(images))

    def penultimate(self, images):
        return self.classifier[:-2](self.features(images))

    def head(self, activations):
        return self.classifier[-2:](activations)

    def first_conv(self) -> nn.Conv2d:
        return cast(nn.Conv2d, self.features[0])


class ConvNet(_ConvStack):
    """Conv-BN-ReLU-pool blocks (28 -> 14 -> 7 -> 3), then a small fully connected head.

    The first block pools at once, so most of the arithmetic runs at 14x14 and below; that is
    what keeps it fast on a CPU.
    """

    prefers_channels_last = True  # oneDNN's convolutions run faster on NHWC tensors

    def __init__(
        self, channels: tuple[int, ...] = (16, 32, 64), hidden: int = 128, dropout: float = 0.1, num_classes: int = 10
    ):
        super().__init__()
        if not channels or any(int(width) < 1 for width in channels):
            raise ValueError(f"channels must be positive, got {list(channels)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.channels, self.dropout = tuple(int(width) for width in channels), dropout
        layers, width, size = [], 1, 28
        for next_width in self.channels:
            layers += _conv_block(width, next_width)
            width, size = next_width, size // 2
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.Flatten()]
        if hidden:
            head += [nn.Dropout(dropout), nn.Linear(width * size * size, hidden), nn.ReLU(inplace=True)]
            width, size = hidden, 1
        head += [nn.Dropout(dropout), nn.Linear(width * size * size, num_classes)]
        self.classifier = nn.Sequential(*head)


@register_model("cnn")
def cnn(
    channels: tuple[int, ...] = (16, 32, 64), hidden: int = 128, dropout: float = 0.1, num_classes: int = 10
) -> ConvNet:
    """Compact CNN for CPU speed: three conv-BN-ReLU-pool blocks (28->14->7->3) and a 128-unit head.

    Widths stay multiples of 8 (oneDNN's fast paths) and small: time per step grows quickly with
    width on a CPU, and benchmarks/cnn_speed.py holds this model to a speed goal.
    """
    return ConvNet(channels, hidden, dropout, num_classes)


@register_model("cnn-tiny")
def cnn_tiny(channels: tuple[int, ...] = (8, 16, 32), hidden: int = 0, dropout: float = 0.0) -> ConvNet:
    """Under 10,000 parameters: three narrow blocks and a linear classifier on the 3x3x32 features."""
    return ConvNet(channels, hidden, dropout)


class PoolNet(_ConvStack):
    """Two unpadded convolutions, each followed by a 2x2 max-pool and then a ReLU, and a small head.

    Shaped for a CPU: no BatchNorm (on this scale its layout conversions and extra passes cost more
    than they buy), and pooling before the ReLU gives the same result (both are monotone) on a
    quarter of the values. 28 -(conv k)-> 29-k -(pool)-> (29-k)//2 -(conv 3)-> -(pool)-> 5x5 for k=5.
    With stride=2 the first convolution strides instead of being pooled (28 -> 12 for k=5): the
    profile of benchmarks/records.py shows the first max-pool and its backward over the 24x24 maps
    taking about a third of a bf16 step, and the strided net computes a quarter of the first
    layer's outputs.
    """

    prefers_channels_last = True  # oneDNN's convolutions run faster on NHWC tensors

    def __init__(
        self,
        channels: tuple[int, ...] = (24, 32),
        kernel: int = 5,
        hidden: int = 256,
        dropout: float = 0.0,
        stride: int = 1,
        num_classes: int = 10,
    ):
        super().__init__()
        if len(channels) != 2 or any(int(width) < 1 for width in channels):
            raise ValueError(f"channels must be two positive widths, got {list(channels)}")
        if kernel not in (3, 5, 7):
            raise ValueError(f"kernel must be 3, 5 or 7, got {kernel}")
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 (conv, then pool) or 2 (a strided conv), got {stride}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.channels, self.kernel, self.dropout = tuple(int(width) for width in channels), kernel, dropout
        first, second = self.channels
        reduce: list[nn.Module] = [nn.MaxPool2d(2)] if stride == 1 else []
        size = (((28 - kernel + 1) // 2 if stride == 1 else (28 - kernel) // 2 + 1) - 2) // 2
        self.features = nn.Sequential(
            nn.Conv2d(1, first, kernel, stride=stride),
            *reduce,
            nn.ReLU(inplace=True),
            nn.Conv2d(first, second, 3),
            nn.MaxPool2d(2),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(second * size * size, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )


@register_model("cnn-cpu")
def cnn_cpu(
    channels: tuple[int, ...] = (24, 32), kernel: int = 5, hidden: int = 256, dropout: float = 0.0, stride: int = 1
) -> PoolNet:
    """The records' CPU net (benchmarks/records.py): conv 5x5 -> pool -> ReLU -> conv 3x3 -> pool -> ReLU ->
    256 -> 10, 24/32 channels by default: the fastest public GPU recipe's net (215,194 parameters).
    stride=2 strides the first convolution instead of pooling it (same parameters, `--recipe fast`)."""
    return PoolNet(channels, kernel, hidden, dropout, stride)


@register_model("lenet5")
class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998) as usually reproduced: C1 6@5x5 (padded, as the 32x32 input was),
    S2 pool, C3 16@5x5, S4 pool, C5 120, F6 84, output 10; tanh and average pooling as in the paper."""

    prefers_channels_last = True

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2),
            nn.Tanh(),
            nn.AvgPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.Tanh(),
            nn.AvgPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            nn.Tanh(),
            nn.Linear(120, 84),
            nn.Tanh(),
            nn.Linear(84, num_classes),
        )

    def forward(self, images):
        return self.head(self.penultimate(images))

    def penultimate(self, images):
        return self.classifier[:-1](self.features(images))

    def head(self, activations):
        return self.classifier[-1:](activations)

    def first_conv(self) -> nn.Conv2d:
        return cast(nn.Conv2d, self.features[0])


@register_model("ensemble", trainable=False)
class Ensemble(nn.Module):
    """Trained models as one: the log of the mean of their probabilities (digitlab.runs.ensemble builds it from runs).

    `members` are the members' specs ({"name", "kwargs"}, as `model.spec`), so a model file rebuilds
    the ensemble like any other model. `penultimate` gives the members' logits side by side (B, M*C)
    and `head` averages their softmaxes, so `forward == head(penultimate)` exactly.
    """

    def __init__(self, members: list[dict] | tuple = ()):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        try:
            self.members = nn.ModuleList(create_model(member["name"], **member["kwargs"]) for member in members)
        except (KeyError, TypeError):
            raise ValueError(f"members must be model specs {{'name', 'kwargs'}}, got {list(members)!r}") from None

    def forward(self, images):
        return self.head(self.penultimate(images))

    def penultimate(self, images):
        return torch.cat([member(in_preferred_layout(member, images)).float() for member in self.members], 1)

    def head(self, activations):
        # log(mean_m softmax_m) as a logsumexp of log-softmaxes: finite even where a probability underflows
        per_member = activations.unflatten(1, (len(self.members), -1)).log_softmax(2)
        return per_member.logsumexp(1) - math.log(len(self.members))
