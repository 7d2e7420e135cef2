"""Checks that read a run's history (metrics.json "history": one record per epoch): training at chance or
stalled, a learning rate too high or too low, and a run stopped too early or too late.

The yardstick is ln(classes), the cross-entropy of a uniform guess: a fresh model starts there, so a
loss that never falls well below it learned nothing, and a first epoch whose mean loss is above it
went up from the start. The epoch records hold running means over each epoch, so a rise from one
epoch to the next is a rise of the whole epoch, not a noisy batch.
"""

from __future__ import annotations

import itertools
import math

from ...figures import doctor as pictures
from .findings import Commands, Finding

CHANCE_FACTOR = 1.5  # accuracy below 1.5 / classes is chance level (15% for ten classes)
STUCK_SHARE = 0.9  # a loss that never fell below 90% of ln(classes) never left the uniform guess
ROSE_ABOVE = 1.05  # a first epoch whose mean loss is 5% above ln(classes) rose from the start
EPOCH_RISE = 0.05  # a training loss 5% above the epoch before, while
RISE_FLOOR = 0.1  # still above this (below it, ups and downs are noise around a fitted model)
SLOW_FIRST_EPOCH = 0.6  # a first epoch that kept 60% of ln(classes) as loss barely moved
STILL_FALLING = 0.02  # the last epoch's loss 2% below the one before: still falling
STALLED_HIGH = 0.25  # a loss that stops falling above a quarter of ln(classes), at a rate above the usual band
# The learning rates people use with each optimizer (Adam's default is 1e-3; SGD with momentum 0.9
# trains MNIST from 1e-3 to 0.5): outside this band, a slow or rising curve is more likely the rate's.
USUAL_LR = {"adam": (1e-4, 1e-2), "adamw": (1e-4, 1e-2), "sgd": (1e-3, 0.5)}


def history_findings(history: list[dict], classes: int, lr: float, optimizer: str, commands: Commands) -> list[Finding]:
    """The findings of every history check; one `info` when there is no history to read."""
    if not history:
        return [Finding("history", "info", "this run carries no training history: the curve checks are skipped", {})]
    draw = lambda: pictures.loss_curves(history, classes)  # noqa: E731
    found = [
        chance(history, classes, commands),
        learning_rate_high(history, classes, lr, optimizer, commands),
        learning_rate_low(history, classes, lr, optimizer, commands),
        stopping(history, commands),
    ]
    findings = [finding for finding in found if finding is not None]
    for finding in findings:
        finding.draw = draw
    return findings


def _losses(history: list[dict], split: str = "train") -> list[float]:
    return [record[f"{split}_loss"] for record in history if record.get(f"{split}_loss") is not None]


def _final_accuracy(history: list[dict]) -> tuple[str, float | None]:
    last = history[-1]
    if last.get("val_accuracy") is not None:
        return "validation", last["val_accuracy"]
    return "training", last.get("train_accuracy")


def chance(history: list[dict], classes: int, commands: Commands) -> Finding | None:
    """Problem when the run ends at chance accuracy or its loss never left ln(classes)."""
    uniform = math.log(classes)
    losses = _losses(history)
    where, accuracy = _final_accuracy(history)
    at_chance = accuracy is not None and accuracy < CHANCE_FACTOR / classes
    stuck = bool(losses) and min(losses) > STUCK_SHARE * uniform
    if not (at_chance or stuck):
        return None
    evidence = {
        f"{where}_accuracy": accuracy,
        "chance_accuracy": 1 / classes,
        "final_train_loss": losses[-1] if losses else None,
        "lowest_train_loss": min(losses) if losses else None,
        "uniform_guess_loss": uniform,
    }
    said = (
        f"{where} accuracy {accuracy:.1%} is chance level ({1 / classes:.0%} for {classes} classes)"
        if at_chance
        else ""
    )
    if stuck:
        stuck_text = (
            f"the training loss never fell below {min(losses):.3f}, next to ln({classes}) = {uniform:.3f}, "
            "the loss of a uniform guess: the model learned nothing"
        )
        said = f"{said}; {stuck_text}" if said else stuck_text
    return Finding(
        "chance",
        "problem",
        said[0].upper() + said[1:],
        evidence,
        f"{commands.lr_find()}, then retrain at the rate it names (and see the other findings for the cause)",
    )


def learning_rate_high(
    history: list[dict], classes: int, lr: float, optimizer: str, commands: Commands
) -> Finding | None:
    """The loss went up: its first epoch averaged above a uniform guess, or it rose from one epoch to the
    next; or, at a rate above its optimizer's usual band, it stopped falling far from fitted."""
    uniform, losses = math.log(classes), _losses(history)
    if not losses:
        return None
    rises = [
        (number + 2, before, after)
        for number, (before, after) in enumerate(itertools.pairwise(losses))
        if after > (1 + EPOCH_RISE) * before and after > RISE_FLOOR
    ]
    rose_at_start = losses[0] > ROSE_ABOVE * uniform
    _, high = USUAL_LR.get(optimizer, (0.0, math.inf))
    stalled_high = (
        lr > high
        and len(losses) > 1
        and losses[-1] > STALLED_HIGH * uniform
        and losses[-1] > (1 - STILL_FALLING) * losses[-2]
    )
    if not (rose_at_start or rises or stalled_high):
        return None
    said = []
    if rose_at_start:
        said.append(
            f"the first epoch's mean training loss {losses[0]:.3f} is above ln({classes}) = {uniform:.3f}, "
            "where a fresh model starts: the loss went up"
        )
    if rises:
        epoch, before, after = max(rises, key=lambda rise: rise[2] / rise[1])
        said.append(f"the training loss rose {after / before - 1:.0%} in epoch {epoch} ({before:.3f} → {after:.3f})")
    if stalled_high and not rises:
        said.append(
            f"the training loss stopped falling at {losses[-1]:.3f}, {losses[-1] / uniform:.0%} of a uniform guess's"
        )
    said.append(_rate_note(lr, optimizer))
    return Finding(
        "learning-rate-high",
        "problem" if rose_at_start else "warning",
        "Learning rate too high: " + "; ".join(filter(None, said)),
        {
            "lr": lr,
            "first_epoch_loss": losses[0],
            "uniform_guess_loss": uniform,
            "rises": [{"epoch": epoch, "from": before, "to": after} for epoch, before, after in rises],
        },
        f"{commands.train(lr=lr / 10)} (or {commands.lr_find()})",
    )


def learning_rate_low(
    history: list[dict], classes: int, lr: float, optimizer: str, commands: Commands
) -> Finding | None:
    """The loss fell slowly from the first epoch on and was still falling at the end."""
    uniform, losses = math.log(classes), _losses(history)
    if len(losses) < 2:
        return Finding("learning-rate-low", "info", "one epoch: too short a curve to judge a slow learning rate", {})
    slow_start = losses[0] > SLOW_FIRST_EPOCH * uniform and min(losses) < STUCK_SHARE * uniform
    falling = losses[-1] < (1 - STILL_FALLING) * losses[-2]
    low, _ = USUAL_LR.get(optimizer, (0.0, math.inf))
    if not (slow_start and falling):
        return None
    evidence = {
        "lr": lr,
        "first_epoch_loss": losses[0],
        "last_epoch_fall": 1 - losses[-1] / losses[-2],
        "usual_lr": low,
    }
    said = (
        f"the first epoch kept a mean loss of {losses[0]:.3f} ({losses[0] / uniform:.0%} of a uniform guess's) "
        f"and the loss still fell {1 - losses[-1] / losses[-2]:.0%} in the last epoch"
    )
    if lr < low:
        return Finding(
            "learning-rate-low",
            "warning",
            f"Learning rate too low: {said}; {_rate_note(lr, optimizer)}",
            evidence,
            f"{commands.train(lr=lr * 10)} (or {commands.lr_find()})",
        )
    return Finding(
        "learning-rate-low",
        "info",
        f"Slow start: {said}; the rate {lr:g} is usual for {optimizer}, so more epochs may be all it needs",
        evidence,
        commands.lr_find(),
    )


def _rate_note(lr: float, optimizer: str) -> str:
    low, high = USUAL_LR.get(optimizer, (0.0, math.inf))
    if lr > high:
        return f"lr {lr:g} is {lr / high:.0f}× above the {high:g} {optimizer} usually tolerates"
    if lr < low:
        return f"lr {lr:g} is {low / lr:.0f}× below the {low:g} {optimizer} usually starts from"
    return ""


def stopping(history: list[dict], commands: Commands) -> Finding | None:
    """Stopped too late (validation loss past its lowest, accuracy falling) or too early (still improving)."""
    val_losses = _losses(history, "val")
    if len(val_losses) < 2:
        return None
    best = min(range(len(val_losses)), key=val_losses.__getitem__)
    accuracies = [record.get("val_accuracy") or 0.0 for record in history]
    last = len(val_losses)
    if best + 1 < last - 1 and val_losses[-1] > 1.1 * val_losses[best]:
        fell = max(accuracies) - accuracies[-1]
        return Finding(
            "stopped-late",
            "warning" if fell > 0.01 else "info",
            f"Validation loss was lowest at epoch {best + 1} ({val_losses[best]:.3f}) and rose "
            f"{val_losses[-1] / val_losses[best] - 1:.0%} by epoch {last}"
            + (f"; validation accuracy fell {fell:.1%} from its best" if fell > 0.001 else ""),
            {"best_epoch": best + 1, "best_val_loss": val_losses[best], "final_val_loss": val_losses[-1]},
            f"{commands.train(keep_best=True)} (or --epochs {best + 1})",
        )
    if val_losses[-1] < (1 - STILL_FALLING) * val_losses[-2]:
        return Finding(
            "stopped-early",
            "info",
            f"Validation loss still fell {1 - val_losses[-1] / val_losses[-2]:.0%} in the last epoch: "
            "more epochs would likely help",
            {"last_epoch_fall": 1 - val_losses[-1] / val_losses[-2]},
            commands.train(epochs=2 * last),
        )
    return None


def end_of_training_alarm(
    history: list[dict], classes: int, lr: float, optimizer: str, commands: Commands
) -> str | None:
    """What training says when it ends at chance or its loss never fell (None otherwise): the finding,
    the learning rate's part in it when the loss went up, and the fixes to try."""
    stalled = chance(history, classes, commands) if history else None
    if stalled is None:
        return None
    rate = learning_rate_high(history, classes, lr, optimizer, commands)
    cause = f" {rate.message}." if rate is not None else ""
    where = f" {commands.run}" if commands.run else ""
    return (
        f"training ended where it started. {stalled.message}.{cause} Try: {rate.fix if rate else stalled.fix}; "
        f"the doctor says more: digitlab doctor{where or ' RUN'}"
    )
