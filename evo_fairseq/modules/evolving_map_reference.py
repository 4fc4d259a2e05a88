# Copyright (c) evo-fairseq contributors.
#
# This source code is licensed under the MIT license found in the
# LICENSE file in the root directory of this source tree.
"""The evolving map transform as plain tensor operations: the readable statement of
the math, and the oracle the fused :func:`~evo_fairseq.modules.evolving_map.evolve_map`
is checked against (by the tests and by ``python -m evo_fairseq.selfcheck``).

With shapes ``(bsz, heads, tgt_len, src_len)``, layer i >= 2 of a stack computes::

    M_i = (1 - alpha) * S_i + alpha * A_{i-1}
    A_i = beta * act(Conv2d(M_i with blocked cells 0)) + (1 - beta) * M_i
    A_i[masked] = finfo.min / 2                          (the softmax's input)

Heads are the convolution's channels. It is centred along both axes (encoder), or
causal along tgt_len (decoder self- and cross-attention): row t sees rows
t - k + 1 .. t, zero-padded above. Incremental decoding keeps the k - 1 previous
(zeroed) mixed rows and convolves ``[history; M]`` without padding along tgt_len.

Everything here is differentiable by autograd and runs under autocast as any
composition of torch operations does; nothing is fused or done in place.
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

ACTIVATIONS = {
    "relu": F.relu,
    "leaky_relu": F.leaky_relu,
    "gelu": F.gelu,
    "linear": lambda x: x,
}


def reference_evolve(
    logits: Tensor,
    prev: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    alpha: float,
    beta: float,
    activation: str = "relu",
    causal: bool = False,
    blocked: Optional[Tensor] = None,
    history: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Returns ``(A_i before masking, M_i zeroed at blocked cells, act(conv(M_i)))``.

    ``history``: causal incremental decoding only, the k - 1 kept zeroed mixed rows
    ``(bsz, heads, k - 1, <= src_len)`` (narrower rows are zero-extended on the right).
    """
    k = weight.size(-1)
    half = k // 2
    mixed = torch.lerp(logits, prev.to(logits), alpha)
    conv_in = mixed if blocked is None else mixed.masked_fill(blocked, 0.0)
    if history is not None:
        history = F.pad(history, (0, conv_in.size(-1) - history.size(-1)))
        window = torch.cat([history.to(conv_in), conv_in], dim=2)
        padded = F.pad(window, (half, half))
    elif causal:
        padded = F.pad(conv_in, (half, half, k - 1, 0))
    else:
        padded = F.pad(conv_in, (half, half, half, half))
    conv_out = ACTIVATIONS[activation](F.conv2d(padded, weight, bias))
    return torch.lerp(mixed, conv_out.to(mixed.dtype), beta), conv_in, conv_out


def reference_evolve_map(
    logits: Tensor,
    prev: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    alpha: float,
    beta: float,
    activation: str = "relu",
    causal: bool = False,
    blocked: Optional[Tensor] = None,
    masked: Optional[Tensor] = None,
    history: Optional[Tensor] = None,
    keep_conv_out: bool = False,
) -> Tuple[Tensor, Tensor, Optional[Tensor], Optional[Tensor]]:
    """:func:`evolve_map`'s contract (arguments and returns) by :func:`reference_evolve`;
    ``logits`` is left untouched."""
    out, mixed, conv_out = reference_evolve(logits, prev, weight, bias, alpha, beta,
                                            activation, causal, blocked, history)
    if masked is not None:
        out = out.masked_fill(masked, torch.finfo(out.dtype).min / 2)
    new_history = None
    if history is not None:
        history = F.pad(history, (0, mixed.size(-1) - history.size(-1)))
        window = torch.cat([history.to(mixed), mixed], dim=2)
        new_history = window[:, :, window.size(2) - history.size(2):]
    return out, mixed, conv_out if keep_conv_out else None, new_history
