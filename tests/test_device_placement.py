"""Where priors put their tensors when the generator or the masks live on another device than the network.

The meta device stands in for a GPU here: mixing its tensors with CPU ones fails exactly as mixing CUDA and CPU ones
does (CPU scalars excepted), and its networks run without data. Samplers with data-dependent control flow (absorbing,
MaskGIT, SUNDAE's early stop) cannot run on it and are covered by the CUDA tests."""

from __future__ import annotations

import pytest
import torch

import vqbench
from vqbench.config import parse
from vqbench.testing import IMAGEBART_SCALE_NET, SHAPE, TRANSFORMER, V

FLAT = {**TRANSFORMER, "class_conditional": False}
HOURGLASS = {"name": "hourglass", "dim": 32, "depth": [1, 1, 1], "heads": 2, "dim_head": 16}
CASES = {
    "sundae": ({"backbone": HOURGLASS, "steps": 3, "early_stop": False}, {}),
    "autoregressive": ({"backbone": FLAT}, {}),
    "imagebart": ({"scales": 2, "scale_net": IMAGEBART_SCALE_NET, "top_backbone": FLAT, "residual_logits": True}, {"chains": 2}),
}


def on_meta(name: str):
    """A tiny prior built on the CPU and moved to the meta device (as the runner builds, then moves to the GPU)."""
    cls = vqbench.registries().priors.get(name)
    torch.manual_seed(0)
    prior = cls(parse(cls.Config, CASES[name][0], "params"), V, SHAPE).eval()
    return prior.to("meta")


@pytest.mark.parametrize("name", sorted(CASES))
def test_samples_land_on_the_network_device_whatever_the_generator_device(name):
    prior = on_meta(name)
    out = prior.sample(2, SHAPE, torch.Generator().manual_seed(0), **CASES[name][1])
    assert out.device.type == "meta" and out.shape == (2, *SHAPE) and out.dtype == torch.long


@pytest.mark.parametrize("name", sorted(CASES))
def test_inpainting_takes_the_keep_mask_from_the_host(name):
    prior = on_meta(name)
    codes = torch.zeros(2, *SHAPE, dtype=torch.long, device="meta")
    keep = torch.zeros(2, *SHAPE, dtype=torch.bool)
    keep[:, 0] = True
    out = prior.inpaint(codes, keep, torch.Generator().manual_seed(0), **CASES[name][1])
    assert out.device.type == "meta" and out.shape == codes.shape
