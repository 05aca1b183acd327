"""What killed jobs of this host left behind, removed before a run starts: temporaries of atomic writes, claims and
locks of processes that no longer run, and the progress file of a latent dataset that was finished."""

from __future__ import annotations

import logging
from pathlib import Path

from .. import liveness
from ..io import read_json, remove_leftovers
from ..latents import PROGRESS_FILE
from .claims import CLAIM_FILE, claim_cell

log = logging.getLogger(__name__)


def remove_dead_claims(root: Path) -> list[Path]:
    """Remove the claims (cells, locks) under ``root`` whose process ran on this host and is gone — by taking each
    over and releasing it, so a claim a live job takes over meanwhile is never removed."""
    removed = []
    for claim in root.glob(f"**/{CLAIM_FILE}"):
        try:
            owner = read_json(claim)
        except Exception:  # noqa: BLE001 - released meanwhile, or being written this instant
            continue
        if liveness.gone(owner):
            with claim_cell(claim.parent) as taken:
                if taken.held:
                    removed.append(claim)
    return removed


def remove_finished_progress(latents: Path) -> list[Path]:
    """Remove ``progress.json`` of latent datasets whose ``meta.json`` says they are finished (a kill between the two)."""
    found = [folder / PROGRESS_FILE for folder in latents.glob("*") if (folder / "meta.json").is_file() and (folder / PROGRESS_FILE).is_file()]
    for path in found:
        path.unlink(missing_ok=True)
    return found


def sweep(out: Path, cache: Path) -> None:
    """Clean ``out`` and ``cache`` of what killed jobs of this host left; log what was removed."""
    removed = []
    for root in (out, cache):
        if root.is_dir():
            removed += remove_leftovers(root) + remove_dead_claims(root)
    removed += remove_finished_progress(cache / "latents") if (cache / "latents").is_dir() else []
    if removed:
        shown = ", ".join(str(p) for p in removed[:5]) + (f" and {len(removed) - 5} more" if len(removed) > 5 else "")
        log.info("removed %d leftover(s) of killed jobs: %s", len(removed), shown)
