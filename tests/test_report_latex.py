"""report.tex as a paper includes it: every table within the text width (scaled down to at most \\linewidth, wide
metric groups split into column chunks, free text in tabularx), every special and unicode character escaped, the
settings and claims tables present; compiled with pdflatex or tectonic where one is on PATH."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

import vqbench.report as report
from vqbench.cli import main
from vqbench.io import write_json
from vqbench.report_latex import MAX_DATA_COLUMNS, MIN_SCALE, PACKAGES, RESIZE, latex_escape

MASKS = ("center", "upper_half", "lower_half", "strokes")
LPIPS = "LPIPS, random backbone — not comparable"
COLUMNS = {  # the labels, digits and groups the metrics write today (metrics.json "columns")
    "fid": ("lower", "FID", 2, "generation"),
    "kid": ("lower", "KID (raw)", 4, "generation"),
    "kid_subset_std": ("none", "KID subset std (raw)", 4, "generation"),
    **{name: ("higher", name, 3, "generation") for name in ("precision", "recall", "density", "coverage")},
    "nll_bpt": ("lower", "NLL (bits/token)", 4, "generation"),
    "nll_bpt_se": ("none", "NLL s.e.", 4, "generation"),
    "token_kl": ("lower", "token KL (bits)", 4, "generation"),
    "codebook_usage": ("none", "codes used", 3, "generation"),
    "sample_perplexity": ("none", "code perplexity", 1, "generation"),
    "unique_samples": ("higher", "unique samples", 3, "generation"),
    "nll_gap": ("lower", "NLL − H (bits)", 4, "generation"),
    "factor_entropy_ratio": ("higher", "factor entropy / real (≤ 1)", 3, "generation"),
    "sample_s_per_img": ("lower", "sample s/img", 4, "speed"),
    "decode_s_per_img": ("lower", "decode s/img", 4, "speed"),
    "total_s_per_img": ("lower", "total s/img", 4, "speed"),
    "nfe": ("lower", "NFE", 1, "speed"),
    "peak_mem_mb": ("lower", "peak MiB", 1, "speed"),
    **{
        f"inpaint_{m}_{k}": (d, label, digits, "inpainting")
        for m in MASKS
        for k, d, label, digits in (
            ("lpips", "lower", f"{m} {LPIPS} (composite, N=6)", 4),
            ("kid", "lower", f"{m} KID (composite, N=6)", 4),
            ("psnr", "higher", f"{m} kept-token PSNR vs reconstruction", 2),
            ("lpips_in_mask", "none", f"{m} {LPIPS} map in mask (diagnostic)", 4),
        )
    },
}
ROWS = [  # (label, variant, prior, params): names with every LaTeX special and the unicode the reports use
    ("autoregressive_big", "temperature=0.9, top_k=100", "autoregressive", {"n_layer": 12, "dropout": 0.1, "top_k": 100}),
    ("maskgit", "steps=8, schedule=cosine", "maskgit", {"schedule": "cosine", "choice_temperature": 4.5, "steps": 8}),
    ("absorbing 50% & τ→0 #2", "", "absorbing", {"mask_schedule": "x^2 {sharp} ~ $\\", "loss": "reweighted_elbo"}),
    ("independent", "", "independent", {"smoothing": 0.5}),
]
CLAIMS = [
    {"claim": "AR beats MaskGIT on FID (Table 2, 50% budget & τ = 1)", "metric": "fid", "treatment": "autoregressive_big [temperature=0.9, top_k=100]",
     "control": "maskgit [steps=8, schedule=cosine]", "quote": "“our AR model improves FID by ≥ 10 %” — §4.2", "paper_effect": 0.1,
     "caveat": "budget ~1/100 of the paper's; x_{t} → x_0 schedule #2"},
    {"claim": "absorbing diffusion is within 5 % of AR on NLL", "metric": "nll_bpt", "treatment": "absorbing 50% & τ→0 #2",
     "control": "autoregressive_big [temperature=0.9, top_k=100]", "expect": "within", "margin": 0.05},
]  # fmt: skip
SPECIALS = "_%&#~^{}$\\"


def fake_results(out: Path, rows: list = ROWS, columns: dict = COLUMNS, claims: list = CLAIMS, seeds=(0, 1, 2)) -> Path:
    """A results folder as `vqbench run` leaves it (protocol.json, runs/<cell>/{config,metrics}.json), numbers
    made up, in a fraction of a second."""
    rng = np.random.default_rng(0)
    protocol = {
        "benchmark": "paper_tables", "dataset": {"name": "toyfaces", "resolution": 16}, "tokenizer": None, "claims": claims,
        "latents": {"shape": [4, 4], "codebook_size": 32, "train": 180, "test": 60}, "seeds": list(seeds),
        "budget": {"steps": 8, "batch_size": 8}, "sampling": {"num_samples": 24, "batch_size": 12},
        "features": {"description": "random-cnn (seed 0): random features", "num_real": 30, "real_weights": False, "reference": "real held-out images"},
        "metrics": {"enabled": ["fid", "kid", "prdc", "nll", "latent_stats", "sample_time", "inpainting"], "settings": {"inpainting": {"num_images": 6}}},
        "device": "cpu", "precision": "fp32", "torch": "2.4",
    }  # fmt: skip
    write_json(out / "protocol.json", protocol)
    meta = {name: {"direction": d, "label": label, "digits": digits, "group": group} for name, (d, label, digits, group) in columns.items()}
    index = 0
    for label, variant, prior, params in rows:
        row = f"{label} [{variant}]" if variant else label
        scale = 1.0 + rng.random()
        for seed in seeds:
            cell = f"{re.sub(r'[^A-Za-z0-9]+', '-', row)}__seed{seed}"
            values = {name: float(scale * (10.0 if name == "fid" else 0.5) * (1 + 0.05 * rng.standard_normal())) for name in columns}
            info = {"parameters": 1.5e6 * scale, "flops": {"train_gflops": 0.25 * scale, "sample_gflops": 3.0 * scale}, "notes": {}}
            if prior == "absorbing":
                info["notes"] = {"nll": "ELBO bound (50% of grids, t ~ U[0,1])"}
            record = {"cell": cell, "index": index, "row": row, "label": label, "variant": variant, "seed": seed,
                      "columns": meta, "column_order": list(columns), "values": values, "info": info}  # fmt: skip
            write_json(out / "runs" / cell / "metrics.json", record)
            config = {"label": label, "variant": variant, "prior": prior, "lr": 3e-4, "params": params, "sampling": {"temperature": 1.0}}
            write_json(out / "runs" / cell / "config.json", config)
            index += 1
    return out


@pytest.fixture(scope="module")
def tex_dir(tmp_path_factory) -> Path:
    """report.tex and report_standalone.tex of the fake results folder (plots left out: not LaTeX)."""
    out = fake_results(tmp_path_factory.mktemp("latex") / "out")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report, "plot_section", lambda *args, **kwargs: [])
        report.write_report(out)
    return out


# ---- escaping ----------------------------------------------------------------------------------------------------


def test_every_special_and_the_reports_unicode_become_ascii_latex():
    expected = {
        "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}", "\\": r"\textbackslash{}", "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
        "±": r"$\pm$", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "τ": r"$\tau$", "→": r"$\rightarrow$", "×": r"$\times$",
        "≤": r"$\leq$", "≥": r"$\geq$", "−": r"$-$", "“": "``", "”": "''", "—": "---", "–": "--", "…": r"\ldots{}",
        "α": r"$\alpha$", "Δ": r"$\Delta$", "²": r"$^{2}$", "é": r"\'{e}", "ü": r'\"{u}', "ﬁ": "fi", "☃": "?",
    }  # fmt: skip
    for raw, tex in expected.items():
        assert latex_escape(f"a{raw}b") == f"a{tex}b", raw
    everything = "".join(expected) + "".join(COLUMNS[c][1] for c in COLUMNS) + "".join(str(c) for c in CLAIMS)
    assert latex_escape(everything).isascii() and latex_escape(everything, breaks=True).isascii()
    assert latex_escape("--reuse-stale") == "-{}-reuse-stale"  # no en dash out of two hyphens
    assert latex_escape("[ours] x") == "{}[ours] x"  # not taken for \\[<length>] when it starts a table line
    assert latex_escape("a\nb\tc") == "a b c"


def test_free_text_gets_break_points_inside_long_words():
    assert latex_escape("top_k=100", breaks=True) == r"top\_\allowbreak{}k=\allowbreak{}100"
    assert latex_escape("sampling.temperature", breaks=True) == r"sampling.\allowbreak{}temperature"
    assert latex_escape("0.0003") == latex_escape("0.0003", breaks=True) == "0.0003"
    digest = latex_escape("0123456789abcdef0123456789abcdef", breaks=True)
    assert digest.count(r"\allowbreak{}") == 1 and "top_k" not in latex_escape("top_k", breaks=True)


# ---- structure, without a TeX engine -------------------------------------------------------------------------------

OPTION = re.compile(r">\{(?:[^{}]|\{[^{}]*\})*\}")  # >{...} column prefixes (one level of nested braces)


def columns_of(spec: str) -> int:
    return sum(ch in "lcrX" for ch in OPTION.sub("", spec))


def tables(tex: str) -> list[dict]:
    """Each table float: its label, caption, kind (tabular | tabularx), column count, the text before the tabular and
    its rows."""
    found = []
    for body in re.findall(r"\\begin\{table\*\}\[htbp\]\n(.*?)\\end\{table\*\}", tex, flags=re.S):
        match = re.search(r"\\begin\{(tabularx?)\}(\{\\linewidth\})?\{(.*)\}\n", body)
        assert match, body[:200]
        kind, width, spec = match.groups()
        assert (kind == "tabularx") == (width is not None), body[:200]  # a tabularx is \linewidth wide
        rows = body[body.index(r"\midrule") :].splitlines()[1:]
        rows = [r for r in rows if r.endswith(r"\\")]
        found.append({
            "label": re.search(r"\\label\{(.*)\}", body)[1], "caption": re.search(r"\\caption\{(.*)\}\n", body)[1], "kind": kind,
            "columns": columns_of(spec), "before": body[: match.start()], "rows": rows, "body": body,
        })  # fmt: skip
    return found


def bare(text: str) -> str:
    """``text`` less its escapes, the macros the escaping writes and inline math: what must hold no special left."""
    text = re.sub(r"\\[_%&#${} ,]", "", text.replace("\\\\", ""))  # (after the line breaks)
    text = re.sub(r"\\(textasciitilde|textasciicircum|textbackslash|textless|textgreater|textbar|ldots|allowbreak)\{\}", "", text)
    return re.sub(r"\$[^$]*\$", "", text)


def check_report_tex(out: Path) -> list[dict]:
    """What a paper needs of report.tex and report_standalone.tex; returns the tables."""
    tex = (out / "report.tex").read_text()
    assert tex.isascii(), sorted({ch for ch in tex if not ch.isascii()})  # every unicode character mapped to a macro
    head = [line for line in tex.splitlines() if line.startswith("%")]
    assert tex.startswith("%") and r"\input{report.tex}" in "\n".join(head)
    for package in PACKAGES:
        assert f"\\usepackage{{{package}}}" in "\n".join(head), package
    standalone = (out / "report_standalone.tex").read_text()
    assert r"\documentclass{article}" in standalone and r"\input{report.tex}" in standalone
    assert all(f"\\usepackage{{{package}}}" in standalone for package in PACKAGES)
    found = tables(tex)
    assert len(found) == tex.count(r"\begin{table") == tex.count(r"\end{table") and found  # every float parsed
    assert tex.count(r"\begin{tabular}{") == sum(t["kind"] == "tabular" for t in found)  # no tabular outside a table
    for t in found:
        if t["kind"] == "tabular":  # metric tables: scaled down to \linewidth, at most MAX_DATA_COLUMNS values
            assert t["before"].endswith(RESIZE + "\n"), t["label"]
            assert t["body"].rstrip().endswith("\\end{tabular}%\n}"), t["label"]
            assert t["columns"] - 1 <= MAX_DATA_COLUMNS, t["label"]
        else:
            assert t["columns"] <= 6, t["label"]
        code = "\n".join(line for line in t["body"].splitlines() if not line.endswith(("{%", "}%")) and not line.startswith("\\label{"))
        left = bare(code)
        for special in "_%#~^$":
            assert special not in left, (t["label"], special, left[max(0, left.find(special) - 80) : left.find(special) + 20])
        for row in t["rows"]:  # & only between cells: one fewer than the columns (spanning cells counted)
            spans = sum(int(k) - 1 for k in re.findall(r"\\multicolumn\{(\d+)\}", row))
            assert bare(row).count("&") + spans == t["columns"] - 1, (t["label"], row)
        groups = t["body"].replace("\\\\", "").replace(r"\{", "").replace(r"\}", "")
        assert groups.count("{") == groups.count("}"), t["label"]  # every group closed
    return found


@pytest.fixture(scope="module")
def fake_tables(tex_dir) -> list[dict]:
    return check_report_tex(tex_dir)


def test_wide_metric_groups_are_split_into_chunks_of_columns(fake_tables):
    by_group: dict[str, list[dict]] = {}
    for t in fake_tables:
        group = re.fullmatch(r"tab:paper_tables-(generation|speed|inpainting)(-\d+)?", t["label"])
        if group:
            by_group.setdefault(group[1], []).append(t)
    counts = {g: sum(1 for v in COLUMNS.values() if v[3] == g) for g in ("generation", "speed", "inpainting")}
    counts["generation"] += 1  # seeds
    counts["speed"] += 3  # params, train and sample GFLOPs
    for group, parts in by_group.items():
        assert sum(t["columns"] - 1 for t in parts) == counts[group], group  # every column, once
        assert len(parts) >= -(-counts[group] // MAX_DATA_COLUMNS)
    assert len(by_group["inpainting"]) == 4 and len(by_group["generation"]) > 2  # 16 columns each
    first, second = by_group["inpainting"][:2]
    assert first["caption"].endswith("Part 1 of 4.") and "random weights" in first["caption"]
    assert second["caption"] == r"paper\_tables: inpainting (continued): part 2 of 4."
    assert r"\multicolumn{4}{c}{upper\_half}" in second["body"]  # one mask per chunk, named once above its columns


def test_headers_keep_units_and_arrows(tex_dir):
    tex = (tex_dir / "report.tex").read_text()
    for header in ("FID $\\downarrow$", "KID (raw) $\\downarrow$", "recall $\\uparrow$", "(bits/token) $\\downarrow$", "peak MiB $\\downarrow$",
                   "sample s/img $\\downarrow$", "NLL $-$ H (bits) $\\downarrow$", "(composite,\\\\N=6) $\\downarrow$", "params (M)"):  # fmt: skip
        assert header in tex, header
    assert r"\textbf{" in tex and "$\\pm$" in tex


def test_settings_and_claims_tables_are_in_the_tex(tex_dir, fake_tables):
    labels = {t["label"]: t for t in fake_tables}
    settings = labels["tab:paper_tables-settings"]
    assert settings["kind"] == "tabularx" and len(settings["rows"]) == len(ROWS)
    assert r"mask\_\allowbreak{}schedule=\allowbreak{}x\textasciicircum{}2 \{sharp\} \textasciitilde{} \$\textbackslash{}" in settings["body"]
    assert r"absorbing 50\% \& $\tau$$\rightarrow$0 \#2" in settings["body"]
    assert r"\hsize" in settings["body"] and "X" in settings["body"]  # free text wraps
    claims = labels["tab:paper_tables-claims"]
    assert len(claims["rows"]) == len(CLAIMS) and claims["kind"] == "tabularx"
    assert r"AR beats MaskGIT on FID (Table 2, 50\% budget \& $\tau$ = 1)" in claims["body"]
    assert r"``our AR model improves FID by $\geq$ 10 \%'' --- $\S$4.2" in claims["body"]
    assert {"tab:paper_tables-claim-effects", "tab:paper_tables-claim-tests"} <= set(labels)
    assert r"p (Holm)" in labels["tab:paper_tables-claim-tests"]["body"] and "does not hold" in claims["body"]


# ---- compiled ------------------------------------------------------------------------------------------------------

MEASURE = r"""\documentclass{article}
\usepackage{booktabs,graphicx,tabularx}
\extrafloats{100}
\let\vqresizebox\resizebox
\makeatletter
\renewcommand{\resizebox}[3]{\sbox\@tempboxa{#3}\typeout{NATURAL \the\wd\@tempboxa\space LINE \the\linewidth}\vqresizebox{#1}{#2}{#3}}
\makeatother
\begin{document}
\input{report.tex}
\end{document}
"""


def compile_tex(folder: Path, name: str) -> str:
    """The log of compiling ``folder/name`` with pdflatex (draft mode: no PDF, so no font files needed) or tectonic."""
    if shutil.which("pdflatex"):
        command = ["pdflatex", "-draftmode", "-interaction=nonstopmode", "-halt-on-error", name]
    elif shutil.which("tectonic"):
        command = ["tectonic", "--keep-logs", "--chatter", "minimal", name]
    else:
        pytest.skip("no LaTeX engine (pdflatex or tectonic) on PATH")
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=300)
    log = folder / Path(name).with_suffix(".log")
    if command[0] == "tectonic" and not log.is_file():
        pytest.skip(f"tectonic could not run here: {done.stderr[-300:]}")
    text = log.read_text(errors="replace")
    errors = [line for line in text.splitlines() if line.startswith("!")]
    assert done.returncode == 0 and not errors, errors or done.stdout[-2000:]
    return text


def check_compiles(out: Path, tmp_path: Path) -> None:
    """report_standalone.tex compiles without errors, nothing overfull by more than 1 pt, no float taller than the
    page, in one column and in two; no metric table scaled below MIN_SCALE (less 0.05: the split plans from estimated
    widths)."""
    folder = tmp_path / "tex"
    folder.mkdir()
    for name in ("report.tex", "report_standalone.tex"):
        shutil.copy(out / name, folder / name)
    standalone = (folder / "report_standalone.tex").read_text()
    (folder / "two_column.tex").write_text(standalone.replace(r"\documentclass{article}", r"\documentclass[twocolumn]{article}"))
    for name in ("report_standalone.tex", "two_column.tex"):  # the floats are page-wide there too (table*)
        log = compile_tex(folder, name)
        overfull = [float(pt) for pt in re.findall(r"Overfull \\hbox \((\d+(?:\.\d+)?)pt too wide\)", log)]
        assert all(pt <= 1.0 for pt in overfull), (name, overfull)
        assert "Float too large" not in log, name
    (folder / "measure.tex").write_text(MEASURE)
    widths = re.findall(r"NATURAL ([\d.]+)pt LINE ([\d.]+)pt", compile_tex(folder, "measure.tex"))
    assert len(widths) == (out / "report.tex").read_text().count(RESIZE)
    scales = [min(1.0, float(line) / float(natural)) for natural, line in widths]
    assert min(scales) >= MIN_SCALE - 0.05, scales


def test_report_tex_compiles_within_the_text_width(tex_dir, tmp_path):
    check_compiles(tex_dir, tmp_path)


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    """A latent-only benchmark with a sweep and a claim through `vqbench run` (as in test_claims_table: seconds)."""
    root = tmp_path_factory.mktemp("real_run")
    bench = {
        "name": "tex_smoke",
        "dataset": {"name": "synthetic_latents", "params": {"kind": "iid", "h": 4, "w": 4, "codebook_size": 8, "count": 200}, "test_fraction": 0.25},
        "priors": [{"name": "independent", "sweep": {"temperature": [0.3, 1.0]}}],
        "seeds": [0, 1],
        "sampling": {"num_samples": 50, "batch_size": 50},
        "metrics": {"enabled": ["latent_stats", "sample_time"]},
        "claims": [{"claim": "T = 1 matches the marginals (“by construction”, §3 & Eq. 2)", "metric": "token_kl",
                    "treatment": "independent [temperature=1.0]", "control": "independent [temperature=0.3]", "paper_effect": 0.5}],
        "out": str(root / "out"), "cache": str(root / "cache"), "device": "cpu", "precision": "fp32",
    }  # fmt: skip
    (root / "bench.yaml").write_text(yaml.safe_dump(bench, allow_unicode=True))
    assert main(["run", str(root / "bench.yaml")]) == 0
    return Path(bench["out"])


def test_a_real_run_writes_a_report_tex_that_fits(real_run):
    labels = {t["label"] for t in check_report_tex(real_run)}
    assert {"tab:tex_smoke-generation", "tab:tex_smoke-speed", "tab:tex_smoke-claims", "tab:tex_smoke-settings"} <= labels
    assert r"$\S$3 \& Eq. 2" in (real_run / "report.tex").read_text()


def test_a_real_runs_report_tex_compiles(real_run, tmp_path):
    check_compiles(real_run, tmp_path)
