"""The benchmark harness in its quick mode, and the scaling table, on tiny data."""

import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest
from sacrebleu.metrics import BLEU

from conftest import count_panels, pixel_spread, run

FIELDS = ["train_tokens_per_s", "peak_memory_mb", "valid_loss", "gen_sentences_per_s", "bleu"]


def untrained_loss(data_bin):
    """log2 of the target vocabulary (fairseq's 4 special symbols with it): the loss of a
    uniform prediction, which an untrained model's random one does not beat."""
    return math.log2(len((data_bin / "dict.en.txt").read_text().splitlines()) + 4)


def test_quick_benchmark_reports_every_field(tiny_data_bin, tmp_path):
    out_dir = tmp_path / "bench"
    proc = run([sys.executable, "-m", "evo_fairseq.benchmark", "--data-bin", tiny_data_bin,
                "--arch", "tiny", "--quick", "--gen-batch-size", "16", "--cpu",
                "--out-dir", out_dir])
    report = json.loads((out_dir / "benchmark.json").read_text())
    assert report["device"] == "cpu" and "threads" in report["machine"]
    for side, arch in [("plain", "transformer_tiny"), ("ea", "ea_transformer_tiny")]:
        (result,) = report["runs"][side]
        assert result["arch"] == arch
        assert result["timed_updates"] >= 20  # 30 updates, 5 not timed (and batches per epoch)
        assert result["train_tokens_per_s"] > 0
        assert 50 < result["peak_memory_mb"] < 8000
        assert 0 < result["valid_loss"] < untrained_loss(tiny_data_bin)
        assert result["sentences"] == 21  # the whole test set
        assert result["gen_sentences_per_s"] > 0
        # fairseq's sacreBLEU: the D- lines against the T- lines of its own log
        log = (out_dir / f"{arch}-seed{result['seed']}" / "generate.log").read_text()
        lines = lambda prefix: [text for _, text in sorted(
            (int(i), text) for i, text in re.findall(rf"^{prefix}-(\d+)\t(?:\S+\t)?(.*)$", log, re.M))]
        assert len(lines("D")) == len(lines("T")) == 21
        assert result["bleu"] == pytest.approx(
            BLEU().corpus_score(lines("D"), [lines("T")]).score, abs=0.006)
    for key in FIELDS:
        row = report["summary"][key]
        if row["plain_mean"] == 0:  # 30 updates may translate nothing right: no ratio then
            assert key == "bleu" and row["ratio"] is None
            continue
        assert row["ratio"] == pytest.approx(row["ea_mean"] / row["plain_mean"]), key
        assert row["ratio"] > 0 and math.isfinite(row["ratio"]), key
    table = (out_dir / "benchmark.md").read_text()
    for title in ["training throughput", "peak memory", "validation loss", "generation", "BLEU"]:
        assert title in table
    assert "| EA / plain |" in table and "--quick" in table
    assert "EA / plain" in proc.stdout


def test_scaling_table(tmp_path):
    out = tmp_path / "scaling.md"
    run([sys.executable, "-m", "evo_fairseq.benchmark", "scaling", "--lengths", "8", "32",
         "--batch-size", "2", "--embed-dim", "32", "--heads", "4", "--repeats", "2", "--cpu",
         "--out", out])
    rows = [line.split("|")[1:-1] for line in out.read_text().splitlines()
            if line.startswith("| 8 ") or line.startswith("| 32 ")]
    assert len(rows) == 4  # the main table, then the composition's (same run)
    for cells, composition in zip(rows[:2], rows[2:]):
        values = [float(c.strip().rstrip("x")) for c in cells]
        assert all(v > 0 for v in values)
        memory_plain, memory_ea = values[4], values[5]
        assert memory_ea > memory_plain  # EA keeps its maps for the backward pass
        composition = [float(c.strip().rstrip("x")) for c in composition]
        assert all(v > 0 for v in composition)
        assert composition[3] > memory_ea  # the composition keeps more for backward


def test_sweep_ranks_ea_runs_scored_on_valid(tiny_data_bin, tmp_path):
    sweep = tmp_path / "sweep"
    settings = ["--ea-alpha 0.5 --ea-beta 0.5 --ea-kernel-size 3", "--ea-alpha 0.2 --ea-beta 0.9 --ea-kernel-size 5"]
    for i, ea_args in enumerate(settings):
        run([sys.executable, "-m", "evo_fairseq.benchmark", "--data-bin", tiny_data_bin, "--arch", "tiny",
             "--sides", "ea", "--ea-args", ea_args, "--max-update", "8", "--timing-warmup", "2",
             "--gen-subset", "valid", "--gen-batch-size", "16", "--cpu", "--out-dir", sweep / f"s{i}"])
    table = run([sys.executable, "-m", "evo_fairseq.benchmark", "sweep", sweep]).stdout
    rows = [line.split("|")[1:-1] for line in table.splitlines() if re.match(r"\| \d ", line)]
    assert [r[0].strip() for r in rows] == ["1", "2"]
    assert sorted(r[1].strip(" `") for r in rows) == sorted(settings)
    ranked = [(-float(r[2]), float(r[3])) for r in rows]  # BLEU down, then valid loss up
    assert ranked == sorted(ranked)
    best = run([sys.executable, "-m", "evo_fairseq.benchmark", "sweep", sweep, "--best"]).stdout.strip()
    assert best == rows[0][1].strip(" `")

    report = json.loads((sweep / "s0" / "benchmark.json").read_text())
    report["settings"]["gen_subset"] = "test"
    (sweep / "s2").mkdir()
    (sweep / "s2" / "benchmark.json").write_text(json.dumps(report))
    proc = subprocess.run([sys.executable, "-m", "evo_fairseq.benchmark", "sweep", sweep],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "scored on the validation set only" in proc.stderr


def test_transform_benchmark_times_fused_and_composition():
    proc = run([sys.executable, "-m", "evo_fairseq.benchmark", "transform", "--lengths", "8",
                "--batch-size", "2", "--heads", "2", "--repeats", "1", "--rounds", "1",
                "--no-compile", "--cpu"])
    [row] = [line for line in proc.stdout.splitlines() if line.startswith("| 8 |")]
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert float(cells[1]) > 0 and float(cells[2]) > 0 and cells[3] == "-"
    fused_mb, composition_mb = (float(v) for v in cells[4].split(" / "))
    assert 0 < fused_mb < composition_mb


def test_convergence_protocol_runs_jobs_at_once_and_reports_each_seed(tiny_data_bin, tmp_path):
    """The code path of benchmark.sh converge, at a tiny size: --jobs 2 --checkpoint best."""
    out_dir = tmp_path / "converge"
    figure = tmp_path / "converge.png"
    run([sys.executable, "-m", "evo_fairseq.benchmark", "--data-bin", tiny_data_bin,
         "--arch", "tiny", "--max-update", "12", "--timing-warmup", "2", "--seeds", "1", "2",
         "--jobs", "2", "--checkpoint", "best", "--gen-batch-size", "16", "--cpu",
         "--train-args", "--optimizer adam --lr 3e-3 --max-tokens 1000",
         "--figure", figure, "--out-dir", out_dir])
    report = json.loads((out_dir / "benchmark.json").read_text())
    assert report["settings"]["jobs"] == 2 and report["settings"]["checkpoint"] == "best"
    for side in ("plain", "ea"):
        assert [r["seed"] for r in report["runs"][side]] == [1, 2]
        for result in report["runs"][side]:
            curve = result["valid_curve"]
            assert len(curve) >= 2 and curve[-1][0] == 12
            assert min(loss for _, loss in curve) < untrained_loss(tiny_data_bin)
            assert result["valid_loss"] == min(loss for _, loss in curve)  # the best one
            log = (out_dir / f"{result['arch']}-seed{result['seed']}" / "generate.log").read_text()
            assert "checkpoint_best.pt" in log and result["sentences"] == 21
    table = (out_dir / "benchmark.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()
            if re.match(r"\| (1|2|mean) ", line)}
    assert set(rows) == {"1", "2", "mean ± std (2 seeds)"}
    for seed in (1, 2):
        plain = next(r for r in report["runs"]["plain"] if r["seed"] == seed)
        ea = next(r for r in report["runs"]["ea"] if r["seed"] == seed)
        cells = [c.strip() for c in rows[str(seed)].split("|")[1:-1]]
        assert cells[1:4] == [f"{plain['bleu']:.2f}", f"{ea['bleu']:.2f}",
                              f"{ea['bleu'] - plain['bleu']:+.2f}"]
        assert cells[4:] == [f"{plain['valid_loss']:.3f}", f"{ea['valid_loss']:.3f}"]
    assert "2 trainings ran at once" in table
    # one panel: a blue curve per plain run, a red one per EA run
    assert count_panels(figure) == 1 and pixel_spread(figure) > 0.05
    from matplotlib.colors import to_rgb
    from matplotlib.image import imread

    pixels = imread(str(figure))[..., :3]
    for colour in ("tab:blue", "tab:red"):  # drawn at alpha 0.8 on white
        drawn = 0.8 * np.array(to_rgb(colour)) + 0.2
        assert (abs(pixels - drawn).max(-1) < 0.05).sum() > 100, colour


def test_scaling_measures_each_convolution_layout(tmp_path):
    out = tmp_path / "scaling.md"
    run([sys.executable, "-m", "evo_fairseq.benchmark", "scaling", "--lengths", "8",
         "--batch-size", "2", "--embed-dim", "32", "--heads", "4", "--repeats", "1",
         "--rounds", "1", "--cpu", "--layouts", "contiguous", "channels_last", "--out", out])
    text = out.read_text()
    rows = [line.split("|")[1:-1] for line in text.splitlines()
            if re.match(r"\| 8 \| (contiguous|channels_last) \|", line)]
    assert [cells[1].strip() for cells in rows] == ["contiguous", "channels_last"]
    # the layout changes no tensor that autograd keeps
    assert rows[0][4] == rows[1][4] and float(rows[0][2]) > 0 and float(rows[1][2]) > 0
    assert "today's on cpu: channels_last" in text


def test_checkpointing_table_shows_what_checkpointing_saves(tmp_path):
    out = tmp_path / "checkpointing.md"
    run([sys.executable, "-m", "evo_fairseq.benchmark", "checkpointing", "--lengths", "16", "48",
         "--embed-dim", "32", "--heads", "4", "--batch-size", "2", "--out", out])
    rows = [[float(c.strip().rstrip("x")) for c in line.split("|")[1:-1]]
            for line in out.read_text().splitlines() if re.match(r"\| (16|48) \|", line)]
    assert [row[0] for row in rows] == [16, 48]
    for _, plain, ea, _, plain_ckpt, ea_ckpt, _, _ in rows:
        assert plain < ea and plain_ckpt < ea_ckpt  # EA keeps its maps
        assert ea_ckpt < ea and plain_ckpt < plain  # checkpointing keeps only layer inputs
    # EA's checkpointed layers keep the map handed on: it grows with the square of the length
    assert rows[1][5] - rows[1][4] > 4 * (rows[0][5] - rows[0][4])
