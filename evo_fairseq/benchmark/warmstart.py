# Copyright (c) evo-fairseq contributors.
#
# This source code is licensed under the MIT license found in the
# LICENSE file in the root directory of this source tree.
"""Reports the warm-start comparison of ``examples/multi30k/benchmark.sh warmstart``.

    python -m evo_fairseq.benchmark warmstart DIR --reference REF --plain-updates P
        [--ramp-updates N] [--figure PNG]

DIR holds one fairseq-train log (``NAME.log``) and one file of detokenised test
translations (``NAME.hyp``) per run: ``plain`` (P updates), ``finetune-plain``,
``finetune-ea``, ``finetune-ea-ramp`` (K more updates each, from ``plain``'s
checkpoint; their update counts are shifted by P) and ``scratch-ea`` (P + K).
Prints a markdown table of validation loss along the way and final sacreBLEU, and
writes ``DIR/warmstart.json`` (and a figure of the curves with ``--figure``).
"""

import argparse
import json
import os

from evo_fairseq.benchmark.compare import sacrebleu_score
from evo_fairseq.benchmark.converge import validation_curve

RUNS = [
    ("plain", "plain transformer, P updates (the starting point)"),
    ("finetune-plain", "(a) plain, fine-tuned K more"),
    ("finetune-ea", "(b) EA from the plain checkpoint, no ramp"),
    ("finetune-ea-ramp", "(c) EA from the plain checkpoint, alpha/beta ramp"),
    ("scratch-ea", "(d) EA from scratch, P + K updates"),
]
FINETUNED = {"finetune-plain", "finetune-ea", "finetune-ea-ramp"}


def validation_losses(log_path, offset=0):
    """``{updates: loss}`` from a fairseq-train log (the last value per update count)."""
    with open(log_path, encoding="utf-8") as f:
        losses = {updates + offset: loss for updates, loss in validation_curve(f.read())}
    if not losses:
        raise ValueError(f"{log_path}: no validation loss lines")
    return losses


def load_report(out_dir, reference, plain_updates, ramp_updates=None):
    runs = {}
    for name, description in RUNS:
        offset = plain_updates if name in FINETUNED else 0
        losses = validation_losses(os.path.join(out_dir, name + ".log"), offset)
        with open(os.path.join(out_dir, name + ".hyp"), encoding="utf-8") as f:
            hypotheses = [line.rstrip("\n") for line in f]
        bleu, signature = sacrebleu_score(hypotheses, reference)
        runs[name] = dict(description=description, valid_loss=losses,
                          final_updates=max(losses), final_valid_loss=losses[max(losses)],
                          bleu=bleu)
    return dict(plain_updates=plain_updates, ramp_updates=ramp_updates,
                bleu_signature=signature, runs=runs)


def markdown(report):
    runs = report["runs"]
    # the every-100-updates validations (end-of-epoch ones are in the JSON and the figure)
    updates = sorted({u for run in runs.values() for u in run["valid_loss"] if u % 100 == 0})
    lines = ["| run | " + " | ".join(str(u) for u in updates) + " | test BLEU |",
             "|---|" + "---|" * (len(updates) + 1)]
    for name, run in runs.items():
        cells = [f"{run['valid_loss'][u]:.3f}" if u in run["valid_loss"] else "" for u in updates]
        lines.append(f"| {run['description']} | " + " | ".join(cells) + f" | {run['bleu']:.2f} |")
    lines.append("")
    lines.append("Validation loss (label-smoothed cross-entropy, base 2) every 100 updates, "
                 f"counted from the plain run's start (fine-tunes start at {report['plain_updates']}); test BLEU: "
                 f"detokenised sacreBLEU on test2016 ({report['bleu_signature']}).")
    return "\n".join(lines) + "\n"


def plot(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    for name, run in report["runs"].items():
        xs = sorted(run["valid_loss"])
        ax.plot(xs, [run["valid_loss"][x] for x in xs], marker="o", markersize=3,
                label=f"{run['description']} (BLEU {run['bleu']:.1f})")
    ax.axvline(report["plain_updates"], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("updates")
    ax.set_ylabel("validation loss")
    ax.set_title("Multi30k De-En: from a plain transformer to EA")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m evo_fairseq.benchmark warmstart",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--reference", required=True, help="raw test references, one per line")
    parser.add_argument("--plain-updates", type=int, required=True,
                        help="P: updates of the plain run the fine-tunes start from")
    parser.add_argument("--ramp-updates", type=int, default=None, help="recorded in the JSON")
    parser.add_argument("--figure", help="also draw the validation-loss curves to this PNG")
    args = parser.parse_args(argv)
    try:
        report = load_report(args.out_dir, args.reference, args.plain_updates, args.ramp_updates)
    except (OSError, ValueError) as error:
        parser.error(str(error))
    with open(os.path.join(args.out_dir, "warmstart.json"), "w") as f:
        json.dump(report, f, indent=1)
    if args.figure:
        plot(report, args.figure)
    print(markdown(report), end="")


if __name__ == "__main__":
    main()
