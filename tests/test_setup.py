"""scripts/setup.sh: the torch pin (what pip sees, not torch.__version__) and the
interpreter checks, run for real in subprocesses against stand-ins that cost
nothing to build: a torch distribution that is only its metadata and a
``__version__``, and interpreters that only report a version."""

import ast
import os
import re
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT

SETUP = ROOT / "scripts" / "setup.sh"
TORCH_PIN = ROOT / "scripts" / "torch_pin.py"
SUPPORTED = ("3.10", "3.11", "3.12", "3.13")


def fake_torch(where, dunder_version, dist_version):
    """A torch that pip and importlib.metadata see as installed at ``dist_version``
    and whose ``torch.__version__`` is ``dunder_version``."""
    (where / "torch").mkdir(parents=True)
    (where / "torch" / "__init__.py").write_text(f"__version__ = {dunder_version!r}\n")
    info = where / f"torch-{dist_version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: torch\nVersion: {dist_version}\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")
    return where


def clean_env(**extra):
    """The environment without pip's configuration (find-links, constraints) or an
    active virtualenv, so that only what a test sets counts."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PIP_") and k not in ("VIRTUAL_ENV", "PYTHON", "VENV")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)
    return env


def run(cmd, env, cwd="/"):
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("dunder_version,dist_version", [
    ("2.13.0+cu130", "2.13.0"),                            # PyPI's CUDA wheel
    ("2.13.0+cpu", "2.13.0+cpu"),                          # download.pytorch.org's CPU wheel
    ("2.14.0.dev20261101+cu130", "2.14.0.dev20261101+cu130"),  # a nightly
])
def test_pin_is_the_version_pip_sees(tmp_path, dunder_version, dist_version):
    env = clean_env(PYTHONPATH=str(fake_torch(tmp_path, dunder_version, dist_version)))
    # the stand-in shadows any real torch
    seen = run([sys.executable, "-c", "import torch; print(torch.__version__)"], env)
    assert seen.stdout.strip() == dunder_version, seen.stderr
    pin = run([sys.executable, str(TORCH_PIN)], env)
    assert pin.returncode == 0, pin.stderr
    assert pin.stdout.strip() == f"torch=={dist_version}"


def test_pip_accepts_the_pin(tmp_path):
    """With the pin as a constraint, pip takes the installed torch for fairseq's
    requirement (torch>=1.13) and looks for nothing; with torch.__version__ as the
    pin, as before, it finds no torch that satisfies it."""
    site = fake_torch(tmp_path / "site", "2.13.0+cu130", "2.13.0")
    env = clean_env(PYTHONPATH=str(site))
    pin = run([sys.executable, str(TORCH_PIN)], env).stdout.strip()
    assert pin == "torch==2.13.0"
    for constraint, ok in ((pin, True), ("torch==2.13.0+cu130", False)):
        constraints = tmp_path / "constraints.txt"
        constraints.write_text(constraint + "\n")
        result = run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index",
                      "--constraint", str(constraints), "torch>=1.13"], env)
        assert (result.returncode == 0) == ok, (constraint, result.stdout, result.stderr)
        if ok:
            assert "Requirement already satisfied: torch" in result.stdout
            assert "Would install" not in result.stdout


def test_pin_without_a_torch_distribution(tmp_path):
    """A torch that pip does not see (a source tree on PYTHONPATH) cannot be pinned:
    pip would install another, so setup stops."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("__version__ = '2.13.0'\n")
    # an interpreter whose site-packages lack torch: -S, and only PYTHONPATH
    result = run([sys.executable, "-S", str(TORCH_PIN)], clean_env(PYTHONPATH=str(tmp_path)))
    assert result.returncode == 1
    assert "pip sees no installed torch" in result.stderr


def fake_python(path, version):
    """An interpreter that reports ``version`` for setup.sh's version query and
    fails with status 3 on anything else (e.g. ``-m venv``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        [ "$1" = -c ] && {{ echo {version}; exit 0; }}
        echo "fake python {version}: $*" >&2; exit 3
        """))
    path.chmod(0o755)
    return path


def setup_sh(env):
    return run(["bash", str(SETUP)], env, cwd=str(ROOT))


@pytest.mark.parametrize("version", ["3.7", "3.9", "3.14"])
def test_setup_refuses_an_unsupported_python(tmp_path, version):
    venv = tmp_path / "venv"
    python = fake_python(tmp_path / "bin" / f"python{version}", version)
    result = setup_sh(clean_env(PYTHON=str(python), VENV=str(venv)))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert f"Python {version} (PYTHON={python}) is not supported" in result.stderr
    assert "supported: " + " ".join(SUPPORTED) in result.stderr
    assert result.stdout == ""  # nothing done
    assert not venv.exists()


def test_setup_refuses_an_active_virtualenv_of_an_unsupported_python(tmp_path):
    venv = tmp_path / "venv"
    fake_python(venv / "bin" / "python", "3.9")
    result = setup_sh(clean_env(VIRTUAL_ENV=str(venv)))
    assert result.returncode == 2
    assert f"Python 3.9 (the active virtualenv {venv}) is not supported" in result.stderr


def test_setup_accepts_a_supported_python(tmp_path):
    """The control: a supported version passes the check and setup goes on to
    create the virtualenv (which the stand-in cannot)."""
    venv = tmp_path / "venv"
    python = fake_python(tmp_path / "bin" / "python3.12", "3.12")
    result = setup_sh(clean_env(PYTHON=str(python), VENV=str(venv)))
    assert f"==> creating virtualenv {venv} (Python 3.12)" in result.stdout
    assert "fake python 3.12: -m venv " + str(venv) in result.stderr
    assert result.returncode == 3


def test_setup_refuses_a_virtualenv_of_another_python(tmp_path):
    venv = tmp_path / "venv"
    fake_python(venv / "bin" / "python", "3.12")
    python = fake_python(tmp_path / "bin" / "python3.13", "3.13")
    result = setup_sh(clean_env(PYTHON=str(python), VENV=str(venv)))
    assert result.returncode == 2
    assert (f"PYTHON={python} is Python 3.13 but the virtualenv {venv} has Python 3.12"
            in result.stderr)
    assert result.stdout == ""


def test_setup_names_a_missing_python(tmp_path):
    missing = tmp_path / "no-such-python"
    result = setup_sh(clean_env(PYTHON=str(missing), VENV=str(tmp_path / "venv")))
    assert result.returncode == 2
    assert f"PYTHON={missing}: no such interpreter" in result.stderr
    assert not (tmp_path / "venv").exists()


def setup_packages(variable):
    """The distributions setup.sh installs from one of its variables (TOOLS, ...)."""
    value = re.search(rf'^{variable}="([^"]*)"', SETUP.read_text(), re.M).group(1)
    return {re.split(r"[<>=!]", name)[0] for name in value.split()}


def test_setup_without_test_installs_every_module_the_package_imports():
    """What evo_fairseq imports anywhere (inside functions too, like the inspector's
    matplotlib) is installed by ``setup.sh`` without ``--test``: named by it, or a
    requirement of torch or fairseq. (The inspector's matplotlib once came only with
    --test, so the README's inspect command failed after command 1.)"""
    import importlib.metadata as metadata
    norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
    providers = metadata.packages_distributions()
    named = setup_packages("TOOLS") | setup_packages("BUILD_TOOLS") | {"torch", "fastBPE"}
    installed = {norm(name) for name in named} | {norm(d) for d in providers["fairseq"]}
    for dist in ["torch", *providers["fairseq"]]:
        for requirement in metadata.requires(dist) or []:
            if "extra ==" not in requirement:
                installed.add(norm(re.split(r"[\s<>=!;\[(~]", requirement)[0]))
    imported = set()
    for path in (ROOT / "evo_fairseq").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"evo_fairseq"}
    assert {"torch", "fairseq", "matplotlib", "sacrebleu"} <= third_party
    missing = {module: providers.get(module) for module in sorted(third_party)
               if not any(norm(d) in installed for d in providers.get(module, []))}
    assert not missing, (f"evo_fairseq imports modules that scripts/setup.sh installs only "
                         f"with --test, or not at all: {missing}")
    assert not setup_packages("TEST_TOOLS") & named


@pytest.mark.parametrize("workers", ["0", "two", "-1"])
def test_test_sh_refuses_a_bad_worker_count(workers):
    """scripts/test.sh stops before pytest on a TEST_WORKERS that is not a positive integer."""
    proc = subprocess.run(["bash", ROOT / "scripts" / "test.sh"], capture_output=True, text=True,
                          env=dict(os.environ, TEST_WORKERS=workers), timeout=60)
    assert proc.returncode == 2
    assert f"TEST_WORKERS must be a positive integer, got '{workers}'" in proc.stderr
