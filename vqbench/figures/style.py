"""What every report figure shares: print widths (single or double column) with fonts that read at that size, log
axes with plain-number ticks that never overlap, one legend below the panels, PNG and PDF written side by side."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..io import read_json, write_bytes

SINGLE, DOUBLE = 3.3, 7.0  # column widths in inches
PLOTS_DIR = "plots"
STYLE = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "lines.linewidth": 1.2,
    "lines.markersize": 3.5,
    "axes.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "pdf.fonttype": 42,  # TrueType in the PDF: text stays text
}
MARKERS = "os^Dv<>PXh"


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


@contextmanager
def styled() -> Iterator[None]:
    """The print style for artists made inside (fonts are fixed when a text is created)."""
    with pyplot().rc_context(STYLE):
        yield


def figure(width: float, height: float) -> Any:
    return pyplot().figure(figsize=(width, height), layout="constrained")


def color(i: int) -> Any:
    return pyplot().get_cmap("tab10")(i % 10)


def marker(i: int) -> str:
    return MARKERS[(i // 10) % len(MARKERS)]  # a new marker once the ten colours repeat


def legend_columns(labels: Sequence[str], width: float) -> int:
    """As many legend columns as the widest entry (7 pt text plus its handle) allows at ``width`` inches."""
    entry = max((len(label) for label in labels), default=1) * 7 * 0.55 / 72 + 0.45
    return max(1, min(len(labels), int(width // entry)))


def legend_below(fig: Any, handles: list[Any], labels: list[str], width: float) -> Any:
    """One legend for the whole figure, under its panels."""
    return fig.legend(handles, labels, loc="outside lower center", ncols=legend_columns(labels, width))


def legend_height(labels: Sequence[str], width: float) -> float:
    """Inches the legend below adds to a figure."""
    return 0.16 * math.ceil(len(labels) / legend_columns(labels, width))


def plain(value: float) -> str:
    return f"{value:g}"


def fixed_ticks(fig: Any, axis: Any, ticks: Sequence[float]) -> None:
    """Major ticks at ``ticks`` labelled as plain numbers, no minor ticks; ticks whose labels would overlap at the
    figure's size are dropped (the first and the last kept)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    axis.set_major_locator(FixedLocator(sorted(ticks)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: plain(value)))
    axis.set_minor_locator(NullLocator())
    fig.canvas.draw()  # lays the figure out, so label extents are final
    renderer = fig.canvas.get_renderer()
    vertical = axis.axis_name == "y"
    shown = [(t, label.get_window_extent(renderer)) for t, label in zip(axis.get_majorticklocs(), axis.get_ticklabels()) if label.get_text()]
    spans = [(box.y0, box.y1) if vertical else (box.x0, box.x1) for _, box in shown]
    kept: list[int] = []
    gap = 3.0  # pixels between neighbouring labels
    for i in range(len(shown)):
        if not kept or spans[i][0] >= spans[kept[-1]][1] + gap:
            kept.append(i)
        elif i == len(shown) - 1 and len(kept) > 1:  # the largest value keeps its tick, its left neighbour goes
            kept[-1] = i
            if spans[i][0] < spans[kept[-2]][1] + gap:
                kept.pop()
    axis.set_major_locator(FixedLocator([shown[i][0] for i in kept]))


def one_two_five(low: float, high: float) -> list[float]:
    """1-2-5 steps from ``low`` to ``high`` (both > 0), or those two values when fewer than two steps fall in."""
    steps = [m * 10.0**e for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1) for m in (1, 2, 5)]
    inside = [s for s in steps if low <= s <= high]
    return inside if len(inside) >= 2 else sorted({float(f"{low:.2g}"), float(f"{high:.2g}"), *inside})


def save(fig: Any, out: Path, stem: str) -> Path:
    """``plots/<stem>.png`` (300 dpi) and ``plots/<stem>.pdf``, each written atomically; returns the PNG's path."""
    for kind, options in (("pdf", {"metadata": {"CreationDate": None}}), ("png", {"dpi": 300})):
        buffer = io.BytesIO()
        with styled():  # the PDF's font type is read when saving
            fig.savefig(buffer, format=kind, **options)
        write_bytes(out / PLOTS_DIR / f"{stem}.{kind}", buffer.getvalue())
    pyplot().close(fig)
    return out / PLOTS_DIR / f"{stem}.png"


def run_cells(out: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(folder, metrics.json record) of every finished cell under ``runs/``, in plan order."""
    found = [(p.parent, read_json(p)) for p in (out / "runs").glob("*/metrics.json")]
    return sorted(found, key=lambda pair: (pair[1].get("index", 0), pair[1]["cell"]))


def seeds_text(counts: Sequence[int]) -> str:
    """E.g. "2 seeds" or "1–3 seeds per row"."""
    low, high = min(counts), max(counts)
    return f"{low} seed{'s' * (low != 1)}" if low == high else f"{low}–{high} seeds per row"
