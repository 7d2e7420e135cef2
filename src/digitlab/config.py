"""Typed training configuration. Defaults are the seed recipe; the CLI and JSON files override fields."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:  # torch is imported where it is used, so the command line starts without it
    import torch

OPTIMIZERS = ("adam", "adamw", "sgd")
ENGINES = ("auto", "autograd", "fused")
SCHEDULES = ("constant", "onecycle", "cosine")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16")  # bf16: autocast where the hardware runs it natively, else fp32 (see resolve_precision)
TRACKERS = ("tensorboard", "mlflow", "csv")  # experiment trackers a run can report to (see digitlab.tracking)


def _refuse_unknown(cls, values: dict, what: str) -> None:
    """ConfigError naming the keys of `values` that are not fields of the dataclass `cls`."""
    unknown = sorted(set(values) - {item.name for item in dataclasses.fields(cls)})
    if unknown:
        raise ConfigError(f"unknown {what}: {', '.join(unknown)}")


@dataclass(frozen=True)
class PreprocessOptions:
    """Which steps of the pipeline run; each can be switched off (`--preprocess no-STEP`) to see what it buys.

    `legacy` is the pipeline of models saved before these options existed: no flattening, no
    cleaning, strokes kept as they came (only rescaled so their 90th percentile is full white).
    """

    flatten: bool = True  # subtract the paper's shading (shadows, uneven light) before looking for ink
    clean: bool = True  # drop ruled lines and specks; keep the main piece and the pieces near it
    stroke: bool = True  # redraw the strokes at full intensity, thickened or thinned into MNIST's pen width
    deskew: bool = False  # straighten slanted writing by its second moments (only for a model trained so)
    legacy: bool = False

    STEPS = ("flatten", "clean", "stroke", "deskew")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> PreprocessOptions:
        _refuse_unknown(cls, values, "preprocessing option(s)")
        return cls(**{key: bool(value) for key, value in values.items()})

    def with_steps(self, text: str) -> PreprocessOptions:
        """These options changed by a comma-separated list such as "no-stroke,deskew" (or "legacy")."""
        changes: dict[str, bool] = {}
        for word in filter(None, (part.strip() for part in text.split(","))):
            name = word.removeprefix("no-")
            if name not in (*self.STEPS, "legacy"):
                raise ConfigError(
                    f"unknown preprocessing step {word!r} (known: {', '.join(self.STEPS)}, legacy; "
                    "prefix no- to switch one off)"
                )
            changes[name] = not word.startswith("no-")
        return dataclasses.replace(self, **changes)


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
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # Adam/AdamW moment decay rates
    seed: int = 24  # model initialisation and batch order
    val_size: int = 5000  # images carved from the training set for model selection
    train_size: int = 0  # train on the first N training images only (0 = all), for quick experiments
    split_seed: int = 0  # which images form the validation split (kept fixed across runs)
    device: str = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | mps
    engine: str = "auto"  # auto picks the hand-fused MLP step when it applies, else autograd
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    precision: str = "fp32"  # fp32 | bf16 (autocast of forward and loss; fp32 where the CPU lacks bf16 units)
    out: str | None = None  # run folder; default runs/<model>-<timestamp>
    recipe: str | None = None  # the preset these values were resolved from, for the record
    schedule: str = "constant"  # learning rate: constant | onecycle | cosine (a function of the step)
    warmup: float = 0.0  # fraction of all steps spent warming up linearly (onecycle: from lr/25)
    label_smoothing: float = 0.0
    dropout: float | None = None  # passed to the model when set; None keeps the model's default
    keep_best: bool = False  # end on the epoch with the best validation accuracy, not the last
    teacher: str | None = None  # run folder of a trained model to distil from
    distill_temperature: float = 4.0
    distill_weight: float = 0.5  # share of the loss that matches the teacher (the rest: the labels)
    augment_rotate: float = 0.0  # degrees, ± (see digitlab.data.augment; all zero = no augmentation)
    augment_translate: float = 0.0  # pixels, ±
    augment_scale: float = 0.0  # relative, 1 ±
    augment_shear: float = 0.0  # degrees, ±
    augment_elastic_alpha: float = 0.0  # pixels; 0 = no elastic distortion
    augment_elastic_sigma: float = 4.0  # pixels
    augment_thickness: float = 0.0  # pen steps (3×3 grey dilations) strokes may thicken by, 0..2
    augment_blur: float = 0.0  # pixels: largest Gaussian blur sigma
    augment_contrast: float = 0.0  # ink darkness scaled by [1 - contrast, 1]
    augment_noise: float = 0.0  # largest std of added pixel noise (pixels in [0, 1])
    preprocess: str = ""  # preprocessing steps switched from the defaults, e.g. "deskew" (see PreprocessOptions)
    log: list[str] = field(default_factory=list)  # experiment trackers to report to: tensorboard, mlflow, csv

    def __post_init__(self):
        if isinstance(self.log, str):  # log="tensorboard" from Python means the one tracker
            self.log = [self.log]
        elif isinstance(self.log, (list, tuple)):
            self.log = list(dict.fromkeys(self.log))  # each tracker once, in the order given
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first field that is out of range."""
        checks = [
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}"),
            (self.lr > 0, f"learning rate must be positive, got {self.lr}"),
            (self.weight_decay >= 0, f"weight decay must not be negative, got {self.weight_decay}"),
            (
                len(self.betas) == 2 and all(0 <= beta < 1 for beta in self.betas),
                f"betas must be two numbers in [0, 1), got {self.betas}",
            ),
            (self.val_size >= 0, f"validation size must not be negative, got {self.val_size}"),
            (self.train_size >= 0, f"train size must not be negative, got {self.train_size}"),
            (self.threads >= 0, f"threads must not be negative, got {self.threads}"),
            (self.optimizer in OPTIMIZERS, f"unknown optimizer {self.optimizer!r} (known: {', '.join(OPTIMIZERS)})"),
            (self.engine in ENGINES, f"unknown engine {self.engine!r} (known: {', '.join(ENGINES)})"),
            (self.device in DEVICES, f"unknown device {self.device!r} (known: {', '.join(DEVICES)})"),
            (
                self.precision in PRECISIONS,
                f"unknown precision {self.precision!r} (known: {', '.join(PRECISIONS)})",
            ),
            (isinstance(self.model_kwargs, dict), "model_kwargs must be a JSON object"),
            (self.schedule in SCHEDULES, f"unknown schedule {self.schedule!r} (known: {', '.join(SCHEDULES)})"),
            (0 <= self.warmup < 1, f"warmup must be a fraction in [0, 1), got {self.warmup}"),
            (0 <= self.label_smoothing < 1, f"label smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.dropout is None or 0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}"),
            (
                self.distill_temperature > 0,
                f"distillation temperature must be positive, got {self.distill_temperature}",
            ),
            (0 <= self.distill_weight <= 1, f"distillation weight must be in [0, 1], got {self.distill_weight}"),
            (not (self.keep_best and self.val_size == 0), "keep_best needs a validation split (val_size > 0)"),
            (
                isinstance(self.log, list) and set(self.log) <= set(TRACKERS),
                f"unknown tracker in log {self.log!r} (known: {', '.join(TRACKERS)})",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        self.preprocessing()  # raises ConfigError naming an unknown step

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        _refuse_unknown(cls, values, "config field(s)")
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

    def with_model(self, model: str | None) -> TrainConfig:
        """This config for `model`, without model_kwargs (they belong to the old model); None keeps it."""
        return self.replace(model=model, model_kwargs={}) if model and model != self.model else self

    def augmentation(self):
        """The AugmentConfig these fields describe (validated there)."""
        from .data.augment import AugmentConfig

        return AugmentConfig(
            self.augment_rotate,
            self.augment_translate,
            self.augment_scale,
            self.augment_shear,
            self.augment_elastic_alpha,
            self.augment_elastic_sigma,
            self.augment_thickness,
            self.augment_blur,
            self.augment_contrast,
            self.augment_noise,
        )

    def preprocessing(self) -> PreprocessOptions:
        """The PreprocessOptions of this run: the defaults, changed by the `preprocess` steps."""
        return PreprocessOptions().with_steps(self.preprocess)

    def model_arguments(self) -> dict:
        """model_kwargs, plus dropout when the config sets it."""
        return {**self.model_kwargs, **({"dropout": self.dropout} if self.dropout is not None else {})}


def mps_available() -> bool:
    """Whether Apple's Metal (MPS) backend can run here: built into torch and a device present."""
    import torch

    return torch.backends.mps.is_available()


def resolve_device(name: str | torch.device) -> torch.device:
    """The one device choice every tensor follows: 'auto' takes CUDA, then Apple's MPS, then the CPU;
    naming cuda or mps where it is missing is a ConfigError. A torch.device passes through."""
    import torch

    if isinstance(name, torch.device):
        return name
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available() else "cpu")
    kind = name.split(":")[0]
    if kind not in DEVICES:
        raise ConfigError(f"unknown device {name!r} (known: {', '.join(DEVICES)})")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA device is available")
    if kind == "mps" and not mps_available():
        raise ConfigError("device 'mps' requested but Apple's MPS backend is not available here")
    return torch.device(name)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX tiles or AVX-512 BF16): without either, oneDNN
    emulates bf16 and autocast only slows training down."""
    import torch

    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


def resolve_precision(name: str, device: torch.device) -> tuple[torch.dtype | None, str]:
    """The autocast dtype for `precision` on `device` (None: plain fp32) and what to record about it.

    bf16 runs only where the hardware has it: a CPU with AMX or AVX-512 BF16, a CUDA device that
    supports bf16; anywhere else the run falls back to fp32 and the note says why.
    """
    import torch

    if name != "bf16":
        return None, "fp32"
    if device.type == "cpu":
        return (torch.bfloat16, "bf16") if cpu_has_bf16() else (None, "fp32 (this CPU has no AMX or AVX-512 BF16)")
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16, "bf16"
    return None, f"fp32 (no bf16 autocast on {device.type})"
