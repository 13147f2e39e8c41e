"""Registry of text sources: name -> reader returning documents plus source metadata.

All but ``hub`` read real public text shipped inside pip packages (or CPython itself), so the
default study runs offline. Files are located through importlib, never through absolute paths.
"""

from __future__ import annotations

import importlib.util
import inspect
import platform
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .base import (
    Document,
    SourceData,
    SourceInfo,
    package_root,
    package_version,
    read_dist_file,
    read_file,
    read_package_file,
)
from .hub import read_hub
from .shakespeare import read_shakespeare
from .usenet import read_usenet
from .wikipedia import read_wikipedia

NEWS_FILES = ("test/test_data/lee_background.cor", "test/test_data/lee.cor")


def read_news() -> SourceData:
    """ABC news articles of the Lee et al. (2005) similarity corpus: one article per line."""
    documents, records = [], []
    for relative in NEWS_FILES:
        raw, record = read_package_file("gensim", relative)
        records.append(record)
        stem = Path(relative).stem
        lines = raw.decode("latin-1").splitlines()  # the files predate UTF-8 (one has 0xA0...)
        documents += [
            Document(f"news/{stem}/{number:04d}", line.strip())
            for number, line in enumerate(lines)
            if line.strip()
        ]
    licence = (
        "ABC (Australian Broadcasting Corporation) news text, research corpus of Lee, Pincombe "
        "& Welsh 2005, no open licence stated; shipped in gensim test data (LGPL-2.1-only)"
    )
    info = SourceInfo("news", "gensim", package_version("gensim"), licence, tuple(records))
    return SourceData(documents, info)


def read_python_docs() -> SourceData:
    """CPython's pydoc topic help (the text of ``help('if')``): one document per topic."""
    from pydoc_data.topics import topics

    spec = importlib.util.find_spec("pydoc_data.topics")
    assert spec is not None and spec.origin is not None  # imported just above
    _, record = read_file(Path(spec.origin), "pydoc_data/" + Path(spec.origin).name)
    documents = [Document(f"python_docs/{key}", topics[key]) for key in sorted(topics)]
    # The text changes with every Python release, so the interpreter version is the "version".
    info = SourceInfo(
        "python_docs",
        "python",
        platform.python_version(),
        "PSF-2.0 (Python documentation)",
        (record,),
    )
    return SourceData(documents, info)


_PO_HEADER_END = re.compile(r"^(?!#)", re.MULTILINE)


def po_translator_header(po_text: str) -> str:
    """The comment block before the first entry: licence line, "Translators:", one line each."""
    match = _PO_HEADER_END.search(po_text)
    header = po_text[: match.start()] if match else po_text
    # Bare "#" spacer lines and "#," flags carry no text.
    return "\n".join(line for line in header.splitlines() if line.startswith("# "))


def read_credits() -> SourceData:
    """Contributor lists (sympy, django AUTHORS) and Django translators' header lines."""
    files: list[tuple[str, str]] = []  # (recorded path, text)
    records = []
    for distribution in ("sympy", "django"):
        raw, record = read_dist_file(distribution, "licenses/AUTHORS")
        files.append((record.path, raw.decode("utf-8")))
        records.append(record)
    django_root = package_root("django")
    po_paths = [
        path
        for pattern in ("**/locale/*/LC_MESSAGES/django.po", "**/locale/*/LC_MESSAGES/djangojs.po")
        for path in django_root.glob(pattern)
    ]
    for path in po_paths:
        raw, record = read_file(path, "django/" + path.relative_to(django_root).as_posix())
        files.append((record.path, po_translator_header(raw.decode("utf-8"))))
        records.append(record)
    order = sorted(range(len(files)), key=lambda i: files[i][0])  # deterministic across systems
    documents = [Document(f"credits/{files[i][0]}", files[i][1]) for i in order if files[i][1]]
    licence = (
        "sympy AUTHORS: BSD-3-Clause (sympy); django AUTHORS and .po headers: BSD-3-Clause "
        "(django). Names and e-mail addresses of real people: report them masked only"
    )
    versions = {d: package_version(d) for d in ("sympy", "django")}
    info = SourceInfo(
        "credits",
        "sympy+django",
        f"{versions['sympy']}+{versions['django']}",
        licence,
        tuple(records[i] for i in order),
        {"versions": versions},
    )
    return SourceData(documents, info)


# Offline readers take no options; ``hub`` takes its config block (path, name, split, ...).
SOURCES: dict[str, Callable[..., SourceData]] = {
    "wikipedia": read_wikipedia,
    "shakespeare": read_shakespeare,
    "news": read_news,
    "python_docs": read_python_docs,
    "usenet": read_usenet,
    "credits": read_credits,
    "hub": read_hub,
}


def read_source(
    name: str, hub: Mapping[str, Any] | None = None, order_seed: int | None = None
) -> SourceData:
    """Documents and metadata of source ``name``; ``hub`` is the hub block (``hub`` only).

    A hub block given to an offline source is ignored: schema defaults may fill it for every
    dataset. ``order_seed`` (hub only): the documents come lazily in a seeded random order, for
    a reader that stops early (``read_hub``).
    """
    if name not in SOURCES:
        raise ValueError(f"unknown text source {name!r}; known sources: {', '.join(SOURCES)}")
    if name == "hub":
        if not hub or not hub.get("path"):
            raise ValueError(
                "hub.path: the hub source needs a dataset path or loader name "
                "(e.g. 'wikitext', or 'text' with hub.data_files)"
            )
        options = {key: value for key, value in hub.items() if value is not None}
        known = set(inspect.signature(read_hub).parameters) - {"order_seed"}
        if unknown := sorted(set(options) - known):
            raise ValueError(
                f"hub.{unknown[0]}: unknown key; known keys: {', '.join(sorted(known))}"
            )
        return read_hub(**options, order_seed=order_seed)
    data = SOURCES[name]()
    if not data.documents:
        raise ValueError(f"source {name!r} produced no documents; check its package install")
    return data


__all__ = ["SOURCES", "Document", "SourceData", "SourceInfo", "read_source"]
