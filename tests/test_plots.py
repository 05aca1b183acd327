"""Training curves (train_curve.csv with validation NLL), the report's figures and their regeneration."""

from __future__ import annotations

import contextlib
import copy
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from vqbench_plugins.autoregressive import ARConfig, AutoregressivePrior

from vqbench import latents as latent_io
from vqbench.cli import main
from vqbench.plots import quality_lines
from vqbench.runner.schema import BudgetSection
from vqbench.runner.train import CURVE_FILE, train_prior, validation_nll

TINY = {"dim": 32, "depth": 1, "heads": 2, "dim_head": 16}


def _data(folder: Path, seed: int) -> latent_io.LatentDataset:
    codes = torch.randint(0, 5, (40, 2, 3), generator=torch.Generator().manual_seed(seed)).numpy()
    latent_io.write(folder, codes, 5)
    return latent_io.open(folder)


def test_training_writes_every_loss_and_the_validation_nll_every_eval_every_steps(tmp_path):
    train, test = _data(tmp_path / "train", 0), _data(tmp_path / "test", 1)
    torch.manual_seed(0)
    prior = AutoregressivePrior(ARConfig(backbone=dict(TINY)), 5, (2, 3))
    budget = BudgetSection(steps=7, batch_size=8, lr=3e-3, checkpoint_every=100, eval_every=3, eval_grids=24)
    device = torch.device("cpu")
    before = validation_nll(prior, test, 24, 8, device, contextlib.nullcontext)
    info = train_prior(prior, train, budget, 3e-3, 0, tmp_path / "run" / "state.pt", device, contextlib.nullcontext, validation=test)
    curve = pd.read_csv(tmp_path / "run" / CURVE_FILE)
    assert curve["step"].tolist() == list(range(8))
    assert curve["train_loss"].notna().tolist() == [False] + [True] * 7
    assert curve["val_nll_bpt"].notna().tolist() == [True, False, False, True, False, False, True, True]  # 0, 3, 6, last
    assert curve["val_nll_bpt"][0] == pytest.approx(before)
    assert curve["val_nll_bpt"][7] == pytest.approx(validation_nll(prior, test, 24, 8, device, contextlib.nullcontext))
    assert curve["val_nll_bpt"][7] < curve["val_nll_bpt"][0]
    assert info["final_loss"] == pytest.approx(curve["train_loss"].iloc[-1:].mean())


def test_validation_nll_is_the_mean_over_the_first_grids():
    torch.manual_seed(0)
    prior = AutoregressivePrior(ARConfig(backbone=dict(TINY)), 5, (2, 3)).eval()
    codes = torch.randint(0, 5, (10, 2, 3))

    class Data:
        labels = None

        def __len__(self) -> int:
            return len(codes)

        def tensor(self, index):
            return codes[index]

    expected = prior.nll(codes[:7]).mean().item()
    assert validation_nll(prior, Data(), 7, 3, torch.device("cpu"), contextlib.nullcontext) == pytest.approx(expected)  # type: ignore[arg-type]


def _cell(label: str, training: str | None, nfe: float, fid: float) -> dict:
    return {"label": label, "info": {"training": training} if training else {}, "values": {"nfe": nfe, "fid": fid}}


def test_quality_lines_join_cells_that_share_one_training_run():
    cells = [
        _cell("absorbing_steps=50", "absorbing-a", 50, 3.0),
        _cell("absorbing_steps=256", "absorbing-a", 256, 2.0),
        _cell("absorbing_steps=10", "absorbing-a", 10, 5.0),
        _cell("sundae", "sundae-b", 20, 4.0),  # one step count: no line
        _cell("independent", None, 1, 9.0),  # nothing trained
    ]
    metric, lines = quality_lines(cells)
    assert metric == "fid"
    assert list(lines) == ["absorbing-a"]
    assert [p[:2] for p in lines["absorbing-a"]] == [(10, 5.0), (50, 3.0), (256, 2.0)]


def test_a_run_embeds_every_plot_and_report_regenerates_them(smoke_config, tmp_path):
    config = copy.deepcopy(smoke_config)
    backbone = {"name": "transformer", **TINY}
    config["priors"] = [{"name": "absorbing", "params": {"total_steps": 8, "backbone": backbone}, "sweep": {"steps": [2, 8]}}]
    config["budget"] |= {"eval_every": 4, "eval_grids": 16}
    config["metrics"] = {**config["metrics"], "enabled": ["fid", "sample_time", "nll"], "sample_time": {"repeats": 1}}
    config["metrics"].pop("inpainting")
    config["metrics"].pop("kid")
    config["metrics"].pop("prdc")
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path)]) == 0
    out = Path(config["out"])
    for run in (out / "runs").iterdir():  # the second variant reuses the first one's training, curve included
        curve = pd.read_csv(run / CURVE_FILE)
        assert len(curve) == 9 and curve["val_nll_bpt"].notna().sum() == 3
    report = (out / "report.md").read_text()
    stems = ("training_curves", "quality_vs_steps", "speed_vs_quality", "samples_by_row")
    for stem in stems:
        assert f"](plots/{stem}.png)" in report and f"[PDF](plots/{stem}.pdf)" in report
        assert (out / "plots" / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / "plots" / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
    shutil.rmtree(out / "plots")
    assert main(["report", str(out)]) == 0
    assert sorted(p.name for p in (out / "plots").iterdir()) == sorted(f"{stem}.{kind}" for stem in stems for kind in ("pdf", "png"))
