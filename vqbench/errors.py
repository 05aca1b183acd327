"""User-facing errors. Each names the offending key, path or value and says what to do."""

from __future__ import annotations

# Exit codes of the ``vqbench`` command (README "Exit codes"): a script or SLURM requeue tells "done" from "partial".
EXIT_OK = 0
EXIT_CELLS_FAILED = 1  # every cell was attempted, some (or some of their metrics) failed
EXIT_BAD_INPUT = 2  # nothing was computed: the message names the key, path or value
EXIT_LEFT_TO_OTHER_JOBS = 75  # finished what this job could; cells claimed by live jobs remain (EX_TEMPFAIL: rerun later)
EXIT_INTERRUPTED = 130  # Ctrl-C
EXIT_TERMINATED = 143  # SIGTERM (preemption, `timeout`): claims released, rerun resumes


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that it unwinds as Ctrl-C does (claims and locks released, no
    half-written file)."""


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


class DiskFull(VQBenchError):
    """A write failed because the file system (or the user's quota) is full. Writes are atomic, so every finished
    cell and cache entry is intact and a rerun resumes where this one stopped."""

    def __init__(self, path: object):
        self.path = str(path)
        super().__init__(
            f"no space left on {self.path} (the disk or quota is full): free space (or point out/cache elsewhere) and rerun; "
            "finished cells and cache entries are kept"
        )

    def __reduce__(self):  # pickles (e.g. across processes) with its path, not its message
        return type(self), (self.path,)
