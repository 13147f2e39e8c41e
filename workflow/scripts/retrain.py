"""Adapter of rule retrain (workflow/rules/train.smk): the finetune recipe on D+ only."""

import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.seeding import data_order_seed
from unlearnbench.stage import run_stage
from unlearnbench.training.loop import TrainConfig
from unlearnbench.training.stages import retrain_from

params = dict(snakemake.params.items())
# Another data order for the retrain's twin: a seed derived from the replicate's and the key.
seed = data_order_seed(params["seed"], params["order"])
recipe = TrainConfig(**params["recipe"], seed=seed, key="train.finetune")
inp = snakemake.input

run_stage(
    snakemake.output.manifest,
    snakemake.log[0],
    params,
    {"data_order": seed},
    lambda frame: retrain_from(
        inp, recipe, Path(snakemake.output.model[0]).parent, params["checkpoint"], frame.device
    ),
    threads=snakemake.threads,
    gpus=snakemake.resources.get("gpu", 0),
)
