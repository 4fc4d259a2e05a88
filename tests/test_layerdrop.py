"""LayerDrop and pruning: skipped layers hand nothing on, the next layer that runs takes
the last map (or starts the chain), and --*-layers-to-keep keeps each layer's own
convolution but the first kept one's (with fairseq's list-vs-string bug fixed in compat.py)."""

import torch
from fairseq import checkpoint_utils

from conftest import ROOT, small_model, build_model, fairseq_cli, random_batch, run, run_two_workers
from evo_fairseq import compat

MODEL = ["--share-all-embeddings", *small_model(encoder_layers=3, decoder_layers=3)]
TRAIN = [
    "--user-dir", ROOT / "evo_fairseq", "--optimizer", "adam", "--lr", "0.003",
    "--criterion", "label_smoothed_cross_entropy", "--max-tokens", "400", "--seed", "5",
    "--no-epoch-checkpoints", "--cpu", "--num-workers", "0", "--log-format", "simple",
    "--log-interval", "1",
]


def forward(model, task, seed=0):
    src, src_lengths, prev, _ = random_batch(task, seed=seed)
    with torch.no_grad():
        return model(src, src_lengths, prev)[0]


def test_a_layer_that_finds_no_map_starts_the_chain(dict_dir):
    model, task, _ = build_model(dict_dir)
    # what LayerDrop does when it skips layer 1 of every stack
    for layers in (model.encoder.layers, model.decoder.layers):
        del layers[0]
    skipped = forward(model, task)
    # the same as making the first layer that runs a chain start (no evolution)
    for layer in (model.encoder.layers[0], model.decoder.layers[0]):
        for attn in ("self_attn", "encoder_attn"):
            if hasattr(layer, attn):
                getattr(layer, attn).evolving = None
    assert torch.allclose(skipped, forward(model, task), atol=1e-6)


def test_layerdrop_trains_in_all_stacks_and_evaluation_keeps_every_layer(tiny_data_bin, tmp_path):
    """12 updates of fairseq's Trainer (fairseq-train's path, in process), counting the
    layers that run in each: every layer of both stacks is skipped in some update and runs
    in another, a middle layer among them with both neighbours running."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer

    argv = [tiny_data_bin, "--arch", "ea_transformer", *MODEL, *TRAIN, "--encoder-layerdrop",
            "0.5", "--decoder-layerdrop", "0.5", "--max-update", "12", "--save-dir", tmp_path]
    cfg = convert_namespace_to_omegaconf(
        options.parse_args_and_arch(options.get_training_parser(), [str(a) for a in argv]))
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    trainer = Trainer(cfg, task, model, task.build_criterion(cfg.criterion))
    epoch_itr = trainer.get_train_iterator(epoch=1, load_dataset=True)
    ran = []  # per update: the (stack, layer) that ran
    for stack in ("encoder", "decoder"):
        layers = getattr(model, stack).layers  # iterating would drop layers: index them
        for i in range(len(layers)):
            layers[i].register_forward_hook(lambda m, args, out, key=(stack, i): ran[-1].add(key))
    batches = epoch_itr.next_epoch_itr(shuffle=True)
    for _ in range(12):
        if not batches.has_next():
            batches = trainer.get_train_iterator(epoch=epoch_itr.epoch + 1).next_epoch_itr()
        ran.append(set())
        assert trainer.train_step([next(batches)]) is not None  # no overflow, a real update
    assert trainer.get_num_updates() == 12
    layers = {(stack, i) for stack in ("encoder", "decoder") for i in range(3)}
    for key in layers:
        runs = sum(key in update for update in ran)
        assert 0 < runs < 12, (key, runs)  # skipped in some updates, trained in others
    for stack in ("encoder", "decoder"):
        assert any({(stack, 0), (stack, 2)} <= update and (stack, 1) not in update for update in ran)
    trainer.consolidate_optimizer()  # as checkpoint_utils.save_checkpoint does first
    trainer.save_checkpoint(str(tmp_path / "checkpoint_last.pt"), {})

    [dropped], _, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(tmp_path / "checkpoint_last.pt")])
    dropped.eval()
    assert dropped.encoder.layers.p == 0.5 and dropped.decoder.layers.p == 0.5
    assert torch.equal(dropped.decoder.layers[1].self_attn.evolving.conv.weight,
                       model.decoder.layers[1].self_attn.evolving.conv.weight)
    # evaluation runs every layer: the same as the weights in a model without LayerDrop
    no_drop, _, _ = build_model(tiny_data_bin, extra=MODEL)
    no_drop.load_state_dict(dropped.state_dict())
    assert torch.equal(forward(dropped, task), forward(no_drop, task))


def test_fairseq_fails_on_layers_to_keep_lists_without_the_fix(dict_dir):
    from fairseq.models.transformer import TransformerModel

    _, task, args = build_model(dict_dir, arch="transformer")
    args.encoder_layers_to_keep = [0, 2]  # what --encoder-layers-to-keep 0,2 parses into
    original = compat.ORIGINALS["TransformerModel.build_model"]
    try:
        original.__func__(TransformerModel, args, task)
        raise AssertionError("fairseq accepted a list: the fix is no longer needed")
    except AttributeError as error:
        assert "split" in str(error)
    args.encoder_layers_to_keep = [0, 2]
    model = TransformerModel.build_model(args, task)  # fixed
    assert len(model.encoder.layers) == 2


def test_pruned_layerdrop_checkpoint_generates_and_keeps_own_convolutions(tiny_data_bin, tmp_path):
    save_dir = tmp_path / "layerdrop"
    run([fairseq_cli("train"), tiny_data_bin, "--arch", "ea_transformer", *MODEL, *TRAIN,
         "--encoder-layerdrop", "0.3", "--decoder-layerdrop", "0.3", "--max-update", "6",
         "--save-dir", save_dir])
    checkpoint = str(save_dir / "checkpoint_last.pt")
    [full], _, task = checkpoint_utils.load_model_ensemble_and_task([checkpoint])
    keep = {"encoder_layers_to_keep": "0,2", "decoder_layers_to_keep": "1,2"}
    [pruned], _ = checkpoint_utils.load_model_ensemble([checkpoint], arg_overrides=keep)
    full.eval(), pruned.eval()
    assert len(pruned.encoder.layers) == len(pruned.decoder.layers) == 2
    # kept layers keep their own convolutions
    assert pruned.encoder.layers[0].self_attn.evolving is None
    assert torch.equal(pruned.encoder.layers[1].self_attn.evolving.conv.weight,
                       full.encoder.layers[2].self_attn.evolving.conv.weight)
    # the first layer kept starts the chain: no convolution (the original layer 1's would
    # never run there), so no parameter that DDP would find unused
    assert pruned.decoder.layers[0].encoder_attn.evolving is None
    assert pruned.decoder.layers[0].self_attn.evolving is None
    assert torch.equal(pruned.decoder.layers[1].encoder_attn.evolving.conv.weight,
                       full.decoder.layers[2].encoder_attn.evolving.conv.weight)
    # and the chain follows the kept layers: the full model with those layers skipped
    del full.encoder.layers[1]
    del full.decoder.layers[0]
    assert torch.allclose(forward(pruned, task), forward(full, task), atol=1e-6)

    # fairseq-generate prunes the same way, and a pruned model fine-tuned with
    # --*-layers-to-keep saves a checkpoint that generates as it is
    overrides = "{'encoder_layers_to_keep': '0,2', 'decoder_layers_to_keep': '1,2'}"
    generate = [fairseq_cli("generate"), tiny_data_bin, "--user-dir", ROOT / "evo_fairseq",
                "--gen-subset", "test", "--beam", "2", "--max-len-b", "6", "--batch-size", "8"]
    out = run([*generate, "--path", checkpoint, "--model-overrides", overrides])
    assert sum(line.startswith("H-") for line in out.stdout.splitlines()) == 21
    tuned = tmp_path / "pruned"
    run([fairseq_cli("train"), tiny_data_bin, "--arch", "ea_transformer", *MODEL, *TRAIN,
         "--encoder-layers-to-keep", "0,2", "--decoder-layers-to-keep", "1,2",
         "--restore-file", checkpoint, "--reset-optimizer", "--max-update", "2",
         "--save-dir", tuned])
    out = run([*generate, "--path", tuned / "checkpoint_last.pt"])
    assert sum(line.startswith("H-") for line in out.stdout.splitlines()) == 21


def test_pruned_checkpoint_fine_tunes_under_pytorch_ddp(tiny_data_bin, tmp_path):
    """fairseq's default DDP backend without --find-unused-parameters: every parameter of a
    model pruned away from its original layer 0 must take part in the loss."""
    trained = tmp_path / "trained"
    run([fairseq_cli("train"), tiny_data_bin, "--arch", "ea_transformer", *MODEL, *TRAIN,
         "--max-update", "2", "--save-dir", trained])
    tuned = tmp_path / "tuned"
    logs = run_two_workers([
        tiny_data_bin, "--arch", "ea_transformer", *MODEL, *TRAIN,
        "--encoder-layers-to-keep", "1,2", "--decoder-layers-to-keep", "1,2",
        "--restore-file", trained / "checkpoint_last.pt", "--reset-optimizer",
        "--reset-dataloader", "--reset-meters", "--max-update", "3", "--save-dir", tuned,
        "--ddp-backend", "pytorch_ddp"])
    assert "num_updates 3" in logs[0]
    rank0, rank1 = torch.load(tuned / "rank0.pt"), torch.load(tuned / "rank1.pt")
    assert "encoder.layers.0.self_attn.evolving.conv.weight" not in rank0
    assert "encoder.layers.1.self_attn.evolving.conv.weight" in rank0
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
