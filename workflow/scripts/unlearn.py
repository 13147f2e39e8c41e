"""Adapter of rule unlearn (workflow/rules/unlearn.smk): one method, one request on an nlp
replicate; then the saved model is scored in the same process, as rule evaluate would score it."""

import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.evaluation import record_metrics
from unlearnbench.replicate import ReplicateFiles
from unlearnbench.stage import start_stage
from unlearnbench.unlearning.stage import record_unlearning

params = dict(snakemake.params.items())
out = snakemake.output
replicate = ReplicateFiles.from_inputs(snakemake.input, snakemake.wildcards.dataset, params["seed"])
out_dir = Path(out.model[0]).parent

frame = start_stage(
    snakemake.log[0], params, threads=snakemake.threads, gpus=snakemake.resources.get("gpu", 0)
)
record_unlearning(out.manifest, snakemake.wildcards.method, params, replicate, out_dir, frame)
record_metrics(out.metrics, out_dir, replicate, params["evaluate"], frame)
