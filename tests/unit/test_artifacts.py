"""Recorded files: a change is found on read (named, moved aside) and by verify_tree."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from unlearnbench.artifacts import (
    DamagedFile,
    check,
    content_checksum,
    describe_files,
    verify_tree,
)
from unlearnbench.texts import read_index_set, read_texts


@pytest.fixture
def stage_folder(tmp_path):
    folder = tmp_path / "results" / "canaries" / "toy"
    folder.mkdir(parents=True)
    pd.DataFrame({"text": [f"row {i}" for i in range(10)]}).to_parquet(folder / "train.parquet")
    pd.DataFrame({"canary_id": [1, 2, 3]}).to_csv(folder / "canaries.csv", index=False)
    (folder / "retain_set.json").write_text(json.dumps({"indices": [0, 2, 4]}))
    files = describe_files(folder / n for n in ("train.parquet", "canaries.csv", "retain_set.json"))
    manifest = {"files": files}
    manifest["checksum"] = content_checksum(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_record_has_rows_bytes_and_hash(stage_folder):
    files = json.loads((stage_folder / "manifest.json").read_text())["files"]
    assert files["train.parquet"]["rows"] == 10 and files["canaries.csv"]["rows"] == 3
    assert files["retain_set.json"]["rows"] == 3 and len(files["canaries.csv"]["sha256"]) == 64


def test_readers_use_files_that_match(stage_folder):
    assert read_texts([stage_folder / "train.parquet"])[3] == "row 3"
    assert read_index_set(stage_folder / "retain_set.json")["indices"] == [0, 2, 4]
    assert verify_tree(stage_folder.parent.parent)["changed"] == []


def test_a_table_cut_on_a_line_boundary_is_named_and_moved_aside(stage_folder):
    table = stage_folder / "canaries.csv"
    table.write_text("canary_id\n1\n2\n")  # a whole row fewer: still a valid CSV
    with pytest.raises(DamagedFile, match=r"canaries\.csv: .*2 rows where 3 were written"):
        check(table)
    assert not table.exists() and (stage_folder / "canaries.csv.damaged").exists()


def test_the_same_size_with_other_content_is_found_by_its_hash(stage_folder):
    retain = stage_folder / "retain_set.json"
    retain.write_text(json.dumps({"indices": [0, 2, 5]}))
    with pytest.raises(DamagedFile, match="sha256"):
        read_index_set(retain)


def test_verify_tree_lists_what_changed_and_what_has_no_record(stage_folder):
    root = stage_folder.parent.parent
    manifest = json.loads((stage_folder / "manifest.json").read_text())
    manifest["note"] = "edited by hand"
    (stage_folder / "manifest.json").write_text(json.dumps(manifest))
    (root / "tables").mkdir()
    (root / "tables" / "main.csv").write_text("a\n1\n")
    (stage_folder / "train.parquet").write_bytes(b"PAR1")
    report = verify_tree(root)
    assert any("manifest.json: its content differs" in line for line in report["changed"])
    assert any("train.parquet: 4 bytes where" in line for line in report["changed"])
    assert report["unrecorded"] == [str(root / "tables" / "main.csv")]


def test_files_without_a_manifest_are_read_unchecked(tmp_path):
    path = tmp_path / "split.parquet"
    pd.DataFrame({"text": ["a"]}).to_parquet(path)
    assert read_texts([path]) == ["a"]
