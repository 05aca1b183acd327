"""The report's figures on a synthetic results folder: legends naming each line, one panel per objective family in
its unit, means ± std over seeds, plain NFE ticks that never overlap, captions outside the figures, PNG and PDF."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.collections import PolyCollection
from matplotlib.text import Text

from vqbench.figures import curves, quality, samples
from vqbench.figures.style import DOUBLE, SINGLE, figure, fixed_ticks, pyplot, styled
from vqbench.images import save_grid
from vqbench.io import write_json, write_text
from vqbench.plots import plot_section
from vqbench.report import load_long

SEEDS = (0, 1)
COLUMNS = {
    "fid": {"label": "FID", "direction": "lower", "digits": 2, "group": "generation"},
    "nll_bpt": {"label": "NLL (bits/token)", "direction": "lower", "digits": 4, "group": "generation"},
    "total_s_per_img": {"label": "total s/img", "direction": "lower", "digits": 4, "group": "speed"},
    "nfe": {"label": "NFE", "direction": "lower", "digits": 1, "group": "speed"},
}
# (prior, label, variant, NFE, seconds per image, training shared by the variants of one seed, likelihood)
ROWS = [
    ("autoregressive", "autoregressive", "", 16, 0.5, True),
    *[("absorbing", "absorbing", f"steps={n}", n, 0.002 * n, True) for n in (2, 4, 8, 16, 64, 256)],
    *[("imagebart", "imagebart", f"steps={n},temperature={t}", n, 0.003 * n, True) for t, n in itertools.product((0.8, 1.0), (4, 16))],
    ("sundae", "sundae", "", 100, 0.1, False),
    ("myprior", "myprior", "", 1, 0.001, False),  # a third-party prior, and no decoded images: its codes only
    ("independent", "independent", "", 0, 0.0005, True),  # fitted, no training curve
]
STEPS = 400


def row_name(label: str, variant: str) -> str:
    return f"{label} [{variant}]" if variant else label


def sample_images(index: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (16, 3, 8, 8), generator=torch.Generator().manual_seed(100 * index + seed), dtype=torch.uint8)


def curve_text(prior: str, seed: int, likelihood: bool) -> str:
    rng = np.random.default_rng(seed + 7 * len(prior))
    start = {"autoregressive": 5.0, "absorbing": 8.0, "imagebart": 3.0, "sundae": 4.0, "myprior": 60.0}[prior]
    lines = ["step,train_loss,val_nll_bpt"]
    for step in range(STEPS + 1):
        loss = start * (0.5 + 0.5 * np.exp(-step / 100)) + rng.normal(0, 0.05) if step else ""
        val = 0.7 * start * (0.6 + 0.4 * np.exp(-step / 150)) + 0.1 * seed if likelihood and step % 100 == 0 else ""
        lines.append(f"{step},{loss},{val}")
    return "\n".join(lines) + "\n"


def make_results(root: Path) -> Path:
    """A results folder as a run leaves it, for the figures alone: metrics.json, config.json, train_curve.csv,
    samples.png (or samples.npy only), and one outside row."""
    out = root / "out"
    write_json(out / "protocol.json", {"sampling": {"grid_size": 4}})
    for index, ((prior, label, variant, nfe, seconds, likelihood), seed) in enumerate(itertools.product(ROWS, SEEDS)):
        row = row_name(label, variant)
        cell = f"{label}__{variant}__seed{seed}" if variant else f"{label}__seed{seed}"
        folder = out / "runs" / cell
        training = None if prior == "independent" else f"{prior}-seed{seed}"  # sampler-only variants share it
        offset = 2.0 * ROWS.index(next(r for r in ROWS if r[1] == label)) - 3.0 * ("temperature=0.8" in variant)
        fid = 30.0 / (1 + np.log2(max(nfe, 1))) + offset + 0.5 * seed
        values = {"fid": fid, "nfe": float(nfe), "total_s_per_img": seconds * (1 + 0.2 * seed), "nll_bpt": 5.0 if likelihood else None}
        record = {
            "cell": cell, "label": label, "variant": variant, "row": row, "seed": seed, "index": index, "values": values,
            "columns": COLUMNS, "column_order": list(COLUMNS), "info": {"training": training, "parameters": 1000},
            "protocol": {"prior": {"name": prior}, "sampling": {"grid_size": 4}},
        }  # fmt: skip
        write_json(folder / "metrics.json", record)
        write_json(folder / "config.json", {"prior": prior, "label": label, "variant": variant, "seed": seed, "codebook_size": 16})
        if training:
            write_text(folder / "train_curve.csv", curve_text(prior, seed, likelihood))
        if prior == "myprior":
            np.save(folder / "samples.npy", np.random.default_rng(seed).integers(0, 16, (16, 4, 4)).astype(np.int32))
        else:
            save_grid(folder / "samples.png", sample_images(index // len(SEEDS), seed), 4)
    outside = out / "outside" / "published"
    values = {"fid": 4.0}
    write_json(outside / "metrics.json", {"cell": "outside/published", "label": "published", "variant": "", "row": "published", "seed": 0,
                                          "index": 10_000, "values": values, "columns": COLUMNS, "info": {}, "outside": True})  # fmt: skip
    save_grid(outside / "samples.png", sample_images(99, 0), 4)
    return out


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    return make_results(tmp_path_factory.mktemp("figures"))


@pytest.fixture(autouse=True)
def close_figures():
    yield
    pyplot().close("all")


def legend_texts(fig: Any) -> list[str]:
    assert len(fig.legends) == 1 and not any(ax.get_legend() for ax in fig.axes)
    return [t.get_text() for t in fig.legends[0].get_texts()]


def stray_texts(fig: Any) -> list[str]:
    """Texts in the figure that are no title, axis label, tick label or legend entry (notes belong in captions)."""
    allowed: set[Any] = set()
    for ax in fig.axes:
        allowed |= {ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label}
        for axis in (ax.xaxis, ax.yaxis):
            allowed.add(axis.get_offset_text())
            allowed |= {label for tick in axis.get_major_ticks() + axis.get_minor_ticks() for label in (tick.label1, tick.label2)}
    for legend in fig.legends:
        allowed |= {*legend.get_texts(), legend.get_title()}
    return [t.get_text() for t in fig.findobj(Text) if t.get_text().strip() and t not in allowed]


def tick_labels(fig: Any, axis: Any) -> list[tuple[str, Any]]:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    return [(t.get_text(), t.get_window_extent(renderer)) for t in axis.get_ticklabels() if t.get_visible() and t.get_text()]


def assert_apart(labels: list[tuple[str, Any]]) -> None:
    for (_, left), (_, right) in itertools.pairwise(sorted(labels, key=lambda pair: pair[1].x0)):
        assert left.x1 <= right.x0, f"tick labels overlap: {[text for text, _ in labels]}"


def rows_of(*labels: str) -> list[str]:
    return [row_name(label, variant) for _, label, variant, *_ in ROWS if label in labels]


@pytest.mark.parametrize("width", [SINGLE, DOUBLE])
def test_training_curves_have_one_panel_per_objective_family_in_its_unit(results, width):
    fig, caption = curves.build(results, width=width)
    panels = {ax.get_title(): ax for ax in fig.axes}
    assert list(panels) == ["Autoregressive", "Absorbing diffusion", "ImageBART", "SUNDAE", "myprior", "Validation NLL"]
    units = {"Autoregressive": "nats/token", "Absorbing diffusion": "bits/token", "ImageBART": "nats/token", "SUNDAE": "nats/token",
             "myprior": "units set by the prior", "Validation NLL": "bits/token"}  # fmt: skip
    for title, unit in units.items():
        assert panels[title].get_ylabel().endswith(f"({unit})") and panels[title].get_xlabel() == "training step"
        assert unit in caption or title in ("myprior", "Validation NLL")
    # sampler-only variants share their training run: one line per prior, named by what its rows share
    assert legend_texts(fig) == ["autoregressive", "absorbing", "imagebart", "sundae", "myprior"]
    for title, ax in panels.items():
        assert len(ax.get_lines()) == (3 if title == "Validation NLL" else 1)
        assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == len(ax.get_lines())  # one ± std band each
    val = {line.get_label(): line for line in panels["Validation NLL"].get_lines()}
    expected = np.mean(
        [pd.read_csv(results / "runs" / f"absorbing__steps=2__seed{s}" / "train_curve.csv")["val_nll_bpt"].dropna() for s in SEEDS], axis=0
    )
    assert np.allclose(val["absorbing"].get_ydata(), expected)  # the mean over seeds
    assert stray_texts(fig) == []


@pytest.mark.parametrize("width", [SINGLE, DOUBLE])
def test_quality_vs_steps_joins_seeds_into_one_line_per_prior_with_error_bars(results, width):
    fig, caption = quality.build_steps(results, "features: random-cnn (seed 0)", width=width)
    assert legend_texts(fig) == ["absorbing", "imagebart [temperature=0.8]", "imagebart [temperature=1.0]"]
    ax = fig.axes[0]
    lines = [c for c in ax.containers if c.has_yerr]
    assert len(lines) == 3
    fids = {s: pd.Series({cell["values"]["nfe"]: cell["values"]["fid"] for _, cell in curves.run_cells(results) if cell["label"] == "absorbing"
                          and cell["seed"] == s}) for s in SEEDS}  # fmt: skip
    mean, std = pd.concat(fids, axis=1).mean(axis=1).sort_index(), pd.concat(fids, axis=1).std(axis=1).sort_index()
    line, caps, (bars,) = lines[0]
    assert np.allclose(line.get_xdata(), mean.index) and np.allclose(line.get_ydata(), mean.to_numpy())
    assert np.allclose([seg[1, 1] - seg[0, 1] for seg in bars.get_segments()], 2 * std.to_numpy())
    labels = tick_labels(fig, ax.xaxis)
    assert_apart(labels)
    nfes = {"2", "4", "8", "16", "64", "256"}
    shown = {text for text, _ in labels}
    assert shown <= nfes and ({"2", "256"} <= shown) and (shown == nfes or width == SINGLE)  # plain numbers at the NFE values
    assert not ax.xaxis.get_minorticklocs().size
    assert ax.get_xlabel() == "network evaluations per sample (NFE)" and ax.get_ylabel() == "FID"
    assert "mean over 2 seeds" in caption and "± 1 std" in caption and "Features: random-cnn (seed 0)." in caption
    assert stray_texts(fig) == []


@pytest.mark.parametrize("width", [SINGLE, DOUBLE])
def test_speed_vs_quality_has_one_legend_entry_per_row_and_plain_log_ticks(results, width):
    long = load_long(results)[0]
    fig, caption = quality.build_speed(long, results, "", width=width)
    expected = [row for row in dict.fromkeys(long["row"]) if row != "published"]  # no time for an outside row
    assert legend_texts(fig) == expected and len(set(expected)) == len(expected)
    ax = fig.axes[0]
    assert all(c.has_xerr and c.has_yerr for c in ax.containers) and len(ax.containers) == len(expected)
    fid = long[(long["row"] == "sundae") & (long["metric"] == "fid")]["value"]
    point, _, (_, ybars) = ax.containers[expected.index("sundae")]
    assert point.get_ydata()[0] == pytest.approx(fid.mean()) and np.ptp(ybars.get_segments()[0][:, 1]) == pytest.approx(2 * fid.std())
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "time per image, prior sampling and decoding (ms)"
    labels = tick_labels(fig, ax.xaxis)
    assert_apart(labels)
    assert len(labels) >= 3 and all(float(text) > 0 and "$" not in text for text, _ in labels)
    assert "one point per report row" in caption
    assert stray_texts(fig) == []


def test_samples_by_row_shows_each_rows_first_seed_in_one_labelled_row(results):
    long = load_long(results)[0]
    fig, caption = samples.build(results, long, width=DOUBLE, count=4)
    rows = list(dict.fromkeys(long["row"]))
    assert [ax.get_ylabel().replace("\n", " ") for ax in fig.axes] == rows and "published" in rows
    strip = fig.axes[rows.index("absorbing [steps=4]")].get_images()[0].get_array()
    first = sample_images(rows.index("absorbing [steps=4]"), 0)[0].permute(1, 2, 0).numpy()
    assert np.array_equal(strip[:64, :64], first.repeat(8, 0).repeat(8, 1))  # the seed-0 tile, cut back out of samples.png
    codes = fig.axes[rows.index("myprior")].get_images()[0].get_array()
    assert codes.shape == strip.shape and (np.asarray(codes)[:64, :64] != 255).any()  # code grids where nothing was decoded
    assert "first 4 samples" in caption and "code grids" in caption
    assert stray_texts(fig) == []


def test_plot_section_writes_png_and_pdf_and_puts_the_notes_in_the_captions(results):
    lines = plot_section(results, load_long(results)[0], "features: random-cnn (seed 0)")
    text = "\n".join(lines)
    for number, stem in enumerate(["training_curves", "quality_vs_steps", "speed_vs_quality", "samples_by_row"], 1):
        assert (results / "plots" / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pdf = (results / "plots" / f"{stem}.pdf").read_bytes()
        assert pdf[:5] == b"%PDF-" and b"/Type3" not in pdf  # text as embedded TrueType, not Type 3 glyph drawings
        assert f"](plots/{stem}.png)" in text and f"[PDF](plots/{stem}.pdf)" in text
        assert f"*Figure {number}.*" in text
    assert text.count("Features: random-cnn (seed 0).") == 2  # the quality figures' captions


def test_fixed_ticks_drop_labels_that_would_overlap_and_keep_the_largest():
    values = [10, 11, 12, 13, 16, 20, 25, 32, 1000]
    with styled():
        fig = figure(SINGLE, 2.0)
        ax = fig.subplots()
        ax.plot(values, values)
        ax.set_xscale("log")
        fixed_ticks(fig, ax.xaxis, values)
    labels = tick_labels(fig, ax.xaxis)
    assert_apart(labels)
    assert labels[0][0] == "10" and labels[-1][0] == "1000" and len(labels) < len(values)


def test_a_line_through_rows_of_one_training_run_is_named_after_the_row_that_trained_it():
    """The lowest-NFE point may belong to a later sampler-only row; the legend names the first planned row."""

    def cell(row: str, label: str, nfe: float, index: int) -> dict:
        return {"row": row, "label": label, "variant": "", "index": index, "info": {"training": "t0"}, "values": {"nfe": nfe, "fid": 10.0 + nfe}}

    _, series = quality.quality_series([cell("absorbing", "absorbing", 64.0, 0), cell("absorbing + maskgit", "absorbing + maskgit", 12.0, 1)])
    assert [s.label for s in series] == ["absorbing"]
