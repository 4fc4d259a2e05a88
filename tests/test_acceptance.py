"""The GPU acceptance run (python -m evo_fairseq.benchmark acceptance, benchmark.sh gpu)
with tiny settings on the CPU, so that it cannot rot before a GPU runs it."""

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import BIN, ROOT, run

TINY = "--encoder-layers 2 --decoder-layers 2 --encoder-embed-dim 16 --decoder-embed-dim 16 " \
       "--encoder-ffn-embed-dim 32 --decoder-ffn-embed-dim 32 --encoder-attention-heads 2 " \
       "--decoder-attention-heads 2"


def test_every_step_runs_and_lands_in_one_report(tiny_data_bin, tmp_path):
    data = tmp_path / "data-bin"
    out = tmp_path / "gpu"
    # the data appears only when the background preparation has copied it
    prepare = f"sleep 2 && cp -r {tiny_data_bin} {data}"
    proc = run([sys.executable, "-m", "evo_fairseq.benchmark", "acceptance", "--cpu",
                "--data-bin", data, "--out-dir", out, "--minutes", "30", "--prepare", prepare,
                "--smoke-args", f"--arch ea_transformer {TINY} --optimizer adam --lr 1e-3 "
                                "--max-tokens 1000", "--smoke-updates", "2",
                "--converge-args", f"--arch tiny --max-update 4 --timing-warmup 1 --seeds 1 "
                                   f"--jobs 2 --checkpoint best --gen-batch-size 16 "
                                   f"--train-args '--optimizer adam --lr 3e-3 --max-tokens 1000'",
                "--speed-args", "--repeats 1 --warmup-updates 1 --timed-updates 2 "
                                "--max-tokens 2000 --gen-sentences 4 --gen-batch-size 4",
                "--speed-rows", "tiny:1"], timeout=1200)
    report = json.loads((out / "report.json").read_text())
    steps = report["steps"]
    assert list(steps) == ["selfcheck", "gpu-tests", "smoke", "converge", "speed"]
    assert all(step.get("ok") for step in steps.values()), steps
    assert re.search(r"(\d+)/\1 checks passed", steps["selfcheck"]["summary"])
    # on the CPU every gpu-marked test is skipped, and says so
    assert re.search(r"\d+ skipped", steps["gpu-tests"]["summary"])
    assert "passed" not in steps["gpu-tests"]["summary"]
    smoke = {row["precision"]: row for row in steps["smoke"]["rows"]}
    assert list(smoke) == ["fp16", "bf16", "amp"]
    for row in smoke.values():
        assert row["updates"] == 2 and row["hypotheses"] == 21 and row["bleu"] is not None
    assert "training in bf16" in (out / "smoke" / "bf16" / "train.log").read_text()
    assert "fp16" in (out / "smoke" / "fp16" / "train.log").read_text()
    assert "| BLEU" in steps["converge"]["markdown"]
    assert [r["row"] for r in steps["speed"]["rows"]] == ["tiny:1"]
    assert sorted(report["figures"]) == ["converge.png", "speed/tiny-join1/speed.png"]
    text = (out / "report.md").read_text()
    assert text in proc.stdout
    for name in ("selfcheck", "gpu-tests", "smoke", "converge", "speed"):
        assert re.search(rf"^\| {name} \| ok", text, re.M), name


def test_steps_that_do_not_fit_are_skipped_with_the_reason(tiny_data_bin, tmp_path):
    out = tmp_path / "gpu"
    proc = run([sys.executable, "-m", "evo_fairseq.benchmark", "acceptance", "--cpu",
                "--data-bin", tiny_data_bin, "--out-dir", out, "--minutes", "1",
                "--converge-args", "--arch tiny", "--estimates", "selfcheck=30", "gpu-tests=1000",
                "smoke=1000", "converge=1000", "speed=1000"])
    steps = json.loads((out / "report.json").read_text())["steps"]
    assert steps["selfcheck"]["ok"]
    for name in ("gpu-tests", "smoke", "converge"):
        assert re.fullmatch(r"needs ~1000 s, \d+ s left", steps[name]["skipped"]), steps[name]
    assert steps["speed"]["skipped"].startswith("needs ~1000 s")
    assert "| converge | skipped: needs ~1000 s" in proc.stdout


@pytest.mark.parametrize("argv, message", [
    (["gpu", "soon"], "MINUTES must be a positive number, got 'soon'"),
])
def test_benchmark_sh_gpu_rejects_bad_minutes(argv, message):
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run(["bash", ROOT / "examples" / "multi30k" / "benchmark.sh", *argv],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and message in proc.stderr


def test_without_a_gpu_the_refusal_names_the_cpu_run(tiny_data_bin, tmp_path):
    pytest.importorskip("torch")
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    proc = subprocess.run([sys.executable, "-m", "evo_fairseq.benchmark", "acceptance",
                           "--data-bin", str(tiny_data_bin), "--out-dir", str(tmp_path),
                           "--converge-args", "--arch tiny"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--cpu runs the same steps on the CPU" in proc.stderr
