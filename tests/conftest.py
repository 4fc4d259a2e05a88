"""Shared fixtures: tiny dictionaries, models built through fairseq's own option
parsing, and a tiny parallel corpus taken from the bundled Multi30k."""

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import evo_fairseq  # noqa: F401  (registers the model, applies the fairseq fixes)
from fairseq import options, tasks

# fp32 is fp32 on CUDA too: TF32 convolutions and matmuls (on by default for cuDNN)
# would blur the 1e-6 comparisons of the device-following tests
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "multi30k" / "data"
BIN = Path(sys.executable).parent

# A small model for unit tests: 3 layers per stack so that every stack has a
# first layer and two evolving ones.
TINY_MODEL = [
    "--encoder-layers", "3", "--decoder-layers", "3",
    "--encoder-embed-dim", "16", "--decoder-embed-dim", "16",
    "--encoder-ffn-embed-dim", "32", "--decoder-ffn-embed-dim", "32",
    "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
    "--dropout", "0", "--attention-dropout", "0",
]


def small_model(encoder_layers=2, decoder_layers=3, dim=16, heads=2):
    """fairseq-train options of a small transformer (EA or plain, by --arch)."""
    return [
        "--encoder-layers", str(encoder_layers), "--decoder-layers", str(decoder_layers),
        "--encoder-embed-dim", str(dim), "--decoder-embed-dim", str(dim),
        "--encoder-ffn-embed-dim", str(2 * dim), "--decoder-ffn-embed-dim", str(2 * dim),
        "--encoder-attention-heads", str(heads), "--decoder-attention-heads", str(heads),
    ]


def write_dictionary(path, num_symbols):
    with open(path, "w") as f:
        for i in range(num_symbols):
            f.write(f"w{i} 1\n")


@pytest.fixture(scope="session")
def dict_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("dicts")
    write_dictionary(path / "dict.de.txt", 40)
    write_dictionary(path / "dict.en.txt", 40)
    return path


def build_model(data_dir, arch="ea_transformer", extra=(), seed=1):
    """Build (model, task, args) exactly as fairseq-train would."""
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(
        parser,
        [str(data_dir), "--user-dir", str(ROOT / "evo_fairseq"), "--task", "translation",
         "-s", "de", "-t", "en", "--arch", arch, *TINY_MODEL, *extra],
    )
    torch.manual_seed(seed)
    task = tasks.setup_task(args)
    model = task.build_model(args)
    model.eval()
    return model, task, args


def random_batch(task, bsz=3, src_len=7, tgt_len=6, left_pad_source=True, seed=0):
    """Random tokens (no special symbols) with varied lengths, padded like fairseq."""
    gen = torch.Generator().manual_seed(seed)
    src_dict, tgt_dict = task.source_dictionary, task.target_dictionary
    low = src_dict.nspecial
    src_lengths = [src_len] + [max(2, src_len - 2 * i - 1) for i in range(1, bsz)]
    tgt_lengths = [tgt_len] + [max(2, tgt_len - i - 1) for i in range(1, bsz)]
    src = torch.full((bsz, src_len), src_dict.pad())
    tgt = torch.full((bsz, tgt_len), tgt_dict.pad())
    for b in range(bsz):
        tokens = torch.randint(low, len(src_dict), (src_lengths[b],), generator=gen)
        tokens[-1] = src_dict.eos()
        if left_pad_source:
            src[b, src_len - src_lengths[b]:] = tokens
        else:
            src[b, : src_lengths[b]] = tokens
        prev = torch.randint(low, len(tgt_dict), (tgt_lengths[b],), generator=gen)
        prev[0] = tgt_dict.eos()
        tgt[b, : tgt_lengths[b]] = prev
    return src, torch.tensor(src_lengths), tgt, tgt_lengths


def run(cmd, cwd=None, env=None, input=None, timeout=900):
    """Run a command, failing the test with its output when it fails."""
    full_env = dict(os.environ, PYTHONWARNINGS="ignore", **(env or {}))
    full_env["PATH"] = f"{BIN}{os.pathsep}{full_env.get('PATH', '')}"
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=full_env, input=input, capture_output=True,
        text=True, timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n"
            f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
        )
    return proc


def fairseq_cli(name):
    return str(BIN / f"fairseq-{name}")


def read_gz(path, n):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [next(f).rstrip("\n") for _ in range(n)]


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """A few hundred Multi30k lines, lower-cased and whitespace-tokenised:
    train/valid/test raw text, ready for BPE or fairseq-preprocess."""
    out = tmp_path_factory.mktemp("corpus")
    n_train, n_valid, n_test = 300, 40, 21
    for lang in ("de", "en"):
        train = read_gz(DATA / f"train.{lang}.gz", n_train + n_valid)
        test = read_gz(DATA / f"test_2016_flickr.{lang}.gz", n_test)
        tok = lambda s: " ".join(s.lower().replace(".", " .").replace(",", " ,").split())
        (out / f"train.{lang}").write_text("\n".join(map(tok, train[:n_train])) + "\n")
        (out / f"valid.{lang}").write_text("\n".join(map(tok, train[n_train:])) + "\n")
        (out / f"test.{lang}").write_text("\n".join(map(tok, test)) + "\n")
    return out


@pytest.fixture(scope="session")
def tiny_data_bin(tiny_corpus, tmp_path_factory):
    """fairseq-preprocess output for the tiny corpus (word level, joined dictionary)."""
    dest = tmp_path_factory.mktemp("data-bin")
    run([fairseq_cli("preprocess"), "--source-lang", "de", "--target-lang", "en",
         "--trainpref", tiny_corpus / "train", "--validpref", tiny_corpus / "valid",
         "--testpref", tiny_corpus / "test", "--destdir", dest, "--joined-dictionary",
         "--workers", "1"])
    return dest



def multi30k_lines(split, lang, n):
    """The first n raw sentences of a bundled Multi30k split (train, val, test_2016_flickr)."""
    return read_gz(DATA / f"{split}.{lang}.gz", n)


CUDA = torch.cuda.is_available()
# the device-following numerical tests: CPU always, CUDA where there is one (-m gpu selects it)
DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="needs a CUDA device")])]


def to_device(device, *tensors):
    return [t.to(device) if torch.is_tensor(t) else t for t in tensors]


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_workers(argv, timeout=600):
    """fairseq-train (tests/dist_train.py) as a real 2-process gloo run on the CPU; returns
    each worker's log, failing the test with them when a worker fails."""
    common = [sys.executable, ROOT / "tests" / "dist_train.py", *argv, "--cpu",
              "--distributed-world-size", "2",
              "--distributed-init-method", f"tcp://127.0.0.1:{free_port()}",
              "--distributed-no-spawn", "--distributed-backend", "gloo"]
    env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONPATH=str(ROOT / "tests"))
    workers = [subprocess.Popen([str(c) for c in common + ["--distributed-rank", str(rank)]],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
               for rank in (0, 1)]
    logs = [w.communicate(timeout=timeout)[0] for w in workers]
    failed = [rank for rank, worker in enumerate(workers) if worker.returncode != 0]
    assert not failed, "\n".join(f"--- worker {rank} ---\n{logs[rank][-3000:]}" for rank in (1, 0))
    for rank, log in enumerate(logs):
        assert f"distributed init (rank {rank})" in log
    return logs


def count_panels(path, min_side=40):
    """Axes frames in a PNG figure: rectangles of black or grey lines, each side at least
    ``min_side`` pixels (colour inside, such as an imshow's, is not a frame)."""
    from matplotlib.image import imread

    img = imread(str(path))[..., :3]
    dark = ((img.max(-1) - img.min(-1)) < 0.1) & (img.mean(-1) < 0.5)
    height, width = dark.shape
    sides = []  # vertical dark runs, a line's neighbouring columns merged: [x, top, bottom]
    for x in range(width):
        y = 0
        while y < height:
            if not dark[y, x]:
                y += 1
                continue
            top = y
            while y < height and dark[y, x]:
                y += 1
            side = next((s for s in sides if x - s[0] <= 2 and abs(s[1] - top) <= 2
                         and abs(s[2] - y) <= 2), None)
            if side:
                side[0] = x
            elif y - top >= min_side:
                sides.append([x, top, y])
    panels, used = 0, set()
    for i, (x, top, bottom) in enumerate(sides):
        if i in used:
            continue
        for j in range(i + 1, len(sides)):
            x2, top2, bottom2 = sides[j]
            if j in used or abs(top2 - top) > 2 or abs(bottom2 - bottom) > 2 or x2 - x < min_side:
                continue
            if dark[max(top - 1, 0): top + 2, x:x2].any(0).mean() > 0.95:  # joined at the top
                panels += 1
                used.update((i, j))
                break
    return panels


def pixel_spread(path):
    """Standard deviation of a PNG's pixel values (0 for a blank image)."""
    from matplotlib.image import imread

    return float(imread(str(path))[..., :3].std())
