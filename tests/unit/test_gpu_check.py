"""The prepared GPU check (tests/gpu/check_gpu.py) cannot rot: its scaled-down --cpu-smoke run
goes through every item here, and without CUDA the full run stops at once, saying why."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

CHECK = Path(__file__).resolve().parents[1] / "gpu" / "check_gpu.py"


def load_check():
    spec = importlib.util.spec_from_file_location("check_gpu", CHECK)
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_gpu"] = module  # dataclasses look their module up while built
    spec.loader.exec_module(module)
    return module


def test_the_cpu_smoke_run_passes_every_item_and_writes_its_table(tmp_path, one_thread):
    check = load_check()
    out = tmp_path / "smoke.json"
    assert check.main(["--cpu-smoke", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["passed"] and report["cpu_smoke"]
    assert [r["item"] for r in report["items"]] == list(check.ITEMS)
    for record in report["items"]:
        assert record["device"] == "cpu" and record["seconds"] > 0, record
    by_item = {r["item"]: r for r in report["items"]}
    assert by_item["fisher"]["woodbury_block_relative_error"] < check.WOODBURY_RTOL
    assert by_item["exposure"]["mismatches"] == []
    assert by_item["dp_step"]["epsilon"] == pytest.approx(8.0, rel=0.01)
    for name in check.ITEMS:
        assert f"| {name} |" in report["table"]


def test_a_failing_item_is_recorded_and_fails_the_run(tmp_path, monkeypatch):
    check = load_check()

    def broken(size, device):
        raise RuntimeError("Expected all tensors to be on the same device")

    monkeypatch.setitem(check.ITEMS, "scoring", broken)
    out = tmp_path / "r.json"
    assert check.main(["--cpu-smoke", "--items", "scoring", "--out", str(out)]) == 1
    record = json.loads(out.read_text())["items"][0]
    assert not record["passed"] and "same device" in record["error"]


def test_without_cuda_the_full_check_stops_with_a_clear_message(monkeypatch, tmp_path):
    check = load_check()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match=r"CUDA is not available here.*--cpu-smoke"):
        check.main(["--out", str(tmp_path / "x.json")])
    assert not (tmp_path / "x.json").exists()
