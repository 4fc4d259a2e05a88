"""The fused map transform against the plain composition (evolving_map_reference):
forward within 1e-6 in fp32, hand-written gradients by gradcheck in float64 and against
autograd of the composition, for every stack, padding side, kernel size, activation and
the incremental path; half precision stays finite."""

import pytest
import torch

from conftest import DEVICES, to_device

from evo_fairseq.modules.evolving_map_reference import reference_evolve
from evo_fairseq.benchmark.scaling import saved_activation_bytes as saved_bytes
from evo_fairseq.modules.evolving_map import ACTIVATIONS, blocked_fill, evolve_map

B, H, T = 2, 3, 5


def masks(stack, padding, tgt_len=T, src_len=T):
    """(blocked, masked) as the layers build them: padded keys and queries, future keys."""
    blocked = torch.zeros(B, 1, tgt_len, src_len, dtype=torch.bool)
    masked = None
    if padding == "left":
        blocked[1, :, :, :2] = True
        if stack == "encoder":
            blocked[1, :, :2, :] = True
    elif padding == "right":
        blocked[1, :, :, -2:] = True
        if stack != "cross":
            blocked[1, :, -2:, :] = True
    if stack == "decoder":
        masked = torch.ones(tgt_len, src_len, dtype=torch.bool).triu(1)[None, None]
        blocked = blocked | masked
    return (blocked if blocked.any() else None), masked


def inputs(k, dtype=torch.float64, seed=0, tgt_len=T, src_len=T):
    gen = torch.Generator().manual_seed(seed)
    make = lambda *shape: torch.randn(*shape, generator=gen, dtype=dtype)
    return (make(B, H, tgt_len, src_len), make(B, H, tgt_len, src_len),
            make(H, H, k, k) * 0.5, make(H))


CASES = [(stack, padding, k, act)
         for stack in ("encoder", "decoder", "cross")
         for padding in ("none", "left", "right")
         for k in (1, 3, 5)
         for act in ACTIVATIONS
         if k == 3 or act == "relu"]  # every kernel size with relu, every activation with k = 3


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("stack,padding,k,act", CASES)
def test_forward_matches_the_composition_and_gradients_are_exact(stack, padding, k, act, device):
    blocked, masked = to_device(device, *masks(stack, padding))
    causal = stack != "encoder"
    alpha, beta = 0.7, 0.4
    logits, prev, weight, bias = to_device(device, *inputs(k, torch.float32))
    out, mixed, conv_out, _ = evolve_map(logits.clone(), prev, weight, bias, alpha, beta, act,
                                         causal, blocked, masked, keep_conv_out=True)
    ref_out, ref_mixed, ref_conv = reference_evolve(logits, prev, weight, bias, alpha, beta, act,
                                                    causal, blocked)
    keep = torch.ones_like(out, dtype=torch.bool) if masked is None else ~masked.expand_as(out)
    assert (out - ref_out)[keep].abs().max() < 1e-6
    if masked is not None:
        assert (out[~keep] == blocked_fill(torch.float32)).all()
    assert (mixed - ref_mixed).abs().max() < 1e-6 and (conv_out - ref_conv).abs().max() < 1e-6

    # float64: gradcheck of the hand-written backward, and autograd of the composition
    logits, prev, weight, bias = (t.requires_grad_() for t in to_device(device, *inputs(k, seed=1)))
    fused = lambda s, p, w, b: evolve_map(s.clone(), p, w, b, alpha, beta, act, causal,
                                          blocked, masked)[0]
    assert torch.autograd.gradcheck(fused, (logits, prev, weight, bias), eps=1e-6, atol=1e-5)
    upstream = torch.randn_like(logits)
    if masked is not None:
        upstream = upstream.masked_fill(masked, 0.0)  # the softmax sees no masked cell
    grads = torch.autograd.grad((fused(logits, prev, weight, bias) * upstream).sum(),
                                (logits, prev, weight, bias))
    ref = reference_evolve(logits, prev, weight, bias, alpha, beta, act, causal, blocked)[0]
    ref_grads = torch.autograd.grad((ref * upstream).sum(), (logits, prev, weight, bias))
    for grad, ref_grad in zip(grads, ref_grads):
        assert torch.allclose(grad, ref_grad, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_incremental_rows_match_and_have_exact_gradients(k, act, device):
    """One new target row against the k - 1 kept rows (narrower keys zero-extended)."""
    src_len = 6
    logits, prev, weight, bias = to_device(device, *inputs(k, tgt_len=1, src_len=src_len, seed=2))
    history = torch.randn(B, H, k - 1, src_len - 1, dtype=torch.float64, device=device)
    blocked = torch.zeros(B, 1, 1, src_len, dtype=torch.bool, device=device)
    blocked[1, ..., :2] = True  # left-padded keys of the second sentence
    out, mixed, _, new_history = evolve_map(logits.clone(), prev, weight, bias, 0.6, 0.5, act,
                                            True, blocked, None, history)
    ref_out, ref_mixed, _ = reference_evolve(logits, prev, weight, bias, 0.6, 0.5, act, True,
                                             blocked, history)
    assert torch.allclose(out, ref_out, atol=1e-12)
    expected_history = torch.cat(
        [torch.nn.functional.pad(history, (0, 1)), ref_mixed], dim=2)[:, :, 1:]
    assert new_history.shape == (B, H, k - 1, src_len)
    assert torch.equal(new_history, expected_history)

    args = tuple(t.requires_grad_() for t in (logits, prev, weight, bias))
    fused = lambda s, p, w, b: evolve_map(s.clone(), p, w, b, 0.6, 0.5, act, True, blocked,
                                          None, history)[0]
    assert torch.autograd.gradcheck(fused, args, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_stays_finite_along_a_chain(dtype, device):
    blocked, masked = to_device(device, *masks("decoder", "right"))
    logits, prev, weight, bias = to_device(device, *inputs(3, dtype))
    for _ in range(4):  # each layer mixes in its predecessor's masked map
        prev, _, _, _ = evolve_map(logits.clone() * 30, prev, weight, bias, 0.9, 0.5, "relu",
                                   True, blocked, masked)
        assert torch.isfinite(prev).all()
        probs = torch.softmax(prev.float(), -1)
        assert torch.isfinite(probs).all() and (probs[masked.expand_as(probs)] == 0).all()


def test_saves_only_what_the_gradients_need():
    """The convolution's input (one map) and a bool sign map; the composition keeps more."""
    blocked, masked = masks("decoder", "left", tgt_len=32, src_len=32)
    logits, prev, weight, bias = (t.float().requires_grad_() for t in inputs(3, tgt_len=32,
                                                                             src_len=32))
    map_bytes = logits.numel() * 4

    fused = saved_bytes(lambda: evolve_map(logits.clone(), prev, weight, bias, 0.8, 0.5, "relu",
                                           True, blocked, masked))
    reference = saved_bytes(lambda: reference_evolve(logits, prev, weight, bias, 0.8, 0.5, "relu",
                                                     True, blocked))
    assert fused <= 1.25 * map_bytes + 4096
    assert reference >= 2 * map_bytes


@pytest.mark.parametrize("stack", ["encoder", "decoder"])
def test_channels_last_layout_computes_the_same(stack):
    """The convolutions' layout (chosen per device by measurement) changes no result:
    forward, the four gradients and the incremental rows agree with the contiguous layout."""
    from evo_fairseq.modules import evolving_map as module

    blocked, masked = masks(stack, "left")
    causal = stack != "encoder"
    leaves = inputs(3, torch.float32, seed=4)

    def run(layout):
        before = module.CONV_LAYOUT["cpu"]
        module.set_conv_layout("cpu", layout)
        try:
            args = [t.clone().requires_grad_() for t in leaves]
            out = evolve_map(args[0].clone(), *args[1:], 0.7, 0.4, "relu", causal, blocked,
                             masked)[0]
            grads = torch.autograd.grad(out.masked_fill(masked, 0).sum() if masked is not None
                                        else out.sum(), args)
            step = evolve_map(leaves[0][:, :, :1].clone(), leaves[1][:, :, :1], leaves[2],
                              leaves[3], 0.7, 0.4, "relu", True, None, None,
                              torch.ones(B, H, 2, T))
            return [out.detach(), *grads, step[0], step[3]]
        finally:
            module.set_conv_layout("cpu", before)

    for contiguous, channels_last in zip(run("contiguous"), run("channels_last")):
        assert torch.allclose(contiguous, channels_last, atol=1e-5)
    with pytest.raises(ValueError, match="layout must be one of contiguous, channels_last"):
        module.set_conv_layout("cpu", "nhwc")


@pytest.mark.parametrize("stack", ["encoder", "decoder", "cross"])
def test_every_activation_and_gradient_subset_against_the_composition(stack):
    """The fast counterpart of the gradcheck test (for the mutation score's test subset):
    float64, left padding, every activation; A, M and act(conv(M)) against the composition,
    and the gradients of each input alone and of all four against its autograd."""
    blocked, masked = masks(stack, "left")
    causal = stack != "encoder"
    keep = torch.ones(B, H, T, T, dtype=torch.bool) if masked is None else ~masked.expand(B, H, T, T)
    for act in ACTIVATIONS:
        logits, prev, weight, bias = inputs(3, seed=3)
        out, mixed, conv_out, new_history = evolve_map(logits.clone(), prev, weight, bias, 0.7,
                                                       0.4, act, causal, blocked, masked,
                                                       keep_conv_out=True)
        ref_out, ref_mixed, ref_conv = reference_evolve(logits, prev, weight, bias, 0.7, 0.4, act,
                                                        causal, blocked)
        assert torch.allclose(out[keep], ref_out[keep], atol=1e-12), act
        assert torch.allclose(mixed, ref_mixed, atol=1e-12) and torch.allclose(conv_out, ref_conv,
                                                                               atol=1e-12), act
        assert new_history is None
        upstream = torch.randn(B, H, T, T, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
        if masked is not None:
            upstream = upstream.masked_fill(masked, 0.0)  # the softmax sees no masked cell
        for wanted in [(0,), (1,), (2,), (3,), (0, 1, 2, 3)]:
            args = [t.clone().requires_grad_(i in wanted) for i, t in enumerate(inputs(3, seed=4))]
            fused = evolve_map(args[0].clone(), *args[1:], 0.7, 0.4, act, causal, blocked, masked)[0]
            ref = reference_evolve(*args, 0.7, 0.4, act, causal, blocked)[0]
            chosen = [args[i] for i in wanted]
            grads = torch.autograd.grad((fused * upstream).sum(), chosen)
            ref_grads = torch.autograd.grad((ref * upstream).sum(), chosen)
            for i, grad, ref_grad in zip(wanted, grads, ref_grads):
                assert torch.allclose(grad, ref_grad, atol=1e-10), (act, wanted, i)
        if masked is not None:  # masked cells of A hold a constant: no gradient through them
            args = [t.clone().requires_grad_() for t in inputs(3, seed=4)]
            fused = evolve_map(args[0].clone(), *args[1:], 0.7, 0.4, act, causal, blocked, masked)[0]
            grads = torch.autograd.grad((fused * (1 - upstream) * masked).sum(), args)
            assert all((grad == 0).all() for grad in grads), act


def test_an_unknown_activation_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"^activation must be one of relu, leaky_relu, gelu, "
                                         r"linear, got 'tanh'$"):
        evolve_map(*inputs(3), 0.5, 0.5, "tanh")


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_the_layer_computes_what_it_is_configured_with(act):
    """EvolvingAttention: its convolution's weight and bias, alpha, beta, activation and
    causality reach the transform (against the composition), and its defaults are the paper's."""
    from evo_fairseq.modules import EvolvingAttention

    default = EvolvingAttention(H)
    assert (default.alpha, default.beta, default.kernel_size, default.activation, default.causal,
            default.ramp_updates, default.ramp) == (0.8, 0.5, 3, "relu", False, 0, 1.0)
    assert "ramp" not in repr(default)
    for causal in (False, True):
        layer = EvolvingAttention(H, alpha=0.3, beta=0.6, kernel_size=3, activation=act,
                                  causal=causal).double()
        with torch.no_grad():
            layer.conv.bias.copy_(torch.tensor([-1.0, 0.5, 1.0]))
        logits, prev, _, _ = inputs(3, seed=6)
        out, mixed, conv_out, history = layer(logits.clone(), prev, keep_conv_out=True)
        ref_out, ref_mixed, ref_conv = reference_evolve(logits, prev, layer.conv.weight,
                                                        layer.conv.bias, 0.3, 0.6, act, causal, None)
        assert torch.allclose(out, ref_out, atol=1e-12) and torch.allclose(conv_out, ref_conv, atol=1e-12)
        assert torch.allclose(mixed, ref_mixed, atol=1e-12) and history is None
        assert layer(logits.clone(), prev)[2] is None  # no conv output kept unless asked


def test_the_ramp_scales_alpha_and_beta_and_is_restored_from_a_state_dict():
    from evo_fairseq.modules import EvolvingAttention

    layer = EvolvingAttention(H, alpha=0.8, beta=0.4, ramp_updates=4)
    assert (layer.effective_alpha, layer.effective_beta) == (0.0, 0.0)  # fairseq's attention
    for updates, ramp in [(-3, 0.0), (1, 0.25), (3, 0.75), (9, 1.0)]:
        layer.set_num_updates(updates)
        assert layer.ramp == ramp and int(layer.ramp_step) == round(4 * ramp)
        assert (layer.effective_alpha, layer.effective_beta) == (0.8 * ramp, 0.4 * ramp)
    layer.set_num_updates(3)
    assert "ramp_updates=4, ramp=0.75" in repr(layer)
    copy = EvolvingAttention(H, alpha=0.8, beta=0.4, ramp_updates=4)
    copy.load_state_dict(layer.state_dict())
    assert copy.ramp == 0.75 and int(copy.ramp_step) == 3
    one = EvolvingAttention(H, ramp_updates=1)
    one.set_num_updates(1)
    assert one.ramp == 1.0
    plain = EvolvingAttention(H)
    plain.set_num_updates(5)
    assert plain.ramp == 1.0 and "ramp_step" not in plain.state_dict()


def test_the_transform_defaults_and_mixed_dtypes():
    """evolve_map's defaults (relu, centred, no conv output kept), no bias, and an autocast
    call (bf16 map, fp32 previous map and parameters): all in the map's dtype."""
    logits, prev, weight, bias = inputs(3, seed=7)
    out, _, conv_out, _ = evolve_map(logits.clone(), prev, weight, bias, 0.5, 0.5)
    assert conv_out is None
    assert torch.allclose(out, reference_evolve(logits, prev, weight, bias, 0.5, 0.5, "relu",
                                                False, None)[0], atol=1e-12)
    out, _, _, _ = evolve_map(logits.clone(), prev, weight, None, 0.5, 0.5)
    assert torch.allclose(out, reference_evolve(logits, prev, weight, None, 0.5, 0.5, "relu",
                                                False, None)[0], atol=1e-12)
    history = torch.zeros(B, H, 2, T, dtype=torch.float32)
    half = evolve_map(logits[:, :, -1:].bfloat16(), prev[:, :, -1:].float(), weight.float(),
                      bias.float(), 0.5, 0.5, "relu", True, history=history)
    assert all(t.dtype == torch.bfloat16 for t in (half[0], half[1], half[3]))
    with pytest.raises(AssertionError, match="^only a causal convolution keeps earlier rows$"):
        evolve_map(logits.clone(), prev, weight, bias, 0.5, 0.5, history=history)


def test_the_chain_and_option_parsers():
    """AttentionChain's bookkeeping (kept layer ids, state after close, the first layer
    without a convolution, the ramp handed to each layer) and the parsers' edges."""
    import argparse

    from evo_fairseq.modules import EvolvingAttention
    from evo_fairseq.modules.evolving_attention import (
        AttentionChain, EvolvingAttentionConfig, parse_alpha, parse_kernel_size, parse_stacks)

    assert EvolvingAttentionConfig.from_args(object()) == EvolvingAttentionConfig()
    given = dict(ea_alpha=0.1, ea_beta=0.2, ea_kernel_size=5, ea_activation="gelu",
                 ea_stacks="cross", ea_ramp_updates=7)
    assert EvolvingAttentionConfig.from_args(argparse.Namespace(**given)) == EvolvingAttentionConfig(
        alpha=0.1, beta=0.2, kernel_size=5, activation="gelu", stacks=("cross",), ramp_updates=7)
    assert parse_alpha(1.0) == 1.0 and parse_alpha(0) == 0.0
    with pytest.raises(ValueError, match="^--ea-kernel-size must be a positive odd integer, "
                                         "got 'three'$"):
        parse_kernel_size("three")
    with pytest.raises(ValueError, match="--ea-stacks must be"):
        parse_stacks("")
    assert parse_stacks("none") == ()

    chain = AttentionChain("decoder", EvolvingAttentionConfig(ramp_updates=5), layer_ids=(0, 2))
    assert chain.layer_ids == [0, 2] and chain.causal
    assert (chain.prev_attn_logits, chain.query_padding_mask, chain.layer_idx, chain.is_open) == (
        None, None, 0, False)
    assert chain.add_layer(H) is None
    second = chain.add_layer(H)
    assert isinstance(second, EvolvingAttention) and second.ramp_updates == 5 and second.causal
    with pytest.raises(ValueError, match=r"^decoder attention: more layers built than the 2 "
                                         r"kept \(\[0, 2\]\)$"):
        chain.add_layer(H)
    chain.open(torch.zeros(B, T, dtype=torch.bool))
    assert chain.is_open and chain.prev_attn_logits is None
    chain.prev_attn_logits = torch.ones(1)
    chain.close()
    assert (chain.prev_attn_logits, chain.query_padding_mask, chain.is_open) == (None, None, False)
    state = (torch.ones(1), None, 2, True)
    chain.set_state(state)
    assert chain.state() == state

    layer = EvolvingAttention(H, ramp_updates=1)
    assert layer.ramp_step.dtype == torch.long
    assert layer.extra_repr() == ("alpha=0.8, beta=0.5, kernel_size=3, activation=relu, "
                                  "causal=False, ramp_updates=1, ramp=0")
    layer.set_num_updates(1)
    restored = EvolvingAttention(H, ramp_updates=1)
    restored.load_state_dict(layer.state_dict())
    assert restored.ramp == 1.0
    assert EvolvingAttention(H).extra_repr() == ("alpha=0.8, beta=0.5, kernel_size=3, "
                                                 "activation=relu, causal=False")
    with pytest.raises(AssertionError, match="^only a causal convolution keeps earlier rows$"):
        EvolvingAttention(H)(*inputs(3)[:2], prev_mixed_rows=torch.zeros(B, H, 2, T))
