# Copyright (c) evo-fairseq contributors.
#
# This source code is licensed under the MIT license found in the
# LICENSE file in the root directory of this source tree.
"""Text steps shared by the recipes: tokenise, clean, convert BPE codes.

    python -m evo_fairseq.text check --src de --tgt en PREFIX [PREFIX ...]
    python -m evo_fairseq.text tokenize --lang de [--lowercase] [--no-dash-splits]
        [--normalize-punctuation] [--workers N] IN OUT [IN OUT ...]
    python -m evo_fairseq.text clean --src de --tgt en --min-len 1 --max-len 175 --ratio 1.5 IN_PREFIX OUT_PREFIX
    python -m evo_fairseq.text fastbpe-codes SUBWORD_NMT_CODES FASTBPE_CODES
    python -m evo_fairseq.text apply-fastbpe --codes FASTBPE_CODES IN OUT

Tokenisation is Moses' (sacremoses, Python API) without escaping and, unless
``--no-dash-splits``, with aggressive dash splits; text typed into
``fairseq-interactive --tokenizer moses --moses-no-escape`` (plus
``--moses-no-dash-splits`` for data prepared with ``--no-dash-splits``) is split as
the training data was. ``--lowercase`` lowercases after tokenising, as
fairseq's recipes do; ``--normalize-punctuation`` first applies Moses'
punctuation normalisation and removes non-printing characters (the WMT recipes).
Input may be gzipped (``.gz``). Output is written to a temporary file and
renamed when complete, so an interrupted step never leaves a complete-looking file.
"""

import argparse
import contextlib
import gzip
import multiprocessing
import os
import sys

CHUNK = 2000


def open_text(path, mode="r"):
    if path == "-":
        return contextlib.nullcontext(sys.stdin if "r" in mode else sys.stdout)
    if path.endswith(".gz"):
        return gzip.open(path, mode + "t", encoding="utf-8", newline="\n")
    return open(path, mode, encoding="utf-8", newline="\n")


@contextlib.contextmanager
def atomic_output(path):
    """Write to ``path + '.tmp'`` and rename on success; remove it on failure."""
    if path == "-":
        yield sys.stdout
        return
    tmp = path + ".tmp"
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            yield f
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


_tokenizer = None


def _init_tokenizer(lang, lowercase, dash_splits=True, normalize_punctuation=False):
    global _tokenizer
    import regex
    from sacremoses import MosesPunctNormalizer, MosesTokenizer

    moses = MosesTokenizer(lang=lang)
    normalizer = MosesPunctNormalizer(lang=lang) if normalize_punctuation else None
    non_printing = regex.compile(r"\p{C}")  # remove-non-printing-char.perl

    def tokenize(line):
        line = " ".join(line.split())  # also any \r or Unicode line separator inside the line
        if normalizer is not None:
            line = non_printing.sub(" ", normalizer.normalize(line))
        line = moses.tokenize(line, aggressive_dash_splits=dash_splits, return_str=True, escape=False)
        return line.lower() if lowercase else line

    _tokenizer = tokenize


def _tokenize_chunk(lines):
    return [_tokenizer(line) for line in lines]


def _chunks(f):
    chunk = []
    for line in f:
        chunk.append(line)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def tokenize(args):
    if len(args.files) % 2:
        raise SystemExit("error: tokenize takes pairs of files: IN OUT [IN OUT ...]")
    pool = None
    tokenizer_options = (args.lang, args.lowercase, not args.no_dash_splits, args.normalize_punctuation)
    if args.workers > 1:
        pool = multiprocessing.Pool(
            args.workers, initializer=_init_tokenizer, initargs=tokenizer_options
        )
    else:
        _init_tokenizer(*tokenizer_options)
    try:
        for input, output in zip(args.files[::2], args.files[1::2]):
            done = 0
            with open_text(input) as fin, atomic_output(output) as fout:
                chunks = _chunks(fin)
                results = pool.imap(_tokenize_chunk, chunks) if pool else map(_tokenize_chunk, chunks)
                for lines in results:
                    fout.write("".join(line + "\n" for line in lines))
                    done += len(lines)
                    if not args.quiet:
                        print(f"\r  tokenize {input}: {done} lines", end="", file=sys.stderr)
            if not args.quiet:
                print(file=sys.stderr)
    finally:
        if pool is not None:
            pool.close()
            pool.join()


def clean(args):
    """Keep pairs with min_len <= tokens <= max_len on both sides and a length
    ratio <= ratio (the rule of Moses' clean-corpus-n.perl)."""
    kept = total = 0
    src_in, tgt_in = f"{args.input}.{args.src}", f"{args.input}.{args.tgt}"
    with open_text(src_in) as fs, open_text(tgt_in) as ft, atomic_output(
        f"{args.output}.{args.src}"
    ) as out_s, atomic_output(f"{args.output}.{args.tgt}") as out_t:
        for src, tgt in _zip_strict(fs, ft, src_in, tgt_in):
            total += 1
            ns, nt = len(src.split()), len(tgt.split())
            if not (args.min_len <= ns <= args.max_len and args.min_len <= nt <= args.max_len):
                continue
            if ns / nt > args.ratio or nt / ns > args.ratio:
                continue
            out_s.write(src.strip() + "\n")
            out_t.write(tgt.strip() + "\n")
            kept += 1
    print(f"  clean: kept {kept} of {total} pairs", file=sys.stderr)


def input_file(prefix, lang):
    """``PREFIX.lang`` or ``PREFIX.lang.gz``, whichever exists."""
    for path in (f"{prefix}.{lang}", f"{prefix}.{lang}.gz"):
        if os.path.isfile(path):
            return path
    raise ValueError(f"missing input: neither {prefix}.{lang} nor {prefix}.{lang}.gz exists")


def count_utf8_lines(path):
    """Lines of ``path`` (split at ``\n`` only, as the tokeniser splits), each checked to
    decode as UTF-8; ValueError names the file, line and byte of the first that does not."""
    opener = gzip.open if path.endswith(".gz") else open
    lines = 0
    try:
        with opener(path, "rb") as f:
            for lines, raw in enumerate(f, start=1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise ValueError(
                        f"{path}: line {lines} is not valid UTF-8 (byte 0x{raw[err.start]:02x} "
                        f"at byte {err.start + 1} of the line); convert the file to UTF-8, e.g. "
                        "with iconv, or remove the line from both sides"
                    )
    except (OSError, EOFError) as err:
        raise ValueError(f"{path}: cannot be read ({err})")
    return lines


def check_inputs(args):
    """Every split's two sides exist, decode as UTF-8 and have the same number of lines."""
    try:
        for prefix in args.prefixes:
            src, tgt = input_file(prefix, args.src), input_file(prefix, args.tgt)
            n_src, n_tgt = count_utf8_lines(src), count_utf8_lines(tgt)
            if n_src != n_tgt:
                raise ValueError(
                    f"{src} has {n_src} lines but {tgt} has {n_tgt}: the two sides of a "
                    "parallel corpus must have one line per sentence pair"
                )
            if n_src == 0:
                raise ValueError(f"{src} and {tgt} are empty")
            if not args.quiet:
                print(f"  {prefix}: {n_src} sentence pairs", file=sys.stderr)
    except ValueError as err:
        raise SystemExit(f"error: {err}")


def _zip_strict(a, b, name_a, name_b):
    for x, y in zip(a, b):
        yield x, y
    extra_a, extra_b = next(a, None), next(b, None)
    if extra_a is not None or extra_b is not None:
        raise SystemExit(f"error: {name_a} and {name_b} have different numbers of lines")


def fastbpe_codes(args):
    """subword-nmt codes (one merge per line, ``#version`` header) to fastBPE's
    format (``left right count``, most frequent first): fastBPE applies merges
    in file order, so the counts only have to decrease."""
    with open_text(args.input) as fin, atomic_output(args.output) as fout:
        merges = [line.rstrip("\n") for line in fin if not line.startswith("#version")]
        for rank, merge in enumerate(merges):
            if len(merge.split(" ")) != 2:
                raise SystemExit(f"error: {args.input}: not a subword-nmt merge: {merge!r}")
            fout.write(f"{merge} {len(merges) - rank}\n")


def apply_fastbpe(args):
    import fastBPE

    bpe = fastBPE.fastBPE(args.codes)
    with open_text(args.input) as fin, atomic_output(args.output) as fout:
        for lines in _chunks(fin):
            fout.write("".join(line + "\n" for line in bpe.apply([l.strip() for l in lines])))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m evo_fairseq.text", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check", help="check parallel inputs before any work: both sides exist, "
                                     "decode as UTF-8, same number of lines")
    p.add_argument("--src", required=True)
    p.add_argument("--tgt", required=True)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("prefixes", nargs="+", metavar="PREFIX",
                   help="reads PREFIX.SRC and PREFIX.TGT (plain or .gz)")
    p.set_defaults(func=check_inputs)

    p = sub.add_parser("tokenize", help="Moses-tokenise one language's text")
    p.add_argument("--lang", "-l", required=True)
    p.add_argument("--lowercase", action="store_true", help="lowercase after tokenising")
    p.add_argument("--no-dash-splits", action="store_true", help="keep hyphenated words whole")
    p.add_argument("--normalize-punctuation", action="store_true",
                   help="Moses punctuation normalisation and non-printing character removal first")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("files", nargs="+", metavar="IN OUT")
    p.set_defaults(func=tokenize)

    p = sub.add_parser("clean", help="length and ratio filter of a parallel corpus")
    p.add_argument("--src", required=True)
    p.add_argument("--tgt", required=True)
    p.add_argument("--min-len", type=int, default=1)
    p.add_argument("--max-len", type=int, default=175)
    p.add_argument("--ratio", type=float, default=1.5)
    p.add_argument("input", help="prefix: reads INPUT.SRC and INPUT.TGT")
    p.add_argument("output", help="prefix: writes OUTPUT.SRC and OUTPUT.TGT")
    p.set_defaults(func=clean)

    p = sub.add_parser("fastbpe-codes", help="convert subword-nmt codes for fastBPE")
    p.add_argument("input")
    p.add_argument("output")
    p.set_defaults(func=fastbpe_codes)

    p = sub.add_parser("apply-fastbpe", help="apply fastBPE codes")
    p.add_argument("--codes", required=True)
    p.add_argument("input")
    p.add_argument("output")
    p.set_defaults(func=apply_fastbpe)

    args = parser.parse_args(argv)
    if getattr(args, "workers", 1) < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    args.func(args)


if __name__ == "__main__":
    main()
