"""The hourglass's resampling path: 2d patch grouping, rotary angles, attention resampling (through the real forward)."""

from __future__ import annotations

import torch

from vqbench.backbones import build_backbone

SPEC = {
    "name": "hourglass",
    "dim": 16,
    "depth": [0, 1, 0],
    "heads": 2,
    "dim_head": 8,
    "updown": "naive",
    "attn_resampling": False,
    "rotary": "none",
    "abs_pos": False,  # no learned positions: the embedding alone shows which tokens were grouped
    "shorten": 4,
}


def build(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return build_backbone({**SPEC, **overrides}, "backbone", "hourglass", 16, 16, (4, 4)).eval()


def downsample_input(net, codes: torch.Tensor) -> torch.Tensor:
    """The patches B×m×k×d the root level's downsampling receives for ``codes``."""
    seen = []
    handle = net.root.down.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    net(codes)
    handle.remove()
    return seen[0]


def test_2d_resampling_groups_square_patches_of_the_grid():
    net = build(resample="2d")
    with torch.no_grad():  # embedding of code v: v in channel 0, so the patches show which tokens were grouped
        net.embed.weight.zero_()
        net.embed.weight[:, 0] = torch.arange(16.0)
    patches = downsample_input(net, torch.arange(16)[None])[0, :, :, 0]
    expected = torch.tensor([[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]], dtype=torch.float32)
    assert torch.equal(patches, expected)


def test_1d_resampling_groups_runs_of_the_raster_sequence():
    net = build(resample="1d")
    with torch.no_grad():
        net.embed.weight.zero_()
        net.embed.weight[:, 0] = torch.arange(16.0)
    patches = downsample_input(net, torch.arange(16)[None])[0, :, :, 0]
    assert torch.equal(patches, torch.arange(16.0).view(4, 4))


def test_rotary_changes_the_output():
    codes = torch.randint(16, (2, 16), generator=torch.Generator().manual_seed(0))
    plain = build(rotary="none")(codes)
    for rotary in ("1d", "2d"):
        for resample in ("1d", "2d"):
            net = build(rotary=rotary, resample=resample)
            assert net.angles(net.layout) is not None
            assert not torch.allclose(net(codes), build(rotary="none", resample=resample)(codes), atol=1e-5)
    assert torch.allclose(build(rotary="none")(codes), plain)


def test_attention_resampling_changes_the_output_and_its_parameters_are_used():
    codes = torch.randint(16, (2, 16), generator=torch.Generator().manual_seed(0))
    with_attn = build(attn_resampling=True)
    without = build(attn_resampling=False)
    missing = without.load_state_dict(with_attn.state_dict(), strict=False)
    assert set(missing.unexpected_keys) and not missing.missing_keys  # the knob adds the resampling blocks' weights
    assert not torch.allclose(with_attn(codes), without(codes), atol=1e-5)
    with_attn(codes).square().mean().backward()
    for name in ("resample_pre", "resample_post"):
        grads = [p.grad for p in getattr(with_attn.root, name).parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads), name
