# Copyright (c) evo-fairseq contributors.
#
# This source code is licensed under the MIT license found in the
# LICENSE file in the root directory of this source tree.
"""Training and generation cost of EA against fairseq's transformer, by model size and length.

    python -m evo_fairseq.benchmark speed --data-bin DIR
        [--sizes main iwslt_de_en wmt_en_de vaswani_wmt_en_de_big] [--join-lines 1 6]
        [--repeats 4] [--warmup-updates W] [--timed-updates T] [--max-tokens 4096]
        [--gen-sentences N] [--gen-length L] [--cpu] [--out-dir DIR] [--figure PNG]

Each measurement is a fresh process that builds fairseq's task, model,
criterion and ``Trainer`` as ``fairseq-train`` does, runs W warm-up updates
(allocator growth, kernel autotuning), then times T updates one by one (the
device synchronised around each ``train_step``). Both models see the same
batches in the same order (same data, seed and ``--max-tokens``; a hash of
the batches' sentence ids is recorded, and a row whose measurements disagree
is refused). An update that fairseq skips for fp16
overflow is counted and left out of the timing. Then the trained model
translates the first N sentences of the validation split with beam 5, every
hypothesis forced to exactly L tokens (default: the mean reference length), so
both models do the same decoding work; one untimed batch warms up first.

Per (size, length) the models alternate, ``repeats`` pairs, the starting side
swapping each pair (plain, EA, EA, plain, ...: with an even number of pairs a
linear drift of the machine cancels). Reported per model: median and min-max
over the repeats of training throughput (target tokens/s), peak memory during
training (GPU: peak allocated; CPU: peak resident set, and its growth over the
resident set before the first update) and generation speed; per pair the
EA/plain ratio. A throughput or generation ratio above 1.05 (EA faster while
doing more work) or a memory ratio below 0.95 is listed under "needs an
explanation".

``--join-lines N`` joins N consecutive sentence pairs of a split into one (at
the binarised-data level: no new data), so 6 Multi30k lines make ~90-token
sentences. Sizes: ``main`` is the main job's model (3+3 layers, 256 dims,
pre-norm, examples/multi30k/run.sh); the others are fairseq's architectures
of that name. Defaults: W=50, T=200 on a GPU; W=5, T=30 on CPU; 4 pairs. Writes
``DIR/speed.json`` and ``DIR/speed.md``.
"""

import argparse
import hashlib
import json
import logging
import os
import shlex
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from evo_fairseq.benchmark.compare import language_pair, machine_description

PLUGIN = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # --user-dir

MAIN_JOB_MODEL = (
    "--encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 256 --decoder-embed-dim 256 "
    "--encoder-ffn-embed-dim 512 --decoder-ffn-embed-dim 512 --encoder-attention-heads 4 "
    "--decoder-attention-heads 4 --encoder-normalize-before --decoder-normalize-before"
)
SIZES = {  # name: (architecture suffix, model options)
    "main": ("iwslt_de_en", MAIN_JOB_MODEL),
    "iwslt_de_en": ("iwslt_de_en", ""),
    "wmt_en_de": ("wmt_en_de", ""),
    "vaswani_wmt_en_de_big": ("vaswani_wmt_en_de_big", ""),
}
TRAIN_ARGS = (
    "--optimizer adam --adam-betas (0.9,0.98) --clip-norm 0.0 --lr 2e-3 --lr-scheduler inverse_sqrt "
    "--warmup-updates 100 --dropout 0.1 --criterion label_smoothed_cross_entropy "
    "--label-smoothing 0.1 --share-all-embeddings"
)
SIDES = {"plain": "transformer", "ea": "ea_transformer"}


# ---------------------------------------------------------------------------
# one measurement (runs in its own process)
# ---------------------------------------------------------------------------

def joined_lines(dataset, n, limit=None):
    """A ``LanguagePairDataset`` whose pair i joins pairs ``i*n .. i*n+n-1`` of ``dataset``.

    Each side is the concatenation of the n sentences with the inner
    end-of-sentence symbols removed, so its length is the sum of theirs; a
    remainder of fewer than n pairs is dropped, and so is every pair after the
    first ``limit``.
    """
    from fairseq.data import LanguagePairDataset, ListDataset

    def join(side, eos):
        items = []
        stop = len(side) - n + 1 if limit is None else min(len(side) - n + 1, limit * n)
        for start in range(0, stop, n):
            parts = [side[start + j] for j in range(n)]
            parts = [p[:-1] if p[-1] == eos else p for p in parts[:-1]] + parts[-1:]
            items.append(torch.cat(parts))
        return items

    if dataset.buckets is not None or dataset.align_dataset is not None:
        raise ValueError("--join-lines cannot be combined with --num-batch-buckets or alignments")
    src_dict, tgt_dict = dataset.src_dict, dataset.tgt_dict
    src, tgt = join(dataset.src, src_dict.eos()), join(dataset.tgt, tgt_dict.eos())
    src_sizes, tgt_sizes = [len(s) for s in src], [len(t) for t in tgt]
    return LanguagePairDataset(
        ListDataset(src, src_sizes), src_sizes, src_dict,
        ListDataset(tgt, tgt_sizes), tgt_sizes, tgt_dict,
        left_pad_source=dataset.left_pad_source, left_pad_target=dataset.left_pad_target,
        shuffle=dataset.shuffle, eos=dataset.eos, pad_to_multiple=dataset.pad_to_multiple,
    )


def resident_kib(field):
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) of this process, in KiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def reset_peak_resident():
    """Start ``VmHWM`` afresh from the current resident set (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def synchronize(device):
    if device == "cuda":
        torch.cuda.synchronize()


def measure(spec):
    """Train ``spec['warmup'] + spec['timed']`` updates and translate; returns the timings."""
    from fairseq import options, tasks, utils
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.logging import metrics
    from fairseq.trainer import Trainer

    device = spec["device"]
    total = spec["warmup"] + spec["timed"]
    argv = [spec["data_bin"], "--user-dir", PLUGIN, "--arch", spec["arch"],
            *shlex.split(spec["model_args"]), *shlex.split(spec["train_args"]),
            "--max-tokens", str(spec["max_tokens"]), "--seed", str(spec["seed"]),
            "--max-update", str(total), "--num-workers", "0", "--disable-validation",
            "--fp16" if device == "cuda" else "--cpu"]
    parser = options.get_training_parser()
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(parser, argv))
    metrics.reset()
    np.random.seed(cfg.common.seed)
    utils.set_torch_seed(cfg.common.seed)

    task = tasks.setup_task(cfg.task)
    for split in ("train", "valid"):
        task.load_dataset(split)
        if spec["join_lines"] > 1:
            task.datasets[split] = joined_lines(task.datasets[split], spec["join_lines"])
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    trainer = Trainer(cfg, task, model, criterion)
    trainer.cuda_env = None  # else train_step resets the CUDA peak after every update
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        reset_peak_resident()
    rss_before = resident_kib("VmRSS")

    epoch = 1
    epoch_itr = trainer.get_train_iterator(epoch=epoch, load_dataset=False)
    batches = epoch_itr.next_epoch_itr(shuffle=True)
    seconds, tokens, skipped, batch_tokens = [], [], 0, []
    batch_ids = hashlib.sha1()
    step = 0
    while step < total:
        if not batches.has_next():
            epoch += 1
            epoch_itr = trainer.get_train_iterator(epoch=epoch, load_dataset=False)
            batches = epoch_itr.next_epoch_itr(shuffle=True)
        sample = next(batches)
        updates = trainer.get_num_updates()
        synchronize(device)
        start = time.perf_counter()
        trainer.train_step([sample])
        synchronize(device)
        elapsed = time.perf_counter() - start
        step += 1
        batch_tokens.append(int(sample["ntokens"]))
        batch_ids.update(sample["id"].numpy().tobytes())
        if step <= spec["warmup"]:
            continue
        if trainer.get_num_updates() == updates:  # fp16 overflow: fairseq skipped the update
            skipped += 1
            continue
        seconds.append(elapsed)
        tokens.append(int(sample["ntokens"]))
    if device == "cuda":
        peak_mb, growth_mb = torch.cuda.max_memory_allocated() / 2**20, None
    else:
        peak_kib = resident_kib("VmHWM")
        peak_mb, growth_mb = peak_kib / 1024, (peak_kib - rss_before) / 1024
    result = {
        "timed_updates": len(seconds), "skipped_updates": skipped, "epochs": epoch,
        "train_tokens_per_s": sum(tokens) / sum(seconds) if seconds else None,
        "seconds_per_update": statistics.median(seconds) if seconds else None,
        "peak_memory_mb": peak_mb, "training_memory_mb": growth_mb,
        "batch_tokens": batch_tokens, "batch_ids_sha1": batch_ids.hexdigest(),
    }
    result.update(measure_generation(spec, cfg, task, trainer.model))
    return result


def measure_generation(spec, cfg, task, model):
    """Beam-5 translation of the validation split's first sentences at a fixed output length."""
    from fairseq import utils

    dataset = joined_lines(task.datasets["valid"], 1, limit=spec["gen_sentences"])
    length = spec["gen_length"] or round(float(np.mean(dataset.tgt_sizes)) - 1)  # without eos
    gen = cfg.generation
    gen.beam, gen.min_len, gen.max_len_a, gen.max_len_b = 5, length, 0, length
    generator = task.build_generator([model], gen)
    model.eval()
    itr = task.get_batch_iterator(
        dataset=dataset, max_sentences=spec["gen_batch_size"], seed=1, num_workers=0,
    ).next_epoch_itr(shuffle=False)
    device = spec["device"]
    batches = [utils.move_to_cuda(b) if device == "cuda" else b for b in itr]
    sentences = hyp_tokens = 0
    seconds = 0.0
    lengths = set()
    with torch.no_grad():
        task.inference_step(generator, [model], batches[0])  # warm-up, not timed
        for sample in batches:
            synchronize(device)
            start = time.perf_counter()
            hypos = task.inference_step(generator, [model], sample)
            synchronize(device)
            seconds += time.perf_counter() - start
            sentences += len(hypos)
            for beams in hypos:
                lengths.add(len(beams[0]["tokens"]))
                hyp_tokens += len(beams[0]["tokens"])
    if lengths and lengths != {length + 1}:
        raise RuntimeError(f"hypotheses of lengths {sorted(lengths)}, expected {length} + eos")
    return {
        "gen_length": length, "gen_sentences": sentences,
        "gen_sentences_per_s": sentences / seconds if seconds else None,
        "gen_tokens_per_s": hyp_tokens / seconds if seconds else None,
    }


# ---------------------------------------------------------------------------
# the protocol: interleaved, repeated measurements and their report
# ---------------------------------------------------------------------------

METRICS = [  # key, title, format, ratio that cannot be true (EA does strictly more work)
    ("train_tokens_per_s", "training throughput (target tokens/s)", "{:.0f}", lambda r: r > 1.05),
    ("peak_memory_mb", "peak memory (MB)", "{:.0f}", lambda r: r < 0.95),
    ("training_memory_mb", "memory growth during training (MB)", "{:.0f}", lambda r: r < 0.95),
    ("gen_sentences_per_s", "generation, beam 5, fixed length (sentences/s)", "{:.1f}",
     lambda r: r > 1.05),
]


def run_measurement(spec, out_dir):
    """Run ``measure(spec)`` in a fresh process; returns its result (log in ``out_dir``)."""
    name = f"{spec['size']}-join{spec['join_lines']}-{spec['side']}-r{spec['repeat']}"
    spec_path = os.path.join(out_dir, name + ".spec.json")
    result_path = os.path.join(out_dir, name + ".json")
    log_path = os.path.join(out_dir, name + ".log")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(PLUGIN)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.run([sys.executable, "-m", "evo_fairseq.benchmark.speed", "--worker",
                               spec_path, result_path], stdout=log, stderr=subprocess.STDOUT,
                              env=env)
    if proc.returncode != 0:
        with open(log_path) as f:
            tail = f.read()[-3000:]
        raise SystemExit(f"error: measurement {name} failed (log: {log_path}):\n{tail}")
    with open(result_path) as f:
        result = json.load(f)
    result.update(side=spec["side"], repeat=spec["repeat"],
                  wall_seconds=round(time.perf_counter() - start, 1))
    return result


def schedule(repeats):
    """The order of one (size, length) cell: pairs of plain and EA, the first side alternating."""
    order = []
    for repeat in range(1, repeats + 1):
        sides = ["plain", "ea"] if repeat % 2 else ["ea", "plain"]
        order += [(side, repeat) for side in sides]
    return order


def summarise_cell(runs):
    """Median and min-max per model and the EA/plain ratio of each pair, for every metric."""
    by_side = {side: sorted((r for r in runs if r["side"] == side), key=lambda r: r["repeat"])
               for side in SIDES}
    summary = {}
    for key, _, _, impossible in METRICS:
        row = {}
        for side, results in by_side.items():
            values = [r[key] for r in results if r.get(key) is not None]
            row[side] = (dict(median=statistics.median(values), min=min(values), max=max(values))
                         if values else None)
        ratios = [e[key] / p[key] for p, e in zip(by_side["plain"], by_side["ea"])
                  if p.get(key) and e.get(key) is not None]
        row["ratios"] = ratios
        row["median_ratio"] = statistics.median(ratios) if ratios else None
        row["needs_explanation"] = [r for r in ratios if impossible(r)]
        summary[key] = row
    summary["skipped_updates"] = {side: sum(r["skipped_updates"] for r in results)
                                  for side, results in by_side.items()}
    summary["same_batches"] = len({r["batch_ids_sha1"] for r in runs}) == 1
    return summary


def markdown(report):
    lines = [f"Machine: {report['machine']}", "", f"Command: `{report['command']}`", "",
             f"Wall time: {report['wall_seconds'] / 60:.1f} min. Per measurement: "
             f"{report['settings']['warmup_updates']} warm-up + {report['settings']['timed_updates']} "
             f"timed updates at --max-tokens {report['settings']['max_tokens']}, then beam 5 on "
             f"up to {report['settings']['gen_sentences']} validation sentences (after one untimed "
             "batch; fewer where joined lines leave fewer). "
             f"{report['settings']['repeats']} pairs per row, plain and EA alternating. "
             "Cells: median [min-max]; ratios EA / plain per pair.", ""]
    fmt_cell = lambda c, f: "n/a" if c is None else f"{f.format(c['median'])} [{f.format(c['min'])}-{f.format(c['max'])}]"
    flagged = []
    for key, title, fmt, _ in METRICS:
        cells = [c for c in report["cells"] if c["summary"][key]["plain"] is not None]
        if not cells:
            continue
        lines += [f"**{title}**", "",
                  "| size | sentences (mean src / tgt tokens) | transformer | ea_transformer "
                  "| EA / plain per pair | median ratio |", "|---|---|---|---|---|---|"]
        for cell in cells:
            row = cell["summary"][key]
            ratios = ", ".join(f"{r:.2f}" for r in row["ratios"])
            lines.append(f"| {cell['size']} | {cell['length_label']} | {fmt_cell(row['plain'], fmt)} | "
                         f"{fmt_cell(row['ea'], fmt)} | {ratios or 'n/a'} | "
                         + ("n/a |" if row["median_ratio"] is None else f"{row['median_ratio']:.2f}x |"))
            flagged += [f"{cell['size']}, {cell['length_label']}: {title} ratio {r:.2f}"
                        for r in row["needs_explanation"]]
        lines.append("")
    skipped = [f"{c['size']}, {c['length_label']}: plain {c['summary']['skipped_updates']['plain']}, "
               f"EA {c['summary']['skipped_updates']['ea']}" for c in report["cells"]
               if any(c["summary"]["skipped_updates"].values())]
    lines.append("Updates skipped for fp16 overflow (left out of the timing): "
                 + ("; ".join(skipped) if skipped else "none") + ".")
    lines += ["", "Needs an explanation (EA faster, or smaller, than plain while doing more work): "
              + ("; ".join(flagged) if flagged else "none") + "."]
    return "\n".join(lines) + "\n"


def plot_ratios(report, path):
    """The median EA/plain ratio (bars) and the pairs' range (whiskers), by size and length."""
    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib.pyplot as plt

    keys = [m for m in METRICS if any(c["summary"][m[0]]["median_ratio"] for c in report["cells"])]
    if not keys:
        return
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.8), dpi=100, squeeze=False)
    labels = [f"{c['size']}\n{c['length_label'].split(' / ')[1]} target tok" for c in report["cells"]]
    for ax, (key, title, _, _) in zip(axes[0], keys):
        medians = [c["summary"][key]["median_ratio"] or 0 for c in report["cells"]]
        low = [m - min(c["summary"][key]["ratios"] or [m]) for m, c in zip(medians, report["cells"])]
        high = [max(c["summary"][key]["ratios"] or [m]) - m for m, c in zip(medians, report["cells"])]
        ax.bar(range(len(medians)), medians, yerr=[low, high], capsize=3, color="tab:red", alpha=0.75)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(medians)))
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_title(f"{title}\nEA / plain", fontsize=8)
    fig.suptitle(report["machine"], fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def length_label(runs):
    """``"91 / 93"``: mean source / target tokens of the training batches' sentences."""
    r = runs[0]
    return f"{r['mean_src_tokens']:.0f} / {r['mean_tgt_tokens']:.0f}"


def data_lengths(data_bin, join, source_lang, target_lang):
    """Mean source and target tokens (with eos) of the train split joined ``join`` lines at a time."""
    from fairseq.data import data_utils

    means = []
    for lang in (source_lang, target_lang):
        prefix = os.path.join(data_bin, f"train.{source_lang}-{target_lang}.{lang}")
        dataset = data_utils.load_indexed_dataset(prefix, None)
        sizes = np.array(dataset.sizes, dtype=np.int64)  # a copy: the memory map closes with it
        del dataset
        usable = len(sizes) // join * join
        means.append(float(np.mean(sizes[:usable].reshape(-1, join).sum(axis=1) - (join - 1))))
    return means


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m evo_fairseq.benchmark speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-bin")
    parser.add_argument("--report", metavar="DIR",
                        help="only write DIR/speed.md (and --figure) again from DIR/speed.json")
    parser.add_argument("--source-lang", "-s", help="default: from the data-bin's file names")
    parser.add_argument("--target-lang", "-t", help="default: from the data-bin's file names")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES),
                        help=f"model sizes (any of {', '.join(SIZES)}, or a fairseq arch suffix)")
    parser.add_argument("--join-lines", type=int, nargs="+", default=[1, 6],
                        help="join N consecutive sentence pairs into one (one row per N)")
    parser.add_argument("--repeats", type=int, default=4,
                        help="plain/EA pairs per row (even: a linear drift cancels)")
    parser.add_argument("--warmup-updates", type=int, help="untimed updates (GPU 50, CPU 5)")
    parser.add_argument("--timed-updates", type=int, help="timed updates (GPU 200, CPU 30)")
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--model-args", default="", help="extra fairseq options for both models")
    parser.add_argument("--train-args", default=TRAIN_ARGS, help=f"default: {TRAIN_ARGS}")
    parser.add_argument("--ea-args", default="", help="extra options for the EA model only")
    parser.add_argument("--gen-sentences", type=int, help="validation sentences to translate "
                        "(GPU 512, CPU 64)")
    parser.add_argument("--gen-batch-size", type=int, help="sentences per batch (GPU 64, CPU 32)")
    parser.add_argument("--gen-length", type=int,
                        help="tokens per hypothesis (default: the mean reference length)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cpu", action="store_true", help="stay on the CPU when there is a GPU")
    parser.add_argument("--figure", help="draw the ratios by size and length to this PNG")
    parser.add_argument("--out-dir", default="benchmark-speed")
    args = parser.parse_args(argv)
    if args.report:
        path = os.path.join(args.report, "speed.json")
        if not os.path.isfile(path):
            parser.error(f"no such file: {path}")
        with open(path) as f:
            return write_report(json.load(f), args.report, args.figure)
    if not args.data_bin:
        parser.error("--data-bin is required (or --report DIR)")
    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    gpu = device == "cuda"
    args.warmup_updates = args.warmup_updates if args.warmup_updates is not None else (50 if gpu else 5)
    args.timed_updates = args.timed_updates if args.timed_updates is not None else (200 if gpu else 30)
    args.gen_sentences = args.gen_sentences if args.gen_sentences is not None else (512 if gpu else 64)
    args.gen_batch_size = args.gen_batch_size if args.gen_batch_size is not None else (64 if gpu else 32)
    for name, value, low in [("--repeats", args.repeats, 1), ("--timed-updates", args.timed_updates, 1),
                             ("--warmup-updates", args.warmup_updates, 1),
                             ("--gen-sentences", args.gen_sentences, 1),
                             ("--gen-batch-size", args.gen_batch_size, 1),
                             ("--max-tokens", args.max_tokens, 1)]:
        if value < low:
            parser.error(f"{name} must be >= {low}, got {value}")
    if any(n < 1 for n in args.join_lines):
        parser.error(f"--join-lines values must be >= 1, got {args.join_lines}")
    if not os.path.isdir(args.data_bin):
        parser.error(f"no such directory: {args.data_bin}")
    if not (args.source_lang and args.target_lang):
        args.source_lang, args.target_lang = language_pair(args.data_bin)
    os.makedirs(args.out_dir, exist_ok=True)

    start = time.perf_counter()
    cells = []
    for size in args.sizes:
        arch_suffix, model_args = SIZES.get(size, (size, ""))
        for join in args.join_lines:
            src_mean, tgt_mean = data_lengths(args.data_bin, join, args.source_lang, args.target_lang)
            runs = []
            for side, repeat in schedule(args.repeats):
                spec = dict(
                    size=size, side=side, repeat=repeat, join_lines=join, device=device,
                    data_bin=os.path.abspath(args.data_bin), arch=f"{SIDES[side]}_{arch_suffix}",
                    model_args=" ".join([model_args, args.model_args] + ([args.ea_args] if side == "ea" else [])),
                    train_args=args.train_args + f" -s {args.source_lang} -t {args.target_lang}",
                    max_tokens=args.max_tokens, seed=args.seed, warmup=args.warmup_updates,
                    timed=args.timed_updates, gen_sentences=args.gen_sentences,
                    gen_batch_size=args.gen_batch_size, gen_length=args.gen_length)
                print(f"==> {size}, {join} line(s) joined, {side}, pair {repeat}", flush=True)
                result = run_measurement(spec, args.out_dir)
                result.update(mean_src_tokens=src_mean, mean_tgt_tokens=tgt_mean)
                print("    " + json.dumps({k: v for k, v in result.items() if k != "batch_tokens"}),
                      flush=True)
                runs.append(result)
            summary = summarise_cell(runs)
            if not summary["same_batches"]:
                raise SystemExit(f"error: {size}, {join} line(s) joined: the measurements did not "
                                 f"train on the same batches (see {args.out_dir}/*.json)")
            cells.append({"size": size, "join_lines": join, "length_label": length_label(runs),
                          "runs": runs, "summary": summary})
    report = {"machine": machine_description(device), "device": device,
              "command": "python -m evo_fairseq.benchmark speed " + " ".join(
                  map(shlex.quote, sys.argv[1:] if argv is None else argv)),
              "settings": vars(args), "wall_seconds": round(time.perf_counter() - start, 1),
              "cells": cells}
    with open(os.path.join(args.out_dir, "speed.json"), "w") as f:
        json.dump(report, f, indent=2)
    return write_report(report, args.out_dir, args.figure)


def write_report(report, out_dir, figure=None):
    """``out_dir/speed.md`` (printed too) and, if asked, the ratio chart."""
    table = markdown(report)
    with open(os.path.join(out_dir, "speed.md"), "w") as f:
        f.write(table)
    if figure:
        plot_ratios(report, figure)
    print(table)
    return report


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        spec_path, result_path = sys.argv[2:4]
        with open(spec_path) as f:
            measured = measure(json.load(f))
        with open(result_path, "w") as f:
            json.dump(measured, f)
    else:
        main()
