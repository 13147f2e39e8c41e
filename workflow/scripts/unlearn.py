"""Adapter of rules unlearn and unlearn_realworld (workflow/rules/unlearn.smk): one method, one
request; then the saved model is scored in the same process, as rule evaluate (nlp: output
metrics) or the real-world re-scoring (output secrets and scored) would score it."""

import logging
import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.fisher_estimation import FisherConfig
from unlearnbench.stage import record_stage, run_stage
from unlearnbench.unlearning import unlearn_stage

params = dict(snakemake.params.items())
inp, out, wc = snakemake.input, snakemake.output, snakemake.wildcards
seed = params["seed"]
fisher_paths = (inp.fisher_tensors, inp.fisher_meta) if hasattr(inp, "fisher_tensors") else None
model_dir = Path(out.model[0]).parent
tokenizer_dir = Path(inp.tokenizer).parent

run_stage(
    out.manifest,
    snakemake.log[0],
    params,
    {"unlearn": seed, "eval": seed},
    lambda log: unlearn_stage(
        wc.method,
        params["hyper"],
        model_dir=Path(inp.model[0]).parent,
        tokenizer_dir=tokenizer_dir,
        train_path=inp.train,
        forget_path=inp.forget,
        retain_path=inp.retain,
        canaries_path=getattr(inp, "canaries", None),
        fisher_paths=fisher_paths,
        fisher_cfg=FisherConfig(**params["fisher"], seed=seed),
        trajectory=params["trajectory"],
        seed=seed,
        out_dir=model_dir,
    ),
    threads=snakemake.threads,
)

log = logging.getLogger("unlearnbench")
log.info("scoring %s", model_dir)
if hasattr(out, "metrics"):  # rule unlearn; unlearn_realworld writes secrets
    from unlearnbench.evaluation import EvalConfig, evaluation_inputs, metrics_record

    # The evaluate rule's params, so the metrics carry the provenance evaluate would write.
    scoring = {"evaluate": params["evaluate"], "seed": seed}
    cfg = EvalConfig.from_settings(params["evaluate"], seed=seed)
    record_stage(
        out.metrics,
        scoring,
        {"eval": seed},
        lambda log: metrics_record(
            model_dir,
            wc.dataset,
            seed,
            cfg,
            **evaluation_inputs(inp),
        ),
        log,
    )
else:
    from unlearnbench.realworld import RealworldConfig, score_secrets_stage

    scoring = {"realworld": params["realworld"], "seed": seed}
    cfg = RealworldConfig(**params["realworld"], seed=seed)
    record_stage(
        out.scored,
        scoring,
        {"eval": seed},
        lambda log: score_secrets_stage(
            model_dir,
            tokenizer_dir,
            inp.train,
            [inp.validation, inp.test],
            cfg,
            inp.reference,
            inp.heldout_reference,
            out.secrets,
        ),
        log,
    )
