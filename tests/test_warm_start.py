"""From a trained fairseq transformer to an EA-Transformer: --ea-ramp-updates (alpha and
beta ramp from 0), its checkpoints, resuming, and scripts/finetune-ea.sh."""

import sys

import pytest
import torch

from conftest import ROOT, small_model, build_model, fairseq_cli, random_batch, run
from evo_fairseq.modules import EvolvingAttention
from evo_fairseq.warm_start import ea_model_args

TINY = ["--share-all-embeddings", *small_model()]
TRAIN = [
    "--user-dir", ROOT / "evo_fairseq", "--optimizer", "adam", "--lr", "0.003",
    "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
    "--max-tokens", "400", "--seed", "2", "--no-epoch-checkpoints", "--cpu", "--num-workers", "0",
    "--log-format", "simple", "--log-interval", "1", "--disable-validation",
]


def lprobs(model, task):
    src, src_lengths, prev, _ = random_batch(task)
    encoder_out = model.encoder(src, src_lengths=src_lengths)
    return model.get_normalized_probs(model.decoder(prev, encoder_out=encoder_out), log_probs=True)


def evolving_layers(model):
    layers = [m for m in model.modules() if isinstance(m, EvolvingAttention)]
    assert layers
    return layers


def test_update_zero_is_the_plain_model_and_half_way_is_half_alpha_beta(dict_dir):
    plain, task, _ = build_model(dict_dir, arch="transformer", seed=3)
    ramped, _, _ = build_model(dict_dir, extra=["--ea-ramp-updates", "10"], seed=4)
    ramped.load_state_dict(plain.state_dict(), strict=False)  # the warm start
    with torch.no_grad():
        ramped.set_num_updates(0)
        assert (lprobs(plain, task) - lprobs(ramped, task)).abs().max() < 1e-5

        ramped.set_num_updates(5)
        for layer in evolving_layers(ramped):
            assert (layer.effective_alpha, layer.effective_beta) == (0.4, 0.25)
        # the same weights with alpha and beta halved, no ramp
        halved, _, _ = build_model(dict_dir, extra=["--ea-alpha", "0.4", "--ea-beta", "0.25"])
        halved.load_state_dict(
            {k: v for k, v in ramped.state_dict().items() if not k.endswith("ramp_step")})
        assert (lprobs(halved, task) - lprobs(ramped, task)).abs().max() < 1e-6
        assert (lprobs(plain, task) - lprobs(ramped, task)).abs().max() > 1e-3

        ramped.set_num_updates(25)  # past the ramp: the configured values
        for layer in evolving_layers(ramped):
            assert (layer.effective_alpha, layer.effective_beta) == (0.8, 0.5)


def test_ramp_state_is_saved_and_loaded(dict_dir):
    model, _, _ = build_model(dict_dir, extra=["--ea-ramp-updates", "8"])
    model.set_num_updates(6)
    copy, _, _ = build_model(dict_dir, extra=["--ea-ramp-updates", "8"], seed=9)
    assert all(layer.ramp == 0.0 for layer in evolving_layers(copy))
    copy.load_state_dict(model.state_dict())
    assert all(layer.ramp == 0.75 for layer in evolving_layers(copy))
    assert "ramp_updates=8, ramp=0.75" in repr(copy)


def checkpoint_state(path):
    state = torch.load(path, map_location="cpu", weights_only=False)
    steps = {int(v) for k, v in state["model"].items() if k.endswith(".evolving.ramp_step")}
    return state["optimizer_history"][-1]["num_updates"], steps


def translations(data_bin, checkpoint):
    out = run([fairseq_cli("generate"), data_bin, "--user-dir", ROOT / "evo_fairseq",
               "--path", checkpoint, "--gen-subset", "test", "--beam", "3",
               "--max-len-b", "12", "--batch-size", "8"]).stdout
    lines = sorted(line for line in out.splitlines() if line.startswith(("H-", "P-")))
    assert sum(line.startswith("H-") for line in lines) == 21
    return lines


@pytest.fixture(scope="module")
def plain_checkpoint(tiny_data_bin, tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("plain")
    run([fairseq_cli("train"), tiny_data_bin, "--arch", "transformer", *TINY, *TRAIN,
         "--max-update", "5", "--save-dir", save_dir])
    return save_dir / "checkpoint_last.pt"


def test_finetune_recipe_ramps_from_update_zero_and_resumes(tiny_data_bin, plain_checkpoint,
                                                             tmp_path):
    assert checkpoint_state(plain_checkpoint)[0] == 5
    prep = tmp_path / "prep"
    prep.mkdir()
    (prep / "data-bin").symlink_to(tiny_data_bin)
    save_dir = tmp_path / "ea"
    env = dict(NGPU="0", RAMP_UPDATES="8", MAX_UPDATE="3", MAX_TOKENS="400", SEED="2",
               EXTRA_ARGS="--no-epoch-checkpoints --disable-validation --log-interval 1 "
                          "--num-workers 0")
    log = run(["bash", ROOT / "scripts" / "finetune-ea.sh", plain_checkpoint, prep, save_dir],
              env=env)
    text = log.stdout + log.stderr
    assert "--arch ea_transformer" in text and "--encoder-layers 2" in text
    assert "checkpoint has no evolving-attention parameters" in text
    # the plain model had 5 updates, but the reset warm start counts from 0: the three
    # updates trained with r = 0/8, 1/8, 2/8
    assert checkpoint_state(save_dir / "checkpoint_last.pt") == (3, {2})
    # resume from checkpoint_last.pt (no resets): the ramp goes on where it stopped
    resumed = dict(env, MAX_UPDATE="6")
    run(["bash", ROOT / "scripts" / "finetune-ea.sh", plain_checkpoint, prep, save_dir],
        env=resumed)
    assert checkpoint_state(save_dir / "checkpoint_last.pt") == (6, {5})


def test_mid_ramp_checkpoint_generates_with_its_own_alpha_beta(tiny_data_bin, tmp_path):
    save_dir = tmp_path / "ramped"
    run([fairseq_cli("train"), tiny_data_bin, "--arch", "ea_transformer", *TINY, *TRAIN,
         "--ea-ramp-updates", "8", "--max-update", "5", "--save-dir", save_dir])
    checkpoint = save_dir / "checkpoint_last.pt"
    assert checkpoint_state(checkpoint) == (5, {4})  # update 5 trained with r = 4/8

    # the same weights in a checkpoint without a ramp, alpha and beta set to half
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state["model"] = {k: v for k, v in state["model"].items() if not k.endswith("ramp_step")}
    model_cfg = state["cfg"]["model"]
    model_cfg.ea_alpha, model_cfg.ea_beta, model_cfg.ea_ramp_updates = 0.4, 0.25, 0
    fixed = tmp_path / "fixed" / "checkpoint.pt"
    fixed.parent.mkdir()
    torch.save(state, fixed)
    assert translations(tiny_data_bin, checkpoint) == translations(tiny_data_bin, fixed)

    # the hub and the inspector load the same values
    from fairseq import checkpoint_utils
    [model], _ = checkpoint_utils.load_model_ensemble([str(checkpoint)])
    assert {(m.effective_alpha, m.effective_beta) for m in evolving_layers(model)} == {(0.4, 0.25)}
    from evo_fairseq.models import EATransformerModel
    hub = EATransformerModel.from_pretrained(str(save_dir), checkpoint_file="checkpoint_last.pt",
                                             data_name_or_path=str(tiny_data_bin))
    assert {(m.effective_alpha, m.effective_beta)
            for m in evolving_layers(hub.models[0])} == {(0.4, 0.25)}
    out = run([sys.executable, "-m", "evo_fairseq.inspect", "--path", checkpoint,
               "--data-bin", tiny_data_bin, "-s", "de", "-t", "en", "--source", "ein hund .",
               "--out-dir", tmp_path / "maps"]).stdout
    assert "evolving attention: alpha 0.4, beta 0.25 (ramp 4/8 updates" in out


def test_warm_start_helper_refuses_what_it_cannot_start_from(plain_checkpoint, tiny_data_bin,
                                                             tmp_path):
    args = ea_model_args(str(plain_checkpoint))
    assert args[:2] == ["--arch", "ea_transformer"]
    assert "--share-all-embeddings" in args and "--decoder-layers" in args
    ea_dir = tmp_path / "ea"
    run([fairseq_cli("train"), tiny_data_bin, "--arch", "ea_transformer", *TINY, *TRAIN,
         "--max-update", "1", "--save-dir", ea_dir])
    with pytest.raises(ValueError, match="already an EA-Transformer"):
        ea_model_args(str(ea_dir / "checkpoint_last.pt"))
    proc = run(["bash", "-c", f"bash {ROOT}/scripts/finetune-ea.sh {tmp_path}/missing.pt "
                              f"{tmp_path} {tmp_path}/out 2>&1; echo rc=$?"])
    assert "plain checkpoint" in proc.stdout and "not found" in proc.stdout and "rc=2" in proc.stdout


@pytest.mark.parametrize("ramp", ["0", "4"])
def test_warm_start_with_layers_to_keep_places_the_new_convolutions(dict_dir, ramp):
    """fairseq upgrades a state dict before it prunes it: the convolutions (and ramp counters)
    a warm start adds are named by the original layer indices, so pruning keeps them in place."""
    plain, task, _ = build_model(dict_dir, arch="transformer", seed=3)
    keep = ["--encoder-layers-to-keep", "0,2", "--decoder-layers-to-keep", "1,2",
            "--ea-ramp-updates", ramp]
    ea, _, args = build_model(dict_dir, extra=keep, seed=4)
    fresh = {n: p.clone() for n, p in ea.state_dict().items() if ".evolving." in n}
    assert sorted(fresh) == sorted(
        f"{side}.layers.1.{attn}.evolving.{p}" for side, attn in
        [("encoder", "self_attn"), ("decoder", "self_attn"), ("decoder", "encoder_attn")]
        for p in ("conv.weight", "conv.bias") + (("ramp_step",) if ramp != "0" else ()))
    ea.load_state_dict(plain.state_dict(), strict=True, model_cfg=args)
    state = ea.state_dict()
    for name, value in fresh.items():  # the kept layers' own, freshly initialised
        assert torch.equal(state[name], value), name
    plain_state = plain.state_dict()
    for side, kept in (("encoder", [0, 2]), ("decoder", [1, 2])):
        for new, original in enumerate(kept):
            for p in ("fc1.weight", "self_attn.k_proj.weight"):
                assert torch.equal(state[f"{side}.layers.{new}.{p}"],
                                   plain_state[f"{side}.layers.{original}.{p}"])


def test_pruned_warm_start_trains_and_generates(tiny_data_bin, tmp_path):
    plain = tmp_path / "plain"
    run([fairseq_cli("train"), tiny_data_bin, "--arch", "transformer", *TINY, *TRAIN,
         "--max-update", "3", "--save-dir", plain])
    tuned = tmp_path / "ea"
    out = run([fairseq_cli("train"), tiny_data_bin, "--arch", "ea_transformer", *TINY, *TRAIN,
               "--encoder-layers-to-keep", "1", "--decoder-layers-to-keep", "0,2",
               "--restore-file", plain / "checkpoint_last.pt", "--reset-optimizer",
               "--reset-dataloader", "--reset-meters", "--reset-lr-scheduler",
               "--max-update", "2", "--save-dir", tuned])
    assert "warm start" in out.stdout + out.stderr
    out = run([fairseq_cli("generate"), tiny_data_bin, "--user-dir", ROOT / "evo_fairseq",
               "--path", tuned / "checkpoint_last.pt", "--gen-subset", "test", "--beam", "2",
               "--max-len-b", "4", "--batch-size", "32"])
    assert sum(line.startswith("H-") for line in out.stdout.splitlines()) == 21
