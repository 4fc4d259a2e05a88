"""Entry points beside fairseq-train's options: fairseq-hydra-train with the example YAML
config (every ea_* value reaches every evolving layer, the checkpoint generates with the
same values, bad values stop it) and fairseq's TensorBoard logging."""

import pytest
from fairseq import checkpoint_utils

from conftest import ROOT, fairseq_cli, run, small_model
from evo_fairseq.modules import EvolvingAttention, EvolvingMultiheadAttention

CONFIG = ["--config-dir", ROOT / "examples" / "hydra", "--config-name", "ea_transformer_multi30k"]
SMALL = [
    "model.encoder_embed_dim=16", "model.decoder_embed_dim=16",
    "model.encoder_ffn_embed_dim=32", "model.decoder_ffn_embed_dim=32",
    "model.decoder_layers=4", "optimization.max_update=2", "dataset.max_tokens=400",
    "dataset.num_workers=0",
]


def hydra_train(data_bin, tmp_path, *overrides):
    return run([fairseq_cli("hydra-train"), *CONFIG, f"task.data={data_bin}",
                f"common.user_dir={ROOT / 'evo_fairseq'}", f"checkpoint.save_dir={tmp_path / 'ck'}",
                f"hydra.run.dir={tmp_path / 'hydra'}", *SMALL, *overrides])


def test_hydra_config_values_reach_every_layer_and_the_checkpoint(tiny_data_bin, tmp_path):
    hydra_train(tiny_data_bin, tmp_path, "model.ea_alpha=0.3", "model.ea_beta=0.7",
                "model.ea_kernel_size=5", "model.ea_activation=gelu",
                "model.ea_stacks='encoder,cross'", "model.ea_ramp_updates=6")
    checkpoint = tmp_path / "ck" / "checkpoint_last.pt"
    # what fairseq-generate, fairseq-interactive and the hub load
    [model], _ = checkpoint_utils.load_model_ensemble([str(checkpoint)])
    evolving = [m for m in model.modules() if isinstance(m, EvolvingAttention)]
    assert len(evolving) == 2 + 3  # encoder layers 2-3, cross layers 2-4
    for layer in evolving:
        assert (layer.alpha, layer.beta, layer.kernel_size, layer.activation) == (0.3, 0.7, 5, "gelu")
        assert layer.conv.kernel_size == (5, 5)
        assert layer.ramp_updates == 6 and int(layer.ramp_step) == 1  # update 2 trained with 1/6
    assert all(layer.causal for layer in evolving[2:]) and not evolving[0].causal
    assert not any(isinstance(layer.self_attn, EvolvingMultiheadAttention)
                   for layer in model.decoder.layers)
    out = run([fairseq_cli("generate"), tiny_data_bin, "--user-dir", ROOT / "evo_fairseq",
               "--path", checkpoint, "--gen-subset", "test", "--beam", "2", "--max-len-b", "8",
               "--batch-size", "8"])
    assert sum(line.startswith("H-") for line in out.stdout.splitlines()) == 21


@pytest.mark.parametrize("override,message", [
    ("model.ea_alpha=2.0", "--ea-alpha must be in [0, 1], got 2.0"),
    ("model.ea_kernel_size=4", "--ea-kernel-size must be a positive odd integer, got 4"),
    ("model.ea_ramp_updates=-3", "--ea-ramp-updates must be a non-negative integer"),
])
def test_hydra_rejects_bad_values(tiny_data_bin, tmp_path, override, message):
    with pytest.raises(AssertionError) as failure:
        hydra_train(tiny_data_bin, tmp_path, override)
    assert message in str(failure.value)
    assert not (tmp_path / "ck" / "checkpoint_last.pt").exists()


def test_tensorboard_logdir_writes_training_and_validation_losses(tiny_data_bin, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logdir = tmp_path / "tb"
    out = run([fairseq_cli("train"), tiny_data_bin, "--user-dir", ROOT / "evo_fairseq",
               "--arch", "ea_transformer", *small_model(decoder_layers=2),
               "--optimizer", "adam", "--lr", "0.003", "--max-tokens", "400", "--max-update", "4",
               "--cpu", "--log-interval", "1", "--no-save", "--tensorboard-logdir", logdir])
    assert "tensorboard not found" not in out.stdout + out.stderr
    scalars = {}
    for split in ("train", "train_inner", "valid"):
        events = EventAccumulator(str(logdir / split))
        events.Reload()
        scalars[split] = events.Tags()["scalars"]
    assert "loss" in scalars["train_inner"] and "loss" in scalars["train"]
    assert "loss" in scalars["valid"]
