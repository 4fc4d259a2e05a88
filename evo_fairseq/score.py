# Copyright (c) evo-fairseq contributors.
#
# This source code is licensed under the MIT license found in the
# LICENSE file in the root directory of this source tree.
"""BLEU of a ``fairseq-generate`` output, three ways.

    python -m evo_fairseq.score --generate-output GEN --tok-ref TOK_REF --raw-ref RAW_REF
        [--compound-split] [--lowercase] [--out-dir DIR]

- tokenised BLEU, as the papers report it: the ``H-`` hypotheses with BPE removed
  against the tokenised reference (``prepare-pair.sh``'s ``tok/test.TGT``), no further
  tokenisation, no smoothing (multi-bleu.perl's number);
- compound-split BLEU (``--compound-split``, for English-German): the same after
  splitting hyphenated compounds as ``a ##AT##-##AT## b``, as in Vaswani et al. (2017)
  and fairseq's ``compound_split_bleu.sh``;
- detokenised sacreBLEU of the ``D-`` lines against the raw reference, with its
  signature (``--lowercase``: case-insensitive, for lowercased data such as IWSLT'14).

Every reference sentence must have a hypothesis: a missing one is an error, never
a silently smaller test set. Writes ``DIR/hyp.tok``, ``DIR/hyp.detok`` and ``DIR/scores.json``.
"""

import argparse
import json
import os
import re
import sys

from evo_fairseq.text import open_text

BPE_MARKER = re.compile(r"@@( |$)")
COMPOUND = re.compile(r"(\S)-(\S)")


def hypotheses(generate_output, prefix):
    """``{id: text}`` of the ``prefix-ID\\tscore\\ttext`` lines of fairseq-generate."""
    found = {}
    pattern = re.compile(rf"^{prefix}-(\d+)\t[^\t]*\t?(.*)$")
    with open_text(generate_output) as f:
        for line in f:
            match = pattern.match(line.rstrip("\n"))
            if match:
                found[int(match.group(1))] = match.group(2)
    return found


def ordered(found, n, what):
    missing = sorted(set(range(n)) - set(found))
    extra = sorted(set(found) - set(range(n)))
    if missing or extra:
        raise SystemExit(f"error: {what}: {len(found)} hypotheses for {n} reference sentences "
                         f"(missing ids {missing[:10]}, unexpected ids {extra[:10]})")
    return [found[i] for i in range(n)]


def split_compounds(line):
    return COMPOUND.sub(r"\1 ##AT##-##AT## \2", line)


def read_lines(path):
    with open_text(path) as f:
        return [line.rstrip("\n") for line in f]


def main(argv=None):
    from sacrebleu.metrics import BLEU

    parser = argparse.ArgumentParser(prog="python -m evo_fairseq.score", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generate-output", required=True)
    parser.add_argument("--tok-ref", required=True, help="tokenised reference, one sentence a line")
    parser.add_argument("--raw-ref", required=True, help="raw reference (plain or .gz)")
    parser.add_argument("--compound-split", action="store_true")
    parser.add_argument("--lowercase", action="store_true", help="case-insensitive sacreBLEU")
    parser.add_argument("--out-dir", default=None)
    args = parser.parse_args(argv)

    tok_ref, raw_ref = read_lines(args.tok_ref), read_lines(args.raw_ref)
    if len(tok_ref) != len(raw_ref):
        parser.error(f"--tok-ref has {len(tok_ref)} lines but --raw-ref has {len(raw_ref)}")
    hyp_tok = [BPE_MARKER.sub("", h) for h in ordered(hypotheses(args.generate_output, "H"),
                                                        len(tok_ref), "H- lines")]
    hyp_detok = ordered(hypotheses(args.generate_output, "D"), len(raw_ref), "D- lines")

    tokenised = BLEU(tokenize="none", smooth_method="none", force=True)
    scores = {"sentences": len(tok_ref)}
    results = [("tokenised BLEU", "tokenised_bleu", tokenised, hyp_tok, tok_ref)]
    if args.compound_split:
        results.append(("compound-split BLEU", "compound_split_bleu", tokenised,
                        [split_compounds(h) for h in hyp_tok], [split_compounds(r) for r in tok_ref]))
    results.append(("detokenised sacreBLEU", "sacrebleu", BLEU(lowercase=args.lowercase),
                    hyp_detok, raw_ref))
    for title, key, metric, hyps, refs in results:
        score = metric.corpus_score(hyps, [refs])
        scores[key] = round(score.score, 2)
        signature = str(metric.get_signature())
        scores[key + "_signature"] = signature
        print(f"{title} = {score.score:.2f}  ({score}; {signature})")

    if args.out_dir:
        os.makedirs(args.out_dir, exist_ok=True)
        for name, lines in (("hyp.tok", hyp_tok), ("hyp.detok", hyp_detok)):
            with open(os.path.join(args.out_dir, name), "w", encoding="utf-8") as f:
                f.write("".join(line + "\n" for line in lines))
        with open(os.path.join(args.out_dir, "scores.json"), "w") as f:
            json.dump(scores, f, indent=2)
    return scores


if __name__ == "__main__":
    main()
