"""The accelerated path: opt-in torch.compile of the priors' networks, pinned-memory copies, CUDA-event timing.
Tests marked ``cuda`` run only where a GPU is present."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml
from vqbench_plugins.imagebart.prior import ImageBARTPrior
from vqbench_plugins.independent import IndependentConfig
from vqbench_plugins.sundae import SundaeConfig, SundaePrior

import vqbench
from vqbench.cli import main
from vqbench.metrics.timing import Marks, Stopwatch
from vqbench.precision import compile_networks, inference_weights, make_autocast
from vqbench.runner import cell as cell_module
from vqbench.runner.train import to_device
from vqbench.speed import measure
from vqbench.testing import CLASSES, SHAPE, TINY_PRIORS, V, build_prior

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_compile_networks_compiles_every_network_in_place_and_keeps_parameter_names():
    prior = SundaePrior(SundaeConfig(backbone={"dim": 32, "depth": [1, 1, 1], "heads": 2, "dim_head": 16}), 8, (4, 4))
    names = list(prior.state_dict())
    assert compile_networks(prior) == ["net"]
    assert getattr(prior.net, "_compiled_call_impl", None) is not None
    assert list(prior.state_dict()) == names  # checkpoints stay loadable without the compiled wrapper


def test_compile_networks_descends_into_module_lists():
    prior = ImageBARTPrior(ImageBARTPrior.Config(scales=2), 8, (4, 4))
    compiled = compile_networks(prior)
    assert compiled and all(getattr(prior.get_submodule(name), "_compiled_call_impl", None) is not None for name in compiled)
    lists = [name for name, child in prior.named_children() if isinstance(child, torch.nn.ModuleList)]
    assert any(name.split(".")[0] in lists for name in compiled)


def test_compile_true_reaches_every_cell_and_its_protocol(smoke_config, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(cell_module, "compile_networks", lambda prior: seen.append(type(prior).__name__) or [])
    config = copy.deepcopy(smoke_config) | {"compile": True}
    config["metrics"] = {"enabled": ["nll"]}
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path)]) == 0
    assert seen == ["IndependentPrior"]
    metrics = yaml.safe_load((Path(config["out"]) / "runs" / "independent__seed0" / "metrics.json").read_text())
    assert metrics["protocol"]["compile"] is True


def test_marks_time_with_the_given_clock_off_the_gpu():
    ticks = iter([1.0, 1.5, 3.5])
    marks = Marks(torch.device("cpu"), lambda: next(ticks))
    for _ in range(3):
        marks.mark()
    assert marks.intervals() == [0.5, 2.0]


def test_host_copies_stay_plain_off_the_gpu():
    x = torch.arange(4)
    assert torch.equal(to_device(x, torch.device("cpu")), x)


@cuda
def test_cuda_events_time_queued_work():
    device = torch.device("cuda")
    a = torch.randn(2048, 2048, device=device)
    watch = Stopwatch(device)
    with watch:
        for _ in range(10):
            a = a @ a.T / 2048
    assert watch.seconds > 0


@cuda
def test_pinned_non_blocking_copies_arrive_intact():
    x = torch.arange(1000)
    assert torch.equal(to_device(x, torch.device("cuda")).cpu(), x)


@cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("compiled", [False, True])
def test_speed_measures_sundae_on_the_gpu(precision, compiled):
    params = {"backbone": {"dim": 64, "depth": [1, 2, 1], "heads": 4, "dim_head": 16}}
    row = measure("sundae", params, (8, 8), 64, 4, 8, {"steps": 4}, precision, torch.device("cuda"), min_seconds=0.1, compile=compiled)
    assert row["sample_s_per_img"] > 0 and row["compiled"] is compiled


@cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("case", [c for cases in TINY_PRIORS.values() for c in cases], ids=lambda c: c.id)
def test_every_prior_trains_samples_inpaints_and_scores_on_the_gpu(case, precision):
    device = torch.device("cuda")
    prior = build_prior(case, num_classes=CLASSES if case.conditional else 0).to(device)
    autocast = make_autocast(device, precision)
    codes = torch.randint(V, (4, *SHAPE), device=device)
    labels = torch.arange(4, device=device) % CLASSES if case.conditional else None
    prior.train()
    with autocast():
        loss = prior.loss(codes, labels)
    if type(prior).trainable:
        loss.backward()
    prior.eval()
    g = torch.Generator(device=device).manual_seed(0)
    with torch.inference_mode(), inference_weights(prior, precision), autocast():
        samples = prior.sample(4, SHAPE, g, labels=labels)
        assert samples.device.type == "cuda" and samples.shape == (4, *SHAPE) and samples.min() >= 0 and samples.max() < V
        if prior.supports_inpainting:
            keep = torch.rand(codes.shape, device=device) < 0.5
            assert torch.equal(prior.inpaint(codes, keep, g, labels=labels)[keep], codes[keep])
        if prior.supports_likelihood:
            assert torch.isfinite(prior.nll(codes, g, labels=labels)).all()


@cuda
def test_gpu_priors_take_a_host_generator_and_a_host_keep_mask():
    device = torch.device("cuda")
    sundae = SundaePrior(SundaeConfig(backbone={"dim": 32, "depth": [1, 1, 1], "heads": 2, "dim_head": 16}, steps=3), V, SHAPE).to(device)
    assert sundae.sample(2, SHAPE, torch.Generator().manual_seed(0)).device.type == "cuda"
    imagebart = ImageBARTPrior(ImageBARTPrior.Config(scales=2), V, SHAPE).to(device).eval()
    codes = torch.randint(V, (2, *SHAPE), device=device)
    keep = torch.rand(codes.shape) < 0.5  # on the host
    assert torch.equal(imagebart.inpaint(codes, keep, torch.Generator(device=device).manual_seed(0))[keep.to(device)], codes[keep.to(device)])


@cuda
def test_bf16_autocast_quantizes_like_encode_on_the_gpu():
    from .test_vqgan import near_ties

    quantizer, z = near_ties()
    quantizer, z = quantizer.cuda(), z.cuda()
    reference = quantizer.codes(z)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert torch.equal(quantizer.codes(z), reference)


@cuda
def test_independent_fit_on_the_gpu_needs_memory_of_the_order_of_its_table():
    device = torch.device("cuda")
    prior = vqbench.registries().priors.get("independent")(IndependentConfig(), 1024, (16, 16)).to(device)
    codes = torch.randint(1024, (2048, 16, 16), device=device)  # a one-hot of these would take 4.3 GB
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    prior.fit(codes)
    assert (torch.cuda.max_memory_allocated(device) - base) < 64 * 2**20
    assert prior.counts.sum() == codes.numel()
