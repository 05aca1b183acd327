"""Shared transformer building blocks so priors and backbones compose instead of copying."""

from .attention import CrossAttention, KVCache, SelfAttention
from .blocks import CrossBlock, DecoderBlock, TransformerBlock
from .decode import StaticKVCache, decode_blocks
from .init import init_weights
from .mlp import FeedForward
from .rotary import apply_rotary, rotary_angles_1d, rotary_angles_2d, rotary_angles_axial

__all__ = [
    "CrossAttention",
    "CrossBlock",
    "DecoderBlock",
    "FeedForward",
    "KVCache",
    "SelfAttention",
    "StaticKVCache",
    "TransformerBlock",
    "apply_rotary",
    "decode_blocks",
    "init_weights",
    "rotary_angles_1d",
    "rotary_angles_2d",
    "rotary_angles_axial",
]
