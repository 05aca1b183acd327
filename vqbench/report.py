"""Reports: a long-form DataFrame of every cell's metrics pivoted into one row per prior/variant (mean ± std over
seeds, best value per column in bold) and exported to CSV, Markdown and LaTeX. Rebuilt from results alone."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import DataError
from .io import read_json, write_text
from .metrics.bootstrap import interval_key
from .plots import plot_section
from .report_latex import STANDALONE, claims_latex, header_comment, text_table
from .report_outside import outside_links, outside_records, outside_rows, outside_settings, reference_stats_lines
from .report_tables import build_table, to_latex, to_markdown
from .results_file import update_results
from .runner.claims import CLAIM_FILE
from .verdicts import claims_markdown, claims_table

EXTRA_COLUMNS = {
    "parameters_m": {"direction": "none", "label": "params (M)", "digits": 2, "group": "speed"},
    "train_gflops": {"direction": "none", "label": "train GFLOPs/grid", "digits": 3, "group": "speed"},
    "sample_gflops": {"direction": "none", "label": "sample GFLOPs/img", "digits": 3, "group": "speed"},
}
GROUP_TITLES = {"generation": "Generation quality", "speed": "Sampling speed and size", "inpainting": "Inpainting"}


def load_long(out: Path) -> tuple[pd.DataFrame, dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """(long DataFrame with columns cell,row,label,variant,seed,metric,value; column metadata; failed cells)."""
    cells = sorted((read_json(p) for p in (out / "runs").glob("*/metrics.json")), key=lambda c: (c.get("index", 0), c["cell"]))
    cells += outside_records(out)  # rows scored by `vqbench evaluate`, after every planned cell
    failed = [read_json(p) for p in sorted((out / "runs").glob("*/failed.json")) if not (p.parent / "metrics.json").is_file()]
    records, columns = [], {}
    for cell in cells:
        order = cell.get("column_order") or list(cell["columns"])
        columns.update({k: cell["columns"][k] for k in order if k not in columns})
        values = dict(cell["values"])
        values["parameters_m"] = cell["info"].get("parameters", math.nan) / 1e6
        flops = cell["info"].get("flops") or {}
        values |= {name: flops.get(name, math.nan) for name in ("train_gflops", "sample_gflops")}
        for metric, value in values.items():
            records.append({
                "cell": cell["cell"], "row": cell["row"], "label": cell["label"], "variant": cell["variant"],
                "seed": cell["seed"], "metric": metric, "value": math.nan if value is None else float(value),
            })  # fmt: skip
    columns.update(EXTRA_COLUMNS)
    return pd.DataFrame.from_records(records, columns=["cell", "row", "label", "variant", "seed", "metric", "value"]), columns, failed


def summarise(long: pd.DataFrame, columns: dict[str, dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """(means, stds, seed counts), rows in first-seen order, metric columns in registry order."""
    rows = list(dict.fromkeys(long["row"]))
    order = [c for c in columns if c in set(long["metric"])]
    grouped = long.groupby(["row", "metric"], sort=False)["value"]
    means = grouped.mean().unstack("metric").reindex(index=rows, columns=order)
    stds = grouped.std(ddof=1).unstack("metric").reindex(index=rows, columns=order)
    counts = long.groupby("row", sort=False)["seed"].nunique().reindex(rows)
    return means, stds, counts


def header_lines(protocol: dict[str, Any], nearest_k: int | None, stale: list[str] | None = None) -> list[str]:
    lines = [f"# vqbench report: {protocol['benchmark']}", ""]
    ds, lat, tok, feat = protocol.get("dataset"), protocol["latents"], protocol.get("tokenizer"), protocol.get("features")
    b, s = protocol["budget"], protocol["sampling"]
    lines.append(f"- **Data**: {ds['name']} at {ds['resolution']}²" if ds else "- **Data**: existing latent datasets")
    lines.append(
        f"- **Latents**: {lat['shape'][0]}×{lat['shape'][1]} tokens, {lat['codebook_size']} codes; {lat['train']} train / {lat['test']} held-out"
    )
    if tok:
        q = tok.get("quality") or {}
        quality = ""
        if "recon_psnr" in q:
            lp = "random backbone — not comparable" if "random" in q["recon_lpips_backbone"] else f"{q['recon_lpips_backbone']} backbone"
            quality = (f"; reconstruction PSNR {q['recon_psnr']:.2f} dB, LPIPS {q['recon_lpips']:.4f} ({lp}), "
                       f"{q['used_codes']}/{q['codebook_size']} codes used (perplexity {q['code_perplexity']:.1f})")  # fmt: skip
        lines.append(f"- **Tokenizer**: {tok['name']} ({tok['preset'] or tok['checkpoint']}){quality}")
    lines.append(
        f"- **Budget** (same for every prior): {b['steps']} steps × batch {b['batch_size']}"
        + (f", wall-clock cap {b['max_minutes']} min" if b.get("max_minutes") else "")
    )
    lines.append(f"- **Sampling**: {s['num_samples']} samples per cell, batch {s['batch_size']}; seeds {protocol['seeds']}")
    if feat:
        note = "" if feat["real_weights"] else " — **random weights: FID/KID/PRDC are not comparable to published numbers**"
        description = feat["description"].split(":")[0] if not feat["real_weights"] else feat["description"]
        lines.append(f"- **Features**: {description}{note}; reference: {feat['num_real']} {feat['reference']}")
        lines += reference_stats_lines(protocol)
    if protocol.get("lpips"):
        lines.append(f"- **LPIPS** (inpainting): {protocol['lpips']}")
    if protocol.get("reuse_stale") or stale:
        lines.append("- **Reused across a code change** (`--reuse-stale`): cached tokenizers, features, trained priors and finished cells "
                     "computed by other code were kept" + (f"; cells from other code: {', '.join(stale)}" if stale else "")
                     + (f"; cache entries from other code: {', '.join(protocol['stale_entries'])}" if protocol.get("stale_entries") else ""))  # fmt: skip
    if protocol.get("image_metrics_off"):
        lines.append(f"- **Image metrics off**: {protocol['image_metrics_off']}")
    if nearest_k is not None:
        lines.append(f"- **PRDC**: nearest_k = {nearest_k}")
    resolved = {name: settings for name, settings in (protocol.get("metric_settings") or {}).items() if settings}
    if resolved:
        shown = "; ".join(f"{name}: " + ", ".join(f"{k} {v}" for k, v in settings.items()) for name, settings in resolved.items())
        lines.append(f"- **Metric settings**: {shown}")
    lines.append(
        f"- **Device**: {protocol['device']}, precision {protocol['precision']}"
        + (f" ({protocol['precision_reason']})" if protocol.get("precision_reason") else "")
        + f", torch {protocol['torch']}"
    )
    lines.append(
        "- Values are mean ± std over seeds; ↑/↓: higher/lower is better; **bold**: the best value per column as displayed (ties all bold); n/a: the prior cannot compute it."
    )
    lines.append(interval_line(protocol))
    enabled = protocol["metrics"].get("enabled") or []
    if "kid" in enabled or "inpainting" in enabled:
        lines.append("- **KID** columns are raw (unscaled) MMD² values, not ×10³.")
    if "sample_time" in enabled:
        lines.append(f"- **peak MiB** (speed table): {peak_memory_meaning(protocol['device'])}.")
    return lines


def bootstrap_count(protocol: dict[str, Any]) -> int:
    """``metrics.bootstrap`` of the run (0: off, or a run from before the option)."""
    return int(protocol["metrics"].get("bootstrap") or 0)


def interval_line(protocol: dict[str, Any]) -> str:
    """Where the confidence intervals are: results.json, over seeds and (``metrics.bootstrap``) over samples."""
    line = "- **Intervals**: `results.json` (`metrics`) holds each row's per-seed values and a 95 % t-interval over seeds"
    n = bootstrap_count(protocol)
    if n:
        line += (f", and per seed a 95 % bootstrap interval of FID, KID and PRDC over {n} resamples of the cell's generated "
                 "samples (reference fixed; percentiles centred on the point value)")  # fmt: skip
    return line + "; the tables' ± is the std over seeds, not an interval."


def peak_memory_meaning(device: str) -> str:
    """What the sample-time metric's peak memory measures on ``device`` (protocol["device"])."""
    if device.startswith("cuda"):
        return "the CUDA allocator's peak during the timed sampling and decoding, above what was allocated before them"
    return "the whole process's peak resident set (RSS) during the timed sampling and decoding, not the work's own growth"


def write_report(out: str | Path, mark_near: bool = False) -> dict[str, Path]:
    """Build report.csv, report.md and report.tex in ``out`` from its runs (no recomputation). ``mark_near`` marks
    values within one seed-std of the best with a dagger."""
    out = Path(out)
    if not (out / "protocol.json").is_file():
        raise DataError(f"{out}: no protocol.json here; is this a vqbench results folder (results/<benchmark>)?")
    protocol = read_json(out / "protocol.json")
    long, columns, failed = load_long(out)
    update_results(out, long, columns, bootstrap_count(protocol))  # every row's numbers for scripts (results.json: metrics)
    long = long[~long["metric"].map(interval_key)]  # bootstrap bounds live in results.json, not in tables, claims or plots
    nearest_k = (protocol["metrics"].get("settings", {}).get("prdc") or {}).get("nearest_k", 5) if "prdc" in protocol["metrics"]["enabled"] else None
    paths = {kind: out / f"report.{kind}" for kind in ("csv", "md", "tex")}
    if long.empty:
        write_text(paths["md"], "\n".join(header_lines(protocol, nearest_k) + claimed_elsewhere(out) + ["", "No finished cells yet."]) + "\n")
        return paths
    means, stds, counts = summarise(long, columns)
    wide = means.join(stds.add_suffix("_seed_std")).assign(seeds=counts)
    write_text(paths["csv"], wide.to_csv(index_label="prior"))
    stored = [read_json(p) for p in sorted((out / "runs").glob("*/metrics.json"))]
    stale = [c["cell"] for c in stored if c.get("stale_code") or (c.get("info") or {}).get("stale_training")]
    md = header_lines(protocol, nearest_k, stale) + loaded_rows(out) + outside_rows(out, protocol) + claimed_elsewhere(out)
    if mark_near:
        md.append("- † marks a value within one std (over seeds) of the best.")
    tex = header_comment(protocol["benchmark"])
    for i, (group, names) in enumerate(groups(means, columns).items()):
        cols = {k: columns[k] for k in names}
        title = GROUP_TITLES.get(group, group.capitalize())
        table = build_table(means[names], stds[names], counts, cols, with_seeds=i == 0, no_std=frozenset(EXTRA_COLUMNS))
        sizes = sample_sizes(protocol, group)
        md += ["", f"## {title}", "", f"{sizes}.", "", to_markdown(table, mark_near)]
        caption = f"{protocol['benchmark']}: {title.lower()}. {sizes}; {feature_note(protocol)}; mean ± std over seeds, best in bold."
        tex.append(to_latex(table, caption, f"tab:{protocol['benchmark']}-{group}", mark_near))
    if protocol.get("claims"):
        claims = claims_table(protocol["claims"], long, columns, out)
        write_text(out / "claims.csv", claims.to_csv(index=False))
        shown = claims_markdown(claims)
        md += ["", "## Claims", "", claims_intro(protocol, claims), "", shown.to_markdown(index=False)]
        tex.append(claims_latex(shown, protocol["benchmark"], claims_intro(protocol, claims), f"tab:{protocol['benchmark']}"))
    md += plot_section(out, long, feature_note(protocol))
    md += ["", "## Samples", "", sample_links(out).to_markdown(index=False)]
    settings = settings_table(out)
    md += ["", "## Settings", "", settings.to_markdown(index=False)]
    caption = f"{protocol['benchmark']}: settings of every row (resolved parameters, notes its metrics recorded)."
    tex.append(text_table(settings, caption, f"tab:{protocol['benchmark']}-settings"))
    md += [""] + [f"- failed: `{f['cell']}`: {f['error']}" for f in failed]
    md += [f"- metric `{name}` failed in `{cell}` (its columns show n/a): {error}" for cell, name, error in failed_metrics(out)]
    write_text(paths["md"], "\n".join(md) + "\n")
    write_text(paths["tex"], "\n".join(tex))
    write_text(out / "report_standalone.tex", STANDALONE)  # compiles report.tex alone, for a look or a check
    return paths


def claims_intro(protocol: dict[str, Any], claims: pd.DataFrame) -> str:
    """What the claims table rests on (the report's text above it, the .tex tables' caption)."""
    quoted = int((claims["quote"] != "").sum())
    return (f"Image-quality metrics on {feature_note(protocol)}. Holm adjustment over the {len(claims)} claims of this benchmark; "
            f"verdicts rest on the adjusted p. “Quoted” text is the paper's own sentence ({quoted} of {len(claims)} claims); "
            "the others cite the paper's table or section in the claim.")  # fmt: skip


def loaded_note(loaded: dict[str, str]) -> str:
    config = f" with {loaded['config']} (sha256 {loaded['config_sha256'][:12]}…)" if loaded.get("config") else ""
    return (
        f"loaded from {loaded['file']} ({loaded['format']}, sha256 {loaded['sha256'][:12]}…){config}, not trained here: "
        "the training budget does not apply"
    )


def loaded_rows(out: Path) -> list[str]:
    """A header line per report row whose prior was loaded from a checkpoint instead of trained."""
    rows: dict[str, str] = {}
    for path in sorted((out / "runs").glob("*/metrics.json")):
        record = read_json(path)
        loaded = (record.get("info") or {}).get("loaded")
        if loaded:
            rows.setdefault(record.get("row") or record["label"], loaded_note(loaded))
    return [f"- `{row}`: {note}." for row, note in rows.items()]


def claimed_elsewhere(out: Path) -> list[str]:
    """Header lines for cells another job was computing when this report was written (a claim, no results yet)."""
    lines = []
    for claim in sorted((out / "runs").glob(f"*/{CLAIM_FILE}")):
        if not (claim.parent / "metrics.json").is_file():
            try:
                owner = json.loads(claim.read_text()).get("owner", "another job")
            except (OSError, ValueError):  # released meanwhile, or being written
                continue
            lines.append(f"- **not in this report**: `{claim.parent.name}` was being computed by {owner}; rerun to complete the report.")
    return lines


def failed_metrics(out: Path) -> list[tuple[str, str, str]]:
    """(cell, metric, error) for every metric that failed in a finished cell."""
    rows = []
    for path in sorted((out / "runs").glob("*/metrics.json")):
        record = read_json(path)
        for name, error in sorted(((record.get("info") or {}).get("failed_metrics") or {}).items()):
            rows.append((record["cell"], name, error))
    return rows


def sample_sizes(protocol: dict[str, Any], group: str) -> str:
    """The N behind a table: samples per cell (or inpainted images) and the reference set."""
    feat = protocol.get("features")
    reference = f", reference N = {feat['num_real']} {feat['reference']}" if feat else ""
    if group == "inpainting":
        inpainting = protocol["metrics"].get("settings", {}).get("inpainting") or {}
        return f"N = {inpainting.get('num_images', '?')} inpainted images per mask and cell{reference}"
    return f"N = {protocol['sampling']['num_samples']} samples per cell{reference}"


def feature_note(protocol: dict[str, Any]) -> str:
    feat = protocol.get("features")
    if not feat:
        return "no image features"
    name = feat["description"].split(":")[0]
    return f"features: {name}" + ("" if feat["real_weights"] else " with random weights (not comparable to published numbers)")


def sample_links(out: Path) -> pd.DataFrame:
    """Links to each cell's sample grid and inpainting strip, relative to the results folder."""
    rows = []
    for metrics in sorted((out / "runs").glob("*/metrics.json"), key=lambda p: (read_json(p).get("index", 0), p.parent.name)):
        cell = read_json(metrics)
        folder = metrics.parent
        links = {name: f"[{name}](runs/{folder.name}/{name})" if (folder / name).is_file() else "—" for name in ("samples.png", "inpainting.png")}
        rows.append(
            {"prior": cell["row"].replace("|", "/"), "seed": cell["seed"], "samples": links["samples.png"], "inpainting": links["inpainting.png"]}
        )
    return pd.DataFrame(rows + outside_links(out), columns=["prior", "seed", "samples", "inpainting"])


def flatten(params: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mapping → {dotted.key: value} (lists stay values)."""
    if not isinstance(params, dict):
        return {prefix: params}
    out: dict[str, Any] = {}
    for key, value in params.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def settings_table(out: Path) -> pd.DataFrame:
    """One line per report row: the prior, its learning rate, every resolved parameter (from the cells'
    config.json) and the notes its metrics recorded (e.g. how the NLL was estimated)."""
    rows: dict[str, dict[str, Any]] = {}

    def plan_position(path: Path) -> tuple[int, str]:
        metrics = path.parent / "metrics.json"
        return (read_json(metrics).get("index", 0) if metrics.is_file() else 1 << 30, path.parent.name)

    for path in sorted((out / "runs").glob("*/config.json"), key=plan_position):
        config = read_json(path)
        row = f"{config['label']} [{config['variant']}]" if config.get("variant") else config["label"]
        if row not in rows:
            settings = {**flatten(config.get("params", {})), **{f"sampling.{k}": v for k, v in flatten(config.get("sampling", {})).items()}}
            text = ", ".join(f"{k}={v}" for k, v in settings.items() if v is not None)
            metrics = path.parent / "metrics.json"
            info = read_json(metrics)["info"] if metrics.is_file() else {}
            notes = "; ".join(f"{k}: {v}" for k, v in (info.get("notes") or {}).items())
            if info.get("reused_training"):
                notes = "; ".join(filter(None, ["weights shared with an identical training run", notes]))
            if info.get("loaded"):
                notes = "; ".join(filter(None, [loaded_note(info["loaded"]), notes]))
            lr = None if info.get("loaded") else config.get("lr")  # not trained here
            rows[row] = {"prior": row, "name": config["prior"], "lr": lr, "settings": text.replace("|", "/"), "notes": notes}
    return pd.DataFrame(list(rows.values()) + outside_settings(out), columns=["prior", "name", "lr", "settings", "notes"])


def groups(means: pd.DataFrame, columns: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Metric columns per report table, in display order."""
    out: dict[str, list[str]] = {}
    for name in means.columns:
        out.setdefault(columns.get(name, {}).get("group", "generation"), []).append(name)
    return out
