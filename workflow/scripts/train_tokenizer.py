"""Adapter of rule train_tokenizer (workflow/rules/data.smk)."""

import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

import pandas as pd
from unlearnbench.stage import run_stage
from unlearnbench.tokenizer import train_tokenizer

params = dict(snakemake.params.items())


def texts():
    # The pretraining corpus: the listed datasets' training splits, in config order.
    for path in snakemake.input.train:
        yield from pd.read_parquet(path, columns=["text"])["text"]


run_stage(
    snakemake.output.manifest,
    snakemake.log[0],
    params,
    {},
    lambda frame: train_tokenizer(
        texts(),
        vocab_size=params["vocab_size"],
        min_frequency=params["min_frequency"],
        out_dir=Path(snakemake.output.tokenizer).parent,
    ),
)
