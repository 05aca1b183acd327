"""Core transformer blocks: rotary properties and key/value-cache equivalence."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vqbench.nn import CrossAttention, KVCache, TransformerBlock, apply_rotary, rotary_angles_1d, rotary_angles_2d


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cross_attention_to_a_single_key_returns_its_value_without_the_query_projection(dtype):
    """The hourglass's upsampling attention (each token attends to its one valley token) skips the softmax in
    inference: what SDPA gives, without calling the query projection."""
    torch.manual_seed(0)
    attn = CrossAttention(16, 2, 8).to(dtype).eval()
    x, context = torch.randn(6, 4, 16, dtype=dtype), torch.randn(6, 1, 16, dtype=dtype)
    calls = []
    attn.to_q.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        k, v = attn.context_kv(context)
        q = attn.to_q(x).view(6, 4, 2, 8).transpose(1, 2)
        expected = attn.to_out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(6, 4, 16))
        calls.clear()
        tol = {"rtol": 2e-2, "atol": 4e-3} if dtype == torch.bfloat16 else {}  # bf16: a product of fewer rows rounds differently
        torch.testing.assert_close(attn(x, context), expected, **tol)
        assert not calls
    attn(x, context)  # with gradients: the full attention, the query projection included
    assert calls
