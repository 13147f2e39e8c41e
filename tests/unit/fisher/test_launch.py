"""The sharded Fisher through the rules' own route: the estimate_fisher and sweep_frontier
adapters run on 2 gloo processes by ``launch.ran_on_every_gpu`` (torchrun, one rank per
"GPU"), against the single-process stages, on the tiny replicate of tests/unit/conftest.py.

A rule asks for its GPUs through ``resources: gpu``; on this CPU machine the test passes the
process count instead (``processes=2``, resources gpu 0: gloo, CPU tensors).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from unlearnbench.fisher.estimation import FisherConfig
from unlearnbench.fisher.launch import (
    JobFiles,
    _rank_paths,
    describe_job,
    job_namespace,
    ran_on_every_gpu,
)
from unlearnbench.fisher.storage import estimate_fisher_stage, load_fisher
from unlearnbench.unlearning.frontier_stage import frontier_stage
from unlearnbench.unlearning.stage import setup_replicate

SCRIPTS = Path(__file__).resolve().parents[3] / "workflow" / "scripts"
FISHER = {
    "examples": 12, "damping": 1e-2, "blocks": "layer", "block_size": 65536,
    "gradient_method": "loop", "storage": "device", "dtype": "float32", "recompute_rows": 16,
}  # fmt: skip
EVALUATE = {
    "batch_size": 16,
    "retain_sample": 8,
    "exposure": {"estimator": "exact", "max_exact_space": 10**4, "extrapolation_samples": 100},
}
GRID = {"gamma": [0.5, 2.0]}
# Two ranks against one process: the float32 column chunks of the products end elsewhere, so
# results agree to rounding (sharded.py: 5e-8 relative on a tiny GPT-2's F^{-1} x).
RTOL = 1e-5


def files(named: dict) -> dict:
    items = [p for v in named.values() for p in (v if isinstance(v, list) else [v])]
    return {"items": [str(p) for p in items], "named": {k: _str(v) for k, v in named.items()}}


def _str(value):
    return [str(v) for v in value] if isinstance(value, list) else str(value)


def job(rule: str, inputs: dict, outputs: dict, params: dict, log: Path) -> dict:
    return {
        "rule": rule, "scriptdir": str(SCRIPTS), "threads": 2, "input": files(inputs),
        "output": files(outputs), "log": {"items": [str(log)], "named": {}},
        "params": params, "wildcards": {"dataset": "toy", "seed": "0"},
        "resources": {"gpu": 0, "mem_mb": 2000},
    }  # fmt: skip


def replicate_inputs(replicate) -> dict:
    root = replicate.train.parent
    return {
        "tokenizer": replicate.tokenizer_dir / "tokenizer.json",
        "train": replicate.train,
        "forget": replicate.forget,
        "retain": replicate.retain,
        "canaries": replicate.canaries,
        "test": replicate.test,
        "validation": replicate.validation,
        "model": [root / "original" / "config.json", root / "original" / "model.safetensors"],
    }


def rel_err(a, b) -> float:
    return float((torch.as_tensor(a).double() - torch.as_tensor(b).double()).norm()
                 / torch.as_tensor(b).double().norm())  # fmt: skip


@pytest.fixture(scope="module")
def estimates(replicate_files, tmp_path_factory):
    """The Fisher estimated by the adapter on 2 ranks, and by the stage in this process."""
    out = tmp_path_factory.mktemp("launch")
    two = {name: out / "two" / f"fisher.{ext}" for name, ext in
           (("tensors", "safetensors"), ("meta", "json"))}  # fmt: skip
    two["manifest"] = out / "two" / "manifest.json"
    spec = job("estimate_fisher", replicate_inputs(replicate_files), two,
               {"fisher": FISHER, "seed": 0}, out / "two" / "estimate.log")  # fmt: skip
    assert ran_on_every_gpu(job_namespace(spec), processes=2)
    one = (out / "one" / "fisher.safetensors", out / "one" / "fisher.json")
    one[0].parent.mkdir()
    estimate_fisher_stage(replicate_files, FisherConfig(**FISHER, seed=0), *one)
    return (two["tensors"], two["meta"]), one, json.loads(two["manifest"].read_text())


def test_two_ranks_estimate_the_single_process_fisher(replicate_files, estimates):
    two, one, manifest = estimates
    assert manifest["processes"] == 2 and not manifest["gradients_in_artifact"]
    assert manifest["provenance"]["params"]["fisher"] == FISHER
    assert not list(two[0].parent.glob(".ranks-*"))  # rank 1's scratch outputs are gone
    model, data = setup_replicate(replicate_files, replicate_files.original, "cpu")
    retain = [data.sequences[i] for i in data.retain_rows]
    sharded = load_fisher(*two, model, retain, data.pad_id)  # G recomputed from the sample
    single = load_fisher(*one, model, retain, data.pad_id)  # G read back
    assert sharded.blocks == single.blocks and sharded.fingerprint == single.fingerprint
    assert torch.equal(sharded.gradients, single.gradients)
    for L2, L1 in zip(sharded.factors, single.factors, strict=True):
        assert rel_err(L2, L1) < RTOL
    x = torch.randn(single.d, generator=torch.Generator().manual_seed(0))
    assert rel_err(sharded.ihvp(x), single.ihvp(x)) < RTOL


def test_two_ranks_sweep_the_single_process_frontier(targets, estimates, tmp_path):
    """sweep_frontier on 2 ranks reads the 2-rank artifact (each rank recomputes its columns;
    every product all-reduces the m-vectors) and takes the single process's steps."""
    (two, one, _), (replicate, original) = estimates, targets
    inputs = replicate_inputs(replicate) | {
        "fisher_tensors": two[0], "fisher_meta": two[1], "original_metrics": original,
        "retrained_metrics": replicate.retrained_metrics,
        "twin_metrics": replicate.retrained_metrics,
    }  # fmt: skip
    params = {"hyper": {}, "grid": GRID, "fisher": FISHER, "evaluate": EVALUATE,
              "utility_budget": 1.5, "seed": 0}  # fmt: skip
    frontier = tmp_path / "frontier.json"
    spec = job("sweep_frontier", inputs, {"frontier": frontier}, params, tmp_path / "sweep.log")
    spec["wildcards"]["method"] = "fisher_removal"
    assert ran_on_every_gpu(job_namespace(spec), processes=2)
    sharded = json.loads(frontier.read_text())
    single = frontier_stage("fisher_removal", {}, GRID, dataclasses.replace(replicate, fisher=one),
                            FisherConfig(**FISHER, seed=0), EVALUATE, 1.5, original,
                            twin_metrics=replicate.retrained_metrics)  # fmt: skip
    for got, ref in zip(sharded["points"], single["points"], strict=True):
        assert got["hyper"] == ref["hyper"]
        for split in ("test", "validation"):
            ppl = [p["metrics"]["perplexity"][split]["perplexity"] for p in (got, ref)]
            assert ppl[0] == pytest.approx(ppl[1], rel=RTOL)
        by_type = [p["weight_delta"]["by_type"] for p in (got, ref)]
        norms = [[kinds[kind]["l2"] for kind in sorted(kinds)] for kinds in by_type]
        assert rel_err(*norms) < RTOL and max(norms[1]) > 0


# The job description itself (no processes)


def test_the_job_an_adapter_reads_survives_the_trip_to_the_ranks(tmp_path):
    spec = job("estimate_fisher", {"train": "t.parquet", "model": ["a/c.json", "a/m.st"]},
               {"tensors": "out/f.safetensors"}, {"fisher": FISHER, "seed": 3},
               tmp_path / "x.log")  # fmt: skip
    ns = job_namespace(spec)
    assert ns.input.model == ["a/c.json", "a/m.st"] and ns.input[0] == "t.parquet"
    assert ns.params["fisher"] == FISHER and dict(ns.params.items())["seed"] == 3
    assert ns.resources.get("gpu", 0) == 0 and ns.wildcards.dataset == "toy"
    assert getattr(ns.input, "fisher_tensors", None) is None
    assert describe_job(ns) == spec
    moved = _rank_paths({**spec, "scratch": str(tmp_path / "s")}, 1)
    assert moved["output"]["named"]["tensors"].startswith(str(tmp_path / "s" / "rank1"))
    assert moved["input"] == spec["input"] and _rank_paths(spec, 0) is spec
    assert isinstance(JobFiles([], {}), list)


def test_one_gpu_or_none_runs_in_the_adapter_itself(tmp_path):
    spec = job("estimate_fisher", {}, {"x": tmp_path / "x"}, {}, tmp_path / "x.log")
    assert not ran_on_every_gpu(job_namespace(spec))  # resources gpu 0
    spec["resources"]["gpu"] = 1
    assert not ran_on_every_gpu(job_namespace(spec))
