"""LaTeX for report.tex: escaping (LaTeX's specials and the unicode the reports use, so pdflatex needs no extra
packages), cells wrapped into short lines, tables that never exceed the text width (``\\resizebox`` down to
``\\linewidth``; free text in ``tabularx`` columns that wrap), long tables split by rows, and the file's header."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

import pandas as pd

PACKAGES = {  # what report.tex needs in the preamble, and what for
    "booktabs": r"\toprule, \midrule, \bottomrule",
    "graphicx": r"\resizebox: tables wider than \linewidth are scaled down to it (never up)",
    "tabularx": "the settings and claims tables: columns of wrapped text, \\linewidth wide",
}
LATEX_PREAMBLE = r"\usepackage{booktabs,graphicx,tabularx}"
LINE_EM = 34.5  # \linewidth of a 10 pt article (345 pt) in em: the width the splitting plans for
MIN_SCALE = 0.6  # a metric table that would be scaled below this is split into chunks of columns
MAX_DATA_COLUMNS = 7  # at most this many value columns (besides the row names) in one metric table
PAGE_LINES = 40  # text lines a table float may hold before it is split by rows
BREAK_RUN = 16  # free text gets a break point after this many characters without one (paths, digests, keys)
RESIZE = r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%"  # scale down only

LATEX_SPECIALS = {
    "\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#", "%": r"\%", "_": r"\_",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
    '"': "''", "`": r"\`{}", "\n": " ", "\t": " ", "\r": " ",
}  # fmt: skip
UNICODE = {
    "±": r"$\pm$", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "→": r"$\rightarrow$", "←": r"$\leftarrow$", "↔": r"$\leftrightarrow$",
    "×": r"$\times$", "÷": r"$\div$", "≤": r"$\leq$", "≥": r"$\geq$", "≠": r"$\neq$", "≈": r"$\approx$", "∼": r"$\sim$",
    "∞": r"$\infty$", "−": r"$-$", "·": r"$\cdot$", "•": r"$\bullet$", "√": r"$\surd$", "∈": r"$\in$", "∑": r"$\sum$",
    "°": r"$^{\circ}$", "¹": r"$^{1}$", "²": r"$^{2}$", "³": r"$^{3}$", "′": r"$'$", "µ": r"$\mu$", "†": r"$^{\dagger}$",
    "‡": r"$^{\ddagger}$", "§": r"$\S$", "¶": r"$\P$", "©": "(c)", "ß": r"\ss{}", "æ": r"\ae{}", "Æ": r"\AE{}",
    "ø": r"\o{}", "Ø": r"\O{}", "œ": r"\oe{}", "Œ": r"\OE{}", "ł": r"\l{}", "Ł": r"\L{}", "–": "--", "—": "---",
    "“": "``", "”": "''", "‘": "`", "’": "'", "„": ",,", "…": r"\ldots{}", "\u00a0": "~", "\u2009": r"\,", "\u202f": r"\,",
}  # fmt: skip
_GREEK = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi o pi rho varsigma sigma tau upsilon phi chi psi omega"
_CAPITAL = "A B Gamma Delta E Z H Theta I K Lambda M N Xi O Pi P - Sigma T Upsilon Phi X Psi Omega"  # - : U+03A2 is unassigned
UNICODE |= {chr(0x3B1 + i): f"$\\{n}$" if len(n) > 1 else n for i, n in enumerate(_GREEK.split())}
UNICODE |= {chr(0x391 + i): f"$\\{n}$" if len(n) > 1 else n for i, n in enumerate(_CAPITAL.split()) if n != "-"}
ACCENTS = {"\u0300": "`", "\u0301": "'", "\u0302": "^", "\u0303": "~", "\u0308": '"', "\u0304": "=", "\u0306": "u", "\u030a": "r", "\u030c": "v", "\u0327": "c"}  # fmt: skip
BREAK_AFTER = "/_=,;:"  # free text may break after these (as after a space or a hyphen)


def latex_escape(text: Any, breaks: bool = False) -> str:
    """``text`` as LaTeX text mode for pdflatex with no extra packages: specials escaped, the unicode the reports use
    as macros (±, ↑, ↓, τ, →, ×, ≤, “ ”, —, ...), accented letters as accents, anything else by its ASCII form or "?".
    ``breaks``: free text, with break points after / _ = , ; :, after a dot before a letter and inside long runs
    without one."""
    raw = str(text)
    out, run = (["{}"] if raw[:1] in ("[", "*") else []), 0  # not read as \\[...] or \\* after a line break
    for i, ch in enumerate(raw):
        if ch in LATEX_SPECIALS:
            piece = LATEX_SPECIALS[ch]
        elif ch == "-" and raw[i + 1 : i + 2] == "-":
            piece = "-{}"  # no en/em dash ligature out of an ASCII "--"
        elif ch.isascii():
            piece = ch if ch.isprintable() else ""
        else:
            piece = UNICODE.get(ch) or _fallback(ch)
        out.append(piece)
        run = 0 if ch.isspace() or ch == "-" else run + 1
        after = raw[i + 1 : i + 2]
        if breaks and after.strip() and (ch in BREAK_AFTER or (ch == "." and after.isalpha()) or run >= BREAK_RUN):
            out.append(r"\allowbreak{}")
            run = 0
    return "".join(out)


def _fallback(ch: str) -> str:
    """An accented letter as its accent macro (é → \\'{e}); other characters by their compatibility form or "?"."""
    parts = unicodedata.normalize("NFKD", ch)
    if parts[0].isascii() and parts[0].isalpha() and all(p in ACCENTS for p in parts[1:]) and len(parts) > 1:
        text = parts[0]
        for mark in parts[1:]:
            text = f"\\{ACCENTS[mark]}{{{text}}}"
        return text
    ascii_form = "".join(p for p in parts if p.isascii() and p.isprintable())
    return "".join(LATEX_SPECIALS.get(p, p) for p in ascii_form) if ascii_form else "?"


def text_em(text: str) -> float:
    """Rough width of ``text`` in em at the body font (to plan how tables are split, not to lay them out)."""
    width = 0.0
    for ch in text:
        if ch in "mwMW":
            width += 0.9
        elif ch.isupper():
            width += 0.75
        elif ch.isalnum() and ch.isascii():
            width += 0.5
        elif ch == " " or ch in ".,:;'!|()[]":
            width += 0.33
        else:
            width += 0.8 if not ch.isascii() else 0.5
    return width


def wrap(text: str, width: int) -> list[str]:
    """``text`` broken at spaces into lines of at most ``width`` characters (a longer word keeps its own line)."""
    lines: list[str] = []
    for word in str(text).split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


def stack(lines: Sequence[str], align: str = "r", position: str = "b") -> str:
    """Escaped lines (``latex_escape`` keeps a line from starting with [ or *) as one cell: the line itself, or a
    borderless nested tabular of them."""
    if len(lines) == 1:
        return lines[0]
    return rf"\begin{{tabular}}[{position}]{{@{{}}{align}@{{}}}}" + r"\\".join(lines) + r"\end{tabular}"


def safe_label(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9:._-]+", "-", label)


def float_table(body: str, caption: str, label: str, size: str = "") -> str:
    """A ``table*`` float around ``body`` (page-wide in a two-column document, where \\linewidth inside it is the text
    width; the same as ``table`` in a one-column one): here if it fits, else at a top or on a page of floats.
    ``caption`` is escaped here."""
    lines = [r"\begin{table*}[htbp]", r"\centering"] + ([size] if size else [])
    return "\n".join(lines + [rf"\caption{{{latex_escape(caption)}}}", rf"\label{{{safe_label(label)}}}", body, r"\end{table*}", ""])


def resized_tabular(column_format: str, header: str, rows: Sequence[str]) -> str:
    """A booktabs tabular inside ``\\resizebox``: scaled to \\linewidth when wider, left as it is otherwise."""
    return "\n".join(
        [RESIZE, rf"\begin{{tabular}}{{{column_format}}}", r"\toprule", header, r"\midrule", *rows, r"\bottomrule", r"\end{tabular}%", "}"]
    )


def row_chunks(heights: Sequence[int], budget: int = PAGE_LINES) -> list[list[int]]:
    """Row positions split into runs whose heights (in text lines) add up to at most ``budget`` (at least one row)."""
    chunks: list[list[int]] = [[]]
    used = 0
    for i, h in enumerate(heights):
        if chunks[-1] and used + h > budget:
            chunks.append([])
            used = 0
        chunks[-1].append(i)
        used += h
    return chunks


def part_of(caption: str, label: str, k: int, n: int) -> tuple[str, str]:
    """Caption and label of part ``k`` (1-based) of ``n``: the first part keeps the label others may cite and the
    whole caption, the others the caption's first sentence."""
    if n == 1:
        return caption, label
    if k == 1:
        return f"{caption} Part 1 of {n}.", label
    return f"{caption.split('. ')[0].rstrip('.')} (continued): part {k} of {n}.", f"{label}-{k}"


def cell_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, "g") if isinstance(value, float) else str(value)


def text_table(frame: pd.DataFrame, caption: str, label: str, short: int = 16) -> str:
    """Free text as ``tabularx`` floats of \\linewidth in \\footnotesize: columns whose every cell fits in ``short``
    characters stay ``l``, the others wrap (``X``, widths after the root of their mean text length); all-empty
    columns are left out and long tables are split by rows."""
    frame = frame.map(cell_text).astype(str)
    frame = frame.loc[:, [c for c in frame.columns if (frame[c].str.strip() != "").any() and (frame[c] != "—").any()]]
    if frame.empty:
        return ""
    narrow = [c for c in frame.columns if frame[c].str.len().max() <= short and max(map(len, str(c).split() or [""])) <= short]
    wide = [c for c in frame.columns if c not in narrow]
    weights = {c: math.sqrt(min(max(frame[c].str.len().mean(), short), 120.0)) for c in wide}  # long text wider, not in proportion
    floor = 0.6 * sum(weights.values()) / max(1, len(weights))
    weights = {c: max(w, floor) for c, w in weights.items()}
    scale = len(wide) / max(1e-9, sum(weights.values()))
    spec = "".join(
        "l" if c in narrow else rf">{{\raggedright\arraybackslash\hsize={weights[c] * scale:.2f}\hsize\hspace{{0pt}}}}X" for c in frame.columns
    )
    header = " & ".join(
        stack([latex_escape(x) for x in wrap(str(c), short + 2)], "l") if c in narrow else latex_escape(c, breaks=True) for c in frame.columns
    )
    per_line = {c: max(8.0, 2.1 * LINE_EM * weights[c] * scale / max(1, len(wide))) for c in wide}  # footnotesize characters per line
    heights = [max([1] + [math.ceil(len(row[c]) / per_line[c]) for c in wide]) for _, row in frame.iterrows()]
    chunks = row_chunks(heights, int(PAGE_LINES * 1.2))
    tables = []
    for k, rows in enumerate(chunks, 1):
        body = [" & ".join(latex_escape(v, breaks=c in wide) for c, v in frame.iloc[i].items()) + r" \\" for i in rows]
        tabular = [
            rf"\begin{{tabularx}}{{\linewidth}}{{{spec}}}",
            r"\toprule",
            header + r" \\",
            r"\midrule",
            *body,
            r"\bottomrule",
            r"\end{tabularx}",
        ]
        part_caption, part_label = part_of(caption, label, k, len(chunks))
        tables.append(float_table("\n".join(tabular), part_caption, part_label, size=r"\footnotesize\setlength{\tabcolsep}{4pt}"))
    return "\n".join(tables)


CLAIM_TABLES = {  # claims_markdown's columns, three narrower tables linked by the claim's number
    "claims": ["claim", "treatment vs control", "verdict"],
    "claim-effects": ["metric", "effect (mean ± std over seeds)", "params (M)", "power for the paper's effect"],
    "claim-tests": ["test", "p (two-sided, raw)", "p (verdict's direction)", "p (Holm)"],
}
CLAIM_TITLES = {"claims": "claims and verdicts", "claim-effects": "claims, effects", "claim-tests": "claims, tests"}


def claims_latex(shown: pd.DataFrame, benchmark: str, intro: str, label_prefix: str) -> str:
    """``verdicts.claims_markdown``'s table as three text tables (claims and verdicts, with ``intro`` in the caption;
    effects; tests), rows numbered; columns none of them lists go in the last."""
    numbered = shown.assign(**{"#": range(1, len(shown) + 1)})
    groups = {name: [c for c in cols if c in shown.columns] for name, cols in CLAIM_TABLES.items()}
    listed = {c for cols in groups.values() for c in cols}
    groups["claim-tests"] += [c for c in shown.columns if c not in listed]
    parts = []
    for name, cols in groups.items():
        if cols:
            more = intro if name == "claims" else "Rows numbered as in the claims table."
            parts.append(text_table(numbered[["#", *cols]], f"{benchmark}: {CLAIM_TITLES[name]}. {more}", f"{label_prefix}-{name}"))
    return "\n".join(parts)


def header_comment(benchmark: str) -> list[str]:
    """The comment block report.tex starts with: the packages it needs and how to include it."""
    name = " ".join(str(benchmark).split()).encode("ascii", "replace").decode()  # a comment, ASCII as the rest
    lines = [
        f"% vqbench report: {name}. Written by `vqbench run` / `vqbench report` from the results folder; edits are overwritten.",
        "% Tables for a paper. The including document's preamble needs:",
        *(f"%   \\usepackage{{{package}}}  % {what}" for package, what in PACKAGES.items()),
        f"%   (or in one line: {LATEX_PREAMBLE})",
        "% Nothing else: the file is plain ASCII, every LaTeX special and non-ASCII character escaped (no inputenc, fontenc or",
        "% textcomp needed; pdflatex, xelatex and lualatex all read it).",
        "% Include it in the document body with \\input{report.tex} (the path relative to the main .tex file). Wide metric",
        "% groups come as several tables (a chunk of columns each), wider tables are scaled down to \\linewidth, and the",
        "% settings and claims tables wrap their text. The floats are table* (page-wide in a two-column document, like",
        "% table in a one-column one). report_standalone.tex beside it compiles it alone:",
        "%   pdflatex report_standalone.tex",
        "",
    ]
    return lines


STANDALONE = "\n".join([
    "% report.tex as a document of its own: pdflatex report_standalone.tex (in this folder)",
    r"\documentclass{article}",
    *(rf"\usepackage{{{package}}}" for package in PACKAGES),
    r"\extrafloats{100}",
    r"\begin{document}",
    r"\input{report.tex}",
    r"\end{document}",
    "",
])  # fmt: skip
