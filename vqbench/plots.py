"""Figures for ``report.md``, rebuilt from a results folder alone: training curves per objective family, quality
against sampling steps for cells that share one trained prior, time per image against quality, and the samples of
every row side by side. Each is written as PNG and PDF under ``plots/``; its notes go into the caption in the report."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .figures import curves, quality, samples
from .figures.quality import QUALITY, quality_lines, quality_series
from .figures.style import PLOTS_DIR, save

__all__ = ["PLOTS_DIR", "QUALITY", "plot_section", "quality_lines", "quality_series"]


def plot_section(out: Path, long: pd.DataFrame, note: str = "") -> list[str]:
    """Markdown lines embedding every figure this results folder supports, each with its caption (nothing when there
    is none); ``note`` names the image features behind the quality metrics (said in the captions)."""
    made = [
        ("training_curves", "Training curves", curves.build(out)),
        ("quality_vs_steps", "Quality vs sampling steps", quality.build_steps(out, note)),
        ("speed_vs_quality", "Speed vs quality", quality.build_speed(long, out, note)),
        ("samples_by_row", "Samples by row", samples.build(out, long)),
    ]
    lines: list[str] = []
    for stem, title, built in made:
        if built is None:
            continue
        fig, caption = built
        path = save(fig, out, stem).relative_to(out).as_posix()
        number = sum(line.startswith("### ") for line in lines) + 1
        lines += ["", f"### {title}", "", f"![{title}]({path})", "", f"*Figure {number}.* {caption} ([PDF]({PLOTS_DIR}/{stem}.pdf))"]
    return ["", "## Plots", *lines] if lines else []
