"""The evolving-attention map transform as a chain of plain tensor operations: the
test oracle of the fused evo_fairseq.modules.evolving_map (not used by the package)."""

import torch
import torch.nn.functional as F

ACTIVATIONS = {
    "relu": F.relu,
    "leaky_relu": F.leaky_relu,
    "gelu": F.gelu,
    "linear": lambda x: x,
}


def reference_evolve(logits, prev, weight, bias, alpha, beta, activation="relu", causal=False,
                     blocked=None, history=None):
    """Returns ``(A, M zeroed at blocked cells, act(conv(M)))``; A is not masked."""
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
    return torch.lerp(mixed, conv_out, beta), conv_in, conv_out
