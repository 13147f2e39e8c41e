"""The cycle study: K sequential requests, each forgetting only its own group, chained."""

from __future__ import annotations

import dataclasses
import json

import pytest
from unlearnbench.fisher.estimation import FisherConfig
from unlearnbench.fisher.storage import estimate_fisher_stage
from unlearnbench.models import fingerprint, load_model
from unlearnbench.studies.cycles import unlearn_cycles_stage
from unlearnbench.unlearning import unlearn_stage
from unlearnbench.unlearning.trajectory import TrajectoryConfig

TRAJECTORY = TrajectoryConfig(samples=20, retain_sample=10, batch_size=16)
FISHER = FisherConfig(examples=12, damping=1e-2, blocks="layer", seed=0)


def test_cycles_forget_only_their_own_group(replicate_files):
    root = replicate_files.train.parent
    fisher_paths = (root / "fisher.safetensors", root / "fisher.json")
    estimated = estimate_fisher_stage(replicate_files, FISHER, *fisher_paths)
    assert estimated["m"] == FISHER.examples and estimated["blocks"] > 1
    # A stored Fisher (of the final D+) is given but must not be used: each request has its own.
    replicate = dataclasses.replace(replicate_files, fisher=fisher_paths)
    out_dirs = [root / "cycle~1", root / "cycle~2"]
    manifest = unlearn_cycles_stage(
        "fisher_removal", {"gamma": 1e-3}, replicate, FISHER, TRAJECTORY.__dict__, 2, out_dirs
    )
    forget = json.loads(replicate.forget.read_text())
    retain = json.loads(replicate.retain.read_text())["indices"]
    first, second = manifest["cycles"]
    # Request 1 retains the rows of group 2, still pending (in the training data until request
    # 2); request 2 retains D+ only.
    pending = [r for r, g in zip(forget["indices"], forget["groups"], strict=True) if g == 2]
    assert pending and first["retain_rows"] == len(retain) + len(pending)
    assert second["retain_rows"] == len(retain)
    for k, cycle in ((1, first), (2, second)):
        own = [r for r, g in zip(forget["indices"], forget["groups"], strict=True) if g == k]
        own_canaries = {c for c, g in zip(forget["canary_ids"], forget["groups"], strict=True)
                        if g == k}  # fmt: skip
        assert cycle["groups"] == [k] and cycle["forget_rows"] == own
        assert set(cycle["removed_canaries"]) == own_canaries
        assert fingerprint(load_model(out_dirs[k - 1])) == cycle["fingerprint_after"]
    assert second["fingerprint_before"] == first["fingerprint_after"]  # chained
    for cycle in (first, second):
        assert cycle["fisher"]["source"] == "estimated" and cycle["fisher"]["estimates"] == 1
    roles = {c["canary_id"]: c["role"] for c in second["trajectory"][0]["canaries"]}
    assert {roles[c] for c in first["removed_canaries"]} == {"earlier"}
    assert {r["role"] for r in first["trajectory"][0]["canaries"]} == {
        "removed", "pending", "control"
    }  # fmt: skip

    # The stored artifact does not match the unlearned model: refused, naming the file.
    unlearned = dataclasses.replace(replicate, original=out_dirs[0])
    with pytest.raises(ValueError, match=r"fisher\.json: .*rerun estimate_fisher"):
        unlearn_stage("fisher_removal", {}, unlearned, FISHER, TRAJECTORY.__dict__, root / "no")


def test_retained_set_of_a_request_keeps_the_pending_groups():
    """The slow obvious reading: D minus the rows of every group removed so far."""
    from unlearnbench.unlearning.stage import ReplicateData

    data = ReplicateData(
        sequences=[[0]] * 10,
        forget_rows=[1, 3, 5, 7],
        forget_groups=[1, 2, 2, 3],
        retain_rows=[0, 2, 4, 6, 8, 9],
        probes=[],
        pad_id=0,
    )
    for removed in ([1], [1, 2], [2], [1, 2, 3]):
        gone = {r for r, g in zip(data.forget_rows, data.forget_groups, strict=True)
                if g in removed}  # fmt: skip
        assert data.retained_rows(removed) == [r for r in range(10) if r not in gone]
    assert data.retained_rows(None) == data.retain_rows


def test_request_retain_set_is_what_the_request_k_retrain_trains_on(tmp_path):
    """The retain manifest of cycle request k (rule cycle_request) = D minus the rows of groups
    1..k, the slow obvious way; the last request's is the replicate's D+."""
    import json

    from unlearnbench.texts import request_retain_set

    forget = {"indices": [1, 3, 5, 7], "canary_ids": [0, 1, 1, 2], "groups": [1, 2, 2, 1]}
    (tmp_path / "forget_set.json").write_text(json.dumps(forget))
    (tmp_path / "retain_set.json").write_text(json.dumps({"indices": [0, 2, 4, 6, 8]}))
    for k in (1, 2):
        got = request_retain_set(
            tmp_path / "retain_set.json", tmp_path / "forget_set.json", range(1, k + 1)
        )
        gone = {r for r, g in zip(forget["indices"], forget["groups"], strict=True) if g <= k}
        assert got["indices"] == [r for r in range(9) if r not in gone]
    assert got["indices"] == [0, 2, 4, 6, 8]
    with pytest.raises(ValueError, match="groups \\[3\\]"):
        request_retain_set(tmp_path / "retain_set.json", tmp_path / "forget_set.json", [3])


def test_cycles_run_at_the_frontiers_operating_point_or_its_strongest_point():
    from unlearnbench.unlearning.frontier import operating_hyper

    base = {"gamma": 0.001, "iterations": 1}
    points = [
        {
            "hyper": {"gamma": g, "iterations": 1},
            "knobs": {"gamma": g},
            "strength": g,
            "diverged": d,
        }
        for g, d in ((0.001, False), (0.01, False), (0.1, True))
    ]
    frontier = {
        "method": "fisher_removal",
        "points": points,
        "selection": {"matched_erasure": {"index": None}, "matched_utility": {"index": 0}},
    }
    assert operating_hyper(base, None, "base") == (
        base,
        {"point": "base", "reached": True, "index": None},
    )
    hyper, record = operating_hyper(base, frontier, "matched_utility")
    assert hyper == {"gamma": 0.001, "iterations": 1} and record["reached"]
    # Not reached: the strongest point that did not diverge (0.1 diverged).
    hyper, record = operating_hyper(base, frontier, "matched_erasure")
    assert hyper["gamma"] == 0.01 and not record["reached"] and record["index"] == 1
    with pytest.raises(ValueError, match="cycle_point"):
        operating_hyper(base, frontier, "halfway")
