"""Experiment tracking: TensorBoard event files per cell, trackers added by plugins, the ``tracking`` key."""

from __future__ import annotations

import contextlib
import copy
import json
import sys
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import vqbench
import vqbench.plugins as plugins
from vqbench import latents as latent_io
from vqbench.cli import main
from vqbench.errors import ConfigError
from vqbench.runner.schema import BudgetSection, parse_benchmark
from vqbench.runner.train import CURVE_FILE, train_prior
from vqbench.tracking import CellInfo, Tracker, Tracking

from . import example_plugin
from .conftest import SMOKE

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData  # noqa: E402

LR, WARMUP = 0.02, 4


class Recorder(Tracker):
    """A tracker as a third-party plugin writes one: it records every call."""

    made: ClassVar[list[Recorder]] = []

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.made.append(self)

    def start(self, cell: CellInfo) -> None:
        self.calls.append(("start", cell))

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        self.calls.append(("scalars", (step, dict(values))))

    def log_image(self, step: int, name: str, image: np.ndarray) -> None:
        self.calls.append(("image", (step, name, image)))

    def log_final(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        self.calls.append(("final", (params, metrics)))

    def close(self) -> None:
        self.calls.append(("close", None))

    def scalars(self, tag: str) -> tuple[list[int], list[float]]:
        """(steps, values) of one tag."""
        pairs = [(args[0], args[1][tag]) for kind, args in self.calls if kind == "scalars" and tag in args[1]]
        return [step for step, _ in pairs], [value for _, value in pairs]


class RecorderPlugin:
    @vqbench.hookimpl
    def vqbench_register_trackers(self, registry):
        registry.register("recorder", Recorder)


def bench_config(tmp: Path, tracking: Any) -> dict:
    """The smoke benchmark with a trainable prior, a warmup and validation every 4 steps; its tokenizer is loaded
    untrained (training one is not what these tests are about)."""
    config = copy.deepcopy(SMOKE) | {"out": str(tmp / "out"), "cache": str(tmp / "cache"), "tracking": tracking}
    tokenizer = vqbench.registries().tokenizers.get("vqgan").from_preset("tiny", config["tokenizer"]["params"])
    tokenizer.save(tmp / "tokenizer.pt")
    config["tokenizer"] = {"checkpoint": str(tmp / "tokenizer.pt")}
    config["dataset"]["params"]["count"] = 120
    config["priors"] = [{"name": "table", "params": {"init_scale": 0.1}}]
    config["budget"] |= {"lr": LR, "warmup_steps": WARMUP, "eval_every": 4, "eval_grids": 16}
    config["metrics"] = {"enabled": ["fid", "nll"], "feature_extractor": "random-cnn", "num_real": 30}
    return config


def latents_config(tmp: Path, tracking: Any) -> dict:
    """Code grids only (no tokenizer, no images); the second row shares the first one's training."""
    return {
        "name": "lat", "dataset": {"name": "synthetic_latents", "params": {"h": 2, "w": 2, "codebook_size": 4, "count": 80}},
        "priors": [{"name": "table"}, {"name": "table", "label": "again"}], "tracking": tracking,
        "budget": {"steps": 5, "batch_size": 8, "lr": LR, "warmup_steps": WARMUP, "eval_every": 2, "eval_grids": 8},
        "sampling": {"num_samples": 8, "batch_size": 8}, "metrics": {"enabled": ["nll"]},
        "out": str(tmp / "out"), "cache": str(tmp / "cache"), "device": "cpu", "precision": "fp32",
    }  # fmt: skip


def run(config: dict, tmp: Path) -> Path:
    path = tmp / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path)]) == 0
    return Path(config["out"])


@pytest.fixture(scope="module")
def tracked(tmp_path_factory) -> tuple[Path, Recorder]:
    """One tiny run with TensorBoard and the recorder plugin, shared by the tests below."""
    tmp = tmp_path_factory.mktemp("tracked")
    plugins.register_plugin(example_plugin)
    plugins.register_plugin(RecorderPlugin())
    Recorder.made.clear()
    try:
        out = run(bench_config(tmp, ["tensorboard", "recorder"]), tmp)
    finally:
        plugins.reset()
    assert len(Recorder.made) == 1
    return out, Recorder.made[0]


def events(folder: Path) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def expected_lr(steps: list[int]) -> list[float]:
    return [LR * min(1.0, step / WARMUP) for step in steps]


def test_tensorboard_scalars_equal_the_training_curve(tracked):
    out, _ = tracked
    assert [p.name for p in (out / "tensorboard").iterdir()] == ["table__seed0"]
    acc = events(out / "tensorboard" / "table__seed0")
    curve = pd.read_csv(out / "runs" / "table__seed0" / "train_curve.csv")
    losses, val = curve.dropna(subset=["train_loss"]), curve.dropna(subset=["val_nll_bpt"])
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == losses["step"].tolist() == list(range(1, 9))
    assert [e.value for e in loss] == pytest.approx(losses["train_loss"].tolist(), rel=1e-6)
    lr = acc.Scalars("train/lr")
    assert [e.step for e in lr] == list(range(1, 9))
    assert [e.value for e in lr] == pytest.approx(expected_lr(list(range(1, 9))), rel=1e-6)  # warmup, then flat
    nll = acc.Scalars("val/nll_bpt")
    assert [e.step for e in nll] == val["step"].tolist() == [0, 4, 8]
    assert [e.value for e in nll] == pytest.approx(val["val_nll_bpt"].tolist(), rel=1e-6)


def test_tensorboard_has_the_samples_grid_and_the_final_metrics_as_hparams(tracked):
    out, _ = tracked
    acc = events(out / "tensorboard" / "table__seed0")
    (image,) = acc.Images("samples")
    assert image.step == 8 and image.width >= 4 * 16 and image.height >= 4 * 16  # a 4×4 grid of 16² samples
    values = json.loads((out / "runs" / "table__seed0" / "metrics.json").read_text())["values"]
    assert {"fid", "nll_bpt"} <= values.keys()
    for name in ("fid", "nll_bpt"):
        assert [e.value for e in acc.Scalars(f"metrics/{name}")] == pytest.approx([values[name]], rel=1e-6)
    content = acc.PluginTagToContent("hparams")
    session = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert session.hparams["prior"].string_value == "table" and session.hparams["seed"].number_value == 0
    assert session.hparams["lr"].number_value == pytest.approx(LR) and session.hparams["params.init_scale"].number_value == pytest.approx(0.1)
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} >= {"metrics/fid", "metrics/nll_bpt"}


def test_a_plugin_tracker_receives_the_same_calls(tracked):
    out, recorder = tracked
    kinds = [kind for kind, _ in recorder.calls]
    assert kinds[0] == "start" and kinds[-2:] == ["final", "close"] and kinds.count("image") == 1
    cell = recorder.calls[0][1]
    assert (cell.cell, cell.row, cell.seed, cell.out, cell.benchmark) == ("table__seed0", "table", 0, out, "smoke")
    acc = events(out / "tensorboard" / "table__seed0")
    for tag in ("train/loss", "train/lr", "val/nll_bpt"):
        steps, values = recorder.scalars(tag)
        assert steps == [e.step for e in acc.Scalars(tag)] and values == pytest.approx([e.value for e in acc.Scalars(tag)], rel=1e-6)
    (step, name, image) = next(args for kind, args in recorder.calls if kind == "image")
    assert (step, name, image.dtype, image.shape[2]) == (8, "samples", np.uint8, 3)
    assert image.shape[:2] == (acc.Images("samples")[0].height, acc.Images("samples")[0].width)
    params, metrics = next(args for kind, args in recorder.calls if kind == "final")
    values = json.loads((out / "runs" / "table__seed0" / "metrics.json").read_text())["values"]
    assert params["prior"] == "table" and params["budget.steps"] == 8 and metrics["fid"] == values["fid"]


def test_reused_training_sends_the_same_curve(tmp_path):
    plugins.register_plugin(example_plugin)
    plugins.register_plugin(RecorderPlugin())
    Recorder.made.clear()
    out = run(latents_config(tmp_path, "recorder"), tmp_path)
    first, second = Recorder.made
    info = json.loads((out / "runs" / "again__seed0" / "metrics.json").read_text())["info"]
    assert "reused_training" in info  # the second row did not train
    curve = pd.read_csv(out / "runs" / "again__seed0" / "train_curve.csv")
    assert second.scalars("train/loss") == (list(range(1, 6)), pytest.approx(curve["train_loss"].dropna().tolist(), rel=1e-9))
    assert second.scalars("train/lr") == (list(range(1, 6)), pytest.approx(expected_lr(list(range(1, 6)))))
    assert second.scalars("val/nll_bpt")[0] == [0, 2, 4, 5]
    for tag in ("train/loss", "train/lr", "val/nll_bpt"):
        assert second.scalars(tag)[0] == first.scalars(tag)[0] and second.scalars(tag)[1] == pytest.approx(first.scalars(tag)[1])
    assert not any(kind == "image" for kind, _ in first.calls)  # no tokenizer: no images
    assert not (out / "tensorboard").exists()


def test_a_resumed_training_run_first_sends_the_steps_it_resumes_from(tmp_path):
    codes = torch.randint(0, 4, (40, 2, 2), generator=torch.Generator().manual_seed(0)).numpy()
    latent_io.write(tmp_path / "codes", codes, 4)
    data = latent_io.open(tmp_path / "codes")
    prior = example_plugin.TablePrior(example_plugin.TableConfig(init_scale=0.1), 4, (2, 2))
    state, cpu = tmp_path / "run" / "state.pt", torch.device("cpu")
    budget = {"batch_size": 8, "warmup_steps": WARMUP, "eval_every": 2, "eval_grids": 8, "checkpoint_every": 100}
    train_prior(prior, data, BudgetSection(steps=3, **budget), LR, 0, state, cpu, contextlib.nullcontext, validation=data)  # stopped at 3 …
    recorder = Recorder()
    train_prior(
        prior, data, BudgetSection(steps=6, **budget), LR, 0, state, cpu, contextlib.nullcontext, validation=data, tracking=Tracking([recorder])
    )
    curve = pd.read_csv(tmp_path / "run" / CURVE_FILE)  # … resumed to 6
    assert recorder.scalars("train/loss") == (list(range(1, 7)), pytest.approx(curve["train_loss"].dropna().tolist(), rel=1e-12))
    assert recorder.scalars("train/lr") == (list(range(1, 7)), pytest.approx(expected_lr(list(range(1, 7)))))
    assert recorder.scalars("val/nll_bpt") == (
        curve.dropna(subset=["val_nll_bpt"])["step"].tolist(),
        pytest.approx(curve["val_nll_bpt"].dropna().tolist()),
    )
    assert recorder.scalars("val/nll_bpt")[0] == [0, 2, 3, 4, 6]


def test_tracking_off_writes_no_tensorboard_folder(tmp_path, monkeypatch):
    plugins.register_plugin(example_plugin)
    Recorder.made.clear()
    monkeypatch.setattr(Tracking, "_each", lambda *args: pytest.fail("a tracker was called with tracking off"))
    out = run(latents_config(tmp_path, None), tmp_path)
    assert (out / "runs" / "table__seed0" / "metrics.json").is_file()
    assert not (out / "tensorboard").exists() and not Recorder.made


def test_an_unknown_tracker_is_refused_naming_the_key_and_the_known_ones(tmp_path, capsys):
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(latents_config(tmp_path, "tensorbord")))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "tracking: unknown tracker 'tensorbord'" in err and "did you mean 'tensorboard'" in err and "known: tensorboard" in err
    with pytest.raises(ConfigError, match=r"^tracking\[1\]: unknown tracker 'wandb'") as caught:
        parse_benchmark(latents_config(tmp_path, ["tensorboard", "wandb"]), ["nll"])
    assert caught.value.key == "tracking[1]"
    with pytest.raises(ConfigError, match="listed twice"):
        parse_benchmark(latents_config(tmp_path, ["tensorboard", "tensorboard"]), ["nll"])
    assert not (tmp_path / "out").exists()


def test_a_tracker_without_its_package_is_refused_before_anything_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(latents_config(tmp_path, "tensorboard")))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "tracking: tracker TensorBoardTracker needs the package 'tensorboard'" in err and "pip install 'vqbench[tracking]'" in err
    assert not (tmp_path / "out").exists()


def test_a_failing_tracker_is_dropped_and_the_others_go_on(caplog):
    class Broken(Recorder):
        def log_scalars(self, step: int, values: dict[str, float]) -> None:
            raise OSError("disk gone")

    broken, good = Broken(), Recorder()
    tracking = Tracking([broken, good])
    tracking.log_scalars(1, {"train/loss": 1.0})
    tracking.log_scalars(2, {"train/loss": 0.5})
    assert good.scalars("train/loss") == ([1, 2], [1.0, 0.5])
    assert [kind for kind, _ in broken.calls] == ["close"] and tracking.trackers == [good]
    assert "tracker Broken failed in log_scalars (OSError: disk gone)" in caplog.text
    assert not Tracking() and Tracking([good])
