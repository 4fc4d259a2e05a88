"""The EA model against fairseq's own code paths: parameters, equivalence with
the plain transformer, causality, padding, incremental decoding, beam search."""

import pytest
import torch
from fairseq import search
from fairseq.sequence_generator import SequenceGenerator

from conftest import DEVICES, build_model, random_batch, to_device
from evo_fairseq.attention_capture import AttentionCapture
from evo_fairseq.modules import EvolvingMultiheadAttention

ALL_STACKS = ["encoder,decoder,cross", "decoder", "cross"]


def decoder_states(model, src, src_lengths, prev):
    """Every decoder layer's output (B x T x C) and the final log-probs."""
    encoder_out = model.encoder(src, src_lengths=src_lengths)
    logits, extra = model.decoder(prev, encoder_out=encoder_out)
    states = [s.transpose(0, 1) for s in extra["inner_states"]]
    return states, model.get_normalized_probs((logits, extra), log_probs=True)


def test_parameter_names_are_transformer_names_plus_convolutions(dict_dir):
    plain, _, _ = build_model(dict_dir, arch="transformer")
    ea, _, _ = build_model(dict_dir)
    plain_names, ea_names = set(plain.state_dict()), set(ea.state_dict())
    assert plain_names <= ea_names
    extra = sorted(ea_names - plain_names)
    expected = sorted(
        f"{prefix}.layers.{i}.{attn}.evolving.conv.{p}"
        for prefix, attn in [("encoder", "self_attn"), ("decoder", "self_attn"),
                             ("decoder", "encoder_attn")]
        for i in (1, 2)
        for p in ("weight", "bias")
    )
    assert extra == expected
    conv = ea.decoder.layers[1].encoder_attn.evolving.conv
    assert conv.in_channels == conv.out_channels == 4 and conv.kernel_size == (3, 3)
    assert ea.encoder.layers[0].self_attn.evolving is None


def incremental_lprobs(model, src, src_lengths, prev):
    """Log-probs of step-by-step decoding (fairseq's incremental state), all steps."""
    encoder_out = model.encoder(src, src_lengths=src_lengths)
    incremental_state = {}
    steps = []
    for t in range(1, prev.size(1) + 1):
        out = model.decoder(prev[:, :t], encoder_out=encoder_out, incremental_state=incremental_state)
        steps.append(model.get_normalized_probs(out, log_probs=True))
    return torch.cat(steps, dim=1)


def beam_search_checked(model, task, src, src_lengths, beam_size=5, tolerance=1e-4):
    """Beam search; each hypothesis' positional scores against a full forward pass over it.
    Returns the number of hypotheses checked."""
    tgt_dict = task.target_dictionary
    generator = SequenceGenerator(
        [model], tgt_dict, beam_size=beam_size, max_len_b=12, min_len=3,
        search_strategy=search.BeamSearch(tgt_dict),
    )
    sample = {"net_input": {"src_tokens": src, "src_lengths": src_lengths}}
    checked = 0
    for b, sentence_hypos in enumerate(generator.generate([model], sample)):
        for hypo in sentence_hypos:
            tokens = hypo["tokens"]
            prev = torch.cat([tokens.new_tensor([tgt_dict.eos()]), tokens[:-1]]).unsqueeze(0)
            one_src = src[b][src[b].ne(tgt_dict.pad())].unsqueeze(0)
            encoder_out = model.encoder(one_src, src_lengths=src_lengths[b : b + 1])
            lprobs = model.get_normalized_probs(
                model.decoder(prev, encoder_out=encoder_out), log_probs=True
            )[0]
            rescored = lprobs.gather(1, tokens.unsqueeze(1)).squeeze(1)
            assert (rescored - hypo["positional_scores"]).abs().max() < tolerance
            checked += 1
    return checked


def test_stacks_none_is_fairseqs_transformer(dict_dir):
    """The same weights give fairseq's transformer's log-probs, to the bit, in full and
    in incremental decoding."""
    ea, task, _ = build_model(dict_dir, extra=["--ea-stacks", "none"], seed=2)
    assert not any(isinstance(m, EvolvingMultiheadAttention) for m in ea.modules())
    plain, _, _ = build_model(dict_dir, arch="transformer", seed=3)
    assert set(ea.state_dict()) == set(plain.state_dict())
    ea.load_state_dict(plain.state_dict(), strict=True)
    src, src_lengths, prev, _ = random_batch(task, bsz=3, src_len=8, tgt_len=7)
    with torch.no_grad():
        _, plain_lprobs = decoder_states(plain, src, src_lengths, prev)
        _, ea_lprobs = decoder_states(ea, src, src_lengths, prev)
        assert torch.equal(ea_lprobs, plain_lprobs)
        prev[:, :] = prev[0]  # no target padding during step-by-step decoding
        plain_steps = incremental_lprobs(plain, src, src_lengths, prev)
        assert torch.equal(incremental_lprobs(ea, src, src_lengths, prev), plain_steps)
    assert (plain_steps - decoder_states(plain, src, src_lengths, prev)[1]).abs().max() < 1e-5


def test_alpha_beta_zero_reproduces_transformer_with_same_weights(dict_dir):
    plain, task, _ = build_model(dict_dir, arch="transformer", seed=3)
    ea, _, _ = build_model(dict_dir, extra=["--ea-alpha", "0", "--ea-beta", "0"], seed=4)
    # warm start: the plain checkpoint has no convolutions; strict loading must pass
    ea.load_state_dict(plain.state_dict(), strict=True)
    src, src_lengths, prev, _ = random_batch(task)
    _, plain_lprobs = decoder_states(plain, src, src_lengths, prev)
    _, ea_lprobs = decoder_states(ea, src, src_lengths, prev)
    assert (plain_lprobs - ea_lprobs).abs().max() < 1e-5
    # and with the default alpha/beta the same weights give a different model
    ea_default, _, _ = build_model(dict_dir, seed=4)
    ea_default.load_state_dict(plain.state_dict(), strict=True)
    _, default_lprobs = decoder_states(ea_default, src, src_lengths, prev)
    assert (plain_lprobs - default_lprobs).abs().max() > 1e-3

    gen = lambda m: SequenceGenerator([m], task.target_dictionary, beam_size=3, max_len_b=8)
    sample = {"net_input": {"src_tokens": src, "src_lengths": src_lengths}}
    for hyp_plain, hyp_ea in zip(gen(plain).generate([plain], sample), gen(ea).generate([ea], sample)):
        assert torch.equal(hyp_plain[0]["tokens"], hyp_ea[0]["tokens"])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("stacks", ALL_STACKS)
def test_decoder_is_causal_in_every_layer(dict_dir, stacks, device):
    model, task, _ = build_model(dict_dir, extra=["--ea-stacks", stacks, "--ea-kernel-size", "5"])
    model.to(device)
    src, src_lengths, prev = to_device(device, *random_batch(task, bsz=2, tgt_len=8)[:3])
    states, _ = decoder_states(model, src, src_lengths, prev)
    for t in range(1, prev.size(1)):
        changed = prev.clone()
        changed[:, t:] = (changed[:, t:] + 7 - task.target_dictionary.nspecial) % (
            len(task.target_dictionary) - task.target_dictionary.nspecial
        ) + task.target_dictionary.nspecial
        changed_states, _ = decoder_states(model, src, src_lengths, changed)
        for layer, (before, after) in enumerate(zip(states, changed_states)):
            assert torch.allclose(before[:, :t], after[:, :t], atol=1e-6), (stacks, layer, t)
            assert not torch.allclose(before[:, t:], after[:, t:]), (stacks, layer, t)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("left_pad_source", [True, False])
@pytest.mark.parametrize("stacks", ALL_STACKS + ["encoder"])
def test_scores_do_not_depend_on_batch_padding(dict_dir, stacks, left_pad_source, device):
    model, task, _ = build_model(dict_dir, extra=["--ea-stacks", stacks])
    model.to(device)
    src, src_lengths, prev, tgt_lengths = to_device(device, *random_batch(
        task, bsz=3, src_len=9, tgt_len=7, left_pad_source=left_pad_source
    ))
    _, batch_lprobs = decoder_states(model, src, src_lengths, prev)
    pad = task.source_dictionary.pad()
    for b in range(src.size(0)):
        alone_src = src[b][src[b].ne(pad)].unsqueeze(0)
        alone_prev = prev[b, : tgt_lengths[b]].unsqueeze(0)
        _, alone_lprobs = decoder_states(model, alone_src, src_lengths[b : b + 1], alone_prev)
        diff = (alone_lprobs[0] - batch_lprobs[b, : tgt_lengths[b]]).abs().max()
        assert diff < 1e-5, (b, diff)


def test_left_padded_targets_do_not_leak(dict_dir):
    """With --left-pad-target the pad rows come first; they must not reach real rows."""
    model, task, _ = build_model(dict_dir)
    src, src_lengths, prev, tgt_lengths = random_batch(task, bsz=3, tgt_len=7)
    pad = task.target_dictionary.pad()
    left = torch.full_like(prev, pad)
    for b, n in enumerate(tgt_lengths):
        left[b, prev.size(1) - n:] = prev[b, :n]
    _, batch_lprobs = decoder_states(model, src, src_lengths, left)
    for b, n in enumerate(tgt_lengths):
        _, alone = decoder_states(model, src[b : b + 1], src_lengths[b : b + 1], prev[b : b + 1, :n])
        assert (alone[0] - batch_lprobs[b, prev.size(1) - n:]).abs().max() < 1e-5


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_incremental_decoding_equals_full_forward(dict_dir, kernel_size, device):
    model, task, _ = build_model(dict_dir, extra=["--ea-kernel-size", str(kernel_size)])
    model.to(device)
    src, src_lengths, prev = to_device(device, *random_batch(task, bsz=2, tgt_len=9)[:3])
    prev[:, :] = prev[0]  # no target padding during step-by-step decoding
    _, full = decoder_states(model, src, src_lengths, prev)
    step_lprobs = incremental_lprobs(model, src, src_lengths, prev)
    assert (step_lprobs - full).abs().max() < 1e-5


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("stacks", ["encoder,decoder,cross", "cross"])
def test_beam_search_scores_equal_full_rescoring(dict_dir, stacks, device):
    """Beam search reorders the kept rows; its positional scores must equal a
    full forward pass over each hypothesis."""
    model, task, _ = build_model(dict_dir, extra=["--ea-stacks", stacks], seed=7)
    model.to(device)
    src, src_lengths = to_device(device, *random_batch(task, bsz=3, src_len=8, seed=5)[:2])
    assert beam_search_checked(model, task, src, src_lengths) == 15


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "gelu", "linear"])
def test_each_activation_decodes_incrementally_as_the_full_pass(dict_dir, activation):
    """Model level, every stack evolving, kernel 3: step-by-step log-probs equal the full
    pass, and beam search's positional scores equal full rescoring."""
    model, task, _ = build_model(dict_dir, extra=["--ea-activation", activation], seed=11)
    # biases that push the convolutions' outputs across zero in both directions, so that
    # relu, leaky_relu and gelu each differ from the identity (and from each other)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, EvolvingMultiheadAttention) and m.evolving is not None:
                m.evolving.conv.bias.copy_(torch.tensor([-1.0, 1.0, -0.5, 0.5]))
    src, src_lengths, prev = random_batch(task, bsz=2, tgt_len=8, seed=3)[:3]
    prev[:, :] = prev[0]
    with torch.no_grad():
        _, full = decoder_states(model, src, src_lengths, prev)
        steps = incremental_lprobs(model, src, src_lengths, prev)
    assert (steps - full).abs().max() < 1e-5
    assert beam_search_checked(model, task, src, src_lengths, beam_size=3) == 6


def test_fp16_masks_do_not_produce_nan(dict_dir):
    """An fp16 model (as --fp16 casts it) against the fp32 one, with padded sources and
    targets, causal masks and logits large enough that a masked cell at fp16's minimum
    would overflow to -inf in the next layer's mix (NaN after the convolution)."""
    import copy

    model, task, _ = build_model(dict_dir)
    with torch.no_grad():  # QK^T / sqrt(d) of order 10-100: fp16's minimum minus it overflows
        for m in model.modules():
            if hasattr(m, "q_proj") and hasattr(m, "k_proj"):
                m.q_proj.weight.mul_(8.0)
                m.k_proj.weight.mul_(8.0)
    src, src_lengths, prev, tgt_lengths = random_batch(task, bsz=3, src_len=9, tgt_len=7)
    assert src.eq(task.source_dictionary.pad()).any() and prev.eq(task.target_dictionary.pad()).any()
    with torch.no_grad():
        _, lprobs32 = decoder_states(model, src, src_lengths, prev)
        with AttentionCapture(model) as capture:
            decoder_states(model, src, src_lengths, prev)
        assert max(maps["logits"].max() for maps in capture.maps.values()) > 16
        half = copy.deepcopy(model).half()
        _, lprobs16 = decoder_states(half, src, src_lengths, prev)
    assert lprobs16.dtype == torch.float32  # fairseq's normalisation is in fp32
    for b, n in enumerate(tgt_lengths):
        assert torch.isfinite(lprobs16[b, :n]).all(), b
        # tolerance (nats): fp16 rounding of logits of order 100
        assert (lprobs16[b, :n] - lprobs32[b, :n]).abs().max() < 0.25, b
