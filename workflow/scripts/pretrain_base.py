"""Adapter of rule pretrain_base (workflow/rules/train.smk)."""

import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.models import ModelConfig
from unlearnbench.stage import run_stage
from unlearnbench.texts import read_texts
from unlearnbench.training.loop import TrainConfig
from unlearnbench.training.stages import pretrain_base

params = dict(snakemake.params.items())
recipe = TrainConfig(**params["recipe"], seed=params["seed"], key="train.pretrain")

run_stage(
    snakemake.output.manifest,
    snakemake.log[0],
    params,
    {"init": params["seed"], "data_order": params["seed"]},
    lambda frame: pretrain_base(
        ModelConfig(**params["model"]),
        Path(snakemake.input.tokenizer).parent,
        read_texts(snakemake.input.train),
        recipe,
        out_dir=Path(snakemake.output.model[0]).parent,
        checkpoint_dir=params["checkpoint"],
        seed=params["seed"],
        device=frame.device,
    ),
    threads=snakemake.threads,
    gpus=snakemake.resources.get("gpu", 0),
)
