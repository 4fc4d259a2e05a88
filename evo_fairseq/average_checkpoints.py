# Copyright (c) evo-fairseq contributors.
#
# This source code is licensed under the MIT license found in the
# LICENSE file in the root directory of this source tree.
"""Average the parameters of the last N checkpoints (fairseq's wheel does not ship
``scripts/average_checkpoints.py``; this takes the same options).

    python -m evo_fairseq.average_checkpoints --inputs DIR --num-epoch-checkpoints N --output FILE
    python -m evo_fairseq.average_checkpoints --inputs DIR --num-update-checkpoints N --output FILE
    python -m evo_fairseq.average_checkpoints --inputs A.pt B.pt ... --output FILE

Epoch checkpoints are ``checkpointE.pt``, update checkpoints ``checkpoint_E_U.pt``
(``--save-interval-updates``); the last N by number are averaged. The output keeps
everything else (configuration, optimizer history) from the newest input, and is
written to ``FILE.tmp`` and renamed when complete.
"""

import argparse
import collections
import os
import re
import sys

import torch

import evo_fairseq  # noqa: F401  (the safe globals that fairseq checkpoints need)

EPOCH = re.compile(r"checkpoint(\d+)\.pt$")
UPDATE = re.compile(r"checkpoint_\d+_(\d+)\.pt$")


def last_checkpoints(directory, n, pattern, upper_bound=None):
    """The paths of the last ``n`` checkpoints in ``directory`` whose names match ``pattern``."""
    numbered = []
    for name in os.listdir(directory):
        match = pattern.fullmatch(name)
        if match and (upper_bound is None or int(match.group(1)) <= upper_bound):
            numbered.append((int(match.group(1)), os.path.join(directory, name)))
    if len(numbered) < n:
        kind = "epoch" if pattern is EPOCH else "update"
        raise ValueError(f"{directory}: {len(numbered)} {kind} checkpoints "
                         f"({', '.join(sorted(os.path.basename(p) for _, p in numbered)) or 'none'}), "
                         f"{n} needed")
    return [path for _, path in sorted(numbered, reverse=True)[:n]]


def average_checkpoints(paths):
    """Returns the newest checkpoint's state with the mean of all ``paths``' model parameters."""
    sums, state = collections.OrderedDict(), None
    for path in paths:
        state_i = torch.load(path, map_location="cpu")  # as saved: plain containers
        model = state_i["model"]
        if sums and set(model) != set(sums):
            raise ValueError(f"{path}: its parameters differ from {paths[0]}'s "
                             f"(e.g. {sorted(set(model) ^ set(sums))[:3]})")
        for name, tensor in model.items():
            if name in sums and tensor.shape != sums[name].shape:
                raise ValueError(f"{path}: {name} has shape {tuple(tensor.shape)}, "
                                 f"{paths[0]} has {tuple(sums[name].shape)}")
            value = tensor.double() if tensor.is_floating_point() else tensor
            sums[name] = sums[name] + value if name in sums and tensor.is_floating_point() else value
        if state is None:
            state = state_i
    averaged = collections.OrderedDict()
    for name, total in sums.items():
        reference = state["model"][name]
        averaged[name] = (total / len(paths)).to(reference.dtype) if reference.is_floating_point() else reference
    state["model"] = averaged
    return state


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m evo_fairseq.average_checkpoints",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", nargs="+", required=True,
                        help="checkpoint files, or one directory with --num-*-checkpoints")
    parser.add_argument("--output", required=True)
    count = parser.add_mutually_exclusive_group()
    count.add_argument("--num-epoch-checkpoints", type=int)
    count.add_argument("--num-update-checkpoints", type=int)
    parser.add_argument("--checkpoint-upper-bound", type=int,
                        help="the last epoch (or update) to consider")
    args = parser.parse_args(argv)
    n = args.num_epoch_checkpoints or args.num_update_checkpoints
    try:
        if n is not None:
            if n < 1:
                raise ValueError(f"the number of checkpoints must be >= 1, got {n}")
            if len(args.inputs) != 1 or not os.path.isdir(args.inputs[0]):
                raise ValueError(f"--num-*-checkpoints needs one directory as --inputs, got {args.inputs}")
            pattern = EPOCH if args.num_epoch_checkpoints else UPDATE
            paths = last_checkpoints(args.inputs[0], n, pattern, args.checkpoint_upper_bound)
        else:
            paths = args.inputs
            missing = [p for p in paths if not os.path.isfile(p)]
            if missing:
                raise ValueError(f"no such checkpoint file: {', '.join(missing)}")
        state = average_checkpoints(paths)
    except ValueError as error:
        parser.error(str(error))
    print(f"averaged {len(paths)} checkpoints: {', '.join(os.path.basename(p) for p in paths)}",
          file=sys.stderr)
    tmp = args.output + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, args.output)
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
