# Copyright (c) evo-fairseq contributors.
#
# This source code is licensed under the MIT license found in the
# LICENSE file in the root directory of this source tree.
"""See attention evolve: translate sentences and capture every layer's maps.

    python -m evo_fairseq.inspect --path CKPT --data-bin DIR --source "Ein Hund läuft ." \\
        [--input FILE] [--tokenizer moses --bpe subword_nmt --bpe-codes CODES] \\
        [--head N] [--out-dir DIR]

For each sentence it writes ``DIR/sentence-N.png`` (rows = layers, columns =
encoder self-, decoder self- and cross-attention; softmax probabilities, heads
averaged or one head; tick labels = subword tokens) and ``DIR/sentence-N.npz``
with the raw arrays ``{stack}/layer{L}/{map}`` of shape (heads, tgt_len, src_len),
map in logits, mixed, conv (evolving layers only), evolved, probs (mixed is the
convolution's input, 0 at masked cells; evolved is the softmax's input, whose
masked cells hold a large negative number in evolving layers); and the
tokens ``source_tokens``, ``target_tokens`` (produced, one per query row of the
decoder stacks) and ``decoder_input_tokens`` (keys of decoder self-attention).
It prints, per stack and layer, how much the probability map differs from the
previous layer's: mean KL(P_i || P_{i-1}) over query rows and cosine similarity.
Works for checkpoints of fairseq's plain transformer too.
"""

import argparse
import logging
import os
import sys

import numpy as np
import torch

import evo_fairseq  # noqa: F401  (registers the model)
from evo_fairseq.attention_capture import AttentionCapture, kl_and_cosine

STACKS = ("encoder", "decoder", "cross")
STACK_TITLES = {"encoder": "encoder self-attention", "decoder": "decoder self-attention",
                "cross": "encoder-decoder attention"}
CELL_INCHES = 3.2
DPI = 100


def load_hub(args):
    from fairseq.models.transformer import TransformerModel

    if not os.path.isfile(args.path):
        raise SystemExit(f"error: --path {args.path!r} is not a checkpoint file")
    overrides = dict(tokenizer=args.tokenizer, bpe=args.bpe)
    if args.tokenizer == "moses":  # our recipes never escape; some keep dashes whole
        overrides.update(moses_no_escape=True, moses_no_dash_splits=args.moses_no_dash_splits)
    if args.bpe_codes:
        overrides["bpe_codes"] = args.bpe_codes
    if args.source_lang:
        overrides["source_lang"] = args.source_lang
    if args.target_lang:
        overrides["target_lang"] = args.target_lang
    hub = TransformerModel.from_pretrained(
        os.path.dirname(os.path.abspath(args.path)),
        checkpoint_file=os.path.basename(args.path),
        data_name_or_path=args.data_bin,
        **{k: v for k, v in overrides.items() if v is not None},
    )
    return hub.eval()


def inspect_sentence(hub, sentence, beam=5):
    """Translate ``sentence`` and capture every layer's maps on that translation.

    Returns ``(translation, maps, source_tokens, target_tokens, decoder_input_tokens)``
    with ``maps[(stack, layer)][name]`` of shape (heads, tgt_len, src_len).
    """
    model = hub.models[0]
    src = hub.encode(sentence)
    hypo = hub.generate([src], beam=beam)[0][0]
    tgt = hypo["tokens"]
    eos = hub.tgt_dict.eos()
    prev = torch.cat([tgt.new_tensor([eos]), tgt[:-1]])
    src_tokens, prev_tokens = src.unsqueeze(0), prev.unsqueeze(0)
    src_lengths = torch.tensor([src.numel()])
    with torch.no_grad():
        with AttentionCapture(model) as capture:
            model(src_tokens, src_lengths, prev_tokens)
    maps = {key: {name: t[0].numpy() for name, t in value.items()}
            for key, value in capture.maps.items()}
    words = lambda d, tokens: [d[i] for i in tokens.tolist()]
    return (hub.decode(tgt), maps, words(hub.src_dict, src), words(hub.tgt_dict, tgt),
            words(hub.tgt_dict, prev))


def layer_differences(maps):
    """``[(stack, layer, kl, cosine)]`` of each layer's probabilities against the previous one's."""
    rows = []
    for stack in STACKS:
        layer = 2
        while (stack, layer) in maps and (stack, layer - 1) in maps:
            kl, cosine = kl_and_cosine(torch.from_numpy(maps[(stack, layer)]["probs"]),
                                       torch.from_numpy(maps[(stack, layer - 1)]["probs"]))
            rows.append((stack, layer, kl, cosine))
            layer += 1
    return rows


def figure_size(num_layers):
    """Pixel size (width, height) of the figure for ``num_layers`` rows."""
    return int(len(STACKS) * CELL_INCHES * DPI), int(num_layers * CELL_INCHES * DPI)


def plot(maps, source_tokens, target_tokens, decoder_input_tokens, path, head=None, title=""):
    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # fairseq logs at DEBUG

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    num_layers = max(layer for _, layer in maps)
    width, height = figure_size(num_layers)
    fig, axes = plt.subplots(num_layers, len(STACKS), figsize=(width / DPI, height / DPI),
                             dpi=DPI, squeeze=False)
    axis_tokens = {"encoder": (source_tokens, source_tokens),
                   "decoder": (target_tokens, decoder_input_tokens),
                   "cross": (target_tokens, source_tokens)}
    for col, stack in enumerate(STACKS):
        for row in range(num_layers):
            ax = axes[row][col]
            if (stack, row + 1) not in maps:
                ax.axis("off")
                continue
            probs = maps[(stack, row + 1)]["probs"]
            image = probs.mean(0) if head is None else probs[head]
            ax.imshow(image, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
            rows, cols = axis_tokens[stack]
            ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=6)
            ax.set_yticks(range(len(rows)), rows, fontsize=6)
            ax.set_title(f"{STACK_TITLES[stack]}, layer {row + 1}", fontsize=7)
    fig.suptitle(title + ("" if head is None else f" (head {head})"), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def describe_evolving_attention(model) -> str:
    """One line: the alpha and beta the model's evolving layers compute with."""
    from evo_fairseq.modules import EvolvingAttention

    layers = [m for m in model.modules() if isinstance(m, EvolvingAttention)]
    if not layers:
        return "evolving attention: none (fairseq's attention in every layer)"
    first = layers[0]
    line = f"evolving attention: alpha {first.effective_alpha:g}, beta {first.effective_beta:g}"
    if first.ramp_updates > 0:
        step = int(first.ramp_step)
        line += (f" (ramp {step}/{first.ramp_updates} updates of configured "
                 f"alpha {first.alpha:g}, beta {first.beta:g})")
    return line + f", kernel {first.kernel_size}, {first.activation}"


def save_arrays(maps, source_tokens, target_tokens, decoder_input_tokens, path):
    arrays = {f"{stack}/layer{layer}/{name}": value
              for (stack, layer), named in maps.items() for name, value in named.items()}
    np.savez(path, source_tokens=np.array(source_tokens), target_tokens=np.array(target_tokens),
             decoder_input_tokens=np.array(decoder_input_tokens), **arrays)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m evo_fairseq.inspect", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", required=True, help="checkpoint (.pt), EA or plain transformer")
    parser.add_argument("--data-bin", required=True, help="fairseq-preprocess output (dictionaries)")
    parser.add_argument("--source", action="append", default=[], help="a sentence (repeatable)")
    parser.add_argument("--input", help="a file with one sentence per line")
    parser.add_argument("--source-lang", "-s")
    parser.add_argument("--target-lang", "-t")
    parser.add_argument("--tokenizer", default=None, help="e.g. moses (as given to fairseq)")
    parser.add_argument("--moses-no-dash-splits", action="store_true",
                        help="for data prepared with --no-dash-splits (IWSLT'14)")
    parser.add_argument("--bpe", default=None, help="subword_nmt or fastbpe")
    parser.add_argument("--bpe-codes")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--head", type=int, default=None, help="plot one head instead of the mean")
    parser.add_argument("--out-dir", default="attention")
    args = parser.parse_args(argv)

    sentences = list(args.source)
    if args.input:
        with open(args.input, encoding="utf-8") as f:
            sentences += [line.strip() for line in f if line.strip()]
    if not sentences:
        parser.error("give sentences with --source TEXT or --input FILE")
    if args.beam < 1:
        parser.error(f"--beam must be >= 1, got {args.beam}")

    hub = load_hub(args)
    num_heads = hub.models[0].encoder.layers[0].self_attn.num_heads
    if args.head is not None and not 0 <= args.head < num_heads:
        parser.error(f"--head must be in [0, {num_heads - 1}] for this model, got {args.head}")
    os.makedirs(args.out_dir, exist_ok=True)
    print(describe_evolving_attention(hub.models[0]))
    for n, sentence in enumerate(sentences, start=1):
        translation, maps, src_toks, tgt_toks, dec_in_toks = inspect_sentence(hub, sentence, args.beam)
        stem = os.path.join(args.out_dir, f"sentence-{n}")
        save_arrays(maps, src_toks, tgt_toks, dec_in_toks, stem + ".npz")
        plot(maps, src_toks, tgt_toks, dec_in_toks, stem + ".png", head=args.head,
             title=f"{sentence}  ->  {translation}")
        print(f"S-{n}\t{sentence}\nH-{n}\t{translation}")
        print("| stack | layer | KL(P_i || P_i-1) | cosine(P_i, P_i-1) |")
        print("|---|---|---|---|")
        for stack, layer, kl, cosine in layer_differences(maps):
            print(f"| {stack} | {layer} | {kl:.4f} | {cosine:.4f} |")
        print(f"wrote {stem}.png and {stem}.npz")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
