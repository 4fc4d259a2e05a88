"""The EA model against fairseq's own code paths: parameters, equivalence with
the plain transformer, causality, padding, incremental decoding, beam search."""

import pytest
import torch
from fairseq import search
from fairseq.sequence_generator import SequenceGenerator

from conftest import DEVICES, build_model, random_batch, to_device
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


def test_stacks_none_is_fairseqs_transformer(dict_dir):
    ea, _, _ = build_model(dict_dir, extra=["--ea-stacks", "none"])
    assert not any(isinstance(m, EvolvingMultiheadAttention) for m in ea.modules())
    plain, _, _ = build_model(dict_dir, arch="transformer")
    assert set(ea.state_dict()) == set(plain.state_dict())


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
    encoder_out = model.encoder(src, src_lengths=src_lengths)
    full = model.get_normalized_probs(model.decoder(prev, encoder_out=encoder_out), log_probs=True)
    incremental_state = {}
    steps = []
    for t in range(1, prev.size(1) + 1):
        out = model.decoder(prev[:, :t], encoder_out=encoder_out, incremental_state=incremental_state)
        steps.append(model.get_normalized_probs(out, log_probs=True))
    step_lprobs = torch.cat(steps, dim=1)
    assert (step_lprobs - full).abs().max() < 1e-5


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("stacks", ["encoder,decoder,cross", "cross"])
def test_beam_search_scores_equal_full_rescoring(dict_dir, stacks, device):
    """Beam search reorders the kept rows; its positional scores must equal a
    full forward pass over each hypothesis."""
    model, task, _ = build_model(dict_dir, extra=["--ea-stacks", stacks], seed=7)
    model.to(device)
    tgt_dict = task.target_dictionary
    src, src_lengths = to_device(device, *random_batch(task, bsz=3, src_len=8, seed=5)[:2])
    generator = SequenceGenerator(
        [model], tgt_dict, beam_size=5, max_len_b=12, min_len=3,
        search_strategy=search.BeamSearch(tgt_dict),
    )
    sample = {"net_input": {"src_tokens": src, "src_lengths": src_lengths}}
    hypos = generator.generate([model], sample)
    checked = 0
    for b, sentence_hypos in enumerate(hypos):
        for hypo in sentence_hypos:
            tokens = hypo["tokens"]
            prev = torch.cat([tokens.new_tensor([tgt_dict.eos()]), tokens[:-1]]).unsqueeze(0)
            one_src = src[b][src[b].ne(tgt_dict.pad())].unsqueeze(0)
            encoder_out = model.encoder(one_src, src_lengths=src_lengths[b : b + 1])
            lprobs = model.get_normalized_probs(
                model.decoder(prev, encoder_out=encoder_out), log_probs=True
            )[0]
            rescored = lprobs.gather(1, tokens.unsqueeze(1)).squeeze(1)
            assert (rescored - hypo["positional_scores"]).abs().max() < 1e-4
            checked += 1
    assert checked == 15


def test_fp16_masks_do_not_produce_nan(dict_dir):
    """Masked cells use the dtype's minimum: no -inf arithmetic in half precision."""
    model, task, _ = build_model(dict_dir)
    model = model.to(torch.bfloat16)
    src, src_lengths, prev, _ = random_batch(task)
    _, lprobs = decoder_states(model, src, src_lengths, prev)
    assert torch.isfinite(lprobs.float()).all()
