"""Shared transformer building blocks so priors and backbones compose instead of copying."""
from .attention import KVCache, SelfAttention
from .blocks import TransformerBlock
from .mlp import FeedForward
from .rotary import apply_rotary, rotary_angles_1d, rotary_angles_2d

__all__ = [
    "FeedForward",
    "KVCache",
    "SelfAttention",
    "TransformerBlock",
    "apply_rotary",
    "rotary_angles_1d",
    "rotary_angles_2d",
]
