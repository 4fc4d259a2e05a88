# Copyright (c) evo-fairseq contributors.
#
# This source code is licensed under the MIT license found in the
# LICENSE file in the root directory of this source tree.
"""Fixes for fairseq on current torch and numpy, applied when the plugin is imported.

fairseq imports ``--user-dir`` before it loads data or checkpoints, so every
fairseq command run with ``--user-dir evo_fairseq`` (and any Python program that
imports ``evo_fairseq``) gets them. Each fix is guarded: it changes nothing
where fairseq or its dependencies already behave.

1. Checkpoints: torch >= 2.6 unpickles with ``weights_only=True``; fairseq
   checkpoints hold an ``argparse.Namespace``, which is allow-listed.
2. Batching: fairseq's ``batch_by_size`` drops the last batch when its size is
   not a multiple of ``--required-batch-size-multiple`` (default 8), so
   ``fairseq-generate`` silently skips sentences and training/validation lose
   examples. The last batch is kept.
3. numpy 2: ``--num-batch-buckets`` uses ``np.compat.long`` and
   ``np.percentile(interpolation=...)``, both removed.
4. Pruning: ``--encoder-layers-to-keep 0,2`` (and ``--decoder-layers-to-keep``) is
   parsed into a list, but the transformer's ``build_model`` and
   ``checkpoint_utils.prune_state_dict`` call ``.split(",")`` on it. The list is
   turned back into the comma-separated string they expect.
5. bf16: fairseq's command line turns ``--bf16`` (and ``--memory-efficient-bf16``)
   into ``--tpu``, so ``fairseq-train --bf16`` on a GPU or CPU asks torch_xla for a
   TPU and fails (``'NoneType' object has no attribute 'xla_device'``). Where
   torch_xla is not installed and ``--tpu`` was not given, the TPU that fairseq
   implied is taken back (with a warning) before ``call_main``, so bf16 trains on
   the device at hand, as ``fairseq-hydra-train`` with ``common.bf16=true`` does.
6. Multi-process checkpoint loading: rank 0 loads a checkpoint (``--restore-file``, or
   ``checkpoint_last.pt`` on resume) and broadcasts it; the other ranks unpickle it with
   ``torch.load``'s ``weights_only=True`` (torch >= 2.6), which refuses the checkpoint's
   ``DictConfig``, so every multi-GPU resume stops there. The bytes come from rank 0 of
   the same job, which loaded the checkpoint itself: the receivers load them in full.
7. ``--ddp-backend pytorch_ddp`` (fairseq's default) on CPUs: fairseq always passes
   ``device_ids=[device_id]``, which torch's ``DistributedDataParallel`` refuses for a
   module on the CPU. For such a module it is left out, as torch requires.
"""

import argparse
import importlib.util
import io
import logging
import sys
import types

import numpy as np
import torch
from fairseq import checkpoint_utils
from fairseq.data import bucket_pad_length_dataset, data_utils
from fairseq.distributed import utils as distributed_utils
from fairseq.models import distributed_fairseq_model
from fairseq.models.transformer import TransformerModel, TransformerModelBase
from omegaconf import ListConfig, OmegaConf, open_dict
from torch.nn.parallel import DistributedDataParallel

logger = logging.getLogger(__name__)

_applied = False
# fairseq's functions as they were before the fixes (for tests and comparisons)
ORIGINALS = {}


def allow_namespace_in_checkpoints():
    add_safe_globals = getattr(torch.serialization, "add_safe_globals", None)
    if add_safe_globals is not None:
        add_safe_globals([argparse.Namespace])


def batch_by_size_keeping_last_batch(batch_by_size):
    """Wrap fairseq's ``batch_by_size`` so that no index is ever dropped."""

    def keep_last_batch(
        indices,
        num_tokens_fn,
        num_tokens_vec=None,
        max_tokens=None,
        max_sentences=None,
        required_batch_size_multiple=1,
        fixed_shapes=None,
    ):
        batches = batch_by_size(
            indices,
            num_tokens_fn,
            num_tokens_vec=num_tokens_vec,
            max_tokens=max_tokens,
            max_sentences=max_sentences,
            required_batch_size_multiple=required_batch_size_multiple,
            fixed_shapes=fixed_shapes,
        )
        if fixed_shapes is not None:
            return batches
        # batches are consecutive slices of indices: what is missing is the tail
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        num_batched = sum(len(batch) for batch in batches)
        if num_batched < len(indices):
            batches = list(batches) + [indices[num_batched:]]
        return batches

    keep_last_batch.__doc__ = batch_by_size.__doc__
    keep_last_batch.keeps_last_batch = True
    return keep_last_batch


def get_buckets(sizes, num_buckets):
    """fairseq's ``data_utils.get_buckets`` with numpy >= 1.22's ``method=``."""
    return np.unique(
        np.percentile(sizes, np.linspace(0, 100, num_buckets + 1), method="lower")[1:]
    )


LAYERS_TO_KEEP = ("encoder_layers_to_keep", "decoder_layers_to_keep")


def layers_to_keep_as_strings(cfg):
    """Turn ``*_layers_to_keep`` lists of ``cfg`` (Namespace, DictConfig or
    TransformerConfig) into the comma-separated strings fairseq splits."""
    if cfg is None:
        return
    for name in LAYERS_TO_KEEP:
        value = getattr(cfg, name, None)
        if isinstance(value, (list, tuple, ListConfig)):
            value = ",".join(str(int(layer)) for layer in value)
            if OmegaConf.is_config(cfg):
                with open_dict(cfg):
                    setattr(cfg, name, value)
            else:
                setattr(cfg, name, value)


def build_model_with_layers_to_keep(build_model):
    """Wrap a transformer's ``build_model`` classmethod (fix 4)."""
    build_model = build_model.__func__

    def build(cls, cfg, task):
        layers_to_keep_as_strings(cfg)
        return build_model(cls, cfg, task)

    build.__doc__ = build_model.__doc__
    build.keeps_layers_to_keep = True
    return classmethod(build)


def prune_state_dict_with_layers_to_keep(prune_state_dict):
    def prune(state_dict, model_cfg):
        layers_to_keep_as_strings(model_cfg)
        return prune_state_dict(state_dict, model_cfg)

    prune.__doc__ = prune_state_dict.__doc__
    prune.keeps_layers_to_keep = True
    return prune


def bf16_without_implied_tpu(cfg, argv=None) -> bool:
    """Fix 5 on a FairseqConfig: True when it took back a TPU that ``--bf16`` implied."""
    common = cfg.common
    argv = sys.argv[1:] if argv is None else argv
    asked = any(arg == "--tpu" or arg.startswith(("common.tpu=", "++common.tpu=", "+common.tpu="))
                for arg in argv)
    if not (common.bf16 and common.tpu) or asked or importlib.util.find_spec("torch_xla"):
        return False
    with open_dict(cfg):
        common.tpu = False
    logger.warning("--bf16 without --tpu and without torch_xla: training in bf16 on this "
                   "machine's device (fairseq's command line would have asked for a TPU)")
    return True


def call_main_with_bf16_on_this_device(call_main):
    def call(cfg, main, **kwargs):
        bf16_without_implied_tpu(cfg)
        return call_main(cfg, main, **kwargs)

    call.__doc__ = call_main.__doc__
    call.takes_back_implied_tpu = True
    return call


def broadcast_object_slow(obj, src_rank, group, dist_device):
    """fairseq's ``distributed.utils._broadcast_object_slow``, its receivers unpickling the
    sender's bytes in full (fix 6)."""
    if distributed_utils.get_rank(group) == src_rank:
        return ORIGINALS["_broadcast_object_slow"](obj, src_rank, group, dist_device)
    length = torch.LongTensor([0]).to(dist_device)
    distributed_utils.broadcast(length, src=src_rank, group=group)
    buffer = torch.ByteTensor(int(length.item())).to(dist_device)
    distributed_utils.broadcast(buffer, src=src_rank, group=group)
    return torch.load(io.BytesIO(buffer.cpu().numpy()), map_location="cpu", weights_only=False)


broadcast_object_slow.trusts_its_sender = True


class CpuAwareDistributedDataParallel(DistributedDataParallel):
    """torch's DDP as fairseq builds it, without device ids for a CPU module (fix 7)."""

    def __init__(self, module, device_ids=None, output_device=None, **kwargs):
        if all(p.device.type == "cpu" for p in module.parameters()):
            device_ids = output_device = None
        super().__init__(module, device_ids=device_ids, output_device=output_device, **kwargs)


def apply():
    """Apply all fixes (idempotent)."""
    global _applied
    if _applied:
        return
    _applied = True

    allow_namespace_in_checkpoints()

    ORIGINALS["batch_by_size"] = data_utils.batch_by_size
    ORIGINALS["get_buckets"] = data_utils.get_buckets
    if not getattr(data_utils.batch_by_size, "keeps_last_batch", False):
        data_utils.batch_by_size = batch_by_size_keeping_last_batch(data_utils.batch_by_size)

    ORIGINALS["TransformerModel.build_model"] = TransformerModel.build_model
    ORIGINALS["prune_state_dict"] = checkpoint_utils.prune_state_dict
    for model_class in (TransformerModel, TransformerModelBase):
        if not getattr(model_class.build_model, "keeps_layers_to_keep", False):
            model_class.build_model = build_model_with_layers_to_keep(
                vars(model_class)["build_model"]
            )
    if not getattr(checkpoint_utils.prune_state_dict, "keeps_layers_to_keep", False):
        checkpoint_utils.prune_state_dict = prune_state_dict_with_layers_to_keep(
            checkpoint_utils.prune_state_dict
        )

    ORIGINALS["call_main"] = distributed_utils.call_main
    if not getattr(distributed_utils.call_main, "takes_back_implied_tpu", False):
        distributed_utils.call_main = call_main_with_bf16_on_this_device(distributed_utils.call_main)

    ORIGINALS["_broadcast_object_slow"] = distributed_utils._broadcast_object_slow
    if not getattr(distributed_utils._broadcast_object_slow, "trusts_its_sender", False):
        distributed_utils._broadcast_object_slow = broadcast_object_slow

    ORIGINALS["DistributedDataParallel"] = distributed_fairseq_model.DistributedDataParallel
    if distributed_fairseq_model.DistributedDataParallel is DistributedDataParallel:
        distributed_fairseq_model.DistributedDataParallel = CpuAwareDistributedDataParallel

    if int(np.__version__.split(".")[0]) >= 2:
        if not hasattr(np, "compat"):
            np.compat = types.SimpleNamespace(long=np.int64)
        data_utils.get_buckets = get_buckets
        bucket_pad_length_dataset.get_buckets = get_buckets
