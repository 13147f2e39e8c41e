"""Adapter of rule retrain_realworld (workflow/rules/realworld.smk): the real-world study's gold
standard, the finetune recipe from the base model on the request's D+ (every row holding a
requested string gone), then its strings scored as unlearn_realworld scores an unlearned
model, in the same process."""

import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.replicate import ReplicateFiles
from unlearnbench.stage import record_stage, start_stage
from unlearnbench.studies.realworld.stages import RealworldConfig, score_secrets_stage
from unlearnbench.texts import retained_texts
from unlearnbench.training.loop import TrainConfig
from unlearnbench.training.stages import finetune_from

params = dict(snakemake.params.items())
inp, out = snakemake.input, snakemake.output
seed = params["seed"]
replicate = ReplicateFiles.from_inputs(inp, snakemake.wildcards.dataset, seed)
cfg = RealworldConfig(**params["realworld"], seed=seed)
recipe = TrainConfig(**params["recipe"], seed=seed, key="train.finetune")
out_dir = Path(out.model[0]).parent

frame = start_stage(
    snakemake.log[0], params, threads=snakemake.threads, gpus=snakemake.resources.get("gpu", 0)
)
record_stage(
    out.manifest,
    params,
    {"data_order": seed},
    lambda frame: finetune_from(
        Path(inp.base[0]).parent,
        Path(inp.tokenizer).parent,
        retained_texts(inp.train, inp.retain),
        recipe,
        out_dir=out_dir,
        checkpoint_dir=params["checkpoint"],
        device=frame.device,
    ),
    frame,
)
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
