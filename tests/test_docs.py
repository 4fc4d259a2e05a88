"""The README's and the docs' code blocks run as written, after a short main job.

Every ```bash and ```python block in README.md and docs/*.md has a marker on the line
before it (an HTML comment, invisible on the rendered page):

    <!-- doc-test: run -->                            run it, from a directory outside the clone
    <!-- doc-test: run from the repository root -->   run it in the clone
    <!-- doc-test: run; append: ARGS -->              run it with ARGS after its last line
                                                      (e.g. --max-update 2 for a training)
    <!-- doc-test: run; expect: TEXT -->              run it; its output must contain TEXT
    <!-- doc-test: skip: REASON -->                   not run, for REASON (a GPU, a download)

A block without a marker fails ``test_every_block_is_marked``, so a new block either runs
here or says why not. The blocks run in a sandbox laid out like the clone (the package,
scripts and examples linked in, ``.venv`` the virtualenv running the tests), after
``examples/multi30k/run.sh`` has trained 3 updates on a Multi30k slice there, so each block
finds the paths command 1 writes. Blocks of one page run in order in one shell state (what the
README's activation block exports carries over), each in a fresh bash.
"""

import gzip
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, multi30k_lines

PAGES = ["README.md"] + sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"^```(\w*)\s*$")
MARKER = re.compile(r"^<!-- doc-test: (.*?) -->\s*$")
LINK = re.compile(r"\]\(([^)\s]+)\)")
CODE = ("bash", "python")


def blocks(page):
    """``[(line, language, marker or None, text)]`` of a page's fenced code blocks."""
    lines = (ROOT / page).read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        marker = MARKER.match(lines[i - 1]) if i > 0 else None
        found.append((i + 1, fence.group(1), marker.group(1) if marker else None,
                      "\n".join(lines[i + 1:end])))
        i = end + 1
    return found


def parse_marker(marker):
    """``(run: bool, options: dict)`` of a marker's text."""
    head, *rest = [part.strip() for part in marker.split(";")]
    if head.startswith("skip:"):
        return False, {"reason": head[len("skip:"):].strip()}
    assert head in ("run", "run from the repository root"), f"unknown doc-test marker {marker!r}"
    options = {"root": head.endswith("root")}
    for part in rest:
        key, _, value = part.partition(":")
        assert key in ("append", "expect") and value.strip(), f"unknown doc-test option {part!r}"
        options[key] = value.strip()
    return True, options


@pytest.mark.parametrize("page", PAGES)
def test_every_block_is_marked(page):
    """Each bash/python block says whether it runs here; a skip gives its reason."""
    found = [b for b in blocks(page) if b[1] in CODE]
    for line, language, marker, _ in found:
        assert marker is not None, f"{page}:{line}: a ```{language} block without a doc-test marker"
        run, options = parse_marker(marker)
        assert run or len(options["reason"]) > 10, f"{page}:{line}: a skip needs its reason"
    if page == "README.md":  # the after-command-1 blocks at least
        assert sum(parse_marker(m)[0] for _, _, m, _ in found) >= 4


def anchors(path):
    """GitHub's anchors of a markdown file's headings."""
    slugs = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            slugs.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return slugs


@pytest.mark.parametrize("page", PAGES)
def test_links_resolve(page):
    """Relative links name files that exist, and anchors that their headings make."""
    text = (ROOT / page).read_text(encoding="utf-8")
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        path = (ROOT / page).parent / file if file else ROOT / page
        assert path.exists(), f"{page}: link to {target}, which does not exist"
        if anchor:
            assert anchor in anchors(path), f"{page}: link to {target}, no such heading"


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """A sandbox laid out like the clone, after a 3-update main job on a Multi30k slice."""
    venv = Path(sys.prefix)
    if not (venv / "bin" / "activate").exists():
        pytest.skip("the docs' activation step needs the tests to run in a virtualenv")
    root = tmp_path_factory.mktemp("clone")
    for name in ("evo_fairseq", "scripts", "examples"):
        (root / name).symlink_to(ROOT / name)
    (root / ".venv").symlink_to(venv)
    data = tmp_path_factory.mktemp("multi30k-slice")
    for split, n in (("train", 500), ("val", 20), ("test_2016_flickr", 10)):
        for lang in ("de", "en"):
            with gzip.open(data / f"{split}.{lang}.gz", "wt", encoding="utf-8") as f:
                f.write("\n".join(multi30k_lines(split, lang, n)) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    # a 3-update model never ends a sentence: translations stop at 8 tokens
    env.update(DATA=str(data), MAX_UPDATE="3", GEN_ARGS="--max-len-a 0 --max-len-b 8",
               PYTHONWARNINGS="ignore")
    proc = subprocess.run(["bash", root / "examples" / "multi30k" / "run.sh"], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "translations: " in proc.stdout
    assert (root / "work/multi30k/checkpoints/ea_transformer-seed1/checkpoint_last.pt").exists()
    return root


def run_block(clone, state, page, line, language, options, text):
    """Run one block in a fresh bash with the page's shell state; return its output."""
    if options.get("append"):
        text = text.rstrip() + " " + options["append"]
    if language == "python":
        text = f"python - <<'DOC_TEST_PYTHON'\n{text}\nDOC_TEST_PYTHON"
    cwd = clone if options["root"] else clone / "elsewhere"
    cwd.mkdir(exist_ok=True)
    script = (f"set -euo pipefail\n[ -f {shlex.quote(str(state))} ] && source {shlex.quote(str(state))}\n"
              f"cd {shlex.quote(str(cwd))}\n{text}\nexport -p > {shlex.quote(str(state))}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "EVO")}
    env["PYTHONWARNINGS"] = "ignore"
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                          timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, (f"{page}:{line}: the block failed ({proc.returncode})\n{text}\n"
                                  f"--- output ---\n{output[-5000:]}")
    if options.get("expect"):
        assert options["expect"] in output, f"{page}:{line}: no {options['expect']!r} in\n{output[-3000:]}"
    return output


def run_page(clone, state, page):
    ran = []
    for line, language, marker, text in blocks(page):
        if language in CODE and marker:
            run, options = parse_marker(marker)
            if run:
                ran.append(run_block(clone, state, page, line, language, options, text))
    return ran


@pytest.fixture(scope="module")
def readme_state(clone):
    """The README's blocks run; the shell state they leave (EVO, the virtualenv) for the docs."""
    state = clone / "readme.state"
    outputs = run_page(clone, state, "README.md")
    return state, outputs


def test_readme_after_command_1_runs_as_written(clone, readme_state):
    """Activation, fairseq-interactive, the hub and the inspector on command 1's paths."""
    state, outputs = readme_state
    assert os.environ.get("EVO") is None and f"EVO=\"{clone}\"" in state.read_text()
    joined = "\n".join(outputs)
    assert re.search(r"^D-0\t\S+\t\S+", joined, re.M), "fairseq-interactive printed no translation"
    assert (clone / "work" / "attention" / "sentence-1.png").stat().st_size > 0
    assert (clone / "work" / "attention" / "sentence-1.npz").exists()


@pytest.mark.parametrize("page", [p for p in PAGES if p != "README.md"])
def test_docs_blocks_run_as_written(clone, readme_state, page, tmp_path):
    """Each page's run blocks, from the shell state the README's activation step leaves."""
    state = tmp_path / "state"
    state.write_text(readme_state[0].read_text())
    run_page(clone, state, page)
