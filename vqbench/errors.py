"""User-facing errors. Each names the offending key, path or value and says what to do."""

from __future__ import annotations


class VQBenchError(Exception):
    """Base class for errors vqbench reports to the user (exit code 2 from the CLI)."""

    exit_code = 2


class ConfigError(VQBenchError):
    """A benchmark config or option is invalid: unknown key, wrong type, bad value."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


class DataError(VQBenchError):
    """A file or directory on disk is missing or malformed."""


class UnknownNameError(ConfigError):
    """A registry lookup failed; the message suggests the closest name."""


class TrainingDiverged(VQBenchError):
    """A loss became NaN or infinite; stops only the cell that diverged."""
