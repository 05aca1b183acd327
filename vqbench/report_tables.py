"""Table formatting for reports: mean ± std cells at each metric's display precision, best values (ties all bold),
optional marks for values within one std of the best, ↑/↓ headers, Markdown and LaTeX (pandas Styler) renderings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

ARROWS = {"higher": "↑", "lower": "↓"}
LATEX_ARROWS = {"higher": r"$\uparrow$", "lower": r"$\downarrow$"}
LATEX_SPECIALS = {
    "\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#", "%": r"\%", "_": r"\_",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}  # fmt: skip
LATEX_PREAMBLE = "\\usepackage{booktabs}  % \\toprule, \\midrule, \\bottomrule"


def latex_escape(text: str) -> str:
    """Escape every LaTeX special character (for captions; table cells use the Styler's own escaping)."""
    return "".join(LATEX_SPECIALS.get(ch, ch) for ch in str(text))


@dataclass
class Table:
    """Cell texts (rows × displayed columns), which cells are best and which are within one std of the best."""

    text: pd.DataFrame
    best: pd.DataFrame
    near: pd.DataFrame
    directions: dict[str, str]  # displayed column → higher | lower | none


def _rounded(value: float, digits: int) -> float:
    return round(float(value), digits)


def build_table(means: pd.DataFrame, stds: pd.DataFrame, counts: pd.Series, columns: dict[str, dict[str, Any]],
                with_seeds: bool = True, no_std: frozenset[str] = frozenset()) -> Table:  # fmt: skip
    """Format each metric at its display precision. Best values are compared *as displayed*, so every row that shows
    the best number is bold; `near` marks rows whose mean lies within one seed-std of the best (not best itself)."""
    index = means.index
    text, best, near, directions = {}, {}, {}, {}
    if with_seeds:
        text["seeds"] = counts.astype(int).astype(str)
        best["seeds"] = near["seeds"] = pd.Series(False, index=index)
        directions["seeds"] = "none"
    for metric in means.columns:
        meta = columns.get(metric, {})
        digits, direction = int(meta.get("digits", 3)), meta.get("direction", "none")
        label = meta.get("label") or metric
        shown = means[metric].map(lambda v, d=digits: None if pd.isna(v) else _rounded(v, d))
        valid = shown.dropna()
        is_best = pd.Series(False, index=index)
        is_near = pd.Series(False, index=index)
        if direction in ARROWS and len(valid) >= 2 and valid.nunique() > 1:
            target = valid.min() if direction == "lower" else valid.max()
            is_best = shown == target
            for row in valid.index:
                std = stds.at[row, metric]
                if not is_best[row] and not pd.isna(std) and abs(means.at[row, metric] - target) <= std:
                    is_near[row] = True
        cells = []
        for row in index:
            m, s = means.at[row, metric], stds.at[row, metric]
            if pd.isna(m):
                cells.append("n/a")
            else:
                cells.append(f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if not pd.isna(s) and metric not in no_std else ""))
        text[label], best[label], near[label], directions[label] = pd.Series(cells, index=index), is_best, is_near, direction
    frame = lambda d: pd.DataFrame(d, index=index).rename_axis("prior")  # noqa: E731
    return Table(frame(text), frame(best), frame(near), directions)


def to_markdown(table: Table, mark_near: bool = False) -> str:
    """Markdown with ↑/↓ in the headers, best values in bold and (optionally) near-best values marked †."""
    cells = table.text.copy()
    for col in cells.columns:
        for row in cells.index:
            if table.best.at[row, col]:
                cells.at[row, col] = f"**{cells.at[row, col]}**"
            elif mark_near and table.near.at[row, col]:
                cells.at[row, col] = f"{cells.at[row, col]} †"
    cells.index = [str(i).replace("|", "\\|") for i in cells.index]
    cells.index.name = "prior"
    cells.columns = [f"{c} {ARROWS[table.directions[c]]}" if table.directions[c] in ARROWS else c for c in cells.columns]
    return cells.to_markdown(colalign=["left"] + ["right"] * len(cells.columns))


def to_latex(table: Table, caption: str, label: str, mark_near: bool = False) -> str:
    """A booktabs tabular through pandas' Styler: its LaTeX escaping for every cell and header, numeric columns
    right-aligned, best values \\textbf, near-best values marked with a dagger, the protocol in the caption."""
    styles = table.best.map(lambda b: "textbf:--rwrap;" if b else "")
    text = table.text.copy()
    for col in text.columns:  # ±, arrows and the dagger go in after escaping (formatters run after it)
        text[col] = [f"{v}\x00" if mark_near and table.near.at[row, col] else v for row, v in text[col].items()]
    styles.columns = text.columns = [f"{c}\x01{table.directions[c]}" for c in text.columns]
    arrows = {f"\x01{d}": f" {a}" for d, a in LATEX_ARROWS.items()} | {"\x01none": ""}

    def header(h: str) -> str:
        name, _, direction = h.partition("\x01")
        return name + arrows["\x01" + direction]

    styler = (
        text.style.format(lambda v: v.replace("±", r"$\pm$").replace("\x00", r"$^\dagger$"), escape="latex")
        .format_index(escape="latex", axis=0)
        .format_index(header, escape="latex", axis=1)
        .apply(lambda _: styles, axis=None)
    )
    styler.index.name = None
    return styler.to_latex(
        hrules=True, column_format="l" + "r" * len(text.columns), caption=latex_escape(caption), label=label, position="t",
    )  # fmt: skip
