"""Which cells one job of several runs: ``--shard I/N`` (0 ≤ I < N) or ``--shard auto`` from a job array's
environment."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..errors import ConfigError

SLURM = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT")
GENERIC = ("VQBENCH_SHARD_INDEX", "VQBENCH_SHARD_COUNT")


def parse_shard(text: str | None, env: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """``I/N`` → (I, N) with 0 ≤ I < N; ``auto`` → ``shard_from_env``; None → None (every cell)."""
    if text is None:
        return None
    if text.strip() == "auto":
        return shard_from_env(os.environ if env is None else env)
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ConfigError("--shard", f"expected I/N such as 0/4, or auto, got {text!r}") from None
    if not 0 <= index < count:
        hint = f"; array ids that start at 1? use {index - 1}/{count}, or --shard auto" if index == count > 0 else ""
        raise ConfigError("--shard", f"needs 0 ≤ I < N, got {text!r}{hint}")
    return index, count


def shard_from_env(env: Mapping[str, str]) -> tuple[int, int]:
    """(I, N) of this job in its array.

    SLURM: I = (SLURM_ARRAY_TASK_ID − SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP (step 1 when unset), N =
    SLURM_ARRAY_TASK_COUNT, so arrays numbered from 1 (``--array=1-8``) or with steps (``--array=0-15:2``) work.
    Otherwise torchrun-style 0-based ``VQBENCH_SHARD_INDEX`` of ``VQBENCH_SHARD_COUNT`` (e.g. set from a Kubernetes
    indexed job's ``JOB_COMPLETION_INDEX``). torchrun's own ``RANK``/``WORLD_SIZE`` never shard cells: they name the
    data-parallel processes that share each cell."""
    if any(name in env for name in SLURM):
        task, first, count = (_integer(env, name) for name in SLURM)
        step = _integer(env, "SLURM_ARRAY_TASK_STEP") if "SLURM_ARRAY_TASK_STEP" in env else 1
        if step <= 0 or (task - first) % step:
            raise ConfigError("--shard", f"SLURM_ARRAY_TASK_ID {task} is not MIN {first} plus a multiple of STEP {step}")
        index = (task - first) // step
        where = f"SLURM_ARRAY_TASK_ID={task}, SLURM_ARRAY_TASK_MIN={first}, SLURM_ARRAY_TASK_COUNT={count}"
    elif all(name in env for name in GENERIC):
        index, count = (_integer(env, name) for name in GENERIC)
        where = f"VQBENCH_SHARD_INDEX={index}, VQBENCH_SHARD_COUNT={count}"
    else:
        raise ConfigError(
            "--shard",
            "auto needs a job array's environment: SLURM_ARRAY_TASK_ID/_MIN/_COUNT (sbatch --array) or "
            "VQBENCH_SHARD_INDEX (0-based) and VQBENCH_SHARD_COUNT; or give I/N",
        )
    if not 0 <= index < count:
        raise ConfigError("--shard", f"auto: shard {index} of {count} from {where} is out of range (0 ≤ I < N)")
    return index, count


def _integer(env: Mapping[str, str], name: str) -> int:
    if name not in env:
        raise ConfigError("--shard", f"auto: {name} is not set (the job array's other variables are)")
    try:
        return int(env[name])
    except ValueError:
        raise ConfigError("--shard", f"auto: {name}={env[name]!r} is not an integer") from None
