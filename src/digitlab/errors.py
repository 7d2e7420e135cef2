"""The project's own error types: each carries a one-line message meant for a person."""

from __future__ import annotations


class DigitlabError(Exception):
    """Base class: the CLI prints the message on one line and exits with code 2."""


class DataError(DigitlabError):
    """A data file is missing, corrupt, of the wrong shape, or fails its checksum."""


class ConfigError(DigitlabError):
    """A setting is unknown or out of range."""


class RunError(DigitlabError):
    """A run folder or checkpoint is missing, incomplete or inconsistent."""


class ImageError(DigitlabError):
    """One input image cannot be used: not an image, truncated, empty, blank or too large.

    `source` names the input (a file path, or "image 3" for an in-memory one); the message reads
    "SOURCE: PROBLEM" on one line.
    """

    def __init__(self, problem: str, source: str | None = None):
        self.problem, self.source = problem, source
        super().__init__(f"{source}: {problem}" if source else problem)


class ImageTooLarge(ImageError):
    """An image over a size limit (bytes or pixels): the web API answers it with 413, not 422."""


class ExportError(DigitlabError):
    """A model export failed, could not be verified, or needs packages that are not installed."""


class ServeError(DigitlabError):
    """The web demo cannot start: the address is taken, or the host cannot be bound."""


class DivergenceError(DigitlabError):
    """Training diverged: a step's loss was NaN or infinite, or blew up far beyond where it started.

    Names where (epoch, step within it, of how many), the loss and the learning rate of that step;
    `hint` (added by whoever knows the run folder) says how to continue. The CLI exits with code 3.
    """

    exit_code = 3

    def __init__(self, epoch: int, step: int, steps: int, loss: float, lr: float, hint: str = ""):
        self.epoch, self.step, self.steps, self.loss, self.lr, self.hint = epoch, step, steps, loss, lr, hint
        self.where = f"diverged in epoch {epoch} at step {step} of {steps} (loss {loss:.3g}, learning rate {lr:g})"
        super().__init__(f"training {self.where}" + (f"; {hint}" if hint else ""))

    def with_hint(self, hint: str) -> DivergenceError:
        """The same error with `hint` appended."""
        return DivergenceError(self.epoch, self.step, self.steps, self.loss, self.lr, hint)
