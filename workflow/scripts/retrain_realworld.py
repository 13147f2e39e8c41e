"""Adapter of rule retrain_realworld (workflow/rules/realworld.smk): the real-world study's gold
standard (or its twin in another data order), the finetune recipe from the base model on the
request's D+ (every row holding a requested string gone), then its strings scored as
unlearn_realworld scores an unlearned model, in the same process."""

import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.replicate import ReplicateFiles
from unlearnbench.seeding import data_order_seed
from unlearnbench.stage import record_stage, start_stage
from unlearnbench.studies.realworld.stages import record_secret_scores
from unlearnbench.training.loop import TrainConfig
from unlearnbench.training.stages import retrain_from

params = dict(snakemake.params.items())
inp, out = snakemake.input, snakemake.output
replicate = ReplicateFiles.from_inputs(inp, snakemake.wildcards.dataset, params["seed"])
# The twin (retrained_reorder) takes another data order: the noise floor of the gold standard.
seed = data_order_seed(params["seed"], params["order"])
recipe = TrainConfig(**params["recipe"], seed=seed, key="train.finetune")
out_dir = Path(out.model[0]).parent

frame = start_stage(
    snakemake.log[0], params, threads=snakemake.threads, gpus=snakemake.resources.get("gpu", 0)
)
record_stage(
    out.manifest,
    params,
    {"data_order": seed},
    lambda frame: retrain_from(inp, recipe, out_dir, params["checkpoint"], frame.device),
    frame,
)
record_secret_scores(out_dir, replicate, params, inp, out, frame)
