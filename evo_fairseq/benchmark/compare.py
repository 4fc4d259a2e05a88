# Copyright (c) evo-fairseq contributors.
#
# This source code is licensed under the MIT license found in the
# LICENSE file in the root directory of this source tree.
"""EA-Transformer against fairseq's transformer, side by side in one run.

    python -m evo_fairseq.benchmark [compare] --data-bin DIR [--arch iwslt_de_en] [--quick]
        [--max-update N] [--seeds 1 2 3] [--bpe-codes CODES --reference REF]
        [--model-args "..."] [--ea-args "..."] [--checkpoint best|last] [--jobs N]
        [--figure PNG] [--out-dir DIR]

Trains ``transformer_<arch>`` and ``ea_transformer_<arch>`` with identical
settings (each in its own process), then reports for each, with the EA/plain
ratio: training throughput (target tokens/s, median over the updates after
warm-up), peak memory (CPU: the process's peak resident set; GPU: peak
allocated CUDA memory), validation loss, generation speed with beam 5
(sentences/s) and BLEU (detokenised sacreBLEU against ``--reference`` when
given, else fairseq's sacreBLEU on the binarised references). Uses the GPU
when there is one (with ``--fp16``). Writes ``DIR/benchmark.json`` and
``DIR/benchmark.md``. With both models and several seeds the markdown has a
per-seed table (BLEU, validation loss, EA - plain, mean ± std). ``--checkpoint best``
translates with ``checkpoint_best.pt`` (lowest validation loss, the convergence
protocol); ``--jobs N`` runs N trainings at once; ``--figure`` draws the validation
curves of both models and every seed (see ``converge``). Its throughput and memory are
read from whole trainings; ``speed`` is the controlled speed measurement.
"""

import argparse
import concurrent.futures
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time

import torch

from evo_fairseq.benchmark.converge import per_seed_rows, plot_validation, validation_curve

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the plugin: --user-dir
# One process per run; on exit it records the peak GPU memory (fairseq logs none).
LAUNCHER = """
import atexit, json, sys, torch
peak_file, module = sys.argv[1], sys.argv[2]
sys.argv = [module] + sys.argv[3:]
def record():
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    with open(peak_file, "w") as f:
        json.dump({"cuda_peak_bytes": peak}, f)
atexit.register(record)
# fairseq's Trainer resets the CUDA peak after every update (to log gb_free): keep the whole peak
torch.cuda.reset_peak_memory_stats = lambda *args, **kwargs: None
import importlib
importlib.import_module(module).cli_main()
"""

TRAIN_ARGS = (
    "--optimizer adam --adam-betas (0.9,0.98) --clip-norm 0.0 --lr 1e-3 "
    "--lr-scheduler inverse_sqrt --warmup-updates 100 --dropout 0.3 "
    "--criterion label_smoothed_cross_entropy --label-smoothing 0.1 --max-tokens 4096"
)


def run_child(module, args, log_path, peak_path):
    """Run ``python -m module args`` logging to ``log_path``; returns (seconds, peak RSS bytes)."""
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, peak_path, module, *args],
            stdout=log, stderr=subprocess.STDOUT,
        )
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        with open(log_path) as f:
            tail = f.read()[-3000:]
        raise SystemExit(f"error: {module} failed (log: {log_path}):\n{tail}")
    return seconds, usage.ru_maxrss * 1024  # Linux reports KiB


def parse_train_log(text, warmup):
    """Per-update target tokens/s after ``warmup`` updates."""
    wps = []
    for line in text.splitlines():
        if "| train_inner |" in line or '"train_inner"' in line:
            m_upd = re.search(r"num_updates[=\": ]+(\d+)", line)
            m_wps = re.search(r"wps[=\": ]+([\d.]+)", line)
            if m_upd and m_wps and int(m_upd.group(1)) > warmup:
                wps.append(float(m_wps.group(1)))
    return wps


def parse_generate_log(text):
    m = re.search(r"Translated ([\d,]+) sentences \(([\d,]+) tokens\) in ([\d.]+)s "
                  r"\(([\d.]+) sentences/s, ([\d.]+) tokens/s\)", text)
    if not m:
        raise SystemExit("error: no 'Translated ...' line in the fairseq-generate log")
    bleu = re.search(r"BLEU = ([\d.]+)", text)
    return {
        "sentences": int(m.group(1).replace(",", "")),
        "gen_sentences_per_s": float(m.group(4)),
        "gen_tokens_per_s": float(m.group(5)),
        "fairseq_bleu": float(bleu.group(1)) if bleu else None,
    }


def sacrebleu_score(hypotheses, reference):
    import sacrebleu

    with open(reference, encoding="utf-8") as f:
        refs = [line.rstrip("\n") for line in f]
    if len(refs) != len(hypotheses):
        raise SystemExit(f"error: {len(hypotheses)} hypotheses but {len(refs)} references "
                         f"in {reference}")
    bleu = sacrebleu.metrics.BLEU()
    score = bleu.corpus_score(hypotheses, [refs])
    return score.score, str(bleu.get_signature())


def language_pair(data_bin):
    """``(src, tgt)`` from fairseq-preprocess's file names (``train.src-tgt.src.bin``)."""
    pairs = set()
    for name in os.listdir(data_bin):
        m = re.fullmatch(r"\w+\.([\w-]+)-([\w-]+)\.[\w-]+\.bin", name)
        if m:
            pairs.add((m.group(1), m.group(2)))
    if len(pairs) != 1:
        raise SystemExit(f"error: cannot tell the language pair of {data_bin} (found {sorted(pairs)}); "
                         "give --source-lang and --target-lang")
    return pairs.pop()


def benchmark_model(arch, seed, args, out_dir, device):
    tag = f"{arch}-seed{seed}"
    save_dir = os.path.join(out_dir, tag)
    os.makedirs(save_dir, exist_ok=True)
    common = [args.data_bin, "--user-dir", ROOT, "-s", args.source_lang, "-t", args.target_lang]
    train_args = common + [
        "--arch", arch, *shlex.split(args.model_args), *shlex.split(args.train_args),
        "--max-update", str(args.max_update), "--seed", str(seed), "--save-dir", save_dir,
        "--no-epoch-checkpoints", "--log-format", "simple", "--log-interval", "1",
    ]
    if arch.startswith("ea_"):
        train_args += shlex.split(args.ea_args)
    if device == "cuda":
        train_args.append("--fp16")
    else:
        train_args.append("--cpu")
    train_log = os.path.join(save_dir, "train.log")
    train_seconds, train_rss = run_child(
        "fairseq_cli.train", train_args, train_log, os.path.join(save_dir, "peak_train.json"))
    with open(train_log) as f:
        train_text = f.read()
    wps = parse_train_log(train_text, args.timing_warmup)
    curve = validation_curve(train_text)
    valid_loss = None
    if curve:  # checkpoint_best.pt: the lowest validation loss; checkpoint_last.pt: the last
        valid_loss = min(loss for _, loss in curve) if args.checkpoint == "best" else curve[-1][1]
    with open(os.path.join(save_dir, "peak_train.json")) as f:
        cuda_peak = json.load(f)["cuda_peak_bytes"]

    gen_args = common + [
        "--path", os.path.join(save_dir, f"checkpoint_{args.checkpoint}.pt"),
        "--gen-subset", args.gen_subset,
        "--beam", "5", "--batch-size", str(args.gen_batch_size), "--scoring", "sacrebleu",
    ]
    if args.gen_length:  # every hypothesis exactly this long: same work for both models
        gen_args += ["--min-len", str(args.gen_length), "--max-len-a", "0",
                     "--max-len-b", str(args.gen_length)]
    else:  # bounded, so that an undertrained model is not timed on runaway output
        gen_args += ["--max-len-a", "1.2", "--max-len-b", "10"]
    if args.bpe_codes:
        gen_args += ["--tokenizer", "moses", "--moses-no-escape", "--bpe", args.bpe, "--bpe-codes", args.bpe_codes]
    else:
        gen_args += ["--remove-bpe"]
    gen_args += ["--fp16"] if device == "cuda" else ["--cpu"]
    gen_log = os.path.join(save_dir, "generate.log")
    run_child("fairseq_cli.generate", gen_args, gen_log, os.path.join(save_dir, "peak_gen.json"))
    with open(gen_log) as f:
        gen_text = f.read()
    result = {
        "arch": arch, "seed": seed, "train_seconds": round(train_seconds, 1),
        "timed_updates": len(wps),
        "train_tokens_per_s": statistics.median(wps) if wps else None,
        "peak_memory_mb": round((cuda_peak if device == "cuda" else train_rss) / 2**20, 1),
        "valid_loss": valid_loss,
        "checkpoint": args.checkpoint,
        "valid_curve": curve,
        **parse_generate_log(gen_text),
    }
    hyps = {int(i): h for i, h in re.findall(r"^D-(\d+)\t\S+\t(.*)$", gen_text, re.M)}
    if args.reference:
        ordered = [hyps[i] for i in sorted(hyps)]
        result["bleu"], result["bleu_signature"] = sacrebleu_score(ordered, args.reference)
    else:
        result["bleu"], result["bleu_signature"] = result["fairseq_bleu"], "fairseq --scoring sacrebleu"
    return result


METRICS = [
    ("train_tokens_per_s", "training throughput (target tokens/s)", "{:.0f}"),
    ("peak_memory_mb", "peak memory (MB)", "{:.0f}"),
    ("valid_loss", "validation loss", "{:.3f}"),
    ("gen_sentences_per_s", "generation, beam 5 (sentences/s)", "{:.2f}"),
    ("bleu", "BLEU", "{:.2f}"),
]


def summarise(runs, key):
    values = [r[key] for r in runs if r.get(key) is not None]
    if not values:
        return None, None
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def markdown(report):
    lines = [f"Machine: {report['machine']}", "",
             f"Command: `{report['command']}`", "",
             "| metric | transformer | ea_transformer | EA / plain |", "|---|---|---|---|"]
    for key, title, fmt in METRICS:
        row = report["summary"][key]
        cell = lambda m, s: "n/a" if m is None else (fmt.format(m) + (f" ± {fmt.format(s)}" if s else ""))
        ratio = "n/a" if row["ratio"] is None else f"{row['ratio']:.2f}x"
        lines.append(f"| {title} | {cell(row['plain_mean'], row['plain_std'])} | "
                     f"{cell(row['ea_mean'], row['ea_std'])} | {ratio} |")
    settings = report["settings"]
    seed_rows = per_seed_rows(report["runs"])
    if seed_rows:
        lines += ["", f"Per seed ({settings['max_update']} updates, checkpoint_{settings['checkpoint']}.pt):",
                  "", *seed_rows]
    if settings["jobs"] > 1:
        lines += ["", f"{settings['jobs']} trainings ran at once on one device: throughput and "
                      "memory are not a speed measurement."]
    return "\n".join(lines) + "\n"


def machine_description(device):
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (fp16), torch {torch.__version__}"
    return (f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}")


def compare(args):
    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    os.makedirs(args.out_dir, exist_ok=True)
    runs = {"plain": [], "ea": []}
    archs = {"plain": f"transformer_{args.arch}", "ea": f"ea_transformer_{args.arch}"}
    jobs = [(side, seed) for seed in args.seeds for side in args.sides]

    def run_job(job):
        side, seed = job
        print(f"==> {archs[side]}, seed {seed} ({device})", flush=True)
        result = benchmark_model(archs[side], seed, args, args.out_dir, device)
        print("    " + json.dumps({k: v for k, v in result.items() if k != "valid_curve"}),
              flush=True)
        return result

    # --jobs N: N (model, seed) trainings at once (a small model leaves a GPU mostly idle)
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for (side, _), result in zip(jobs, pool.map(run_job, jobs)):
            runs[side].append(result)
    summary = {}
    for key, _, _ in METRICS:
        plain_mean, plain_std = summarise(runs["plain"], key)
        ea_mean, ea_std = summarise(runs["ea"], key)
        ratio = ea_mean / plain_mean if plain_mean and ea_mean is not None else None
        summary[key] = dict(plain_mean=plain_mean, plain_std=plain_std, ea_mean=ea_mean,
                            ea_std=ea_std, ratio=ratio)
    report = {"machine": machine_description(device), "device": device,
              "command": "python -m evo_fairseq.benchmark " + " ".join(map(shlex.quote, args.argv)),
              "settings": {k: v for k, v in vars(args).items() if k not in ("func", "argv")},
              "runs": runs, "summary": summary}
    with open(os.path.join(args.out_dir, "benchmark.json"), "w") as f:
        json.dump(report, f, indent=2)
    if args.figure:
        plot_validation(report, args.figure)
    table = markdown(report)
    with open(os.path.join(args.out_dir, "benchmark.md"), "w") as f:
        f.write(table)
    print(table)
    return report


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m evo_fairseq.benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-bin", required=True)
    parser.add_argument("--source-lang", "-s", help="default: from the data-bin's file names")
    parser.add_argument("--target-lang", "-t", help="default: from the data-bin's file names")
    parser.add_argument("--arch", default="iwslt_de_en",
                        help="suffix of transformer_<arch> and ea_transformer_<arch>")
    parser.add_argument("--model-args", default="--share-all-embeddings",
                        help="extra fairseq options for both models")
    parser.add_argument("--ea-args", default="", help="extra options for the EA model only")
    parser.add_argument("--train-args", default=TRAIN_ARGS,
                        help=f"optimisation options for both models (default: {TRAIN_ARGS})")
    parser.add_argument("--sides", nargs="+", default=["plain", "ea"], choices=["plain", "ea"],
                        help="which models to run (a sweep runs only ea)")
    parser.add_argument("--max-update", type=int, default=300)
    parser.add_argument("--timing-warmup", type=int, default=10,
                        help="updates not timed (start-up, allocator warm-up)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--gen-subset", default="test")
    parser.add_argument("--gen-batch-size", type=int, default=64)
    parser.add_argument("--gen-length", type=int, default=None,
                        help="force every hypothesis to this many tokens, so that generation "
                             "speed compares the same work (for speed runs; BLEU is then moot)")
    parser.add_argument("--bpe", default="subword_nmt", choices=["subword_nmt", "fastbpe"])
    parser.add_argument("--bpe-codes", help="detokenise hypotheses with moses + this BPE")
    parser.add_argument("--reference", help="raw reference text for detokenised sacreBLEU")
    parser.add_argument("--cpu", action="store_true", help="stay on the CPU when there is a GPU")
    parser.add_argument("--quick", action="store_true",
                        help="a few minutes on 2 cores: 30 updates, 10 timed, 1 seed")
    parser.add_argument("--checkpoint", choices=["last", "best"], default="last",
                        help="checkpoint to translate with: checkpoint_best.pt is the one with the "
                             "lowest validation loss (its loss is reported)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="(model, seed) trainings to run at once (on one GPU; on CPU keep 1)")
    parser.add_argument("--figure", help="draw validation loss against updates to this PNG")
    parser.add_argument("--out-dir", default="benchmark")
    args = parser.parse_args(argv)
    args.argv = argv
    if args.quick:
        args.max_update, args.timing_warmup, args.seeds = 30, 5, args.seeds[:1]
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.max_update <= args.timing_warmup:
        parser.error(f"--max-update ({args.max_update}) must exceed --timing-warmup "
                     f"({args.timing_warmup})")
    if args.reference and not args.bpe_codes:
        parser.error("--reference needs --bpe-codes (hypotheses are detokenised with them)")
    for path in [args.data_bin, args.bpe_codes, args.reference]:
        if path and not os.path.exists(path):
            parser.error(f"no such file or directory: {path}")
    if not (args.source_lang and args.target_lang):
        args.source_lang, args.target_lang = language_pair(args.data_bin)
    return compare(args)
