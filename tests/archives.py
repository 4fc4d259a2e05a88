"""Small corpora in exactly the formats of the real archives (IWSLT'14 de-en.tgz with its
train.tags and XML files; WMT'14 training tarballs, dev.tgz and test-full.tgz with SGM),
built from bundled Multi30k sentences, so that the recipes run offline on them."""

import gzip
import io
import os
import tarfile

from conftest import multi30k_lines


def add_file(tar, name, text):
    data = text.encode("utf-8") if isinstance(text, str) else text
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def iwslt_train_tags(talks, lang):
    """train.tags.de-en.LANG: per talk, the metadata lines, then one sentence a line."""
    lines = []
    for talk_id, (title, description, sentences) in enumerate(talks, 1):
        lines += [f"<url>http://www.ted.com/talks/talk{talk_id}.html</url>",
                  f"<keywords>talks, {lang}, science</keywords>",
                  f"<talkid>{talk_id}</talkid>",
                  f"<title>{title}</title>",
                  f"<description>{description}</description>"]
        lines += sentences
    return "\n".join(lines) + "\n"


def iwslt_xml(set_id, lang, sentences, ref):
    """An IWSLT XML dev/test file: one <doc> with <seg id="N"> lines."""
    opening = (f'<refset setid="{set_id}" srclang="german" trglang="english" refid="ref">' if ref
               else f'<srcset setid="{set_id}" srclang="german">')
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<mteval>", opening,
             '<doc docid="535" genre="lectures">',
             "<url>http://www.ted.com/talks/talk535.html</url>",
             "<description>TED Talk Subtitles and Transcript: a talk</description>",
             "<keywords>talks, science</keywords>", "<talkid>535</talkid>", "<title>A talk</title>"]
    lines += [f'<seg id="{i}"> {s} </seg>' for i, s in enumerate(sentences, 1)]
    lines += ["</doc>", "</refset>" if ref else "</srcset>", "</mteval>"]
    return "\n".join(lines) + "\n"


IWSLT_TEST_SETS = ["IWSLT14.TED.dev2010", "IWSLT14.TEDX.dev2012", "IWSLT14.TED.tst2010",
                   "IWSLT14.TED.tst2011", "IWSLT14.TED.tst2012"]


def build_iwslt14(out_dir, n_train=460, n_test=8):
    """de-en.tgz as the IWSLT'14 release lays it out; returns what the recipe should keep."""
    de, en = multi30k_lines("train", "de", n_train), multi30k_lines("train", "en", n_train)
    # a curly apostrophe in a test segment: fairseq's recipe turns it into '
    test = {lang: multi30k_lines("test_2016_flickr", lang, n_test * len(IWSLT_TEST_SETS))
            for lang in ("de", "en")}
    test["en"][0] = "It\u2019s a dog."
    talks = {lang: [] for lang in ("de", "en")}
    per_talk = n_train // 4
    for t in range(4):
        chunk = slice(t * per_talk, (t + 1) * per_talk)
        talks["de"].append((f"Vortrag {t}", f"Eine Beschreibung {t}", de[chunk]))
        talks["en"].append((f"Talk {t}", f"A description {t}", en[chunk]))
    path = os.path.join(out_dir, "de-en.tgz")
    os.makedirs(out_dir, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        add_file(tar, "de-en/README", "IWSLT 2014 German-English\n")
        for lang in ("de", "en"):
            add_file(tar, f"de-en/train.tags.de-en.{lang}", iwslt_train_tags(talks[lang], lang))
            add_file(tar, f"de-en/train.de-en.{lang}.xml", "<unused/>\n")
            for k, name in enumerate(IWSLT_TEST_SETS):
                sentences = test[lang][k * n_test:(k + 1) * n_test]
                add_file(tar, f"de-en/{name}.de-en.{lang}.xml",
                         iwslt_xml(name, lang, sentences, ref=(lang == "en")))
    return path, talks, test


def sgm(set_id, lang, sentences, ref):
    """A WMT SGM file: <srcset>/<refset>, <doc>, <p>, <seg id="N">."""
    opening = (f'<refset setid="{set_id}" srclang="any" trglang="{lang}">' if ref
               else f'<srcset setid="{set_id}" srclang="any">')
    lines = [opening, '<doc sysid="ref" docid="1012-bbc" genre="news" origlang="en">', "<p>"]
    lines += [f'<seg id="{i}">{s}</seg>' for i, s in enumerate(sentences, 1)]
    lines += ["</p>", "</doc>", "</refset>" if ref else "</srcset>"]
    return "\n".join(lines) + "\n"


def build_wmt14(out_dir, tgt, n_per_corpus=150, n_test=20):
    """The WMT'14 archives of the en-TGT recipe. The 'tgt' side takes German Multi30k text
    for both de and fr (only the formats matter). Returns {split: {lang: lines}}."""
    from evo_fairseq.corpora import DATASETS

    dataset = DATASETS[f"wmt14-en-{tgt}"]
    os.makedirs(out_dir, exist_ok=True)
    en = multi30k_lines("train", "en", n_per_corpus * len(dataset.train))
    xx = multi30k_lines("train", "de", n_per_corpus * len(dataset.train))
    xx[0] = "„Anführungszeichen“ und ein Bindestrich-Wort."
    expected = {"train": {"en": en, tgt: xx}}
    members = {}
    for k, (archive, prefix) in enumerate(dataset.train):
        part = slice(k * n_per_corpus, (k + 1) * n_per_corpus)
        for lang, lines in (("en", en[part]), (tgt, xx[part])):
            text = "\n".join(lines) + "\n"
            if archive.endswith(".tar"):  # giga-fren: gzipped members in a plain tar
                members.setdefault(archive, []).append((f"{prefix}.{lang}.gz", gzip.compress(text.encode())))
            else:
                members.setdefault(archive, []).append((f"{prefix}.{lang}", text))
    for split, (archive, pattern), source in (("valid", dataset.valid_sgm, "val"),
                                              ("test", dataset.test_sgm, "test_2016_flickr")):
        lines = {"en": multi30k_lines(source, "en", n_test), tgt: multi30k_lines(source, "de", n_test)}
        expected[split] = lines
        for lang, role in (("en", "src"), (tgt, "ref")):
            members.setdefault(archive, []).append(
                (pattern.format(role=role, lang=lang), sgm("newstest", lang, lines[lang], role == "ref")))
        # the plain-text copies that dev.tgz also holds
        for lang in ("en", tgt):
            members[archive].append((os.path.dirname(pattern) + f"/newstest.{lang}", "unused\n"))
    for archive, files in members.items():
        mode = "w" if archive.endswith(".tar") else "w:gz"
        with tarfile.open(os.path.join(out_dir, archive), mode) as tar:
            for name, data in files:
                add_file(tar, name, data)
    return expected
