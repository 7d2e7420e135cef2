"""One device choice: `auto` takes CUDA, then Apple's MPS, then the CPU, and every command that runs a model
goes through it. Availability is monkeypatched, so these tests hold on any machine and need no GPU."""

import pytest
import torch

from digitlab import ConfigError, TrainConfig, load_run
from digitlab.cli import main
from digitlab.config import resolve_device
from digitlab.runs.shipped import SHIPPED_MODEL


@pytest.fixture
def machine(monkeypatch):
    """Set which accelerators this process sees: machine(cuda=..., mps=...)."""

    def pretend(cuda: bool, mps: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return pretend


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_takes_cuda_then_mps_then_cpu(machine, cuda, mps, expected):
    machine(cuda=cuda, mps=mps)
    assert resolve_device("auto") == torch.device(expected)


@pytest.mark.parametrize("name", ["cuda", "mps"])
def test_an_accelerator_that_is_missing_is_a_config_error(machine, name):
    machine(cuda=False, mps=False)
    with pytest.raises(ConfigError, match=f"device '{name}' requested"):
        resolve_device(name)


def test_named_devices_and_torch_devices_are_taken_as_given(machine):
    machine(cuda=True, mps=True)
    assert resolve_device("mps") == torch.device("mps")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        resolve_device("tpu")


def test_the_config_accepts_mps_and_refuses_unknown_devices():
    assert TrainConfig(device="mps").device == "mps"
    with pytest.raises(ConfigError, match="unknown device"):
        TrainConfig(device="gpu")


def test_loading_a_model_follows_the_device_choice(machine):
    machine(cuda=False, mps=False)
    model = load_run(SHIPPED_MODEL, "auto").model
    assert {parameter.device for parameter in model.parameters()} == {torch.device("cpu")}


@pytest.mark.parametrize(
    "command",
    [
        ["train", "--epochs", "1", "--train-size", "100"],
        ["evaluate", str(SHIPPED_MODEL)],
        ["report", str(SHIPPED_MODEL)],
        ["calibrate", str(SHIPPED_MODEL)],
        ["predict", str(SHIPPED_MODEL), "digit.png"],
        ["serve", str(SHIPPED_MODEL), "--port", "0"],
    ],
    ids=lambda command: command[0],
)
def test_every_command_that_runs_a_model_goes_through_the_device_choice(machine, capsys, command):
    """Asking for MPS on a machine without it stops each command with the device choice's one-line error,
    before it reads data or starts anything: so each loads its model through resolve_device."""
    machine(cuda=False, mps=False)
    assert main([*command, "--device", "mps"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "device 'mps' requested" in error, error
