"""Config files read strictly, and offline runs checked against the local hub cache."""

from __future__ import annotations

import pytest
from unlearnbench.settings import ConfigError, check_config_files, read_config_file
from unlearnbench.settings.offline import check_offline, missing_assets

HUB = {"datasets": [{"name": "wiki", "source": "hub", "hub": {"path": "Salesforce/wikitext"}}]}


def test_a_key_given_twice_is_named_with_both_lines(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("datasets:\n  - name: news\n    source: news\n    source: wikipedia\n")
    with pytest.raises(ConfigError, match=r"datasets\[0\]\.source: given twice \(lines 3 and 4\)"):
        read_config_file(path)


def test_a_file_that_is_not_a_mapping_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- a\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: <top level>: holds a list"):
        read_config_file(path)
    path.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_config_file(path)


def test_each_file_is_checked_against_the_schema_with_its_name(tmp_path):
    path = tmp_path / "overlay.yaml"
    path.write_text("datasets: {}\n")
    with pytest.raises(ConfigError, match=r"overlay\.yaml: datasets: \{\} is not of type"):
        check_config_files([path])
    path.write_text("train:\n  finetune:\n    epochs: 3\n")  # a partial overlay is fine
    check_config_files([path])


def test_offline_runs_need_every_hub_dataset_in_the_cache(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    assert missing_assets(HUB, env) == [
        ("datasets[0].hub.path", "Salesforce/wikitext", "not in the local cache")
    ]
    with pytest.raises(ConfigError, match=r"datasets\[0\]\.hub\.path: 'Salesforce/wikitext'"):
        check_offline(HUB, env)
    snapshot = tmp_path / "hub" / "datasets--Salesforce--wikitext" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    check_offline(HUB, env)  # now cached
    check_offline(HUB, {"HF_HOME": str(tmp_path / "none")})  # online: nothing to check


def test_offline_data_files_must_be_local(tmp_path):
    local = tmp_path / "a.txt"
    local.write_text("text")
    config = {
        "datasets": [
            {"name": "t", "source": "hub", "hub": {"path": "text", "data_files": [str(local)]}},
            {"name": "u", "source": "hub", "hub": {"path": "text", "data_files": "https://x/y"}},
        ]
    }
    assert missing_assets(config, {"HF_HUB_OFFLINE": "1"}) == [
        ("datasets[1].hub.data_files", "https://x/y", "a remote file")
    ]
