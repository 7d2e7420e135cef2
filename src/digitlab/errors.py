"""The project's own error types: each carries a one-line message meant for a person."""


class DigitlabError(Exception):
    """Base class: the CLI prints the message on one line and exits with code 2."""


class DataError(DigitlabError):
    """A data file is missing, corrupt, of the wrong shape, or fails its checksum."""


class ConfigError(DigitlabError):
    """A setting is unknown or out of range."""


class RunError(DigitlabError):
    """A run folder or checkpoint is missing, incomplete or inconsistent."""
