"""Adapter of rule unlearn_realworld (workflow/rules/realworld.smk): one method, one request on
a real-world replicate (the strings find_secrets chose); then the strings are re-scored under
the unlearned model in the same process."""

import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.fisher.launch import ran_on_every_gpu
from unlearnbench.replicate import ReplicateFiles
from unlearnbench.stage import start_stage
from unlearnbench.studies.realworld.stages import record_secret_scores
from unlearnbench.unlearning.stage import record_unlearning

if ran_on_every_gpu(snakemake):  # gpu > 1: this script ran once per GPU, under torchrun
    sys.exit(0)

params = dict(snakemake.params.items())
inp, out = snakemake.input, snakemake.output
replicate = ReplicateFiles.from_inputs(inp, snakemake.wildcards.dataset, params["seed"])
out_dir = Path(out.model[0]).parent

frame = start_stage(
    snakemake.log[0], params, threads=snakemake.threads, gpus=snakemake.resources.get("gpu", 0)
)
record_unlearning(out.manifest, snakemake.wildcards.method, params, replicate, out_dir, frame)
record_secret_scores(out_dir, replicate, params, inp, out, frame)
