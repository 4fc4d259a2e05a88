"""The speed protocol (python -m evo_fairseq.benchmark speed) on tiny data, CPU."""

import json
import re
import subprocess
import sys

import pytest
import torch
from fairseq.data import Dictionary, LanguagePairDataset, data_utils

from conftest import count_panels, pixel_spread, run
from evo_fairseq.benchmark.speed import METRICS, joined_lines, markdown, schedule, summarise_cell


def load_pair(data_bin, split):
    dictionary = Dictionary.load(str(data_bin / "dict.de.txt"))
    src = data_utils.load_indexed_dataset(str(data_bin / f"{split}.de-en.de"), dictionary)
    tgt = data_utils.load_indexed_dataset(str(data_bin / f"{split}.de-en.en"), dictionary)
    return LanguagePairDataset(src, src.sizes, dictionary, tgt, tgt.sizes, dictionary)


def test_joined_lines_concatenates_consecutive_pairs(tiny_data_bin):
    dataset = load_pair(tiny_data_bin, "valid")  # 40 pairs
    eos = dataset.src_dict.eos()
    joined = joined_lines(dataset, 3)
    assert len(joined) == 13  # the remainder of one pair is dropped
    for i in (0, 12):
        item = joined[i]
        for side in ("source", "target"):
            parts = [dataset[3 * i + j][side] for j in range(3)]
            expected = torch.cat([parts[0][:-1], parts[1][:-1], parts[2]])
            assert torch.equal(item[side], expected)
            assert (item[side] == eos).sum() == 1 and item[side][-1] == eos
        assert joined.src_sizes[i] == len(item["source"]) and joined.tgt_sizes[i] == len(item["target"])
    first = joined_lines(dataset, 1, limit=5)
    assert len(first) == 5 and all(torch.equal(first[i]["target"], dataset[i]["target"]) for i in range(5))


def test_schedule_interleaves_and_alternates_the_first_side():
    assert schedule(3) == [("plain", 1), ("ea", 1), ("ea", 2), ("plain", 2), ("plain", 3), ("ea", 3)]


def fake_run(side, repeat, tokens_per_s, memory):
    return {"side": side, "repeat": repeat, "train_tokens_per_s": tokens_per_s,
            "peak_memory_mb": memory, "training_memory_mb": memory / 2, "gen_sentences_per_s": 10.0,
            "skipped_updates": 1 if side == "plain" else 0, "batch_ids_sha1": "same"}


def test_report_flags_ratios_that_cannot_be_true():
    """EA faster than plain (or smaller) is listed for an explanation; overflow skips are shown."""
    runs = [fake_run("plain", 1, 1000.0, 100.0), fake_run("ea", 1, 900.0, 120.0),
            fake_run("ea", 2, 1200.0, 90.0), fake_run("plain", 2, 1000.0, 100.0)]
    summary = summarise_cell(runs)
    row = summary["train_tokens_per_s"]
    assert row["ratios"] == pytest.approx([0.9, 1.2]) and row["median_ratio"] == pytest.approx(1.05)
    assert row["plain"] == {"median": 1000.0, "min": 1000.0, "max": 1000.0}
    assert row["needs_explanation"] == pytest.approx([1.2])
    assert summary["peak_memory_mb"]["needs_explanation"] == pytest.approx([0.9])
    assert summary["skipped_updates"] == {"plain": 2, "ea": 0} and summary["same_batches"]
    report = {"machine": "m", "command": "c", "wall_seconds": 60,
              "settings": {"warmup_updates": 1, "timed_updates": 2, "max_tokens": 9,
                           "gen_sentences": 3, "repeats": 2},
              "cells": [{"size": "tiny", "length_label": "10 / 9", "runs": runs, "summary": summary}]}
    table = markdown(report)
    assert "| tiny | 10 / 9 | 1000 [1000-1000] | 1050 [900-1200] | 0.90, 1.20 | 1.05x |" in table
    assert "tiny, 10 / 9: training throughput (target tokens/s) ratio 1.20" in table
    assert "tiny, 10 / 9: peak memory (MB) ratio 0.90" in table
    assert "tiny, 10 / 9: plain 2, EA 0" in table


def test_speed_protocol_end_to_end(tiny_data_bin, tmp_path):
    out = tmp_path / "speed"
    figure = tmp_path / "speed.png"
    proc = run([sys.executable, "-m", "evo_fairseq.benchmark", "speed", "--data-bin", tiny_data_bin,
                "--sizes", "tiny", "--join-lines", "1", "3", "--repeats", "2", "--warmup-updates", "1",
                "--timed-updates", "3", "--max-tokens", "4000", "--gen-sentences", "6",
                "--gen-batch-size", "4", "--cpu", "--out-dir", out,
                "--figure", figure])
    valid = load_pair(tiny_data_bin, "valid")
    expected_length = {n: round(float(joined_lines(joined_lines(valid, n), 1, limit=6).tgt_sizes.mean()) - 1)
                       for n in (1, 3)}
    report = json.loads((out / "speed.json").read_text())
    assert report["device"] == "cpu" and [c["join_lines"] for c in report["cells"]] == [1, 3]
    one, three = report["cells"]
    assert three["runs"][0]["mean_src_tokens"] == pytest.approx(3 * one["runs"][0]["mean_src_tokens"] - 2)
    for cell in report["cells"]:
        runs = cell["runs"]
        assert [(r["side"], r["repeat"]) for r in runs] == schedule(2)
        assert cell["summary"]["same_batches"]  # both models, every repeat: the same batches
        for r in runs:
            assert r["timed_updates"] == 3 and r["skipped_updates"] == 0
            assert len(r["batch_tokens"]) == 4 and r["epochs"] >= 2  # a new epoch's batches too
            assert r["train_tokens_per_s"] > 0
            assert 0 < r["training_memory_mb"] < r["peak_memory_mb"]
            assert r["gen_sentences"] == 6 and r["gen_sentences_per_s"] > 0
            assert r["gen_length"] == expected_length[cell["join_lines"]]  # the mean reference
        plain = [r for r in runs if r["side"] == "plain"]
        ea = [r for r in runs if r["side"] == "ea"]
        row = cell["summary"]["train_tokens_per_s"]
        assert row["ratios"] == pytest.approx([e["train_tokens_per_s"] / p["train_tokens_per_s"]
                                               for p, e in zip(plain, ea)])
    assert one["runs"][0]["batch_ids_sha1"] != three["runs"][0]["batch_ids_sha1"]
    table = (out / "speed.md").read_text()
    assert len(re.findall(r"^\| tiny \| \d+ / \d+ \| [\d.]+ \[[\d.]+-[\d.]+\] \| [\d.]+ \[[\d.]+-[\d.]+\] "
                          r"\| [\d.]+, [\d.]+ \| [\d.]+x \|$", table, re.M)) == 2 * 4
    assert "Needs an explanation" in table and table in proc.stdout
    # one panel per metric with ratios, bars drawn
    plotted = [m for m in METRICS if any(c["summary"][m[0]]["median_ratio"] for c in report["cells"])]
    assert len(plotted) >= 2 and count_panels(figure) == len(plotted)
    assert pixel_spread(figure) > 0.05
    (out / "speed.md").unlink()
    run([sys.executable, "-m", "evo_fairseq.benchmark", "speed", "--report", out])
    assert (out / "speed.md").read_text() == table


@pytest.mark.parametrize("option, message", [
    (["--join-lines", "0"], "--join-lines values must be >= 1"),
    (["--repeats", "0"], "--repeats must be >= 1, got 0"),
    (["--timed-updates", "0"], "--timed-updates must be >= 1"),
    (["--warmup-updates", "0"], "--warmup-updates must be >= 1"),
])
def test_speed_rejects_bad_settings(tiny_data_bin, option, message):
    proc = subprocess.run([sys.executable, "-m", "evo_fairseq.benchmark", "speed", "--data-bin",
                           str(tiny_data_bin), *option], capture_output=True, text=True)
    assert proc.returncode == 2 and message in proc.stderr
