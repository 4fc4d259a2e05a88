"""fairseq-train for one worker of a multi-process run. Each time fairseq saves a
checkpoint, this worker's model parameters are also written to SAVE_DIR/rankR.pt (fairseq
itself saves only on rank 0), so a test can compare what the workers trained."""

import os

import torch
from fairseq import checkpoint_utils
from fairseq_cli import train

fairseq_save_checkpoint = checkpoint_utils.save_checkpoint


def save_checkpoint(cfg, trainer, epoch_itr, val_loss):
    state = {name: tensor.detach().clone() for name, tensor in trainer.get_model().state_dict().items()}
    os.makedirs(cfg.save_dir, exist_ok=True)
    torch.save(state, os.path.join(cfg.save_dir, f"rank{trainer.data_parallel_rank}.pt"))
    return fairseq_save_checkpoint(cfg, trainer, epoch_itr, val_loss)


checkpoint_utils.save_checkpoint = save_checkpoint

if __name__ == "__main__":
    train.cli_main()
