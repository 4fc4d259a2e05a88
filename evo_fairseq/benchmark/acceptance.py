# Copyright (c) evo-fairseq contributors.
#
# This source code is licensed under the MIT license found in the
# LICENSE file in the root directory of this source tree.
"""The GPU acceptance run: as much of the GPU proof as fits in a time budget.

    python -m evo_fairseq.benchmark acceptance --data-bin DIR --out-dir DIR
        [--minutes 8] [--started-at EPOCH] [--prepare "COMMAND"] [--cpu]
        [--smoke-args "..."] [--smoke-updates N]
        [--converge-args "..."] [--speed-args "..."] [--speed-rows wmt_en_de:6 main:6 ...]
        [--estimates step=seconds ...]

``bash examples/multi30k/benchmark.sh gpu [MINUTES]`` prepares the data and runs this
with the recipe's settings. In this order, each step only if its estimated time fits in
what is left of the budget (otherwise it is reported as skipped, with the estimate and
the time left). ``--prepare`` (the data preparation) runs meanwhile, from the start;
the steps that read ``--data-bin`` wait for it:

1. ``selfcheck``: ``python -m evo_fairseq.selfcheck --device cuda``.
2. ``gpu-tests``: the ``gpu``-marked tests (``pytest -m gpu``), in a checkout with pytest.
3. ``smoke``: ``fairseq-train`` of an EA model with ``--fp16``, ``--bf16`` and ``--amp``
   (a few updates each, side by side), then ``fairseq-generate`` (beam 5) with each.
4. ``converge``: the convergence protocol (``python -m evo_fairseq.benchmark compare``
   with ``--converge-args``: 3 seeds x 2 models, all at once).
5. ``speed``: rows of the speed protocol, one ``--speed-rows`` entry (SIZE:JOINED_LINES)
   at a time, ``wmt_en_de`` at 6 joined lines (~94 tokens) first.

Everything goes into ``--out-dir``: ``report.md``, ``report.json``, each step's log, and
the figures of ``converge`` and ``speed``. Exits 1 when a step that ran failed. With
``--cpu`` (the test suite's tiny run) the same steps run on the CPU, where fairseq's
fp16 optimizer needs ``--fp16-no-flatten-grads`` and ``--amp`` is CPU autocast's twin
only through the self-check and the tests.
"""

import argparse
import glob
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import time

import torch

from evo_fairseq.benchmark.compare import machine_description

PLUGIN = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # --user-dir
TESTS = os.path.join(os.path.dirname(PLUGIN), "tests")
STEPS = ["selfcheck", "gpu-tests", "smoke", "converge", "speed"]
# seconds each step is expected to take on one H100-class GPU (speed: per row)
ESTIMATES = {"selfcheck": 45, "gpu-tests": 120, "smoke": 90, "converge": 300, "speed": 100}
PRECISIONS = {"fp16": ["--fp16"], "bf16": ["--bf16"], "amp": ["--amp"]}
# fairseq-generate on a GPU: half precision with --fp16 (it has no bf16 or amp mode)
GENERATE_FLAGS = {"fp16": ["--fp16"], "bf16": [], "amp": ["--fp16"]}
SMOKE_ARGS = (
    "--arch ea_transformer_iwslt_de_en --share-all-embeddings --optimizer adam "
    "--lr 1e-3 --lr-scheduler inverse_sqrt --warmup-updates 10 --criterion "
    "label_smoothed_cross_entropy --label-smoothing 0.1 --max-tokens 4096"
)


class Budget:
    def __init__(self, minutes, started_at):
        self.deadline = started_at + 60 * minutes

    def left(self):
        return self.deadline - time.time()


def run_logged(cmd, log_path, timeout, env=None):
    """Run ``cmd`` with its output in ``log_path``; returns (exit code, seconds, output)."""
    start = time.perf_counter()
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(shlex.quote(str(c)) for c in cmd) + "\n")
        log.flush()
        try:
            code = subprocess.run([str(c) for c in cmd], stdout=log, stderr=subprocess.STDOUT,
                                  timeout=max(timeout, 1), env=env).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    with open(log_path) as f:
        output = f.read()
    return code, time.perf_counter() - start, output


def step_selfcheck(args, out, budget):
    cmd = [sys.executable, "-m", "evo_fairseq.selfcheck", "--device", args.device,
           "--json", os.path.join(out, "selfcheck.json")]
    code, seconds, output = run_logged(cmd, os.path.join(out, "selfcheck.log"), budget.left())
    table = "\n".join(line for line in output.splitlines() if line.startswith("|"))
    summary = next((line for line in output.splitlines() if "checks passed" in line), "")
    return {"ok": code == 0, "seconds": seconds, "summary": summary, "markdown": table}


def step_gpu_tests(args, out, budget):
    if not os.path.isdir(TESTS):
        return {"skipped": f"no test suite at {TESTS} (not a checkout)"}
    if importlib.util.find_spec("pytest") is None:
        return {"skipped": "pytest is not installed in this Python"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "-rs",
           TESTS]
    code, seconds, output = run_logged(cmd, os.path.join(out, "gpu-tests.log"), budget.left(),
                                       env=dict(os.environ, PYTHONWARNINGS="ignore"))
    summary = next((line.strip("= ") for line in reversed(output.splitlines())
                    if re.search(r"\b(passed|failed|skipped|error)", line)), "no summary")
    return {"ok": code == 0, "seconds": seconds, "summary": summary}


def last_value(pattern, text):
    found = re.findall(pattern, text)
    return found[-1] if found else None


def step_smoke(args, out, budget):
    """Each precision trains a few updates and translates; the three run side by side."""
    data = args.data_bin
    device_args = ["--cpu", "--fp16-no-flatten-grads"] if args.device == "cpu" else []
    procs = {}
    start = time.perf_counter()
    for name, flags in PRECISIONS.items():
        run_dir = os.path.join(out, "smoke", name)
        os.makedirs(run_dir, exist_ok=True)
        cmd = ["fairseq-train", data, "--user-dir", PLUGIN, *shlex.split(args.smoke_args),
               *flags, *device_args, "--max-update", str(args.smoke_updates), "--seed", "1",
               "--save-dir", run_dir, "--no-epoch-checkpoints", "--disable-validation",
               "--log-format", "simple", "--log-interval", "1", "--num-workers", "0"]
        log = open(os.path.join(run_dir, "train.log"), "w")
        log.write("$ " + " ".join(shlex.quote(str(c)) for c in cmd) + "\n")
        log.flush()
        # on the CPU one thread each: the three share the cores
        env = dict(os.environ, OMP_NUM_THREADS="1") if args.device == "cpu" else None
        procs[name] = (subprocess.Popen([str(c) for c in cmd], stdout=log,
                                        stderr=subprocess.STDOUT, env=env), log, run_dir)
    rows, ok = [], True
    for name, (proc, log, run_dir) in procs.items():
        try:
            code = proc.wait(timeout=max(budget.left(), 1))
        except subprocess.TimeoutExpired:
            proc.kill()
            code = "timeout"
        log.close()
        text = open(os.path.join(run_dir, "train.log")).read()
        row = {"precision": name, "train_exit": code,
               "updates": int(last_value(r"num_updates (\d+)", text) or 0),
               "first_loss": None, "last_loss": None, "bleu": None, "hypotheses": 0}
        losses = re.findall(r"\| loss ([\d.]+) ", text)
        if losses:
            row["first_loss"], row["last_loss"] = float(losses[0]), float(losses[-1])
        if code == 0:
            gen = ["fairseq-generate", data, "--user-dir", PLUGIN, "--path",
                   os.path.join(run_dir, "checkpoint_last.pt"), "--gen-subset", "test", "--beam",
                   "5", "--batch-size", "64", "--scoring", "sacrebleu", "--num-workers", "0",
                   "--max-len-a", "1.2", "--max-len-b", "10",  # as compare: bounded when untrained
                   *(["--cpu"] if args.device == "cpu" else GENERATE_FLAGS[name])]
            gen_code, _, gen_out = run_logged(gen, os.path.join(run_dir, "generate.log"),
                                              budget.left())
            row["generate_exit"] = gen_code
            row["hypotheses"] = len(re.findall(r"^H-\d+\t", gen_out, re.M))
            bleu = last_value(r"BLEU = ([\d.]+)", gen_out)
            row["bleu"] = float(bleu) if bleu is not None else None
        row["ok"] = (code == 0 and row.get("generate_exit") == 0 and row["hypotheses"] > 0
                     and row["updates"] == args.smoke_updates)
        ok = ok and row["ok"]
        rows.append(row)
    lines = ["| precision | updates | loss first -> last | test hypotheses | BLEU | result |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        loss = (f"{r['first_loss']:.3f} -> {r['last_loss']:.3f}" if r["last_loss"] is not None
                else "-")
        lines.append(f"| {r['precision']} | {r['updates']} | {loss} | {r['hypotheses']} | "
                     f"{r['bleu'] if r['bleu'] is not None else '-'} | "
                     f"{'ok' if r['ok'] else 'FAIL (see smoke/%s/)' % r['precision']} |")
    return {"ok": ok, "seconds": time.perf_counter() - start, "rows": rows,
            "markdown": "\n".join(lines)}


def step_converge(args, out, budget):
    run_dir = os.path.join(out, "converge")
    cmd = [sys.executable, "-m", "evo_fairseq.benchmark", "compare", "--data-bin", args.data_bin,
           *shlex.split(args.converge_args), *(["--cpu"] if args.device == "cpu" else []),
           "--figure", os.path.join(out, "converge.png"), "--out-dir", run_dir]
    code, seconds, _ = run_logged(cmd, os.path.join(out, "converge.log"), budget.left())
    markdown = ""
    if code == 0:
        with open(os.path.join(run_dir, "benchmark.md")) as f:
            markdown = f.read()
    return {"ok": code == 0, "seconds": seconds, "markdown": markdown,
            "figure": "converge.png" if code == 0 else None}


def step_speed(args, out, budget):
    rows, ok, start, skipped = [], True, time.perf_counter(), []
    for row in args.speed_rows:
        size, joined = row.split(":")
        if budget.left() < args.estimates["speed"]:
            skipped.append(f"{row} (needs ~{args.estimates['speed']} s, "
                           f"{max(budget.left(), 0):.0f} s left)")
            continue
        run_dir = os.path.join(out, "speed", f"{size}-join{joined}")
        cmd = [sys.executable, "-m", "evo_fairseq.benchmark", "speed", "--data-bin", args.data_bin,
               "--sizes", size, "--join-lines", joined, *shlex.split(args.speed_args),
               *(["--cpu"] if args.device == "cpu" else []),
               "--figure", os.path.join(run_dir, "speed.png"), "--out-dir", run_dir]
        os.makedirs(run_dir, exist_ok=True)
        code, seconds, _ = run_logged(cmd, os.path.join(run_dir, "run.log"), budget.left())
        markdown = open(os.path.join(run_dir, "speed.md")).read() if code == 0 else ""
        rows.append({"row": row, "ok": code == 0, "seconds": seconds, "markdown": markdown})
        ok = ok and code == 0
    if not rows:
        return {"skipped": "no speed row fits: " + "; ".join(skipped)}
    markdown = "\n\n".join(f"#### {r['row']}\n\n{r['markdown'] or 'FAILED (see speed/)'}"
                           for r in rows)
    if skipped:
        markdown += "\n\nRows skipped for time: " + "; ".join(skipped)
    return {"ok": ok, "seconds": time.perf_counter() - start, "rows": rows,
            "skipped_rows": skipped, "markdown": markdown}


NEEDS_DATA = ("smoke", "converge", "speed")


class Preparation:
    """The data preparation, in the background from the start of the run."""

    def __init__(self, command, out):
        self.proc, self.code = None, None
        if command:
            self.log = open(os.path.join(out, "prepare.log"), "w")
            self.proc = subprocess.Popen(command, shell=True, stdout=self.log,
                                         stderr=subprocess.STDOUT)

    def wait(self, budget):
        """None when the data is ready, else why it is not."""
        if self.proc is None:
            return None
        if self.code is None:
            try:
                self.code = self.proc.wait(timeout=max(budget.left(), 1))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.code = "timeout"
            self.log.close()
        return None if self.code == 0 else f"data preparation failed ({self.code}; prepare.log)"


STEP_FUNCTIONS = {"selfcheck": step_selfcheck, "gpu-tests": step_gpu_tests, "smoke": step_smoke,
                  "converge": step_converge, "speed": step_speed}


def markdown_report(report):
    lines = [f"# GPU acceptance run", "",
             f"Machine: {report['machine']}. Budget {report['minutes']:g} min; "
             f"used {report['wall_seconds']:.0f} s. Command: `{report['command']}`.", "",
             "| step | result | seconds |", "|---|---|---|"]
    for name in STEPS:
        result = report["steps"][name]
        if "skipped" in result:
            status = "skipped: " + result["skipped"]
        else:
            status = ("ok" if result["ok"] else "FAILED") + (
                f" ({result['summary']})" if result.get("summary") else "")
        seconds = f"{result['seconds']:.0f}" if "seconds" in result else "-"
        lines.append(f"| {name} | {status} | {seconds} |")
    for name in STEPS:
        result = report["steps"][name]
        if result.get("markdown"):
            lines += ["", f"## {name}", "", result["markdown"]]
    return "\n".join(lines) + "\n"


def parse_estimates(values):
    estimates = dict(ESTIMATES)
    for value in values or []:
        name, _, seconds = value.partition("=")
        if name not in ESTIMATES or not seconds.replace(".", "", 1).isdigit():
            raise argparse.ArgumentTypeError(
                f"--estimates takes STEP=SECONDS with STEP one of {', '.join(ESTIMATES)}, "
                f"got {value!r}")
        estimates[name] = float(seconds)
    return estimates


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m evo_fairseq.benchmark acceptance",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-bin", required=True)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--minutes", type=float, default=8.0, help="the whole budget (default 8)")
    parser.add_argument("--started-at", type=float, default=None,
                        help="when the budget started (seconds since the epoch; default now), "
                             "so that data preparation counts")
    parser.add_argument("--prepare", metavar="COMMAND",
                        help="shell command that writes --data-bin, run in the background")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (the tests' tiny run)")
    parser.add_argument("--smoke-args", default=SMOKE_ARGS, help="fairseq-train options of the "
                        "smoke trainings (model and optimiser)")
    parser.add_argument("--smoke-updates", type=int, default=30)
    parser.add_argument("--converge-args", default="", help="options of "
                        "'python -m evo_fairseq.benchmark compare' for the convergence protocol")
    parser.add_argument("--speed-args", default="", help="options of "
                        "'python -m evo_fairseq.benchmark speed' for every row")
    parser.add_argument("--speed-rows", nargs="+", default=[
        "wmt_en_de:6", "main:6", "iwslt_de_en:6", "vaswani_wmt_en_de_big:6", "main:1",
        "wmt_en_de:1"], help="SIZE:JOINED_LINES, in order")
    parser.add_argument("--steps", nargs="+", default=STEPS, choices=STEPS)
    parser.add_argument("--estimates", nargs="+", metavar="STEP=SECONDS",
                        help=f"expected seconds per step (defaults: {ESTIMATES})")
    args = parser.parse_args(argv)
    try:
        args.estimates = parse_estimates(args.estimates)
    except argparse.ArgumentTypeError as err:
        parser.error(str(err))
    for row in args.speed_rows:
        if not re.fullmatch(r"[\w]+:[1-9]\d*", row):
            parser.error(f"--speed-rows takes SIZE:JOINED_LINES (e.g. wmt_en_de:6), got {row!r}")
    if not args.cpu and not torch.cuda.is_available():
        parser.error("no CUDA device (torch.cuda.is_available() is False); --cpu runs the same "
                     "steps on the CPU")
    if not args.converge_args and "converge" in args.steps:
        parser.error("--converge-args is needed for the converge step (benchmark.sh gpu sets it)")
    args.device = "cpu" if args.cpu else "cuda"
    started = time.time() if args.started_at is None else args.started_at
    budget = Budget(args.minutes, started)
    out = os.path.abspath(args.out_dir)
    os.makedirs(out, exist_ok=True)

    report = {"machine": machine_description(args.device), "minutes": args.minutes,
              "command": " ".join(shlex.quote(a) for a in [sys.executable, "-m",
                                                           "evo_fairseq.benchmark",
                                                           "acceptance", *(argv or sys.argv[1:])]),
              "estimates": args.estimates, "steps": {}}
    preparation = Preparation(args.prepare, out)
    for name in STEPS:
        estimate = args.estimates[name]
        not_ready = preparation.wait(budget) if name in NEEDS_DATA and name in args.steps else None
        if name not in args.steps:
            result = {"skipped": "not in --steps"}
        elif not_ready:
            result = {"ok": False, "summary": not_ready}
        elif budget.left() < estimate:
            result = {"skipped": f"needs ~{estimate:.0f} s, {max(budget.left(), 0):.0f} s left"}
        else:
            print(f"==> {name} ({budget.left():.0f} s left)", flush=True)
            result = STEP_FUNCTIONS[name](args, out, budget)
        report["steps"][name] = result
        print(f"    {name}: " + (f"skipped ({result['skipped']})" if "skipped" in result else
                                 ("ok" if result["ok"] else "FAILED")), flush=True)
    if preparation.proc is not None and preparation.code is None:
        preparation.proc.kill()  # no step needed the data
    report["wall_seconds"] = time.time() - started
    report["figures"] = sorted(os.path.relpath(p, out) for p in
                               glob.glob(os.path.join(out, "**", "*.png"), recursive=True))
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    text = markdown_report(report)
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(text)
    print(text)
    failed = [n for n, r in report["steps"].items() if "skipped" not in r and not r["ok"]]
    if failed:
        print(f"FAILED: {', '.join(failed)} (logs in {out})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
