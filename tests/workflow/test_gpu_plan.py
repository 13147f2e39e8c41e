"""GPU runs planned before any job: `snakemake -n` of config/paper.yaml under the GPU profiles
(offline, its hub datasets in a fake cache) gives every rule that computes with a model a GPU
and a walltime scaled to the planner's estimate; the download target runs end to end on a local
hub-format dataset, offline."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml
from snakemake_runner import REPO, config_of, run_snakemake

pytestmark = pytest.mark.slow

PROFILES = REPO / "workflow" / "profiles"


def model_rules() -> set[str]:
    """The rules that compute with a model: those whose resources declare a gpu (and whose
    params carry compute), read from the rule files."""
    names = set()
    for path in (REPO / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"(?m)^(?=\s*(?:use )?rule )", path.read_text()):
            name = re.match(r"\s*(?:use rule \w+ as (\w+)|rule (\w+))", block)
            if name and re.search(r"^\s+gpu=0,", block, re.M):
                names.add(name.group(1) or name.group(2))
                assert "compute=COMPUTE" in block or name.group(1), name.group(0)
    return names


# OPT-125m's published config.json, the fields the planner sizes a model by (fisher.memory).
OPT_125M = {
    "model_type": "opt",
    "num_hidden_layers": 12,
    "hidden_size": 768,
    "num_attention_heads": 12,
    "ffn_dim": 3072,
    "vocab_size": 50272,
    "max_position_embeddings": 2048,
    "word_embed_proj_dim": 768,
    "do_layer_norm_before": True,
}


def offline_env(tmp_path: Path, config: dict) -> dict:
    """HF_HUB_OFFLINE with every hub dataset of ``config`` present in a fake hub cache, and its
    hub model as a snapshot of the files an offline run needs (OPT-125m's real config.json, so
    the planner sizes the real model; weights and tokenizer present, empty)."""
    home = tmp_path / "hf"
    for ds in config["datasets"]:
        if ds["source"] == "hub":
            repo = home / "hub" / f"datasets--{ds['hub']['path'].replace('/', '--')}"
            (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    model = config["model"]
    assert model["source"] == "facebook/opt-125m", "the fake snapshot is OPT-125m's"
    repo = home / "hub" / f"models--{model['source'].replace('/', '--')}"
    snap = repo / "snapshots" / model["revision"]
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps(OPT_125M))
    (snap / "model.safetensors").write_bytes(b"")
    (snap / "vocab.json").write_text("{}")
    # Planned for a cluster node, as a login node would with UNLEARNBENCH_MACHINE_MB (this
    # machine's memory would refuse the paper scale's host-side jobs).
    return {
        **os.environ,
        "HF_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "UNLEARNBENCH_MACHINE_MB": "512000",
    }


def job_resources(output: str) -> dict[str, list[dict[str, str]]]:
    """{rule: [resources of each job]} from the job blocks `snakemake -n` prints."""
    jobs: dict[str, list[dict[str, str]]] = {}
    for match in re.finditer(r"^(?:localrule|rule) (\w+):\n((?:    .*\n?)*)", output, re.M):
        line = re.search(r"^    resources: (.*)", match.group(2), re.M)
        pairs = re.findall(r"(\w+)=([^,]+)", line.group(1)) if line else []
        jobs.setdefault(match.group(1), []).append(dict(pairs))
    return jobs


def test_the_gpu_profiles_cover_exactly_the_rules_that_compute_with_a_model():
    rules = model_rules()
    assert {"finetune", "estimate_fisher", "sweep_frontier", "evaluate", "evaluate_dp"} <= rules
    for profile in ("slurm-gpu", "gpu"):
        settings = yaml.safe_load((PROFILES / profile / "config.yaml").read_text())
        given = {rule for rule, res in settings["set-resources"].items() if res["gpu"] >= 1}
        assert given == rules, profile


def test_the_slurm_gpu_profile_is_the_slurm_profile_plus_gpus():
    slurm = yaml.safe_load((PROFILES / "slurm" / "config.yaml").read_text())
    gpu = yaml.safe_load((PROFILES / "slurm-gpu" / "config.yaml").read_text())
    assert {k: v for k, v in gpu.items() if k != "set-resources"} == slurm
    assert all(res["slurm_partition"] for res in gpu["set-resources"].values())


@pytest.mark.parametrize("profile", ["slurm-gpu", "gpu"])
def test_paper_yaml_plans_gpu_jobs_offline(workflow_copy, tmp_path, profile):
    config = config_of("config.yaml", "paper.yaml")
    out = run_snakemake(
        workflow_copy,
        "-n",
        "all",
        "--configfile",
        "config/paper.yaml",
        "--workflow-profile",
        f"workflow/profiles/{profile}",
        env=offline_env(tmp_path, config),
    ).stdout
    jobs = job_resources(out)
    heavy = model_rules() & set(jobs)
    assert {"finetune", "estimate_fisher", "sweep_frontier", "evaluate", "train_dp"} <= heavy
    for rule, resources in jobs.items():
        for job in resources:
            gpus = int(job.get("gpu", 0))
            assert (gpus >= 1) == (rule in heavy), (rule, job)
            if rule in heavy:  # walltime and memory requests from the planner, at least the floors
                assert int(job["runtime"]) >= 60 and int(job["mem_mb"]) >= 3000, (rule, job)
                if profile == "slurm-gpu":
                    assert job["slurm_partition"].strip("'\"") == "gpu", (rule, job)


def test_the_download_target_fetches_a_hub_dataset_into_the_cache(workflow_copy, tmp_path):
    rows = tmp_path / "local.jsonl"
    rows.write_text(
        "".join(json.dumps({"text": f"row {i} of a local corpus"}) + "\n" for i in range(9))
    )
    config = config_of("config.yaml", "smoke.yaml")
    extra = {
        "name": "localhub",
        "source": "hub",
        "kind": "pretrain",
        "hub": {"path": "json", "split": "train", "text_field": "text", "data_files": [str(rows)]},
    }
    overlay = workflow_copy / "config" / "download_test.yaml"
    overlay.write_text(yaml.safe_dump({"datasets": [*config["datasets"], extra]}))
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    run_snakemake(
        workflow_copy,
        "download",
        "--cores",
        "1",
        "--configfile",
        "config/smoke.yaml",
        str(overlay.relative_to(workflow_copy)),
        env=env,
    )
    manifest = json.loads((workflow_copy / "results" / "download" / "manifest.json").read_text())
    [dataset] = manifest["datasets"]
    assert dataset["dataset"] == "localhub" and dataset["rows"] == 9
    assert manifest["offline"] is True and manifest["model"] is None  # a scratch model
    assert (tmp_path / "hf" / "datasets").is_dir()  # cached where HF_HOME says
