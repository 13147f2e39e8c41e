"""English Wikipedia articles from the MediaWiki dump excerpt that gensim ships for its tests.

gensim's own ``WikiCorpus`` yields lower-cased tokens; a language model needs readable prose, so
we take the raw XML, keep main-namespace articles that are not redirects, let
``filter_wiki`` remove templates, references, tables and link syntax, and clean up what it
leaves behind (quote markup, ``==Heading==`` lines, gallery captions, list bullets).
"""

from __future__ import annotations

import bz2
import re
import xml.etree.ElementTree as ET

from .base import Document, SourceData, SourceInfo, package_version, read_package_file

DUMP = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
LICENCE = "CC BY-SA 3.0 and GFDL (Wikipedia text, 2016 dump); shipped in gensim (LGPL-2.1-only)"

_HEADING = re.compile(r"^(=+)\s*(.*?)\s*\1$")
_GALLERY = re.compile(r"^(?:File|Image):[^|]*\|(.*)$", re.IGNORECASE)
_BULLET = re.compile(r"^([*#:;]+)\s*")


def _clean_line(line: str) -> str:
    line = line.strip()
    if match := _HEADING.match(line):
        return match.group(2)
    if match := _GALLERY.match(line):
        line = match.group(1)
    line = re.sub(r"\|\s*alt=.*$", "", line)  # image alt text duplicates the caption
    if match := _BULLET.match(line):
        rest = line[match.end() :]
        line = f"- {rest}" if rest and set(match.group(1)) & {"*", "#"} else rest
    line = re.sub(r"[ \t\u00a0]{2,}", " ", line)
    # Removed templates (pronunciations, conversions) leave "(, x)", "()" and " ," behind.
    line = re.sub(r"\(\s*[,;]?\s*\)", "", line)
    line = re.sub(r"\(\s*[,;]\s*", "(", line)
    line = re.sub(r"\s+([,;:.)])", r"\1", line)
    # Table remnants (check marks, lone pipes) have no letter or digit: drop them.
    return line.strip() if re.search(r"\w", line) else ""


def clean_wiki_markup(markup: str) -> str:
    from gensim.corpora.wikicorpus import filter_wiki  # heavy import (scipy), only here

    text = filter_wiki(markup)
    text = re.sub(r"'{2,}", "", text)  # ''italic'' and '''bold'''
    return "\n".join(_clean_line(line) for line in text.splitlines())


def read_wikipedia() -> SourceData:
    raw, record = read_package_file("gensim", DUMP)
    root = ET.fromstring(bz2.decompress(raw))
    ns = {"mw": root.tag[1:].split("}")[0]}  # the export schema version is in the namespace
    documents = []
    for page in root.iterfind("mw:page", ns):
        if page.findtext("mw:ns", namespaces=ns) != "0" or page.find("mw:redirect", ns) is not None:
            continue
        markup = page.findtext("mw:revision/mw:text", default="", namespaces=ns)
        if markup.lstrip().lower().startswith("#redirect"):
            continue
        title = page.findtext("mw:title", namespaces=ns)
        page_id = page.findtext("mw:id", namespaces=ns)
        body = clean_wiki_markup(markup)
        documents.append(Document(f"wikipedia/{page_id}", f"{title}\n\n{body}"))
    info = SourceInfo("wikipedia", "gensim", package_version("gensim"), LICENCE, (record,))
    return SourceData(documents, info)
