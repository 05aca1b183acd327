"""End to end through the CLI: a smoke benchmark, reruns, report rebuild, bad input, failures, latent-only runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import vqbench.plugins as plugins
from vqbench import latents
from vqbench.cli import main
from vqbench.runner.schema import BudgetSection
from vqbench.runner.train import train_prior

from . import example_plugin

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, config: dict) -> str:
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_smoke_benchmark_end_to_end(smoke_config, tmp_path, capsys):
    smoke_config["priors"].append({"name": "independent", "label": "sharp", "sweep": {"temperature": [0.5, 0.8]}})
    assert main(["run", write(tmp_path, smoke_config)]) == 0
    out = Path(smoke_config["out"])
    report = (out / "report.md").read_text()
    for row in ("| independent ", "| sharp [temperature=0.5]", "| sharp [temperature=0.8]"):
        assert row in report
    assert "random weights" in report and "nearest_k = 3" in report and "## Inpainting" in report
    assert "**LPIPS** (inpainting): LPIPS-alex with a random backbone — not comparable" in report  # offline, where the numbers are
    assert "center LPIPS, random backbone — not comparable (composite, N=6)" in report
    assert "kid: seed 0, subset_size 12, subsets 5" in report  # resolved settings, defaults included
    assert "## Settings" in report and "smoothing=0.5, temperature=0.8" in report  # every knob is shown
    table = pd.read_csv(out / "report.csv", index_col="prior")
    assert len(table) == 3 and {
        "fid",
        "kid",
        "precision",
        "recall",
        "density",
        "coverage",
        "nll_bpt",
        "inpaint_center_lpips",
        "total_s_per_img",
    } <= set(table.columns)
    assert np.isfinite(table[["fid", "nll_bpt", "inpaint_strokes_psnr", "sample_s_per_img"]].to_numpy()).all()
    assert (table["nfe"] == 0).all()  # the independent prior runs no network
    assert "\\begin{tabular}" in (out / "report.tex").read_text()
    assert "N = 24 samples per cell, reference N = 30" in report and "N = 6 inpainted images" in report
    assert "[samples.png](runs/independent__seed0/samples.png)" in report and "[inpainting.png](runs/independent__seed0/inpainting.png)" in report
    cell = out / "runs" / "independent__seed0"
    for name in ("config.json", "metrics.json", "samples.npy", "samples.png", "inpainting.png", "prior.pt", "log.txt"):
        assert (cell / name).is_file(), name
    samples = np.load(cell / "samples.npy")
    assert samples.shape == (24, 4, 4) and samples.max() < 32
    protocol = json.loads((out / "protocol.json").read_text())
    assert protocol["latents"]["shape"] == [4, 4] and protocol["features"]["real_weights"] is False
    cached = list((Path(smoke_config["cache"]) / "latents").iterdir())
    assert len(cached) == 2 and all(latents.open(p).meta["tokenizer"]["checkpoint_sha256"] for p in cached)

    # export: every cell's samples and the reference images, decoded by the run's tokenizer
    assert main(["export", str(out), "--format", "npz"]) == 0
    exported = np.load(out / "export" / "independent__seed0" / "images.npz")["images"]
    assert exported.shape == (24, 16, 16, 3) and exported.dtype == np.uint8
    assert np.load(out / "export" / "reference" / "images.npz")["images"].shape == (30, 16, 16, 3)
    assert main(["export", str(out), "--out", str(tmp_path / "png"), "--no-reference"]) == 0
    assert len(list((tmp_path / "png" / "sharp__temperature=0.5__seed0").glob("*.png"))) == 24 and not (tmp_path / "png" / "reference").exists()
    results = json.loads((out / "results.json").read_text())
    assert results["versions"]["torch"] == torch.__version__.split("+")[0] and results["benchmark"]["name"] == "smoke"
    assert results["command"] and results["finished"] and results["failures"] == {}

    # rerun: every cell is skipped, the tokenizer and latents come from the cache
    stamp = (cell / "metrics.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["run", write(tmp_path, smoke_config)]) == 0
    assert (cell / "metrics.json").stat().st_mtime_ns == stamp
    assert "already finished: skipped" in (out / "run.log").read_text()

    # a changed setting is not passed off as the old numbers: the cells are recomputed under the new protocol
    smoke_config["sampling"]["num_samples"] = 12
    assert main(["run", write(tmp_path, smoke_config)]) == 0
    assert "computed under other settings (sampling.num_samples): recomputing" in (out / "run.log").read_text()
    assert np.load(cell / "samples.npy").shape[0] == 12
    assert json.loads((cell / "metrics.json").read_text())["protocol"]["sampling"]["num_samples"] == 12

    # the report rebuilds from results alone, identically
    before = (out / "report.md").read_text()
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").read_text() == before


@pytest.mark.parametrize(
    "change, message",
    [
        ({"budget": {"stesp": 3}}, "budget.stesp: unknown key — did you mean 'steps'?"),
        ({"budget": {"steps": "ten"}}, "budget.steps: expected an integer"),
        ({"priors": [{"name": "independant"}]}, "unknown prior 'independant' — did you mean 'independent'?"),
        ({"priors": [{"name": "independent", "params": {"smoothin": 1}}]}, "priors[0].params.smoothin: unknown key — did you mean 'smoothing'?"),
        ({"tokenizer": {"checkpoint": "missing.pt"}}, "tokenizer.checkpoint: 'missing.pt' does not exist"),
        ({"dataset": {"name": "toyface"}}, "unknown dataset 'toyface' — did you mean 'toyfaces'?"),
        ({"metrics": {"feature_extractor": "inceptoin-v3-compat"}}, "did you mean 'inception-v3-compat'?"),
        ({"priors": [{"name": "sundae", "sampling": {"stpes": 3}}]}, "priors[0].sampling.stpes: unknown key — did you mean 'steps'?"),
        ({"priors": [{"name": "sundae", "sampling": {"steps": 0}}]}, "priors[0].sampling.steps"),
        ({"priors": [{"name": "independent", "sampling": {"temperature": 0.5, "steps": 3}}]}, "priors[0].sampling.steps: unknown key"),
        (
            {"priors": [{"name": "sundae", "sweep": {"backbone.dim": [32]}, "sampling": {"temprature": 1}}]},
            "priors[0].sampling.temprature: unknown key",
        ),
        ({"sampling": {"num_samples": 3}}, "exceeds sampling.num_samples = 3"),
        ({"metrics": {"inpainting": {"cell_threshold": 1.0}}}, "metrics.inpainting.cell_threshold: must lie in [0, 1)"),
        ({"metrics": {"num_real": 58}}, "metrics.num_real: 58 reference images + 6 inpainting images"),  # 60 held out
    ],
)
def test_bad_input_exits_2_naming_the_key_and_writes_nothing(smoke_config, tmp_path, capsys, change, message):
    for key, value in change.items():
        smoke_config[key] = value if key == "priors" or not isinstance(smoke_config.get(key), dict) else {**smoke_config[key], **value}
    if "checkpoint" in smoke_config["tokenizer"]:
        smoke_config["tokenizer"] = {"checkpoint": "missing.pt"}
    assert main(["run", write(tmp_path, smoke_config)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not Path(smoke_config["out"]).exists() and not Path(smoke_config["cache"]).exists()


def test_missing_benchmark_file_and_bad_override(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: benchmark file not found" in capsys.readouterr().err
    assert main(["validate", str(REPO / "benchmarks" / "quickstart.yaml"), "--set", "novalue"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_ffhq_benchmark_plans_without_data_and_stops_before_work(tmp_path, capsys):
    bench = str(REPO / "benchmarks" / "ffhq1024.yaml")
    assert main(["run", bench, "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "32×32 = 1024 tokens, 8192 codes" in plan and "megapixel-f32" in plan
    out = tmp_path / "ffhq"
    assert main(["run", bench, "--out", str(out), "--set", f"dataset.params.path={tmp_path / 'ffhq-images'}"]) == 2
    err = capsys.readouterr().err
    assert "dataset.params.path" in err and "ffhq-images" in err and "--set dataset.params.path=" in err
    assert not out.exists()


def test_nan_loss_stops_only_that_cell(smoke_config, tmp_path, capsys):
    plugins.register_plugin(example_plugin)
    smoke_config["priors"] = [{"name": "nan_prior"}, {"name": "table"}]
    smoke_config["metrics"]["enabled"] = ["nll", "latent_stats"]
    assert main(["run", write(tmp_path, smoke_config)]) == 1  # the other cells finish; the run says what failed
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    assert summary.startswith("vqbench: smoke: 1 cell(s) with failures (nan_prior__seed0)")
    out = Path(smoke_config["out"])
    failed = json.loads((out / "runs" / "nan_prior__seed0" / "failed.json").read_text())
    assert "prior loss became nan at step 0" in failed["error"]
    assert (out / "runs" / "table__seed0" / "metrics.json").is_file()
    assert "failed: `nan_prior__seed0`" in (out / "report.md").read_text()


def test_interrupted_training_resumes_exactly(tmp_path):
    plugins.register_plugin(example_plugin)
    codes = np.random.default_rng(0).integers(0, 8, size=(64, 2, 2))
    data = latents.open(latents.write(tmp_path / "lat", codes, 8))

    def trained(steps: int, checkpoint: Path):
        torch.manual_seed(0)
        prior = example_plugin.TablePrior(example_plugin.TableConfig(init_scale=0.1), 8, (2, 2))
        budget = BudgetSection(steps=steps, batch_size=8, checkpoint_every=3)
        info = train_prior(
            prior,
            data,
            budget,
            0.05,
            seed=1,
            checkpoint=checkpoint,
            device=torch.device("cpu"),
            autocast=lambda: torch.autocast("cpu", enabled=False),
        )
        return prior, info

    straight, _ = trained(10, tmp_path / "a.pt")
    trained(5, tmp_path / "b.pt")  # "interrupted" after 5 steps
    resumed, info = trained(10, tmp_path / "b.pt")
    assert info["steps"] == 10
    torch.testing.assert_close(resumed.logits, straight.logits, rtol=0, atol=0)


def test_latent_only_benchmark_reports_latent_metrics(tmp_path, capsys):
    rng = np.random.default_rng(0)
    latents.write(tmp_path / "train", rng.integers(0, 16, size=(200, 3, 3)), 16)
    latents.write(tmp_path / "test", rng.integers(0, 16, size=(50, 3, 3)), 16)
    config = {
        "name": "latent-only", "latents": {"train": str(tmp_path / "train"), "test": str(tmp_path / "test")},
        "priors": [{"name": "independent"}], "sampling": {"num_samples": 20, "batch_size": 10},
        "out": str(tmp_path / "out"), "cache": str(tmp_path / "cache"), "device": "cpu",
    }  # fmt: skip
    assert main(["run", write(tmp_path, config)]) == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Image metrics off" in report and "latent-level metrics only" in report
    table = pd.read_csv(tmp_path / "out" / "report.csv", index_col="prior")
    assert np.isnan(table.loc["independent", "fid"]) and table.loc["independent", "nll_bpt"] == pytest.approx(4.0, abs=0.15)


def test_encode_command_writes_a_valid_latent_dataset(tmp_path, capsys):
    from PIL import Image

    import vqbench

    cls = vqbench.registries().tokenizers.get("vqgan")
    torch.manual_seed(0)
    cls.from_preset("tiny", {"n_embed": 32, "ddconfig": {"resolution": 16, "ch": 16}}).save(tmp_path / "tok.pt")
    (tmp_path / "imgs").mkdir()
    for i in range(5):
        Image.fromarray(np.full((20, 24, 3), i * 40, dtype=np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    args = ["encode", "--checkpoint", str(tmp_path / "tok.pt"), "--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "lat"), "--device", "cpu"]
    assert main([*args, "--resize"]) == 2  # the file does not record its training resolution: say it
    assert "--resolution" in capsys.readouterr().err
    assert main([*args, "--resize", "--resolution", "16"]) == 0
    ds = latents.open(tmp_path / "lat")
    assert len(ds) == 5 and ds.latent_shape == (4, 4) and ds.meta["source"]["resolution"] == 16 and ds.meta["resolution"] == 16


def test_encode_refuses_a_resolution_other_than_the_tokenizers_unless_told_to_resize(tmp_path, capsys):
    """A tokenizer trained at 16 px on 32 px images: an error naming --images; --resolution 32 an error naming
    --resolution; with --resize the images are resized to 16 px and the latents match the benchmark's 4×4 grid."""
    from PIL import Image

    import vqbench

    cls = vqbench.registries().tokenizers.get("vqgan")
    torch.manual_seed(0)
    tokenizer = cls.from_preset("tiny", {"n_embed": 32, "ddconfig": {"resolution": 32, "ch": 16}})
    tokenizer.trained_resolution = 16  # the benchmark trained it on 16 px images; the architecture says 32
    tokenizer.save(tmp_path / "tok.pt")
    assert cls.load(tmp_path / "tok.pt").trained_resolution == 16
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        Image.fromarray(np.full((32, 32, 3), i * 40, dtype=np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    args = ["encode", "--checkpoint", str(tmp_path / "tok.pt"), "--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "lat"), "--device", "cpu"]
    assert main(args) == 2
    assert "--images" in capsys.readouterr().err and not (tmp_path / "lat").exists()
    assert main([*args, "--resolution", "32"]) == 2
    err = capsys.readouterr().err
    assert "--resolution" in err and "trained at 16 px" in err and not (tmp_path / "lat").exists()
    assert main([*args, "--resize"]) == 0
    ds = latents.open(tmp_path / "lat")
    assert ds.latent_shape == (4, 4) and ds.meta["resolution"] == 16 and ds.meta["tokenizer"]["trained_resolution"] == 16


def native_bf16_cpu(monkeypatch, native: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512" if native else "AVX2")


def test_auto_precision_runs_bf16_where_native_and_says_why(smoke_config, tmp_path, monkeypatch):
    native_bf16_cpu(monkeypatch, True)
    smoke_config["precision"] = "auto"
    smoke_config["metrics"]["enabled"] = ["fid", "nll", "sample_time"]
    assert main(["run", write(tmp_path, smoke_config)]) == 0
    out = Path(smoke_config["out"])
    table = pd.read_csv(out / "report.csv", index_col="prior")
    assert np.isfinite(table.loc["independent", ["fid", "nll_bpt"]].astype(float)).all()
    assert "precision bf16 (auto: CPU (AVX512) has AVX512_BF16/AMX)" in (out / "report.md").read_text()
    protocol = json.loads((out / "protocol.json").read_text())
    assert protocol["precision"] == "bf16" and protocol["precision_requested"] == "auto"


@pytest.mark.parametrize("native, expected", [(False, "precision fp32 (auto: CPU (AVX2) lacks"), (True, "precision bf16 (auto: CPU (AVX512) has")])
def test_dry_run_states_the_precision_actually_used(smoke_config, tmp_path, monkeypatch, capsys, native, expected):
    native_bf16_cpu(monkeypatch, native)
    smoke_config.pop("precision")  # the default is auto
    assert main(["run", write(tmp_path, smoke_config), "--dry-run"]) == 0
    assert expected in capsys.readouterr().out


def test_shipped_cpu_benchmarks_let_the_hardware_choose_precision():
    for name in ("quickstart", "ablate_hourglass", "known_truth"):
        for doc in yaml.safe_load_all((REPO / "benchmarks" / f"{name}.yaml").read_text()):
            assert doc.get("precision", "auto") == "auto", name


def test_sundae_resampling_sweep_end_to_end(smoke_config, tmp_path):
    backbone = {"dim": 32, "depth": [1, 1, 1], "heads": 2, "dim_head": 16}
    smoke_config["priors"] = [
        {"name": "sundae", "params": {"backbone": backbone, "steps": 4, "min_steps": 2}, "sweep": {"backbone.resample": ["1d", "2d"]}}
    ]
    smoke_config["metrics"]["enabled"] = ["fid", "nll", "sample_time", "inpainting"]
    smoke_config["metrics"]["inpainting"] = {"num_images": 4, "masks": ["center"]}
    assert main(["run", write(tmp_path, smoke_config)]) == 0
    table = pd.read_csv(Path(smoke_config["out"]) / "report.csv", index_col="prior")
    assert list(table.index) == ["sundae [resample=1d]", "sundae [resample=2d]"]
    assert table["nll_bpt"].isna().all()  # no tractable likelihood: n/a
    assert np.isfinite(table[["fid", "inpaint_center_lpips", "inpaint_center_psnr"]].to_numpy()).all()
    assert ((table["nfe"] >= 2) & (table["nfe"] <= 4)).all() and (table["parameters_m"] > 0).all()
    report = (Path(smoke_config["out"]) / "report.md").read_text()
    assert "| sundae [resample=2d]" in report and "n/a" in report


def test_sampling_labels_cycle_the_class_list_or_follow_held_out_labels(tmp_path):
    from vqbench.runner.data import DataBundle
    from vqbench.runner.evaluate import sampling_labels
    from vqbench.runner.schema import SamplingSection

    codes = np.zeros((3, 2, 2), dtype=int)
    test = latents.open(latents.write(tmp_path / "t", codes, 4, labels=np.array([[2, 9], [0, 9], [1, 9]])))
    data = DataBundle(test, test)
    assert sampling_labels(SamplingSection(class_labels=[5, 7]), data, 5).tolist() == [5, 7, 5, 7, 5]
    assert sampling_labels(SamplingSection(), data, 4).tolist() == [2, 0, 1, 2]
    unlabelled = latents.open(latents.write(tmp_path / "u", codes, 4))
    assert sampling_labels(SamplingSection(), DataBundle(unlabelled, unlabelled), 4) is None


def test_class_conditional_sundae_gets_labels_in_training_and_sampling(smoke_config, tmp_path):
    backbone = {"dim": 32, "depth": [1, 1, 1], "heads": 2, "dim_head": 16, "class_conditional": True}
    smoke_config["priors"] = [{"name": "sundae", "params": {"backbone": backbone, "steps": 3}}]
    smoke_config["sampling"]["class_labels"] = [0, 2]
    smoke_config["metrics"]["enabled"] = ["latent_stats"]
    assert main(["run", write(tmp_path, smoke_config)]) == 0
    state = torch.load(Path(smoke_config["out"]) / "runs" / "sundae__seed0" / "prior.pt", weights_only=True)
    embedding = state["state_dict"]["net.class_embed.weight"]
    assert embedding.shape[0] == 3  # toyfaces label 0 (face shape) has 3 classes
