# Copyright (c) evo-fairseq contributors.
#
# This source code is licensed under the MIT license found in the
# LICENSE file in the root directory of this source tree.
"""EATransformerConfig: fairseq's ``TransformerConfig`` plus the ``ea_*`` options.

It is the one path from a setting to the layers. ``fairseq-train`` (a flat
``argparse.Namespace``), ``fairseq-hydra-train`` (the ``model:`` section, a
``DictConfig``), checkpoints and the hub all end in
:meth:`EATransformerConfig.from_namespace`, which copies every field, validates
the ``ea_*`` values, and is what the encoder, the decoder and their layers are
built from.
"""

from dataclasses import dataclass, field

from fairseq.models.transformer import TransformerConfig

from evo_fairseq.modules.evolving_attention import (
    ACTIVATIONS,
    STACKS,
    EvolvingAttentionConfig,
)

_DEFAULT = EvolvingAttentionConfig()


@dataclass
class EATransformerConfig(TransformerConfig):
    ea_alpha: float = field(
        default=_DEFAULT.alpha,
        metadata={"help": "evolving attention: weight of the previous layer's attention "
                          "map, in [0, 1]"},
    )
    ea_beta: float = field(
        default=_DEFAULT.beta,
        metadata={"help": "evolving attention: weight of the convolution branch, in [0, 1]"},
    )
    ea_kernel_size: int = field(
        default=_DEFAULT.kernel_size,
        metadata={"help": "evolving attention: size of the KxK convolution over attention "
                          "maps, a positive odd integer"},
    )
    ea_activation: str = field(
        default=_DEFAULT.activation,
        metadata={"help": "evolving attention: activation after the convolution, one of "
                          + ", ".join(ACTIVATIONS)},
    )
    ea_stacks: str = field(
        default=",".join(_DEFAULT.stacks),
        metadata={"help": "evolving attention: comma-separated attention stacks that evolve, "
                          f"from {','.join(STACKS)}; 'none' gives fairseq's transformer"},
    )
    ea_ramp_updates: int = field(
        default=_DEFAULT.ramp_updates,
        metadata={"help": "evolving attention, for warm starts from a plain transformer: over "
                          "the first N training updates, alpha and beta rise linearly from 0 "
                          "(fairseq's transformer) to their values; 0 turns the ramp off"},
    )

    @classmethod
    def from_namespace(cls, args):
        """Fill from a Namespace, a DictConfig or a TransformerConfig; validate ``ea_*``."""
        cfg = super().from_namespace(args)
        cfg.ea_stacks = ",".join(cfg.evolving_attention().stacks) or "none"
        return cfg

    def evolving_attention(self) -> EvolvingAttentionConfig:
        """The validated ``ea_*`` values (ValueError names the option and what is allowed)."""
        return EvolvingAttentionConfig.from_args(self)


def ea_field_names():
    """The ``ea_*`` fields, in declaration order."""
    return [name for name in EATransformerConfig.__dataclass_fields__ if name.startswith("ea_")]
