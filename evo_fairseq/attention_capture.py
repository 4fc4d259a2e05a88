# Copyright (c) evo-fairseq contributors.
#
# This source code is licensed under the MIT license found in the
# LICENSE file in the root directory of this source tree.
"""Record every layer's attention maps during one forward pass.

Works for EA models and for fairseq's plain transformer alike::

    with AttentionCapture(model) as capture:
        model(src_tokens, src_lengths, prev_output_tokens)
    capture.maps[("cross", 2)]["probs"]     # (bsz, heads, tgt_len, src_len)

For each ``(stack, layer)`` (stack in encoder/decoder/cross, layer from 1) it
records ``logits`` (S = QK^T/sqrt(d)), ``mixed`` (M) and ``conv`` (act(conv(M)))
for evolving layers, ``evolved`` (A, the map the softmax sees before masking;
S for non-evolving layers) and ``probs`` (the softmax probabilities the layer
uses). Nothing is installed outside the ``with`` block, so a model that is not
being inspected pays nothing; inside it, outputs are unchanged.
"""

from collections import defaultdict

import torch
from fairseq.modules import MultiheadAttention

from evo_fairseq.modules import EvolvingMultiheadAttention

MAPS = ("logits", "mixed", "conv", "evolved", "probs")


def attention_modules(model):
    """``[(stack, layer, module)]`` of an encoder-decoder transformer, layers from 1."""
    found = []
    for stack, layers, name in [
        ("encoder", model.encoder.layers, "self_attn"),
        ("decoder", model.decoder.layers, "self_attn"),
        ("cross", model.decoder.layers, "encoder_attn"),
    ]:
        for i, layer in enumerate(layers):
            module = getattr(layer, name, None)
            if isinstance(module, MultiheadAttention):
                found.append((stack, i + 1, module))
    return found


class AttentionCapture:
    def __init__(self, model):
        self.model = model
        self.maps = defaultdict(dict)
        self._undo = []

    def __enter__(self):
        self.maps.clear()
        for stack, layer, module in attention_modules(self.model):
            self._attach(stack, layer, module)
        return self

    def __exit__(self, *exc):
        for undo in reversed(self._undo):
            undo()
        self._undo = []
        return False

    def _record(self, stack, layer, name, tensor):
        # a copy: the evolution reuses the logits' storage for later maps
        self.maps[(stack, layer)][name] = tensor.detach().to("cpu", torch.float32, copy=True)

    def _attach(self, stack, layer, module):
        num_heads = module.num_heads
        # fairseq's fused path has no hook for the maps: take its own path
        skip = module.skip_embed_dim_check
        module.skip_embed_dim_check = True
        self._undo.append(lambda: setattr(module, "skip_embed_dim_check", skip))

        apply_sparse_mask = module.apply_sparse_mask

        def record_logits(attn_weights, tgt_len, src_len, bsz):
            shape = (bsz, num_heads, tgt_len, src_len)
            self._record(stack, layer, "logits", attn_weights.view(shape))
            out = apply_sparse_mask(attn_weights, tgt_len, src_len, bsz)
            if not isinstance(module, EvolvingMultiheadAttention):
                self._record(stack, layer, "evolved", out.view(shape))
            return out

        module.apply_sparse_mask = record_logits
        self._undo.append(lambda: delattr(module, "apply_sparse_mask"))

        if isinstance(module, EvolvingMultiheadAttention):
            chain = module.chain

            def record_evolution(stack, layer_idx, attn_logits, mixed, conv_out, attn_logits_out):
                for name, tensor in [("mixed", mixed), ("conv", conv_out),
                                     ("evolved", attn_logits_out)]:
                    if tensor is not None:
                        self._record(stack, layer_idx + 1, name, tensor)

            if chain.capture is None:
                chain.capture = record_evolution
                self._undo.append(lambda: setattr(chain, "capture", None))

        # fairseq applies attention dropout to the softmax probabilities: its input is them
        def record_probs(dropout, inputs, output):
            probs = inputs[0]
            _, tgt_len, src_len = probs.shape
            self._record(stack, layer, "probs", probs.view(-1, num_heads, tgt_len, src_len))

        handle = module.dropout_module.register_forward_hook(record_probs)
        self._undo.append(handle.remove)


def kl_and_cosine(probs, prev_probs, eps=1e-9):
    """Mean KL(P_i || P_{i-1}) over query rows and cosine similarity of the two maps.

    Both ``(heads, tgt_len, src_len)``, averaged over heads first.
    """
    p, q = probs.mean(0), prev_probs.mean(0)
    kl = (p * ((p + eps).log() - (q + eps).log())).sum(-1).mean()
    cosine = torch.nn.functional.cosine_similarity(p.flatten(), q.flatten(), dim=0)
    return kl.item(), cosine.item()
