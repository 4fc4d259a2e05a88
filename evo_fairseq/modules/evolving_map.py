# Copyright (c) evo-fairseq contributors.
#
# This source code is licensed under the MIT license found in the
# LICENSE file in the root directory of this source tree.
"""The map transform of one evolving layer, as one autograd Function.

Forward, in the map's dtype, with shapes ``(bsz, heads, tgt_len, src_len)``::

    M = lerp(S, A_prev, alpha)        in place in S's storage (fairseq's QK^T output) when
                                      there are masks; without, a new tensor
    Mz = M with blocked cells 0       the convolution's input (M itself without masks)
    C = act(Conv2d(Mz) + b)           centred, or causal along tgt_len (padding k - 1
                                      above, the rows below it dropped); no padded copy
    A = lerp(M, C, beta)              in place, in S's storage (or C's without masks)
    A[masked] = fill                  the softmax's input, handed on to the next layer

Backward is written by hand and keeps only what the gradients need: Mz (the
convolution's input, which is also what the incremental decoder keeps) and, for
relu and leaky_relu, the sign of the convolution's output as a bool map (gelu
keeps its pre-activation; linear nothing). Blocked cells pass no gradient
through the convolution, masked cells none at all. Incremental decoding passes
the k - 1 kept mixed rows as ``history``: the convolution then runs on
``[history; M]`` without padding along tgt_len and yields exactly the new rows.
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

ACTIVATIONS = ("relu", "leaky_relu", "gelu", "linear")
LEAKY_SLOPE = 0.01  # F.leaky_relu's default
LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
# The convolutions' memory layout by device type, chosen by measurement: on CPU channels_last
# won forward+backward at 5 of 6 lengths from 16 to 512 tokens
# (docs/results/precision-change/layout_cpu.md); CUDA keeps the contiguous layout until a GPU measures both (scaling --layouts). The maps stay
# contiguous outside the convolutions (fairseq views them as (bsz * heads, tgt_len, src_len)),
# so another layout costs a copy in and out, included in those timings.
CONV_LAYOUT = {"cpu": "channels_last", "cuda": "contiguous"}


def set_conv_layout(device_type: str, layout: str):
    """Choose the convolutions' layout (``contiguous`` or ``channels_last``) on a device type."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    CONV_LAYOUT[device_type] = layout


def _conv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor], padding) -> Tensor:
    """``F.conv2d`` in the device's chosen layout; the result is contiguous."""
    layout = CONV_LAYOUT.get(x.device.type, "contiguous")
    if layout == "contiguous":
        return F.conv2d(x, weight, bias, padding=padding)
    fmt = LAYOUTS[layout]
    out = F.conv2d(x.contiguous(memory_format=fmt), weight.contiguous(memory_format=fmt), bias,
                   padding=padding)
    return out.contiguous()


def _conv2d_weight(x: Tensor, weight: Tensor, grad: Tensor, padding) -> Tensor:
    """The weight's gradient of :func:`_conv2d`, in the same layout."""
    layout = CONV_LAYOUT.get(x.device.type, "contiguous")
    if layout != "contiguous":
        fmt = LAYOUTS[layout]
        x, grad = x.contiguous(memory_format=fmt), grad.contiguous(memory_format=fmt)
    return torch.nn.grad.conv2d_weight(x, weight.shape, grad, padding=padding)


def blocked_fill(dtype: torch.dtype) -> float:
    """What blocked cells of A hold: half the dtype's minimum, so that the next layer's
    ``lerp`` over them stays finite (exp of it is 0 in the softmax)."""
    return torch.finfo(dtype).min / 2


def _no_autocast(like: Tensor):
    """Autocast off on ``like``'s device: the transform runs in its inputs' one dtype (its
    backward, which autocast never wraps, then meets the same dtypes)."""
    return torch.autocast(like.device.type, enabled=False)


def _forward(ctx, logits, prev, weight, bias, history, blocked, masked, alpha, beta,
             activation, causal, extras, training):
    """The forward pass; with ``training``, ``ctx`` keeps what the backward pass needs."""
    k = weight.size(-1)
    half = k // 2
    tgt_len = logits.size(2)
    if blocked is None:  # M is the convolution's input, kept for backward: a new tensor
        mixed = conv_in = torch.lerp(logits, prev, alpha)
    else:  # M in S's storage (A goes there too), its zeroed copy for the convolution
        mixed = logits.lerp_(prev, alpha)
        if ctx is not None:
            ctx.mark_dirty(logits)
        conv_in = mixed.masked_fill(blocked, 0.0)

    if history is not None:
        window = torch.cat([history, conv_in], dim=2)
        extras["window"] = window
        pre = _conv2d(window, weight, bias, (0, half))
    elif causal:
        pre = _conv2d(conv_in, weight, bias, (k - 1, half))[:, :, :tgt_len]
    else:
        pre = _conv2d(conv_in, weight, bias, (half, half))

    sign = saved_pre = None
    if activation in ("relu", "leaky_relu"):
        sign = pre > 0 if training else None
        conv_out = pre.relu_() if activation == "relu" else F.leaky_relu_(pre, LEAKY_SLOPE)
    elif activation == "gelu":
        saved_pre = pre if training else None
        conv_out = F.gelu(pre)
    else:
        conv_out = pre
    # side outputs (no gradient): autograd allows one output for an in-place view
    extras["mixed"] = conv_in.detach()
    if extras.get("keep_conv_out"):
        extras["conv_out"] = conv_out.detach().clone()

    if conv_in is not mixed:
        # M is needed no more (the convolution's input is its zeroed copy): A takes S's storage
        out = mixed.lerp_(conv_out, beta)
    elif conv_out.is_contiguous() and saved_pre is not conv_out:
        out = torch.lerp(mixed, conv_out, beta, out=conv_out)
    else:
        out = torch.lerp(mixed, conv_out, beta)
    if masked is not None:
        out.masked_fill_(masked, blocked_fill(out.dtype))

    if training:
        ctx.save_for_backward(conv_in, weight, history, blocked, masked, sign, saved_pre)
        ctx.settings = (alpha, beta, activation, causal, half, bias is not None)
    return out


class EvolvingMapFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, prev, weight, bias, history, blocked, masked, alpha, beta,
                activation, causal, extras):
        training = any(ctx.needs_input_grad[:4])  # nothing to keep for inference
        with _no_autocast(logits):
            return _forward(ctx, logits, prev, weight, bias, history, blocked, masked, alpha,
                            beta, activation, causal, extras, training)

    @staticmethod
    def backward(ctx, grad_out):
        conv_in, weight, history, blocked, masked, sign, pre = ctx.saved_tensors
        alpha, beta, activation, causal, half, has_bias = ctx.settings
        k = weight.size(-1)
        if masked is not None:
            grad_out = grad_out.masked_fill(masked, 0.0)
        grad_act = grad_out * beta
        if activation == "relu":
            grad_pre = grad_act.mul_(sign)
        elif activation == "leaky_relu":
            grad_pre = torch.where(sign, grad_act, grad_act * LEAKY_SLOPE)
        elif activation == "gelu":
            # no public API computes GELU's derivative from the kept pre-activation;
            # the composition Phi(x) + x phi(x) would take five kernels instead of one
            grad_pre = torch.ops.aten.gelu_backward(grad_act, pre)
        else:
            grad_pre = grad_act

        if history is not None:
            window = torch.cat([history, conv_in], dim=2)
            padding = (0, half)
        else:
            window = conv_in
            padding = (k - 1, half) if causal else (half, half)
        needs = ctx.needs_input_grad
        needs_mixed = needs[0] or needs[1]
        grad_input = grad_weight = grad_bias = None
        if needs_mixed:
            # the input's gradient as a forward convolution with the flipped kernel (a full
            # correlation over the rows, the rows this convolution's output came from);
            # faster than convolution_backward's own on small channel counts
            flipped = weight.transpose(0, 1).flip(2, 3)
            grad_input = _conv2d(grad_pre, flipped, None, (k - 1 if causal else half, half))
            if causal and history is None:
                grad_input = grad_input[:, :, k - 1:]
        if needs[2] or (has_bias and needs[3]):
            if causal and history is None:  # the rows the forward pass dropped
                grad_pre = F.pad(grad_pre, (0, 0, 0, k - 1))
            if needs[2]:
                grad_weight = _conv2d_weight(window, weight, grad_pre, padding)
            if has_bias and needs[3]:
                grad_bias = grad_pre.sum((0, 2, 3))

        grad_logits = grad_prev = None
        if needs_mixed:
            if history is not None:
                grad_input = grad_input[:, :, history.size(2):]
            if blocked is not None:
                grad_input = grad_input.masked_fill_(blocked, 0.0)
            grad_mixed = grad_input.add_(grad_out, alpha=1.0 - beta)
            if needs[0]:
                grad_logits = grad_mixed * (1.0 - alpha)
            if needs[1]:
                grad_prev = grad_mixed * alpha
        return (grad_logits, grad_prev, grad_weight, grad_bias if has_bias else None,
                None, None, None, None, None, None, None, None)


def evolve_map(
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
    """Evolve ``logits`` S_i into A_i (see the module docstring); S_i's storage is reused.

    Args:
        logits: S_i ``(bsz, heads, tgt_len, src_len)``; overwritten with M_i.
        prev: A_{i-1}, same shape.
        weight, bias: the ``heads x heads x k x k`` convolution.
        blocked: bool, broadcastable to ``(bsz, 1, tgt_len, src_len)``: zeroed in the
            convolution's input (padded keys, padded queries, future keys).
        masked: bool, broadcastable likewise, a subset of ``blocked``: set to
            :func:`blocked_fill` in A_i (the attention mask; fairseq masks padded keys
            itself and ignores padded queries).
        history: causal incremental decoding: the k - 1 kept mixed rows,
            ``(bsz, heads, k - 1, <= src_len)`` (narrower rows are zero-extended).
        keep_conv_out: also return act(conv(M_i)) (for attention capture).

    Returns:
        ``(A_i, M_i zeroed at blocked cells, conv_out or None, new_history or None)``:
        with ``history``, the k - 1 newest zeroed mixed rows to keep.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    new_history = None
    if history is not None:
        assert causal, "only a causal convolution keeps earlier rows"
        src_len = logits.size(-1)
        if history.size(-1) < src_len:
            history = F.pad(history, (0, src_len - history.size(-1)))
    # one dtype throughout, the map's: under autocast (fairseq's --amp) S_i comes from a
    # half-precision matmul while the convolution's parameters stay fp32; the casts are
    # differentiable, so fp32 parameters get fp32 gradients, as autocast's own casts give
    dtype = logits.dtype
    prev, weight = prev.to(dtype), weight.to(dtype)
    bias = None if bias is None else bias.to(dtype)
    if history is not None:
        history = history.to(dtype)
    extras = {"keep_conv_out": keep_conv_out}
    args = (logits, prev, weight, bias, history, blocked, masked, float(alpha), float(beta),
            activation, causal, extras)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (logits, prev, weight, bias)
                                       if t is not None):
        out = EvolvingMapFunction.apply(*args)
    else:  # inference (beam search steps): no autograd bookkeeping at all
        with _no_autocast(logits):
            out = _forward(None, *args, training=False)
    mixed, conv_out = extras["mixed"], extras.get("conv_out")
    if history is not None:
        window = extras["window"]
        new_history = window[:, :, window.size(2) - history.size(2):]
    return out, mixed, conv_out, new_history
