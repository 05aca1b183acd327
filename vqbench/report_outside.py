"""Report rows of samples scored from outside vqbench (`vqbench evaluate`), stored in ``outside/<label>/`` of a results
folder, and the header line of reference statistics read from a file (``metrics.reference_stats``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .io import fingerprint, read_json

OUTSIDE_DIR = "outside"  # <results>/outside/<folder>/{metrics.json, provenance.json, samples.png}
RECORD_FILE = "metrics.json"
PROVENANCE_FILE = "provenance.json"
FIRST_INDEX = 1_000_000  # outside rows follow every planned cell, in the order they were added
NOT_APPLICABLE = {
    "nll": "no model to compute a likelihood",
    "sample_time": "the samples were drawn elsewhere",
    "inpainting": "no model to inpaint with",
    "big_samples": "no model to draw larger grids with",
    "class_rejection": "no model to draw class-conditional samples with",
}


def outside_records(out: Path) -> list[dict[str, Any]]:
    """Every outside row's record (``metrics.json``), in the order they were added."""
    records = [read_json(p) for p in (out / OUTSIDE_DIR).glob(f"*/{RECORD_FILE}")]
    return sorted(records, key=lambda r: (r.get("index", FIRST_INDEX), r["cell"]))


def digest(sha256: str) -> str:
    return f"sha256 {sha256[:12]}…"


def provenance_note(source: dict[str, Any]) -> str:
    """E.g. "outside samples: samples.npz ['arr_0'] (sha256 …), first 128 of 1000 scored; resized from 64×64 to
    32×32 (shorter side bicubic, centre crop: as the protocol resizes real images)"."""
    key = f" [{source['npz_key']!r}]" if source.get("npz_key") else ""
    kind = " (code grids decoded with the benchmark's tokenizer)" if source["kind"] == "codes" else ""
    scored, total = source["samples_scored"], source["samples_in_input"]
    count = f"first {scored} of {total} scored (sampling.num_samples)" if total > scored else f"{scored} scored"
    note = f"outside samples: {source['file']}{key}{kind} ({digest(source['sha256'])}), {count}"
    if source.get("resized"):
        note += (
            f"; resized from {source['original_resolution']} to {source['resolution']} (shorter side bicubic, centre crop: "
            "as the protocol resizes real images)"
        )
    return note


def not_applicable_note(record: dict[str, Any]) -> str:
    skipped = (record.get("info") or {}).get("not_applicable") or {}
    return "n/a (not applicable): " + "; ".join(f"{name}: {why}" for name, why in skipped.items()) if skipped else ""


def protocol_key(protocol: dict[str, Any]) -> str:
    """A digest of what an outside row's numbers depend on in ``protocol.json`` (data, tokenizer, features, their
    statistics file, sample count, metric settings, precision)."""
    keys = ("dataset", "latents", "tokenizer", "features", "metric_settings", "precision")
    stats = (protocol.get("reference_stats") or {}).get("sha256")
    return fingerprint({k: protocol.get(k) for k in keys}, protocol["sampling"]["num_samples"], stats)


def outside_rows(out: Path, protocol: dict[str, Any]) -> list[str]:
    """A header line per outside row: where its samples came from, which columns do not apply, and whether the
    benchmark was rerun under another protocol since the row was scored."""
    lines = []
    for record in outside_records(out):
        info = record.get("info") or {}
        parts = [provenance_note(info["outside"]), not_applicable_note(record)]
        if info.get("protocol_key") not in (None, protocol_key(protocol)):
            parts.insert(0, "**scored under an earlier protocol** (the benchmark was rerun with other settings): score it again")
        parts += [f"metric `{name}` failed: {error}" for name, error in sorted((info.get("failed_metrics") or {}).items())]
        lines.append(f"- `{record['row']}`: " + "; ".join(p for p in parts if p) + ".")
    return lines


def outside_settings(out: Path) -> list[dict[str, Any]]:
    """Settings-table rows of the outside rows (name "outside samples", the file and its digest)."""
    rows = []
    for record in outside_records(out):
        info = record.get("info") or {}
        source = info["outside"]
        notes = "; ".join(p for p in [provenance_note(source), *(f"{k}: {v}" for k, v in (info.get("notes") or {}).items())] if p)
        settings = f"file={source['file']}, {digest(source['sha256'])}, samples={source['samples_scored']}"
        rows.append({"prior": record["row"], "name": "outside samples", "lr": "—", "settings": settings, "notes": notes.replace("|", "/")})
    return rows


def outside_links(out: Path) -> list[dict[str, Any]]:
    """Sample-table rows of the outside rows (their sample grid; no inpainting)."""
    rows = []
    for record in outside_records(out):
        grid = Path(OUTSIDE_DIR) / record["cell"].split("/", 1)[-1] / "samples.png"
        link = f"[samples.png]({grid.as_posix()})" if (out / grid).is_file() else "—"
        rows.append({"prior": record["row"].replace("|", "/"), "seed": "—", "samples": link, "inpainting": "—"})
    return rows


def reference_stats_lines(protocol: dict[str, Any]) -> list[str]:
    """The header line of ``metrics.reference_stats``: the file, its identity (or that it records none) and which
    metrics it served."""
    stats = protocol.get("reference_stats")
    if not stats:
        return []
    identity = stats.get("identity")
    if identity:
        who = f"computed with {identity['feature_network']} (weights {digest(identity['feature_weights_sha256'])}), the benchmark's network"
    else:
        who = "**records no feature network** (e.g. written by pytorch-fid): not checked against this benchmark's network"
    count = f", {stats['count']} features" if stats.get("count") else ""
    used = "FID" if "fid" in (stats.get("from_file") or []) else "no metric (fid is not enabled)"
    others = ", ".join(stats.get("from_features") or [])
    real = f"the {protocol['features']['num_real']} real features" if protocol.get("features") else "the real features"
    rest = f"; {others} from {real}" if others else ""
    return [f"- **Reference statistics**: {used} from {stats['file']} ({digest(stats['sha256'])}{count}), {who}{rest}"]
