"""Figures for ``report.md``, rebuilt from a results folder alone: training-loss and validation-NLL curves per cell,
quality against sampling steps for cells that share one trained prior, and seconds per image against quality."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import pandas as pd

from .io import read_json, write_bytes

QUALITY = ("fid", "kid", "nll_gap", "token_kl")  # the first one a results folder has is plotted
PLOTS_DIR = "plots"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    write_bytes(path, buffer.getvalue())


def _cells(out: Path) -> list[tuple[Path, dict[str, Any]]]:
    found = [(p.parent, read_json(p)) for p in (out / "runs").glob("*/metrics.json")]
    return sorted(found, key=lambda pair: (pair[1].get("index", 0), pair[1]["cell"]))


def _label(cell: dict[str, Any]) -> str:
    return f"{cell['row']} (seed {cell['seed']})"


def training_curves(out: Path) -> Path | None:
    """Training loss (running mean) and validation NLL per cell from each ``train_curve.csv``."""
    curves = [(_label(cell), pd.read_csv(folder / "train_curve.csv")) for folder, cell in _cells(out) if (folder / "train_curve.csv").is_file()]
    if not curves:
        return None
    has_val = any(frame["val_nll_bpt"].notna().any() for _, frame in curves)
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2 if has_val else 1, figsize=(11 if has_val else 6, 4), squeeze=False)
    for label, frame in curves:
        loss = frame.dropna(subset=["train_loss"])
        window = max(1, len(loss) // 50)
        axes[0, 0].plot(loss["step"], loss["train_loss"].rolling(window, min_periods=1).mean(), label=label, linewidth=1)
        val = frame.dropna(subset=["val_nll_bpt"])
        if has_val and len(val):
            axes[0, 1].plot(val["step"], val["val_nll_bpt"], marker="o", markersize=3, label=label, linewidth=1)
    axes[0, 0].set(xlabel="training step", ylabel="training loss (running mean)", title="Training loss")
    if has_val:
        axes[0, 1].set(xlabel="training step", ylabel="held-out NLL (bits/token)", title="Validation NLL")
    axes[0, -1].legend(fontsize=7)
    path = out / PLOTS_DIR / "training_curves.png"
    _save(fig, path)
    return path


def _quality_metric(values: list[dict[str, Any]]) -> str | None:
    present = {k for v in values for k, x in v.items() if x is not None and not (isinstance(x, float) and math.isnan(x))}
    return next((name for name in QUALITY if name in present), None)


def quality_lines(cells: list[dict[str, Any]]) -> tuple[str | None, dict[str, list[tuple[float, float, str]]]]:
    """(quality metric, {training run: sorted (NFE, quality, label) points}) for every trained prior sampled with
    more than one step count."""
    metric = _quality_metric([c["values"] for c in cells])
    groups: dict[str, list[tuple[float, float, str]]] = {}
    for cell in cells:
        key, nfe, quality = cell["info"].get("training"), cell["values"].get("nfe"), cell["values"].get(metric or "")
        if key and nfe is not None and quality is not None and not math.isnan(nfe) and not math.isnan(quality):
            groups.setdefault(f"{key}", []).append((nfe, quality, cell["label"]))
    return metric, {key: sorted(points) for key, points in groups.items() if len({p[0] for p in points}) > 1}


def quality_vs_steps(out: Path, note: str = "") -> Path | None:
    """Quality against network evaluations per sample, one line per trained prior that was sampled with several step
    counts (sampler-only variants share their training, so the curve involves no retraining)."""
    metric, lines = quality_lines([cell for _, cell in _cells(out)])
    if metric is None or not lines:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for points in lines.values():
        name = _common_prefix([p[2] for p in points])
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    ax.set(xscale="log", xlabel="network evaluations per sample (NFE)", ylabel=metric.upper(), title=f"{metric.upper()} vs sampling steps")
    _caption(ax, note)
    ax.legend(fontsize=7)
    path = out / PLOTS_DIR / "quality_vs_steps.png"
    _save(fig, path)
    return path


def _common_prefix(labels: list[str]) -> str:
    prefix = labels[0]
    for label in labels[1:]:
        while not label.startswith(prefix):
            prefix = prefix[:-1]
    return prefix.rstrip(" _-/(") or labels[0]


def speed_vs_quality(long: pd.DataFrame, out: Path, note: str = "") -> Path | None:
    """Seconds per image (prior + decode when decoded, else prior alone) against quality, one point per row (mean
    over seeds)."""
    means = long.groupby(["row", "metric"], sort=False)["value"].mean().unstack("metric")
    metric = next((name for name in QUALITY if name in means and means[name].notna().any()), None)
    speed = next((name for name in ("total_s_per_img", "sample_s_per_img") if name in means and means[name].notna().any()), None)
    if metric is None or speed is None:
        return None
    points = means[[speed, metric]].dropna()
    if points.empty:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(points[speed], points[metric])
    for row, (x, y) in points.iterrows():
        ax.annotate(str(row), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set(xscale="log", xlabel=f"{speed.replace('_', ' ')} (s)", ylabel=metric.upper(), title=f"Speed vs {metric.upper()}")
    _caption(ax, note)
    path = out / PLOTS_DIR / "speed_vs_quality.png"
    _save(fig, path)
    return path


def _caption(ax: Any, note: str) -> None:
    """The feature network behind FID/KID under the axes, so a figure never passes its numbers off as Inception's."""
    if note:
        ax.annotate(note, (0, -0.2), xycoords="axes fraction", fontsize=7, va="top")


def plot_section(out: Path, long: pd.DataFrame, note: str = "") -> list[str]:
    """Markdown lines embedding every figure this results folder supports (nothing when there is none); ``note``
    names the image features (written under the quality plots)."""
    made = [
        ("Training and validation curves", training_curves(out)),
        ("Quality vs sampling steps", quality_vs_steps(out, note)),
        ("Speed vs quality", speed_vs_quality(long, out, note)),
    ]
    lines = []
    for title, path in made:
        if path is not None:
            lines += ["", f"### {title}", "", f"![{title}]({path.relative_to(out).as_posix()})"]
    return ["", "## Plots", *lines] if lines else []
