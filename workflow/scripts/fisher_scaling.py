"""Adapter of rule fisher_scaling (workflow/rules/fisher.smk)."""

import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.artifacts import describe_files
from unlearnbench.lm_data import encode_texts
from unlearnbench.models import ModelConfig
from unlearnbench.provenance import atomic_path
from unlearnbench.stage import run_stage
from unlearnbench.studies.fisher_scaling import ScalingConfig, fisher_scaling
from unlearnbench.texts import read_texts
from unlearnbench.tokenizer import load_tokenizer

params = dict(snakemake.params.items())
settings = params["scaling"]
cfg = ScalingConfig(
    examples=tuple(settings["examples"]),
    widths=tuple(settings["widths"]),
    damping=params["fisher"]["damping"],
    blocks=params["fisher"]["blocks"],
)
model_cfg = ModelConfig(**params["model"])
inp, out = snakemake.input, snakemake.output


def work(frame):
    tokenizer = load_tokenizer(Path(inp.tokenizer).parent)
    texts = read_texts(inp.train)[: max(cfg.examples)]
    sequences = encode_texts(tokenizer, texts, model_cfg.n_positions)
    table = fisher_scaling(
        model_cfg, len(tokenizer), tokenizer.eos_token_id, sequences, cfg, params["seed"]
    )
    with atomic_path(out.table) as tmp:
        table.to_csv(tmp, index=False)
    rows = table.to_dict(orient="records")
    return {"points": len(table), "rows": rows, "files": describe_files([out.table])}


run_stage(out.manifest, snakemake.log[0], params, {"init": params["seed"]}, work, threads=1)
