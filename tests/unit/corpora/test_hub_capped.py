"""A capped hub split is read lazily, in a seeded random row order, until data.max_examples
examples are kept: the data stage holds those, not the split (WikiText-103, CNN/DailyMail).
Tested on a local json dataset (datasets' builder, no network) 40 times larger than the cap."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from unlearnbench.corpora import hub
from unlearnbench.corpora.prepare import prepare_corpus
from unlearnbench.corpora.sources import read_source
from unlearnbench.corpora.splits import SPLITS, SplitConfig, read_split

ROWS, CAP = 2000, 50


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture
def big_jsonl(tmp_path) -> Path:
    path = tmp_path / "rows.jsonl"
    rows = []
    for i in range(ROWS):
        body = "" if i % 7 == 0 else f"Article {i}: " + " ".join(f"word{i}x{j}" for j in range(30))
        rows.append(json.dumps({"body": body}))
    path.write_text("\n".join(rows) + "\n")
    return path


def source(path: Path) -> dict:
    hub_block = {"path": "json", "split": "train", "text_field": "body", "data_files": [str(path)]}
    return {"source": "hub", "kind": "nlp", "hub": hub_block}


def split_config(max_examples, seed=0) -> SplitConfig:
    return SplitConfig(0.1, 0.1, 400, 32, max_examples, seed)


def prepare(src, cfg, out: Path) -> dict:
    paths = [out / f"{s}.parquet" for s in SPLITS]
    return prepare_corpus("big", src, cfg, *paths)


class CountingTexts:
    """Spy on how many rows the reader pulls out of the Arrow files."""

    def __init__(self, monkeypatch):
        self.rows = 0
        original = hub._documents_in_order

        def counted(*args, **kwargs):
            for document in original(*args, **kwargs):
                self.rows += 1
                yield document

        monkeypatch.setattr(hub, "_documents_in_order", counted)


def test_a_capped_hub_split_stops_reading_at_the_cap(tmp_path, hf_cache, big_jsonl, monkeypatch):
    spy = CountingTexts(monkeypatch)
    manifest = prepare(source(big_jsonl), split_config(CAP), tmp_path / "out")
    kept = sum(manifest["splits"][s]["examples"] for s in SPLITS)
    assert kept == CAP
    # One article is one example here: the stage read exactly the documents it kept.
    assert spy.rows == manifest["documents"]["count"] == CAP
    assert manifest["source"]["details"]["rows"] == ROWS
    rows = sorted(
        int(e.doc_id.rsplit("/", 1)[1])
        for s in SPLITS
        for e in read_split(tmp_path / "out" / f"{s}.parquet")
    )
    assert rows != list(range(rows[0], rows[0] + CAP))  # a random sample, not the first rows
    assert max(rows) > ROWS // 2 and all(r % 7 for r in rows)  # empty rows are skipped


def test_the_sample_is_seeded(tmp_path, hf_cache, big_jsonl):
    def ids(seed, out):
        prepare(source(big_jsonl), split_config(CAP, seed), tmp_path / out)
        return [e.doc_id for e in read_split(tmp_path / out / "train.parquet")]

    assert ids(0, "a") == ids(0, "b")
    assert ids(0, "a") != ids(1, "c")


def test_an_uncapped_hub_split_is_read_whole_in_row_order(tmp_path, hf_cache, big_jsonl):
    data = read_source("hub", source(big_jsonl)["hub"])
    assert isinstance(data.documents, list)
    assert len(data.documents) == ROWS - len(range(0, ROWS, 7))
    assert data.documents[0].doc_id.endswith("/1")
    manifest = prepare(source(big_jsonl), split_config(None), tmp_path / "out")
    assert manifest["documents"]["count"] == len(data.documents)
    assert manifest["source"]["details"]["row_order"] == "as stored"
