"""Typed training configuration. Defaults are the seed recipe; the CLI and JSON files override fields."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import ConfigError

OPTIMIZERS = ("adam", "adamw", "sgd")
ENGINES = ("auto", "autograd", "fused")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig:
    """Everything that decides a training run. Defaults reproduce the seed notebook."""

    model: str = "mlp"
    model_kwargs: dict = field(default_factory=dict)  # passed to create_model, e.g. {"hidden": [64, 32]}
    dataset: str = "mnist"
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"  # adam | adamw | sgd (momentum 0.9)
    weight_decay: float = 0.0
    seed: int = 24  # model initialisation and batch order
    val_size: int = 5000  # images carved from the training set for model selection
    train_size: int = 0  # train on the first N training images only (0 = all), for quick experiments
    split_seed: int = 0  # which images form the validation split (kept fixed across runs)
    device: str = "auto"  # auto | cpu | cuda
    engine: str = "auto"  # auto picks the hand-fused MLP step when it applies, else autograd
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    out: str | None = None  # run folder; default runs/<model>-<timestamp>

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first field that is out of range."""
        checks = [
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}"),
            (self.lr > 0, f"learning rate must be positive, got {self.lr}"),
            (self.weight_decay >= 0, f"weight decay must not be negative, got {self.weight_decay}"),
            (self.val_size >= 0, f"validation size must not be negative, got {self.val_size}"),
            (self.train_size >= 0, f"train size must not be negative, got {self.train_size}"),
            (self.threads >= 0, f"threads must not be negative, got {self.threads}"),
            (self.optimizer in OPTIMIZERS, f"unknown optimizer {self.optimizer!r} (known: {', '.join(OPTIMIZERS)})"),
            (self.engine in ENGINES, f"unknown engine {self.engine!r} (known: {', '.join(ENGINES)})"),
            (self.device in DEVICES, f"unknown device {self.device!r} (known: {', '.join(DEVICES)})"),
            (isinstance(self.model_kwargs, dict), "model_kwargs must be a JSON object"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {item.name for item in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        try:
            return cls(**values)
        except TypeError as error:
            raise ConfigError(f"bad config: {error}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """Read a JSON config; a tuning result ({"config": {...}}) works too."""
        try:
            values = json.loads(Path(path).read_text())
        except OSError as error:
            raise ConfigError(f"cannot read config {path}: {error.strerror}") from None
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path} is not valid JSON ({error})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path} must hold a JSON object")
        return cls.from_dict(values.get("config", values))

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; asking for cuda without one is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA device is available")
    return torch.device(name)
