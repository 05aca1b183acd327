"""Core transformer blocks: rotary properties and key/value-cache equivalence."""

from __future__ import annotations

import pytest
import torch

from vqbench.nn import KVCache, TransformerBlock, apply_rotary, rotary_angles_1d, rotary_angles_2d


def test_rotary_scores_depend_only_on_relative_position():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(16, generator=g), torch.randn(16, generator=g)
    angles = rotary_angles_1d(torch.arange(20), 16)

    def score(i, j):
        return (apply_rotary(q[None], angles[i : i + 1]) * apply_rotary(k[None], angles[j : j + 1])).sum()

    torch.testing.assert_close(score(3, 1), score(13, 11))
    assert not torch.allclose(score(3, 1), score(3, 2))


def test_axial_rotary_splits_rows_and_columns():
    angles = rotary_angles_2d(3, 4, 16)
    assert angles.shape == (12, 8)
    # tokens in the same row share the row half; same column share the column half
    torch.testing.assert_close(angles[0, :4], angles[3, :4])
    torch.testing.assert_close(angles[1, 4:], angles[5, 4:])
    assert not torch.allclose(angles[0, 4:], angles[1, 4:])
    x = torch.randn(2, 12, 20)
    out = apply_rotary(x, angles)
    torch.testing.assert_close(out[..., 16:], x[..., 16:])  # channels past the rotary dims pass through
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1))  # rotations preserve norms


def test_kv_cache_decoding_equals_full_causal_forward():
    torch.manual_seed(0)
    blocks = torch.nn.ModuleList(TransformerBlock(32, 4, 8, causal=True) for _ in range(2)).eval()
    x = torch.randn(2, 7, 32)
    angles = rotary_angles_1d(torch.arange(7), 8)

    def run(inp, ang, cache=None):
        for i, block in enumerate(blocks):
            inp = block(inp, ang, cache, i)
        return inp

    full = run(x, angles)
    cache = KVCache()
    steps = [run(x[:, :3], angles[:3], cache)] + [run(x[:, t : t + 1], angles[t : t + 1], cache) for t in range(3, 7)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.length() == 7


@pytest.mark.parametrize("name", ["transformer", "hourglass"])
def test_backbones_are_initialised_like_taming_gpt(name):
    """Embeddings N(0, 0.02) like the learned positions (PyTorch's N(0, 1) would drown them), Linear N(0, 0.02) with
    zero biases, LayerNorm 1 / 0."""
    import vqbench
    from vqbench.config import parse

    cls = vqbench.registries().backbones.get(name)
    params = {"dim": 64, "depth": 2 if name == "transformer" else [1, 1, 1], "heads": 2, "dim_head": 32, "abs_pos": True}
    torch.manual_seed(0)
    net = cls(parse(cls.Config, params, "backbone"), 512, 512, (8, 8))
    assert abs(net.embed.weight.std().item() - 0.02) < 0.002 and abs(net.pos.std().item() - 0.02) < 0.002
    for module in net.modules():
        if isinstance(module, torch.nn.Linear):
            assert abs(module.weight.std().item() - 0.02) < 0.004, module
            assert module.bias is None or not module.bias.any()
        if isinstance(module, torch.nn.LayerNorm):
            assert (module.weight == 1).all() and not module.bias.any()
