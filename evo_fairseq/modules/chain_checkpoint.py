# Copyright (c) evo-fairseq contributors.
#
# This source code is licensed under the MIT license found in the
# LICENSE file in the root directory of this source tree.
"""Activation checkpointing (``--checkpoint-activations``, ``--offload-activations``) of a
layer whose attention evolves.

fairseq's ``checkpoint_wrapper`` recomputes a layer's forward pass during the backward
pass. An evolving layer also reads the map its predecessor handed on and hands its own on,
through the stack's :class:`~evo_fairseq.modules.AttentionChain`; by the time the backward
pass recomputes it, the chain has moved on (and is closed). Here the map each chain holds
when the layer starts, its query padding mask and its layer index become explicit inputs
of the checkpointed function, and the map the layer hands on an explicit output: the
recomputation sees exactly what the forward pass saw (fairseq restores the random state
too, so dropout agrees), and the gradient of the handed-on map flows back through the
checkpoint to the layer that made it.
"""

import functools
from typing import List

import torch
from fairseq.modules.checkpoint_activations import _checkpointed_forward

from .evolving_attention import AttentionChain

_MAP, _MASK, _INDEX = "ea_chain{}_map", "ea_chain{}_query_padding_mask", "ea_chain{}_layer_idx"


def _chained_forward(layer_forward, chains: List[AttentionChain], *args, **kwargs):
    """``layer_forward`` with each chain's state taken from ``kwargs``; returns the layer's
    outputs flattened, then each chain's handed-on map, then the number of layer outputs."""
    saved = [chain.state() for chain in chains]
    for i, chain in enumerate(chains):
        chain.set_state((kwargs.pop(_MAP.format(i)), kwargs.pop(_MASK.format(i)),
                         kwargs.pop(_INDEX.format(i)), True))
    try:
        out = layer_forward(*args, **kwargs)
        maps = [chain.prev_attn_logits for chain in chains]
        ends = [chain.layer_idx for chain in chains]
    finally:
        for chain, state in zip(chains, saved):
            chain.set_state(state)
    outs = tuple(out) if isinstance(out, tuple) else (out,)
    return (*outs, *maps, tuple(ends), len(outs) if isinstance(out, tuple) else -1)


def _checkpointed_chained_forward(layer_forward, chains, offload_to_cpu, *args, **kwargs):
    """The wrapped layer's forward pass: the chains' states in, the handed-on maps out."""
    for i, chain in enumerate(chains):
        prev, mask, index, _ = chain.state()
        kwargs[_MAP.format(i)] = prev
        kwargs[_MASK.format(i)] = mask
        kwargs[_INDEX.format(i)] = index
    run = functools.partial(_chained_forward, layer_forward, chains)
    result = _checkpointed_forward(run, offload_to_cpu, *args, **kwargs)
    num_outs, ends = result[-1], result[-2]
    maps = result[-2 - len(chains):-2]
    for chain, handed_on, end in zip(chains, maps, ends):
        chain.prev_attn_logits = handed_on
        chain.layer_idx = end
    outs = result[:-2 - len(chains)]
    return outs[0] if num_outs == -1 else tuple(outs)


def checkpoint_evolving_layer(layer: torch.nn.Module, chains: List[AttentionChain],
                              offload_to_cpu: bool = False) -> torch.nn.Module:
    """Wrap ``layer`` (in place, as fairseq's ``checkpoint_wrapper`` does) so that its
    forward pass is checkpointed with the maps of ``chains`` as explicit inputs/outputs.
    A partial of a bound method, as fairseq's: ``copy.deepcopy`` (``--store-ema``) gives
    the copy its own layer and chains."""
    assert not hasattr(layer, "precheckpoint_forward"), "already checkpointed"
    layer.precheckpoint_forward = layer.forward
    layer.forward = functools.partial(_checkpointed_chained_forward, layer.precheckpoint_forward,
                                      list(chains), offload_to_cpu)
    return layer
