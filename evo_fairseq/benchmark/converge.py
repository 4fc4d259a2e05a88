# Copyright (c) evo-fairseq contributors.
#
# This source code is licensed under the MIT license found in the
# LICENSE file in the root directory of this source tree.
"""The convergence report of a comparison: validation curves, per-seed table, figure.

Used by ``compare`` when it runs several seeds with ``--checkpoint best``
(``examples/multi30k/benchmark.sh converge``).
"""

import re
import statistics


def validation_curve(text):
    """``[[updates, loss], ...]`` of every validation in a fairseq-train log."""
    return [[int(updates), float(loss)] for loss, updates in re.findall(
        r"valid on 'valid' subset \| loss ([\d.]+) .*?\| num_updates (\d+)", text)]


def per_seed_rows(runs):
    """Markdown rows: BLEU and validation loss of both models per seed, EA - plain, mean ± std."""
    plain = {r["seed"]: r for r in runs["plain"]}
    ea = {r["seed"]: r for r in runs["ea"]}
    seeds = sorted(set(plain) & set(ea))
    if not seeds:
        return []
    lines = ["| seed | transformer BLEU | ea_transformer BLEU | EA - plain | transformer valid loss "
             "| ea_transformer valid loss |", "|---|---|---|---|---|---|"]
    fmt = lambda v, f: "n/a" if v is None else f.format(v)
    diffs = []
    for seed in seeds:
        p, e = plain[seed], ea[seed]
        diff = None if p["bleu"] is None or e["bleu"] is None else e["bleu"] - p["bleu"]
        diffs.append(diff)
        lines.append(f"| {seed} | {fmt(p['bleu'], '{:.2f}')} | {fmt(e['bleu'], '{:.2f}')} | "
                     f"{fmt(diff, '{:+.2f}')} | {fmt(p['valid_loss'], '{:.3f}')} | "
                     f"{fmt(e['valid_loss'], '{:.3f}')} |")

    def mean_std(values, f):
        values = [v for v in values if v is not None]
        if not values:
            return "n/a"
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{f.format(statistics.mean(values))} ± {f.replace('+', '').format(std)}"

    lines.append(
        f"| mean ± std ({len(seeds)} seeds) | {mean_std([plain[s]['bleu'] for s in seeds], '{:.2f}')} | "
        f"{mean_std([ea[s]['bleu'] for s in seeds], '{:.2f}')} | {mean_std(diffs, '{:+.2f}')} | "
        f"{mean_std([plain[s]['valid_loss'] for s in seeds], '{:.3f}')} | "
        f"{mean_std([ea[s]['valid_loss'] for s in seeds], '{:.3f}')} |")
    return lines


def plot_validation(report, path):
    """Validation loss against updates, both models, every seed, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    colours = {"plain": "tab:blue", "ea": "tab:red"}
    names = {"plain": "transformer", "ea": "ea_transformer"}
    for side, runs in report["runs"].items():
        for run in runs:
            if run["valid_curve"]:
                xs, ys = zip(*run["valid_curve"])
                bleu = "" if run["bleu"] is None else f", BLEU {run['bleu']:.1f}"
                ax.plot(xs, ys, color=colours[side], alpha=0.8, linewidth=1.2,
                        label=f"{names[side]}, seed {run['seed']}{bleu}")
    ax.set_xlabel("updates")
    ax.set_ylabel("validation loss")
    ax.set_title(f"{report['settings']['arch']}: validation loss ({report['machine']})", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
