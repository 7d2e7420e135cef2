"""Run folders and self-describing model files.

A run folder holds config.json (the resolved config, versions, dataset checksums), metrics.json
and model.safetensors, whose metadata names the model and its arguments, so loading needs only
that file. Weights never pass through pickle, and every file is written atomically (digitlab.files).
`Run` sits above evaluation and prediction, so its convenience methods (`evaluate`, `predict`,
`robustness`) call them directly; training, which returns a Run, sits above this module.
"""

from __future__ import annotations

import json
import os
import platform
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..config import PreprocessOptions, TrainConfig, resolve_device
from ..data.datasets import Dataset, load_dataset
from ..errors import ConfigError, RunError
from ..files import atomic_write, make_folder, read_json, write_json
from ..images.preprocess import deskew
from ..inference.evaluate import evaluate, robustness
from ..inference.explain import STEPS, Explanation, explain_picture
from ..inference.linereader import LINE_READER_FILE
from ..inference.nondigits import DEFAULT_COUNT as NONDIGIT_COUNT
from ..inference.nondigits import score_nondigits
from ..inference.numbers import read_numbers
from ..inference.ood import PREFIX as OOD_PREFIX
from ..inference.ood import QUANTILE, Detector, Rejector, detector_of, fit_detector
from ..inference.predict import WORKERS, predict
from ..inference.realworld import DEFAULT_COUNT, score_suite
from ..inference.rejection import detector_from_file
from ..inference.segmenter import CLASSES as SEGMENTER_CLASSES
from ..inference.segmenter import NONE, SEGMENTER_FILE
from ..models.nets import create_model, in_preferred_layout
from ..version import __version__
from .card import card_html

if TYPE_CHECKING:
    from .checkup import Findings, Probes

MODEL_FILE, CONFIG_FILE, METRICS_FILE = "model.safetensors", "config.json", "metrics.json"
MODEL_FORMAT = "digitlab-model/1"
NUMBER_READERS = ("line", "segmenter")  # how Run.read_number finds the digits of a number: see read_number
_SEGMENTERS: dict = {}  # the judges read_number uses, loaded once per device: it is called per request


def versions() -> dict:
    return {
        "digitlab": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
    }


def save_model(model: nn.Module, path: Path, dtype: torch.dtype | None = None, **about) -> None:
    """Write weights as safetensors with the model's name and arguments (and `about`) in its metadata,
    and the out-of-distribution detector the model carries, if any (tensors `ood.*`, metadata `ood`).

    `dtype` (e.g. torch.float16) stores the weights' floating-point tensors in that type (the
    detector's stay float32); loading converts them back to the model's own.
    """
    tensors = {
        name: _stored(tensor.detach().cpu().contiguous().clone(), dtype) for name, tensor in model.state_dict().items()
    }
    detector = detector_of(model)
    if detector is not None:
        tensors.update(detector.tensors())
        about = {**about, "ood": detector.metadata()}
    spec: dict = model.spec  # type: ignore[assignment]  # set by create_model; nn.Module types attributes as tensors
    metadata = {
        "format": MODEL_FORMAT,
        "model": spec["name"],
        "model_kwargs": json.dumps(spec["kwargs"]),
        **{key: json.dumps(value) for key, value in about.items()},
    }
    if dtype is not None:
        metadata["stored_dtype"] = json.dumps(str(dtype).removeprefix("torch."))
    atomic_write(path, lambda temp: save_file(tensors, temp, metadata=metadata))


def _stored(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    return tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor


def read_model_metadata(path: Path) -> dict:
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise RunError(f"{path} is not a readable safetensors file ({error})") from None
    if metadata.get("format") != MODEL_FORMAT:
        raise RunError(f"{path} is not a digitlab model file (format {metadata.get('format')!r})")
    try:
        return {key: value if key in ("format", "model") else json.loads(value) for key, value in metadata.items()}
    except json.JSONDecodeError as error:
        raise RunError(f"{path} has corrupt metadata ({error})") from None


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a model from its safetensors file alone; refuse tensors that do not fit the declared model.

    A file with out-of-distribution statistics gives the model its detector (`model.ood`); one
    without them loads as before, and its predictions carry no out-of-distribution score.
    """
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path} is missing")
    metadata = read_model_metadata(path)
    try:
        model = create_model(metadata["model"], **metadata["model_kwargs"])
    except (ConfigError, KeyError, TypeError) as error:
        raise RunError(f"{path} declares a model digitlab cannot build ({error})") from None
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise RunError(f"{path} is truncated or corrupt ({error})") from None
    detector = _split_detector(tensors, metadata, path)
    if "stored_dtype" in metadata:  # weights kept in a smaller float type (see save_model)
        expected = model.state_dict()
        tensors = {
            name: tensor.to(expected[name].dtype) if name in expected and tensor.is_floating_point() else tensor
            for name, tensor in tensors.items()
        }
    check_state(model.state_dict(), tensors, path)
    model.load_state_dict(tensors)
    if detector is not None:
        model.ood = detector  # type: ignore[assignment]  # a plain attribute, not a parameter or buffer
    if "reading" in metadata:  # a line reader's constants for placing its digits (inference.linereader.read_shift)
        model.reading = metadata["reading"]
    return model.to(resolve_device(device)).eval(), metadata


def _split_detector(tensors: dict, metadata: dict, path: Path) -> Rejector | None:
    """Take the `ood.*` tensors out of `tensors` (so the rest must match the model) and rebuild the
    detector they describe with metadata `ood`; tensors without that metadata stay, to be refused."""
    if "ood" not in metadata:
        return None
    statistics = {name: tensors.pop(name) for name in list(tensors) if name.startswith(OOD_PREFIX)}
    try:
        return detector_from_file(statistics, metadata["ood"])
    except ConfigError as error:
        raise RunError(f"{path}: {error}") from None


def check_state(expected: dict, found: dict, path: Path) -> None:
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or extra:
        raise RunError(f"{path} does not match its model: missing {missing or 'none'}, unexpected {extra or 'none'}")
    for name, tensor in expected.items():
        if found[name].shape != tensor.shape or found[name].dtype != tensor.dtype:
            raise RunError(
                f"{path}: tensor {name} is {found[name].dtype} {tuple(found[name].shape)}, "
                f"the model needs {tensor.dtype} {tuple(tensor.shape)}"
            )


@dataclass
class Run:
    """A trained model with its resolved config and metrics; `path` is its folder (None if unsaved)."""

    path: Path | None
    model: nn.Module
    config: TrainConfig
    metrics: dict
    dataset: str = "mnist"
    dataset_sha256: dict = field(default_factory=dict)
    classes: tuple = tuple("0123456789")
    preprocess: PreprocessOptions = field(default_factory=PreprocessOptions)  # how pictures are prepared for it

    def data(self, purpose: str = "evaluated"):
        """The run's dataset with its validation split; warns if its files differ from training's."""
        data = load_dataset(self.dataset, val_size=self.config.val_size, split_seed=self.config.split_seed)
        if self.dataset_sha256 and data.sha256 != self.dataset_sha256:
            warnings.warn(
                f"run was trained on different {self.dataset} files than the ones {purpose} now", stacklevel=3
            )
        return data

    def evaluate(self, split: str = "test", tta: bool = False) -> dict:
        """Metrics on a split of the dataset the run was trained on (warns if its files differ); `tta`
        averages each digit's small shifts and rotations (digitlab.inference.evaluate.TTA_VIEWS)."""
        data = self.data()
        return evaluate(self.model, data.splits()[split], data.classes, tta)

    def predict(
        self,
        images,
        top_k: int = 1,
        batch_size: int = 512,
        errors: str = "raise",
        preprocess: PreprocessOptions | None = None,
        workers: int = WORKERS,
        progress=None,
        tta: bool = False,
    ) -> list:
        """Classify pictures of digits (file paths, folders, PIL images, arrays): see digitlab.inference.predict.predict.

        Pictures are prepared with the run's own preprocessing unless `preprocess` says otherwise;
        `tta` averages each digit's small shifts and rotations.
        """
        return predict(
            self.model,
            images,
            self.classes,
            top_k=top_k,
            batch_size=batch_size,
            errors=errors,
            options=preprocess or self.preprocess,
            workers=workers,
            progress=progress,
            tta=tta,
        )

    def explain(
        self, picture, targets=(), steps: int = STEPS, preprocess: PreprocessOptions | None = None
    ) -> Explanation:
        """What the model computes inside for one picture of a digit (a path, PIL image or array): its
        probabilities, hidden layers and integrated-gradients saliency for the predicted class and for each
        class in `targets` (names or indices). See digitlab.explain."""
        return explain_picture(self.model, picture, self.classes, targets, preprocess or self.preprocess, steps)

    def read_number(
        self, images, errors: str = "raise", preprocess: PreprocessOptions | None = None, reader: str = "line"
    ) -> list:
        """Read the whole number written in each picture (file paths, folders, PIL images, arrays): one
        NumberReading per input, see digitlab.inference.numbers.read_numbers. A single picture gives a list of one.

        `reader` (NUMBER_READERS): "line" reads each line whole with the line reader (`line_reader`; the
        default, faster and more often exact: docs/prediction.md), "segmenter" cuts touching digits apart
        where the segmenter reads the parts best (`segmenter`); a model of other classes always cuts."""
        if reader not in NUMBER_READERS:
            raise ConfigError(f"reader must be one of {', '.join(NUMBER_READERS)}, got {reader!r}")
        options = preprocess or self.preprocess
        line = self.line_reader() if reader == "line" else None
        judge = self.segmenter() if line is None else None
        return read_numbers(self.model, images, self.classes, options, errors, judge=judge, reader=line)

    def line_reader(self) -> nn.Module | None:
        """The reader of whole lines of digits for `read_number` (digitlab.inference.linereader): the one shipped
        with the package, for a model of the digits 0-9, on the same device; None for other classes or where
        the file is missing (the digits are then cut apart, see `segmenter`)."""
        if tuple(self.classes) != SEGMENTER_CLASSES[:NONE] or not LINE_READER_FILE.is_file():
            return None
        device = next(self.model.parameters()).device
        if ("line", device) not in _SEGMENTERS:
            _SEGMENTERS[("line", device)] = load_model(LINE_READER_FILE, device)[0]
        return _SEGMENTERS[("line", device)]

    def segmenter(self) -> nn.Module | None:
        """The judge that parts touching digits for `read_number` (digitlab.inference.segmenter): the one shipped with
        the package, for a model of the digits 0-9 on the same device; None (the model judges itself) for
        other classes. RunError when the package lacks the file (see require_segmenter)."""
        if tuple(self.classes) != SEGMENTER_CLASSES[:NONE]:
            return None
        device = next(self.model.parameters()).device
        if device not in _SEGMENTERS:
            segmenter = load_model(require_segmenter(), device)[0]
            _SEGMENTERS[device] = in_preferred_layout(segmenter, segmenter)  # its weights channels-last: ~2x faster
        return _SEGMENTERS[device]

    def real_world(
        self, part: str = "test", count: int = DEFAULT_COUNT, seed: int = 0, preprocess: PreprocessOptions | None = None
    ) -> dict:
        """Accuracy on the real-world suite rendered from the validation or test digits (see digitlab.inference.realworld)."""
        split = self.data("rendered").splits()["val" if part == "val" else "test"]
        return score_suite(self.model, split, part=part, count=count, seed=seed, options=preprocess or self.preprocess)

    def nondigits(self, part: str = "test", count: int = NONDIGIT_COUNT) -> dict:
        """How much of the non-digit suite (letters, doodles, symbols, photos...: digitlab.inference.nondigits)
        `predict` turns away, kind by kind, read as files with the run's preprocessing."""
        split = "val" if part == "val" else "test"
        digits = self.data("rendered").splits()[split]
        fashion = load_dataset("fashion-mnist", val_size=self.config.val_size).splits()[split]
        return score_nondigits(lambda paths: self.predict(paths, errors="collect"), digits, fashion, part, count)

    @property
    def ood(self) -> Rejector | None:
        """The model's out-of-distribution detector, or None if its file has none (see digitlab.inference.ood)."""
        return detector_of(self.model)

    def calibrate_ood(self, quantile: float = QUANTILE) -> Detector:
        """Fit the out-of-distribution detector on the run's training digits with its threshold at the
        `quantile` of the validation digits' scores (the test split is never looked at), give it to the
        model and, when the run has a folder, rewrite model.safetensors with it. Returns the detector."""
        data = self.data("calibrated on")
        transform = deskew if self.preprocess.deskew else None
        detector = fit_detector(
            self.model,
            data.train.images,
            data.train.labels,
            data.val.images,
            len(self.classes),
            quantile,
            transform,
            self.config.seed,
        )
        self.model.ood = detector  # type: ignore[assignment]  # a plain attribute, not a parameter or buffer
        if self.path is not None:
            _save_model_file(self)
        return detector

    def robustness(self, split: str = "test") -> dict[str, float]:
        """Accuracy on the clean split and on rotated, shifted and scaled copies of it."""
        return robustness(self.model, self.data().splits()[split])

    def doctor(self, dataset: Dataset | None = None, probes: Probes | None = None) -> Findings:
        """What the doctor finds wrong with this run, worst first (see digitlab.runs.checkup): its curves
        (chance, learning rate, stopping), its insides (input scale, dead or saturated units, gradient
        flow), its fit, calibration, confusions, label noise and real-world gap, each with its evidence
        and the fix to try. `dataset` is the data it trained on (default: its registered dataset, which
        must be fetched, with the run's train_size); `probes` how much it looks at (default Probes());
        Jupyter shows the findings beside their pictures.
        """
        from .checkup import Patient, Probes, examine  # the checkup draws figures: matplotlib only when asked

        if self.path is not None and "history" not in self.metrics:
            raise RunError(
                f"{self.path} has no training history in {METRICS_FILE} (saved by an older digitlab): "
                "the doctor reads it; retrain the run"
            )
        data = dataset or self._fetched_data()
        patient = Patient(self.model, self.metrics.get("history"), data, self.config, self.preprocess, self.path)
        return examine(patient, probes or Probes())

    def _fetched_data(self) -> Dataset:
        """The run's dataset as it trained on it, without downloading; RunError if its files differ."""
        data = load_dataset(
            self.dataset, val_size=self.config.val_size, split_seed=self.config.split_seed, download=False
        )
        if self.dataset_sha256 and data.sha256 != self.dataset_sha256:
            raise RunError(f"this run was trained on other {self.dataset} files than the ones in the data folder")
        if self.config.train_size and self.config.train_size < len(data.train):
            data = replace(data, train=data.train.take(self.config.train_size))
        return data

    def _repr_html_(self) -> str:
        """The card Jupyter shows for a Run: model, dataset, accuracy, curves thumbnail, folder."""
        metrics, percent = self.metrics, lambda value: "-" if value is None else f"{value:.2%}"
        facts = [
            ("model", f"{self.config.model}" + (f" (recipe {self.config.recipe})" if self.config.recipe else "")),
            ("dataset", self.dataset),
            ("test accuracy", percent(metrics.get("test_accuracy"))),
            ("validation accuracy", percent(metrics.get("val_accuracy"))),
            ("parameters", f"{metrics['parameters']:,}" if "parameters" in metrics else "-"),
            ("training", f"{metrics.get('epoch') or '-'} epochs, {metrics.get('train_seconds') or 0:.1f} s"),
            ("folder", str(self.path) if self.path else "not saved"),
        ]
        title = self.path.name if self.path else f"{self.config.model} run"
        return card_html(title, facts, metrics.get("history", []))


def evaluate_run(run: Run | str | Path, split: str = "test", tta: bool = False) -> dict:
    """Load the run if given a path, then return its metrics on `split` (default test), with `tta` if asked."""
    return (run if isinstance(run, Run) else load_run(run)).evaluate(split, tta)


def evaluate_real_world(run: Run | str | Path, part: str = "test", count: int = DEFAULT_COUNT, seed: int = 0) -> dict:
    """Load the run if given a path, then score it on the real-world suite (see Run.real_world)."""
    return (run if isinstance(run, Run) else load_run(run)).real_world(part, count, seed)


def new_run_folder(config: TrainConfig) -> Path:
    """Create the run folder: config.out, or runs/<model>-<timestamp> (suffixed if taken)."""
    if config.out:
        folder = Path(config.out)
        if (folder / MODEL_FILE).exists() or (folder / CONFIG_FILE).exists():
            raise RunError(f"{folder} already holds a run; choose another --out, or continue it with --resume")
    else:
        base = Path("runs") / f"{config.model}-{time.strftime('%Y%m%d-%H%M%S')}"
        folder, suffix = base, 1
        while folder.exists():
            suffix += 1
            folder = base.with_name(f"{base.name}-{suffix}")
    make_folder(folder, "run folder")
    if not os.access(folder, os.W_OK):
        raise RunError(f"run folder {folder} is not writable")
    return folder


def save_config(folder: Path, config: TrainConfig, dataset) -> None:
    """Write config.json: the resolved config, software versions and the dataset's checksums."""
    _write_config(folder, config, _dataset_record(dataset.name, dataset.sha256, dataset.classes))


def _write_config(folder: Path, config: TrainConfig, dataset: dict) -> None:
    write_json(folder / CONFIG_FILE, {"config": config.to_dict(), "versions": versions(), "dataset": dataset})


def _dataset_record(name: str, sha256: dict, classes) -> dict:
    return {"name": name, "sha256": sha256, "classes": list(classes)}


def save_run(run: Run) -> None:
    """Write config.json, metrics.json and model.safetensors into run.path."""
    if run.path is None:
        raise RunError("this run has no folder to be saved into")
    dataset = _dataset_record(run.dataset, run.dataset_sha256, run.classes)
    _write_config(run.path, run.config, dataset)
    write_json(run.path / METRICS_FILE, run.metrics)
    _save_model_file(run)


def _save_model_file(run: Run) -> None:
    assert run.path is not None  # callers check that the run has a folder
    dataset = _dataset_record(run.dataset, run.dataset_sha256, run.classes)
    save_model(
        run.model,
        run.path / MODEL_FILE,
        dataset=dataset,
        config=run.config.to_dict(),
        preprocess=run.preprocess.to_dict(),
    )


def load_run(path: str | Path, device: str | torch.device = "cpu") -> Run:
    """Load a run folder (or a bare model.safetensors) written by `train`, its model on `device`
    ('cpu', 'cuda', 'mps', 'auto' for the first of those present, or a torch.device)."""
    path = Path(path)
    if path.is_file() and path.suffix == ".safetensors":
        model, metadata = load_model(path, device)
        config = TrainConfig.from_dict(metadata.get("config", {}))
        return Run(
            None,
            model,
            config,
            metadata.get("metrics", {}),
            **_dataset_fields(metadata.get("dataset", {})),
            preprocess=_preprocessing(metadata, path),
        )
    if not path.is_dir():
        raise RunError(f"no run folder at {path}")
    model, metadata = load_model(path / MODEL_FILE, device)
    saved = read_json(path / CONFIG_FILE)
    try:
        config = TrainConfig.from_dict(saved.get("config", {}))
    except ConfigError as error:
        raise RunError(f"{path / CONFIG_FILE}: {error}") from None
    return Run(
        path,
        model,
        config,
        read_json(path / METRICS_FILE),
        **_dataset_fields(saved.get("dataset", {})),
        preprocess=_preprocessing(metadata, path),
    )


def require_segmenter() -> Path:
    """The segmenter's weight file shipped inside the package; RunError naming it when it is missing (a broken
    installation: numbers would be read without it, worse, and nobody would know)."""
    if not SEGMENTER_FILE.is_file():
        raise RunError(f"the segmenter shipped with digitlab is missing ({SEGMENTER_FILE}): reinstall digitlab")
    return SEGMENTER_FILE


def _preprocessing(metadata: dict, path: Path) -> PreprocessOptions:
    """The preprocessing a model file records; digitlab 0.1's for files saved before it was recorded (said once)."""
    if "preprocess" not in metadata:
        warnings.warn(
            f"{path} was saved before models recorded their preprocessing: its pictures get "
            "digitlab 0.1's preprocessing (retrain it for the current one)",
            stacklevel=3,
        )
        return PreprocessOptions(legacy=True)
    try:
        return PreprocessOptions.from_dict(metadata["preprocess"])
    except (ConfigError, TypeError, AttributeError) as error:
        raise RunError(f"{path} has corrupt preprocessing metadata ({error})") from None


def _dataset_fields(dataset: dict) -> dict:
    return {
        "dataset": dataset.get("name", "mnist"),
        "dataset_sha256": dataset.get("sha256", {}),
        "classes": tuple(dataset.get("classes", "0123456789")),
    }
