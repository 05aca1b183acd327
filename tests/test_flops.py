"""FLOPs per row: the training loss's forward pass and one sample, counted while they run, equal the hand count of
a transformer's matrix products and attention."""

from __future__ import annotations

import torch

import vqbench
from vqbench.config import parse
from vqbench.flops import prior_flops

D, DEPTH, HEADS, DH, K, SIDE = 32, 2, 2, 16, 16, 4
BACKBONE = {"name": "transformer", "dim": D, "depth": DEPTH, "heads": HEADS, "dim_head": DH}


def build(name: str, **params):
    cls = vqbench.registries().priors.get(name)
    return cls(parse(cls.Config, {"backbone": BACKBONE, **params}, "params"), K, (SIDE, SIDE)).eval()


def linear_flops(tokens: int) -> int:
    """qkv, output projection, 4× MLP per layer, then the logits — 2 FLOPs per multiply-add."""
    inner = HEADS * DH
    per_layer = 2 * D * 3 * inner + 2 * inner * D + 2 * 2 * D * 4 * D
    return tokens * (DEPTH * per_layer + 2 * D * K)


def attention_flops(queries: int, keys: int) -> int:
    return DEPTH * 2 * 2 * HEADS * queries * keys * DH  # Q·Kᵀ and A·V


def test_autoregressive_flops_match_the_hand_count():
    n = SIDE * SIDE
    codes = torch.randint(0, K, (1, SIDE, SIDE))
    flops = prior_flops(build("autoregressive"), codes, None, torch.Generator().manual_seed(0))
    assert flops["train_gflops"] * 1e9 == linear_flops(n) + attention_flops(n, n)  # one teacher-forced pass
    cached = sum(linear_flops(1) + attention_flops(1, t + 1) for t in range(n))  # KV cache: one position per step
    assert flops["sample_gflops"] * 1e9 == cached


def test_sampler_options_reach_the_count():
    """Absorbing sampling: one bidirectional pass per network evaluation, so `steps` scales the count."""
    n = SIDE * SIDE
    prior = build("absorbing", total_steps=8)
    codes = torch.randint(0, K, (1, SIDE, SIDE))
    full = linear_flops(n) + attention_flops(n, n)
    # the last block's attention queries, output projection and MLP, and the logits, are those of the positions
    # revealed that step: over the whole run every position once
    per_row = 2 * HEADS * DH * D + 2 * 2 * D * 4 * D + 2 * D * K + attention_flops(1, n) // DEPTH
    for steps in (2, 4):
        flops = prior_flops(prior, codes, None, torch.Generator().manual_seed(0), {"steps": steps})
        assert flops["sample_gflops"] * 1e9 == steps * (full - n * per_row) + n * per_row
