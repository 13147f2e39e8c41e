"""Text sources, segmentation and splits (unlearnbench.corpora).

Offline sources are read once per session (wikipedia, the slowest, takes a few seconds).
Split tests use small ``max_examples`` caps so that the whole file runs in seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from unlearnbench.corpora import SOURCES, SPLITS, Document, SplitConfig, prepare_corpus, read_source
from unlearnbench.corpora.base import package_root
from unlearnbench.corpora.prepare import KINDS
from unlearnbench.corpora.shakespeare import play_to_text
from unlearnbench.corpora.splits import (
    Example,
    assign_splits,
    cut_long_line,
    normalise,
    read_split,
    segment,
    segment_documents,
    split_sizes,
)
from unlearnbench.corpora.usenet import restricted_loads
from unlearnbench.pii import (
    EMAIL_RE,
    count_pii,
    find_emails,
    mask_email,
    mask_pii,
)

OFFLINE = ("wikipedia", "shakespeare", "news", "python_docs", "usenet", "credits")


def config(**overrides) -> SplitConfig:
    values = dict(
        validation_fraction=0.1,
        test_fraction=0.1,
        max_example_chars=400,
        min_example_chars=32,
        max_examples=200,
        seed=0,
    )
    return SplitConfig(**{**values, **overrides})


@pytest.fixture(scope="session")
def source_data():
    cache = {}

    def read(name: str):
        if name not in cache:
            cache[name] = read_source(name)
        return cache[name]

    return read


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """Keep ``datasets``' cache of the local test files out of the user's home."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def split_paths(directory: Path) -> dict[str, Path]:
    return {split: directory / f"{split}.parquet" for split in SPLITS}


def run_prepare(name, source, split_config, directory: Path) -> dict:
    paths = split_paths(directory)
    return prepare_corpus(
        name, source, split_config, paths["train"], paths["validation"], paths["test"]
    )


# ---------------------------------------------------------------- sources


def test_registry_offers_every_offline_source_and_hub():
    assert set(SOURCES) == {*OFFLINE, "hub"}


def test_unknown_source_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown text source 'nope'.*wikipedia.*hub"):
        read_source("nope")


@pytest.mark.parametrize("name", OFFLINE)
def test_offline_source_has_documents_and_provenance(source_data, name):
    data = source_data(name)
    assert data.documents and all(d.text.strip() for d in data.documents)
    ids = [d.doc_id for d in data.documents]
    assert len(set(ids)) == len(ids)
    assert all(doc_id.startswith(f"{name}/") for doc_id in ids)
    info = data.info.to_dict()
    assert info["source"] == name and info["package"] and info["version"] and info["licence"]
    assert info["files"] and all(re.fullmatch(r"[0-9a-f]{64}", f["sha256"]) for f in info["files"])
    assert all(not Path(f["path"]).is_absolute() for f in info["files"])
    json.dumps(info)  # goes into the manifest


def test_recorded_sha256_is_that_of_the_installed_file(source_data):
    record = source_data("usenet").info.files[0]
    path = package_root("gensim").parent / record.path
    assert hashlib.sha256(path.read_bytes()).hexdigest() == record.sha256


def test_wikipedia_articles_are_readable_prose(source_data):
    docs = {d.text.split("\n", 1)[0]: d.text for d in source_data("wikipedia").documents}
    assert len(docs) == 106  # 206 pages minus 99 redirects and 1 Wikipedia: page
    assert "Anarchism" in docs and "Albert Einstein" in docs
    assert "Anarchism is a political philosophy" in docs["Anarchism"]
    text = "\n".join(docs.values())
    for markup in ("'''", "[[", "]]", "{{", "}}", "<ref", "==", "|alt="):
        assert markup not in text, markup
    assert "Étienne" in text  # case and accents kept, unlike gensim's tokens


def test_shakespeare_speeches_name_their_speaker(source_data):
    plays = {d.doc_id: d.text for d in source_data("shakespeare").documents}
    assert len(plays) == 38
    hamlet = plays["shakespeare/tragedies/hamlet"]
    assert hamlet.startswith("Hamlet\n\nACT I")
    assert "HAMLET: To be, or not to be: that is the question:" in hamlet
    assert "HAMLET: [Aside] A little more than kin, and less than kind." in hamlet
    assert "\n[Enter HORATIO and MARCELLUS]\n" in hamlet
    assert not re.search(r"[*_\\]", "\n".join(plays.values()))


def test_shakespeare_markdown_conversion_on_a_small_play():
    markdown = (
        "# A Play\n\n## ACT I\n\n### SCENE I. A room.\n\n_Enter A and B_\n\n"
        "**A**  \n_\\[Aside]_  \nFirst line,  \nsecond line.\n\n*Sound a horn.*\n\n"
        "Still A speaking.\n\n**B**  \nShort.\n"
    )
    assert play_to_text(markdown) == (
        "A Play\n\nACT I\n\nSCENE I. A room.\n\n[Enter A and B]\n\n"
        "A: [Aside] First line,\nsecond line.\n\n[Sound a horn.]\n\nA: Still A speaking.\n\n"
        "B: Short."
    )


def test_news_articles(source_data):
    docs = source_data("news").documents
    assert len(docs) == 350  # 300 background + 50 test articles
    assert docs[300].doc_id == "news/lee/0000" and "senator Brian Greig" in docs[300].text


def test_python_docs_topics(source_data):
    data = source_data("python_docs")
    topics = {d.doc_id.split("/", 1)[1]: d.text for d in data.documents}
    assert 'The "if" statement' in topics["if"]
    assert data.info.package == "python" and data.info.licence.startswith("PSF")


def test_usenet_posts_keep_headers_and_addresses(source_data):
    docs = source_data("usenet").documents
    assert len(docs) == 200
    assert all(re.search(r"^Subject: ", d.text, re.MULTILINE) for d in docs)
    assert all(re.search(r"^From: ", d.text, re.MULTILINE) for d in docs)
    # One sender still used a UUCP bang path (raptor!rlove): 1993.
    assert sum(bool(re.search(r"^From: .*@", d.text, re.MULTILINE)) for d in docs) == 199
    assert {d.doc_id.split("/")[1] for d in docs} == {"alt.atheism", "sci.space"}
    pii = count_pii(d.text for d in docs)
    assert pii["emails_unique"] > 300 and pii["phones_unique"] > 20


def test_credits_hold_thousands_of_addresses(source_data):
    data = source_data("credits")
    paths = [d.doc_id for d in data.documents]
    assert paths == sorted(paths)
    assert "credits/sympy-1.14.0.dist-info/licenses/AUTHORS" in paths
    assert "credits/django/conf/locale/de/LC_MESSAGES/django.po" in paths
    texts = "\n".join(d.text for d in data.documents)
    assert "msgid" not in texts  # only the translators' header of each .po file
    assert count_pii([texts])["emails_unique"] > 1000


def test_message_ids_are_not_counted_as_addresses():
    post = (
        "From: strom@Watson.Ibm.Com (Rob Strom)\nMessage-ID: <1993Apr5.1745@watson.ibm.com>\n"
        "References: <16BA8C146.I3150101@dbstu1.rz.tu-bs.de>\n <1p387f$jh3@fido.asd.sgi.com>\n\n"
        "In article <1993Apr1.1@cs.cmu.edu> STROM@watson.ibm.com writes:\n"
    )
    assert find_emails(post) == ["strom@watson.ibm.com", "strom@watson.ibm.com"]


# ---------------------------------------------------------------- restricted unpickler


class _RunsCommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("protocol", [0, pickle.HIGHEST_PROTOCOL])
def test_restricted_unpickler_refuses_os_system(tmp_path, protocol):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_RunsCommand(marker), protocol=protocol)
    assert b"system" in payload
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load global \w+\.system"):
        restricted_loads(payload)
    assert not marker.exists()


def test_restricted_unpickler_refuses_other_builtins():
    with pytest.raises(pickle.UnpicklingError, match=r"builtins\.eval"):
        restricted_loads(pickle.dumps(eval))


def test_restricted_unpickler_loads_plain_data():
    assert restricted_loads(pickle.dumps({"data": ["a"], "n": 1}, protocol=0)) == {
        "data": ["a"],
        "n": 1,
    }


# ---------------------------------------------------------------- privacy


def test_mask_email_never_returns_the_address(source_data):
    addresses = set()
    for name in ("credits", "usenet"):
        for document in source_data(name).documents:
            addresses.update(EMAIL_RE.findall(document.text))
    assert len(addresses) > 3000
    masks = {}
    for address in addresses:
        masked = mask_email(address)
        local, domain = address.lower().rsplit("@", 1)
        assert address.lower() not in masked.lower()
        assert (len(local) < 2 or local not in masked) and domain not in masked
        assert re.fullmatch(r".\*\*\*@\*\*\*\.[a-z]+#[0-9a-f]{8}", masked), masked
        masks.setdefault(masked, set()).add(address.lower())
    assert all(len(group) == 1 for group in masks.values())  # no two people share a mask
    assert mask_email("Strom@Watson.Ibm.Com") == mask_email("strom@watson.ibm.com")
    assert mask_email("not an address") != "not an address"


def test_mask_pii_leaves_no_address_or_phone(source_data):
    text = "\n".join(d.text for d in source_data("usenet").documents)
    masked = mask_pii(text)
    assert EMAIL_RE.search(masked) is None
    assert count_pii([masked]) == {k: 0 for k in count_pii([""])}


# ---------------------------------------------------------------- split config


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("validation_fraction", 0),
        ("validation_fraction", 1),
        ("validation_fraction", "0.1"),
        ("validation_fraction", True),
        ("test_fraction", -0.1),
        ("max_example_chars", 0),
        ("max_example_chars", 400.0),
        ("min_example_chars", -1),
        ("min_example_chars", 401),
        ("max_examples", 2),
        ("max_examples", 100.0),
        ("max_examples", True),
        ("seed", -1),
        ("seed", "0"),
    ],
)
def test_bad_split_config_names_the_key(key, value):
    with pytest.raises(ValueError, match=rf"^data\.{key}: "):
        config(**{key: value})


def test_fractions_must_leave_training_data():
    with pytest.raises(ValueError, match=r"data\.validation_fraction \+ data\.test_fraction"):
        config(validation_fraction=0.5, test_fraction=0.5)


def test_split_config_accepts_no_cap():
    assert config(max_examples=None).max_examples is None


# ---------------------------------------------------------------- segmentation


def test_normalise():
    assert normalise("Cafe\u0301  \r\n\n\n\n\nb \t\nc\n\n") == "Café\n\nb\nc"


def test_cut_long_line_cuts_at_whitespace_and_prefers_sentence_ends():
    line = "One two three. Four five six seven eight nine ten eleven."
    pieces = cut_long_line(line, 24)
    assert pieces[0] == "One two three."  # the sentence end lies in the window's second half
    assert all(len(p) <= 24 for p in pieces) and " ".join(pieces).split() == line.split()
    assert cut_long_line(line, 40)[0] == "One two three. Four five six seven eight"
    assert cut_long_line("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]  # no whitespace at all


def test_segment_packs_paragraphs_up_to_the_limit():
    text = "aaaa aaaa\n\nbbbb bbbb\n\ncccc cccc"
    assert segment(text, 20) == ["aaaa aaaa\n\nbbbb bbbb", "cccc cccc"]
    assert segment(text, 1000) == [text]


@pytest.mark.parametrize("name", OFFLINE)
def test_segmentation_keeps_every_word_in_order(source_data, name):
    """Reference: the examples, concatenated, hold the document's characters in order.

    (Only whitespace may change; a word longer than the limit, e.g. a bang path, is cut hard.)
    """

    def visible(text: str) -> str:
        return re.sub(r"\s", "", text)

    for document in source_data(name).documents[:5]:
        examples = segment(document.text, 120)
        assert all(len(e) <= 120 for e in examples)
        assert visible("".join(examples)) == visible(normalise(document.text))


def test_duplicates_and_short_examples_are_dropped():
    documents = [
        Document("a", "Shared paragraph of text.\n\nOnly in a, long enough."),
        Document("b", "Shared paragraph of text.\n\nshort"),
    ]
    segmented = segment_documents(documents, config(max_example_chars=30, min_example_chars=10))
    assert [(e.doc_id, e.text) for e in segmented.examples] == [
        ("a", "Shared paragraph of text."),
        ("a", "Only in a, long enough."),
    ]
    assert (segmented.total, segmented.duplicates, segmented.too_short) == (4, 1, 1)


# ---------------------------------------------------------------- splits


@pytest.mark.parametrize("name", OFFLINE)
def test_splits_are_disjoint_and_sized(source_data, name):
    cfg = config(max_examples=300, validation_fraction=0.1, test_fraction=0.05)
    examples = segment_documents(source_data(name).documents, cfg).examples
    splits = assign_splits(examples, cfg, name)
    sizes = {split: len(splits[split]) for split in SPLITS}
    assert sizes == split_sizes(300, cfg) == {"train": 255, "validation": 30, "test": 15}
    texts = [e.text for split in SPLITS for e in splits[split]]
    assert len(set(texts)) == len(texts)
    assert all(32 <= len(t) <= 400 for t in texts)


def test_uncapped_split_uses_every_example_once():
    examples = [Example(f"d{i}", f"text {i}") for i in range(101)]
    splits = assign_splits(examples, config(max_examples=None), "toy")
    assert sorted(e.text for s in SPLITS for e in splits[s]) == sorted(e.text for e in examples)
    assert [len(splits[s]) for s in SPLITS] == [81, 10, 10]
    ordered = [examples.index(e) for e in splits["train"]]
    assert ordered == sorted(ordered)  # corpus order inside a split


def test_split_assignment_depends_on_seed_and_dataset_only():
    examples = [Example("d", f"text {i}") for i in range(50)]
    first = assign_splits(examples, config(), "a")
    assert first == assign_splits(examples, config(), "a")
    assert first != assign_splits(examples, config(seed=1), "a")
    assert first != assign_splits(examples, config(), "b")


def test_too_small_corpus_names_dataset_count_and_key():
    examples = [Example("d", "only one"), Example("d", "and two")]
    with pytest.raises(ValueError, match=r"dataset 'tiny': only 2 examples.*data\.max_examples"):
        assign_splits(examples, config(), "tiny")


# ---------------------------------------------------------------- prepare_corpus


def test_prepare_corpus_is_byte_deterministic(tmp_path):
    source = {"source": "usenet", "kind": "realworld"}
    cfg = config(max_examples=120)
    first = run_prepare("usenet", source, cfg, tmp_path / "one")
    second = run_prepare("usenet", source, cfg, tmp_path / "two")
    assert first == second
    for split, path in split_paths(tmp_path / "one").items():
        other = split_paths(tmp_path / "two")[split]
        assert path.read_bytes() == other.read_bytes()
        assert first["splits"][split]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_prepare_corpus_writes_parquet_splits_and_manifest(tmp_path):
    cfg = config(max_examples=150)
    manifest = run_prepare("news", {"source": "news", "kind": "nlp"}, cfg, tmp_path)
    paths = split_paths(tmp_path)
    texts = Counter()
    for split in SPLITS:
        table = pq.read_table(paths[split])
        assert table.column_names == ["text", "doc_id", "example_id"]
        assert str(table.schema.field("example_id").type) == "int64"
        rows = table.to_pydict()
        assert rows["example_id"] == list(range(table.num_rows))
        summary = manifest["splits"][split]
        assert summary["examples"] == table.num_rows
        assert summary["characters"] == sum(map(len, rows["text"]))
        assert summary["snippets"] == [t[:200] for t in rows["text"][:3]]
        texts.update(rows["text"])
        assert [e.text for e in read_split(paths[split])] == rows["text"]
    assert sum(texts.values()) == len(texts) == 150
    assert manifest["source"]["package"] == "gensim" and manifest["source"]["version"]
    assert manifest["documents"]["count"] == 350
    assert manifest["split_config"]["max_examples"] == 150
    json.dumps(manifest, allow_nan=False)


def test_realworld_snippets_are_masked(tmp_path):
    manifest = run_prepare(
        "credits", {"source": "credits", "kind": "realworld"}, config(max_examples=60), tmp_path
    )
    snippets = [s for split in SPLITS for s in manifest["splits"][split]["snippets"]]
    assert any("***@***." in s for s in snippets)
    assert not any(EMAIL_RE.search(s) for s in snippets)
    assert sum(manifest["splits"][s]["pii"]["emails_total"] for s in SPLITS) > 0


def test_unknown_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"datasets\.x\.kind: 'real-world'.*" + KINDS[0]):
        run_prepare("x", {"source": "news", "kind": "real-world"}, config(), tmp_path)


# ---------------------------------------------------------------- hub path, offline


def _lines_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("".join(f"Line number {i} of a local text corpus.\n\n" for i in range(40)))
    return path


def test_hub_source_reads_local_text_file(tmp_path, hf_cache):
    path = _lines_file(tmp_path)
    hub = {
        "path": "text",
        "name": None,
        "split": "train",
        "text_field": "text",
        "revision": None,
        "data_files": str(path),
    }
    data = read_source("hub", hub)
    assert [d.text for d in data.documents][:2] == [
        "Line number 0 of a local text corpus.",
        "Line number 1 of a local text corpus.",
    ]
    assert data.documents[1].doc_id == "hub/text/train/2"  # row numbers keep the empty rows
    assert data.info.files[0].sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert data.info.package == "datasets"


def test_hub_source_reads_local_json_through_prepare_corpus(tmp_path, hf_cache):
    path = tmp_path / "rows.jsonl"
    path.write_text(
        "".join(
            json.dumps({"body": f"Row {i}: a json document long enough to keep.", "id": i}) + "\n"
            for i in range(30)
        )
    )
    source = {
        "source": "hub",
        "kind": "nlp",
        "hub": {
            "path": "json",
            "split": "train",
            "text_field": "body",
            "data_files": [str(path)],
            "name": None,
            "revision": None,
        },
    }
    manifest = run_prepare("local_json", source, config(max_examples=None), tmp_path / "out")
    assert [manifest["splits"][s]["examples"] for s in SPLITS] == [24, 3, 3]
    assert manifest["source"]["details"]["text_field"] == "body"


def test_hub_source_names_a_missing_text_field(tmp_path, hf_cache):
    hub = {
        "path": "text",
        "split": "train",
        "text_field": "content",
        "data_files": str(_lines_file(tmp_path)),
    }
    with pytest.raises(ValueError, match=r"hub\.text_field: column 'content'.*columns: text"):
        read_source("hub", hub)


def test_hub_source_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"hub\.trust_remote_code: unknown key"):
        read_source("hub", {"path": "wikitext", "trust_remote_code": True})


def test_offline_source_ignores_a_default_hub_block(source_data):
    hub_defaults = {"path": None, "name": None, "split": "train", "text_field": "text"}
    assert read_source("usenet", hub_defaults).documents == source_data("usenet").documents
