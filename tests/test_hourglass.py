"""The hourglass backbone: shapes for every variant, 2×2 spatial grouping, per-level positions, validation."""

from __future__ import annotations

import itertools

import pytest
import torch
from vqbench_plugins.hourglass import GridLayout, SeqLayout

import vqbench
from vqbench.config import parse
from vqbench.errors import ConfigError
from vqbench.nn import rotary_angles_1d, rotary_angles_2d


def hourglass(shape=(4, 4), vocab=10, num_classes=0, **params):
    cls = vqbench.registries().backbones.get("hourglass")
    base = {"dim": 32, "depth": [1, 1, 1], "heads": 2, "dim_head": 16}
    torch.manual_seed(0)
    return cls(parse(cls.Config, {**base, **params}, "backbone"), vocab, vocab, shape, num_classes=num_classes).eval()


@pytest.mark.parametrize("resample, rotary, updown", list(itertools.product(["1d", "2d"], ["none", "1d", "2d"], ["naive", "linear"])))
@pytest.mark.parametrize("shape", [(5, 7), (8, 8), (3, 1)])
def test_every_variant_maps_codes_to_logits(resample, rotary, updown, shape):
    net = hourglass(shape, resample=resample, rotary=rotary, updown=updown, depth=[1, [1, 1, 1], 1])
    n = shape[0] * shape[1]
    logits = net(torch.randint(10, (2, n)))
    assert logits.shape == (2, n, 10) and logits.dtype == torch.float32 and torch.isfinite(logits).all()


def test_options_without_attention_resampling_and_with_absolute_positions():
    net = hourglass((6, 6), attn_resampling=False, abs_pos=True, rotary="none", shorten=9)
    assert not hasattr(net.root, "resample_pre") and net.pos.shape == (1, 36, 32)
    assert net(torch.randint(10, (1, 36))).shape == (1, 36, 10)


def test_2d_resampling_groups_2x2_spatial_neighbours():
    h, w = 4, 6
    ids = torch.arange(h * w, dtype=torch.float32).view(1, h * w, 1)  # feature = raster index
    buckets, child = GridLayout(h, w).bucket(ids, 4)
    assert child == GridLayout(2, 3) and buckets.shape == (1, 6, 4, 1)
    for patch in range(6):
        r, c = divmod(patch, 3)
        expected = [(2 * r) * w + 2 * c, (2 * r) * w + 2 * c + 1, (2 * r + 1) * w + 2 * c, (2 * r + 1) * w + 2 * c + 1]
        assert buckets[0, patch, :, 0].tolist() == expected
    assert torch.equal(GridLayout(h, w).unbucket(buckets, 4), ids)


def test_non_multiple_sides_are_padded_then_cropped():
    ids = torch.arange(1, 36, dtype=torch.float32).view(1, 35, 1)  # 5×7, ids start at 1 so padding (0) is visible
    buckets, child = GridLayout(5, 7).bucket(ids, 4)
    assert child == GridLayout(3, 4)
    assert buckets[0, 3].flatten().tolist() == [7, 0, 14, 0]  # last patch of the first row: column 7 is padding
    assert buckets[0, 8].flatten().tolist() == [29, 30, 0, 0]  # first patch of the last row: row 5 is padding
    assert torch.equal(GridLayout(5, 7).unbucket(buckets, 4), ids)
    seq_buckets, seq_child = SeqLayout(35, 1, 7).bucket(ids, 4)
    assert seq_child == SeqLayout(9, 4, 7) and seq_buckets[0, 0].flatten().tolist() == [1, 2, 3, 4]
    assert torch.equal(SeqLayout(35, 1, 7).unbucket(seq_buckets, 4), ids)


def test_rotary_positions_are_taken_at_each_levels_own_resolution():
    _, child = GridLayout(8, 8).bucket(torch.zeros(1, 64, 1), 4)
    torch.testing.assert_close(child.angles("2d", 16, torch.device("cpu")), rotary_angles_2d(4, 4, 16))
    torch.testing.assert_close(child.angles("1d", 16, torch.device("cpu")), rotary_angles_1d(torch.arange(16), 16))
    # a 1d-resampled level uses the mean position of what it pooled: at full resolution that is the grid itself
    torch.testing.assert_close(SeqLayout(12, 1, 4).angles("2d", 16, torch.device("cpu")), rotary_angles_2d(3, 4, 16))


def test_class_conditioning_changes_the_logits():
    net = hourglass((4, 4), num_classes=3, class_conditional=True)
    codes = torch.randint(10, (2, 16))
    a, b = net(codes, torch.tensor([0, 0])), net(codes, torch.tensor([0, 2]))
    assert torch.equal(a[0], b[0]) and not torch.allclose(a[1], b[1])


@pytest.mark.parametrize(
    "params, message",
    [
        ({"shorten": 3}, "square factor"),
        ({"depth": [1, 1]}, "expected \\[pre, valley, post\\]"),
        ({"depth": [1, [1, 0, 1], 1]}, "depth\\[1\\]\\[1\\]: the valley needs at least one block"),
        ({"rotary_dim": 6}, "divisible by 4"),
        ({"resample": "3d"}, "must be one of '1d' \\| '2d'"),
    ],
)
def test_bad_configs_name_the_key(params, message):
    with pytest.raises(ConfigError, match=message):
        hourglass(**params)


def test_hourglass_refuses_causal_use():
    cls = vqbench.registries().backbones.get("hourglass")
    with pytest.raises(ConfigError, match="bidirectional"):
        cls(cls.Config(), 10, 10, (4, 4), causal=True)


@pytest.mark.parametrize("rotary, abs_pos, learned", [("none", None, True), ("2d", None, False), ("1d", True, True), ("none", False, False)])
def test_without_rotary_learned_positions_are_the_default(rotary, abs_pos, learned):
    """`rotary: none` must not leave the network position-blind: learned absolute positions stand in, as in the
    reference; an explicit abs_pos wins."""
    net = hourglass((4, 4), rotary=rotary, **({} if abs_pos is None else {"abs_pos": abs_pos}))
    assert (net.pos is not None) == learned
    codes = torch.randint(10, (1, 16), generator=torch.Generator().manual_seed(0))
    codes[0, :8] = 3  # the first two 2×2 patches all one code: without positions tokens 0 and 2 look alike
    with torch.no_grad():
        logits = net(codes)[0]
    assert (not torch.allclose(logits[0], logits[2])) == (learned or rotary != "none")
