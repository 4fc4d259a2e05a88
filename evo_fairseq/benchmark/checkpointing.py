# Copyright (c) evo-fairseq contributors.
#
# This source code is licensed under the MIT license found in the
# LICENSE file in the root directory of this source tree.
"""Bytes an encoder keeps for the backward pass, with and without activation checkpointing,
EA against fairseq's transformer.

    python -m evo_fairseq.benchmark checkpointing [--lengths 128 512] [--layers 2]
        [--embed-dim 512] [--heads 8] [--batch-size 8] [--out FILE.md]

Each model is built by fairseq's own option parsing (``--arch transformer`` or
``ea_transformer``, with or without ``--checkpoint-activations``); its encoder runs one
training-mode forward pass on random tokens of the given length, and the distinct storages
autograd saves for the backward pass are summed (with checkpointing: each layer's inputs,
the map its predecessor handed on among them). CPU, deterministic: no timing.
"""

import argparse
import sys
import tempfile

import torch

from evo_fairseq.benchmark.scaling import saved_activation_bytes

VOCAB = 1000


def build_encoder(arch, args, checkpointing):
    import evo_fairseq  # noqa: F401  (registers the architecture)
    from fairseq import options, tasks

    with tempfile.TemporaryDirectory() as data:
        for lang in ("de", "en"):
            with open(f"{data}/dict.{lang}.txt", "w") as f:
                f.writelines(f"w{i} 1\n" for i in range(VOCAB))
        argv = [data, "--task", "translation", "-s", "de", "-t", "en", "--arch", arch,
                "--encoder-layers", str(args.layers), "--decoder-layers", "1",
                "--encoder-embed-dim", str(args.embed_dim),
                "--encoder-ffn-embed-dim", str(4 * args.embed_dim),
                "--encoder-attention-heads", str(args.heads), "--max-source-positions", "1024"]
        if checkpointing:
            argv.append("--checkpoint-activations")
        cfg = options.parse_args_and_arch(options.get_training_parser(), argv)
        torch.manual_seed(0)
        task = tasks.setup_task(cfg)
        return task.build_model(cfg).encoder.train()


def kept_bytes(encoder, length, batch_size):
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(4, VOCAB, (batch_size, length), generator=gen)
    lengths = torch.full((batch_size,), length)
    return saved_activation_bytes(lambda: encoder(tokens, src_lengths=lengths))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m evo_fairseq.benchmark checkpointing",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--embed-dim", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", help="also write the markdown table here")
    args = parser.parse_args(argv)

    encoders = {(arch, ckpt): build_encoder(arch, args, ckpt)
                for arch in ("transformer", "ea_transformer") for ckpt in (False, True)}
    command = " ".join(["python -m evo_fairseq.benchmark checkpointing",
                        *(sys.argv[1:] if argv is None else argv)])
    lines = [
        f"`{command}`", "",
        f"Bytes kept for the backward pass by a {args.layers}-layer, {args.embed_dim}-d, "
        f"{args.heads}-head encoder, batch {args.batch_size}, one training-mode forward pass "
        f"(CPU, torch {torch.__version__}).", "",
        "| tokens | plain (MB) | EA (MB) | EA / plain | plain, checkpointed (MB) | "
        "EA, checkpointed (MB) | EA / plain, checkpointed | EA checkpointed / EA |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = []
    for length in args.lengths:
        mb = {key: kept_bytes(encoder, length, args.batch_size) / 2**20
              for key, encoder in encoders.items()}
        plain, ea = mb[("transformer", False)], mb[("ea_transformer", False)]
        plain_ckpt, ea_ckpt = mb[("transformer", True)], mb[("ea_transformer", True)]
        rows.append({"length": length, "plain": plain, "ea": ea, "plain_checkpointed": plain_ckpt,
                     "ea_checkpointed": ea_ckpt})
        lines.append(f"| {length} | {plain:.3f} | {ea:.3f} | {ea / plain:.2f}x | "
                     f"{plain_ckpt:.3f} | {ea_ckpt:.3f} | {ea_ckpt / plain_ckpt:.2f}x | "
                     f"{ea_ckpt / ea:.2f}x |")
    table = "\n".join(lines) + "\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(table)
    print(table)
    return rows


if __name__ == "__main__":
    main()
