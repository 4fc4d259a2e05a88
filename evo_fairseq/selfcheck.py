# Copyright (c) evo-fairseq contributors.
#
# This source code is licensed under the MIT license found in the
# LICENSE file in the root directory of this source tree.
"""Check evolving attention on this machine's device, in every precision.

    python -m evo_fairseq.selfcheck [--device cpu|cuda] [--json FILE]

1. The fused map transform (``evolve_map``) against its fp32 oracle, the plain
   composition (:mod:`evo_fairseq.modules.evolving_map_reference`) run in fp32 on
   the same (rounded) inputs: forward and the gradients of S, A_prev, the
   convolution's weight and bias, for each stack (encoder, decoder, cross) and
   padding side, in fp32, fp16, bf16 and autocast (fairseq's ``--amp``: a
   half-precision map, fp32 parameters). Under autocast the output must have the
   map's dtype and every gradient its input's dtype.
2. A small EA model (3+3 layers, all three stacks): incremental decoding, step by
   step, equals the full forward pass, in each precision; and each precision's
   log-probs stay close to fp32's.

Errors are relative to the oracle's largest magnitude. A check passes within its
precision's tolerance, or, where rounding flips a relu's sign and so makes even the
oracle jump, when it is no worse than 1.5x the composition run in the same precision
(the best any implementation in that precision can do). Prints a table of the
largest errors; exits 1 on any failure. Takes seconds on a CPU.
"""

import argparse
import json
import sys
import tempfile
import time
from typing import Dict, List

import torch

from evo_fairseq.modules import evolving_map
from evo_fairseq.modules.evolving_map_reference import reference_evolve_map

STACKS = ("encoder", "decoder", "cross")
PADDINGS = ("left", "right")
# relative tolerance by the precision the map is computed in
TOLERANCE = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 4e-2}
# model log-probs: absolute (nats) for incremental against full, and against fp32
MODEL_TOLERANCE = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 1.5e-1}
KINK_FACTOR = 1.5


def modes(device: str) -> List[Dict]:
    """The precisions to check: weights' dtype, or autocast's dtype over fp32 weights."""
    found = [
        {"name": "fp32", "dtype": torch.float32, "autocast": False},
        {"name": "fp16", "dtype": torch.float16, "autocast": False},
        {"name": "bf16", "dtype": torch.bfloat16, "autocast": False},
    ]
    autocast_dtypes = [torch.float16, torch.bfloat16] if device == "cuda" else [torch.bfloat16]
    for dtype in autocast_dtypes:
        name = "autocast-" + ("fp16" if dtype == torch.float16 else "bf16")
        found.append({"name": name, "dtype": dtype, "autocast": True})
    return found


def masks(stack: str, padding: str, bsz: int, tgt_len: int, src_len: int, device):
    """``(blocked, masked)`` as the layers build them for the second sentence padded by 2:
    padded keys, padded queries (encoder and decoder self-attention), future keys."""
    blocked = torch.zeros(bsz, 1, tgt_len, src_len, dtype=torch.bool, device=device)
    keys = slice(0, 2) if padding == "left" else slice(src_len - 2, src_len)
    blocked[1, :, :, keys] = True
    if stack != "cross":  # the keys are the queries
        blocked[1, :, keys, :] = True
    masked = None
    if stack == "decoder":
        masked = torch.ones(tgt_len, src_len, dtype=torch.bool, device=device).triu(1)[None, None]
        blocked = blocked | masked
    return blocked, masked


def relative_error(value, oracle, keep=None) -> float:
    value, oracle = value.float(), oracle.float()
    if keep is not None:
        value, oracle = value[keep], oracle[keep]
    return ((value - oracle).abs().max() / oracle.abs().max().clamp_min(1e-12)).item()


def run_map(fn, inputs, mode, stack, blocked, masked, upstream, alpha=0.7, beta=0.4):
    """``fn`` (fused or reference) on ``inputs`` in ``mode``: (output, gradients)."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    logits, prev, weight, bias = leaves
    device_type = logits.device.type
    with torch.autocast(device_type, dtype=mode["dtype"], enabled=mode["autocast"]):
        out = fn(logits.clone(), prev, weight, bias, alpha, beta, "relu", stack != "encoder",
                 blocked, masked)[0]
    (out.float() * upstream).sum().backward()
    return out, [leaf.grad for leaf in leaves]


def check_map(mode: Dict, stack: str, padding: str, device: str = "cpu", fused=None) -> Dict:
    """The fused transform in ``mode`` against the fp32 oracle; see the module docstring."""
    fused = fused or evolving_map.evolve_map
    bsz, heads, tgt_len = 2, 4, 6
    src_len = 7 if stack == "cross" else tgt_len
    gen = torch.Generator().manual_seed(0)
    make = lambda *shape: torch.randn(*shape, generator=gen).to(device)
    map_shape = (bsz, heads, tgt_len, src_len)
    dtype = mode["dtype"]
    logits, prev = (make(*map_shape) * 3).to(dtype), (make(*map_shape) * 3).to(dtype)
    weight, bias = make(heads, heads, 3, 3) * 0.5, make(heads)
    if not mode["autocast"]:  # --fp16 / --bf16 convert the parameters too
        weight, bias = weight.to(dtype), bias.to(dtype)
    inputs = (logits, prev, weight, bias)
    blocked, masked = masks(stack, padding, bsz, tgt_len, src_len, device)
    upstream = make(*map_shape)
    if masked is not None:
        upstream = upstream.masked_fill(masked, 0.0)  # the softmax passes nothing there

    out, grads = run_map(fused, inputs, mode, stack, blocked, masked, upstream)
    composition, composition_grads = run_map(reference_evolve_map, inputs, mode, stack,
                                             blocked, masked, upstream)
    oracle, oracle_grads = run_map(reference_evolve_map, [t.float() for t in inputs],
                                   {"dtype": torch.float32, "autocast": False}, stack,
                                   blocked, masked, upstream)
    keep = None if masked is None else ~masked.expand_as(out)
    names = ["output", "grad S", "grad A_prev", "grad weight", "grad bias"]
    errors = [relative_error(out, oracle, keep)] + [
        relative_error(g, o) for g, o in zip(grads, oracle_grads)]
    composition_errors = [relative_error(composition, oracle, keep)] + [
        relative_error(g, o) for g, o in zip(composition_grads, oracle_grads)]
    tolerance = TOLERANCE[dtype]
    problems = []
    for name, error, floor in zip(names, errors, composition_errors):
        if not error <= max(tolerance, KINK_FACTOR * floor):
            problems.append(f"{name}: {error:.2e} > max({tolerance:.0e}, {KINK_FACTOR} x "
                            f"composition's {floor:.2e})")
    if out.dtype != dtype:
        problems.append(f"output is {out.dtype}, expected {dtype}")
    for name, grad, leaf in zip(names[1:], grads, inputs):
        if grad is None or grad.dtype != leaf.dtype:
            problems.append(f"{name} is {None if grad is None else grad.dtype}, "
                            f"expected its input's {leaf.dtype}")
    if masked is not None and not (out[masked.expand_as(out)] == evolving_map.blocked_fill(dtype)).all():
        problems.append("masked cells do not hold blocked_fill")
    return {"check": "map", "mode": mode["name"], "stack": stack, "padding": padding,
            "errors": dict(zip(names, errors)), "tolerance": tolerance, "problems": problems}


def tiny_model(device: str):
    """A small EA model (3+3 layers, 16 dims, 4 heads, all stacks) built by fairseq's
    own option parsing, and its task."""
    import evo_fairseq  # noqa: F401  (registers the architecture)
    from fairseq import options, tasks

    with tempfile.TemporaryDirectory() as data:
        for lang in ("de", "en"):
            with open(f"{data}/dict.{lang}.txt", "w") as f:
                f.writelines(f"w{i} 1\n" for i in range(40))
        parser = options.get_training_parser()
        args = options.parse_args_and_arch(parser, [
            data, "--task", "translation", "-s", "de", "-t", "en", "--arch", "ea_transformer",
            "--encoder-layers", "3", "--decoder-layers", "3",
            "--encoder-embed-dim", "16", "--decoder-embed-dim", "16",
            "--encoder-ffn-embed-dim", "32", "--decoder-ffn-embed-dim", "32",
            "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
            "--dropout", "0", "--attention-dropout", "0"])
        torch.manual_seed(1)
        task = tasks.setup_task(args)
        model = task.build_model(args)
    return model.to(device).eval(), task


def sentences(task, device, bsz=3, src_len=8, tgt_len=7, seed=0):
    """Left-padded random sources of different lengths; unpadded targets."""
    gen = torch.Generator().manual_seed(seed)
    dictionary = task.source_dictionary
    src = torch.full((bsz, src_len), dictionary.pad())
    lengths = [src_len - 2 * b for b in range(bsz)]
    for b, length in enumerate(lengths):
        src[b, src_len - length:] = torch.randint(dictionary.nspecial, len(dictionary),
                                                  (length,), generator=gen)
        src[b, -1] = dictionary.eos()
    prev = torch.randint(dictionary.nspecial, len(dictionary), (bsz, tgt_len), generator=gen)
    prev[:, 0] = dictionary.eos()
    return src.to(device), torch.tensor(lengths, device=device), prev.to(device)


def decode(model, src, src_lengths, prev, incremental: bool):
    """Log-probs ``(bsz, tgt_len, vocab)`` in fp32, by one forward pass or step by step."""
    encoder_out = model.encoder(src, src_lengths=src_lengths)
    if not incremental:
        out = model.decoder(prev, encoder_out=encoder_out)
        return model.get_normalized_probs(out, log_probs=True).float()
    state, steps = {}, []
    for t in range(1, prev.size(1) + 1):
        out = model.decoder(prev[:, :t], encoder_out=encoder_out, incremental_state=state)
        steps.append(model.get_normalized_probs(out, log_probs=True).float())
    return torch.cat(steps, dim=1)


def check_model(mode: Dict, device: str = "cpu") -> Dict:
    """Incremental decoding equals the full forward pass in ``mode``, whose log-probs
    stay close to the fp32 model's."""
    model, task = tiny_model(device)
    src, src_lengths, prev = sentences(task, device)
    with torch.no_grad():
        reference = decode(model, src, src_lengths, prev, incremental=False)
        if not mode["autocast"]:
            model = model.to(mode["dtype"])
        with torch.autocast(device, dtype=mode["dtype"], enabled=mode["autocast"]):
            full = decode(model, src, src_lengths, prev, incremental=False)
            steps = decode(model, src, src_lengths, prev, incremental=True)
    errors = {"incremental vs full": (steps - full).abs().max().item(),
              "full vs fp32": (full - reference).abs().max().item()}
    tolerance = MODEL_TOLERANCE[mode["dtype"]]
    problems = [f"{name}: {error:.2e} > {tolerance:.0e} nats" for name, error in errors.items()
                if not error <= tolerance]
    return {"check": "model", "mode": mode["name"], "stack": "all", "padding": "left",
            "errors": errors, "tolerance": tolerance, "problems": problems}


def guarded(labels: Dict, check, *args) -> Dict:
    """Run one check; an exception (a dtype error, say) is that check's failure."""
    try:
        return check(*args)
    except Exception as err:  # reported in the table, not raised
        message = (str(err).strip().splitlines() or [""])[0][:200]
        return {**labels, "errors": {"exception": float("nan")}, "tolerance": float("nan"),
                "problems": [f"{type(err).__name__}: {message}"]}


def run_checks(device: str = "cpu", fused=None) -> List[Dict]:
    # fp32 is fp32: no TF32 convolutions or matmuls on CUDA (cuDNN's default allows them)
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        return _run_checks(device, fused)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def _run_checks(device, fused):
    results = []
    for mode in modes(device):
        for stack in STACKS:
            for padding in PADDINGS:
                labels = {"check": "map", "mode": mode["name"], "stack": stack, "padding": padding}
                results.append(guarded(labels, check_map, mode, stack, padding, device, fused))
        labels = {"check": "model", "mode": mode["name"], "stack": "all", "padding": "left"}
        results.append(guarded(labels, check_model, mode, device))
    return results


def table(results: List[Dict]) -> str:
    lines = ["| check | mode | stack | padding | largest error (which) | tolerance | result |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        which = max(r["errors"], key=r["errors"].get)
        result = "ok" if not r["problems"] else "FAIL: " + "; ".join(r["problems"])
        lines.append(f"| {r['check']} | {r['mode']} | {r['stack']} | {r['padding']} | "
                     f"{r['errors'][which]:.2e} ({which}) | {r['tolerance']:.1e} | {result} |")
    return "\n".join(lines)


def main(argv=None, fused=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evo_fairseq.selfcheck", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--json", metavar="FILE", help="also write every error to FILE")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device (torch.cuda.is_available() is "
                     "False); run without --device for the CPU check")
    start = time.perf_counter()
    results = run_checks(args.device, fused)
    seconds = time.perf_counter() - start
    failed = sum(bool(r["problems"]) for r in results)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"evo_fairseq self-check on {name}, torch {torch.__version__}: "
          f"{len(results) - failed}/{len(results)} checks passed in {seconds:.1f} s\n")
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "torch": torch.__version__, "seconds": seconds,
                       "results": results}, f, indent=1)
    if failed:
        print(f"\nFAILED: {failed} check(s); see the table", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
