from .evolving_attention import (
    ACTIVATIONS,
    STACKS,
    AttentionChain,
    EvolvingAttention,
    EvolvingAttentionConfig,
)
from .evolving_multihead_attention import EvolvingMultiheadAttention

__all__ = [
    "ACTIVATIONS",
    "STACKS",
    "AttentionChain",
    "EvolvingAttention",
    "EvolvingAttentionConfig",
    "EvolvingMultiheadAttention",
]
