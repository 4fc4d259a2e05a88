"""Options of fairseq's transformer with evolving attention: each trains (2 updates) and
generates through fairseq-train and fairseq-generate, or is refused at start-up with
the reason. A new option that breaks belongs in this list."""

import pytest

from conftest import ROOT, small_model, fairseq_cli, run

BASE = small_model()
TRAIN = [
    "--user-dir", ROOT / "evo_fairseq", "--arch", "ea_transformer", "--optimizer", "adam",
    "--lr", "0.003", "--criterion", "label_smoothed_cross_entropy", "--max-tokens", "300",
    "--max-update", "2", "--no-epoch-checkpoints", "--cpu", "--disable-validation",
    # no loader worker: a 2-update run can exit while the worker's feeder thread is still
    # busy, which aborts the process after training (seen about 1 in 10 with one-layer stacks)
    "--num-workers", "0",
]

TRAINS_AND_GENERATES = {
    "no positional embeddings": ["--no-token-positional-embeddings"],
    "learned positions, layernorm embedding, unscaled": [
        "--encoder-learned-pos", "--decoder-learned-pos", "--layernorm-embedding",
        "--no-scale-embedding"],
    "pre-norm, no final norm, gelu, dropouts": [
        "--encoder-normalize-before", "--decoder-normalize-before", "--no-decoder-final-norm",
        "--activation-fn", "gelu", "--dropout", "0.2", "--attention-dropout", "0.1",
        "--activation-dropout", "0.1"],
    # scalar quant-noise needs CUDA in fairseq, for its transformer too
    "quant-noise": ["--quant-noise-pq", "0.1", "--quant-noise-pq-block-size", "4"],
    "heads and widths per stack": ["--encoder-attention-heads", "4", "--decoder-attention-heads",
                                   "2", "--encoder-embed-dim", "24", "--encoder-ffn-embed-dim", "40"],
    "decoder output dim, batch buckets": ["--decoder-output-dim", "12", "--num-batch-buckets", "3"],
    "shared embeddings": ["--share-all-embeddings"],
    "shared decoder input/output": ["--share-decoder-input-output-embed"],
    "update-freq and EMA": ["--update-freq", "2", "--store-ema"],
    "one-layer stacks": ["--encoder-layers", "1", "--decoder-layers", "1"],
    "LayerDrop": ["--encoder-layerdrop", "0.3", "--decoder-layerdrop", "0.3"],
    "cross stack, 4 decoder layers": ["--ea-stacks", "cross", "--decoder-layers", "4"],
    "gelu 1x1 convolution": ["--ea-activation", "gelu", "--ea-kernel-size", "1"],
    # right-padded source, left-padded target (fairseq's flags flip its defaults)
    "padding sides": ["--left-pad-source", "--left-pad-target"],
    "ramp": ["--ea-ramp-updates", "4"],
    "checkpointed activations": ["--checkpoint-activations", "--dropout", "0.2"],
    "offloaded activations": ["--offload-activations"],
    # what the refusal of cross-self-attention with an evolving decoder suggests
    "cross-self-attention, encoder and cross stacks": [
        "--cross-self-attention", "--ea-stacks", "encoder,cross"],
}

REFUSED = {
    "cross-self-attention": (["--cross-self-attention"], "ValueError: --cross-self-attention is "
                             "not supported with an evolving decoder self-attention"),
    "cross-self-attention, decoder stack": (
        ["--cross-self-attention", "--ea-stacks", "decoder"], "ValueError: --cross-self-attention "
        "is not supported with an evolving decoder self-attention (decoder in --ea-stacks)"),
    "xFormers, encoder": (["--encoder-xformers-att-config", '{"name": "scaled_dot_product"}'],
                          "ValueError: --encoder-xformers-att-config is not supported with "
                          "evolving encoder attention (encoder in --ea-stacks)"),
    "xFormers, decoder": (["--decoder-xformers-att-config", '{"name": "scaled_dot_product"}',
                           "--ea-stacks", "cross"],
                          "ValueError: --decoder-xformers-att-config is not supported with "
                          "evolving decoder attention (cross in --ea-stacks)"),
}


@pytest.mark.parametrize("options", TRAINS_AND_GENERATES.values(), ids=TRAINS_AND_GENERATES.keys())
def test_option_trains_and_generates(tiny_data_bin, tmp_path, options):
    run([fairseq_cli("train"), tiny_data_bin, *BASE, *TRAIN, *options, "--save-dir", tmp_path])
    pad = [o for o in options if o in ("--left-pad-source", "--left-pad-target")]
    out = run([fairseq_cli("generate"), tiny_data_bin, "--user-dir", ROOT / "evo_fairseq",
               "--path", tmp_path / "checkpoint_last.pt", "--gen-subset", "test", "--beam", "2",
               "--max-len-b", "4", "--batch-size", "32", *pad])
    assert sum(line.startswith("H-") for line in out.stdout.splitlines()) == 21


@pytest.mark.parametrize("options,reason", REFUSED.values(), ids=REFUSED.keys())
def test_option_is_refused_with_the_reason(tiny_data_bin, tmp_path, options, reason):
    with pytest.raises(AssertionError) as failure:
        run([fairseq_cli("train"), tiny_data_bin, *BASE, *TRAIN, *options,
             "--save-dir", tmp_path])
    stderr = str(failure.value).split("--- stderr ---", 1)[1]  # not the echoed command
    assert reason in stderr
    assert not (tmp_path / "checkpoint_last.pt").exists()
