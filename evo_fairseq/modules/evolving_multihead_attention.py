# Copyright (c) evo-fairseq contributors.
#
# This source code is licensed under the MIT license found in the
# LICENSE file in the root directory of this source tree.

import weakref
from typing import Dict, Optional

import torch
from fairseq.modules import MultiheadAttention
from torch import Tensor

from .evolving_attention import AttentionChain, EvolvingAttention

EVOLVING_STATE = "evolving_state"


class EvolvingMultiheadAttention(MultiheadAttention):
    """fairseq's MultiheadAttention whose pre-softmax map evolves along its stack.

    Everything but the map between ``QK^T`` and the softmax is fairseq's own: the
    projections, key/value caching, key-padding masking, dropout and the
    returned (post-softmax) attention. The map is changed in
    :meth:`apply_sparse_mask`, fairseq's hook for exactly that place.

    Args:
        chain: the stack's :class:`AttentionChain`, shared by all its layers.
        evolving: the layer's :class:`EvolvingAttention`; None for the first
            layer of the stack, which starts the chain with its plain logits.
    """

    def __init__(
        self,
        embed_dim,
        num_heads,
        chain: AttentionChain,
        evolving: Optional[EvolvingAttention],
        **kwargs,
    ):
        super().__init__(embed_dim, num_heads, **kwargs)
        if self.bias_k is not None or self.add_zero_attn:
            raise ValueError(
                "evolving attention does not support add_bias_kv or add_zero_attn "
                "(they add key columns that are not tokens)"
            )
        self.chain = chain
        self.evolving = evolving
        # fairseq's fused path (F.multi_head_attention_forward) has no hook
        # between the logits and the softmax; this flag makes it take its own.
        self.skip_embed_dim_check = True
        self._masks = None

    def forward(
        self,
        query: Tensor,
        key: Optional[Tensor],
        value: Optional[Tensor],
        key_padding_mask: Optional[Tensor] = None,
        incremental_state: Optional[Dict[str, Dict[str, Optional[Tensor]]]] = None,
        need_weights: bool = True,
        static_kv: bool = False,
        attn_mask: Optional[Tensor] = None,
        before_softmax: bool = False,
        need_head_weights: bool = False,
    ):
        # attn_mask is applied in apply_sparse_mask, out of place: fairseq adds
        # it in place, which would corrupt the map handed to the next layer.
        self._masks = (key_padding_mask, attn_mask, incremental_state)
        try:
            return super().forward(
                query,
                key,
                value,
                key_padding_mask=key_padding_mask,
                incremental_state=incremental_state,
                need_weights=need_weights,
                static_kv=static_kv,
                attn_mask=None,
                before_softmax=before_softmax,
                need_head_weights=need_head_weights,
            )
        finally:
            self._masks = None

    def apply_sparse_mask(self, attn_weights, tgt_len: int, src_len: int, bsz: int):
        """Evolve S_i ``(bsz * heads, tgt_len, src_len)`` into A_i, same shape."""
        key_padding_mask, attn_mask, incremental_state = self._masks
        chain = self.chain
        attn_logits = attn_weights.view(bsz, self.num_heads, tgt_len, src_len)
        attn_blocked, attn_additive = split_attention_mask(attn_mask)
        if not chain.is_open:
            raise RuntimeError(
                f"{chain.stack} attention layer {chain.layer_idx + 1}: the stack's chain was "
                "not opened (call the encoder or decoder, not a layer on its own)"
            )
        capture = chain.capture
        if self.evolving is None or chain.prev_attn_logits is None:
            # the first layer, or the first to run after LayerDrop skipped its predecessors
            mixed = conv_out = None
            chain.prev_attn_logits = attn_logits
            attn_logits_out = attn_logits
            if attn_blocked is not None:
                fill = torch.finfo(attn_logits.dtype).min
                attn_logits_out = attn_logits.masked_fill(attn_blocked, fill)
            raw_logits = attn_logits
        else:
            blocked = self._blocked_cells(
                key_padding_mask, attn_blocked, bsz, tgt_len, src_len
            )
            prev_mixed_rows = None
            if incremental_state is not None:
                prev_mixed_rows = self._get_prev_mixed_rows(
                    incremental_state, bsz, src_len, attn_logits
                )
            # the evolution overwrites S_i with M_i: keep S_i for a capture only
            raw_logits = attn_logits.detach().clone() if capture is not None else None
            attn_logits_out, mixed, conv_out, mixed_rows = self.evolving(
                attn_logits, chain.prev_attn_logits, blocked, prev_mixed_rows,
                keep_conv_out=capture is not None, masked=attn_blocked,
            )
            if mixed_rows is not None:
                self.set_incremental_state(
                    incremental_state, EVOLVING_STATE, {"prev_mixed_rows": mixed_rows}
                )
            # A_i is already masked (attention-mask cells hold a large negative number):
            # the softmax's input, and what the next layer mixes in (and zeroes there)
            chain.prev_attn_logits = attn_logits_out
        if capture is not None:
            capture(
                stack=chain.stack,
                layer_idx=chain.layer_idx,
                attn_logits=raw_logits,
                mixed=mixed,
                conv_out=conv_out,
                attn_logits_out=chain.prev_attn_logits,
            )
        chain.layer_idx += 1
        if attn_additive is not None:  # the softmax's input only: not handed on
            attn_logits_out = attn_logits_out + attn_additive
        return attn_logits_out.reshape(bsz * self.num_heads, tgt_len, src_len)

    def _blocked_cells(self, key_padding_mask, attn_blocked, bsz, tgt_len, src_len):
        """Cells to zero before the convolution: bool ``(bsz, 1, tgt_len, src_len)`` or None."""
        blocked = attn_blocked
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.to(torch.bool)
            if key_padding_mask.size(0) != bsz:  # keys shared by a query's beams
                key_padding_mask = key_padding_mask.repeat_interleave(
                    bsz // key_padding_mask.size(0), dim=0
                )
            if key_padding_mask.size(1) < src_len:  # cached keys (incremental)
                key_padding_mask = torch.nn.functional.pad(
                    key_padding_mask, (src_len - key_padding_mask.size(1), 0)
                )
            columns = key_padding_mask[:, None, None, :]
            blocked = columns if blocked is None else blocked | columns
        query_padding_mask = self.chain.query_padding_mask
        if query_padding_mask is not None:
            rows = query_padding_mask.to(torch.bool)[:, None, -tgt_len:, None]
            blocked = rows if blocked is None else blocked | rows
        return blocked

    def _get_prev_mixed_rows(self, incremental_state, bsz, src_len, like: Tensor):
        state = self.get_incremental_state(incremental_state, EVOLVING_STATE)
        if state is not None and "prev_mixed_rows" in state:
            return state["prev_mixed_rows"]
        return like.new_zeros(bsz, self.num_heads, self.evolving.num_history_rows, src_len)

    @torch.jit.unused
    def reorder_incremental_state(
        self,
        incremental_state: Dict[str, Dict[str, Optional[Tensor]]],
        new_order: Tensor,
    ):
        """Reorder the kept mixed rows with the beams, then fairseq's own buffers.

        The rows are per hypothesis, so they are always reordered, also where
        fairseq's encoder-decoder key/value cache (shared by a query's beams)
        returns early.
        """
        state = self.get_incremental_state(incremental_state, EVOLVING_STATE)
        if state is not None:
            state = {name: rows.index_select(0, new_order) for name, rows in state.items()}
            incremental_state = self.set_incremental_state(
                incremental_state, EVOLVING_STATE, state
            )
        return super().reorder_incremental_state(incremental_state, new_order)


# an additive mask value at or below this blocks its cell (exp of it is 0 in any dtype);
# fairseq's own masks block with -inf, -1e8 (fp32) or -1e4 (half precision)
BLOCKING = -1e4
_MASK_KINDS = {}  # (id of the mask's storage owner, view) -> (weakref, version, only blocks)


def split_attention_mask(attn_mask: Optional[Tensor]):
    """fairseq's attention mask as ``(blocked, additive)``, each ``(1, 1, tgt_len, src_len)``
    or None: a bool mask blocks its True cells; a float mask blocks its cells at or below
    :data:`BLOCKING` and adds its other values to the softmax's input (None when they are
    all 0, as in fairseq's causal mask)."""
    if attn_mask is None:
        return None, None
    shape = (1, 1, *attn_mask.shape[-2:])
    if attn_mask.dtype == torch.bool:
        return attn_mask.view(shape), None
    blocked = attn_mask <= BLOCKING
    additive = attn_mask.masked_fill(blocked, 0.0)
    if _only_blocks(attn_mask, additive):
        return blocked.view(shape), None
    return blocked.view(shape), additive.view(shape)


def _only_blocks(attn_mask: Tensor, additive: Tensor) -> bool:
    """Whether ``attn_mask`` adds nothing; asked once per mask (fairseq reuses its causal
    mask), since the answer needs the values on the host."""
    owner = attn_mask._base if attn_mask._base is not None else attn_mask
    key = (id(owner), tuple(attn_mask.shape), attn_mask.stride(), attn_mask.storage_offset())
    seen = _MASK_KINDS.get(key)
    if seen is not None and seen[0]() is owner and seen[1] == owner._version:
        return seen[2]
    only_blocks = not bool(additive.any())
    if len(_MASK_KINDS) > 64:
        _MASK_KINDS.clear()
    _MASK_KINDS[key] = (weakref.ref(owner), owner._version, only_blocks)
    return only_blocks
