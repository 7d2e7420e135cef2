"""Models, registered by name: `create_model(name, **kwargs)`, `list_models()`, `@register_model`."""

from .linereader import LineReader
from .nets import MLP, ConvNet, PoolNet, count_parameters, create_model, list_models, register_model

__all__ = [
    "MLP",
    "ConvNet",
    "LineReader",
    "PoolNet",
    "count_parameters",
    "create_model",
    "list_models",
    "register_model",
]
