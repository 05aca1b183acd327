"""Data parallelism: rank shards of the seeded batch stream, DDP training equal to one process (and resumable with
another number of ranks), and a two-process torchrun run of a benchmark equal to the single-process run."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from vqbench_plugins.autoregressive import ARConfig, AutoregressivePrior

from vqbench import distributed
from vqbench.cli import main
from vqbench.io import load_torch
from vqbench.latents import LatentDataset
from vqbench.latents import write as write_latents
from vqbench.runner.schema import BudgetSection
from vqbench.runner.train import step_batch, train_prior
from vqbench.training import StepLoop

TINY_BACKBONE = {"dim": 32, "depth": 1, "heads": 2, "dim_head": 16}


@pytest.mark.parametrize("size", [1, 2, 4])
def test_rank_shards_partition_the_global_batch_of_every_step(size):
    for step in range(3):
        whole = step_batch(7, step, 100, 8, distributed.World())
        shards = [step_batch(7, step, 100, 8, distributed.World(rank, size)) for rank in range(size)]
        assert all(len(s) == 8 // size for s in shards)
        assert torch.equal(torch.cat(shards).sort().values, whole)


def test_ranks_draw_different_noise_after_the_shared_batch():
    step_batch(3, 5, 100, 8, distributed.World(0, 2))
    noise0 = torch.rand(4)
    step_batch(3, 5, 100, 8, distributed.World(1, 2))
    noise1 = torch.rand(4)
    step_batch(3, 5, 100, 8, distributed.World())
    assert torch.equal(torch.rand(4), noise0) and not torch.equal(noise0, noise1)  # rank 0 continues the single stream


def test_the_wall_clock_cap_follows_the_agreed_decision():
    never = StepLoop(5, 100, lambda: None, max_minutes=0.0, agree=lambda local: False)
    assert list(never) == [0, 1, 2, 3, 4]
    always = StepLoop(5, 100, lambda: None, max_minutes=1e6, agree=lambda local: True)
    assert list(always) == []


def _latents(folder: Path) -> LatentDataset:
    from vqbench import latents as latent_io

    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 6, (64, 3, 3), generator=g).numpy()
    write_latents(folder, codes, 6)
    return latent_io.open(folder)


def _prior() -> AutoregressivePrior:
    torch.manual_seed(0)
    return AutoregressivePrior(ARConfig(backbone=dict(TINY_BACKBONE)), 6, (3, 3))


def _train(folder: Path, steps: int, checkpoint: Path) -> dict[str, torch.Tensor]:
    prior = _prior()
    budget = BudgetSection(steps=steps, batch_size=8, lr=3e-3, checkpoint_every=2)
    train_prior(prior, _latents(folder), budget, 3e-3, 0, checkpoint, torch.device("cpu"), contextlib.nullcontext)
    return {k: v.detach().clone() for k, v in prior.state_dict().items()}


def _worker(rank: int, size: int, port: int, folder: str, steps: int, checkpoint: str, result: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    distributed.init_from_env("cpu")
    try:
        state = _train(Path(folder) / f"data-{rank}", steps, Path(checkpoint))
        if rank == 0:
            torch.save(state, result)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_rank_training_equals_one_process_and_resumes_with_another_rank_count(tmp_path):
    """Autoregressive loss has no noise, so 2 ranks × 4 items with averaged gradients train the same weights as
    1 process × 8 items; the 2-rank job resumes a 1-process checkpoint and lands on the uninterrupted weights."""
    single = _train(tmp_path / "single", 6, tmp_path / "single.pt")
    mp.spawn(_worker, (2, _free_port(), str(tmp_path), 6, str(tmp_path / "ddp.pt"), str(tmp_path / "ddp-state.pt")), nprocs=2)
    ddp = torch.load(tmp_path / "ddp-state.pt", weights_only=True)
    for name, value in single.items():
        torch.testing.assert_close(ddp[name], value, rtol=1e-4, atol=1e-5, msg=name)
    _train(tmp_path / "partial", 3, tmp_path / "resume.pt")  # one process stops after 3 of 6 steps …
    mp.spawn(_worker, (2, _free_port(), str(tmp_path), 6, str(tmp_path / "resume.pt"), str(tmp_path / "resumed.pt")), nprocs=2)
    resumed = torch.load(tmp_path / "resumed.pt", weights_only=True)  # … two ranks finish it
    for name, value in single.items():
        torch.testing.assert_close(resumed[name], value, rtol=1e-4, atol=1e-5, msg=name)
    assert load_torch(tmp_path / "resume.pt")["step"] == 6


def _bench(config: dict, tokenizer: Path, tag: str, tmp_path: Path) -> Path:
    config = copy.deepcopy(config)
    config["tokenizer"] = {"name": "vqgan", "checkpoint": str(tokenizer)}
    config["out"], config["cache"] = str(tmp_path / tag / "out"), str(tmp_path / tag / "cache")
    path = tmp_path / f"{tag}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_two_process_torchrun_run_matches_the_single_process_run(smoke_config, tmp_path):
    config = copy.deepcopy(smoke_config)
    config["priors"] = [{"name": "independent"}, {"name": "autoregressive", "params": {"backbone": TINY_BACKBONE}}]
    config["sampling"]["num_samples"] = 30  # 3 batches of 12: uneven over 2 ranks
    first = tmp_path / "tok.yaml"
    first.write_text(yaml.safe_dump(config | {"priors": [{"name": "independent"}], "metrics": {"enabled": ["nll"]}}))
    assert main(["run", str(first)]) == 0
    tokenizer = next(Path(config["cache"]).glob("tokenizers/*/tokenizer.pt"))

    assert main(["run", str(_bench(config, tokenizer, "one", tmp_path))]) == 0
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "vqbench"]
    done = subprocess.run([*command, "run", str(_bench(config, tokenizer, "two", tmp_path))], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    one, two = tmp_path / "one", tmp_path / "two"
    for split in ("train", "test"):  # encoding split over ranks
        a, b = (np.load(next((d / "cache" / "latents").glob(f"*-{split}-*")) / "codes.npy") for d in (one, two))
        assert np.array_equal(a, b)
    real_a, real_b = (torch.load(next((d / "cache" / "features").glob("*.pt")), weights_only=True)["features"] for d in (one, two))
    torch.testing.assert_close(real_a, real_b)  # reference features split over ranks
    assert json.loads((two / "out" / "results.json").read_text())["ranks"] == 2
    for cell in ("independent__seed0", "autoregressive__seed0"):
        run_a, run_b = (d / "out" / "runs" / cell for d in (one, two))
        assert np.array_equal(np.load(run_a / "samples.npy"), np.load(run_b / "samples.npy")), cell
        weights_a, weights_b = (load_torch(r / "prior.pt")["state_dict"] for r in (run_a, run_b))
        for name, value in weights_a.items():  # DDP averages the same gradients in another order
            torch.testing.assert_close(weights_b[name], value, rtol=1e-4, atol=1e-5, msg=name)
        values_a, values_b = (json.loads((r / "metrics.json").read_text())["values"] for r in (run_a, run_b))
        for name, value in values_a.items():
            if name.startswith(("sample_s", "decode_s", "total_s", "peak_mem")) or value != value:
                continue  # timings and memory are measurements, NaN columns compare unequal
            # inpainting samples many tokens from the trained weights, where a 1e-7 difference can flip one draw
            rel = 0.05 if name.startswith("inpaint_") and cell.startswith("autoregressive") else 1e-4
            assert values_b[name] == pytest.approx(value, rel=rel, abs=1e-6), (cell, name)


def _fit_tokenizer(checkpoint: Path, steps: int) -> dict[str, torch.Tensor]:
    from vqbench_plugins.toyfaces import ToyFaces, ToyFacesConfig

    from vqbench.config import parse
    from vqbench.plugins import registries

    cls = registries().tokenizers.get("vqgan")
    cfg = parse(
        cls.TrainConfig, {"steps": steps, "batch_size": 4, "disc_start": 100, "checkpoint_every": 2, "lr": 3e-3, "dead_code_restart_every": 0}
    )
    torch.manual_seed(0)
    model = cls.from_preset("tiny", {"n_embed": 16, "ddconfig": {"resolution": 16, "ch": 8}})
    os.environ["VQBENCH_DATA_WORKERS"] = "0"
    cls.fit(model, ToyFaces(ToyFacesConfig(count=32), 16), np.arange(32), cfg, checkpoint=checkpoint, seed=0)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _tokenizer_worker(rank: int, size: int, port: int, checkpoint: str, result: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    distributed.init_from_env("cpu")
    try:
        state = _fit_tokenizer(Path(checkpoint), 2)
        if rank == 0:
            torch.save(state, result)
    finally:
        dist.destroy_process_group()


def test_two_rank_tokenizer_training_equals_one_process_and_resumes_from_it(tmp_path, monkeypatch):
    """Before the discriminator starts, tokenizer training has no noise: 2 ranks × 2 images (gradients averaged,
    code usage and dead-code restarts over the global batch) train the 1-process weights; a 2-rank job finishes a
    1-process checkpoint."""
    monkeypatch.setenv("VQBENCH_DATA_WORKERS", "0")
    single = _fit_tokenizer(tmp_path / "single.pt", 2)
    mp.spawn(_tokenizer_worker, (2, _free_port(), str(tmp_path / "ddp.pt"), str(tmp_path / "ddp-state.pt")), nprocs=2)
    expected = _reconstruct(single)
    one_step = (_reconstruct(_fit_tokenizer(tmp_path / "short.pt", 1)) - expected).abs().max()  # what one step changes
    # compared through the encoder's output (before the codebook's argmin, which a rounding difference can flip), and
    # relative to one step's change: Adam's first steps are ±lr for every parameter, so parameters whose gradient is
    # zero up to rounding (biases in front of a normalisation) move by ±lr in either run
    ddp = _reconstruct(torch.load(tmp_path / "ddp-state.pt", weights_only=True))
    assert (ddp - expected).abs().max() < 0.1 * one_step
    _fit_tokenizer(tmp_path / "resume.pt", 1)
    mp.spawn(_tokenizer_worker, (2, _free_port(), str(tmp_path / "resume.pt"), str(tmp_path / "resumed.pt")), nprocs=2)
    resumed = _reconstruct(torch.load(tmp_path / "resumed.pt", weights_only=True))
    assert (resumed - expected).abs().max() < 0.1 * one_step


def _reconstruct(state: dict[str, torch.Tensor]) -> torch.Tensor:
    from vqbench_plugins.toyfaces import ToyFaces, ToyFacesConfig

    from vqbench.plugins import registries

    model = registries().tokenizers.get("vqgan").from_preset("tiny", {"n_embed": 16, "ddconfig": {"resolution": 16, "ch": 8}})
    model.load_state_dict(state)
    with torch.no_grad():
        return model.eval().pre_quant(ToyFaces(ToyFacesConfig(count=32), 16).batch(range(8))[0])
