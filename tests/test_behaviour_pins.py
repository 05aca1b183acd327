"""Behaviour pins: the hourglass's full-resolution path and per-level rotary positions, SUNDAE's sampled unroll,
and which tokens MaskGIT's confidence ordering unmasks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import vqbench
from vqbench.backbones import build_backbone
from vqbench.config import parse
from vqbench.nn import rotary_angles_1d, rotary_angles_2d, rotary_angles_axial
from vqbench.nn.attention import SelfAttention

# ---- hourglass ---------------------------------------------------------------------------------------------------

HOURGLASS = {
    "name": "hourglass",
    "dim": 16,
    "heads": 2,
    "dim_head": 8,
    "shorten": 4,
    "updown": "linear",
    "attn_resampling": False,
    "rotary": "2d",
}
GRID = (4, 8)  # 32 tokens → 8 → 2 with k = 4, for both 1d runs and 2d patches


def hourglass(**overrides) -> nn.Module:
    torch.manual_seed(0)
    return build_backbone({**HOURGLASS, **overrides}, "backbone", "hourglass", 10, 10, GRID).eval()


def codes_for(seed: int, batch: int = 2) -> torch.Tensor:
    return torch.randint(10, (batch, GRID[0] * GRID[1]), generator=torch.Generator().manual_seed(seed))


def record_attention(net: nn.Module, codes: torch.Tensor) -> list[tuple[int, torch.Tensor | None]]:
    """(tokens attended over, rotary angles) of every self-attention call of one forward, in call order."""
    calls: list[tuple[int, torch.Tensor | None]] = []

    def hook(module, args, kwargs):
        angles = args[1] if len(args) > 1 else kwargs.get("angles")
        calls.append((args[0].shape[-2], None if angles is None else angles.clone()))

    handles = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in net.modules() if isinstance(m, SelfAttention)]
    try:
        with torch.no_grad():
            net(codes)
    finally:
        for handle in handles:
            handle.remove()
    return calls


@pytest.mark.parametrize("resample", ["1d", "2d"])
def test_with_a_silent_valley_the_output_is_post_blocks_after_pre_blocks(resample: str) -> None:
    """The upsampled valley is added to the pre-valley output, and the post-valley blocks run on that sum: with the
    upsampling zeroed, the network is exactly its full-resolution blocks, pre then post."""
    net = hourglass(resample=resample, depth=[2, 1, 2])
    codes = codes_for(0)
    with torch.no_grad():
        full = net(codes)
        net.root.up.proj.weight.zero_()
        net.root.up.proj.bias.zero_()
        angles = net.angles(net.layout)
        h = net.embed(codes)
        for block in [*net.root.pre, *net.root.post]:
            h = block(h, angles)
        expected = net.to_logits(net.norm(h))
        torch.testing.assert_close(net(codes), expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(full, expected, atol=1e-3)  # while upsampled, the valley's output reaches the logits


@pytest.mark.parametrize("resample", ["1d", "2d"])
def test_blocks_run_pre_then_valley_then_post_each_at_its_own_resolution(resample: str) -> None:
    net = hourglass(resample=resample, depth=[1, [1, 1, 1], 1])
    lengths = [n for n, _ in record_attention(net, codes_for(1))]
    assert lengths == [32, 8, 2, 8, 32]


def axial(rows: list[float], cols: list[float], rot_dim: int) -> torch.Tensor:
    return rotary_angles_axial(torch.tensor(rows), torch.tensor(cols), rot_dim)


def expected_angles(resample: str, rotary: str, rot_dim: int = 8) -> dict[int, torch.Tensor]:
    """Rotary angles each level must attend with, by its token count (4×8 grid, k = 4)."""
    if rotary == "1d":  # every level numbers its own tokens 0..n-1
        return {n: rotary_angles_1d(torch.arange(n), rot_dim) for n in (32, 8, 2)}
    if resample == "2d":  # the shortened grids 2×4 and 1×2
        return {32: rotary_angles_2d(4, 8, rot_dim), 8: rotary_angles_2d(2, 4, rot_dim), 2: rotary_angles_2d(1, 2, rot_dim)}
    # 1d runs under 2d rotary: mean (row, column) of the pooled full-resolution tokens, divided by √(tokens pooled)
    return {
        32: rotary_angles_2d(4, 8, rot_dim),
        8: axial([0, 0, 0.5, 0.5, 1, 1, 1.5, 1.5], [0.75, 2.75] * 4, rot_dim),  # runs of 4 in a row of 8
        2: axial([0.5 / 4, 2.5 / 4], [3.5 / 4, 3.5 / 4], rot_dim),  # two rows each
    }


@pytest.mark.parametrize("resample, rotary", [("1d", "1d"), ("1d", "2d"), ("2d", "1d"), ("2d", "2d")])
def test_each_level_attends_with_the_positions_of_its_own_resolution(resample: str, rotary: str) -> None:
    net = hourglass(resample=resample, rotary=rotary, depth=[1, [1, 1, 1], 1])
    calls = record_attention(net, codes_for(2))
    expected = expected_angles(resample, rotary)
    assert sorted({n for n, _ in calls}) == [2, 8, 32]
    for n, angles in calls:
        assert angles is not None
        torch.testing.assert_close(angles, expected[n], msg=lambda m, n=n: f"level with {n} tokens: {m}")


# ---- SUNDAE ------------------------------------------------------------------------------------------------------

PROBS = torch.tensor([0.4, 0.3, 0.2, 0.1])  # non-degenerate: the argmax holds only 40 % of the mass


class RolledDistributionNet(nn.Module):
    """Position j predicts PROBS rolled by j (code (r + j) mod V has probability PROBS[r]), whatever the input;
    records every input."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[torch.Tensor] = []

    def forward(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        self.inputs.append(codes.clone())
        v, n = len(PROBS), codes.shape[1]
        rank = (torch.arange(v)[None, :] - torch.arange(n)[:, None]) % v  # N×V: rank r of code c at position j
        return PROBS.log()[rank].expand(codes.shape[0], n, v)


def test_sundae_unroll_feeds_samples_of_the_predicted_distribution_not_its_argmax() -> None:
    cls = vqbench.registries().priors.get("sundae")
    backbone = {"name": "hourglass", "dim": 8, "depth": [1, 1, 1], "heads": 1, "dim_head": 8}
    prior = cls(parse(cls.Config, {"unroll_steps": 3, "backbone": backbone}, "params"), len(PROBS), (8, 8))
    prior.net = net = RolledDistributionNet()
    codes = torch.randint(4, (64, 8, 8), generator=torch.Generator().manual_seed(0))
    with torch.random.fork_rng():
        torch.manual_seed(3)
        prior.loss(codes)
    assert len(net.inputs) == 3
    positions = torch.arange(64)
    for unrolled in net.inputs[1:]:
        assert unrolled.dtype == torch.long
        ranks = (unrolled - positions) % len(PROBS)  # 0 wherever the argmax was taken
        frequencies = torch.bincount(ranks.flatten(), minlength=len(PROBS)).float() / ranks.numel()
        torch.testing.assert_close(frequencies, PROBS, rtol=0, atol=0.03)


# ---- absorbing diffusion: MaskGIT ----------------------------------------------------------------------------------


class FixedLogitsNet(nn.Module):
    """Returns the same logits B×N×V for every call; records every input."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits, self.inputs = logits, []

    def forward(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        self.inputs.append(codes.clone())
        return self.logits[: codes.shape[0]]


def maskgit_run(logits: torch.Tensor, shape: tuple[int, int], steps: int, choice_temperature: float, seed: int = 0):
    """(inputs of every step, final codes, mask token) of MaskGIT sampling from a fully masked grid."""
    cls = vqbench.registries().priors.get("absorbing")
    backbone = {"name": "transformer", "dim": 16, "depth": 1, "heads": 2, "dim_head": 8}
    prior = cls(parse(cls.Config, {"backbone": backbone}, "params"), logits.shape[-1], shape)
    prior.net = net = FixedLogitsNet(logits)
    b = logits.shape[0]
    opts = {"sampler": "maskgit", "maskgit_steps": steps, "choice_temperature": choice_temperature}
    keep = torch.zeros(b, *shape, dtype=torch.bool)
    out = prior.inpaint(torch.zeros(b, *shape, dtype=torch.long), keep, torch.Generator().manual_seed(seed), **opts)
    return net.inputs, out.flatten(1), prior.mask_token


def revealed_per_step(inputs: list[torch.Tensor], out: torch.Tensor, mask: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(revealed at this step, still masked after it) per step, as B×N boolean masks."""
    states = [x == mask for x in inputs] + [out == mask]
    return [(before & ~after, after) for before, after in zip(states, states[1:])]


def uniform_supports(batch: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits B×N×N uniform over a shuffled support of 1..N codes per position (confidence −log support, whatever
    code is drawn), and the supports B×N."""
    g = torch.Generator().manual_seed(seed)
    supports = torch.stack([torch.randperm(n, generator=g) + 1 for _ in range(batch)])
    inside = torch.arange(n)[None, None, :] < supports[..., None]
    return torch.where(inside, 0.0, -1e9), supports


def test_maskgit_without_choice_noise_reveals_exactly_the_most_confident_masked_tokens() -> None:
    logits, supports = uniform_supports(batch=3, n=16, seed=0)
    inputs, out, mask = maskgit_run(logits, (4, 4), steps=5, choice_temperature=0.0)
    steps = revealed_per_step(inputs, out, mask)
    assert len(steps) == 5 and (out != mask).all()
    for revealed, still in steps:
        for row in range(3):
            assert revealed[row].any()
            if still[row].any():  # every revealed token is more confident (smaller support) than every one left
                assert supports[row][revealed[row]].max() < supports[row][still[row]].min()


def test_maskgit_choice_noise_perturbs_the_confidence_order() -> None:
    logits, supports = uniform_supports(batch=3, n=16, seed=0)
    inputs, out, mask = maskgit_run(logits, (4, 4), steps=5, choice_temperature=50.0)
    orderly = [
        supports[row][revealed[row]].max() < supports[row][still[row]].min()
        for revealed, still in revealed_per_step(inputs, out, mask)[:-1]
        for row in range(3)
    ]
    assert not all(orderly)


def test_maskgit_confidence_is_the_probability_of_the_sampled_token() -> None:
    """Every position predicts the same distribution: the tokens revealed first must be draws of its most likely
    code (confidence of the drawn code), not a positional or arbitrary subset of the draws."""
    probs = torch.tensor([0.55, 0.25, 0.15, 0.05])
    logits = probs.log().expand(4, 64, 4)
    inputs, out, mask = maskgit_run(logits, (8, 8), steps=2, choice_temperature=0.0)
    revealed, still = revealed_per_step(inputs, out, mask)[0]
    first = 64 - math.floor(64 * math.cos(math.pi / 4))  # the cosine schedule's first step
    assert revealed.sum(dim=1).tolist() == [first] * 4
    assert (out[revealed] == 0).all()
    assert (out[still] != 0).any()  # later steps draw the other codes too
