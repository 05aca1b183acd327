"""Training curves from every cell's ``train_curve.csv``: one panel per objective family in that objective's own
unit, and the held-out NLL in bits/token; one line per trained prior (mean over seeds, ± 1 std band)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..io import read_json
from .style import DOUBLE, color, figure, legend_below, legend_height, run_cells, seeds_text, styled

CURVE_FILE = "train_curve.csv"
PANEL_WIDTH, PANEL_HEIGHT = 2.2, 1.8  # inches


@dataclass(frozen=True)
class Family:
    """An objective: the panel title, what its loss measures (short, for the axis; long, for the caption), its unit."""

    title: str
    quantity: str
    unit: str
    description: str

    @property
    def ylabel(self) -> str:
        return f"{self.quantity} ({self.unit})"

    @property
    def caption(self) -> str:
        return f"{self.title}: {self.description} ({self.unit})"


FAMILIES = {
    "autoregressive": Family("Autoregressive", "next-token CE", "nats/token", "next-token cross-entropy"),
    "absorbing": Family("Absorbing diffusion", "masked CE", "bits/token", "cross-entropy of the masked tokens, weighted as its `loss` setting says"),
    "sundae": Family("SUNDAE", "denoising CE", "nats/token", "denoising cross-entropy averaged over the unrolled steps"),
    "imagebart": Family("ImageBART", "KL/CE mix", "nats/token", "per-scale mix of KL and cross-entropy"),
    "independent": Family("Independent", "NLL", "bits/token", "NLL of the fitted counts"),
}
VALIDATION = Family("Validation NLL", "held-out NLL", "bits/token", "held-out NLL")


def family(prior: str) -> Family:
    """The objective family of a registered prior name; a prior not listed gets a panel of its own."""
    return FAMILIES.get(prior) or Family(prior, "training loss", "units set by the prior", "its own training loss")


@dataclass
class Curve:
    """One trained prior: its legend label, prior name and one ``train_curve.csv`` table per seed."""

    label: str
    prior: str
    seeds: list[pd.DataFrame] = field(default_factory=list)


def components(variant: str) -> dict[str, str]:
    """``steps=8,temperature=[1,2]`` → {steps: 8, temperature: [1,2]} (a value may hold commas)."""
    parts = re.split(r",(?=[A-Za-z_][\w.]*=)", variant) if variant else []
    pairs = [part.partition("=") for part in parts]
    return {key: value for key, _, value in pairs}


def named(label: str, parts: dict[str, str]) -> str:
    return f"{label} [{','.join(f'{k}={v}' for k, v in parts.items())}]" if parts else label


def shared_label(label: str, variants: list[str]) -> str:
    """The row name of what several variants that share one training run have in common."""
    first = components(variants[0])
    return named(label, {k: v for k, v in first.items() if all(components(other).get(k) == v for other in variants[1:])})


def prior_name(folder: Path, cell: dict[str, Any]) -> str:
    name = (cell.get("protocol") or {}).get("prior", {}).get("name")
    if not name and (folder / "config.json").is_file():
        name = read_json(folder / "config.json").get("prior")
    return str(name or cell["label"])


def training_curves(out: Path) -> list[Curve]:
    """One curve per trained prior: cells that share a training run (sampler-only variants) count once per seed."""
    runs: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for folder, cell in run_cells(out):
        if (folder / CURVE_FILE).is_file():
            runs.setdefault(str(cell["info"].get("training") or cell["cell"]), []).append((folder, cell))
    curves: dict[tuple[str, str], Curve] = {}
    for members in runs.values():
        folder, cell = members[0]
        label = shared_label(cell["label"], [c.get("variant", "") for _, c in members])
        prior = prior_name(folder, cell)
        curves.setdefault((prior, label), Curve(label, prior)).seeds.append(pd.read_csv(folder / CURVE_FILE))
    return list(curves.values())


def over_seeds(frames: list[pd.DataFrame], column: str, smooth: bool) -> tuple[Any, Any, Any]:
    """(steps, mean, std) of ``column`` over the seeds' tables; training losses as a running mean (~2% of steps)."""
    series = []
    for frame in frames:
        values = frame.dropna(subset=[column]).set_index("step")[column]
        if smooth:
            values = values.rolling(max(1, len(values) // 50), min_periods=1).mean()
        series.append(values)
    table = pd.concat(series, axis=1).sort_index()
    return table.index.to_numpy(), table.mean(axis=1).to_numpy(), table.std(axis=1).to_numpy()


def _draw(ax: Any, curve: Curve, column: str, index: int, smooth: bool) -> Any:
    steps, mean, std = over_seeds(curve.seeds, column, smooth)
    style = {} if smooth else {"marker": "o"}
    (line,) = ax.plot(steps, mean, color=color(index), label=curve.label, **style)
    if len(curve.seeds) > 1:
        ax.fill_between(steps, mean - std, mean + std, color=color(index), alpha=0.25, linewidth=0)
    return line


def _steps(value: float, _: Any) -> str:
    return f"{value / 1000:g}k" if abs(value) >= 1000 else f"{value:g}"


def build(out: Path, width: float = DOUBLE) -> tuple[Any, str] | None:
    """(figure, caption) of the training curves, or None without any ``train_curve.csv``."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    curves = training_curves(out)
    if not curves:
        return None
    with_val = [c for c in curves if any(frame["val_nll_bpt"].notna().any() for frame in c.seeds)]
    panels: list[tuple[Family, list[Curve], str]] = [
        (family(prior), [c for c in curves if c.prior == prior], "train_loss") for prior in dict.fromkeys(c.prior for c in curves)
    ]
    panels += [(VALIDATION, with_val, "val_nll_bpt")] if with_val else []
    rows = math.ceil(len(panels) / max(1, int(width // PANEL_WIDTH)))
    columns = math.ceil(len(panels) / rows)  # balanced: 4 panels as 2 × 2, not 3 + 1
    labels = [c.label for c in curves]
    with styled():
        fig = figure(width, rows * PANEL_HEIGHT + 0.15 + legend_height(labels, width))
        axes = fig.subplots(rows, columns, squeeze=False).ravel()
        handles: dict[str, Any] = {}
        for ax, (fam, members, column) in zip(axes, panels):
            for curve in members:
                handles.setdefault(curve.label, _draw(ax, curve, column, labels.index(curve.label), column == "train_loss"))
            ax.set(title=fam.title, xlabel="training step", ylabel=fam.ylabel)
            ax.xaxis.set_major_locator(MaxNLocator(nbins=4, steps=[1, 2, 5, 10], integer=True))
            ax.xaxis.set_major_formatter(FuncFormatter(_steps))
        for ax in axes[len(panels) :]:
            ax.remove()
        legend_below(fig, [handles[label] for label in labels], labels, width)
    seeds = seeds_text([len(c.seeds) for c in curves])
    families = "; ".join(family(prior).caption for prior in dict.fromkeys(c.prior for c in curves))
    caption = (
        f"Training loss against step, one panel per objective, each in its own unit ({families}); running mean over about 2% of the steps. "
        + ("Validation NLL: bits per token on the held-out grids, comparable across priors. " if with_val else "")
        + f"Lines: mean over {seeds}{'; bands: ± 1 std over seeds' if any(len(c.seeds) > 1 for c in curves) else ''}. "
        + "Variants that differ only in sampler settings share one training run and one line."
    )
    return fig, caption
