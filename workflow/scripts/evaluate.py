"""Adapter of rules evaluate and evaluate_dp (workflow/rules/evaluate.smk): score each model of
``input.models`` into the metrics file at the same position of ``output.metrics``."""

import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.evaluation import EvalConfig, evaluation_inputs, metrics_record
from unlearnbench.stage import record_stage, start_stage

params = dict(snakemake.params.items())
cfg = EvalConfig.from_settings(params["evaluate"], seed=params["seed"])
inp, wc = snakemake.input, snakemake.wildcards
# model_files() lists config.json then model.safetensors per model: one folder per model.
model_dirs = list(dict.fromkeys(str(Path(path).parent) for path in inp.models))

log = start_stage(snakemake.log[0], params, threads=snakemake.threads)
for model_dir, metrics_path in zip(model_dirs, snakemake.output.metrics, strict=True):
    log.info("evaluating %s", model_dir)
    record_stage(
        metrics_path,
        params,
        {"eval": params["seed"]},
        lambda log, model_dir=model_dir: metrics_record(
            model_dir, wc.dataset, params["seed"], cfg, **evaluation_inputs(inp)
        ),
        log,
    )
