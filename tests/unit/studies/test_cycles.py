"""The cycle study: K sequential requests, each forgetting only its own group, chained."""

from __future__ import annotations

import dataclasses
import json

import pytest
from unlearnbench.fisher.estimation import FisherConfig, estimate_fisher_stage
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
    replicate = dataclasses.replace(replicate_files, fisher=fisher_paths)
    out_dirs = [root / "cycle~1", root / "cycle~2"]
    manifest = unlearn_cycles_stage(
        "fisher_removal", {"gamma": 1e-3}, replicate, FISHER, TRAJECTORY.__dict__, 2, out_dirs
    )
    forget = json.loads(replicate.forget.read_text())
    first, second = manifest["cycles"]
    for k, cycle in ((1, first), (2, second)):
        own = [r for r, g in zip(forget["indices"], forget["groups"], strict=True) if g == k]
        own_canaries = {c for c, g in zip(forget["canary_ids"], forget["groups"], strict=True)
                        if g == k}  # fmt: skip
        assert cycle["groups"] == [k] and cycle["forget_rows"] == own
        assert set(cycle["removed_canaries"]) == own_canaries
        assert fingerprint(load_model(out_dirs[k - 1])) == cycle["fingerprint_after"]
    assert second["fingerprint_before"] == first["fingerprint_after"]  # chained
    assert first["fisher"]["source"] == "artifact" and first["fisher"]["estimates"] == 0
    assert second["fisher"]["source"] == "estimated" and second["fisher"]["estimates"] == 1
    roles = {c["canary_id"]: c["role"] for c in second["trajectory"][0]["canaries"]}
    assert {roles[c] for c in first["removed_canaries"]} == {"earlier"}
    assert {r["role"] for r in first["trajectory"][0]["canaries"]} == {
        "removed", "pending", "control"
    }  # fmt: skip

    # The same artifact no longer matches the unlearned model: refused, naming the file.
    unlearned = dataclasses.replace(replicate, original=out_dirs[0])
    with pytest.raises(ValueError, match=r"fisher\.json: .*rerun estimate_fisher"):
        unlearn_stage("fisher_removal", {}, unlearned, FISHER, TRAJECTORY.__dict__, root / "no")
