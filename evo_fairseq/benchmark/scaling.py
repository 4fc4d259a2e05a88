# Copyright (c) evo-fairseq contributors.
#
# This source code is licensed under the MIT license found in the
# LICENSE file in the root directory of this source tree.
"""Time and memory of one EA attention layer against fairseq's MultiheadAttention.

    python -m evo_fairseq.benchmark scaling [--lengths 16 32 64 128 256 512]
        [--batch-size 8] [--embed-dim 512] [--heads 8] [--repeats 5] [--out FILE.md]

For each sequence length: forward+backward of a self-attention layer (the EA
layer is an evolving one, i.e. layer >= 2, with the default 3x3 convolution),
the activation memory it keeps for the backward pass (bytes of the tensors
saved by autograd; on a GPU, peak allocated memory), and one incremental
decoding step of causal self-attention with that many cached positions.

The same layer with the map transform as the plain composition of tensor
operations (:mod:`evo_fairseq.modules.evolving_map_reference`, the fused
transform's oracle) is measured too, in the same run, interleaved
(plain, fused, composition per repeat).
"""

import argparse
import statistics
import time

import torch
from fairseq.modules import MultiheadAttention

from evo_fairseq.modules import AttentionChain, EvolvingAttentionConfig, EvolvingMultiheadAttention
from evo_fairseq.modules import evolving_map
from evo_fairseq.modules.evolving_map_reference import reference_evolve_map


def use_composition(evolving):
    """Make ``evolving`` compute its map with the plain composition (same results)."""

    def forward(attn_logits, prev_attn_logits, blocked=None, prev_mixed_rows=None,
                keep_conv_out=False, masked=None):
        return reference_evolve_map(
            attn_logits, prev_attn_logits, evolving.conv.weight, evolving.conv.bias,
            evolving.effective_alpha, evolving.effective_beta, evolving.activation,
            evolving.causal, blocked, masked, prev_mixed_rows, keep_conv_out)

    evolving.forward = forward


def build(kind, embed_dim, heads, stack):
    kind = kind.split("@")[0]  # ea@LAYOUT: the EA layer, its convolutions in LAYOUT
    if kind == "plain":
        return MultiheadAttention(embed_dim, heads, self_attention=True), None
    chain = AttentionChain(stack, EvolvingAttentionConfig())
    chain.add_layer(heads)  # layer 1
    module = EvolvingMultiheadAttention(
        embed_dim, heads, chain=chain, evolving=chain.add_layer(heads), self_attention=True)
    if kind == "composition":
        use_composition(module.evolving)
    return module, chain


def median_seconds(fn, repeats, device):
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def saved_activation_bytes(fn):
    """Bytes of distinct tensors autograd saves for the backward pass of ``fn``."""
    seen = {}

    def pack(tensor):
        seen[(tensor.untyped_storage().data_ptr(), tensor.dtype)] = (
            tensor.untyped_storage().nbytes())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def self_attention_forward(kind, length, args, device):
    """A training-mode self-attention layer of ``kind`` and a function running its forward
    pass on a random batch (an EA layer gets a random map from its predecessor)."""
    module, chain = build(kind, args.embed_dim, args.heads, "encoder")
    module = module.to(device).train()
    x = torch.randn(length, args.batch_size, args.embed_dim, device=device, requires_grad=True)
    prev = torch.randn(args.batch_size, args.heads, length, length, device=device)

    def forward():
        if chain is not None:
            chain.open(None)
            chain.prev_attn_logits = prev
        out, _ = module(x, x, x, need_weights=False)
        return out

    return forward


def measure(kind, length, args, device):
    """Time and memory of one layer of ``kind`` (plain, ea, composition or ea@LAYOUT)."""
    layout = kind.partition("@")[2]
    if not layout:
        return measure_layer(kind, length, args, device)
    before = evolving_map.CONV_LAYOUT.get(device, "contiguous")
    evolving_map.set_conv_layout(device, layout)
    try:
        return measure_layer(kind, length, args, device)
    finally:
        evolving_map.set_conv_layout(device, before)


def measure_layer(kind, length, args, device):
    forward = self_attention_forward(kind, length, args, device)

    def forward_backward():
        forward().sum().backward()

    result = {"train_ms": 1e3 * median_seconds(forward_backward, args.repeats, device)}
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        forward()
        result["memory_mb"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        result["memory_mb"] = saved_activation_bytes(forward) / 2**20

    # one incremental decoding step with `length` cached positions
    step_module, step_chain = build(kind, args.embed_dim, args.heads, "decoder")
    step_module = step_module.to(device).eval()
    head_dim = args.embed_dim // args.heads
    cached = torch.randn(args.batch_size, args.heads, length, head_dim, device=device)
    query = torch.randn(1, args.batch_size, args.embed_dim, device=device)
    prev_row = torch.randn(args.batch_size, args.heads, 1, length + 1, device=device)

    def step():
        state = {}
        step_module._set_input_buffer(state, {"prev_key": cached, "prev_value": cached,
                                              "prev_key_padding_mask": None})
        if step_chain is not None:
            step_module.set_incremental_state(state, "evolving_state", {
                "prev_mixed_rows": torch.zeros(args.batch_size, args.heads, 2, length,
                                               device=device)})
            step_chain.open(None)
            step_chain.prev_attn_logits = prev_row
        step_module(query, query, query, incremental_state=state, need_weights=False)

    with torch.no_grad():
        result["step_ms"] = 1e3 * median_seconds(step, args.repeats, device)
    return result


def profile(length, args, device, top=12):
    """Markdown: the EA layer's forward+backward by operation (self time), against plain."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    lines = []
    for kind in ("plain", "ea"):
        forward = self_attention_forward(kind, length, args, device)

        def step():
            forward().sum().backward()

        for _ in range(2):
            step()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
        with torch_profile(activities=activities) as prof:
            for _ in range(args.repeats):
                step()
        events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
        attr = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
        total = sum(getattr(e, attr) for e in events)
        events.sort(key=lambda e: -getattr(e, attr))
        lines += [f"{kind} layer, length {length}: {total / 1e3 / args.repeats:.2f} ms per "
                  "forward+backward (profiled)", "",
                  "| operation | calls | ms per step | share |", "|---|---|---|---|"]
        for e in events[:top]:
            ms = getattr(e, attr) / 1e3 / args.repeats
            lines.append(f"| `{e.key}` | {e.count // args.repeats} | {ms:.2f} | "
                         f"{100 * getattr(e, attr) / total:.0f}% |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m evo_fairseq.benchmark scaling",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--embed-dim", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds (plain, EA, composition, ...); medians over them")
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--out", help="also write the markdown table here")
    parser.add_argument("--layouts", nargs="+", default=[], choices=list(evolving_map.LAYOUTS),
                        help="also measure the EA layer with its convolutions in these memory "
                             "layouts (interleaved with the rest)")
    parser.add_argument("--profile", type=int, metavar="LENGTH",
                        help="print a profile by operation at this length instead of the table")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    torch.manual_seed(0)
    if args.profile:
        text = profile(args.profile, args, device)
        if args.out:
            with open(args.out, "w") as f:
                f.write(text)
        print(text)
        return text
    memory_kind = "peak allocated" if device == "cuda" else "saved for backward"
    lines = [
        f"One self-attention layer, batch {args.batch_size}, {args.embed_dim} dims, "
        f"{args.heads} heads, {device}; median of {args.rounds} interleaved rounds, each the "
        f"median of {args.repeats} runs.", "",
        f"| length | fwd+bwd plain (ms) | fwd+bwd EA (ms) | ratio | memory plain (MB, "
        f"{memory_kind}) | memory EA (MB) | ratio | incremental step plain (ms) | "
        f"step EA (ms) | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    kinds = ["plain", "ea", "composition"] + [f"ea@{layout}" for layout in args.layouts]
    rows = []
    for length in args.lengths:
        # interleaved: each repeat measures every kind once, then the medians are taken
        samples = {kind: [] for kind in kinds}
        for _ in range(args.rounds):
            for kind in kinds:
                samples[kind].append(measure(kind, length, args, device))
        result = {kind: {name: statistics.median(s[name] for s in samples[kind])
                         for name in samples[kind][0]} for kind in kinds}
        plain, ea = result["plain"], result["ea"]
        rows.append({"length": length, **result})
        lines.append(
            f"| {length} | {plain['train_ms']:.2f} | {ea['train_ms']:.2f} | "
            f"{ea['train_ms'] / plain['train_ms']:.2f}x | {plain['memory_mb']:.3f} | "
            f"{ea['memory_mb']:.3f} | {ea['memory_mb'] / plain['memory_mb']:.2f}x | "
            f"{plain['step_ms']:.3f} | {ea['step_ms']:.3f} | {ea['step_ms'] / plain['step_ms']:.2f}x |")
        print(lines[-1], flush=True)
    if "composition" in kinds:
        lines += ["", "The same EA layer with the map transform as the plain composition "
                  "(evo_fairseq/modules/evolving_map_reference.py), same run:", "",
                  "| length | fwd+bwd composition (ms) | ratio to plain | fused / composition | "
                  "memory composition (MB) | ratio to plain | step composition (ms) | ratio to plain |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in rows:
            plain, ea, comp = row["plain"], row["ea"], row["composition"]
            lines.append(
                f"| {row['length']} | {comp['train_ms']:.2f} | "
                f"{comp['train_ms'] / plain['train_ms']:.2f}x | {ea['train_ms'] / comp['train_ms']:.2f}x | "
                f"{comp['memory_mb']:.3f} | {comp['memory_mb'] / plain['memory_mb']:.2f}x | "
                f"{comp['step_ms']:.3f} | {comp['step_ms'] / plain['step_ms']:.2f}x |")
    if args.layouts:
        lines += ["", f"The same EA layer with its convolutions in each memory layout (today's on "
                  f"{device}: {evolving_map.CONV_LAYOUT.get(device, 'contiguous')}), same run:", "",
                  "| length | layout | fwd+bwd (ms) | ratio to plain | memory (MB) | "
                  "step (ms) | ratio to plain |", "|---|---|---|---|---|---|---|"]
        for row in rows:
            plain = row["plain"]
            for layout in args.layouts:
                ea = row[f"ea@{layout}"]
                lines.append(
                    f"| {row['length']} | {layout} | {ea['train_ms']:.2f} | "
                    f"{ea['train_ms'] / plain['train_ms']:.2f}x | {ea['memory_mb']:.3f} | "
                    f"{ea['step_ms']:.3f} | {ea['step_ms'] / plain['step_ms']:.2f}x |")
    table = "\n".join(lines) + "\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(table)
    print(table)
    return rows


if __name__ == "__main__":
    main()
