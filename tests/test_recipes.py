"""The dataset recipes, offline on small archives in the real formats; downloads against a
local HTTP server; the generic recipe end to end (prepare -> train -> evaluate); the
training recipes' batch arithmetic; 2-process distributed training on CPU."""

import hashlib
import http.server
import json
import os
import re
import subprocess
import sys
import threading

import pytest
import torch

from archives import IWSLT_TEST_SETS, build_iwslt14, build_wmt14
from conftest import ROOT, fairseq_cli, multi30k_lines, run, run_two_workers
from evo_fairseq.corpora import Archive, CorpusError, fetch

SCRIPTS = ROOT / "scripts"


def lines(path):
    return path.read_text(encoding="utf-8").splitlines()


def test_iwslt14_recipe_offline(tmp_path):
    offline = tmp_path / "offline"
    _, talks, test = build_iwslt14(offline)
    out = tmp_path / "iwslt14"
    env = {"OFFLINE_DIR": str(offline), "BPE_MERGES": "300", "WORKERS": "2"}
    run(["bash", SCRIPTS / "prepare-iwslt14.sh", out], env=env)

    # raw text: talk metadata dropped, titles and descriptions kept as sentences (as fairseq does)
    train_de = lines(out / "raw" / "train.de")
    expected_de = [line for title, desc, sentences in talks["de"] for line in [title, desc, *sentences]]
    assert train_de == expected_de
    # test: the five sets in fairseq's order, the curly apostrophe made straight
    test_en = lines(out / "raw" / "test.en")
    assert test_en == ["It's a dog."] + test["en"][1:]
    assert len(test_en) == 8 * len(IWSLT_TEST_SETS)

    # tokenised, cleaned (1-175 tokens, ratio 1.5), lowercased; valid = every 23rd pair
    clean = {lang: lines(out / "tok" / f"train.clean.{lang}") for lang in ("de", "en")}
    for de, en in zip(clean["de"], clean["en"]):
        nd, ne = len(de.split()), len(en.split())
        assert 1 <= nd <= 175 and 1 <= ne <= 175 and max(nd / ne, ne / nd) <= 1.5
    assert len(clean["de"]) < len(train_de)  # the ratio filter removed some pairs
    for lang in ("de", "en"):
        valid, train = lines(out / "tok" / f"valid.{lang}"), lines(out / "tok" / f"train.{lang}")
        assert valid == clean[lang][22::23]
        assert train == [line for i, line in enumerate(clean[lang], 1) if i % 23]
        assert all(line == line.lower() for line in train + valid)
    assert lines(out / "tok" / "test.en")[0] == "it 's a dog ."
    # no dash splits (fairseq's IWSLT recipe tokenises without -a)
    assert not any("@-@" in line for line in lines(out / "tok" / "train.full.en"))
    env_file = (out / "prepare.env").read_text()
    assert "--moses-no-dash-splits" in env_file and "LOWERCASE=1" in env_file
    # separate dictionaries
    assert (out / "data-bin" / "dict.de.txt").read_text() != (out / "data-bin" / "dict.en.txt").read_text()

    again = run(["bash", SCRIPTS / "prepare-iwslt14.sh", out], env=env)
    assert "already there, checked" in again.stderr and "already extracted" in again.stderr


@pytest.mark.parametrize("tgt", ["de", "fr"])
def test_wmt14_recipe_offline(tmp_path, tgt):
    offline = tmp_path / "offline"
    expected = build_wmt14(offline, tgt)
    out = tmp_path / f"wmt14_en_{tgt}"
    run(["bash", SCRIPTS / f"prepare-wmt14en2{tgt}.sh", out],
        env={"OFFLINE_DIR": str(offline), "BPE_MERGES": "300", "WORKERS": "2"})

    for split in ("train", "valid", "test"):  # every corpus, newstest2013, newstest2014 from SGM
        for lang in ("en", tgt):
            assert lines(out / "raw" / f"{split}.{lang}") == expected[split][lang], (split, lang)
    first = lines(out / "tok" / f"train.{tgt}")[0]
    assert first.startswith('" anführungszeichen "'.replace("a", "A", 1))  # punctuation normalised
    assert "Bindestrich @-@ Wort" in first  # dash splits
    # cleaned after BPE: 1-250 subwords, ratio <= 1.5
    bpe_train = {lang: lines(out / "bpe" / f"train.{lang}") for lang in ("en", tgt)}
    assert 0 < len(bpe_train["en"]) <= len(expected["train"]["en"])
    for a, b in zip(bpe_train["en"], bpe_train[tgt]):
        na, nb = len(a.split()), len(b.split())
        assert 1 <= na <= 250 and 1 <= nb <= 250 and max(na / nb, nb / na) <= 1.5
    assert len(lines(out / "bpe" / "valid.en")) == len(expected["valid"]["en"])  # valid not cleaned
    # joined dictionary
    assert (out / "data-bin" / "dict.en.txt").read_text() == (out / "data-bin" / f"dict.{tgt}.txt").read_text()


def test_extract_names_a_missing_member(tmp_path):
    import tarfile

    offline = tmp_path / "offline"
    path, _, _ = build_iwslt14(offline, n_train=40, n_test=2)
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()
                   if "tst2012" not in m.name]
    with tarfile.open(path, "w:gz") as tar:
        import io
        for member, data in members:
            tar.addfile(member, io.BytesIO(data))
    proc = subprocess.run([sys.executable, "-m", "evo_fairseq.corpora", "extract", "iwslt14-de-en",
                           "--dir", offline, "--out", tmp_path / "raw"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "no member de-en/IWSLT14.TED.tst2012.de-en.de.xml" in proc.stderr
    assert not (tmp_path / "raw").exists() and not (tmp_path / "raw.tmp").exists()


def test_offline_mode_names_the_missing_archive(tmp_path):
    (tmp_path / "offline").mkdir()
    proc = subprocess.run(["bash", SCRIPTS / "prepare-wmt14en2de.sh", tmp_path / "out"],
                          env=dict(os.environ, OFFLINE_DIR=str(tmp_path / "offline")),
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "training-parallel-europarl-v7.tgz is missing" in proc.stderr
    assert "http://statmt.org/wmt13/training-parallel-europarl-v7.tgz" in proc.stderr


class RangeServer(http.server.ThreadingHTTPServer):
    """Serves files from a dict {path: bytes} with HTTP range support; records the ranges asked."""

    def __init__(self, files):
        self.files, self.ranges = files, []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(handler):
                data = self.files.get(handler.path)
                if data is None:
                    handler.send_error(404)
                    return
                start = 0
                asked = handler.headers.get("Range")
                self.ranges.append(asked)
                if asked:
                    start = int(re.match(r"bytes=(\d+)-", asked).group(1))
                    handler.send_response(206)
                    handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    handler.send_response(200)
                handler.send_header("Content-Length", str(len(data) - start))
                handler.end_headers()
                handler.wfile.write(data[start:])

            def log_message(handler, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def url(self, path):
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


def test_download_resumes_checks_and_never_leaves_a_bad_file(tmp_path):
    path, _, _ = build_iwslt14(tmp_path / "src", n_train=40, n_test=2)
    data = path.read_bytes() if hasattr(path, "read_bytes") else open(path, "rb").read()
    server = RangeServer({"/de-en.tgz": data, "/bad/de-en.tgz": data[: len(data) // 2]})
    try:
        dest = tmp_path / "orig"
        dest.mkdir()
        (dest / "de-en.tgz.part").write_bytes(data[:100])  # an interrupted download
        archive = Archive(server.url("/de-en.tgz"), size=len(data),
                          sha256=hashlib.sha256(data).hexdigest())
        fetched = fetch(archive, str(dest))
        assert open(fetched, "rb").read() == data and server.ranges == ["bytes=100-"]
        assert not (dest / "de-en.tgz.part").exists()
        fetch(archive, str(dest))  # already there: checked, not fetched again
        assert len(server.ranges) == 1

        bad_dir = tmp_path / "bad"
        with pytest.raises(CorpusError, match="not a complete de-en.tgz archive"):
            fetch(Archive(server.url("/bad/de-en.tgz")), str(bad_dir))
        assert os.listdir(bad_dir) == []  # nothing half-written left
        with pytest.raises(CorpusError, match="differs from the known"):
            fetch(Archive(server.url("/de-en.tgz"), sha256="0" * 64), str(tmp_path / "sum"))
        assert os.listdir(tmp_path / "sum") == []
        with pytest.raises(CorpusError, match=r"download of .*/missing/de-en.tgz failed: .*404"):
            fetch(Archive(server.url("/missing/de-en.tgz")), str(tmp_path / "missing"))
    finally:
        server.shutdown()


def sacrebleu_scores(hyp_tok, hyp_detok, tok_ref, raw_ref, compounds=None):
    """The three BLEU scores of score.py, from sacreBLEU directly; ``compounds``: the
    tokenised hypotheses and reference with the compound split applied (default: the
    split by a regular expression of this test's own)."""
    from sacrebleu.metrics import BLEU

    split = lambda lines: [re.sub(r"(\S)-(?=\S)", r"\1 ##AT##-##AT## ", l) for l in lines]
    hyp_split, ref_split = compounds or (split(hyp_tok), split(tok_ref))
    tokenised = BLEU(tokenize="none", smooth_method="none", force=True)
    results = {"tokenised_bleu": tokenised.corpus_score(hyp_tok, [tok_ref]),
               "compound_split_bleu": tokenised.corpus_score(hyp_split, [ref_split]),
               "sacrebleu": BLEU().corpus_score(hyp_detok, [raw_ref])}
    return {key: result.score for key, result in results.items()}, results


def test_score_is_sacrebleus_against_each_reference(tmp_path):
    """score.py on a fixed generate output: tokenised BLEU (BPE removed, no further
    tokenisation), compound-split BLEU and detokenised sacreBLEU, each sacreBLEU's own
    score against its reference; a perfect output scores 100 on all three."""
    tok_ref = ["a well-known man rides a horse .", "two dogs play in the snow .",
               "the state-of-the-art bike is red ."]
    raw_ref = ["A well-known man rides a horse.", "Two dogs play in the snow.",
               "The state-of-the-art bike is red."]
    hyp_bpe = ["a well-@@ known man ri@@ des a hor@@ se .", "two dogs play in snow .",
               "the state-of-the-@@ art car is red ."]
    hyp_detok = ["A well-known man rides a horse.", "two dogs play in snow.",  # case counts
                 "The state-of-the-art car is red."]
    hyp_tok = ["a well-known man rides a horse .", "two dogs play in snow .",
               "the state-of-the-art car is red ."]
    # the compound split of Vaswani et al., by hand
    compounds = (["a well ##AT##-##AT## known man rides a horse .", "two dogs play in snow .",
                  "the state ##AT##-##AT## of ##AT##-##AT## the ##AT##-##AT## art car is red ."],
                 ["a well ##AT##-##AT## known man rides a horse .", "two dogs play in the snow .",
                  "the state ##AT##-##AT## of ##AT##-##AT## the ##AT##-##AT## art bike is red ."])
    (tmp_path / "tok").write_text("\n".join(tok_ref) + "\n")
    (tmp_path / "raw").write_text("\n".join(raw_ref) + "\n")

    def score(hyps_bpe, hyps_detok, name):
        gen = tmp_path / f"{name}.txt"
        order = [2, 0, 1]  # fairseq-generate prints sentences in batch order
        gen.write_text("".join(f"S-{i}\tx\nH-{i}\t-0.25\t{hyps_bpe[i]}\nD-{i}\t-0.25\t{hyps_detok[i]}\n"
                               for i in order))
        return run([sys.executable, "-m", "evo_fairseq.score", "--generate-output", gen,
                    "--tok-ref", tmp_path / "tok", "--raw-ref", tmp_path / "raw",
                    "--compound-split", "--out-dir", tmp_path / name]).stdout

    out = score(hyp_bpe, hyp_detok, "imperfect")
    scores = json.loads((tmp_path / "imperfect" / "scores.json").read_text())
    expected, _ = sacrebleu_scores(hyp_tok, hyp_detok, tok_ref, raw_ref, compounds)
    assert {k: scores[k] for k in expected} == pytest.approx(expected, abs=0.006)
    assert lines(tmp_path / "imperfect" / "hyp.tok") == hyp_tok
    # the three differ, and none would hold against another reference
    assert len({round(expected[k], 2) for k in ("tokenised_bleu", "compound_split_bleu", "sacrebleu")}) == 3
    wrong, _ = sacrebleu_scores(hyp_tok, hyp_detok, raw_ref, tok_ref)
    assert all(abs(wrong[k] - scores[k]) > 1 for k in ("tokenised_bleu", "compound_split_bleu", "sacrebleu"))
    assert f"tokenised BLEU = {expected['tokenised_bleu']:.2f} " in out
    assert "tok:none" in scores["tokenised_bleu_signature"] and "tok:13a" in scores["sacrebleu_signature"]

    score(tok_ref, raw_ref, "perfect")
    perfect = json.loads((tmp_path / "perfect" / "scores.json").read_text())
    assert [perfect[k] for k in ("tokenised_bleu", "compound_split_bleu", "sacrebleu")] == [100.0] * 3


def test_generic_recipe_end_to_end(tmp_path):
    """prepare-pair.sh on a Multi30k slice (En->De) -> train-iwslt14.sh on CPU -> evaluate.sh."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for lang in ("en", "de"):
        (raw / f"train.{lang}").write_text("\n".join(multi30k_lines("train", lang, 600)) + "\n")
        (raw / f"valid.{lang}").write_text("\n".join(multi30k_lines("val", lang, 30)) + "\n")
        (raw / f"test.{lang}").write_text("\n".join(multi30k_lines("test_2016_flickr", lang, 25)) + "\n")
    prep, save = tmp_path / "prep", tmp_path / "checkpoints"
    run(["bash", SCRIPTS / "prepare-pair.sh", "--src", "en", "--tgt", "de", "--train", raw / "train",
         "--valid", raw / "valid", "--test", raw / "test", "--bpe", "fastbpe", "--bpe-merges", "500",
         "--clean", "1,80,2.0", "--workers", "2", "--out", prep])
    train = run(["bash", SCRIPTS / "train-iwslt14.sh", prep, save],
                env={"NGPU": "0", "ARCH": "ea_transformer_tiny", "MAX_EPOCH": "3",
                     "EXTRA_ARGS": "--lr 2e-3 --warmup-updates 5 --max-tokens 2048"})
    assert "1 worker(s) x 4096 tokens x update-freq 1" in train.stdout
    assert {"checkpoint1.pt", "checkpoint2.pt", "checkpoint3.pt"} <= set(os.listdir(save))

    evaluation = run(["bash", SCRIPTS / "evaluate.sh", "--prep", prep, "--checkpoints", save,
                      "--average", "2", "--cpu", "--batch-size", "16"])
    out = evaluation.stdout
    for title in ("tokenised BLEU", "compound-split BLEU", "detokenised sacreBLEU"):
        assert re.search(rf"^{title} = \d+\.\d\d ", out, re.M), title
    assert "nrefs:1|case:mixed|eff:no|tok:13a" in out
    scores = json.loads((save / "eval" / "scores.json").read_text())
    assert scores["sentences"] == 25
    # each score is sacreBLEU's own on generate's lines and the two references
    generated = (save / "eval" / "generate.txt").read_text().splitlines()
    by_id = lambda prefix: [text for _, text in sorted(
        (int(m[1]), m[2]) for m in (re.match(rf"{prefix}-(\d+)\t[^\t]*\t(.*)$", line)
                                    for line in generated) if m)]
    hyp_tok = [h.replace("@@ ", "") for h in by_id("H")]
    expected, results = sacrebleu_scores(hyp_tok, by_id("D"), lines(prep / "tok" / "test.de"),
                                         lines(raw / "test.de"))
    assert {key: scores[key] for key in expected} == pytest.approx(expected, abs=0.006)
    for result in results.values():  # n-gram precisions, hypothesis and reference lengths
        assert f"({result}; " in out
    assert len(lines(save / "eval" / "hyp.detok")) == 25

    # the averaged model is the mean of the last two epoch checkpoints
    load = lambda name: torch.load(save / name, map_location="cpu")["model"]
    averaged, c2, c3 = load("eval/averaged.pt"), load("checkpoint2.pt"), load("checkpoint3.pt")
    name = "decoder.layers.1.self_attn.evolving.conv.weight"
    assert name in averaged
    for key in (name, "encoder.embed_tokens.weight"):
        torch.testing.assert_close(averaged[key], (c2[key] + c3[key]) / 2)
        assert not torch.equal(c2[key], c3[key])

    # a lost sentence is an error, not a smaller test set
    generated = (save / "eval" / "generate.txt").read_text().splitlines()
    (tmp_path / "short.txt").write_text("\n".join(l for l in generated if not l.startswith("D-3\t")) + "\n")
    proc = subprocess.run([sys.executable, "-m", "evo_fairseq.score", "--generate-output", tmp_path / "short.txt",
                           "--tok-ref", prep / "tok" / "test.de", "--raw-ref", raw / "test.de"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "24 hypotheses for 25 reference sentences (missing ids [3]" in proc.stderr

    proc = subprocess.run(["bash", SCRIPTS / "evaluate.sh", "--prep", prep, "--checkpoints", save,
                           "--average", "5"], capture_output=True, text=True)
    assert proc.returncode != 0 and "3 epoch checkpoints" in proc.stderr and "5 needed" in proc.stderr


@pytest.mark.parametrize("argv, message", [
    (["--valid-every", "23", "--valid", "x"], "give --valid or --valid-every, not both"),
    (["--valid-every", "1"], "--valid-every must be an integer >= 2, got '1'"),
    (["--valid-every", "23", "--clean", "1-175"], "--clean must be MIN,MAX,RATIO (e.g. 1,175,1.5), got '1-175'"),
    (["--valid-every", "23", "--clean-after", "raw"], "--clean-after must be tok or bpe, got 'raw'"),
])
def test_prepare_pair_rejects_bad_options(tmp_path, argv, message):
    proc = subprocess.run(["bash", SCRIPTS / "prepare-pair.sh", "--src", "de", "--tgt", "en",
                           "--train", "t", "--test", "t", "--out", tmp_path, *argv],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and message in proc.stderr


def dry_run(script, *args, **env):
    proc = run(["bash", SCRIPTS / script, *args], env={"DRY_RUN": "1", **env})
    return proc.stdout


@pytest.mark.parametrize("gpus, max_tokens, update_freq", [("0", 3584, 128), ("8", 3584, 16), ("256", 1792, 1)])
def test_wmt_recipe_keeps_the_published_batch(gpus, max_tokens, update_freq):
    out = dry_run("train-wmt14en2de.sh", NGPU=gpus, ARCH="transformer_vaswani_wmt_en_de_big")
    assert f"--max-tokens {max_tokens} --update-freq {update_freq}" in out
    assert "--arch transformer_vaswani_wmt_en_de_big" in out and "--dropout 0.3" in out
    assert ("--cpu --ddp-backend legacy_ddp" in out) == (gpus == "0")
    assert ("--fp16" in out) == (gpus != "0")


def test_recipes_multi_node_and_iwslt_batch():
    out = dry_run("train-wmt14en2fr.sh", NGPU="8", NNODES="2", MASTER_ADDR="node0")
    assert out.splitlines()[1].startswith("torchrun --nnodes 2 --node-rank 0 --nproc-per-node 8 --master-addr node0")
    assert "--max-tokens 3584 --update-freq 8" in out and "--dropout" not in out
    assert "--arch ea_transformer_vaswani_wmt_en_fr_big" in out
    out = dry_run("train-iwslt14.sh", NGPU="4")
    assert "--max-tokens 1024 --update-freq 1" in out and "--arch ea_transformer_iwslt_de_en" in out


def test_two_worker_cpu_training_trains_one_model(tiny_data_bin, tmp_path):
    """Real 2-process data-parallel training (gloo) of the EA model on CPU."""
    save = tmp_path / "checkpoints"
    logs = run_two_workers([
        tiny_data_bin, "--user-dir", ROOT / "evo_fairseq", "--arch", "ea_transformer_tiny",
        "--max-update", "4", "--max-tokens", "400", "--optimizer", "adam", "--lr", "1e-3",
        "--save-dir", save, "--no-epoch-checkpoints", "--ddp-backend", "legacy_ddp",
        "--log-format", "simple", "--seed", "3"])
    assert "num_updates 4" in logs[0]
    rank0, rank1 = torch.load(save / "rank0.pt"), torch.load(save / "rank1.pt")
    assert any(".evolving." in name for name in rank0)
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    saved = torch.load(save / "checkpoint_last.pt", map_location="cpu")["model"]
    for name in rank0:
        assert torch.equal(saved[name], rank0[name]), name


def test_tokenize_keeps_one_line_per_sentence(tmp_path):
    """A carriage return or Unicode line separator inside a sentence must not split it:
    fairseq-preprocess would then misalign the two sides."""
    import gzip

    raw = tmp_path / "in.de.gz"
    with gzip.open(raw, "wt", encoding="utf-8", newline="\n") as f:
        f.write("Zeile mit\rWagenrücklauf.\nZweite\u2028Zeile.\nDritte Zeile.\n")
    out = tmp_path / "out.de"
    run([sys.executable, "-m", "evo_fairseq.text", "tokenize", "-l", "de", "--workers", "1", raw, out])
    assert out.read_bytes().decode("utf-8").split("\n") == [
        "Zeile mit Wagenrücklauf .", "Zweite Zeile .", "Dritte Zeile .", ""]


@pytest.mark.parametrize("problem, message", [
    ("count", "{d}/train.de has 30 lines but {d}/train.en has 29: the two sides"),
    ("utf8", "{d}/valid.de: line 6 is not valid UTF-8 (byte 0xe4 at byte 4 of the line)"),
    ("utf8-gz", "{d}/test.en.gz: line 2 is not valid UTF-8 (byte 0xe9 at byte 8 of the line)"),
    ("missing", "missing input: neither {d}/test.en nor {d}/test.en.gz exists"),
])
def test_prepare_pair_checks_every_input_before_any_work(tmp_path, problem, message):
    """A bad file is named, with its line, before anything is tokenised."""
    import gzip

    raw = tmp_path / "raw"
    raw.mkdir()
    lines = {lang: multi30k_lines("train", lang, 40) for lang in ("de", "en")}
    for lang in ("de", "en"):
        (raw / f"train.{lang}").write_text("\n".join(lines[lang][:30]) + "\n")
        (raw / f"valid.{lang}").write_text("\n".join(lines[lang][30:35]) + "\n")
        (raw / f"test.{lang}").write_text("\n".join(lines[lang][35:]) + "\n")
    if problem == "count":
        (raw / "train.en").write_text("\n".join(lines["en"][:29]) + "\n")
    elif problem == "utf8":
        with open(raw / "valid.de", "ab") as f:
            f.write(b"Ein\xe4 \xff Hund\n")  # Latin-1 bytes
    elif problem == "utf8-gz":
        (raw / "test.en").unlink()
        with gzip.open(raw / "test.en.gz", "wb") as f:
            f.write(b"a dog .\nthe caf\xe9 .\n" + b"x\n" * 3)
    elif problem == "missing":
        (raw / "test.en").unlink()
    proc = subprocess.run(["bash", SCRIPTS / "prepare-pair.sh", "--src", "de", "--tgt", "en",
                           "--train", raw / "train", "--valid", raw / "valid", "--test", raw / "test",
                           "--out", tmp_path / "out"], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert message.format(d=raw) in proc.stderr
    assert "tokenising" not in proc.stdout + proc.stderr
    assert not (tmp_path / "out" / "tok").exists()
