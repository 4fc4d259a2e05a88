"""``python -m evo_fairseq.benchmark [SUBCOMMAND] ...``; without one, ``compare``."""

import importlib
import sys

SUBCOMMANDS = ["compare", "speed", "scaling", "transform", "sweep", "warmstart", "acceptance",
               "checkpointing"]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        print(importlib.import_module("evo_fairseq.benchmark").__doc__)
        return None
    name = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    module = importlib.import_module(f"evo_fairseq.benchmark.{name or 'compare'}")
    return module.main(argv[1:] if name else argv)


if __name__ == "__main__":
    main()
