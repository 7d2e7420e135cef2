"""Search spaces for `digitlab tune`: one table per model, overridable from a small TOML or JSON file.

A space maps a parameter name to a range, written the same way here and in a space file:
`{"low": 1e-4, "high": 1e-2, "log": true}` (integers when both ends are integers; optional
"step"), `{"choices": [64, 128]}`, or `{"value": 32}` to fix a parameter without searching it.
Parameters are TrainConfig fields (lr, batch_size, ...) or these derived ones: `augment`, a
strength in [0, 1] that scales the augmentation preset; `hidden_1`..`hidden_3`, the MLP's hidden
widths; `channels`, a CNN's first-block width (the blocks are c, 2c, 4c); `head`, a CNN's hidden
head width (0 = none).
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import TrainConfig
from ..errors import ConfigError
from ..models.nets import create_model
from ..training.recipes import AUGMENT

_COMMON: dict[str, dict] = {
    "lr": {"low": 1e-4, "high": 3e-2, "log": True},
    "batch_size": {"choices": [64, 128, 256, 512]},
    "weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
    "schedule": {"choices": ["constant", "cosine", "onecycle"]},
    "augment": {"low": 0.0, "high": 1.0},
}
_CNN_HEAD: dict[str, dict] = {"head": {"choices": [0, 64, 128, 256]}}

SPACES: dict[str, dict[str, dict]] = {
    "mlp": {
        **_COMMON,
        "epochs": {"low": 3, "high": 15},
        "dropout": {"low": 0.0, "high": 0.3},
        "hidden_1": {"low": 32, "high": 512, "log": True},
        "hidden_2": {"low": 16, "high": 256, "log": True},
    },
    "cnn": {
        **_COMMON,
        "epochs": {"low": 1, "high": 4},
        "dropout": {"low": 0.0, "high": 0.4},
        "channels": {"low": 8, "high": 48, "log": True},
        **_CNN_HEAD,
    },
    "cnn-tiny": {
        **_COMMON,
        "epochs": {"low": 2, "high": 6},
        "dropout": {"low": 0.0, "high": 0.3},
        "channels": {"low": 4, "high": 16, "log": True},
        **_CNN_HEAD,
    },
    "lenet5": {**_COMMON, "epochs": {"low": 2, "high": 6}},
}
_OTHER_MODELS: dict[str, dict] = {**_COMMON, "epochs": {"low": 2, "high": 10}}

TRAINING_PARAMETERS = (
    "lr",
    "batch_size",
    "weight_decay",
    "epochs",
    "optimizer",
    "schedule",
    "warmup",
    "label_smoothing",
    "augment",
    "augment_rotate",
    "augment_translate",
    "augment_scale",
    "augment_shear",
    "augment_elastic_alpha",
    "augment_elastic_sigma",
)
MODEL_PARAMETERS = {
    "mlp": ("dropout", "hidden_1", "hidden_2", "hidden_3"),
    "cnn": ("dropout", "channels", "head"),
    "cnn-tiny": ("dropout", "channels", "head"),
}
INTEGER_PARAMETERS = ("batch_size", "epochs", "hidden_1", "hidden_2", "hidden_3", "channels", "head")
_KEYS = {"low", "high", "log", "step", "choices", "value"}


@dataclass(frozen=True)
class Param:
    """One searched (or fixed) parameter: a float/int range, a list of choices, or a fixed value."""

    name: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple | None = None
    value: object = None

    @property
    def fixed(self) -> bool:
        return self.value is not None

    def suggest(self, trial):
        """The value for this trial: drawn by the Optuna trial, or the fixed value."""
        if self.fixed:
            return self.value
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if isinstance(self.low, int) and isinstance(self.high, int):
            return trial.suggest_int(self.name, self.low, self.high, log=self.log, step=self.step or 1)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)

    def candidates(self) -> list:
        """Values worth checking against the config up front: the ends of a range, or every choice."""
        if self.fixed:
            return [self.value]
        return list(self.choices) if self.choices is not None else [self.low, self.high]


def known_parameters(model: str) -> tuple[str, ...]:
    return TRAINING_PARAMETERS + MODEL_PARAMETERS.get(model, ())


def default_space(model: str) -> dict[str, dict]:
    return dict(SPACES.get(model, _OTHER_MODELS))


def read_space_file(path: str | Path) -> dict:
    """Parse a space file (.toml, else JSON) into {parameter: spec}; unreadable or malformed is a ConfigError."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read space file {path}: {getattr(error, 'strerror', None) or error}") from None
    try:
        values = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        kind = "TOML" if path.suffix == ".toml" else "JSON"
        raise ConfigError(f"space file {path} is not valid {kind} ({error})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"space file {path} must hold a table of parameters")
    return values


def build_space(model: str, overrides: dict | None = None) -> dict[str, Param]:
    """The model's default space with `overrides` ({name: spec}) replacing or adding parameters."""
    known = known_parameters(model)
    unknown = sorted(set(overrides or {}) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown parameter {unknown[0]!r} in the search space for {model} (known: {', '.join(known)})"
        )
    specs = {**default_space(model), **(overrides or {})}
    return {name: parse_param(name, spec) for name, spec in specs.items()}


def parse_param(name: str, spec) -> Param:
    """A Param from its spec; a malformed or empty range is a ConfigError naming the parameter."""
    where = f"search space parameter {name!r}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where} must be a table like {{low, high}}, {{choices}} or {{value}}")
    extra = sorted(set(spec) - _KEYS)
    if extra:
        raise ConfigError(f"{where}: unknown key {extra[0]!r} (known: {', '.join(sorted(_KEYS))})")
    if "value" in spec:
        if len(spec) > 1 or spec["value"] is None:
            raise ConfigError(f"{where}: a fixed value takes no other keys")
        return Param(name, value=spec["value"])
    if "choices" in spec:
        choices = spec["choices"]
        if len(spec) > 1 or not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choices must be a non-empty list, with no other keys")
        if not all(isinstance(choice, (bool, int, float, str)) for choice in choices):
            raise ConfigError(f"{where}: choices must be numbers or strings")
        return Param(name, choices=tuple(choices))
    return _parse_range(name, spec, where)


def _parse_range(name: str, spec: dict, where: str) -> Param:
    low: Any = spec.get("low")  # checked to be numbers just below
    high: Any = spec.get("high")
    log, step = spec.get("log", False), spec.get("step")
    numbers = (low, high) + ((step,) if step is not None else ())
    if any(isinstance(value, bool) or not isinstance(value, (int, float)) for value in numbers):
        raise ConfigError(f"{where} needs numeric low and high (or choices, or value)")
    if not all(math.isfinite(value) for value in numbers):
        raise ConfigError(f"{where}: low, high and step must be finite")
    if low >= high:
        raise ConfigError(f"{where}: empty range (low {low} >= high {high})")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false")
    if log and (low <= 0 or step is not None):
        raise ConfigError(f"{where}: a log range needs low > 0 and no step")
    if step is not None and step <= 0:
        raise ConfigError(f"{where}: step must be positive")
    return Param(name, low=low, high=high, log=log, step=step)


def config_for(params: dict, base: TrainConfig) -> TrainConfig:
    """`base` with the parameter values applied (derived ones translated into config fields)."""
    fields, model_kwargs = {}, dict(base.model_kwargs)
    hidden = [params[name] for name in ("hidden_1", "hidden_2", "hidden_3") if name in params]
    for name, value in params.items():
        if name == "augment":
            fields.update({field: preset * value for field, preset in AUGMENT.items()})
        elif name == "channels":
            model_kwargs["channels"] = [value, 2 * value, 4 * value]
        elif name == "head":
            model_kwargs["hidden"] = value
        elif not name.startswith("hidden_"):
            fields[name] = value
    if hidden:
        model_kwargs["hidden"] = hidden
    try:
        return base.replace(**fields, model_kwargs=model_kwargs)
    except TypeError as error:
        raise ConfigError(f"bad search space value: {error}") from None


def check_space(space: dict[str, Param], base: TrainConfig) -> None:
    """Fail early, naming the parameter, if any end of a range or any choice makes an invalid config or model."""
    fixed = {name: param.value for name, param in space.items() if param.fixed}
    for name, param in space.items():
        for value in param.candidates():
            if name in INTEGER_PARAMETERS and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f"search space parameter {name!r} takes integers, got {value!r}")
            try:
                config = config_for({**fixed, name: value}, base)
                config.augmentation()
                create_model(config.model, **config.model_arguments())
            except ConfigError as error:
                raise ConfigError(f"search space parameter {name!r} = {value!r}: {error}") from None
