"""Per-epoch checkpoints: everything needed to continue a run exactly where it stopped.

One file, RUN/checkpoint.safetensors, written atomically after every epoch. Its tensors are the
model weights, the optimizer state and the RNG states (torch's global generator and the batch-order
generator, as uint8 tensors); its metadata (JSON strings) holds the epoch, the history, the
optimizer's hyperparameters and the Python and NumPy RNG states. Nothing is pickled, so loading a
checkpoint cannot run code.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import RunError
from ..files import atomic_write
from .run import check_state

CHECKPOINT_FILE = "checkpoint.safetensors"
BEST_FILE = "best.safetensors"
CHECKPOINT_FORMAT = "digitlab-checkpoint/1"


@dataclass
class Progress:
    """Where a run stands: completed epochs and their records."""

    epoch: int = 0
    history: list = field(default_factory=list)


def save_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator, progress: Progress
) -> None:
    """Atomically write the checkpoint of a run after `progress.epoch` complete epochs."""
    tensors = {
        f"model.{name}": tensor.detach().cpu().contiguous().clone() for name, tensor in model.state_dict().items()
    }
    optimizer_state = optimizer.state_dict()
    for index, values in optimizer_state["state"].items():
        for key, value in values.items():
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous().clone()
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.batches"] = generator.get_state()
    numpy_state = cast(tuple, np.random.get_state())  # the legacy form: (name, keys, pos, has_gauss, cached)
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "epoch": json.dumps(progress.epoch),
        "history": json.dumps(progress.history),
        "param_groups": json.dumps(optimizer_state["param_groups"]),
        "rng_python": json.dumps(random.getstate()),
        "rng_numpy": json.dumps([numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]]),
    }
    atomic_write(path, lambda temp: save_file(tensors, temp, metadata=metadata))


def load_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator
) -> Progress:
    """Restore model, optimizer and every RNG from `path`; return the progress it records.

    (The learning-rate schedule needs no state: it is a function of the step.)
    """
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 - a safetensors handle is not a dict: keys() is its API
    except FileNotFoundError:
        raise RunError(f"{path} is missing: the run has no complete epoch to resume from") from None
    except (SafetensorError, OSError, ValueError) as error:
        raise RunError(f"{path} is truncated or corrupt ({error})") from None
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise RunError(f"{path} is not a digitlab checkpoint")
    try:
        _restore(tensors, metadata, model, optimizer, generator, path)
        return Progress(json.loads(metadata["epoch"]), json.loads(metadata["history"]))
    except (KeyError, ValueError, TypeError, RuntimeError) as error:
        raise RunError(f"{path} does not fit this run ({error})") from None


def _restore(tensors, metadata, model, optimizer, generator, path) -> None:
    weights = {name[len("model.") :]: tensor for name, tensor in tensors.items() if name.startswith("model.")}
    check_state(model.state_dict(), weights, path)
    model.load_state_dict(weights)
    state: dict[int, dict] = {}
    for name, tensor in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = tensor
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(metadata["param_groups"])})
    torch.set_rng_state(tensors["rng.torch"])
    generator.set_state(tensors["rng.batches"])
    version, internal, gauss = json.loads(metadata["rng_python"])
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = json.loads(metadata["rng_numpy"])
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, cached))


class BestEpoch:
    """The epoch with the best validation accuracy so far, and its weights.

    With a run folder the weights also go to RUN/best.safetensors, so a resumed run still ends on
    the best epoch of the whole run.
    """

    def __init__(self, folder: Path | None = None, history: list | tuple = (), model: nn.Module | None = None):
        self.path = folder / BEST_FILE if folder is not None else None
        self.accuracy, self.epoch = -1.0, None
        self.state: dict[str, torch.Tensor] | None = None
        for record in history:
            self._note(record)
        if self.epoch is not None and self.path is not None and self.path.exists() and model is not None:
            try:
                self.state = load_file(str(self.path))
            except (SafetensorError, OSError) as error:
                raise RunError(f"{self.path} is truncated or corrupt ({error})") from None
            check_state(model.state_dict(), self.state, self.path)

    def _note(self, record: dict) -> bool:
        accuracy = record.get("val_accuracy")
        if accuracy is None or accuracy <= self.accuracy:
            return False
        self.accuracy, self.epoch = accuracy, record["epoch"]
        return True

    def offer(self, record: dict, model: nn.Module) -> None:
        """Keep the model's weights if this epoch beats every earlier one."""
        if not self._note(record):
            return
        state = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in model.state_dict().items()}
        self.state = state
        if self.path is not None:
            atomic_write(self.path, lambda temp: save_file(state, temp))

    def restore(self, model: nn.Module) -> None:
        if self.state is not None:
            model.load_state_dict(self.state)
