# Copyright (c) evo-fairseq contributors.
#
# This source code is licensed under the MIT license found in the
# LICENSE file in the root directory of this source tree.
"""The ``fairseq-train`` model options that rebuild a plain transformer checkpoint as an
EA-Transformer of the same shape (used by ``scripts/finetune-ea.sh``).

Usage: python -m evo_fairseq.warm_start PLAIN_CHECKPOINT

Prints one option or value per line: ``--arch ea_<arch>`` (``ea_transformer`` where no
EA twin of the architecture is registered), then every transformer model option the
checkpoint was trained with, so the EA model has exactly the plain model's shapes and
the checkpoint loads into it (``--restore-file``; the convolutions start fresh).
"""

import argparse
import sys
from typing import List

from fairseq import checkpoint_utils
from fairseq.models import ARCH_MODEL_REGISTRY
from fairseq.models.transformer import TransformerModel

import evo_fairseq  # noqa: F401  (registers the EA architectures)
from evo_fairseq.models import EATransformerModel

# task-level or run-level options that are not part of the architecture
_SKIP = {"max_source_positions", "max_target_positions", "checkpoint_activations",
         "offload_activations", "min_params_to_wrap"}


def _transformer_options():
    parser = argparse.ArgumentParser(add_help=False)
    TransformerModel.add_args(parser)
    return [action for action in parser._actions if action.dest not in _SKIP]


def ea_model_args(checkpoint_path: str) -> List[str]:
    """``fairseq-train`` options for an EA model shaped like the checkpoint's transformer."""
    state = checkpoint_utils.load_checkpoint_to_cpu(checkpoint_path)
    model_cfg = state["cfg"]["model"] if state.get("cfg") is not None else state["args"]
    arch = getattr(model_cfg, "arch", None) or getattr(model_cfg, "_name", None)
    model_class = ARCH_MODEL_REGISTRY.get(arch)
    if model_class is None or not issubclass(model_class, TransformerModel):
        raise ValueError(
            f"{checkpoint_path}: architecture {arch!r} is not one of fairseq's transformer "
            "architectures (--arch transformer*), which an EA-Transformer can start from"
        )
    if issubclass(model_class, EATransformerModel):
        raise ValueError(
            f"{checkpoint_path}: already an EA-Transformer ({arch}); continue training it "
            "with fairseq-train --restore-file instead"
        )
    ea_arch = "ea_" + arch if "ea_" + arch in ARCH_MODEL_REGISTRY else "ea_transformer"
    args = ["--arch", ea_arch]
    for action in _transformer_options():
        value = getattr(model_cfg, action.dest, None)
        if value is None:
            continue
        if action.dest == "decoder_output_dim" and str(value) == str(
            getattr(model_cfg, "decoder_embed_dim", None)
        ):
            continue  # the default, which fairseq's parser would read back as a string
        if isinstance(action, argparse._StoreTrueAction):
            if value:
                args.append(action.option_strings[0])
        elif isinstance(action, argparse._StoreAction):
            if isinstance(value, (list, tuple)):
                value = ",".join(str(v) for v in value)
            args += [action.option_strings[0], str(value)]
    return args


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m evo_fairseq.warm_start",
        description="Print the fairseq-train model options (one per line) that rebuild a "
                    "plain transformer checkpoint as an EA-Transformer of the same shape.",
    )
    parser.add_argument("checkpoint", help="a checkpoint of fairseq's transformer")
    args = parser.parse_args(argv)
    try:
        options = ea_model_args(args.checkpoint)
    except (OSError, ValueError) as err:
        sys.exit(f"error: {err}")
    print("\n".join(options))


if __name__ == "__main__":
    main()
