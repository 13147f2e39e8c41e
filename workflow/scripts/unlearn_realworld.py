"""Adapter of rule unlearn_realworld (workflow/rules/realworld.smk): one method, one request on
a real-world replicate (the strings find_secrets chose); then the strings are re-scored under
the unlearned model in the same process."""

import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.replicate import ReplicateFiles
from unlearnbench.stage import record_stage, start_stage
from unlearnbench.studies.realworld.stages import RealworldConfig, score_secrets_stage
from unlearnbench.unlearning.stage import record_unlearning

params = dict(snakemake.params.items())
inp, out = snakemake.input, snakemake.output
seed = params["seed"]
replicate = ReplicateFiles.from_inputs(inp, snakemake.wildcards.dataset, seed)
cfg = RealworldConfig(**params["realworld"], seed=seed)
out_dir = Path(out.model[0]).parent

frame = start_stage(
    snakemake.log[0], params, threads=snakemake.threads, gpus=snakemake.resources.get("gpu", 0)
)
record_unlearning(out.manifest, snakemake.wildcards.method, params, replicate, out_dir, frame)
frame.log.info("scoring %s", out_dir)
record_stage(
    out.scored,
    {"realworld": params["realworld"], "seed": seed},
    {"eval": seed},
    lambda frame: score_secrets_stage(
        out_dir, replicate, cfg, inp.reference, inp.heldout_reference, out.secrets, frame.device
    ),
    frame,
)
