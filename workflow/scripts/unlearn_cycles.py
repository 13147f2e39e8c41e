"""Adapter of rule unlearn_cycles (workflow/rules/unlearn.smk): K sequential requests."""

import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.evaluation import record_metrics
from unlearnbench.fisher_estimation import FisherConfig
from unlearnbench.stage import run_stage
from unlearnbench.unlearning import unlearn_cycles_stage

params = dict(snakemake.params.items())
inp, out, wc = snakemake.input, snakemake.output, snakemake.wildcards
fisher_paths = (inp.fisher_tensors, inp.fisher_meta) if hasattr(inp, "fisher_tensors") else None
# model_files() lists config.json then model.safetensors per cycle: one folder per cycle.
out_dirs = list(dict.fromkeys(str(Path(path).parent) for path in out.models))


def score_cycles(result, log):
    """Score every cycle's saved model exactly as rule evaluate would (reloaded from disk)."""
    for cycle, metrics_path in zip(result["cycles"], out.metrics, strict=True):
        record_metrics(
            metrics_path, cycle["model"], wc.dataset, params["evaluate"], params["seed"], inp, log
        )
    return result


run_stage(
    out.manifest,
    snakemake.log[0],
    params,
    {"unlearn": params["seed"], "eval": params["seed"]},
    lambda log: score_cycles(
        unlearn_cycles_stage(
            wc.method,
            params["hyper"],
            model_dir=Path(inp.model[0]).parent,
            tokenizer_dir=Path(inp.tokenizer).parent,
            train_path=inp.train,
            forget_path=inp.forget,
            retain_path=inp.retain,
            canaries_path=inp.canaries,
            fisher_paths=fisher_paths,
            fisher_cfg=FisherConfig(**params["fisher"], seed=params["seed"]),
            trajectory=params["trajectory"],
            seed=params["seed"],
            requests=params["requests"],
            out_dirs=out_dirs,
        ),
        log,
    ),
    threads=snakemake.threads,
)
