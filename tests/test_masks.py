"""Attention masks in evolving attention: bool masks block; float masks block their cells
at or below -1e4 (-inf, fairseq's -1e8 and -1e4) and add their other values to the
softmax's input, as fairseq's attention does, without handing them on to the next layer."""

import torch
from fairseq.modules import MultiheadAttention

from evo_fairseq.modules import AttentionChain, EvolvingAttentionConfig, EvolvingMultiheadAttention

T, B, D, H = 5, 2, 8, 2


def layers(alpha, beta, n=2):
    """The first ``n`` layers of an encoder self-attention stack, sharing one chain."""
    chain = AttentionChain("encoder", EvolvingAttentionConfig(alpha=alpha, beta=beta))
    torch.manual_seed(0)
    built = [EvolvingMultiheadAttention(D, H, chain=chain, evolving=chain.add_layer(H),
                                        self_attention=True) for _ in range(n)]
    return chain, [m.eval() for m in built]


def mask(additive):
    m = torch.zeros(T, T)
    m[:, -1] = float("-inf")
    m[0, 1] = -1e8  # fairseq's block for a bool mask in fp32
    if additive:
        m[1:, 0] = 2.0
        m[2, 2] = -3.0
    return m


def run(chain, modules, x, attn_mask):
    chain.open(None)
    try:
        outs = []
        for module in modules:
            out, weights = module(x, x, x, attn_mask=attn_mask, need_head_weights=True)
            outs.append((out, weights, chain.prev_attn_logits.clone()))
        return outs
    finally:
        chain.close()


def test_a_blocking_float_mask_is_the_bool_mask():
    chain, modules = layers(0.8, 0.5)
    x = torch.randn(T, B, D)
    as_float = run(chain, modules, x, mask(additive=False))
    as_bool = run(chain, modules, x, mask(additive=False) <= -1e4)
    for (out_f, w_f, _), (out_b, w_b, _) in zip(as_float, as_bool):
        assert torch.equal(out_f, out_b) and torch.equal(w_f, w_b)
    assert (as_float[1][1][..., -1] == 0).all() and (as_float[1][1][:, :, 0, 1] == 0).all()


def test_an_additive_mask_adds_as_in_fairseqs_attention_and_is_not_handed_on():
    """With alpha = beta = 0 every layer is fairseq's attention: the same weights and the same
    float mask give fairseq's result; the map handed on is the unbiased one."""
    chain, modules = layers(0.0, 0.0)
    x = torch.randn(T, B, D)
    attn_mask = mask(additive=True)
    outs = run(chain, modules, x, attn_mask)
    for module, (out, weights, handed_on) in zip(modules, outs):
        plain = MultiheadAttention(D, H, self_attention=True).eval()
        plain.load_state_dict({k: v for k, v in module.state_dict().items()
                               if not k.startswith("evolving.")})
        plain_out, plain_weights = plain(x, x, x, attn_mask=attn_mask.clone(),
                                         need_head_weights=True)
        assert torch.allclose(out, plain_out, atol=1e-6)
        # fairseq's fused path returns the weights averaged over heads
        assert torch.allclose(weights.mean(0), plain_weights, atol=1e-6)
        q = plain.q_proj(x) * plain.scaling
        k = plain.k_proj(x)
        logits = torch.einsum("tbhd,sbhd->bhts", q.view(T, B, H, -1), k.view(T, B, H, -1))
        open_cells = attn_mask > -1e4
        assert torch.allclose(handed_on[..., open_cells], logits[..., open_cells], atol=1e-5)


def test_an_additive_mask_changes_an_evolving_layer():
    chain, modules = layers(0.8, 0.5)
    x = torch.randn(T, B, D)
    biased = run(chain, modules, x, mask(additive=True))
    unbiased = run(chain, modules, x, mask(additive=False))
    # the bias reaches the softmax of every layer, and never the handed-on map
    assert not torch.allclose(biased[1][1], unbiased[1][1])
    assert torch.equal(biased[0][2], unbiased[0][2])
    assert (biased[1][1][..., -1] == 0).all()
