"""Table formatting for reports: mean ± std cells at each metric's display precision, best values (ties all bold),
optional marks for values within one std of the best, ↑/↓ headers, Markdown and LaTeX renderings (the LaTeX split
into tables that fit the text width; escaping and layout helpers in report_latex)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from .report_latex import LINE_EM, MAX_DATA_COLUMNS, MIN_SCALE, float_table, latex_escape, part_of, resized_tabular, row_chunks, stack, text_em, wrap

ARROWS = {"higher": "↑", "lower": "↓"}
LATEX_ARROWS = {"higher": r"$\uparrow$", "lower": r"$\downarrow$"}
HEADER_CHARS = 12  # metric headers wrap to lines of at most this many characters (or the column's widest value)
ROW_NAME_CHARS = 28  # row names wrap to lines of at most this many characters
SPANNED_FAMILY = 3  # this many consecutive columns of one family ("center ...") share a spanning header


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
    """Booktabs tabulars, each inside ``\\resizebox`` (scaled down to \\linewidth, never up): every cell and header
    escaped, long headers and row names wrapped into short lines, numeric columns right-aligned, best values
    \\textbf, near-best values marked with a dagger, the protocol in the caption. A group wider than ``MAX_DATA_COLUMNS``
    columns, or too wide to stay readable at ``MIN_SCALE``, is split into tables of column chunks, keeping metric
    families (columns whose labels share a prefix) together; a long one into tables of rows."""
    width = {c: max((len(v) for v in table.text[c]), default=HEADER_CHARS) for c in table.text.columns}
    width = {c: max(w, HEADER_CHARS) for c, w in width.items()}
    names = {row: wrap(str(row), ROW_NAME_CHARS) for row in table.text.index}
    name_em = max((text_em(line) for lines in names.values() for line in lines), default=0.0) + 1.2
    column_em = {
        c: max(1.1 * max((text_em(v) for v in table.text[c]), default=0.0), max(text_em(line) for line in wrap(c, width[c])) + 1.0) + 1.2
        for c in width
    }
    chunks = column_chunks(list(table.text.columns), column_em, name_em)
    row_parts = row_chunks([len(lines) for lines in names.values()])
    parts, n = [], len(chunks) * len(row_parts)
    for k, (cols, rows) in enumerate(((c, r) for c in chunks for r in row_parts), 1):
        header = header_rows(table, cols, width)
        body = []
        for i in rows:
            row = table.text.index[i]
            cells = [stack([latex_escape(line) for line in names[row]], "l", "t")]
            for c in cols:
                cell = latex_escape(table.text.at[row, c])
                cell = rf"\textbf{{{cell}}}" if table.best.at[row, c] else cell
                cells.append(cell + (r"$^\dagger$" if mark_near and table.near.at[row, c] else ""))
            body.append(" & ".join(cells) + r" \\")
        part_caption, part_label = part_of(caption, label, k, n)
        parts.append(float_table(resized_tabular("l" + "r" * len(cols), header, body), part_caption, part_label))
    return "\n".join(parts)


def header_rows(table: Table, cols: list[str], width: dict[str, int]) -> str:
    """The header of a chunk: each label wrapped to its column's width with its arrow; a run of at least
    ``SPANNED_FAMILY`` columns of one family (or of "family: ..." labels) gets the family once, spanning them."""
    top, rules, labels = [""], [], {c: c for c in cols}
    start = 2
    for members in runs(cols):
        name = family(members[0])
        if (len(members) >= SPANNED_FAMILY or ":" in members[0]) and all(len(c) > len(name) for c in members) and len(members) > 1:
            top.append(rf"\multicolumn{{{len(members)}}}{{c}}{{{latex_escape(name)}}}")
            rules.append(rf"\cmidrule(lr){{{start}-{start + len(members) - 1}}}")
            labels |= {c: c[len(name) :].lstrip(" :") for c in members}
        else:
            top += [""] * len(members)
        start += len(members)
    cells = [""]
    for c in cols:
        lines = [latex_escape(line) for line in wrap(labels[c], width[c])]
        lines[-1] += " " + LATEX_ARROWS[table.directions[c]] if table.directions[c] in LATEX_ARROWS else ""
        cells.append(stack(lines))
    spanners = [" & ".join(top) + r" \\", " ".join(rules)] if rules else []
    return "\n".join([*spanners, " & ".join(cells) + r" \\"])


def runs(columns: list[str]) -> list[list[str]]:
    """Consecutive columns of one family."""
    out: list[list[str]] = []
    for c in columns:
        if out and family(c) == family(out[-1][-1]):
            out[-1].append(c)
        else:
            out.append([c])
    return out


def family(label: str) -> str:
    """The metric family of a column label: the text before a colon ("rejection p ≥ 0.5: FID of kept"), else the
    first word ("center LPIPS ...", "KID subset std")."""
    return label.split(":")[0] if ":" in label else (label.split() or [""])[0]


def column_chunks(columns: list[str], column_em: dict[str, float], name_em: float) -> list[list[str]]:
    """Consecutive columns in as few chunks as fit ``MAX_DATA_COLUMNS`` columns and an estimated width (with the row
    names) within ``LINE_EM / MIN_SCALE``, their widths as even as that many allows; a family is split only when it
    alone exceeds the limits."""

    def greedy(budget: float) -> list[list[str]]:
        def fits(cols: list[str]) -> bool:
            return len(cols) <= MAX_DATA_COLUMNS and name_em + sum(column_em[c] for c in cols) <= budget

        chunks: list[list[str]] = [[]]
        for members in runs(columns):
            if chunks[-1] and not fits(chunks[-1] + members):
                chunks.append([])
            for c in members:
                if chunks[-1] and not fits(chunks[-1] + [c]):
                    chunks.append([])
                chunks[-1].append(c)
        return chunks

    fewest = greedy(LINE_EM / MIN_SCALE)
    low, high = 0.0, LINE_EM / MIN_SCALE  # the narrowest budget that still needs no more chunks: even widths
    for _ in range(30):
        middle = (low + high) / 2
        low, high = (low, middle) if len(greedy(middle)) <= len(fewest) else (middle, high)
    return greedy(high)
