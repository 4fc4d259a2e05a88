# Copyright (c) evo-fairseq contributors.
#
# This source code is licensed under the MIT license found in the
# LICENSE file in the root directory of this source tree.
"""Benchmarks of EA-Transformer against fairseq's transformer.

    python -m evo_fairseq.benchmark [compare] --data-bin DIR ...   quality (and cost) of whole trainings
    python -m evo_fairseq.benchmark speed --data-bin DIR ...       training / generation speed and memory,
                                                                   interleaved and repeated, by size and length
    python -m evo_fairseq.benchmark scaling ...                    one attention layer against fairseq's
    python -m evo_fairseq.benchmark transform ...                  the evolving map transform alone
    python -m evo_fairseq.benchmark sweep DIR [--best]             rank a hyper-parameter sweep
    python -m evo_fairseq.benchmark warmstart DIR ...              the warm-start comparison
    python -m evo_fairseq.benchmark acceptance --data-bin DIR ...  the GPU acceptance run, in a
                                                                   time budget (benchmark.sh gpu)
    python -m evo_fairseq.benchmark checkpointing ...              bytes kept for backward with and
                                                                   without --checkpoint-activations

Modules: ``compare`` (with ``converge``, its convergence report), ``speed``,
``scaling``, ``transform``, ``sweep``, ``warmstart``, ``acceptance``, ``checkpointing``.
"""
