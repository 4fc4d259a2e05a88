"""Every precision fairseq trains in, forward and backward, against fp32.

The modes are those of fairseq-train: ``--fp16`` and ``--bf16`` (the model's weights in
half precision) and ``--amp`` (fp32 weights, the forward pass under autocast, the
backward pass outside it). On CPU, autocast is bf16 (``torch.autocast("cpu")``); on a
GPU the ``gpu``-marked cases run fp16 and bf16 autocast on CUDA too.

Tolerances are stated where they are used: relative errors are against the fp32
result's largest magnitude.
"""

import subprocess
import sys

import pytest
import torch
from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.optim.amp_optimizer import AMPOptimizer
from fairseq.trainer import Trainer

from conftest import CUDA, DEVICES, ROOT, build_model, random_batch
from evo_fairseq import compat, selfcheck
from evo_fairseq.modules import evolving_map


def mode_params(device):
    """pytest params of (device, mode) for every mode selfcheck knows on ``device``."""
    if device == "cpu":
        return [pytest.param("cpu", m, id=f"cpu-{m['name']}") for m in selfcheck.modes("cpu")]
    marks = [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="needs a CUDA device")]
    return [pytest.param("cuda", m, id=f"cuda-{m['name']}", marks=marks)
            for m in selfcheck.modes("cuda")]


MODES = mode_params("cpu") + mode_params("cuda")
HALF_MODES = [p for p in MODES if p.values[1]["name"] != "fp32"]


@pytest.mark.parametrize("device,mode", MODES)
@pytest.mark.parametrize("stack", selfcheck.STACKS)
@pytest.mark.parametrize("padding", selfcheck.PADDINGS)
def test_transform_matches_the_fp32_oracle(device, mode, stack, padding):
    """Output and the four gradients; tolerance (relative): fp32 1e-5, fp16 5e-3,
    bf16 4e-2, or 1.5x the composition in the same precision where a relu kink makes
    the oracle jump. Output in the map's dtype, each gradient in its input's."""
    result = selfcheck.check_map(mode, stack, padding, device)
    assert not result["problems"], result


@pytest.mark.parametrize("device,mode", MODES)
def test_incremental_decoding_equals_the_full_pass_in_every_precision(device, mode):
    """All three stacks, left-padded sources; tolerance (nats): fp32 1e-4, fp16 2e-2,
    bf16 1.5e-1, for incremental against full and for full against the fp32 model."""
    result = selfcheck.check_model(mode, device)
    assert not result["problems"], result


def loss_and_grads(model, batch, mode, device):
    """fairseq's --amp contract: autocast around the forward pass only."""
    src, src_lengths, prev, _ = batch
    model.zero_grad()
    with torch.autocast(device, dtype=mode["dtype"], enabled=mode["autocast"]):
        logits, _ = model(src, src_lengths, prev)
    lprobs = torch.log_softmax(logits.float(), dim=-1)
    loss = -lprobs[..., 4:].mean()  # every real token as a target: all cells get gradient
    loss.backward()
    return loss.item(), {n: p.grad.float() for n, p in model.named_parameters()
                         if p.grad is not None}


@pytest.mark.parametrize("device,mode", HALF_MODES)
@pytest.mark.parametrize("left_pad_source", [True, False])
def test_model_gradients_match_fp32(dict_dir, device, mode, left_pad_source):
    """All three stacks. The loss within 2% of fp32's, and the gradient of every
    evolving convolution within 5% (fp16) or 15% (bf16) of fp32's, by the norm of the
    difference against the norm of all evolving convolutions' fp32 gradients together;
    under autocast the fp32 parameters get fp32 gradients."""
    model, task, _ = build_model(dict_dir)
    model.to(device).train()
    batch = [t.to(device) if torch.is_tensor(t) else t
             for t in random_batch(task, bsz=3, src_len=9, tgt_len=7,
                                   left_pad_source=left_pad_source)]
    fp32 = {"dtype": torch.float32, "autocast": False}
    loss32, grads32 = loss_and_grads(model, batch, fp32, device)
    if not mode["autocast"]:
        model.to(mode["dtype"])
    loss, grads = loss_and_grads(model, batch, mode, device)
    assert abs(loss - loss32) <= 0.02 * abs(loss32)
    convs = [n for n in grads32 if ".evolving.conv." in n]
    assert len(convs) == 12 and set(convs) <= set(grads)
    scale = torch.sqrt(sum(grads32[n].pow(2).sum() for n in convs))
    tolerance = 0.05 if mode["dtype"] == torch.float16 else 0.15
    for name in convs:
        assert (grads[name] - grads32[name]).norm() <= tolerance * scale, name
    if mode["autocast"]:
        assert all(p.grad.dtype == torch.float32 for p in model.parameters() if p.grad is not None)


# --- one update through fairseq's Trainer, the path fairseq-train takes -----------------

def cpu_autocast_train_step(task):
    """fairseq's FairseqTask.train_step with CPU autocast in place of CUDA's: what
    --amp does on a GPU (autocast around the forward pass only), on this CPU."""

    def train_step(sample, model, criterion, optimizer, update_num, ignore_grad=False):
        model.train()
        model.set_num_updates(update_num)
        with torch.autocast("cpu", dtype=torch.bfloat16,
                            enabled=isinstance(optimizer, AMPOptimizer)):
            loss, sample_size, logging_output = criterion(model, sample)
        if ignore_grad:
            loss *= 0
        optimizer.backward(loss)
        return loss, sample_size, logging_output

    task.train_step = train_step


def trainer_step(data_bin, flags):
    """One update of an EA model through fairseq's Trainer; returns its logged loss and
    the fp32 gradients of the evolving convolutions, and the number of updates done."""
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [
        str(data_bin), "--user-dir", str(ROOT / "evo_fairseq"), "--task", "translation",
        "--arch", "ea_transformer", "--encoder-layers", "3", "--decoder-layers", "3",
        "--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
        "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
        "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
        "--dropout", "0", "--optimizer", "sgd", "--lr", "1e-9", "--clip-norm", "0",
        "--criterion", "cross_entropy", "--max-tokens", "400", "--seed", "3", "--cpu",
        "--num-workers", "0", *flags])
    cfg = convert_namespace_to_omegaconf(args)
    compat.bf16_without_implied_tpu(cfg, argv=flags)  # what fairseq-train gets from call_main
    torch.manual_seed(3)
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    if "--amp" in flags:
        cpu_autocast_train_step(task)
    model = task.build_model(cfg.model)
    trainer = Trainer(cfg, task, model, task.build_criterion(cfg.criterion))
    itr = trainer.get_train_iterator(epoch=1, load_dataset=False).next_epoch_itr(shuffle=False)
    sample = next(itr)
    log = trainer.train_step([sample])
    grads = {n: p.grad.float().clone() for n, p in trainer.model.named_parameters()
             if ".evolving.conv." in n}
    return log, grads, trainer.get_num_updates()


# what fairseq-train's flags become on this CPU (fairseq's fp16 optimizer flattens its fp32
# copy of the parameters onto torch.cuda.current_device(); unflattened it runs anywhere)
CPU_TRAINER_MODES = {
    "fp16": ["--fp16", "--fp16-no-flatten-grads"],
    "bf16": ["--bf16", "--fp16-no-flatten-grads"],
    "amp": ["--amp"],
}


def unit_scale(grads):
    """The gradients divided by the norm of all of them together: free of fairseq's loss
    scaling, which leaves the raw gradients of --fp16 scaled."""
    total = torch.sqrt(sum(g.pow(2).sum() for g in grads.values()))
    return {n: g / total for n, g in grads.items()}


@pytest.mark.parametrize("name", list(CPU_TRAINER_MODES))
def test_one_trainer_update_in_each_precision(tiny_data_bin, name):
    """The update is taken (no overflow skip), its loss within 1% of fp32's, and the
    gradients of the evolving convolutions, each scaled by the norm of all of them, within
    5% (fp16) or 15% (bf16) of fp32's."""
    log32, grads32, _ = trainer_step(tiny_data_bin, [])
    log, grads, updates = trainer_step(tiny_data_bin, CPU_TRAINER_MODES[name])
    assert updates == 1, "fairseq skipped the update (overflow)"
    assert abs(log["loss"] - log32["loss"]) <= 0.01 * log32["loss"]
    assert len(grads) == 12 and set(grads) == set(grads32)
    tolerance = 0.05 if name == "fp16" else 0.15
    grads, grads32 = unit_scale(grads), unit_scale(grads32)
    for n in grads:
        assert (grads[n] - grads32[n]).norm() <= tolerance, (n, (grads[n] - grads32[n]).norm())


# --- the self-check users run ---------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_selfcheck_passes_and_prints_its_table(device):
    proc = subprocess.run([sys.executable, "-m", "evo_fairseq.selfcheck", "--device", device],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| map") or
            line.startswith("| model")]
    modes = len(selfcheck.modes(device))
    assert len(rows) == modes * 7 and all(row.endswith("| ok |") for row in rows)
    assert f"{modes * 7}/{modes * 7} checks passed" in proc.stdout


def test_selfcheck_fails_on_a_transform_wrong_in_half_precision(capsys):
    """A transform that is right in fp32 but mixes with the wrong weight in half
    precision: the self-check names those rows and exits 1."""

    def wrong_in_half(logits, prev, weight, bias, alpha, beta, *args):
        if logits.dtype != torch.float32:
            beta = beta * 0.9
        return evolving_map.evolve_map(logits, prev, weight, bias, alpha, beta, *args)

    assert selfcheck.main([], fused=wrong_in_half) == 1
    out = capsys.readouterr().out
    failed = [line for line in out.splitlines() if "FAIL" in line]
    assert failed and all("| map |" in line and "| fp32 |" not in line for line in failed)
    assert all(f"| map | {m} |" in "\n".join(failed) for m in ("fp16", "bf16", "autocast-bf16"))


def test_selfcheck_cuda_without_a_gpu_is_refused_with_the_cpu_alternative():
    if CUDA:
        pytest.skip("this machine has a CUDA device")
    proc = subprocess.run([sys.executable, "-m", "evo_fairseq.selfcheck", "--device", "cuda"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "torch sees no CUDA device" in proc.stderr and "run without --device" in proc.stderr
