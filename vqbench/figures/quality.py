"""Quality against network evaluations per sample (NFE) for priors sampled with several step counts, and time per
image against quality for every report row: means over seeds with ± 1 std error bars."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .curves import components, named
from .style import SINGLE, color, figure, fixed_ticks, legend_below, legend_height, marker, one_two_five, run_cells, seeds_text, styled

QUALITY = ("fid", "kid", "nll_gap", "token_kl")  # the first one a results folder has is plotted
SPEEDS = {"total_s_per_img": "prior sampling and decoding", "sample_s_per_img": "prior sampling alone"}
HEIGHT = 2.3  # inches at single-column width (a third more at double), plus the legend


@dataclass
class Series:
    """One line: its label and, per point, mean NFE, mean quality, std over seeds and the number of seeds."""

    label: str
    points: list[tuple[float, float, float, int]]


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _quality_metric(values: list[dict[str, Any]]) -> str | None:
    present = {k for v in values for k, x in v.items() if _present(x)}
    return next((name for name in QUALITY if name in present), None)


def quality_lines(cells: list[dict[str, Any]]) -> tuple[str | None, dict[str, list[tuple[float, float, str]]]]:
    """(quality metric, {training run: sorted (NFE, quality, row) points}) for every trained prior sampled with
    more than one step count."""
    metric = _quality_metric([c["values"] for c in cells])
    groups: dict[str, list[tuple[float, float, str]]] = {}
    for cell in cells:
        key, nfe, quality = cell["info"].get("training"), cell["values"].get("nfe"), cell["values"].get(metric or "")
        if key and _present(nfe) and _present(quality) and nfe > 0:
            groups.setdefault(f"{key}", []).append((nfe, quality, cell.get("row", cell["label"])))
    return metric, {key: sorted(points) for key, points in groups.items() if len({p[0] for p in points}) > 1}


def _split(points: list[tuple[float, float, str]], rows: dict[str, tuple[str, str]]) -> list[tuple[str, list[tuple[float, float, str]]]]:
    """A training run's points as lines of distinct NFE: a sweep over steps × another sampler setting gives one line
    per value of the other setting."""
    parts = {row: components(rows[row][1]) for _, _, row in points}
    order = list(rows)  # plan order: the line is named after its first planned row (the one that trained it)
    label = rows[min((p[2] for p in points), key=order.index)][0]
    keys = list(dict.fromkeys(k for p in parts.values() for k in p))
    varying = [k for k in keys if len({p.get(k) for p in parts.values()}) > 1]
    common = {k: v for k, v in parts[points[0][2]].items() if k not in varying}
    if len({p[0] for p in points}) == len(points):
        return [(named(label, common), points)]
    for axis in varying:
        others = [k for k in varying if k != axis]
        groups: dict[tuple[str | None, ...], list[tuple[float, float, str]]] = {}
        for point in points:
            groups.setdefault(tuple(parts[point[2]].get(k) for k in others), []).append(point)
        if all(len({p[0] for p in g}) == len(g) for g in groups.values()):
            return [(named(label, common | dict(zip(others, key))), g) for key, g in groups.items() if len(g) > 1]  # type: ignore[arg-type]
    return [(named(label, common), points)]


def quality_series(cells: list[dict[str, Any]]) -> tuple[str | None, list[Series]]:
    """The lines of ``quality_lines`` joined over seeds: per row, mean NFE, mean quality and its std."""
    metric, lines = quality_lines(cells)
    rows = {cell.get("row", cell["label"]): (cell["label"], cell.get("variant", "")) for cell in cells}
    joined: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for points in lines.values():
        for label, members in _split(points, rows):
            for nfe, quality, row in members:
                joined.setdefault(label, {}).setdefault(row, []).append((nfe, quality))
    series = []
    for label, by_row in joined.items():
        frames = [pd.DataFrame(values, columns=["nfe", "q"]) for values in by_row.values()]
        means = sorted((float(f["nfe"].mean()), float(f["q"].mean()), float(f["q"].std()) if len(f) > 1 else 0.0, len(f)) for f in frames)
        series.append(Series(label, means))
    return metric, series


def column_label(out: Path, metric: str) -> str:
    """The metric's column label as the report prints it (units included), e.g. ``NLL − H (bits)``."""
    for _, cell in run_cells(out):
        if metric in cell.get("columns", {}):
            return str(cell["columns"][metric].get("label", metric.upper()))
    return metric.upper()


def direction(out: Path, metric: str) -> str:
    for _, cell in run_cells(out):
        if metric in cell.get("columns", {}):
            return {"lower": "lower is better", "higher": "higher is better"}.get(cell["columns"][metric].get("direction"), "")
    return ""


def _height(width: float) -> float:
    return HEIGHT if width <= SINGLE else HEIGHT * 4 / 3


def _bars(points: Any) -> str:
    return "; error bars: ± 1 std over seeds" if any(p[3] > 1 for line in points for p in line) else ""


def _features(note: str) -> str:
    """The feature network behind FID/KID, so a caption never passes its numbers off as Inception's."""
    note = note.strip().rstrip(".")
    return f" {note[:1].upper()}{note[1:]}." if note else ""


def build_steps(out: Path, note: str = "", width: float = SINGLE) -> tuple[Any, str] | None:
    """(figure, caption) of quality against NFE, or None when no trained prior was sampled with several step counts."""
    metric, series = quality_series([cell for _, cell in run_cells(out)])
    if metric is None or not series:
        return None
    labels = [s.label for s in series]
    with styled():
        fig = figure(width, _height(width) + legend_height(labels, width))
        ax = fig.subplots()
        handles = []
        for i, line in enumerate(series):
            x, y, err, n = zip(*line.points)
            bars = err if max(n) > 1 else None
            handles.append(ax.errorbar(x, y, yerr=bars, color=color(i), marker=marker(i), capsize=2, elinewidth=0.8, label=line.label))
        nfes = sorted({p[0] for line in series for p in line.points})
        ax.set(xscale="log", xlim=(nfes[0] / 1.25, nfes[-1] * 1.25), xlabel="network evaluations per sample (NFE)", ylabel=column_label(out, metric))
        legend_below(fig, handles, labels, width)
        fixed_ticks(fig, ax.xaxis, nfes)
    seeds = seeds_text([p[3] for line in series for p in line.points])
    better = direction(out, metric)
    caption = (
        f"{column_label(out, metric)}{f' ({better})' if better else ''} against network evaluations per sample (NFE, log scale, ticks at the NFE "
        f"values sampled) for every trained prior sampled with several step counts; the points of one line share one trained network "
        f"and differ only in sampler settings. Points: mean over {seeds}{_bars(line.points for line in series)}.{_features(note)}"
    )
    return fig, caption


def build_speed(long: pd.DataFrame, out: Path, note: str = "", width: float = SINGLE) -> tuple[Any, str] | None:
    """(figure, caption) of time per image against quality, one point per report row, or None without both."""
    stats = long.groupby(["row", "metric"], sort=False)["value"].agg(["mean", "std", "count"])
    means = stats["mean"].unstack("metric")
    metric = next((name for name in QUALITY if name in means and means[name].notna().any()), None)
    speed = next((name for name in SPEEDS if name in means and means[name].notna().any()), None)
    if metric is None or speed is None:
        return None
    rows = [
        row for row in dict.fromkeys(long["row"]) if _present(means.at[row, speed]) and _present(means.at[row, metric]) and means.at[row, speed] > 0
    ]
    if not rows:
        return None
    scale, unit = (1000.0, "ms") if max(means.at[row, speed] for row in rows) < 1 else (1.0, "s")
    times = [means.at[row, speed] * scale for row in rows]
    low, high = min(times), max(times)
    log = high / low > 10  # then a log axis with 1-2-5 ticks as plain numbers
    with styled():
        fig = figure(width, _height(width) + legend_height(rows, width))
        ax = fig.subplots()
        handles = []
        for i, (row, x) in enumerate(zip(rows, times)):
            xerr, y, yerr = stats.at[(row, speed), "std"] * scale, means.at[row, metric], stats.at[(row, metric), "std"]
            xbar = [[min(xerr, 0.9 * x) if log else xerr], [xerr]] if _present(xerr) else None  # a log axis has no room below 0
            handles.append(
                ax.errorbar(
                    [x],
                    [y],
                    xerr=xbar,
                    yerr=yerr if _present(yerr) else None,
                    color=color(i),
                    marker=marker(i),
                    linestyle="none",
                    capsize=2,
                    elinewidth=0.8,
                )
            )
        ax.set(xlabel=f"time per image, {SPEEDS[speed]} ({unit})", ylabel=column_label(out, metric))
        legend_below(fig, handles, rows, width)
        if log:
            ax.set(xscale="log", xlim=(low / 1.4, high * 1.4))
            fixed_ticks(fig, ax.xaxis, one_two_five(low / 1.4, high * 1.4))
    counts = [int(stats.at[(row, metric), "count"]) for row in rows]
    better = direction(out, metric)
    caption = (
        f"{column_label(out, metric)}{f' ({better})' if better else ''} against time per image ({SPEEDS[speed]}, {unit}; log scale when the "
        f"times span more than a factor of 10), one point per report row: mean over {seeds_text(counts)}"
        f"{'; error bars: ± 1 std over seeds on both axes' if max(counts) > 1 else ''}.{_features(note)}"
    )
    return fig, caption
