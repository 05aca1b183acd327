"""The ``metrics`` section of ``<out>/results.json``: every report row's per-seed values, each metric's label and
direction, mean, std over seeds (ddof=1), seed count and a 95 % t-interval over seeds, plus the per-seed bootstrap
intervals over samples (``metrics.bootstrap``), so a script reads the numbers without globbing ``runs/``."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from scipy import stats

from .io import read_json, write_json
from .metrics.bootstrap import LEVEL, interval_key

log = logging.getLogger(__name__)
RESULTS_FILE = "results.json"
INTERVAL_NOTE = (
    "ci95_low/ci95_high: 95 % t-interval over seeds, mean ± t(0.975, n − 1) · std / √n with std over seeds (ddof=1); "
    "null when fewer than 2 seeds have a value"
)
BOOTSTRAP_NOTE = (
    "bootstrap.low/high per seed: 2.5/97.5 percentiles of the metric over resamples (with replacement) of that cell's "
    "generated samples, reference fixed, shifted by bootstrap.bias (mean over resamples − point value) so they lie "
    "around the point value: the sampling noise at this sample count (raw percentile = bound + bias; see "
    "vqbench.metrics.bootstrap)"
)


def finite(value: Any) -> float | None:
    """A float for JSON: None for NaN, ±inf and missing values."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def seed_summary(values: Sequence[float | None], level: float = LEVEL) -> dict[str, Any]:
    """{mean, std (ddof=1), n, ci95_low, ci95_high} over the values that are numbers (None/NaN left out)."""
    kept = [v for v in map(finite, values) if v is not None]
    n = len(kept)
    mean = sum(kept) / n if n else math.nan
    std = math.sqrt(sum((v - mean) ** 2 for v in kept) / (n - 1)) if n >= 2 else math.nan
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n) if n >= 2 else math.nan
    return {"mean": finite(mean), "std": finite(std), "n": n, "ci95_low": finite(mean - half), "ci95_high": finite(mean + half)}


def metrics_section(long: pd.DataFrame, columns: dict[str, dict[str, Any]], bootstrap: int = 0) -> dict[str, Any]:
    """The ``metrics`` section from ``report.load_long``'s (long frame, column metadata): one entry per report row
    (in report order) with, per metric column, its metadata, the per-seed values and their summary."""
    present = set(long["metric"])
    names = [name for name in columns if name in present and not interval_key(name)]
    rows = []
    for row, frame in long.groupby("row", sort=False):
        cells = frame.drop_duplicates("cell").sort_values("seed", kind="stable")
        seeds = [int(s) for s in cells["seed"]]
        by_metric = {metric: part.set_index("cell")["value"] for metric, part in frame.groupby("metric", sort=False)}
        metrics = {}
        for name in names:
            values = [finite(by_metric[name].get(cell)) if name in by_metric else None for cell in cells["cell"]]
            entry: dict[str, Any] = {**columns[name], "seeds": seeds, "values": values, **seed_summary(values)}
            boot = {part: by_metric.get(f"{name}_{key}") for part, key in (("low", "ci_low"), ("high", "ci_high"), ("bias", "boot_bias"))}
            if boot["low"] is not None and boot["high"] is not None:
                entry["bootstrap"] = {part: [finite(b.get(cell)) for cell in cells["cell"]] for part, b in boot.items() if b is not None}
            metrics[name] = entry
        first = cells.iloc[0]
        rows.append({
            "row": row, "label": first["label"], "variant": first["variant"], "cells": list(cells["cell"]), "seeds": seeds,
            "metrics": metrics,
        })  # fmt: skip
    return {
        "column_order": names,
        "interval": INTERVAL_NOTE,
        "bootstrap": {"resamples": bootstrap, "level": LEVEL, "note": BOOTSTRAP_NOTE} if bootstrap else None,
        "rows": rows,
    }


def update_results(out: Path, long: pd.DataFrame, columns: dict[str, dict[str, Any]], bootstrap: int = 0) -> bool:
    """Rewrite ``out/results.json`` (atomically) with a fresh ``metrics`` section, keeping every other key; False
    when the folder has no results.json (not written by ``vqbench run``), which is then left alone."""
    path = Path(out) / RESULTS_FILE
    if not path.is_file():
        log.warning("%s: no results.json; its metrics section is not written", out)
        return False
    write_json(path, read_json(path) | {"metrics": metrics_section(long, columns, bootstrap)})
    return True
