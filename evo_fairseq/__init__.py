# Copyright (c) evo-fairseq contributors.
#
# This source code is licensed under the MIT license found in the
# LICENSE file in the root directory of this source tree.
"""evo-fairseq: evolving attention (EA-Transformer) for fairseq.

Use it as a fairseq user directory, by its absolute path (the clone's ``evo_fairseq``)::

    fairseq-train DATA_BIN --user-dir "$EVO/evo_fairseq" --arch ea_transformer_iwslt_de_en ...
"""

__version__ = "0.1.0"

from evo_fairseq import compat

compat.apply()

from evo_fairseq import models  # noqa: E402,F401  (registers ea_transformer)
