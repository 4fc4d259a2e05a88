"""The whole fairseq workflow on a tiny slice of the bundled Multi30k, through
fairseq's own command-line tools: prepare (our generic recipe) -> train ->
resume -> validate -> generate -> interactive -> hub."""

import re
import sys

import numpy as np
import pytest
import torch

from conftest import DATA, ROOT, count_panels, fairseq_cli, pixel_spread, read_gz, run

USER_DIR = ["--user-dir", ROOT / "evo_fairseq"]
TINY_EA = [
    "--arch", "ea_transformer", "--share-all-embeddings",
    "--encoder-layers", "2", "--decoder-layers", "3",
    "--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
    "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
    "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
]
TRAIN = [
    "--optimizer", "adam", "--lr", "0.002", "--lr-scheduler", "inverse_sqrt",
    "--warmup-updates", "4", "--criterion", "label_smoothed_cross_entropy",
    "--label-smoothing", "0.1", "--max-tokens", "1500", "--seed", "3",
    "--log-format", "simple", "--log-interval", "1", "--no-epoch-checkpoints",
]
N_TEST = 21  # not a multiple of --required-batch-size-multiple (8)
SENTENCES = ["Ein Hund läuft im Schnee.", "Zwei Männer stehen auf der Straße.",
             "Eine Frau mit einem roten Hut."]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Raw (untokenised, cased) text through scripts/prepare-pair.sh."""
    raw = tmp_path_factory.mktemp("raw")
    for lang in ("de", "en"):
        train = read_gz(DATA / f"train.{lang}.gz", 400)
        (raw / f"train.{lang}").write_text("\n".join(train[:360]) + "\n")
        (raw / f"valid.{lang}").write_text("\n".join(train[360:]) + "\n")
        (raw / f"test.{lang}").write_text(
            "\n".join(read_gz(DATA / f"test_2016_flickr.{lang}.gz", N_TEST)) + "\n")
    out = tmp_path_factory.mktemp("prepared")
    run(["bash", ROOT / "scripts" / "prepare-pair.sh", "--src", "de", "--tgt", "en",
         "--train", raw / "train", "--valid", raw / "valid", "--test", raw / "test",
         "--bpe", "fastbpe", "--bpe-merges", "400", "--joined-dictionary", "--workers", "2",
         "--out", out])
    return out


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("checkpoints")
    first = run([fairseq_cli("train"), prepared / "data-bin", *USER_DIR, *TINY_EA, *TRAIN,
                 "--max-update", "6", "--save-dir", save_dir])
    resumed = run([fairseq_cli("train"), prepared / "data-bin", *USER_DIR, *TINY_EA, *TRAIN,
                   "--max-update", "12", "--save-dir", save_dir])
    return save_dir, first.stderr + first.stdout, resumed.stderr + resumed.stdout


def test_prepare_pair_outputs(prepared):
    for name in ["code", "code.fastbpe", "data-bin/dict.de.txt", "data-bin/test.de-en.en.bin"]:
        assert (prepared / name).stat().st_size > 0, name
    assert len((prepared / "tok" / "test.en").read_text().splitlines()) == N_TEST
    bpe_lines = (prepared / "bpe" / "train.de").read_text()
    assert "@@ " in bpe_lines


def test_train_and_resume_from_checkpoint_last(trained):
    save_dir, first, resumed = trained
    assert "num_updates 6" in first
    assert re.search(r"Loaded checkpoint \S*checkpoint_last\.pt \(epoch \d+ @ 6 updates\)", resumed)
    assert "num_updates 12" in resumed
    assert (save_dir / "checkpoint_best.pt").exists()
    losses = [float(x) for x in re.findall(r"train \| epoch \d+ \| loss ([\d.]+)", first + resumed)]
    assert losses[-1] < losses[0]


def test_validate(trained, prepared):
    save_dir = trained[0]
    out = run([fairseq_cli("validate"), prepared / "data-bin", *USER_DIR, "--task", "translation",
               "--path", save_dir / "checkpoint_last.pt", "--max-tokens", "500"])
    text = out.stdout + out.stderr
    loss = re.search(r"valid on 'valid' subset \| loss ([\d.]+)", text)
    # the untrained model's loss: the first update's, logged before its step
    untrained = re.search(r"epoch 001:\s+1 / \d+ loss=([\d.]+)", trained[1])
    assert loss and untrained and 0 < float(loss.group(1)) < float(untrained.group(1)) - 0.5


@pytest.fixture(scope="module")
def generated(trained, prepared):
    save_dir, _, _ = trained
    return run([fairseq_cli("generate"), prepared / "data-bin", *USER_DIR,
                "--path", save_dir / "checkpoint_last.pt", "--gen-subset", "test", "-s", "de", "-t", "en",
                "--beam", "5", "--max-tokens", "150", "--max-len-b", "20",
                "--scoring", "sacrebleu", "--print-alignment",
                "--tokenizer", "moses", "--bpe", "fastbpe", "--bpe-codes", prepared / "code.fastbpe"])


def test_generate_translates_every_sentence(generated):
    out = generated
    ids = sorted(int(x) for x in re.findall(r"^H-(\d+)\t", out.stdout, re.M))
    assert ids == list(range(N_TEST))  # none dropped with required-batch-size-multiple 8
    hypotheses = dict(re.findall(r"^H-(\d+)\t\S+\t(.*)$", out.stdout, re.M))
    alignments = dict(re.findall(r"^A-(\d+)\t(.*)$", out.stdout, re.M))
    assert len(alignments) == N_TEST
    for i, alignment in alignments.items():  # source-target pairs, one per target token at least
        pairs = re.fullmatch(r"\d+-\d+( \d+-\d+)*", alignment)
        assert pairs, (i, alignment)
        assert len(alignment.split()) >= len(hypotheses[i].split()), (i, alignment)
    detok = re.findall(r"^D-\d+\t\S+\t(.*)$", out.stdout, re.M)
    assert len(detok) == N_TEST and not any("@@" in d for d in detok)
    assert re.search(r"Generate test with beam=5: BLEU = [\d.]+", out.stdout + out.stderr)


@pytest.mark.parametrize("bpe", ["subword_nmt", "fastbpe"])
def test_interactive_with_moses_and_bpe(trained, prepared, bpe):
    save_dir, _, _ = trained
    codes = prepared / ("code" if bpe == "subword_nmt" else "code.fastbpe")
    proc = run([fairseq_cli("interactive"), prepared / "data-bin", *USER_DIR,
                "--path", save_dir / "checkpoint_last.pt", "--source-lang", "de",
                "--target-lang", "en", "--beam", "5", "--buffer-size", "2", "--batch-size", "2",
                "--max-len-b", "20", "--tokenizer", "moses", "--moses-no-escape", "--bpe", bpe,
                "--bpe-codes", codes],
               input="\n".join(SENTENCES + ['Ein "Hund" läuft.']) + "\n")
    sources = re.findall(r"^S-\d+\t(.*)$", proc.stdout, re.M)
    assert len(sources) == len(SENTENCES) + 1
    assert sources[0].startswith("Ein Hund l")
    assert sources[0].replace("@@ ", "").endswith("Schnee .")  # moses split the final period
    # not escaped, as in the training data: each quote is one (unknown) token, not &quot; pieces
    assert sources[-1].split()[:4] == ["Ein", "<unk>", "Hund", "<unk>"]
    assert len(re.findall(r"^D-\d+\t", proc.stdout, re.M)) == len(SENTENCES) + 1


def test_hub_from_pretrained(trained, prepared, generated):
    """hub.translate gives fairseq-generate's hypotheses for the same sentences and beam."""
    from evo_fairseq.models import EATransformerModel

    save_dir, _, _ = trained
    hub = EATransformerModel.from_pretrained(
        str(save_dir), checkpoint_file="checkpoint_last.pt",
        data_name_or_path=str(prepared / "data-bin"), bpe="fastbpe",
        bpe_codes=str(prepared / "code.fastbpe"),
    )
    hub.eval()
    assert type(hub.models[0]).__name__ == "EATransformerModel"
    sources = (prepared / "tok" / "test.de").read_text().splitlines()  # what generate read
    hypotheses = dict(re.findall(r"^H-(\d+)\t\S+\t(.*)$", generated.stdout, re.M))
    expected = [hypotheses[str(i)].replace("@@ ", "") for i in range(N_TEST)]
    translations = hub.translate(sources, beam=5, max_len_b=20)
    assert translations == expected
    assert all(t.strip() for t in translations)
    # raw text through Moses as well: one non-empty translation each
    moses = EATransformerModel.from_pretrained(
        str(save_dir), checkpoint_file="checkpoint_last.pt",
        data_name_or_path=str(prepared / "data-bin"),
        tokenizer="moses", moses_no_escape=True, bpe="fastbpe", bpe_codes=str(prepared / "code.fastbpe"),
    ).eval()
    raw = moses.translate(SENTENCES, beam=5, max_len_b=20)
    assert len(raw) == len(SENTENCES) and all(t.strip() and "@@" not in t for t in raw)


def inspect_cli(checkpoint, prepared, out_dir, *extra):
    return run([sys.executable, "-m", "evo_fairseq.inspect", "--path", checkpoint,
                "--data-bin", prepared / "data-bin", "-s", "de", "-t", "en",
                "--source", SENTENCES[0], "--tokenizer", "moses", "--bpe", "fastbpe",
                "--bpe-codes", prepared / "code.fastbpe", "--out-dir", out_dir, *extra])


def recomputed_first_layer_logits(checkpoint, prepared, arrays):
    """QK^T / sqrt(d) of each stack's layer 1, ``(heads, tgt_len, src_len)``, from the
    layer's own projections applied to the inputs it receives (no attention capture)."""
    from evo_fairseq.models import EATransformerModel

    hub = EATransformerModel.from_pretrained(
        str(checkpoint.parent), checkpoint_file=checkpoint.name,
        data_name_or_path=str(prepared / "data-bin")).eval()
    model = hub.models[0]
    ids = lambda d, tokens: torch.tensor([[d.index(t) for t in tokens]])
    src = ids(hub.src_dict, arrays["source_tokens"])
    prev = ids(hub.tgt_dict, arrays["decoder_input_tokens"])
    modules = {"encoder": model.encoder.layers[0].self_attn,
               "decoder": model.decoder.layers[0].self_attn,
               "cross": model.decoder.layers[0].encoder_attn}
    inputs = {}

    def keep_inputs(stack):
        def hook(module, args, kwargs):
            inputs.setdefault(stack, (kwargs["query"] if "query" in kwargs else args[0],
                                      kwargs["key"] if "key" in kwargs else args[1]))
        return hook

    handles = [m.register_forward_pre_hook(keep_inputs(stack), with_kwargs=True)
               for stack, m in modules.items()]
    try:
        with torch.no_grad():
            model(src, torch.tensor([src.size(1)]), prev)
    finally:
        for handle in handles:
            handle.remove()
    logits = {}
    for stack, m in modules.items():
        query, key = inputs[stack]  # (len, 1, embed_dim)
        heads, head_dim = m.num_heads, m.head_dim
        q = m.q_proj(query)[:, 0].view(-1, heads, head_dim).transpose(0, 1)
        k = m.k_proj(key)[:, 0].view(-1, heads, head_dim).transpose(0, 1)
        logits[stack] = (q @ k.transpose(1, 2) / head_dim ** 0.5).detach().numpy()
    return logits


def test_inspect_captures_what_the_model_computes(trained, prepared, tmp_path):
    from matplotlib.image import imread

    from evo_fairseq.inspect import figure_size

    save_dir, _, _ = trained
    out = inspect_cli(save_dir / "checkpoint_last.pt", prepared, tmp_path / "maps").stdout
    arrays = np.load(tmp_path / "maps" / "sentence-1.npz")
    n_src = len(arrays["source_tokens"])
    n_tgt = len(arrays["target_tokens"])
    assert arrays["source_tokens"][-1] == "</s>" and arrays["decoder_input_tokens"][0] == "</s>"
    layers = {"encoder": 2, "decoder": 3, "cross": 3}
    shapes = {"encoder": (4, n_src, n_src), "decoder": (4, n_tgt, n_tgt),
              "cross": (4, n_tgt, n_src)}
    alpha, beta = 0.8, 0.5  # the defaults the fixture's model was trained with
    first_layer_logits = recomputed_first_layer_logits(save_dir / "checkpoint_last.pt", prepared,
                                                       arrays)
    for stack, num_layers in layers.items():
        for layer in range(1, num_layers + 1):
            key = f"{stack}/layer{layer}"
            probs = arrays[f"{key}/probs"]
            assert probs.shape == shapes[stack]
            assert np.allclose(probs.sum(-1), 1.0, atol=1e-5)
            if stack == "decoder":  # causal: no weight on future positions
                assert np.all(np.triu(probs, k=1) == 0)
            evolved = torch.from_numpy(arrays[f"{key}/evolved"])
            if stack == "decoder":
                evolved = evolved.masked_fill(torch.ones(n_tgt, n_tgt).triu(1).bool(), float("-inf"))
            assert np.allclose(torch.softmax(evolved, -1).numpy(), probs, atol=1e-5)
            if layer == 1:  # the chain starts from QK^T / sqrt(d) itself
                assert f"{key}/mixed" not in arrays
                assert np.allclose(arrays[f"{key}/logits"], first_layer_logits[stack], atol=1e-4)
                assert np.array_equal(arrays[f"{key}/evolved"], arrays[f"{key}/logits"])
            else:  # the evolution itself, from the saved arrays, on the cells not masked
                # (masked cells: 0 in mixed, the convolution's input; a large negative
                # number in evolved, the softmax's input)
                allowed = np.ones(shapes[stack], dtype=bool)
                if stack == "decoder":
                    allowed &= ~np.triu(np.ones((n_tgt, n_tgt), dtype=bool), k=1)
                    assert (arrays[f"{key}/mixed"][~allowed] == 0).all()
                    assert (arrays[f"{key}/evolved"][~allowed] < -1e30).all()
                mixed = arrays[f"{key}/mixed"]
                prev = arrays[f"{stack}/layer{layer - 1}/evolved"]
                expected = (1 - alpha) * arrays[f"{key}/logits"] + alpha * prev
                assert np.allclose(mixed[allowed], expected[allowed], atol=1e-5)
                expected = beta * arrays[f"{key}/conv"] + (1 - beta) * mixed
                assert np.allclose(arrays[f"{key}/evolved"][allowed], expected[allowed], atol=1e-5)
                assert (arrays[f"{key}/conv"] >= 0).all()  # relu
    # the table: one row per evolving layer
    assert "| cross | 3 |" in out and "| encoder | 2 |" in out and "| decoder | 2 |" in out
    image = imread(tmp_path / "maps" / "sentence-1.png")
    width, height = figure_size(3)
    assert image.shape[:2] == (height, width)
    assert count_panels(tmp_path / "maps" / "sentence-1.png") == 2 + 3 + 3  # one per layer map
    assert pixel_spread(tmp_path / "maps" / "sentence-1.png") > 0.05


def attachments(model):
    """Everything capture may attach, per module: attributes, hooks, the fused path's
    switch and the chain's capture callback."""
    return {name: (sorted(vars(m)), list(m._forward_hooks.items()),
                   list(m._forward_pre_hooks.items()), getattr(m, "skip_embed_dim_check", None),
                   getattr(getattr(m, "chain", None), "capture", None))
            for name, m in model.named_modules()}


def check_capture_restores(model, src, lengths, prev, during_atol):
    """Outputs before, during and after capture; the modules as they were after it."""
    from evo_fairseq.attention_capture import AttentionCapture

    before_state = attachments(model)
    with torch.no_grad():
        before, extra = model(src, lengths, prev)
        with AttentionCapture(model) as capture:
            assert attachments(model) != before_state
            during, _ = model(src, lengths, prev)
        after, _ = model(src, lengths, prev)
    assert attachments(model) == before_state  # nothing left attached, every switch restored
    assert torch.equal(before, after)
    if during_atol == 0:
        assert torch.equal(before, during)
    else:
        assert (before - during).abs().max() < during_atol
    return extra, capture


def test_inspect_does_not_change_outputs_and_matches_fairseqs_attention(trained, prepared):
    from evo_fairseq.models import EATransformerModel

    save_dir, _, _ = trained
    hub = EATransformerModel.from_pretrained(
        str(save_dir), checkpoint_file="checkpoint_last.pt",
        data_name_or_path=str(prepared / "data-bin")).eval()
    model = hub.models[0]
    src = hub.encode("ein hund läuft im schnee .").unsqueeze(0)
    prev = torch.tensor([[2, 10, 11, 12, 13, 14]])
    lengths = torch.tensor([src.size(1)])
    # EA attention always takes fairseq's own path: to the bit, during capture too
    extra, capture = check_capture_restores(model, src, lengths, prev, during_atol=0)
    # fairseq's own returned attention (last layer, heads averaged) = captured probabilities
    assert torch.allclose(extra["attn"][0][0], capture.maps[("cross", 3)]["probs"][0].mean(0),
                          atol=1e-6)


def test_capture_restores_a_plain_transformer(dict_dir):
    """fairseq's attention leaves its fused path during capture (outputs within 1e-5) and
    returns to it after (to the bit)."""
    from conftest import build_model, random_batch

    model, task, _ = build_model(dict_dir, arch="transformer")
    switches = [m.skip_embed_dim_check for m in model.modules() if hasattr(m, "skip_embed_dim_check")]
    assert switches == [False] * 9  # the fused path
    src, lengths, prev, _ = random_batch(task)
    _, capture = check_capture_restores(model, src, lengths, prev, during_atol=1e-5)
    assert len(capture.maps) == 9


def test_inspect_plain_transformer_checkpoint(prepared, tmp_path):

    save_dir = tmp_path / "plain"
    run([fairseq_cli("train"), prepared / "data-bin", "--arch", "transformer",
         *TINY_EA[2:], *TRAIN, "--max-update", "3", "--save-dir", save_dir])
    out = inspect_cli(save_dir / "checkpoint_last.pt", prepared, tmp_path / "maps",
                      "--head", "1").stdout
    arrays = np.load(tmp_path / "maps" / "sentence-1.npz")
    assert not any(key.endswith("/mixed") for key in arrays.files)
    assert np.allclose(arrays["cross/layer3/probs"].sum(-1), 1.0, atol=1e-5)
    assert "| decoder | 3 |" in out
    assert count_panels(tmp_path / "maps" / "sentence-1.png") == 2 + 3 + 3
    assert pixel_spread(tmp_path / "maps" / "sentence-1.png") > 0.05
