# Copyright (c) evo-fairseq contributors.
#
# This source code is licensed under the MIT license found in the
# LICENSE file in the root directory of this source tree.
"""Evolving attention (Wang et al., ICML 2021): the one place that computes it.

Within one attention stack, layer i >= 2 turns its plain logits S_i into

    M_i = (1 - alpha) * S_i + alpha * A_{i-1}
    A_i = beta * act(Conv2d_{HxH, k x k}(M_i)) + (1 - beta) * M_i

and hands A_i on to layer i + 1; layer 1 starts the chain with A_1 = S_1.
The convolution treats the H heads as channels. Blocked cells (padded keys,
padded queries, future keys) are zeroed before it, so they never leak into real
cells; the caller masks them again after it. Along the query axis the
convolution is centred (encoder) or causal (decoder self- and cross-attention):
a causal one sees the current and the k - 1 previous target rows, which
incremental decoding keeps as ``prev_mixed_rows``.
"""

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from .evolving_map import ACTIVATIONS, evolve_map

STACKS = ("encoder", "decoder", "cross")


def _check_unit_interval(name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


def parse_alpha(value) -> float:
    """``--ea-alpha``: weight of the previous layer's map, in [0, 1]."""
    return _check_unit_interval("--ea-alpha", value)


def parse_beta(value) -> float:
    """``--ea-beta``: weight of the convolution branch, in [0, 1]."""
    return _check_unit_interval("--ea-beta", value)


def parse_kernel_size(value) -> int:
    """``--ea-kernel-size``: a positive odd integer."""
    try:
        kernel_size = int(str(value))
    except ValueError:
        raise ValueError(f"--ea-kernel-size must be a positive odd integer, got {value!r}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"--ea-kernel-size must be a positive odd integer, got {kernel_size}")
    return kernel_size


def parse_activation(value) -> str:
    """``--ea-activation``: one of ``ACTIVATIONS``."""
    if value not in ACTIVATIONS:
        raise ValueError(
            f"--ea-activation must be one of {', '.join(ACTIVATIONS)}, got {value!r}"
        )
    return value


def parse_ramp_updates(value) -> int:
    """``--ea-ramp-updates``: a non-negative integer number of updates."""
    try:
        ramp_updates = int(str(value))
    except ValueError:
        raise ValueError(
            f"--ea-ramp-updates must be a non-negative integer (updates; 0 = no ramp), got {value!r}"
        )
    if ramp_updates < 0:
        raise ValueError(
            f"--ea-ramp-updates must be a non-negative integer (updates; 0 = no ramp), got {ramp_updates}"
        )
    return ramp_updates


def parse_stacks(value) -> Tuple[str, ...]:
    """``--ea-stacks``: comma-separated subset of encoder,decoder,cross, or none."""
    if isinstance(value, (tuple, list)):  # already parsed
        names = list(value)
    else:
        names = [name.strip() for name in str(value).split(",") if name.strip()]
    if names in ([], ["none"]) and value != "":
        return ()
    bad = [name for name in names if name not in STACKS]
    if bad or not names or len(set(names)) != len(names):
        raise ValueError(
            "--ea-stacks must be a comma-separated list of distinct names from "
            f"{','.join(STACKS)} (or 'none'), got {value!r}"
        )
    return tuple(name for name in STACKS if name in names)


@dataclass
class EvolvingAttentionConfig:
    # defaults chosen by the validation-set sweep in docs/benchmarks.md
    alpha: float = 0.8
    beta: float = 0.5
    kernel_size: int = 3
    activation: str = "relu"
    stacks: Tuple[str, ...] = STACKS
    ramp_updates: int = 0

    @classmethod
    def from_args(cls, args) -> "EvolvingAttentionConfig":
        """Read and validate the ``--ea-*`` options of a namespace or TransformerConfig."""
        default = cls()
        return cls(
            alpha=parse_alpha(getattr(args, "ea_alpha", default.alpha)),
            beta=parse_beta(getattr(args, "ea_beta", default.beta)),
            kernel_size=parse_kernel_size(getattr(args, "ea_kernel_size", default.kernel_size)),
            activation=parse_activation(getattr(args, "ea_activation", default.activation)),
            stacks=parse_stacks(getattr(args, "ea_stacks", default.stacks)),
            ramp_updates=parse_ramp_updates(
                getattr(args, "ea_ramp_updates", default.ramp_updates)
            ),
        )


class AttentionChain:
    """What one attention stack hands from layer to layer during one forward pass.

    The encoder or decoder opens the chain before its layers run and closes it
    after, so no tensor outlives the pass.

    - ``prev_attn_logits``: A_{i-1}, ``(bsz, heads, tgt_len, src_len)``, or None
      before the first layer.
    - ``query_padding_mask``: ``(bsz, tgt_len)``, True at padded query positions.
    - ``capture``: an optional callable that receives every layer's maps (see
      :meth:`EvolvingAttention.forward`); None costs nothing.

    Skipped layers (LayerDrop in training) hand nothing on: the next layer that
    runs takes the last map handed on, and an evolving layer that finds none
    (its predecessors were all skipped) starts the chain from its own logits.

    Args:
        layer_ids: the original indices of the layers this stack builds, when
            ``--{encoder,decoder}-layers-to-keep`` prunes it (checkpoints name their
            layers by them until fairseq prunes the state dict).
    """

    def __init__(self, stack: str, cfg: EvolvingAttentionConfig, layer_ids=None):
        assert stack in STACKS, stack
        self.stack = stack
        self.cfg = cfg
        self.layer_ids = None if layer_ids is None else list(layer_ids)
        self.num_layers = 0
        self.prev_attn_logits: Optional[Tensor] = None
        self.query_padding_mask: Optional[Tensor] = None
        self.capture = None
        self.layer_idx = 0
        self.is_open = False

    @property
    def causal(self) -> bool:
        """Decoder self- and cross-attention are causal along the target axis."""
        return self.stack != "encoder"

    def add_layer(self, num_heads: int) -> Optional["EvolvingAttention"]:
        """Register the stack's next layer and build its residual convolution.

        Returns None for the first layer it builds, which only starts the chain (also when
        pruning kept a later layer first: a convolution there would never run, and DDP
        would find it unused).
        """
        index = self.num_layers
        if self.layer_ids is not None and index >= len(self.layer_ids):
            raise ValueError(
                f"{self.stack} attention: more layers built than the "
                f"{len(self.layer_ids)} kept ({self.layer_ids})"
            )
        self.num_layers += 1
        if index == 0:
            return None
        cfg = self.cfg
        return EvolvingAttention(
            num_heads,
            alpha=cfg.alpha,
            beta=cfg.beta,
            kernel_size=cfg.kernel_size,
            activation=cfg.activation,
            causal=self.causal,
            ramp_updates=cfg.ramp_updates,
        )

    def open(self, query_padding_mask: Optional[Tensor]):
        self.prev_attn_logits = None
        self.query_padding_mask = query_padding_mask
        self.layer_idx = 0
        self.is_open = True

    def close(self):
        self.prev_attn_logits = None
        self.query_padding_mask = None
        self.is_open = False

    def state(self) -> Tuple:
        """What the next layer reads: ``(prev_attn_logits, query_padding_mask, layer_idx,
        is_open)`` (for activation checkpointing, which hands it over explicitly)."""
        return self.prev_attn_logits, self.query_padding_mask, self.layer_idx, self.is_open

    def set_state(self, state: Tuple):
        self.prev_attn_logits, self.query_padding_mask, self.layer_idx, self.is_open = state


class EvolvingAttention(nn.Module):
    """The residual convolution of one layer i >= 2 of an attention stack.

    Args:
        num_heads: H, the convolution's input and output channels.
        causal: causal along the query (target) axis, for decoder self- and
            cross-attention; centred otherwise. Along the key axis it is centred.
        ramp_updates: N > 0 scales alpha and beta by ``r = min(u, N) / N`` at
            training update u (fairseq's ``set_num_updates``), so the layer
            starts as fairseq's attention (r = 0). The update count reached is
            kept in the buffer ``ramp_step``, so a checkpoint evaluates with
            the alpha and beta its last update trained with.
    """

    def __init__(
        self,
        num_heads: int,
        alpha: float = 0.8,
        beta: float = 0.5,
        kernel_size: int = 3,
        activation: str = "relu",
        causal: bool = False,
        ramp_updates: int = 0,
    ):
        super().__init__()
        self.alpha = parse_alpha(alpha)
        self.beta = parse_beta(beta)
        self.kernel_size = parse_kernel_size(kernel_size)
        self.activation = parse_activation(activation)
        self.causal = causal
        self.conv = nn.Conv2d(num_heads, num_heads, self.kernel_size)
        self.ramp_updates = parse_ramp_updates(ramp_updates)
        # r as a Python float, so that no forward pass reads a device tensor
        self.ramp = 1.0
        if self.ramp_updates > 0:
            self.register_buffer("ramp_step", torch.zeros((), dtype=torch.long))
            self.ramp = 0.0

    @property
    def effective_alpha(self) -> float:
        return self.alpha * self.ramp

    @property
    def effective_beta(self) -> float:
        return self.beta * self.ramp

    def set_num_updates(self, num_updates: int):
        """fairseq calls this before every training update with the updates done so far."""
        if self.ramp_updates > 0:
            step = min(max(int(num_updates), 0), self.ramp_updates)
            self.ramp_step.fill_(step)
            self.ramp = step / self.ramp_updates

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.ramp_updates > 0:
            self.ramp = min(int(self.ramp_step), self.ramp_updates) / self.ramp_updates

    @property
    def num_history_rows(self) -> int:
        """Rows of earlier target steps a causal convolution needs: k - 1."""
        return self.kernel_size - 1

    def forward(
        self,
        attn_logits: Tensor,
        prev_attn_logits: Tensor,
        blocked: Optional[Tensor] = None,
        prev_mixed_rows: Optional[Tensor] = None,
        keep_conv_out: bool = False,
        masked: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor, Optional[Tensor], Optional[Tensor]]:
        """
        Args:
            attn_logits: S_i, ``(bsz, heads, tgt_len, src_len)``; its storage is reused
                for M_i (see :func:`~evo_fairseq.modules.evolving_map.evolve_map`).
            prev_attn_logits: A_{i-1}, same shape.
            blocked: bool, broadcastable to ``(bsz, 1, tgt_len, src_len)``;
                True cells are zeroed in the convolution's input.
            prev_mixed_rows: incremental decoding only (causal): the (zeroed)
                mixed rows of the k - 1 previous target steps, ``(bsz, heads, k - 1, <= src_len)``;
                zeros at the first step. Narrower rows (self-attention, whose
                keys grow by one each step) are zero-extended on the right.
            keep_conv_out: also return act(conv(M_i)) (attention capture).
            masked: the attention mask (a subset of ``blocked``): these cells of A_i
                hold a large negative number (the softmax's input is masked).

        Returns:
            ``(attn_logits_out, mixed, conv_out, mixed_rows)``: A_i (the softmax's input,
            handed on), M_i, act(conv(M_i)) or None, and, when ``prev_mixed_rows``
            was given, the k - 1 newest mixed rows to keep for the next step (else None).
        """
        if prev_mixed_rows is not None:
            assert self.causal, "only a causal convolution keeps earlier rows"
        return evolve_map(
            attn_logits,
            prev_attn_logits,
            self.conv.weight,
            self.conv.bias,
            self.effective_alpha,
            self.effective_beta,
            activation=self.activation,
            causal=self.causal,
            blocked=blocked,
            masked=masked,
            history=prev_mixed_rows,
            keep_conv_out=keep_conv_out,
        )

    def extra_repr(self) -> str:
        ramp = ""
        if self.ramp_updates > 0:
            ramp = f", ramp_updates={self.ramp_updates}, ramp={self.ramp:g}"
        return (
            f"alpha={self.alpha}, beta={self.beta}, kernel_size={self.kernel_size}, "
            f"activation={self.activation}, causal={self.causal}{ramp}"
        )
