# Copyright (c) evo-fairseq contributors.
#
# This source code is licensed under the MIT license found in the
# LICENSE file in the root directory of this source tree.
"""Ranks the EA-only harness runs of a hyper-parameter sweep.

    python -m evo_fairseq.benchmark sweep DIR [--best]

DIR holds one ``*/benchmark.json`` per setting (``--sides ea``, scored on the
validation set). Settings are ranked by BLEU (higher first), then validation
loss (lower first). Prints a markdown table, or with ``--best`` only the best
setting's ``--ea-*`` options.
"""

import argparse
import glob
import json
import os


def load_sweep(sweep_dir):
    """One row per setting: its EA options, BLEU, validation loss and throughput."""
    rows = []
    for path in sorted(glob.glob(os.path.join(sweep_dir, "*", "benchmark.json"))):
        with open(path) as f:
            report = json.load(f)
        summary = report["summary"]
        if summary["bleu"]["ea_mean"] is None or summary["valid_loss"]["ea_mean"] is None:
            raise ValueError(f"{path}: no EA BLEU or validation loss; was it run with --sides ea?")
        rows.append(dict(
            ea_args=report["settings"]["ea_args"],
            gen_subset=report["settings"]["gen_subset"],
            max_update=report["settings"]["max_update"],
            bleu=summary["bleu"]["ea_mean"],
            valid_loss=summary["valid_loss"]["ea_mean"],
            train_tokens_per_s=summary["train_tokens_per_s"]["ea_mean"],
        ))
    if not rows:
        raise ValueError(f"no */benchmark.json under {sweep_dir}")
    subsets = {row["gen_subset"] for row in rows}
    if subsets != {"valid"}:
        raise ValueError(f"a sweep is scored on the validation set only, got --gen-subset {sorted(subsets)}")
    rows.sort(key=lambda row: (-row["bleu"], row["valid_loss"]))
    return rows


def markdown(rows):
    lines = ["| rank | EA options | valid BLEU | valid loss | train tokens/s | updates |",
             "|---|---|---|---|---|---|"]
    for rank, row in enumerate(rows, 1):
        lines.append(f"| {rank} | `{row['ea_args'] or '(defaults)'}` | {row['bleu']:.2f} | "
                     f"{row['valid_loss']:.3f} | {row['train_tokens_per_s']:.0f} | {row['max_update']} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m evo_fairseq.benchmark sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir")
    parser.add_argument("--best", action="store_true", help="print only the best setting's options")
    args = parser.parse_args(argv)
    try:
        rows = load_sweep(args.sweep_dir)
    except ValueError as error:
        parser.error(str(error))
    print(rows[0]["ea_args"] if args.best else markdown(rows), end="" if not args.best else "\n")


if __name__ == "__main__":
    main()
