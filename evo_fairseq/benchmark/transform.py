# Copyright (c) evo-fairseq contributors.
#
# This source code is licensed under the MIT license found in the
# LICENSE file in the root directory of this source tree.
"""The evolving map transform alone: fused (``evolve_map``) against the plain
composition of tensor operations (:mod:`evo_fairseq.modules.evolving_map_reference`)
and, where it works, ``torch.compile`` of that composition.

    python -m evo_fairseq.benchmark transform [--lengths 64 128 256] [--batch-size 8]
        [--heads 8] [--repeats 7] [--rounds 3] [--no-compile]

Forward + backward of one causal (decoder) transform with its future mask, interleaved
(fused, composition, compiled per round); median time and the bytes autograd keeps.
"""

import argparse
import statistics
import time

import torch

from evo_fairseq.benchmark.scaling import saved_activation_bytes
from evo_fairseq.modules.evolving_map import blocked_fill, evolve_map
from evo_fairseq.modules.evolving_map_reference import reference_evolve


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m evo_fairseq.benchmark transform",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out")
    parser.add_argument("--cpu", action="store_true")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(args.heads, args.heads, 3).to(device)

    print(f"Map transform, causal, batch {args.batch_size}, {args.heads} heads, {device}; "
          f"forward + backward, median of {args.rounds} interleaved rounds of {args.repeats}.\n")
    print("| length | fused (ms) | composition (ms) | compiled composition (ms) | "
          "kept for backward: fused / composition / compiled (MB) |")
    print("|---|---|---|---|---|")
    for length in args.lengths:
        shape = (args.batch_size, args.heads, length, length)
        logits = torch.randn(shape, device=device)
        prev = torch.randn(shape, device=device)
        future = torch.ones(1, 1, length, length, dtype=torch.bool, device=device).triu_(1)

        def composition(s, p):
            out = reference_evolve(s, p, conv.weight, conv.bias, 0.8, 0.5, "relu", True,
                                   future)[0]
            return out.masked_fill(future, blocked_fill(out.dtype))

        def fused(s, p):
            return evolve_map(s, p, conv.weight, conv.bias, 0.8, 0.5, "relu", True, future,
                              future)[0]

        kinds = {"fused": fused, "composition": composition}
        if not args.no_compile:
            kinds["compiled"] = torch.compile(composition)

        def run(fn):
            s, p = logits.clone().requires_grad_(), prev.clone().requires_grad_()
            out = fn(s * 1, p)  # s * 1: not a leaf, as fairseq's QK^T is not
            return out, s, p

        def step(fn):
            out, _, _ = run(fn)
            out.sum().backward()
            if device == "cuda":
                torch.cuda.synchronize()

        for fn in kinds.values():  # warm-up (and compilation)
            step(fn)
            step(fn)
        times = {name: [] for name in kinds}
        for _ in range(args.rounds):
            for name, fn in kinds.items():
                samples = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    step(fn)
                    samples.append(time.perf_counter() - start)
                times[name].append(statistics.median(samples) * 1e3)
        ms = {name: statistics.median(values) for name, values in times.items()}
        memory = " / ".join(f"{saved_activation_bytes(lambda: run(fn)) / 2**20:.3f}"
                            for fn in kinds.values())
        compiled = f"{ms['compiled']:.2f}" if "compiled" in ms else "-"
        print(f"| {length} | {ms['fused']:.2f} | {ms['composition']:.2f} | {compiled} | "
              f"{memory} |", flush=True)


if __name__ == "__main__":
    main()
