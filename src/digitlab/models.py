"""Models, registered by name: `create_model(name, **kwargs)`, `list_models()`.

Every model takes float images (B, 1, 28, 28) in [0, 1] and returns logits (B, num_classes).
`create_model` records the name and keyword arguments on the model (`model.spec`), which is
all a checkpoint needs to rebuild it.
"""

from __future__ import annotations

import inspect
from typing import Callable

from torch import nn

from .errors import ConfigError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    """Decorator: make a model class or factory available to `create_model` under `name`."""
    def add(builder):
        _REGISTRY[name] = builder
        return builder
    return add


def list_models() -> list[str]:
    return sorted(_REGISTRY)


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
    model.spec = {"name": name, "kwargs": dict(kwargs)}
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


@register_model("mlp")
class MLP(nn.Module):
    """Fully connected ReLU net; the default hidden=(32, 16) is the seed architecture (25,818 parameters)."""

    def __init__(self, hidden: tuple[int, ...] = (32, 16), dropout: float = 0.0,
                 in_features: int = 784, num_classes: int = 10):
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
        return self.net(images.flatten(1))

    def linear_layers(self) -> list[nn.Linear]:
        return [layer for layer in self.net if isinstance(layer, nn.Linear)]
