"""The fixes applied at plugin import, each shown to be needed and to work."""

import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from evo_fairseq import compat
from fairseq.data import data_utils


def test_last_batch_is_kept():
    sizes = np.full(21, 5, dtype=np.int64)
    indices = np.arange(21)
    kwargs = dict(num_tokens_vec=sizes, max_tokens=1000, max_sentences=None,
                  required_batch_size_multiple=8)
    fairseq_batches = compat.ORIGINALS["batch_by_size"](indices, lambda i: 5, **kwargs)
    assert sum(map(len, fairseq_batches)) < 21  # fairseq drops sentences here
    batches = data_utils.batch_by_size(indices, lambda i: 5, **kwargs)
    assert sorted(np.concatenate(batches).tolist()) == list(range(21))


@pytest.mark.parametrize("n", [1, 7, 8, 9, 63, 64, 65])
def test_epoch_iterator_covers_every_example(tiny_data_bin, n):
    """fairseq's own task/iterator path, as train, validate and generate use it, on the
    21-sentence test split: for every batch size here fairseq alone drops the last batch."""
    from fairseq import options, tasks
    args = options.parse_args_and_arch(
        options.get_training_parser(),
        [str(tiny_data_bin), "--task", "translation", "-s", "de", "-t", "en", "--arch", "transformer"],
    )
    task = tasks.setup_task(args)
    task.load_dataset("test")
    dataset = task.dataset("test")
    order = dataset.ordered_indices()
    unfixed = compat.ORIGINALS["batch_by_size"](
        order, dataset.num_tokens, num_tokens_vec=dataset.num_tokens_vec(order).astype("int64"),
        max_tokens=None, max_sentences=n, required_batch_size_multiple=8)
    assert sum(map(len, unfixed)) < len(dataset) == 21  # what the fix is for, in this case
    ids = []
    itr = task.get_batch_iterator(
        dataset, max_tokens=None, max_sentences=n, required_batch_size_multiple=8,
        ignore_invalid_inputs=False,
    ).next_epoch_itr(shuffle=False)
    for batch in itr:
        ids.extend(batch["id"].tolist())
    assert sorted(ids) == list(range(len(dataset)))


@pytest.mark.skipif(int(np.__version__.split(".")[0]) < 2, reason="numpy < 2 has no problem")
def test_num_batch_buckets_with_numpy_2():
    with pytest.raises((TypeError, AttributeError)):
        compat.ORIGINALS["get_buckets"](np.arange(100), 4)
    buckets = data_utils.get_buckets(np.arange(1, 101), 4)
    assert buckets.tolist() == [25, 50, 75, 100]


SAVE_AND_LOAD = """
import argparse, sys, torch
if sys.argv[1] == "plugin":
    import evo_fairseq
torch.save({"args": argparse.Namespace(arch="ea_transformer")}, sys.argv[2])
state = torch.load(sys.argv[2])
print(state["args"].arch)
"""


@pytest.mark.skipif(
    tuple(int(x) for x in torch.__version__.split(".")[:2]) < (2, 6),
    reason="torch < 2.6 does not load with weights_only=True",
)
def test_checkpoints_with_namespace_load(tmp_path):
    ckpt = str(tmp_path / "ckpt.pt")
    plain = subprocess.run([sys.executable, "-c", SAVE_AND_LOAD, "none", ckpt],
                           capture_output=True, text=True)
    assert plain.returncode != 0 and "Weights only load failed" in plain.stderr
    fixed = subprocess.run([sys.executable, "-c", SAVE_AND_LOAD, "plugin", ckpt],
                           capture_output=True, text=True)
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.stdout.strip() == "ea_transformer"


BF16_TRAIN = ["--task", "translation", "--arch", "ea_transformer", "--encoder-layers", "2",
              "--decoder-layers", "2", "--encoder-embed-dim", "16", "--decoder-embed-dim", "16",
              "--encoder-ffn-embed-dim", "32", "--decoder-ffn-embed-dim", "32",
              "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
              "--optimizer", "adam", "--lr", "1e-3", "--max-tokens", "500", "--cpu",
              "--num-workers", "0", "--bf16", "--fp16-no-flatten-grads"]


def test_bf16_without_tpu_trains_on_this_device(tiny_data_bin, tmp_path):
    """fairseq's command line makes --bf16 a TPU run: its Trainer then asks torch_xla for
    the device. With the fix fairseq-train --bf16 trains (here on the CPU) and says why."""
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer
    from fairseq import tasks
    from conftest import ROOT, fairseq_cli, run

    argv = [str(tiny_data_bin), "--user-dir", str(ROOT / "evo_fairseq"), *BF16_TRAIN]
    cfg = convert_namespace_to_omegaconf(
        options.parse_args_and_arch(options.get_training_parser(), argv))
    assert cfg.common.tpu  # fairseq's implication
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    with pytest.raises(AttributeError, match="xla_device"):
        Trainer(cfg, task, model, task.build_criterion(cfg.criterion))
    assert not compat.bf16_without_implied_tpu(cfg, argv=argv + ["--tpu"])  # asked for: kept
    assert cfg.common.tpu
    assert compat.bf16_without_implied_tpu(cfg, argv=argv) and not cfg.common.tpu

    proc = run([fairseq_cli("train"), *argv, "--max-update", "2", "--save-dir", tmp_path,
                "--no-save", "--log-format", "simple", "--log-interval", "1"])
    log = proc.stdout + proc.stderr
    assert "training in bf16 on this machine's device" in log
    assert re.search(r"num_updates 2\b", log) and "done training" in log


def test_pytorch_ddp_wraps_a_cpu_module():
    """fairseq passes device_ids to torch's DDP for every module; torch refuses them for a
    CPU module. (The 2-process fine-tune in test_layerdrop.py runs --ddp-backend pytorch_ddp
    on CPUs end to end, which also needs fix 6 to load its --restore-file on rank 1.)"""
    import torch.distributed as dist
    from fairseq.models import distributed_fairseq_model
    from conftest import free_port

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0,
                            world_size=1)
    try:
        module = torch.nn.Linear(3, 2)
        with pytest.raises(ValueError, match="device_ids and output_device arguments only work"):
            compat.ORIGINALS["DistributedDataParallel"](module, device_ids=[0], output_device=0)
        wrapped = distributed_fairseq_model.DistributedDataParallel(
            module, device_ids=[0], output_device=0)
        assert wrapped.device_ids is None
        wrapped(torch.ones(1, 3)).sum().backward()
        assert module.weight.grad is not None
    finally:
        dist.destroy_process_group()
