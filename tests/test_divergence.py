"""Divergence: a loss that goes NaN or blows up stops training at once, naming where, with exit code 3;
the last good checkpoint is kept and --resume with a smaller --lr continues from it; tuning prunes
such a trial."""

import json
import math

import pytest
import torch

from digitlab.cli import main
from digitlab.errors import DivergenceError
from digitlab.runs.checkpoint import CHECKPOINT_FILE
from digitlab.training.divergence import BLOWUP_FACTOR, LossWatch
from digitlab.tuning.tune import base_config, tune
from test_cli import run_cli

SMALL = ["--train-size", "3000", "--threads", "1"]


@pytest.mark.slow
def test_a_huge_learning_rate_stops_the_real_command_with_exit_code_3(tmp_path, mnist):
    result = run_cli("train", "--lr", "1000", "--epochs", "2", "--out", str(tmp_path / "run"), *SMALL)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("digitlab: error: training diverged in epoch 1 at step ")
    assert "of 47 (loss " in lines[0] and "learning rate 1000)" in lines[0]
    assert lines[0].endswith("no epoch completed; start again with a smaller learning rate, e.g. --lr 100")
    assert not (tmp_path / "run" / CHECKPOINT_FILE).exists() and not (tmp_path / "run" / "model.safetensors").exists()


@pytest.mark.parametrize("engine", ["fused", "autograd"])
def test_divergence_keeps_the_checkpoint_and_a_smaller_lr_resumes(engine, tmp_path, mnist, capsys):
    folder = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--lr", "3e-3", "--engine", engine, "--out", str(folder), *SMALL]) == 0
    checkpoint = (folder / CHECKPOINT_FILE).read_bytes()
    capsys.readouterr()

    assert main(["train", "--resume", str(folder), "--epochs", "3", "--lr", "1000"]) == 3
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("digitlab: error: training diverged in epoch 2 at step "), error
    assert error[0].endswith(
        f"the checkpoint of epoch 1 is kept; continue with a smaller learning rate: "
        f"digitlab train --resume {folder} --lr 100"
    )
    assert (folder / CHECKPOINT_FILE).read_bytes() == checkpoint

    assert main(["train", "--resume", str(folder), "--epochs", "2", "--lr", "1e-3"]) == 0
    metrics = json.loads((folder / "metrics.json").read_text())
    assert [record["lr"] for record in metrics["history"]] == [3e-3, 1e-3]
    assert metrics["val_accuracy"] > metrics["history"][0]["val_accuracy"] - 0.02 and metrics["val_accuracy"] > 0.8
    assert json.loads((folder / "config.json").read_text())["config"]["lr"] == 1e-3


def engine_like(watch: LossWatch, logits: torch.Tensor, batch: int, steps_seen: list, epoch: int = 1) -> None:
    """Hand the watch every step's logits as fit does: after each step, then once more at the epoch's end."""
    labels = torch.zeros(len(logits), dtype=torch.long)
    for number, row in enumerate(range(0, len(logits), batch), start=1):
        rows = slice(row, row + batch)
        watch.see(epoch, number, logits[rows], labels[rows], float(number))
        steps_seen.append(row + batch)
    watch.end_of_epoch(epoch)


def logits_with_loss(losses: list[float], batch: int) -> torch.Tensor:
    """Rows of two-class logits whose cross-entropy against label 0 is each step's loss."""
    rows = []
    for loss in losses:
        # CE([0, x], label 0) = log(1 + e^x) = loss  ->  x = log(e^loss - 1)
        x = loss + math.log1p(-math.exp(-loss)) if math.isfinite(loss) else loss
        rows.append(torch.tensor([[0.0, x]]).repeat(batch, 1))
    return torch.cat(rows)


def test_the_watch_names_the_first_non_finite_step_and_its_learning_rate():
    watch = LossWatch(2, steps=81, every=50)  # engine_like gives step n the learning rate n
    losses = [0.7] * 60 + [math.nan] + [0.7] * 20
    seen: list = []
    with pytest.raises(DivergenceError) as caught:
        engine_like(watch, logits_with_loss(losses, 4), 4, seen)
    assert (caught.value.epoch, caught.value.step, caught.value.steps) == (1, 61, 81)
    assert math.isnan(caught.value.loss) and caught.value.lr == 61.0
    assert len(seen) == 81, "the last window is checked when the epoch ends, before anything else"


def test_the_watch_stops_a_blow_up_but_lets_a_brief_spike_pass():
    first = 0.5  # below ln 2, so the limit is BLOWUP_FACTOR x ln 2
    limit = BLOWUP_FACTOR * math.log(2)
    spike = [first] + [0.6] * 20 + [limit * 3] + [0.6] * 28  # window mean below the limit
    engine_like(LossWatch(2, steps=50, every=50), logits_with_loss(spike, 2), 2, [])
    blow_up = [first] + [0.6] * 59 + [limit * 0.9] * 5 + [limit * 2] * 35
    with pytest.raises(DivergenceError) as caught:
        engine_like(LossWatch(2, steps=100, every=50), logits_with_loss(blow_up, 2), 2, [])
    assert caught.value.step == 66 and caught.value.loss == pytest.approx(limit * 2, rel=1e-4)
    assert str(caught.value).startswith("training diverged in epoch 1 at step 66 of 100 (loss ")


def test_tuning_prunes_a_diverged_trial_instead_of_crashing(tmp_path, mnist):
    base = base_config().replace(train_size=2000, threads=1)
    space = {
        "lr": {"value": 1000.0},
        "epochs": {"value": 1},
        "augment": {"value": 0.0},
        "schedule": {"value": "constant"},
    }
    records: list = []
    result = tune("mlp", 2, base=base, space=space, out=tmp_path / "s", dataset=mnist, on_trial=records.append)
    assert result.finished == 2 and result.pruned == 2 and result.best_trial is None
    assert all(record["state"] == "pruned" and "diverged in epoch 1" in record["diverged"] for record in records)
