"""Report tables: best values as displayed (ties all bold), near-best marks, ↑/↓ headers, LaTeX escaping."""

from __future__ import annotations

import numpy as np
import pandas as pd

from vqbench.report_tables import build_table, latex_escape, to_latex, to_markdown

ROWS = ["a_b & c", "x^2 {y}", "$z% #~\\"]
COLUMNS = {
    "fid": {"direction": "lower", "label": "FID_k", "digits": 2},
    "recall": {"direction": "higher", "digits": 3},
    "params": {"direction": "none", "digits": 1},
}


def table(fid=(10.0, 10.0004, 12.0), fid_std=(0.5, 0.1, 3.0)):
    means = pd.DataFrame({"fid": fid, "recall": [0.5, np.nan, 0.7], "params": [1.0, 2.0, 3.0]}, index=ROWS)
    stds = pd.DataFrame({"fid": fid_std, "recall": [0.01, np.nan, 0.01], "params": [np.nan] * 3}, index=ROWS)
    return build_table(means, stds, pd.Series([2, 1, 2], index=ROWS), COLUMNS)


def test_best_is_judged_as_displayed_and_ties_are_all_bold():
    t = table()
    assert t.best["FID_k"].tolist() == [True, True, False]  # 10.0000 and 10.0004 both show as 10.00
    assert t.best["recall"].tolist() == [False, False, True]  # higher is better; n/a is never best
    assert not t.best["params"].any()  # no direction: nothing is best
    assert t.text.at[ROWS[1], "recall"] == "n/a" and t.text.at[ROWS[0], "FID_k"] == "10.00 ± 0.50"
    t = table(fid=(10.0, 10.01, 12.0))
    assert t.best["FID_k"].tolist() == [True, False, False]


def test_near_best_marks_values_within_one_std():
    t = table(fid=(10.0, 10.05, 12.0), fid_std=(0.5, 0.1, 3.0))
    assert t.near["FID_k"].tolist() == [False, True, True]  # 10.05 − 0.1 ≤ 10; 12 − 3 ≤ 10
    t = table(fid=(10.0, 10.5, 12.0), fid_std=(0.5, 0.1, 1.0))
    assert t.near["FID_k"].tolist() == [False, False, False]
    md = to_markdown(table(fid=(10.0, 10.05, 12.0)), mark_near=True)
    assert "10.05 ± 0.10 †" in md and "**10.00 ± 0.50**" in md
    assert "†" not in to_markdown(table(fid=(10.0, 10.05, 12.0)), mark_near=False)


def test_markdown_headers_carry_direction_arrows():
    md = to_markdown(table())
    header = md.splitlines()[0]
    assert "FID_k ↓" in header and "recall ↑" in header and "params |" in header and "params ↑" not in header


def test_latex_escapes_every_special_character_and_right_aligns_numbers():
    tex = to_latex(table(), "protocol: N = 24 & 50% _x_ ^ ~ # $ { } \\", "tab:t")
    assert r"\begin{tabular}{lrrrr}" in tex and r"\toprule" in tex and r"\bottomrule" in tex
    assert r"a\_b \& c" in tex and r"x\textasciicircum{}2 \{y\}" in tex and r"\$z\% \#\textasciitilde{}\textbackslash{}" in tex
    assert r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%" + "\n" + r"\begin{tabular}{lrrrr}" in tex  # never wider than the text
    assert r"FID\_k $\downarrow$" in tex and r"recall $\uparrow$" in tex
    assert r"\textbf{10.00 $\pm$ 0.50}" in tex and r"\textbf{10.00 $\pm$ 0.10}" in tex and r"12.00 $\pm$ 3.00" in tex
    caption = tex.split(r"\caption{")[1].split("}\n")[0]
    assert caption == latex_escape("protocol: N = 24 & 50% _x_ ^ ~ # $ { } \\")
    assert r"\& 50\% \_x\_ \textasciicircum{} \textasciitilde{} \# \$ \{ \} \textbackslash{}" in caption
    for raw in ("& c", "_b", "^2", "{y}"):  # nothing slips through unescaped
        assert raw not in tex.replace(r"\&", "").replace(r"\_", "").replace(r"\textasciicircum", "").replace(r"\{", "")


def test_latex_dagger_marks_near_best_only_when_asked():
    t = table(fid=(10.0, 10.05, 12.0))
    assert r"10.05 $\pm$ 0.10$^\dagger$" in to_latex(t, "c", "tab:t", mark_near=True)
    assert r"\dagger" not in to_latex(t, "c", "tab:t")
