"""evo-fairseq: evolving attention (EA-Transformer) for fairseq.

fairseq itself is not listed in ``install_requires``: PyPI's name for a working
build differs by Python version (upstream ``fairseq`` 0.12.2 up to 3.10,
``fairseq-fixed`` on 3.11 to 3.13), and letting pip resolve it would build
fairseq in an isolated environment that downloads a CUDA torch. Neither is
torch: users bring their own build. ``scripts/setup.sh`` installs both. The
build configuration is in ``pyproject.toml`` (PEP 660 editable installs).
"""
from setuptools import find_packages, setup

setup(
    name="evo-fairseq",
    version="0.1.0",
    description="Evolving attention with residual convolutions (EA-Transformer) for fairseq",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["evo_fairseq", "evo_fairseq.*"]),
    python_requires=">=3.10",
    install_requires=[],
    extras_require={"test": ["pytest", "matplotlib"]},
    license="MIT",
)
