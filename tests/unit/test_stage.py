"""The adapters' frame: a stage's result is written with its own params, seeds and cost, and a
failing stage writes nothing and says why in the log."""

from __future__ import annotations

import json
import logging

import pytest
from unlearnbench.stage import Frame, choose_device, record_stage, run_stage


def test_each_recorded_stage_carries_its_own_provenance(tmp_path):
    log_file = tmp_path / "job.log"
    first = run_stage(
        str(tmp_path / "unlearn.json"),
        str(log_file),
        {"hyper": {"lr": 0.1}, "seed": 3},
        {"unlearn": 3},
        lambda frame: {"made": "model"},
    )
    frame = Frame(logging.getLogger("unlearnbench"))
    second = record_stage(
        str(tmp_path / "metrics.json"),
        {"evaluate": {"batch_size": 8}, "seed": 3},
        {"eval": 3},
        lambda frame: {"scored": "model"},
        frame,
    )
    for path, manifest in [("unlearn.json", first), ("metrics.json", second)]:
        assert json.loads((tmp_path / path).read_text()) == manifest
    assert first["made"] == "model" and "scored" not in first
    assert first["provenance"]["params"] == {"hyper": {"lr": 0.1}, "seed": 3}
    assert second["provenance"]["params"] == {"evaluate": {"batch_size": 8}, "seed": 3}
    assert second["provenance"]["seeds"] == {"eval": 3}
    for manifest in (first, second):
        assert manifest["cost"]["wall_time_s"] >= 0 and manifest["cost"]["peak_memory_mb"] > 0
    assert log_file.read_text().count("done in") == 2


def test_a_failing_stage_writes_no_result_and_logs_the_reason(tmp_path):
    log_file = tmp_path / "job.log"
    run_stage(str(tmp_path / "first.json"), str(log_file), {}, {}, lambda frame: {"ok": 1})

    def broken(frame):
        raise ValueError("evaluate.batch_size: must be positive")

    with pytest.raises(ValueError, match="batch_size"):
        record_stage(
            str(tmp_path / "metrics.json"), {}, {}, broken, Frame(logging.getLogger("unlearnbench"))
        )
    assert not (tmp_path / "metrics.json").exists()
    assert (tmp_path / "first.json").exists()  # what was computed before stays
    assert "failed: ValueError: evaluate.batch_size: must be positive" in log_file.read_text()


def test_the_frame_records_the_device_and_the_modules_that_ran(tmp_path):
    manifest = run_stage(str(tmp_path / "m.json"), None, {}, {}, lambda frame: {"on": frame.device})
    assert manifest["on"] == "cpu" == manifest["provenance"]["device"]
    modules = manifest["provenance"]["modules"]
    assert "unlearnbench.stage" in modules and modules == sorted(modules)


def test_a_job_that_asks_for_a_gpu_it_does_not_have_is_refused(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_device(0) == "cpu"
    with pytest.raises(RuntimeError, match=r"resources\.gpu: this job asks for 1 GPU"):
        choose_device(1)
