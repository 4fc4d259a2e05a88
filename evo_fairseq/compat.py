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
"""

import argparse
import types

import numpy as np
import torch
from fairseq.data import bucket_pad_length_dataset, data_utils

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

    if int(np.__version__.split(".")[0]) >= 2:
        if not hasattr(np, "compat"):
            np.compat = types.SimpleNamespace(long=np.int64)
        data_utils.get_buckets = get_buckets
        bucket_pad_length_dataset.get_buckets = get_buckets
