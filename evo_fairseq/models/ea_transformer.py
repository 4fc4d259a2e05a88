# Copyright (c) evo-fairseq contributors.
#
# This source code is licensed under the MIT license found in the
# LICENSE file in the root directory of this source tree.
"""EA-Transformer: fairseq's transformer with evolving attention.

Encoder self-attention, decoder self-attention and encoder-decoder attention
each carry their own :class:`AttentionChain` from layer to layer. Parameter
names are those of fairseq's transformer plus ``*.evolving.conv.*`` in layers
2..N of each evolving stack, so a plain transformer checkpoint initialises an
EA model (the convolutions start fresh).
"""

import argparse
import contextlib
import logging
import re

from fairseq.distributed import fsdp_wrap
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import (
    TransformerDecoderBase,
    TransformerEncoderBase,
    TransformerModel,
    base_architecture,
    tiny_architecture,
    transformer_iwslt_de_en,
    transformer_vaswani_wmt_en_de_big,
    transformer_vaswani_wmt_en_fr_big,
    transformer_wmt_en_de,
    transformer_wmt_en_de_big,
    transformer_wmt_en_de_big_t2t,
)
from fairseq.modules.transformer_layer import (
    TransformerDecoderLayerBase,
    TransformerEncoderLayerBase,
)
from omegaconf import OmegaConf, open_dict

from evo_fairseq.modules import (
    AttentionChain,
    EvolvingAttentionConfig,
    EvolvingMultiheadAttention,
)
from evo_fairseq.modules import evolving_attention
from evo_fairseq.modules.chain_checkpoint import checkpoint_evolving_layer

from .ea_transformer_config import EATransformerConfig, ea_field_names

logger = logging.getLogger(__name__)

_RAMP_STEP = ".evolving.ramp_step"
_LAYER_INDEX = re.compile(r"(encoder|decoder)\.layers\.(\d+)\.")


def _argparse_type(parse):
    """Turn a ``parse_*`` validator into an argparse type that keeps its message."""

    def parse_arg(value):
        try:
            return parse(value)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err))

    parse_arg.__name__ = parse.__name__
    return parse_arg


def _check_supported(cfg, stacks):
    """Refuse, with the reason and what works, the options evolving attention cannot honour."""
    if "decoder" in stacks and cfg.cross_self_attention:
        raise ValueError(
            "--cross-self-attention is not supported with an evolving decoder self-attention "
            "(decoder in --ea-stacks): its keys are the source followed by the target, and the "
            "convolution along the keys would run across that boundary. Use --ea-stacks "
            "encoder,cross (fairseq's cross-self-attention in the decoder, evolving encoder "
            "and encoder-decoder attention), or drop --cross-self-attention."
        )
    for side, side_stacks in (("encoder", ("encoder",)), ("decoder", ("decoder", "cross"))):
        evolving = [stack for stack in side_stacks if stack in stacks]
        if evolving and getattr(getattr(cfg, side), "xformers_att_config", None):
            raise ValueError(
                f"--{side}-xformers-att-config is not supported with evolving {side} attention "
                f"({','.join(evolving)} in --ea-stacks): xFormers computes the softmax of QK^T "
                f"inside its kernel, where the map cannot evolve. Drop "
                f"--{side}-xformers-att-config: fairseq's own attention path then runs."
            )


def _wrap_layer(layer, cfg, chains):
    """fairseq's wrapping of a built layer: activation checkpointing (with the chains' maps
    as explicit inputs and outputs), then FSDP (which always wraps a checkpointed layer)."""
    if cfg.checkpoint_activations:
        layer = checkpoint_evolving_layer(layer, chains, offload_to_cpu=cfg.offload_activations)
    min_params_to_wrap = 0 if cfg.checkpoint_activations else cfg.min_params_to_wrap
    return fsdp_wrap(layer, min_num_params=min_params_to_wrap)


class EATransformerEncoderLayer(TransformerEncoderLayerBase):
    """Encoder layer whose self-attention evolves along ``self_attn_chain``."""

    def __init__(self, cfg, self_attn_chain: AttentionChain, return_fc=False):
        # set before super().__init__, which calls build_self_attention
        self.self_attn_chain = self_attn_chain
        super().__init__(cfg, return_fc=return_fc)

    def build_self_attention(self, embed_dim, cfg):
        return EvolvingMultiheadAttention(
            embed_dim,
            cfg.encoder.attention_heads,
            chain=self.self_attn_chain,
            evolving=self.self_attn_chain.add_layer(cfg.encoder.attention_heads),
            dropout=cfg.attention_dropout,
            self_attention=True,
            q_noise=self.quant_noise,
            qn_block_size=self.quant_noise_block_size,
        )


class EATransformerDecoderLayer(TransformerDecoderLayerBase):
    """Decoder layer whose self- and/or encoder-decoder attention evolve.

    A chain that is None leaves that attention fairseq's own.
    """

    def __init__(
        self,
        cfg,
        self_attn_chain,
        cross_attn_chain,
        no_encoder_attn=False,
        add_bias_kv=False,
        add_zero_attn=False,
    ):
        self.self_attn_chain = self_attn_chain
        self.cross_attn_chain = cross_attn_chain
        super().__init__(cfg, no_encoder_attn, add_bias_kv, add_zero_attn)

    def build_self_attention(self, embed_dim, cfg, add_bias_kv=False, add_zero_attn=False):
        if self.self_attn_chain is None:
            return super().build_self_attention(embed_dim, cfg, add_bias_kv, add_zero_attn)
        return EvolvingMultiheadAttention(
            embed_dim,
            cfg.decoder.attention_heads,
            chain=self.self_attn_chain,
            evolving=self.self_attn_chain.add_layer(cfg.decoder.attention_heads),
            dropout=cfg.attention_dropout,
            add_bias_kv=add_bias_kv,
            add_zero_attn=add_zero_attn,
            self_attention=True,
            q_noise=self.quant_noise,
            qn_block_size=self.quant_noise_block_size,
        )

    def build_encoder_attention(self, embed_dim, cfg):
        if self.cross_attn_chain is None:
            return super().build_encoder_attention(embed_dim, cfg)
        return EvolvingMultiheadAttention(
            embed_dim,
            cfg.decoder.attention_heads,
            chain=self.cross_attn_chain,
            evolving=self.cross_attn_chain.add_layer(cfg.decoder.attention_heads),
            kdim=cfg.encoder.embed_dim,
            vdim=cfg.encoder.embed_dim,
            dropout=cfg.attention_dropout,
            encoder_decoder_attention=True,
            q_noise=self.quant_noise,
            qn_block_size=self.quant_noise_block_size,
        )


def _kept_layer_ids(layers_to_keep):
    """``--*-layers-to-keep`` ("0,2" or [0, 2]) as sorted ints, or None (no pruning)."""
    if not layers_to_keep:
        return None
    if isinstance(layers_to_keep, str):
        layers_to_keep = layers_to_keep.split(",")
    return sorted(int(layer) for layer in layers_to_keep)


class EATransformerEncoder(TransformerEncoderBase):
    def __init__(self, cfg, dictionary, embed_tokens, return_fc=False):
        ea_cfg = EvolvingAttentionConfig.from_args(cfg)
        self.self_attn_chain = None
        _check_supported(cfg, ea_cfg.stacks)
        if "encoder" in ea_cfg.stacks:
            self.self_attn_chain = AttentionChain(
                "encoder", ea_cfg, _kept_layer_ids(cfg.encoder.layers_to_keep)
            )
        super().__init__(cfg, dictionary, embed_tokens, return_fc=return_fc)

    def build_encoder_layer(self, cfg):
        if self.self_attn_chain is None:
            return super().build_encoder_layer(cfg)
        layer = EATransformerEncoderLayer(cfg, self.self_attn_chain, return_fc=self.return_fc)
        return _wrap_layer(layer, cfg, [self.self_attn_chain])

    def forward(
        self, src_tokens, src_lengths=None, return_all_hiddens: bool = False, token_embeddings=None
    ):
        if self.self_attn_chain is None:
            return super().forward(src_tokens, src_lengths, return_all_hiddens, token_embeddings)
        # the mask whether or not it has padding: asking would synchronise with the device
        self.self_attn_chain.open(src_tokens.eq(self.padding_idx))
        try:
            return super().forward(src_tokens, src_lengths, return_all_hiddens, token_embeddings)
        finally:
            self.self_attn_chain.close()


class EATransformerDecoder(TransformerDecoderBase):
    def __init__(
        self, cfg, dictionary, embed_tokens, no_encoder_attn=False, output_projection=None
    ):
        ea_cfg = EvolvingAttentionConfig.from_args(cfg)
        self.self_attn_chain = self.cross_attn_chain = None
        _check_supported(cfg, ea_cfg.stacks)
        layer_ids = _kept_layer_ids(cfg.decoder.layers_to_keep)
        if "decoder" in ea_cfg.stacks:
            self.self_attn_chain = AttentionChain("decoder", ea_cfg, layer_ids)
        if "cross" in ea_cfg.stacks and not no_encoder_attn:
            self.cross_attn_chain = AttentionChain("cross", ea_cfg, layer_ids)
        super().__init__(
            cfg,
            dictionary,
            embed_tokens,
            no_encoder_attn=no_encoder_attn,
            output_projection=output_projection,
        )

    @property
    def attn_chains(self):
        return [c for c in (self.self_attn_chain, self.cross_attn_chain) if c is not None]

    def build_decoder_layer(self, cfg, no_encoder_attn=False):
        if not self.attn_chains:
            return super().build_decoder_layer(cfg, no_encoder_attn)
        layer = EATransformerDecoderLayer(
            cfg, self.self_attn_chain, self.cross_attn_chain, no_encoder_attn
        )
        return _wrap_layer(layer, cfg, self.attn_chains)

    def extract_features(
        self,
        prev_output_tokens,
        encoder_out,
        incremental_state=None,
        full_context_alignment: bool = False,
        alignment_layer=None,
        alignment_heads=None,
    ):
        chains = self.attn_chains
        if chains:
            tokens = prev_output_tokens if incremental_state is None else prev_output_tokens[:, -1:]
            padding_mask = tokens.eq(self.padding_idx)  # not .any(): no device synchronisation
            for chain in chains:
                chain.open(padding_mask)
        try:
            return super().extract_features(
                prev_output_tokens,
                encoder_out,
                incremental_state=incremental_state,
                full_context_alignment=full_context_alignment,
                alignment_layer=alignment_layer,
                alignment_heads=alignment_heads,
            )
        finally:
            for chain in chains:
                chain.close()


# argparse types that validate each ``--ea-*`` value and keep the validator's message
_EA_ARG_TYPES = {
    "ea_alpha": ("A", evolving_attention.parse_alpha),
    "ea_beta": ("B", evolving_attention.parse_beta),
    "ea_kernel_size": ("K", evolving_attention.parse_kernel_size),
    "ea_activation": ("ACT", evolving_attention.parse_activation),
    "ea_stacks": ("STACKS", evolving_attention.parse_stacks),
    "ea_ramp_updates": ("N", evolving_attention.parse_ramp_updates),
}


def add_evolving_attention_args(parser):
    """The ``--ea-*`` options, from :class:`EATransformerConfig`'s fields (defaults
    come from the architecture, as for fairseq's own options)."""
    for name in ea_field_names():
        fld = EATransformerConfig.__dataclass_fields__[name]
        metavar, parse = _EA_ARG_TYPES[name]
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=_argparse_type(parse),
            metavar=metavar,
            help=f"{fld.metadata['help']} (default {fld.default})",
        )


@register_model("ea_transformer")
class EATransformerModel(TransformerModel):
    """fairseq's transformer with evolving attention (Wang et al., ICML 2021).

    Every option of fairseq's ``transformer`` applies; ``--ea-*`` add the
    evolving attention.
    """

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        add_evolving_attention_args(parser)

    @classmethod
    def build_model(cls, args, task):
        """Build from a Namespace (fairseq-train, checkpoints) or a DictConfig
        (fairseq-hydra-train): both become one :class:`EATransformerConfig`,
        which validates the ``ea_*`` values and is what every layer is built from."""
        ea_base_architecture(args)
        # as fairseq's transformer does on its args: a pruned stack's layer count is
        # saved with the checkpoint (pruning then clears *_layers_to_keep)
        for side in ("encoder", "decoder"):
            kept = _kept_layer_ids(getattr(args, f"{side}_layers_to_keep", None))
            if kept:
                with open_dict(args) if OmegaConf.is_config(args) else contextlib.nullcontext():
                    setattr(args, f"{side}_layers", len(kept))
        return super().build_model(EATransformerConfig.from_namespace(args), task)

    @classmethod
    def build_encoder(cls, args, src_dict, embed_tokens):
        return EATransformerEncoder(EATransformerConfig.from_namespace(args), src_dict, embed_tokens)

    @classmethod
    def build_decoder(cls, args, tgt_dict, embed_tokens):
        return EATransformerDecoder(
            EATransformerConfig.from_namespace(args),
            tgt_dict,
            embed_tokens,
            no_encoder_attn=args.no_cross_attention,
        )

    def upgrade_state_dict_named(self, state_dict, name):
        """Let a plain transformer checkpoint initialise this model (warm start).

        A checkpoint without any evolving-attention convolutions gets this
        model's freshly initialised ones; a checkpoint that has some must have
        them all (fairseq's strict loading says which are missing). The ramp's
        update counters (``*.evolving.ramp_step``) follow this model's
        ``--ea-ramp-updates``: missing ones start from this model's, and those
        of a ramp this model does not have are dropped.
        """
        super().upgrade_state_dict_named(state_dict, name)
        prefix = name + "." if name else ""
        # with --*-layers-to-keep the checkpoint still has the original layer indices (fairseq
        # prunes it after this upgrade): this model's keys are named by those
        original = self._original_layer_ids()
        own = {
            prefix + _LAYER_INDEX.sub(lambda m: f"{m[1]}.layers.{original[m[1]][int(m[2])]}.", key):
                value
            for key, value in self.state_dict().items()
            if ".evolving." in key
        }
        if own and not any(".evolving.conv." in key for key in state_dict):
            logger.info(
                "checkpoint has no evolving-attention parameters: starting %d "
                "convolution tensors from their initialisation (warm start)",
                sum(".evolving.conv." in key for key in own),
            )
            state_dict.update(own)
        theirs = [k for k in state_dict if k.startswith(prefix) and ".evolving." in k]
        if not any(k.endswith(_RAMP_STEP) for k in own):
            for key in theirs:
                if key.endswith(_RAMP_STEP):
                    del state_dict[key]
        elif not any(k.endswith(_RAMP_STEP) for k in theirs):
            state_dict.update((k, v) for k, v in own.items() if k.endswith(_RAMP_STEP))
        # the first layer a stack builds starts its chain and has no convolution: one that a
        # checkpoint holds there (its original layer 0 was pruned away) is never used
        first = {side: f"{side}.layers.{ids[0]}." for side, ids in original.items() if ids}
        for key in theirs:
            match = _LAYER_INDEX.search(key)
            if (match and key.startswith(prefix + first.get(match[1], "-"))
                    and key not in own and key in state_dict):
                del state_dict[key]

    def _original_layer_ids(self):
        """``{side: [original index of each built layer]}`` for encoder and decoder."""
        ids = {}
        for side, module in (("encoder", self.encoder), ("decoder", self.decoder)):
            chains = [c for c in (getattr(module, "self_attn_chain", None),
                                  getattr(module, "cross_attn_chain", None)) if c is not None]
            kept = chains[0].layer_ids if chains else None
            ids[side] = kept if kept is not None else list(range(len(module.layers)))
        return ids


@register_model_architecture("ea_transformer", "ea_transformer")
def ea_base_architecture(args):
    base_architecture(args)
    for name in ea_field_names():
        if getattr(args, name, None) is None:
            setattr(args, name, EATransformerConfig.__dataclass_fields__[name].default)


def _ea_architecture(name, transformer_architecture):
    """Register ``name``: fairseq's ``transformer_architecture`` sizes plus EA defaults."""

    @register_model_architecture("ea_transformer", name)
    def architecture(args):
        transformer_architecture(args)
        ea_base_architecture(args)

    architecture.__name__ = name
    return architecture


ea_transformer_tiny = _ea_architecture("ea_transformer_tiny", tiny_architecture)
ea_transformer_iwslt_de_en = _ea_architecture("ea_transformer_iwslt_de_en", transformer_iwslt_de_en)
ea_transformer_wmt_en_de = _ea_architecture("ea_transformer_wmt_en_de", transformer_wmt_en_de)
ea_transformer_vaswani_wmt_en_de_big = _ea_architecture(
    "ea_transformer_vaswani_wmt_en_de_big", transformer_vaswani_wmt_en_de_big
)
ea_transformer_vaswani_wmt_en_fr_big = _ea_architecture(
    "ea_transformer_vaswani_wmt_en_fr_big", transformer_vaswani_wmt_en_fr_big
)
ea_transformer_wmt_en_de_big = _ea_architecture("ea_transformer_wmt_en_de_big", transformer_wmt_en_de_big)
ea_transformer_wmt_en_de_big_t2t = _ea_architecture(
    "ea_transformer_wmt_en_de_big_t2t", transformer_wmt_en_de_big_t2t
)
