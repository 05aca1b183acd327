"""`vqbench evaluate`: samples made elsewhere scored under a results folder's protocol, as one report row that
`vqbench report` keeps; bad input exits 2 with one line and leaves the results folder as it was."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from vqbench_plugins.image_folder import to_rgb_square

from vqbench.cli import main
from vqbench.runner.outside_input import fit_resolution, folder_digest, image_files

from .conftest import SMOKE

CELL = "independent__seed0"
SAME = ("fid", "kid", "kid_subset_std", "precision", "recall", "density", "coverage")  # same images → same numbers


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished smoke results folder (24 samples of 16² px, random-cnn features) with its cell's samples exported."""
    root = tmp_path_factory.mktemp("finished")
    config = copy.deepcopy(SMOKE) | {"out": str(root / "out"), "cache": str(root / "cache")}
    (root / "bench.yaml").write_text(yaml.safe_dump(config))
    assert main(["run", str(root / "bench.yaml")]) == 0
    assert main(["export", str(root / "out"), "--format", "npz", "--out", str(root / "npz"), "--no-reference"]) == 0
    assert main(["export", str(root / "out"), "--format", "png", "--out", str(root / "png"), "--no-reference"]) == 0
    return root


@pytest.fixture
def results(finished, tmp_path) -> Path:
    """A private copy of the finished results folder (it shares the cache)."""
    shutil.copytree(finished / "out", tmp_path / "results")
    return tmp_path / "results"


def cell_values(results: Path) -> dict:
    return json.loads((results / "runs" / CELL / "metrics.json").read_text())["values"]


def row(results: Path, label: str) -> dict:
    return json.loads((results / "outside" / label / "metrics.json").read_text())


def exported(finished: Path) -> np.ndarray:
    return np.load(finished / "npz" / CELL / "images.npz")["arr_0"]


def listing(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` with the sha256 of each file's content (folders map to "")."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "" for p in sorted(folder.rglob("*"))}


def evaluate(results: Path, samples: Path, label: str) -> int:
    return main(["evaluate", str(results), "--samples", str(samples), "--label", label, "--device", "cpu"])


def test_exported_npz_scores_exactly_as_the_cell_and_export_writes_arr_0(finished, results, capsys):
    """Known truth: the cell's own samples, exported and scored as outside samples, give the cell's numbers."""
    data = np.load(finished / "npz" / CELL / "images.npz")
    assert data["arr_0"].shape == (24, 16, 16, 3) and data["arr_0"].dtype == np.uint8
    assert np.array_equal(data["arr_0"], data["images"])  # `images` kept for compatibility
    assert evaluate(results, finished / "npz" / CELL / "images.npz", "exported") == 0
    record = row(results, "exported")
    for name in SAME:
        assert record["values"][name] == cell_values(results)[name], name
    assert record["info"]["outside"]["npz_key"] == "arr_0" and record["info"]["outside"]["resized"] is False
    report = (results / "report.md").read_text()
    assert "| exported " in report and "- `exported`: outside samples: images.npz ['arr_0']" in report
    assert "row 'exported' stored in" in capsys.readouterr().out


def test_png_folder_row_survives_report_rebuild(finished, results):
    folder = finished / "png" / CELL
    assert evaluate(results, folder, "png folder") == 0
    record = row(results, "png-folder")  # the folder name replaces unsafe characters; the row keeps the label
    assert record["row"] == "png folder"
    source = json.loads((results / "outside" / "png-folder" / "provenance.json").read_text())
    assert source["sha256"] == folder_digest(folder, image_files(folder)) and source["samples_scored"] == 24
    assert source["file"] == CELL and source["source"] == str(folder.resolve()) and source["original_resolution"] == "16×16"
    for name in SAME:  # PNG is lossless: the same images
        assert record["values"][name] == cell_values(results)[name], name
    before = (results / "report.md").read_text()
    (results / "report.md").unlink()
    assert main(["report", str(results)]) == 0
    report = (results / "report.md").read_text()
    assert report == before
    table = pd.read_csv(results / "report.csv", index_col="prior")
    assert table.loc["png folder", "fid"] == pytest.approx(cell_values(results)["fid"], rel=1e-12)
    settings = report.split("## Settings")[1]
    assert "| png folder " in settings and "outside samples" in settings and f"sha256 {source['sha256'][:12]}" in settings
    speed = report.split("## Sampling speed and size")[1].split("##")[0]
    line = next(line for line in speed.splitlines() if line.startswith("| png folder"))
    assert line.count("n/a") == 8  # sample, decode, total s/img, NFE, peak MiB, params, train and sample GFLOPs: not applicable
    gen = next(line for line in report.split("## Generation quality")[1].splitlines() if line.startswith("| png folder"))
    assert gen.count("n/a") == 6  # NLL, its s.e., and the four latent statistics (the samples are images)
    inpainting = next(line for line in report.split("## Inpainting")[1].splitlines() if line.startswith("| png folder"))
    assert "n/a" in inpainting and not any(c.isdigit() for c in inpainting.replace("png folder", "").replace("N=", ""))
    assert "nll: no model to compute a likelihood" in report and "sample_time: the samples were drawn elsewhere" in report
    config = yaml.safe_load((finished / "bench.yaml").read_text()) | {"out": str(results)}
    (results.parent / "rerun.yaml").write_text(yaml.safe_dump(config))
    assert main(["run", str(results.parent / "rerun.yaml")]) == 0  # a rerun (its cell skipped) rewrites the report
    assert (results / "report.md").read_text() == before


def test_npz_with_the_images_key(finished, results):
    path = results.parent / "only-images.npz"
    np.savez(path, images=exported(finished))
    assert evaluate(results, path, "images key") == 0
    record = row(results, "images-key")
    assert record["info"]["outside"]["npz_key"] == "images" and record["values"]["fid"] == cell_values(results)["fid"]


def test_npy_of_codes_is_decoded_with_the_benchmarks_tokenizer(results):
    codes = results / "runs" / CELL / "samples.npy"
    assert evaluate(results, codes, "codes") == 0
    record, cell = row(results, "codes"), cell_values(results)
    for name in (*SAME, "token_kl", "codebook_usage", "unique_samples"):  # code grids: latent statistics apply too
        assert record["values"][name] == cell[name], name
    assert "nll" in record["info"]["not_applicable"] and "latent_stats" not in record["info"]["not_applicable"]


def test_larger_images_are_resized_as_the_protocol_resizes_real_images_and_noted(finished, results):
    """32×40 images: resized to 16×16 (shorter side, centre crop, as image_folder resizes real images); the same
    images resized beforehand by image_folder's own function score identically."""
    rng = np.random.default_rng(0)
    big = np.stack([np.asarray(Image.fromarray(a).resize((32, 40), Image.Resampling.BILINEAR)) for a in exported(finished)])
    big = np.clip(big.astype(int) + rng.integers(-20, 20, big.shape), 0, 255).astype(np.uint8)
    np.savez(results.parent / "big.npz", arr_0=big)
    np.savez(results.parent / "small.npz", arr_0=np.stack([to_rgb_square(Image.fromarray(a), 16) for a in big]))
    assert evaluate(results, results.parent / "big.npz", "big") == 0
    assert evaluate(results, results.parent / "small.npz", "small") == 0
    big_row, small_row = row(results, "big"), row(results, "small")
    assert big_row["info"]["outside"]["resized"] is True and small_row["info"]["outside"]["resized"] is False
    assert big_row["info"]["outside"]["original_resolution"] == "32×40"
    for name in SAME:
        assert big_row["values"][name] == small_row["values"][name], name
    report = (results / "report.md").read_text()
    assert "resized from 32×40 to 16×16 (shorter side bicubic, centre crop: as the protocol resizes real images)" in report
    assert report.count("resized from") == 2  # header line and Settings notes of the one resized row


@pytest.mark.parametrize("size", [(16, 16), (20, 16), (16, 33), (64, 48), (7, 9)])
def test_fit_resolution_is_image_folders_resize(size):
    image = np.random.default_rng(1).integers(0, 256, (*size, 3), dtype=np.uint8)
    assert np.array_equal(fit_resolution(image, 16, 16), to_rgb_square(Image.fromarray(image), 16))


def bad_inputs(finished: Path, tmp: Path) -> dict[str, tuple[Path, str]]:
    """name → (path given to --samples, text the one-line error must contain)."""
    images = exported(finished)
    np.savez(tmp / "no-channels.npz", arr_0=images[..., 0])
    np.savez(tmp / "four-channels.npz", arr_0=np.concatenate([images, images[..., :1]], axis=-1))
    np.savez(tmp / "float.npz", arr_0=images.astype(np.float32) / 255)
    np.savez(tmp / "other-key.npz", samples=images)
    np.savez(tmp / "too-few.npz", arr_0=images[:10])
    np.save(tmp / "wrong-grid.npy", np.zeros((24, 5, 4), np.int64))
    np.save(tmp / "float-codes.npy", np.zeros((24, 4, 4), np.float32))
    np.save(tmp / "outside-codebook.npy", np.full((24, 4, 4), 32, np.int64))
    (tmp / "empty").mkdir()
    shutil.copytree(finished / "png" / CELL, tmp / "broken")
    (tmp / "broken" / "000003.png").write_bytes(b"not a png at all")
    (tmp / "not-numpy.npz").write_bytes(b"garbage")
    return {
        "no channels": (tmp / "no-channels.npz", "no-channels.npz['arr_0'] has shape (24, 16, 16); expected N×H×W×3"),
        "four channels": (tmp / "four-channels.npz", "has shape (24, 16, 16, 4); expected N×H×W×3"),
        "float pixels": (tmp / "float.npz", "float.npz['arr_0'] has dtype float32; expected uint8"),
        "no images entry": (tmp / "other-key.npz", "has no entry 'arr_0' or 'images' (entries: samples)"),
        "too few": (tmp / "too-few.npz", "holds 10 samples, the protocol scores 24"),
        "wrong grid": (tmp / "wrong-grid.npy", "has shape (24, 5, 4); expected N×4×4 code grids"),
        "float codes": (tmp / "float-codes.npy", "has dtype float32; expected integer codes"),
        "outside codebook": (tmp / "outside-codebook.npy", "holds codes in 32..32, the tokenizer's codebook has 32"),
        "empty folder": (tmp / "empty", "holds no PNG/JPEG images"),
        "unreadable image": (tmp / "broken" / "000003.png", "000003.png is neither a folder"),  # a file given directly
        "unreadable in folder": (tmp / "broken", "000003.png cannot be read as an image"),
        "not numpy": (tmp / "not-numpy.npz", "not-numpy.npz cannot be read as a numpy file"),
        "missing": (tmp / "nowhere.npz", "nowhere.npz does not exist"),
    }


def test_bad_inputs_exit_2_with_one_line_and_change_nothing(finished, results, capsys):
    tmp = results.parent / "inputs"
    tmp.mkdir()
    before = listing(results)
    for name, (path, message) in bad_inputs(finished, tmp).items():
        capsys.readouterr()
        assert evaluate(results, path, name) == 2, name
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "--samples" in err and message in err, (name, err)
        assert listing(results) == before, name


def test_colliding_labels_and_unknown_folders_are_refused(finished, results, tmp_path, capsys):
    samples = finished / "npz" / CELL / "images.npz"
    assert evaluate(results, samples, "first") == 0
    before = listing(results)
    for label, message in [
        ("independent", "'independent' is already a row of the benchmark"),
        ("first", "'first' is already an outside row (outside/first/)"),
        (".first", "'.first' would be stored in"),  # another label, the same folder
        (" ", "is not a usable row name"),
    ]:
        capsys.readouterr()
        assert evaluate(results, samples, label) == 2, label
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "--label" in err and message in err, (label, err)
        assert listing(results) == before, label
    assert evaluate(tmp_path / "no-results", samples, "x") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no-results: no results.json/protocol.json here" in err
    assert not (tmp_path / "no-results").exists()


def test_label_metrics_score_the_outside_images(finished, tmp_path):
    """With the toyfaces classifier's features, the label metrics of the cell's exported samples equal the cell's;
    class accuracy is n/a (outside samples carry no class labels)."""
    config = copy.deepcopy(SMOKE) | {"out": str(tmp_path / "out"), "cache": str(finished / "cache")}  # the cached tokenizer
    config["metrics"] = {**config["metrics"], "feature_extractor": "classifier", "enabled": ["fid", "factor_distribution", "class_accuracy"]}
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(config))
    assert main(["run", str(tmp_path / "bench.yaml")]) == 0
    assert main(["export", str(tmp_path / "out"), "--format", "npz", "--out", str(tmp_path / "npz"), "--no-reference"]) == 0
    assert evaluate(tmp_path / "out", tmp_path / "npz" / CELL / "images.npz", "outside") == 0
    record, cell = row(tmp_path / "out", "outside"), cell_values(tmp_path / "out")
    for name in ("fid", "factor_tv_marginal", "factor_tv_pairwise", "valid_fraction"):
        assert record["values"][name] == cell[name], name
    assert np.isnan(record["values"]["class_accuracy"]) and "samples drawn without class labels" in record["info"]["notes"]["class_accuracy"]


def test_a_row_scored_under_an_earlier_protocol_is_flagged(finished, results):
    assert evaluate(results, finished / "npz" / CELL / "images.npz", "earlier") == 0
    assert "scored under an earlier protocol" not in (results / "report.md").read_text()
    protocol = json.loads((results / "protocol.json").read_text())
    protocol["metric_settings"]["kid"]["subsets"] = 7  # as a rerun with other settings would record
    (results / "protocol.json").write_text(json.dumps(protocol))
    assert main(["report", str(results)]) == 0
    assert "- `earlier`: **scored under an earlier protocol**" in (results / "report.md").read_text()
