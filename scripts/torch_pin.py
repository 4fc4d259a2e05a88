"""Print the pip requirement that pins the installed torch: ``torch==<version>``.

Usage: python scripts/torch_pin.py

The version is the installed distribution's (its metadata, what pip sees), not
``torch.__version__``: PyPI's CUDA wheels report ``2.13.0+cu130`` in
``torch.__version__`` but ``2.13.0`` in their metadata, and a constraint
``torch==2.13.0+cu130`` then matches nothing pip can find. The metadata version
is right for every build: the CPU wheel (``2.13.0+cpu``), a CUDA build, a
nightly (``2.14.0.dev20261101+cu130``).

Exits with status 1 and a message when pip sees no torch installed (e.g. a
torch importable only from a source tree): pip would then install another.
Nothing is imported from torch, so this is fast and works on a broken torch.
"""
import sys
from importlib import metadata


def torch_pin():
    """``torch==<installed distribution's version>``; PackageNotFoundError without one."""
    return f"torch=={metadata.version('torch')}"


def main():
    try:
        print(torch_pin())
    except metadata.PackageNotFoundError:
        sys.exit(
            "torch_pin.py: pip sees no installed torch distribution (no torch-*.dist-info on "
            f"sys.path of {sys.executable}); install torch with pip so that it can be pinned"
        )


if __name__ == "__main__":
    main()
