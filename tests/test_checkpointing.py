"""Activation checkpointing (--checkpoint-activations, --offload-activations) with evolving
attention: the recomputed layers see the maps their predecessors handed on, so the loss and
every gradient equal those of the run without checkpointing (dropout on, same seed)."""

import pytest
import torch

from conftest import build_model, random_batch
from evo_fairseq.benchmark.scaling import saved_activation_bytes

DROPOUT = ["--dropout", "0.3", "--attention-dropout", "0.2", "--activation-dropout", "0.1"]


def loss_and_grads(model, batch, seed=11):
    src, src_lengths, prev, _ = batch
    model.train()
    model.zero_grad()
    torch.manual_seed(seed)  # the same dropout masks, if the recomputation restores them
    logits, _ = model(src, src_lengths, prev)
    loss = torch.log_softmax(logits, -1)[..., 4:].mean()
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()
                         if p.grad is not None}


@pytest.mark.parametrize("stacks", ["encoder,decoder,cross", "decoder", "cross"])
@pytest.mark.parametrize("option", ["--checkpoint-activations", "--offload-activations"])
def test_checkpointed_training_equals_the_plain_run(dict_dir, stacks, option):
    extra = ["--ea-stacks", stacks, *DROPOUT]
    model, task, _ = build_model(dict_dir, extra=extra, seed=3)
    checkpointed, _, _ = build_model(dict_dir, extra=[*extra, option], seed=3)
    assert all(hasattr(layer, "precheckpoint_forward")
               for layer in [*checkpointed.encoder.layers, *checkpointed.decoder.layers])
    batch = random_batch(task, bsz=3, src_len=9, tgt_len=7)
    loss, grads = loss_and_grads(model, batch)
    loss_ckpt, grads_ckpt = loss_and_grads(checkpointed, batch)
    # dropout is on: another seed gives another loss, so equality is not by chance
    assert loss_and_grads(model, batch, seed=12)[0] != loss
    assert loss_ckpt == pytest.approx(loss, abs=1e-6)
    assert set(grads_ckpt) == set(grads)
    convs = [n for n in grads if ".evolving.conv." in n]
    assert len(convs) == 4 * (3 if stacks == "encoder,decoder,cross" else 1)
    for name in grads:
        assert torch.allclose(grads_ckpt[name], grads[name], atol=1e-6, rtol=1e-5), name


def test_checkpointing_keeps_fewer_bytes_for_backward(dict_dir):
    model, task, _ = build_model(dict_dir, seed=3)
    checkpointed, _, _ = build_model(dict_dir, extra=["--checkpoint-activations"], seed=3)
    src, src_lengths, prev, _ = random_batch(task, bsz=3, src_len=9, tgt_len=7)

    def kept(m):
        m.train()
        return saved_activation_bytes(lambda: m(src, src_lengths, prev))

    assert kept(checkpointed) < 0.6 * kept(model)


def test_a_deep_copy_checkpoints_its_own_layers(dict_dir):
    """--store-ema deep-copies the model: the copy's checkpointed layers must run the copy's
    weights and chains, not the original's."""
    import copy

    model, task, _ = build_model(dict_dir, extra=["--checkpoint-activations"], seed=3)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p in twin.parameters():
            p.mul_(0.5)
    batch = random_batch(task, bsz=2, src_len=6, tgt_len=5)
    loss, _ = loss_and_grads(model, batch)
    model.zero_grad(set_to_none=True)
    twin_loss, twin_grads = loss_and_grads(twin, batch)
    assert twin_loss != loss
    assert all(p.grad is None for p in model.parameters())  # the original took no part
    assert any(".evolving.conv." in n for n in twin_grads)
