"""ImageBART ``shared_weights``: one encoder–decoder for every scale, told the scale, against the paper's independent
per-scale networks (the default, unchanged)."""

from __future__ import annotations

import torch
from vqbench_plugins.imagebart.network import EncoderDecoder, EncoderDecoderConfig

import vqbench
from vqbench.config import parse

TINY_NET = {"dim": 32, "encoder_depth": 1, "decoder_depth": 1, "heads": 2, "dim_head": 16}
TINY_TOP = {"name": "transformer", "dim": 32, "depth": 2, "heads": 2, "dim_head": 16}


def imagebart(**params):
    cls = vqbench.registries().priors.get("imagebart")
    torch.manual_seed(0)
    return cls(parse(cls.Config, {"scale_net": TINY_NET, "top_backbone": TINY_TOP, **params}, "params"), 8, (4, 4)).eval()


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_one_shared_network_against_one_per_scale():
    """n = 3, residual logits: independent = 2 encoder–decoders (one λ each) + the top GPT; shared = one
    encoder–decoder + a d-dim embedding and a λ per scale, no top GPT."""
    one = count(EncoderDecoder(parse(EncoderDecoderConfig, TINY_NET), 8, 16, residual_logits=True))
    independent, shared = imagebart(scales=3, residual_logits=True), imagebart(scales=3, residual_logits=True, shared_weights=True)
    assert count(independent) == 2 * one + count(independent.net)
    assert count(shared) == one - 1 + 3 * TINY_NET["dim"] + 3
    assert len(shared.scale_nets) == 1 and "net" not in dict(shared.named_children())
    assert "top_backbone" not in shared.describe() and "one network shared across the scales" in shared.training_note


def test_the_default_is_independent_networks_with_unchanged_weights():
    prior = imagebart(scales=3)
    assert prior.config.shared_weights is False and len(prior.scale_nets) == 2
    assert not any("scale_embed" in key for key in prior.state_dict()) and any(key.startswith("net.") for key in prior.state_dict())


def test_the_shared_network_receives_the_scale():
    """Same x_s and x_{s−1}, scales 1 and 2: different logits (without residual logits, whose transition term alone
    would differ by scale); the loss trains every scale's embedding."""
    prior = imagebart(scales=3, shared_weights=True, residual_logits=False)
    g = torch.Generator().manual_seed(0)
    x_s, x_prev = torch.randint(8, (2, 16), generator=g), torch.randint(8, (2, 16), generator=g)
    a, b = prior.logits(1, x_s, x_prev), prior.logits(2, x_s, x_prev)
    assert (a - b).abs().max() > 1e-3
    torch.testing.assert_close(prior.logits(1, x_s, x_prev), a)
    prior.train()
    prior.loss(torch.randint(8, (6, 4, 4), generator=g)).backward()
    grad = prior.scale_nets[0].scale_embed.weight.grad
    assert grad is not None and bool((grad.abs().sum(dim=1) > 0).all())  # all three scales


def test_shared_sampling_encodes_every_scale_including_the_top():
    prior = imagebart(scales=3, shared_weights=True)
    samples = prior.sample(2, (4, 4), torch.Generator().manual_seed(0))
    assert samples.shape == (2, 4, 4) and int(samples.max()) < 8
    assert prior.last_nfe == 3 * 16 + 3
    nll = prior.nll(torch.randint(8, (2, 4, 4), generator=torch.Generator().manual_seed(1)), torch.Generator().manual_seed(2))
    assert torch.isfinite(nll).all() and (nll > 0).all()
