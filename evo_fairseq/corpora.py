# Copyright (c) evo-fairseq contributors.
#
# This source code is licensed under the MIT license found in the
# LICENSE file in the root directory of this source tree.
"""Downloads and raw-text extraction of the standard translation corpora.

    python -m evo_fairseq.corpora download DATASET --dir ORIG [--offline-dir DIR]
    python -m evo_fairseq.corpora extract DATASET --dir ORIG --out RAW

DATASET is one of ``iwslt14-de-en``, ``wmt14-en-de``, ``wmt14-en-fr``.

``download`` fetches each archive of the dataset into ORIG. A file already there
is checked and kept; an interrupted download resumes from ``FILE.part`` (HTTP
range requests); a finished one is checked against the server's length and,
where known, its size and SHA-256, and must read as a complete archive before
it is renamed into place. With ``--offline-dir DIR`` (or ``$EVO_FAIRSEQ_OFFLINE_DIR``)
nothing is fetched: each archive is taken from DIR under its usual file name.

``extract`` reads the archives and writes the raw parallel text of each split,
``RAW/{train,valid,test}.{src,tgt}``, exactly as fairseq's
``examples/translation/prepare-*.sh`` select it (IWSLT'14: train.tags without
the ``<url>``, ``<talkid>``, ``<keywords>`` lines and ``<title>``/``<description>``
tags, the TED/TEDX XML ``<seg>`` lines of dev2010, dev2012, tst2010-2012 as test;
WMT'14: the training corpora concatenated, newstest2013 as valid and newstest2014
as test from their SGM files). IWSLT'14 has no valid here: it is every 23rd
training line after cleaning (``prepare-pair.sh --valid-every 23``). The files
are written into ``RAW.tmp`` and renamed to RAW when all are complete.
"""

import argparse
import gzip
import hashlib
import io
import os
import re
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

OFFLINE_ENV = "EVO_FAIRSEQ_OFFLINE_DIR"


@dataclass
class Archive:
    url: str
    size: Optional[int] = None
    sha256: Optional[str] = None

    @property
    def name(self):
        return self.url.rsplit("/", 1)[-1]


@dataclass
class Dataset:
    src: str
    tgt: str
    archives: List[Archive]
    # (archive name, member path without the ".lang" suffix); members may be gzipped
    train: List[Tuple[str, str]] = field(default_factory=list)
    # (archive name, member path with {lang} and {role} = src or ref) of SGM files
    valid_sgm: Optional[Tuple[str, str]] = None
    test_sgm: Optional[Tuple[str, str]] = None


WMT_EUROPARL = Archive("http://statmt.org/wmt13/training-parallel-europarl-v7.tgz")
WMT_COMMONCRAWL = Archive("http://statmt.org/wmt13/training-parallel-commoncrawl.tgz")
WMT14_DEV = Archive("http://statmt.org/wmt14/dev.tgz")
WMT14_TEST = Archive("http://statmt.org/wmt14/test-full.tgz")

DATASETS = {
    "iwslt14-de-en": Dataset(
        "de", "en", [Archive("http://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz")]
    ),
    "wmt14-en-de": Dataset(
        "en", "de",
        [WMT_EUROPARL, WMT_COMMONCRAWL,
         Archive("http://data.statmt.org/wmt17/translation-task/training-parallel-nc-v12.tgz"),
         WMT14_DEV, WMT14_TEST],
        train=[("training-parallel-europarl-v7.tgz", "training/europarl-v7.de-en"),
               ("training-parallel-commoncrawl.tgz", "commoncrawl.de-en"),
               ("training-parallel-nc-v12.tgz", "training/news-commentary-v12.de-en")],
        valid_sgm=("dev.tgz", "dev/newstest2013-{role}.{lang}.sgm"),
        test_sgm=("test-full.tgz", "test-full/newstest2014-deen-{role}.{lang}.sgm"),
    ),
    "wmt14-en-fr": Dataset(
        "en", "fr",
        [WMT_EUROPARL, WMT_COMMONCRAWL,
         Archive("http://statmt.org/wmt13/training-parallel-un.tgz"),
         Archive("http://statmt.org/wmt14/training-parallel-nc-v9.tgz"),
         Archive("http://statmt.org/wmt10/training-giga-fren.tar"),
         WMT14_DEV, WMT14_TEST],
        train=[("training-parallel-europarl-v7.tgz", "training/europarl-v7.fr-en"),
               ("training-parallel-commoncrawl.tgz", "commoncrawl.fr-en"),
               ("training-parallel-un.tgz", "un/undoc.2000.fr-en"),
               ("training-parallel-nc-v9.tgz", "training/news-commentary-v9.fr-en"),
               ("training-giga-fren.tar", "giga-fren.release2.fixed")],
        valid_sgm=("dev.tgz", "dev/newstest2013-{role}.{lang}.sgm"),
        test_sgm=("test-full.tgz", "test-full/newstest2014-fren-{role}.{lang}.sgm"),
    ),
}

IWSLT14_TEST = ["IWSLT14.TED.dev2010", "IWSLT14.TEDX.dev2012", "IWSLT14.TED.tst2010",
                "IWSLT14.TED.tst2011", "IWSLT14.TED.tst2012"]


class CorpusError(Exception):
    """A download or archive problem, with a message for the user."""


# --------------------------------------------------------------------- download

def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_archive(path, archive, expected_length=None):
    """Raise CorpusError unless ``path`` has the known size/checksum and reads as
    a complete archive (every member header, and the whole gzip stream with its CRC)."""
    size = os.path.getsize(path)
    for what, expected in (("size", archive.size), ("length announced by the server", expected_length)):
        if expected is not None and size != expected:
            raise CorpusError(f"{path}: {size} bytes, but the {what} is {expected} bytes")
    if archive.sha256 is not None:
        digest = _sha256(path)
        if digest != archive.sha256:
            raise CorpusError(f"{path}: SHA-256 {digest} differs from the known {archive.sha256}")
    try:
        with tarfile.open(path) as tar:
            tar.getmembers()  # every member header
        with open(path, "rb") as f:
            gzipped = f.read(2) == b"\x1f\x8b"
        if gzipped:  # the whole stream, so that a truncation or CRC error shows
            with gzip.open(path) as f:
                while f.read(1 << 24):
                    pass
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise CorpusError(f"{path}: not a complete {archive.name} archive ({error})") from None


def _stamp(dest):
    """Where the size and mtime of ``dest`` are kept once it has passed check_archive."""
    return os.path.join(os.path.dirname(dest), f".{os.path.basename(dest)}.checked")


def _identity(path):
    stat = os.stat(path)  # of the target, for an offline link
    return f"{stat.st_size} {stat.st_mtime_ns}\n"


def check_once(path, archive, stamp):
    """check_archive, skipped when ``path`` is unchanged since it last passed (the
    ``stamp`` file says so): a rerun should not decompress gigabytes of WMT archives again."""
    if os.path.exists(stamp) and open(stamp).read() == _identity(path):
        return
    check_archive(path, archive)
    with open(stamp, "w") as f:
        f.write(_identity(path))


def _progress(name, done, total):
    if total:
        print(f"\r  {name}: {done / 2**20:.1f} of {total / 2**20:.1f} MiB", end="", file=sys.stderr)
    else:
        print(f"\r  {name}: {done / 2**20:.1f} MiB", end="", file=sys.stderr)


def fetch(archive, dest_dir, offline_dir=None, timeout=60):
    """Put ``archive`` at ``dest_dir/archive.name``, checked; returns the path."""
    os.makedirs(dest_dir, exist_ok=True)
    dest = os.path.join(dest_dir, archive.name)
    if os.path.exists(dest):
        check_once(dest, archive, _stamp(dest))
        print(f"  {archive.name}: already there, checked", file=sys.stderr)
        return dest
    if offline_dir:
        source = os.path.join(offline_dir, archive.name)
        if not os.path.isfile(source):
            raise CorpusError(f"offline mode: {source} is missing (download it from {archive.url})")
        check_once(source, archive, _stamp(dest))
        if os.path.lexists(dest + ".link"):
            os.remove(dest + ".link")
        os.symlink(os.path.abspath(source), dest + ".link")
        os.replace(dest + ".link", dest)
        print(f"  {archive.name}: taken from {offline_dir}", file=sys.stderr)
        return dest

    part = dest + ".part"
    start = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(archive.url, headers={"User-Agent": "evo-fairseq"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if start and response.status != 206:
                start = 0  # the server ignored the range: start again
            length = response.headers.get("Content-Length")
            total = start + int(length) if length is not None else None
            if start:
                print(f"  {archive.name}: resuming at {start} bytes", file=sys.stderr)
            with open(part, "ab" if start else "wb") as f:
                done = start
                for block in iter(lambda: response.read(1 << 20), b""):
                    f.write(block)
                    done += len(block)
                    _progress(archive.name, done, total)
            print(file=sys.stderr)
    except (urllib.error.URLError, OSError) as error:
        kept = f"; {os.path.getsize(part)} bytes kept in {part}, run again to resume" if os.path.exists(part) else ""
        raise CorpusError(f"download of {archive.url} failed: {error}{kept}") from None
    try:
        check_archive(part, archive, expected_length=total)
    except CorpusError:
        os.remove(part)
        raise
    os.replace(part, dest)
    with open(_stamp(dest), "w") as f:  # checked: a rerun need not read it again
        f.write(_identity(dest))
    return dest


# --------------------------------------------------------------------- extract

SEG = re.compile(r'<seg id="[0-9]*">\s*')
END_SEG = re.compile(r"\s*</seg>\s*")


def seg_lines(lines):
    """The ``<seg id=N>`` lines of an IWSLT XML or WMT SGM file, as fairseq's
    ``grep '<seg id' | sed`` takes them (no entity decoding, curly apostrophe -> ')."""
    for line in lines:
        if "<seg id" in line:
            yield END_SEG.sub("", SEG.sub("", line)).replace("\u2019", "'")


def iwslt_train_lines(lines):
    """train.tags lines without the talk metadata, as fairseq's recipe filters them."""
    for line in lines:
        if "<url>" in line or "<talkid>" in line or "<keywords>" in line:
            continue
        for tag in ("<title>", "</title>", "<description>", "</description>"):
            line = line.replace(tag, "")
        yield line


class ArchiveReader:
    """Members of a tar archive by path, whatever the top folder is called."""

    def __init__(self, path):
        self.path = path
        try:
            self.tar = tarfile.open(path)
            self.members = {m.name.lstrip("./"): m for m in self.tar.getmembers() if m.isfile()}
        except (tarfile.TarError, EOFError, OSError) as error:
            raise CorpusError(f"{path}: cannot read the archive ({error})") from None

    def lines(self, name):
        """The member's lines, streamed (gzipped members decompressed), without newlines."""
        member = self.members.get(name)
        if member is None:
            raise CorpusError(f"{self.path}: no member {name} (the archive has {len(self.members)} "
                              f"files, e.g. {', '.join(sorted(self.members)[:5])})")
        stream = self.tar.extractfile(member)
        if name.endswith(".gz"):
            stream = gzip.GzipFile(fileobj=stream)
        for line in io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="\n"):
            yield line.rstrip("\n")

    def has(self, name):
        return name in self.members


def _write(path, lines):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        n = 0
        for line in lines:
            f.write(line.rstrip("\r") + "\n")
            n += 1
    return n


def _check_parallel(split, src, tgt, counts):
    if counts[src] != counts[tgt]:
        raise CorpusError(f"{split}: {counts[src]} {src} lines but {counts[tgt]} {tgt} lines")
    print(f"  {split}: {counts[src]} sentence pairs", file=sys.stderr)


def extract_iwslt14(dataset, orig, raw):
    reader = ArchiveReader(os.path.join(orig, dataset.archives[0].name))
    pair = f"{dataset.src}-{dataset.tgt}"
    for split, names in (("train", [f"train.tags.{pair}"]),
                         ("test", [f"{name}.{pair}" for name in IWSLT14_TEST])):
        counts = {}
        for lang in (dataset.src, dataset.tgt):
            lines = []
            for name in names:
                if split == "train":
                    lines += iwslt_train_lines(reader.lines(f"{pair}/{name}.{lang}"))
                else:
                    lines += seg_lines(reader.lines(f"{pair}/{name}.{lang}.xml"))
            counts[lang] = _write(os.path.join(raw, f"{split}.{lang}"), lines)
        _check_parallel(split, dataset.src, dataset.tgt, counts)


def extract_wmt14(dataset, orig, raw):
    readers = {}

    def reader(name):
        if name not in readers:
            readers[name] = ArchiveReader(os.path.join(orig, name))
        return readers[name]

    counts = {}
    for lang in (dataset.src, dataset.tgt):
        with open(os.path.join(raw, f"train.{lang}"), "w", encoding="utf-8", newline="\n") as f:
            n = 0
            for archive, prefix in dataset.train:
                name = f"{prefix}.{lang}"
                name = name if reader(archive).has(name) else name + ".gz"
                per_corpus = 0
                for line in reader(archive).lines(name):
                    f.write(line + "\n")
                    per_corpus += 1
                print(f"  train: {prefix}.{lang}: {per_corpus} lines", file=sys.stderr)
                n += per_corpus
            counts[lang] = n
    _check_parallel("train", dataset.src, dataset.tgt, counts)
    for split, (archive, pattern) in (("valid", dataset.valid_sgm), ("test", dataset.test_sgm)):
        counts = {}
        for lang, role in ((dataset.src, "src"), (dataset.tgt, "ref")):
            lines = reader(archive).lines(pattern.format(role=role, lang=lang))
            counts[lang] = _write(os.path.join(raw, f"{split}.{lang}"), seg_lines(lines))
        _check_parallel(split, dataset.src, dataset.tgt, counts)


def extract(name, orig, raw):
    dataset = DATASETS[name]
    if os.path.isdir(raw):
        print(f"  {raw}: already extracted", file=sys.stderr)
        return
    tmp = raw.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        (extract_iwslt14 if name.startswith("iwslt") else extract_wmt14)(dataset, orig, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.replace(tmp, raw)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m evo_fairseq.corpora", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("download", help="fetch (or take offline) and check the archives")
    p.add_argument("dataset", choices=sorted(DATASETS))
    p.add_argument("--dir", required=True, help="where the archives go")
    p.add_argument("--offline-dir", default=os.environ.get(OFFLINE_ENV) or None,
                   help=f"take the archives from this folder, fetch nothing (default: ${OFFLINE_ENV})")
    p = sub.add_parser("extract", help="raw parallel text of each split")
    p.add_argument("dataset", choices=sorted(DATASETS))
    p.add_argument("--dir", required=True, help="where the archives are")
    p.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "download":
            if args.offline_dir and not os.path.isdir(args.offline_dir):
                raise CorpusError(f"--offline-dir {args.offline_dir} is not a directory")
            for archive in DATASETS[args.dataset].archives:
                fetch(archive, args.dir, args.offline_dir)
        else:
            extract(args.dataset, args.dir, args.out)
    except CorpusError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
