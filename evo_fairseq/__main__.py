"""``python -m evo_fairseq --help``: the evolving-attention options.

``fairseq-train --help`` lists no model's options (fairseq parses ``--help``
before it adds them), so this prints ours.
"""

import argparse
import os

from evo_fairseq.models.ea_transformer import add_evolving_attention_args

parser = argparse.ArgumentParser(
    prog="fairseq-train DATA_BIN --user-dir "
    f"{os.path.dirname(os.path.abspath(__file__))} --arch ea_transformer_*",
    description="Evolving-attention options of the ea_transformer model; every option "
    "of fairseq's transformer applies too.",
)
add_evolving_attention_args(parser)
parser.parse_args()
parser.print_help()
